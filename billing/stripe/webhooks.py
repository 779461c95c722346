"""Stripe's webhooks: what the outcome of a payment does to our invoices and subscriptions.

Events handled (their ``data.object`` is a Stripe invoice, found by the Stripe id stored when it was pushed, or
else by our invoice number in its metadata):

- ``invoice.paid`` → what Stripe collected (its ``amount_paid``; what is due now if absent) is recorded as a card
  payment whose reference is the Stripe invoice id (``billing.payments``: once per Stripe invoice, an excess goes
  to the customer's balance), and our invoice becomes ``paid`` (from ``finalized``, or from ``uncollectible`` when
  a late payment recovers it; subscriptions cancelled meanwhile stay cancelled: the customer subscribes again).
  A void invoice (voided here, still collected by Stripe) keeps its status: what Stripe collected is recorded all the
  same, all of it on the customer's balance (nothing is owed on a void invoice), so no money received is dropped.
- ``invoice.payment_failed`` → the invoice's dunning count goes up by one and the customer is notified
  (:func:`notify_payment_failed`). The failure is final when Stripe will not try again (``next_payment_attempt``
  is null) or when the count reaches the ``dunning_max_attempts`` setting (default 4).
- ``invoice.marked_uncollectible``, or a final failure → our invoice becomes ``uncollectible``, and every
  subscription of the customer that is active on the failure date is cancelled on that date (the end date is
  exclusive: the day before is the last one covered) with reason ``involuntary``, which is what the churn
  figures count as involuntary churn. The failure date is the day the Stripe event was created, in the
  customer's timezone.

Anything else (other event types, invoices that are not ours, a failure reported for an invoice already paid or
void) is acknowledged and ignored. Each event id is processed once: it is recorded in ``stripe_webhook_events``
in the same transaction as its effects, so a replay is acknowledged and changes nothing, and an event whose
processing failed leaves no trace and is processed afresh when Stripe delivers it again.

``billing.api.routes_stripe`` serves ``POST /v1/stripe/webhooks``: it verifies the body's signature and hands
the event to :func:`handle_event`.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from typing import Any

import stripe
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from billing import credits
from billing.config import get_settings
from billing.core.domain import CancelReason, SubscriptionStatus
from billing.customers import settle_opening_draft
from billing.db import repository, session_scope
from billing.db.stripe_tables import DunningRow, StripeCustomerRow, StripeInvoiceSyncRow, StripeWebhookEventRow
from billing.errors import BillingInputError
from billing.payments import record_stripe_payment
from billing.stripe.amounts import from_stripe
from dbkit import for_update, insert_for, utcnow
from invoices.model import Invoice, InvoiceKind, InvoiceStatus
from invoices.store import get_invoice, invoice_id_by_number, lock_invoice, set_status
from pricing_plans.models import Catalog

__all__ = [
    "Outcome",
    "handle_event",
    "notify_payment_failed",
]

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    """What processing an event did."""

    PAID = "paid"  # our invoice became paid
    PARTLY_PAID = "partly_paid"  # what Stripe collected was recorded, and some is still due here
    PAYMENT_FAILED = "payment_failed"  # a failure was counted, collection goes on
    UNCOLLECTIBLE = "uncollectible"  # our invoice became uncollectible, subscriptions cancelled
    TO_BALANCE = "to_balance"  # our invoice is void: what Stripe collected went to the customer's balance
    IGNORED = "ignored"  # nothing to do (recorded all the same)
    DUPLICATE = "duplicate"  # the event id was processed before: nothing done


# -- processing ------------------------------------------------------------------------------------------


def notify_payment_failed(
    session: Session, invoice: Invoice, *, attempt: int, final: bool, next_attempt_at: dt.datetime | None
) -> None:
    """Tell the customer that a payment of ``invoice`` failed (``attempt``-th failure; ``final`` when collection
    has ended). Called inside the event's transaction, so whatever it records is recorded exactly once.

    For now it only logs; notification delivery hooks in here.
    """
    retry = "no further attempt" if next_attempt_at is None else f"next attempt {next_attempt_at.isoformat()}"
    log.warning(
        "payment of invoice %s (customer %s) failed, attempt %d%s; %s",
        invoice.number,
        invoice.customer_id,
        attempt,
        ", final" if final else "",
        retry,
    )


def handle_event(
    engine: Engine, event: Any, *, max_attempts: int | None = None, catalog: Catalog | None = None
) -> str:
    """Process one verified Stripe event (a ``stripe.Event`` or its JSON as a mapping) in one transaction.

    Returns the :class:`Outcome`. ``max_attempts`` overrides the ``dunning_max_attempts`` setting. ``catalog``:
    the plans, with which a subscription cancelled for a failed collection has its opening invoice, still a
    draft, written again for the days it covers (without it, such a draft is only dropped when it covers no day).
    Raises BillingInputError when ``event`` has no id or type.
    """
    data = _as_dict(event)
    event_id, event_type = data.get("id"), data.get("type")
    if not isinstance(event_id, str) or not isinstance(event_type, str) or not event_id or not event_type:
        raise BillingInputError("event: expected a Stripe event with an id and a type")
    if len(event_id) > 255:
        raise BillingInputError(f"event: id longer than 255 characters ({len(event_id)})")
    if max_attempts is None:
        max_attempts = get_settings().dunning_max_attempts
    if max_attempts < 1:
        raise BillingInputError(f"dunning_max_attempts: expected at least 1, got {max_attempts}")
    created = _from_timestamp(data.get("created")) or utcnow()
    with session_scope(engine) as session:
        if not _claim(session, event_id, event_type, created):
            log.info("Stripe event %s (%s) was processed before; ignored", event_id, event_type)
            return Outcome.DUPLICATE
        envelope = data.get("data")
        data_object = envelope.get("object") if isinstance(envelope, dict) else None
        if not isinstance(data_object, dict):
            data_object = {}
        outcome = _apply(session, event_type, data_object, created, max_attempts, catalog)
        session.execute(
            update(StripeWebhookEventRow)
            .where(StripeWebhookEventRow.event_id == event_id)
            .values(outcome=outcome.value)
        )
    log.info("Stripe event %s (%s): %s", event_id, event_type, outcome)
    return outcome


def _as_dict(event: Any) -> dict[str, Any]:
    if isinstance(event, stripe.StripeObject):
        return event.to_dict()
    if isinstance(event, Mapping):
        return dict(event)
    raise BillingInputError(f"event: expected a Stripe event, got {type(event).__name__}")


def _from_timestamp(value: Any) -> dt.datetime | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    try:
        return dt.datetime.fromtimestamp(value, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _claim(session: Session, event_id: str, event_type: str, created: dt.datetime) -> bool:
    """Record the event id; False if it was recorded before (a concurrent delivery waits for the first)."""
    statement = (
        insert_for(session, StripeWebhookEventRow)
        .values(
            event_id=event_id,
            type=event_type[:100],
            stripe_created_at=created,
            outcome="processing",
            received_at=utcnow(),
        )
        .on_conflict_do_nothing()
        .returning(StripeWebhookEventRow.event_id)
    )
    return session.execute(statement).scalar_one_or_none() is not None


def _apply(
    session: Session,
    event_type: str,
    data_object: dict[str, Any],
    created: dt.datetime,
    max_attempts: int,
    catalog: Catalog | None,
) -> Outcome:
    if event_type not in ("invoice.paid", "invoice.payment_failed", "invoice.marked_uncollectible"):
        return Outcome.IGNORED
    invoice = _our_invoice(session, data_object)
    if invoice is None:
        log.info("Stripe invoice %s is not one of ours; %s ignored", data_object.get("id"), event_type)
        return Outcome.IGNORED
    if event_type == "invoice.paid":
        return _paid(session, invoice, data_object, created)
    if event_type == "invoice.payment_failed":
        next_attempt = _from_timestamp(data_object.get("next_payment_attempt"))
        return _payment_failed(
            session, invoice, data_object.get("id"), created, next_attempt, max_attempts, catalog
        )
    if invoice.status is not InvoiceStatus.FINALIZED:
        return _ignored(invoice, event_type)
    _collection_failed(session, invoice, data_object.get("id"), created, catalog)
    return Outcome.UNCOLLECTIBLE


def _our_invoice(session: Session, data_object: dict[str, Any]) -> Invoice | None:
    """The invoice a Stripe invoice event is about: by the Stripe invoice's id, as its push stored it; else (a push
    that stopped before storing it) by the number in the Stripe invoice's metadata, if nothing there says it is
    another database's (every event of a Stripe account reaches every endpoint: staging's ``INV-2026-000001`` is
    not production's)."""
    stripe_id = data_object.get("id")
    invoice_id = None
    if isinstance(stripe_id, str) and stripe_id:
        invoice_id = session.execute(
            select(StripeInvoiceSyncRow.invoice_id).where(StripeInvoiceSyncRow.stripe_invoice_id == stripe_id)
        ).scalar_one_or_none()
    by_number = invoice_id is None
    if by_number:
        invoice_id = _by_number(session, data_object)
        if invoice_id is None:
            return None
    # Lock the customer, the invoice, then its dunning row: every event takes them in that order (and a void, a
    # payment or a credit note the first two), so two writers of one invoice wait for each other instead of
    # deadlocking, and each sees the status the other left.
    credits.lock_owners(session, [invoice_id])
    lock_invoice(session, invoice_id)
    invoice = get_invoice(session, invoice_id)
    if by_number and not _same_customer(session, invoice, data_object):
        return None
    return invoice


