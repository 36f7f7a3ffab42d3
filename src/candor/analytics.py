"""The analytics engine: DuckDB embedded, reading the operational store (SQLite or PostgreSQL).

DuckDB attaches the store read-only through its scanner extension (shipped as a wheel pinned to the
DuckDB release, loaded from disk: nothing is downloaded) and exposes the tables Candor's analytical
queries use as views, so one SQL text runs on either store. Heavy jobs can move to Spark later with
the same definitions.
"""

from __future__ import annotations

import importlib
import pathlib
from typing import Any

import duckdb
from sqlalchemy.engine import make_url

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
    def __init__(self, store: Store, threads: int = 2) -> None:
        self.store = store
        self.threads = threads

    def connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False, "threads": self.threads}
        )
        if self.store.is_sqlite:
            con.load_extension(_extension_path("duckdb_extension_sqlite_scanner"))
            path = str(make_url(self.store.url).database or "")
            con.execute(f"ATTACH '{_quote(path)}' AS store (TYPE sqlite, READ_ONLY)")
            prefix = "store"
        else:
            con.load_extension(_extension_path("duckdb_extension_postgres_scanner"))
            conninfo, schema = _libpq(self.store.url)
            con.execute(f"ATTACH '{_quote(conninfo)}' AS store (TYPE postgres, READ_ONLY, SCHEMA '{_quote(schema)}')")
            prefix = f'store."{schema}"'
        for t in TABLES:
            con.execute(f"CREATE VIEW {t} AS SELECT * FROM {prefix}.{t}")
        return con

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        con = self.connect()
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()
