"""Identity benchmark: Candor's identity resolution end to end against generated people with known truth,
and Splink alone with a plain configuration on the same records in the same run (the baseline).

    .venv/bin/python bench/identity.py                       # 10,000 and 100,000 records
    .venv/bin/python bench/identity.py --records 1000000     # the 1M run (separately: about 15 minutes)
    .venv/bin/python bench/identity.py --quick               # 2,000 records, in-process (the test suite)
    .venv/bin/python bench/identity.py --records 10000 --env CANDOR_MATCH_THRESHOLD=0.9

What one size does, the way a user runs Candor:

1. ``identity_data.generate`` makes ``n + new`` noisy records of people with the truth
   (record -> person); ``new`` of them (one per person, of people with other records) are held back
   for incremental linking. The rest are written as one CSV file per touchpoint (web, app, pos, email,
   callcenter).
2. Each file is imported into a fresh data directory (embedded SQLite store) through the code path of
   ``candor import records``: ``Importer`` (validation, pseudonymisation, encryption) and the writer
   (``Ingestor.submit_sync``: deterministic stitching on email, phone, userId and the loyalty card).
   No ``link_new`` here: there is no model before the first ``resolve`` (the CLI's link step finds none).
   All files but the last are imported as with ``--defer-profiles``, so one replay of the log after the
   last settles the profiles of all of them (``--settle-each``: each file settles its own, as five
   imports without the flag do).
3. ``Resolver.resolve`` (decrypt, train, predict, write edges). Final profiles are read back from
   ``profile_subjects`` and the record identifiers, and scored pairwise against the truth; so is the
   state after import alone (deterministic stitching only), to tell the two stages' errors apart.
4. Splink alone (``identity_data.splink_alone``) on the same records: F1 and time, and the ratios.
5. The held-back records are imported one at a time, each followed by ``Resolver.link_new`` (as
   ``candor import records`` does), timing ``link_new`` and import + link per record.

Peak memory is VmHWM per phase (reset through ``/proc/self/clear_refs``) and ``ru_maxrss`` of the
process. With several sizes, each runs in a child process of its own so that peaks do not carry over.
Results go to ``bench/results/identity-<timestamp>.json``. ``main(argv)`` returns them as a dict.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
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
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
COLUMNS = ("record_id", "first_name", "last_name", "email", "phone", "birthday", "street", "city", "postal_code",
           "country", "user_id", "loyalty_card")  # fmt: skip
MAPPING = (
    "first_name=firstName,last_name=lastName,email=email,phone=phone,birthday=birthday,street=address.street,"
    "city=address.city,postal_code=address.postalCode,country=address.country,user_id=userId,"
    "loyalty_card=ext:loyalty_card"
)
TARGETS = {"f1": 0.97, "f1_ratio_to_baseline": 1.0, "seconds_1m": 600.0, "link_new_p95_ms": 50.0, "rss_gb": 8.0}
DEFAULT_SIZES = (10_000, 100_000)
QUICK_RECORDS = 2_000
QUICK_NEW = 40
IMPORT_CURVE_STEP = 10_000


def _load_data_module() -> ModuleType:
    """``bench/identity_data.py`` (the generator), loaded by path: ``bench`` is not a package."""
    name = "candor_bench_identity_data"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / "identity_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# -- memory and time -----------------------------------------------------------------------------
def _reset_peak() -> None:
    """Reset this process's VmHWM (Linux ≥ 4.0); silently nothing elsewhere."""
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_bytes() -> int:
    """VmHWM since the last reset (bytes), else ru_maxrss of the process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _maxrss_bytes() -> dict[str, int]:
    return {
        "self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    }


class Phases:
    """Wall time and peak RSS of each named phase."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}  # user + system time of the process: less load-bound
        self.peak_bytes: dict[str, int] = {}
        self.say = say

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.say(f"  {name} …")
        _reset_peak()
        started = time.perf_counter()
        cpu = time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - started
            self.cpu_seconds[name] = time.process_time() - cpu
            self.peak_bytes[name] = _peak_bytes()
            self.say(
                f"  {name}: {self.seconds[name]:.1f} s (CPU {self.cpu_seconds[name]:.1f} s), "
                f"peak {self.peak_bytes[name] / 2**20:,.0f} MB, load {os.getloadavg()[0]:.1f}"
            )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _latency(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "count": len(ms),
        "p50_ms": _percentile(ms, 0.50),
        "p95_ms": _percentile(ms, 0.95),
        "p99_ms": _percentile(ms, 0.99),
        "max_ms": max(ms, default=0.0),
        "mean_ms": statistics.fmean(ms) if ms else 0.0,
    }


