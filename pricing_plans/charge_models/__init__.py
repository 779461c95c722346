"""Charge models: one module per model, all of the same shape, chosen through one registry.

``rate_charge(charge, usage)`` dispatches on ``charge.model`` and fails loudly on an unknown model.
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
from pricing_plans.charge_models.base import BreakdownRow, ChargeAmount, MeterUsage

__all__ = ["REGISTRY", "BreakdownRow", "ChargeAmount", "MeterUsage", "rate_charge"]

REGISTRY: dict[str, Callable[[Any, MeterUsage], ChargeAmount]] = {
    "per_unit": per_unit.rate,
    "graduated": graduated.rate,
    "volume": volume.rate,
    "package": package.rate,
    "percentage": percentage.rate,
    "graduated_percentage": graduated_percentage.rate,
}


def rate_charge(charge: Any, usage: MeterUsage) -> ChargeAmount:
    """Rate one charge of a plan for one period's usage of its meter (unrounded)."""
    try:
        model = REGISTRY[charge.model]
    except KeyError:
        raise ValueError(f"unknown charge model {charge.model!r} (known: {', '.join(REGISTRY)})") from None
    return model(charge, usage)