def _by_number(session: Session, data_object: dict[str, Any]) -> int | None:
    metadata = data_object.get("metadata")
    if not isinstance(metadata, dict):
        return None
    number = metadata.get("billing_invoice_number")
    if not isinstance(number, str) or not number:
        return None
    invoice_id = invoice_id_by_number(session, number, InvoiceKind.INVOICE)
    if invoice_id is None:
        return None
    if metadata.get("billing_invoice_id", str(invoice_id)) != str(invoice_id):
        return None
    pushed_as = session.execute(
        select(StripeInvoiceSyncRow.stripe_invoice_id).where(StripeInvoiceSyncRow.invoice_id == invoice_id)
    ).scalar_one_or_none()
    return None if pushed_as is not None else invoice_id  # pushed here as another Stripe invoice: not this one


def _same_customer(session: Session, invoice: Invoice, data_object: dict[str, Any]) -> bool:
    metadata = data_object.get("metadata")
    named = metadata.get("billing_customer_id") if isinstance(metadata, dict) else None
    if named is not None and named != (invoice.customer_id or ""):
        return False
    theirs = data_object.get("customer")
    ours = session.execute(
        select(StripeCustomerRow.stripe_customer_id).where(
            StripeCustomerRow.customer_external_id == (invoice.customer_id or "")
        )
    ).scalar_one_or_none()
    return not (isinstance(theirs, str) and ours is not None and theirs != ours)


