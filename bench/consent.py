"""Consent benchmark: can_use decisions per second (warm cache), the bulk audience count, and TCF
decoding against the iab-tcf package, in one run.

    .venv/bin/python bench/consent.py [--profiles 100000] [--bulk 1000000] [--decisions 500000] [--quick]

Profiles and ledger records are inserted straight into a fresh embedded store (the ingest path has
its own benchmark); every profile gets one or two ledger records with a realistic mix of choices.
"""

from __future__ import annotations

import argparse
import random
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from candor.analytics import Analytics
from candor.app import Runtime
from candor.config import Settings
from candor.consent.audience import audience_counts as duckdb_counts
from candor.consent.ledger import audience_counts
from candor.store import now_ms
from candor.store.schema import consent_records, subjects

PURPOSES = ["analytics", "personalization", "advertising", "sale_sharing", "marketing.email", "marketing.sms"]


def populate(rt: Runtime, n: int, rng: random.Random) -> list[str]:
    ids = [secrets.token_hex(16) for _ in range(n)]
    ts = now_ms()
    chunk = 20_000
    seq_rows: list[dict[str, Any]] = []
    for i in range(0, n, chunk):
        part = ids[i : i + chunk]
        recs = []
        for sid in part:
            roll = rng.random()
            if roll < 0.6:
                granted, denied = PURPOSES, []
            elif roll < 0.8:
                granted, denied = [], PURPOSES
            else:
                granted = [p for p in PURPOSES if rng.random() < 0.5]
                denied = [p for p in PURPOSES if p not in granted]
            recs.append(_rec(sid, granted, denied, "banner", ts - rng.randint(0, 10**9)))
            if rng.random() < 0.1:
                recs.append(_rec(sid, [], ["sale_sharing", "advertising"], "gpc", ts))
        with rt.store.write() as conn:
            conn.execute(subjects.insert(), [{"subject_id": s, "created_ms": ts, "state": "active"} for s in part])
            conn.execute(consent_records.insert(), recs)
        seq_rows.extend(recs)
    return ids


def _rec(sid: str, granted: list[str], denied: list[str], source: str, ts: int) -> dict[str, Any]:
    return {
        "subject_id": sid,
        "granted": orjson.dumps(granted).decode(),
        "denied": orjson.dumps(denied).decode(),
        "objection": False,
        "source": source,
        "ts_ms": ts,
        "recorded_ms": ts,
        "expires_ms": ts + 395 * 86_400_000 if granted else None,
        "confirmed": False,
        "actor": "bench",
    }


def bench_can_use(rt: Runtime, ids: list[str], decisions: int, rng: random.Random) -> dict[str, float]:
    consent = rt.consent
    consent.CACHE_SECONDS = 3600.0  # warm cache for the whole run
    started = time.perf_counter()
    for sid in ids:  # warm: every person's state and decisions are in memory
        for purpose in PURPOSES:
            consent.can_use(sid, purpose)
    warm = time.perf_counter() - started
    picks = [(rng.choice(ids), rng.choice(PURPOSES)) for _ in range(decisions)]
    started = time.perf_counter()
    allowed = 0
    can_use = consent.can_use
    for sid, purpose in picks:
        allowed += can_use(sid, purpose).allowed
    elapsed = time.perf_counter() - started
    return {
        "warmup_s": warm,
        "decisions": decisions,
        "seconds": elapsed,
        "per_second": decisions / elapsed,
        "allowed_share": allowed / decisions,
    }


def bench_tcf(strings: int) -> dict[str, Any]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("tcf_bench", Path(__file__).with_name("tcf_decode.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    result: dict[str, Any] = mod.main(["--strings", str(strings)]) if hasattr(mod, "main") else {}
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profiles", type=int, default=100_000)
    ap.add_argument("--bulk", type=int, default=1_000_000)
    ap.add_argument("--decisions", type=int, default=500_000)
    ap.add_argument("--quick", action="store_true", help="a small run for tests (seconds)")
    args = ap.parse_args(argv)
    if args.quick:
        args.profiles, args.bulk, args.decisions = 2_000, 5_000, 20_000
    rng = random.Random(7)
    console = Console()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="candor-bench-consent-") as tmp:
        rt = Runtime(Settings.from_env(env={}, data_dir=Path(tmp) / "a", sqlite_synchronous="NORMAL"))
        t0 = time.perf_counter()
        ids = populate(rt, args.profiles, rng)
        results["populate_s"] = time.perf_counter() - t0
        results["can_use"] = bench_can_use(rt, ids, args.decisions, rng)
        rt.close()
        rt = Runtime(Settings.from_env(env={}, data_dir=Path(tmp) / "b", sqlite_synchronous="NORMAL"))
        populate(rt, args.bulk, rng)
        rt.store.checkpoint()  # as SQLite's automatic checkpoints keep it in service: a small WAL
        t0 = time.perf_counter()
        counts = duckdb_counts(rt.consent, Analytics(rt.store))
        duck_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        reference = audience_counts(rt.consent, rt.suppressions)
        ref_s = time.perf_counter() - t0
        assert counts == reference, "DuckDB and the resolver disagree"
        results["bulk"] = {
            "profiles": args.bulk,
            "seconds": duck_s,
            "reference_seconds": ref_s,
            "ratio": ref_s / duck_s,
            "usable_marketing_email": counts["marketing.email"]["usable"],
        }
        rt.close()
    results["tcf"] = bench_tcf(200 if args.quick else 1000)
    table = Table("measure", "value", "target")
    cu = results["can_use"]
    table.add_row("can_use decisions/s (warm cache)", f"{cu['per_second']:,.0f}", "≥ 200,000")
    table.add_row(
        "bulk audience count (DuckDB)",
        f"{results['bulk']['seconds']:.2f} s over {args.bulk:,} profiles "
        f"({results['bulk']['ratio']:.0f}× the resolver one by one: {results['bulk']['reference_seconds']:.1f} s)",
        "< 2 s / 1M",
    )
    tcf = results["tcf"]
    if tcf:
        table.add_row("TCF decode vs iab-tcf", f"{tcf.get('ratio', 0):.1f}×", "≥ 2×")
    console.print(table)
    return results


if __name__ == "__main__":
    main()
