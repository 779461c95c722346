"""Prepaid credits and the customer's balance on a double-entry ledger (created by migration 0016).

- ``credit_grants``: what was given, never changed: a customer's grant of credit in a currency, ``free``
  (promotional, goodwill), ``paid`` (sold on a top-up invoice of its own; usable once that invoice is paid) or
  ``balance`` (money owed back to the customer: a negative invoice, a credit note refunded to the balance), with
  its priority and its expiry instant.
- ``credit_entries``: every movement of credit, as two legs that sum to zero (one row per leg, grouped by
  ``movement``). The ``customer`` account holds what the customer may still spend of each grant; the other legs
  say where the credit came from or went: ``promotion``, ``topup`` or ``refund`` (its source), ``payment`` (the
  excess of an overpayment, an ``overpayment`` movement, and what a ``reversal`` of that payment took back;
  migration 0022), ``invoice`` (an invoice it paid), ``expired`` (written off). A grant's remaining amount is the
  sum of its ``customer`` legs, never a stored number. ``(movement, account)`` is unique, so a movement is written
  once however often it is tried (an application is ``apply:<invoice id>:<grant id>``).

The invoices live in another package's metadata, so ``invoice_id`` columns carry no foreign key here (an issued
invoice is never deleted: the database refuses it).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from billing.db.tables import BillingBase
from dbkit.types import ID_TYPE, ExactDecimal, UTCDateTime

__all__ = ["ACCOUNTS", "GRANT_KINDS", "MOVEMENT_KINDS", "CreditAccountRow", "CreditEntryRow", "CreditGrantRow"]

GRANT_KINDS = ("free", "paid", "balance")
MOVEMENT_KINDS = ("grant", "application", "expiry", "reinstatement", "void", "refund", "overpayment", "reversal")
ACCOUNTS = ("customer", "promotion", "topup", "refund", "invoice", "expired", "payment")


class CreditGrantRow(BillingBase):
    """A grant of credit to a customer: what was granted, never updated."""

    __tablename__ = "credit_grants"
    __table_args__ = (
        CheckConstraint("kind IN ('free', 'paid', 'balance')", name="kind"),
        CheckConstraint("CAST(amount AS NUMERIC) > 0", name="amount_positive"),
        Index("ix_credit_grants_customer", "customer_external_id", "currency"),
    )

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    customer_external_id: Mapped[str] = mapped_column(String(255))
    currency: Mapped[str] = mapped_column(String(3))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal] = mapped_column(ExactDecimal)
    priority: Mapped[int] = mapped_column(default=0)
    expires_on: Mapped[dt.date | None] = mapped_column(Date)  # the expiry day as given, in the customer's timezone
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # the start of that day there
    reason: Mapped[str | None] = mapped_column(Text)
    # a paid grant's top-up invoice; a balance grant's source (the negative invoice or the credit note)
    invoice_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class CreditEntryRow(BillingBase):
    """One leg of a movement of credit; the legs of a movement sum to zero."""

    __tablename__ = "credit_entries"
    __table_args__ = (
        UniqueConstraint("movement", "account"),
        CheckConstraint(
            "kind IN ('grant', 'application', 'expiry', 'reinstatement', 'void', 'refund', 'overpayment', 'reversal')",
            name="kind",
        ),
        CheckConstraint(
            "account IN ('customer', 'promotion', 'topup', 'refund', 'invoice', 'expired', 'payment')", name="account"
        ),
        CheckConstraint("CAST(amount AS NUMERIC) <> 0", name="amount_not_zero"),
        Index("ix_credit_entries_grant", "grant_id"),
        Index("ix_credit_entries_invoice", "invoice_id"),
    )

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    movement: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    account: Mapped[str] = mapped_column(String(16))
    grant_id: Mapped[int] = mapped_column(ForeignKey("credit_grants.id", ondelete="RESTRICT"))
    invoice_id: Mapped[int | None] = mapped_column(BigInteger)
    amount: Mapped[Decimal] = mapped_column(ExactDecimal)
    effective_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class CreditAccountRow(BillingBase):
    """A customer's credit in one currency (created by migration 0021): what is set for it — the low-balance
    alert's level, the automatic top-up's level and amount — and where its alerts stand.

    ``below_low`` and ``depleted`` say whether the balance was below the level (at 0.00) when it was last looked
    at; an alert is sent when the balance is found below after it was not (``low_alerts`` and ``depleted_alerts``
    count them, and number each alert's idempotency key). ``topup_grant_id`` is the paid grant of the last
    automatic top-up issued since the setting was saved (its invoice voided or uncollectible pauses them).
    """

    __tablename__ = "credit_accounts"
    __table_args__ = (
        CheckConstraint("CAST(low_balance AS NUMERIC) > 0", name="low_balance_positive"),
        CheckConstraint("CAST(topup_below AS NUMERIC) > 0", name="topup_below_positive"),
        CheckConstraint("CAST(topup_amount AS NUMERIC) > 0", name="topup_amount_positive"),
        CheckConstraint("(topup_below IS NULL) = (topup_amount IS NULL)", name="topup_whole"),
    )

    customer_external_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("customers.external_id", ondelete="CASCADE"), primary_key=True
    )
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    low_balance: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    topup_below: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    topup_amount: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    topup_grant_id: Mapped[int | None] = mapped_column(BigInteger)
    below_low: Mapped[bool] = mapped_column(Boolean)
    depleted: Mapped[bool] = mapped_column(Boolean)
    low_alerts: Mapped[int] = mapped_column(Integer, default=0)
    depleted_alerts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
