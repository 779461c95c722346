"""Loading what the revenue and churn figures need from the database, in five queries (two more for the coupons),
and computing them.

The computation itself is :func:`billing.core.metrics.compute_figures`, which never sees a database. This module reads
the customers and subscriptions through ``billing.db.repository`` and the invoice amounts through the invoice
store (only the columns needed, lines summed per kind in Python: SQLite stores exact decimals as text, so the
database never adds them up).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from billing.core.cohorts import Cohort, Grain, compute_cohorts
from billing.core.coupons import CouponIssue
from billing.core.domain import Customer, Subscription
from billing.core.margin import LineRecord, Margin, Purchase, RepeatPurchases, margins, repeat_purchases
from billing.core.metrics import (
    BilledHistory,
    InvoiceSummary,
    MetricsError,
    PeriodFigures,
    billed_by_customer,
    compute_figures,
)
from billing.core.overrides import Negotiated, SubscriptionOverride, negotiate
from billing.core.periods import Period
from billing.core.recognition import Recognition, RecognizedLine, recognize
from billing.db import coupon_tables, override_tables, repository, session_scope
from billing.db.credit_tables import CreditEntryRow, CreditGrantRow
from dbkit import read_only, utcnow
from invoices import store
from invoices.model import InvoiceKind, InvoiceScope, LineKind
from pricing_plans.errors import UnknownPlanError
from pricing_plans.models import Catalog

__all__ = [
    "TRAILING_MONTHS",
    "MetricInputs",
    "cohorts_from_database",
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
      invoices: the invoices whose period starts from 23 months before the range to the range's last period,
        and the credit notes against them, draft and void included (the computation filters by status).
      overrides: every version of the subscriptions' negotiated prices, by subscription id.
    """

    customers: tuple[Customer, ...]
    subscriptions: tuple[Subscription, ...]
    invoices: tuple[InvoiceSummary, ...]
    overrides: Mapping[int, tuple[SubscriptionOverride, ...]] = field(default_factory=dict)
    coupons: tuple[CouponIssue, ...] = ()
    billed: BilledHistory | None = None


def load_metric_inputs(session: Session, periods: Sequence[Period], *, summed: bool = False) -> MetricInputs:
    """Read the records for ``periods`` (consecutive, in order); with ``summed``, the invoices are read
    :data:`CHUNK_MONTHS` months at a time and kept only as their billed revenue per customer and month
    (``MetricInputs.billed``), so that memory grows with customers × months, not with invoices."""
    if not periods:
        return MetricInputs((), (), ())
    first, last = months_before(periods[0], TRAILING_MONTHS).start, periods[-1].start
    subscriptions = tuple(repository.list_subscriptions(session))
    customers = tuple(repository.list_customers(session))
    billed = _billed_history(session, first, last, subscriptions) if summed else None
    return MetricInputs(
        customers=customers,
        subscriptions=subscriptions,
        invoices=() if summed else tuple(_invoice_summaries(session, first, last, subscriptions)),
        overrides=override_tables.overrides_of(session, [s.id for s in subscriptions]),
        coupons=tuple(coupon_issues(session, {c.external_id: c.currency for c in customers})),
        billed=billed,
    )


CHUNK_MONTHS = 3
"""How many months of invoices are read at once when only their sums are kept."""


def _billed_history(
    session: Session, first: dt.date, last: dt.date, subscriptions: Sequence[Subscription]
) -> BilledHistory:
    """The billed revenue from ``first`` to ``last`` (month starts), read a few months at a time. The invoice query
    also returns the weeks and anniversary months that began before its first day; those were read with the
    chunk before, so they are dropped from every chunk but the first."""
    history = BilledHistory()
    start = first
    while start <= last:
        end = start
        for _ in range(CHUNK_MONTHS - 1):
            end = min(_next_month(end), last)
        chunk = _invoice_summaries(session, start, end, subscriptions)
        if start != first:
            chunk = [i for i in chunk if i.period_start >= start or i.kind is InvoiceKind.CREDIT_NOTE]
        history.add(chunk)
        start = _next_month(end)
    return history


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
    session: Session, first: dt.date, last: dt.date, subscriptions: Sequence[Subscription]
) -> list[InvoiceSummary]:
    starts = {s.id: s.start_date for s in subscriptions}
    invoices = store.invoice_amounts(session, first, last)
    free = free_credits_applied(session, [i.invoice_id for i in invoices])
    return [
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
        )
        for invoice in invoices
    ]


def figures_from_database(engine: Engine, catalog: Catalog, periods: Sequence[Period]) -> list[PeriodFigures]:
    """The figures of ``periods`` (consecutive months, in order) per currency, read in one read-only
    transaction."""
    with session_scope(read_only(engine)) as session:
        inputs = load_metric_inputs(session, periods, summed=True)
        as_of = utcnow()  # the report's date: redemptions after it do not count
    return compute_figures(
        inputs.customers, inputs.subscriptions, catalog, inputs.billed or inputs.invoices, periods,
        negotiated=negotiated_plans(catalog, inputs), coupons=inputs.coupons, as_of=as_of,
    )  # fmt: skip


def cohorts_from_database(
    engine: Engine, grain: Grain, currency: str | None = None, as_of: dt.datetime | None = None
) -> list[Cohort]:
    """The revenue cohorts of the whole billing history (the periods ended by ``as_of``, default now), read in one
    read-only transaction."""
    instant = as_of or utcnow()
    with session_scope(read_only(engine)) as session:
        subscriptions = repository.list_subscriptions(session)
        invoices = _invoice_summaries(session, dt.date(1900, 1, 1), instant.date(), subscriptions)
    return compute_cohorts(billed_by_customer(invoices), grain, as_of=instant, currency=currency)


def margins_from_database(engine: Engine, catalog: Catalog, periods: Sequence[Period]) -> list[Margin]:
    """Gross margin and markup per meter and per plan of ``periods`` (consecutive months), per currency."""
    if not periods:
        return []
    with session_scope(read_only(engine)) as session:
        lines = store.issued_lines(
            session, periods[0].start, periods[-1].end, ("subscription", "usage", "commitment")
        )
    records = [
        LineRecord(
            (line.period_end - dt.timedelta(days=1)).replace(day=1), line.currency, line.kind, line.meter,
            line.plan_code, line.plan_version, line.subscription_id, line.quantity, line.amount,
        )
        for line in lines
    ]  # fmt: skip
    return margins(records, catalog)


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
    progressive and opening invoice's lines (the whole history: the opening deferred revenue needs it)."""
    if not periods:
        return []
    kinds = [kind.value for kind in LineKind]
    scopes = (InvoiceScope.PERIOD.value, InvoiceScope.PROGRESSIVE.value, InvoiceScope.OPENING.value)
    with session_scope(read_only(engine)) as session:
        lines = store.issued_lines(session, dt.date(1900, 1, 1), dt.date(9999, 1, 1), kinds, scopes)
    records = [
        RecognizedLine(line.currency, line.amount, line.service_start, line.service_end, line.period_start or OPEN_END)
        for line in lines
    ]
    return recognize(records, periods)


OPEN_END = dt.date(9999, 12, 31)
