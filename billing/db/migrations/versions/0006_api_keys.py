"""The service: API keys, and the scheduler's job store.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("customer_id", ID, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_api_keys_customer_id_customers", ondelete="RESTRICT"
        ),
    )
    op.create_table(
        "scheduler_jobs",
        sa.Column("id", sa.Unicode(191), nullable=False),
        sa.Column("next_run_time", sa.Float(25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_scheduler_jobs"),
    )
    op.create_index("ix_scheduler_jobs_next_run_time", "scheduler_jobs", ["next_run_time"])


def downgrade() -> None:
    op.drop_index("ix_scheduler_jobs_next_run_time", table_name="scheduler_jobs")
    op.drop_table("scheduler_jobs")
    op.drop_table("api_keys")
