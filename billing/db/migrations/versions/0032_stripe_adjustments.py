"""Voids and credit notes carried to Stripe after an invoice's push (``billing.stripe.adjust``): the keys of a push's
items (``stripe_invoice_syncs.stripe_item_keys``), the void carried (``voided_at``, ``void_outcome``), and
``stripe_credit_notes``.

Revision ID: 0032
Revises: 0027
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0032"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("stripe_invoice_syncs", sa.Column("stripe_item_keys", sa.Text(), nullable=True))
    op.add_column("stripe_invoice_syncs", sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("stripe_invoice_syncs", sa.Column("void_outcome", sa.String(16), nullable=True))
    op.create_table(
        "stripe_credit_notes",
        sa.Column("credit_note_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("credit_note_number", sa.String(64), nullable=False),
        sa.Column("invoice_id", sa.BigInteger(), nullable=False),
        sa.Column("stripe_invoice_id", sa.String(255), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("mode", sa.String(16), nullable=True),
        sa.Column("stripe_credit_note_id", sa.String(255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("refusals", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("mode IN ('pre_payment', 'out_of_band')", name="ck_stripe_credit_notes_mode"),
        sa.PrimaryKeyConstraint("credit_note_id", name="pk_stripe_credit_notes"),
        sa.UniqueConstraint("credit_note_number", name="uq_stripe_credit_notes_credit_note_number"),
        sa.UniqueConstraint("stripe_credit_note_id", name="uq_stripe_credit_notes_stripe_credit_note_id"),
    )


def downgrade() -> None:
    op.drop_table("stripe_credit_notes")
    op.drop_column("stripe_invoice_syncs", "void_outcome")
    op.drop_column("stripe_invoice_syncs", "voided_at")
    op.drop_column("stripe_invoice_syncs", "stripe_item_keys")
