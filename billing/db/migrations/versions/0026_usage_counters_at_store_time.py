"""Usage counters kept at store time: each customer's events of a meter in each calendar month of its timezone
(count, sum and largest value), added to in the transaction that stores the events
(``billing.db.counters``). The counters of migration 0019 (written behind the request path by the usage
reaction, over subscription windows) are replaced: the table is made again and filled from the stored events.

Revision ID: 0026
Revises: 0031
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dbkit.types import ExactDecimal

revision = "0026"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("usage_counters")
    op.create_table(
        "usage_counters",
        sa.Column("customer_external_id", sa.String(255), nullable=False),
        sa.Column("meter", sa.String(255), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("window_end", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=True),
        sa.Column("largest", sa.BigInteger(), nullable=True),
        sa.Column("received_through", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "customer_external_id", "meter", "window_start", "window_end", name="pk_usage_counters"
        ),
        sqlite_with_rowid=False,  # the rows in key order: an upsert touches one B-tree, not two
    )
    from billing.db.counters import rebuild  # the same recount as ``billing db check``

    rebuild(op.get_bind())


def downgrade() -> None:
    op.drop_table("usage_counters")
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
