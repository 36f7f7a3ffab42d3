"""Building the item-to-item model from the analytics store (Parquet), on DuckDB or Spark.

The job reads the events of the analytics store (lake.py), never the operational store from DuckDB
(DuckDB's SQLite scanner, inside a server process, would drop the POSIX locks of the process's own
SQLite connections). What it needs from the store (who may be personalised, the catalogue) is read
through SQLAlchemy and handed to the engine as small tables:

``users(subject_id, user_id)``
    subjects whose current decision allows ``personalization``, mapped to their unified profile: only
    their behaviour is used, and a person's devices count as one basket;
``items(item_id)``
    catalogue items of no sensitive category (items that left the catalogue still count as input).

Then, in SQL both engines run (``STEPS``; DuckDB's dialect, transpiled for Spark by sqlglot):
interactions (one weight per person and item: bought 3, added to cart 2, viewed 1; the most recent
CANDOR_RECOMMEND_MAX_ITEMS per person), item norms, co-occurrences of item pairs seen in at least
CANDOR_RECOMMEND_MIN_SUPPORT people, cosine similarity shrunk by ``support / (support + λ)``, the best
CANDOR_RECOMMEND_NEIGHBORS per item, and bestseller scores. Only item-level aggregates leave the
engine: the model holds no subject id (pseudonymous or otherwise).

An incremental build recomputes the neighbour lists of the items that had new interactions since the
last build (the watermark is the analytics store's highest event id); a full build recomputes all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import orjson
from sqlalchemy import delete, select

from candor.recommend.catalog import bump, sensitive_ids
from candor.store import now_ms
from candor.store.schema import profile_subjects, rec_models, rec_neighbors, rec_popular, subjects

log = logging.getLogger("candor.recommend")
MODEL = "item_to_item"
PACK = 2**31  # item numbers are below this (a catalogue of two billion products)
EXTRACT_DUCKDB = """
SELECT subject_id, id, ts_ms, 3 AS w,
       unnest(json_extract_string(properties, '$.products[*].product_id')) AS item_id
FROM events WHERE type = 'track' AND event = 'Order Completed' AND id > {since}
UNION ALL
SELECT subject_id, id, ts_ms, CASE WHEN event = 'Product Added' THEN 2 ELSE 1 END AS w,
       json_extract_string(properties, '$.product_id') AS item_id
FROM events WHERE type = 'track' AND event IN ('Product Viewed', 'Product Added') AND id > {since}
"""
# Spark has no unnest of a JSON path: the products array is parsed and exploded (LATERAL VIEW)
EXTRACT_SPARK = """
SELECT subject_id, id, ts_ms, 3 AS w, p.product_id AS item_id
FROM events LATERAL VIEW explode(from_json(get_json_object(properties, '$.products'),
     'array<struct<product_id:string>>')) t AS p
WHERE type = 'track' AND event = 'Order Completed' AND id > {since}
UNION ALL
SELECT subject_id, id, ts_ms, CASE WHEN event = 'Product Added' THEN 2 ELSE 1 END AS w,
       get_json_object(properties, '$.product_id') AS item_id
