"""data dictionary, source policies, privacy inbox, full IP addresses apart from events

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 19:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_dictionary",
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=12), nullable=False),
        sa.Column("path", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=40), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        sa.Column("note", sa.String(length=300), nullable=True),
        sa.Column("declared_by", sa.String(length=100), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("source_id", "scope", "path", name=op.f("pk_data_dictionary")),
    )
    op.create_table(
        "source_policies",
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("policy", sa.String(length=10), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("source_id", name=op.f("pk_source_policies")),
    )
    op.create_table(
        "privacy_findings",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=12), nullable=False),
        sa.Column("path", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=40), nullable=False),
        sa.Column("detector", sa.String(length=60), nullable=False),
        sa.Column("action", sa.String(length=12), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("first_seen_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=10), server_default="open", nullable=False),
        sa.Column("decided_by", sa.String(length=100), nullable=True),
        sa.Column("decided_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_findings")),
        sa.UniqueConstraint(
            "source_id", "scope", "path", "category", "detector", "action", name="uq_privacy_findings_key"
        ),
    )
    op.create_table(
        "event_ips",
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("subject_id", sa.String(length=32), nullable=False),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("source_id", "message_id", name=op.f("pk_event_ips")),
    )
    with op.batch_alter_table("event_ips", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_event_ips_received_ms"), ["received_ms"], unique=False)
        batch_op.create_index(batch_op.f("ix_event_ips_subject_id"), ["subject_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("event_ips", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_ips_subject_id"))
        batch_op.drop_index(batch_op.f("ix_event_ips_received_ms"))
    op.drop_table("event_ips")
    op.drop_table("privacy_findings")
    op.drop_table("source_policies")
    op.drop_table("data_dictionary")
