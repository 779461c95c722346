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


def test_a_product_beyond_28_digits_is_rounded_once_not_twice() -> None:
    """0.749562111997 × 3,076,262,721,778.597299439456982 (a weighted sum's 28 digits) is exactly
    2,305,849,982,794.004999999999999662747613054: 2,305,849,982,794.00 half up. In 28 digits the product was
    2,305,849,982,794.005000000000000, and the line 794.01."""
    price = charge('model = "per_unit"\nmeter = "storage_gb"\nunit_amount = 0.749562111997\n')
    rated = rate_charge(price, MeterUsage(quantity=D("3076262721778.597299439456982")))
    assert str(rated.amount) == "2305849982794.004999999999999662747613054"
    assert str(round_money(rated.amount, "USD", Rounding.HALF_UP)) == "2305849982794.00"
