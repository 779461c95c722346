"""An invoice's life after its draft: finalization (a gap-free number, issue and due dates, the seller's
snapshot), status changes, and credit notes. Every function works inside the caller's transaction (a Session);
the caller commits.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from dbkit import for_update, is_postgresql, utcnow
from invoices.errors import InvoiceNotFoundError, InvoiceStateError
from invoices.model import (
    ALLOWED_TRANSITIONS,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceScope,
    InvoiceStatus,
    LineKind,
    Party,
    TaxLine,
    compute_totals,
    taxes_to_json,
)
from invoices.store.numbering import next_numbers, sequence_name
from invoices.store.queries import _lines_of, _to_invoice, get_invoice, stored_taxes
from invoices.tables import InvoiceLineRow, InvoiceRow, InvoiceStatusChangeRow
from pricing_plans.money import ZERO, Rounding, round_money

__all__ = [
    "FinalizeSettings",
    "claim_drafts",
    "create_credit_note",
    "finalize",
    "finalize_many",
    "lock_invoice",
    "reopen_paid",
    "set_status",
]


@dataclass(frozen=True, slots=True)
class FinalizeSettings:
    """How issued documents are numbered and dated."""

    invoice_number_format: str = "INV-{year}-{seq:06d}"
    credit_note_number_format: str = "CN-{year}-{seq:06d}"
    payment_terms_days: int = 14
    seller: Party = field(default_factory=lambda: Party(name=""))


def finalize(
    session: Session, invoice_id: int, settings: FinalizeSettings, today: dt.date, now: dt.datetime | None = None
) -> Invoice:
    """Finalize one draft: the next gap-free number, issue and due dates, the seller's snapshot; ``now``: the
    instant it is issued (``finalized_at``; default: the clock)."""
    finalize_many(session, [invoice_id], settings, today, now)
    return get_invoice(session, invoice_id)


def claim_drafts(session: Session, invoice_ids: Sequence[int]) -> list[int]:
    """The ids among ``invoice_ids`` that are still drafts, locked for this transaction and in the order given;
    on PostgreSQL drafts another process is finalizing right now are skipped, not waited for."""
    if not invoice_ids:
        return []
    statement = select(InvoiceRow.id).where(
        InvoiceRow.id.in_(list(invoice_ids)), InvoiceRow.status == InvoiceStatus.DRAFT.value
    )
    if is_postgresql(session):  # (SQLite has no row locks; its write transaction holds the database's lock)
        statement = statement.with_for_update(skip_locked=True)
    drafts = set(session.execute(statement).scalars())
    return [invoice_id for invoice_id in invoice_ids if invoice_id in drafts]


def finalize_many(
    session: Session,
    invoice_ids: Sequence[int],
    settings: FinalizeSettings,
    today: dt.date,
    now: dt.datetime | None = None,
) -> list[str]:
    """Finalize drafts in one transaction, numbered consecutively in the order given; returns their numbers.
    ``now``: the instant they are issued (``finalized_at``; default: the clock)."""
    if not invoice_ids:
        return []
    rows = session.execute(
        for_update(session, select(InvoiceRow.id, InvoiceRow.status).where(InvoiceRow.id.in_(invoice_ids)))
    ).all()
    status_by_id = {row.id: row.status for row in rows}
    for invoice_id in invoice_ids:
        if invoice_id not in status_by_id:
            raise InvoiceNotFoundError(f"no invoice with id {invoice_id}")
        if status_by_id[invoice_id] != InvoiceStatus.DRAFT:
            raise InvoiceStateError(f"invoice {invoice_id} is {status_by_id[invoice_id]}, not a draft")
    kind = InvoiceKind.INVOICE
    number_format = settings.invoice_number_format
    numbers = next_numbers(session, sequence_name(kind, number_format, today.year), len(invoice_ids))
    written = utcnow()
    issued = now or written
    assigned = [number_format.format(year=today.year, seq=seq) for seq in numbers]
    session.execute(
        update(InvoiceRow),
        [
            {
                "id": invoice_id,
                "number": number,
                "status": InvoiceStatus.FINALIZED.value,
                "issue_date": today,
                "due_date": today + dt.timedelta(days=settings.payment_terms_days),
                "seller": json.dumps(settings.seller.as_dict(), sort_keys=True),
                "finalized_at": issued,
                "status_changed_at": issued,
                "updated_at": written,
            }
            for invoice_id, number in zip(invoice_ids, assigned, strict=True)
        ],
    )
    _record_statuses(session, [(invoice_id, InvoiceStatus.FINALIZED, issued) for invoice_id in invoice_ids])
    return assigned


def _record_statuses(session: Session, changes: Sequence[tuple[int, InvoiceStatus, dt.datetime]]) -> None:
    """Add each (invoice, status it took, when) to the invoices' status history."""
    session.execute(
        insert(InvoiceStatusChangeRow),
        [{"invoice_id": invoice_id, "status": status.value, "changed_at": at} for invoice_id, status, at in changes],
    )


