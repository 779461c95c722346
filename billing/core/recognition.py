"""Recognized revenue: a fee billed in advance is revenue of the days it covers, not of the day it was billed. Pure:
the lines come from ``billing.metrics_store``.

- A line is **billed** in the month its service period begins (a line without one — a discount, a credit — in the
  month of its invoice's period start). A subscription's line serves only the days the subscription runs
  (:func:`served`): a yearly fee prorated from 10 March is billed in March and recognized from 10 March, and a
  quarter's fee given back after an end on 11 April leaves April's 10 days alone.
- It is **recognized** over the days of its service period ``[start, end)``: recognized to date through a day =
  the line's amount × the days covered so far / its days, rounded to the currency's minor units; each month takes
  the difference (cumulative rounding), so a line's parts add up to its amount exactly. A line without a service
  period is recognized when billed.
- **Deferred revenue** (billed, not yet recognized), per month: opening + added (billed in the month) − recognized
  in the month = closing; the closing of a month is the opening of the next.
- An invoice's lines are brought to its revenue, its total less its tax: the tax inside tax-inclusive prices (and a
  discount that is no line) is shared over its lines by amount, each part billed and recognized with its line (a
  fee of 119.00 with 19 % inside is 100.00 of revenue).
- A **discount line** (a coupon's) reduces the revenue of the lines it reduces: taken from them by amount (the
  positive lines of its plans, when the coupon is restricted to some; never a refund), each line billed and
  recognized net of it (``net_of_discount_lines``); a credit note is shared over those net lines. A
  100 % coupon on April's fee billed in advance on March's invoice leaves March and April at nothing, not March
  at −fee and April at +fee.
- A **credit note** takes back revenue in the month it is issued: its net amount, negative, shared over the lines
  of the invoice it credits in proportion to their amounts, each part over its line's service period. In the
  month of issue it is billed (added to deferred revenue, negative) and the part of the service period already
  past at that month's end is recognized at once (negative: a reversal of revenue recognized before); the rest
  reduces the months still to come. A note of 600.00 issued on 2026-07-15 against a 1,200.00 fee of 2026 (in
  advance, 365 days): July takes −600 × 212 / 365 = −348.49 of recognized revenue and the deferred revenue falls
  by 600 − 348.49 = 251.51; each later month recognizes its days of −600.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from billing.core.periods import Period
from pricing_plans.money import ZERO, round_money

__all__ = [
    "Recognition",
    "RecognizedLine",
    "credit_note_lines",
    "net_of_discount_lines",
    "net_of_invoice",
    "recognize",
    "served",
]


def served(
    start: dt.date | None,
    end: dt.date | None,
    runs: tuple[dt.date, dt.date | None] | None,
    amount: decimal.Decimal = ZERO,
) -> tuple[dt.date | None, dt.date | None]:
    """A line's service period ``[start, end)`` as its subscription serves it (``runs``: its start and its end,
    exclusive, None while open-ended; None for a line of no subscription): a fee starts no earlier than its
    subscription (a yearly fee prorated from 10 March is revenue from 10 March); a line giving part of a fee back
    (negative) after the subscription's end inside its period serves the days it gives back, from that end (the
    quarter's 300.00 and −267.03 for the days after 11 April leave 32.97 of April's days, none of May's). An end
    not yet given back changes nothing, so a cancellation scheduled for May does not restate April. A period cut
    to nothing is left empty at its first day: recognized when billed."""
    if start is None or end is None or runs is None:
        return start, end
    first = max(start, runs[0])
    if amount < 0 and runs[1] is not None and first < runs[1] < end:
        first = runs[1]
    return first, max(first, end)


@dataclass(frozen=True, slots=True)
class RecognizedLine:
    """An issued line: its currency, amount, service period (None: none) and the day its invoice's period starts;
    for a credit note's line (``amount`` negative), ``issued_on``: the note's issue date."""

    currency: str
    amount: decimal.Decimal
    service_start: dt.date | None
    service_end: dt.date | None
    invoice_start: dt.date
    issued_on: dt.date | None = None

    @property
    def billed_on(self) -> dt.date:
        return self.issued_on or self.service_start or self.invoice_start

    def recognized_until(self, day: dt.date) -> decimal.Decimal:
        """What of the line is recognized before ``day`` (cumulatively rounded); a credit note's line nothing
        before its month of issue."""
        if self.issued_on is not None and day <= self.issued_on.replace(day=1):
            return ZERO
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
    """Billed, recognized and deferred revenue of each of ``periods`` (months), per currency with any line. The
    lines are read once, each added to the months' sums as it comes (``lines`` may be streamed: memory grows with
    months and currencies, not with lines)."""
    bounds = sorted({p.start for p in periods} | {p.end for p in periods})
    sums: dict[str, list[list[decimal.Decimal]]] = {}
    for line in lines:
        months = sums.get(line.currency)
        if months is None:
            months = sums[line.currency] = [[ZERO, ZERO, ZERO] for _ in periods]
        _add_line(line, periods, bounds, months)
    return [
        _recognition(period, currency, *sums[currency][index])
        for index, period in enumerate(periods)
        for currency in sorted(sums)
    ]


def _add_line(
    line: RecognizedLine, periods: Sequence[Period], bounds: Sequence[dt.date], months: list[list[decimal.Decimal]]
) -> None:
    """Add ``line`` to each month's [billed, recognized, deferred opening]."""
    until = dict(zip(bounds, map(line.recognized_until, bounds), strict=True))
    billed_on = line.billed_on
    for sums, period in zip(months, periods, strict=True):
        before = until[period.start]
        if billed_on < period.start:
            sums[2] += line.amount - before
        elif billed_on < period.end:
            sums[0] += line.amount
        sums[1] += until[period.end] - before


