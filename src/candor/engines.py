"""Where the heavy jobs run: DuckDB embedded (the default) or Apache Spark (``--engine spark``).

A job names an engine; ``engine(name, settings)`` gives it one. Both kinds offer the same small
surface, so one job definition runs on either:

* ``query(sql, params)``: one analytical query written in DuckDB's SQL over the analytics views
  (``candor.analytics.TABLES``), rows back. DuckDB runs it on the store it attaches read-only; Spark
  runs the same text transpiled by sqlglot, over the store's tables loaded into the session.
* ``splink_api()``: Splink's database API for this engine (identity resolution, identity/matching.py).
* ``close()``.

Spark is an optional extra (``pip install 'candor[spark]'``), imported only when asked for, and
runs under rules that keep plaintext off disk (see ``SparkEngine``). ``CANDOR_SPARK_MASTER`` names the
cluster (``local[2]`` by default) and ``CANDOR_SPARK_CONF`` adds Spark settings.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from candor.config import ConfigError, Settings

log = logging.getLogger("candor.engines")
ENGINES = ("duckdb", "spark")
Params = list[Any] | dict[str, Any] | None
SPARK_EXTRA = "pip install 'candor[spark]'"

# Spark settings Candor always sets and never lets CANDOR_SPARK_CONF change: they keep plaintext off
# disk (every shuffle file, spill and cached block is AES-encrypted with a key that lives in memory
# only for the application; PySpark then hands data to the JVM over a local socket, not a temp file)
# and leave no UI, event log or metastore behind.
ENFORCED = {
    "spark.io.encryption.enabled": "true",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.eventLog.enabled": "false",
    "spark.sql.catalogImplementation": "in-memory",
}


class EngineError(RuntimeError):
    """An engine cannot be used: the message says why and what to do (which extra, which setting)."""


def check_name(name: str) -> str:
    if name not in ENGINES:
        raise EngineError(f"unknown engine {name!r}: use one of {', '.join(ENGINES)}")
    return name


def parse_conf(text: str) -> dict[str, str]:
    """CANDOR_SPARK_CONF: ``key=value`` pairs separated by commas or new lines."""
    out: dict[str, str] = {}
    for part in text.replace("\n", ",").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.startswith("spark."):
            raise ConfigError(
                f"CANDOR_SPARK_CONF: {part.strip()!r} is not a spark.key=value pair "
                "(e.g. spark.driver.memory=4g,spark.executor.memory=8g)"
            )
        if key in ENFORCED and value.lower() != ENFORCED[key]:
            raise ConfigError(f"CANDOR_SPARK_CONF may not set {key}: Candor keeps it at {ENFORCED[key]}")
        out[key] = value
    return out


def _reachable(master: str, timeout: float = 5.0) -> None:
    """A cluster's master must answer on TCP before Spark is asked to join it (Spark itself retries
    for a minute and then fails with a stack trace)."""
    if master.startswith("local"):
        return
    targets: list[tuple[str, int]] = []
    if master.startswith("spark://"):
        for hostport in master[len("spark://") :].split(","):
            host, _, number = hostport.strip().rpartition(":")
            targets.append((host or hostport, int(number) if number.isdigit() else 7077))
    elif master.startswith("k8s://"):
        u = urlsplit(master[len("k8s://") :])
        if u.hostname:
            targets.append((u.hostname, u.port or (443 if u.scheme == "https" else 80)))
    for host, port in targets:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except OSError as exc:
            last = f"{host}:{port} ({type(exc).__name__})"
    if targets:
        raise EngineError(
            f"cannot reach the Spark master {last}: check CANDOR_SPARK_MASTER and that the cluster is up"
        )


@contextmanager
def quiet_sockets() -> Iterator[None]:
    """PySpark (with I/O encryption on) hands data to the JVM over a local socket it never closes: collect
    those sockets here, without the ResourceWarning each would raise later at a random place."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield
        finally:
            gc.collect()


