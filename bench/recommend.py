"""Recommendations benchmark: quality on a time-split holdout against popularity, serving and decide
latency, and the full model rebuild over 10M events.

    .venv/bin/python bench/recommend.py                 # 10,000,000 events, 100,000 people, 5,000 items
    .venv/bin/python bench/recommend.py --quick         # 60,000 events: seconds, used by a test
    .venv/bin/python bench/recommend.py --json

What one run does:

1. Generates purchase histories (numpy, seeded): every person has a few favourite *series* (five
   items each, in one of 50 categories; series popularity is Zipf-like), and each event is a view
   (70 %), a basket add (15 %) or a purchase (15 %) of an item of one of their series (80 %) or of any
   item, by popularity (20 %). The events are written as Parquet files in the analytics store's
   layout (``candor.lake.COLUMNS``), the files the model job reads.
2. Time split at 80 % of the period. The model (``candor.recommend.model.run_duckdb``: the job the
   server runs) is built on the training events only. For up to 5,000 people with training history and
   a purchase after the split: the top 10 of the blend (``candor.recommend.recommenders.blend``, the
   serving code) against the popularity baseline (the most bought items of the training period,
   minus what the person already bought) computed from the same build: precision@10 and recall@10 of
   the items they bought after the split. Target: at least 1.5x the baseline's precision@10.
3. Serving: a real store (SQLite) with the catalogue, the model and the training histories of 200
   people sent through the collection API; ``GET /v1/recommendations`` and ``GET /v1/decide`` through
   the ASGI app in-process (no TCP), 1,000 requests each: p50/p95/p99. Targets: 10 ms and 20 ms p95.
4. A full rebuild over all the events (training and test), timed. Target: under 5 minutes at 10M.

Prints a table and writes JSON to ``bench/results/recommend-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
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

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from candor.lake import COLUMNS  # noqa: E402
from candor.recommend.model import Built, Params, run_duckdb  # noqa: E402
from candor.recommend.recommenders import Bestsellers, ItemToItem, blend  # noqa: E402
from candor.recommend.types import CART, PURCHASE, VIEW, Ask, Interaction, Item, Model  # noqa: E402

RESULTS = ROOT / "bench" / "results"
T0 = 1_780_000_000_000
SPAN = 180 * 86_400_000
CATEGORIES = 50
SERIES_LEN = 5
KINDS = np.array([VIEW, CART, PURCHASE])
EVENT_NAMES = {VIEW: "Product Viewed", CART: "Product Added", PURCHASE: "Order Completed"}


def generate(events: int, people: int, items: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_series = items // SERIES_LEN
    series_pop = 1.0 / np.arange(1, n_series + 1) ** 0.8
    rng.shuffle(series_pop)
    series_pop /= series_pop.sum()
    item_pop = np.repeat(series_pop, SERIES_LEN) * np.tile(1.0 / np.arange(1, SERIES_LEN + 1), n_series)
    item_pop /= item_pop.sum()
    favourites = rng.choice(n_series, size=(people, 4), p=series_pop)  # each person's series
    per_person = rng.poisson(events / people, people).clip(1)
    per_person = (per_person * events / per_person.sum()).astype(np.int64).clip(1)
    user = np.repeat(np.arange(people), per_person)
    n = len(user)
    own = rng.random(n) < 0.8
    series = favourites[user, rng.integers(0, 4, n)]
    within = np.minimum(rng.geometric(0.45, n) - 1, SERIES_LEN - 1)
    item = np.where(own, series * SERIES_LEN + within, rng.choice(items, size=n, p=item_pop))
    kind = rng.choice(3, size=n, p=[0.70, 0.15, 0.15])
    ts = T0 + rng.integers(0, SPAN, n)
    order = np.lexsort((ts, user))
    return {"user": user[order], "item": item[order], "kind": kind[order], "ts": ts[order]}


def write_parquet(data: dict[str, np.ndarray], mask: np.ndarray, out: Path, chunk: int = 1_000_000) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    idx = np.nonzero(mask)[0]
    files: list[str] = []
    types = {"BIGINT": pa.int64(), "INTEGER": pa.int32(), "VARCHAR": pa.string(), "BOOLEAN": pa.bool_(),
             "DOUBLE": pa.float64()}  # fmt: skip
    schema = pa.schema([(name, types[typ]) for name, typ, _ in COLUMNS])
    for part, start in enumerate(range(0, len(idx), chunk)):
        sel = idx[start : start + chunk]
        users = data["user"][sel]
        items = data["item"][sel]
        kinds = data["kind"][sel]
        props = [
            f'{{"products":[{{"product_id":"P-{i:05d}"}}]}}' if k == 2 else f'{{"product_id":"P-{i:05d}"}}'
            for i, k in zip(items.tolist(), kinds.tolist(), strict=True)
        ]
        n = len(sel)
        cols: dict[str, Any] = {
            "id": pa.array(sel + 1, pa.int64()),
            "source_id": pa.array(np.ones(n, np.int32)),
            "source": pa.array(["web"] * n, pa.string()),
            "type": pa.array(["track"] * n, pa.string()),
            "event": pa.array([EVENT_NAMES[str(KINDS[k])] for k in kinds.tolist()], pa.string()),
            "subject_id": pa.array([f"s{u:07d}" for u in users.tolist()], pa.string()),
            "ts_ms": pa.array(data["ts"][sel], pa.int64()),
            "received_ms": pa.array(data["ts"][sel], pa.int64()),
            "properties": pa.array(props, pa.string()),
        }
        for name, typ, _ in COLUMNS:
            cols.setdefault(name, pa.nulls(n, types[typ]))
        path = out / f"part-{part:06d}.parquet"
        pq.write_table(pa.table(cols, schema=schema), path)
        files.append(str(path))
    return files


def model_of(built: Built, n_items: int) -> Model:
    catalog = {f"P-{i:05d}": Item(f"P-{i:05d}", f"Title {i}", f"C{(i // SERIES_LEN) % CATEGORIES}", None, None, True)
               for i in range(n_items)}  # fmt: skip
    neighbors: dict[str, list[tuple[str, float]]] = {}
    for a, b, s, _ in built.neighbors:
        neighbors.setdefault(a, []).append((b, s))
    for lst in neighbors.values():
        lst.sort(key=lambda x: -x[1])
    popular = sorted(((i, s) for i, s, _ in built.popular), key=lambda x: (-x[1], x[0]))
    return Model(1, catalog, neighbors, popular)


def evaluate(data: dict[str, np.ndarray], split: int, model: Model, max_people: int) -> dict[str, Any]:
    user, item, kind, ts = data["user"], data["item"], data["kind"], data["ts"]
    bounds = np.searchsorted(user, np.arange(user.max() + 2))
    recs = [ItemToItem(), Bestsellers()]
    base = [Bestsellers()]
    p_cf = r_cf = p_pop = r_pop = 0.0
    people = 0
    for u in range(user.max() + 1):
        lo, hi = bounds[u], bounds[u + 1]
        train = [(int(item[i]), int(kind[i]), int(ts[i])) for i in range(lo, hi) if ts[i] < split]
        bought_train = {f"P-{i:05d}" for i, k, _ in train if k == 2}
        test = {f"P-{int(item[i]):05d}" for i in range(lo, hi) if ts[i] >= split and kind[i] == 2} - bought_train
        if not train or not test:
            continue
        history = tuple(Interaction(f"P-{i:05d}", str(KINDS[k]), t) for i, k, t in train)
        ask = Ask(history, (), frozenset(bought_train), 10)
        got = {s.item_id for s in blend(ask, model, True, recs)}
        pop = {s.item_id for s in blend(ask, model, False, base)}
        p_cf += len(got & test) / 10
        r_cf += len(got & test) / len(test)
        p_pop += len(pop & test) / 10
        r_pop += len(pop & test) / len(test)
        people += 1
        if people >= max_people:
            break
    return {
        "people": people,
        "precision_at_10": p_cf / people,
        "recall_at_10": r_cf / people,
        "baseline_precision_at_10": p_pop / people,
        "baseline_recall_at_10": r_pop / people,
        "ratio": (p_cf / people) / max(p_pop / people, 1e-9),
    }


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) >= 2 else values[0]


async def serving(data: dict[str, np.ndarray], split: int, built: Built, n_items: int, people: int,
                  requests: int, root: Path) -> dict[str, Any]:  # fmt: skip
    import httpx

    from candor.app import Runtime, create_app
    from candor.config import Settings

    settings = Settings.from_env(
        env={}, data_dir=root / "store", default_jurisdiction="US", rate_staff_per_token="100000/second",
        rate_collect_per_key="100000/second", recommend_refresh_seconds=0, analytics_refresh_seconds=0,
    )  # fmt: skip
    rt = Runtime(settings)
    try:
        key = rt.directory.create_source("bench")
        token = rt.directory.create_token("bench", "marketer")
        rt.recommend.catalog.upsert(
            [{"product_id": f"P-{i:05d}", "name": f"Title {i}", "category": f"C{(i // SERIES_LEN) % CATEGORIES}"}
             for i in range(n_items)]
        )  # fmt: skip
        rt.recommend.builder.save(built, "duckdb")
        app = create_app(runtime=rt)
        transport = httpx.ASGITransport(app=app)
        user, item, kind, ts = data["user"], data["item"], data["kind"], data["ts"]
        bounds = np.searchsorted(user, np.arange(user.max() + 2))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://bench") as client,
        ):
            auth = httpx.BasicAuth(key, "")
            sent = 0
            for u in range(people):
                lo, hi = bounds[u], bounds[u + 1]
                batch = []
                for i in range(lo, hi):
                    if ts[i] >= split:
                        continue
                    k = str(KINDS[kind[i]])
                    pid = f"P-{int(item[i]):05d}"
                    props = {"products": [{"product_id": pid}]} if k == PURCHASE else {"product_id": pid}
                    batch.append({"type": "track", "userId": f"u{u}", "event": EVENT_NAMES[k], "properties": props,
                                  "messageId": f"m{i}", "timestamp": datetime.fromtimestamp(int(ts[i]) / 1000, UTC)
                                  .isoformat().replace("+00:00", "Z")})  # fmt: skip
                for j in range(0, len(batch), 400):
                    r = await client.post("/v1/batch", json={"batch": batch[j : j + 400]}, auth=auth)
                    assert r.status_code == 200, r.text
                sent += len(batch)
            headers = {"Authorization": f"Bearer {token}"}
            out: dict[str, Any] = {"people": people, "events_in_store": sent}
            for name, path in (("recommendations", "/v1/recommendations?userId=u{u}"),
                               ("decide", "/v1/decide?userId=u{u}&placement=home")):  # fmt: skip
                for u in range(20):  # warm up
                    await client.get(path.format(u=u), headers=headers)
                times: list[float] = []
                cpu: list[float] = []
                personal = 0
                for n in range(requests):
                    started, started_cpu = time.perf_counter(), time.process_time()
                    r = await client.get(path.format(u=n % people), headers=headers)
                    times.append((time.perf_counter() - started) * 1000)
                    cpu.append((time.process_time() - started_cpu) * 1000)
                    assert r.status_code == 200, r.text
                    personal += bool(r.json()["personalized"])
                out[name] = {"p50_ms": pct(times, 50), "p95_ms": pct(times, 95), "p99_ms": pct(times, 99),
                             "cpu_p50_ms": pct(cpu, 50), "cpu_p95_ms": pct(cpu, 95),
                             "personalized_share": personal / requests}  # fmt: skip
            times, cpu = [], []
            for n in range(requests):  # the service alone, no HTTP stack
                started, started_cpu = time.perf_counter(), time.process_time()
                rt.recommend.for_identifiers(f"u{n % people}", None, 10)
                times.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - started_cpu) * 1000)
            out["service"] = {"p50_ms": pct(times, 50), "p95_ms": pct(times, 95), "p99_ms": pct(times, 99),
                              "cpu_p50_ms": pct(cpu, 50), "cpu_p95_ms": pct(cpu, 95)}  # fmt: skip
        return out
    finally:
        rt.close()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--people", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--serve-people", type=int, default=200)
    ap.add_argument("--requests", type=int, default=1_000)
    ap.add_argument("--eval-people", type=int, default=5_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="60,000 events, 1,500 people, 1,500 items")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-rebuild", action="store_true", help="skip step 4 (the timed full rebuild)")
    args = ap.parse_args(argv)
    if args.quick:
        args.events, args.people, args.items = 60_000, 1_500, 1_500
        args.serve_people, args.requests, args.eval_people = 30, 200, 1_500
    console = Console(stderr=True)
    import logging

    logging.getLogger("candor.access").setLevel(logging.WARNING)  # one log line per request is not measured
    load_before = os.getloadavg()
    p = Params()
    with tempfile.TemporaryDirectory(prefix="candor-rec-bench-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        data = generate(args.events, args.people, args.items, args.seed)
        split = T0 + int(SPAN * 0.8)
        train_files = write_parquet(data, data["ts"] < split, root / "train")
        all_files = write_parquet(data, np.ones(len(data["ts"]), bool), root / "all")
        setup_s = time.perf_counter() - t
        console.print(f"generated {len(data['ts']):,} events in {setup_s:.1f} s")
        items = [f"P-{i:05d}" for i in range(args.items)]
        users = [(f"s{u:07d}", f"s{u:07d}") for u in range(args.people)]
        train = run_duckdb(train_files, items, users, p, threads=args.threads)
        console.print(f"training model: {len(train.neighbors):,} pairs in {train.seconds:.1f} s")
        quality = evaluate(data, split, model_of(train, args.items), args.eval_people)
        console.print(f"quality: {quality}")
        serve = asyncio.run(serving(data, split, train, args.items, args.serve_people, args.requests, root))
        console.print(f"serving: {serve}")
        full = train if args.no_rebuild else run_duckdb(all_files, items, users, p, threads=args.threads)
        console.print(f"full rebuild: {full.seconds:.1f} s")
    result = {
        "benchmark": "recommend",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        },
        "events": len(data["ts"]),
        "train_events": int((data["ts"] < split).sum()),
        "people": args.people,
        "items": args.items,
        "params": p.__dict__,
        "setup_s": setup_s,
        "quality": quality,
        "serving": serve,
        "rebuild": None
        if args.no_rebuild
        else {
            "events": len(data["ts"]),
            "seconds": full.seconds,
            "pairs": len(full.neighbors),
            "train_seconds": train.seconds,
        },
        "targets": {
            "precision_ratio": quality["ratio"] >= 1.5,
            "recommendations_p95": serve["recommendations"]["p95_ms"] < 10,
            "decide_p95": serve["decide"]["p95_ms"] < 20,
            "rebuild_10m_under_5_min": None if args.no_rebuild else full.seconds < 300,
        },
    }
    table = Table(title=f"recommendations: {result['events']:,} events, {args.people:,} people, {args.items:,} items")
    for col in ("measure", "value", "baseline / target"):
        table.add_column(col)
    table.add_row(
        "precision@10",
        f"{quality['precision_at_10']:.4f}",
        f"{quality['baseline_precision_at_10']:.4f} (x{quality['ratio']:.2f}, target x1.5)",
    )
    table.add_row("recall@10", f"{quality['recall_at_10']:.4f}", f"{quality['baseline_recall_at_10']:.4f}")
    for name, target in (("recommendations", 10), ("decide", 20)):
        s = serve[name]
        table.add_row(
            f"GET /v1/{name} p50/p95/p99 ms",
            f"{s['p50_ms']:.2f} / {s['p95_ms']:.2f} / {s['p99_ms']:.2f}",
            f"p95 < {target} ms",
        )
        table.add_row("  CPU time per request p50/p95 ms", f"{s['cpu_p50_ms']:.2f} / {s['cpu_p95_ms']:.2f}", "")
    s = serve["service"]
    table.add_row("service only p50/p95 ms", f"{s['p50_ms']:.2f} / {s['p95_ms']:.2f}", "")
    table.add_row("  CPU time p50/p95 ms", f"{s['cpu_p50_ms']:.2f} / {s['cpu_p95_ms']:.2f}", "")
    if not args.no_rebuild:
        table.add_row("full rebuild", f"{full.seconds:.1f} s over {result['events']:,} events", "< 300 s at 10M")
    loads = f"{load_before[0]:.2f} / {result['machine']['load_after'][0]:.2f}"
    table.add_row("load average before/after", loads, "")
    Console().print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"recommend-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
