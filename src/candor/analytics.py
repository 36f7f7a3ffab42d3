"""The analytics engine: DuckDB embedded, reading the analytics store and the operational store.

DuckDB attaches the store (SQLite or PostgreSQL) read-only through its scanner extension (shipped as
a wheel pinned to the DuckDB release, loaded from disk: nothing is downloaded) and exposes the tables
Candor's analytical queries use as views, so one SQL text runs on either store. The big one,
``events``, is read from the analytics store instead (Parquet files, lake.py), which is kept current
before each query. Heavy jobs can move to Spark later with the same definitions over the same files.
"""

from __future__ import annotations

import importlib
import pathlib
from collections.abc import Callable
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
        self, store: Store, threads: int = 2, lake_dir: Path | None = None, journal: Path | None = None
    ) -> None:
        self.store = store
        self.threads = threads
        # bring the analytics store up to date before each query (off: only the schedule refreshes it)
        self.refresh_before_query = True
        self.lake: Lake | None = None
        if lake_dir is not None:
            self.lake = Lake(store, lake_dir, self.attach, self.store_query, journal or lake_dir / "none", threads)

    def attach(self, con: duckdb.DuckDBPyConnection) -> Callable[[str], str]:
        """Attach the store as ``store``; returns how the store's own SQL names a table."""
        if self.store.is_sqlite:
            con.load_extension(_extension_path("duckdb_extension_sqlite_scanner"))
            path = str(make_url(self.store.url).database or "")
            con.execute(f"ATTACH '{_quote(path)}' AS store (TYPE sqlite, READ_ONLY)")
            return lambda table: table
        con.load_extension(_extension_path("duckdb_extension_postgres_scanner"))
        conninfo, schema = _libpq(self.store.url)
        con.execute(f"ATTACH '{_quote(conninfo)}' AS store (TYPE postgres, READ_ONLY, SCHEMA '{_quote(schema)}')")
        quoted = '"' + schema.replace('"', '""') + '"'
        return lambda table: f"{quoted}.{table}"

    def store_query(self, sql: str) -> str:
        """A DuckDB table expression that runs ``sql`` inside the store (its indexes apply there)."""
        fn = "sqlite_query" if self.store.is_sqlite else "postgres_query"
        return f"{fn}('store', '{_quote(sql)}')"

    def _prefix(self) -> str:
        if self.store.is_sqlite:
            return "store"
        _, schema = _libpq(self.store.url)
        return 'store."' + schema.replace('"', '""') + '"'

    def connect(self, *, fresh: bool = True) -> duckdb.DuckDBPyConnection:
        """A connection with a view per table of ``TABLES``. With the analytics store, ``events`` reads
        its Parquet files, brought up to date first unless ``fresh`` is False."""
        files: list[str] | None = None
        if self.lake is not None:
            if fresh and self.refresh_before_query:
                self.lake.refresh()
            files = self.lake.files()
        con = duckdb.connect(
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False, "threads": self.threads}
        )
        self.attach(con)
        prefix = self._prefix()
        for t in TABLES:
            if t == "events" and files is not None:
                con.execute(f"CREATE VIEW events AS {events_view(files)}")
            else:
                con.execute(f"CREATE VIEW {t} AS SELECT * FROM {prefix}.{t}")
        return con

    def fetch(self, sql: str, params: Any = None, *, setup: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
              fresh: bool = True) -> list[tuple[Any, ...]]:  # fmt: skip
        """Run one query; when an analytics file went away under it (a purge or compaction in another
        process), once more on the new files."""
        for attempt in (1, 2):
            con = self.connect(fresh=fresh and attempt == 1)
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


def events_view(files: list[str]) -> str:
    """The ``events`` view over analytics files (an empty relation of the same columns when none)."""
    if not files:
        cols = ", ".join(f"CAST(NULL AS {typ}) AS {name}" for name, typ, _ in COLUMNS)
        return f"SELECT {cols} WHERE FALSE"
    listed = ", ".join("'" + _quote(f) + "'" for f in files)
    return f"SELECT * FROM read_parquet([{listed}])"
