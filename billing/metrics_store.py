"""Loading what the revenue and churn figures need from the database, in four queries, and computing them.

The computation itself is :func:`billing.core.metrics.compute_figures`, which never sees a database. This module reads
the customers and subscriptions through ``billing.db.repository`` and the invoice amounts straight from the
invoice tables (only the columns needed, lines summed per kind in Python: SQLite stores exact decimals as text,
so the database never adds them up).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Engine, and_, or_, select
from sqlalchemy.orm import Session, aliased

from billing.core.domain import Customer, Subscription
from billing.core.metrics import InvoiceSummary, PeriodFigures, compute_figures
from billing.core.periods import Period
from billing.db import repository, session_scope
from dbkit import read_only
from invoices.model import InvoiceKind, InvoiceStatus
from invoices.tables import InvoiceLineRow, InvoiceRow
from pricing_plans.models import Catalog
from pricing_plans.money import ZERO

__all__ = ["MetricInputs", "figures_from_database", "load_metric_inputs"]


@dataclass(frozen=True, slots=True)
class MetricInputs:
    """The records behind the figures of a range of periods.

    Attributes:
      customers: every customer.
      subscriptions: every subscription (earlier ones tell a reactivation from a new customer).
      invoices: the invoices whose period starts from the period before the range to the range's last period,
        and the credit notes against them, draft and void included (the computation filters by status).
    """

    customers: tuple[Customer, ...]
    subscriptions: tuple[Subscription, ...]
    invoices: tuple[InvoiceSummary, ...]


def load_metric_inputs(session: Session, periods: Sequence[Period]) -> MetricInputs:
    """Read the records for ``periods`` (consecutive, in order) in four queries."""
    if not periods:
        return MetricInputs((), (), ())
    first, last = periods[0].previous().start, periods[-1].start
    return MetricInputs(
        customers=tuple(repository.list_customers(session)),
        subscriptions=tuple(repository.list_subscriptions(session)),
        invoices=tuple(_invoice_summaries(session, first, last)),
    )


def _invoice_summaries(session: Session, first: dt.date, last: dt.date) -> list[InvoiceSummary]:
    in_range = select(InvoiceRow.id).where(
        InvoiceRow.kind == InvoiceKind.INVOICE.value, InvoiceRow.period_start.between(first, last)
    )
    wanted = or_(
        and_(InvoiceRow.kind == InvoiceKind.INVOICE.value, InvoiceRow.period_start.between(first, last)),
        and_(InvoiceRow.kind == InvoiceKind.CREDIT_NOTE.value, InvoiceRow.refers_to_id.in_(in_range)),
    )
    credited = aliased(InvoiceRow)
    rows = session.execute(
        select(
            InvoiceRow.id,
            InvoiceRow.number,
            InvoiceRow.kind,
            InvoiceRow.status,
            InvoiceRow.customer_external_id,
            InvoiceRow.currency,
            InvoiceRow.period_start,
            InvoiceRow.subtotal,
            InvoiceRow.discount,
            credited.number,
        )
        .outerjoin(credited, credited.id == InvoiceRow.refers_to_id)
        .where(wanted)
        .order_by(InvoiceRow.id)
    ).all()
    amounts: dict[int, dict[str, Decimal]] = {}
    lines = session.execute(
        select(InvoiceLineRow.invoice_id, InvoiceLineRow.kind, InvoiceLineRow.amount)
        .join(InvoiceRow, InvoiceRow.id == InvoiceLineRow.invoice_id)
        .where(wanted)
    )
    for invoice_id, kind, amount in lines:
        per_kind = amounts.setdefault(invoice_id, {})
        per_kind[kind] = per_kind.get(kind, ZERO) + amount
    return [
        InvoiceSummary(
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
        )
        for invoice_id, number, kind, status, customer, currency, period_start, subtotal, discount, refers_to in rows
    ]


def figures_from_database(engine: Engine, catalog: Catalog, periods: Sequence[Period]) -> list[PeriodFigures]:
    """The figures of ``periods`` (consecutive months, in order) per currency, read in one read-only
    transaction."""
    with session_scope(read_only(engine)) as session:
        inputs = load_metric_inputs(session, periods)
    return compute_figures(inputs.customers, inputs.subscriptions, catalog, inputs.invoices, periods)
