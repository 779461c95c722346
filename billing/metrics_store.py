"""Loading what the revenue and churn figures need from the database, and computing them.

The computation itself is :func:`billing.core.metrics.compute_figures`, which never sees a database. This module reads
the customers and subscriptions through ``billing.db.repository``; the invoices' billed revenue is summed by the
database per currency, customer and month (:func:`billed_customer_months`: grouped queries whose exact sums run in
the database, ``dbkit.exact``), so what reaches Python grows with customers, not with invoices.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from itertools import chain, groupby
from operator import attrgetter
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, and_, case, func, literal, or_, select, union_all
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import Subquery

from billing.config import get_settings
from billing.core.cohorts import Cohort, Grain, compute_cohorts
from billing.core.coupons import COUPON_PLANS, CouponIssue
from billing.core.domain import Customer, Subscription
from billing.core.fees import ADJUSTMENT
from billing.core.margin import (
    LineRecord,
    Margin,
    Purchase,
    RepeatPurchases,
    costs_of_goods,
    declares_costs,
    margins,
    net_of_tax,
    repeat_purchases,
)
from billing.core.metrics import (
    ISSUED,
    BilledAmounts,
    BilledSummary,
    CustomerMonth,
    DatedLine,
    InvoiceSummary,
    MetricsError,
    PeriodFigures,
    billed_by_customer,
    compute_figures,
    with_line_months,
)
from billing.core.overrides import Negotiated, SubscriptionOverride, negotiate
from billing.core.periods import Period
from billing.core.recognition import (
    Recognition,
    RecognizedLine,
    credit_note_lines,
    net_of_discount_lines,
    net_of_invoice,
    recognize,
    served,
)
from billing.core.tax import TaxRules
from billing.db import coupon_tables, override_tables, repository, session_scope
from billing.db.credit_tables import CreditEntryRow, CreditGrantRow
from billing.db.tables import SubscriptionRow
from dbkit import ExactDecimal, read_only, utcnow
from dbkit.exact import exact_greatest, exact_least, exact_sub, exact_sum, month_of
from invoices import store
from invoices.model import InvoiceKind, InvoiceScope, LineKind
from invoices.tables import InvoiceLineRow, InvoiceRow, details_have
from pricing_plans.errors import UnknownPlanError
from pricing_plans.models import Catalog
from pricing_plans.money import ZERO

__all__ = [
    "TRAILING_MONTHS",
    "MetricInputs",
    "cohorts_from_database",
    "costs_from_database",
    "coupon_issues",
    "figures_from_database",
    "free_credits_applied",
    "load_metric_inputs",
    "margins_from_database",
    "months_before",
    "negotiated_plans",
    "recognition_from_database",
    "repeat_purchases_from_database",
]

TRAILING_MONTHS = 23
"""How many months before the first period the invoices are read: the 12-month trailing revenue retention of a
month compares the 12 months up to it with the 12 months before those."""


@dataclass(frozen=True, slots=True)
class MetricInputs:
    """The records behind the figures of a range of periods.

    Attributes:
      customers: every customer.
      subscriptions: every subscription (earlier ones tell a reactivation from a new customer).
      invoices: the invoices whose period ends on or after the first day 23 months before the range (a line
        counts in the month its service begins: any of them may bill service of the range), and the credit notes
        against them, draft and void included (the computation filters by status).
      overrides: every version of the subscriptions' negotiated prices, by subscription id.
    """

    customers: tuple[Customer, ...]
    subscriptions: tuple[Subscription, ...]
    invoices: tuple[InvoiceSummary, ...]
    overrides: Mapping[int, tuple[SubscriptionOverride, ...]] = field(default_factory=dict)
    coupons: tuple[CouponIssue, ...] = ()
    billed: BilledSummary | None = None


def load_metric_inputs(session: Session, periods: Sequence[Period], *, summed: bool = False) -> MetricInputs:
    """Read the records for ``periods`` (consecutive, in order); with ``summed``, the invoices are not read: the
    database sums their billed revenue per customer and month, and only what the figures need of those sums is
    kept (``MetricInputs.billed``, :func:`billed_summary`), so that memory grows with customers, not with
    invoices."""
    if not periods:
        return MetricInputs((), (), ())
    first = months_before(periods[0], TRAILING_MONTHS).start
    subscriptions = tuple(repository.list_subscriptions(session))
    starts = {s.id: s.start_date for s in subscriptions}
    customers = tuple(repository.list_customers(session))
    billed = billed_summary(session, periods) if summed else None
    return MetricInputs(
        customers=customers,
        subscriptions=subscriptions,
        invoices=() if summed else tuple(_invoice_summaries(session, first, starts)),
        overrides=override_tables.overrides_of(session, [s.id for s in subscriptions]),
        coupons=tuple(coupon_issues(session, {c.external_id: c.currency for c in customers})),
        billed=billed,
    )


def _next_month(day: dt.date) -> dt.date:
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def coupon_issues(session: Session, currencies: dict[str, str]) -> list[CouponIssue]:
    """Every coupon issued to a customer, with the customer's currency and when it was redeemed."""
    redeemed = coupon_tables.redemptions(session)
    return [
        CouponIssue(
            held.coupon.code,
            held.customer,
            currencies.get(held.customer, ""),
            held.issued_at,
            redeemed.get((held.customer, held.coupon.code)),
        )
        for held in coupon_tables.customer_coupons(session)
    ]


