"""recommendations: catalogue and item-to-item model

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 01:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalog_items",
        sa.Column("product_id", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("category", sa.String(length=100), nullable=False),
        sa.Column("department", sa.String(length=100), nullable=True),
        sa.Column("data_category", sa.String(length=40), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("product_id", name=op.f("pk_catalog_items")),
    )
    op.create_table(
        "rec_neighbors",
        sa.Column("item_id", sa.String(length=100), nullable=False),
        sa.Column("neighbor_id", sa.String(length=100), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("support", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("item_id", "neighbor_id", name=op.f("pk_rec_neighbors")),
    )
    op.create_table(
        "rec_popular",
        sa.Column("item_id", sa.String(length=100), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("buyers", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("item_id", name=op.f("pk_rec_popular")),
    )
    op.create_table(
        "rec_models",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("built_ms", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rec_models")),
    )


def downgrade() -> None:
    op.drop_table("rec_models")
    op.drop_table("rec_popular")
    op.drop_table("rec_neighbors")
    op.drop_table("catalog_items")
