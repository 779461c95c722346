"""A subscription's ``chain_start``: for one that replaced another by a plan change, the start date of the first of
that chain of plan changes. Its plan's trial counts from there, so that a plan change never gives a new trial.

The subscriptions stored before are left without one (their trial counts from their own start, as it did): their
fees were invoiced on those terms already, and a later adjustment (a cancellation, a seat change) of a fee billed in
advance must be made on the terms it was billed on. A plan change made from this version on continues the trial of
the subscription it replaces.

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


def upgrade() -> None:
    op.add_column("subscriptions", sa.Column("chain_start", sa.Date(), nullable=True))


def downgrade() -> None:
    # SQLite (3.35 on) drops a column in place: the table is not rebuilt under the tables that refer to it.
    op.drop_column("subscriptions", "chain_start")