def negotiated_plans(catalog: Catalog, inputs: MetricInputs) -> dict[int, Negotiated]:
    """The plans of the subscriptions with negotiated prices, by subscription id. MetricsError for an override
    that no longer applies to the catalog (as for a plan version the catalog lacks: the figures would be
    wrong)."""
    found: dict[int, Negotiated] = {}
    for subscription in inputs.subscriptions:
        versions = inputs.overrides.get(subscription.id)
        if not versions:
            continue
        try:
            plan = catalog.plan(subscription.plan_code, subscription.plan_version)
        except UnknownPlanError:
            continue  # compute_figures names it
        found[subscription.id], problems = negotiate(plan, versions, catalog)
        if problems:
            detail = "; ".join(map(str, problems))
            raise MetricsError(
                f"subscription {subscription.id}: its negotiated price no longer applies to the catalog: {detail}"
            )
    return found


def months_before(period: Period, months: int) -> Period:
    """The period ``months`` periods before ``period``."""
    for _ in range(months):
        period = period.previous()
    return period


def free_credits_applied(session: Session, invoice_ids: Sequence[int]) -> dict[int, Decimal]:
    """The free credit each invoice was paid with, net of what went back when it was voided."""
    found: dict[int, Decimal] = {}
    ids = list(invoice_ids)
    for chunk in (ids[i : i + 5000] for i in range(0, len(ids), 5000)):
        rows = session.execute(
            select(CreditEntryRow.invoice_id, CreditEntryRow.amount)
            .join(CreditGrantRow, CreditGrantRow.id == CreditEntryRow.grant_id)
            .where(CreditEntryRow.account == "invoice", CreditGrantRow.kind == "free")
            .where(CreditEntryRow.invoice_id.in_(chunk))
        )
        for invoice_id, amount in rows:
            found[invoice_id] = found.get(invoice_id, Decimal(0)) + amount
    return found


def _invoice_summaries(
    session: Session, first: dt.date, starts: Mapping[int, dt.date], among: Any = None
) -> list[InvoiceSummary]:
    """The invoices whose lines may count from ``first`` on (``store.invoice_amounts``; ``among``: a select of the
    invoice ids to keep to), their lines dated by the month their service begins (``starts``: the subscriptions'
    start dates by id)."""
    invoices = store.invoice_amounts(session, first, among=among, mark=ADJUSTMENT, reduces=COUPON_PLANS)
    free = free_credits_applied(session, [i.invoice_id for i in invoices])
    return [
        with_line_months(
            InvoiceSummary(
                number=invoice.number,
                kind=invoice.kind,
                status=invoice.status,
                customer_external_id=invoice.customer_external_id,
                currency=invoice.currency,
                period_start=invoice.period_start,
                subtotal=invoice.subtotal,
                discount=invoice.discount,
                refers_to=invoice.refers_to,
                line_amounts=invoice.line_amounts,
                period_end=invoice.period_end,
                scope=invoice.scope,
                tax_included=invoice.tax_included,
                free_credits=free.get(invoice.invoice_id, Decimal(0)),
                service_start=starts.get(invoice.subscription_id or 0),
            ),
            (
                DatedLine(kind, service_start, service_end, starts.get(subscription or 0), amount, adjusts, plans)
                for kind, service_start, service_end, subscription, adjusts, plans, amount in invoice.dated_lines
            ),
        )
        for invoice in invoices
    ]


