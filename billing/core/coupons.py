"""Coupons: what a coupon takes off a period invoice. Pure: no database, no clock.

A coupon applied to a customer reduces the customer's period invoices from the first billing period that starts
after the day it was applied:
- by a percentage of the lines it covers, or by a fixed amount in the invoice's currency (once per invoice: what
  the invoice cannot use is lost);
- ``once`` reduces one billing period, ``repeating`` the first N it reduces, ``forever`` every one;
- restricted to plans, it covers only the lines of those plans' sections (late usage of them included);
- never more than what is left of the invoice: a discount never takes an invoice below zero.

Each reduction is its own line (kind ``discount``, negative) in the section "Discounts", before tax. The caller
says how many billing periods before this one each coupon already reduced (counted from the invoices that carry
its discount lines), so composing an invoice again gives the same lines.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from enum import StrEnum

from billing.core.fees import refund_of_paid
from billing.core.periods import Period
from invoices.model import COUPON_TERMS, DISCOUNT_SECTION, InvoiceLine, LineDetails, LineKind
from pricing_plans.money import WEIGHTS, ZERO, Rounding, format_amount, round_money, settled

__all__ = [
    "COUPON_PLANS",
    "DISCOUNT_SECTION",
    "AppliedCoupon",
    "Coupon",
    "CouponIssue",
    "Duration",
    "coupon_counts",
    "coupon_of_line",
    "discount_lines",
]


COUPON_PLANS = "plans"
"""A discount line's ``details.extra`` key: the plans its coupon reduces (absent: every plan)."""


class Duration(StrEnum):
    ONCE = "once"
    REPEATING = "repeating"
    FOREVER = "forever"


@dataclass(frozen=True, slots=True)
class Coupon:
    """A coupon as created: exactly one of ``percent_off`` and ``amount_off`` (with its ``currency``).

    ``months`` is the number of billing periods a repeating coupon reduces; ``plans`` the plan codes it is
    restricted to (empty: every plan); ``expires_on``: it cannot be issued nor applied from that day on.
    """

    code: str
    duration: Duration
    percent_off: Decimal | None = None
    amount_off: Decimal | None = None
    currency: str | None = None
    months: int | None = None
    plans: tuple[str, ...] = ()
    max_redemptions: int | None = None
    expires_on: dt.date | None = None
    created_at: dt.datetime | None = None

    @property
    def periods(self) -> int | None:
        """How many billing periods it reduces; None: no limit."""
        if self.duration is Duration.ONCE:
            return 1
        if self.duration is Duration.REPEATING:
            return self.months
        return None

    @property
    def terms_json(self) -> dict[str, object]:
        """Its terms as a discount line records them, for the invoice to word in its language:
        ``{"percent_off": "20", "duration": "repeating", "months": 3}`` or ``{"amount_off": "10.00", "currency":
        "USD", "duration": "once"}``."""
        found: dict[str, object]
        if self.percent_off is not None:
            found = {"percent_off": str(self.percent_off)}
        else:
            found = {"amount_off": str(self.amount_off), "currency": self.currency}
        found["duration"] = self.duration.value
        if self.duration is Duration.REPEATING:
            found["months"] = self.months
        return found

    @property
    def terms(self) -> str:
        """``20 % off`` or ``10.00 USD off``, then its duration."""
        if self.percent_off is not None:
            off = f"{self.percent_off.normalize():f} % off"
        else:
            assert self.amount_off is not None and self.currency is not None
            off = f"{format_amount(self.amount_off, self.currency)} {self.currency} off"
        if self.duration is Duration.REPEATING:
            return f"{off} for {self.months} billing period{'s' if self.months != 1 else ''}"
        return f"{off}, {self.duration.value}"


@dataclass(frozen=True, slots=True)
class AppliedCoupon:
    """A coupon applied to a customer on ``applied_on``: it reduces the billing periods that start after that
    day. ``periods_used``: how many billing periods before the one being invoiced it already reduced."""

    coupon: Coupon
    applied_on: dt.date
    periods_used: int = 0

    @property
    def used_up(self) -> bool:
        """It has reduced as many billing periods as it may (a coupon for once, or for some months): no more."""
        limit = self.coupon.periods
        return limit is not None and self.periods_used >= limit

    def covers(self, period_start: dt.date) -> bool:
        return period_start > self.applied_on and not self.used_up


