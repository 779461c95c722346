"""The graduated charge model: each tier prices the units that fall in it."""

from __future__ import annotations

import tomllib
from decimal import Decimal

import pytest

from pricing_plans.charge_models import MeterUsage, graduated, rate_charge
from pricing_plans.models import GraduatedCharge
from pricing_plans.money import D, Rounding, round_money

# domain.md's example: 0..100 at 0.50, (100, 1000] at 0.40, above at 0.30.
API_CALLS = """
model = "graduated"
meter = "api_calls"
tiers = [
  { up_to = 100, unit_amount = 0.50 },
  { up_to = 1000, unit_amount = 0.40 },
  { up_to = "inf", unit_amount = 0.30 },
]
"""

# Flat amounts per tier: a tier that holds units adds its flat amount once.
WITH_FLAT = """
model = "graduated"
meter = "seats"
tiers = [
  { up_to = 10, unit_amount = 0, flat_amount = 5.00 },
  { up_to = "inf", unit_amount = 1.25, flat_amount = 2.00 },
]
"""


def charge(toml: str) -> GraduatedCharge:
    return GraduatedCharge.model_validate(tomllib.loads(toml, parse_float=Decimal))


def usd(amount: Decimal) -> str:
    return str(round_money(amount, "USD"))


@pytest.mark.parametrize(
    ("quantity", "expected", "tiers"),
    [
        # 0 units: nothing, and no row.
        ("0", "0.00", []),
        # first unit: 1 × 0.50
        ("1", "0.50", [(1, "1", "0.50")]),
        # top of tier 1: 100 × 0.50 = 50
        ("100", "50.00", [(1, "100", "50")]),
        # first unit of tier 2: 50 + 1 × 0.40 = 50.40
        ("101", "50.40", [(1, "100", "50"), (2, "1", "0.40")]),
        # top of tier 2: 50 + 900 × 0.40 = 50 + 360 = 410
        ("1000", "410.00", [(1, "100", "50"), (2, "900", "360")]),
        # first unit of tier 3: 410 + 1 × 0.30 = 410.30
        ("1001", "410.30", [(1, "100", "50"), (2, "900", "360"), (3, "1", "0.30")]),
        # domain.md: 100 × 0.50 + 900 × 0.40 + 500 × 0.30 = 50 + 360 + 150 = 560
        ("1500", "560.00", [(1, "100", "50"), (2, "900", "360"), (3, "500", "150")]),
        # deep in tier 3: 50 + 360 + 99,000 × 0.30 = 50 + 360 + 29,700 = 30,110
        ("100000", "30110.00", [(1, "100", "50"), (2, "900", "360"), (3, "99000", "29700")]),
        # fractional: 0.5 falls in tier 2: 50 + 0.5 × 0.40 = 50.20
        ("100.5", "50.20", [(1, "100", "50"), (2, "0.5", "0.20")]),
    ],
)
def test_boundaries(quantity: str, expected: str, tiers: list[tuple[int, str, str]]) -> None:
    result = graduated.rate(charge(API_CALLS), MeterUsage(quantity=D(quantity)))
    assert usd(result.amount) == expected
    assert [(row.tier, row.units, row.amount) for row in result.breakdown] == [
        (tier, D(units), D(amount)) for tier, units, amount in tiers
    ]


def test_domain_example_explains_itself() -> None:
    result = graduated.rate(charge(API_CALLS), MeterUsage(quantity=D(1500)))
    assert result.explanation == "100 × 0.50 + 900 × 0.40 + 500 × 0.30 = 560.00"
    # Tier bounds: (0, 100], (100, 1000], (1000, inf).
    assert [(row.from_units, row.to_units) for row in result.breakdown] == [
        (D(0), D(100)),
        (D(100), D(1000)),
        (D(1000), None),
    ]
    assert [row.unit_amount for row in result.breakdown] == [D("0.50"), D("0.40"), D("0.30")]


def test_zero_usage_explains_itself() -> None:
    result = graduated.rate(charge(API_CALLS), MeterUsage())
    assert result.amount == 0
    assert result.breakdown == ()
    assert result.explanation == "no usage: 0"


def test_registry_dispatches_to_graduated() -> None:
    usage = MeterUsage(quantity=D(1500))
    assert rate_charge(charge(API_CALLS), usage) == graduated.rate(charge(API_CALLS), usage)


@pytest.mark.parametrize(
    ("quantity", "expected", "flats"),
    [
        # no usage: no tier is touched, so no flat amount either
        ("0", "0.00", []),
        # 1 seat: 1 × 0 + 5.00 flat
        ("1", "5.00", ["5.00"]),
        # top of tier 1: 10 × 0 + 5.00; tier 2 holds nothing and adds no flat
        ("10", "5.00", ["5.00"]),
        # fractional into tier 2: 5.00 + 0.2 × 1.25 + 2.00 = 5 + 0.25 + 2 = 7.25
        ("10.2", "7.25", ["5.00", "2.00"]),
        # 5.00 + 2 × 1.25 + 2.00 = 5 + 2.50 + 2 = 9.50
        ("12", "9.50", ["5.00", "2.00"]),
    ],
)
def test_flat_amount_once_per_touched_tier(quantity: str, expected: str, flats: list[str]) -> None:
    result = graduated.rate(charge(WITH_FLAT), MeterUsage(quantity=D(quantity)))
    assert usd(result.amount) == expected
    assert [row.flat_amount for row in result.breakdown] == [D(f) for f in flats]


def test_flat_amount_in_explanation() -> None:
    result = graduated.rate(charge(WITH_FLAT), MeterUsage(quantity=D(12)))
    # 10 × 0 + 5.00 = 5.00; 2 × 1.25 + 2.00 = 4.50; total 9.50
    assert result.explanation == "10 × 0 + 5.00 + 2 × 1.25 + 2.00 = 9.50"


def test_allowance_is_a_free_first_tier() -> None:
    allowance = charge(
        """
        model = "graduated"
        meter = "api_calls"
        tiers = [
          { up_to = 1000, unit_amount = 0 },
          { up_to = "inf", unit_amount = 0.00025 },
        ]
        """
    )
    # 1,000 free, then (1,234,540 − 1,000) × 0.00025 = 1,233,540 / 4,000 = 308.385
    # → 308.39 half up, 308.38 half even (8 is even, so the 5 rounds down).
    result = graduated.rate(allowance, MeterUsage(quantity=D(1_234_540)))
    assert result.amount == D("308.385")
    assert usd(result.amount) == "308.39"
    assert str(round_money(result.amount, "USD", Rounding.HALF_EVEN)) == "308.38"
    # (2,000 − 1,000) × 0.00025 = 0.25
    assert usd(graduated.rate(allowance, MeterUsage(quantity=D(2000))).amount) == "0.25"
    assert graduated.rate(allowance, MeterUsage(quantity=D(1000))).amount == 0


def test_jpy_rounds_to_whole_yen() -> None:
    yen = charge(
        """
        model = "graduated"
        meter = "api_calls"
        tiers = [
          { up_to = 1000, unit_amount = 0.3 },
          { up_to = "inf", unit_amount = 0.25 },
        ]
        """
    )
    # 1,000 × 0.3 + 503 × 0.25 = 300 + 125.75 = 425.75 → 426 yen
    result = graduated.rate(yen, MeterUsage(quantity=D(1503)))
    assert result.amount == D("425.75")
    assert str(round_money(result.amount, "JPY")) == "426"