def figures_from_database(
    engine: Engine, catalog: Catalog, periods: Sequence[Period], tax_rules: TaxRules | None = None
) -> list[PeriodFigures]:
    """The figures of ``periods`` (consecutive months, in order) per currency, read in one read-only
    transaction; ``tax_rules``: the configuration's unless given (the tax inside tax-inclusive prices is no
    MRR)."""
    with session_scope(read_only(engine)) as session:
        inputs = load_metric_inputs(session, periods, summed=True)
        costs = costs_from_database(session, catalog, periods)
        as_of = utcnow()  # the report's date: redemptions after it do not count
    return compute_figures(
        inputs.customers, inputs.subscriptions, catalog, inputs.billed or inputs.invoices, periods,
        negotiated=negotiated_plans(catalog, inputs), coupons=inputs.coupons, as_of=as_of, costs=costs,
        tax_rules=get_settings().tax_rules() if tax_rules is None else tax_rules,
    )  # fmt: skip


def cohorts_from_database(
    engine: Engine, grain: Grain, currency: str | None = None, as_of: dt.datetime | None = None
) -> list[Cohort]:
    """The revenue cohorts of the whole billing history (the periods ended by ``as_of``, default now; from each
    currency's first issued period invoice on), read in one read-only transaction."""
    instant = as_of or utcnow()
    with session_scope(read_only(engine)) as session:
        first, last = dt.date(1900, 1, 1), instant.date().replace(day=1)
        starts = billing_history_starts(session, first, last)
        rows = billed_customer_months(session, first, last)
        return compute_cohorts(rows, grain, as_of=instant, currency=currency, history_start=starts)


def margins_from_database(engine: Engine, catalog: Catalog, periods: Sequence[Period]) -> list[Margin]:
    """Gross margin and markup per meter and per plan of ``periods`` (consecutive months), per currency. The lines
    are streamed into the sums (memory grows with meters, plans and subscriptions, not with lines)."""
    if not periods:
        return []
    inclusive = {(p.code, p.version) for versions in catalog.plans.values() for p in versions if p.tax_inclusive}
    with session_scope(read_only(engine)) as session:
        lines = store.issued_lines(session, periods[0].start, periods[-1].end, None)
        records = (
            record
            for _, invoice in groupby(lines, key=attrgetter("invoice_id"))
            for record in _margin_records(list(invoice), inclusive)
        )
        return margins(records, catalog)


def _margin_records(lines: list[store.IssuedLine], inclusive: set[tuple[str, int]]) -> list[LineRecord]:
    """One invoice's fee, usage and commitment lines as the margins read them: the tax inside its tax-inclusive
    plans' prices (shared over all of their lines) taken out."""
    records = [
        LineRecord(
            (line.period_end - dt.timedelta(days=1)).replace(day=1), line.currency, line.kind, line.meter,
            line.plan_code, line.plan_version, line.subscription_id, line.quantity, line.amount,
        )
        for line in lines
    ]  # fmt: skip
    taxed = [i for i, line in enumerate(lines) if (line.plan_code, line.plan_version) in inclusive]
    if taxed and lines:
        records = net_of_tax(records, taxed, lines[0].taxes)
    return [record for record in records if record.kind in _MARGIN_KINDS]


_MARGIN_KINDS = frozenset({"subscription", "usage", "commitment"})


def repeat_purchases_from_database(engine: Engine, periods: Sequence[Period]) -> list[RepeatPurchases]:
    """The repeat purchase rate of top-ups (paid credit grants) in each of ``periods``, per currency."""
    with session_scope(read_only(engine)) as session:
        rows = session.execute(
            select(CreditGrantRow.customer_external_id, CreditGrantRow.currency, CreditGrantRow.created_at).where(
                CreditGrantRow.kind == "paid"
            )
        )
        purchases = [Purchase(customer, currency, created.date()) for customer, currency, created in rows]
    return repeat_purchases(purchases, periods)


