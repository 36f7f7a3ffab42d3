"""The analytics engine: DuckDB embedded, reading the analytics store and the operational store.

The tables Candor's analytical queries use are views of one DuckDB connection, so one SQL text runs
on either store. The big one, ``events``, is read from the analytics store (Parquet files, lake.py),
which is kept current before each query. The others come from the operational store:

- **PostgreSQL**: attached read-only through DuckDB's scanner extension (shipped as a wheel pinned to
  the DuckDB release, loaded from disk: nothing is downloaded);
- **SQLite**: read through this process's own SQLite (SQLAlchemy), in one read transaction, and
  handed to DuckDB as Arrow tables. DuckDB is *never* given the SQLite file: its scanner carries a
  second copy of SQLite, and when that copy closes the file, POSIX drops every fcntl lock the process
  holds on it, the writers' included (SQLite's "multiple copies of SQLite in one process" hazard),
  which can corrupt the store under concurrent writes. Only the tables a query names are read.
  A test fails if a module of the package attaches SQLite (tests/test_sqlite_locks.py).

Heavy jobs can move to Spark later with the same definitions over the same files.
"""

from __future__ import annotations

import importlib
import pathlib
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy.engine import make_url

from candor.lake import COLUMNS, Lake
from candor.store import Store

TABLES = (
    "subjects",
    "identifiers",
    "consent_records",
    "suppressions",
    "notices",
    "events",
    "profile_subjects",
    "segment_members",
    "sends",
    "campaigns",
    "engagements",
)


def _extension_path(module: str) -> str:
    mod = importlib.import_module(module)
    found = sorted(pathlib.Path(mod.__file__ or "").parent.glob("extensions/*/*.duckdb_extension"))
    if not found:
        raise RuntimeError(f"the DuckDB extension in {module} is missing; reinstall candor")
    return str(found[-1])


def _quote(text: str) -> str:
    """Escape a value for a single-quoted SQL literal (ATTACH takes no bound parameters)."""
    return text.replace("'", "''")


def _libpq(url: str) -> tuple[str, str]:
    """A libpq connection string and the schema to read, from a SQLAlchemy PostgreSQL URL."""
    u = make_url(url)
    parts = {"host": u.host or "localhost", "port": str(u.port or 5432), "dbname": u.database or "", "user": u.username}
    if u.password:
        parts["password"] = u.password
    schema = "public"
    options = u.query.get("options")
    if isinstance(options, str) and "search_path=" in options:
        schema = options.split("search_path=", 1)[1].split()[0].split(",")[0]
    conninfo = " ".join(f"{k}={_libpq_value(v)}" for k, v in parts.items() if v)
    return conninfo, schema


