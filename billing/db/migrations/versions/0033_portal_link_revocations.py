"""Revoked customer-portal links (``billing.db.portal_tables``).

Revision ID: 0033
Revises: 0032
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portal_link_revocations",
        sa.Column("customer_external_id", sa.String(255), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_external_id", name="pk_portal_link_revocations"),
    )


def downgrade() -> None:
    op.drop_table("portal_link_revocations")
