"""Prepaid credits and the customer's balance: grants, their movements on the double-entry ledger
(``billing.db.credit_tables``), and their application to invoices at finalization.

Every movement is written as two legs that sum to zero; the ``customer`` account's legs of a grant sum to what is
left of it. Nothing is a stored balance. The rules of order and expiry are pure (``billing.core.credits``).

- A **free** grant is usable at once. A **paid** grant is sold on a top-up invoice of its own (untaxed: the credit
  is the customer's money, taxed on the invoice it pays) and becomes usable when that invoice is paid.
- At **finalization** (in the finalization's own transaction, so a finalization killed half-way applies nothing and
  its re-run applies each credit once) the customer's credits pay the invoice's total after tax, free before paid
  before the cash balance. The customer's row is locked first (PostgreSQL; SQLite's write transaction holds the
  database), so concurrent finalizations of one customer take turns and never spend a credit twice.
- An invoice finalized with a **negative total** keeps it; its amount due is 0.00 and the amount becomes a
  ``balance`` grant the next invoices use. A credit note may refund to the balance the same way.
- **Expiry**: at the start of its expiry day in the customer's timezone what is left of a grant is written off
  (an ``expiry`` movement dated then). An invoice of a period that began before that instant, finalized later,
  takes back what it needs from the write-off (a ``reinstatement``, then the application).
- A **void** invoice gives back the credits applied to it (a ``void`` movement).
- **Alerts and automatic top-ups** (``credit_accounts``): at the end of every operation that moves a customer's
  credit (a grant, a finalization, a refund to the balance, bringing the ledger up to date), in its transaction
  and under the customer's lock, each currency's balance is looked at: a ``credit.balance_low`` notification when
  the total falls below the customer's low-balance level, ``credit.balance_depleted`` when it reaches 0.00 (each
  once per crossing: its id derives from the customer, the currency and the alert's number); and when the paid
  balance is below the automatic top-up's level, a top-up invoice (a paid grant, as ``grant_credit`` sells it),
  unless one is still unpaid. The rules are pure (``billing.core.credits.alerts_due``, ``topup_due``).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from billing.core.compose import bill_to
from billing.core.credits import (
    KIND_ORDER,
    AlertState,
    GrantView,
    alerts_due,
    allocate,
    day_start,
    net_of_discounts,
    payable_before,
    topup_due,
    usable_for,
)
from billing.core.domain import Customer
from billing.db import repository, session_scope
from billing.db.credit_tables import CreditAccountRow, CreditEntryRow, CreditGrantRow
from billing.db.notification_tables import NotificationRow
from billing.errors import BillingInputError, ConflictError, NotFoundError
from billing.notify.outbox import queue_invoices_finalized
from dbkit import as_utc, insert_for, iso_instant, keyset_page, page_of, read_only, utcnow
from invoices import store
from invoices.model import (
    LINE_TAX_INCLUSIVE,
    LINE_TAX_RATE,
    AppliedCredit,
    DraftInvoice,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceScope,
    InvoiceStatus,
    LineKind,
)
from invoices.tables import InvoiceRow
from pricing_plans.money import (
    MAX_AMOUNT,
    ZERO,
    format_amount,
    format_sum,
    minor_digits,
    round_money,
    sum_in_minor_units,
)

__all__ = [
    "KEEP",
    "Balance",
    "Entry",
    "Grant",
    "apply_credits",
    "balance_in",
    "balance_json",
    "check_room",
    "configure",
    "credit_note_issued",
    "credits_of",
    "entries_page",
    "entry_json",
    "finalize_with_credits",
    "grant_credit",
    "grant_json",
    "invoice_voided",
    "ledger",
    "ledger_problems",
    "lock_owners",
    "note_reductions",
    "overpayment_to_balance",
    "refund_to_balance",
    "settle_due",
    "spendable",
    "take_back_overpayment",
    "take_back_topup",
    "taken_back",
    "with_credits",
]


MAX_PRIORITY = 1_000_000  # (the database's whole numbers hold up to 2,147,483,647)


@dataclass(frozen=True, slots=True)
class Grant:
    """A grant and where it stands: ``remaining`` (the sum of its customer legs), ``usable`` (a paid grant whose
    top-up invoice is not paid yet is not), its top-up invoice's number for a paid grant."""

    id: int
    customer: str
    currency: str
    kind: str
    amount: Decimal
    priority: int
    expires_on: dt.date | None
    expires_at: dt.datetime | None
    reason: str | None
    invoice_id: int | None
    created_at: dt.datetime
    remaining: Decimal = ZERO
    usable: bool = False
    invoice_number: str | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One leg of a movement."""

    id: int
    movement: str
    kind: str
    account: str
    grant_id: int
    invoice_id: int | None
    amount: Decimal
    effective_at: dt.datetime
    recorded_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Balance:
    """A customer's credit in one currency: what free and paid credit and the cash balance hold now, what paid
    grants wait for their top-up invoice to be paid; and what is set for it: the low-balance alert's level, the
    automatic top-up's level and amount (None: not set)."""

    currency: str
    free: Decimal
    paid: Decimal
    balance: Decimal
    pending: Decimal
    grants: tuple[Grant, ...]
    low_balance: Decimal | None = None
    topup_below: Decimal | None = None
    topup_amount: Decimal | None = None

    @property
    def total(self) -> Decimal:
        return self.free + self.paid + self.balance


# -- granting --------------------------------------------------------------------------------------------------


def grant_credit(
    engine: Engine,
    customer: str,
    amount: Decimal,
    currency: str,
    *,
    paid: bool = False,
    expires: dt.date | None = None,
    priority: int = 0,
    reason: str | None = None,
    settings: store.FinalizeSettings | None = None,
    now: dt.datetime | None = None,
) -> Grant:
    """Grant ``amount`` of credit in ``currency`` to ``customer``: free (usable now) or paid (sold on a top-up
    invoice, finalized now, usable once it is paid)."""
    instant = now or utcnow()
    currency = _currency(currency)
    amount = _amount(amount, currency)
    if not 0 <= priority <= MAX_PRIORITY:
        raise BillingInputError(f"--priority: expected a whole number from 0 to {MAX_PRIORITY:,}, got {priority}")
    finalize = settings or store.FinalizeSettings()
    with session_scope(engine) as session:
        owner = _customer(session, customer, lock=True)
        if expires is not None and expires <= instant.astimezone(_zone(owner)).date():
            raise BillingInputError(f"--expires: {expires.isoformat()} is not after today in {owner.timezone}")
        _settle(session, owner, instant)
        check_room(session, owner.external_id, currency, amount, instant, "AMOUNT")
        kind = "paid" if paid else "free"
        grant_id = _insert_grant(session, owner, currency, kind, amount, priority, expires, reason, instant)
        if paid:
            _sell_topup(session, owner, grant_id, amount, currency, finalize, instant)
        else:
            _move(session, f"grant:{grant_id}", "grant", grant_id, amount, "promotion", None, instant)
        _watch(session, owner, instant, finalize)
        return _grants(session, owner.external_id, ids=[grant_id])[0]


def refund_to_balance(
    session: Session,
    invoice: Invoice,
    amount: Decimal,
    now: dt.datetime,
    settings: store.FinalizeSettings | None = None,
) -> int | None:
    """Put ``amount`` owed to the customer (a negative invoice's, a credit note's) on its balance, once per
    ``invoice``: a ``balance`` grant and its ``refund`` movement (then the customer's alerts and automatic top-ups
    looked at). The grant's id (None if there was one already)."""
    owner = _customer(session, invoice.customer_id or "", lock=True)
    grant_id = _refund(session, owner, invoice, amount, now)
    if grant_id is not None:
        _watch(session, owner, now, settings or store.FinalizeSettings())
    return grant_id


