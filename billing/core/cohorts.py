"""Revenue cohorts: customers grouped by the period of their first billed revenue, and what each cohort still pays
in every later period. Pure: the billed revenue comes from ``billing.core.metrics.billed_by_customer`` or, summed
per customer and month by the database, from ``billing.metrics_store.billed_customer_months``.

- A customer's **cohort** is the month (or quarter) of its first invoice with billed revenue > 0 (billed revenue as
  the revenue figures count it: fees + usage, net of discounts and free credits, in the month its service begins).
- For the cohort's k-th period (k = 0 is the cohort's own): **logo retention** = cohort customers billed > 0 in it /
  the cohort's size; **revenue retention** = the cohort's billed revenue in it / its billed revenue in period 0. A
  customer billed again after a gap counts as retained in the periods it is billed.
- Periods that are still open at the report's instant are left out (no cell rather than a 0 %).
- Cohorts start with the billing history (the first month with an issued period invoice in the currency): before
  it at most opening fees were billed, so a customer billed then has no known first period and is left out, and
  no period before it has a cell (rather than a 0 % where nothing was billed yet).
- Per currency; nothing is converted.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from itertools import groupby

from billing.core.metrics import (
    BilledAmounts,
    BilledHistory,
    CustomerMonth,
    format_money,
    format_rate,
    has_ended_everywhere,
    ratio,
)
from billing.core.periods import Period, month_of, quarter_of
from pricing_plans.money import ZERO

__all__ = ["Cohort", "CohortCell", "Grain", "cohort_rows", "compute_cohorts"]

_EXACT = decimal.Context(prec=1000, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])


class Grain(StrEnum):
    """How periods are grouped: calendar months or calendar quarters."""

    MONTH = "month"
    QUARTER = "quarter"

    def period_of(self, day: dt.date) -> Period:
        return month_of(day) if self is Grain.MONTH else quarter_of(day)


@dataclass(frozen=True, slots=True)
class CohortCell:
    """One later period of a cohort: ``offset`` periods after the cohort's own (0: its own)."""

    period: Period
    offset: int
    customers: int
    revenue: Decimal
    logo_retention: Decimal | None
    revenue_retention: Decimal | None


@dataclass(frozen=True, slots=True)
class Cohort:
    """The customers first billed in ``period``, in ``currency``: how many, their first-period revenue, and one
    cell per closed period from their own on."""

    period: Period
    currency: str
    customers: int
    revenue: Decimal
    cells: tuple[CohortCell, ...]


def compute_cohorts(
    billed: Mapping[tuple[str, dt.date], Mapping[str, BilledAmounts]] | Iterable[CustomerMonth],
    grain: Grain = Grain.MONTH,
    *,
    as_of: dt.datetime,
    currency: str | None = None,
    history_start: Mapping[str, dt.date] | None = None,
) -> list[Cohort]:
    """The cohorts of every currency (or only ``currency``), by currency then period, from the billed revenue per
    (currency, month start) and customer, or as :class:`CustomerMonth` records grouped by currency and customer
    (as the database sums them: memory then grows with cohorts × periods, not with customers or invoices). Only
    the periods that have ended everywhere at ``as_of`` count. ``history_start``: per currency, the first month of
    its billing history (``billing.core.metrics.first_billed_periods``): no period before its own counts, and a
    customer billed before it (an opening fee billed before the first billing run) is left out, its first period
    being unknown."""
    if isinstance(billed, Mapping):
        billed = BilledHistory({key: dict(customers) for key, customers in billed.items()}).customer_months()
    found = _Cells()
    with decimal.localcontext(_EXACT):
        for (cur, _customer), rows in groupby(billed, key=lambda r: (r.currency, r.customer)):
            if currency is not None and cur != currency:
                continue
            start = (history_start or {}).get(cur)
            first = grain.period_of(start) if start is not None else None
            revenue: dict[Period, Decimal] = {}
            censored = False
            for row in rows:
                period = grain.period_of(row.month)
                if first is not None and period < first:
                    censored = censored or row.total > 0
                elif has_ended_everywhere(period, as_of):
                    revenue[period] = revenue.get(period, ZERO) + row.total
            found.add(cur, revenue, censored)
    cohorts: list[Cohort] = []
    for cur in sorted(found.periods):
        cohorts.extend(found.cohorts_of(cur))
    return cohorts


class _Cells:
    """Cohort cells summed one customer at a time: per (currency, cohort, period) the customers billed > 0 and
    their revenue; per (currency, cohort) the size; per currency the periods seen."""

    def __init__(self) -> None:
        self.periods: dict[str, set[Period]] = defaultdict(set)
        self.sizes: dict[tuple[str, Period], int] = defaultdict(int)
        self.cells: dict[tuple[str, Period, Period], tuple[int, Decimal]] = {}

    def add(self, currency: str, revenue: Mapping[Period, Decimal], censored: bool = False) -> None:
        self.periods[currency].update(revenue)
        cohort = min((p for p, amount in revenue.items() if amount > 0), default=None)
        if cohort is None or censored:
            return
        self.sizes[(currency, cohort)] += 1
        for period, amount in revenue.items():
            if period < cohort:
                continue
            customers, total = self.cells.get((currency, cohort, period), (0, ZERO))
            self.cells[(currency, cohort, period)] = (customers + (amount > 0), total + amount)

    def cohorts_of(self, currency: str) -> Iterable[Cohort]:
        periods = _consecutive(sorted(self.periods[currency]))
        for index, period in enumerate(periods):
            size = self.sizes.get((currency, period), 0)
            if not size:
                continue
            base = self.cells[(currency, period, period)][1]
            cells = []
            for offset, cell_period in enumerate(periods[index:]):
                customers, total = self.cells.get((currency, period, cell_period), (0, ZERO))
                cells.append(
                    CohortCell(cell_period, offset, customers, total, ratio(customers, size), ratio(total, base))
                )
            yield Cohort(period, currency, size, base, tuple(cells))


def _consecutive(periods: list[Period]) -> list[Period]:
    """Every period from the first to the last, gaps filled (a month nobody was billed in still has a cell)."""
    if not periods:
        return []
    filled = [periods[0]]
    while filled[-1] < periods[-1]:
        filled.append(filled[-1].next())
    return filled


def cohort_rows(cohorts: Iterable[Cohort]) -> list[dict[str, object]]:
    """The cohorts as the ``--json`` objects: strings, money with the currency's minor digits, rates in %."""
    return [
        {
            "cohort": c.period.label,
            "currency": c.currency,
            "customers": str(c.customers),
            "revenue": format_money(c.revenue, c.currency),
            "periods": [
                {
                    "period": cell.period.label,
                    "offset": str(cell.offset),
                    "customers_retained": str(cell.customers),
                    "logo_retention": format_rate(cell.logo_retention),
                    "revenue": format_money(cell.revenue, c.currency),
                    "revenue_retention": format_rate(cell.revenue_retention),
                }
                for cell in c.cells
            ],
        }
        for c in cohorts
    ]
