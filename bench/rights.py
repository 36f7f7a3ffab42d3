"""Data-subject rights benchmark: access export, erasure and audit verification on a large store.

Run from the repository root::

    .venv/bin/python bench/rights.py                          # 100,000 profiles, 1,000,000 events, 1M audit
    .venv/bin/python bench/rights.py --quick                  # 2,000 / 10,000 / 20,000: seconds, used by a test
    .venv/bin/python bench/rights.py --keep /tmp/rights-1m    # build once, reuse the store in later runs
    .venv/bin/python bench/rights.py --help                   # every option

What one run does:

1. Builds the store through Candor's own write path (setup, timed apart from the measurements):
   every message is validated by ``Runtime.validator_for`` and written by the Ingestor in Works of
   ``--work-size`` messages. ``--profiles`` people each send one identify (userId, anonymousId,
   email, first and last name, phone, postal address); further track, page and consent-preference
   events of random people, all with the person's userId, fill the store up to ``--events``. With
   ``--keep DIR`` the store is built once and later runs reuse it (people erased by earlier runs
   are left out of the sample).
2. Access: for ``--sample`` random people, an access request by email (``send_code=False``,
   verified by staff); times ``Processor.people``, ``Processor.export_bytes`` and, separately, the
   whole ``Processor.process`` (export, sealing, file, download link, audit). Baseline: the
   person's raw rows, one SELECT per table of ``SUBJECT_TABLES`` on the driver connection.
3. Erasure: an erasure request by userId for the same people, verified by staff, through
   ``Processor.process``; reports ``effective_ms`` (keys shredded, unreadable) and ``purged_ms``
   (every store) from ``Erasure.erase``. After each one it checks that the sealed values read before
   cannot be opened any more and that no row names the subjects in ``SUBJECT_TABLES``. Baseline:
   a plain DELETE of another person's rows from the same tables in one transaction (no shredding,
   tombstones, audit, profile recomputation or WAL checkpoint), on the same connection settings.
4. Audit: appends entries with ``audit.record`` inside write transactions of ``--audit-batch``
   entries until the log holds ``--audit`` entries, then times ``audit.verify``. Baseline: reading
   the same rows and one plain SHA-256 per row over the same fields.
5. Prints a table (metric, value, baseline, ratio, target, result), writes the JSON to
   ``bench/results/rights-<timestamp>.json`` (``--json`` prints it instead of the table).

``main(argv)`` returns the results as a dict, so a test can run ``main(["--quick"])``.
Personal values here are synthetic; nothing personal is printed (people are shown by index).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
MARKER = "bench-rights.json"  # in the data directory: what was built, and who was erased since

FULL = {"profiles": 100_000, "events": 1_000_000, "audit": 1_000_000, "sample": 20}
QUICK = {"profiles": 2_000, "events": 10_000, "audit": 20_000, "sample": 10}
TARGETS = {"export_s": 1.0, "effective_ms": 100.0, "purge_s": 60.0, "audit_verify_s_per_1m": 30.0}

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Niklaus",
         "Radia", "Tim", "Sophie", "Yukihiro", "Guido", "Linus", "Hedy", "Katherine", "John", "Mary"]  # fmt: skip
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton",
        "Wirth", "Perlman", "Berners-Lee", "Wilson", "Matsumoto", "van Rossum", "Torvalds", "Lamarr"]  # fmt: skip
STREETS = ["Main St", "Oak Ave", "Elm St", "Market St", "Broadway", "Pine Rd", "Cedar Ln", "Lake Dr"]
CITIES = [("Springfield", "IL", "62701"), ("Portland", "OR", "97201"), ("Austin", "TX", "73301"),
          ("Madison", "WI", "53703"), ("Boulder", "CO", "80302"), ("Albany", "NY", "12207")]  # fmt: skip
# 555 numbers: 20 area codes × 10,000 lines give every person a phone of their own (up to 200,000)
AREA_CODES = ["201", "212", "312", "415", "503", "512", "608", "617", "720", "808",
              "206", "303", "404", "602", "702", "713", "801", "919", "971", "978"]  # fmt: skip
MAX_PROFILES = len(AREA_CODES) * 10_000
CATEGORIES = ["Books", "Music", "Vinyl", "Audiobooks", "Gift Cards", "Stationery"]
PAGES = [("Home", "/"), ("Search", "/search"), ("Product", "/p/"), ("Cart", "/cart"), ("Account", "/account")]
TRACK_EVENTS = ["Product Viewed", "Product Viewed", "Product Added", "Products Searched", "Order Completed"]
CONSENT_EVENT = "Segment Consent Preference Updated"
SITE = "https://shop.example.com"


# -- memory, time, statistics --------------------------------------------------------------------
def _reset_peak() -> None:
    """Reset this process's VmHWM (Linux ≥ 4.0); silently nothing elsewhere."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_bytes() -> int:
    """VmHWM since the last reset (bytes), else ru_maxrss of the process."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _dist(values_ms: list[float]) -> dict[str, float]:
    return {
        "count": len(values_ms),
        "p50_ms": _percentile(values_ms, 0.50),
        "p95_ms": _percentile(values_ms, 0.95),
        "max_ms": max(values_ms, default=0.0),
        "mean_ms": statistics.fmean(values_ms) if values_ms else 0.0,
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


# -- the people and their events -----------------------------------------------------------------
def person(i: int) -> dict[str, Any]:
    """Person ``i``'s identifiers and traits: a pure function of ``i`` (a kept store needs no list)."""
    rng = random.Random(i * 7919 + 17)
    first, last = rng.choice(FIRST), rng.choice(LAST)
    city, state, zip_code = rng.choice(CITIES)
    return {
        "user_id": f"bench-user-{i:07d}",
        "anon_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "email": f"person.{i}@example.com",
        "first": first,
        "last": last,
        "phone": f"({AREA_CODES[i // 10_000]}) 555-{i % 10_000:04d}",
        "address": {
            "street": f"{rng.randrange(1, 9999)} {rng.choice(STREETS)}",
            "city": city,
            "state": state,
            "postalCode": zip_code,
            "country": "US",
        },
    }


