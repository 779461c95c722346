"""Every status an issued invoice or credit note took, and when (``invoices.tables.InvoiceStatusChangeRow``).

Before it only an invoice's last status change was kept (``invoices.status_changed_at``); the history starts with
what was known then: each document's finalization, and its last change if that was another.

Revision ID: 0035
Revises: 0034
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0035"
down_revision = "0034"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "invoice_status_changes",
        sa.Column("id", ID, nullable=False),
        sa.Column("invoice_id", ID, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name="fk_invoice_status_changes_invoice_id_invoices", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_invoice_status_changes"),
    )
    op.create_index("ix_invoice_status_changes_invoice", "invoice_status_changes", ["invoice_id", "changed_at"])
    op.create_index("ix_invoice_status_changes_changed_at", "invoice_status_changes", ["changed_at"])
    op.execute(
        "INSERT INTO invoice_status_changes (invoice_id, status, changed_at) "
        "SELECT id, 'finalized', finalized_at FROM invoices WHERE status <> 'draft' AND finalized_at IS NOT NULL "
        "ORDER BY id"
    )
    op.execute(
        "INSERT INTO invoice_status_changes (invoice_id, status, changed_at) "
        "SELECT id, status, status_changed_at FROM invoices "
        "WHERE status NOT IN ('draft', 'finalized') AND status_changed_at IS NOT NULL ORDER BY id"
    )


def downgrade() -> None:
    op.drop_index("ix_invoice_status_changes_changed_at", table_name="invoice_status_changes")
    op.drop_index("ix_invoice_status_changes_invoice", table_name="invoice_status_changes")
    op.drop_table("invoice_status_changes")
