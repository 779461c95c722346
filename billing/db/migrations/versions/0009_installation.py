"""This installation's identity: a one-row table holding a random id, made here once for every database, new or
upgraded. Stripe idempotency keys start with it, so that two databases pushing to one Stripe account cannot
collide.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    installation = op.create_table(
        "installation",
        sa.Column("singleton", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("singleton", name="pk_installation"),
        sa.UniqueConstraint("id", name="uq_installation_id"),
        sa.CheckConstraint("singleton = 1", name="ck_installation_one_row"),
    )
    op.bulk_insert(
        installation, [{"singleton": 1, "id": uuid.uuid4().hex, "created_at": dt.datetime.now(dt.UTC)}]
    )


def downgrade() -> None:
    op.drop_table("installation")
