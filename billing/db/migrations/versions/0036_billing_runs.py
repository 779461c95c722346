"""The billing runs done (``billing.db.run_tables``): who started each, when, and what it did.

Revision ID: 0036
Revises: 0035
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0036"
down_revision = "0035"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "billing_runs",
        sa.Column("id", ID, nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("customer_external_id", sa.String(255), nullable=True),
        sa.Column("shard", sa.String(32), nullable=True),
        sa.Column("finalize", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("report", sa.Text(), nullable=True),
        sa.CheckConstraint("source IN ('cli', 'api', 'console', 'scheduler')", name="ck_billing_runs_source"),
        sa.CheckConstraint("outcome IN ('running', 'completed', 'failed')", name="ck_billing_runs_outcome"),
        sa.CheckConstraint(
            "(outcome = 'running') = (finished_at IS NULL)", name="ck_billing_runs_finished_iff_ended"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_billing_runs"),
    )
    op.create_index("ix_billing_runs_period", "billing_runs", ["period_start", "id"])


def downgrade() -> None:
    op.drop_index("ix_billing_runs_period", table_name="billing_runs")
    op.drop_table("billing_runs")