# -- data ----------------------------------------------------------------------------------------
def split_new(
    records: list[dict[str, Any]], truth: dict[str, int], count: int, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Hold back ``count`` records (one per person, only of people with other records) for incremental linking."""
    per_person: Counter[int] = Counter(truth.values())
    rng = random.Random(seed * 7919 + 17)
    candidates = [r for r in records if per_person[truth[r["record_id"]]] >= 2]
    rng.shuffle(candidates)
    held: list[dict[str, Any]] = []
    people: set[int] = set()
    for r in candidates:
        if len(held) >= count:
            break
        if truth[r["record_id"]] not in people:
            people.add(truth[r["record_id"]])
            held.append(r)
    held_ids = {r["record_id"] for r in held}
    return [r for r in records if r["record_id"] not in held_ids], held


def _row(record: dict[str, Any]) -> dict[str, str]:
    return {c: "" if record.get(c) is None else str(record[c]) for c in COLUMNS}


def write_csvs(records: list[dict[str, Any]], directory: Path, sources: tuple[str, ...]) -> dict[str, Path]:
    """One CSV export per touchpoint source, in the generated (shuffled) order."""
    directory.mkdir(parents=True, exist_ok=True)
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_source[r["source"]].append(r)
    paths: dict[str, Path] = {}
    for source in sources:
        path = directory / f"{source}.csv"
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            for r in by_source.get(source, []):
                writer.writerow(_row(r))
        paths[source] = path
    return paths


# -- Candor --------------------------------------------------------------------------------------
def _source_info(rt: Any, name: str) -> Any:
    """The source ``name`` as ``candor import records`` finds or creates it."""
    from candor.auth import SourceInfo

    info = next((s for s in rt.directory.list_sources() if s["name"] == name), None)
    if info is None:
        rt.directory.create_source(name)
        info = next(s for s in rt.directory.list_sources() if s["name"] == name)
    return SourceInfo(
        id=int(info["id"]),
        name=info["name"],
        strict=bool(info["strict"]),
        personal_properties=frozenset(info["personal_properties"]),
    )


def import_file(
    rt: Any,
    path: Path,
    source: str,
    tick: Callable[[int], None] | None = None,
    batch_rows: int | None = None,
    defer: bool = False,
    workers: int | None = None,
) -> dict[str, Any]:
    """``candor import records FILE --source SOURCE --id-column record_id --map MAPPING --no-link``
    (``defer``: with ``--defer-profiles``).

    ``tick(rows)`` hears the rows written after each batch (for the import-rate curve)."""
    from candor.identity.records import BATCH, Importer, ImportReport, parse_mapping
    from candor.ingest import Work
    from candor.store import now_ms

    mapping = parse_mapping(MAPPING)
    src = _source_info(rt, source)
    importer = Importer(rt.validator_for(src), rt.vault.pseudonym, source)
    report = ImportReport()
    earlier = not defer and rt.identity.profiles_pending()
    for batch in importer.messages(path, "record_id", mapping, report, batch_rows or BATCH, workers=workers):
        result = rt.ingestor.submit_sync(Work(src.id, batch, [], now_ms(), defer_profiles=True), timeout=600)
        report.imported += result.accepted
        report.unchanged += result.duplicates
        if tick is not None:
            tick(len(batch))
    if not defer:
        rt.ingestor.settle_profiles(full=earlier, actor="bench")
    return report.as_dict()


def record_profiles(rt: Any, records: list[dict[str, Any]]) -> dict[str, str]:
    """record_id -> profile id (a subject without a ``profile_subjects`` row is its own profile)."""
    from sqlalchemy import select

    from candor.store.schema import identifiers, profile_subjects

    by_pseudonym = {rt.vault.pseudonym("record", f"{r['source']}:{r['record_id']}"): r["record_id"] for r in records}
    with rt.store.engine.connect() as conn:
        subject_of = {
            by_pseudonym[p]: sid
            for p, sid in conn.execute(
                select(identifiers.c.pseudonym, identifiers.c.subject_id).where(identifiers.c.id_type == "record")
            )
            if p in by_pseudonym
        }
        profile_of = {
            str(sid): str(pid)
            for sid, pid in conn.execute(select(profile_subjects.c.subject_id, profile_subjects.c.profile_id))
        }
    return {rid: profile_of.get(sid, sid) for rid, sid in subject_of.items()}


def _subject_for_record(rt: Any, pseudonym: str) -> str | None:
    from sqlalchemy import select

    from candor.store.schema import identifiers

    with rt.store.engine.connect() as conn:
        sid = conn.execute(
            select(identifiers.c.subject_id).where(
                identifiers.c.id_type == "record", identifiers.c.pseudonym == pseudonym
            )
        ).scalar()
    return str(sid) if sid is not None else None


def link_incrementally(rt: Any, new: list[dict[str, Any]]) -> dict[str, Any]:
    """Each held-back record through the import path, then ``link_new`` on its subject, one at a time."""
    from candor.identity.records import Importer, parse_mapping
    from candor.ingest import Work
    from candor.store import now_ms

    mapping = parse_mapping(MAPPING)
    importers: dict[str, tuple[Any, Any]] = {}
    link_s: list[float] = []
    link_cpu: list[float] = []  # CPU time of this thread in link_new: what a loaded machine cannot inflate
    total_s: list[float] = []
    linked = review = errors = 0
    for r in new:
        started = time.perf_counter()
        if r["source"] not in importers:
            src = _source_info(rt, r["source"])
            importers[r["source"]] = (src, Importer(rt.validator_for(src), rt.vault.pseudonym, r["source"]))
        src, importer = importers[r["source"]]
        msg = importer.message(_row(r), "record_id", mapping)
        if isinstance(msg, str):
            errors += 1
            continue
        rt.ingestor.submit_sync(Work(src.id, [msg], [], now_ms()), timeout=60)
        pid = next(i[1] for i in msg.identifiers if i[0] == "record")
        sid = _subject_for_record(rt, pid)
        before_link = time.perf_counter()
        before_cpu = time.thread_time()
        report = rt.resolver.link_new([sid] if sid else [], actor="bench")
        done = time.perf_counter()
        link_cpu.append(time.thread_time() - before_cpu)
        link_s.append(done - before_link)
        total_s.append(done - started)
        linked += report.linked
        review += report.review
    return {
        "records": len(new),
        "errors": errors,
        "linked_edges": linked,
        "sent_to_review": review,
        "link_new": _latency(link_s),
        "link_new_cpu": _latency(link_cpu),
        "import_and_link": _latency(total_s),
        "first_link_new_ms": link_s[0] * 1000 if link_s else 0.0,
    }


# -- scoring and diagnosis -----------------------------------------------------------------------
def scores(data: ModuleType, pred: dict[str, str], truth: dict[str, int]) -> dict[str, float]:
    p, r, f = data.pairwise_scores(pred, truth)
    return {"precision": p, "recall": r, "f1": f}


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def _joined_people(pred: dict[str, str], truth: dict[str, int]) -> set[tuple[int, int]]:
    """Pairs of different people with records in one cluster."""
    people: dict[str, set[int]] = defaultdict(set)
    for rid, cluster in pred.items():
        if rid in truth:
            people[cluster].add(truth[rid])
    out: set[tuple[int, int]] = set()
    for ps in people.values():
        if len(ps) > 1:
            ordered = sorted(ps)
            out.update((a, b) for i, a in enumerate(ordered) for b in ordered[i + 1 :])
    return out


def diagnose(
    pred: dict[str, str],
    truth: dict[str, int],
    records: list[dict[str, Any]],
    earlier: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Where the pairwise errors are: false merges (and whether the wrongly joined people share a phone
    or a surname: families; whether they were joined already in ``earlier``, the state after import)
    and missed matches (split people), with cluster sizes."""
    by_id = {r["record_id"]: r for r in records}
    joined_before = _joined_people(earlier, truth) if earlier is not None else set()
    wrong_joined_before = 0
    clusters: dict[str, list[str]] = defaultdict(list)
    for rid in truth:
        clusters[pred.get(rid, f"s:{rid}")].append(rid)
    wrong_pairs = 0
    wrong_shared_phone = wrong_same_surname = 0
    mixed_clusters = 0
    largest = max((len(c) for c in clusters.values()), default=0)
    people_per_cluster: Counter[int] = Counter()
    for members in clusters.values():
        people: dict[int, list[str]] = defaultdict(list)
        for rid in members:
            people[truth[rid]].append(rid)
        people_per_cluster[min(len(people), 5)] += 1
        if len(people) < 2:
            continue
        mixed_clusters += 1
        persons = list(people)
        for i, a in enumerate(persons):
            phones_a = {by_id[x]["phone"] for x in people[a] if by_id[x]["phone"]}
            names_a = {str(by_id[x]["last_name"]).lower() for x in people[a]}
            for b in persons[i + 1 :]:
                n = len(people[a]) * len(people[b])
                wrong_pairs += n
                if (min(a, b), max(a, b)) in joined_before:
                    wrong_joined_before += n
                if phones_a & {by_id[x]["phone"] for x in people[b] if by_id[x]["phone"]}:
                    wrong_shared_phone += n
                if names_a & {str(by_id[x]["last_name"]).lower() for x in people[b]}:
                    wrong_same_surname += n
    # missed matches: pairs of one person's records in different profiles
    per_person: dict[int, Counter[str]] = defaultdict(Counter)
    for rid, person in truth.items():
        per_person[person][pred.get(rid, f"s:{rid}")] += 1
    missed = 0
    split_people = 0
    for parts in per_person.values():
        if len(parts) > 1:
            split_people += 1
            total = sum(parts.values())
            missed += _pairs(total) - sum(_pairs(c) for c in parts.values())
    return {
        "false_merge_pairs": wrong_pairs,
        "false_merge_pairs_sharing_a_phone": wrong_shared_phone,
        "false_merge_pairs_same_surname": wrong_same_surname,
        "false_merge_pairs_of_people_joined_at_import": wrong_joined_before if earlier is not None else None,
        "clusters_with_several_people": mixed_clusters,
        "clusters_by_people": {("5+" if k == 5 else str(k)): v for k, v in sorted(people_per_cluster.items())},
        "largest_cluster": largest,
        "missed_pairs": missed,
        "people_split": split_people,
        "people": len(per_person),
    }


def incremental_placement(pred: dict[str, str], truth: dict[str, int], new: list[dict[str, Any]]) -> dict[str, Any]:
    """For each held-back record: did it join a profile with its own person's other records, with
    another person's records, or stay alone?"""
    members: dict[str, Counter[int]] = defaultdict(Counter)
    for rid, person in truth.items():
        if rid in pred:
            members[pred[rid]][person] += 1
    right = wrong = alone = 0
    for r in new:
        person = truth[r["record_id"]]
        cluster = members.get(pred.get(r["record_id"], ""), Counter())
        if any(p != person for p in cluster):
            wrong += 1
        elif cluster[person] > 1:
            right += 1
        else:
            alone += 1
    n = len(new) or 1
    return {"with_own_person": right / n, "with_another_person": wrong / n, "alone": alone / n}


# -- one size ------------------------------------------------------------------------------------
def run_size(
    n_records: int,
    *,
    seed: int,
    new_count: int,
    env: dict[str, str],
    keep: Path | None,
    say: Callable[[str], None],
    baseline: bool = True,
    import_batch: int | None = None,
    import_workers: int | None = None,
    import_only: bool = False,
    settle_each: bool = False,
) -> dict[str, Any]:
    from candor.app import Runtime
    from candor.config import Settings

    data = _load_data_module()
    phases = Phases(say)
    work = Path(tempfile.mkdtemp(prefix="candor-bench-identity-")) if keep is None else keep / f"n{n_records}"
    if keep is not None:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    result: dict[str, Any] = {
        "records": n_records,
        "seed": seed,
        "env": env,
        "data_dir": str(work),
        "loadavg_start": os.getloadavg(),
    }
    try:
        with phases("generate"):
            generated, truth_all = data.generate(n_records + new_count, seed)
            records, new = split_new(generated, truth_all, new_count, seed)
            truth = {r["record_id"]: truth_all[r["record_id"]] for r in records}
            paths = write_csvs(records, work / "csv", data.SOURCES)
        result["people"] = len(set(truth.values()))
        result["new_records"] = len(new)
        settings = Settings.from_env(env=env, data_dir=work / "data", default_jurisdiction="US")
        result["import_workers"] = import_workers
        result["settings"] = {
            "match_threshold": settings.match_threshold,
            "match_review_threshold": settings.match_review_threshold,
            "identity_max_shared": settings.identity_max_shared,
            "identity_limits": settings.identity_limits,
            "sqlite_synchronous": settings.sqlite_synchronous,
        }
        rt = Runtime(settings)
        try:
            imports: dict[str, Any] = {}
            curve: list[tuple[int, float]] = []  # (rows imported so far, seconds) every 10,000 rows
            done = [0]
            import_started = time.perf_counter()

            def tick(rows: int) -> None:
                before, done[0] = done[0], done[0] + rows
                if done[0] // IMPORT_CURVE_STEP > before // IMPORT_CURVE_STEP:
                    curve.append((done[0], time.perf_counter() - import_started))
                    if done[0] % (IMPORT_CURVE_STEP * 10) < rows:
                        say(f"    {done[0]:,} rows imported, {curve[-1][1]:.0f} s")

            with phases("import"):
                last = list(paths)[-1]
                for source, path in paths.items():
                    started = time.perf_counter()
                    # as a user loads several exports: all but the last with --defer-profiles
                    defer = not settle_each and source != last
                    imports[source] = import_file(rt, path, source, tick, import_batch, defer, import_workers)
                    imports[source]["seconds"] = time.perf_counter() - started
            result["import"] = imports
            result["import_curve"] = curve
            result["import_seconds_per_10k"] = [
                round(b[1] - a[1], 3) for a, b in zip([(0, 0.0), *curve], curve, strict=False)
            ]
            result["import_errors"] = sum(len(v["errors"]) for v in imports.values())
            result["import_rows_per_s"] = n_records / phases.seconds["import"]
            pred_import = record_profiles(rt, records)
            result["after_import"] = scores(data, pred_import, truth) | {
                "diagnosis": diagnose(pred_import, truth, records)
            }
            if import_only:
                return result | {"seconds": phases.seconds, "cpu_seconds": phases.cpu_seconds,
                                 "peak_rss_bytes": phases.peak_bytes}  # fmt: skip
            with phases("resolve"):
                report = rt.resolver.resolve(actor="bench")
            result["resolve"] = report.as_dict() | {"seconds": dict(report.timings)}
            pred = record_profiles(rt, records)
            result["candor"] = scores(data, pred, truth) | {
                "diagnosis": diagnose(pred, truth, records, earlier=pred_import)
            }
            say(
                "  Candor: P {precision:.4f} R {recall:.4f} F1 {f1:.4f} (after import alone F1 {a:.4f})".format(
                    **result["candor"], a=result["after_import"]["f1"]
                )
            )
            if new:
                with phases("incremental"):
                    result["incremental"] = link_incrementally(rt, new)
                all_records = records + new
                truth_new = truth | {r["record_id"]: truth_all[r["record_id"]] for r in new}
                pred = record_profiles(rt, all_records)
                result["incremental"]["placement"] = incremental_placement(pred, truth_new, new)
                result["after_incremental"] = scores(data, pred, truth_new)
        finally:
            rt.close()
        if baseline:
            with phases("splink_alone"):
                base = data.splink_alone(records)
            result["splink_alone"] = scores(data, base, truth) | {"diagnosis": diagnose(base, truth, records)}
            say("  Splink alone: P {precision:.4f} R {recall:.4f} F1 {f1:.4f}".format(**result["splink_alone"]))
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    result["seconds"] = phases.seconds
    result["cpu_seconds"] = phases.cpu_seconds
    result["loadavg_end"] = os.getloadavg()
    result["peak_rss_bytes"] = phases.peak_bytes
    result["maxrss_bytes"] = _maxrss_bytes()
    candor_s = phases.seconds["import"] + phases.seconds["resolve"]
    result["candor_seconds"] = candor_s
    if "splink_alone" in result:
        base_s = phases.seconds["splink_alone"]
        result["ratios"] = {
            "f1_candor_over_baseline": result["candor"]["f1"] / result["splink_alone"]["f1"]
            if result["splink_alone"]["f1"]
            else 0.0,
            "seconds_import_and_resolve_over_baseline": candor_s / base_s if base_s else 0.0,
            "seconds_resolve_over_baseline": phases.seconds["resolve"] / base_s if base_s else 0.0,
        }
    peak = max(phases.peak_bytes.values(), default=0)
    result["pass"] = {
        "f1": result["candor"]["f1"] >= TARGETS["f1"],
        "not_below_baseline": result.get("ratios", {}).get("f1_candor_over_baseline", 0.0) >= 1.0,
        "link_new_p95": result.get("incremental", {}).get("link_new", {}).get("p95_ms", 0.0)
        < TARGETS["link_new_p95_ms"],
        "rss": peak < TARGETS["rss_gb"] * 2**30,
    }
    if n_records >= 1_000_000:
        result["pass"]["resolved_in_10_min"] = candor_s < TARGETS["seconds_1m"]
    return result


# -- reporting -----------------------------------------------------------------------------------
def _machine() -> dict[str, Any]:
    model = ""
    with suppress(OSError):
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "os": platform.platform()}


