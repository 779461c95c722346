"""Payments received against invoices (``billing.db.payment_tables``) and the receivables they leave.

The rules (the README's "Payments and receivables" shows them with examples):

- A payment is recorded against one issued invoice (``finalized``, ``uncollectible``, or ``paid`` — then all of it
  is excess); a draft, a void invoice or a credit note is refused. Its amount is positive, in the invoice's
  currency and in whole minor units of it; its day is not in the future.
- **Partial payments.** The invoice takes ``min(amount, amount due)``; its ``amount_paid`` is the sum of what the
  payments not reversed gave it, and ``amount_due = total − credits applied − amount_paid`` (credits first, at
  finalization; payments after). The invoice stays ``finalized`` until nothing is due, then becomes ``paid``
  (an ``uncollectible`` one too: a late payment recovers it).
- **Overpayment.** What the payment brings beyond what was due goes to the customer's cash balance (a ``balance``
  credit grant and its ``overpayment`` movement on the credit ledger), which the next invoices in that currency use
  at finalization, after the prepaid credits.
- **Reversal** (a bounced transfer, a charge-back): written once on the payment. What it gave the invoice is owed
  again: a paid invoice goes back to ``finalized`` with its amount due restored. Its excess is taken back from the
  balance as far as it is still there (a ``reversal`` movement); what the customer already spent of it on later
  invoices stays spent, and the payment shows it as ``unrecovered``: money the customer owes outside any invoice
  (collect it, or bill it). A top-up invoice owed again takes back what is left of the credit it sold, until it is
  paid again (``credits.take_back_topup``).
- **Stripe.** ``invoice.paid`` records Stripe's ``amount_paid`` as a card payment whose reference is the Stripe
  invoice id, once per Stripe invoice (``source_key``), however often the webhook is delivered.
- **Concurrency.** Every change locks the invoice's row first (PostgreSQL ``SELECT … FOR UPDATE``; SQLite's
  ``BEGIN IMMEDIATE`` write transaction holds the database), then the customer's (when the balance moves), in the
  order finalization takes them: two payments of one invoice take turns, and the second sees what the first left
  due, so an invoice never takes more than it was owed.
- An invoice with payments not reversed cannot be voided (reverse them, or issue a credit note).
- A reference is recorded once per invoice (a payment not reversed): the same bank reference again is the same
  transfer told twice (a command re-run after a crash), refused. Without a reference nothing tells two equal
  payments apart: give one, or use the API's ``Idempotency-Key``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, insert, or_, select, update
from sqlalchemy.orm import Session

from billing import credits
from billing.core.aging import BUCKETS, AgingRow, OpenAmount, age_receivables
from billing.db import repository, session_scope
from billing.db.payment_tables import PAYMENT_METHODS, PaymentRow
from billing.errors import BillingInputError, ConflictError, NotFoundError
from dbkit import for_update, iso_instant, keyset_page, page_of, read_only, utcnow
from invoices import store
from invoices.errors import InvoiceNotFoundError
from invoices.model import AppliedCredit, Invoice, InvoiceKind, InvoiceScope, InvoiceStatus
from pricing_plans.money import MAX_AMOUNT, ZERO, format_amount, format_sum, round_money

__all__ = [
    "PAYMENT_METHODS",
    "Aging",
    "Payment",
    "aged_receivables",
    "aging_json",
    "amounts_paid",
    "check_can_void",
    "get_payment",
    "list_payments",
    "parse_amount",
    "payment_json",
    "payments_between",
    "payments_page",
    "record_payment",
    "record_stripe_payment",
    "reverse_payment",
]


@dataclass(frozen=True, slots=True)
class Payment:
    """A payment received, as recorded.

    Attributes:
      invoice_id, invoice_number, customer, currency: the invoice it paid.
      amount: what the customer paid; applied: what the invoice took of it; excess: the rest, put on the
        customer's balance (grant ``balance_grant_id``).
      method, reference, received_on: as recorded (a Stripe payment: ``card``, the Stripe invoice id).
      reversed_on, reversed_at, reversal_reason: set once, when the payment was reversed; recovered: how much of
        the excess the reversal took back from the balance (``unrecovered``: the rest, already spent).
    """

    id: int
    invoice_id: int
    invoice_number: str
    customer: str
    currency: str
    amount: Decimal
    applied: Decimal
    excess: Decimal
    method: str
    reference: str | None
    received_on: dt.date
    recorded_at: dt.datetime
    balance_grant_id: int | None = None
    reversed_on: dt.date | None = None
    reversed_at: dt.datetime | None = None
    reversal_reason: str | None = None
    recovered: Decimal | None = None

    @property
    def reversed(self) -> bool:
        return self.reversed_at is not None

    @property
    def unrecovered(self) -> Decimal:
        """The part of a reversed payment's excess the customer had spent already (zero otherwise)."""
        return self.excess - (self.recovered or ZERO) if self.reversed else round_money(ZERO, self.currency)


