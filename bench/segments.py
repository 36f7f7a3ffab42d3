"""Segment evaluation benchmark: the analytics store (Parquet) against a hand-written query, at 1M profiles.

    .venv/bin/python bench/segments.py                        # 1,000,000 profiles, 10,000,000 events
    .venv/bin/python bench/segments.py --quick                # 5,000 / 50,000: seconds, used by a test
    .venv/bin/python bench/segments.py --keep /tmp/seg-1m     # build once, reuse the store in later runs
    .venv/bin/python bench/segments.py --json                 # print the results as JSON

What one run does:

1. Builds a SQLite store (Candor's schema, migrated by ``Runtime``) and fills it with DuckDB writing
   straight into the file: ``--profiles`` people, a fifth of them with two or three subjects joined
   into one profile, and ``--events`` track/page events of random subjects over 400 days with clear
   properties (revenue, category). Setup is timed apart.
2. Analytics store: a full rebuild (``Lake.rebuild``) and, after 10,000 more events, one incremental
   refresh.
3. For each definition in ``DEFINITIONS``: ``Segments.evaluate`` on the analytics store (what Candor
   runs), the same with every property read from the events' JSON (as before the analytics store had
   ``p_<name>`` columns; the ratio is the columns' gain), with ``--store-events`` also
   ``Segments.evaluate`` reading the events from the store itself (what it ran before the analytics
   store; on SQLite every row then goes through Python, minutes at 10M events; ``--quick`` includes
   it), and, as the baseline, a hand-written DuckDB query of the same
   result over the same Parquet files, measured in the same run. Results must be equal. Each is timed
   ``--repeat`` times; the median is reported.
4. Prints a table and writes JSON to ``bench/results/segments-<timestamp>.json``.

``main(argv)`` returns the results as a dict, so a test can run ``main(["--quick"])``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from candor import segments as segments_module  # noqa: E402
from candor.analytics import Analytics, _extension_path, tables_named  # noqa: E402
from candor.app import Runtime  # noqa: E402
from candor.config import Settings  # noqa: E402

RESULTS = ROOT / "bench" / "results"
NOW = 1_790_000_000_000
DAY = 86_400_000
TARGET_S = 3.0  # issue 8: segment evaluation over 1M profiles under 3 s

# name → (definition, hand-written query over read_parquet(files) that gives the same profiles)
PROFILES_SQL = """
WITH prof AS (
    SELECT s.subject_id, coalesce(ps.profile_id, s.subject_id) AS profile_id
    FROM main.subjects s LEFT JOIN main.profile_subjects ps USING (subject_id) WHERE s.state <> 'erased'
)
"""
DEFINITIONS: dict[str, tuple[dict[str, Any], str]] = {
    "orders >= 2 in 90 days, seen in 7": (
        {
            "conditions": [
                {"event": "Order Completed", "count": {"gte": 2}, "within_days": 90},
                {"last_seen": {"within_days": 7}},
            ]
        },
        PROFILES_SQL
        + """
SELECT p.profile_id FROM read_parquet($files) e JOIN prof p USING (subject_id)
GROUP BY p.profile_id
HAVING count(*) FILTER (WHERE e.type = 'track' AND e.event = 'Order Completed'
                         AND e.ts_ms >= $now - 90 * $day::BIGINT) >= 2
   AND max(e.ts_ms) >= $now - 7 * $day::BIGINT
ORDER BY 1""",
    ),
    "views of jazz, and 365-day revenue >= 100": (
        {
            "conditions": [
                {"event": "Product Viewed", "where": {"category": "jazz"}, "count": {"gte": 1}},
                {"event": "Order Completed", "sum": {"property": "revenue", "gte": 100}, "within_days": 365},
            ]
        },
        PROFILES_SQL
        + """
SELECT p.profile_id FROM read_parquet($files) e JOIN prof p USING (subject_id)
WHERE e.event IN ('Product Viewed', 'Order Completed')
GROUP BY p.profile_id
HAVING count(*) FILTER (WHERE e.type = 'track' AND e.event = 'Product Viewed'
                         AND lower(json_extract_string(e.properties, '$.category')) = 'jazz') >= 1
   AND coalesce(sum(TRY_CAST(json_extract_string(e.properties, '$.revenue') AS DOUBLE))
                FILTER (WHERE e.type = 'track' AND e.event = 'Order Completed'
                        AND e.ts_ms >= $now - 365 * $day::BIGINT), 0) >= 100
ORDER BY 1""",
    ),
    "lapsed: bought once, not in 180 days": (
        {
            "conditions": [
                {"event": "Order Completed", "count": {"gte": 1}},
                {"last_seen": {"event": "Order Completed", "not_within_days": 180}},
            ]
        },
        PROFILES_SQL
        + """