def _refund(session: Session, owner: Customer, invoice: Invoice, amount: Decimal, now: dt.datetime) -> int | None:
    exists = session.execute(select(CreditEntryRow.id).where(CreditEntryRow.movement == f"refund:{invoice.id}")).first()
    if exists is not None or amount <= 0:
        return None
    what = "credit note" if invoice.kind is InvoiceKind.CREDIT_NOTE else "invoice"
    reason = f"refund of {what} {invoice.number}"
    grant_id = _insert_grant(session, owner, invoice.currency, "balance", amount, 0, None, reason, now, invoice.id)
    _move(session, f"refund:{invoice.id}", "refund", grant_id, amount, "refund", invoice.id, now)
    return grant_id


def overpayment_to_balance(
    session: Session, invoice: Invoice, payment_id: int, amount: Decimal, now: dt.datetime
) -> int:
    """Put the excess of payment ``payment_id`` on ``invoice`` (what it paid beyond what the invoice was owed) on
    the customer's balance: a ``balance`` grant and its ``overpayment`` movement, which the next invoices use as
    any balance. The grant's id."""
    owner = _customer(session, invoice.customer_id or "", lock=True)
    reason = f"overpayment of invoice {invoice.number} (payment {payment_id})"
    grant_id = _insert_grant(session, owner, invoice.currency, "balance", amount, 0, None, reason, now, invoice.id)
    _move(session, f"overpayment:{payment_id}", "overpayment", grant_id, amount, "payment", invoice.id, now)
    _watch(session, owner, now, None)
    return grant_id


def check_room(
    session: Session, customer: str, currency: str, amount: Decimal, now: dt.datetime, field: str
) -> None:
    """Refuse (``field`` named) what would take the customer's credit and balance in ``currency`` — what its
    balance shows: free, paid and cash balance held, and paid credit awaited — to ``MAX_AMOUNT`` or beyond, as
    another ``amount`` of it: a grant, a payment's excess."""
    owner = _customer(session, customer, lock=True)
    _settle(session, owner, now)  # (expired credit written off first)
    grants = _grants_in(session, owner, currency)
    held = _balance_of(currency, grants, awaited=_awaited(session, grants))
    total = held.total + held.pending + amount
    if total >= MAX_AMOUNT:
        raise BillingInputError(
            f"{field}: {customer} would hold {total:,} {currency} of credit and balance; what a customer holds in a "
            f"currency must stay below {MAX_AMOUNT:,}"
        )


def take_back_overpayment(
    session: Session, customer: str, grant_id: int, payment_id: int, now: dt.datetime
) -> Decimal:
    """A reversed payment's excess taken back from the customer's balance: what is left of its grant (a
    ``reversal`` movement); what the customer already spent of it stays spent. The amount taken back."""
    owner = _customer(session, customer, lock=True)
    _settle(session, owner, now)  # credits of invoices voided since come back to the grant first
    grant = _grants(session, owner.external_id, ids=[grant_id])[0]
    if grant.remaining > 0:
        _move(session, f"reversal:{payment_id}", "reversal", grant_id, -grant.remaining, "payment", None, now)
    _watch(session, owner, now, None)
    return grant.remaining


def take_back_topup(session: Session, invoice: Invoice, payment_id: int, now: dt.datetime) -> Decimal:
    """A top-up invoice owed again (a payment that paid it was reversed): what is left of the credit it sold leaves
    the balance (a ``reversal`` movement, on the ``topup`` account) until the invoice is paid again; what the
    customer spent of it stays spent (the invoice, owed again, is what pays for it). The amount taken back."""
    owner = _customer(session, invoice.customer_id or "", lock=True)
    _settle(session, owner, now)
    taken = ZERO
    for g in _grants(session, owner.external_id):
        if g.kind == "paid" and g.invoice_id == invoice.id and g.usable and g.remaining > 0:
            _move(session, f"reversal:{payment_id}:{g.id}", "reversal", g.id, -g.remaining, "topup", invoice.id, now)
            taken += g.remaining
    _watch(session, owner, now, None)
    return taken


def _insert_grant(
    session: Session,
    owner: Customer,
    currency: str,
    kind: str,
    amount: Decimal,
    priority: int,
    expires: dt.date | None,
    reason: str | None,
    now: dt.datetime,
    invoice_id: int | None = None,
) -> int:
    return session.execute(
        insert(CreditGrantRow)
        .values(
            customer_external_id=owner.external_id,
            currency=currency,
            kind=kind,
            amount=amount,
            priority=priority,
            expires_on=expires,
            expires_at=None if expires is None else day_start(expires, owner.timezone),
            reason=reason,
            invoice_id=invoice_id,
            created_at=now,
        )
        .returning(CreditGrantRow.id)
    ).scalar_one()


def _sell_topup(
    session: Session,
    owner: Customer,
    grant_id: int,
    amount: Decimal,
    currency: str,
    settings: store.FinalizeSettings,
    now: dt.datetime,
) -> None:
    """The top-up invoice of a paid grant, issued at once: one untaxed line, the credit sold."""
    today = now.astimezone(_zone(owner)).date()
    line = InvoiceLine(kind=LineKind.CREDIT, description=f"Prepaid credit ({currency})", amount=amount)
    draft = DraftInvoice(
        billing_key=f"topup:{grant_id}",
        customer=bill_to(owner),  # the buyer as on its other invoices: tax id and country too
        currency=currency,
        locale=owner.locale,
        period_start=today,
        period_end=today + dt.timedelta(days=1),
        lines=(line,),
        timezone=owner.timezone,
        scope=InvoiceScope.CREDIT,
    )
    outcome = store.upsert_draft(session, draft)
    store.finalize_many(session, [outcome.invoice_id], settings, today, now)
    session.execute(
        CreditGrantRow.__table__.update()  # type: ignore[attr-defined]
        .where(CreditGrantRow.id == grant_id)
        .values(invoice_id=outcome.invoice_id)
    )
    queue_invoices_finalized(session, store.get_invoices(session, [outcome.invoice_id]))


# -- credit notes and voids ------------------------------------------------------------------------------------


def credit_note_issued(
    session: Session,
    invoice: Invoice,
    note: Invoice,
    *,
    to_balance: bool,
    now: dt.datetime,
    settings: store.FinalizeSettings | None = None,
) -> None:
    """What credit note ``note`` of ``invoice`` does to the ledger, in the caller's transaction (the customer's row
    locked first, before the note took its number):

    1. what the invoice still has to be paid (an unpaid invoice's amount due) is reduced first, as Stripe does:
       a ``balance`` grant from the note, applied to the invoice at once (shown on it as "Credit note …");
    2. then what was paid in cash (the payments the invoice received, less what earlier notes refunded) goes to
       the customer's balance with ``to_balance`` (else it is refunded outside the engine);
    3. then the credits that paid the invoice are given back to their grants (customer balance, then prepaid,
       then free credit): free credit never becomes cash.

    A top-up invoice's note takes its prepaid credit back instead (``_credit_topup``). An invoice of no known
    customer has no ledger: nothing is written."""
    owner = repository.get_customer(session, invoice.customer_id or "", for_update=True)
    if owner is None:
        return
    _settle(session, owner, now)
    if invoice.scope is InvoiceScope.CREDIT:
        _credit_topup(session, owner, invoice, note, to_balance, now)
    else:
        rest = note.total - _reduce_due(session, owner, invoice, note, now)
        cash = min(rest, _cash_refundable(session, invoice, note)) if rest > 0 else ZERO
        if to_balance and cash > 0:
            reason = f"refund of credit note {note.number}"
            grant_id = _insert_grant(session, owner, invoice.currency, "balance", cash, 0, None, reason, now, note.id)
            _move(session, f"refund:{note.id}", "refund", grant_id, cash, "refund", note.id, now)
        _give_credits_back(session, invoice, note, rest - cash, now)
    _watch(session, owner, now, settings or store.FinalizeSettings())  # the customer's alerts and top-ups