# -- recording -------------------------------------------------------------------------------------------------


_AMOUNT = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def parse_amount(text: str, name: str = "--amount") -> Decimal:
    """A decimal amount as typed ("30.00", "12.5"), never through a float: ASCII digits with an optional point
    and sign, nothing else (no exponent, no separators, no other script's digits, which ``Decimal`` would take)."""
    if not _AMOUNT.fullmatch(text.strip()):
        raise BillingInputError(f"{name}: expected a decimal amount such as 30.00, got {text!r}")
    return Decimal(text.strip())


def record_payment(
    engine: Engine,
    invoice_key: str | int,
    amount: Decimal,
    *,
    method: str,
    received_on: dt.date | None = None,
    reference: str | None = None,
    currency: str | None = None,
    now: dt.datetime | None = None,
) -> Payment:
    """Record a payment of ``amount`` received on ``received_on`` (default: today, UTC) against the invoice
    numbered (or with id) ``invoice_key``, in one transaction: the invoice takes what it is owed, the excess goes to
    the customer's balance, and the invoice becomes paid once nothing is due."""
    instant = now or utcnow()
    day = received_on or instant.date()
    if method not in PAYMENT_METHODS:
        raise BillingInputError(f"--method: expected one of {', '.join(PAYMENT_METHODS)}, got {method!r}")
    _check_not_future(day, instant)
    if reference is not None and (not reference.strip() or len(reference) > 255):
        raise BillingInputError("--reference: expected 1 to 255 characters")
    with session_scope(engine) as session:
        invoice = _locked_invoice(session, invoice_key)
        _check_payable(invoice, amount, currency)
        if reference is not None:
            _check_new_reference(session, invoice, reference)
        if amount > invoice.amount_due:  # the excess goes to the balance: as much as it may hold
            credits.check_room(
                session, invoice.customer_id or "", invoice.currency, amount - invoice.amount_due, instant, "--amount"
            )
        return _record(session, invoice, amount, method, reference, day, instant, None)


def record_stripe_payment(
    session: Session, invoice: Invoice, amount: Decimal | None, stripe_invoice_id: str | None, when: dt.datetime
) -> Payment | None:
    """In the webhook's transaction (``invoice`` locked by the caller): record what Stripe collected for
    ``invoice`` (``amount``; None: what is due now) as a card payment referenced by the Stripe invoice id, once per
    Stripe invoice; then the invoice is paid if nothing is left due here, dated by ``when`` (a void invoice stays
    void, and all of the payment goes to the balance). None when nothing was recorded (recorded before, or nothing
    to record)."""
    key = f"stripe:{stripe_invoice_id}" if stripe_invoice_id else None
    if key is not None and session.execute(select(PaymentRow.id).where(PaymentRow.source_key == key)).first():
        return None
    current = credits.with_credits(session, [store.get_invoice(session, invoice.id)])[0]
    value = current.amount_due if amount is None else round_money(amount, current.currency)
    payment = None
    if value > 0:  # (on a void invoice nothing is due: all of it goes to the balance)
        payment = _record(session, current, value, "card", stripe_invoice_id, when.date(), utcnow(), key, paid_at=when)
    after = credits.with_credits(session, [store.get_invoice(session, invoice.id)])[0]
    if after.status in (InvoiceStatus.FINALIZED, InvoiceStatus.UNCOLLECTIBLE) and after.amount_due <= 0:
        store.set_status(session, invoice.id, InvoiceStatus.PAID, now=when)  # (when Stripe collected it)
    # Less than is due here (a transfer reversed after the push, an amount below Stripe's minimum charge, which
    # Stripe marks paid and carries to the customer's next Stripe invoice): what Stripe collected is recorded,
    # and the rest stays due here, in the receivables, instead of being written off by a status.
    return payment


