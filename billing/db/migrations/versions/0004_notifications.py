"""Thresholds and notifications: customer limit overrides, threshold evaluations, the notification outbox and
its delivery attempts.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dbkit.types import ExactDecimal

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "customer_limits",
        sa.Column("customer_external_id", sa.String(255), nullable=False),
        sa.Column("threshold_key", sa.String(120), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("meter", sa.String(100), nullable=True),
        sa.Column("limit_value", ExactDecimal(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_external_id", "threshold_key", name="pk_customer_limits"),
        sa.ForeignKeyConstraint(
            ["customer_external_id"],
            ["customers.external_id"],
            name="fk_customer_limits_customer_external_id_customers",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("kind IN ('usage', 'spend')", name="ck_customer_limits_kind"),
    )
    op.create_table(
        "threshold_evaluations",
        sa.Column("subscription_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("period", sa.String(32), nullable=False),
        sa.Column("threshold_key", sa.String(120), nullable=False),
        sa.Column("customer_external_id", sa.String(255), nullable=False),
        sa.Column("value", ExactDecimal(), nullable=False),
        sa.Column("limit_value", ExactDecimal(), nullable=False),
        sa.Column("highest_level", sa.Integer(), nullable=True),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", "period", "threshold_key", name="pk_threshold_evaluations"),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name="fk_threshold_evaluations_subscription_id_subscriptions",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("customer_external_id", sa.String(255), nullable=False),
        sa.Column("subscription_id", sa.BigInteger(), nullable=True),
        sa.Column("invoice_id", sa.BigInteger(), nullable=True),
        sa.Column("period", sa.String(32), nullable=False),
        sa.Column("threshold_key", sa.String(120), nullable=True),
        sa.Column("level", sa.Integer(), nullable=True),
        sa.Column("meter", sa.String(100), nullable=True),
        sa.Column("value", ExactDecimal(), nullable=True),
        sa.Column("limit_value", ExactDecimal(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notifications"),
        sa.UniqueConstraint(
            "subscription_id",
            "period",
            "threshold_key",
            "level",
            name="uq_notifications_subscription_id_period_threshold_key_level",
        ),
        sa.UniqueConstraint("invoice_id", "kind", name="uq_notifications_invoice_id_kind"),
        sa.CheckConstraint(
            "kind IN ('usage.threshold_crossed', 'spend.threshold_crossed', 'invoice.finalized')",
            name="ck_notifications_kind",
        ),
        sa.CheckConstraint("status IN ('pending', 'sent', 'dead')", name="ck_notifications_status"),
    )
    op.create_index("ix_notifications_due", "notifications", ["status", "next_attempt_at"])
    op.create_index("ix_notifications_customer", "notifications", ["customer_external_id", "created_at"])
    op.create_table(
        "notification_attempts",
        sa.Column("id", ID, primary_key=True),
        sa.Column("notification_id", sa.String(36), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("target", sa.String(2048), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notification_attempts"),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name="fk_notification_attempts_notification_id_notifications",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("channel IN ('webhook', 'email')", name="ck_notification_attempts_channel"),
        sa.CheckConstraint("outcome IN ('ok', 'error')", name="ck_notification_attempts_outcome"),
    )
    op.create_index(
        "ix_notification_attempts_notification", "notification_attempts", ["notification_id", "attempted_at"]
    )


def downgrade() -> None:
    op.drop_table("notification_attempts")
    op.drop_table("notifications")
    op.drop_table("threshold_evaluations")
    op.drop_table("customer_limits")
