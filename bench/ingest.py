"""Ingest benchmark: events/s through the real server against the raw speed of its store.

Run from the repository root::

    .venv/bin/python bench/ingest.py                    # 200,000 batch events, 20,000 singles
    .venv/bin/python bench/ingest.py --quick            # a small run, well under 30 s
    .venv/bin/python bench/ingest.py --profile          # also py-spy profiles of the server

What it does, in one run on one fresh data directory (SQLite, the default store):

1. ``candor sources create bench`` for a write key, then ``candor serve`` on a free port.
2. Pre-generates ``--events`` events as /v1/batch bodies of ``--batch`` mixed events (about 30%
   identify with personal traits, 50% track, 20% page) over ``events / 20`` people who keep
   arriving during the run, so new and known subjects both occur; every messageId is unique.
   Every event carries ``context.consent.categoryPreferences`` with analytics granted, as a
   consent banner stamps them, so every acknowledged event is stored (none is held back for
   want of consent).
3. Sends them from separate client processes (``--clients``; aiohttp when installed, else httpx;
   keep-alive, ``--concurrency`` requests in flight in total) and measures events/s from the first
   send to the last acknowledgement, request latency, non-2xx answers, the server's resident memory
   and CPU, and the writer's group commits (from the server's /metrics).
4. Sends ``--singles`` one-event /v1/track requests the same way: requests/s and latency.
5. Stops the server and inserts the very rows it stored for the batch phase (read back from its
   database: same ids, sizes and sealed blobs) straight into a fresh database made by Candor's own
   migrations (same pragmas), with ``executemany``, committing every ``ingest.MAX_GROUP_EVENTS``
   rows: the raw ceiling of the store, median of ``--raw-repeats`` runs. The ratio server / raw is
   what the target is about.
6. Checks that the store holds exactly the events that were acknowledged.
7. Prints a table against the targets and writes ``bench/results/ingest-<timestamp>.json``.

``main(argv)`` returns the results as a dict, so a test can run ``main(["--quick"])``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import orjson

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import _server  # noqa: E402 - bench/ is not a package; its helper sits beside this file

RESULTS_DIR = BENCH_DIR / "results"

TARGETS = {
    "batch_events_per_s": 20_000,
    "ratio_to_raw": 0.40,
    "single_requests_per_s": 2_000,
    "server_rss_peak_mb": 300,
}

REQUEST_TIMEOUT = 60.0  # seconds for one request; a slower answer counts as a failure
FULL = {"events": 200_000, "singles": 20_000}
QUICK = {"events": 5_000, "singles": 1_000}


# -- data ----------------------------------------------------------------------------------------
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Niklaus",
         "Radia", "Tim", "Sophie", "Yukihiro", "Guido", "Linus", "Hedy", "Katherine", "John", "Mary"]  # fmt: skip
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton",
        "Wirth", "Perlman", "Berners-Lee", "Wilson", "Matsumoto", "van Rossum", "Torvalds", "Lamarr"]  # fmt: skip
STREETS = ["Main St", "Oak Ave", "Elm St", "Market St", "Broadway", "Pine Rd", "Cedar Ln", "Lake Dr"]
CITIES = [("Springfield", "IL", "62701"), ("Portland", "OR", "97201"), ("Austin", "TX", "73301"),
          ("Madison", "WI", "53703"), ("Boulder", "CO", "80302"), ("Albany", "NY", "12207")]  # fmt: skip
AREA_CODES = ["201", "212", "312", "415", "503", "512", "608", "617", "720", "808"]
CATEGORIES = ["Books", "Music", "Vinyl", "Audiobooks", "Gift Cards", "Stationery"]
PAGES = [("Home", "/"), ("Search", "/search"), ("Product", "/p/"), ("Cart", "/cart"), ("Checkout", "/checkout"),
         ("Account", "/account"), ("Category", "/c/")]  # fmt: skip
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
]
TRACK_EVENTS = ["Product Viewed", "Product Viewed", "Product Added", "Products Searched", "Order Completed"]
SITE = "https://shop.example.com"


class Person(NamedTuple):
    user_id: str
    anon_ids: list[str]
    first: str
    last: str
    email: str
    phone: str
    address: dict[str, str]


def make_person(rng: random.Random, i: int) -> Person:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    city, state, zip_code = rng.choice(CITIES)
    return Person(
        user_id=f"cust-{i:07d}-{rng.getrandbits(24):06x}",
        anon_ids=[str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(rng.choice((1, 1, 2)))],
        first=first,
        last=last,
        email=f"{first}.{last}.{i}@example.com".lower().replace(" ", ""),
        phone=f"({rng.choice(AREA_CODES)}) 555-01{rng.randrange(100):02d}",
        address={
            "street": f"{rng.randrange(1, 9999)} {rng.choice(STREETS)}",
            "city": city,
            "state": state,
            "postalCode": zip_code,
            "country": "US",
        },
    )


def _context(rng: random.Random, person: Person, path: str, title: str) -> dict[str, Any]:
    return {
        "library": {"name": "analytics.js", "version": "5.2.1"},
        "ip": f"198.51.100.{rng.randrange(1, 255)}",
        "userAgent": rng.choice(USER_AGENTS),
        "locale": "en-US",
        "timezone": "America/Chicago",
        "page": {"path": path, "url": SITE + path, "referrer": "https://www.example.org/", "title": title},
        # what a consent banner stamps on every event; analytics is granted so every event is stored
        "consent": {
            "categoryPreferences": {
                "necessary": True,
                "analytics": True,
                "personalization": rng.random() < 0.7,
                "advertising": rng.random() < 0.4,
            }
        },
    }


def make_event(rng: random.Random, person: Person, message_id: str, ts: str) -> dict[str, Any]:
    """One Segment message: ~30% identify, ~50% track, ~20% page; ids as a real site mixes them."""
    r = rng.random()
    mtype = "identify" if r < 0.30 else ("track" if r < 0.80 else "page")
    anon = rng.choice(person.anon_ids)
    msg: dict[str, Any] = {"type": mtype, "messageId": message_id, "timestamp": ts}
    if mtype == "identify":
        msg["userId"] = person.user_id
        if rng.random() < 0.6:
            msg["anonymousId"] = anon
        msg["traits"] = {
            "email": person.email,
            "firstName": person.first,
            "lastName": person.last,
            "phone": person.phone,
            "address": person.address,
        }
        msg["context"] = _context(rng, person, "/account", "Your account")
        return msg
    who = rng.random()
    if who < 0.5:
        msg["userId"], msg["anonymousId"] = person.user_id, anon
    elif who < 0.75:
        msg["userId"] = person.user_id
    else:
        msg["anonymousId"] = anon
    if mtype == "track":
        name = rng.choice(TRACK_EVENTS)
        sku = f"sku-{rng.randrange(5000):05d}"
        price = round(rng.uniform(3, 80), 2)
        if name == "Order Completed":
            items: list[dict[str, Any]] = [
                {"product_id": f"sku-{rng.randrange(5000):05d}", "price": round(rng.uniform(3, 80), 2), "quantity": 1}
                for _ in range(rng.randrange(1, 4))
            ]
            props: dict[str, Any] = {
                "order_id": f"ord-{rng.getrandbits(40):010x}",
                "total": round(sum(p["price"] for p in items), 2),
                "currency": "USD",
                "products": items,
            }
        elif name == "Products Searched":
            props = {"query": rng.choice(CATEGORIES).lower()}
        else:
            props = {
                "product_id": sku,
                "name": f"Item {sku}",
                "category": rng.choice(CATEGORIES),
                "price": price,
                "currency": "USD",
            }
        msg["event"] = name
        msg["properties"] = props
        msg["context"] = _context(rng, person, f"/p/{sku}", f"Item {sku}")
    else:
        name, path = rng.choice(PAGES)
        if path.endswith("/"):
            path += f"{rng.randrange(5000):05d}" if path != "/" else ""
        msg["name"] = name
        msg["properties"] = {"path": path, "title": name, "url": SITE + path}
        msg["context"] = _context(rng, person, path, name)
    return msg


class Workload:
    """Deterministic events over ``people`` who arrive during the run (new and known subjects)."""

    def __init__(self, events: int, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.run_id = f"{self.rng.getrandbits(32):08x}-{os.getpid()}-{time.time_ns() % 10**9}"
        self.people_n = max(1, events // 20)
        self.people: list[Person] = []
        self.n = 0
        self.total = events
        self.base = datetime.now(UTC) - timedelta(hours=1)

    def person(self) -> Person:
        # the pool of people who have "arrived" grows with the run; 5% of events come from the newest
        active = max(1, min(self.people_n, math.ceil(self.people_n * (self.n + 1) / self.total)))
        while len(self.people) < active:
            self.people.append(make_person(self.rng, len(self.people)))
        if self.rng.random() < 0.05:
            return self.people[active - 1]
        return self.people[self.rng.randrange(active)]

    def next_event(self, kind: str = "m") -> tuple[dict[str, Any], Person]:
        person = self.person()
        ts = (self.base + timedelta(milliseconds=self.n * 7)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        mid = f"bench-{self.run_id}-{kind}{self.n:08d}"
        self.n += 1
        return make_event(self.rng, person, mid, ts), person


def batch_bodies(work: Workload, events: int, batch: int) -> tuple[list[bytes], list[int]]:
    """Pre-serialised /v1/batch bodies and the number of events in each."""
    bodies, counts = [], []
    sent_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    for start in range(0, events, batch):
        items = [work.next_event("b")[0] for _ in range(min(batch, events - start))]
        bodies.append(orjson.dumps({"batch": items, "sentAt": sent_at}))
        counts.append(len(items))
    return bodies, counts


def single_bodies(work: Workload, n: int) -> list[bytes]:
    """Pre-serialised /v1/track bodies, one track event each."""
    out: list[bytes] = []
    while len(out) < n:
        msg, _ = work.next_event("s")
        if msg["type"] != "track":
            continue
        del msg["type"]
        out.append(orjson.dumps(msg))
    return out


# -- the client processes ------------------------------------------------------------------------
async def _send_all(spec: dict[str, Any], bodies: list[bytes]) -> dict[str, Any]:
    """Send every body with ``concurrency`` requests in flight over keep-alive connections."""
    conc = int(spec["concurrency"])
    headers = {"Authorization": spec["auth"], "Content-Type": "application/json"}
    n = len(bodies)
    latency = [0.0] * n
    status = [-1] * n  # -1: not sent before the phase deadline; 0: transport error or timeout
    rejected = [0] * n
    path = spec["path"]
    deadline = math.inf
    perf = time.perf_counter
    next_i = 0

    async def drive(post: Any) -> tuple[float, float, float]:
        nonlocal next_i, deadline

        async def worker() -> None:
            nonlocal next_i
            while next_i < n:
                if time.monotonic() > deadline:
                    return  # the phase is over: what was not sent keeps status -1
                i = next_i
                next_i += 1
                t = perf()
                try:
                    status[i], rej = await post(bodies[i])
                    if rej:
                        rejected[i] = int(rej)
                except Exception:  # a transport error counts as a failed request
                    status[i] = 0
                latency[i] = perf() - t

        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        deadline = t0 + float(spec["phase_timeout"])
        await asyncio.gather(*(worker() for _ in range(conc)))
        t1 = time.monotonic()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        return t0, t1, (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)

    if spec["client_lib"] == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=conc, limit_per_host=conc)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(
            spec["base_url"], connector=connector, headers=headers, timeout=timeout
        ) as session:

            async def post_aiohttp(body: bytes) -> tuple[int, str | None]:
                async with session.post(path, data=body) as r:
                    await r.read()
                    return r.status, r.headers.get("x-candor-rejected")

            async def warm_aiohttp() -> None:
                async with session.get("/healthz") as r:
                    await r.read()

            await asyncio.gather(*(warm_aiohttp() for _ in range(conc)))  # open the connections
            t0, t1, cpu = await drive(post_aiohttp)
    else:
        limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
        async with httpx.AsyncClient(
            base_url=spec["base_url"], limits=limits, timeout=httpx.Timeout(REQUEST_TIMEOUT), headers=headers
        ) as client:

            async def post_httpx(body: bytes) -> tuple[int, str | None]:
                r = await client.post(path, content=body)
                return r.status_code, r.headers.get("x-candor-rejected")

            await asyncio.gather(*(client.get("/healthz") for _ in range(conc)))  # open the connections
            t0, t1, cpu = await drive(post_httpx)
    return {"start": t0, "end": t1, "latency": latency, "status": status, "rejected": rejected, "cpu_seconds": cpu}


def client_worker(spec_path: str) -> None:
    """Entry point of a client process: load bodies, say ready, wait for go, send, write results."""
    spec = json.loads(Path(spec_path).read_text())
    bodies = Path(spec["bodies_file"]).read_bytes().split(b"\n")
    try:
        import uvloop

        result = uvloop.run(_send_all(spec, bodies))
    except ImportError:
        result = asyncio.run(_send_all(spec, bodies))
    Path(spec["result_file"]).write_bytes(orjson.dumps(result))


def resolve_client_lib(name: str) -> str:
    """``auto`` is aiohttp when installed (about half the client CPU per request), else httpx."""
    if name != "auto":
        return name
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return "httpx"
    return "aiohttp"


class PhaseResult(NamedTuple):
    requests: int
    events_sent: int
    accepted: int
    rejected: int
    non_2xx: int
    status_counts: dict[str, int]
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    client_cpu_seconds: float
    server_cpu_seconds: float
    server_rss_peak_bytes: int
    server_rss_mean_bytes: float
    commit_groups: int
    commit_group_events_mean: float
    commit_ms_mean: float
    writer_busy: float  # share of the phase's wall time the writer spent in write+commit
    server_rss_timeline_mb: list[float]  # one sample per second

    def as_dict(self) -> dict[str, Any]:
        return self._asdict()


COMMIT_METRICS = (
    "candor_commit_seconds_sum",
    "candor_commit_seconds_count",
    "candor_commit_group_events_sum",
    "candor_commit_group_events_count",
)


def commit_metrics(base_url: str) -> dict[str, float]:
    """The writer's group-commit counters from the server's Prometheus /metrics."""
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    out = dict.fromkeys(COMMIT_METRICS, 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in out:
            out[name] = float(value)
    return out


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def run_phase(
    server: _server.BenchServer,
    workdir: Path,
    name: str,
    path: str,
    write_key: str,
    bodies: list[bytes],
    counts: list[int],
    concurrency: int,
    clients: int,
    profile: Path | None = None,
    client_lib: str = "auto",
    phase_timeout: float = 900.0,
    profile_gil: bool = True,
) -> PhaseResult:
    """Send ``bodies`` from ``clients`` processes with ``concurrency`` requests in flight in total."""
    clients = max(1, min(clients, concurrency, len(bodies)))
    client_lib = resolve_client_lib(client_lib)
    auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    procs: list[tuple[subprocess.Popen[str], Path]] = []
    shares = [list(range(c, len(bodies), clients)) for c in range(clients)]
    try:
        for c, idx in enumerate(shares):
            bfile = workdir / f"{name}-bodies-{c}.ndjson"
            bfile.write_bytes(b"\n".join(bodies[i] for i in idx))
            result_file = workdir / f"{name}-result-{c}.json"
            spec: dict[str, Any] = {
                "base_url": server.base_url,
                "path": path,
                "auth": auth,
                "bodies_file": str(bfile),
                "concurrency": concurrency // clients + (1 if c < concurrency % clients else 0),
                "client_lib": client_lib,
                "phase_timeout": phase_timeout,
                "result_file": str(result_file),
            }
            sfile = workdir / f"{name}-spec-{c}.json"
            sfile.write_text(json.dumps(spec))
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--client-worker", str(sfile)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append((proc, result_file))
        for proc, _ in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"a client process did not start (said {line!r}, exit {proc.poll()})")
        m0 = commit_metrics(server.base_url)
        profiler = _server.Profiler(server.pid, profile, gil=profile_gil).start() if profile else None
        sampler = _server.ProcSampler(server.pid, 0.1).start()
        try:
            for proc, _ in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            for proc, _ in procs:
                proc.wait(phase_timeout + REQUEST_TIMEOUT + 60)
        finally:
            sampler.stop()
            if profiler is not None:
                profiler.stop()
        for proc, _ in procs:
            if proc.returncode != 0:
                raise RuntimeError(f"a client process failed with exit code {proc.returncode}")
        m1 = commit_metrics(server.base_url)
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()

    latencies: list[float] = []
    status_counts: dict[str, int] = {}
    accepted = rejected = non_2xx = 0
    start, end, client_cpu = math.inf, 0.0, 0.0
    for (_, rfile), idx in zip(procs, shares, strict=True):
        res = orjson.loads(rfile.read_bytes())
        start, end = min(start, res["start"]), max(end, res["end"])
        client_cpu += res["cpu_seconds"]
        latencies.extend(lat for lat, st in zip(res["latency"], res["status"], strict=True) if st != -1)
        for i, st, rej in zip(idx, res["status"], res["rejected"], strict=True):
            status_counts[str(st)] = status_counts.get(str(st), 0) + 1
            if 200 <= st < 300:
                accepted += counts[i] - rej
                rejected += rej
            else:
                non_2xx += 1
    latencies.sort()
    groups = m1["candor_commit_seconds_count"] - m0["candor_commit_seconds_count"]
    commit_s = m1["candor_commit_seconds_sum"] - m0["candor_commit_seconds_sum"]
    group_events = m1["candor_commit_group_events_sum"] - m0["candor_commit_group_events_sum"]
    return PhaseResult(
        requests=len(bodies),
        events_sent=sum(counts),
        accepted=accepted,
        rejected=rejected,
        non_2xx=non_2xx,
        status_counts=status_counts,
        seconds=end - start,
        p50_ms=_percentile(latencies, 0.50) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
        max_ms=(latencies[-1] if latencies else 0.0) * 1000,
        client_cpu_seconds=client_cpu,
        server_cpu_seconds=sampler.cpu,
        server_rss_peak_bytes=sampler.peak,
        server_rss_mean_bytes=sampler.mean,
        commit_groups=int(groups),
        commit_group_events_mean=group_events / groups if groups else 0.0,
        commit_ms_mean=1000 * commit_s / groups if groups else 0.0,
        writer_busy=commit_s / (end - start) if end > start else 0.0,
        server_rss_timeline_mb=[round(b / 2**20, 1) for b in sampler.samples[::10]],
    )


# -- the raw ceiling -----------------------------------------------------------------------------
RAW_COLUMNS = (
    "source_id, message_id, type, event, subject_id, user_pid, anon_pid, ts_ms, received_ms, "
    "properties, context, sealed"
)
RAW_INSERT = f"INSERT INTO events ({RAW_COLUMNS}) VALUES ({', '.join('?' * 12)})"


def raw_ceiling(data_dir: Path, rows: list[tuple[Any, ...]], group: int) -> dict[str, Any]:
    """Insert ``rows`` into ``events`` of a fresh store made by Candor's migrations, with the
    server's own connection pragmas, committing every ``group`` rows. Returns rows/s and pragmas.

    ``rows`` are tuples in the order of ``RAW_COLUMNS``, built before the clock starts."""
    from candor.config import Settings
    from candor.store import Store

    settings = Settings.from_env(env={"CANDOR_DATA_DIR": str(data_dir)})
    store = Store(settings)
    store.upgrade()
    raw = store.engine.raw_connection()  # the engine's "connect" hook set the server's pragmas
    try:
        conn: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]
        pragmas = {
            p: conn.execute(f"PRAGMA {p}").fetchone()[0]
            for p in ("journal_mode", "synchronous", "foreign_keys", "secure_delete")
        }
        cur = conn.cursor()
        t0 = time.perf_counter()
        for i in range(0, len(rows), group):
            cur.execute("BEGIN IMMEDIATE")
            cur.executemany(RAW_INSERT, rows[i : i + group])
            cur.execute("COMMIT")
        seconds = time.perf_counter() - t0
        count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        cur.close()
    finally:
        raw.close()
        store.dispose()
    return {
        "rows": len(rows),
        "rows_in_table": count,
        "group": group,
        "seconds": seconds,
        "rows_per_s": len(rows) / seconds if seconds else 0.0,
        "pragmas": pragmas,
        "avg_sealed_bytes": sum(len(r[11]) for r in rows) / len(rows) if rows else 0,
    }


# -- reporting -----------------------------------------------------------------------------------
def _git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", "src"))}


def _failures(phase: dict[str, Any]) -> str:
    """``0``, or the count with its status codes (-1: not sent before the deadline, 0: no answer)."""
    if not phase["non_2xx"]:
        return "0"
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(phase["status_counts"].items()) if not k.startswith("2"))
    return f"{phase['non_2xx']} ({codes})"


def print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    b, s, raw = results["batch"], results["singles"], results["raw"]
    mb = 1024 * 1024
    rows: list[tuple[str, str, str, bool | None]] = [
        ("batch events/s", f"{results['batch_events_per_s']:,.0f}", "≥ 20,000", results["pass"]["batch_events_per_s"]),
        (
            "raw store rows/s (same run, median)",
            f"{raw['rows_per_s']:,.0f} ({', '.join(f'{r / 1000:.0f}k' for r in raw['runs_rows_per_s'])})",
            "",
            None,
        ),
        ("ratio server / raw", f"{results['ratio_to_raw']:.3f}", "≥ 0.40", results["pass"]["ratio_to_raw"]),
        ("batch request p50 / p99", f"{b['p50_ms']:.1f} / {b['p99_ms']:.1f} ms", "", None),
        ("batch non-2xx", _failures(b), "0", b["non_2xx"] == 0),
        (
            "single track requests/s",
            f"{results['single_requests_per_s']:,.0f}",
            "≥ 2,000",
            results["pass"]["single_requests_per_s"],
        ),
        ("single request p50 / p99", f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f} ms", "", None),
        ("single non-2xx", _failures(s), "0", s["non_2xx"] == 0),
        (
            "server RSS peak (sampled / VmHWM)",
            f"{results['server_rss_peak_bytes'] / mb:.0f} / {results['server_vmhwm_bytes'] / mb:.0f} MB",
            "< 300 MB",
            results["pass"]["server_rss_peak_mb"],
        ),
        (
            "server CPU during batch / singles",
            f"{b['server_cpu_seconds'] / b['seconds']:.2f} / {s['server_cpu_seconds'] / s['seconds']:.2f} cores",
            "",
            None,
        ),
        (
            "client CPU during batch / singles",
            f"{b['client_cpu_seconds'] / b['seconds']:.2f} / {s['client_cpu_seconds'] / s['seconds']:.2f} cores",
            "",
            None,
        ),
        (
            "group commit: events/group, ms/group, writer busy (batch)",
            f"{b['commit_group_events_mean']:.0f}, {b['commit_ms_mean']:.1f} ms, {100 * b['writer_busy']:.0f}%",
            "",
            None,
        ),
        (
            "group commit: events/group, ms/group, writer busy (singles)",
            f"{s['commit_group_events_mean']:.1f}, {s['commit_ms_mean']:.2f} ms, {100 * s['writer_busy']:.0f}%",
            "",
            None,
        ),
        (
            "stored = acknowledged",
            f"{results['stored']['events_table']:,} = {results['stored']['expected']:,}",
            "equal",
            results["pass"]["nothing_lost"],
        ),
    ]
    cfg = results["config"]
    title = (
        f"Ingest: {cfg['events']:,} batch events ({cfg['batch']}/request), {cfg['singles']:,} singles, "
        f"concurrency {cfg['concurrency']}, {cfg['clients']} client process(es)"
        + (" — PROFILED, not for comparison" if cfg["profile"] else "")
    )
    table = Table("metric", "value", "target", "result", title=title)
    for metric, value, target, ok in rows:
        verdict = "" if ok is None else ("[green]pass[/green]" if ok else "[red]FAIL[/red]")
        table.add_row(metric, value, target, verdict)
    Console().print(table)


# -- main ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=None, help="batch events to send (default 200,000; quick 5,000)")
    p.add_argument("--batch", type=int, default=100, help="events per /v1/batch request (default 100)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight in total (default 8)")
    p.add_argument("--clients", type=int, default=1, help="client processes sharing the concurrency (default 1)")
    p.add_argument(
        "--client-lib",
        choices=("auto", "aiohttp", "httpx"),
        default="auto",
        help="HTTP client of the client processes (auto: aiohttp when installed, else httpx)",
    )
    p.add_argument("--singles", type=int, default=None, help="one-event /v1/track requests (default 20,000)")
    p.add_argument("--quick", action="store_true", help="a small run (5,000 events, 1,000 singles)")
    p.add_argument(
        "--phase-timeout",
        type=float,
        default=None,
        help="stop sending after this many seconds per phase; unsent requests count as failures "
        "(default 900; quick 120)",
    )
    p.add_argument(
        "--raw-repeats", type=int, default=3, help="raw-store runs, each on a fresh database; the median counts"
    )
    p.add_argument("--seed", type=int, default=7, help="random seed of the generated data")
    p.add_argument("--profile", action="store_true", help="record py-spy profiles of the server (slows it)")
    p.add_argument(
        "--profile-mode",
        choices=("gil", "wall"),
        default="gil",
        help="gil: sample the thread holding the GIL (default); wall: every working thread",
    )
    p.add_argument(
        "--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra CANDOR_* setting for the server"
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON result goes")
    p.add_argument("--no-save", action="store_true", help="do not write the JSON result")
    p.add_argument("--keep", action="store_true", help="keep the temporary data directories")
    p.add_argument("--quiet", action="store_true", help="no table and no progress lines")
    p.add_argument("--client-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    size = QUICK if args.quick else FULL
    args.events = size["events"] if args.events is None else args.events
    args.singles = size["singles"] if args.singles is None else args.singles
    if args.phase_timeout is None:
        args.phase_timeout = 120.0 if args.quick else 900.0
    if min(args.events, args.singles, args.batch, args.concurrency, args.clients, args.raw_repeats) < 1:
        p.error("--events, --singles, --batch, --concurrency, --clients and --raw-repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.client_worker:
        client_worker(args.client_worker)
        return {}
    from candor.ingest import MAX_GROUP_EVENTS

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    server_env = dict(kv.split("=", 1) for kv in args.server_env)
    tmp = Path(tempfile.mkdtemp(prefix="candor-bench-ingest-"))
    started = datetime.now(UTC)
    try:
        say(f"data dir {tmp}; generating {args.events:,} batch events and {args.singles:,} singles")
        work = Workload(args.events + args.singles * 2, seed=args.seed)
        bodies, counts = batch_bodies(work, args.events, args.batch)
        singles = single_bodies(work, args.singles)
        # several workers and a writer process start slower on a busy machine
        server = _server.BenchServer(tmp / "server", env=server_env, start_timeout=180.0)
        write_key = server.create_source("bench")
        profiles: dict[str, Any] = {}
        with server:
            say(f"server pid {server.pid} on {server.base_url}; sending batches")
            batch = run_phase(
                server, tmp, "batch", "/v1/batch", write_key, bodies, counts, args.concurrency, args.clients,
                tmp / "profile-batch.txt" if args.profile else None, args.client_lib, args.phase_timeout,
                args.profile_mode == "gil",
            )  # fmt: skip
            say(f"batch: {batch.accepted / max(batch.seconds, 1e-9):,.0f} events/s; sending singles")
            single = run_phase(
                server, tmp, "singles", "/v1/track", write_key, singles, [1] * len(singles), args.concurrency,
                args.clients, tmp / "profile-singles.txt" if args.profile else None, args.client_lib,
                args.phase_timeout, args.profile_mode == "gil",
            )  # fmt: skip
            vmhwm = _server.hwm_bytes(server.pid) or 0
            say(f"singles: {single.accepted / max(single.seconds, 1e-9):,.0f} requests/s; stopping the server")
        stats = json.loads(server.cli("stats", "--json"))
        pg_url = server_env.get("CANDOR_DATABASE_URL")
        if pg_url:
            # PostgreSQL (bench/scale.py): the counts from the server's database; no raw ceiling
            from sqlalchemy import create_engine

            engine = create_engine(pg_url)
            with engine.connect() as pg:
                in_table = pg.exec_driver_sql("SELECT count(*) FROM events").scalar() or 0
                sealed_avg = float(pg.exec_driver_sql("SELECT avg(length(sealed)) FROM events").scalar() or 0)
                subjects = pg.exec_driver_sql("SELECT count(*) FROM subjects").scalar() or 0
            engine.dispose()
            raw_rows = []
        else:
            uri = server.db_path.resolve().as_uri() + "?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
                in_table = db.execute("SELECT count(*) FROM events").fetchone()[0]
                sealed_avg = db.execute("SELECT avg(length(sealed)) FROM events").fetchone()[0] or 0
                subjects = db.execute("SELECT count(*) FROM subjects").fetchone()[0]
                # the raw ceiling inserts exactly the rows the server stored for the batch phase
                raw_rows = db.execute(
                    f"SELECT {RAW_COLUMNS} FROM events ORDER BY id LIMIT ?", (batch.accepted,)
                ).fetchall()
        if args.profile:
            for phase in ("batch", "singles"):
                profiles[phase] = _server.summarise_collapsed(tmp / f"profile-{phase}.txt")
        del bodies, singles
        if raw_rows and args.raw_repeats > 0:
            say(f"raw ceiling: {len(raw_rows):,} rows in groups of {MAX_GROUP_EVENTS:,}, {args.raw_repeats} times")
            raw_runs = [raw_ceiling(tmp / f"raw-{i}", raw_rows, MAX_GROUP_EVENTS) for i in range(args.raw_repeats)]
            raw = dict(sorted(raw_runs, key=lambda r: r["rows_per_s"])[len(raw_runs) // 2])  # the median run
            raw["runs_rows_per_s"] = [r["rows_per_s"] for r in raw_runs]
        else:
            raw = {"rows_per_s": 0.0, "runs_rows_per_s": [], "skipped": True}
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)

    expected = batch.accepted + single.accepted
    batch_eps = batch.accepted / batch.seconds if batch.seconds else 0.0
    single_rps = single.accepted / single.seconds if single.seconds else 0.0
    rss_peak = max(batch.server_rss_peak_bytes, single.server_rss_peak_bytes)
    ratio = batch_eps / raw["rows_per_s"] if raw["rows_per_s"] else 0.0
    results: dict[str, Any] = {
        "benchmark": "ingest",
        "started": started.isoformat(timespec="seconds"),
        "command": "bench/ingest.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": _server.machine_info(),
        "git": _git_state(),
        "config": {
            "events": args.events,
            "batch": args.batch,
            "singles": args.singles,
            "concurrency": args.concurrency,
            "clients": args.clients,
            "client_lib": resolve_client_lib(args.client_lib),
            "seed": args.seed,
            "phase_timeout": args.phase_timeout,
            "profile": args.profile,
            "profile_mode": args.profile_mode if args.profile else None,
            "server_env": server_env,
            "max_group_events": MAX_GROUP_EVENTS,
            "people": work.people_n,
        },
        "batch": batch.as_dict(),
        "singles": single.as_dict(),
        "raw": raw,
        "batch_events_per_s": batch_eps,
        "single_requests_per_s": single_rps,
        "ratio_to_raw": ratio,
        "server_rss_peak_bytes": rss_peak,
        "server_vmhwm_bytes": vmhwm,
        "stored": {
            "events_table": in_table,
            "stats_accepted": stats["total"]["accepted"],
            "stats_no_consent": stats["total"].get("no_consent", 0),
            "stats_rejected": stats["total"].get("rejected", 0),
            "expected": expected,
            "subjects": subjects,
            "avg_sealed_bytes": sealed_avg,
        },
        "targets": TARGETS,
        "profiles": profiles,
    }
    results["pass"] = {
        "batch_events_per_s": batch_eps >= TARGETS["batch_events_per_s"],
        "ratio_to_raw": ratio >= TARGETS["ratio_to_raw"],
        "single_requests_per_s": single_rps >= TARGETS["single_requests_per_s"],
        "server_rss_peak_mb": rss_peak < TARGETS["server_rss_peak_mb"] * 1024 * 1024,
        "no_errors": batch.non_2xx == 0 and single.non_2xx == 0,
        "nothing_lost": in_table == expected == stats["total"]["accepted"],
    }
    if not args.no_save:
        args.results_dir.mkdir(parents=True, exist_ok=True)
        suffix = "-quick" if args.quick else ("-profile" if args.profile else "")
        out = args.results_dir / f"ingest-{started.strftime('%Y%m%d-%H%M%S')}{suffix}.json"
        out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
        results["results_file"] = str(out)
    if not args.quiet:
        print_table(results)
        if profiles:
            print_profiles(profiles)
        if "results_file" in results:
            say(f"results: {results['results_file']}")
    return results


def print_profiles(profiles: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for phase, prof in profiles.items():
        roles = ", ".join(f"{r['role']} {r['percent']:.0f}%" for r in prof["roles"])
        console.print(f"[bold]server profile, {phase} phase[/bold]: {prof['samples']} samples ({roles})")
        for kind, label in (("own", "function"), ("cumulative", "function"), ("packages", "package")):
            title = {
                "own": "top functions by own time",
                "cumulative": "top Candor functions by cumulative time",
                "packages": "own time by package",
            }[kind]
            table = Table("%", "samples", label, title=f"{phase}: {title}")
            for row in prof[kind]:
                table.add_row(f"{row['percent']:.1f}", str(row["samples"]), row[label])
            console.print(table)


if __name__ == "__main__":
    res = main()
    if res and not (res["pass"]["no_errors"] and res["pass"]["nothing_lost"]):
        sys.exit(1)
