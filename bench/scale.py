"""Scale benchmark: how the heavy jobs behave when the data outgrows one small machine.

    .venv/bin/python bench/scale.py identity --records 10000          # DuckDB and Spark local, one size
    .venv/bin/python bench/scale.py identity --records 1000000        # the 1M run (long: see BENCHMARKS.md)
    .venv/bin/python bench/scale.py identity --records 10000 --engines duckdb

    .venv/bin/python bench/scale.py ingest --events 50000 --singles 5000   # PostgreSQL 1/2/4 workers, SQLite 1/2

Parts (each a function registered in ``PARTS``):

* ``identity``: probabilistic matching of N generated records (bench/identity_data.py, people with
  known truth) with the same model definitions on DuckDB (in memory) and on Spark (local mode, the
  shared session of candor.engines): training (u by sampling, two EM sessions, λ) and scoring of every
  blocked pair, timed separately, with pairwise precision/recall against the truth and the ratio
  Spark/DuckDB. Spark runs with ``CANDOR_SPARK_CONF`` (default here: 6 GB of driver memory).

* ``ingest``: bench/ingest.py's workload and checks through ``candor serve --workers N`` (HTTP
  workers feeding one writer process) on PostgreSQL with 1, 2 and 4 workers and on SQLite with 1
  and 2; events/s and single requests/s with their ratios to one PostgreSQL worker and to SQLite.

Results go to bench/results/scale-<time>.json and a table. The machine is shared (2 cores): read
ratios, measured in the same run, before absolute times.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))


def _bench_module(name: str) -> ModuleType:
    """Another benchmark script of this directory (``bench/<name>.py``) as a module."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _quality(pairs: list[tuple[str, str, float]], truth: dict[str, int], threshold: float) -> dict[str, float]:
    by_person: dict[int, int] = {}
    for person in truth.values():
        by_person[person] = by_person.get(person, 0) + 1
    true_total = sum(c * (c - 1) // 2 for c in by_person.values())
    found = [(a, b) for a, b, p in pairs if p >= threshold]
    right = sum(1 for a, b in found if truth[a] == truth[b])
    precision = right / len(found) if found else 0.0
    recall = right / true_total if true_total else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "pairs": len(found)}