FROM events WHERE type = 'track' AND event IN ('Product Viewed', 'Product Added') AND id > {since}
"""


@dataclass(frozen=True)
class Params:
    min_support: int = 3
    neighbors: int = 50
    shrinkage: float = 10.0
    max_items: int = 200


def steps(p: Params, *, touched: bool) -> list[tuple[str, str]]:
    """The job after extraction, as (table, SELECT) pairs in DuckDB's SQL that sqlglot carries to Spark.

    People and items are small integers (``users.ux``, ``items.ix``, numbered by the caller) so that
    joins and groupings work on integers; each pair is counted once (``a.ix < b.ix``) and mirrored.
    Every number is a validated setting (int/float), never a value from a request."""
    only = "WHERE a.ix IN (SELECT ix FROM touched) OR b.ix IN (SELECT ix FROM touched)" if touched else ""
    keep = "WHERE p.x IN (SELECT ix FROM touched)" if touched else ""
    score = f"p.co / sqrt(na.n * nb.n) * (p.support / (p.support + {float(p.shrinkage)}))"
    return [
        (
            "interactions",
            "SELECT u.ux, i.ix, max(r.w) AS w, max(r.ts_ms) AS last_ms "
            "FROM raw r JOIN users u ON u.subject_id = r.subject_id JOIN items i ON i.item_id = r.item_id "
            "GROUP BY u.ux, i.ix",
        ),
        (
            "capped",
            "SELECT ux, ix, w FROM (SELECT ux, ix, w, row_number() OVER "
            "(PARTITION BY ux ORDER BY last_ms DESC, ix) AS rn FROM interactions) c "
            f"WHERE rn <= {int(p.max_items)}",
        ),
        (
            "norms",
            "SELECT ix, sum(w * w) AS n, count(*) AS people, sum(CASE WHEN w >= 3 THEN 1 ELSE 0 END) AS buyers "
            "FROM capped GROUP BY ix",
        ),
        (
            "half",
            # one BIGINT key per pair groups faster than two columns
            f"SELECT CAST(floor(k / {PACK}) AS INTEGER) AS x, CAST(k % {PACK} AS INTEGER) AS y, co, support FROM ("
            f"SELECT CAST(a.ix AS BIGINT) * {PACK} + b.ix AS k, sum(a.w * b.w) AS co, count(*) AS support "
            f"FROM capped a JOIN capped b ON a.ux = b.ux AND a.ix < b.ix {only} "
            f"GROUP BY CAST(a.ix AS BIGINT) * {PACK} + b.ix HAVING count(*) >= {int(p.min_support)}) g",
        ),
        (
            "pairs",
            "SELECT h.x AS x, h.y AS y, h.co, h.support FROM half h "
            "UNION ALL SELECT h.y AS x, h.x AS y, h.co, h.support FROM half h",
        ),
        (
            "ranked",
            "SELECT x, y, score, support FROM ("
            f"SELECT p.x, p.y, {score} AS score, p.support, row_number() OVER "
            f"(PARTITION BY p.x ORDER BY {score} DESC, p.y) AS rn "
            f"FROM pairs p JOIN norms na ON na.ix = p.x JOIN norms nb ON nb.ix = p.y {keep}) q "
            f"WHERE rn <= {int(p.neighbors)}",
        ),
        (
            "neighbors",
            "SELECT ia.item_id, ib.item_id AS neighbor_id, r.score, r.support "
            "FROM ranked r JOIN items ia ON ia.ix = r.x JOIN items ib ON ib.ix = r.y",
        ),
        (
            "popular",
            "SELECT i.item_id, n.buyers + 0.1 * n.people AS score, n.buyers "
            f"FROM norms n JOIN items i ON i.ix = n.ix WHERE n.people >= {int(p.min_support)}",
        ),
    ]


def spark_sql(sql: str) -> str:
    import sqlglot

    return str(sqlglot.transpile(sql, read="duckdb", write="spark")[0])


@dataclass
class Built:
    neighbors: list[tuple[str, str, float, int]]
    popular: list[tuple[str, float, int]]
    touched: list[str] | None  # None: a full build
    high: int  # highest event id read
    seconds: float


Progress = Callable[[str], None]


def _numbered(items: list[str], users: list[tuple[str, str]]) -> tuple[Any, Any]:
    """Arrow tables ``items(item_id, ix)`` and ``users(subject_id, ux)``: one ``ux`` per profile."""
    import pyarrow as pa

    profiles: dict[str, int] = {}
    ux = [profiles.setdefault(profile, len(profiles)) for _, profile in users]
    items_t = pa.table({"item_id": pa.array(items, pa.string()), "ix": pa.array(range(len(items)), pa.int32())})
    users_t = pa.table({"subject_id": pa.array([u[0] for u in users], pa.string()), "ux": pa.array(ux, pa.int32())})
    return items_t, users_t


def run_duckdb(
    files: list[str],
    items: list[str],
    users: list[tuple[str, str]],
    p: Params,
    *,
    since: int = 0,
    threads: int = 2,
    progress: Progress | None = None,
) -> Built:
    """The job on DuckDB over Parquet files of the analytics store's layout (events view columns)."""
    from candor.analytics import events_view

    started = time.perf_counter()
    con = duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False, "threads": threads}
    )
    try:
        con.execute(f"CREATE VIEW events AS {events_view(files)}")
        items_t, users_t = _numbered(items, users)
        con.register("items_arrow", items_t)
        con.execute("CREATE TEMP TABLE items AS SELECT * FROM items_arrow")
        con.register("users_arrow", users_t)
        con.execute("CREATE TEMP TABLE users AS SELECT * FROM users_arrow")
        step = progress or (lambda _label: None)
        step("reading interactions")
        high = int(con.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])  # type: ignore[index]
        touched: list[str] | None = None
        con.execute(f"CREATE TEMP TABLE raw AS {EXTRACT_DUCKDB.format(since=0)}")
        if since:
            con.execute(
                "CREATE TEMP TABLE touched AS SELECT DISTINCT i.ix, i.item_id FROM raw r "
                f"JOIN items i ON i.item_id = r.item_id WHERE r.id > {int(since)}"
            )
            touched = [r[0] for r in con.execute("SELECT item_id FROM touched ORDER BY item_id").fetchall()]
        for name, sql in steps(p, touched=since > 0):
            step(name)
            con.execute(f"CREATE TEMP TABLE {name} AS {sql}")
        rows = con.execute("SELECT * FROM neighbors").fetchall()
        neighbors = [(str(a), str(b), float(s), int(n)) for a, b, s, n in rows]
        popular = [(str(i), float(s), int(b)) for i, s, b in con.execute("SELECT * FROM popular").fetchall()]
    finally:
        con.close()
    return Built(neighbors, popular, touched, high, time.perf_counter() - started)


