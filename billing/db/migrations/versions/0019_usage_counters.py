"""Usage counters: each customer's usage of a meter over its current window, kept by the usage reaction so that
entitlements are answered without reading the window's events (``billing.db.entitlement_tables``). Empty at
first: a window without a counter is aggregated from its events.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dbkit.types import ExactDecimal

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_counters",
        sa.Column("customer_external_id", sa.String(255), nullable=False),
        sa.Column("meter", sa.String(255), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("window_end", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("quantity", ExactDecimal(), nullable=False),
        sa.Column("counted_through", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "customer_external_id", "meter", "window_start", "window_end", name="pk_usage_counters"
        ),
    )


def downgrade() -> None:
    op.drop_table("usage_counters")
