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

from collections.abc import Sequence
from decimal import Decimal

from pricing_plans.charge_models._tiers import show, show_amount
from pricing_plans.charge_models.base import BreakdownRow, ChargeAmount, MeterUsage, UnitAmountKind, price_key
from pricing_plans.models import PercentageCharge, percent
from pricing_plans.money import ZERO

__all__ = ["UNIT_AMOUNT_KIND", "rate"]

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


def rate(charge: PercentageCharge, usage: MeterUsage) -> ChargeAmount:
    """Sum of the paid events' clamped fees, unrounded."""
    values = _event_values(usage)
    percent_rate = price_key(charge.rate, "rate")
    low, high = charge.per_transaction_min, charge.per_transaction_max
    in_free = charge.free_events > 0 or charge.free_amount > 0
    free_count = paid_count = raised = cut = 0
    straddled = False
    free_value = chargeable_total = total = ZERO
    for index, value in enumerate(values):
        if value < 0:
            raise ValueError(f"event {index} has a negative value ({value}): the percentage model prices no refunds")
        # Whichever limit runs out first ends the free part.
        if in_free and charge.free_events and free_count == charge.free_events:
            in_free = False
        if in_free and charge.free_amount and free_value == charge.free_amount:
            in_free = False
        chargeable = value
        if in_free:
            room = charge.free_amount - free_value if charge.free_amount else value
            if value <= room:
                free_count += 1
                free_value += value
                continue
            # This event straddles free_amount: only its value above it is charged, and the free part ends.
            free_value += room
            chargeable = value - room
            straddled = True
            in_free = False
        fee = chargeable * percent(percent_rate) + charge.fixed_amount
        if low is not None and fee < low:
            fee, raised = low, raised + 1
        if high is not None and fee > high:
            fee, cut = high, cut + 1
        paid_count += 1
        chargeable_total += chargeable
        total += fee

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
                len(rows) + 1, free_value, None, chargeable_total, percent_rate, fixed_total, total, note,
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
