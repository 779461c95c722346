"""The rating engine: plan + aggregated usage + period → invoice lines. Pure: no database, no clock.

``rate_period`` rates one subscription for one billing period. ``billing quote`` and the billing run both call
it, so a quote and an invoice for the same usage always agree, line by line. Each line is computed at full
precision and rounded once to the currency's minor units; the subtotal is the sum of the rounded lines.

Which fee lands on which invoice is the billing run's business (an in-advance fee for the period that starts,
an in-arrears fee for the period that ended): ``rate_period`` always gives the fee *for* the fee period that
covers the billing period, and ``rate_fee`` rates any fee period on its own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from billing.core.periods import Period, year_of
from pricing_plans.charge_models import MeterUsage, rate_charge
from pricing_plans.commitment import true_up
from pricing_plans.models import Interval, Meter, Plan
from pricing_plans.money import ZERO, Rounding, round_money
from pricing_plans.proration import fee_for_period

__all__ = [
    "RatedLine",
    "RatedPeriod",
    "SubscriptionTerms",
    "Terms",
    "commitment_minimum",
    "fee_period_for",
    "rate_fee",
    "rate_period",
]


class Terms(Protocol):
    """What rating needs of a subscription: when it runs (``end_date`` exclusive, None: open)."""

    @property
    def start_date(self) -> dt.date: ...

    @property
    def end_date(self) -> dt.date | None: ...


@dataclass(frozen=True, slots=True)
class SubscriptionTerms:
    """A subscription's dates, for quotes and tests."""

    start_date: dt.date
    end_date: dt.date | None = None


@dataclass(frozen=True, slots=True)
class RatedLine:
    """One invoice line.

    Attributes:
      kind: ``subscription``, ``usage``, ``commitment`` or ``late_usage``.
      description: what a customer reads.
      meter, model: the charge's meter and model (usage lines).
      quantity: the quantity rated (days for a prorated fee line: 1 for a whole period).
      unit: the meter's unit.
      amount: rounded once to the currency's minor units.
      service_start, service_end: the period the line pays for, ``[start, end)``.
      details: the explanation and breakdown rows (JSON-ready: strings, not numbers).
    """

    kind: str
    description: str
    amount: Decimal
    quantity: Decimal
    service_start: dt.date
    service_end: dt.date
    meter: str | None = None
    model: str | None = None
    unit: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RatedPeriod:
    """One subscription rated for one billing period."""

    plan_code: str
    plan_version: int
    currency: str
    period: Period
    fee_line: RatedLine | None
    usage_lines: tuple[RatedLine, ...]
    commitment_line: RatedLine | None

    @property
    def lines(self) -> tuple[RatedLine, ...]:
        head = (self.fee_line,) if self.fee_line else ()
        tail = (self.commitment_line,) if self.commitment_line else ()
        return head + self.usage_lines + tail

    @property
    def usage_total(self) -> Decimal:
        return sum((line.amount for line in self.usage_lines), ZERO)

    @property
    def subtotal(self) -> Decimal:
        return sum((line.amount for line in self.lines), ZERO)


def fee_period_for(plan: Plan, period: Period) -> Period:
    """The fee period that covers a billing period: the month itself, or the calendar year for yearly plans."""
    return year_of(period.start) if plan.interval is Interval.YEAR else period


def _active_days(terms: Terms, period: Period) -> int:
    start = max(period.start, terms.start_date)
    end = min(period.end, terms.end_date or period.end)
    return max(0, (end - start).days)


def rate_fee(terms: Terms, plan: Plan, fee_period: Period, rounding: Rounding = Rounding.HALF_UP) -> RatedLine | None:
    """The subscription fee for ``fee_period``, prorated by active days (trial days free); None without a fee."""
    if plan.subscription is None:
        return None
    charge = fee_for_period(plan.subscription, fee_period.start, fee_period.end, terms.start_date, terms.end_date)
    timing = "in advance" if plan.subscription.billing.value == "in_advance" else "in arrears"
    return RatedLine(
        kind="subscription",
        description=f"{plan.name} subscription, {fee_period.label} ({timing})",
        amount=round_money(charge.amount, plan.currency, rounding),
        quantity=Decimal(1),
        service_start=fee_period.start,
        service_end=fee_period.end,
        details=_details(charge.explanation, charge.breakdown, fee_period, billing=plan.subscription.billing.value),
    )


def commitment_minimum(terms: Terms, plan: Plan, period: Period) -> Decimal:
    """The minimum commitment owed for a billing period, at full precision.

    A yearly plan's commitment is trued up ratably each month (minimum / 12); a subscription active for part of
    the period owes the minimum prorated by its active days.
    """
    if plan.commitment is None:
        return ZERO
    minimum = plan.commitment.minimum
    if plan.interval is Interval.YEAR:
        minimum = minimum / 12
    active = _active_days(terms, period)
    if active != period.days:
        minimum = minimum * active / period.days
    return minimum


def rate_period(
    terms: Terms,
    plan: Plan,
    usage: Mapping[str, MeterUsage],
    period: Period,
    *,
    meters: Mapping[str, Meter] | None = None,
    rounding: Rounding = Rounding.HALF_UP,
) -> RatedPeriod:
    """Rate one subscription for one billing period: the fee for its fee period, one line per charge (zero usage
    included) and the minimum-commitment true-up."""
    meters = meters or {}
    usage_lines = []
    for charge in plan.charges:
        meter_usage = usage.get(charge.meter) or MeterUsage()
        rated = rate_charge(charge, meter_usage)
        meter = meters.get(charge.meter)
        usage_lines.append(
            RatedLine(
                kind="usage",
                description=charge.description or (meter.name if meter else charge.meter),
                amount=round_money(rated.amount, plan.currency, rounding),
                quantity=meter_usage.quantity,
                service_start=period.start,
                service_end=period.end,
                meter=charge.meter,
                model=charge.model,
                unit=meter.unit if meter else None,
                details=_details(rated.explanation, rated.breakdown, period, events=meter_usage.events),
            )
        )
    usage_total = sum((line.amount for line in usage_lines), ZERO)
    return RatedPeriod(
        plan_code=plan.code,
        plan_version=plan.version,
        currency=plan.currency,
        period=period,
        fee_line=rate_fee(terms, plan, fee_period_for(plan, period), rounding),
        usage_lines=tuple(usage_lines),
        commitment_line=_commitment_line(terms, plan, period, usage_total, rounding),
    )


def _commitment_line(
    terms: Terms, plan: Plan, period: Period, usage_total: Decimal, rounding: Rounding
) -> RatedLine | None:
    if plan.commitment is None:
        return None
    minimum = round_money(commitment_minimum(terms, plan, period), plan.currency, rounding)
    amount = true_up(minimum, usage_total)
    if amount <= 0:
        return None
    explanation = f"minimum {minimum} − usage charges {usage_total} = {amount}"
    return RatedLine(
        kind="commitment",
        description=f"Minimum commitment true-up ({plan.name})",
        amount=amount,
        quantity=Decimal(1),
        service_start=period.start,
        service_end=period.end,
        details=_details(explanation, (), period, minimum=str(minimum), usage_charges=str(usage_total)),
    )


def _details(explanation: str, breakdown: Any, period: Period, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {
        "explanation": explanation,
        "breakdown": [row.as_dict() for row in breakdown],
        "service_period": {"start": period.start.isoformat(), "end": period.end.isoformat()},
    }
    details.update(extra)
    return details
