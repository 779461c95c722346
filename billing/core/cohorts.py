"""Revenue cohorts: customers grouped by the period of their first billed revenue, and what each cohort still pays
in every later period. Pure: the billed revenue comes from ``billing.core.metrics.billed_by_customer``.

- A customer's **cohort** is the month (or quarter) of its first invoice with billed revenue > 0 (billed revenue as
  the revenue figures count it: fees + usage, net of discounts and free credits, in the month its service begins).
- For the cohort's k-th period (k = 0 is the cohort's own): **logo retention** = cohort customers billed > 0 in it /
  the cohort's size; **revenue retention** = the cohort's billed revenue in it / its billed revenue in period 0. A
  customer billed again after a gap counts as retained in the periods it is billed.
- Periods that are still open at the report's instant are left out (no cell rather than a 0 %).
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

from billing.core.metrics import BilledAmounts, format_money, format_rate, has_ended_everywhere, ratio
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
    billed: Mapping[tuple[str, dt.date], Mapping[str, BilledAmounts]],
    grain: Grain = Grain.MONTH,
    *,
    as_of: dt.datetime,
    currency: str | None = None,
) -> list[Cohort]:
    """The cohorts of every currency (or only ``currency``), by currency then period, from the billed revenue per
    (currency, month start) and customer. Only the periods that have ended everywhere at ``as_of`` count."""
    per_period: dict[str, dict[Period, dict[str, Decimal]]] = defaultdict(lambda: defaultdict(dict))
    with decimal.localcontext(_EXACT):
        for (cur, month_start), customers in billed.items():
            if currency is not None and cur != currency:
                continue
            period = grain.period_of(month_start)
            if not has_ended_everywhere(period, as_of):
                continue
            totals = per_period[cur][period]
            for customer, amounts in customers.items():
                totals[customer] = totals.get(customer, ZERO) + amounts.total
    cohorts: list[Cohort] = []
    for cur in sorted(per_period):
        cohorts.extend(_cohorts_of(cur, per_period[cur]))
    return cohorts


def _cohorts_of(currency: str, revenue: Mapping[Period, Mapping[str, Decimal]]) -> Iterable[Cohort]:
    periods = _consecutive(sorted(revenue))
    first: dict[str, Period] = {}
    for period in periods:
        for customer, amount in revenue.get(period, {}).items():
            if amount > 0 and customer not in first:
                first[customer] = period
    members: dict[Period, list[str]] = defaultdict(list)
    for customer, period in first.items():
        members[period].append(customer)
    for index, period in enumerate(periods):
        if period not in members:
            continue
        group = members[period]
        with decimal.localcontext(_EXACT):
            base = sum((revenue[period][c] for c in group), ZERO)
        later = enumerate(periods[index:])
        cells = [_cell(cell_period, offset, group, revenue.get(cell_period, {}), base) for offset, cell_period in later]
        yield Cohort(period, currency, len(group), base, tuple(cells))


def _cell(period: Period, offset: int, group: list[str], revenue: Mapping[str, Decimal], base: Decimal) -> CohortCell:
    with decimal.localcontext(_EXACT):
        amounts = [revenue.get(c, ZERO) for c in group]
        total = sum(amounts, ZERO)
    retained = sum(1 for amount in amounts if amount > 0)
    return CohortCell(period, offset, retained, total, ratio(retained, len(group)), ratio(total, base))


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
