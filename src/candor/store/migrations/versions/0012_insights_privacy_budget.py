"""insights privacy budget

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 19:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "privacy_budget",
        sa.Column("dataset", sa.String(length=100), nullable=False),
        sa.Column("window", sa.String(length=20), nullable=False),
        sa.Column("spent", sa.Float(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("dataset", "window", name=op.f("pk_privacy_budget")),
    )
    op.create_table(
        "privacy_budget_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("dataset", sa.String(length=100), nullable=False),
        sa.Column("window", sa.String(length=20), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=False),
        sa.Column("insight", sa.String(length=40), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_budget_entries")),
    )
    with op.batch_alter_table("privacy_budget_entries", schema=None) as batch_op:
        batch_op.create_index("ix_privacy_budget_entries_window", ["dataset", "window"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("privacy_budget_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_privacy_budget_entries_window")
    op.drop_table("privacy_budget_entries")
    op.drop_table("privacy_budget")