def identity(args: argparse.Namespace) -> dict[str, Any]:
    from candor.config import Settings
    from candor.engines import SparkEngine
    from candor.identity.matching import FIELDS, Model

    data = _bench_module("identity_data")
    t = time.perf_counter()
    raw, truth = data.generate(args.records, seed=args.seed)
    records = [{k: r.get(k) for k in ("record_id", *FIELDS)} for r in raw]
    out: dict[str, Any] = {"records": len(records), "generate_s": round(time.perf_counter() - t, 1), "engines": {}}
    for name in args.engines:
        engine = None
        row: dict[str, Any] = {}
        if name == "spark":
            conf = os.environ.get("CANDOR_SPARK_CONF") or "spark.driver.memory=6g"
            engine = SparkEngine(Settings.from_env(env={}, spark_conf=conf, spark_master=args.spark_master))
            t = time.perf_counter()
            engine.session()
            row["session_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        model = Model.train(records, engine=engine)
        row["train_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        pairs = model.predict(records, threshold=args.threshold, engine=engine)
        row["predict_s"] = round(time.perf_counter() - t, 1)
        row["total_s"] = round(row["train_s"] + row["predict_s"], 1)
        row["quality"] = _quality(pairs, truth, 0.95)
        row["lambda"] = model.probability_two_random_records_match
        row["driver_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        out["engines"][name] = row
        print(f"  {name}: {json.dumps(row)}", flush=True)
        if engine is not None:
            SparkEngine.stop()
    if {"duckdb", "spark"} <= set(out["engines"]):
        d, s = out["engines"]["duckdb"], out["engines"]["spark"]
        out["ratio_spark_to_duckdb"] = {
            k: round(s[k] / d[k], 2) if d[k] else None for k in ("train_s", "predict_s", "total_s")
        }
    return out


def ingest(args: argparse.Namespace) -> dict[str, Any]:
    """``bench/ingest.py`` (the same workload, client and checks) against ``candor serve --workers N``:
    on PostgreSQL for every N of ``--workers`` (each run in a fresh schema), and on SQLite for
    ``--sqlite-workers``; ratios to one PostgreSQL worker and to SQLite with the same worker count."""
    from sqlalchemy import create_engine, text

    bench = _bench_module("ingest")
    sep = "&" if "?" in args.pg_url else "?"
    runs: list[dict[str, Any]] = []
    setups = [("sqlite", n) for n in args.sqlite_workers] + [("postgres", n) for n in args.workers]
    for store, n in setups:
        env = [f"CANDOR_WORKERS={n}"]
        schema = None
        admin = None
        if store == "postgres":
            schema = f"bench_scale_{os.getpid()}_{n}"
            admin = create_engine(args.pg_url)
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            env.append(f"CANDOR_DATABASE_URL={args.pg_url}{sep}options=-csearch_path%3D{schema}")
        argv = ["--events", str(args.events), "--singles", str(args.singles), "--raw-repeats", "1", "--no-save"]
        argv += ["--quiet", "--seed", str(args.seed)]
        for kv in env:
            argv += ["--server-env", kv]
        print(f"  {store}, {n} worker(s): {args.events:,} batch events, {args.singles:,} singles", flush=True)
        try:
            r = bench.main(argv)
        finally:
            if admin is not None:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                admin.dispose()
        row = {
            "store": store,
            "workers": n,
            "batch_events_per_s": round(r["batch_events_per_s"]),
            "single_requests_per_s": round(r["single_requests_per_s"]),
            "batch_p50_ms": round(r["batch"]["p50_ms"], 1),
            "batch_p99_ms": round(r["batch"]["p99_ms"], 1),
            "server_cpu_cores_batch": round(r["batch"]["server_cpu_seconds"] / max(r["batch"]["seconds"], 1e-9), 2),
            "server_rss_peak_mb": round(r["server_rss_peak_bytes"] / 2**20),
            "non_2xx": r["batch"]["non_2xx"] + r["singles"]["non_2xx"],
            "nothing_lost": r["pass"]["nothing_lost"],
            "raw_rows_per_s": round(r["raw"]["rows_per_s"]),  # SQLite only: its executemany ceiling
        }
        runs.append(row)
        print(f"    {json.dumps(row)}", flush=True)
    base = {(r["store"], r["workers"]): r for r in runs}
    one_pg = base.get(("postgres", 1))
    for r in runs:
        for key in ("batch_events_per_s", "single_requests_per_s"):
            if r["store"] == "postgres" and one_pg and one_pg[key]:
                r[f"{key}_to_1_worker"] = round(r[key] / one_pg[key], 2)
            same_sqlite = base.get(("sqlite", r["workers"])) or base.get(("sqlite", 1))
            if r["store"] == "postgres" and same_sqlite and same_sqlite[key]:
                r[f"{key}_to_sqlite"] = round(r[key] / same_sqlite[key], 2)
    return {"events": args.events, "singles": args.singles, "runs": runs}


PARTS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {"identity": identity, "ingest": ingest}


def print_ingest_table(r: dict[str, Any]) -> None:
    print(f"\ningest, {r['events']:,} batch events and {r['singles']:,} singles per run")
    print(
        f"{'store':9} {'workers':>7} {'events/s':>9} {'x1 pg':>6} {'x sqlite':>8} {'singles/s':>10} "
        f"{'x1 pg':>6} {'x sqlite':>8} {'cores':>6} {'RSS MB':>7} {'lost?':>6}"
    )
    for row in r["runs"]:
        print(
            f"{row['store']:9} {row['workers']:>7} {row['batch_events_per_s']:>9,} "
            f"{row.get('batch_events_per_s_to_1_worker', ''):>6} {row.get('batch_events_per_s_to_sqlite', ''):>8} "
            f"{row['single_requests_per_s']:>10,} {row.get('single_requests_per_s_to_1_worker', ''):>6} "
            f"{row.get('single_requests_per_s_to_sqlite', ''):>8} {row['server_cpu_cores_batch']:>6} "
            f"{row['server_rss_peak_mb']:>7} {'no' if row['nothing_lost'] else 'YES':>6}"
        )


def print_table(part: str, r: dict[str, Any]) -> None:
    if part == "ingest":
        print_ingest_table(r)
        return
    if part != "identity":
        print(json.dumps(r, indent=2))
        return
    print(f"\nidentity resolution, {r['records']:,} records")
    print(f"{'engine':8} {'train s':>9} {'predict s':>10} {'total s':>9} {'F1':>7} {'precision':>10} {'recall':>8}")
    for name, row in r["engines"].items():
        q = row["quality"]
        print(
            f"{name:8} {row['train_s']:>9} {row['predict_s']:>10} {row['total_s']:>9} {q['f1']:>7} "
            f"{q['precision']:>10} {q['recall']:>8}"
        )
    if "ratio_spark_to_duckdb" in r:
        ratio = r["ratio_spark_to_duckdb"]
        print(f"Spark / DuckDB: train {ratio['train_s']}x, predict {ratio['predict_s']}x, total {ratio['total_s']}x")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=sorted(PARTS))
    p.add_argument("--records", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threshold", type=float, default=0.8)
    p.add_argument("--engines", default="duckdb,spark", type=lambda s: [e for e in s.split(",") if e])
    p.add_argument("--spark-master", default="local[2]")
    p.add_argument("--no-save", action="store_true")
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    p.add_argument("--events", type=int, default=50_000, help="ingest: batch events per run")
    p.add_argument("--singles", type=int, default=5_000, help="ingest: single /v1/track requests per run")
    p.add_argument("--workers", type=ints, default=[1, 2, 4], help="ingest: worker counts on PostgreSQL")
    p.add_argument("--sqlite-workers", type=ints, default=[1, 2], help="ingest: worker counts on SQLite")
    p.add_argument(
        "--pg-url",
        default=os.environ.get("CANDOR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
        help="ingest: PostgreSQL to use (a schema of its own per run, dropped afterwards)",
    )
    args = p.parse_args(argv)
    from _server import machine_info

    result = {
        "benchmark": f"scale/{args.part}",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "bench/scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        **PARTS[args.part](args),
    }
    print_table(args.part, result)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"scale-{args.part}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {path}")
    return result


if __name__ == "__main__":
    main()
