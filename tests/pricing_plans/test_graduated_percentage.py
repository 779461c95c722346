"""The graduated_percentage charge model: graduated tiers over the value volume, priced at a rate %."""

from __future__ import annotations

import tomllib
from decimal import Decimal

import pytest

from pricing_plans.charge_models import MeterUsage, graduated_percentage, rate_charge
from pricing_plans.models import GraduatedPercentageCharge
from pricing_plans.money import D, round_money

# 3 % of the first 1,000; 2 % of (1,000, 10,000] plus 5.00; 1.5 % above plus 10.00.
VOLUME = """
model = "graduated_percentage"
meter = "payment_volume"
tiers = [
  { up_to = 1000, rate = 3 },
  { up_to = 10000, rate = 2, flat_amount = 5.00 },
  { up_to = "inf", rate = 1.5, flat_amount = 10.00 },
]
"""


def charge(toml: str) -> GraduatedPercentageCharge:
    return GraduatedPercentageCharge.model_validate(tomllib.loads(toml, parse_float=Decimal))


def usd(amount: Decimal) -> str:
    return str(round_money(amount, "USD"))


@pytest.mark.parametrize(
    ("quantity", "expected", "tiers"),
    [
        ("0", "0.00", []),
        # first unit: 1 × 3 % = 0.03
        ("1", "0.03", [(1, "1", "0.03")]),
        # top of tier 1: 1,000 × 3 % = 30
        ("1000", "30.00", [(1, "1000", "30")]),
        # a cent into tier 2: 30 + 0.01 × 2 % + 5.00 = 30 + 0.0002 + 5 = 35.0002
        ("1000.01", "35.00", [(1, "1000", "30"), (2, "0.01", "5.0002")]),
        # first whole unit of tier 2: 30 + 1 × 2 % + 5 = 30 + 0.02 + 5 = 35.02
        ("1001", "35.02", [(1, "1000", "30"), (2, "1", "5.02")]),
        # fractional: 30 + 500.5 × 2 % + 5 = 30 + 10.01 + 5 = 45.01
        ("1500.5", "45.01", [(1, "1000", "30"), (2, "500.5", "15.01")]),
        # top of tier 2: 30 + 9,000 × 2 % + 5 = 30 + 180 + 5 = 215
        ("10000", "215.00", [(1, "1000", "30"), (2, "9000", "185")]),
        # first unit of tier 3: 215 + 1 × 1.5 % + 10 = 215 + 0.015 + 10 = 225.015 → 225.02
        ("10001", "225.02", [(1, "1000", "30"), (2, "9000", "185"), (3, "1", "10.015")]),
        # deep in tier 3: 215 + 40,000 × 1.5 % + 10 = 215 + 600 + 10 = 825
        ("50000", "825.00", [(1, "1000", "30"), (2, "9000", "185"), (3, "40000", "610")]),
    ],
)
def test_boundaries(quantity: str, expected: str, tiers: list[tuple[int, str, str]]) -> None:
    result = graduated_percentage.rate(charge(VOLUME), MeterUsage(quantity=D(quantity)))
    assert usd(result.amount) == expected
    assert [(row.tier, row.units, row.amount) for row in result.breakdown] == [
        (tier, D(units), D(amount)) for tier, units, amount in tiers
    ]


def test_rows_carry_the_rate_and_explain() -> None:
    result = graduated_percentage.rate(charge(VOLUME), MeterUsage(quantity=D(50000)))
    assert [row.unit_amount for row in result.breakdown] == [D(3), D(2), D("1.5")]
    assert [row.flat_amount for row in result.breakdown] == [D(0), D("5.00"), D("10.00")]
    assert result.explanation == "1000 × 3% + 9000 × 2% + 5.00 + 40000 × 1.5% + 10.00 = 825.00"


def test_no_usage() -> None:
    result = graduated_percentage.rate(charge(VOLUME), MeterUsage())
    assert (result.amount, result.breakdown, result.explanation) == (0, (), "no usage: 0")


def test_registry_dispatches_to_graduated_percentage() -> None:
    usage = MeterUsage(quantity=D(10001))
    assert rate_charge(charge(VOLUME), usage) == graduated_percentage.rate(charge(VOLUME), usage)
