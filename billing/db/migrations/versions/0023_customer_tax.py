"""Customers' tax details and archiving; invoices' taxes per rate.

- ``customers``: ``country`` (ISO 3166-1 alpha-2), ``region`` (a subdivision of it, for rates that differ by
  region), ``tax_id`` (checked offline, stored compact), ``tax_exempt_reason`` (an exempt buyer: why) and
  ``archived_at`` (an archived customer takes no new subscription; its history stays). All nullable: existing
  customers have none of them.
- ``invoices.taxes``: the tax per rate as JSON (``invoices.model.TaxLine``); NULL for invoices stored before, which
  read as one line at their ``tax_rate``. Frozen once the invoice is issued, like its other amounts: the guards of
  migration 0010 are made again with it in their list of columns (on PostgreSQL with the status rule as
  migration 0022 left it: a reversed payment takes a paid invoice back to finalized).

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dbkit.types import UTCDateTime

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

# migration 0010's list, then this one's column
FROZEN_BEFORE = (
    "billing_key", "kind", "number", "customer_external_id", "customer", "seller", "currency", "locale", "timezone",
    "period_start", "period_end", "subtotal", "discount", "tax_rate", "tax", "total", "issue_date", "due_date",
    "refers_to_id", "reason", "finalized_at", "usage_as_of", "content_hash", "scope", "subscription_id",
)
FROZEN_AFTER = (*FROZEN_BEFORE, "taxes")
MESSAGE = "invoice is issued: its number, amounts and lines cannot change"
ID_MESSAGE = "invoice id cannot change: its lines and credit notes refer to it"
# the status rule as migration 0022 wrote it
TRANSITION_MESSAGE = (
    "invoice status cannot change that way: draft → finalized → paid | void | uncollectible, "
    "uncollectible → paid | void, paid → finalized (a payment reversed)"
)
INSERT_MESSAGE = "a new invoice is a draft (a credit note: finalized); its status moves on from there"
ALLOWED = (
    "(OLD.status = 'draft' AND NEW.status = 'finalized') OR (OLD.status = 'finalized' AND NEW.status IN "
    "('paid', 'void', 'uncollectible')) OR (OLD.status = 'uncollectible' AND NEW.status IN ('paid', 'void'))"
    " OR (OLD.status = 'paid' AND NEW.status = 'finalized')"
)

CUSTOMER_COLUMNS = (
    ("country", lambda: sa.String(2)),
    ("region", lambda: sa.String(3)),
    ("tax_id", lambda: sa.String(64)),
    ("tax_exempt_reason", lambda: sa.Text()),
    ("archived_at", lambda: UTCDateTime()),
)


def upgrade() -> None:
    for name, kind in CUSTOMER_COLUMNS:
        op.add_column("customers", sa.Column(name, kind(), nullable=True))
    op.add_column("invoices", sa.Column("taxes", sa.Text(), nullable=True))
    _guard(FROZEN_AFTER)


def downgrade() -> None:
    _guard(FROZEN_BEFORE)
    op.drop_column("invoices", "taxes")
    for name, _ in reversed(CUSTOMER_COLUMNS):
        op.drop_column("customers", name)


def _guard(frozen: tuple[str, ...]) -> None:
    """Migration 0010's guard of issued invoices, over ``frozen``."""
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_guard(frozen)
        return
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in frozen)
    op.execute("DROP TRIGGER invoices_issued_immutable")
    op.execute(
        f"""CREATE TRIGGER invoices_issued_immutable BEFORE UPDATE ON invoices
        WHEN OLD.status <> 'draft' AND ({changed}) BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"""
    )


def _postgresql_guard(frozen: tuple[str, ...]) -> None:
    changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in frozen)
    op.execute(
        f"""CREATE OR REPLACE FUNCTION invoices_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP = 'DELETE' THEN
            IF OLD.status <> 'draft' THEN RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'check_violation'; END IF;
            RETURN OLD;
          END IF;
          IF TG_OP = 'INSERT' THEN
            IF NEW.status NOT IN ('draft', 'finalized') THEN
              RAISE EXCEPTION '{INSERT_MESSAGE}' USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
          END IF;
          IF NEW.id IS DISTINCT FROM OLD.id THEN
            RAISE EXCEPTION '{ID_MESSAGE}' USING ERRCODE = 'check_violation';
          END IF;
          IF OLD.status <> 'draft' AND ({changed}) THEN
            RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'check_violation';
          END IF;
          IF NEW.status IS DISTINCT FROM OLD.status AND NOT ({ALLOWED}) THEN
            RAISE EXCEPTION '{TRANSITION_MESSAGE}' USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$"""
    )
