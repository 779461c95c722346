"""Prepaid credits and the customer's balance: grants and the double-entry ledger of their movements
(``billing.db.credit_tables``).

Revision ID: 0016
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dbkit.types import ExactDecimal

revision = "0016"
down_revision = "0019"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "credit_grants",
        sa.Column("id", ID, nullable=False),
        sa.Column("customer_external_id", sa.String(255), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", ExactDecimal(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("invoice_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('free', 'paid', 'balance')", name="ck_credit_grants_kind"),
        sa.CheckConstraint("CAST(amount AS NUMERIC) > 0", name="ck_credit_grants_amount_positive"),
        sa.PrimaryKeyConstraint("id", name="pk_credit_grants"),
    )
    op.create_index("ix_credit_grants_customer", "credit_grants", ["customer_external_id", "currency"])
    op.create_table(
        "credit_entries",
        sa.Column("id", ID, nullable=False),
        sa.Column("movement", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("account", sa.String(16), nullable=False),
        sa.Column("grant_id", ID, nullable=False),
        sa.Column("invoice_id", sa.BigInteger(), nullable=True),
        sa.Column("amount", ExactDecimal(), nullable=False),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('grant', 'application', 'expiry', 'reinstatement', 'void', 'refund')",
            name="ck_credit_entries_kind",
        ),
        sa.CheckConstraint(
            "account IN ('customer', 'promotion', 'topup', 'refund', 'invoice', 'expired')",
            name="ck_credit_entries_account",
        ),
        sa.CheckConstraint("CAST(amount AS NUMERIC) <> 0", name="ck_credit_entries_amount_not_zero"),
        sa.ForeignKeyConstraint(
            ["grant_id"], ["credit_grants.id"], name="fk_credit_entries_grant_id_credit_grants", ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_credit_entries"),
        sa.UniqueConstraint("movement", "account", name="uq_credit_entries_movement_account"),
    )
    op.create_index("ix_credit_entries_grant", "credit_entries", ["grant_id"])
    op.create_index("ix_credit_entries_invoice", "credit_entries", ["invoice_id"])


def downgrade() -> None:
    op.drop_index("ix_credit_entries_invoice", table_name="credit_entries")
    op.drop_index("ix_credit_entries_grant", table_name="credit_entries")
    op.drop_table("credit_entries")
    op.drop_index("ix_credit_grants_customer", table_name="credit_grants")
    op.drop_table("credit_grants")
