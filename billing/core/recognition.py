"""Recognized revenue: a fee billed in advance is revenue of the days it covers, not of the day it was billed. Pure:
the lines come from ``billing.metrics_store``.

- A line is **billed** in the month its service period begins (a line without one — a discount, a credit — in the
  month of its invoice's period start).
- It is **recognized** over the days of its service period ``[start, end)``: recognized to date through a day =
  the line's amount × the days covered so far / its days, rounded to the currency's minor units; each month takes
  the difference (cumulative rounding), so a line's parts add up to its amount exactly. A line without a service
  period is recognized when billed.
- **Deferred revenue** (billed, not yet recognized), per month: opening + added (billed in the month) − recognized
  in the month = closing; the closing of a month is the opening of the next.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from billing.core.periods import Period, month_of
from pricing_plans.money import ZERO, round_money

__all__ = ["Recognition", "RecognizedLine", "recognize"]


@dataclass(frozen=True, slots=True)
class RecognizedLine:
    """An issued line: its currency, amount, service period (None: none) and the day its invoice's period starts."""

    currency: str
    amount: decimal.Decimal
    service_start: dt.date | None
    service_end: dt.date | None
    invoice_start: dt.date

    @property
    def billed_on(self) -> dt.date:
        return self.service_start or self.invoice_start

    def recognized_until(self, day: dt.date) -> decimal.Decimal:
        """What of the line is recognized before ``day`` (cumulatively rounded)."""
        start, end = self.service_start, self.service_end
        if start is None or end is None or end <= start:
            return self.amount if day > self.billed_on else ZERO
        covered = min(max((day - start).days, 0), (end - start).days)
        return round_money(self.amount * covered / (end - start).days, self.currency)


@dataclass(frozen=True, slots=True)
class Recognition:
    """One month's revenue in one currency: billed, recognized, and the deferred revenue's movement."""

    period: Period
    currency: str
    billed: decimal.Decimal
    recognized: decimal.Decimal
    deferred_opening: decimal.Decimal
    deferred_closing: decimal.Decimal

    @property
    def deferred_added(self) -> decimal.Decimal:
        return self.billed


def recognize(lines: Iterable[RecognizedLine], periods: Sequence[Period]) -> list[Recognition]:
    """Billed, recognized and deferred revenue of each of ``periods`` (months), per currency with any line."""
    by_currency: dict[str, list[RecognizedLine]] = defaultdict(list)
    for line in lines:
        by_currency[line.currency].append(line)
    found: list[Recognition] = []
    for period in periods:
        for currency in sorted(by_currency):
            found.append(_month(period, currency, by_currency[currency]))
    return found


def _month(period: Period, currency: str, lines: Sequence[RecognizedLine]) -> Recognition:
    billed = recognized = opening = ZERO
    for line in lines:
        before = line.recognized_until(period.start)
        if line.billed_on < period.start:
            opening += line.amount - before
        elif month_of(line.billed_on) == period:
            billed += line.amount
        recognized += line.recognized_until(period.end) - before
    return Recognition(period, currency, billed, recognized, opening, opening + billed - recognized)
