"""Stripe: customer mapping, invoice sync state, processed webhook events, dunning.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stripe_customers",
        sa.Column("customer_external_id", sa.String(255), nullable=False),
        sa.Column("stripe_customer_id", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_external_id", name="pk_stripe_customers"),
        sa.UniqueConstraint("stripe_customer_id", name="uq_stripe_customers_stripe_customer_id"),
    )
    op.create_table(
        "stripe_invoice_syncs",
        sa.Column("invoice_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("invoice_number", sa.String(64), nullable=False),
        sa.Column("customer_external_id", sa.String(255), nullable=False),
        sa.Column("step", sa.String(16), nullable=False),
        sa.Column("stripe_customer_id", sa.String(255), nullable=True),
        sa.Column("stripe_invoice_id", sa.String(255), nullable=True),
        sa.Column("stripe_item_ids", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("invoice_id", name="pk_stripe_invoice_syncs"),
        sa.UniqueConstraint("invoice_number", name="uq_stripe_invoice_syncs_invoice_number"),
        sa.UniqueConstraint("stripe_invoice_id", name="uq_stripe_invoice_syncs_stripe_invoice_id"),
        sa.CheckConstraint(
            "step IN ('pending', 'customer', 'invoice', 'items', 'finalized')", name="ck_stripe_invoice_syncs_step"
        ),
    )
    op.create_table(
        "stripe_webhook_events",
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("stripe_created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_stripe_webhook_events"),
    )
    op.create_table(
        "dunning",
        sa.Column("invoice_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("invoice_number", sa.String(64), nullable=False),
        sa.Column("stripe_invoice_id", sa.String(255), nullable=True),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("final_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("invoice_id", name="pk_dunning"),
    )


def downgrade() -> None:
    op.drop_table("dunning")
    op.drop_table("stripe_webhook_events")
    op.drop_table("stripe_invoice_syncs")
    op.drop_table("stripe_customers")