def run_spark(
    engine: Any,
    files: list[str],
    items: list[str],
    users: list[tuple[str, str]],
    p: Params,
    *,
    since: int = 0,
    progress: Progress | None = None,
) -> Built:
    """The same job on Spark (engines.SparkEngine): the Parquet files read by Spark, the steps transpiled."""
    started = time.perf_counter()
    spark = engine.session()
    step = progress or (lambda _label: None)
    step("reading interactions")
    spark.read.parquet(*files).createOrReplaceTempView("events")
    items_t, users_t = _numbered(items, users)
    engine.view("items", items_t)
    engine.view("users", users_t)
    high = int(spark.sql("SELECT coalesce(max(id), 0) FROM events").collect()[0][0])
    spark.sql(EXTRACT_SPARK.format(since=0)).cache().createOrReplaceTempView("raw")
    touched: list[str] | None = None
    if since:
        df = spark.sql(
            "SELECT DISTINCT i.ix, i.item_id FROM raw r JOIN items i ON i.item_id = r.item_id "
            f"WHERE r.id > {int(since)}"
        )
        df.cache().createOrReplaceTempView("touched")
        touched = sorted(r[1] for r in df.collect())
    for name, sql in steps(p, touched=since > 0):
        step(name)
        spark.sql(spark_sql(sql)).cache().createOrReplaceTempView(name)
    neighbors = [(str(r[0]), str(r[1]), float(r[2]), int(r[3])) for r in spark.sql("SELECT * FROM neighbors").collect()]
    popular = [(str(r[0]), float(r[1]), int(r[2])) for r in spark.sql("SELECT * FROM popular").collect()]
    return Built(neighbors, popular, touched, high, time.perf_counter() - started)


