"""What reading the SQLite store through SQLAlchemy (not DuckDB's scanner) costs the analytics queries.

    .venv/bin/python bench/sqlite_reads.py --profiles 100000 --events 1000000
    PYTHONPATH=OTHER/src .venv/bin/python bench/sqlite_reads.py ...   # the same on another checkout

Builds a store with bench/segments.py's generator (a fifth of the profiles with two or three
subjects, events over 400 days), a consent choice for every subject and the analytics store, then
times, with the analytics store already current (median of ``--repeat``): each segment definition of
bench/segments.py (``Segments.evaluate``), a purpose breakdown of the first one's members
(``Segments.breakdown``) and the audience counts per purpose (``consent/audience.py``). Run it on two
checkouts in the same session and compare the medians (a ratio). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from candor.app import Runtime
from candor.config import Settings
from candor.consent.audience import audience_counts
from segments import DEFINITIONS, NOW, fill, timed


def consent_for_everyone(db: Path) -> None:
    """One analytics grant per subject, written by SQLite itself (the store is not open elsewhere)."""
    import sqlite3

    con = sqlite3.connect(db)
    try:
        con.execute(
            "INSERT INTO consent_records (subject_id, granted, denied, objection, source, jurisdiction, ts_ms,"
            " recorded_ms, confirmed, actor) SELECT subject_id, '[\"analytics\", \"marketing.email\"]', '[]', 0,"
            " 'bench', 'US', 0, 0, 0, 'bench' FROM subjects"
        )
        con.commit()
    finally:
        con.close()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profiles", type=int, default=100_000)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    out: dict[str, Any] = {"profiles": args.profiles, "events": args.events}
    with tempfile.TemporaryDirectory(prefix="candor-bench-reads-") as tmp:
        data = Path(tmp) / "data"
        settings = Settings.from_env(env={}, data_dir=data, default_jurisdiction="US", analytics_refresh_seconds=0)
        Runtime(settings).close()
        fill(data / "candor.db", args.profiles, args.events, args.seed)
        consent_for_everyone(data / "candor.db")
        rt = Runtime(settings)
        try:
            assert rt.analytics.lake is not None
            rt.analytics.lake.rebuild()
            rt.analytics.refresh_before_query = False
            first: list[str] = []
            for name, (definition, _) in DEFINITIONS.items():
                s, members = timed(lambda d=definition: rt.segments.evaluate(d, now=NOW), args.repeat)
                out[f"segment:{name}_s"] = round(s, 3)
                first = first or list(members)
            s, _ = timed(lambda: rt.segments.breakdown(first, ["analytics", "marketing.email"]), args.repeat)
            out["breakdown_s"] = round(s, 3)
            out["breakdown_members"] = len(first)
            s, counts = timed(lambda: audience_counts(rt.consent, rt.analytics), args.repeat)
            out["audience_counts_s"] = round(s, 3)
            out["audience_usable_analytics"] = counts["analytics"]["usable"]
        finally:
            rt.close()
    return out


if __name__ == "__main__":
    started = time.perf_counter()
    result = main()
    result["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))
