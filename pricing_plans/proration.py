"""Subscription fee proration by days.

A period is half-open ``[period_start, period_end)`` in dates already in the customer's timezone (the caller
converts). The fee is charged for the active days: the active window is
``[max(period_start, subscription_start, trial_from + trial_days), min(period_end, subscription_end or period_end))``,
so ``subscription_end`` is exclusive (the first day no longer active) and trial days are free. The trial counts
from ``trial_from``: the subscription's start, or for one that continues another by a plan change, the start of
the first (a plan change never gives a new trial, nor cuts one short: the new plan's trial days, from that day).
amount = fee × active_days / period_days at full precision; a wholly active period is exactly the fee.

A fee per seat (``seat_fee_for_period``) is the same sum over the quantity's segments: fee × seats × the
segment's active days / period_days, each seat billed for the days it was held.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from pricing_plans.charge_models.base import ChargeAmount
from pricing_plans.models import SubscriptionFee
from pricing_plans.money import ZERO

__all__ = ["fee_for_period", "seat_fee_for_period", "trial_ends"]


def fee_for_period(
    fee: SubscriptionFee,
    period_start: date,
    period_end: date,
    subscription_start: date,
    subscription_end: date | None,
    *,
    trial_from: date | None = None,
) -> ChargeAmount:
    """The subscription fee for one period, prorated by active days (unrounded); the trial counts from
    ``trial_from`` (None: ``subscription_start``)."""
    if period_end <= period_start:
        raise ValueError(f"empty billing period [{period_start}, {period_end}): its end must come after its start")
    period_days = (period_end - period_start).days
    paid_from = _paid_from(fee, period_start, subscription_start, trial_from)
    active_until = min(period_end, subscription_end or period_end)
    active_days = max(0, (active_until - paid_from).days)
    amount_text = format(fee.fee, "f")
    if active_days == period_days:
        # No proration at all: the whole fee, not fee × n/n, so it keeps its own digits.
        return ChargeAmount(fee.fee, (), f"{amount_text} for the full period ({period_days} days)")
    if active_days == 0:
        if fee.trial_days and paid_from >= period_end and subscription_start < period_end:
            reason = f"in trial until {(paid_from - timedelta(days=1)).isoformat()}"
        else:
            reason = "subscription not active"
        return ChargeAmount(ZERO, (), f"no active days in the period ({reason}): 0")
    # Multiply before dividing: fee × active_days is exact, so only the one division rounds (at 28 digits).
    amount = fee.fee * active_days / period_days
    return ChargeAmount(amount, (), f"{amount_text} × {active_days}/{period_days} days")


def seat_fee_for_period(
    fee: SubscriptionFee,
    period_start: date,
    period_end: date,
    subscription_start: date,
    subscription_end: date | None,
    seats: Sequence[tuple[date, int]],
    *,
    trial_from: date | None = None,
) -> ChargeAmount:
    """The fee per seat for one period (unrounded): for each part of the active window with the same number of
    seats, fee × seats × its days / period days. ``seats`` is the quantity schedule, (from, seats) by date; the
    first entry counts from the subscription's start, whatever its date."""
    if period_end <= period_start:
        raise ValueError(f"empty billing period [{period_start}, {period_end}): its end must come after its start")
    period_days = (period_end - period_start).days
    paid_from = _paid_from(fee, period_start, subscription_start, trial_from)
    active_until = min(period_end, subscription_end or period_end)
    amount_text = format(fee.fee, "f")
    parts: list[tuple[int, int]] = []  # (seats, days)
    for index, (since, count) in enumerate(seats):
        start = paid_from if index == 0 else max(paid_from, since)
        end = active_until if index + 1 == len(seats) else min(active_until, seats[index + 1][0])
        if end > start:
            parts.append((count, (end - start).days))
    if not parts:
        return fee_for_period(
            fee, period_start, period_end, subscription_start, subscription_end, trial_from=trial_from
        )
    if len(parts) == 1 and parts[0][1] == period_days:
        count = parts[0][0]
        return ChargeAmount(
            fee.fee * count, (), f"{amount_text} × {count} seats for the full period ({period_days} days)"
        )
    # Multiply before dividing: the sum of fee × seats × days is exact, so only the one division rounds.
    amount = sum((fee.fee * count * days for count, days in parts), ZERO) / period_days
    terms = " + ".join(f"{amount_text} × {count} seats × {days}/{period_days} days" for count, days in parts)
    return ChargeAmount(amount, (), terms)


def trial_ends(fee: SubscriptionFee, subscription_start: date, trial_from: date | None = None) -> date:
    """The first day paid for: the trial's days counted from ``trial_from`` (None: ``subscription_start``), never
    before the subscription starts."""
    return max(subscription_start, (trial_from or subscription_start) + timedelta(days=fee.trial_days))


def _paid_from(fee: SubscriptionFee, period_start: date, subscription_start: date, trial_from: date | None) -> date:
    return max(period_start, trial_ends(fee, subscription_start, trial_from))