class Builder:
    """Rebuilds the model of one runtime: full (``candor recommend rebuild``) or incremental (schedule)."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt

    def params(self) -> Params:
        s = self.rt.settings
        return Params(s.recommend_min_support, s.recommend_neighbors, s.recommend_shrinkage, s.recommend_max_items)

    def state(self) -> dict[str, Any] | None:
        with self.rt.store.engine.connect() as conn:
            row = conn.execute(select(rec_models).where(rec_models.c.name == MODEL)).first()
        if row is None:
            return None
        return {"version": int(row.version), "built_ms": int(row.built_ms), **orjson.loads(row.state)}

    def _users(self) -> list[tuple[str, str]]:
        """Subjects that may be personalised now, with their profile id."""
        consent = self.rt.consent
        out: list[tuple[str, str]] = []
        with self.rt.store.engine.connect() as conn:
            profile = dict(conn.execute(select(profile_subjects.c.subject_id, profile_subjects.c.profile_id)).all())
            ids = [r[0] for r in conn.execute(select(subjects.c.subject_id).where(subjects.c.state != "erased"))]
            for i in range(0, len(ids), 2000):
                chunk = ids[i : i + 2000]
                consent.preload(chunk, conn)
                for sid in chunk:
                    if consent.can_use(sid, "personalization", conn=conn, remember=False).allowed:
                        out.append((sid, profile.get(sid, sid)))
        return out

    def rebuild(self, *, full: bool = True, engine: str = "duckdb", progress: Progress | None = None) -> dict[str, Any]:
        rt = self.rt
        step = progress or (lambda _label: None)
        lake = rt.analytics.lake
        if lake is None:
            raise RuntimeError("recommendations need the analytics store (CANDOR_ANALYTICS_DIR)")
        step("refreshing the analytics store")
        lake.refresh()
        files = lake.files()
        state = self.state()
        since = 0 if full or state is None else int(state.get("high", 0))
        catalog = rt.recommend.catalog.items()
        sensitive = sensitive_ids(catalog, rt.settings.recommend_sensitive_set)
        items = sorted(set(catalog) - sensitive)
        live = lake.live()
        if since and live is not None and since >= live.high:
            return {"mode": "incremental", "changed": 0, "version": state["version"] if state else 0}
        step("checking consent")
        users = self._users()
        p = self.params()
        if not files or not items:
            built = Built([], [], None if not since else [], since, 0.0)
        elif engine == "spark":
            from candor.engines import engine as get_engine

            eng = get_engine("spark", rt.settings)
            built = run_spark(eng, files, items, users, p, since=since, progress=step)
        else:
            built = run_duckdb(files, items, users, p, since=since, progress=step)
        step("saving the model")
        version = self.save(built, engine)
        return {
            "mode": "full" if built.touched is None else "incremental",
            "version": version,
            "items": len({n[0] for n in built.neighbors}),
            "neighbors": len(built.neighbors),
            "changed": len(built.touched) if built.touched is not None else len(items),
            "people": len(users),
            "seconds": round(built.seconds, 3),
            "engine": engine,
        }

    def save(self, built: Built, engine: str) -> int:
        store = self.rt.store
        with store.write() as conn:
            if built.touched is None:
                conn.execute(delete(rec_neighbors))
            else:
                for i in range(0, len(built.touched), 500):
                    conn.execute(delete(rec_neighbors).where(rec_neighbors.c.item_id.in_(built.touched[i : i + 500])))
            rows = [{"item_id": a, "neighbor_id": b, "score": s, "support": n} for a, b, s, n in built.neighbors]
            for i in range(0, len(rows), 5000):
                conn.execute(rec_neighbors.insert(), rows[i : i + 5000])
            conn.execute(delete(rec_popular))
            if built.popular:
                conn.execute(
                    rec_popular.insert(), [{"item_id": i, "score": s, "buyers": b} for i, s, b in built.popular]
                )
            old = conn.execute(select(rec_models.c.version).where(rec_models.c.name == MODEL)).scalar()
            version = int(old or 0) + 1
            state = orjson.dumps({"high": built.high, "engine": engine, "full": built.touched is None}).decode()
            stmt = store.insert(rec_models).on_conflict_do_update(
                index_elements=["name"], set_={"version": version, "built_ms": now_ms(), "state": state}
            )
            conn.execute(stmt, {"name": MODEL, "version": version, "built_ms": now_ms(), "state": state})
            bump(store, conn)
        return version
