"""Aged receivables: what customers owe, sorted by how long it is overdue. Pure: no database, no clock.

An invoice's age on day ``as_of`` is the number of days past its due date (``as_of − due_date``); it falls in
one bucket: ``current`` (not yet due: 0 days or fewer), ``1-30``, ``31-60``, ``61-90``, ``90+`` days overdue.
Amounts are added per customer and currency, each bucket and the total, and per currency over all customers.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from pricing_plans.money import ZERO, sum_in_minor_units

__all__ = ["BUCKETS", "AgingRow", "OpenAmount", "age_receivables", "bucket_of"]

BUCKETS = ("current", "1-30", "31-60", "61-90", "90+")


@dataclass(frozen=True, slots=True)
class OpenAmount:
    """What one invoice still owes: ``amount`` (> 0) in ``currency``, due on ``due_date``."""

    customer: str
    customer_name: str
    currency: str
    amount: Decimal
    due_date: dt.date


@dataclass(frozen=True, slots=True)
class AgingRow:
    """One customer's (or, with ``customer`` None, every customer's) open amounts in one currency, per bucket
    (in the order of ``BUCKETS``), with their total and the number of invoices."""

    customer: str | None
    customer_name: str
    currency: str
    buckets: tuple[Decimal, ...]
    invoices: int

    @property
    def total(self) -> Decimal:
        return sum(self.buckets, ZERO)


def bucket_of(due_date: dt.date, as_of: dt.date) -> str:
    """The bucket of an amount due on ``due_date``, seen on ``as_of``."""
    overdue = (as_of - due_date).days
    if overdue <= 0:
        return "current"
    if overdue <= 30:
        return "1-30"
    if overdue <= 60:
        return "31-60"
    if overdue <= 90:
        return "61-90"
    return "90+"


def age_receivables(amounts: Iterable[OpenAmount], as_of: dt.date) -> tuple[list[AgingRow], list[AgingRow]]:
    """The rows per customer and currency (by customer, then currency) and the totals per currency."""
    per_customer: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [ZERO] * len(BUCKETS))
    per_currency: dict[str, list[Decimal]] = defaultdict(lambda: [ZERO] * len(BUCKETS))
    counts: dict[tuple[str | None, str], int] = defaultdict(int)
    names: dict[str, str] = {}
    for item in amounts:
        index = BUCKETS.index(bucket_of(item.due_date, as_of))
        per_customer[(item.customer, item.currency)][index] += item.amount
        per_currency[item.currency][index] += item.amount
        counts[(item.customer, item.currency)] += 1
        counts[(None, item.currency)] += 1
        names[item.customer] = item.customer_name
    rows = [
        AgingRow(customer, names[customer], currency, _rounded(buckets, currency), counts[(customer, currency)])
        for (customer, currency), buckets in sorted(per_customer.items())
    ]
    totals = [
        AgingRow(None, "", currency, _rounded(buckets, currency), counts[(None, currency)])
        for currency, buckets in sorted(per_currency.items())
    ]
    return rows, totals


def _rounded(buckets: list[Decimal], currency: str) -> tuple[Decimal, ...]:
    return tuple(sum_in_minor_units(amount, currency) for amount in buckets)  # (sums of exact amounts, any size)
