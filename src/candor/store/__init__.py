"""The operational store: one schema on SQLite (embedded) and PostgreSQL (production)."""

from candor.store.engine import Store, insert_sql, now_ms

__all__ = ["Store", "insert_sql", "now_ms"]
