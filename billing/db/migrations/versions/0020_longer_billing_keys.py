"""Invoice billing keys up to 512 characters: a period invoice's key is ``period:<customer>:<period label>``, and
a customer's external id alone may take 255 characters (its column's length), so the key outgrew its 255.

SQLite does not enforce a ``VARCHAR`` length; only PostgreSQL's column changes.

Revision ID: 0020
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("invoices", "billing_key", type_=sa.String(512), existing_type=sa.String(255))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("invoices", "billing_key", type_=sa.String(255), existing_type=sa.String(512))