def lock_invoice(session: Session, invoice_id: int) -> None:
    """Lock the invoice's row until the transaction ends (PostgreSQL; SQLite's write transaction holds the
    database's lock already), so that whoever changes it next waits for this transaction and sees its result."""
    session.execute(for_update(session, select(InvoiceRow.id).where(InvoiceRow.id == invoice_id)))


def set_status(
    session: Session, invoice_id: int, status: InvoiceStatus, *, now: dt.datetime | None = None
) -> Invoice:
    """Move an issued invoice on (finalized → paid | void | uncollectible); anything else is refused. ``now``: when
    the change took effect (a payment recorded at an instant; default: the clock), the instant the credits ledger
    dates what follows from it by (a paid top-up's credit becomes usable)."""
    statement = for_update(session, select(InvoiceRow).where(InvoiceRow.id == invoice_id))
    row = session.execute(statement).scalar_one_or_none()
    if row is None:
        raise InvoiceNotFoundError(f"no invoice with id {invoice_id}")
    current = InvoiceStatus(row.status)
    if status == current:
        return _to_invoice(row, _lines_of(session, [row.id]).get(row.id, ()))
    if status not in ALLOWED_TRANSITIONS[current]:
        raise InvoiceStateError(f"invoice {row.number or row.id} is {current}; it cannot become {status}")
    written = utcnow()
    session.execute(
        update(InvoiceRow)
        .where(InvoiceRow.id == invoice_id)
        .values(status=status.value, status_changed_at=now or written, updated_at=written)
    )
    _record_statuses(session, [(invoice_id, status, now or written)])
    return get_invoice(session, invoice_id)


def reopen_paid(session: Session, invoice_id: int, *, now: dt.datetime | None = None) -> Invoice:
    """A paid invoice back to ``finalized``: a payment it was paid with was reversed (a bounced transfer), so it is
    owed again. The only way back from ``paid`` (the database allows it too, since migration 0022); an invoice that
    is not paid is refused. ``now``: when it was owed again (the reversal's instant; default: the clock)."""
    statement = for_update(session, select(InvoiceRow.status, InvoiceRow.number).where(InvoiceRow.id == invoice_id))
    row = session.execute(statement).one_or_none()
    if row is None:
        raise InvoiceNotFoundError(f"no invoice with id {invoice_id}")
    if row.status != InvoiceStatus.PAID.value:
        raise InvoiceStateError(f"invoice {row.number or invoice_id} is {row.status}, not paid: it cannot be reopened")
    written = utcnow()
    session.execute(
        update(InvoiceRow)
        .where(InvoiceRow.id == invoice_id)
        .values(status=InvoiceStatus.FINALIZED.value, status_changed_at=now or written, updated_at=written)
    )
    _record_statuses(session, [(invoice_id, InvoiceStatus.FINALIZED, now or written)])
    return get_invoice(session, invoice_id)


def _line_values(invoice_id: int, position: int, line: InvoiceLine) -> dict[str, object]:
    return {
        "invoice_id": invoice_id,
        "position": position,
        "section": line.section,
        "kind": str(line.kind),
        "description": line.description,
        "meter": line.meter,
        "model": line.model,
        "quantity": line.quantity,
        "unit": line.unit,
        "amount": line.amount,
        "service_start": line.service_start,
        "service_end": line.service_end,
        "details": line.details.to_json(),
        "subscription_id": line.subscription_id,
        "plan_code": line.plan_code,
        "plan_version": line.plan_version,
        "dimension": line.dimension,
    }