def recognition_from_database(engine: Engine, periods: Sequence[Period]) -> list[Recognition]:
    """Billed, recognized and deferred revenue of ``periods`` (months), per currency, from every issued period,
    progressive and opening invoice's lines (the whole history: the opening deferred revenue needs it). The lines
    are streamed into the months' sums (each is recognized and rounded on its own): memory grows with the credit
    notes' lines, not with every line."""
    if not periods:
        return []
    scopes = (InvoiceScope.PERIOD.value, InvoiceScope.PROGRESSIVE.value, InvoiceScope.OPENING.value)
    with session_scope(read_only(engine)) as session:
        runs = _subscription_runs(session)
        notes = _credit_notes(session, scopes, runs)
        credits = (part for net, issued_on, credited in notes for part in credit_note_lines(net, issued_on, credited))
        return recognize(chain(_recognized_lines(session, scopes, runs), credits), periods)


_Runs = Mapping[int, tuple[dt.date, dt.date | None]]


def _subscription_runs(session: Session) -> dict[int, tuple[dt.date, dt.date | None]]:
    """Each subscription's first day and its end (exclusive; None while open-ended)."""
    rows = session.execute(select(SubscriptionRow.id, SubscriptionRow.start_date, SubscriptionRow.end_date))
    return {subscription: (start, end) for subscription, start, end in rows}


def _recognized_lines(session: Session, scopes: Sequence[str], runs: _Runs) -> Iterator[RecognizedLine]:
    """The lines of every issued invoice of ``scopes``, streamed an invoice at a time in chunks of 10,000 rows,
    each invoice's lines net of the discount lines that reduce them
    (:func:`billing.core.recognition.net_of_discount_lines`), then the parts that bring them to its revenue (its total
    less its tax: :func:`billing.core.recognition.net_of_invoice`)."""
    discount = InvoiceLineRow.kind == LineKind.DISCOUNT.value
    rows = session.execute(
        select(
            InvoiceRow.id, InvoiceRow.currency, InvoiceRow.period_start, InvoiceRow.total, InvoiceRow.tax,
            InvoiceLineRow.amount, InvoiceLineRow.service_start, InvoiceLineRow.service_end,
            InvoiceLineRow.subscription_id, InvoiceLineRow.plan_code, discount,
            case((discount, InvoiceLineRow.details), else_=None),
        )
        .join(InvoiceRow, InvoiceRow.id == InvoiceLineRow.invoice_id)
        .where(
            InvoiceRow.kind == InvoiceKind.INVOICE.value,
            InvoiceRow.status.in_(_ISSUED),
            InvoiceRow.scope.in_(list(scopes)),
        )
        .order_by(InvoiceLineRow.invoice_id, InvoiceLineRow.position),
        execution_options={"yield_per": 10_000},
    )  # fmt: skip
    for _, group in groupby(rows, key=lambda row: row[0]):
        found = list(group)
        revenue = _net_lines([(*row[1:3], *row[5:]) for row in found], runs)
        yield from revenue
        yield from net_of_invoice(revenue, found[0].total - found[0].tax)


def _net_lines(rows: Sequence[Sequence[Any]], runs: _Runs) -> list[RecognizedLine]:
    """One invoice's lines net of its discount lines, from rows of (currency, its period's start, amount, service
    start, service end, subscription, plan, whether a discount line, its details if one)."""
    lines: list[tuple[RecognizedLine, str | None]] = []
    discounts: list[tuple[RecognizedLine, Sequence[str]]] = []
    for currency, period_start, amount, start, end, sub, plan, is_discount, details in rows:
        served_days = served(start, end, runs.get(sub or 0), amount)
        line = RecognizedLine(currency, amount, *served_days, period_start or OPEN_END)
        if is_discount:
            discounts.append((line, _coupon_plans(details)))
        else:
            lines.append((line, plan))
    return net_of_discount_lines(lines, discounts)


def _coupon_plans(details: str | None) -> list[str]:
    """The plans a discount line's coupon reduces, from its stored details (none: every plan)."""
    try:
        found = json.loads(details or "{}").get(COUPON_PLANS)
    except (ValueError, AttributeError):
        return []
    return [str(plan) for plan in found] if isinstance(found, list) else []


