"""Price plans: the TOML catalog as frozen records, and the charge models that price usage.

A pure package: no database, no clock, no I/O beyond reading a catalog file. It imports nothing from
``billing``, ``meters`` or ``invoices``.

    catalog, problems = load_catalog("catalog.toml")        # or load_catalog_or_raise(...)
    plan = catalog.plan("api_growth")
    amount = rate_charge(plan.charges[0], MeterUsage(quantity=D("15000")))
    line = round_money(amount.amount, plan.currency, catalog.rounding)
"""

from __future__ import annotations

from pricing_plans.charge_models import rate_charge
from pricing_plans.charge_models.base import BreakdownRow, ChargeAmount, MeterUsage
from pricing_plans.dimensions import DimensionedUsage, Part, dimension_key, part_of
from pricing_plans.errors import CatalogError, CatalogProblem, UnknownPlanError
from pricing_plans.loader import load_catalog, load_catalog_or_raise, loads_catalog
from pricing_plans.models import (
    Aggregation,
    Catalog,
    Charge,
    ChargeFilter,
    Commitment,
    FeeBilling,
    GraduatedCharge,
    GraduatedPercentageCharge,
    Interval,
    Meter,
    PackageCharge,
    PercentageCharge,
    PercentTier,
    PerUnitCharge,
    Plan,
    SubscriptionFee,
    Threshold,
    Tier,
    VolumeCharge,
)
from pricing_plans.money import ZERO, D, Rounding, format_amount, minor_digits, round_money

__all__ = [
    "ZERO",
    "Aggregation",
    "BreakdownRow",
    "Catalog",
    "CatalogError",
    "CatalogProblem",
    "Charge",
    "ChargeAmount",
    "ChargeFilter",
    "Commitment",
    "D",
    "DimensionedUsage",
    "FeeBilling",
    "GraduatedCharge",
    "GraduatedPercentageCharge",
    "Interval",
    "Meter",
    "MeterUsage",
    "PackageCharge",
    "Part",
    "PerUnitCharge",
    "PercentTier",
    "PercentageCharge",
    "Plan",
    "Rounding",
    "SubscriptionFee",
    "Threshold",
    "Tier",
    "UnknownPlanError",
    "VolumeCharge",
    "dimension_key",
    "format_amount",
    "load_catalog",
    "load_catalog_or_raise",
    "loads_catalog",
    "minor_digits",
    "part_of",
    "rate_charge",
    "round_money",
]
