"""destinations deliveries destination_recipients engagements

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 19:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "destinations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("purpose", sa.String(length=40), nullable=True),
        sa.Column("contact", sa.String(length=10), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("disabled_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_destinations")),
        sa.UniqueConstraint("name", name=op.f("uq_destinations_name")),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("destination_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("subject_id", sa.String(length=32), nullable=True),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_destination_state", ["destination_id", "state"], unique=False)
        batch_op.create_index(batch_op.f("ix_deliveries_subject_id"), ["subject_id"], unique=False)
    op.create_table(
        "destination_recipients",
        sa.Column("destination_id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.String(length=32), nullable=False),
        sa.Column("ref", sa.String(length=64), nullable=False),
        sa.Column("first_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("destination_id", "subject_id", name=op.f("pk_destination_recipients")),
    )
    with op.batch_alter_table("destination_recipients", schema=None) as batch_op:
        batch_op.create_index("ix_destination_recipients_subject", ["subject_id"], unique=False)
    op.create_table(
        "engagements",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("detail", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engagements")),
    )
    with op.batch_alter_table("engagements", schema=None) as batch_op:
        batch_op.create_index("ix_engagements_campaign_kind", ["campaign_id", "kind"], unique=False)
        batch_op.create_index("ix_engagements_subject_ts", ["subject_id", "ts_ms"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("engagements", schema=None) as batch_op:
        batch_op.drop_index("ix_engagements_subject_ts")
        batch_op.drop_index("ix_engagements_campaign_kind")
    op.drop_table("engagements")
    with op.batch_alter_table("destination_recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_destination_recipients_subject")
    op.drop_table("destination_recipients")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_subject_id"))
        batch_op.drop_index("ix_deliveries_destination_state")
    op.drop_table("deliveries")
    op.drop_table("destinations")