def _check_not_future(day: dt.date, instant: dt.datetime) -> None:
    if day > (instant + dt.timedelta(hours=14)).date():  # today somewhere on earth at the latest
        raise BillingInputError(f"--date: {day.isoformat()} is in the future")


def _locked_invoice(session: Session, key: str | int) -> Invoice:
    """The invoice, its row locked for this transaction, with its credits and payments."""
    try:
        invoice_id = store.get_invoice(session, key).id
        credits.lock_owners(session, [invoice_id])  # (the customer first, as every writer of its invoices)
        store.lock_invoice(session, invoice_id)
        return credits.with_credits(session, [store.get_invoice(session, invoice_id)])[0]
    except InvoiceNotFoundError as error:
        raise NotFoundError(str(error)) from None


def _check_payable(invoice: Invoice, amount: Decimal, currency: str | None) -> None:
    name = invoice.number or f"draft {invoice.id}"
    if invoice.kind is not InvoiceKind.INVOICE:
        raise ConflictError(f"{name} is a credit note: payments are recorded against invoices")
    if invoice.status is InvoiceStatus.DRAFT:
        raise ConflictError(f"{name} is a draft: finalize it before recording a payment")
    if invoice.status is InvoiceStatus.VOID:
        raise ConflictError(f"{name} is void: nothing can be paid on it")
    if currency is not None and currency.strip().upper() != invoice.currency:
        raise BillingInputError(f"--currency: {name} is in {invoice.currency}, not {currency.strip().upper()}")
    if (
        not amount.is_finite()
        or amount <= 0
        or amount >= MAX_AMOUNT
        or round_money(amount, invoice.currency) != amount
    ):
        raise BillingInputError(
            f"--amount: expected a positive amount below {MAX_AMOUNT:,} in whole minor units of {invoice.currency} "
            f"(got {amount})"
        )


def _check_new_reference(session: Session, invoice: Invoice, reference: str) -> None:
    """A reference recorded already on the invoice (and not reversed) is the same payment told twice — a command
    run again after a crash, a statement imported twice: refused (ConflictError)."""
    found = session.execute(
        select(PaymentRow.id).where(
            PaymentRow.invoice_id == invoice.id, PaymentRow.reference == reference, PaymentRow.reversed_at.is_(None)
        )
    ).scalar()
    if found is not None:
        raise ConflictError(f"payment {found} already records reference {reference!r} against {invoice.number}")