def _ignored(invoice: Invoice, event_type: str) -> Outcome:
    log.warning("%s for invoice %s, which is %s: ignored", event_type, invoice.number, invoice.status)
    return Outcome.IGNORED


def _paid(session: Session, invoice: Invoice, data_object: dict[str, Any], created: dt.datetime) -> Outcome:
    if invoice.status is InvoiceStatus.DRAFT:
        return _ignored(invoice, "invoice.paid")
    stripe_id = data_object.get("id")
    recorded = record_stripe_payment(
        session, invoice, _collected(data_object, invoice), stripe_id if isinstance(stripe_id, str) else None, created
    )
    if invoice.status is InvoiceStatus.VOID:  # voided here, collected there: the money is the customer's
        return Outcome.IGNORED if recorded is None else Outcome.TO_BALANCE
    if invoice.status is InvoiceStatus.PAID and recorded is None:
        return _ignored(invoice, "invoice.paid")  # paid before, and nothing more collected (or recorded already)
    if get_invoice(session, invoice.id).status is InvoiceStatus.PAID:
        return Outcome.PAID
    log.warning("Stripe marked %s paid, and less than is due here was collected: the rest stays due", invoice.number)
    return Outcome.PARTLY_PAID


def _collected(data_object: dict[str, Any], invoice: Invoice) -> Decimal | None:
    """What Stripe says it collected (``amount_paid``, in Stripe's minor units of the invoice's currency:
    ``amounts.from_stripe``); None when it does not say, or says it in another currency."""
    amount, currency = data_object.get("amount_paid"), data_object.get("currency")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        return None
    if not isinstance(currency, str) or currency.upper() != invoice.currency:
        return None
    return from_stripe(amount, invoice.currency)


