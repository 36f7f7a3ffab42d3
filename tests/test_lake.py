"""The analytics store (lake.py): a Parquet copy of the clear columns of events, kept current by a
watermark, reconciled after identity splits, rebuilt when the database is not the one it was made
from, resumable, and identical in its results to reading the store itself (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from sqlalchemy import delete, func, select

from candor import lake as lake_module
from candor.analytics import Analytics
from candor.app import Runtime
from candor.config import Settings
from candor.lake import COLUMN_NAMES, Lake
from candor.segments import Segments
from candor.store.schema import events, identity_edges, profile_subjects, subjects
from tests.conftest import engines_and_stores
from tests.helpers import api

pytestmark = pytest.mark.anyio
CANARIES = ("Quentin.Plover@example.org", "Plover", "198.51.100.77", "7 Wren Row", "note-ZZ9")


def rows(lake: Lake) -> list[dict[str, Any]]:
    """Every row of the live generation."""
    files = lake.files()
    if not files:
        return []
    con = duckdb.connect()
    try:
        cur = con.execute("SELECT * FROM read_parquet($f) ORDER BY id", {"f": files})
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def everything_in(files: list[Path]) -> str:
    """Every value of every column of every analytics file, as text (Parquet is compressed: grep cannot)."""
    con = duckdb.connect()
    try:
        out = []
        for f in files:
            out.append(json.dumps(con.execute("SELECT * FROM read_parquet($f)", {"f": str(f)}).fetchall(), default=str))
        return "\n".join(out)
    finally:
        con.close()


def store_ids(rt: Runtime) -> list[tuple[int, str]]:
    with rt.store.engine.connect() as conn:
        return [(int(i), s) for i, s in conn.execute(select(events.c.id, events.c.subject_id).order_by(events.c.id))]


async def test_refresh_copies_new_clear_rows_only(settings: Settings) -> None:
    async with api(settings) as a:
        await a.post(
            "/v1/identify",
            {
                "userId": "qp-1",
                "traits": {"email": CANARIES[0], "lastName": CANARIES[1]},
                "context": {"ip": CANARIES[2], "library": {"name": "analytics.js"}},
            },
        )
        r = await a.post(
            "/v1/track",
            {
                "userId": "qp-1",
                "event": "Order Completed",
                "properties": {
                    "revenue": 12.5,
                    "channel": "Web",
                    "address": {"street": CANARIES[3]},
                    "name": CANARIES[4],
                },
                "context": {"campaign": {"name": "spring", "medium": "Email"}},
            },
        )
        assert r.status_code == 200
        lake = a.rt.analytics.lake
        assert lake is not None
        first = lake.refresh()
        assert first.rebuilt and first.copied == 2
        got = rows(lake)
        assert [r["id"] for r in got] == [i for i, _ in store_ids(a.rt)]
        assert tuple(got[0]) == COLUMN_NAMES
        order = got[1]
        assert (order["event"], order["revenue"], order["channel_hint"], order["campaign"], order["utm_medium"]) == (
            "Order Completed",
            12.5,
            "web",
            "spring",
            "email",
        )
        assert order["source"] == "test-source" and got[0]["library"] == "analytics.js"
        # no personal value reaches an analytics file, in any column
        text = everything_in(lake.all_files())
        for canary in CANARIES:
            assert canary not in text, f"canary {CANARIES.index(canary)} is in an analytics file"
        # nothing new: nothing copied; new events: only they are copied
        assert lake.refresh().copied == 0
        for i in range(3):
            await a.post("/v1/track", {"userId": "qp-1", "event": "Product Viewed", "properties": {"i": i}})
        again = lake.refresh()
        assert again.copied == 3 and not again.rebuilt
        assert [r["id"] for r in rows(lake)] == [i for i, _ in store_ids(a.rt)]
        st = lake.status()
        assert st["rows"] == 5 and st["files"] == 2 and st["high_id"] == store_ids(a.rt)[-1][0]


def random_world(rt: Runtime, rng: random.Random, people: int, n_events: int) -> None:
    """People (some grouped into profiles, some restricted or erased) and random events, written directly."""
    names = ["Order Completed", "Product Viewed", "Home", "Signed Up", "x' OR 1=1 --"]
    now = 1_790_000_000_000
    with rt.store.write() as conn:
        sids = [f"s{i:05d}" for i in range(people)]
        conn.execute(
            subjects.insert(),
            [
                {"subject_id": s, "created_ms": now, "state": rng.choice(["active"] * 8 + ["restricted", "erased"])}
                for s in sids
            ],
        )
        i, groups = 0, []
        while i < people:
            size = rng.choice([1, 1, 2, 3])
            groups.append(sids[i : i + size])
            i += size
        conn.execute(
            profile_subjects.insert(),
            [{"subject_id": s, "profile_id": min(g)} for g in groups if len(g) > 1 for s in g],
        )
        batch = []
        for k in range(n_events):
            props: dict[str, Any] = {"revenue": round(rng.uniform(1, 200), 2), "category": rng.choice(["jazz", "rock"])}
            if rng.random() < 0.2:
                props["revenue"] = "n/a"
            batch.append(
                {
                    "source_id": 1,
                    "message_id": f"m{k}",
                    "type": rng.choice(["track"] * 4 + ["page", "identify"]),
                    "event": rng.choice(names),
                    "subject_id": rng.choice(sids),
                    "ts_ms": now - rng.randint(0, 400) * 86_400_000 - rng.randint(0, 86_399_999),
                    "received_ms": now,
                    "properties": orjson.dumps(props).decode(),
                    "context": "{}",
                    "sealed": b"x",
                }
            )
        conn.execute(events.insert(), batch)


DEFINITIONS: list[dict[str, Any]] = [
    {"conditions": [{"event": "Order Completed", "count": {"gte": 2}, "within_days": 90}]},
    {"conditions": [{"event": "Order Completed", "sum": {"property": "revenue", "gte": 150}, "within_days": 365}]},
    {"conditions": [{"event": "Order Completed", "avg": {"property": "revenue", "lt": 80}}]},
    {"conditions": [{"event": "Home", "type": "page", "distinct_days": {"gte": 2}}]},
    {"conditions": [{"event": "Product Viewed", "where": {"category": "JAZZ"}, "count": {"gte": 1}}]},
    {"match": "any", "conditions": [{"last_seen": {"within_days": 30}}, {"event": "x' OR 1=1 --"}]},
    {
        "conditions": [
            {"last_seen": {"event": "Order Completed", "not_within_days": 180}},
            {"event": "*", "count": {"gte": 3}},
        ]
    },
    {"conditions": [{"not": {"event": "Signed Up"}}, {"consent": "analytics"}]},
    {"conditions": []},
]


@engines_and_stores
def test_segments_on_the_analytics_store_equal_segments_on_the_store(settings: Settings, analytics_engine: Any) -> None:
    """The same definitions compiled once, over the lake on each engine (DuckDB, Spark), against DuckDB
    over the store's own events table."""
    rt = Runtime(settings)
    try:
        random_world(rt, random.Random(11), 120, 1500)
        now = 1_790_000_000_000
        on_lake = Segments(rt)
        on_lake.engine = analytics_engine
        plain = Segments(rt)
        plain.rt = type(
            "R",
            (),
            {
                **{k: getattr(rt, k) for k in ("store", "taxonomy", "consent", "vault", "profiles")},
                "analytics": Analytics(rt.store),
            },
        )()
        assert rt.analytics.lake is not None and plain.rt.analytics.lake is None
        sizes = []
        for d in DEFINITIONS:
            got = on_lake.evaluate(d, now=now)
            assert got == plain.evaluate(d, now=now), d
            sizes.append(len(got))
        assert len(set(sizes)) > 4, "the definitions should select different groups"
        # and after more events arrive, a query sees them (refreshed before it runs)
        with rt.store.write() as conn:
            sid = conn.execute(select(subjects.c.subject_id).where(subjects.c.state == "active")).scalar()
            conn.execute(
                events.insert(),
                [
                    {
                        "source_id": 1,
                        "message_id": f"late{k}",
                        "type": "track",
                        "event": "Signed Up",
                        "subject_id": sid,
                        "ts_ms": now - 1000,
                        "received_ms": now,
                        "properties": "{}",
                        "context": "{}",
                        "sealed": b"x",
                    }
                    for k in range(2)
                ],
            )
        d = {"conditions": [{"event": "Signed Up", "count": {"gte": 2}, "within_days": 1}]}
        assert on_lake.evaluate(d, now=now) == plain.evaluate(d, now=now) != []
    finally:
        rt.close()