def _credit_notes(
    session: Session, scopes: Sequence[str], runs: _Runs
) -> list[tuple[Decimal, dt.date, list[RecognizedLine]]]:
    """Each issued credit note against an issued invoice of ``scopes``: its net amount, its issue date and the
    credited invoice's lines."""
    note, credited = aliased(InvoiceRow), aliased(InvoiceRow)
    rows = session.execute(
        select(note.subtotal, note.issue_date, note.refers_to_id)
        .join(credited, credited.id == note.refers_to_id)
        .where(note.kind == InvoiceKind.CREDIT_NOTE.value, note.status.in_(_ISSUED), credited.scope.in_(list(scopes)))
        .order_by(note.id)
    ).all()
    wanted = sorted({invoice_id for _, _, invoice_id in rows})
    lines: dict[int, list[RecognizedLine]] = defaultdict(list)
    discount = InvoiceLineRow.kind == LineKind.DISCOUNT.value
    for start in range(0, len(wanted), 5000):
        found = session.execute(
            select(
                InvoiceLineRow.invoice_id, InvoiceRow.currency, InvoiceRow.period_start, InvoiceLineRow.amount,
                InvoiceLineRow.service_start, InvoiceLineRow.service_end, InvoiceLineRow.subscription_id,
                InvoiceLineRow.plan_code, discount, case((discount, InvoiceLineRow.details), else_=None),
            )
            .join(InvoiceRow, InvoiceRow.id == InvoiceLineRow.invoice_id)
            .where(InvoiceLineRow.invoice_id.in_(wanted[start : start + 5000]))
            .order_by(InvoiceLineRow.invoice_id, InvoiceLineRow.position)
        )  # fmt: skip
        # (a note is shared over what the invoice billed net of its discounts, as the invoice's revenue is)
        for invoice_id, group in groupby(found, key=lambda row: row[0]):
            lines[invoice_id] = _net_lines([row[1:] for row in group], runs)
    return [(net, issued_on, lines[invoice_id]) for net, issued_on, invoice_id in rows if issued_on is not None]


OPEN_END = dt.date(9999, 12, 31)
_EXACT = decimal.Context(prec=1000, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])


def _month_billed(invoice: Any, subscription: Any) -> ColumnElement[str]:
    """The month (``YYYY-MM-01``) an invoice's billed revenue counts in, as ``InvoiceSummary.billed_month``."""
    service_start = case(
        (subscription.start_date > invoice.period_start, subscription.start_date), else_=invoice.period_start
    )
    return case(
        (invoice.scope.in_(_PERIOD_SCOPES), month_of(invoice.period_end, 1)),
        (
            and_(invoice.scope == InvoiceScope.OPENING.value, subscription.start_date.is_not(None)),
            month_of(service_start),
        ),
        else_=month_of(invoice.period_start),
    )


_PERIOD_SCOPES = (InvoiceScope.PERIOD.value, InvoiceScope.PROGRESSIVE.value)
_ISSUED = tuple(sorted(status.value for status in ISSUED))
_USAGE_KINDS = (LineKind.USAGE.value, LineKind.LATE_USAGE.value)


def _revenue_invoices(invoice: Any, first: dt.date, last: dt.date) -> ColumnElement[bool]:
    """Issued invoices that are revenue (not a top-up), read as the pure path reads them (``_revenue_from``),
    whose period starts by the end of the month ``last``."""
    return and_(_revenue_from(invoice, first), invoice.period_start < _next_month(last))


def _revenue_from(invoice: Any, first: dt.date) -> ColumnElement[bool]:
    """Issued invoices that are revenue (not a top-up) and may bill service from ``first`` on: their period ends
    on or after it (a fee in advance begins where its invoice's period ends; usage billed late comes later)."""
    return and_(
        invoice.kind == InvoiceKind.INVOICE.value,
        invoice.status.in_(_ISSUED),
        invoice.scope != InvoiceScope.CREDIT.value,
        invoice.period_end >= first,
    )


def _spread_invoices(first: dt.date) -> Select[Any]:
    """The ids of the revenue invoices with a line billing service that begins after the invoice's billing period
    or ended before it (a fee billed in advance, usage billed late), or adjusting a fee billed in advance for the
    fee period that began with the invoice's billing period, which may count in another month than the invoice's
    (``billing.core.metrics.line_month``). ``_Spread`` splits their billed revenue by month in Python; the
    database sums the rest."""
    inv, line = aliased(InvoiceRow), aliased(InvoiceLineRow)
    return (
        select(line.invoice_id)
        .distinct()
        .join(inv, inv.id == line.invoice_id)
        .where(
            _revenue_from(inv, first),
            line.kind != LineKind.DISCOUNT.value,
            or_(
                line.service_start >= inv.period_end,
                func.coalesce(line.service_end, line.service_start) <= inv.period_start,
                and_(line.service_start == inv.period_start, details_have(line.details, ADJUSTMENT)),
            ),
        )
    )


