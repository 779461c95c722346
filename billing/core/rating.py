"""The rating engine: plan + aggregated usage + period → invoice lines. Pure: no database, no clock.

``rate_period`` rates one subscription for one billing period. ``billing quote`` (through ``quote_period``) and
the billing run both call it, so a quote and an invoice for the same usage agree, line by line. Each line is
computed at full precision and rounded once to the currency's minor units; the subtotal is the sum of the rounded
lines.

Which fee lands on which invoice (an in-advance fee for the period that starts, an in-arrears fee for the
period that ended) is ``billing.core.fees``' business: ``rate_period`` always gives the fee *for* the fee period
that covers the billing period, as ``fees.rate_fee`` rates it; ``quote_period`` gives instead the fee the run bills
for the billing period (``fees.quoted_fee``), so that a quarterly or yearly fee is quoted once per fee period.

Rating makes invoice lines without a place: composing an invoice puts them in their section and records the
subscription and plan version they came from.

A charge priced by event dimension (``filters``, ``group_by``) gets its usage as a
:class:`~pricing_plans.dimensions.DimensionedUsage` and makes one line per part that has usage (a filter, or the
events matching none, and within each a group), in :func:`~pricing_plans.dimensions.ordered_parts` order, each
rated on its own quantity with its filter's price keys (the charge's own for the events matching no filter). A
part without a price (no filter matched and the charge has no default) is not billed: it is listed in
``RatedPeriod.unpriced``. A dimensioned charge with nothing billed (no usage, or only unpriced usage) shows one
zero line named after the charge, as a plain charge without usage does. A plain ``MeterUsage`` for a
dimensioned charge is its unmatched, ungrouped usage.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from billing.core.domain import Terms
from billing.core.fees import fee_period_for, quoted_fee, rate_fee, schedule_of, usage_periods_per_fee_period
from billing.core.periods import Period
from invoices.model import InvoiceLine, LineDetails, LineKind
from pricing_plans.charge_models import BreakdownRow, ChargeAmount, MeterUsage, rate_charge
from pricing_plans.commitment import true_up
from pricing_plans.dimensions import NONE_LABEL, DimensionedUsage, Part, dimension_key, ordered_parts
from pricing_plans.errors import AmountOutOfRangeError
from pricing_plans.models import Charge, Meter, Plan
from pricing_plans.money import MAX_AMOUNT, ZERO, Rounding, round_money

__all__ = [
    "RatedPeriod",
    "UnpricedUsage",
    "commitment_minimum",
    "part_line_name",
    "quote_period",
    "rate_period",
    "usage_charges",
]


# A meter's usage for a period as rating takes it: split by part for a charge priced by event dimension.
Usage = MeterUsage | DimensionedUsage


@dataclass(frozen=True, slots=True)
class UnpricedUsage:
    """Usage of a charge with filters and no default price that matched no filter: not billed.

    Attributes:
      meter: the charge's meter.
      events, quantity: the unmatched usage (of one group when the charge is grouped).
      dimension: the part's ``dimension_key`` (filter null, and the group's values).
    """

    meter: str
    events: int
    quantity: Decimal
    dimension: str


@dataclass(frozen=True, slots=True)
class RatedPeriod:
    """One subscription rated for one billing period.

    ``unpriced`` lists the usage no price applies to (see :class:`UnpricedUsage`), which the run reports.
    """

    plan_code: str
    plan_version: int
    currency: str
    period: Period
    fee_line: InvoiceLine | None
    usage_lines: tuple[InvoiceLine, ...]
    commitment_line: InvoiceLine | None
    unpriced: tuple[UnpricedUsage, ...] = ()

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


def commitment_minimum(
    terms: Terms, plan: Plan, period: Period, rounding: Rounding = Rounding.HALF_UP
) -> Decimal:
    """The minimum commitment owed for a billing period, at full precision.

    The minimum is per fee period; a quarterly or yearly plan's is trued up ratably each monthly billing period,
    rounded cumulatively so that the months' shares add up to it: the k-th month of n owes
    round(minimum × k / n) − round(minimum × (k − 1) / n) (100.00 a quarter: 33.33, 33.34, 33.33; 2,000.00 a
    year: 166.67, 166.66, 166.67…, never 99.99 or 2,000.04). A subscription active for part of the period owes its
    share prorated by its active days (multiplied before it is divided: one rounding, at the end).
    """
    if plan.commitment is None:
        return ZERO
    minimum = plan.commitment.minimum
    if (periods := usage_periods_per_fee_period(plan)) != 1:
        month = _position_in_fee_period(terms, plan, period)
        minimum = round_money(minimum * month / periods, plan.currency, rounding) - round_money(
            minimum * (month - 1) / periods, plan.currency, rounding
        )
    active = _active_days(terms, period)
    if active != period.days:
        minimum = minimum * active / period.days
    return minimum


def _position_in_fee_period(terms: Terms, plan: Plan, period: Period) -> int:
    """Which billing period of its fee period ``period`` is: 1 for the first month of a quarter, up to 3 (12)."""
    schedule = schedule_of(terms, plan)
    current, position = schedule.billing_period(fee_period_for(terms, plan, period).start), 1
    while current.start < period.start:
        current, position = schedule.next_billing_period(current), position + 1
    return position


def rate_period(
    terms: Terms,
    plan: Plan,
    usage: Mapping[str, Usage],
    period: Period,
    *,
    meters: Mapping[str, Meter] | None = None,
    rounding: Rounding = Rounding.HALF_UP,
) -> RatedPeriod:
    """Rate one subscription for one billing period: the fee for its fee period, the lines of each charge (one,
    zero usage included; one per part with usage for a charge priced by event dimension) and the
    minimum-commitment true-up."""
    meters = meters or {}
    usage_lines: list[InvoiceLine] = []
    unpriced: list[UnpricedUsage] = []
    for index, charge in enumerate(plan.charges):
        meter = meters.get(charge.meter)
        for rated_part in _rate_parts(plan, index, charge, usage.get(charge.meter), rounding):
            if rated_part.rated is None:
                unpriced.append(
                    UnpricedUsage(
                        charge.meter, rated_part.usage.events, rated_part.usage.quantity, rated_part.dimension or ""
                    )
                )
            else:
                usage_lines.append(_usage_line(charge, meter, rated_part, period))
    usage_total = sum((line.amount for line in usage_lines), ZERO)
    period_rated = RatedPeriod(
        plan_code=plan.code,
        plan_version=plan.version,
        currency=plan.currency,
        period=period,
        fee_line=rate_fee(terms, plan, fee_period_for(terms, plan, period), rounding),
        usage_lines=tuple(usage_lines),
        commitment_line=_commitment_line(terms, plan, period, usage_total, rounding),
        unpriced=tuple(unpriced),
    )
    _check_subtotal(plan, period_rated.subtotal)
    return period_rated


def quote_period(
    terms: Terms,
    plan: Plan,
    usage: Mapping[str, Usage],
    period: Period,
    *,
    meters: Mapping[str, Meter] | None = None,
    rounding: Rounding = Rounding.HALF_UP,
) -> RatedPeriod:
    """What the billing run bills one subscription for one billing period, as ``billing quote`` shows it:
    ``rate_period``'s usage lines and true-up, with the fee the run bills for ``period`` (``fees.quoted_fee``: in
    advance, the fee of the fee period beginning with it or the opening fee of a subscription starting in it; in
    arrears, the fee of the fee period ending with it) in place of the fee of the fee period covering it. A
    quarterly plan's fee is in one month's quote of three; a monthly plan's in each."""
    rated = rate_period(terms, plan, usage, period, meters=meters, rounding=rounding)
    return replace(rated, fee_line=quoted_fee(terms, plan, period, rounding))