def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "src_dirty": bool(git("status", "--porcelain", "--", "../src"))}


def print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    mb = 2**20
    for r in results["sizes"]:
        if "candor" not in r:  # --import-only
            rate = r["records"] / r["seconds"]["import"]
            print(f"{r['records']:,} records: import {r['seconds']['import']:.1f} s ({rate:,.0f} rows/s), "
                  f"CPU {r['cpu_seconds']['import']:.1f} s, after import F1 {r['after_import']['f1']:.4f}")  # fmt: skip
            continue
        table = Table(title=f"identity, {r['records']:,} records ({r['people']:,} people), seed {r['seed']}")
        for col in ("metric", "value", "baseline / ratio", "target", "result"):
            table.add_column(col)

        def verdict(key: str, passed: dict[str, bool] = r["pass"]) -> str:
            return "" if key not in passed else ("met" if passed[key] else "[red]missed[/red]")

        c, b = r["candor"], r.get("splink_alone")
        ratios = r.get("ratios", {})
        table.add_row(
            "pairwise F1 (P / R)",
            f"{c['f1']:.4f} ({c['precision']:.4f} / {c['recall']:.4f})",
            f"{b['f1']:.4f} ({b['precision']:.4f} / {b['recall']:.4f})" if b else "",
            "≥ 0.97",
            verdict("f1"),
        )
        if b:
            table.add_row(
                "F1 Candor / Splink alone",
                f"{ratios['f1_candor_over_baseline']:.4f}",
                "",
                "≥ 1",
                verdict("not_below_baseline"),
            )
        a = r["after_import"]
        table.add_row(
            "  after import only (deterministic)",
            f"{a['f1']:.4f} ({a['precision']:.4f} / {a['recall']:.4f})",
            "",
            "",
            "",
        )
        d = c["diagnosis"]
        table.add_row(
            "  false-merge pairs (sharing a phone)",
            f"{d['false_merge_pairs']:,} ({d['false_merge_pairs_sharing_a_phone']:,})",
            f"{b['diagnosis']['false_merge_pairs']:,}" if b else "",
            "",
            "",
        )
        table.add_row(
            "  missed pairs (people split)",
            f"{d['missed_pairs']:,} ({d['people_split']:,})",
            f"{b['diagnosis']['missed_pairs']:,}" if b else "",
            "",
            "",
        )
        s = r["seconds"]
        rs = r["resolve"]["seconds"]
        table.add_row("generate", f"{s['generate']:.1f} s", "", "", "")
        table.add_row("import (validate, seal, stitch)", f"{s['import']:.1f} s ({r['import_rows_per_s']:,.0f} rows/s)",
                      "", "", "")  # fmt: skip
        table.add_row(
            "resolve (decrypt / train / predict / write)",
            f"{s['resolve']:.1f} s ({rs.get('decrypt', 0):.1f} / {rs.get('train', 0):.1f} / "
            f"{rs.get('predict', 0):.1f} / {rs.get('write', 0):.1f})",
            f"{s['splink_alone']:.1f} s / ×{ratios['seconds_resolve_over_baseline']:.2f}" if b else "",
            "",
            "",
        )
        cs = r.get("cpu_seconds", {})
        table.add_row(
            "  CPU time import / resolve",
            f"{cs.get('import', 0):.1f} / {cs.get('resolve', 0):.1f} s",
            f"{cs.get('splink_alone', 0):.1f} s" if b else "",
            "",
            "",
        )
        table.add_row("  load average at start / end", f"{r['loadavg_start'][0]:.1f} / {r['loadavg_end'][0]:.1f}",
                      "", "", "")  # fmt: skip
        table.add_row(
            "import + resolve",
            f"{r['candor_seconds']:.1f} s",
            f"×{ratios['seconds_import_and_resolve_over_baseline']:.2f}" if b else "",
            "< 600 s at 1M",
            verdict("resolved_in_10_min"),
        )
        inc = r.get("incremental")
        if inc:
            ln, il = inc["link_new"], inc["import_and_link"]
            table.add_row(
                f"link_new p50 / p95 ({inc['records']} new records)",
                f"{ln['p50_ms']:.1f} / {ln['p95_ms']:.1f} ms",
                "",
                "p95 < 50 ms",
                verdict("link_new_p95"),
            )
            lc = inc["link_new_cpu"]
            table.add_row("  link_new CPU time p50 / p95", f"{lc['p50_ms']:.1f} / {lc['p95_ms']:.1f} ms", "", "", "")
            table.add_row("import + link_new p50 / p95", f"{il['p50_ms']:.1f} / {il['p95_ms']:.1f} ms", "", "", "")
            pl = inc["placement"]
            table.add_row(
                "new records: with own person / wrong / alone",
                f"{pl['with_own_person']:.1%} / {pl['with_another_person']:.1%} / {pl['alone']:.1%}",
                "",
                "",
                "",
            )
        peaks = r["peak_rss_bytes"]
        table.add_row(
            "peak RSS (import / resolve / Splink alone)",
            f"{peaks.get('import', 0) / mb:,.0f} / {peaks.get('resolve', 0) / mb:,.0f} / "
            f"{peaks.get('splink_alone', 0) / mb:,.0f} MB",
            "",
            "< 8 GB",
            verdict("rss"),
        )
        Console(width=None if sys.stdout.isatty() else 150).print(table)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, action="append", help="records per run (repeatable; default 10k and 100k)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--new", type=int, default=300, help="held-back records linked one at a time (default 300)")
    p.add_argument("--env", action="append", default=[], metavar="CANDOR_X=V", help="a Candor setting (repeatable)")
    p.add_argument("--keep", type=Path, help="keep the CSV files and data directories under this directory")
    p.add_argument("--no-baseline", action="store_true", help="skip Splink alone")
    p.add_argument("--import-only", action="store_true", help="stop after the import (to compare import settings)")
    p.add_argument("--import-batch", type=int, help="rows per writer transaction of the import (default: Candor's)")
    p.add_argument(
        "--import-workers", type=int, help="processes building the import's messages (default: Candor's, --workers)"
    )
    p.add_argument("--settle-each", action="store_true", help="settle profiles after each file (no --defer-profiles)")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_RECORDS:,} records, in-process (for the tests)")
    p.add_argument("--in-process", action="store_true", help="run every size in this process")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--no-save", action="store_true", help=f"do not write the JSON result to {RESULTS_DIR}")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.records, args.new, args.in_process = [QUICK_RECORDS], min(args.new, QUICK_NEW), True
    args.records = args.records or list(DEFAULT_SIZES)
    return args