def create_credit_note(
    session: Session,
    invoice_number: str,
    amount: Decimal,
    reason: str,
    settings: FinalizeSettings,
    today: dt.date,
    rounding: Rounding = Rounding.HALF_UP,
    *,
    given_back: Decimal = ZERO,
    now: dt.datetime | None = None,
) -> Invoice:
    """Issue a credit note for part or all of an issued invoice (its own gap-free ``CN-`` sequence).

    ``amount`` is what the customer gets back, tax included; it cannot exceed what is left to credit: the total
    less earlier notes and ``given_back``, what other invoices already gave back of it (tax included; the billing
    service knows: a subscription fee refunded when it stopped early). ``now``: the instant it is issued
    (``finalized_at``; default: the clock).
    """
    invoice = get_invoice(session, invoice_number)
    invoice_number = invoice.number or invoice_number  # (given by id or billing key: its number from here on)
    if invoice.kind is not InvoiceKind.INVOICE or invoice.status in (InvoiceStatus.DRAFT, InvoiceStatus.VOID):
        raise InvoiceStateError(
            f"{invoice_number} is a {invoice.status} {invoice.kind}: only issued invoices take credit notes"
        )
    if round_money(amount, invoice.currency, rounding) != amount or amount <= 0:
        raise ValueError(f"--amount must be positive and in whole minor units of {invoice.currency} (got {amount})")
    amount = round_money(amount, invoice.currency, rounding)  # (10 and 1E+1 are stored as 10.00)
    if not reason.strip():
        raise ValueError("a credit note needs a reason")
    credited = session.execute(
        select(InvoiceRow).where(
            InvoiceRow.refers_to_id == invoice.id, InvoiceRow.kind == InvoiceKind.CREDIT_NOTE.value
        )
    ).scalars().all()
    left = invoice.total - sum((row.total for row in credited), ZERO) - given_back
    if amount > left:
        elsewhere = f" ({given_back} of it given back on later invoices)" if given_back else ""
        raise ValueError(
            f"{invoice_number} has {round_money(max(left, ZERO), invoice.currency, rounding)} {invoice.currency} left "
            f"to credit{elsewhere}; {amount} is too much"
        )
    # Split the credited total back into net and tax per rate of the invoice (what earlier credit notes left of
    # each), so tax reports stay right.
    taxes = credited_taxes(amount, invoice, rounding, [tax for row in credited for tax in stored_taxes(row)])
    net = sum((tax.taxable for tax in taxes), ZERO)
    line = InvoiceLine(
        kind=LineKind.CREDIT,
        description=f"Credit for invoice {invoice_number}: {reason}",
        amount=net,
        service_start=invoice.period_start,
        service_end=invoice.period_end,
    )
    totals = compute_totals([line], invoice.currency, invoice.tax_rate, ZERO, rounding, taxes)
    tax = amount - net  # what makes net + tax exactly the credited amount
    number_format = settings.credit_note_number_format
    seq = next_numbers(session, sequence_name(InvoiceKind.CREDIT_NOTE, number_format, today.year))[0]
    written = utcnow()
    issued = now or written
    # Written as a draft with its line, then issued: the database takes lines only on a draft.
    credit_id = session.execute(
        insert(InvoiceRow)
        .values(
            billing_key=f"credit:{invoice_number}:{len(credited) + 1}",
            kind=InvoiceKind.CREDIT_NOTE.value,
            scope=InvoiceScope.CREDIT.value,
            number=None,
            status=InvoiceStatus.DRAFT.value,
            customer_external_id=invoice.customer.external_id or "",
            customer=json.dumps(invoice.customer.as_dict(), sort_keys=True),
            seller=json.dumps(settings.seller.as_dict(), sort_keys=True),
            currency=invoice.currency,
            locale=invoice.locale,
            timezone="UTC",
            period_start=invoice.period_start,
            period_end=invoice.period_end,
            subtotal=totals.subtotal,
            discount=ZERO,
            tax_rate=invoice.tax_rate,
            tax=tax,
            taxes=taxes_to_json(taxes),
            total=amount,
            issue_date=today,
            due_date=today,
            refers_to_id=invoice.id,
            reason=reason,
            created_at=written,
            updated_at=written,
        )
        .returning(InvoiceRow.id)
    ).scalar_one()
    assert totals.total == amount
    session.execute(insert(InvoiceLineRow).values(_line_values(credit_id, 1, line)))
    session.execute(
        update(InvoiceRow)
        .where(InvoiceRow.id == credit_id)
        .values(
            number=number_format.format(year=today.year, seq=seq),
            status=InvoiceStatus.FINALIZED.value,
            finalized_at=issued,
            status_changed_at=issued,
        )
    )
    _record_statuses(session, [(credit_id, InvoiceStatus.FINALIZED, issued)])
    return get_invoice(session, credit_id)


