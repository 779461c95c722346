"""This installation's identity: a one-row table holding a random id, made here once for every database, new or
upgraded. Stripe idempotency keys start with it, so that two databases pushing to one Stripe account cannot
collide.

Each push to Stripe stores the prefix of its keys on its sync row (``stripe_invoice_syncs.key_prefix``), fixed when
the push begins: a push begun before this revision has the empty prefix and resumes with the unprefixed keys it
started with (``<number>:<step>``), since a request Stripe carried out whose answer was lost is only answered again
under its own key — a new key would create the customer or invoice item a second time.

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
    op.add_column(
        "stripe_invoice_syncs",
        sa.Column("key_prefix", sa.String(32), nullable=False, server_default=sa.text("''")),
    )


def downgrade() -> None:
    # SQLite (3.35 on) drops a column in place: the table is not rebuilt under the tables that refer to it.
    op.drop_column("stripe_invoice_syncs", "key_prefix")
    op.drop_table("installation")
