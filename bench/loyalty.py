"""Loyalty benchmark: crediting purchases, redemptions (sequential and contended) and value statements.

Run from the repository root::

    .venv/bin/python bench/loyalty.py                 # 2,000 members, 200,000 purchase events
    .venv/bin/python bench/loyalty.py --quick         # 200 members, 5,000 events: seconds, used by a test
    .venv/bin/python bench/loyalty.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/loyalty.py --help

What one run does (in-process, one Runtime; ``--database-url`` for PostgreSQL, else SQLite):

1. Setup (timed apart): ``--members`` subjects join (``Loyalty.join``: a consent record with the notice,
   an audit entry, the member row), then ``--events`` ``Order Completed`` events are inserted directly
   (a share ``--member-share`` of them by members), with a sealed part like real events.
2. Earn: ``Loyalty.earn_purchases`` over all of them (first pass: credits), then again (second pass:
   nothing new, the look-back re-read only). Baseline: reading the same rows the job reads (one SELECT
   of id, source, messageId, subject, time and properties of the purchase events).
3. Redeem: ``--redemptions`` sequential ``Loyalty.redeem`` of 1 point by random members. Baseline: the
   same number of write transactions that each insert one row into a scratch table (the least a
   durable write costs on this store). Then ``--threads`` threads redeem from one member holding fewer
   points than they ask for in total: the run checks no overspend and ``balance = sum(ledger)``.
4. Statement: ``Loyalty.statement`` for ``--sample`` members, p50 and p95.
5. Prints a table and writes JSON to ``bench/results/loyalty-<timestamp>.json`` (``--no-save``: not).

``main(argv)`` returns the results as a dict.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "src"))

FULL = {"members": 2_000, "events": 200_000, "redemptions": 2_000, "sample": 50}
QUICK = {"members": 200, "events": 5_000, "redemptions": 200, "sample": 10}


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 1)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--members", type=int)
    ap.add_argument("--events", type=int)
    ap.add_argument("--redemptions", type=int)
    ap.add_argument("--sample", type=int)
    ap.add_argument("--member-share", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--database-url", default="")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    size = dict(QUICK if args.quick else FULL)
    for k in size:
        if getattr(args, k) is not None:
            size[k] = getattr(args, k)

    import orjson
    from sqlalchemy import Column, Integer, MetaData, String, Table, func, select

    from candor.app import Runtime
    from candor.config import Settings
    from candor.store import now_ms
    from candor.store.schema import events, loyalty_ledger, loyalty_members

    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="bench-loyalty-"))
    rt = Runtime(
        Settings.from_env(
            env={}, data_dir=tmp, database_url=args.database_url or None, default_jurisdiction="US", loyalty_seconds=0
        )
    )
    out: dict[str, Any] = {
        "benchmark": "loyalty",
        "size": size,
        "database": "postgresql" if args.database_url else "sqlite",
    }
    try:
        lo = rt.loyalty
        source_id = rt.rights.source_id("bench-shop")
        # -- setup --
        t0 = time.perf_counter()
        members: list[str] = []
        for _ in range(size["members"]):
            with rt.store.write() as conn:
                sid, _ = rt.vault.new_subject(conn)
            members.append(sid)
        with rt.store.write() as conn:
            others = [rt.vault.new_subject(conn)[0] for _ in range(max(1, size["members"] // 2))]
        t_join = time.perf_counter()
        joined_at = now_ms() - 1000
        for sid in members:
            lo.join(sid, now=joined_at)
        out["join_ms_each"] = round(_ms(t_join) / len(members), 2)
        sealed = {s: rt.vault.seal(s, b'{"context":{}}') for s in members + others}
        rows = []
        base_ts = joined_at + 1
        for i in range(size["events"]):
            sid = rng.choice(members) if rng.random() < args.member_share else rng.choice(others)
            rows.append(
                {
                    "source_id": source_id,
                    "message_id": f"order-{i}",
                    "type": "track",
                    "event": "Order Completed",
                    "subject_id": sid,
                    "user_pid": None,
                    "anon_pid": None,
                    "ts_ms": base_ts + i,
                    "received_ms": base_ts + i,
                    "properties": orjson.dumps({"revenue": round(rng.uniform(3, 120), 2)}).decode(),
                    "context": "{}",
                    "sealed": sealed[sid],
                }
            )
        for i in range(0, len(rows), 5000):
            with rt.store.write() as conn:
                conn.execute(events.insert(), rows[i : i + 5000])
        out["setup_s"] = round(time.perf_counter() - t0, 1)

        # -- earn --
        t = time.perf_counter()
        with rt.store.engine.connect() as conn:
            n_read = len(
                conn.execute(
                    select(
                        events.c.id, events.c.source_id, events.c.message_id, events.c.subject_id, events.c.ts_ms,
                        events.c.properties,
                    ).where(events.c.event == "Order Completed")
                ).all()
            )  # fmt: skip
        baseline_scan = _ms(t)
        t = time.perf_counter()
        first = lo.earn_purchases()
        earn_first = _ms(t)
        t = time.perf_counter()
        second = lo.earn_purchases()
        earn_second = _ms(t)
        assert second["credited"] == 0, "the second pass credited again"
        assert n_read == size["events"]
        out["earn"] = {
            "events": first["events"],
            "credited": first["credited"],
            "first_pass_ms": earn_first,
            "credits_per_s": round(first["credited"] / (earn_first / 1000), 1) if earn_first else None,
            "second_pass_ms": earn_second,
            "baseline_scan_ms": baseline_scan,
            "first_pass_ratio": round(earn_first / baseline_scan, 1) if baseline_scan else None,
            "second_pass_ratio": round(earn_second / baseline_scan, 1) if baseline_scan else None,
        }

        # -- redeem --
        rich = [m for m in members if lo.status(m)["balance"] > 0]
        t = time.perf_counter()
        for i in range(size["redemptions"]):
            lo.redeem(rng.choice(rich), 1, ref=f"bench-{i}")
        redeem_ms = _ms(t)
        scratch = Table("bench_scratch", MetaData(), Column("id", Integer, primary_key=True), Column("v", String(40)))
        scratch.create(rt.store.engine, checkfirst=True)
        t = time.perf_counter()
        for i in range(size["redemptions"]):
            with rt.store.write() as conn:
                conn.execute(scratch.insert(), {"v": f"r{i}"})
        baseline_write = _ms(t)
        out["redeem"] = {
            "n": size["redemptions"],
            "ms_each": round(redeem_ms / size["redemptions"], 3),
            "baseline_write_ms_each": round(baseline_write / size["redemptions"], 3),
            "ratio": round(redeem_ms / baseline_write, 1) if baseline_write else None,
        }
        # contended: one member, more asked than held
        target = members[0]
        balance = lo.status(target)["balance"]
        lo.earn(target, 100, kind="purchase", ref="bench-contended")
        balance += 100
        ask = max(1, balance // 5 + 1)
        results: list[str] = []
        barrier = threading.Barrier(args.threads)

        def spend() -> None:
            barrier.wait()
            for _ in range(3):
                try:
                    lo.redeem(target, ask)
                    results.append("ok")
                except Exception as exc:
                    results.append(getattr(exc, "code", type(exc).__name__))

        t = time.perf_counter()
        threads = [threading.Thread(target=spend) for _ in range(args.threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        contended_ms = _ms(t)
        ok = results.count("ok")
        with rt.store.engine.connect() as conn:
            sums = dict(
                conn.execute(
                    select(loyalty_ledger.c.subject_id, func.sum(loyalty_ledger.c.points)).group_by(
                        loyalty_ledger.c.subject_id
                    )
                ).all()
            )
            bad = [s for s, b in conn.execute(select(loyalty_members.c.subject_id, loyalty_members.c.balance))
                   if int(sums.get(s, 0)) != int(b) or b < 0]  # fmt: skip
        assert ok == balance // ask and not bad, "overspent or ledger out of balance"
        out["contended"] = {
            "threads": args.threads,
            "attempts": len(results),
            "succeeded": ok,
            "refused": results.count("insufficient_points"),
            "ms": contended_ms,
            "ledger_balanced": not bad,
        }

        # -- statement --
        times = []
        for sid in rng.sample(members, min(size["sample"], len(members))):
            t = time.perf_counter()
            lo.statement(sid)
            times.append(_ms(t))
        times.sort()
        out["statement_ms"] = {
            "p50": statistics.median(times),
            "p95": times[max(0, int(len(times) * 0.95) - 1)],
        }
    finally:
        rt.close()
    out["load_average"] = os.getloadavg()
    out["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        out["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False, cwd=BENCH_DIR
        ).stdout.strip()
    except OSError:
        out["commit"] = None
    out["command"] = "bench/loyalty.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.quiet:
        e, r, c = out["earn"], out["redeem"], out["contended"]

        def row(label: str, value: Any, base: Any = "", ratio: Any = "") -> None:
            print(f"{label:38} {value!s:>12} {base!s:>12} {ratio!s:>7}")

        row("metric", "value", "baseline", "ratio")
        row("earn: first pass (ms)", e["first_pass_ms"], e["baseline_scan_ms"], e["first_pass_ratio"])
        row("earn: second pass, nothing new (ms)", e["second_pass_ms"], e["baseline_scan_ms"], e["second_pass_ratio"])
        row("earn: credits per second", e["credits_per_s"])
        row("redeem: ms each", r["ms_each"], r["baseline_write_ms_each"], r["ratio"])
        row("contended: succeeded / attempts", f"{c['succeeded']} / {c['attempts']}")
        row("statement p50 / p95 (ms)", f"{out['statement_ms']['p50']} / {out['statement_ms']['p95']}")
        row("join: ms each", out["join_ms_each"])
        print(f"load average {out['load_average']}")
    if not args.no_save:
        results_dir = BENCH_DIR / "results"
        results_dir.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        (results_dir / f"loyalty-{stamp}.json").write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
