"""Subscription fee proration by days.

A period is half-open ``[period_start, period_end)`` in dates already in the customer's timezone (the caller
converts). The fee is charged for the active days: the active window is
``[max(period_start, subscription_start + trial_days), min(period_end, subscription_end or period_end))``,
so ``subscription_end`` is exclusive (the first day no longer active) and trial days are free.
amount = fee × active_days / period_days at full precision; a wholly active period is exactly the fee.
"""

from __future__ import annotations

from datetime import date, timedelta

from pricing_plans.charge_models.base import ChargeAmount
from pricing_plans.models import SubscriptionFee
from pricing_plans.money import ZERO

__all__ = ["fee_for_period"]


def fee_for_period(
    fee: SubscriptionFee,
    period_start: date,
    period_end: date,
    subscription_start: date,
    subscription_end: date | None,
) -> ChargeAmount:
    """The subscription fee for one period, prorated by active days (unrounded)."""
    if period_end <= period_start:
        raise ValueError(f"empty billing period [{period_start}, {period_end}): its end must come after its start")
    period_days = (period_end - period_start).days
    paid_from = max(period_start, subscription_start + timedelta(days=fee.trial_days))
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
