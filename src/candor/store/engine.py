"""Database engine, connection settings and migrations for both supported databases."""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from candor.config import Settings

log = logging.getLogger("candor.store")
MIGRATIONS = Path(__file__).parent / "migrations"


def now_ms() -> int:
    return int(time.time() * 1000)


def insert_sql(conn: Any, table: str, columns: Sequence[str], conflict: str | None = "") -> str:
    """``INSERT ... ON CONFLICT <conflict> DO NOTHING`` for ``exec_driver_sql`` with rows as plain tuples,
    in the connection's parameter style (qmark on SQLite, format on PostgreSQL). For hot bulk inserts,
    where SQLAlchemy's per-row parameter processing costs more than the insert itself. ``conflict=None``:
    a plain INSERT, for rows that must not exist yet (a duplicate is an error)."""
    marks = ", ".join(["?" if conn.dialect.paramstyle == "qmark" else "%s"] * len(columns))
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
    if conflict is None:
        return sql
    target = f" ({conflict})" if conflict else ""
    return f"{sql} ON CONFLICT{target} DO NOTHING"


class StoreUnavailable(RuntimeError):
    """The database cannot be reached or opened; the message says which and how to fix it."""


# Engines of this process. A forked child (import workers, identity/records.py) must never use a
# connection its parent opened: after a fork each pool forgets its connections without closing them
# (closing would end the parent's session), so a child that connects gets a connection of its own.
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)


class Store:
    """Owns the SQLAlchemy engine for one database URL (SQLite file or PostgreSQL)."""

    def __init__(self, settings: Settings, *, pool: bool = True) -> None:
        self.settings = settings
        self.url = settings.resolved_database_url
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            settings.ensure_data_dir()
            self.engine: Engine = create_engine(
                self.url,
                connect_args={"timeout": 30, "check_same_thread": False},
                poolclass=None if pool else NullPool,
            )
            sync = settings.sqlite_synchronous.upper()
            cache_kib = settings.sqlite_cache_mb * 1024

            @event.listens_for(self.engine, "connect")
            def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
                # Let SQLAlchemy manage transactions explicitly (BEGIN on first statement).
                dbapi_conn.isolation_level = None
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute(f"PRAGMA synchronous={sync}")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.execute(f"PRAGMA cache_size=-{cache_kib}")  # negative: KiB, not pages
                # Deleted content is overwritten with zeros: erased ciphertext and keys leave no trace.
                cur.execute("PRAGMA secure_delete=ON")
                cur.close()

            @event.listens_for(self.engine, "begin")
            def _sqlite_begin(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")

        else:
            sizing: dict[str, Any] = {"pool_size": 5, "max_overflow": 10} if pool else {"poolclass": NullPool}
            self.engine = create_engine(self.url, pool_pre_ping=True, **sizing)
        _ENGINES.add(self.engine)

    # -- dialect helpers -------------------------------------------------------------------
    def insert(self, table: Table) -> Any:
        """An INSERT for ``table`` in this database's dialect (so on_conflict_* is available)."""
        return (sqlite.insert if self.is_sqlite else postgresql.insert)(table)

    def insert_ignore(self, table: Table) -> Any:
        return self.insert(table).on_conflict_do_nothing()

    def write(self) -> Any:
        """A connection context for a write transaction (BEGIN IMMEDIATE on SQLite)."""
        conn = self.engine.connect()
        conn.info["write"] = True
        return _WriteTxn(conn)

    # -- migrations ------------------------------------------------------------------------
    def alembic_config(self) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        cfg.attributes["engine"] = self.engine
        return cfg

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(self.alembic_config()).get_current_head()

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        try:
            if self.current_revision() == self.head_revision():
                return
            command.upgrade(self.alembic_config(), "head")
        except OperationalError as exc:
            raise StoreUnavailable(describe_connection_error(self.url, exc)) from exc

    def checkpoint(self) -> None:
        """Fold the SQLite WAL back into the database file and truncate it (no-op on PostgreSQL)."""
        if self.is_sqlite:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            return False

    def dispose(self) -> None:
        self.engine.dispose()


class _WriteTxn:
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._txn: Any = None

    def __enter__(self) -> Any:
        try:
            self._txn = self.conn.begin()
        except BaseException:
            self.conn.info.pop("write", None)
            self.conn.close()
            raise
        return self.conn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self._txn.commit()
            else:
                self._txn.rollback()
        finally:
            # the flag lives on the pooled connection: clear it, or later reads would take the write lock
            self.conn.info.pop("write", None)
            self.conn.close()


def describe_connection_error(url: str, exc: Exception) -> str:
    """A message that names the database (without credentials) and what to check."""
    safe = url.split("@")[-1] if "@" in url else url
    return f"cannot open the database at {safe}: {str(exc.args[0] if exc.args else exc).splitlines()[0]}"