def _record(
    session: Session,
    invoice: Invoice,
    amount: Decimal,
    method: str,
    reference: str | None,
    day: dt.date,
    now: dt.datetime,
    source_key: str | None,
    paid_at: dt.datetime | None = None,
) -> Payment:
    """Write the payment against ``invoice`` (locked, with its credits and payments), its excess to the balance,
    and the invoice paid if nothing is due any more (dated ``paid_at``, when the payment was made, if known; else
    ``now``)."""
    currency = invoice.currency
    amount = round_money(amount, currency)
    applied = min(amount, invoice.amount_due)
    excess = amount - applied
    payment_id = session.execute(
        insert(PaymentRow)
        .values(
            invoice_id=invoice.id,
            customer_external_id=invoice.customer_id or "",
            currency=currency,
            amount=amount,
            applied=applied,
            excess=excess,
            method=method,
            reference=reference,
            received_on=day,
            recorded_at=now,
            source_key=source_key,
        )
        .returning(PaymentRow.id)
    ).scalar_one()
    if excess > 0:
        grant_id = credits.overpayment_to_balance(session, invoice, payment_id, excess, now)
        session.execute(update(PaymentRow).where(PaymentRow.id == payment_id).values(balance_grant_id=grant_id))
    open_statuses = (InvoiceStatus.FINALIZED, InvoiceStatus.UNCOLLECTIBLE)
    if invoice.status in open_statuses and applied == invoice.amount_due:
        store.set_status(session, invoice.id, InvoiceStatus.PAID, now=paid_at or now)
    return _payments(session, ids=[payment_id])[0]


# -- reversal --------------------------------------------------------------------------------------------------


def reverse_payment(
    engine: Engine,
    payment_id: int,
    *,
    reason: str | None = None,
    on: dt.date | None = None,
    now: dt.datetime | None = None,
) -> Payment:
    """Reverse a payment (a bounced transfer): what it gave the invoice is owed again (a paid invoice goes back to
    finalized), its excess is taken back from the customer's balance as far as it is left. Once: reversing a
    reversed payment is a conflict; its day is neither before the payment's nor in the future."""
    instant = now or utcnow()
    day = on or instant.date()
    _check_not_future(day, instant)
    with session_scope(engine) as session:
        found = session.execute(select(PaymentRow.invoice_id).where(PaymentRow.id == payment_id)).scalar_one_or_none()
        if found is None:
            raise NotFoundError(f"no payment {payment_id}")
        store.lock_invoice(session, found)  # the invoice first, as recording does
        row = session.execute(for_update(session, select(PaymentRow).where(PaymentRow.id == payment_id))).scalar_one()
        if row.reversed_at is not None:
            raise ConflictError(f"payment {payment_id} was reversed on {row.reversed_on}")
        if day < row.received_on:
            raise BillingInputError(f"--date: a payment received on {row.received_on} cannot be reversed before it")
        recovered = ZERO
        if row.balance_grant_id is not None:
            recovered = credits.take_back_overpayment(
                session, row.customer_external_id, row.balance_grant_id, payment_id, instant
            )
        session.execute(
            update(PaymentRow)
            .where(PaymentRow.id == payment_id)
            .values(reversed_on=day, reversed_at=instant, reversal_reason=reason, recovered=recovered)
        )
        invoice = credits.with_credits(session, [store.get_invoice(session, row.invoice_id)])[0]
        owed_again = invoice.total - sum((c.amount for c in invoice.credits_applied), ZERO) - invoice.amount_paid
        if invoice.status is InvoiceStatus.PAID and row.applied > 0 and owed_again > 0:
            store.reopen_paid(session, invoice.id, now=instant)
            if invoice.scope is InvoiceScope.CREDIT:  # a top-up owed again: its credit is not the customer's yet
                credits.take_back_topup(session, invoice, payment_id, instant)
        return _payments(session, ids=[payment_id])[0]


def check_can_void(session: Session, invoice_id: int) -> None:
    """Refuse to void an invoice that holds payments not reversed (ConflictError)."""
    held = session.execute(
        select(PaymentRow.id).where(PaymentRow.invoice_id == invoice_id, PaymentRow.reversed_at.is_(None))
    ).first()
    if held is not None:
        raise ConflictError(
            "the invoice has payments recorded: reverse them first (billing payments reverse), or issue a credit note"
        )


# -- reading ---------------------------------------------------------------------------------------------------


