"""Customers: a webhook secret of their own, which signs the webhooks posted to their ``webhook_url``.

Existing customers get none (a secret nobody has been shown is no use): their webhooks fail, saying so, until
``billing customers rotate-webhook-secret ID`` gives them one.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("customers", sa.Column("webhook_secret", sa.String(255), nullable=True))


def downgrade() -> None:
    # SQLite (3.35 on) drops a column in place: the table is not rebuilt under the tables that refer to it.
    op.drop_column("customers", "webhook_secret")