def _libpq_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Analytics:
    """DuckDB connections with the store attached read-only and, with a ``lake``, the events read from
    the analytics store (Parquet, lake.py) instead of the store's events table."""

    def __init__(
        self,
        store: Store,
        threads: int = 2,
        lake_dir: Path | None = None,
        journal: Path | None = None,
        cache_bytes: int = 0,
    ) -> None:
        self.store = store
        self.threads = threads
        # Arrow copies of the SQLite store's tables, kept while unchanged (TableCache); 0: none
        self.cache = TableCache(cache_bytes) if cache_bytes > 0 and store.is_sqlite else None
        # bring the analytics store up to date before each query (off: only the schedule refreshes it)
        self.refresh_before_query = True
        self.lake: Lake | None = None
        if lake_dir is not None:
            self.lake = Lake(store, lake_dir, self.attach, self.store_query, journal or lake_dir / "none", threads)

    def attach(self, con: duckdb.DuckDBPyConnection) -> Callable[[str], str]:
        """Attach the PostgreSQL store as ``store``; returns how the store's own SQL names a table.
        A SQLite store is never attached (see the module's docstring): its tables are loaded instead."""
        if self.store.is_sqlite:
            raise RuntimeError("a SQLite store is read through SQLAlchemy, never attached to DuckDB")
        con.load_extension(_extension_path("duckdb_extension_postgres_scanner"))
        conninfo, schema = _libpq(self.store.url)
        con.execute(f"ATTACH '{_quote(conninfo)}' AS store (TYPE postgres, READ_ONLY, SCHEMA '{_quote(schema)}')")
        quoted = '"' + schema.replace('"', '""') + '"'
        return lambda table: f"{quoted}.{table}"

    def store_query(self, sql: str) -> str:
        """A DuckDB table expression that runs ``sql`` inside the PostgreSQL store (its indexes apply
        there). The analytics store reads SQLite through SQLAlchemy instead (lake.py)."""
        if self.store.is_sqlite:
            raise RuntimeError("a SQLite store is read through SQLAlchemy, never through DuckDB")
        return f"postgres_query('store', '{_quote(sql)}')"

    def _prefix(self) -> str:
        _, schema = _libpq(self.store.url)
        return 'store."' + schema.replace('"', '""') + '"'

    def connect(self, *, fresh: bool = True, tables: Iterable[str] | None = None) -> duckdb.DuckDBPyConnection:
        """A connection with a view per table of ``TABLES``. With the analytics store, ``events`` reads
        its Parquet files, brought up to date first unless ``fresh`` is False. ``tables``: the store
        tables the queries on it read (default: all); on SQLite only those are loaded."""
        files: list[str] | None = None
        if self.lake is not None:
            if fresh and self.refresh_before_query:
                self.lake.refresh()
            files = self.lake.files()
        con = duckdb.connect(
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False, "threads": self.threads}
        )
        try:
            wanted = set(TABLES) if tables is None else set(tables) & set(TABLES)
            from_store = [t for t in TABLES if t in wanted and not (t == "events" and files is not None)]
            if files is not None:
                con.execute(f"CREATE VIEW events AS {events_view(files)}")
            if self.store.is_sqlite:
                load_sqlite_tables(self.store, con, from_store, self.cache)
            else:
                self.attach(con)
                prefix = self._prefix()
                for t in from_store:
                    con.execute(f"CREATE VIEW {t} AS SELECT * FROM {prefix}.{t}")
        except BaseException:
            con.close()
            raise
        return con

    def fetch(self, sql: str, params: Any = None, *, setup: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
              fresh: bool = True, tables: Iterable[str] = ()) -> list[tuple[Any, ...]]:  # fmt: skip
        """Run one query; when an analytics file went away under it (a purge or compaction in another
        process), once more on the new files. The store tables read are those ``sql`` names, and
        ``tables`` (those a ``setup`` reads)."""
        needed = tables_named(sql) | set(tables)
        for attempt in (1, 2):
            con = self.connect(fresh=fresh and attempt == 1, tables=needed)
            try:
                if setup is not None:
                    setup(con)
                return con.execute(sql, params or []).fetchall()
            except duckdb.IOException:
                if attempt == 2 or self.lake is None:
                    raise
            finally:
                con.close()
        raise AssertionError("unreachable")

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.fetch(sql, params)


_TABLE_WORD = re.compile(r"\b(" + "|".join(TABLES) + r")\b")


def tables_named(sql: str) -> set[str]:
    """The tables of ``TABLES`` whose name appears in ``sql`` as a word (more is harmless: one more
    table read)."""
    return set(_TABLE_WORD.findall(sql))


def _duck_type(column: Any) -> tuple[str, Any]:
    """The DuckDB type of a store column and the Arrow type its raw SQLite values are handed over as
    (booleans come as 0/1 and are cast in the view)."""
    import pyarrow as pa
    from sqlalchemy import BigInteger, Boolean, Float, Integer, LargeBinary

    t = column.type
    if isinstance(t, Boolean):
        return "BOOLEAN", pa.int64()
    if isinstance(t, BigInteger | Integer):
        return "BIGINT", pa.int64()
    if isinstance(t, Float):
        return "DOUBLE", pa.float64()
    if isinstance(t, LargeBinary):
        return "BLOB", pa.binary()
    return "VARCHAR", pa.string()


