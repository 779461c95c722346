"""A subscription's ``chain_start``: for one that replaced another by a plan change, the start date of the first of
that chain of plan changes. Its plan's trial counts from there, so that a plan change never gives a new trial.

The subscriptions that replaced another are filled in by following ``previous_subscription_id`` back to the first.

Revision ID: 0038
Revises: 0037
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0038"
down_revision = "0037"
branch_labels = None
depends_on = None

# Each subscription with the start date of the first of its chain (a recursive query: SQLite and PostgreSQL).
_FILL = """
WITH RECURSIVE chain(id, first_start) AS (
    SELECT id, start_date FROM subscriptions WHERE previous_subscription_id IS NULL
    UNION ALL
    SELECT s.id, chain.first_start FROM subscriptions s JOIN chain ON s.previous_subscription_id = chain.id
)
UPDATE subscriptions
SET chain_start = (SELECT chain.first_start FROM chain WHERE chain.id = subscriptions.id)
WHERE previous_subscription_id IS NOT NULL
"""


def upgrade() -> None:
    op.add_column("subscriptions", sa.Column("chain_start", sa.Date(), nullable=True))
    op.execute(_FILL)


def downgrade() -> None:
    # SQLite (3.35 on) drops a column in place: the table is not rebuilt under the tables that refer to it.
    op.drop_column("subscriptions", "chain_start")
