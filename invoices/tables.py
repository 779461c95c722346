"""The invoices' tables: invoices (and credit notes), their lines, and the gap-free number sequences.

Once an invoice leaves ``draft``, its amounts, number and lines cannot change: the store refuses it, and so does
the database (triggers created by migrations 0003, 0008 and 0010 on SQLite and PostgreSQL), which also keep an
invoice's id and its status on the lifecycle's paths.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ColumnElement,
    Date,
    ForeignKey,
    Index,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dbkit.types import ID_TYPE, ExactDecimal, UTCDateTime, new_metadata


class InvoicesBase(DeclarativeBase):
    metadata = new_metadata()


class InvoiceRow(InvoicesBase):
    __tablename__ = "invoices"
    __table_args__ = (
        CheckConstraint(
            "status IN ('draft', 'finalized', 'paid', 'void', 'uncollectible')", name="status"
        ),
        CheckConstraint("kind IN ('invoice', 'credit_note')", name="kind"),
        CheckConstraint("scope IN ('period', 'opening', 'credit', 'progressive')", name="scope"),
        CheckConstraint("(status = 'draft') = (number IS NULL)", name="number_iff_issued"),
        Index("ix_invoices_customer_period", "customer_external_id", "period_start"),
        Index("ix_invoices_status", "status"),
        # a period's invoices (drafts to finalize or remove, issued ones late usage is measured against)
        Index("ix_invoices_scope_period", "scope", "period_start"),
        # a subscription's opening invoice (the only invoices with a subscription)
        Index("ix_invoices_subscription", "subscription_id"),
    )

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    billing_key: Mapped[str] = mapped_column(String(512), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="invoice")
    # What the invoice bills (``InvoiceScope``), and the subscription of an opening invoice: what its billing key
    # says, in columns that queries compare.
    scope: Mapped[str] = mapped_column(String(16))
    subscription_id: Mapped[int | None] = mapped_column(BigInteger)
    number: Mapped[str | None] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="draft")
    customer_external_id: Mapped[str] = mapped_column(String(255))
    customer: Mapped[str] = mapped_column(Text)  # JSON snapshot of the bill-to party
    seller: Mapped[str] = mapped_column(Text, default="{}")  # JSON snapshot, taken on finalization
    currency: Mapped[str] = mapped_column(String(3))
    locale: Mapped[str] = mapped_column(String(35))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    period_start: Mapped[dt.date] = mapped_column(Date)
    period_end: Mapped[dt.date] = mapped_column(Date)
    subtotal: Mapped[Decimal] = mapped_column(ExactDecimal)
    discount: Mapped[Decimal] = mapped_column(ExactDecimal)
    tax_rate: Mapped[Decimal] = mapped_column(ExactDecimal)
    tax: Mapped[Decimal] = mapped_column(ExactDecimal)
    total: Mapped[Decimal] = mapped_column(ExactDecimal)
    # The tax per rate, JSON (``invoices.model.TaxLine.as_dict`` each); NULL before invoices kept it (one rate).
    taxes: Mapped[str | None] = mapped_column(Text)
    issue_date: Mapped[dt.date | None] = mapped_column(Date)
    due_date: Mapped[dt.date | None] = mapped_column(Date)
    refers_to_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finalized_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # A hash of everything the customer sees: a re-run whose draft has not changed does not rewrite it.
    content_hash: Mapped[str | None] = mapped_column(String(64))
    # When the draft's usage was last aggregated: events received after it are late for this invoice.
    usage_as_of: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    status_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class InvoiceStatusChangeRow(InvoicesBase):
    """Each status an issued invoice or credit note took (``finalized`` first), and when: what it was on a past
    day (aged receivables). Written with the change, in its transaction; since migration 0035, which began it with
    what was known (the finalization, and the last change if another)."""

    __tablename__ = "invoice_status_changes"
    __table_args__ = (
        Index("ix_invoice_status_changes_invoice", "invoice_id", "changed_at"),
        Index("ix_invoice_status_changes_changed_at", "changed_at"),  # (the moves of a month, of a day on)
    )

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class InvoiceLineRow(InvoicesBase):
    __tablename__ = "invoice_lines"
    __table_args__ = (Index("ix_invoice_lines_invoice", "invoice_id", "position"),)

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id", ondelete="CASCADE"))
    position: Mapped[int]
    section: Mapped[str] = mapped_column(String(255), default="")
    kind: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text)
    meter: Mapped[str | None] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(32))
    quantity: Mapped[Decimal] = mapped_column(ExactDecimal)
    unit: Mapped[str | None] = mapped_column(String(64))
    amount: Mapped[Decimal] = mapped_column(ExactDecimal)
    service_start: Mapped[dt.date | None] = mapped_column(Date)
    service_end: Mapped[dt.date | None] = mapped_column(Date)
    details: Mapped[str] = mapped_column(Text, default="{}")
    subscription_id: Mapped[int | None] = mapped_column(BigInteger)
    plan_code: Mapped[str | None] = mapped_column(String(100))
    plan_version: Mapped[int | None]
    # the part of a charge priced by event dimension the line bills (canonical JSON), NULL for every other line
    dimension: Mapped[str | None] = mapped_column(Text)


def details_have(details: Any, key: str) -> ColumnElement[bool]:
    """A line's ``details`` column has ``key`` as a key: the details are stored as compact JSON
    (``LineDetails.to_json``), where a key is ``"key":`` and a quote inside a string value is escaped."""
    return details.contains(f'"{key}":', autoescape=True)  # type: ignore[no-any-return]


class NumberSequenceRow(InvoicesBase):
    """The last number handed out per sequence ("invoice:2026", "credit_note:2026")."""

    __tablename__ = "number_sequences"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_value: Mapped[int] = mapped_column(BigInteger, default=0)