def usage_charges(
    terms: Terms,
    plan: Plan,
    usage: Mapping[str, Usage],
    period: Period,
    *,
    rounding: Rounding = Rounding.HALF_UP,
) -> Decimal:
    """``rate_period(...).usage_total`` without making the invoice lines: each charge (each part of a dimensioned
    one) rated and rounded as its line is, the rounded amounts summed. Raises :class:`AmountOutOfRangeError`
    exactly when ``rate_period`` does (a charge too large to keep, or lines that add up to more than an invoice
    may hold)."""
    amounts = [
        rated_part.amount
        for index, charge in enumerate(plan.charges)
        for rated_part in _rate_parts(plan, index, charge, usage.get(charge.meter), rounding)
        if rated_part.rated is not None
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


@dataclass(frozen=True, slots=True)
class _RatedPart:
    """One line's worth of a charge: the usage, how it was rated (None: no price applies) and the rounded amount.

    ``part`` and ``dimension`` are None for a charge not priced by dimension, and for the zero line of a
    dimensioned charge without usage.
    """

    part: Part | None
    dimension: str | None
    usage: MeterUsage
    rated: ChargeAmount | None
    amount: Decimal


def _rate_parts(plan: Plan, index: int, charge: Charge, usage: Usage | None, rounding: Rounding) -> list[_RatedPart]:
    """A charge's lines' worth: one for a plain charge; one per part with usage for a dimensioned one."""
    if not charge.is_dimensioned:
        plain = usage.total if isinstance(usage, DimensionedUsage) else usage or MeterUsage()
        return [_RatedPart(None, None, plain, *_rate_charge(plan, index, charge, plain, rounding))]
    if isinstance(usage, DimensionedUsage):
        parts = {part: used for part, used in usage.parts.items() if used.events > 0 or used.quantity != 0}
    elif usage is not None and (usage.events > 0 or usage.quantity != 0):
        parts = {Part(None): usage}
    else:
        parts = {}
    rated_parts = []
    for part in ordered_parts(charge, parts):
        used = parts[part]
        dimension = dimension_key(charge, part)
        if part.filter is None and not charge.has_default:
            rated_parts.append(_RatedPart(part, dimension, used, None, ZERO))
            continue
        price = charge if part.filter is None else charge.filters[part.filter].price
        where = _part_label(charge, part) or "events matching no filter"
        rated_parts.append(_RatedPart(part, dimension, used, *_rate_charge(plan, index, price, used, rounding, where)))
    if all(rated_part.rated is None for rated_part in rated_parts):  # nothing billed: one zero line, as a plain
        nothing = ChargeAmount(ZERO, (), "no usage: 0")  # charge without usage shows
        rated_parts.insert(0, _RatedPart(None, None, MeterUsage(), nothing, round_money(ZERO, plan.currency, rounding)))
    return rated_parts


def _part_label(charge: Charge, part: Part) -> str:
    """What a part's line adds to the charge's name: its filter's label, then its group's values."""
    labels = [] if part.filter is None else [charge.filters[part.filter].label]
    labels += [NONE_LABEL if value is None else value for value in part.group]
    return " — ".join(labels)


def part_line_name(plan: Plan, meters: Mapping[str, Meter], meter: str, dimension: str | None) -> str | None:
    """The description ``plan`` gives a usage line of the charge part ``(meter, dimension)`` (``dimension``: the
    part's ``dimension_key``; None: a line of the whole charge): the charge's name, then the part's label — its
    filter's name, not its values — as ``rate_period`` names it. None when no charge of the plan has that part
    (the charge or its filter is gone, or it is split otherwise now)."""
    for charge in plan.charges:
        if charge.meter != meter:
            continue
        found = meters.get(meter)
        name = charge.description or (found.name if found is not None else meter)
        if dimension is None:
            return name
        part = _part_of(charge, dimension) if charge.is_dimensioned else None
        if part is not None:
            label = _part_label(charge, part)
            return f"{name} — {label}" if label else name
    return None


def _part_of(charge: Charge, dimension: str) -> Part | None:
    """The part of ``charge`` whose ``dimension_key`` is ``dimension``, if it has one."""
    try:
        content = json.loads(dimension)
        group = content.get("group") or {}
    except (ValueError, AttributeError):
        return None
    if not isinstance(group, dict):
        return None
    for index in (None, *range(len(charge.filters))):
        keys = charge.group_by_of(index)
        part = Part(index, tuple(group.get(key) for key in keys) if group else ())
        try:
            if dimension_key(charge, part) == dimension:
                return part
        except ValueError:  # (a group of other keys than the filter's)
            continue
    return None


def _usage_line(charge: Charge, meter: Meter | None, rated_part: _RatedPart, period: Period) -> InvoiceLine:
    assert rated_part.rated is not None
    description = charge.description or (meter.name if meter else charge.meter)
    if rated_part.part is not None and (label := _part_label(charge, rated_part.part)):
        description = f"{description} — {label}"
    return InvoiceLine(
        kind=LineKind.USAGE,
        description=description,
        amount=rated_part.amount,
        quantity=rated_part.usage.quantity,
        service_start=period.start,
        service_end=period.end,
        meter=charge.meter,
        model=charge.model,
        unit=meter.unit if meter else None,
        details=_details(
            rated_part.rated.explanation,
            rated_part.rated.breakdown,
            period,
            events=rated_part.usage.events,
            # the unit's English plural for the invoice document, when the catalog gives one
            **({"unit_plural": meter.unit_plural} if meter is not None and meter.unit_plural else {}),
        ),
        dimension=rated_part.dimension,
    )


def _check_subtotal(plan: Plan, subtotal: Decimal) -> None:
    if abs(subtotal) >= MAX_AMOUNT:
        raise AmountOutOfRangeError(
            f"plan {plan.code!r} version {plan.version}: its lines add up to {subtotal} {plan.currency}, "
            f"more than an invoice may hold (amounts must stay below {MAX_AMOUNT:,} {plan.currency})"
        )


def _rate_charge(
    plan: Plan, index: int, charge: Charge, usage: MeterUsage, rounding: Rounding, part: str | None = None
) -> tuple[ChargeAmount, Decimal]:
    """One charge (or one part of a dimensioned charge, named by ``part``, priced by ``charge``: its filter's
    price record or the charge itself) rated and its line's amount rounded; an amount too large to keep exactly
    (a huge quantity × a price) raises :class:`AmountOutOfRangeError` naming the plan, the charge and the
    quantity."""
    try:
        rated = rate_charge(charge, usage)
        return rated, round_money(rated.amount, plan.currency, rounding)
    except (AmountOutOfRangeError, ArithmeticError) as exc:  # (decimal's Overflow, on an absurd quantity)
        where = f", {part}" if part else ""
        raise AmountOutOfRangeError(
            f"plan {plan.code!r} version {plan.version}, charges[{index}] ({charge.meter}, {charge.model}{where}): "
            f"a quantity of {usage.quantity} costs more than an invoice line may hold "
            f"(amounts must stay below {MAX_AMOUNT:,} {plan.currency})"
        ) from exc


def _commitment_line(
    terms: Terms, plan: Plan, period: Period, usage_total: Decimal, rounding: Rounding
) -> InvoiceLine | None:
    if plan.commitment is None:
        return None
    minimum = round_money(commitment_minimum(terms, plan, period, rounding), plan.currency, rounding)
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
