"""The rating engine: plan + aggregated usage + period → invoice lines. Pure: no database, no clock.

``rate_period`` rates one subscription for one billing period. ``billing quote`` and the billing run both call
it, so a quote and an invoice for the same usage always agree, line by line. Each line is computed at full
precision and rounded once to the currency's minor units; the subtotal is the sum of the rounded lines.

Which fee lands on which invoice (an in-advance fee for the period that starts, an in-arrears fee for the
period that ended) is ``billing.core.fees``' business: ``rate_period`` always gives the fee *for* the fee period
that covers the billing period, as ``fees.rate_fee`` rates it.

Rating makes invoice lines without a place: composing an invoice puts them in their section and records the
subscription and plan version they came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from billing.core.domain import Terms
from billing.core.fees import fee_period_for, rate_fee, usage_periods_per_fee_period
from billing.core.periods import Period
from invoices.model import InvoiceLine, LineDetails, LineKind
from pricing_plans.charge_models import BreakdownRow, ChargeAmount, MeterUsage, rate_charge
from pricing_plans.commitment import true_up
from pricing_plans.errors import AmountOutOfRangeError
from pricing_plans.models import Charge, Meter, Plan
from pricing_plans.money import MAX_AMOUNT, ZERO, Rounding, round_money

__all__ = [
    "RatedPeriod",
    "commitment_minimum",
    "rate_period",
    "usage_charges",
]


@dataclass(frozen=True, slots=True)
class RatedPeriod:
    """One subscription rated for one billing period."""

    plan_code: str
    plan_version: int
    currency: str
    period: Period
    fee_line: InvoiceLine | None
    usage_lines: tuple[InvoiceLine, ...]
    commitment_line: InvoiceLine | None

    @property
    def lines(self) -> tuple[InvoiceLine, ...]:
        head = (self.fee_line,) if self.fee_line else ()
        tail = (self.commitment_line,) if self.commitment_line else ()
        return head + self.usage_lines + tail

    @property
    def usage_total(self) -> Decimal:
        return sum((line.amount for line in self.usage_lines), ZERO)

    @property
    def subtotal(self) -> Decimal:
        return sum((line.amount for line in self.lines), ZERO)


def _active_days(terms: Terms, period: Period) -> int:
    start = max(period.start, terms.start_date)
    end = min(period.end, terms.end_date or period.end)
    return max(0, (end - start).days)


def commitment_minimum(terms: Terms, plan: Plan, period: Period) -> Decimal:
    """The minimum commitment owed for a billing period, at full precision.

    The minimum is per fee period; a quarterly or yearly plan's is trued up ratably each monthly billing period
    (minimum / 3, minimum / 12); a subscription active for part of the period owes the minimum prorated by its
    active days.
    """
    if plan.commitment is None:
        return ZERO
    minimum = plan.commitment.minimum
    if (periods := usage_periods_per_fee_period(plan)) != 1:
        minimum = minimum / periods
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
    for index, charge in enumerate(plan.charges):
        meter_usage = usage.get(charge.meter) or MeterUsage()
        rated, amount = _rate_charge(plan, index, charge, meter_usage, rounding)
        meter = meters.get(charge.meter)
        usage_lines.append(
            InvoiceLine(
                kind=LineKind.USAGE,
                description=charge.description or (meter.name if meter else charge.meter),
                amount=amount,
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
    period_rated = RatedPeriod(
        plan_code=plan.code,
        plan_version=plan.version,
        currency=plan.currency,
        period=period,
        fee_line=rate_fee(terms, plan, fee_period_for(terms, plan, period), rounding),
        usage_lines=tuple(usage_lines),
        commitment_line=_commitment_line(terms, plan, period, usage_total, rounding),
    )
    _check_subtotal(plan, period_rated.subtotal)
    return period_rated


def usage_charges(
    terms: Terms,
    plan: Plan,
    usage: Mapping[str, MeterUsage],
    period: Period,
    *,
    rounding: Rounding = Rounding.HALF_UP,
) -> Decimal:
    """``rate_period(...).usage_total`` without making the invoice lines: each charge rated and rounded as its line
    is, the rounded amounts summed. Raises :class:`AmountOutOfRangeError` exactly when ``rate_period`` does (a
    charge too large to keep, or lines that add up to more than an invoice may hold)."""
    amounts = [
        _rate_charge(plan, index, charge, usage.get(charge.meter) or MeterUsage(), rounding)[1]
        for index, charge in enumerate(plan.charges)
    ]
    usage_total = sum(amounts, ZERO)
    fee_line = rate_fee(terms, plan, fee_period_for(terms, plan, period), rounding)
    commitment_line = _commitment_line(terms, plan, period, usage_total, rounding)
    # the lines' amounts in the order RatedPeriod.subtotal adds them: fee, each usage line, commitment
    head = [] if fee_line is None else [fee_line.amount]
    tail = [] if commitment_line is None else [commitment_line.amount]
    subtotal = sum([*head, *amounts, *tail], ZERO)
    _check_subtotal(plan, subtotal)
    return usage_total


def _check_subtotal(plan: Plan, subtotal: Decimal) -> None:
    if abs(subtotal) >= MAX_AMOUNT:
        raise AmountOutOfRangeError(
            f"plan {plan.code!r} version {plan.version}: its lines add up to {subtotal} {plan.currency}, "
            f"more than an invoice may hold (amounts must stay below {MAX_AMOUNT:,} {plan.currency})"
        )


def _rate_charge(
    plan: Plan, index: int, charge: Charge, usage: MeterUsage, rounding: Rounding
) -> tuple[ChargeAmount, Decimal]:
    """One charge rated and its line's amount rounded; an amount too large to keep exactly (a huge quantity × a
    price) raises :class:`AmountOutOfRangeError` naming the plan, the charge and the quantity."""
    try:
        rated = rate_charge(charge, usage)
        return rated, round_money(rated.amount, plan.currency, rounding)
    except (AmountOutOfRangeError, ArithmeticError) as exc:  # (decimal's Overflow, on an absurd quantity)
        raise AmountOutOfRangeError(
            f"plan {plan.code!r} version {plan.version}, charges[{index}] ({charge.meter}, {charge.model}): "
            f"a quantity of {usage.quantity} costs more than an invoice line may hold "
            f"(amounts must stay below {MAX_AMOUNT:,} {plan.currency})"
        ) from exc


def _commitment_line(
    terms: Terms, plan: Plan, period: Period, usage_total: Decimal, rounding: Rounding
) -> InvoiceLine | None:
    if plan.commitment is None:
        return None
    minimum = round_money(commitment_minimum(terms, plan, period), plan.currency, rounding)
    amount = true_up(minimum, usage_total)
    if amount <= 0:
        return None
    explanation = f"minimum {minimum} − usage charges {usage_total} = {amount}"
    return InvoiceLine(
        kind=LineKind.COMMITMENT,
        description=f"Minimum commitment true-up ({plan.name})",
        amount=amount,
        quantity=Decimal(1),
        service_start=period.start,
        service_end=period.end,
        details=_details(explanation, (), period, minimum=str(minimum), usage_charges=str(usage_total)),
    )


def _details(explanation: str, breakdown: Sequence[BreakdownRow], period: Period, **extra: Any) -> LineDetails:
    return LineDetails(explanation, tuple(breakdown), {"service_period": period.as_dict(), **extra})