@dataclass(slots=True)
class _Spread:
    """What the invoices whose lines count in another month than the invoice's (``_spread_invoices``) change in
    the database's sums, which count each invoice whole in its month: their billed revenue split by month
    (``billed_parts``) less the same counted whole, per (currency, customer) and month, and per (currency, month)
    by line kind; the months ``first`` to ``last``."""

    customers: dict[tuple[str, str], dict[dt.date, Decimal]] = field(default_factory=dict)
    months: dict[tuple[str, dt.date], BilledAmounts] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session, first: dt.date, last: dt.date) -> _Spread:
        spread = cls()
        ids = list(session.scalars(_spread_invoices(first)))
        if not ids:
            return spread
        starts = {key: day for key, day in session.execute(select(SubscriptionRow.id, SubscriptionRow.start_date))}
        with decimal.localcontext(_EXACT):
            for i in range(0, len(ids), 5000):
                summaries = _invoice_summaries(session, first, starts, among=ids[i : i + 5000])
                lumped = [replace(summary, dated_lines=()) for summary in summaries]
                spread._add(billed_by_customer(summaries), first, last)
                spread._add(billed_by_customer(lumped), first, last, sign=-1)
        return spread

    def _add(
        self, billed: Mapping[tuple[str, dt.date], Mapping[str, BilledAmounts]], first: dt.date, last: dt.date,
        sign: int = 1,
    ) -> None:  # fmt: skip
        for (currency, month), customers in billed.items():
            if not first <= month <= last:
                continue
            for customer, amounts in customers.items():
                per_month = self.customers.setdefault((currency, customer), {})
                per_month[month] = per_month.get(month, ZERO) + sign * amounts.total
            key, total = (currency, month), sum(customers.values(), BilledAmounts())
            if sign < 0:
                total = BilledAmounts(-total.subscription, -total.usage, -total.commitment, -total.adjustments)
            self.months[key] = self.months[key] + total if key in self.months else total


def billed_customer_months(
    session: Session, first: dt.date, last: dt.date, spread: _Spread | None = None
) -> Iterator[CustomerMonth]:
    """Each customer's billed revenue of each month from ``first`` to ``last`` (month starts), as
    ``billing.core.metrics.billed_by_customer`` counts it, each customer's months together. The database sums it
    (``dbkit.exact``), one amount per row: each invoice's total and tax (its amount net of tax), the free credit
    applied to it (up to that net amount) and the credit notes against it, grouped per currency, customer, month
    and kind of amount; only those sums reach Python, with what the invoices whose lines count in another month
    change in them (``_Spread``)."""
    spread = spread or _Spread.load(session, first, last)
    parts = _billed_parts(first, last, lines=False)
    grouped = (
        select(parts.c.currency, parts.c.customer, parts.c.month, parts.c.part, exact_sum(parts.c.amount))
        .group_by(parts.c.currency, parts.c.customer, parts.c.month, parts.c.part)
        .order_by(parts.c.currency, parts.c.customer, parts.c.month)
    )
    result = session.connection().execute(grouped, execution_options={"yield_per": 10_000})
    for (currency, customer), rows in groupby(result, key=lambda row: (row[0], row[1])):
        months: dict[dt.date, Decimal] = spread.customers.pop((currency, customer), {})
        for day, group in groupby(rows, key=lambda row: row[2]):
            found = {part: amount for _, _, _, part, amount in group}
            total = found["total"] if len(found) == 1 and "total" in found else _net(found)
            month = dt.date.fromisoformat(day)
            months[month] = months[month] + total if month in months else total
        for month in sorted(months):
            yield CustomerMonth(currency, customer, month, months[month])
    for (currency, customer), months in sorted(spread.customers.items()):
        for month in sorted(months):
            yield CustomerMonth(currency, customer, month, months[month])


