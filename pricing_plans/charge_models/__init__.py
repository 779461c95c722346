"""Charge models: one module per model, all of the same shape, chosen through one registry.

``rate_charge(charge, usage)`` dispatches on ``charge.model`` and fails loudly on an unknown model.
``unit_amount_kind(model)`` says what the unit amounts of a model's breakdown rows are (a price, or a rate in
percent), for rows read back from where they were stored without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pricing_plans.charge_models import (
    graduated,
    graduated_percentage,
    package,
    per_unit,
    percentage,
    volume,
)
from pricing_plans.charge_models.base import BreakdownRow, ChargeAmount, MeterUsage, UnitAmountKind
from pricing_plans.models import Charge

__all__ = [
    "REGISTRY",
    "UNIT_AMOUNT_KINDS",
    "BreakdownRow",
    "ChargeAmount",
    "MeterUsage",
    "UnitAmountKind",
    "rate_charge",
    "unit_amount_kind",
]

# Each model's ``rate`` takes its own charge record (``per_unit.rate`` a PerUnitCharge, ...): the registry is
# keyed by the record's ``model`` tag, so the record always matches the function it reaches.
REGISTRY: dict[str, Callable[[Any, MeterUsage], ChargeAmount]] = {
    "per_unit": per_unit.rate,
    "graduated": graduated.rate,
    "volume": volume.rate,
    "package": package.rate,
    "percentage": percentage.rate,
    "graduated_percentage": graduated_percentage.rate,
}

UNIT_AMOUNT_KINDS: dict[str, UnitAmountKind] = {
    "per_unit": per_unit.UNIT_AMOUNT_KIND,
    "graduated": graduated.UNIT_AMOUNT_KIND,
    "volume": volume.UNIT_AMOUNT_KIND,
    "package": package.UNIT_AMOUNT_KIND,
    "percentage": percentage.UNIT_AMOUNT_KIND,
    "graduated_percentage": graduated_percentage.UNIT_AMOUNT_KIND,
}


def rate_charge(charge: Charge, usage: MeterUsage) -> ChargeAmount:
    """Rate one charge of a plan for one period's usage of its meter (unrounded)."""
    try:
        model = REGISTRY[charge.model]
    except KeyError:
        raise ValueError(f"unknown charge model {charge.model!r} (known: {', '.join(REGISTRY)})") from None
    return model(charge, usage)


def unit_amount_kind(model: str | None) -> UnitAmountKind:
    """What the unit amounts in the breakdown rows of ``model`` are; a price for a line without a model (a fee)
    or of a model this catalog no longer knows."""
    return UNIT_AMOUNT_KINDS.get(model or "", UnitAmountKind.PRICE)
