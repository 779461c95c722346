"""Usage events.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "usage_events",
        sa.Column("id", ID, primary_key=True),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("customer", sa.String(255), nullable=False),
        sa.Column("meter", sa.String(255), nullable=False),
        sa.Column("occurred_at", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=True),
        sa.Column("unique_value", sa.String(255), nullable=True),
        sa.Column("properties", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_usage_events"),
        sa.UniqueConstraint("event_id", name="uq_usage_events_event_id"),
    )
    op.create_index(
        "ix_usage_events_aggregation",
        "usage_events",
        ["meter", "customer", "occurred_at", "value", "received_at", "unique_value"],
        postgresql_include=["id"],
    )


def downgrade() -> None:
    op.drop_index("ix_usage_events_aggregation", table_name="usage_events")
    op.drop_table("usage_events")