def test_ids_skipped_by_a_transaction_in_flight_are_picked_up_later(settings: Settings) -> None:
    rt = Runtime(settings)
    try:
        lake = rt.analytics.lake
        assert lake is not None

        def ev(i: int) -> dict[str, Any]:
            return {
                "id": i,
                "source_id": 1,
                "message_id": f"g{i}",
                "type": "track",
                "event": "E",
                "subject_id": "s1",
                "ts_ms": 1,
                "received_ms": 1,
                "properties": "{}",
                "context": "{}",
                "sealed": b"x",
            }

        with rt.store.write() as conn:
            conn.execute(subjects.insert(), {"subject_id": "s1", "created_ms": 1, "state": "active"})
            conn.execute(events.insert(), [ev(1), ev(2)])
        lake.refresh()
        with rt.store.write() as conn:  # 5 commits first, 3 and 4 are still "in flight"
            conn.execute(events.insert(), [ev(5)])
        lake.refresh()
        assert lake.status()["pending_gaps"] == 1
        with rt.store.write() as conn:
            conn.execute(events.insert(), [ev(3), ev(4)])
        assert lake.refresh().copied == 2
        assert [r["id"] for r in rows(lake)] == [1, 2, 3, 4, 5]
        assert lake.status()["pending_gaps"] == 0
    finally:
        rt.close()


