"""The graduated charge model: each tier prices the units that fall in it.

Tier i covers (previous up_to, up_to]; it holds min(q, up_to) − previous bound units, priced at its
unit_amount, and adds its flat_amount once if it holds any units (> 0). q = 0 (or less) costs nothing.
Fractional quantities are split exactly: q = 100.5 with a first tier up_to 100 puts 0.5 in tier 2.
"""

from __future__ import annotations

from pricing_plans.charge_models._tiers import graduated_slices, show, show_amount
from pricing_plans.charge_models.base import BreakdownRow, ChargeAmount, MeterUsage, UnitAmountKind, price_key
from pricing_plans.models import GraduatedCharge
from pricing_plans.money import ZERO

__all__ = ["UNIT_AMOUNT_KIND", "rate"]

# The breakdown rows' unit_amount is a price per unit.
UNIT_AMOUNT_KIND = UnitAmountKind.PRICE


def rate(charge: GraduatedCharge, usage: MeterUsage) -> ChargeAmount:
    """Sum over the tiers holding units of units × unit_amount + flat_amount, unrounded."""
    rows: list[BreakdownRow] = []
    terms: list[str] = []
    for part in graduated_slices(price_key(charge.tiers, "tiers"), usage.quantity):
        tier = part.tier
        amount = part.units * tier.unit_amount + tier.flat_amount
        rows.append(
            BreakdownRow(
                part.number, part.from_units, part.to_units, part.units, tier.unit_amount, tier.flat_amount, amount
            )
        )
        term = f"{show(part.units)} × {show(tier.unit_amount)}"
        terms.append(f"{term} + {show(tier.flat_amount)}" if tier.flat_amount else term)
    if not rows:
        return ChargeAmount(ZERO, (), "no usage: 0")
    total = sum((row.amount for row in rows), ZERO)
    return ChargeAmount(total, tuple(rows), f"{' + '.join(terms)} = {show_amount(total)}")
