"""Insights benchmark: journeys, a funnel and attribution over 10M events, against hand-written DuckDB SQL.

    .venv/bin/python bench/insights.py                        # 10,000,000 events, 500,000 people
    .venv/bin/python bench/insights.py --quick                # 100,000 / 20,000: seconds, used by a test
    .venv/bin/python bench/insights.py --keep /tmp/ins-10m    # build once, reuse in later runs
    .venv/bin/python bench/insights.py --json

What one run does:

1. Builds a store (Candor's schema) with DuckDB: ``--people`` subjects (one in five joined with
   another into a profile), five sources (web, app, pos, email, callcenter), a campaign and sends to a
   tenth of the people in SQLite; and ``--events`` events over 180 days written straight into the
   analytics store as one generation of Parquet (the files a rebuild would write; the events table
   stays empty, so the store is not refreshed before queries). Setup is timed apart.
2. For journeys (goal ``Order Completed``, 30 days, 4 steps), a funnel (``Product Viewed`` →
   ``Product Added`` → ``Order Completed``, 7 days, by channel) and attribution (``Order Completed``,
   30 days, four models by channel): ``Insights.run`` — the views, the consent decision for every
   profile, the SQL, suppression — against a hand-written DuckDB query of the same numbers over the
   same files, in the same run; the numbers must be equal (k = 11 so that nothing is compared hidden).
3. Prints a table (target: each under 10 s and within 1.5× of the hand-written query) and writes
   JSON to ``bench/results/insights-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from candor.analytics import _extension_path, tables_named  # noqa: E402
from candor.app import Runtime  # noqa: E402
from candor.config import Settings  # noqa: E402
from candor.lake import COLUMNS, FORMAT, PROMOTED  # noqa: E402

RESULTS = ROOT / "bench" / "results"
NOW = 1_790_000_000_000
DAY = 86_400_000
SINCE, UNTIL = NOW - 90 * DAY, NOW
TARGET_S, TARGET_RATIO = 10.0, 1.5

PROF = """
prof AS (SELECT s.subject_id, coalesce(ps.profile_id, s.subject_id) AS profile_id
         FROM main.subjects s LEFT JOIN main.profile_subjects ps ON ps.subject_id = s.subject_id
         WHERE s.state <> 'erased'),
ev AS (SELECT p.profile_id, e.id, e.ts_ms, e.event, e.revenue,
              CASE e.source WHEN 'web' THEN 'web' WHEN 'app' THEN 'app' WHEN 'pos' THEN 'store'
                   WHEN 'email' THEN 'email' ELSE 'call_center' END AS channel
       FROM read_parquet($files) e JOIN prof p ON p.subject_id = e.subject_id),
tp AS (SELECT profile_id, ts_ms, channel, event FROM ev
       UNION ALL SELECT p.profile_id, s.ts_ms, s.channel, NULL FROM main.sends s
       JOIN prof p ON p.subject_id = s.subject_id WHERE s.outcome = 'sent')
"""
HAND = {
    "journeys": "WITH " + PROF + """,
conv AS (SELECT profile_id, min(ts_ms) AS t FROM ev WHERE event = 'Order Completed'
         AND ts_ms >= $since AND ts_ms < $until GROUP BY 1),
pop AS (SELECT profile_id FROM tp WHERE ts_ms >= $since AND ts_ms < $until UNION SELECT profile_id FROM conv),
scope AS (SELECT p.profile_id, c.t IS NOT NULL AS converted, coalesce(c.t, $until) AS ref
          FROM pop p LEFT JOIN conv c USING (profile_id)),
d AS (SELECT s.profile_id, t.ts_ms, t.channel,
             lag(t.channel) OVER (PARTITION BY s.profile_id ORDER BY t.ts_ms, t.channel) AS prev
      FROM scope s JOIN tp t USING (profile_id)
      WHERE t.ts_ms < s.ref AND t.ts_ms >= s.ref - 30 * 86400000::BIGINT
        AND coalesce(t.event, '') <> 'Order Completed'),
paths AS (SELECT profile_id, array_to_string(list_slice(list(channel ORDER BY ts_ms, channel), -4, -1), ' > ') AS path
          FROM d WHERE prev IS NULL OR prev <> channel GROUP BY 1)
SELECT coalesce(p.path, '(no touchpoint)') AS path, s.converted, count(*) FROM scope s
LEFT JOIN paths p USING (profile_id) GROUP BY ALL""",
    "funnel": "WITH " + PROF + """,
s1 AS (SELECT profile_id, arg_min(ts_ms, (ts_ms, id)) AS t, arg_min(channel, (ts_ms, id)) AS channel FROM ev
       WHERE event = 'Product Viewed' AND ts_ms >= $since AND ts_ms < $until GROUP BY 1),
