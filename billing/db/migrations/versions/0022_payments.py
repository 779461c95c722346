"""Payments received against invoices (``billing.db.payment_tables``), and what they need of the tables before:

- ``payments``: one row per payment, its reversal written on it.
- The credit ledger learns the movements of an overpayment: kinds ``overpayment`` (the excess put on the customer's
  balance) and ``reversal`` (taken back when the payment bounced), against the new account ``payment``. PostgreSQL
  replaces the two check constraints; SQLite cannot alter a constraint, and rebuilding ``credit_entries`` is not
  needed for a wider list, so its stored definition is edited in place, as migrations 0018 and 0020 do (every
  stored row is valid under the new definition).
- An invoice's status may go back from ``paid`` to ``finalized`` (a payment reversed): the status guard of
  migration 0010 allows that one more step, on both databases.

Downgrading drops the payments and restores the narrower rules; it fails (and changes nothing) while the ledger
holds overpayment movements.

Revision ID: 0022
Revises: 0020
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dbkit.types import ExactDecimal

revision = "0022"
down_revision = "0020"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

KINDS_BEFORE = "'grant', 'application', 'expiry', 'reinstatement', 'void', 'refund'"
KINDS_AFTER = KINDS_BEFORE + ", 'overpayment', 'reversal'"
ACCOUNTS_BEFORE = "'customer', 'promotion', 'topup', 'refund', 'invoice', 'expired'"
ACCOUNTS_AFTER = ACCOUNTS_BEFORE + ", 'payment'"

# As migration 0010 wrote them: what an issued invoice can never change, and the messages.
FROZEN_COLUMNS = (
    "billing_key", "kind", "number", "customer_external_id", "customer", "seller", "currency", "locale", "timezone",
    "period_start", "period_end", "subtotal", "discount", "tax_rate", "tax", "total", "issue_date", "due_date",
    "refers_to_id", "reason", "finalized_at", "usage_as_of", "content_hash", "scope", "subscription_id",
)
MESSAGE = "invoice is issued: its number, amounts and lines cannot change"
ID_MESSAGE = "invoice id cannot change: its lines and credit notes refer to it"
INSERT_MESSAGE = "a new invoice is a draft (a credit note: finalized); its status moves on from there"
ALLOWED_BEFORE = (
    "(OLD.status = 'draft' AND NEW.status = 'finalized') OR (OLD.status = 'finalized' AND NEW.status IN "
    "('paid', 'void', 'uncollectible')) OR (OLD.status = 'uncollectible' AND NEW.status IN ('paid', 'void'))"
)
ALLOWED_AFTER = ALLOWED_BEFORE + " OR (OLD.status = 'paid' AND NEW.status = 'finalized')"
TRANSITION_BEFORE = (
    "invoice status cannot change that way: draft → finalized → paid | void | uncollectible, "
    "uncollectible → paid | void"
)
TRANSITION_AFTER = TRANSITION_BEFORE + ", paid → finalized (a payment reversed)"


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("id", ID, nullable=False),
        sa.Column("invoice_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_external_id", sa.String(255), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", ExactDecimal(), nullable=False),
        sa.Column("applied", ExactDecimal(), nullable=False),
        sa.Column("excess", ExactDecimal(), nullable=False),
        sa.Column("balance_grant_id", ID, nullable=True),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(255), nullable=True),
        sa.Column("received_on", sa.Date(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_key", sa.String(300), nullable=True),
        sa.Column("reversed_on", sa.Date(), nullable=True),
        sa.Column("reversed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reversal_reason", sa.Text(), nullable=True),
        sa.Column("recovered", ExactDecimal(), nullable=True),
        sa.CheckConstraint("method IN ('bank_transfer', 'card', 'cash', 'other')", name="ck_payments_method"),
        sa.CheckConstraint("CAST(amount AS NUMERIC) > 0", name="ck_payments_amount_positive"),
        sa.ForeignKeyConstraint(
            ["balance_grant_id"], ["credit_grants.id"], name="fk_payments_balance_grant_id_credit_grants",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_payments"),
        sa.UniqueConstraint("source_key", name="uq_payments_source_key"),
    )
    op.create_index("ix_payments_invoice", "payments", ["invoice_id"])
    op.create_index("ix_payments_received_on", "payments", ["received_on"])
    op.create_index("ix_payments_customer", "payments", ["customer_external_id"])
    _ledger_checks(KINDS_BEFORE, KINDS_AFTER, ACCOUNTS_BEFORE, ACCOUNTS_AFTER)
    _status_guard(ALLOWED_AFTER, TRANSITION_AFTER)


def downgrade() -> None:
    _ledger_checks(KINDS_AFTER, KINDS_BEFORE, ACCOUNTS_AFTER, ACCOUNTS_BEFORE)  # first: it refuses a ledger in use
    _status_guard(ALLOWED_BEFORE, TRANSITION_BEFORE)
    op.drop_index("ix_payments_customer", table_name="payments")
    op.drop_index("ix_payments_received_on", table_name="payments")
    op.drop_index("ix_payments_invoice", table_name="payments")
    op.drop_table("payments")


def _ledger_checks(kinds_old: str, kinds_new: str, accounts_old: str, accounts_new: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.drop_constraint("ck_credit_entries_kind", "credit_entries", type_="check")
        op.create_check_constraint("ck_credit_entries_kind", "credit_entries", f"kind IN ({kinds_new})")
        op.drop_constraint("ck_credit_entries_account", "credit_entries", type_="check")
        op.create_check_constraint("ck_credit_entries_account", "credit_entries", f"account IN ({accounts_new})")
        return
    if bind.execute(sa.text(f"SELECT count(*) FROM credit_entries WHERE kind NOT IN ({kinds_new})")).scalar_one():
        raise RuntimeError("the credit ledger holds movements the narrower definition refuses")
    if bind.execute(
        sa.text(f"SELECT count(*) FROM credit_entries WHERE account NOT IN ({accounts_new})")
    ).scalar_one():
        raise RuntimeError("the credit ledger holds accounts the narrower definition refuses")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    for old, new in ((f"kind IN ({kinds_old})", f"kind IN ({kinds_new})"),
                     (f"account IN ({accounts_old})", f"account IN ({accounts_new})")):
        bind.execute(
            sa.text(
                "UPDATE sqlite_master SET sql = replace(sql, :old, :new) "
                "WHERE type = 'table' AND name = 'credit_entries'"
            ),
            {"old": old, "new": new},
        )
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    stored = bind.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'credit_entries'")
    text = stored.scalar_one()
    if f"kind IN ({kinds_new})" not in text or f"account IN ({accounts_new})" not in text:
        raise RuntimeError("the credit ledger's check constraints were not rewritten")


def _status_guard(allowed: str, message: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute("DROP TRIGGER invoices_status_transition")
        op.execute(
            f"""CREATE TRIGGER invoices_status_transition BEFORE UPDATE OF status ON invoices
            WHEN NEW.status IS NOT OLD.status AND NOT ({allowed}) BEGIN SELECT RAISE(ABORT, '{message}'); END"""
        )
        return
    changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in FROZEN_COLUMNS)
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
          IF NEW.status IS DISTINCT FROM OLD.status AND NOT ({allowed}) THEN
            RAISE EXCEPTION '{message}' USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$"""
    )