def _reduce_due(session: Session, owner: Customer, invoice: Invoice, note: Invoice, now: dt.datetime) -> Decimal:
    """Reduce the amount due of an unpaid invoice by the note (up to what is due); how much."""
    if invoice.status not in (InvoiceStatus.FINALIZED, InvoiceStatus.UNCOLLECTIBLE):
        return ZERO
    due = with_credits(session, [invoice])[0].amount_due
    take = min(note.total, due)
    if take <= 0:
        return ZERO
    reason = f"credit note {note.number}"
    grant_id = _insert_grant(session, owner, invoice.currency, "balance", take, 0, None, reason, now, note.id)
    _move(session, f"reduce:{note.id}", "refund", grant_id, take, "refund", note.id, now)
    _move(session, f"apply:{invoice.id}:{grant_id}", "application", grant_id, -take, "invoice", invoice.id, now)
    return take


def note_reductions(session: Session, note_ids: Sequence[int]) -> dict[int, tuple[int, Decimal]]:
    """What each of these credit notes took off its invoice's amount due (step 1 of :func:`credit_note_issued`):
    note id → (the ``balance`` grant from the note, applied to the invoice at once; the amount). A note that took
    nothing off (its invoice was paid, void, or a top-up) is not in it."""
    found: dict[int, tuple[int, Decimal]] = {}
    movements = {f"reduce:{note_id}": note_id for note_id in note_ids}
    names = list(movements)
    for start in range(0, len(names), 1000):
        rows = session.execute(
            select(CreditEntryRow.movement, CreditEntryRow.grant_id, CreditEntryRow.amount).where(
                CreditEntryRow.movement.in_(names[start : start + 1000]), CreditEntryRow.account == "customer"
            )
        )
        for movement, grant_id, amount in rows:
            found[movements[movement]] = (grant_id, amount)
    return found


def _notes_of(session: Session, invoice_id: int) -> dict[int, Decimal]:
    """The credit notes of an invoice: id → total."""
    rows = session.execute(
        select(InvoiceRow.id, InvoiceRow.total).where(
            InvoiceRow.refers_to_id == invoice_id, InvoiceRow.kind == InvoiceKind.CREDIT_NOTE.value
        )
    ).all()
    return {row.id: row.total for row in rows}


