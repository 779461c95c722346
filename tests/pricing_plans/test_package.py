"""The package charge model: usage sold in whole packages, after the free units."""

from __future__ import annotations

import tomllib
from decimal import Decimal

import pytest

from pricing_plans.charge_models import MeterUsage, package, rate_charge
from pricing_plans.models import PackageCharge
from pricing_plans.money import D, round_money

# domain.md: 1,000-call packages at 2.00, the first 500 calls free.
PACKS = """
model = "package"
meter = "api_calls"
package_size = 1000
package_amount = 2.00
free_units = 500
"""

NO_FREE = """
model = "package"
meter = "api_calls"
package_size = 1000
package_amount = 2.00
"""


def charge(toml: str) -> PackageCharge:
    return PackageCharge.model_validate(tomllib.loads(toml, parse_float=Decimal))


def usd(amount: Decimal) -> str:
    return str(round_money(amount, "USD"))


@pytest.mark.parametrize(
    ("quantity", "expected", "packages"),
    [
        # nothing used
        ("0", "0.00", None),
        # all within the 500 free units
        ("500", "0.00", None),
        # first billable unit: ceil(1 / 1000) = 1 package → 2.00
        ("501", "2.00", "1"),
        # top of the first package: ceil(1000 / 1000) = 1 → 2.00
        ("1500", "2.00", "1"),
        # first unit of the second package: ceil(1001 / 1000) = 2 → 4.00
        ("1501", "4.00", "2"),
        # domain.md: ceil(2100 / 1000) = 3 → 3 × 2.00 = 6.00
        ("2600", "6.00", "3"),
        # deep: ceil(999,500 / 1000) = 1000 (999.5 rounds up) → 2,000.00
        ("1000000", "2000.00", "1000"),
        # fractional: ceil(0.5 / 1000) = 1 → 2.00
        ("500.5", "2.00", "1"),
    ],
)
def test_boundaries(quantity: str, expected: str, packages: str | None) -> None:
    result = package.rate(charge(PACKS), MeterUsage(quantity=D(quantity)))
    assert usd(result.amount) == expected
    if packages is None:
        assert result.breakdown == ()
    else:
        (row,) = result.breakdown
        # The row counts packages, priced at package_amount each; it starts after the free units.
        assert (row.units, row.unit_amount, row.amount, row.from_units) == (
            D(packages),
            D("2.00"),
            result.amount,
            D(500),
        )


def test_domain_example_explains_itself() -> None:
    result = package.rate(charge(PACKS), MeterUsage(quantity=D(2600)))
    assert result.explanation == "2600 − 500 free = 2100 units; ceil(2100 / 1000) = 3 packages; 3 × 2.00 = 6.00"
    assert result.breakdown[0].note == "2600 − 500 free = 2100 units; ceil(2100 / 1000) = 3 packages"


def test_within_free_units_explains_itself() -> None:
    assert package.rate(charge(PACKS), MeterUsage(quantity=D(400))).explanation == (
        "400 units within 500 free units: 0"
    )


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("0", "0.00"),
        # the first unit buys a whole package
        ("1", "2.00"),
        ("1000", "2.00"),
        ("1001", "4.00"),
    ],
)
def test_without_free_units(quantity: str, expected: str) -> None:
    assert usd(package.rate(charge(NO_FREE), MeterUsage(quantity=D(quantity))).amount) == expected


def test_without_free_units_explains_itself() -> None:
    result = package.rate(charge(NO_FREE), MeterUsage(quantity=D(1)))
    assert result.explanation == "ceil(1 / 1000) = 1 package; 1 × 2.00 = 2.00"


def test_fractional_package_size() -> None:
    half_gb = charge(
        """
        model = "package"
        meter = "storage_gb"
        package_size = 0.5
        package_amount = 0.10
        """
    )
    # ceil(1.2 / 0.5) = ceil(2.4) = 3 → 3 × 0.10 = 0.30
    assert usd(package.rate(half_gb, MeterUsage(quantity=D("1.2"))).amount) == "0.30"
    # ceil(1.5 / 0.5) = 3 exactly → 0.30
    assert usd(package.rate(half_gb, MeterUsage(quantity=D("1.5"))).amount) == "0.30"


def test_ceiling_is_exact_beyond_decimal_precision() -> None:
    thirds = charge(
        """
        model = "package"
        meter = "api_calls"
        package_size = 3
        package_amount = 1
        """
    )
    # 10**30 + 1 = 3 × 333…333 (30 threes) + 2, so ceil = 333…334; a 28-digit quotient would lose the + 1.
    result = package.rate(thirds, MeterUsage(quantity=D(10**30 + 1)))
    assert result.breakdown[0].units == D("3" * 29 + "4")


def test_registry_dispatches_to_package() -> None:
    usage = MeterUsage(quantity=D(2600))
    assert rate_charge(charge(PACKS), usage) == package.rate(charge(PACKS), usage)