def _within(shares: list[Decimal], weights: list[Decimal]) -> list[Decimal]:
    """``shares`` (of an amount no greater than the weights' sum, none of them negative) moved so that none is
    below zero or above its weight: rounding each share can leave the last one, which takes what rounding leaves, a
    cent past what is left of its rate, or below zero. What one share has too much (or too little) goes to (or
    comes from) the others, in order, as far as each has room; if they have too little, ``shares`` as they were."""
    given = shares
    shares = list(shares)
    for index, (share, weight) in enumerate(zip(shares, weights, strict=True)):
        excess = share - weight if share > weight else min(share, ZERO)
        if not excess:
            continue
        shares[index] = share - excess
        for other, room_weight in enumerate(weights):
            if other == index or not excess:
                continue
            room = room_weight - shares[other] if excess > 0 else -shares[other]
            moved = min(excess, room) if excess > 0 else max(excess, room)
            shares[other] += moved
            excess -= moved
        if excess:
            return given
    return shares


def credited_taxes(
    amount: Decimal, invoice: Invoice, rounding: Rounding = Rounding.HALF_UP, before: Sequence[TaxLine] = ()
) -> tuple[TaxLine, ...]:
    """``amount`` (tax included) of ``invoice`` split over its rates in proportion to what is left to credit of
    each (what the rate adds to the total, taxable + tax, less what the credit notes ``before`` gave back of it; a
    rate that took from the total gives back in proportion, negative),
    the last rate taking what rounding leaves (no part, though, above what is left of its rate, nor below zero: the
    cent goes to another rate); each part's net = round(part × 100 / (100 + rate)), its tax = part − net, neither
    above what is left of the rate's net and tax (a cent moves from one to the other), except a part that is all
    that is left of its rate: it gives back the rest of its net and tax exactly. So credit notes that credit the
    whole invoice give back each rate's net and tax as billed, and no partial one more of either."""
    given: dict[Decimal, tuple[Decimal, Decimal]] = {}
    for tax in before:
        net, amount_of = given.get(tax.rate, (ZERO, ZERO))
        given[tax.rate] = (net + tax.taxable, amount_of + tax.amount)
    sources = [tax for tax in invoice.taxes if tax.taxable + tax.amount != 0] or [
        TaxLine(rate=invoice.tax_rate, taxable=ZERO, amount=ZERO)
    ]
    rests = [
        (tax.taxable - given.get(tax.rate, (ZERO, ZERO))[0], tax.amount - given.get(tax.rate, (ZERO, ZERO))[1])
        for tax in sources
    ]
    # a rate that took something off the invoice (a refund line's: negative) gives it back in proportion too, so
    # that crediting all of the invoice gives back each rate as billed; only what is left in all counts
    weights = [net + tax for net, tax in rests]
    if sum(weights, ZERO) <= 0:
        weights = [max(weight, ZERO) for weight in weights]
    whole = sum(weights, ZERO)
    shares: list[Decimal] = []
    left = amount
    for index, weight in enumerate(weights):
        last = index == len(weights) - 1
        share = left if last or whole == 0 else round_money(amount * weight / whole, invoice.currency, rounding)
        left -= share
        shares.append(share)
    if all(weight >= 0 for weight in weights):
        shares = _within(shares, weights)
    parts: list[TaxLine] = []
    for source, share, weight, rest in zip(sources, shares, weights, rests, strict=True):
        if share == weight and weight != 0:
            net = rest[0]
        else:
            net = round_money(share * 100 / (100 + source.rate), invoice.currency, rounding)
            if rest[0] >= 0 and rest[1] >= 0 and 0 <= share <= weight:  # no more net, nor tax, than is left
                net = min(max(net, share - rest[1], ZERO), rest[0], share)
        parts.append(replace(source, taxable=net, amount=share - net, included=round_money(ZERO, invoice.currency)))
    return tuple(parts)