s2 AS (SELECT a.profile_id, min(e.ts_ms) AS t FROM s1 a JOIN ev e ON e.profile_id = a.profile_id
       AND e.event = 'Product Added' AND e.ts_ms > a.t AND e.ts_ms <= a.t + 7 * 86400000::BIGINT GROUP BY 1),
s3 AS (SELECT b.profile_id FROM s2 b JOIN s1 a USING (profile_id) JOIN ev e ON e.profile_id = b.profile_id
       AND e.event = 'Order Completed' AND e.ts_ms > b.t AND e.ts_ms <= a.t + 7 * 86400000::BIGINT GROUP BY 1)
SELECT s1.channel, 1 + (s2.profile_id IS NOT NULL)::INT + (s3.profile_id IS NOT NULL)::INT AS stage, count(*)
FROM s1 LEFT JOIN s2 USING (profile_id) LEFT JOIN s3 USING (profile_id) GROUP BY ALL""",
    "attribution": "WITH " + PROF + """,
conv AS (SELECT profile_id, id, ts_ms, coalesce(revenue, 0) AS revenue FROM ev
         WHERE event = 'Order Completed' AND ts_ms >= $since AND ts_ms < $until),
j AS (SELECT c.id, c.profile_id, c.revenue, t.channel, t.ts_ms,
             row_number() OVER w_first AS fr, row_number() OVER w_last AS lr, count(*) OVER w AS n,
             pow(0.5, (c.ts_ms - t.ts_ms) / (7 * 86400000.0)) AS wt
      FROM conv c JOIN tp t ON t.profile_id = c.profile_id AND t.ts_ms < c.ts_ms
           AND t.ts_ms >= c.ts_ms - 30 * 86400000::BIGINT AND coalesce(t.event, '') <> 'Order Completed'
      WINDOW w AS (PARTITION BY c.id), w_first AS (PARTITION BY c.id ORDER BY t.ts_ms, t.channel),
             w_last AS (PARTITION BY c.id ORDER BY t.ts_ms DESC, t.channel DESC)),
credit AS (SELECT profile_id, channel, (fr = 1)::DOUBLE AS f, (lr = 1)::DOUBLE AS l, 1.0 / n AS li,
                  wt / sum(wt) OVER (PARTITION BY id) AS td, revenue FROM j
           UNION ALL SELECT profile_id, '(direct)', 1, 1, 1, 1, revenue FROM conv c WHERE NOT EXISTS
           (SELECT 1 FROM j WHERE j.id = c.id))
SELECT channel, count(DISTINCT profile_id), round(sum(f), 4), round(sum(l), 4), round(sum(li), 4),
       round(sum(td), 4), round(sum(f * revenue), 4), round(sum(l * revenue), 4), round(sum(li * revenue), 4),
       round(sum(td * revenue), 4)