async def test_a_split_moves_the_events_in_the_analytics_store_too(settings: Settings) -> None:
    async with api(settings) as a:
        await a.post("/v1/identify", {"userId": "bob", "anonymousId": "b-phone", "traits": {"firstName": "Bob"}})
        await a.post("/v1/track", {"anonymousId": "b-phone", "event": "Browsed"})
        lake = a.rt.analytics.lake
        assert lake is not None
        lake.refresh()
        with a.rt.store.engine.connect() as conn:
            edge = conn.execute(select(identity_edges.c.id).where(identity_edges.c.b_type == "anonymous_id")).scalar()
        assert edge is not None
        [moved_to] = a.rt.identity.split(int(edge), actor="test", reason="not the same person")["new_subjects"]
        result = lake.refresh()
        assert result.reconciled == 1
        assert [(r["id"], r["subject_id"]) for r in rows(lake)] == store_ids(a.rt)
        assert {r["event"]: r["subject_id"] for r in rows(lake)}["Browsed"] == moved_to


def test_a_restored_database_rebuilds_the_copy(tmp_path: Path) -> None:
    # restoring a copy of the database file: an SQLite operation (PostgreSQL restores: issue 11's backups)
    settings = Settings.from_env(env={}, data_dir=tmp_path / "data", default_jurisdiction="US")
    rt = Runtime(settings)
    try:
        random_world(rt, random.Random(3), 20, 50)
        rt.store.checkpoint()
        backup = settings.data_dir / "backup.db"
        shutil.copy(settings.data_dir / "candor.db", backup)
        active = next(s for _, s in live_ids(rt))
        with rt.store.write() as conn:
            conn.execute(
                events.insert(),
                [
                    {
                        "source_id": 1,
                        "message_id": f"after{k}",
                        "type": "track",
                        "event": "After",
                        "subject_id": active,
                        "ts_ms": 1,
                        "received_ms": 1,
                        "properties": "{}",
                        "context": "{}",
                        "sealed": b"x",
                    }
                    for k in range(5)
                ],
            )
        assert rt.analytics.lake is not None
        rt.analytics.lake.refresh()
        assert len(rows(rt.analytics.lake)) == len(live_ids(rt))
    finally:
        rt.close()
    shutil.copy(backup, settings.data_dir / "candor.db")
    for suffix in ("-wal", "-shm"):
        (settings.data_dir / f"candor.db{suffix}").unlink(missing_ok=True)
    rt = Runtime(settings)
    try:
        with rt.store.write() as conn:  # a new event takes an id the old copy already has
            conn.execute(
                events.insert(),
                {
                    "source_id": 1,
                    "message_id": "new",
                    "type": "track",
                    "event": "New",
                    "subject_id": active,
                    "ts_ms": 2,
                    "received_ms": 2,
                    "properties": "{}",
                    "context": "{}",
                    "sealed": b"x",
                },
            )
        lake = rt.analytics.lake
        assert lake is not None
        assert lake.refresh().rebuilt
        got = rows(lake)
        assert [(r["id"], r["subject_id"]) for r in got] == live_ids(rt)
        assert "After" not in {r["event"] for r in got} and "New" in {r["event"] for r in got}
    finally:
        rt.close()


