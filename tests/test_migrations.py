"""One schema on both databases: migrations reach exactly the declared metadata."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from candor.config import Settings
from candor.store import Store
from candor.store.schema import metadata


def test_migrations_match_schema_and_are_idempotent(settings: Settings) -> None:
    store = Store(settings)
    try:
        store.upgrade()
        store.upgrade()
        assert store.current_revision() == store.head_revision()
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
    finally:
        store.dispose()


def test_sqlite_runs_in_wal_with_full_sync(tmp_path: object) -> None:
    from pathlib import Path

    store = Store(Settings.from_env(env={}, data_dir=Path(str(tmp_path))))
    try:
        store.upgrade()
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -64 * 1024  # 64 MB, in KiB
    finally:
        store.dispose()
    store = Store(Settings.from_env(env={"CANDOR_SQLITE_CACHE_MB": "8"}, data_dir=Path(str(tmp_path))))
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -8 * 1024
    finally:
        store.dispose()


def test_a_read_after_a_write_does_not_take_the_write_lock(tmp_path: object) -> None:
    """A pooled connection used for a write must not make later reads BEGIN IMMEDIATE: a read inside
    another thread's write transaction would then wait for a lock that thread holds."""
    import threading
    from pathlib import Path

    from sqlalchemy import text

    store = Store(Settings.from_env(env={}, data_dir=Path(str(tmp_path))))
    try:
        store.upgrade()
        for _ in range(3):
            with store.write() as conn:
                conn.execute(text("SELECT 1"))
        done = threading.Event()
        with store.write() as conn:  # this thread holds the write lock...

            def read() -> None:
                with store.engine.connect() as c:
                    c.execute(text("SELECT count(*) FROM sources")).scalar()
                done.set()

            t = threading.Thread(target=read)
            t.start()
            assert done.wait(5), "a plain read waited for the write lock"
            t.join()
    finally:
        store.dispose()
