"""Customers and subscriptions.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dbkit.types import ExactDecimal

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("id", ID, primary_key=True),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("locale", sa.String(35), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("webhook_url", sa.String(2048), nullable=True),
        sa.Column("tax_rate", ExactDecimal(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_customers"),
        sa.UniqueConstraint("external_id", name="uq_customers_external_id"),
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", ID, primary_key=True),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("plan_code", sa.String(100), nullable=False),
        sa.Column("plan_version", sa.Integer(), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cancel_reason", sa.String(16), nullable=True),
        sa.Column("previous_subscription_id", ID, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_subscriptions"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_subscriptions_customer_id_customers", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["previous_subscription_id"], ["subscriptions.id"],
            name="fk_subscriptions_previous_subscription_id_subscriptions",
        ),
        sa.CheckConstraint("end_date IS NULL OR end_date >= start_date", name="ck_subscriptions_end_after_start"),
        sa.CheckConstraint("status IN ('active', 'cancelled')", name="ck_subscriptions_status"),
        sa.CheckConstraint(
            "cancel_reason IS NULL OR cancel_reason IN ('voluntary', 'involuntary')", name="ck_subscriptions_reason"
        ),
    )
    op.create_index("ix_subscriptions_customer", "subscriptions", ["customer_id", "start_date"])


def downgrade() -> None:
    op.drop_index("ix_subscriptions_customer", table_name="subscriptions")
    op.drop_table("subscriptions")
    op.drop_table("customers")
