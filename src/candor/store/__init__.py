"""The operational store: one schema on SQLite (embedded) and PostgreSQL (production)."""

from candor.store.engine import Store, now_ms

__all__ = ["Store", "now_ms"]