def test_an_interrupted_rebuild_resumes_and_the_old_copy_serves_meanwhile(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = Runtime(settings)
    try:
        random_world(rt, random.Random(5), 30, 100)
        lake = rt.analytics.lake
        assert lake is not None
        lake.refresh()
        old_files = lake.files()
        monkeypatch.setattr(lake_module, "CHUNK_ROWS", 20)
        calls = {"n": 0}
        real = Lake._copy_new

        def flaky(self: Lake, *args: Any, **kw: Any) -> int:
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return real(self, *args, **kw)

        monkeypatch.setattr(Lake, "_copy_new", flaky)
        seen: list[tuple[int, int]] = []
        with pytest.raises(KeyboardInterrupt):
            lake.rebuild(progress=lambda done, total: seen.append((done, total)))
        assert lake.files() == old_files  # the live copy is untouched
        assert len(seen) >= 3 and seen[-1][0] < seen[-1][1]
        monkeypatch.setattr(Lake, "_copy_new", real)
        resumed = lake.rebuild()
        assert 0 < resumed.copied < 100  # only what the first attempt had not copied
        assert lake.files() != old_files and all(not Path(f).name.startswith("_") for f in lake.files())
        assert [(r["id"], r["subject_id"]) for r in rows(lake)] == live_ids(rt)
        assert not any(str(p).startswith(str(lake._gen_dir(1))) for p in lake.all_files())
    finally:
        rt.close()


def live_ids(rt: Runtime) -> list[tuple[int, str]]:
    """Events of subjects not erased: what the analytics store holds."""
    return [(i, s) for i, s in store_ids(rt) if _state(rt, s) != "erased"]


def _state(rt: Runtime, sid: str) -> str:
    with rt.store.engine.connect() as conn:
        return str(conn.execute(select(subjects.c.state).where(subjects.c.subject_id == sid)).scalar())


def test_purge_removes_every_row_of_a_person_from_every_generation(settings: Settings) -> None:
    rt = Runtime(settings)
    try:
        random_world(rt, random.Random(9), 20, 200)
        lake = rt.analytics.lake
        assert lake is not None
        lake.refresh()
        victims = sorted({r["subject_id"] for r in rows(lake)})[:3]
        with rt.store.write() as conn:  # the store's rows go first (as in Erasure.purge)
            conn.execute(delete(events).where(events.c.subject_id.in_(victims)))
        before = len(rows(lake))
        removed = lake.purge(victims)
        assert removed > 0 and len(rows(lake)) == before - removed
        assert victims[0] not in everything_in(lake.all_files())
        # the copy still matches the store, and refreshes go on incrementally
        assert not lake.refresh().rebuilt
        with rt.store.engine.connect() as conn:
            left = conn.execute(select(func.count()).select_from(events)).scalar()
        assert len(rows(lake)) == len(live_ids(rt)) <= int(left or 0)
    finally:
        rt.close()


def test_cli_status_refresh_and_rebuild(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from candor.cli import app

    runner = CliRunner()
    data = tmp_path / "data"

    def run(*args: str) -> Any:
        result = runner.invoke(app, ["--data-dir", str(data), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip().splitlines()[-1] if args[-1] != "status" else result.stdout)

    assert run("analytics", "status")["built"] is False
    rt = Runtime(Settings.from_env(env={}, data_dir=data))
    try:
        random_world(rt, random.Random(1), 10, 40)
    finally:
        rt.close()
    built = run("analytics", "rebuild")
    assert built["built"] and built["copied"] > 0 and built["rows"] == built["copied"]
    assert run("analytics", "refresh")["copied"] == 0
    assert run("analytics", "status")["generation"] == built["generation"]


# property values a column copied out of the JSON must give exactly as json_extract_string does
TRICKY: list[Any] = [
    "jazz", "JAZZ", "", " spaced ", "ünïcödé ♫", 'quote " and \\ backslash', "line\nbreak", "\u2028",
    0, -1, 12.5, 1e300, -0.0, 10**20, 3.0, True, False, None, [], [1, "two"], {}, {"nested": {"deep": 1}},
]  # fmt: skip


def test_promoted_properties_are_the_text_the_json_gives(settings: Settings) -> None:
    rng = random.Random(17)
    rt = Runtime(settings)
    try:
        sid = "s-promoted"
        with rt.store.write() as conn:
            conn.execute(subjects.insert(), {"subject_id": sid, "created_ms": 1, "state": "active"})
            batch = []
            for k in range(400):
                props = {
                    name: rng.choice(TRICKY)
                    for name in (*lake_module.PROMOTED, "category_2", "Category", "other")
                    if rng.random() < 0.5
                }
                if rng.random() < 0.1:
                    props = {"properties": {"category": "inner"}}  # the same name one level down: not it
                batch.append(
                    {
                        "source_id": 1, "message_id": f"p{k}", "type": "track", "event": "E", "subject_id": sid,
                        "ts_ms": k, "received_ms": k, "properties": json.dumps(props, ensure_ascii=k % 2 == 0),
                        "context": "{}", "sealed": b"x",
                    }
                )  # fmt: skip
            conn.execute(events.insert(), batch)
        lake = rt.analytics.lake
        assert lake is not None
        lake.refresh()
        con = duckdb.connect()
        try:
            checks = ", ".join(
                f"p_{n} IS NOT DISTINCT FROM json_extract_string(properties, '$.\"{n}\"'), p_{n} IS NOT NULL"
                for n in lake_module.PROMOTED
            )
            got = con.execute(f"SELECT {checks} FROM read_parquet($f)", {"f": lake.files()}).fetchall()
        finally:
            con.close()
        assert len(got) == 400
        assert all(all(r[0::2]) for r in got), "a promoted column differs from the JSON's text"
        filled = [sum(1 for r in got if r[2 * i + 1]) for i in range(len(lake_module.PROMOTED))]
        assert all(n > 100 for n in filled), filled  # the test saw values in every column
    finally:
        rt.close()


def test_an_analytics_store_of_an_older_format_is_purged_and_then_rebuilt(settings: Settings) -> None:
    rt = Runtime(settings)
    try:
        random_world(rt, random.Random(23), 20, 200)
        lake = rt.analytics.lake
        assert lake is not None
        lake.refresh()
        # make the live generation what the previous version wrote: format 1, no p_ columns
        m = lake.live()
        assert m is not None and m.format == lake_module.FORMAT == 2
        con = duckdb.connect()
        try:
            for f in lake.files():
                con.execute(
                    f"COPY (SELECT * EXCLUDE ({', '.join(f'p_{n}' for n in lake_module.PROMOTED)}) "
                    f"FROM read_parquet('{f}')) TO '{f}.old' (FORMAT parquet)"
                )
                Path(f + ".old").replace(f)
        finally:
            con.close()
        doc = orjson.loads((lake._gen_dir(m.generation) / "manifest.json").read_bytes())
        doc["format"] = 1
        (lake._gen_dir(m.generation) / "manifest.json").write_bytes(orjson.dumps(doc))
        # readers are told, never handed files without the columns they query
        with pytest.raises(lake_module.LakeError, match="older version"):
            lake.files()
        # an erasure still reaches the old files
        victim = sorted({r for _, r in live_ids(rt)})[0]
        with rt.store.write() as conn:
            conn.execute(delete(events).where(events.c.subject_id == victim))
        assert lake.purge([victim]) > 0
        assert victim not in everything_in(lake.all_files())
        # a manifest of a format this version does not know is refused with what to do
        doc["format"] = 99
        (lake._gen_dir(m.generation) / "manifest.json").write_bytes(orjson.dumps(doc))
        with pytest.raises(lake_module.LakeError, match="candor analytics rebuild"):
            lake.live()
        doc["format"] = 1
        (lake._gen_dir(m.generation) / "manifest.json").write_bytes(orjson.dumps(doc))
        # the next refresh (every query runs one first) rebuilds it in the current format
        assert lake.refresh().rebuilt
        new = lake.live()
        assert new is not None and new.format == 2 and new.generation > m.generation
        assert [(r["id"], r["subject_id"]) for r in rows(lake)] == live_ids(rt)
        assert all("p_category" in r for r in rows(lake))
        got = Segments(rt).evaluate(DEFINITIONS[4], now=1_790_000_000_000)
        assert got and victim not in got
    finally:
        rt.close()