def _child(args: argparse.Namespace, n: int, say: Callable[[str], None]) -> dict[str, Any]:
    """One size in a fresh process, so that its peak memory is its own."""
    with tempfile.TemporaryDirectory(prefix="candor-bench-identity-out-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--records", str(n), "--seed", str(args.seed),
               "--new", str(args.new), "--child-out", str(out)]  # fmt: skip
        cmd += [f"--env={e}" for e in args.env]
        if args.keep:
            cmd += ["--keep", str(args.keep)]
        if args.no_baseline:
            cmd.append("--no-baseline")
        if args.import_only:
            cmd.append("--import-only")
        if args.import_batch:
            cmd += ["--import-batch", str(args.import_batch)]
        if args.import_workers is not None:
            cmd += ["--import-workers", str(args.import_workers)]
        if args.settle_each:
            cmd.append("--settle-each")
        if args.quiet:
            cmd.append("--quiet")
        subprocess.run(cmd, check=True)
        result: dict[str, Any] = json.loads(out.read_text())
    say(f"  child process maxrss {result['maxrss_bytes']['self'] / 2**20:,.0f} MB")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    env = dict(e.split("=", 1) for e in args.env)
    started = datetime.now(UTC)
    sizes: list[dict[str, Any]] = []
    for n in args.records:
        say(f"{n:,} records, seed {args.seed}")
        if args.in_process or args.child_out or len(args.records) == 1:
            sizes.append(
                run_size(
                    n,
                    seed=args.seed,
                    new_count=args.new,
                    env=env,
                    keep=args.keep,
                    say=say,
                    baseline=not args.no_baseline,
                    import_batch=args.import_batch,
                    import_workers=args.import_workers,
                    import_only=args.import_only,
                    settle_each=args.settle_each,
                )
            )
        else:
            sizes.append(_child(args, n, say))
    if args.child_out:
        args.child_out.write_text(json.dumps(sizes[0]))
        return sizes[0]
    results: dict[str, Any] = {
        "benchmark": "identity",
        "started": started.isoformat(),
        "command": " ".join([".venv/bin/python", "bench/identity.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": _machine(),
        "git": _git(),
        "targets": TARGETS,
        "sizes": sizes,
        "maxrss_bytes": _maxrss_bytes(),
    }
    if not args.no_save:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        suffix = "-quick" if args.quick else ""
        out = RESULTS_DIR / f"identity-{started.strftime('%Y%m%d-%H%M%S')}{suffix}.json"
        out.write_text(json.dumps(results, indent=2))
        results["results_file"] = str(out)
    if args.json:
        print(json.dumps(results, indent=2))
    elif not args.quiet:
        print_table(results)
        if "results_file" in results:
            say(f"results: {results['results_file']}")
    return results


if __name__ == "__main__":
    main()
