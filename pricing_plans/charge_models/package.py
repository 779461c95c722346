"""The package charge model: usage is sold in whole packages.

billable = max(0, q − free_units); packages = ceil(billable / package_size); amount = packages ×
package_amount. The ceiling is exact on Decimal (computed on integer ratios, never on a rounded quotient), and
fractional quantities are fine: 0.5 units over the free units still buys a whole package. q within the free
units (or no usage) costs nothing.
"""

from __future__ import annotations

from decimal import Decimal

from pricing_plans.charge_models._tiers import show, show_amount
from pricing_plans.charge_models.base import BreakdownRow, ChargeAmount, MeterUsage, UnitAmountKind, price_key
from pricing_plans.models import PackageCharge
from pricing_plans.money import ZERO

__all__ = ["UNIT_AMOUNT_KIND", "rate"]

# The breakdown rows' unit_amount is a price per unit.
UNIT_AMOUNT_KIND = UnitAmountKind.PRICE


def _ceil_div(numerator: Decimal, denominator: Decimal) -> Decimal:
    """ceil(numerator / denominator) for a positive denominator, exact whatever the digits."""
    a, b = numerator.as_integer_ratio()
    c, d = denominator.as_integer_ratio()
    # (a/b) / (c/d) = (a·d) / (b·c); Python integers never round, unlike a 28-digit Decimal quotient.
    return Decimal(-(-(a * d) // (b * c)))


def rate(charge: PackageCharge, usage: MeterUsage) -> ChargeAmount:
    """ceil(max(0, q − free_units) / package_size) × package_amount, unrounded."""
    q, free, size = usage.quantity, charge.free_units, price_key(charge.package_size, "package_size")
    package_amount = price_key(charge.package_amount, "package_amount")
    billable = max(ZERO, q - free)
    if billable == 0:
        text = "no usage: 0" if q <= 0 else f"{show(q)} units within {show(free)} free units: 0"
        return ChargeAmount(ZERO, (), text)
    packages = _ceil_div(billable, size)
    amount = packages * package_amount
    billed = f"{show(q)} − {show(free)} free = {show(billable)} units; " if free else ""
    note = f"{billed}ceil({show(billable)} / {show(size)}) = {show(packages)} package{'' if packages == 1 else 's'}"
    # The row counts packages, so units × unit_amount = amount holds as for every other model's rows.
    row = BreakdownRow(1, free, None, packages, package_amount, ZERO, amount, note)
    return ChargeAmount(amount, (row,), f"{note}; {show(packages)} × {show(package_amount)} = {show_amount(amount)}")
