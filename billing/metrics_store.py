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

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from billing.core.coupons import CouponIssue
from billing.core.domain import Customer, Subscription
from billing.core.metrics import InvoiceSummary, MetricsError, PeriodFigures, compute_figures
from billing.core.overrides import Negotiated, SubscriptionOverride, negotiate
from billing.core.periods import Period
from billing.db import coupon_tables, override_tables, repository, session_scope
from dbkit import read_only, utcnow
from invoices import store
from pricing_plans.errors import UnknownPlanError
from pricing_plans.models import Catalog

__all__ = ["MetricInputs", "coupon_issues", "figures_from_database", "load_metric_inputs", "negotiated_plans"]


@dataclass(frozen=True, slots=True)
class MetricInputs:
    """The records behind the figures of a range of periods.

    Attributes:
      customers: every customer.
      subscriptions: every subscription (earlier ones tell a reactivation from a new customer).
      invoices: the invoices whose period starts from the period before the range to the range's last period,
        and the credit notes against them, draft and void included (the computation filters by status).
      overrides: every version of the subscriptions' negotiated prices, by subscription id.
    """

    customers: tuple[Customer, ...]
    subscriptions: tuple[Subscription, ...]
    invoices: tuple[InvoiceSummary, ...]
    overrides: Mapping[int, tuple[SubscriptionOverride, ...]] = field(default_factory=dict)
    coupons: tuple[CouponIssue, ...] = ()


def load_metric_inputs(session: Session, periods: Sequence[Period]) -> MetricInputs:
    """Read the records for ``periods`` (consecutive, in order) in five queries, and two for the coupons."""
    if not periods:
        return MetricInputs((), (), ())
    first, last = periods[0].previous().start, periods[-1].start
    subscriptions = tuple(repository.list_subscriptions(session))
    customers = tuple(repository.list_customers(session))
    return MetricInputs(
        customers=customers,
        subscriptions=subscriptions,
        invoices=tuple(_invoice_summaries(session, first, last)),
        overrides=override_tables.overrides_of(session, [s.id for s in subscriptions]),
        coupons=tuple(coupon_issues(session, {c.external_id: c.currency for c in customers})),
    )


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


def _invoice_summaries(session: Session, first: dt.date, last: dt.date) -> list[InvoiceSummary]:
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
        )
        for invoice in store.invoice_amounts(session, first, last)
    ]


def figures_from_database(engine: Engine, catalog: Catalog, periods: Sequence[Period]) -> list[PeriodFigures]:
    """The figures of ``periods`` (consecutive months, in order) per currency, read in one read-only
    transaction."""
    with session_scope(read_only(engine)) as session:
        inputs = load_metric_inputs(session, periods)
        as_of = utcnow()  # the report's date: redemptions after it do not count
    return compute_figures(
        inputs.customers, inputs.subscriptions, catalog, inputs.invoices, periods,
        negotiated=negotiated_plans(catalog, inputs), coupons=inputs.coupons, as_of=as_of,
    )  # fmt: skip
