"""The graduated_percentage charge model: graduated tiers over the value volume, priced at a rate %.

q is the meter's quantity, the sum of the event values (e.g. payment volume). Tier i covers
(previous up_to, up_to]; the value in it is charged rate % and the tier adds its flat_amount once if it holds
any value (> 0). q = 0 (or less) costs nothing.
"""

from __future__ import annotations

from pricing_plans.charge_models._tiers import graduated_slices, show, show_amount
from pricing_plans.charge_models.base import BreakdownRow, ChargeAmount, MeterUsage, UnitAmountKind, price_key
from pricing_plans.models import GraduatedPercentageCharge, percent
from pricing_plans.money import ZERO

__all__ = ["UNIT_AMOUNT_KIND", "rate"]

# The breakdown rows' unit_amount is the rate in percent, and their units the value volume it applies to.
UNIT_AMOUNT_KIND = UnitAmountKind.PERCENT


def rate(charge: GraduatedPercentageCharge, usage: MeterUsage) -> ChargeAmount:
    """Sum over the tiers holding value of value × rate / 100 + flat_amount, unrounded."""
    rows: list[BreakdownRow] = []
    terms: list[str] = []
    for part in graduated_slices(price_key(charge.tiers, "tiers"), usage.quantity):
        tier = part.tier
        amount = part.units * percent(tier.rate) + tier.flat_amount
        rows.append(
            BreakdownRow(
                part.number, part.from_units, part.to_units, part.units, tier.rate, tier.flat_amount, amount,
                unit_amount_kind=UNIT_AMOUNT_KIND,
            )
        )
        term = f"{show(part.units)} × {show(tier.rate)}%"
        terms.append(f"{term} + {show(tier.flat_amount)}" if tier.flat_amount else term)
    if not rows:
        return ChargeAmount(ZERO, (), "no usage: 0")
    total = sum((row.amount for row in rows), ZERO)
    return ChargeAmount(total, tuple(rows), f"{' + '.join(terms)} = {show_amount(total)}")
