"""The volume charge model: the whole quantity is priced at the one tier it falls in."""

from __future__ import annotations

import tomllib
from decimal import Decimal

import pytest

from pricing_plans.charge_models import MeterUsage, rate_charge, volume
from pricing_plans.models import VolumeCharge
from pricing_plans.money import D, Rounding, round_money

# domain.md's tiers: up to 100 at 0.50, up to 1000 at 0.40, above at 0.30 (bounds inclusive).
API_CALLS = """
model = "volume"
meter = "api_calls"
tiers = [
  { up_to = 100, unit_amount = 0.50 },
  { up_to = 1000, unit_amount = 0.40 },
  { up_to = "inf", unit_amount = 0.30 },
]
"""

WITH_FLAT = """
model = "volume"
meter = "seats"
tiers = [
  { up_to = 10, unit_amount = 1.00 },
  { up_to = "inf", unit_amount = 0.80, flat_amount = 5.00 },
]
"""


def charge(toml: str) -> VolumeCharge:
    return VolumeCharge.model_validate(tomllib.loads(toml, parse_float=Decimal))


def usd(amount: Decimal) -> str:
    return str(round_money(amount, "USD"))


@pytest.mark.parametrize(
    ("quantity", "expected", "tier", "bounds"),
    [
        # first unit: 1 × 0.50
        ("1", "0.50", 1, ("0", "100")),
        # top of tier 1 (inclusive): 100 × 0.50 = 50
        ("100", "50.00", 1, ("0", "100")),
        # first unit of tier 2: all 101 at 0.40 = 40.40 (cheaper than 100 units: that is volume pricing)
        ("101", "40.40", 2, ("100", "1000")),
        # domain.md, bound inclusive: 1,000 × 0.40 = 400
        ("1000", "400.00", 2, ("100", "1000")),
        # first unit of tier 3: 1,001 × 0.30 = 300.30
        ("1001", "300.30", 3, ("1000", None)),
        # domain.md: 1,500 × 0.30 = 450
        ("1500", "450.00", 3, ("1000", None)),
        # deep in tier 3: 100,000 × 0.30 = 30,000
        ("100000", "30000.00", 3, ("1000", None)),
        # fractional, just over tier 1: 100.5 × 0.40 = 40.20
        ("100.5", "40.20", 2, ("100", "1000")),
    ],
)
def test_boundaries(quantity: str, expected: str, tier: int, bounds: tuple[str, str | None]) -> None:
    result = volume.rate(charge(API_CALLS), MeterUsage(quantity=D(quantity)))
    assert usd(result.amount) == expected
    (row,) = result.breakdown
    assert (row.tier, row.units, row.amount) == (tier, D(quantity), result.amount)
    low, high = bounds
    assert (row.from_units, row.to_units) == (D(low), None if high is None else D(high))


def test_no_usage_no_charge() -> None:
    result = volume.rate(charge(WITH_FLAT), MeterUsage())
    # Not even tier 1's flat amount: nothing was used.
    assert usd(result.amount) == "0.00"
    assert result.breakdown == ()
    assert result.explanation == "no usage: 0"


def test_domain_examples_explain_themselves() -> None:
    assert volume.rate(charge(API_CALLS), MeterUsage(quantity=D(1500))).explanation == "1500 × 0.30 = 450.00 (tier 3)"
    assert volume.rate(charge(API_CALLS), MeterUsage(quantity=D(1000))).explanation == "1000 × 0.40 = 400.00 (tier 2)"


@pytest.mark.parametrize(
    ("quantity", "expected", "flat"),
    [
        # 10 × 1.00 = 10, tier 1 has no flat amount
        ("10", "10.00", "0"),
        # 11 × 0.80 + 5.00 = 8.80 + 5 = 13.80
        ("11", "13.80", "5.00"),
    ],
)
def test_flat_amount_of_the_tier(quantity: str, expected: str, flat: str) -> None:
    result = volume.rate(charge(WITH_FLAT), MeterUsage(quantity=D(quantity)))
    assert usd(result.amount) == expected
    assert result.breakdown[0].flat_amount == D(flat)


def test_flat_amount_in_explanation() -> None:
    result = volume.rate(charge(WITH_FLAT), MeterUsage(quantity=D(11)))
    assert result.explanation == "11 × 0.80 + 5.00 = 13.80 (tier 2)"


def test_registry_dispatches_to_volume() -> None:
    usage = MeterUsage(quantity=D(1000))
    assert rate_charge(charge(API_CALLS), usage) == volume.rate(charge(API_CALLS), usage)


def test_kwd_rounds_to_three_digits() -> None:
    fils = charge(
        """
        model = "volume"
        meter = "api_calls"
        tiers = [
          { up_to = 100, unit_amount = 0.0125 },
          { up_to = "inf", unit_amount = 0.0100, flat_amount = 0.500 },
        ]
        """
    )
    # 123.45 × 0.0100 + 0.500 = 1.234500 + 0.500 = 1.7345 → 1.735 half up, 1.734 half even (4 is even)
    result = volume.rate(fils, MeterUsage(quantity=D("123.45")))
    assert result.amount == D("1.7345")
    assert str(round_money(result.amount, "KWD")) == "1.735"
    assert str(round_money(result.amount, "KWD", Rounding.HALF_EVEN)) == "1.734"