def sqlite_batches(conn: Any, sql: str, size: int = 100_000) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``sql`` in batches, from the driver's own cursor on a SQLAlchemy connection (the
    process's SQLite, inside the connection's transaction): SQLAlchemy's row objects cost several
    times the read itself on tables of this size."""
    cur = conn.connection.driver_connection.cursor()
    try:
        cur.execute(sql)
        while True:
            batch = cur.fetchmany(size)
            if not batch:
                return
            yield batch
    finally:
        cur.close()


class TableCache:
    """Arrow copies of SQLite store tables, each kept while the table's version counter is unchanged.

    Migration 0015 gives every table of ``TABLES`` (events aside) triggers that bump ``markers``
    ``v:<table>`` on each insert, update and delete, in the writing transaction, whoever writes. The
    counter is read in the same read transaction as the rows, so a cached copy is exactly the rows of
    that version: an erasure, a restriction or a merge changes the counter and the next query reads
    the table afresh. A table without a counter is never cached. Least recently used copies are
    dropped above ``limit_bytes``."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._tables: dict[str, tuple[int, Any]] = {}  # name -> (version, pyarrow.Table), oldest first
        self._lock = threading.Lock()
        self.hits = 0
        self.loads = 0

    def get(self, name: str, version: int | None) -> Any:
        with self._lock:
            entry = self._tables.get(name)
            if entry is None or version is None or entry[0] != version:
                return None
            self._tables[name] = self._tables.pop(name)  # most recently used last
            self.hits += 1
            return entry[1]

    def put(self, name: str, version: int | None, table: Any) -> None:
        with self._lock:
            self.loads += 1
            self._tables.pop(name, None)
            if version is None or table.nbytes > self.limit_bytes:
                return
            self._tables[name] = (version, table)
            while sum(t.nbytes for _, t in self._tables.values()) > self.limit_bytes:
                self._tables.pop(next(iter(self._tables)))


def load_sqlite_tables(
    store: Store, con: duckdb.DuckDBPyConnection, names: Iterable[str], cache: TableCache | None = None
) -> None:
    """Views ``names`` on ``con`` holding the rows of those store tables, read through the process's
    own SQLite (SQLAlchemy) in one read transaction, so they are one consistent snapshot. With a
    ``cache``, a table whose version counter has not moved since it was last read is not read again."""
    import pyarrow as pa

    from candor.store.schema import metadata

    names = list(names)
    if not names:
        return
    with store.engine.connect() as conn, conn.begin():
        versions: dict[str, int] = {}
        if cache is not None:
            keys = ", ".join("'v:" + _quote(n) + "'" for n in names)
            for batch in sqlite_batches(conn, f"SELECT name, value FROM markers WHERE name IN ({keys})"):
                versions.update({k[2:]: int(v) for k, v in batch})
        for name in names:
            table = metadata.tables[name]
            types = [(c.name, *_duck_type(c)) for c in table.columns]
            arrow = cache.get(name, versions.get(name)) if cache is not None else None
            if arrow is None:
                cols = ", ".join('"' + c + '"' for c, _, _ in types)
                data: list[list[Any]] = [[] for _ in types]
                for batch in sqlite_batches(conn, f'SELECT {cols} FROM "{name}"'):
                    for i, col in enumerate(zip(*batch, strict=True)):
                        data[i].extend(col)
                arrow = pa.table({c: pa.array(v, type=at) for (c, _, at), v in zip(types, data, strict=True)})
                if cache is not None:
                    cache.put(name, versions.get(name), arrow)
            con.register(f"_store_{name}", arrow)
            select = ", ".join(f'CAST("{c}" AS {dt}) AS "{c}"' for c, dt, _ in types)
            con.execute(f"CREATE VIEW {name} AS SELECT {select} FROM _store_{name}")


def events_view(files: list[str]) -> str:
    """The ``events`` view over analytics files (an empty relation of the same columns when none)."""
    if not files:
        cols = ", ".join(f"CAST(NULL AS {typ}) AS {name}" for name, typ, _ in COLUMNS)
        return f"SELECT {cols} WHERE FALSE"
    listed = ", ".join("'" + _quote(f) + "'" for f in files)
    return f"SELECT * FROM read_parquet([{listed}])"
