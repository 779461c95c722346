"""Payments received against invoices (created by migration 0022).

- ``payments``: one row per payment received (a bank transfer, a card payment, cash, a Stripe collection),
  never deleted. ``amount`` is what the customer paid; ``applied`` the part the invoice took (never more than it
  was owed when the payment came); ``excess`` the rest, put on the customer's cash balance as a ``balance`` credit
  grant (``balance_grant_id``). A reversal (a bounced transfer) is written on the row once: when and why, and
  how much of the excess was taken back from the balance (``recovered``; what the customer had already spent of it
  stays spent). ``source_key`` is unique: a payment from Stripe is ``stripe:<Stripe invoice id>``, so a
  redelivered webhook records it once.

The invoices live in another package's metadata, so ``invoice_id`` carries no foreign key (an issued invoice is
never deleted: the database refuses it).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, Date, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from billing.db.tables import BillingBase
from dbkit.types import ID_TYPE, ExactDecimal, UTCDateTime

__all__ = ["PAYMENT_METHODS", "PaymentRow"]

PAYMENT_METHODS = ("bank_transfer", "card", "cash", "other")


class PaymentRow(BillingBase):
    """A payment received against an invoice, and its reversal if it bounced."""

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("method IN ('bank_transfer', 'card', 'cash', 'other')", name="method"),
        CheckConstraint("CAST(amount AS NUMERIC) > 0", name="amount_positive"),
        Index("ix_payments_invoice", "invoice_id"),
        Index("ix_payments_received_on", "received_on"),
        Index("ix_payments_customer", "customer_external_id"),
    )

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(BigInteger)
    customer_external_id: Mapped[str] = mapped_column(String(255))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(ExactDecimal)
    applied: Mapped[Decimal] = mapped_column(ExactDecimal)
    excess: Mapped[Decimal] = mapped_column(ExactDecimal)
    balance_grant_id: Mapped[int | None] = mapped_column(ForeignKey("credit_grants.id", ondelete="RESTRICT"))
    method: Mapped[str] = mapped_column(String(16))
    reference: Mapped[str | None] = mapped_column(String(255))
    received_on: Mapped[dt.date] = mapped_column(Date)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    source_key: Mapped[str | None] = mapped_column(String(300), unique=True)
    reversed_on: Mapped[dt.date | None] = mapped_column(Date)
    reversed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    reversal_reason: Mapped[str | None] = mapped_column(Text)
    recovered: Mapped[Decimal | None] = mapped_column(ExactDecimal)