def _context(rng: random.Random, path: str, title: str) -> dict[str, Any]:
    return {
        "library": {"name": "analytics.js", "version": "5.2.1"},
        "ip": f"198.51.100.{rng.randrange(1, 255)}",
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
        "locale": "en-US",
        "page": {"path": path, "url": SITE + path, "title": title},
    }


def identify(i: int, rng: random.Random, mid: str, ts: str) -> dict[str, Any]:
    p = person(i)
    return {
        "type": "identify",
        "messageId": mid,
        "timestamp": ts,
        "userId": p["user_id"],
        "anonymousId": p["anon_id"],
        "traits": {
            "email": p["email"],
            "firstName": p["first"],
            "lastName": p["last"],
            "phone": p["phone"],
            "address": p["address"],
        },
        "context": _context(rng, "/account", "Your account"),
    }


def activity(i: int, rng: random.Random, mid: str, ts: str) -> dict[str, Any]:
    """A track (55%), page (40%) or consent-preference update (5%) of person ``i``, with its userId."""
    msg: dict[str, Any] = {"messageId": mid, "timestamp": ts, "userId": f"bench-user-{i:07d}"}
    r = rng.random()
    if r < 0.05:
        prefs = {"analytics": True, "personalization": rng.random() < 0.7, "advertising": rng.random() < 0.4}
        msg.update(type="track", event=CONSENT_EVENT, properties={})
        msg["context"] = {**_context(rng, "/privacy", "Privacy"), "consent": {"categoryPreferences": prefs}}
    elif r < 0.60:
        name = rng.choice(TRACK_EVENTS)
        sku = f"sku-{rng.randrange(5000):05d}"
        props: dict[str, Any]
        if name == "Order Completed":
            prices = [round(rng.uniform(3, 80), 2) for _ in range(rng.randrange(1, 4))]
            items = [{"product_id": f"sku-{rng.randrange(5000):05d}", "price": price} for price in prices]
            props = {
                "order_id": f"ord-{rng.getrandbits(40):010x}",
                "total": round(sum(prices), 2),
                "currency": "USD",
                "products": items,
            }
        elif name == "Products Searched":
            props = {"query": rng.choice(CATEGORIES).lower()}
        else:
            props = {"product_id": sku, "category": rng.choice(CATEGORIES), "price": round(rng.uniform(3, 80), 2)}
        msg.update(type="track", event=name, properties=props)
        msg["context"] = _context(rng, f"/p/{sku}", f"Item {sku}")
    else:
        name, path = rng.choice(PAGES)
        msg.update(type="page", name=name, properties={"path": path, "title": name, "url": SITE + path})
        msg["context"] = _context(rng, path, name)
    if rng.random() < 0.5:
        msg["anonymousId"] = person(i)["anon_id"]
    return msg