def _invoice_legs(session: Session, invoice_id: int) -> list[tuple[int, str, str, Decimal, int | None]]:
    """(grant, movement, movement kind, amount, the grant's source invoice) of the invoice's ``invoice`` legs."""
    rows = session.execute(
        select(
            CreditEntryRow.grant_id,
            CreditEntryRow.movement,
            CreditEntryRow.kind,
            CreditEntryRow.amount,
            CreditGrantRow.invoice_id,
        )
        .join(CreditGrantRow, CreditGrantRow.id == CreditEntryRow.grant_id)
        .where(CreditEntryRow.invoice_id == invoice_id, CreditEntryRow.account == "invoice")
    ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def _reduced(session: Session, invoice_id: int) -> Decimal:
    """What credit notes took off a top-up invoice's amount due (the only credit a top-up invoice takes)."""
    return sum((amount for _, _, _, amount, _ in _invoice_legs(session, invoice_id)), ZERO)


def _cash_refundable(session: Session, invoice: Invoice, note: Invoice) -> Decimal:
    """What of the invoice was paid in cash and no earlier note gave back: the payments it received
    (``amount_paid``; for an invoice marked paid without a payment recorded, its total less the credits applied),
    less what earlier notes did not take off the amount due nor give back in credits."""
    current = with_credits(session, [invoice])[0]
    notes = _notes_of(session, invoice.id)
    earlier = [i for i in notes if i != note.id]
    legs = _invoice_legs(session, invoice.id)
    applied = sum((amount for _, _, kind, amount, _ in legs if kind == "application"), ZERO)
    cash = current.amount_paid
    if cash <= 0 and invoice.status is InvoiceStatus.PAID:
        cash = invoice.total - applied
    reduced = sum((a for _, _, kind, a, source in legs if kind == "application" and source in earlier), ZERO)
    given_back = -sum((a for _, movement, _, a, _ in legs if movement.startswith("credit:")), ZERO)
    refunded = max(ZERO, sum((notes[i] for i in earlier), ZERO) - reduced - given_back)
    return max(ZERO, cash - refunded)


def _give_credits_back(session: Session, invoice: Invoice, note: Invoice, amount: Decimal, now: dt.datetime) -> None:
    """Give ``amount`` back to the grants that paid the invoice (net of what was given back before), the
    customer's balance first, then prepaid, then free credit, the latest grant first."""
    if amount <= 0:
        return
    notes = set(_notes_of(session, invoice.id))
    paid: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for grant_id, _, _, leg, source in _invoice_legs(session, invoice.id):
        if source not in notes:  # (an amount due reduced by a note is no credit of the customer's)
            paid[grant_id] += leg
    kinds = {g.id: g.kind for g in _grants(session, invoice.customer_id or "", ids=list(paid))}
    for grant_id in sorted(paid, key=lambda g: (-KIND_ORDER[kinds[g]], -g)):
        take = min(amount, paid[grant_id])
        if take > 0:
            _move(session, f"credit:{note.id}:{grant_id}", "void", grant_id, take, "invoice", invoice.id, now)
            amount -= take


def _credit_topup(
    session: Session, owner: Customer, invoice: Invoice, note: Invoice, to_balance: bool, now: dt.datetime
) -> None:
    """A credit note of a top-up invoice. Paid: it takes back that much of the prepaid credit (never more than is
    left unspent: ConflictError) and, with ``to_balance``, puts the money paid for it on the balance. Unpaid: it
    reduces the amount due, and the credit becomes usable, once paid, less what the notes took off."""
    [grant] = [g for g in _grants(session, owner.external_id) if g.kind == "paid" and g.invoice_id == invoice.id]
    if invoice.status is not InvoiceStatus.PAID:
        if grant.usable:  # paid once, its payment reversed: what was spent of it stays to be paid for
            held = _held_back(session, [grant]).get(grant.id, ZERO)
            if note.total > held:
                raise ConflictError(
                    f"{invoice.number} sold {format_amount(grant.amount, grant.currency)} {grant.currency} of prepaid "
                    f"credit, of which {format_amount(held, grant.currency)} is left unspent: a credit note of it can "
                    "take back at most that"
                )
        _reduce_due(session, owner, invoice, note, now)
        return
    if note.total > grant.remaining:
        raise ConflictError(
            f"{invoice.number} sold {format_amount(grant.amount, grant.currency)} {grant.currency} of prepaid credit, "
            f"of which {format_amount(grant.remaining, grant.currency)} is left unspent: a credit note of it can "
            "take back at most that"
        )
    _move(session, f"credit:{note.id}:{grant.id}", "void", grant.id, -note.total, "topup", note.id, now)
    if to_balance:
        reason = f"refund of credit note {note.number}"
        grant_id = _insert_grant(session, owner, invoice.currency, "balance", note.total, 0, None, reason, now, note.id)
        _move(session, f"refund:{note.id}", "refund", grant_id, note.total, "refund", note.id, now)


def invoice_voided(session: Session, invoice: Invoice, now: dt.datetime) -> None:
    """After ``invoice`` became void, in the same transaction: the credits applied to it go back (``_settle``),
    and the balance it put on the customer's account (a negative invoice's amount, its credit notes' refunds) is
    taken back. If some of that balance has already paid other invoices, the void is refused (ConflictError):
    the customer has used money the void says was never owed."""
    owner = repository.get_customer(session, invoice.customer_id or "", for_update=True)
    if owner is None:
        return
    _settle(session, owner, now)
    sources = [invoice.id, *_notes_of(session, invoice.id)]
    ids = set(
        session.execute(
            select(CreditGrantRow.id).where(CreditGrantRow.invoice_id.in_(sources), CreditGrantRow.kind == "balance")
        ).scalars()
    )
    if ids:  # (a payment's excess is the payment's: its reversal takes it back, not the void)
        ids -= set(
            session.execute(
                select(CreditEntryRow.grant_id).where(
                    CreditEntryRow.grant_id.in_(ids), CreditEntryRow.kind == "overpayment"
                )
            ).scalars()
        )
    grants = _grants(session, owner.external_id, ids=sorted(ids))
    spent = sum((g.amount - g.remaining for g in grants), ZERO)
    if spent > 0:
        raise ConflictError(
            f"{invoice.number}: {format_amount(spent, invoice.currency)} {invoice.currency} of the balance it gave "
            "the customer has already paid other invoices; it cannot be voided"
        )
    for g in grants:
        if g.remaining > 0:
            _move(session, f"void:balance:{g.id}", "void", g.id, -g.remaining, "refund", invoice.id, now)


# -- applying at finalization ----------------------------------------------------------------------------------


def lock_owners(session: Session, invoice_ids: Sequence[int]) -> None:
    """Lock the customers of these invoices (in the order ``repository.lock_customers`` takes them): what every
    writer of a customer's invoices takes first, before the invoices themselves."""
    if invoice_ids:
        owners = session.execute(
            select(InvoiceRow.customer_external_id).where(InvoiceRow.id.in_(list(invoice_ids))).distinct()
        ).scalars()
        repository.lock_customers(session, [owner for owner in owners if owner is not None])


def finalize_with_credits(
    session: Session,
    invoice_ids: Sequence[int],
    settings: store.FinalizeSettings,
    today: dt.date,
    now: dt.datetime | None = None,
) -> list[str]:
    """``store.finalize_many``, then the customers' credits applied to each invoice, in the same transaction.
    The invoices' customers are locked first, before the number sequence (the order every other writer of both
    takes them in: a paid grant, a credit note to the balance), so that two transactions never deadlock."""
    lock_owners(session, invoice_ids)
    instant = now or utcnow()
    numbers = store.finalize_many(session, invoice_ids, settings, today, instant)
    apply_credits(session, invoice_ids, instant, settings)
    return numbers


def apply_credits(
    session: Session,
    invoice_ids: Sequence[int],
    now: dt.datetime,
    settings: store.FinalizeSettings | None = None,
) -> None:
    """Apply the customers' credits to these just-finalized invoices (customers locked in id order, so that
    concurrent finalizations never wait for each other in a circle); a negative total goes to the balance. Then
    each customer's alerts and automatic top-ups (an automatic top-up is issued with ``settings``)."""
    invoices = [i for i in store.get_invoices(session, list(invoice_ids)) if _takes_credit(i)]
    by_customer: dict[str, list[Invoice]] = defaultdict(list)
    for invoice in invoices:
        by_customer[invoice.customer_id or ""].append(invoice)
    holders = _with_grants(session, list(by_customer))
    for customer in sorted(by_customer):
        if customer not in holders and all(i.total >= 0 for i in by_customer[customer]):
            continue  # no credit to apply, nothing for the balance: no lock, no ledger read
        owner = _customer(session, customer, lock=True)
        _settle(session, owner, now)
        for invoice in sorted(by_customer[customer], key=lambda i: (i.period_start, i.id)):
            if invoice.total < 0:
                _refund(session, owner, invoice, -invoice.total, now)
            else:
                _apply_one(session, owner, invoice, now)
        _watch(session, owner, now, settings or store.FinalizeSettings())


def _with_grants(session: Session, customers: list[str]) -> set[str]:
    """Which of these customers have a grant at all (one query for a whole batch of invoices)."""
    found: set[str] = set()
    for offset in range(0, len(customers), 5_000):
        chunk = customers[offset : offset + 5_000]
        found |= set(
            session.execute(
                select(CreditGrantRow.customer_external_id)
                .where(CreditGrantRow.customer_external_id.in_(chunk))
                .distinct()
            ).scalars()
        )
    return found


def _takes_credit(invoice: Invoice) -> bool:
    return (
        invoice.kind is InvoiceKind.INVOICE
        and invoice.scope is not InvoiceScope.CREDIT
        and invoice.status is InvoiceStatus.FINALIZED
    )


def _apply_one(session: Session, owner: Customer, invoice: Invoice, now: dt.datetime) -> None:
    """Pay ``invoice`` from its customer's usable credits in its currency, after tax."""
    done = session.execute(
        select(CreditEntryRow.id).where(CreditEntryRow.invoice_id == invoice.id, CreditEntryRow.kind == "application")
    ).first()
    if done is not None or invoice.total <= 0:
        return
    starts = _service_starts(session, invoice)
    began = day_start(_began(invoice, starts), owner.timezone)
    grants = [g for g in _grants(session, owner.external_id) if g.currency == invoice.currency and g.usable]
    written_off = _written_off(session, [g.id for g in grants])
    views = [
        GrantView(
            g.id,
            g.kind,
            g.priority,
            g.expires_at,
            g.created_at,
            g.remaining + written_off.get(g.id, ZERO) if usable_for(g.expires_at, began) else ZERO,
        )
        for g in grants
    ]
    remaining = {g.id: g.remaining for g in grants}
    for part in allocate(views, invoice.total, _caps(invoice, starts, grants, owner.timezone)):
        back = part.amount - min(remaining[part.grant_id], part.amount)
        if back > 0:  # the period began before the credit expired: take back from its write-off
            _move(
                session,
                f"reinstate:{invoice.id}:{part.grant_id}",
                "reinstatement",
                part.grant_id,
                back,
                "expired",
                invoice.id,
                now,
            )
        _move(
            session,
            f"apply:{invoice.id}:{part.grant_id}",
            "application",
            part.grant_id,
            -part.amount,
            "invoice",
            invoice.id,
            now,
        )


def _caps(invoice: Invoice, starts: list[dt.date | None], grants: list[Grant], timezone: str) -> dict[int, Decimal]:
    """The most each expiring grant pays of the invoice: its lines whose service began before the grant expired
    (``starts``, by line; a line without service dates began with the invoice's period), as their share of the
    invoice's total; a discount line is no service: it is shared among the lines it reduces (those of its plans,
    for a coupon restricted to some)."""
    began = _began(invoice, starts)
    lines = zip(invoice.lines, starts, strict=True)
    billed = [(line, start) for line, start in lines if line.kind != LineKind.DISCOUNT]
    discounts = [
        (line.amount, line.details.extra.get("plans") or None)
        for line in invoice.lines
        if line.kind == LineKind.DISCOUNT
    ]
    nets = net_of_discounts([(line.plan_code, line.amount) for line, _ in billed], discounts)
    weights = _with_tax([line for line, _ in billed], nets)
    services = [(day_start(start or began, timezone), w) for (_, start), w in zip(billed, weights, strict=True)]
    return {
        g.id: payable_before(services, g.expires_at, invoice.total, invoice.currency)
        for g in grants
        if g.expires_at is not None
    }


def _with_tax(lines: list[InvoiceLine], nets: list[Decimal]) -> list[Decimal]:
    """What each line adds to the invoice's total, less its part of the discounts: on an invoice whose lines are
    not all taxed alike (each line then says its rate, ``LINE_TAX_RATE``), its net with its own tax added, or as
    it is when its price has the tax inside; otherwise its net (the total's tax is then in proportion)."""
    if not lines or any(LINE_TAX_RATE not in line.details.extra for line in lines):
        return nets
    rates = [Decimal(line.details.extra[LINE_TAX_RATE]) for line in lines]
    return [
        net if line.details.extra.get(LINE_TAX_INCLUSIVE) else net * (100 + rate) / 100
        for line, net, rate in zip(lines, nets, rates, strict=True)
    ]


def _began(invoice: Invoice, starts: list[dt.date | None]) -> dt.date:
    """The first day of what the invoice bills: its billing period; for an opening invoice, the day its
    subscription started (the earliest service day of its lines, ``starts``)."""
    if invoice.scope is InvoiceScope.OPENING:
        return min((start for start in starts if start is not None), default=invoice.period_start)
    return invoice.period_start


def _service_starts(session: Session, invoice: Invoice) -> list[dt.date | None]:
    """The day each line's service began: its service period's start, but not before its subscription started
    (a fee prorated from the 15th serves from the 15th, though its service period is the fee period's)."""
    ids = {line.subscription_id for line in invoice.lines if line.subscription_id is not None}
    began = dict(repository.subscription_starts(session, ids)) if ids else {}
    return [
        max(line.service_start, began[line.subscription_id])
        if line.service_start is not None and line.subscription_id in began
        else line.service_start
        for line in invoice.lines
    ]


def _settle(session: Session, owner: Customer, now: dt.datetime) -> None:
    """Bring the customer's ledger up to ``now``: paid grants whose top-up invoice is paid become usable; credits
    applied to invoices voided since go back; what is left of grants expired by now is written off."""
    grants = _grants(session, owner.external_id)
    paid_topups = _topups_paid(session, [g.invoice_id for g in grants if g.kind == "paid" and not g.usable])
    for g in grants:
        if g.kind == "paid" and not g.usable and g.invoice_id in paid_topups:
            # (less what credit notes of the top-up took off its amount due before it was paid)
            amount = g.amount - _reduced(session, g.invoice_id)
            if amount > 0:
                _move(session, f"grant:{g.id}", "grant", g.id, amount, "topup", g.invoice_id, paid_topups[g.invoice_id])
    _restore_topups(session, [g for g in grants if g.kind == "paid" and g.usable])
    _give_back_voided(session, [g.id for g in grants], now)
    _take_back_reversed(session, owner, now)
    for g in _grants(session, owner.external_id):
        if g.expires_at is not None and g.expires_at <= now and g.remaining > 0:
            count = _count(session, g.id, "expiry")
            # written off on its expiry day; credit that came back to it after that (an invoice it paid voided
            # since) when it came back, never on a day already booked before it did
            when = max(g.expires_at, _last_given_at(session, g.id) or g.expires_at)
            _move(session, f"expiry:{g.id}:{count + 1}", "expiry", g.id, -g.remaining, "expired", None, when)


def _last_given_at(session: Session, grant_id: int) -> dt.datetime | None:
    """When credit was last put on the grant (granted, made usable, given back by a void, reinstated)."""
    found = session.execute(
        select(func.max(CreditEntryRow.effective_at)).where(
            CreditEntryRow.grant_id == grant_id, CreditEntryRow.account == "customer", CreditEntryRow.amount > 0
        )
    ).scalar()
    return None if found is None else as_utc(found)


def _take_back_reversed(session: Session, owner: Customer, now: dt.datetime) -> None:
    """Credit that came back (from an invoice voided since) to a grant whose money was reversed — a bounced
    payment's excess, the credit of a top-up owed again — is taken back at once: it was never received."""
    reversed_ids = set(
        session.execute(
            select(CreditEntryRow.grant_id)
            .join(CreditGrantRow, CreditGrantRow.id == CreditEntryRow.grant_id)
            .where(
                CreditGrantRow.customer_external_id == owner.external_id,
                CreditEntryRow.kind == "reversal",
                CreditEntryRow.account.in_(("payment", "topup")),
            )
        ).scalars()
    )
    if not reversed_ids:
        return
    grants = [g for g in _grants(session, owner.external_id, ids=sorted(reversed_ids)) if g.remaining > 0]
    paid = _topups_paid(session, [g.invoice_id for g in grants if g.kind == "paid"])
    for g in grants:
        if g.kind == "paid" and g.invoice_id in paid:
            continue  # paid again: the credit is the customer's
        account = "topup" if g.kind == "paid" else "payment"
        movement = f"retake:{g.id}:{_count(session, g.id, 'reversal') + 1}"
        _move(session, movement, "reversal", g.id, -g.remaining, account, None, now)


def taken_back(session: Session, grant_ids: Sequence[int]) -> dict[int, Decimal]:
    """What reversals took back from each of these grants (a reversed payment's ``recovered``)."""
    found: dict[int, Decimal] = defaultdict(lambda: ZERO)
    if grant_ids:
        rows = session.execute(
            select(CreditEntryRow.grant_id, CreditEntryRow.amount).where(
                CreditEntryRow.grant_id.in_(list(grant_ids)),
                CreditEntryRow.kind == "reversal",
                CreditEntryRow.account == "customer",
            )
        ).all()
        for grant_id, amount in rows:
            found[grant_id] -= amount
    return dict(found)


def _held_back(session: Session, grants: list[Grant]) -> dict[int, Decimal]:
    """What each of these usable paid grants had taken back by reversals (its top-up invoice owed again) and has
    not had back since, less what credit notes took off the top-up's amount due while it was owed again (the
    customer pays that much less for it): what it gets back once the top-up invoice is paid again. A 50.00
    top-up taken back whole, then a note of 20.00: 30.00."""
    if not grants:
        return {}
    legs = session.execute(
        select(CreditEntryRow.grant_id, CreditEntryRow.movement, CreditEntryRow.kind, CreditEntryRow.amount).where(
            CreditEntryRow.grant_id.in_([g.id for g in grants]),
            CreditEntryRow.account == "topup",
            CreditEntryRow.kind.in_(("reversal", "grant")),
        )
    ).all()
    owed: dict[int, Decimal] = defaultdict(lambda: ZERO)  # taken back by reversals (+), given back since (−)
    first: dict[int, Decimal] = {}  # what the grant's first making usable gave
    for grant_id, movement, kind, amount in legs:
        if kind == "reversal" or movement != f"grant:{grant_id}":  # (not the grant's first making usable)
            owed[grant_id] += amount
        else:
            first[grant_id] = -amount
    held: dict[int, Decimal] = {}
    for g in grants:
        if owed[g.id] > 0 and g.invoice_id is not None:
            # every note that reduced the amount due after the first making usable did so while it was owed again
            reduced_since = _reduced(session, g.invoice_id) - (g.amount - first.get(g.id, g.amount))
            if owed[g.id] - reduced_since > 0:
                held[g.id] = owed[g.id] - reduced_since
    return held


def _restore_topups(session: Session, grants: list[Grant]) -> None:
    """What reversals took back of these usable paid grants comes back once their top-up invoice is paid again
    (:func:`_held_back`)."""
    held = _held_back(session, grants)
    by_id = {g.id: g for g in grants}
    paid = _topups_paid(session, [by_id[grant_id].invoice_id for grant_id in held])
    for grant_id, amount in held.items():
        g = by_id[grant_id]
        if g.invoice_id in paid:
            movement = f"grant:{g.id}:{_count(session, g.id, 'grant') + 1}"
            _move(session, movement, "grant", g.id, amount, "topup", g.invoice_id, paid[g.invoice_id])


def settle_due(
    engine: Engine, now: dt.datetime | None = None, settings: store.FinalizeSettings | None = None
) -> int:
    """Bring the ledgers up to ``now`` of the customers with a grant that has expired or is paid on a top-up
    invoice (expiries written on their date, paid top-ups made usable, credits of voided invoices given back),
    each customer in its own transaction, then their alerts and automatic top-ups; how many customers were
    looked at. Run by the scheduler's billing cycle; reads and finalizations do the same for their customer."""
    instant = now or utcnow()
    with session_scope(read_only(engine)) as session:
        customers = sorted(
            set(
                session.execute(
                    select(CreditGrantRow.customer_external_id).where(
                        (CreditGrantRow.expires_at <= instant) | (CreditGrantRow.kind == "paid")
                    )
                ).scalars()
            )
        )
    for customer in customers:
        with session_scope(engine) as session:
            owner = _customer(session, customer, lock=True)
            _settle(session, owner, instant)
            _watch(session, owner, instant, settings or store.FinalizeSettings())
    return len(customers)


def _give_back_voided(session: Session, grant_ids: list[int], now: dt.datetime) -> None:
    """A ``void`` movement per grant for what it paid of an invoice that has since been voided."""
    if not grant_ids:
        return
    rows = session.execute(
        select(CreditEntryRow.invoice_id, CreditEntryRow.grant_id, CreditEntryRow.amount)
        .join(InvoiceRow, InvoiceRow.id == CreditEntryRow.invoice_id)
        .where(
            CreditEntryRow.grant_id.in_(grant_ids),
            CreditEntryRow.account == "invoice",
            InvoiceRow.status == InvoiceStatus.VOID.value,
        )
    ).all()
    paid: dict[tuple[int | None, int], Decimal] = defaultdict(lambda: ZERO)
    for invoice_id, grant_id, amount in rows:
        paid[(invoice_id, grant_id)] += amount
    for (invoice_id, grant_id), amount in sorted(paid.items(), key=lambda item: (item[0][0] or 0, item[0][1])):
        if amount > 0:
            _move(session, f"void:{invoice_id}:{grant_id}", "void", grant_id, amount, "invoice", invoice_id, now)


def _topups_paid(session: Session, invoice_ids: Iterable[int | None]) -> dict[int, dt.datetime]:
    """The paid ones among these top-up invoices, with when they became paid."""
    ids = [i for i in invoice_ids if i is not None]
    if not ids:
        return {}
    rows = session.execute(
        select(InvoiceRow.id, InvoiceRow.status_changed_at, InvoiceRow.finalized_at).where(
            InvoiceRow.id.in_(ids), InvoiceRow.status == InvoiceStatus.PAID.value
        )
    ).all()
    return {row.id: row.status_changed_at or row.finalized_at or utcnow() for row in rows}


def _move(
    session: Session,
    movement: str,
    kind: str,
    grant_id: int,
    amount: Decimal,
    account: str,
    invoice_id: int | None,
    effective_at: dt.datetime,
) -> None:
    """One movement: ``amount`` on the grant's customer account and its opposite on ``account``."""
    now = utcnow()
    common = {"movement": movement, "kind": kind, "grant_id": grant_id, "invoice_id": invoice_id}
    common |= {"effective_at": effective_at, "recorded_at": now}
    session.execute(
        insert(CreditEntryRow),
        [common | {"account": "customer", "amount": amount}, common | {"account": account, "amount": -amount}],
    )


def _count(session: Session, grant_id: int, kind: str) -> int:
    rows = session.execute(
        select(CreditEntryRow.movement).where(CreditEntryRow.grant_id == grant_id, CreditEntryRow.kind == kind)
    ).scalars()
    return len(set(rows))


def _written_off(session: Session, grant_ids: list[int]) -> dict[int, Decimal]:
    """What the expiries of these grants wrote off and no reinstatement took back (the ``expired`` account)."""
    totals: dict[int, Decimal] = defaultdict(lambda: ZERO)
    if grant_ids:
        rows = session.execute(
            select(CreditEntryRow.grant_id, CreditEntryRow.amount).where(
                CreditEntryRow.grant_id.in_(grant_ids), CreditEntryRow.account == "expired"
            )
        ).all()
        for grant_id, amount in rows:
            totals[grant_id] += amount
    return dict(totals)


# -- alerts and automatic top-ups ------------------------------------------------------------------------------


class _Keep:
    """A setting left as it is (:func:`configure`)."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()

_ALERTS = uuid.UUID("5f0c6a52-8d4e-4a3b-9a51-2c7d0e6b1f93")
"""The namespace of the credit alerts' ids: ``uuid5(_ALERTS, "<kind>:<customer>:<currency>:<number>")``."""

_ALERT_KINDS = {"low": "credit.balance_low", "depleted": "credit.balance_depleted"}


def configure(
    engine: Engine,
    customer: str,
    currency: str,
    *,
    low_balance: Decimal | None = KEEP,
    auto_topup: tuple[Decimal, Decimal] | None = KEEP,
    settings: store.FinalizeSettings | None = None,
    now: dt.datetime | None = None,
) -> tuple[Balance, list[Grant]]:
    """Set (or, with None, turn off) the customer's low-balance alert level and its automatic top-up
    ``(below, amount)`` in ``currency``; a setting given as :data:`KEEP` stays as it is. Bad input names
    ``currency``, ``low_balance``, ``auto_topup.below`` or ``auto_topup.amount``. Setting a level sends no
    alert (the balance is recorded against it: the next fall below it alerts); an automatic top-up that is due
    is issued at once. The currency's credit afterwards, and the automatic top-ups this issued."""
    instant = now or utcnow()
    currency = _currency(currency, "currency")
    if low_balance is not KEEP and low_balance is not None:
        low_balance = _amount(low_balance, currency, "low_balance")
    if auto_topup is not KEEP and auto_topup is not None:
        below, amount = auto_topup
        auto_topup = (_amount(below, currency, "auto_topup.below"), _amount(amount, currency, "auto_topup.amount"))
    with session_scope(engine) as session:
        owner = _customer(session, customer, lock=True)
        _settle(session, owner, instant)
        row = _accounts(session, owner.external_id).get(currency) or _new_account(session, owner, currency, instant)
        if low_balance is not KEEP:
            total = _balance_of(currency, _grants_in(session, owner, currency)).total
            row.low_balance, row.below_low = low_balance, low_balance is not None and total < low_balance
        if auto_topup is not KEEP:
            row.topup_below, row.topup_amount = auto_topup if auto_topup is not None else (None, None)
            row.topup_grant_id = None  # saved again: automatic top-ups paused by a void one resume
        row.updated_at = instant
        issued = _watch(session, owner, instant, settings or store.FinalizeSettings())
        found = _balance_of(currency, _grants_in(session, owner, currency), row)
        return found, [g for g in found.grants if g.id in issued]


def _watch(
    session: Session, owner: Customer, now: dt.datetime, settings: store.FinalizeSettings | None
) -> list[int]:
    """After the customer's credit moved, in the same transaction, its row locked: each currency's alerts, and
    its automatic top-up if one is due (the ids of the paid grants issued). Without ``settings`` (a payment's
    movement, which knows no invoice numbering), the alerts only: a top-up due waits for the next settling."""
    grants = _grants(session, owner.external_id)
    accounts = _accounts(session, owner.external_id)
    topups = [g.invoice_id for g in grants if g.kind == "paid" and g.invoice_id is not None]
    statuses = _statuses(session, topups)
    issued: list[int] = []
    for currency in sorted({g.currency for g in grants} | set(accounts)):
        mine = [g for g in grants if g.currency == currency]
        held = _balance_of(currency, mine)
        row = accounts.get(currency) or _new_account(session, owner, currency, now)
        _alert(session, owner, row, held, now)
        # a top-up on its way: its invoice unpaid (a bounced one, whose credit was usable once, too), or paid and
        # not yet made usable (the next settling does that)
        unpaid = any(
            statuses.get(g.invoice_id or 0) == InvoiceStatus.FINALIZED.value
            or (statuses.get(g.invoice_id or 0) == InvoiceStatus.PAID.value and not g.usable)
            for g in mine
            if g.kind == "paid"
        )
        last = next((g for g in mine if g.id == row.topup_grant_id), None)
        ended = (InvoiceStatus.VOID.value, InvoiceStatus.UNCOLLECTIBLE.value)
        paused = last is not None and statuses.get(last.invoice_id or 0) in ended
        due = topup_due(held.paid, row.topup_below, unpaid=unpaid, paused=paused)
        if settings is not None and row.topup_amount is not None and due:
            reason = f"automatic top-up (paid credit below {format_amount(row.topup_below or ZERO, currency)})"
            grant_id = _insert_grant(session, owner, currency, "paid", row.topup_amount, 0, None, reason, now)
            _sell_topup(session, owner, grant_id, row.topup_amount, currency, settings, now)
            row.topup_grant_id, row.updated_at = grant_id, now
            issued.append(grant_id)
    return issued


def _alert(session: Session, owner: Customer, row: CreditAccountRow, held: Balance, now: dt.datetime) -> None:
    """The alerts the balance calls for, each queued once (its id derived from its number), and the new state."""
    state = AlertState(row.below_low, row.depleted, row.low_alerts, row.depleted_alerts)
    after, alerts = alerts_due(state, held.total, row.low_balance)
    if after == state:
        return
    row.below_low, row.depleted = after.below_low, after.depleted
    row.low_alerts, row.depleted_alerts, row.updated_at = after.low_alerts, after.depleted_alerts, now
    currency = held.currency
    for name in alerts:
        kind = _ALERT_KINDS[name]
        number = after.low_alerts if name == "low" else after.depleted_alerts
        level = round_money((row.low_balance or ZERO) if name == "low" else ZERO, currency)
        day = now.astimezone(_zone(owner)).date().isoformat()
        payload = {
            "customer": owner.external_id,
            "currency": currency,
            "period": day,
            "alert": number,
            "balance": format_amount(held.total, currency),
            "level": format_amount(level, currency),
            "free": format_amount(held.free, currency),
            "paid": format_amount(held.paid, currency),
            "cash_balance": format_amount(held.balance, currency),
            "pending": format_amount(held.pending, currency),
            "created_at": iso_instant(now),
        }
        values = {
            "id": str(uuid.uuid5(_ALERTS, f"{kind}:{owner.external_id}:{currency}:{number}")),
            "kind": kind,
            "customer_external_id": owner.external_id,
            "period": day,
            "value": held.total,
            "limit_value": level,
            "currency": currency,
            "payload": json.dumps(payload, sort_keys=True),
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        session.execute(insert_for(session, NotificationRow.__table__).values(**values).on_conflict_do_nothing())


def _new_account(session: Session, owner: Customer, currency: str, now: dt.datetime) -> CreditAccountRow:
    """A currency's account as it stands before any credit: at 0.00, below every level, depleted."""
    start = AlertState()
    row = CreditAccountRow(
        customer_external_id=owner.external_id,
        currency=currency,
        below_low=start.below_low,
        depleted=start.depleted,
        low_alerts=start.low_alerts,
        depleted_alerts=start.depleted_alerts,
        updated_at=now,
    )
    session.add(row)
    return row


def _accounts(session: Session, customer: str) -> dict[str, CreditAccountRow]:
    rows = session.scalars(select(CreditAccountRow).where(CreditAccountRow.customer_external_id == customer))
    return {row.currency: row for row in rows}


def _grants_in(session: Session, owner: Customer, currency: str) -> list[Grant]:
    return [g for g in _grants(session, owner.external_id) if g.currency == currency]


def _statuses(session: Session, invoice_ids: Sequence[int]) -> dict[int, str]:
    if not invoice_ids:
        return {}
    rows = session.execute(select(InvoiceRow.id, InvoiceRow.status).where(InvoiceRow.id.in_(list(invoice_ids))))
    return {row.id: row.status for row in rows}


def spendable(session: Session, customer: str, currency: str, now: dt.datetime) -> Decimal:
    """What the customer's credit in ``currency`` can pay now, read without writing: the sum of the ``customer``
    legs of its grants that have not expired by ``now`` (free, paid once usable, and the cash balance). As of the
    ledger's last settling: a top-up invoice paid since counts from the next (see :func:`settle_due`)."""
    statement = (
        select(CreditEntryRow.amount)
        .join(CreditGrantRow, CreditGrantRow.id == CreditEntryRow.grant_id)
        .where(
            CreditGrantRow.customer_external_id == customer,
            CreditGrantRow.currency == currency,
            CreditEntryRow.account == "customer",
            (CreditGrantRow.expires_at.is_(None)) | (CreditGrantRow.expires_at > now),
        )
    )
    return sum_in_minor_units(sum(session.scalars(statement), ZERO), currency)


# -- reading ---------------------------------------------------------------------------------------------------


def balance(
    engine: Engine,
    customer: str,
    now: dt.datetime | None = None,
    settings: store.FinalizeSettings | None = None,
) -> list[Balance]:
    """The customer's credit per currency, its ledger first brought up to ``now`` (expiries, paid top-ups; then
    its alerts and automatic top-ups, issued with ``settings``)."""
    instant = now or utcnow()
    with session_scope(engine) as session:
        owner = _customer(session, customer, lock=True)
        _settle(session, owner, instant)
        _watch(session, owner, instant, settings or store.FinalizeSettings())
        grants = _grants(session, owner.external_id)
        accounts = _accounts(session, owner.external_id)
        awaited = _awaited(session, grants)
    currencies = sorted({g.currency for g in grants} | {owner.currency} | set(accounts))
    return [
        _balance_of(currency, [g for g in grants if g.currency == currency], accounts.get(currency), awaited)
        for currency in currencies
    ]


def balance_in(
    engine: Engine,
    customer: str,
    currency: str,
    now: dt.datetime | None = None,
    settings: store.FinalizeSettings | None = None,
) -> Balance:
    """The customer's credit in one ``currency`` (all 0.00 if it has none there), as :func:`balance` gives it."""
    code = _currency(currency, "currency")
    found = {b.currency: b for b in balance(engine, customer, now, settings)}
    return found.get(code) or Balance(code, ZERO, ZERO, ZERO, ZERO, ())


def _awaited(session: Session, grants: list[Grant]) -> dict[int, Decimal]:
    """What each paid grant waits for while its top-up invoice is open (finalized, not paid; nothing once it is
    void or uncollectible): one not usable yet its amount less its top-up's credit notes, one usable whose top-up
    is owed again (a payment reversed) what was held back (:func:`_held_back`)."""
    ids = [g.invoice_id for g in grants if g.kind == "paid" and g.invoice_id is not None]
    open_ = set(
        session.execute(
            select(InvoiceRow.id).where(InvoiceRow.id.in_(ids), InvoiceRow.status == InvoiceStatus.FINALIZED.value)
        ).scalars()
    ) if ids else set()
    waiting = [g for g in grants if g.kind == "paid" and g.invoice_id in open_ and g.invoice_id is not None]
    awaited = {g.id: max(ZERO, g.amount - _reduced(session, g.invoice_id)) for g in waiting if not g.usable}
    return awaited | _held_back(session, [g for g in waiting if g.usable])


def _balance_of(
    currency: str,
    grants: list[Grant],
    account: CreditAccountRow | None = None,
    awaited: dict[int, Decimal] | None = None,
) -> Balance:
    def held(kind: str) -> Decimal:
        return sum_in_minor_units(sum((g.remaining for g in grants if g.kind == kind and g.usable), ZERO), currency)

    if awaited is None:
        awaited = {g.id: g.amount for g in grants if g.kind == "paid" and not g.usable}
    pending = sum_in_minor_units(sum((awaited.get(g.id, ZERO) for g in grants), ZERO), currency)
    found = Balance(currency, held("free"), held("paid"), held("balance"), pending, tuple(grants))
    if account is None:
        return found
    return replace(
        found, low_balance=account.low_balance, topup_below=account.topup_below, topup_amount=account.topup_amount
    )


def ledger(engine: Engine, customer: str) -> list[Entry]:
    """Every leg of every movement of the customer's grants, in the order written."""
    with session_scope(read_only(engine)) as session:
        _customer(session, customer)
        return _entries(session, customer)


def entries_page(
    engine: Engine, customer: str, *, limit: int, after: int | None = None, before: int | None = None
) -> tuple[list[Entry], bool]:
    """At most ``limit`` legs of the customer's ledger by id, after ``after`` or right before ``before``."""
    with session_scope(read_only(engine)) as session:
        _customer(session, customer)
        grant_ids = select(CreditGrantRow.id).where(CreditGrantRow.customer_external_id == customer)
        statement = select(CreditEntryRow).where(CreditEntryRow.grant_id.in_(grant_ids))
        rows = session.scalars(keyset_page(statement, CreditEntryRow.id, limit=limit, after=after, before=before)).all()
        page, more = page_of(rows, limit=limit, before=before)
        return [_entry(row) for row in page], more


def credits_of(
    session: Session, invoice_ids: Sequence[int], before: dt.datetime | None = None
) -> dict[int, tuple[AppliedCredit, ...]]:
    """What credits paid of each invoice, in application order; ``before``: only what they had paid before that
    instant (a credit note's reduction of what is due is applied when the note is issued)."""
    if not invoice_ids:
        return {}
    statement = (
        select(CreditEntryRow, CreditGrantRow.kind, CreditGrantRow.reason)
        .join(CreditGrantRow, CreditGrantRow.id == CreditEntryRow.grant_id)
        .where(CreditEntryRow.invoice_id.in_(list(invoice_ids)), CreditEntryRow.account == "invoice")
        .where(CreditEntryRow.kind == "application")
    )
    if before is not None:
        statement = statement.where(CreditEntryRow.effective_at < before)
    rows = session.execute(statement.order_by(CreditEntryRow.id)).all()
    found: dict[int, list[AppliedCredit]] = defaultdict(list)
    for entry, kind, reason in rows:
        found[entry.invoice_id or 0].append(AppliedCredit(kind, _describe(kind, reason), entry.amount, entry.grant_id))
    return {invoice_id: tuple(credits) for invoice_id, credits in found.items()}


def with_credits(session: Session, invoices: Sequence[Invoice]) -> list[Invoice]:
    """The invoices with the credits applied to them and the payments they received (``Invoice.credits_applied``,
    ``amount_paid``, hence ``amount_due``)."""
    from billing.payments import amounts_paid  # (payments build on the credits: imported when used)

    ids = [i.id for i in invoices]
    applied, paid = credits_of(session, ids), amounts_paid(session, ids)
    return [
        replace(
            i,
            credits_applied=applied.get(i.id, i.credits_applied),
            amount_paid=round_money(paid.get(i.id, i.amount_paid), i.currency),
        )
        for i in invoices
    ]


def _describe(kind: str, reason: str | None) -> str:
    if kind == "balance":
        return f"C{reason[1:]}" if reason and reason.startswith("credit note ") else "Customer balance"
    label = "Free credit" if kind == "free" else "Prepaid credit"
    return f"{label}: {reason}" if reason else label


def ledger_problems(session: Session) -> list[str]:
    """What breaks the ledger's invariants (empty when it holds): a movement whose legs do not sum to zero; a
    grant whose customer account is negative or above its amount; an invoice paid more than its total."""
    problems: list[str] = []
    movements: dict[str, Decimal] = defaultdict(lambda: ZERO)
    held: dict[int, Decimal] = defaultdict(lambda: ZERO)
    paid: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for row in session.execute(select(CreditEntryRow)).scalars():
        movements[row.movement] += row.amount
        if row.account == "customer":
            held[row.grant_id] += row.amount
        elif row.account == "invoice" and row.invoice_id is not None:
            paid[row.invoice_id] += row.amount
    problems += [f"movement {m}: legs sum to {s}" for m, s in movements.items() if s != 0]
    amounts = {row.id: row.amount for row in session.execute(select(CreditGrantRow.id, CreditGrantRow.amount))}
    problems += [f"grant {g}: {h} held of {amounts[g]}" for g, h in held.items() if not ZERO <= h <= amounts[g]]
    statement = select(InvoiceRow.id, InvoiceRow.total).where(InvoiceRow.id.in_(list(paid)))
    totals = {row.id: row.total for row in session.execute(statement)}
    problems += [f"invoice {i}: credits paid {p} of {totals[i]}" for i, p in paid.items() if p > max(totals[i], ZERO)]
    return problems


def _grants(session: Session, customer: str, ids: Sequence[int] | None = None) -> list[Grant]:
    """The customer's grants (only ``ids``, if given) with their remaining amount and whether they are usable."""
    statement = select(CreditGrantRow).where(CreditGrantRow.customer_external_id == customer)
    if ids is not None:
        statement = statement.where(CreditGrantRow.id.in_(list(ids)))
    rows = list(session.execute(statement.order_by(CreditGrantRow.id)).scalars())
    held: dict[int, Decimal] = defaultdict(lambda: ZERO)
    granted: set[int] = set()
    if rows:
        legs = session.execute(
            select(CreditEntryRow.grant_id, CreditEntryRow.kind, CreditEntryRow.amount).where(
                CreditEntryRow.grant_id.in_([r.id for r in rows]), CreditEntryRow.account == "customer"
            )
        ).all()
        for grant_id, kind, amount in legs:
            held[grant_id] += amount
            granted |= {grant_id} if kind in ("grant", "refund", "overpayment") else set()
    numbers = _numbers(session, [r.invoice_id for r in rows if r.kind == "paid"])
    return [
        Grant(
            r.id,
            r.customer_external_id,
            r.currency,
            r.kind,
            r.amount,
            r.priority,
            r.expires_on,
            r.expires_at,
            r.reason,
            r.invoice_id,
            r.created_at,
            round_money(held[r.id], r.currency),
            r.id in granted,
            numbers.get(r.invoice_id or 0),
        )
        for r in rows
    ]


def _entries(session: Session, customer: str) -> list[Entry]:
    grant_ids = select(CreditGrantRow.id).where(CreditGrantRow.customer_external_id == customer)
    rows = session.execute(
        select(CreditEntryRow).where(CreditEntryRow.grant_id.in_(grant_ids)).order_by(CreditEntryRow.id)
    ).scalars()
    return [_entry(row) for row in rows]


def _entry(row: CreditEntryRow) -> Entry:
    return Entry(
        row.id,
        row.movement,
        row.kind,
        row.account,
        row.grant_id,
        row.invoice_id,
        row.amount,
        row.effective_at,
        row.recorded_at,
    )


def _numbers(session: Session, invoice_ids: Iterable[int | None]) -> dict[int, str | None]:
    ids = [i for i in invoice_ids if i is not None]
    if not ids:
        return {}
    rows = session.execute(select(InvoiceRow.id, InvoiceRow.number).where(InvoiceRow.id.in_(ids))).all()
    return {row.id: row.number for row in rows}


def _customer(session: Session, external_id: str, *, lock: bool = False) -> Customer:
    owner = repository.get_customer(session, external_id, for_update=lock)
    if owner is None:
        raise NotFoundError(f"no customer {external_id!r}")
    return owner


def _zone(owner: Customer) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(owner.timezone)


def _currency(code: str, name: str = "--currency") -> str:
    code = code.strip().upper()
    try:
        minor_digits(code)
    except ValueError as error:
        raise BillingInputError(f"{name}: {error}") from None
    return code


def _amount(amount: Decimal, currency: str, name: str = "AMOUNT") -> Decimal:
    if not amount.is_finite() or amount <= 0 or amount >= MAX_AMOUNT or round_money(amount, currency) != amount:
        raise BillingInputError(
            f"{name}: expected a positive amount below {MAX_AMOUNT:,} in whole minor units of {currency} (got {amount})"
        )
    return round_money(amount, currency)


# -- JSON ------------------------------------------------------------------------------------------------------


def grant_json(grant: Grant) -> dict[str, Any]:
    return {
        "id": grant.id,
        "customer": grant.customer,
        "kind": grant.kind,
        "currency": grant.currency,
        "amount": format_amount(grant.amount, grant.currency),
        "remaining": format_amount(grant.remaining, grant.currency),
        "usable": grant.usable,
        "priority": grant.priority,
        "expires": None if grant.expires_on is None else grant.expires_on.isoformat(),
        "expires_at": None if grant.expires_at is None else iso_instant(grant.expires_at),
        "reason": grant.reason,
        "invoice": grant.invoice_number,
        "created_at": iso_instant(grant.created_at),
    }


def balance_json(customer: str, balances: Sequence[Balance]) -> dict[str, Any]:
    def money(b: Balance, amount: Decimal) -> str:
        return format_sum(amount, b.currency)  # (a balance is read however large: check_room)

    return {
        "customer": customer,
        "balances": [
            {
                "currency": b.currency,
                "free": money(b, b.free),
                "paid": money(b, b.paid),
                "balance": money(b, b.balance),
                "total": money(b, b.total),
                "pending": money(b, b.pending),
                "low_balance": None if b.low_balance is None else money(b, b.low_balance),
                "auto_topup": None
                if b.topup_below is None or b.topup_amount is None
                else {"below": money(b, b.topup_below), "amount": money(b, b.topup_amount)},
                "grants": [grant_json(g) for g in b.grants],
            }
            for b in balances
        ],
    }


def entry_json(entry: Entry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "movement": entry.movement,
        "kind": entry.kind,
        "account": entry.account,
        "grant": entry.grant_id,
        "invoice": entry.invoice_id,
        "amount": str(entry.amount),
        "effective_at": iso_instant(entry.effective_at),
        "recorded_at": iso_instant(entry.recorded_at),
    }
