"""loyalty programme: members, points ledger, value-exchange offers, benefits, job cursor

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "loyalty_members",
        sa.Column("subject_id", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("joined_ms", sa.BigInteger(), nullable=False),
        sa.Column("left_ms", sa.BigInteger(), nullable=True),
        sa.Column("notice_version", sa.Integer(), nullable=False),
        sa.Column("consent_seq", sa.BigInteger(), nullable=True),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("balance >= 0", name="ck_loyalty_members_balance"),
        sa.PrimaryKeyConstraint("subject_id", name=op.f("pk_loyalty_members")),
    )
    op.create_table(
        "loyalty_ledger",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("subject_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("ref", sa.String(length=250), nullable=False),
        sa.Column("detail", sa.String(length=200), nullable=True),
        sa.Column("amount", sa.Float(), nullable=True),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loyalty_ledger")),
        sa.UniqueConstraint("subject_id", "ref", name="uq_loyalty_ledger_ref"),
    )
    with op.batch_alter_table("loyalty_ledger", schema=None) as batch_op:
        batch_op.create_index("ix_loyalty_ledger_subject_ts", ["subject_id", "ts_ms"], unique=False)
        batch_op.create_index("ix_loyalty_ledger_ref", ["ref"], unique=False)
    op.create_table(
        "loyalty_offers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("ask", sa.String(length=500), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("category", sa.String(length=40), nullable=False),
        sa.Column("purposes", sa.Text(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("starts_ms", sa.BigInteger(), nullable=False),
        sa.Column("ends_ms", sa.BigInteger(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loyalty_offers")),
        sa.UniqueConstraint("name", name=op.f("uq_loyalty_offers_name")),
    )
    op.create_table(
        "loyalty_benefits",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("subject_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("detail", sa.String(length=200), nullable=True),
        sa.Column("amount", sa.Float(), nullable=True),
        sa.Column("ref", sa.String(length=250), nullable=True),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loyalty_benefits")),
        sa.UniqueConstraint("subject_id", "ref", name="uq_loyalty_benefits_ref"),
    )
    with op.batch_alter_table("loyalty_benefits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_loyalty_benefits_subject_id"), ["subject_id"], unique=False)
    op.create_table(
        "loyalty_jobs",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_loyalty_jobs")),
    )


def downgrade() -> None:
    op.drop_table("loyalty_jobs")
    with op.batch_alter_table("loyalty_benefits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_loyalty_benefits_subject_id"))
    op.drop_table("loyalty_benefits")
    op.drop_table("loyalty_offers")
    with op.batch_alter_table("loyalty_ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_loyalty_ledger_ref")
        batch_op.drop_index("ix_loyalty_ledger_subject_ts")
    op.drop_table("loyalty_ledger")
    op.drop_table("loyalty_members")