def coupon_of_line(line: InvoiceLine) -> str | None:
    """The code of the coupon a discount line comes from."""
    if line.kind is not LineKind.DISCOUNT:
        return None
    code = line.details.extra.get("coupon")
    return None if code is None else str(code)


def discount_lines(
    lines: Sequence[InvoiceLine],
    coupons: Sequence[AppliedCoupon],
    period_start: dt.date,
    currency: str,
    rounding: Rounding = Rounding.HALF_UP,
    earlier: Sequence[InvoiceLine] = (),
) -> list[InvoiceLine]:
    """The discount lines of an invoice of the billing period starting ``period_start`` with ``lines``: one per
    coupon that covers the period and takes something off, in the order given.

    ``earlier``: the lines of the invoices of the same billing period issued before this one (its progressive
    invoices), discount lines included. The period's discounts are then computed on everything the period billed
    so far (``earlier`` and ``lines``), less what the earlier invoices already took off, coupon by coupon: the
    period's invoices together take off exactly what one invoice of the period would have."""
    taken: dict[str, Decimal] = {}
    for line in earlier:
        code = coupon_of_line(line)
        if code is not None:
            taken[code] = taken.get(code, ZERO) - line.amount
    billed = [*(line for line in earlier if line.kind is not LineKind.DISCOUNT), *lines]
    discounts: list[InvoiceLine] = []
    reductions = _reductions(billed, coupons, period_start, currency, rounding)
    for applied, amount, base, explanation in reductions:
        before = taken.get(applied.coupon.code, ZERO)
        if amount - before == 0:
            continue
        if before:
            explanation += f"; less {format_amount(before, currency)} taken off by earlier invoices of the period"
        discounts.append(_line(applied, amount - before, base, explanation))
    # a coupon that takes nothing off the period now (its usage given back) gives back what earlier invoices took
    reducing = {applied.coupon.code for applied, *_ in reductions}
    for applied in coupons:
        before = taken.get(applied.coupon.code, ZERO)
        if before and applied.coupon.code not in reducing:
            explanation = (
                f"nothing to take off the period now; {format_amount(before, currency)} taken off by earlier "
                "invoices of the period, given back"
            )
            discounts.append(_line(applied, -before, ZERO, explanation))
    return discounts


def _reductions(
    lines: Sequence[InvoiceLine],
    coupons: Sequence[AppliedCoupon],
    period_start: dt.date,
    currency: str,
    rounding: Rounding,
) -> list[tuple[AppliedCoupon, Decimal, Decimal, str]]:
    """(coupon, amount off, the amount it was taken from, how) for each coupon that reduces ``lines``."""
    billed = [line for line in lines if line.kind is not LineKind.DISCOUNT]
    # what each line has left once earlier coupons took their part (``_take``): weights, no amounts, to 60 digits
    # and settled, so that neither the order of the lines nor their split over a period's invoices changes a cent
    remaining = [line.amount for line in billed]
    found: list[tuple[AppliedCoupon, Decimal, Decimal, str]] = []
    for applied in coupons:
        coupon = applied.coupon
        if not applied.covers(period_start) or (coupon.amount_off is not None and coupon.currency != currency):
            continue
        covered = [i for i, line in enumerate(billed) if _covered(coupon, line)]
        with localcontext(WEIGHTS):
            exact = max(ZERO, settled(sum((remaining[i] for i in covered), ZERO)))
            left = round_money(max(ZERO, settled(sum(remaining, ZERO))), currency)  # (in minor units)
        eligible = round_money(exact, currency, rounding)
        if coupon.percent_off is not None:
            # the percentage of the lines it covers, taking at most what is left of the invoice: 50 % off support's
            # 20.00 on an invoice left at 5.00 by another plan's refund takes 5.00 (not 50 % of the 5.00)
            base = eligible
            off = round_money(WEIGHTS.divide(WEIGHTS.multiply(exact, coupon.percent_off), 100), currency, rounding)
            amount = min(off, left)
            explanation = f"{coupon.percent_off.normalize():f} % of {format_amount(eligible, currency)}"
            if amount < off:
                explanation += f"; at most the {format_amount(left, currency)} left of the invoice"
        else:
            assert coupon.amount_off is not None
            # in the currency's minor units, however it was written (10 → 10.00; 100.00 JPY → 100): the discount
            # line, and the tax's share of it per rate, are in them
            base = min(eligible, left)
            amount = min(round_money(coupon.amount_off, currency, rounding), base)
            lost = coupon.amount_off - amount
            explanation = f"{format_amount(coupon.amount_off, currency)} off {format_amount(base, currency)}"
            if lost:
                explanation += f"; {format_amount(lost, currency)} unused, lost"
        if amount <= 0:
            continue
        _take(remaining, covered, amount)
        found.append((applied, amount, base, explanation))
    return found


