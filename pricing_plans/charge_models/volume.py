"""The volume charge model: the whole q is priced at the one tier it falls in.

amount = q × unit_amount + flat_amount of that tier; bounds are inclusive (q = 1000 with up_to 1000 is in
that tier). No usage, no charge: q = 0 (or less) costs nothing, not even the first tier's flat amount.
"""

from __future__ import annotations

from pricing_plans.charge_models._tiers import show, show_amount, volume_tier
from pricing_plans.charge_models.base import BreakdownRow, ChargeAmount, MeterUsage, UnitAmountKind, price_key
from pricing_plans.models import VolumeCharge
from pricing_plans.money import ZERO

__all__ = ["UNIT_AMOUNT_KIND", "rate"]

# The breakdown rows' unit_amount is a price per unit.
UNIT_AMOUNT_KIND = UnitAmountKind.PRICE


def rate(charge: VolumeCharge, usage: MeterUsage) -> ChargeAmount:
    """q × unit_amount + flat_amount of the tier q falls in, unrounded."""
    q = usage.quantity
    if q <= 0:
        return ChargeAmount(ZERO, (), "no usage: 0")
    number, tier, lower = volume_tier(price_key(charge.tiers, "tiers"), q)
    amount = q * tier.unit_amount + tier.flat_amount
    row = BreakdownRow(number, lower, tier.up_to, q, tier.unit_amount, tier.flat_amount, amount, f"tier {number}")
    term = f"{show(q)} × {show(tier.unit_amount)}"
    if tier.flat_amount:
        term = f"{term} + {show(tier.flat_amount)}"
    return ChargeAmount(amount, (row,), f"{term} = {show_amount(amount)} (tier {number})")
