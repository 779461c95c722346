"""Approval before issuing: the drafts approved for issuing, as their content was approved, and the customers
flagged for review (``billing.db.approval_tables``).

Revision ID: 0024
Revises: 0029
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0029"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "invoice_approvals",
        sa.Column("id", ID, nullable=False),
        sa.Column("invoice_id", sa.BigInteger(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("approved_by", sa.String(255), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_invoice_approvals"),
        sa.UniqueConstraint("invoice_id", name="uq_invoice_approvals_invoice_id"),
    )
    op.create_table(
        "customer_reviews",
        sa.Column("customer_external_id", sa.String(255), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("flagged_by", sa.String(255), nullable=False),
        sa.Column("flagged_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_external_id", name="pk_customer_reviews"),
    )


def downgrade() -> None:
    op.drop_table("customer_reviews")
    op.drop_table("invoice_approvals")