def amounts_paid(session: Session, invoice_ids: Sequence[int]) -> dict[int, Decimal]:
    """What the payments not reversed gave each of these invoices (only invoices with payments appear)."""
    paid: dict[int, Decimal] = defaultdict(lambda: ZERO)
    ids = list(invoice_ids)
    for offset in range(0, len(ids), 5_000):
        rows = session.execute(
            select(PaymentRow.invoice_id, PaymentRow.applied).where(
                PaymentRow.invoice_id.in_(ids[offset : offset + 5_000]), PaymentRow.reversed_at.is_(None)
            )
        ).all()
        for invoice_id, applied in rows:
            paid[invoice_id] += applied
    return dict(paid)


def get_payment(engine: Engine, payment_id: int) -> Payment:
    """One payment by id (NotFoundError if there is none)."""
    with session_scope(read_only(engine)) as session:
        found = _payments(session, ids=[payment_id])
    if not found:
        raise NotFoundError(f"no payment {payment_id}")
    return found[0]


def list_payments(engine: Engine, *, invoice: str | None = None, customer: str | None = None) -> list[Payment]:
    """Every payment, oldest first, of one invoice (by number or id) or one customer, or all."""
    with session_scope(read_only(engine)) as session:
        invoice_id = _invoice_id(session, invoice)
        return _payments(session, invoice_id=invoice_id, customer=customer)


def payments_page(
    engine: Engine,
    *,
    limit: int,
    after: int | None = None,
    before: int | None = None,
    invoice: str | None = None,
    customer: str | None = None,
) -> tuple[list[Payment], bool]:
    """At most ``limit`` payments by id, after ``after`` or right before ``before``, of one invoice or customer."""
    with session_scope(read_only(engine)) as session:
        invoice_id = _invoice_id(session, invoice)
        statement = _filtered(select(PaymentRow), invoice_id, customer)
        rows = session.scalars(keyset_page(statement, PaymentRow.id, limit=limit, after=after, before=before)).all()
        page, more = page_of(rows, limit=limit, before=before)
        return _as_payments(session, page), more


def payments_between(engine: Engine, start: dt.date, end: dt.date) -> list[Payment]:
    """The payments received in ``[start, end)`` and those reversed in it (a payment received before and reversed
    in the period is listed too: its ``reversed_on`` says so), oldest first — what an export of the period holds."""
    with session_scope(read_only(engine)) as session:
        statement = select(PaymentRow).where(
            or_(
                (PaymentRow.received_on >= start) & (PaymentRow.received_on < end),
                (PaymentRow.reversed_on >= start) & (PaymentRow.reversed_on < end),
            )
        )
        return _as_payments(session, session.scalars(statement.order_by(PaymentRow.received_on, PaymentRow.id)).all())


def _invoice_id(session: Session, invoice: str | None) -> int | None:
    if invoice is None:
        return None
    try:
        return store.get_invoice(session, invoice).id  # (an id if all ASCII digits, else a number)
    except InvoiceNotFoundError as error:
        raise NotFoundError(str(error)) from None


def _filtered(statement: Any, invoice_id: int | None, customer: str | None) -> Any:
    if invoice_id is not None:
        statement = statement.where(PaymentRow.invoice_id == invoice_id)
    if customer is not None:
        statement = statement.where(PaymentRow.customer_external_id == customer)
    return statement


def _payments(
    session: Session,
    *,
    ids: Sequence[int] | None = None,
    invoice_id: int | None = None,
    customer: str | None = None,
) -> list[Payment]:
    statement = _filtered(select(PaymentRow), invoice_id, customer)
    if ids is not None:
        statement = statement.where(PaymentRow.id.in_(list(ids)))
    return _as_payments(session, session.scalars(statement.order_by(PaymentRow.id)).all())


def _as_payments(session: Session, rows: Sequence[PaymentRow]) -> list[Payment]:
    """The rows as payments: their invoice numbers, and for a reversed one what the ledger took back of its excess
    (more than at the reversal when credit it had paid came back since, from an invoice voided: taken back too)."""
    numbers = {i: n or "" for i, n in store.invoice_numbers(session, {row.invoice_id for row in rows}).items()}
    grants = [row.balance_grant_id for row in rows if row.reversed_at is not None and row.balance_grant_id]
    taken = credits.taken_back(session, grants)
    return [_payment(row, numbers, taken) for row in rows]