def billed_months(
    session: Session, first: dt.date, last: dt.date, spread: _Spread | None = None
) -> dict[tuple[str, dt.date], BilledAmounts]:
    """The billed revenue of each month from ``first`` to ``last`` per currency, split by line kind (the sums of
    :func:`billed_customer_months` over the customers, with the fee, usage and commitment lines apart)."""
    spread = spread or _Spread.load(session, first, last)
    parts = _billed_parts(first, last, lines=True)
    grouped = select(parts.c.currency, parts.c.month, parts.c.part, exact_sum(parts.c.amount)).group_by(
        parts.c.currency, parts.c.month, parts.c.part
    )
    found: dict[tuple[str, dt.date], dict[str, Decimal]] = defaultdict(dict)
    for currency, day, part, amount in session.execute(grouped):
        found[(currency, dt.date.fromisoformat(day))][part] = amount
    months = {key: _billed_amounts(amounts) for key, amounts in found.items()}
    with decimal.localcontext(_EXACT):
        for key, amounts in spread.months.items():
            months[key] = months[key] + amounts if key in months else amounts
    return months


def _billed_parts(first: dt.date, last: dt.date, *, lines: bool) -> Subquery:
    """The amounts billed revenue is made of, one per row with its currency, customer, month and part: each
    issued invoice's ``total`` and ``tax``, the ``free`` credit applied to it (up to its amount net of tax), the
    subtotals of the ``credit_note``s against it and, with ``lines``, its fee, usage and commitment lines (their
    kind as the part). Each invoice counts whole in its month (``InvoiceSummary.billed_month``); ``_Spread``
    moves the lines that count in another."""
    inv, sub = aliased(InvoiceRow), aliased(SubscriptionRow)
    columns = (
        inv.currency.label("currency"), inv.customer_external_id.label("customer"),
        _month_billed(inv, sub).label("month"),
    )  # fmt: skip
    revenue = _revenue_from(inv, first)
    totals = select(*columns, literal("total").label("part"), inv.total.label("amount"))
    taxes = select(*columns, literal("tax"), inv.tax).where(inv.tax != 0)
    free = (
        select(CreditEntryRow.invoice_id.label("invoice_id"), exact_sum(CreditEntryRow.amount).label("amount"))
        .join(CreditGrantRow, CreditGrantRow.id == CreditEntryRow.grant_id)
        .where(CreditEntryRow.account == "invoice", CreditGrantRow.kind == "free")
        .group_by(CreditEntryRow.invoice_id)
        .subquery()
    )
    zero = literal(ZERO, ExactDecimal())
    applied = exact_least(free.c.amount, exact_greatest(exact_sub(inv.total, inv.tax), zero))
    frees = select(*columns, literal("free"), applied).join(free, free.c.invoice_id == inv.id)
    note = aliased(InvoiceRow)
    notes = (
        select(*columns, literal("credit_note"), note.subtotal)
        .select_from(note)
        .join(inv, inv.id == note.refers_to_id)
        .where(note.kind == InvoiceKind.CREDIT_NOTE.value, note.status.in_(_ISSUED))
    )
    branches = [totals, taxes, frees, notes]
    if lines:
        branches.append(
            select(*columns, InvoiceLineRow.kind, InvoiceLineRow.amount)
            .select_from(InvoiceLineRow)
            .join(inv, inv.id == InvoiceLineRow.invoice_id)
            .where(InvoiceLineRow.kind.in_(_SPLIT_KINDS))
        )
    parts = union_all(
        *(branch.outerjoin(sub, sub.id == inv.subscription_id).where(revenue) for branch in branches)
    ).subquery()
    return select(parts).where(parts.c.month >= first.isoformat(), parts.c.month <= last.isoformat()).subquery()


_SPLIT_KINDS = (LineKind.SUBSCRIPTION.value, *_USAGE_KINDS, LineKind.COMMITMENT.value)


def _billed_amounts(parts: Mapping[str, Decimal]) -> BilledAmounts:
    """A month's billed revenue from its summed parts: the invoices' totals less their tax, the free credit
    applied and the credit notes; what the fee, usage and commitment lines do not account for is adjustments."""
    with decimal.localcontext(_EXACT):
        fee = parts.get(LineKind.SUBSCRIPTION.value, ZERO)
        usage = sum((parts.get(kind, ZERO) for kind in _USAGE_KINDS), ZERO)
        commitment = parts.get(LineKind.COMMITMENT.value, ZERO)
        total = _net(parts)
        return BilledAmounts(fee, usage, commitment, total - fee - usage - commitment)


