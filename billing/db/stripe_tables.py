"""Stripe's tables: which Stripe customer is which of ours, how far each invoice got on its way to Stripe, which
webhook events were already processed, and each invoice's dunning record.

Created by migration 0005 (``stripe_invoice_syncs.key_prefix`` by 0009; the keys of a push's items, the
void carried to Stripe and ``stripe_credit_notes`` by 0032). The invoices live in another package's
metadata, so ``invoice_id`` columns carry no foreign key; an issued invoice is never deleted (the database refuses
it), so they cannot dangle.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from billing.db.tables import BillingBase, utcnow
from dbkit.types import UTCDateTime

__all__ = [
    "SYNC_STEPS",
    "DunningRow",
    "StripeCreditNoteRow",
    "StripeCustomerRow",
    "StripeInvoiceSyncRow",
    "StripeWebhookEventRow",
]

# The steps of an invoice's push, in order; a sync row records the last one completed.
SYNC_STEPS = ("pending", "customer", "invoice", "items", "finalized")


class StripeCustomerRow(BillingBase):
    """Our customer (by external id) → the Stripe customer created for it."""

    __tablename__ = "stripe_customers"

    customer_external_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    stripe_customer_id: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class StripeInvoiceSyncRow(BillingBase):
    """How far one of our invoices got in Stripe.

    ``step`` is the last step completed (``pending`` → ``customer`` → ``invoice`` → ``items`` → ``finalized``);
    ``stripe_item_ids`` is a JSON list of the invoice items created so far, in order, so a retry resumes after
    the last one. ``synced_at`` is set when the Stripe invoice is finalized; ``last_error`` keeps the last
    failure (cleared on success) and ``attempts`` counts the runs that touched the invoice.

    ``key_prefix`` starts every idempotency key of the push (``<prefix>:<number>:<step>``): the installation id
    when the push began (so a push resumes under the keys it started with, whatever the id is by then), or empty
    for a push begun before migration 0009, whose keys had no prefix and are ``<number>:<step>``.

    ``hosted_invoice_url`` is Stripe's page where the customer pays the invoice online, recorded when the push
    finalizes it (migration 0029) and printed on the invoice.

    ``stripe_item_keys``: the step keys of those items (``item:1``, ``tax``, ``credit:<grant id>`` …), in the
    same order: a retry creates the items whose key is missing, and a credit note whose credit is among them is in
    the Stripe invoice already, never carried again; None for a push begun before migration 0032 (its items were
    created in order; a note issued before its ``synced_at`` is taken as in it). ``voided_at`` and
    ``void_outcome``: the invoice's void carried to Stripe (``voided``), or found paid there (``paid``: Stripe had
    collected it, nothing was voided; the payment's webhook puts it on the customer's balance). ``void_refusals``
    counts the voids Stripe refused (migration 0034): the next one goes under a key of its own, as Stripe answers a
    key it refused with the same refusal for a day.
    """

    __tablename__ = "stripe_invoice_syncs"
    __table_args__ = (
        CheckConstraint("step IN ('pending', 'customer', 'invoice', 'items', 'finalized')", name="step"),
    )

    invoice_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    invoice_number: Mapped[str] = mapped_column(String(64), unique=True)
    customer_external_id: Mapped[str] = mapped_column(String(255))
    step: Mapped[str] = mapped_column(String(16), default="pending")
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255))
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_item_ids: Mapped[str] = mapped_column(Text, default="[]")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    synced_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    key_prefix: Mapped[str] = mapped_column(String(32), server_default=text("''"))
    hosted_invoice_url: Mapped[str | None] = mapped_column(Text)
    stripe_item_keys: Mapped[str | None] = mapped_column(Text)
    voided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    void_outcome: Mapped[str | None] = mapped_column(String(16))
    void_refusals: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class StripeCreditNoteRow(BillingBase):
    """A credit note of a pushed invoice, carried to Stripe as a Stripe credit note (``billing.stripe.adjust``).

    ``amount``: what the note took off the invoice's amount due here, in minor units; ``mode``: ``pre_payment``
    (the Stripe invoice was open: the credit note lowers what Stripe collects) or ``out_of_band`` (Stripe had
    collected it: the credit note is recorded there, the money is on the customer's balance here), chosen before
    the request and kept, so a retry after a lost answer sends the same request under the same key.
    ``stripe_credit_note_id`` and ``synced_at`` are set once Stripe answered; ``last_error`` keeps the last failure;
    ``refusals`` counts the requests Stripe refused (nothing done: the next one goes under a key of its own, as
    Stripe answers a key it refused with the same refusal for a day).
    """

    __tablename__ = "stripe_credit_notes"
    __table_args__ = (CheckConstraint("mode IN ('pre_payment', 'out_of_band')", name="mode"),)

    credit_note_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    credit_note_number: Mapped[str] = mapped_column(String(64), unique=True)
    invoice_id: Mapped[int] = mapped_column(BigInteger)
    stripe_invoice_id: Mapped[str] = mapped_column(String(255))
    amount: Mapped[int] = mapped_column(BigInteger)
    mode: Mapped[str | None] = mapped_column(String(16))
    stripe_credit_note_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    refusals: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    synced_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class StripeWebhookEventRow(BillingBase):
    """A Stripe webhook event already processed; the primary key makes each event count once."""

    __tablename__ = "stripe_webhook_events"

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    stripe_created_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class DunningRow(BillingBase):
    """Failed payments of one invoice: how many, the last one, and whether collection has failed for good."""

    __tablename__ = "dunning"

    invoice_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    invoice_number: Mapped[str] = mapped_column(String(64))
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(255))
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    final: Mapped[bool] = mapped_column(Boolean, default=False)
    final_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