def _payment(row: PaymentRow, numbers: dict[int, str], taken: dict[int, Decimal]) -> Payment:
    return Payment(
        row.id,
        row.invoice_id,
        numbers.get(row.invoice_id, ""),
        row.customer_external_id,
        row.currency,
        row.amount,
        row.applied,
        row.excess,
        row.method,
        row.reference,
        row.received_on,
        row.recorded_at,
        row.balance_grant_id,
        row.reversed_on,
        row.reversed_at,
        row.reversal_reason,
        round_money(taken.get(row.balance_grant_id or 0, row.recovered or ZERO), row.currency)
        if row.reversed_at is not None
        else None,
    )


# -- aged receivables ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Aging:
    """Aged receivables on ``as_of``: a row per customer and currency, and the totals per currency."""

    as_of: dt.date
    rows: tuple[AgingRow, ...]
    totals: tuple[AgingRow, ...]


def aged_receivables(engine: Engine, as_of: dt.date | None = None, *, customer: str | None = None) -> Aging:
    """What was owed at the end of ``as_of`` (default: today, UTC), by how long it was overdue: the invoices issued
    by then and neither paid, voided nor given up on (``uncollectible``) by then — credits applied by the documents
    issued by then (a credit note from its issue date on), payments received by then and not reversed by then; an
    invoice voided or marked uncollectible after that day (in its customer's timezone, as the export books the
    void) was still owed on it."""
    day = as_of or utcnow().date()
    with session_scope(read_only(engine)) as session:
        later = session.scalars(
            select(PaymentRow.invoice_id).where(
                or_(PaymentRow.received_on > day, PaymentRow.reversed_on > day)
            )
        ).all()
        given_up = _given_up_after(session, day, customer)
        candidates = store.receivables(session, customer=customer, issued_by=day, also=set(later), given_up=given_up)
        open_invoices = _owed_on(session, candidates, day)
        ids = [r.id for r in open_invoices]
        applied = _applied_by_day_end(session, open_invoices, day)
        paid = _paid_as_of(session, ids, day)
    amounts = []
    for r in open_invoices:
        due = r.total - sum((c.amount for c in applied.get(r.id, ())), ZERO) - paid.get(r.id, ZERO)
        if due > 0:
            amounts.append(OpenAmount(r.customer_external_id, r.customer_name, r.currency, due, r.due_date))
    rows, totals = age_receivables(amounts, day)
    return Aging(day, tuple(rows), tuple(totals))


def _given_up_after(session: Session, day: dt.date, customer: str | None) -> set[int]:
    """The invoices (of ``customer``, if given) voided or marked uncollectible after ``day``, on a later day in
    their customer's timezone: they may still have been owed on it."""
    since = dt.datetime.combine(day, dt.time(), dt.UTC) - dt.timedelta(hours=14)  # (offsets run to +14 hours)
    given_up = [InvoiceStatus.VOID, InvoiceStatus.UNCOLLECTIBLE]
    changes = store.status_changes_between(session, since, utcnow() + dt.timedelta(days=1), given_up)
    changes = [c for c in changes if customer is None or c.customer_external_id == customer]
    zones = _zones(session, {c.customer_external_id for c in changes})
    return {
        c.invoice_id for c in changes if c.changed_at.astimezone(zones.get(c.customer_external_id, dt.UTC)).date() > day
    }


def _owed_on(session: Session, invoices: Sequence[store.Receivable], day: dt.date) -> list[store.Receivable]:
    """``invoices`` less those voided or given up on (``uncollectible``) by the end of ``day`` in their customer's
    timezone, by their status history: one marked uncollectible before it and paid or voided since was not owed
    on it. (What was paid of the others by then is the payments' to say.)"""
    histories = store.status_histories(session, [r.id for r in invoices])
    zones = _zones(session, {r.customer_external_id for r in invoices})

    def status_then(receivable: store.Receivable) -> InvoiceStatus | None:
        zone = zones.get(receivable.customer_external_id, dt.UTC)
        taken = [status for status, since in histories.get(receivable.id, ()) if since.astimezone(zone).date() <= day]
        return taken[-1] if taken else None

    return [r for r in invoices if status_then(r) not in (InvoiceStatus.VOID, InvoiceStatus.UNCOLLECTIBLE)]


