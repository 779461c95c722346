"""The percentage charge model: a fee per transaction, rate % of its value plus a fixed amount.

The events are walked in time order. The free part covers the first ``free_events`` events and at most
``free_amount`` of value, whichever runs out first; a limit of 0 is not set, and with neither set nothing is
free. An event wholly inside the free part costs nothing (no fixed fee either). The event that straddles
``free_amount`` pays rate % on its value above it, plus the fixed amount. Every paid event's fee is
rate % × chargeable value + fixed_amount, clamped to [per_transaction_min, per_transaction_max] when set.

The model needs each event's value (``usage.values``); without them a usage of at most one event is read as
a single event of value ``quantity``. A negative value (a refund) is refused: its fee is not defined here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal

from pricing_plans.charge_models._tiers import show, show_amount
from pricing_plans.charge_models.base import (
    BreakdownRow,
    ChargeAmount,
    MeterUsage,
    PerEventFees,
    PerEventFeeTerms,
    UnitAmountKind,
    price_key,
)
from pricing_plans.models import PercentageCharge, percent
from pricing_plans.money import ZERO

__all__ = ["UNIT_AMOUNT_KIND", "fees_of", "rate", "terms_of"]

# The breakdown rows' unit_amount is the rate in percent, and their units the value volume it applies to.
UNIT_AMOUNT_KIND = UnitAmountKind.PERCENT


def _event_values(usage: MeterUsage) -> Sequence[Decimal]:
    if usage.values is not None:
        return usage.values
    if usage.events > 1:
        raise ValueError(
            f"the percentage model needs per-event values (usage.values) to price {usage.events} events: "
            "its fixed fee, per-transaction min/max and free events are per event"
        )
    if usage.events == 0 and usage.quantity == 0:
        return ()
    return (usage.quantity,)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def terms_of(charge: PercentageCharge) -> PerEventFeeTerms:
    """The terms a percentage charge prices each event by (the key of ``MeterUsage.fees``)."""
    return PerEventFeeTerms(
        price_key(charge.rate, "rate"),
        charge.fixed_amount,
        charge.free_events,
        charge.free_amount,
        charge.per_transaction_min,
        charge.per_transaction_max,
    )


def fees_of(terms: PerEventFeeTerms, values: Iterable[Decimal]) -> PerEventFees:
    """The events' fees under ``terms``, walking their values in time order (what the database sums when it can:
    ``meters.aggregate``). The free part covers the first ``free_events`` events and at most ``free_amount`` of
    value, whichever runs out first; the event that straddles ``free_amount`` pays on its value above it. A
    negative value stops the walk (``negative``): the model refuses it."""
    low, high, fixed = terms.minimum, terms.maximum, terms.fixed_amount
    fraction = percent(terms.rate)
    in_free = terms.free_events > 0 or terms.free_amount > 0
    free_count = paid_count = raised = cut = 0
    straddled = False
    free_value = chargeable_total = total = ZERO
    for index, value in enumerate(values):
        if value < 0:
            return PerEventFees(negative=(index, value))
        # Whichever limit runs out first ends the free part.
        if in_free and terms.free_events and free_count == terms.free_events:
            in_free = False
        if in_free and terms.free_amount and free_value == terms.free_amount:
            in_free = False
        chargeable = value
        if in_free:
            room = terms.free_amount - free_value if terms.free_amount else value
            if value <= room:
                free_count += 1
                free_value += value
                continue
            # This event straddles free_amount: only its value above it is charged, and the free part ends.
            free_value += room
            chargeable = value - room
            straddled = True
            in_free = False
        fee = chargeable * fraction + fixed
        if low is not None and fee < low:
            fee, raised = low, raised + 1
        if high is not None and fee > high:
            fee, cut = high, cut + 1
        paid_count += 1
        chargeable_total += chargeable
        total += fee
    return PerEventFees(free_count, free_value, straddled, paid_count, chargeable_total, raised, cut, total)


def rate(charge: PercentageCharge, usage: MeterUsage) -> ChargeAmount:
    """Sum of the paid events' clamped fees, unrounded: from the fees summed for the charge's terms when the usage
    has them, else walking each event's value."""
    terms = terms_of(charge)
    summed = usage.fees.get(terms) if usage.fees is not None else None
    fees = summed if summed is not None else fees_of(terms, _event_values(usage))
    if fees.negative is not None:
        index, value = fees.negative
        raise ValueError(f"event {index} has a negative value ({value}): the percentage model prices no refunds")
    percent_rate, low, high = terms.rate, terms.minimum, terms.maximum
    free_count, free_value, straddled = fees.free_events, fees.free_value, fees.straddled
    paid_count, chargeable_total, raised, cut, total = (
        fees.paid_events,
        fees.chargeable,
        fees.raised,
        fees.cut,
        fees.total,
    )

    rows: list[BreakdownRow] = []
    sentences: list[str] = []
    if free_count or straddled:
        note = _plural(free_count, "event") + " free" + (", 1 partly" if straddled else "")
        rows.append(
            BreakdownRow(1, ZERO, charge.free_amount or None, free_value, ZERO, ZERO, ZERO, note, UNIT_AMOUNT_KIND)
        )
        sentences.append(f"{note} ({show(free_value)} of value)")
    if paid_count:
        fixed_total = paid_count * charge.fixed_amount
        clamps = [
            f"{raised} raised to min {show(low)}" if raised and low is not None else "",
            f"{cut} cut to max {show(high)}" if cut and high is not None else "",
        ]
        clamped = ", ".join(filter(None, clamps))
        note = _plural(paid_count, "event") + (f" ({clamped})" if clamped else "")
        rows.append(
            BreakdownRow(
                len(rows) + 1,
                free_value,
                None,
                chargeable_total,
                percent_rate,
                fixed_total,
                total,
                note,
                UNIT_AMOUNT_KIND,
            )
        )
        text = f"{note}: {show(percent_rate)}% × {show(chargeable_total)}"
        if charge.fixed_amount:
            text += f" + {paid_count} × {show(charge.fixed_amount)}"
        if clamped:
            unclamped = chargeable_total * percent(percent_rate) + fixed_total
            text += f" = {show_amount(unclamped)} before clamping"
        sentences.append(text)
    if not rows:
        return ChargeAmount(ZERO, (), "no usage: 0")
    return ChargeAmount(total, tuple(rows), f"{'; '.join(sentences)}; total {show_amount(total)}")