def _net(parts: Mapping[str, Decimal]) -> Decimal:
    """The billed revenue of summed parts: totals − tax − free credit applied − credit notes."""
    with decimal.localcontext(_EXACT):
        total = parts.get("total", ZERO) - parts.get("tax", ZERO) - parts.get("free", ZERO)
        return total - parts.get("credit_note", ZERO)


def billing_history_starts(session: Session, first: dt.date, last: dt.date) -> dict[str, dt.date]:
    """Per currency, the first month from ``first`` to ``last`` with an issued period invoice
    (``billing.core.metrics.first_billed_periods``)."""
    statement = (
        select(InvoiceRow.currency, func.min(InvoiceRow.period_end))
        .where(_revenue_invoices(InvoiceRow, first, last), InvoiceRow.scope == InvoiceScope.PERIOD.value)
        .group_by(InvoiceRow.currency)
    )
    starts = {}
    for currency, period_end in session.execute(statement):
        month = (period_end - dt.timedelta(days=1)).replace(day=1)
        if month <= last:
            starts[currency] = month
    return starts


def invoiced_currencies(session: Session, first: dt.date, last: dt.date) -> set[str]:
    """The currencies of the invoices of any status that may count in the months ``first`` to ``last``."""
    statement = (
        select(InvoiceRow.currency)
        .distinct()
        .where(InvoiceRow.period_end >= first, InvoiceRow.period_start < _next_month(last))
    )
    return set(session.scalars(statement))


def billed_summary(session: Session, periods: Sequence[Period]) -> BilledSummary:
    """The billed revenue the figures of ``periods`` need (and of the 23 months before), summed by the database
    per customer and month and kept by :class:`BilledSummary` (memory grows with customers)."""
    first, last = months_before(periods[0], TRAILING_MONTHS).start, periods[-1].start
    summary = BilledSummary(
        periods, billing_history_starts(session, first, last), invoiced_currencies(session, first, last)
    )
    spread = _Spread.load(session, first, last)
    months = billed_months(session, first, last, spread)  # (before the customers' rows take theirs)
    summary.add(billed_customer_months(session, first, last, spread), months)
    return summary


def costs_from_database(
    session: Session, catalog: Catalog, periods: Sequence[Period]
) -> dict[tuple[dt.date, str], Decimal]:
    """The cost of goods of ``periods`` per (month, currency) (``billing.core.margin.costs_of_goods``): the units
    of the usage lines and the subscriptions with a fee line of the issued period and progressive invoices, summed
    and counted by the database per month, currency and meter or plan. Empty when the catalog declares no cost."""
    if not periods or not declares_costs(catalog):
        return {}
    month = month_of(InvoiceRow.period_end, 1).label("month")
    issued = and_(
        InvoiceRow.kind == InvoiceKind.INVOICE.value,
        InvoiceRow.status.in_(_ISSUED),
        InvoiceRow.scope.in_(_PERIOD_SCOPES),
        InvoiceRow.period_end > periods[0].start,
        InvoiceRow.period_end <= periods[-1].end,
    )
    usage = (
        select(month, InvoiceRow.currency, InvoiceLineRow.meter, exact_sum(InvoiceLineRow.quantity))
        .join(InvoiceRow, InvoiceRow.id == InvoiceLineRow.invoice_id)
        .where(issued, InvoiceLineRow.kind == LineKind.USAGE.value, InvoiceLineRow.meter.is_not(None))
        .group_by(month, InvoiceRow.currency, InvoiceLineRow.meter)
    )
    fees = (
        select(
            month, InvoiceRow.currency, InvoiceLineRow.plan_code, InvoiceLineRow.plan_version,
            func.count(func.distinct(InvoiceLineRow.subscription_id)),
        )
        .join(InvoiceRow, InvoiceRow.id == InvoiceLineRow.invoice_id)
        .where(issued, InvoiceLineRow.kind == LineKind.SUBSCRIPTION.value, InvoiceLineRow.plan_code.is_not(None))
        .group_by(month, InvoiceRow.currency, InvoiceLineRow.plan_code, InvoiceLineRow.plan_version)
    )  # fmt: skip
    return costs_of_goods(
        ((dt.date.fromisoformat(m), c, meter, units) for m, c, meter, units in session.execute(usage)),
        ((dt.date.fromisoformat(m), c, code, version, n) for m, c, code, version, n in session.execute(fees)),
        catalog,
    )
