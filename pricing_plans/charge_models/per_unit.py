"""The per_unit charge model: amount = q × unit_amount.

Linear in q, so a zero quantity costs nothing and has no breakdown row.
"""

from __future__ import annotations

from pricing_plans.charge_models._tiers import show, show_amount
from pricing_plans.charge_models.base import BreakdownRow, ChargeAmount, MeterUsage, UnitAmountKind, price_key
from pricing_plans.models import PerUnitCharge
from pricing_plans.money import ZERO

__all__ = ["UNIT_AMOUNT_KIND", "rate"]

# The breakdown rows' unit_amount is a price per unit.
UNIT_AMOUNT_KIND = UnitAmountKind.PRICE


def rate(charge: PerUnitCharge, usage: MeterUsage) -> ChargeAmount:
    """q × unit_amount, unrounded."""
    q = usage.quantity
    if q == 0:
        return ChargeAmount(ZERO, (), "no usage: 0")
    unit_amount = price_key(charge.unit_amount, "unit_amount")
    amount = q * unit_amount
    row = BreakdownRow(1, ZERO, None, q, unit_amount, ZERO, amount)
    return ChargeAmount(amount, (row,), f"{show(q)} × {show(unit_amount)} = {show_amount(amount)}")
