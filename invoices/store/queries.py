"""Reading invoices: whole invoices with their lines, and the few narrow reads the billing run, the scheduler,
subscriptions, metrics and the Stripe sync need, each returning typed records (never rows). Every function
works inside the caller's transaction (a Session).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, case, false, func, null, or_, select, true
from sqlalchemy.orm import Session, aliased

from dbkit import as_utc, keyset_page, page_of
from invoices.errors import InvoiceNotFoundError
from invoices.model import (
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceScope,
    InvoiceStatus,
    LineDetails,
    LineKind,
    Party,
    TaxLine,
    taxes_from_json,
)
from invoices.tables import InvoiceLineRow, InvoiceRow, InvoiceStatusChangeRow, details_have
from pricing_plans.money import ZERO

__all__ = [
    "DraftForReview",
    "EarlierDraft",
    "InvoiceAmounts",
    "IssuedLine",
    "IssuedPeriod",
    "OpeningDraft",
    "Receivable",
    "StatusChange",
    "billed_by_period",
    "customers_with_drafts",
    "customers_with_issued_invoice",
    "customers_with_progressive_invoices",
    "draft_periods",
    "drafts_for_review",
    "drafts_of_period",
    "earlier_drafts",
    "fee_invoices",
    "finalized_invoice_ids",
    "get_invoice",
    "get_invoices",
    "invoice_amounts",
    "invoice_id_by_number",
    "invoice_numbers",
    "invoiced_until",
    "invoices_page",
    "issue_dates",
    "issued_between",
    "issued_lines",
    "issued_period_invoices",
    "list_invoices",
    "opening_drafts",
    "period_drafts",
    "period_invoice_states",
    "progressive_keys",
    "progressive_lines",
    "receivables",
    "scopes_by_number",
    "status_changes_between",
    "status_histories",
]

_CHUNK = 5000
_BILLED = ("draft", "finalized", "paid", "uncollectible")  # not void: a void invoice billed nothing
_ISSUED = ("finalized", "paid", "uncollectible")  # issued and not void
# issued invoices waiting for payment (an uncollectible one was given up on: it is listed by its status)
_UNPAID = and_(InvoiceRow.kind == InvoiceKind.INVOICE.value, InvoiceRow.status == InvoiceStatus.FINALIZED.value)


# --- whole invoices --------------------------------------------------------------------------------------


def get_invoice(session: Session, key: int | str) -> Invoice:
    """An invoice by id, number or billing key."""
    statement = select(InvoiceRow)
    if isinstance(key, int) or (key.isascii() and key.isdigit()):
        if not 0 < int(key) < 2**63:  # no row has an id the database cannot hold
            raise InvoiceNotFoundError(f"no invoice {key!r}")
        statement = statement.where(InvoiceRow.id == int(key))
    else:
        statement = statement.where((InvoiceRow.number == key) | (InvoiceRow.billing_key == key))
    row = session.execute(statement).scalar_one_or_none()
    if row is None:
        raise InvoiceNotFoundError(f"no invoice {key!r}")
    return _to_invoice(row, _lines_of(session, [row.id]).get(row.id, ()), _refers_to(session, row))


def get_invoices(session: Session, invoice_ids: Sequence[int]) -> list[Invoice]:
    """Invoices by id, with their lines (two queries per chunk of ids), in the order of the ids."""
    found: dict[int, Invoice] = {}
    ids = list(invoice_ids)
    for offset in range(0, len(ids), _CHUNK):
        chunk = ids[offset : offset + _CHUNK]
        rows = session.execute(select(InvoiceRow).where(InvoiceRow.id.in_(chunk))).scalars().all()
        lines = _lines_of(session, [row.id for row in rows])
        found.update({row.id: _to_invoice(row, lines.get(row.id, ())) for row in rows})
    return [found[invoice_id] for invoice_id in ids if invoice_id in found]


def list_invoices(
    session: Session,
    *,
    period_start: dt.date | None = None,
    status: InvoiceStatus | str | None = None,
    customer: str | None = None,
    kind: InvoiceKind | None = None,
    with_lines: bool = False,
    unpaid: bool = False,
) -> list[Invoice]:
    """Invoices, oldest first, filtered; lines are loaded (in one query) only when asked for. ``period_start``, the
    first of a month: the invoices dated in that month, and the invoices of the weeks and anniversary months that
    end in it. ``unpaid``: only invoices (not credit notes) issued and waiting for payment (``finalized``)."""
    statement = select(InvoiceRow).order_by(InvoiceRow.period_start, InvoiceRow.customer_external_id, InvoiceRow.id)
    if unpaid:
        statement = statement.where(_UNPAID)
    if period_start is not None:
        statement = statement.where(_listed_in(period_start))
    if status is not None:
        statement = statement.where(InvoiceRow.status == str(status))
    if customer is not None:
        statement = statement.where(InvoiceRow.customer_external_id == customer)
    if kind is not None:
        statement = statement.where(InvoiceRow.kind == kind.value)
    rows = session.execute(statement).scalars().all()
    lines = _lines_of(session, [row.id for row in rows]) if with_lines else {}
    return [_to_invoice(row, lines.get(row.id, ())) for row in rows]


def _listed_in(period_start: dt.date) -> ColumnElement[bool]:
    """The invoices of the period starting ``period_start``; when it is the first of a month, also the period
    invoices of every billing period ending in that month (weeks, anniversary months)."""
    if period_start.day != 1:
        return InvoiceRow.period_start == period_start
    month_end = (period_start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return or_(
        InvoiceRow.period_start == period_start,
        and_(InvoiceRow.scope == InvoiceScope.PERIOD.value, _dated(period_start, month_end)),
    )


def invoices_page(
    session: Session,
    *,
    limit: int,
    after: int | None = None,
    before: int | None = None,
    period_start: dt.date | None = None,
    status: InvoiceStatus | str | None = None,
    customer: str | None = None,
    unpaid: bool = False,
) -> tuple[list[Invoice], bool]:
    """One page of the invoices and credit notes by id — the order they were first written in
    (``dbkit.keyset_page``) — filtered as :func:`list_invoices` filters, without their lines; and whether more
    lie beyond it."""
    statement = select(InvoiceRow)
    if unpaid:
        statement = statement.where(_UNPAID)
    if period_start is not None:
        statement = statement.where(_listed_in(period_start))
    if status is not None:
        statement = statement.where(InvoiceRow.status == str(status))
    if customer is not None:
        statement = statement.where(InvoiceRow.customer_external_id == customer)
    statement = keyset_page(statement, InvoiceRow.id, limit=limit, after=after, before=before)
    rows, more = page_of(session.execute(statement).scalars().all(), limit=limit, before=before)
    return [_to_invoice(row, ()) for row in rows], more


# --- what is billed already ------------------------------------------------------------------------------


def billed_by_period(
    session: Session, customers: Iterable[str], period_start: dt.date, *, exclude: Iterable[str] = ()
) -> dict[tuple[str, int | None, str | None, str | None], Decimal]:
    """What invoices already bill for usage of the period starting ``period_start``: the sum of usage, late-usage
    and true-up lines per (customer, subscription, meter, dimension; meter and dimension None for the true-up,
    dimension None for a charge not priced by dimension), on every invoice that is not void — drafts too, so
    usage billed late on one open invoice is not billed again on the next — except the invoices being written
    now (their billing keys in ``exclude``). Late usage is priced against it, part by part."""
    statement = (
        select(
            InvoiceRow.customer_external_id,
            InvoiceLineRow.subscription_id,
            InvoiceLineRow.meter,
            InvoiceLineRow.dimension,
            InvoiceLineRow.amount,
        )
        .join(InvoiceRow, InvoiceRow.id == InvoiceLineRow.invoice_id)
        .where(
            InvoiceRow.status.in_(_BILLED),
            InvoiceRow.kind == InvoiceKind.INVOICE.value,
            InvoiceLineRow.kind.in_((LineKind.USAGE.value, LineKind.LATE_USAGE.value, LineKind.COMMITMENT.value)),
            InvoiceLineRow.service_start == period_start,
            InvoiceRow.customer_external_id.in_(list(customers)),
        )
    )
    excluded = list(exclude)
    if excluded:
        statement = statement.where(InvoiceRow.billing_key.not_in(excluded))
    billed: dict[tuple[str, int | None, str | None, str | None], Decimal] = {}
    for customer, subscription_id, meter, dimension, amount in session.execute(statement):
        key = (customer, subscription_id, meter, dimension)
        billed[key] = billed.get(key, ZERO) + amount
    return billed


def progressive_keys(session: Session, subscription_ids: Iterable[int], period_start: dt.date) -> dict[int, list[str]]:
    """The billing keys of the progressive invoices (void ones too) of each subscription in the period starting
    ``period_start``."""
    wanted = sorted(set(subscription_ids))
    found: dict[int, list[str]] = {}
    for offset in range(0, len(wanted), 5000):
        statement = select(InvoiceRow.subscription_id, InvoiceRow.billing_key).where(
            InvoiceRow.scope == InvoiceScope.PROGRESSIVE.value,
            InvoiceRow.subscription_id.in_(wanted[offset : offset + 5000]),
            InvoiceRow.period_start == period_start,
        )
        for subscription_id, key in session.execute(statement):
            if subscription_id is not None:
                found.setdefault(subscription_id, []).append(key)
    return found


def progressive_lines(
    session: Session, customers: Iterable[str], period_start: dt.date, period_end: dt.date
) -> dict[str, list[InvoiceLine]]:
    """The lines of the progressive invoices (not void) of each of ``customers`` for the billing period
    ``[period_start, period_end)``, invoice by invoice in the order they were issued."""
    wanted = sorted(set(customers))
    found: dict[str, list[InvoiceLine]] = {}
    for offset in range(0, len(wanted), _CHUNK):
        statement = (
            select(InvoiceRow.id, InvoiceRow.customer_external_id)
            .where(
                InvoiceRow.scope == InvoiceScope.PROGRESSIVE.value,
                InvoiceRow.status.in_(_BILLED),
                InvoiceRow.period_start == period_start,
                InvoiceRow.period_end == period_end,
                InvoiceRow.customer_external_id.in_(wanted[offset : offset + _CHUNK]),
            )
            .order_by(InvoiceRow.id)
        )
        rows = session.execute(statement).all()
        lines = _lines_of(session, [row.id for row in rows])
        for invoice_id, customer in rows:
            found.setdefault(customer, []).extend(lines.get(invoice_id, ()))
    return found


def customers_with_progressive_invoices(session: Session, period_start: dt.date) -> set[str]:
    """The customers with a progressive invoice (void ones too) in a period starting ``period_start``."""
    statement = (
        select(InvoiceRow.customer_external_id)
        .distinct()
        .where(InvoiceRow.scope == InvoiceScope.PROGRESSIVE.value, InvoiceRow.period_start == period_start)
    )
    return {customer for customer in session.scalars(statement) if customer is not None}


def fee_invoices(
    session: Session, fees: Iterable[tuple[int, dt.date]], *, exclude: Iterable[str] = ()
) -> list[tuple[Invoice, tuple[TaxLine, ...]]]:
    """The invoices (with their lines) that are not void and bill a subscription fee line of one of ``fees``
    (subscription, fee period start), except those whose billing keys are in ``exclude`` (the invoices being
    written now), each with the tax lines of its credit notes (what they gave back of it per rate): what they
    billed for those fees and what their discounts and notes left of it (``billing.core.fees.billed_and_paid``)."""
    wanted = set(fees)
    if not wanted:
        return []
    statement = _fee_lines(wanted, exclude, InvoiceLineRow.invoice_id)
    ids = sorted({invoice_id for *key, invoice_id in session.execute(statement) if tuple(key) in wanted})
    credited: dict[int, list[TaxLine]] = {invoice_id: [] for invoice_id in ids}
    for offset in range(0, len(ids), _CHUNK):
        notes = select(InvoiceRow).where(
            InvoiceRow.kind == InvoiceKind.CREDIT_NOTE.value,
            InvoiceRow.refers_to_id.in_(ids[offset : offset + _CHUNK]),
            InvoiceRow.status.in_(_BILLED),
        )
        for note in session.scalars(notes):
            credited[note.refers_to_id or 0].extend(stored_taxes(note))
    return [(invoice, tuple(credited[invoice.id])) for invoice in get_invoices(session, ids)]


def _fee_lines(wanted: set[tuple[int, dt.date]], exclude: Iterable[str], column: Any) -> Any:
    """(subscription, service start, ``column``) of the subscription fee lines of ``wanted``'s subscriptions on
    invoices that are not void, except those whose billing keys are in ``exclude``."""
    statement = (
        select(InvoiceLineRow.subscription_id, InvoiceLineRow.service_start, column)
        .join(InvoiceRow, InvoiceRow.id == InvoiceLineRow.invoice_id)
        .where(
            InvoiceRow.status.in_(_BILLED),
            InvoiceRow.kind == InvoiceKind.INVOICE.value,
            InvoiceLineRow.kind == LineKind.SUBSCRIPTION.value,
            InvoiceLineRow.subscription_id.in_(sorted({subscription for subscription, _ in wanted})),
        )
    )
    excluded = list(exclude)
    return statement.where(InvoiceRow.billing_key.not_in(excluded)) if excluded else statement


@dataclass(frozen=True, slots=True)
class IssuedPeriod:
    """An issued period invoice, as late usage is measured against it.

    Attributes:
      customer_external_id: whose invoice it is.
      period_start, period_end: the billing period ``[start, end)``, in the customer's ``timezone``.
      usage_cutoff: when its usage was aggregated (UTC): every event received up to it was counted.
    """

    customer_external_id: str
    period_start: dt.date
    period_end: dt.date
    timezone: str
    usage_cutoff: dt.datetime


def issued_period_invoices(
    session: Session, *, since: dt.date, before: dt.date, customer: str | None = None
) -> list[IssuedPeriod]:
    """The issued (not void) period invoices of the periods starting from ``since`` up to ``before`` (excluded),
    of every customer or of one."""
    statement = select(
        InvoiceRow.customer_external_id,
        InvoiceRow.period_start,
        InvoiceRow.period_end,
        InvoiceRow.timezone,
        InvoiceRow.usage_as_of,
        InvoiceRow.finalized_at,
    ).where(
        InvoiceRow.kind == InvoiceKind.INVOICE.value,
        InvoiceRow.scope == InvoiceScope.PERIOD.value,
        InvoiceRow.status.in_(_ISSUED),
        InvoiceRow.period_start >= since,
        InvoiceRow.period_start < before,
    )
    if customer is not None:
        statement = statement.where(InvoiceRow.customer_external_id == customer)
    issued = []
    for customer_id, start, end, timezone, usage_as_of, finalized_at in session.execute(statement):
        # usage_as_of is the run's ingestion cutoff; an invoice written before it was recorded has its
        # finalization instead (every issued invoice has one)
        billed_from = usage_as_of or finalized_at
        assert billed_from is not None
        issued.append(IssuedPeriod(customer_id, start, end, timezone, as_utc(billed_from)))
    return issued


def invoiced_until(
    session: Session,
    customer: str,
    *,
    calendar_months: bool = False,
    of: Callable[[dt.date, dt.date], bool] | None = None,
) -> dt.date | None:
    """The end of the last period for which ``customer`` has an issued (not void) period invoice, if any; with
    ``calendar_months``, of the invoices of calendar months only (not of weeks nor anniversary months); with
    ``of``, of the invoices whose period (start, end) it takes (one subscription's billing periods)."""
    statement = select(func.max(InvoiceRow.period_end)).where(
        InvoiceRow.customer_external_id == customer,
        InvoiceRow.scope == InvoiceScope.PERIOD.value,
        InvoiceRow.status.in_(_ISSUED),
    )
    if of is not None:
        calendar_months = True  # (read every period, then keep those ``of`` takes)
    if not calendar_months:
        return session.execute(statement).scalar_one_or_none()
    periods = session.execute(
        select(InvoiceRow.period_start, InvoiceRow.period_end).where(
            InvoiceRow.customer_external_id == customer,
            InvoiceRow.scope == InvoiceScope.PERIOD.value,
            InvoiceRow.status.in_(_ISSUED),
        )
    ).all()
    if of is not None:
        return max((end for start, end in periods if of(start, end)), default=None)
    months = [end for start, end in periods if start.day == 1 and end == (start + dt.timedelta(days=32)).replace(day=1)]
    return max(months, default=None)


# --- drafts and what is issued, for finalization ---------------------------------------------------------


def customers_with_drafts(
    session: Session, period_start: dt.date, scope: InvoiceScope | None = None, *, ending_by: dt.date | None = None
) -> set[str]:
    """The customers with a draft invoice (of any scope, or of ``scope``) dated in the period starting
    ``period_start``; with ``ending_by``, of a period whose last day falls in ``[period_start, ending_by)``."""
    statement = (
        select(InvoiceRow.customer_external_id)
        .distinct()
        .where(_dated(period_start, ending_by), InvoiceRow.status == InvoiceStatus.DRAFT.value)
    )
    if scope is not None:
        statement = statement.where(InvoiceRow.scope == scope.value)
    return set(session.scalars(statement))


def _dated(period_start: dt.date, ending_by: dt.date | None) -> ColumnElement[bool]:
    """Invoices of the period starting ``period_start``, or (``ending_by``) of every period whose last day falls
    in ``[period_start, ending_by)``: its exclusive end in ``(period_start, ending_by]``."""
    if ending_by is None:
        return InvoiceRow.period_start == period_start
    # a billing period is a week or a month: it began at most 31 days before its last day (the index's range)
    return and_(
        InvoiceRow.period_start >= period_start - dt.timedelta(days=31),
        InvoiceRow.period_start < ending_by,
        InvoiceRow.period_end > period_start,
        InvoiceRow.period_end <= ending_by,
    )


def draft_periods(
    session: Session, period_start: dt.date, ending_by: dt.date, customer: str | None = None
) -> set[tuple[dt.date, dt.date]]:
    """The ``(start, end)`` of every period with a period draft (of ``customer``, if given) whose last day falls
    in ``[period_start, ending_by)``."""
    statement = (
        select(InvoiceRow.period_start, InvoiceRow.period_end)
        .distinct()
        .where(
            _dated(period_start, ending_by),
            InvoiceRow.status == InvoiceStatus.DRAFT.value,
            InvoiceRow.scope == InvoiceScope.PERIOD.value,
            InvoiceRow.kind == InvoiceKind.INVOICE.value,
        )
    )
    if customer is not None:
        statement = statement.where(InvoiceRow.customer_external_id == customer)
    return {(start, end) for start, end in session.execute(statement)}


def customers_with_issued_invoice(
    session: Session, period_start: dt.date, *, ending_by: dt.date | None = None, period_end: dt.date | None = None
) -> set[str]:
    """The customers whose period invoice of the period starting ``period_start`` (and ending ``period_end``, if
    given) is issued (void included); with ``ending_by``, an invoice of a period whose last day falls in
    ``[period_start, ending_by)``."""
    statement = (
        select(InvoiceRow.customer_external_id)
        .distinct()
        .where(
            _dated(period_start, ending_by),
            InvoiceRow.status != InvoiceStatus.DRAFT.value,
            InvoiceRow.scope == InvoiceScope.PERIOD.value,
        )
    )
    if period_end is not None:
        statement = statement.where(InvoiceRow.period_end == period_end)
    return set(session.scalars(statement))


def period_invoice_states(
    session: Session, period_start: dt.date, ending_by: dt.date
) -> dict[tuple[str, dt.date, dt.date], bool]:
    """The period invoices of every period other than ``[period_start, ending_by)`` itself (weeks, anniversary
    months) whose last day falls in it: for each ``(customer, start, end)``, whether it is issued (void included)
    or still a draft."""
    statement = select(
        InvoiceRow.customer_external_id, InvoiceRow.period_start, InvoiceRow.period_end, InvoiceRow.status
    ).where(
        _dated(period_start, ending_by),
        InvoiceRow.scope == InvoiceScope.PERIOD.value,
        InvoiceRow.kind == InvoiceKind.INVOICE.value,
        or_(InvoiceRow.period_start != period_start, InvoiceRow.period_end != ending_by),
    )
    states: dict[tuple[str, dt.date, dt.date], bool] = {}
    for customer, start, end, status in session.execute(statement):
        key = (customer, start, end)
        states[key] = states.get(key, False) or status != InvoiceStatus.DRAFT.value
    return states


def period_drafts(
    session: Session, period_start: dt.date, period_end: dt.date, customers: Collection[str]
) -> list[int]:
    """The ids of the period drafts of exactly ``[period_start, period_end)`` of ``customers``, in customer
    order."""
    statement = (
        select(InvoiceRow.id, InvoiceRow.customer_external_id)
        .where(
            InvoiceRow.status == InvoiceStatus.DRAFT.value,
            InvoiceRow.scope == InvoiceScope.PERIOD.value,
            InvoiceRow.period_start == period_start,
            InvoiceRow.period_end == period_end,
        )
        .order_by(InvoiceRow.customer_external_id, InvoiceRow.id)
    )
    wanted = set(customers)
    return [invoice_id for invoice_id, owner in session.execute(statement) if owner in wanted]


@dataclass(frozen=True, slots=True)
class EarlierDraft:
    """An unissued draft (a period or an opening invoice) of a customer for a period that ended before the start
    of another draft of the same customer, which waits for it."""

    invoice_id: int
    customer_external_id: str
    period_start: dt.date
    period_end: dt.date


def earlier_drafts(
    session: Session,
    invoice_ids: Sequence[int],
    *,
    issued_along: Collection[int] | None = None,
    coupon_holders: Callable[[Collection[str]], Collection[str]] | None = None,
) -> dict[int, EarlierDraft]:
    """For each period draft among ``invoice_ids``, the first unissued draft of its customer that it waits for: a
    period or an opening invoice whose period ended by the day the draft's begins, not issued along with it (among
    ``issued_along``, by default ``invoice_ids``), and whose content the draft's depends on. A later invoice
    adjusts against what earlier ones bill: the fee of a fee period both bill a line of (an in-advance fee given
    back when a subscription stops early; the same subscription and service start), and, for the customers
    ``coupon_holders`` names among those it is given (holding a coupon), the periods a coupon already reduced.
    Issued before such an earlier draft, it would adjust against content that is not final."""
    if not invoice_ids:
        return {}
    along = set(invoice_ids if issued_along is None else issued_along)
    wanted: dict[int, tuple[str, dt.date]] = {}
    id_list = sorted(set(invoice_ids))
    for offset in range(0, len(id_list), _CHUNK):
        statement = select(InvoiceRow.id, InvoiceRow.customer_external_id, InvoiceRow.period_start).where(
            InvoiceRow.id.in_(id_list[offset : offset + _CHUNK]),
            InvoiceRow.status == InvoiceStatus.DRAFT.value,
            InvoiceRow.scope == InvoiceScope.PERIOD.value,
        )
        wanted.update({invoice_id: (owner or "", start) for invoice_id, owner, start in session.execute(statement)})
    owners = {owner for owner, _ in wanted.values()}
    drafts = _earlier_candidates(session, owners, set())
    fees = _fee_keys(session, [*wanted, *(d.invoice_id for found in drafts.values() for d in found)])
    holders = set(coupon_holders(sorted(owners)) if coupon_holders is not None and owners else ())
    waits: dict[int, EarlierDraft] = {}
    while True:  # a draft issued along that itself waits is not issued: those after it that depend on it wait too
        for invoice_id, (owner, start) in wanted.items():
            billing = fees.get(invoice_id, set())
            earlier = next(
                (
                    d for d in drafts.get(owner, ())
                    if d.invoice_id not in along and d.period_end <= start
                    and (owner in holders or fees.get(d.invoice_id, set()) & billing)
                ),
                None,
            )  # fmt: skip
            if earlier is not None:
                waits[invoice_id] = earlier
        if not along & set(waits):
            return waits
        along -= set(waits)


def _earlier_candidates(session: Session, owners: set[str], along: set[int]) -> dict[str, list[EarlierDraft]]:
    """The unissued period and opening drafts of ``owners`` but those in ``along``, by customer, in period order."""
    found: dict[str, list[EarlierDraft]] = {}
    listed = sorted(owners)
    for offset in range(0, len(listed), _CHUNK):
        statement = (
            select(InvoiceRow.id, InvoiceRow.customer_external_id, InvoiceRow.period_start, InvoiceRow.period_end)
            .where(
                InvoiceRow.customer_external_id.in_(listed[offset : offset + _CHUNK]),
                InvoiceRow.status == InvoiceStatus.DRAFT.value,
                InvoiceRow.scope.in_([InvoiceScope.PERIOD.value, InvoiceScope.OPENING.value]),
            )
            .order_by(InvoiceRow.period_start, InvoiceRow.id)
        )
        for row in session.execute(statement):
            if row.id not in along:
                found.setdefault(row.customer_external_id, []).append(EarlierDraft(*row))
    return found


def _fee_keys(session: Session, invoice_ids: Sequence[int]) -> dict[int, set[tuple[int, dt.date]]]:
    """The (subscription, service start) of each invoice's subscription fee lines: the fee periods it bills."""
    keys: dict[int, set[tuple[int, dt.date]]] = {}
    listed = sorted(set(invoice_ids))
    for offset in range(0, len(listed), _CHUNK):
        statement = select(
            InvoiceLineRow.invoice_id, InvoiceLineRow.subscription_id, InvoiceLineRow.service_start
        ).where(
            InvoiceLineRow.invoice_id.in_(listed[offset : offset + _CHUNK]),
            InvoiceLineRow.kind == LineKind.SUBSCRIPTION.value,
            InvoiceLineRow.subscription_id.is_not(None),
            InvoiceLineRow.service_start.is_not(None),
        )
        for invoice_id, subscription_id, start in session.execute(statement):
            if subscription_id is not None and start is not None:  # (as selected: for the type checker)
                keys.setdefault(invoice_id, set()).add((subscription_id, start))
    return keys


def drafts_of_period(
    session: Session,
    period_start: dt.date,
    opening_subscriptions: Iterable[int],
    customer: str | None = None,
    *,
    customers: Collection[str] | None = None,
    ending_by: dt.date | None = None,
) -> list[int]:
    """The ids of the drafts a period's finalization issues, in customer order: the period invoices of the period
    starting ``period_start`` and the opening invoices of ``opening_subscriptions`` (those that start in it:
    an opening invoice is dated by its fee period, which for a yearly plan begins before the subscription); only
    ``customer``'s, or those of ``customers``, if given."""
    statement = (
        select(InvoiceRow.id)
        .where(
            InvoiceRow.status == InvoiceStatus.DRAFT.value,
            or_(
                and_(InvoiceRow.scope == InvoiceScope.PERIOD.value, _dated(period_start, ending_by)),
                and_(
                    InvoiceRow.scope == InvoiceScope.OPENING.value,
                    InvoiceRow.subscription_id.in_(sorted(set(opening_subscriptions))),
                ),
            ),
        )
        .order_by(InvoiceRow.customer_external_id, InvoiceRow.id)
    )
    if customer is not None:
        statement = statement.where(InvoiceRow.customer_external_id == customer)
    if customers is not None:  # (any number of them: filtered here, not in an IN list of bound parameters)
        wanted = set(customers)
        rows = session.execute(statement.add_columns(InvoiceRow.customer_external_id))
        return [invoice_id for invoice_id, owner in rows if owner in wanted]
    return list(session.scalars(statement))


@dataclass(frozen=True, slots=True)
class OpeningDraft:
    """A subscription's opening invoice that is still a draft."""

    invoice_id: int
    billing_key: str
    customer_external_id: str
    subscription_id: int


def opening_drafts(session: Session, customer: str | None = None) -> list[OpeningDraft]:
    """Every opening invoice still a draft, of every customer or of one, in customer order."""
    statement = (
        select(InvoiceRow.id, InvoiceRow.billing_key, InvoiceRow.customer_external_id, InvoiceRow.subscription_id)
        .where(InvoiceRow.status == InvoiceStatus.DRAFT.value, InvoiceRow.scope == InvoiceScope.OPENING.value)
        .order_by(InvoiceRow.customer_external_id, InvoiceRow.id)
    )
    if customer is not None:
        statement = statement.where(InvoiceRow.customer_external_id == customer)
    drafts = []
    for invoice_id, billing_key, customer_id, subscription_id in session.execute(statement):
        assert subscription_id is not None  # every opening invoice names its subscription
        drafts.append(OpeningDraft(invoice_id, billing_key, customer_id, subscription_id))
    return drafts


@dataclass(frozen=True, slots=True)
class DraftForReview:
    """What deciding whether a draft may be issued needs: its total, its content hash (what an approval is
    given for) and the periods of its late-usage lines.

    Attributes:
      invoice_id, billing_key, scope, customer_external_id, currency, period_start, period_end, total: as stored.
      content_hash: the hash of everything the customer sees (``draft_row``); it changes with the content.
      late_periods: the first days of the earlier periods its late-usage lines bill, sorted, each once.
    """

    invoice_id: int
    billing_key: str
    scope: InvoiceScope
    customer_external_id: str
    currency: str
    period_start: dt.date
    period_end: dt.date
    total: Decimal
    content_hash: str
    late_periods: tuple[dt.date, ...]


def drafts_for_review(
    session: Session,
    *,
    invoice_ids: Sequence[int] | None = None,
    period_start: dt.date | None = None,
    customer: str | None = None,
) -> list[DraftForReview]:
    """The draft invoices that a finalization would issue (period and opening invoices), in customer order:
    those of ``invoice_ids``, of the period starting ``period_start`` (listed as ``list_invoices`` lists it), of
    ``customer``; every draft when no filter is given. Two queries per chunk of ids."""
    statement = (
        select(
            InvoiceRow.id, InvoiceRow.billing_key, InvoiceRow.scope, InvoiceRow.customer_external_id,
            InvoiceRow.currency, InvoiceRow.period_start, InvoiceRow.period_end, InvoiceRow.total,
            InvoiceRow.content_hash,
        )
        .where(
            InvoiceRow.status == InvoiceStatus.DRAFT.value,
            InvoiceRow.kind == InvoiceKind.INVOICE.value,
            InvoiceRow.scope.in_([InvoiceScope.PERIOD.value, InvoiceScope.OPENING.value]),
        )
        .order_by(InvoiceRow.customer_external_id, InvoiceRow.id)
    )
    if period_start is not None:
        statement = statement.where(_listed_in(period_start))
    if customer is not None:
        statement = statement.where(InvoiceRow.customer_external_id == customer)
    chunks = [None] if invoice_ids is None else [
        list(invoice_ids)[offset : offset + _CHUNK] for offset in range(0, len(invoice_ids), _CHUNK)
    ]
    found: list[DraftForReview] = []
    for chunk in chunks:
        rows = session.execute(statement if chunk is None else statement.where(InvoiceRow.id.in_(chunk))).all()
        late: dict[int, set[dt.date | None]] = {}
        lines = select(InvoiceLineRow.invoice_id, InvoiceLineRow.service_start).where(
            InvoiceLineRow.kind == LineKind.LATE_USAGE.value,
            InvoiceLineRow.invoice_id.in_([row[0] for row in rows]),
        )
        for invoice_id, start in session.execute(lines):
            late.setdefault(invoice_id, set()).add(start)
        found += [
            DraftForReview(
                invoice_id, key, InvoiceScope(scope), owner, currency, start, end, total, content_hash or "",
                tuple(sorted(d for d in late.get(invoice_id, ()) if d is not None)),
            )
            for invoice_id, key, scope, owner, currency, start, end, total, content_hash in rows
        ]
    return found


# --- lookups for payments and the figures ----------------------------------------------------------------


def invoice_id_by_number(session: Session, number: str, kind: InvoiceKind = InvoiceKind.INVOICE) -> int | None:
    """The id of the document of ``kind`` numbered ``number``, if there is one."""
    statement = select(InvoiceRow.id).where(InvoiceRow.number == number, InvoiceRow.kind == kind.value)
    return session.execute(statement).scalar_one_or_none()


def invoice_numbers(session: Session, invoice_ids: Collection[int]) -> dict[int, str | None]:
    """The numbers of these invoices (None for a draft), by id."""
    ids, found = list(invoice_ids), {}
    for offset in range(0, len(ids), _CHUNK):
        statement = select(InvoiceRow.id, InvoiceRow.number).where(InvoiceRow.id.in_(ids[offset : offset + _CHUNK]))
        found.update({row.id: row.number for row in session.execute(statement)})
    return found


def issue_dates(session: Session, invoice_ids: Collection[int]) -> dict[int, dt.date]:
    """The dates these issued documents (invoices and credit notes) bear, by id; a draft is left out."""
    ids, found = list(invoice_ids), {}
    for offset in range(0, len(ids), _CHUNK):
        statement = select(InvoiceRow.id, InvoiceRow.issue_date).where(
            InvoiceRow.id.in_(ids[offset : offset + _CHUNK]), InvoiceRow.number.is_not(None)
        )
        found.update({row.id: row.issue_date for row in session.execute(statement) if row.issue_date is not None})
    return found


def scopes_by_number(session: Session, numbers: Collection[str]) -> dict[str, InvoiceScope]:
    """The scopes of the invoices (not credit notes) numbered ``numbers``, by number."""
    wanted, found = sorted(numbers), {}
    for offset in range(0, len(wanted), _CHUNK):
        statement = select(InvoiceRow.number, InvoiceRow.scope).where(
            InvoiceRow.number.in_(wanted[offset : offset + _CHUNK]), InvoiceRow.kind == InvoiceKind.INVOICE.value
        )
        found.update({row.number: InvoiceScope(row.scope) for row in session.execute(statement)})
    return found


def invoice_currencies(session: Session, invoice_ids: Collection[int]) -> dict[int, str]:
    """The currencies of these invoices, by id."""
    ids, found = list(invoice_ids), {}
    for offset in range(0, len(ids), _CHUNK):
        statement = select(InvoiceRow.id, InvoiceRow.currency).where(InvoiceRow.id.in_(ids[offset : offset + _CHUNK]))
        found.update({row.id: row.currency for row in session.execute(statement)})
    return found


def finalized_invoice_ids(session: Session) -> list[int]:
    """The ids of the invoices (not credit notes) that are finalized and not yet paid, void or given up on,
    oldest first."""
    statement = (
        select(InvoiceRow.id)
        .where(InvoiceRow.kind == InvoiceKind.INVOICE.value, InvoiceRow.status == InvoiceStatus.FINALIZED.value)
        .order_by(InvoiceRow.id)
    )
    return list(session.scalars(statement))


def void_among(session: Session, invoice_ids: Collection[int]) -> set[int]:
    """Which of these invoices are void."""
    ids, found = list(invoice_ids), set[int]()
    for offset in range(0, len(ids), _CHUNK):
        statement = select(InvoiceRow.id).where(
            InvoiceRow.id.in_(ids[offset : offset + _CHUNK]), InvoiceRow.status == InvoiceStatus.VOID.value
        )
        found.update(session.scalars(statement))
    return found


@dataclass(frozen=True, slots=True)
class IssuedNote:
    """A credit note of an invoice: its id, number, the credited invoice's id, its total (tax included) and
    currency, when it was issued, and the date it bears."""

    id: int
    number: str
    invoice_id: int
    total: Decimal
    currency: str
    issued_at: dt.datetime
    issue_date: dt.date | None = None


def credit_notes_of(session: Session, invoice_ids: Collection[int]) -> list[IssuedNote]:
    """The credit notes of these invoices, in the order they were issued."""
    ids, found = list(invoice_ids), list[IssuedNote]()
    for offset in range(0, len(ids), _CHUNK):
        statement = select(
            InvoiceRow.id, InvoiceRow.number, InvoiceRow.refers_to_id, InvoiceRow.total, InvoiceRow.currency,
            InvoiceRow.finalized_at, InvoiceRow.issue_date,
        ).where(
            InvoiceRow.kind == InvoiceKind.CREDIT_NOTE.value,
            InvoiceRow.refers_to_id.in_(ids[offset : offset + _CHUNK]),
            InvoiceRow.number.is_not(None),
        )
        for row in session.execute(statement):
            found.append(
                IssuedNote(
                    row.id, row.number, row.refers_to_id, row.total, row.currency, as_utc(row.finalized_at),
                    row.issue_date,
                )
            )
    return sorted(found, key=lambda note: note.id)


@dataclass(frozen=True, slots=True)
class Receivable:
    """An issued invoice as receivables see it: who owes what, since when, by when.

    Attributes:
      id, number, status, currency, total, issue_date, due_date: as stored.
      customer_external_id, customer_name: the bill-to party (its snapshot's name).
    """

    id: int
    number: str
    status: InvoiceStatus
    customer_external_id: str
    customer_name: str
    currency: str
    total: Decimal
    issue_date: dt.date
    due_date: dt.date


def receivables(
    session: Session,
    *,
    customer: str | None = None,
    issued_by: dt.date | None = None,
    also: Collection[int] = (),
    given_up: Collection[int] = (),
) -> list[Receivable]:
    """The invoices (not credit notes) waiting for payment (``finalized``), issued on or before ``issued_by`` if
    given, plus the issued invoices among ``also`` (ids: paid ones that were still owed on a past day) and the
    issued or void ones among ``given_up`` (voided or given up on since a past day, when they were still owed,
    whatever they became after), of one customer or all, by customer and id."""
    wanted = _UNPAID
    if also:
        wanted = or_(wanted, and_(InvoiceRow.id.in_(list(also)), InvoiceRow.kind == InvoiceKind.INVOICE.value,
                                  InvoiceRow.status.in_(_ISSUED)))
    if given_up:
        wanted = or_(wanted, and_(InvoiceRow.id.in_(list(given_up)), InvoiceRow.kind == InvoiceKind.INVOICE.value,
                                  InvoiceRow.status.in_((*_ISSUED, InvoiceStatus.VOID.value))))
    statement = select(
        InvoiceRow.id, InvoiceRow.number, InvoiceRow.status, InvoiceRow.customer_external_id, InvoiceRow.customer,
        InvoiceRow.currency, InvoiceRow.total, InvoiceRow.issue_date, InvoiceRow.due_date,
    ).where(wanted)
    if customer is not None:
        statement = statement.where(InvoiceRow.customer_external_id == customer)
    if issued_by is not None:
        statement = statement.where(InvoiceRow.issue_date <= issued_by)
    rows = session.execute(statement.order_by(InvoiceRow.customer_external_id, InvoiceRow.id)).all()
    return [
        Receivable(
            row.id, row.number or "", InvoiceStatus(row.status), row.customer_external_id,
            str(json.loads(row.customer).get("name") or ""), row.currency, row.total,
            row.issue_date or dt.date.min, row.due_date or row.issue_date or dt.date.min,
        )
        for row in rows
    ]


@dataclass(frozen=True, slots=True)
class InvoiceAmounts:
    """What revenue figures need of one invoice or credit note.

    Attributes:
      number: the issued number (None while draft); ``refers_to``: the credited invoice's number.
      kind, status, customer_external_id, currency, period_start, period_end, scope: as stored.
      subtotal, discount: before tax; invoice_id: the internal id; subscription_id: an opening invoice's
        subscription.
      line_amounts: the sum of the line amounts per line kind, as ``(kind, amount)`` pairs sorted by kind.
      dated_lines: the sum of the line amounts per kind, service period, subscription, mark and plans, as ``(kind,
        service_start, service_end, subscription_id, marked, plans, amount)`` (None where a line has none;
        ``marked``: the line's details have the key ``invoice_amounts`` was asked about; ``plans``: a charge's
        plan, or the plans a discount line's details list under the key it was asked about, sorted), in the order
        of the invoice's lines (of each sum's first line; discount lines each on its own, in the order they were
        taken off).
      tax_included: the tax inside tax-inclusive prices (in the lines and the subtotal, not revenue).
    """

    number: str | None
    kind: InvoiceKind
    status: InvoiceStatus
    customer_external_id: str
    currency: str
    period_start: dt.date
    subtotal: Decimal
    discount: Decimal
    refers_to: str | None
    line_amounts: tuple[tuple[str, Decimal], ...]
    period_end: dt.date | None = None
    scope: InvoiceScope = InvoiceScope.PERIOD
    tax_included: Decimal = ZERO
    invoice_id: int = 0
    subscription_id: int | None = None
    dated_lines: tuple[tuple[str, dt.date | None, dt.date | None, int | None, bool, tuple[str, ...], Decimal], ...] = ()


def invoice_amounts(
    session: Session, first: dt.date, *, among: Any = None, mark: str | None = None, reduces: str | None = None
) -> list[InvoiceAmounts]:
    """The invoices whose period ends on or after ``first`` (their lines may bill service from ``first`` on: a fee
    in advance, usage billed late) and the credit notes against them, drafts and void ones included, in id order
    (two queries; the lines are summed here, not by the database: SQLite stores exact decimals as text).
    ``among``: a select of invoice ids to keep to (then ``first`` is ignored); ``mark``: a key of the lines'
    ``details`` each dated line says it has or not; ``reduces``: the key of a discount line's ``details`` that
    lists the plans it reduces."""
    if among is not None:
        dated: ColumnElement[bool] = InvoiceRow.id.in_(among)
    else:
        dated = InvoiceRow.period_end >= first
    in_range = select(InvoiceRow.id).where(InvoiceRow.kind == InvoiceKind.INVOICE.value, dated)
    wanted = or_(
        and_(InvoiceRow.kind == InvoiceKind.INVOICE.value, dated),
        and_(InvoiceRow.kind == InvoiceKind.CREDIT_NOTE.value, InvoiceRow.refers_to_id.in_(in_range)),
    )
    credited = aliased(InvoiceRow)
    rows = session.execute(
        select(
            InvoiceRow.id, InvoiceRow.number, InvoiceRow.kind, InvoiceRow.status, InvoiceRow.customer_external_id,
            InvoiceRow.currency, InvoiceRow.period_start, InvoiceRow.subtotal, InvoiceRow.discount, credited.number,
            InvoiceRow.period_end, InvoiceRow.scope, InvoiceRow.taxes, InvoiceRow.subscription_id,
        )
        .outerjoin(credited, credited.id == InvoiceRow.refers_to_id)
        .where(wanted)
        .order_by(InvoiceRow.id)
    ).all()  # fmt: skip
    amounts: dict[int, dict[str, Decimal]] = {}
    dated_lines: dict[int, dict[tuple[Any, ...], Decimal]] = {}  # (a discount's key ends with its place)
    marked = false() if mark is None else details_have(InvoiceLineRow.details, mark)
    discounted = InvoiceLineRow.kind == LineKind.DISCOUNT.value
    if reduces is not None:
        discounted = and_(discounted, details_have(InvoiceLineRow.details, reduces))
    reduced = case((discounted, InvoiceLineRow.details), else_=null())
    lines = session.execute(
        select(
            InvoiceLineRow.invoice_id, InvoiceLineRow.kind, InvoiceLineRow.amount, InvoiceLineRow.service_start,
            InvoiceLineRow.service_end, InvoiceLineRow.subscription_id, marked, InvoiceLineRow.plan_code, reduced,
        )
        .join(InvoiceRow, InvoiceRow.id == InvoiceLineRow.invoice_id)
        .where(wanted)
        .order_by(InvoiceLineRow.invoice_id, InvoiceLineRow.position)  # (discounts in the order they were taken)
    )  # fmt: skip
    for invoice_id, line_kind, amount, service_start, service_end, subscription_id, has_mark, plan, details in lines:
        per_kind = amounts.setdefault(invoice_id, {})
        per_kind[line_kind] = per_kind.get(line_kind, ZERO) + amount
        per_start = dated_lines.setdefault(invoice_id, {})
        plans: tuple[str, ...] = () if plan is None else (plan,)
        if line_kind == LineKind.DISCOUNT.value:
            listed = json.loads(details).get(reduces) if details is not None and reduces is not None else None
            plans = tuple(sorted(str(code) for code in listed or ()))
        key: tuple[Any, ...] = (line_kind, service_start, service_end, subscription_id, bool(has_mark), plans)
        if line_kind == LineKind.DISCOUNT.value:  # each on its own, in order (one after another takes what it left)
            key += (len(per_start),)
        per_start[key] = per_start.get(key, ZERO) + amount
    return [
        InvoiceAmounts(
            number=number,
            kind=InvoiceKind(kind),
            status=InvoiceStatus(status),
            customer_external_id=customer,
            currency=currency,
            period_start=period_start,
            subtotal=subtotal,
            discount=discount,
            refers_to=refers_to,
            line_amounts=tuple(sorted(amounts.get(invoice_id, {}).items())),
            period_end=period_end,
            scope=InvoiceScope(scope),
            tax_included=sum((tax.included for tax in taxes_from_json(taxes) or ()), ZERO),
            invoice_id=invoice_id,
            subscription_id=subscription_id,
            dated_lines=tuple((*key[:6], amount) for key, amount in dated_lines.get(invoice_id, {}).items()),
        )
        for (
            invoice_id, number, kind, status, customer, currency, period_start, subtotal, discount, refers_to,
            period_end, scope, taxes, subscription_id,
        ) in rows
    ]


@dataclass(frozen=True, slots=True)
class IssuedLine:
    """A line of an issued invoice (finalized, paid or uncollectible; not a credit note), with what margin figures
    need of its invoice: whose, which currency, its billing period (the month its last day falls in is the line's
    month), and the line's kind, meter, plan, subscription, quantity and amount; its invoice's id and taxes (the
    tax inside tax-inclusive prices is in the amount)."""

    customer_external_id: str
    currency: str
    period_end: dt.date
    kind: str
    meter: str | None
    plan_code: str | None
    plan_version: int | None
    subscription_id: int | None
    quantity: Decimal
    amount: Decimal
    service_start: dt.date | None = None
    service_end: dt.date | None = None
    scope: str = InvoiceScope.PERIOD.value
    period_start: dt.date | None = None
    invoice_id: int = 0
    taxes: tuple[TaxLine, ...] = ()


def issued_lines(
    session: Session,
    first: dt.date,
    last: dt.date,
    kinds: Collection[str] | None,
    scopes: Collection[str] = (InvoiceScope.PERIOD.value, InvoiceScope.PROGRESSIVE.value),
) -> Iterator[IssuedLine]:
    """The lines of ``kinds`` (None: all) of the issued invoices of ``scopes`` (period and progressive ones by
    default) whose billing period ends from ``first`` (exclusive) to ``last`` (inclusive): the lines of the months
    whose last days lie in that range, an invoice's together. Streamed in chunks of 10,000 rows (read them before
    ``session`` ends): memory does not grow with the lines."""
    rows = session.execute(
        select(
            InvoiceRow.customer_external_id, InvoiceRow.currency, InvoiceRow.period_end, InvoiceLineRow.kind,
            InvoiceLineRow.meter, InvoiceLineRow.plan_code, InvoiceLineRow.plan_version, InvoiceLineRow.subscription_id,
            InvoiceLineRow.quantity, InvoiceLineRow.amount, InvoiceLineRow.service_start, InvoiceLineRow.service_end,
            InvoiceRow.scope, InvoiceRow.period_start, InvoiceRow.id, InvoiceRow.taxes,
        )
        .join(InvoiceRow, InvoiceRow.id == InvoiceLineRow.invoice_id)
        .where(
            InvoiceRow.kind == InvoiceKind.INVOICE.value,
            InvoiceRow.status.in_(_ISSUED),
            InvoiceRow.scope.in_(list(scopes)),
            InvoiceRow.period_end > first,
            InvoiceRow.period_end <= last,
            true() if kinds is None else InvoiceLineRow.kind.in_(list(kinds)),
        )
        .order_by(InvoiceLineRow.invoice_id, InvoiceLineRow.id),
        execution_options={"yield_per": 10_000},
    )
    parsed: tuple[int, tuple[TaxLine, ...]] = (0, ())  # an invoice's lines come together: its taxes read once
    for row in rows:
        if row.id != parsed[0]:
            parsed = (row.id, taxes_from_json(row.taxes) or ())
        yield IssuedLine(
            row.customer_external_id, row.currency, row.period_end, row.kind, row.meter, row.plan_code,
            row.plan_version, row.subscription_id, row.quantity, row.amount, row.service_start, row.service_end,
            row.scope, row.period_start, row.id, parsed[1],
        )




# --- accounting exports ----------------------------------------------------------------------------------


def issued_between(session: Session, first: dt.date, last: dt.date) -> list[Invoice]:
    """The invoices and credit notes issued from ``first`` to ``last`` (both included; void ones too), with their
    lines, invoices first, then in number order."""
    statement = (
        select(InvoiceRow)
        .where(InvoiceRow.status != InvoiceStatus.DRAFT.value, InvoiceRow.issue_date.between(first, last))
        .order_by(InvoiceRow.kind.desc(), InvoiceRow.number)  # 'invoice' before 'credit_note'
    )
    rows = session.execute(statement).scalars().all()
    lines = _lines_of(session, [row.id for row in rows])
    numbers = invoice_numbers(session, {row.refers_to_id for row in rows if row.refers_to_id is not None})
    return [
        _to_invoice(row, lines.get(row.id, ()), numbers.get(row.refers_to_id) if row.refers_to_id else None)
        for row in rows
    ]


@dataclass(frozen=True, slots=True)
class StatusChange:
    """An issued invoice's status change: to ``status`` at ``changed_at``."""

    invoice_id: int
    number: str
    customer_external_id: str
    status: InvoiceStatus
    changed_at: dt.datetime


def status_changes_between(
    session: Session, start: dt.datetime, end: dt.datetime, statuses: Collection[InvoiceStatus]
) -> list[StatusChange]:
    """The moves of invoices (not credit notes) to one of ``statuses`` in ``[start, end)``, from their status
    history, in number order, then in the order they were made."""
    change = InvoiceStatusChangeRow
    statement = (
        select(InvoiceRow.id, InvoiceRow.number, InvoiceRow.customer_external_id, change.status, change.changed_at)
        .join(change, change.invoice_id == InvoiceRow.id)
        .where(
            InvoiceRow.kind == InvoiceKind.INVOICE.value,
            change.status.in_([s.value for s in statuses]),
            change.changed_at >= start,
            change.changed_at < end,
        )
        .order_by(InvoiceRow.number, change.changed_at, change.id)
    )
    return [
        StatusChange(invoice_id, number or "", customer, InvoiceStatus(status), as_utc(changed_at))
        for invoice_id, number, customer, status, changed_at in session.execute(statement)
    ]


def status_histories(
    session: Session, invoice_ids: Collection[int]
) -> dict[int, tuple[tuple[InvoiceStatus, dt.datetime], ...]]:
    """Each issued document's statuses, (status, since when) in the order it took them (``finalized`` first)."""
    found: dict[int, list[tuple[InvoiceStatus, dt.datetime]]] = {}
    ids = sorted(invoice_ids)
    change = InvoiceStatusChangeRow
    for offset in range(0, len(ids), 5_000):
        rows = session.execute(
            select(change.invoice_id, change.status, change.changed_at)
            .where(change.invoice_id.in_(ids[offset : offset + 5_000]))
            .order_by(change.invoice_id, change.changed_at, change.id)
        )
        for invoice_id, status, changed_at in rows:
            found.setdefault(invoice_id, []).append((InvoiceStatus(status), as_utc(changed_at)))
    return {invoice_id: tuple(history) for invoice_id, history in found.items()}


# --- rows to records -------------------------------------------------------------------------------------


def _lines_of(session: Session, invoice_ids: list[int]) -> dict[int, tuple[InvoiceLine, ...]]:
    if not invoice_ids:
        return {}
    grouped: dict[int, list[InvoiceLine]] = {}
    statement = (
        select(InvoiceLineRow)
        .where(InvoiceLineRow.invoice_id.in_(invoice_ids))
        .order_by(InvoiceLineRow.invoice_id, InvoiceLineRow.position)
    )
    for row in session.execute(statement).scalars():
        grouped.setdefault(row.invoice_id, []).append(
            InvoiceLine(
                kind=LineKind(row.kind),
                description=row.description,
                amount=row.amount,
                quantity=row.quantity,
                unit=row.unit,
                section=row.section,
                service_start=row.service_start,
                service_end=row.service_end,
                meter=row.meter,
                model=row.model,
                details=LineDetails.from_json(row.details, row.model),
                subscription_id=row.subscription_id,
                plan_code=row.plan_code,
                plan_version=row.plan_version,
                dimension=row.dimension,
            )
        )
    return {key: tuple(value) for key, value in grouped.items()}


def _refers_to(session: Session, row: InvoiceRow) -> str | None:
    if row.refers_to_id is None:
        return None
    return session.execute(select(InvoiceRow.number).where(InvoiceRow.id == row.refers_to_id)).scalar_one_or_none()


def _to_invoice(row: InvoiceRow, lines: Sequence[InvoiceLine], refers_to: str | None = None) -> Invoice:
    seller = json.loads(row.seller or "{}")
    return Invoice(
        id=row.id,
        number=row.number,
        kind=InvoiceKind(row.kind),
        status=InvoiceStatus(row.status),
        billing_key=row.billing_key,
        customer=Party.from_dict(json.loads(row.customer)),
        seller=Party.from_dict(seller) if seller else Party(name=""),
        currency=row.currency,
        locale=row.locale,
        period_start=row.period_start,
        period_end=row.period_end,
        lines=tuple(lines),
        subtotal=row.subtotal,
        discount=row.discount,
        tax_rate=row.tax_rate,
        tax=row.tax,
        total=row.total,
        issue_date=row.issue_date,
        due_date=row.due_date,
        finalized_at=row.finalized_at,
        refers_to=refers_to,
        reason=row.reason,
        scope=InvoiceScope(row.scope),
        subscription_id=row.subscription_id,
        taxes=stored_taxes(row),
    )


def stored_taxes(row: InvoiceRow) -> tuple[TaxLine, ...]:
    """The invoice's taxes per rate; for one stored before invoices kept them, one line at its ``tax_rate``."""
    taxes = taxes_from_json(row.taxes)
    if taxes is not None:
        return taxes
    return (TaxLine(rate=row.tax_rate, taxable=row.subtotal - row.discount, amount=row.tax),)
