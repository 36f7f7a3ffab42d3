"""Apache Spark as the engine of the heavy jobs: the same definitions give the same results as DuckDB.

One Spark session (PySpark local mode, ``spark_engine`` in tests/conftest.py) serves the whole test
session: the JVM takes seconds to start. Without PySpark or Java these tests skip with the reason on a
developer's machine and fail under CI=true.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from candor.app import Runtime
from candor.config import ConfigError, Settings
from candor.engines import EngineError, SparkEngine, parse_conf
from candor.identity.matching import Model
from tests.helpers import api

pytestmark = pytest.mark.anyio
BENCH = Path(__file__).resolve().parents[1] / "bench"
CANARY_LAST = "Zqxsparkcanary"
CANARY_EMAIL = "zqx.sparkcanary@example.org"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def spark(spark_engine: SparkEngine) -> SparkEngine:
    """The test session's one Spark session (tests/conftest.py)."""
    return spark_engine


def _records(n: int, seed: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    data = _load("identity_data")
    from candor.identity.matching import FIELDS

    records, truth = data.generate(n, seed=seed)
    return [{k: r.get(k) for k in ("record_id", *FIELDS)} for r in records], truth


def test_duckdb_and_spark_score_the_same_pairs(spark: SparkEngine) -> None:
    records, _ = _records(1000, seed=7)
    model = Model.train(records)
    on_duckdb = {(a, b): p for a, b, p in model.predict(records, threshold=0.8)}
    on_spark = {(a, b): p for a, b, p in model.predict(records, threshold=0.8, engine=spark)}
    assert len(on_duckdb) > 200
    # the same model on the same blocked pairs: the same pairs, the same probabilities. The string
    # similarities are two implementations (DuckDB's and Splink's Scala UDFs): Jaro-Winkler differs on
    # some strings (0.928 against 0.908 for one pair of six-letter names here), which can move a pair
    # across a level's boundary; at most 1% of pairs may be affected
    differ = set(on_duckdb) ^ set(on_spark)
    common = set(on_duckdb) & set(on_spark)
    moved = [k for k in common if abs(on_duckdb[k] - on_spark[k]) > 1e-3]
    assert len(differ) + len(moved) <= len(on_duckdb) // 100, f"{len(differ) + len(moved)} of {len(on_duckdb)} differ"
    assert sorted(abs(on_duckdb[k] - on_spark[k]) for k in common)[len(common) // 2] < 1e-6


# Training issues a few Spark jobs per round of expectation maximisation, whatever the data size: both
# engines train with the same one round per EM session (on this data the model after one round finds
# the same pairs as one trained to convergence: precision 0.99, recall 0.89 against 0.91), which keeps
# the number of Spark jobs, and so the time, bounded
TRAINING_ROUNDS = 1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_model_trained_on_spark_matches_one_trained_on_duckdb(spark: SparkEngine) -> None:
    records, truth = _records(300, seed=5)
    on_duckdb = Model.train(records, max_pairs=2e4, max_iterations=TRAINING_ROUNDS)
    on_spark = Model.train(records, max_pairs=2e4, max_iterations=TRAINING_ROUNDS, engine=spark)
    lam_d, lam_s = on_duckdb.probability_two_random_records_match, on_spark.probability_two_random_records_match
    assert abs(lam_d - lam_s) <= 0.1 * lam_d, (lam_d, lam_s)
    true_pairs = {(x, y) for x in truth for y in truth if x < y and truth[x] == truth[y]}
    for model in (on_duckdb, on_spark):
        found = {(x, y) for x, y, _ in model.predict(records, threshold=0.95)}
        precision, recall = len(found & true_pairs) / len(found), len(found & true_pairs) / len(true_pairs)
        assert precision > 0.9 and recall > 0.6, (model is on_spark, precision, recall)
    a = {(x, y) for x, y, _ in on_duckdb.predict(records, threshold=0.95)}
    b = {(x, y) for x, y, _ in on_spark.predict(records, threshold=0.95)}
    assert len(a ^ b) <= max(2, len(a) // 20), f"{len(a ^ b)} of {len(a)} pairs differ"
    assert "jaro_winkler(" not in on_spark.to_json()  # saved in one dialect, whichever engine trained it


def _store_with_records(path: Path, records: list[dict[str, Any]]) -> Runtime:
    bench = _load("identity")
    rt = Runtime(Settings.from_env(env={}, data_dir=path, default_jurisdiction="US"))
    files = bench.write_csvs(records, path.parent / f"{path.name}-csv", bench._load_data_module().SOURCES)
    for source, csv in files.items():
        bench.import_file(rt, csv, source)
    return rt


def _partition(rt: Runtime, records: list[dict[str, Any]]) -> set[frozenset[str]]:
    bench = _load("identity")
    groups: dict[str, set[str]] = {}
    for record, profile in bench.record_profiles(rt, records).items():
        groups.setdefault(profile, set()).add(record)
    return {frozenset(g) for g in groups.values()}


def test_identity_resolve_on_spark_links_the_same_profiles_and_writes_no_plaintext(
    spark: SparkEngine, tmp_path: Path
) -> None:
    data = _load("identity_data")
    raw, _ = data.generate(600, seed=11)
    # one person with unmistakable values, twice (a typo in the second), so their pair goes through
    # the shuffle that blocking and scoring do
    base = {**raw[0], "last_name": CANARY_LAST, "email": CANARY_EMAIL}
    raw[0] = {**base, "record_id": raw[0]["record_id"]}
    raw[1] = {**base, "record_id": raw[1]["record_id"], "first_name": (base["first_name"] or "Ann") + "e"}
    on_duckdb = _store_with_records(tmp_path / "duck", raw)
    on_spark = _store_with_records(tmp_path / "spark", raw)
    try:
        first = on_duckdb.resolver.resolve(actor="test")
        model_json = on_duckdb.resolver.saved_model().to_json()
        # the same model on both stores, so the comparison is of the engines, not of two trainings
        with on_spark.store.write() as conn:
            on_spark.resolver._save(conn, "model", model_json)
        second = on_spark.resolver.resolve(actor="test", engine=spark)
        assert first.linked > 20 and not second.trained
        assert abs(second.linked - first.linked) <= max(1, first.linked // 100)
        duck, sprk = _partition(on_duckdb, raw), _partition(on_spark, raw)
        assert len(duck ^ sprk) <= max(2, len(duck) // 50), f"{len(duck ^ sprk)} profiles differ"
    finally:
        on_duckdb.close()
        on_spark.close()
    # nothing Spark wrote (shuffle files, spills, cached blocks) holds a plaintext value
    local = SparkEngine._local_dir
    assert local is not None and local.exists()
    written = [p for p in local.rglob("*") if p.is_file()]
    assert written, "Spark wrote no shuffle files at all: the check below would prove nothing"
    for where in (*written, *(p for p in (tmp_path / "spark").rglob("*") if p.is_file())):
        blob = where.read_bytes()
        for label, needle in (("last name", CANARY_LAST), ("email", CANARY_EMAIL)):
            for form in (needle, needle.lower()):
                assert form.encode() not in blob, f"the canary {label} is in plaintext in {where.name}"


async def test_segments_evaluate_the_same_on_spark_and_duckdb(spark: SparkEngine, tmp_path: Path) -> None:
    settings = Settings.from_env(env={}, data_dir=tmp_path / "data", default_jurisdiction="US")
    async with api(settings) as a:
        for i in range(12):
            uid = f"s{i}"
            await a.post("/v1/identify", {"userId": uid, "traits": {"email": f"{uid}@example.org", "tier": i % 3}})
            for k in range(i % 4):
                props = {"category": "jazz" if k % 2 else "crime", "revenue": 10 * (i + k)}
                await a.post("/v1/track", {"userId": uid, "event": "Order Completed", "properties": props})
        definitions = [
            {"name": "buyers", "conditions": [{"event": "Order Completed", "count": {"gte": 2}}]},
            {
                "name": "jazz",
                "conditions": [
                    {"event": "Order Completed", "where": {"category": "jazz"}, "count": {"gte": 1}},
                    {"event": "Order Completed", "sum": {"property": "revenue", "gte": 50}},
                ],
            },
            {"name": "recent", "conditions": [{"last_seen": {"within_days": 30}}]},
        ]
        for d in definitions:
            duck = a.rt.segments.run(d).members
            a.rt.segments.engine = spark
            try:
                on_spark = a.rt.segments.run(d).members
            finally:
                a.rt.segments.engine = None
            assert duck and on_spark == duck, d["name"]


def test_unreachable_cluster_missing_extra_and_unsafe_settings_are_clear_errors(tmp_path: Path) -> None:
    from candor.testing import free_port

    port = free_port()
    engine = SparkEngine(Settings.from_env(env={}, data_dir=tmp_path, spark_master=f"spark://127.0.0.1:{port}"))
    started = time.monotonic()
    saved = SparkEngine._session
    SparkEngine._session = None  # as in a fresh process
    try:
        with pytest.raises(EngineError, match=rf"cannot reach the Spark master 127\.0\.0\.1:{port}"):
            engine.session()
    finally:
        SparkEngine._session = saved
    assert time.monotonic() - started < 10
    with pytest.raises(ConfigError, match=r"spark\.io\.encryption\.enabled"):
        parse_conf("spark.io.encryption.enabled=false")
    with pytest.raises(ConfigError, match=r"spark\.key=value"):
        Settings.from_env(env={"CANDOR_SPARK_CONF": "driver.memory=4g"})
    assert parse_conf("spark.driver.memory=4g, spark.executor.cores=2") == {
        "spark.driver.memory": "4g",
        "spark.executor.cores": "2",
    }
    # without PySpark installed, the command says which extra to install
    code = (
        "import sys; sys.modules['pyspark'] = None; from candor.cli import main; "
        "sys.argv = ['candor', 'identity', 'resolve', '--engine', 'spark']; main()"
    )
    env = {**os.environ, "CANDOR_DATA_DIR": str(tmp_path / "d")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "pip install 'candor[spark]'" in " ".join(done.stderr.split())


def test_spark_connect_is_refused_with_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARK_REMOTE", "sc://127.0.0.1:15002")
    engine = SparkEngine(Settings.from_env(env={}, data_dir=tmp_path))
    saved = SparkEngine._session
    SparkEngine._session = None  # as in a fresh process
    try:
        with pytest.raises(EngineError, match=r"unset SPARK_REMOTE and name the cluster with CANDOR_SPARK_MASTER"):
            engine.session()
    finally:
        SparkEngine._session = saved