def _payment_failed(
    session: Session,
    invoice: Invoice,
    stripe_invoice_id: Any,
    created: dt.datetime,
    next_attempt: dt.datetime | None,
    max_attempts: int,
    catalog: Catalog | None,
) -> Outcome:
    if invoice.status is not InvoiceStatus.FINALIZED:
        # Paid (a failure delivered after the success), void, or already given up on.
        return _ignored(invoice, "invoice.payment_failed")
    dunning = _dunning_row(session, invoice, stripe_invoice_id)
    dunning.failed_attempts += 1
    dunning.last_failure_at = created
    dunning.next_attempt_at = next_attempt
    dunning.updated_at = utcnow()
    final = next_attempt is None or dunning.failed_attempts >= max_attempts
    session.flush()
    notify_payment_failed(
        session, invoice, attempt=dunning.failed_attempts, final=final, next_attempt_at=next_attempt
    )
    if not final:
        return Outcome.PAYMENT_FAILED
    _collection_failed(session, invoice, stripe_invoice_id, created, catalog)
    return Outcome.UNCOLLECTIBLE


def _dunning_row(session: Session, invoice: Invoice, stripe_invoice_id: Any) -> DunningRow:
    """The invoice's dunning row, created if needed and locked until the transaction ends."""
    session.execute(
        insert_for(session, DunningRow)
        .values(
            invoice_id=invoice.id,
            invoice_number=invoice.number or str(invoice.id),
            stripe_invoice_id=stripe_invoice_id if isinstance(stripe_invoice_id, str) else None,
            failed_attempts=0,
            final=False,
            updated_at=utcnow(),
        )
        .on_conflict_do_nothing()
    )
    statement = for_update(session, select(DunningRow).where(DunningRow.invoice_id == invoice.id))
    return session.execute(statement).scalar_one()


def _collection_failed(
    session: Session, invoice: Invoice, stripe_invoice_id: Any, when: dt.datetime, catalog: Catalog | None
) -> None:
    """Collection has failed for good: the invoice is uncollectible and the customer churns involuntarily."""
    dunning = _dunning_row(session, invoice, stripe_invoice_id)
    set_status(session, invoice.id, InvoiceStatus.UNCOLLECTIBLE, now=when)  # (when Stripe gave up: the event's)
    dunning.final = True
    dunning.final_at = when
    dunning.updated_at = utcnow()
    session.flush()
    _cancel_involuntarily(session, invoice, when, catalog)


def _cancel_involuntarily(session: Session, invoice: Invoice, when: dt.datetime, catalog: Catalog | None) -> None:
    """Cancel the customer's subscriptions active on the failure day, as ``billing subscriptions cancel`` does
    (their opening drafts settled for the days they now cover). Locks: the issued invoice (taken by the caller),
    then the customer, then its subscriptions and their drafts: the order every other writer takes them in."""
    customer = repository.get_customer(session, invoice.customer_id or "", for_update=True)
    if customer is None:
        log.warning("invoice %s names customer %r, who does not exist", invoice.number, invoice.customer_id)
        return
    day = when.astimezone(zoneinfo.ZoneInfo(customer.timezone)).date()
    now = utcnow()
    for subscription in repository.subscriptions_of(session, customer.id):
        if subscription.status is not SubscriptionStatus.ACTIVE or not subscription.active_on(day):
            continue
        locked = repository.get_subscription(session, subscription.id, for_update=True)
        if locked is None or locked.status is not SubscriptionStatus.ACTIVE:
            continue
        cancelled = repository.cancel_subscription(
            session, subscription.id, end_date=day, reason=CancelReason.INVOLUNTARY, cancelled_at=now
        )
        settle_opening_draft(session, catalog, cancelled, customer)
        log.warning(
            "subscription %d of %s cancelled on %s: payment of %s failed (involuntary churn)",
            subscription.id,
            customer.external_id,
            day.isoformat(),
            invoice.number,
        )