def _take(remaining: list[Decimal], covered: list[int], amount: Decimal) -> None:
    """Take ``amount`` off the covered lines' remaining amounts in proportion to what is left of them (of their
    positive amounts), as prepaid credit weighs an invoice's lines (``billing.core.credits.net_of_discounts``):
    a later coupon covering some of the same lines reduces only what is left of them. 10 % off every line (5.00 of
    20.00 and 30.00) leaves 27.00 of the second, whichever line comes first, for a coupon of 50 % off it (13.50)."""
    positive = [i for i in covered if remaining[i] > 0]
    with localcontext(WEIGHTS):
        whole = sum((remaining[i] for i in positive), ZERO)
        if whole <= 0:
            return
        for i in positive:
            remaining[i] -= amount * remaining[i] / whole


def _covered(coupon: Coupon, line: InvoiceLine) -> bool:
    if line.kind is LineKind.DISCOUNT or refund_of_paid(line):  # (a refund already net of its discount)
        return False
    return not coupon.plans or line.plan_code in coupon.plans


def _line(applied: AppliedCoupon, amount: Decimal, base: Decimal, explanation: str) -> InvoiceLine:
    coupon = applied.coupon
    extra: dict[str, object] = {"coupon": coupon.code, "discounted": str(base), COUPON_TERMS: coupon.terms_json}
    limit = coupon.periods
    if limit is not None:
        extra["billing_period"] = f"{applied.periods_used + 1} of {limit}"
    if coupon.plans:
        extra[COUPON_PLANS] = list(coupon.plans)
    return InvoiceLine(
        kind=LineKind.DISCOUNT,
        description=f"Coupon {coupon.code}: {coupon.terms}",
        amount=-amount,
        section=DISCOUNT_SECTION,
        details=LineDetails(explanation=explanation, extra=extra),
    )


@dataclass(frozen=True, slots=True)
class CouponIssue:
    """A coupon issued to a customer (billed in ``currency``), and when it was redeemed: when the first finalized
    invoice it reduced was finalized (None: not yet)."""

    code: str
    customer: str
    currency: str
    issued_at: dt.datetime
    redeemed_at: dt.datetime | None = None


def coupon_counts(
    issues: Iterable[CouponIssue], periods: Sequence[Period], as_of: dt.datetime | None = None
) -> dict[tuple[dt.date, str], tuple[int, int]]:
    """(issued, redeemed) per (period start, currency): the coupons issued in each period (by the UTC day of
    issue), and how many of them were redeemed by ``as_of`` (None: at any time)."""
    counts: dict[tuple[dt.date, str], tuple[int, int]] = {}
    for issue in issues:
        day = issue.issued_at.astimezone(dt.UTC).date()
        period = next((p for p in periods if p.contains(day)), None)
        if period is None:
            continue
        redeemed = issue.redeemed_at is not None and (as_of is None or issue.redeemed_at <= as_of)
        issued_before, redeemed_before = counts.get((period.start, issue.currency), (0, 0))
        counts[(period.start, issue.currency)] = (issued_before + 1, redeemed_before + int(redeemed))
    return counts