def _recognition(
    period: Period, currency: str, billed: decimal.Decimal, recognized: decimal.Decimal, opening: decimal.Decimal
) -> Recognition:
    return Recognition(period, currency, billed, recognized, opening, opening + billed - recognized)


def credit_note_lines(
    net: decimal.Decimal, issued_on: dt.date, credited: Sequence[RecognizedLine]
) -> list[RecognizedLine]:
    """A credit note of ``net`` (positive, before tax) issued on ``issued_on`` as negative lines over the lines of
    the invoice it credits (``credited``): each takes its share of ``net`` in proportion to its amount (rounded to
    minor units, the last line taking what rounding leaves) and that line's service period, so the note takes
    back revenue of the days each line covers."""
    shares = _shares(net, credited)
    if not shares:  # (lines adding up to nothing: the note is revenue taken back the day it is issued)
        return [RecognizedLine(credited[0].currency, -net, None, None, issued_on, issued_on)] if credited else []
    return [
        RecognizedLine(line.currency, -share, line.service_start, line.service_end, line.invoice_start, issued_on)
        for line, share in zip(credited, shares, strict=True)
    ]


def net_of_invoice(lines: Sequence[RecognizedLine], net: decimal.Decimal) -> list[RecognizedLine]:
    """What brings an invoice's ``lines`` to its revenue ``net`` (its total less its tax): the tax inside
    tax-inclusive prices (and a discount that is no line), negative, shared over the lines by amount as a credit
    note is, each part billed and recognized with its line. A fee of 119.00 with 19.00 of tax inside it is 100.00
    of revenue: a part of −19.00 over the fee's days."""
    if not lines:
        return []
    gap = sum((line.amount for line in lines), ZERO) - net
    if gap == 0:
        return []
    shares = _shares(gap, lines)
    if not shares:  # lines adding up to nothing: the gap is revenue of the invoice's start
        first = lines[0]
        return [RecognizedLine(first.currency, -gap, None, None, first.invoice_start)]
    return [
        RecognizedLine(line.currency, -share, line.service_start, line.service_end, line.invoice_start)
        for line, share in zip(lines, shares, strict=True)
    ]


def net_of_discount_lines(
    lines: Sequence[tuple[RecognizedLine, str | None]], discounts: Sequence[tuple[RecognizedLine, Sequence[str]]]
) -> list[RecognizedLine]:
    """An invoice's ``lines`` (each with its plan) net of its discount lines (each with the plans its coupon
    reduces; none: every plan), as the coupon reduced them: each discount is taken from the positive lines of its
    plans in proportion to what is left of them (rounded to minor units, the last line taking the rest), what is
    left of it from every positive line; a negative line (a refund) takes no part. What no positive line can take
    stays a line of its own, revenue of its invoice's start."""
    left = [line.amount for line, _ in lines]
    rests: list[RecognizedLine] = []
    for discount, plans in discounts:
        rest = discount.amount
        for scope in (plans, None) if plans else (None,):
            covered = [i for i, (_, plan) in enumerate(lines) if (scope is None or plan in scope) and left[i] > 0]
            whole = sum((left[i] for i in covered), ZERO)
            if rest >= 0 or whole <= 0:
                continue
            take = max(rest, -whole)
            shares = _shares(take, [replace(lines[i][0], amount=left[i]) for i in covered])
            for i, share in zip(covered, shares, strict=True):
                left[i] += share
            rest -= take
        if rest != 0:
            rests.append(replace(discount, amount=rest))
    return [replace(line, amount=amount) for (line, _), amount in zip(lines, left, strict=True)] + rests


def _shares(amount: decimal.Decimal, lines: Sequence[RecognizedLine]) -> list[decimal.Decimal]:
    """``amount`` shared over ``lines`` in proportion to their amounts, rounded to minor units, the last line taking
    what rounding leaves; none when the lines add up to nothing."""
    total = sum((line.amount for line in lines), ZERO)
    if not lines or total == 0:
        return []
    currency = lines[0].currency
    shares: list[decimal.Decimal] = []
    left = amount
    for index, line in enumerate(lines):
        share = left if index == len(lines) - 1 else round_money(amount * line.amount / total, currency)
        left -= share
        shares.append(share)
    return shares
