"""Shared test plumbing: one suite, two stores (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from candor.config import Settings

PG_URL = os.environ.get("CANDOR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_pg_state: dict[str, Any] = {}


def postgres_available() -> str | None:
    """None when PostgreSQL answers, else the reason it does not."""
    if "reason" not in _pg_state:
        try:
            eng = create_engine(PG_URL, connect_args={"connect_timeout": 3})
            with eng.connect() as conn:
                conn.execute(text("SELECT 1"))
            eng.dispose()
            _pg_state["reason"] = None
        except Exception as exc:
            _pg_state["reason"] = f"PostgreSQL not reachable at {PG_URL.split('@')[-1]}: {type(exc).__name__}"
    return _pg_state["reason"]


def require_postgres() -> None:
    reason = postgres_available()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: PostgreSQL is required)")
    pytest.skip(reason)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, private schema (dropped afterwards)."""
    require_postgres()
    schema = "t_" + secrets.token_hex(6)
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_settings(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Callable[..., Settings]:
    """Settings for a fresh store on the parametrised backend, in a private data dir."""
    url = ""
    if backend == "postgres":
        url = request.getfixturevalue("pg_url")

    def make(**overrides: Any) -> Settings:
        # Most tests are about transport and storage, not consent: they run under an opt-out
        # jurisdiction so that analytics events are stored without a recorded choice. Consent tests
        # choose their jurisdiction explicitly (the product default is EU, opt-in).
        overrides.setdefault("default_jurisdiction", "US")
        return Settings.from_env(env={}, data_dir=tmp_path / "data", database_url=url or None, **overrides)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- analytics engines: one suite, DuckDB and Spark ---------------------------------------------------
def spark_missing() -> str | None:
    """None when PySpark and Java are there, else what is missing."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("pyspark") is None:
        return "PySpark is not installed (pip install 'candor[spark]')"
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        return "no Java on PATH or JAVA_HOME (Spark needs Java 17 or newer)"
    return None


@pytest.fixture(scope="session")
def spark_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One local Spark session (``local[2]``, 2 shuffle partitions) for the whole test session. Without
    PySpark or Java: a skip with the reason on a developer's machine, a failure under CI=true."""
    reason = spark_missing()
    if reason:
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: Spark is required)")
        pytest.skip(reason)
    from candor.engines import SparkEngine

    # tiny data: 2 shuffle partitions, and no code generation (compiling it costs more than it saves here)
    conf = "spark.sql.shuffle.partitions=2,spark.sql.codegen.wholeStage=false"
    settings = Settings.from_env(
        env={}, data_dir=tmp_path_factory.mktemp("spark"), spark_master="local[2]", spark_conf=conf
    )
    engine = SparkEngine(settings)
    engine.session()
    yield engine
    SparkEngine.stop()


# (engine, store) pairs for analytics tests: DuckDB on both stores, Spark on SQLite (the store only feeds
# it; the Spark part of the suite stays small)
ENGINE_MATRIX = [
    pytest.param("duckdb", "sqlite", id="duckdb-sqlite"),
    pytest.param("duckdb", "postgres", id="duckdb-postgres", marks=pytest.mark.postgres),
    # on a loaded machine one small Spark statement takes seconds (5-10 s measured at load 13 on 2 cores)
    pytest.param(
        "spark", "sqlite", id="spark-sqlite", marks=[pytest.mark.spark, pytest.mark.slow, pytest.mark.timeout(900)]
    ),
]
engines_and_stores = pytest.mark.parametrize(("engine_name", "backend"), ENGINE_MATRIX)


@pytest.fixture
def analytics_engine(engine_name: str, request: pytest.FixtureRequest) -> Any:
    """The parametrised engine (``engines_and_stores``): a candor.engines DuckDB or Spark engine."""
    if engine_name == "spark":
        return request.getfixturevalue("spark_engine")
    from candor.engines import DuckDBEngine

    return DuckDBEngine(Settings.from_env(env={}))
