"""Coupons and the customers they are issued to (``billing.db.coupon_tables``).

Revision ID: 0017
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dbkit.types import ExactDecimal

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "coupons",
        sa.Column("id", ID, nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("percent_off", ExactDecimal(), nullable=True),
        sa.Column("amount_off", ExactDecimal(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("duration", sa.String(16), nullable=False),
        sa.Column("months", sa.Integer(), nullable=True),
        sa.Column("plans", sa.Text(), nullable=False),
        sa.Column("max_redemptions", sa.Integer(), nullable=True),
        sa.Column("expires_on", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_coupons"),
        sa.UniqueConstraint("code", name="uq_coupons_code"),
        sa.CheckConstraint("duration IN ('once', 'repeating', 'forever')", name="ck_coupons_duration"),
        sa.CheckConstraint("(percent_off IS NULL) <> (amount_off IS NULL)", name="ck_coupons_one_kind"),
        sa.CheckConstraint("(amount_off IS NULL) = (currency IS NULL)", name="ck_coupons_amount_currency"),
    )
    op.create_table(
        "customer_coupons",
        sa.Column("id", ID, nullable=False),
        sa.Column("coupon_id", ID, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_on", sa.Date(), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_customer_coupons"),
        sa.ForeignKeyConstraint(
            ["coupon_id"], ["coupons.id"], name="fk_customer_coupons_coupon_id_coupons", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_customer_coupons_customer_id_customers", ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("coupon_id", "customer_id", name="uq_customer_coupons_coupon_id_customer_id"),
    )
    op.create_index("ix_customer_coupons_customer", "customer_coupons", ["customer_id"])


def downgrade() -> None:
    op.drop_index("ix_customer_coupons_customer", table_name="customer_coupons")
    op.drop_table("customer_coupons")
    op.drop_table("coupons")
