"""Invoices, invoice lines, number sequences, and the triggers that keep issued invoices immutable.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dbkit.types import ExactDecimal

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# What an issued invoice can never change. Its status may still move on (finalized → paid | void |
# uncollectible), never back to draft, and never away from paid or void.
FROZEN_COLUMNS = (
    "billing_key", "kind", "number", "customer_external_id", "customer", "seller", "currency", "locale", "timezone",
    "period_start", "period_end", "subtotal", "discount", "tax_rate", "tax", "total", "issue_date", "due_date",
    "refers_to_id", "reason", "finalized_at", "usage_as_of", "content_hash",
)
MESSAGE = "invoice is issued: its number, amounts and lines cannot change"


def upgrade() -> None:
    op.create_table(
        "invoices",
        sa.Column("id", ID, primary_key=True),
        sa.Column("billing_key", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("number", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("customer_external_id", sa.String(255), nullable=False),
        sa.Column("customer", sa.Text(), nullable=False),
        sa.Column("seller", sa.Text(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("locale", sa.String(35), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("subtotal", ExactDecimal(), nullable=False),
        sa.Column("discount", ExactDecimal(), nullable=False),
        sa.Column("tax_rate", ExactDecimal(), nullable=False),
        sa.Column("tax", ExactDecimal(), nullable=False),
        sa.Column("total", ExactDecimal(), nullable=False),
        sa.Column("issue_date", sa.Date(), nullable=True),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column("refers_to_id", ID, nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finalized_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("usage_as_of", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_invoices"),
        sa.UniqueConstraint("billing_key", name="uq_invoices_billing_key"),
        sa.UniqueConstraint("number", name="uq_invoices_number"),
        sa.ForeignKeyConstraint(["refers_to_id"], ["invoices.id"], name="fk_invoices_refers_to_id_invoices"),
        sa.CheckConstraint(
            "status IN ('draft', 'finalized', 'paid', 'void', 'uncollectible')", name="ck_invoices_status"
        ),
        sa.CheckConstraint("kind IN ('invoice', 'credit_note')", name="ck_invoices_kind"),
        sa.CheckConstraint("(status = 'draft') = (number IS NULL)", name="ck_invoices_number_iff_issued"),
    )
    op.create_index("ix_invoices_customer_period", "invoices", ["customer_external_id", "period_start"])
    op.create_index("ix_invoices_status", "invoices", ["status"])
    op.create_table(
        "invoice_lines",
        sa.Column("id", ID, primary_key=True),
        sa.Column("invoice_id", ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("section", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("meter", sa.String(100), nullable=True),
        sa.Column("model", sa.String(32), nullable=True),
        sa.Column("quantity", ExactDecimal(), nullable=False),
        sa.Column("unit", sa.String(64), nullable=True),
        sa.Column("amount", ExactDecimal(), nullable=False),
        sa.Column("service_start", sa.Date(), nullable=True),
        sa.Column("service_end", sa.Date(), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("subscription_id", sa.BigInteger(), nullable=True),
        sa.Column("plan_code", sa.String(100), nullable=True),
        sa.Column("plan_version", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_invoice_lines"),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name="fk_invoice_lines_invoice_id_invoices", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_invoice_lines_invoice", "invoice_lines", ["invoice_id", "position"])
    op.create_table(
        "number_sequences",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("last_value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_number_sequences"),
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_triggers()
    else:
        _sqlite_triggers()


def _sqlite_triggers() -> None:
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in FROZEN_COLUMNS)
    op.execute(
        f"""CREATE TRIGGER invoices_issued_immutable BEFORE UPDATE ON invoices
        WHEN OLD.status <> 'draft' AND ({changed} OR NEW.status = 'draft'
             OR (OLD.status IN ('paid', 'void') AND NEW.status <> OLD.status))
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"""
    )
    op.execute(
        f"""CREATE TRIGGER invoices_issued_no_delete BEFORE DELETE ON invoices WHEN OLD.status <> 'draft'
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"""
    )
    issued = "(SELECT status FROM invoices WHERE id = {}.invoice_id) <> 'draft'"
    for operation, condition in (
        ("INSERT", issued.format("NEW")),
        # a line may neither change on an issued invoice nor be moved onto one
        ("UPDATE", f"{issued.format('OLD')} OR {issued.format('NEW')}"),
        ("DELETE", issued.format("OLD")),
    ):
        op.execute(
            f"""CREATE TRIGGER invoice_lines_frozen_{operation.lower()} BEFORE {operation} ON invoice_lines
            WHEN {condition}
            BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"""
        )


def _postgresql_triggers() -> None:
    changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in FROZEN_COLUMNS)
    op.execute(
        f"""CREATE FUNCTION invoices_guard() RETURNS trigger LANGUAGE plpgsql AS $$
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
    op.execute(
        "CREATE TRIGGER invoices_guard BEFORE UPDATE OR DELETE ON invoices "
        "FOR EACH ROW EXECUTE FUNCTION invoices_guard()"
    )
    op.execute(
        f"""CREATE FUNCTION invoice_lines_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE parent_status text;
        BEGIN
          IF TG_OP = 'INSERT' THEN
            SELECT status INTO parent_status FROM invoices WHERE id = NEW.invoice_id;
          ELSE
            SELECT status INTO parent_status FROM invoices WHERE id = OLD.invoice_id;
          END IF;
          IF parent_status IS NOT NULL AND parent_status <> 'draft' THEN
            RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'check_violation';
          END IF;
          IF TG_OP = 'UPDATE' THEN  -- nor may a line be moved onto an issued invoice
            SELECT status INTO parent_status FROM invoices WHERE id = NEW.invoice_id;
            IF parent_status IS NOT NULL AND parent_status <> 'draft' THEN
              RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'check_violation';
            END IF;
          END IF;
          IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
          RETURN NEW;
        END $$"""
    )
    op.execute(
        "CREATE TRIGGER invoice_lines_guard BEFORE INSERT OR UPDATE OR DELETE ON invoice_lines "
        "FOR EACH ROW EXECUTE FUNCTION invoice_lines_guard()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS invoice_lines_guard ON invoice_lines")
        op.execute("DROP TRIGGER IF EXISTS invoices_guard ON invoices")
        op.execute("DROP FUNCTION IF EXISTS invoice_lines_guard()")
        op.execute("DROP FUNCTION IF EXISTS invoices_guard()")
    op.drop_table("number_sequences")
    op.drop_index("ix_invoice_lines_invoice", table_name="invoice_lines")
    op.drop_table("invoice_lines")
    op.drop_index("ix_invoices_status", table_name="invoices")
    op.drop_index("ix_invoices_customer_period", table_name="invoices")
    op.drop_table("invoices")
