"""The per_unit charge model, and the registry that picks a model."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from types import SimpleNamespace

import pytest

from pricing_plans.charge_models import MeterUsage, per_unit, rate_charge
from pricing_plans.models import PerUnitCharge
from pricing_plans.money import D, Rounding, round_money

CALLS = """
model = "per_unit"
meter = "api_calls"
unit_amount = 0.05
"""

STORAGE = """
model = "per_unit"
meter = "storage_gb"
unit_amount = 0.023
"""

REQUESTS = """
model = "per_unit"
meter = "requests"
unit_amount = 0.00025
"""


def charge(toml: str) -> PerUnitCharge:
    return PerUnitCharge.model_validate(tomllib.loads(toml, parse_float=Decimal))


def usd(amount: Decimal) -> str:
    return str(round_money(amount, "USD"))


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("0", "0.00"),
        # 1 × 0.05
        ("1", "0.05"),
        # 1,234 × 0.05 = 61.70
        ("1234", "61.70"),
        # 0.5 × 0.05 = 0.025 → 0.03 half up
        ("0.5", "0.03"),
    ],
)
def test_quantity_times_unit_amount(quantity: str, expected: str) -> None:
    assert usd(per_unit.rate(charge(CALLS), MeterUsage(quantity=D(quantity))).amount) == expected


def test_row_and_explanation() -> None:
    result = per_unit.rate(charge(CALLS), MeterUsage(quantity=D(1234)))
    (row,) = result.breakdown
    assert (row.tier, row.units, row.unit_amount, row.amount) == (1, D(1234), D("0.05"), D("61.70"))
    assert result.explanation == "1234 × 0.05 = 61.70"


def test_zero_usage_has_no_row() -> None:
    result = per_unit.rate(charge(CALLS), MeterUsage())
    assert (result.amount, result.breakdown, result.explanation) == (0, (), "no usage: 0")


def test_fractional_quantity_is_not_rounded() -> None:
    # 1.5 GB × 0.023 = 0.0345, kept whole until the line is rounded: 0.03
    result = per_unit.rate(charge(STORAGE), MeterUsage(quantity=D("1.5")))
    assert result.amount == D("0.0345")
    assert usd(result.amount) == "0.03"


def test_sub_cent_unit_price_rounds_once() -> None:
    # 1,234,580 × 0.00025 = 1,234,580 / 4,000 = 308.645 → 308.65 half up, 308.64 half even (4 is even)
    result = per_unit.rate(charge(REQUESTS), MeterUsage(quantity=D(1_234_580)))
    assert result.amount == D("308.645")
    assert usd(result.amount) == "308.65"
    assert str(round_money(result.amount, "USD", Rounding.HALF_EVEN)) == "308.64"


def test_registry_dispatches_to_per_unit() -> None:
    usage = MeterUsage(quantity=D(10))
    assert rate_charge(charge(CALLS), usage) == per_unit.rate(charge(CALLS), usage)


def test_registry_fails_loudly_on_an_unknown_model() -> None:
    with pytest.raises(ValueError, match="unknown charge model 'tiered'"):
        rate_charge(SimpleNamespace(model="tiered"), MeterUsage())