def _private_dir() -> Path:
    """Spark's scratch space: in memory (/dev/shm) where the machine has 2 GB free there, else the temp dir.

    Whatever lands there is encrypted anyway (``spark.io.encryption.enabled``); the directory is private
    (0700) and removed when the process ends.
    """
    base = Path("/dev/shm")  # noqa: S108 - a private directory is made inside it (mkdtemp, 0700)
    roomy = base.is_dir() and os.access(base, os.W_OK) and shutil.disk_usage(base).free >= 2 * 2**30
    parent = base if roomy else Path(tempfile.gettempdir())  # a small /dev/shm (containers) would fill up
    path = Path(tempfile.mkdtemp(prefix="candor-spark-", dir=parent))
    os.chmod(path, 0o700)
    atexit.register(shutil.rmtree, path, True)
    return path


class SparkEngine:
    """A Spark session for this process, shared by every job (the JVM starts once, which takes seconds).

    Local mode (``local[N]``) runs Spark inside this machine. A cluster master (``spark://host:7077``,
    ``k8s://...``, ``yarn``) must be reachable. The session is configured so that plaintext personal
    data never reaches disk: see ``ENFORCED``; Splink persists its intermediate tables in memory
    (``break_lineage_method="persist"``), never as Parquet files.
    """

    name = "spark"
    _lock = threading.Lock()
    _session: Any = None
    _local_dir: Path | None = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.master = settings.spark_master or "local[2]"
        self.conf = parse_conf(settings.spark_conf)
        self._tables: set[str] = set()

    # -- the session ---------------------------------------------------------------------------
    @classmethod
    def _import(cls) -> Any:
        try:
            import pyspark  # noqa: F401
            from pyspark.sql import SparkSession
        except ImportError:
            raise EngineError(f"the Spark engine needs PySpark, which is not installed: {SPARK_EXTRA}") from None
        return SparkSession

    def session(self) -> Any:
        with SparkEngine._lock:
            if SparkEngine._session is not None:
                return SparkEngine._session
            spark_session = self._import()
            _reachable(self.master)
            from splink.backends.spark import similarity_jar_location

            if SparkEngine._local_dir is None:
                SparkEngine._local_dir = _private_dir()
            local = str(SparkEngine._local_dir)
            conf: dict[str, str] = {
                "spark.local.dir": local,
                "spark.sql.warehouse.dir": os.path.join(local, "warehouse"),
                "spark.driver.memory": "2g",
                "spark.sql.shuffle.partitions": "2" if self.master.startswith("local") else "200",
                "spark.sql.execution.arrow.pyspark.enabled": "true",
                "spark.sql.session.timeZone": "UTC",
                **self.conf,
                **ENFORCED,
            }
            jar = similarity_jar_location()
            conf["spark.jars"] = ",".join(j for j in (conf.get("spark.jars", ""), jar) if j)
            builder = spark_session.builder.master(self.master).appName("candor")
            for k, v in conf.items():
                builder = builder.config(k, v)
            try:
                session = builder.getOrCreate()
            except Exception as exc:  # noqa: BLE001 - Java/Py4J errors: say what to check
                text = str(exc)
                if "JAVA_GATEWAY_EXITED" in text or "JAVA_HOME" in text or "java" in text.lower().split():
                    raise EngineError(
                        "Spark could not start its JVM: it needs Java 17 or newer (set JAVA_HOME or put java on PATH)"
                    ) from None
                raise EngineError(
                    f"Spark did not start on {self.master} ({type(exc).__name__}): check CANDOR_SPARK_MASTER and "
                    "CANDOR_SPARK_CONF"
                ) from None
            session.sparkContext.setLogLevel("ERROR")
            for logger in ("py4j", "py4j.clientserver", "py4j.java_gateway"):
                logging.getLogger(logger).setLevel(logging.WARNING)
            # PySpark logs failed queries with their text (and so their values): never
            logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL + 1)
            SparkEngine._session = session
            return session

    @classmethod
    def stop(cls) -> None:
        """Stop the shared session (the next ``session()`` starts a new JVM application)."""
        with cls._lock:
            if cls._session is not None:
                cls._session.stop()
                cls._session = None

    def close(self) -> None:
        """Jobs share the session for the life of the process; drop this engine's views only."""
        if SparkEngine._session is not None:
            for name in self._tables:
                SparkEngine._session.catalog.dropTempView(name)
        self._tables.clear()

    # -- Splink --------------------------------------------------------------------------------
    def splink_api(self) -> Any:
        from splink import SparkAPI

        spark = self.session()
        partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
        return SparkAPI(
            spark_session=spark, break_lineage_method="persist", num_partitions_on_repartition=max(1, partitions)
        )

    def dataframe(self, arrow_table: Any) -> Any:
        with quiet_sockets():
            return self.session().createDataFrame(arrow_table)

    def view(self, name: str, arrow_table: Any) -> None:
        self.dataframe(arrow_table).createOrReplaceTempView(name)
        self._tables.add(name)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.session().sql(sql).collect()]

    # -- analytical queries --------------------------------------------------------------------
    def load_store_tables(self, store: Any, names: set[str]) -> None:
        """Copy the store's tables named (analytics views) into the session, once per engine."""
        import pyarrow as pa
        from sqlalchemy import select

        from candor.store.schema import metadata

        for name in sorted(names - self._tables):
            table = metadata.tables[name]
            batches: list[Any] = []
            schema = pa.schema([(c.name, _arrow_type(c)) for c in table.columns])
            with store.engine.connect() as conn:
                result = conn.execution_options(yield_per=50_000).execute(select(table))
                for part in result.partitions():
                    cols: list[list[Any]] = [[r[i] for r in part] for i in range(len(table.columns))]
                    batches.append(
                        pa.RecordBatch.from_arrays(
                            [pa.array(col, f.type) for col, f in zip(cols, schema, strict=True)], schema=schema
                        )
                    )
            self.view(name, pa.Table.from_batches(batches, schema=schema))

    def query(self, store: Any, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        """A DuckDB query (``?`` or ``$name`` parameters) run on Spark: transpiled by sqlglot, over the
        store's tables it names, with JSON paths in parameters rewritten to Spark's notation."""
        import sqlglot
        from sqlglot import exp

        from candor.analytics import TABLES

        tree = sqlglot.parse_one(sql, read="duckdb")
        used = {t.name for t in tree.find_all(exp.Table)} & set(TABLES)
        self.load_store_tables(store, used)
        for where in tree.find_all(exp.Where):
            # "FROM t WHERE (x)" would read as the table alias WHERE with a column list in Spark's SQL
            while isinstance(where.this, exp.Paren):
                where.set("this", where.this.this)
        text = tree.sql(dialect="spark")
        args: Any
        if isinstance(params, dict):
            args = {k: _spark_value(v) for k, v in params.items()}
        else:
            args = [_spark_value(v) for v in params or []]
        try:
            return [tuple(r) for r in self.session().sql(text, args=args).collect()]
        except Exception as exc:  # noqa: BLE001 - Spark's messages quote the query and its values: never shown
            cls = getattr(exc, "getCondition", lambda: None)() or type(exc).__name__
            raise EngineError(f"the query failed on Spark ({cls})") from None


_JSON_PATH = re.compile(r'^\$(\."(?:[^"\\]|\\.)*")+$')


def _spark_value(value: Any) -> Any:
    """DuckDB's quoted JSON path ``$."a"."b"`` is ``$['a']['b']`` for Spark's get_json_object."""
    if isinstance(value, str) and _JSON_PATH.match(value):
        keys = re.findall(r'\."((?:[^"\\]|\\.)*)"', value)
        return "$" + "".join("['" + k.replace("'", "\\'") + "']" for k in keys)
    return value


def _arrow_type(column: Any) -> Any:
    import pyarrow as pa
    from sqlalchemy import BigInteger, Boolean, Float, Integer, LargeBinary

    t = column.type
    if isinstance(t, Boolean):
        return pa.bool_()
    if isinstance(t, BigInteger | Integer):
        return pa.int64()
    if isinstance(t, Float):
        return pa.float64()
    if isinstance(t, LargeBinary):
        return pa.binary()
    return pa.string()


class DuckDBEngine:
    """DuckDB embedded: the store attached read-only (candor.analytics), in-memory work tables."""

    name = "duckdb"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def query(self, store: Any, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        from candor.analytics import Analytics, tables_named

        con = Analytics(store).connect(tables=tables_named(sql))
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()

    def splink_api(self) -> Any:
        raise EngineError("DuckDB matching opens its own in-memory connection (identity/matching.py)")

    def close(self) -> None:
        return None


def engine(name: str, settings: Settings) -> SparkEngine | DuckDBEngine:
    """The engine named (``duckdb`` or ``spark``); Spark is started on first use."""
    check_name(name)
    return SparkEngine(settings) if name == "spark" else DuckDBEngine(settings)
