"""Soak test: ``candor serve`` under steady load for a long time, with stable memory and no loss.

    .venv/bin/python bench/soak.py                         # 10 minutes at 50% of the measured maximum
    .venv/bin/python bench/soak.py --minutes 30 --fraction 0.7
    .venv/bin/python bench/soak.py --quick                 # 20 s (the test suite runs this)

1. **Calibrate**: batches as fast as the clients can send them, for a few seconds: the maximum rate.
2. **Soak**: batches at ``fraction`` of that maximum, paced by a schedule (not by replies), for the
   duration. Every 50th event is invalid on purpose (no ``event`` name): it must be kept as a rejected
   record, never lost and never stored.
3. **Check**: the server's resident memory (VmRSS, sampled every 0.5 s) at the end against after the
   warm-up (median of the last tenth of the soak over the median of its second tenth): growth under
   ``--max-growth`` (10%). And nothing lost: every acknowledged valid event is stored exactly once,
   every invalid one is a rejected record, nothing else answered but 200.

All traffic goes to 127.0.0.1 only; the loops are bounded in time and stop by themselves. The result
(a table, and JSON in bench/results/soak-<time>.json) names the machine, which is shared: read the
rates as this machine's, on that day.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _server import BenchServer, ProcSampler, machine_info  # noqa: E402

RESULTS = HERE / "results"
INVALID_EVERY = 50


def _batch(prefix: str, start: int, size: int) -> tuple[bytes, int, int]:
    """A /v1/batch body of ``size`` events numbered from ``start``; returns (body, valid, invalid)."""
    items = []
    invalid = 0
    for n in range(start, start + size):
        item: dict[str, Any] = {
            "type": "track",
            "userId": f"soak-{n % 997}",
            "messageId": f"{prefix}-{n}",
            "properties": {"n": n, "price": n % 50},
        }
        if n % INVALID_EVERY == 0:
            invalid += 1  # no event name: refused, kept as a rejected record
        else:
            item["event"] = "Soak Viewed"
        items.append(item)
    return json.dumps({"batch": items}).encode(), size - invalid, invalid


class Tally:
    def __init__(self) -> None:
        self.valid = 0  # valid events in acknowledged (200) batches
        self.invalid = 0  # invalid events in acknowledged batches (the header counts them)
        self.reported_rejected = 0
        self.failures: dict[str, int] = {}
        self.latencies: list[float] = []


async def _send(
    session: Any, url: str, headers: dict[str, str], body: bytes, valid: int, invalid: int, t: Tally
) -> None:
    import aiohttp

    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as r:
            await r.read()
            if r.status == 200:
                t.valid += valid
                t.invalid += invalid
                t.reported_rejected += int(r.headers.get("X-Candor-Rejected", "0"))
            else:
                t.failures[str(r.status)] = t.failures.get(str(r.status), 0) + 1
    except (TimeoutError, aiohttp.ClientError) as exc:
        t.failures[type(exc).__name__] = t.failures.get(type(exc).__name__, 0) + 1
    t.latencies.append(time.perf_counter() - started)


async def _run(base: str, key: str, prefix: str, *, seconds: float, rate: float | None, batch: int,
               concurrency: int, start: int) -> tuple[Tally, int, float]:  # fmt: skip
    """Send for ``seconds``: as fast as possible (rate None) or at ``rate`` events/s. Returns the tally, the
    next event number and the seconds it took."""
    import aiohttp

    url = f"{base}/v1/batch"
    import base64

    headers = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
               "Content-Type": "application/json"}  # fmt: skip
    tally = Tally()
    gate = asyncio.Semaphore(concurrency)
    n = start
    t0 = time.monotonic()
    pending: set[asyncio.Task[None]] = set()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        i = 0
        while True:
            now = time.monotonic() - t0
            if now >= seconds:
                break
            if rate is not None:
                due = i * batch / rate
                if due > now:
                    await asyncio.sleep(min(due - now, seconds - now))
                    continue
            await gate.acquire()
            body, valid, invalid = _batch(prefix, n, batch)
            n += batch
            i += 1

            async def one(body: bytes = body, valid: int = valid, invalid: int = invalid) -> None:
                try:
                    await _send(session, url, headers, body, valid, invalid, tally)
                finally:
                    gate.release()

            task = asyncio.create_task(one())
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
    return tally, n, time.monotonic() - t0


def _counts(db: Path) -> tuple[int, int, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        stored = con.execute("SELECT count(*) FROM events").fetchone()[0]
        rejected = con.execute("SELECT count(*) FROM rejected_events").fetchone()[0]
        dupes = con.execute(
            "SELECT count(*) FROM (SELECT message_id FROM events GROUP BY message_id HAVING count(*) > 1)"
        ).fetchone()[0]
    finally:
        con.close()
    return int(stored), int(rejected), int(dupes)


def run(args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.seconds if args.seconds else args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="candor-soak-") as tmp:
        server = BenchServer(Path(tmp) / "data", env={"CANDOR_DEFAULT_JURISDICTION": "US",
                                                      "CANDOR_RETENTION_SECONDS": "0"})  # fmt: skip
        key = server.create_source("soak")
        with server:
            common = {"batch": args.batch, "concurrency": args.concurrency}
            calib, n, took = asyncio.run(
                _run(server.base_url, key, "cal", seconds=args.calibrate, rate=None, start=0, **common)
            )
            maximum = (calib.valid + calib.invalid) / took
            rate = maximum * args.fraction
            with ProcSampler(server.pid, interval=0.5) as sampler:
                soak, _, soak_took = asyncio.run(
                    _run(server.base_url, key, "soak", seconds=seconds, rate=rate, start=n, **common)
                )
            samples = sampler.samples
        stored, rejected, duplicated = _counts(server.data_dir / "candor.db")
    tenth = max(1, len(samples) // 10)
    baseline = statistics.median(samples[tenth : 2 * tenth] or samples)
    final = statistics.median(samples[-tenth:])
    growth = final / baseline - 1 if baseline else 0.0
    sent_valid = calib.valid + soak.valid
    sent_invalid = calib.invalid + soak.invalid
    failures = {k: calib.failures.get(k, 0) + soak.failures.get(k, 0) for k in {*calib.failures, *soak.failures}}
    lat = sorted(soak.latencies)
    result = {
        "benchmark": "soak",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "command": "bench/soak.py " + " ".join(sys.argv[1:]),
        "seconds": round(soak_took, 1),
        "max_events_per_s": round(maximum, 1),
        "target_events_per_s": round(rate, 1),
        "achieved_events_per_s": round((soak.valid + soak.invalid) / soak_took, 1),
        "p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
        "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 1) if lat else None,
        "rss_after_warmup_mb": round(baseline / 2**20, 1),
        "rss_final_mb": round(final / 2**20, 1),
        "rss_growth": round(growth, 4),
        "events_in_valid": sent_valid,
        "events_in_invalid": sent_invalid,
        "stored": stored,
        "rejected": rejected,
        "stored_twice": duplicated,
        "failures": failures,
        "no_loss": stored == sent_valid and rejected == sent_invalid and not failures and not duplicated,
        "memory_stable": growth < args.max_growth,
    }
    result["ok"] = bool(result["no_loss"] and result["memory_stable"])
    return result


def print_table(r: dict[str, Any]) -> None:
    rows = [
        ("duration", f"{r['seconds']} s"),
        ("maximum (calibration)", f"{r['max_events_per_s']} events/s"),
        ("target / achieved", f"{r['target_events_per_s']} / {r['achieved_events_per_s']} events/s"),
        ("latency p50 / p99 (batch)", f"{r['p50_ms']} / {r['p99_ms']} ms"),
        ("RSS after warm-up / final", f"{r['rss_after_warmup_mb']} / {r['rss_final_mb']} MB"),
        ("RSS growth", f"{r['rss_growth'] * 100:.1f}% ({'stable' if r['memory_stable'] else 'GROWING'})"),
        ("valid in / stored", f"{r['events_in_valid']} / {r['stored']}"),
        ("invalid in / rejected records", f"{r['events_in_invalid']} / {r['rejected']}"),
        ("failures", json.dumps(r["failures"]) if r["failures"] else "none"),
        ("result", "OK" if r["ok"] else "FAILED"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=0.0, help="overrides --minutes")
    p.add_argument("--fraction", type=float, default=0.5, help="share of the measured maximum to sustain")
    p.add_argument("--calibrate", type=float, default=10.0, help="seconds of full-speed sending first")
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-growth", type=float, default=0.10)
    p.add_argument("--quick", action="store_true", help="20 s soak after 3 s of calibration")
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.calibrate = args.seconds or 20.0, 3.0
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = run(args)
    print_table(result)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        name = RESULTS / f"soak-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
        name.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nresults: {name}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