FROM credit GROUP BY ALL""",
}
ASK: dict[str, dict[str, Any]] = {
    "journeys": {"goal": "Order Completed", "window_days": 30, "max_steps": 4, "top": 1000},
    "funnel": {"steps": ["Product Viewed", "Product Added", "Order Completed"], "window_days": 7},
    "attribution": {"conversion": "Order Completed", "window_days": 30, "half_life_days": 7},
}


def build(data: Path, people: int, n_events: int, seed: int) -> None:
    settings = Settings.from_env(env={}, data_dir=data, default_jurisdiction="US")
    Runtime(settings).close()
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.load_extension(_extension_path("duckdb_extension_sqlite_scanner"))
    con.execute(f"ATTACH '{data / 'candor.db'}' AS store (TYPE sqlite)")
    con.execute(f"SELECT setseed({(seed % 1000) / 1000})")
    con.execute("BEGIN")
    for i, name in enumerate(("web", "app", "pos", "email", "callcenter"), 1):
        con.execute(
            "INSERT INTO store.sources (id, name, write_key_hash, strict, personal_properties, created_ms) "
            f"VALUES ({i}, '{name}', 'h{i}', false, '[]', 0)"
        )
    con.execute(f"INSERT INTO store.subjects SELECT printf('s%08d', i), 0, 'active' FROM range({people}) t(i)")
    con.execute(
        "INSERT INTO store.profile_subjects SELECT printf('s%08d', i), printf('s%08d', i - i % 2) "
        f"FROM range({people // 5 * 2}) t(i)"
    )
    con.execute(
        "INSERT INTO store.campaigns (id, name, segment_id, channel, purpose, definition, state, created_ms, "
        "created_by) VALUES (1, 'autumn', 1, 'email', 'marketing.email', '{}', 'sent', 0, 'bench')"
    )
    con.execute(
        "INSERT INTO store.sends (campaign_id, subject_id, outcome, channel, ts_ms, attempts) "
        f"SELECT 1, printf('s%08d', i * 10), 'sent', 'email', {NOW} - CAST(random() * 180 * {DAY} AS BIGINT), 1 "
        f"FROM range({people // 10}) t(i)"
    )
    con.execute("COMMIT")
    gen = data / "analytics" / "events" / "g000001"
    gen.mkdir(parents=True, exist_ok=True)
    part = gen / "part-000001.parquet"
    # the p_ columns (lake.PROMOTED) hold the JSON's text: only revenue is in these properties
    promoted = ", ".join(
        f"CAST(round(5 + r * 100, 2) AS VARCHAR) AS p_{n}" if n == "revenue" else f"CAST(NULL AS VARCHAR) AS p_{n}"
        for n in PROMOTED
    )
    con.execute(
        f"""
        COPY (
          SELECT CAST(i + 1 AS BIGINT) AS id, src AS source_id,
                 (['web', 'app', 'pos', 'email', 'callcenter'])[src] AS source, 'track' AS type,
                 CASE src WHEN 3 THEN 'Order Completed' WHEN 4 THEN 'Email Opened' WHEN 5 THEN 'Call Completed'
                      ELSE CASE WHEN r < 0.55 THEN 'Product Viewed' WHEN r < 0.8 THEN 'Product Added'
                                ELSE 'Order Completed' END END AS event,
                 printf('s%08d', k) AS subject_id, ts AS ts_ms, ts AS received_ms,
                 '{{"revenue": ' || round(5 + r * 100, 2) || '}}' AS properties,
                 CASE src WHEN 1 THEN 'analytics.js' WHEN 2 THEN 'analytics-ios' ELSE NULL END AS library,
                 src = 2 AS in_app, CAST(NULL AS VARCHAR) AS channel_hint, CAST(NULL AS VARCHAR) AS utm_medium,
                 CAST(NULL AS VARCHAR) AS utm_source, CAST(NULL AS VARCHAR) AS campaign,
                 CASE WHEN src = 3 OR (src < 3 AND r >= 0.8) THEN round(5 + r * 100, 2) END AS revenue,
                 {promoted}
          FROM (SELECT i, random() AS r, CAST(floor(random() * {people}) AS BIGINT) AS k,
                       {NOW} - CAST(random() * 180 * {DAY} AS BIGINT) AS ts,
                       CASE WHEN random() < 0.45 THEN 1 WHEN random() < 0.45 THEN 2 WHEN random() < 0.5 THEN 3
                            WHEN random() < 0.6 THEN 4 ELSE 5 END AS src
                FROM range({n_events}) t(i))
          ORDER BY id
        ) TO '{part}' (FORMAT parquet, COMPRESSION zstd)
        """
    )
    con.close()
    cols = [c[0] for c in COLUMNS]
    check = duckdb.connect()
    assert [d[0] for d in check.execute(f"SELECT * FROM read_parquet('{part}') LIMIT 0").description] == cols
    check.close()
    manifest = {"format": FORMAT, "generation": 1, "store": "bench", "complete": True, "high": n_events,
                "high_key": None, "scanned": n_events, "gaps": [], "next_part": 2, "journal_offset": 0,
                "rehome_ms": 0, "refreshed_ms": NOW, "retired": [],
                "parts": [{"name": part.name, "rows": n_events, "min_id": 1, "max_id": n_events}]}  # fmt: skip
    (gen / "manifest.json").write_bytes(orjson.dumps(manifest))
    (data / "analytics" / "CURRENT").write_text("1\n")


def timed(fn: Any, repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def released(name: str, report: dict[str, Any]) -> set[tuple[Any, ...]]:
    """The report's cells in the shape of the hand-written query's rows."""
    rows = report["tables"][0]["rows"]
    if name == "journeys":
        return {(r["path"], r["outcome"] == "converted", r["profiles"]) for r in rows
                if not r.get("total") and r["path"] != "(other paths)"}  # fmt: skip
    if name == "funnel":
        steps = ASK["funnel"]["steps"]
        stage = {f"dropped after {i}: {steps[i - 1]}": i for i in range(1, len(steps))} | {"completed": len(steps)}
        return {(r["channel"], stage[r["stage"]], r["profiles"]) for r in rows
                if r["stage"] in stage and r["channel"] != "(all)"}  # fmt: skip
    keys = ("first_touch", "last_touch", "linear", "time_decay")
    return {(r["channel"], r["profiles"], *(round(r[m], 4) for m in keys),
             *(round(r[f"{m}_revenue"], 2) for m in keys)) for r in rows if not r.get("total")}  # fmt: skip


def hand_rows(name: str, rows: list[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
    if name == "journeys":
        return {(p, bool(c), int(n)) for p, c, n in rows}
    if name == "funnel":
        return {(ch, int(s), int(n)) for ch, s, n in rows}
    return {
        (r[0], int(r[1]), *(round(float(v), 4) for v in r[2:6]), *(round(float(v), 2) for v in r[6:])) for r in rows
    }


def run(args: argparse.Namespace, say: Any) -> dict[str, Any]:
    tmp = None
    if args.keep:
        data = Path(args.keep)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="candor-bench-insights-")
        data = Path(tmp.name) / "data"
    out: dict[str, Any] = {"events": args.events, "people": args.people}
    marker = data / "bench-insights.json"
    want = {"events": args.events, "people": args.people, "seed": args.seed}
    try:
        if not marker.exists() or json.loads(marker.read_text()) != want:
            if marker.exists():
                raise SystemExit(f"{data} holds a different benchmark store; remove it or use another --keep")
            say(f"building {args.people:,} people and {args.events:,} events …")
            t = time.perf_counter()
            build(data, args.people, args.events, args.seed)
            out["setup_s"] = round(time.perf_counter() - t, 1)
            marker.write_text(json.dumps(want))
        settings = Settings.from_env(env={}, data_dir=data, default_jurisdiction="US", analytics_refresh_seconds=0)
        rt = Runtime(settings)
        try:
            rt.analytics.refresh_before_query = False  # the files were written directly (step 1)
            assert rt.analytics.lake is not None
            files = rt.analytics.lake.files()
            out["insights"] = {}
            for name, params in ASK.items():
                if args.only and name not in args.only:
                    continue
                say(f"  {name}")
                ask = {"since": SINCE, "until": UNTIL, "k": 11, **params}
                ours_s, report = timed(lambda n=name, a=ask: rt.insights.run(n, a, now=NOW), args.repeat)

                def hand(n: str = name) -> list[tuple[Any, ...]]:
                    con = rt.analytics.connect(fresh=False, tables=tables_named(HAND[n]))
                    try:
                        return con.execute(HAND[n], {"files": files, "since": SINCE, "until": UNTIL}).fetchall()
                    finally:
                        con.close()

                hand_s, rows = timed(hand, args.repeat)
                # every released cell equals the hand-written query's; the cells it does not release are
                # the small ones and those hidden with them (complementary suppression)
                mine = {r for r in released(name, report) if None not in r}
                theirs = hand_rows(name, rows)
                count = 1 if name == "attribution" else 2
                big = {r for r in theirs if r[count] >= 11}
                if not mine or not mine <= theirs or len(big - mine) > report["suppressed_cells"]["complementary"]:
                    diff = sorted(mine - theirs, key=str)[:6]
                    raise AssertionError(f"{name}: the report and the hand-written query differ: {diff}")
                out["insights"][name] = {
                    "seconds": round(ours_s, 3),
                    "hand_written_s": round(hand_s, 3),
                    "ratio": round(ours_s / hand_s, 2),
                    "cells": len(mine),
                    "suppressed": report["suppressed_cells"]["total"],
                }
        finally:
            rt.close()
    finally:
        if tmp is not None:
            tmp.cleanup()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--people", type=int, default=500_000)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--keep", help="build in this directory once and reuse it")
    p.add_argument("--quick", action="store_true", help="100,000 events and 20,000 people, one repeat")
    p.add_argument("--json", action="store_true")
    p.add_argument("--only", nargs="*", choices=list(ASK), help="measure only these insights")
    args = p.parse_args(argv)
    if args.quick:
        args.events, args.people, args.repeat = 100_000, 20_000, 1
    console = Console(stderr=True)
    say = (lambda _m: None) if args.json else console.print
    results = run(args, say)
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "duckdb": duckdb.__version__,
                          "load_average": os.getloadavg(), "note": "shared with other engineers' work"}  # fmt: skip
    results["targets"] = {"seconds": TARGET_S, "ratio": TARGET_RATIO}
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        (RESULTS / f"insights-{stamp}.json").write_text(json.dumps(results, indent=2))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        t = Table(title=f"insights over {args.events:,} events, {args.people:,} people (DuckDB, 2 threads)")
        for col in ("insight", "Insights.run", "hand-written DuckDB", "ratio", "cells", "hidden", "target"):
            t.add_column(col)
        for name, d in results["insights"].items():
            ok = d["seconds"] < TARGET_S and d["ratio"] <= TARGET_RATIO
            t.add_row(name, f"{d['seconds']:.2f} s", f"{d['hand_written_s']:.2f} s", f"×{d['ratio']}",
                      str(d["cells"]), str(d["suppressed"]), "met" if ok else "not met")  # fmt: skip
        Console().print(t)
    return results


if __name__ == "__main__":
    main()
