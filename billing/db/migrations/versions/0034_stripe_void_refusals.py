"""The voids Stripe refused (``stripe_invoice_syncs.void_refusals``): a void it refused is sent next time under a
key of its own, as Stripe answers a refused key with the same refusal for a day.

Revision ID: 0034
Revises: 0033
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "stripe_invoice_syncs",
        sa.Column("void_refusals", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    op.drop_column("stripe_invoice_syncs", "void_refusals")
