"""Invoices: what an invoice bills (``scope``: a period, a subscription's opening fee, a credit) and the
subscription of an opening invoice, in columns of their own instead of parts of the billing key that queries had
to parse. Existing invoices, issued ones too, get them from their billing key (``period:<customer>:<label>``,
``start:<subscription id>``, ``credit:<number>:<n>``); an issued invoice's scope and subscription are then frozen
with the rest of it.

SQLite adds a NOT NULL column only with a default: ``scope`` keeps ``'period'`` there (every row is written with
its scope); rebuilding the table instead would delete every invoice line through their cascading foreign key.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# What an issued invoice can never change, as migration 0003 froze it, and from here on.
FROZEN_BEFORE = (
    "billing_key", "kind", "number", "customer_external_id", "customer", "seller", "currency", "locale", "timezone",
    "period_start", "period_end", "subtotal", "discount", "tax_rate", "tax", "total", "issue_date", "due_date",
    "refers_to_id", "reason", "finalized_at", "usage_as_of", "content_hash",
)
FROZEN_COLUMNS = (*FROZEN_BEFORE, "scope", "subscription_id")
MESSAGE = "invoice is issued: its number, amounts and lines cannot change"
SCOPES = "scope IN ('period', 'opening', 'credit')"

KNOWN_KEYS = "kind = 'credit_note' OR billing_key LIKE 'start:%' OR billing_key LIKE 'period:%'"
BACKFILL = """UPDATE invoices SET
    scope = CASE
        WHEN kind = 'credit_note' THEN 'credit'
        WHEN billing_key LIKE 'start:%' THEN 'opening'
        ELSE 'period'
    END,
    subscription_id = CASE
        WHEN kind = 'invoice' AND billing_key LIKE 'start:%' THEN CAST(substr(billing_key, 7) AS BIGINT)
    END"""


def upgrade() -> None:
    unknown = op.get_bind().execute(sa.text(f"SELECT billing_key FROM invoices WHERE NOT ({KNOWN_KEYS}) LIMIT 5"))
    keys = [key for (key,) in unknown]
    if keys:
        raise RuntimeError(f"invoices whose billing key says nothing of what they bill: {', '.join(keys)}")
    if op.get_bind().dialect.name == "postgresql":
        op.add_column("invoices", sa.Column("scope", sa.String(16), nullable=True))
        op.add_column("invoices", sa.Column("subscription_id", sa.BigInteger(), nullable=True))
        op.execute(BACKFILL)  # (the guard lets it through: neither column was frozen yet)
        op.alter_column("invoices", "scope", existing_type=sa.String(16), nullable=False)
        op.create_check_constraint("ck_invoices_scope", "invoices", SCOPES)
        _postgresql_guard(FROZEN_COLUMNS)
    else:
        op.execute("DROP TRIGGER invoices_issued_immutable")
        op.execute(
            "ALTER TABLE invoices ADD COLUMN scope VARCHAR(16) NOT NULL DEFAULT 'period' "
            f"CONSTRAINT ck_invoices_scope CHECK ({SCOPES})"
        )
        op.add_column("invoices", sa.Column("subscription_id", sa.BigInteger(), nullable=True))
        op.execute(BACKFILL)
        _sqlite_guard(FROZEN_COLUMNS)
    op.create_index("ix_invoices_scope_period", "invoices", ["scope", "period_start"])
    op.create_index("ix_invoices_subscription", "invoices", ["subscription_id"])


def _sqlite_guard(frozen: tuple[str, ...]) -> None:
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in frozen)
    op.execute(
        f"""CREATE TRIGGER invoices_issued_immutable BEFORE UPDATE ON invoices
        WHEN OLD.status <> 'draft' AND ({changed} OR NEW.status = 'draft'
             OR (OLD.status IN ('paid', 'void') AND NEW.status <> OLD.status))
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"""
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
          IF OLD.status <> 'draft' AND ({changed} OR NEW.status = 'draft'
             OR (OLD.status IN ('paid', 'void') AND NEW.status <> OLD.status)) THEN
            RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$"""
    )


def downgrade() -> None:
    op.drop_index("ix_invoices_subscription", table_name="invoices")
    op.drop_index("ix_invoices_scope_period", table_name="invoices")
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_guard(FROZEN_BEFORE)
        op.drop_constraint("ck_invoices_scope", "invoices", type_="check")
    else:
        # the trigger names the columns: it goes first, and comes back as it was
        op.execute("DROP TRIGGER invoices_issued_immutable")
        _sqlite_guard(FROZEN_BEFORE)
    # SQLite (3.35 on) drops a column in place: the table is not rebuilt under the tables that refer to it.
    op.drop_column("invoices", "subscription_id")
    op.drop_column("invoices", "scope")