def _zones(session: Session, customers: Collection[str]) -> dict[str, ZoneInfo]:
    return {
        external_id: ZoneInfo(owner.timezone)
        for external_id, owner in repository.customers_by_external_id(session, set(customers)).items()
    }


def _applied_by_day_end(
    session: Session, invoices: Sequence[store.Receivable], day: dt.date
) -> dict[int, tuple[AppliedCredit, ...]]:
    """The credits applied to each invoice by the end of ``day``, by the date of the document that applied them:
    the invoice's own (credits paid it when it was issued: counted, as the invoice is), a credit note's (what it
    took off the amount due counts from the note's issue date on). The dates the documents bear, not the instant
    in UTC: the scheduler dates them in the customer's timezone, an action by hand in UTC."""
    ids = [r.id for r in invoices]
    later = [note.id for note in store.credit_notes_of(session, ids) if note.issue_date and note.issue_date > day]
    not_yet = {grant_id for grant_id, _ in credits.note_reductions(session, later).values()}
    applied = credits.credits_of(session, ids)
    return {i: tuple(c for c in found if c.grant_id not in not_yet) for i, found in applied.items()}


def _paid_as_of(session: Session, invoice_ids: list[int], day: dt.date) -> dict[int, Decimal]:
    paid: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for offset in range(0, len(invoice_ids), 5_000):
        rows = session.execute(
            select(PaymentRow.invoice_id, PaymentRow.applied).where(
                PaymentRow.invoice_id.in_(invoice_ids[offset : offset + 5_000]),
                PaymentRow.received_on <= day,
                or_(PaymentRow.reversed_on.is_(None), PaymentRow.reversed_on > day),
            )
        ).all()
        for invoice_id, applied in rows:
            paid[invoice_id] += applied
    return dict(paid)


# -- JSON ------------------------------------------------------------------------------------------------------


def payment_json(payment: Payment) -> dict[str, Any]:
    def money(amount: Decimal | None) -> str | None:
        return None if amount is None else format_amount(amount, payment.currency)

    return {
        "id": payment.id,
        "invoice": payment.invoice_number,
        "customer": payment.customer,
        "currency": payment.currency,
        "amount": money(payment.amount),
        "applied": money(payment.applied),
        "to_balance": money(payment.excess),
        "method": payment.method,
        "reference": payment.reference,
        "received_on": payment.received_on.isoformat(),
        "recorded_at": iso_instant(payment.recorded_at),
        "status": "reversed" if payment.reversed else "succeeded",
        "reversed_on": None if payment.reversed_on is None else payment.reversed_on.isoformat(),
        "reversal_reason": payment.reversal_reason,
        "balance_recovered": money(payment.recovered),
        "balance_unrecovered": money(payment.unrecovered) if payment.reversed else None,
    }


def aging_json(aging: Aging) -> dict[str, Any]:
    def row(r: AgingRow) -> dict[str, Any]:
        shown: dict[str, Any] = {"customer": r.customer, "name": r.customer_name} if r.customer is not None else {}
        shown |= {"currency": r.currency, "invoices": r.invoices}
        shown |= {bucket: format_sum(amount, r.currency) for bucket, amount in zip(BUCKETS, r.buckets, strict=True)}
        return shown | {"total": format_sum(r.total, r.currency)}

    return {
        "as_of": aging.as_of.isoformat(),
        "buckets": list(BUCKETS),
        "data": [row(r) for r in aging.rows],
        "totals": [row(r) for r in aging.totals],
    }
