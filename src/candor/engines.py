"""Where the heavy jobs run: DuckDB embedded (the default) or Apache Spark (``--engine spark``).

A job names an engine; ``engine(name, settings)`` gives it one. Both kinds offer the same small
surface, so one job definition runs on either:

* ``query(sql, params)``: one analytical query written in DuckDB's SQL over the analytics views
  (``candor.analytics.TABLES``), rows back. DuckDB runs it on the store it attaches read-only; Spark
  runs the same text transpiled by sqlglot, over the store's tables loaded into the session.
* ``workspace(analytics)``: a ``Workspace`` over the analytics lake (the ``events`` view reads the live
  generation's Parquet files, brought up to date first) and the store's other analytics views
  (``candor.analytics.TABLES``). Segments, insights and the recommendation rebuilds run their SQL
  there: ``execute(sql, params)`` (rows: ``fetchall``/``fetchone``), ``arrow(sql, params)`` (a pyarrow
  Table), ``view(name, sql, params)`` (a named intermediate result later SQL can read),
  ``register(name, arrow_table)`` (rows from Python), ``close()``. SQL is written once, in DuckDB's
  dialect with ``$name`` or ``?`` parameters; ``to_spark`` is the one place that turns it into Spark SQL.
* ``purge_parquet(path, subjects, out)``: write a Parquet file's rows without those subjects (the
  erasure purge of the lake, lake.py).
* ``splink_api()``: Splink's database API for this engine (identity resolution, identity/matching.py).
* ``close()``.

Spark is an optional extra (``pip install 'candor[spark]'``), imported only when asked for, and
runs under rules that keep plaintext off disk (see ``SparkEngine``). ``CANDOR_SPARK_MASTER`` names the
cluster (``local[2]`` by default) and ``CANDOR_SPARK_CONF`` adds Spark settings.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
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
            if os.environ.get("SPARK_REMOTE"):
                raise EngineError(
                    "SPARK_REMOTE is set (Spark Connect): Candor's Spark jobs need a classic Spark session "
                    "(Splink's Scala functions, files written by the driver); unset SPARK_REMOTE and name the "
                    "cluster with CANDOR_SPARK_MASTER (docs/operations.md)"
                )
            spark_session = self._import()
            # under spark-submit (the JVM started us) the master and settings are spark-submit's, unless
            # CANDOR_SPARK_MASTER names one
            submitted = "PYSPARK_GATEWAY_PORT" in os.environ and "CANDOR_SPARK_MASTER" not in os.environ
            if not submitted:
                _reachable(self.master)
            from splink.backends.spark import similarity_jar_location

            if SparkEngine._local_dir is None:
                SparkEngine._local_dir = _private_dir()
            local = str(SparkEngine._local_dir)
            conf: dict[str, str] = {
                "spark.local.dir": local,
                "spark.sql.warehouse.dir": os.path.join(local, "warehouse"),
                "spark.sql.execution.arrow.pyspark.enabled": "true",
                "spark.sql.session.timeZone": "UTC",
            }
            if not submitted:
                conf["spark.driver.memory"] = "2g"
                conf["spark.sql.shuffle.partitions"] = "2" if self.master.startswith("local") else "200"
            conf.update({**self.conf, **ENFORCED})
            jar = similarity_jar_location()
            conf["spark.jars"] = ",".join(j for j in (conf.get("spark.jars", ""), jar) if j)
            builder = spark_session.builder.appName("candor")
            if not submitted:
                builder = builder.master(self.master)
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
        """A DuckDB query (``?`` or ``$name`` parameters) run on Spark over the store's own tables
        (``events`` included: no analytics lake). Jobs over the lake use ``workspace``."""
        text, used = to_spark(sql)
        self.load_store_tables(store, set(used))
        return _spark_rows(self.session(), text, params)

    def workspace(self, analytics: Any, *, fresh: bool = True, tables: Iterable[str] | None = None) -> SparkWorkspace:
        """A workspace over the analytics lake (``events``: the live generation's Parquet files) and the
        store's other analytics tables, read when a statement first names them (so ``tables`` is not
        needed here)."""
        return SparkWorkspace(self, analytics, fresh=fresh)

    def purge_parquet(self, path: Path, subjects: list[str], out: Path) -> tuple[int, int, int, int]:
        """Write the rows of the Parquet file ``path`` whose ``subject_id`` is not in ``subjects`` to ``out``
        (one file, sorted by id, zstd), through Spark. Returns (rows removed, rows kept, min id, max id);
        nothing is written when no row of theirs is in the file or none remains."""
        from pyspark.sql import functions as F

        spark = self.session()
        with quiet_sockets():
            gone = F.broadcast(spark.createDataFrame([(s,) for s in subjects], "subject_id string"))
            df = spark.read.parquet(str(path))
            removed = df.join(gone, "subject_id", "left_semi").count()
            if not removed:
                return 0, 0, 0, 0
            kept = df.join(gone, "subject_id", "left_anti").select(*df.columns)
            stats = kept.agg(F.count(F.lit(1)), F.min("id"), F.max("id")).first()
            n = int(stats[0]) if stats is not None else 0
            if n:
                scratch = out.parent / f"_tmp-spark-{os.urandom(6).hex()}"
                try:
                    kept.repartition(1).sortWithinPartitions("id").write.option("compression", "zstd").parquet(
                        str(scratch)
                    )
                    written = sorted(scratch.glob("part-*.parquet"))
                    if len(written) != 1:
                        raise EngineError(f"Spark wrote {len(written)} files for one analytics file; expected one")
                    os.replace(written[0], out)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
            return int(removed), n, int(stats[1] or 0) if n else 0, int(stats[2] or 0) if n else 0


def _spark_args(params: Params) -> Any:
    if isinstance(params, dict):
        return {k: _spark_value(v) for k, v in params.items()}
    return [_spark_value(v) for v in params or []]


def _spark_df(spark: Any, text: str, params: Params) -> Any:
    try:
        return spark.sql(text, args=_spark_args(params))
    except Exception as exc:  # noqa: BLE001 - Spark's messages quote the query and its values: never shown
        raise _spark_error(exc) from None


def _spark_error(exc: BaseException) -> EngineError:
    cls = getattr(exc, "getCondition", lambda: None)() or type(exc).__name__
    log.debug("spark query failed: %s", cls)
    return EngineError(f"the query failed on Spark ({cls})")


def _spark_rows(spark: Any, text: str, params: Params) -> list[tuple[Any, ...]]:
    try:
        return [tuple(r) for r in spark.sql(text, args=_spark_args(params)).collect()]
    except Exception as exc:  # noqa: BLE001 - Spark's messages quote the query and its values: never shown
        raise _spark_error(exc) from None


@functools.lru_cache(maxsize=512)
def to_spark(sql: str) -> tuple[str, frozenset[str]]:
    """A statement in DuckDB's SQL as Spark SQL, and the analytics tables it names: the one place where
    the two dialects meet. sqlglot translates functions and ``$name`` parameters; on top of it:

    * ``main.t`` (DuckDB's schema of the attached views) is ``t`` (a Spark temporary view);
    * ``WHERE (x)`` loses its parentheses (``FROM t WHERE (x)`` would read as an alias with columns);
    * decimal literals (``3600000.0``) are doubles, as DuckDB computes with them (Spark would compute
      in DECIMAL and hand back ``Decimal`` values).
    """
    import sqlglot
    from sqlglot import exp

    from candor.analytics import TABLES

    tree = sqlglot.parse_one(sql, read="duckdb")
    for table in tree.find_all(exp.Table):
        if table.text("db") == "main" and not table.text("catalog"):
            table.set("db", None)
    used = frozenset({t.name for t in tree.find_all(exp.Table) if not t.text("db")} & set(TABLES))
    for where in tree.find_all(exp.Where):
        while isinstance(where.this, exp.Paren):
            where.set("this", where.this.this)
    for lit in list(tree.find_all(exp.Literal)):
        if lit.is_number and any(c in lit.this for c in ".eE"):
            lit.replace(exp.cast(lit.copy(), "double"))
    return tree.sql(dialect="spark", unsupported_level=sqlglot.ErrorLevel.RAISE), used


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

    def workspace(self, analytics: Any, *, fresh: bool = True, tables: Iterable[str] | None = None) -> DuckDBWorkspace:
        return DuckDBWorkspace(analytics, fresh=fresh, tables=tables)

    def splink_api(self) -> Any:
        raise EngineError("DuckDB matching opens its own in-memory connection (identity/matching.py)")

    def close(self) -> None:
        return None


# -- workspaces: where segments, insights and recommendation rebuilds run their SQL -----------------
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
# the store tables the consent decision reads (consent/audience.py)
READS_FOR_CONSENT = ("subjects", "consent_records", "notices", "identifiers", "suppressions")


class Result(Protocol):
    def fetchall(self) -> list[Any]: ...

    def fetchone(self) -> Any: ...


class Workspace(Protocol):
    """What a job over the analytics lake gets from either engine (see the module's docstring)."""

    engine: str

    def execute(self, sql: str, params: Params = None) -> Result: ...

    def arrow(self, sql: str, params: Params = None) -> Any: ...

    def view(self, name: str, sql: str, params: Params = None) -> None: ...

    def register(self, name: str, table: Any) -> None: ...

    def store_duckdb(self) -> contextlib.AbstractContextManager[Any]: ...

    def close(self) -> None: ...


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a view name: {name!r}")
    return name


class DuckDBWorkspace:
    """A DuckDB connection from ``Analytics.connect``: ``events`` reads the lake's Parquet files."""

    engine = "duckdb"

    def __init__(self, analytics: Any, *, fresh: bool = True, tables: Iterable[str] | None = None) -> None:
        self.analytics = analytics
        # tables: the store tables the statements read (on SQLite only those are loaded; default all)
        self.con = analytics.connect(fresh=fresh, tables=tables)

    def execute(self, sql: str, params: Params = None) -> Any:
        return self.con.execute(sql, params or [])

    def arrow(self, sql: str, params: Params = None) -> Any:
        return self.con.execute(sql, params or []).to_arrow_table()

    def view(self, name: str, sql: str, params: Params = None) -> None:
        # DuckDB's views take no bound parameters: with parameters, the result is kept as a table
        kind = "TABLE" if params else "VIEW"
        self.con.execute(f"CREATE OR REPLACE TEMP {kind} {_checked(name)} AS {sql}", params or [])

    def register(self, name: str, table: Any) -> None:
        self.con.register("_candor_arrow_in", table)
        try:
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {_checked(name)} AS SELECT * FROM _candor_arrow_in")
        finally:
            self.con.unregister("_candor_arrow_in")

    @contextmanager
    def store_duckdb(self) -> Iterator[Any]:
        yield self.con

    def close(self) -> None:
        self.con.close()


class _Rows:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None


class SparkWorkspace:
    """Temporary views in the shared Spark session: ``events`` over the lake's live Parquet files (read
    by Spark itself, so on a cluster the executors read them), the store's other analytics tables
    copied in when a statement first names them. The statements are DuckDB's text through ``to_spark``.
    One workspace at a time per process (the views are the session's)."""

    engine = "spark"

    def __init__(self, engine: SparkEngine, analytics: Any, *, fresh: bool = True) -> None:
        self.spark_engine = engine
        self.analytics = analytics
        self.spark = engine.session()
        self._quiet = quiet_sockets()
        self._quiet.__enter__()
        self._views: set[str] = set()
        self._loaded: set[str] = set()
        lake = analytics.lake
        if lake is None:  # no analytics lake: the store's own events table
            return
        if fresh and analytics.refresh_before_query:
            lake.refresh()
        files = lake.files()
        from candor.lake import COLUMNS

        if files:
            events = self.spark.read.parquet(*files)
        else:
            types = {"BIGINT": "bigint", "INTEGER": "int", "VARCHAR": "string", "BOOLEAN": "boolean"}
            types["DOUBLE"] = "double"
            events = self.spark.createDataFrame([], ", ".join(f"{n} {types[t]}" for n, t, _ in COLUMNS))
        events.createOrReplaceTempView("events")
        self._views.add("events")
        self._loaded.add("events")

    def _prepare(self, sql: str) -> str:
        text, used = to_spark(sql)
        missing = set(used) - self._loaded
        if missing:
            self.spark_engine._tables -= missing  # copied again: a workspace sees the store as it is now
            self.spark_engine.load_store_tables(self.analytics.store, missing)
            self._loaded |= missing
            self._views |= missing
        return text

    def execute(self, sql: str, params: Params = None) -> _Rows:
        return _Rows(_spark_rows(self.spark, self._prepare(sql), params))

    def arrow(self, sql: str, params: Params = None) -> Any:
        df = _spark_df(self.spark, self._prepare(sql), params)
        try:
            return df.toArrow()
        except Exception as exc:  # noqa: BLE001 - Spark's messages quote the query and its values: never shown
            raise _spark_error(exc) from None

    def view(self, name: str, sql: str, params: Params = None) -> None:
        df = _spark_df(self.spark, self._prepare(sql), params)
        df.createOrReplaceTempView(_checked(name))
        self._views.add(name)
        self._loaded.add(name)

    def register(self, name: str, table: Any) -> None:
        self.spark.createDataFrame(table).createOrReplaceTempView(_checked(name))
        self._views.add(name)
        self._loaded.add(name)

    @contextmanager
    def store_duckdb(self) -> Iterator[Any]:
        """DuckDB over the store (not the lake), for the parts that stay on DuckDB: the consent
        decision (consent/audience.py) reads the ledger, which is small, with DuckDB-only SQL."""
        from candor.consent.audience import PROFILE_TABLES

        con = self.analytics.connect(fresh=False, tables=READS_FOR_CONSENT + PROFILE_TABLES)
        try:
            yield con
        finally:
            con.close()

    def close(self) -> None:
        for name in self._views:
            self.spark.catalog.dropTempView(name)
        self.spark_engine._tables -= self._views
        self._views.clear()
        self._quiet.__exit__(None, None, None)


def engine(name: str, settings: Settings) -> SparkEngine | DuckDBEngine:
    """The engine named (``duckdb`` or ``spark``); Spark is started on first use."""
    check_name(name)
    return SparkEngine(settings) if name == "spark" else DuckDBEngine(settings)