def messages(profiles: int, events: int, seed: int) -> Iterator[dict[str, Any]]:
    """Every person's identify first, then activity of random people up to ``events`` messages."""
    rng = random.Random(seed)
    base = datetime.now(UTC) - timedelta(days=30)
    step_ms = max(1, 29 * 86_400_000 // max(events, 1))
    for n in range(events):
        ts = (base + timedelta(milliseconds=n * step_ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        mid = f"bench-rights-{seed}-{n:09d}"
        if n < profiles:
            yield identify(n, rng, mid, ts)
        else:
            yield activity(rng.randrange(profiles), rng, mid, ts)


# -- building the store --------------------------------------------------------------------------
def open_runtime(data_dir: Path, synchronous: str = "FULL") -> Any:
    from candor.app import Runtime
    from candor.config import Settings

    settings = Settings.from_env(env={}, data_dir=data_dir, default_jurisdiction="US", sqlite_synchronous=synchronous)
    return Runtime(settings)


def build(
    data_dir: Path, profiles: int, events: int, work_size: int, seed: int, progress: bool, say: Callable[[str], None]
) -> dict[str, Any]:
    """Write the store through validation and the Ingestor; returns counts and seconds.

    ``progress`` shows a bar (on a terminal); otherwise ``say`` gets a line at every tenth."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from candor.events import Message
    from candor.ingest import Work
    from candor.store import now_ms

    # setup, not the measured path: NORMAL sync while building; measurements reopen with FULL
    rt = open_runtime(data_dir, "NORMAL")
    try:
        key = rt.directory.create_source("bench-rights")
        source = rt.directory.source_for_key(key)
        assert source is not None
        validator = rt.validator_for(source)
        accepted = rejected = no_consent = 0
        validate_s = write_s = 0.0
        started = time.perf_counter()
        with Progress(
            TextColumn("building"), BarColumn(), MofNCompleteColumn(), TextColumn("events"), TimeElapsedColumn(),
            disable=not progress, transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task("build", total=events)
            batch: list[Message] = []
            gen = messages(profiles, events, seed)
            done = 0
            while done < events:
                t0 = time.perf_counter()
                received = now_ms()
                batch = []
                for raw in (next(gen) for _ in range(min(work_size, events - done))):
                    out = validator.validate(raw, type_=None, received_ms=received, sent_at_ms=None, client_ip=None)
                    if isinstance(out, Message):
                        batch.append(out)
                    else:
                        rejected += 1
                t1 = time.perf_counter()
                result = rt.ingestor.submit_sync(Work(source.id, batch, [], received), timeout=600)
                write_s += time.perf_counter() - t1
                validate_s += t1 - t0
                accepted += result.accepted
                no_consent += result.no_consent
                step = min(work_size, events - done)
                if not progress and (done + step) * 10 // events > done * 10 // events:
                    say(f"  {done + step:,} events, {time.perf_counter() - started:.0f} s")
                done += step
                bar.update(task, completed=done)
        seconds = time.perf_counter() - started
        rt.store.checkpoint()
    finally:
        rt.close()
    return {
        "seconds": seconds,
        "validate_seconds": validate_s,
        "write_seconds": write_s,
        "events_per_s": events / seconds if seconds else 0.0,
        "accepted": accepted,
        "rejected": rejected,
        "no_consent": no_consent,
    }


def store_counts(rt: Any) -> dict[str, int]:
    from sqlalchemy import text

    with rt.store.engine.connect() as conn:
        return {
            t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() or 0)
            for t in ("events", "subjects", "identifiers", "identity_edges", "consent_records", "audit_log")
        }


# -- raw helpers for the baselines and the checks ------------------------------------------------
def _subject_clauses() -> list[tuple[str, list[str]]]:
    from candor.store.schema import SUBJECT_COLUMNS_EXTRA, SUBJECT_TABLES

    return [(t, [c, *SUBJECT_COLUMNS_EXTRA.get(t, ())]) for t, c in SUBJECT_TABLES.items()]


def _where(columns: list[str], n: int) -> str:
    marks = ", ".join("?" * n)
    return " OR ".join(f"{c} IN ({marks})" for c in columns)


def raw_rows(rt: Any, people: list[str]) -> tuple[float, int]:
    """One SELECT per subject table on the driver connection: (seconds, rows)."""
    rows = 0
    raw = rt.store.engine.raw_connection()
    try:
        cur = raw.driver_connection.cursor()
        t0 = time.perf_counter()
        for table, cols in _subject_clauses():
            rows += len(cur.execute(f"SELECT * FROM {table} WHERE {_where(cols, len(people))}",
                                    people * len(cols)).fetchall())  # fmt: skip
        seconds = time.perf_counter() - t0
        cur.close()
    finally:
        raw.close()
    return seconds, rows


def rows_left(rt: Any, people: list[str]) -> dict[str, int]:
    from sqlalchemy import text

    out = {}
    with rt.store.engine.connect() as conn:
        for table, cols in _subject_clauses():
            cond = " OR ".join(f"{c} IN ({', '.join(f':p{i}' for i in range(len(people)))})" for c in cols)
            params = {f"p{i}": p for i, p in enumerate(people)}
            out[table] = int(conn.execute(text(f"SELECT count(*) FROM {table} WHERE {cond}"), params).scalar() or 0)
    return out


def raw_delete(rt: Any, people: list[str]) -> tuple[float, int]:
    """A plain DELETE of the subjects' rows from every subject table, one write transaction (timed
    from BEGIN IMMEDIATE to the end of COMMIT), on the store's own connection settings."""
    from candor.rights.erasure import LAST

    order = [t for t in _subject_clauses() if t[0] not in LAST] + [t for t in _subject_clauses() if t[0] in LAST]
    deleted = 0
    t0 = time.perf_counter()
    with rt.store.write() as conn:
        for table, cols in order:
            deleted += conn.exec_driver_sql(f"DELETE FROM {table} WHERE {_where(cols, len(people))}",
                                            tuple(people * len(cols))).rowcount or 0  # fmt: skip
    return time.perf_counter() - t0, deleted


def sealed_of(rt: Any, people: list[str]) -> list[tuple[str, bytes]]:
    from sqlalchemy import select

    from candor.store.schema import events

    with rt.store.engine.connect() as conn:
        return [(s, b) for s, b in conn.execute(select(events.c.subject_id, events.c.sealed).where(
            events.c.subject_id.in_(people)))]  # fmt: skip


def readable(rt: Any, blobs: list[tuple[str, bytes]]) -> int:
    """How many of these sealed values the vault can still open (after an erasure: none)."""
    from candor.vault import KeyDestroyed, VaultError

    n = 0
    for sid, blob in blobs:
        try:
            rt.vault.open(sid, blob)
            n += 1
        except (KeyDestroyed, VaultError):
            pass
    return n


# -- the measurements ----------------------------------------------------------------------------
def measure_rights(rt: Any, sample: list[int], say: Callable[[str], None]) -> dict[str, Any]:
    rights, requests = rt.rights, rt.requests
    acc: dict[str, list[float]] = {k: [] for k in ("people", "export", "process", "raw_select")}
    raw_counts: list[int] = []
    era: dict[str, list[float]] = {k: [] for k in ("effective", "purge", "process", "raw_delete")}
    export_bytes: list[int] = []
    export_events: list[int] = []
    event_rows: list[int] = []
    subjects_per_person: list[int] = []
    checks = {"found": 0, "export_events_match": 0, "readable_after": 0, "rows_left": 0, "keys_left": 0}
    tables: dict[str, int] = {}
    baseline_people: list[int] = []
    for n, i in enumerate(sample):
        p = person(i)
        # -- access, by email
        req, _ = requests.create("access", "email", p["email"], send_code=False, actor="bench")
        requests.verify_by_staff(req.id, actor="bench", reason="benchmark")
        t0 = time.perf_counter()
        people = rights.people(req.id)
        t1 = time.perf_counter()
        data = rights.export_bytes(people, req.id)
        t2 = time.perf_counter()
        outcome = rights.process(req.id, actor="bench")
        t3 = time.perf_counter()
        raw_s, raw_n = raw_rows(rt, people)
        raw_counts.append(raw_n)
        acc["people"].append((t1 - t0) * 1000)
        acc["export"].append((t2 - t1) * 1000)
        acc["process"].append((t3 - t2) * 1000)
        acc["raw_select"].append(raw_s * 1000)
        checks["found"] += bool(people) and bool(outcome.get("found"))
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            n_export = len(orjson.loads(z.read("data.json"))["events"])
        blobs = sealed_of(rt, people)
        checks["export_events_match"] += n_export == len(blobs)
        export_bytes.append(len(data))
        export_events.append(n_export)
        event_rows.append(len(blobs))
        subjects_per_person.append(len(people))
        # -- erasure, by userId
        req, _ = requests.create("erasure", "user_id", p["user_id"], send_code=False, actor="bench")
        requests.verify_by_staff(req.id, actor="bench", reason="benchmark")
        t0 = time.perf_counter()
        outcome = rights.process(req.id, actor="bench")
        t1 = time.perf_counter()
        stores = outcome.get("stores", {})
        era["effective"].append(float(stores.get("effective_ms", 0.0)))
        era["purge"].append(float(stores.get("purged_ms", 0.0)))
        era["process"].append((t1 - t0) * 1000)
        for table, entry in stores.items():
            if isinstance(entry, dict) and "deleted" in entry:
                tables[table] = tables.get(table, 0) + int(entry["deleted"])
        checks["readable_after"] += readable(rt, blobs)
        left = rows_left(rt, people)
        checks["rows_left"] += sum(left.values())
        checks["keys_left"] += left.get("data_keys", 0)
        # -- baseline: a plain DELETE of the next person's rows (no shredding)
        j = i + 1
        baseline_people.append(j)
        other = rt.consent.subject_for("user_id", person(j)["user_id"])
        if other is not None:
            raw_s, _ = raw_delete(rt, [other])
            era["raw_delete"].append(raw_s * 1000)
        say(
            f"  person #{n + 1}/{len(sample)}: export {acc['export'][-1]:.0f} ms ({n_export} events), "
            f"erasure effective {era['effective'][-1]:.1f} ms, purged {era['purge'][-1]:.0f} ms"
        )
    access: dict[str, Any] = {k: _dist(v) for k, v in acc.items()}
    erasure: dict[str, Any] = {k: _dist(v) for k, v in era.items()}
    access["export_bytes_mean"] = statistics.fmean(export_bytes) if export_bytes else 0.0
    access["events_per_person_mean"] = statistics.fmean(event_rows) if event_rows else 0.0
    access["subjects_per_person_max"] = max(subjects_per_person, default=0)
    access["raw_rows_per_person_mean"] = statistics.fmean(raw_counts) if raw_counts else 0.0
    erasure["deleted_rows"] = tables
    return {
        "sample": sample,
        "baseline_people": baseline_people,
        "access": access,
        "erasure": erasure,
        "checks": {**checks, "people": len(sample), "events_checked": sum(event_rows)},
        "ratios": {
            "export_over_raw_select_p50": _ratio(access["export"]["p50_ms"], access["raw_select"]["p50_ms"]),
            "purge_over_raw_delete_p50": _ratio(erasure["purge"]["p50_ms"], erasure["raw_delete"]["p50_ms"]),
            "effective_over_raw_delete_p50": _ratio(erasure["effective"]["p50_ms"], erasure["raw_delete"]["p50_ms"]),
        },
    }


def audit_entries(rt: Any) -> int:
    from sqlalchemy import select

    from candor.store.schema import audit_head

    with rt.store.engine.connect() as conn:
        return int(conn.execute(select(audit_head.c.seq).where(audit_head.c.id == 1)).scalar() or 0)


def fill_audit(rt: Any, target: int, batch: int, progress: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """``audit.record`` in write transactions of ``batch`` entries until the log holds ``target``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from candor import audit

    have = audit_entries(rt)
    added = 0
    started = time.perf_counter()
    with Progress(
        TextColumn("audit log"), BarColumn(), MofNCompleteColumn(), TextColumn("entries"), TimeElapsedColumn(),
        disable=not progress or have >= target, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("audit", total=target, completed=have)
        while have + added < target:
            n = min(batch, target - have - added)
            with rt.store.write() as conn:
                for k in range(n):
                    seq = have + added + k
                    audit.record(
                        conn,
                        "bench",
                        "profile.read" if seq % 3 else "consent.recorded",
                        subject_id=f"{seq:032x}",
                        target=f"request:{seq:08d}",
                        details={"n": seq, "via": "bench"},
                    )
            if not progress and (have + added + n) * 10 // target > (have + added) * 10 // target:
                say(f"  {have + added + n:,} audit entries, {time.perf_counter() - started:.0f} s")
            added += n
            bar.update(task, completed=have + added)
    seconds = time.perf_counter() - started
    return {"existing": have, "added": added, "seconds": seconds, "entries_per_s": added / seconds if added else 0.0}


def sha256_rows(rt: Any) -> tuple[float, int]:
    """Baseline: read the audit rows (same columns, seq order) and SHA-256 each one's fields once."""
    raw = rt.store.engine.raw_connection()
    n = 0
    try:
        cur = raw.driver_connection.cursor()
        t0 = time.perf_counter()
        cur.execute(
            "SELECT seq, ts_ms, actor, action, subject_id, target, details, prev_hash, hash FROM audit_log ORDER BY seq"
        )
        sha, dumps = hashlib.sha256, orjson.dumps
        while rows := cur.fetchmany(20_000):
            for r in rows:
                sha(dumps(r[:8])).hexdigest()
            n += len(rows)
        seconds = time.perf_counter() - t0
        cur.close()
    finally:
        raw.close()
    return seconds, n


def measure_audit(rt: Any) -> dict[str, Any]:
    from candor import audit

    t0 = time.perf_counter()
    v = audit.verify(rt.store)
    seconds = time.perf_counter() - t0
    base_s, base_n = sha256_rows(rt)
    return {
        "ok": v.ok,
        "problem": v.problem,
        "entries": v.entries,
        "seconds": seconds,
        "entries_per_s": v.entries / seconds if seconds else 0.0,
        "seconds_per_1m": seconds * 1_000_000 / v.entries if v.entries else 0.0,
        "baseline_seconds": base_s,
        "baseline_rows": base_n,
        "ratio_to_baseline": _ratio(seconds, base_s),
    }


# -- reporting -----------------------------------------------------------------------------------
def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", "src"))}


def _machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model,
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    cfg, r, a, ok = results["config"], results["rights"], results["audit"], results["pass"]
    acc, era = r["access"], r["erasure"]

    def dist(d: dict[str, float], unit: str = "ms") -> str:
        if unit == "s":
            return f"{d['p50_ms'] / 1000:.2f} / {d['p95_ms'] / 1000:.2f} / {d['max_ms'] / 1000:.2f} s"
        return f"{d['p50_ms']:.1f} / {d['p95_ms']:.1f} / {d['max_ms']:.1f} ms"

    def verdict(key: str) -> str:
        return "[green]pass[/green]" if ok[key] else "[red]FAIL[/red]"

    c = r["checks"]
    rows = [
        ("access: export_bytes p50 / p95 / max", dist(acc["export"]), dist(acc["raw_select"]),
         f"{r['ratios']['export_over_raw_select_p50']:.0f}×", "< 1 s", verdict("export")),
        ("access: people() p50 / p95 / max", dist(acc["people"]), "", "", "", ""),
        ("access: whole process() p50 / p95 / max", dist(acc["process"]), "", "", "", ""),
        ("erasure: effective p50 / p95 / max", dist(era["effective"]), dist(era["raw_delete"]),
         f"{r['ratios']['effective_over_raw_delete_p50']:.1f}×", "< 100 ms", verdict("effective")),
        ("erasure: purged p50 / p95 / max", dist(era["purge"]), dist(era["raw_delete"]),
         f"{r['ratios']['purge_over_raw_delete_p50']:.1f}×", "< 60 s", verdict("purge")),
        ("erasure: whole process() p50 / p95 / max", dist(era["process"]), "", "", "", ""),
        ("erasure: sealed values readable after / rows left", f"{c['readable_after']} of {c['events_checked']} / "
         f"{c['rows_left']}", "", "", "0 / 0", verdict("erased")),
        (f"audit verify, {a['entries']:,} entries", f"{a['seconds']:.2f} s ({a['entries_per_s']:,.0f}/s)",
         f"{a['baseline_seconds']:.2f} s", f"{a['ratio_to_baseline']:.1f}×",
         f"< 30 s / 1M ({a['seconds_per_1m']:.1f})", verdict("audit")),
        ("store build (setup, not measured)", f"{results['build']['seconds']:.0f} s "
         f"({results['build']['events_per_s']:,.0f} events/s)" if results["build"].get("seconds") else "reused",
         "", "", "", ""),
        ("peak RSS (build / measure / whole run)", " / ".join(f"{results['peak_rss_bytes'][k] / 2**20:,.0f}"
         for k in ("build", "measure", "run")) + " MB", "", "", "", ""),
    ]  # fmt: skip
    s = results["store"]
    title = (
        f"Rights: {cfg['profiles']:,} profiles, {s['events']:,} events, {s['subjects']:,} subjects, "
        f"{a['entries']:,} audit entries; sample of {cfg['sample']} people"
    )
    table = Table("metric", "value", "baseline (same run)", "ratio", "target", "result", title=title)
    for row in rows:
        table.add_row(*row)
    Console(width=None if sys.stdout.isatty() else 170).print(table)


# -- main ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--profiles", type=int, default=None, help="people, one identify each (default 100,000)")
    p.add_argument("--events", type=int, default=None, help="events in the store, identifies included (default 1M)")
    p.add_argument("--audit", type=int, default=None, help="audit entries to verify (default 1,000,000)")
    p.add_argument("--sample", type=int, default=None, help="people exported and erased (default 20)")
    p.add_argument("--quick", action="store_true", help="2,000 profiles, 10,000 events, 20,000 audit entries")
    p.add_argument("--work-size", type=int, default=2_000, help="messages per Work given to the Ingestor")
    p.add_argument("--audit-batch", type=int, default=20_000, help="audit entries per write transaction")
    p.add_argument("--keep", type=Path, default=None, metavar="DIR",
                   help="data directory to build once and reuse (kept after the run)")  # fmt: skip
    p.add_argument("--seed", type=int, default=7, help="random seed of the data and the sample")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON result goes")
    p.add_argument("--no-save", action="store_true", help="do not write the JSON result")
    p.add_argument("--quiet", action="store_true", help="no table, no progress")
    args = p.parse_args(argv)
    size = QUICK if args.quick else FULL
    for k in ("profiles", "events", "audit", "sample"):
        if getattr(args, k) is None:
            setattr(args, k, size[k])
    if min(args.profiles, args.sample, args.work_size, args.audit_batch) < 1:
        p.error("--profiles, --sample, --work-size and --audit-batch must be at least 1")
    if args.profiles > MAX_PROFILES:
        p.error(f"--profiles is at most {MAX_PROFILES:,} (one distinct phone number each)")
    if args.events < args.profiles:
        p.error("--events must be at least --profiles (every person has an identify)")
    if args.sample * 2 > args.profiles:
        p.error("--sample must be at most half of --profiles")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    progress = not args.quiet and not args.json and sys.stderr.isatty()

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    started = datetime.now(UTC)
    tmp: Path | None = None
    if args.keep is not None:
        data_dir = args.keep.resolve()
    else:
        tmp = Path(tempfile.mkdtemp(prefix="candor-bench-rights-"))
        data_dir = tmp / "data"
    peaks: dict[str, int] = {}
    try:
        marker_path = data_dir / MARKER
        wanted = {"profiles": args.profiles, "events": args.events, "seed": args.seed}
        marker: dict[str, Any] = json.loads(marker_path.read_text()) if marker_path.exists() else {}
        if marker and marker.get("built") != wanted:
            raise SystemExit(f"{data_dir} holds a store built with {marker.get('built')}; use another --keep DIR")
        _reset_peak()
        if marker:
            say(f"reusing the store in {data_dir} ({marker.get('build', {}).get('seconds', 0):.0f} s to build)")
            build_info: dict[str, Any] = {"reused": True, "first_build": marker.get("build", {})}
        else:
            say(f"building {args.profiles:,} profiles and {args.events:,} events in {data_dir}")
            build_info = build(data_dir, args.profiles, args.events, args.work_size, args.seed, progress, say)
            say(f"  built in {build_info['seconds']:.1f} s ({build_info['events_per_s']:,.0f} events/s)")
            marker = {"built": wanted, "build": build_info, "used": []}
            marker_path.write_text(json.dumps(marker))
        peaks["build"] = _peak_bytes()

        _reset_peak()
        rt = open_runtime(data_dir)  # the server's defaults: synchronous=FULL
        try:
            store = store_counts(rt)
            used = set(marker.get("used", []))
            rng = random.Random(args.seed * 31 + len(used))
            # the baseline deletes the person after each sampled one: keep both out of later samples
            pool = [i for i in range(args.profiles - 1) if i not in used and i + 1 not in used and i % 2 == 0]
            if len(pool) < args.sample:
                raise SystemExit(f"only {len(pool)} people left unerased in {data_dir}; build a new store")
            sample = sorted(rng.sample(pool, args.sample))
            say(f"access and erasure of {len(sample)} people")
            rights = measure_rights(rt, sample, say)
            marker["used"] = sorted(used | set(sample) | set(rights["baseline_people"]))
            marker_path.write_text(json.dumps(marker))
            say(f"filling the audit log to {args.audit:,} entries")
            fill = fill_audit(rt, args.audit, args.audit_batch, progress, say)
            rt.store.checkpoint()
            say(f"  {fill['added']:,} added in {fill['seconds']:.1f} s; verifying")
            audit_res = measure_audit(rt)
            audit_res["fill"] = fill
        finally:
            rt.close()
        peaks["measure"] = _peak_bytes()
        # clear_refs resets ru_maxrss too: the run's peak is the larger of the phases' peaks
        peaks["run"] = max(peaks.values())
        db_bytes = sum(f.stat().st_size for f in data_dir.glob("candor.db*"))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    acc, era, checks = rights["access"], rights["erasure"], rights["checks"]
    results: dict[str, Any] = {
        "benchmark": "rights",
        "started": started.isoformat(timespec="seconds"),
        "command": "bench/rights.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": _machine(),
        "git": _git(),
        "config": {
            "profiles": args.profiles,
            "events": args.events,
            "audit": args.audit,
            "sample": args.sample,
            "work_size": args.work_size,
            "audit_batch": args.audit_batch,
            "seed": args.seed,
            "kept_store": str(data_dir) if args.keep else None,
        },
        "store": {**store, "db_bytes": db_bytes},
        "build": build_info,
        "rights": rights,
        "audit": audit_res,
        "peak_rss_bytes": peaks,
        "targets": TARGETS,
    }
    results["pass"] = {
        "export": acc["export"]["p95_ms"] < TARGETS["export_s"] * 1000,
        "effective": era["effective"]["p95_ms"] < TARGETS["effective_ms"],
        "purge": era["purge"]["p95_ms"] < TARGETS["purge_s"] * 1000,
        "erased": checks["readable_after"] == 0 and checks["rows_left"] == 0,
        "found": checks["found"] == checks["people"] and checks["export_events_match"] == checks["people"],
        "audit": audit_res["ok"] and audit_res["seconds_per_1m"] < TARGETS["audit_verify_s_per_1m"],
    }
    if not args.no_save:
        args.results_dir.mkdir(parents=True, exist_ok=True)
        suffix = "-quick" if args.quick else ""
        out = args.results_dir / f"rights-{started.strftime('%Y%m%d-%H%M%S')}{suffix}.json"
        out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
        results["results_file"] = str(out)
    if args.json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    elif not args.quiet:
        print_table(results)
        if "results_file" in results:
            say(f"results: {results['results_file']}")
    return results


if __name__ == "__main__":
    res = main()
    sys.exit(0 if res["pass"]["erased"] and res["pass"]["found"] and res["audit"]["ok"] else 1)
