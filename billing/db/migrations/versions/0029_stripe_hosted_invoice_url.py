"""Stripe's hosted invoice page: ``stripe_invoice_syncs.hosted_invoice_url``, recorded when a push finalizes the
invoice in Stripe and printed on the invoice ("Pay online"). Invoices pushed before have none.

Revision ID: 0029
Revises: 0025
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("stripe_invoice_syncs", sa.Column("hosted_invoice_url", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("stripe_invoice_syncs", "hosted_invoice_url")
