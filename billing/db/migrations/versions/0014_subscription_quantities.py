"""Subscription quantities: the seats of a subscription on a plan priced per seat, each from its effective date
(``billing.db.tables.SubscriptionQuantityRow``). A subscription without a row starts with 1, so every existing
subscription keeps its price.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "subscription_quantities",
        sa.Column("subscription_id", ID, nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", "effective_from", name="pk_subscription_quantities"),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name="fk_subscription_quantities_subscription_id_subscriptions",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("quantity > 0", name="ck_subscription_quantities_positive"),
    )


def downgrade() -> None:
    op.drop_table("subscription_quantities")