SELECT p.profile_id FROM read_parquet($files) e JOIN prof p USING (subject_id)
WHERE e.type = 'track' AND e.event = 'Order Completed'
GROUP BY p.profile_id
HAVING max(e.ts_ms) < $now - 180 * $day::BIGINT
ORDER BY 1""",
    ),
}


def fill(db: Path, profiles: int, n_events: int, seed: int, offset: int = 0) -> None:
    """Subjects, profiles and events written by DuckDB straight into the SQLite file."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.load_extension(_extension_path("duckdb_extension_sqlite_scanner"))
    con.execute(f"ATTACH '{db}' AS store (TYPE sqlite)")
    con.execute(f"SELECT setseed({(seed % 1000) / 1000})")
    if offset == 0:
        con.execute("BEGIN")
        con.execute(
            "INSERT INTO store.sources (id, name, write_key_hash, strict, personal_properties, created_ms) "
            "VALUES (1, 'bench', 'x', false, '[]', 0)"
        )
        # subjects: profiles of one subject, and every fifth profile with a second and third subject
        con.execute(
            f"INSERT INTO store.subjects SELECT printf('s%09d', i), {NOW}, 'active' FROM range({profiles}) t(i)"
        )
        extra = profiles // 5
        con.execute(
            f"INSERT INTO store.subjects SELECT printf('x%09d', i), {NOW}, 'active' FROM range({extra * 2}) t(i)"
        )
        con.execute(
            "INSERT INTO store.profile_subjects SELECT printf('x%09d', i), printf('s%09d', (i // 2) * 5) "
            f"FROM range({extra * 2}) t(i)"
        )
        con.execute(
            "INSERT INTO store.profile_subjects SELECT printf('s%09d', i * 5), printf('s%09d', i * 5) "
            f"FROM range({extra}) t(i)"
        )
        con.execute("COMMIT")
    total = profiles + (profiles // 5) * 2
    step = 1_000_000
    for lo in range(0, n_events, step):
        hi = min(n_events, lo + step)
        con.execute(
            f"""
            INSERT INTO store.events (source_id, message_id, type, event, subject_id, ts_ms, received_ms,
                                      properties, context, sealed)
            SELECT 1, printf('m%d', {offset} + i), CASE WHEN r < 0.15 THEN 'page' ELSE 'track' END,
                   CASE WHEN r < 0.15 THEN 'Home' WHEN r < 0.65 THEN 'Product Viewed'
                        WHEN r < 0.8 THEN 'Product Added' ELSE 'Order Completed' END,
                   CASE WHEN k < {profiles} THEN printf('s%09d', k) ELSE printf('x%09d', k - {profiles}) END,
                   {NOW} - CAST(random() * 400 * {DAY} AS BIGINT), {NOW},
                   '{{"revenue": ' || round(5 + random() * 120, 2) || ', "category": "'
                       || (['jazz', 'rock', 'classical', 'fiction', 'poetry'])[1 + CAST(floor(random() * 5) AS INT)]
                       || '", "currency": "USD"}}',
                   '{{"library": {{"name": "analytics.js"}}}}', '\\x00'::BLOB
            FROM (SELECT i, random() AS r, CAST(floor(random() * {total}) AS BIGINT) AS k
                  FROM range({lo}, {hi}) t(i))
            """
        )
    con.close()


def timed(fn: Any, repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def run(args: argparse.Namespace, say: Any) -> dict[str, Any]:
    keep = Path(args.keep) if args.keep else None
    tmp = None
    if keep is None:
        tmp = tempfile.TemporaryDirectory(prefix="candor-bench-segments-")
        data = Path(tmp.name) / "data"
    else:
        data = keep
    settings = Settings.from_env(env={}, data_dir=data, default_jurisdiction="US", analytics_refresh_seconds=0)
    marker = data / "bench-segments.json"
    built = json.loads(marker.read_text()) if marker.exists() else None
    out: dict[str, Any] = {"profiles": args.profiles, "events": args.events}
    try:
        if built != {"profiles": args.profiles, "events": args.events, "seed": args.seed}:
            if marker.exists():
                raise SystemExit(f"{data} holds a different benchmark store; remove it or use another --keep")
            say(f"building {args.profiles:,} profiles and {args.events:,} events …")
            t = time.perf_counter()
            Runtime(settings).close()  # the schema, migrated
            fill(data / "candor.db", args.profiles, args.events, args.seed)
            out["setup_s"] = round(time.perf_counter() - t, 1)
            marker.write_text(json.dumps({"profiles": args.profiles, "events": args.events, "seed": args.seed}))
        rt = Runtime(settings)
        try:
            lake = rt.analytics.lake
            assert lake is not None
            say("rebuilding the analytics store …")
            t = time.perf_counter()
            r = lake.rebuild()
            out["rebuild_s"] = round(time.perf_counter() - t, 2)
            out["rebuild_rows_per_s"] = round(lake.status()["rows"] / max(out["rebuild_s"], 1e-9))
            out["lake_bytes"] = lake.status()["bytes"]
            del r
            late = 10**9 + time.time_ns() // 1000 % 10**12  # message ids no earlier run used
            fill(data / "candor.db", args.profiles, 10_000, args.seed + 1, offset=late)
            t = time.perf_counter()
            inc = lake.refresh()
            out["refresh_10k_s"] = round(time.perf_counter() - t, 3)
            out["refresh_10k_copied"] = inc.copied
            out["noop_refresh_s"] = round(timed(lake.refresh, 5)[0], 4)
            files = lake.files()
            # the events read from the store itself: how it was before the analytics store (through
            # DuckDB's SQLite scanner until that was found to drop the writer's locks; now SQLAlchemy)
            # the hand-written baseline gets the store tables as cheaply as Candor does: from a cache of
            # its own (the median of several runs is of cached runs for both)
            scanner = Analytics(rt.store, cache_bytes=rt.settings.analytics_cache_mb * 1024 * 1024)
            lake_analytics = rt.analytics
            out["definitions"] = {}
            for name, (definition, sql) in DEFINITIONS.items():
                say(f"  {name}")
                rt.analytics = lake_analytics
                new_s, new = timed(lambda d=definition: rt.segments.evaluate(d, now=NOW), args.repeat)
                # the same, every property read from the events' JSON (as before the p_ columns)
                promoted, segments_module.PROMOTED = segments_module.PROMOTED, ()
                try:
                    json_s, by_json = timed(lambda d=definition: rt.segments.evaluate(d, now=NOW), args.repeat)
                finally:
                    segments_module.PROMOTED = promoted
                old_s, old = None, new
                if args.store_events:
                    rt.analytics = scanner
                    old_s, old = timed(lambda d=definition: rt.segments.evaluate(d, now=NOW), args.repeat)
                    rt.analytics = lake_analytics

                def hand(q: str = sql) -> list[str]:
                    # only the store tables the query names (on SQLite each is read through SQLAlchemy)
                    con = scanner.connect(tables=tables_named(q) - {"events"})
                    try:
                        return [r[0] for r in con.execute(q, {"files": files, "now": NOW, "day": DAY}).fetchall()]
                    finally:
                        con.close()

                base_s, base = timed(hand, args.repeat)
                assert new == old == base == by_json, f"{name}: results differ ({len(new)}, {len(old)}, {len(base)})"
                out["definitions"][name] = {
                    "members": len(new),
                    "analytics_store_s": round(new_s, 3),
                    "scanner_s": round(old_s, 3) if old_s is not None else None,
                    "hand_written_s": round(base_s, 3),
                    "properties_from_json_s": round(json_s, 3),
                    "ratio_to_properties_from_json": round(new_s / json_s, 2) if json_s else None,
                    "ratio_to_hand_written": round(new_s / base_s, 2) if base_s else None,
                    "speedup_over_scanner": round(old_s / new_s, 2) if new_s and old_s is not None else None,
                }
        finally:
            rt.close()
    finally:
        if tmp is not None:
            tmp.cleanup()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profiles", type=int, default=1_000_000)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--keep", help="build the store in this directory once and reuse it")
    p.add_argument("--quick", action="store_true", help="5,000 profiles and 50,000 events, one repeat")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument(
        "--store-events",
        action="store_true",
        help="also evaluate with the events read from the store itself (on SQLite: every row through Python)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.profiles, args.events, args.repeat, args.store_events = 5_000, 50_000, 1, True
    console = Console(stderr=True)
    say = (lambda _m: None) if args.json else console.print
    results = run(args, say)
    results["machine"] = {
        "cpus": __import__("os").cpu_count(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "note": "shared with other engineers' work",
    }
    results["target_s"] = TARGET_S
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if not args.quick:
        (RESULTS / f"segments-{stamp}.json").write_text(json.dumps(results, indent=2))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        t = Table(title=f"segments: {args.profiles:,} profiles, {args.events:,} events (SQLite, DuckDB 2 threads)")
        cols = ("definition", "members", "analytics store", "properties from JSON", "store events", "hand-written",
                "ratio", "speedup")  # fmt: skip
        for col in cols:
            t.add_column(col)
        for name, d in results["definitions"].items():
            t.add_row(
                name,
                f"{d['members']:,}",
                f"{d['analytics_store_s']:.3f} s",
                f"{d['properties_from_json_s']:.3f} s (×{d['ratio_to_properties_from_json']})",
                f"{d['scanner_s']:.3f} s" if d["scanner_s"] is not None else "-",
                f"{d['hand_written_s']:.3f} s",
                f"×{d['ratio_to_hand_written']}",
                f"×{d['speedup_over_scanner']}" if d["speedup_over_scanner"] is not None else "-",
            )
        Console().print(t)
        Console().print(
            f"rebuild {results['rebuild_s']} s ({results['rebuild_rows_per_s']:,} rows/s, "
            f"{results['lake_bytes'] / 1e6:.0f} MB); refresh of 10,000 new events {results['refresh_10k_s']} s; "
            f"refresh with nothing new {results['noop_refresh_s']} s"
        )
    return results


if __name__ == "__main__":
    main()
