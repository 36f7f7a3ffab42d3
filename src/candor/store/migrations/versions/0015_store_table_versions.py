"""table versions for the analytics engine's cache of SQLite store tables

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 05:30:00.000000

On SQLite, every insert, update or delete in a table the analytical queries read bumps a counter in
``markers`` (``v:<table>``), in the same transaction, whichever process or tool writes. The analytics
engine keeps its Arrow copy of a table only while that counter is unchanged (candor.analytics). On
PostgreSQL nothing is added: DuckDB reads those tables in place there.
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# candor.analytics.TABLES without events (the analytics store reads those from Parquet), as of this revision
TABLES = (
    "subjects",
    "identifiers",
    "consent_records",
    "suppressions",
    "notices",
    "profile_subjects",
    "segment_members",
    "sends",
    "campaigns",
    "engagements",
)
ACTIONS = {"i": "INSERT", "u": "UPDATE", "d": "DELETE"}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        op.execute(f"INSERT OR IGNORE INTO markers (name, value) VALUES ('v:{table}', 0)")
        for suffix, action in ACTIONS.items():
            op.execute(
                f"CREATE TRIGGER IF NOT EXISTS candor_version_{table}_{suffix} AFTER {action} ON {table} "
                f"BEGIN INSERT INTO markers (name, value) VALUES ('v:{table}', 1) "
                f"ON CONFLICT (name) DO UPDATE SET value = value + 1; END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        for suffix in ACTIONS:
            op.execute(f"DROP TRIGGER IF EXISTS candor_version_{table}_{suffix}")
        op.execute(f"DELETE FROM markers WHERE name = 'v:{table}'")
