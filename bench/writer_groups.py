"""The writer's cost per group of a few single events, in process (no HTTP, no client).

    .venv/bin/python bench/writer_groups.py                       # 3,000 subjects, 1,500 groups of 4
    .venv/bin/python bench/writer_groups.py --new 0.3             # 30% of the events from new subjects
    PYTHONPATH=OTHER/src .venv/bin/python bench/writer_groups.py  # the same on another checkout

Under load of single ``/v1/track`` calls the writer commits small groups (one to a few events), so
its fixed cost per group, not per event, bounds the requests per second. This opens a Runtime on a
temporary data directory (SQLite, durable commits), identifies ``--subjects`` users, then passes
``--groups`` groups of ``--size`` track events, validated as the collection API validates them,
through ``Ingestor._write`` and reports the median and p95 milliseconds per group (the best of
``--repeat`` rounds of the median). Run it on two checkouts in the same session and compare
(a ratio); with ``--profile`` it prints the top of a cProfile of one round. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from candor.app import Runtime
from candor.config import Settings
from candor.events import Message
from candor.ingest import Work


def _messages(rt: Runtime, source: Any, items: list[dict[str, Any]], type_: str | None = None) -> list[Message]:
    validator = rt.validator_for(source)
    now = int(time.time() * 1000)
    out = []
    for i, item in enumerate(items):
        m = validator.validate(
            item, type_=item.get("type", type_), received_ms=now, sent_at_ms=None, client_ip=None, index=i
        )
        if not isinstance(m, Message):
            raise SystemExit(f"the benchmark's own event was rejected: {m.reason}")
        out.append(m)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--subjects", type=int, default=3_000, help="identified users before the timed groups")
    p.add_argument("--groups", type=int, default=1_500, help="timed groups per round")
    p.add_argument("--size", type=int, default=4, help="track events per group")
    p.add_argument("--new", type=float, default=0.0, help="share of timed events from users not seen before")
    p.add_argument("--repeat", type=int, default=2, help="rounds; the best median is reported")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--profile", action="store_true", help="print the top of a cProfile of the last round")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    out: dict[str, Any] = {k: getattr(args, k) for k in ("subjects", "groups", "size", "new", "repeat")}
    with tempfile.TemporaryDirectory(prefix="candor-bench-writer-") as tmp:
        settings = Settings.from_env(env={}, data_dir=Path(tmp) / "data", analytics_refresh_seconds=0)
        rt = Runtime(settings)
        try:
            source = rt.directory.source_for_key(rt.directory.create_source("bench"))
            assert source is not None
            write = rt.ingestor._write
            for i in range(0, args.subjects, 100):
                idents = [
                    {"type": "identify", "userId": f"u{j}", "traits": {"email": f"u{j}@example.test", "plan": "free"}}
                    for j in range(i, min(i + 100, args.subjects))
                ]
                write([Work(source.id, _messages(rt, source, idents), [], int(time.time() * 1000))])
            fresh = 0
            medians, p95s = [], []
            for round_ in range(args.repeat):
                groups = []
                for _ in range(args.groups):
                    items = []
                    for _ in range(args.size):
                        if rng.random() < args.new:
                            fresh += 1
                            user = f"n{fresh}"
                        else:
                            user = f"u{rng.randrange(max(args.subjects, 1))}"
                        items.append({"type": "track", "userId": user, "event": "Viewed", "properties": {"n": 1}})
                    groups.append(
                        [Work(source.id, [m], [], int(time.time() * 1000)) for m in _messages(rt, source, items)]
                    )
                prof = None
                if args.profile and round_ == args.repeat - 1:
                    import cProfile

                    prof = cProfile.Profile()
                    prof.enable()
                times = []
                for works in groups:
                    t0 = time.perf_counter()
                    write(works)
                    times.append((time.perf_counter() - t0) * 1000)
                if prof is not None:
                    import pstats

                    prof.disable()
                    pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
                times.sort()
                medians.append(statistics.median(times))
                p95s.append(times[int(len(times) * 0.95) - 1])
            out["ms_per_group_p50"] = round(min(medians), 3)
            out["ms_per_group_p95"] = round(min(p95s), 3)
            out["rounds_p50"] = [round(m, 3) for m in medians]
        finally:
            rt.close()
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
