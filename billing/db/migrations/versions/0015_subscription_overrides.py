"""Negotiated prices: each version of a subscription's overrides of its plan (``billing.db.override_tables``).

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscription_overrides",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("subscription_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name="fk_subscription_overrides_subscription_id_subscriptions",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_subscription_overrides"),
    )
    op.create_index(
        "ix_subscription_overrides_subscription", "subscription_overrides", ["subscription_id", "effective_from"]
    )


def downgrade() -> None:
    op.drop_index("ix_subscription_overrides_subscription", table_name="subscription_overrides")
    op.drop_table("subscription_overrides")
