"""Usage reactions: how far each reaction to usage (threshold evaluation) has read the stored events
(``billing.db.reaction_tables``), and the index that reads the events in the order they were received.

The threshold reaction starts at the newest event stored before the upgrade: until now ingestion evaluated the
thresholds of what it stored before answering, so those events have been reacted to.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_usage_events_received_at", "usage_events", ["received_at"])
    reactions = op.create_table(
        "usage_reactions",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("received_through", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_usage_reactions"),
    )
    newest = op.get_bind().execute(sa.text("SELECT coalesce(max(received_at), 0) FROM usage_events")).scalar_one()
    op.bulk_insert(
        reactions, [{"name": "thresholds", "received_through": int(newest), "updated_at": dt.datetime.now(dt.UTC)}]
    )


def downgrade() -> None:
    op.drop_table("usage_reactions")
    op.drop_index("ix_usage_events_received_at", table_name="usage_events")
