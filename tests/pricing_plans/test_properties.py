"""Properties of the charge models over generated tiers and quantities (hypothesis)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from pricing_plans.charge_models import MeterUsage, graduated, graduated_percentage, package, percentage, volume
from pricing_plans.models import (
    GraduatedCharge,
    GraduatedPercentageCharge,
    PackageCharge,
    PercentageCharge,
    VolumeCharge,
)
from pricing_plans.money import ZERO


def decimals(low: str, high: str, places: int) -> st.SearchStrategy[Decimal]:
    return st.decimals(min_value=Decimal(low), max_value=Decimal(high), places=places)


quantities = decimals("0", "1000000", 3)
prices = decimals("0", "10", 5)
flats = decimals("0", "100", 2)
rates = decimals("0", "100", 2)


@st.composite
def tiers(draw: st.DrawFn, price: st.SearchStrategy[Decimal], key: str) -> list[dict[str, object]]:
    """1 to 5 tiers: increasing positive bounds, the last one open."""
    bounds = sorted(draw(st.sets(decimals("0.001", "100000", 3), max_size=4)))
    return [{"up_to": up_to, key: draw(price), "flat_amount": draw(flats)} for up_to in [*bounds, "inf"]]


@given(tiers(prices, "unit_amount"), quantities, quantities)
def test_graduated_never_decreases_as_quantity_grows(
    price_tiers: list[dict[str, object]], a: Decimal, b: Decimal
) -> None:
    charge = GraduatedCharge.model_validate({"model": "graduated", "meter": "m", "tiers": price_tiers})
    low, high = sorted((a, b))
    assert (
        graduated.rate(charge, MeterUsage(quantity=low)).amount
        <= graduated.rate(charge, MeterUsage(quantity=high)).amount
    )


@given(tiers(prices, "unit_amount"), quantities)
def test_graduated_rows_hold_the_whole_quantity_and_add_up(price_tiers: list[dict[str, object]], q: Decimal) -> None:
    charge = GraduatedCharge.model_validate({"model": "graduated", "meter": "m", "tiers": price_tiers})
    result = graduated.rate(charge, MeterUsage(quantity=q))
    assert sum((row.units for row in result.breakdown), ZERO) == q
    assert sum((row.amount for row in result.breakdown), ZERO) == result.amount
    assert all(row.units > 0 for row in result.breakdown)


@given(tiers(rates, "rate"), quantities, quantities)
def test_graduated_percentage_never_decreases_as_volume_grows(
    rate_tiers: list[dict[str, object]], a: Decimal, b: Decimal
) -> None:
    charge = GraduatedPercentageCharge.model_validate(
        {"model": "graduated_percentage", "meter": "m", "tiers": rate_tiers}
    )
    low, high = sorted((a, b))
    assert (
        graduated_percentage.rate(charge, MeterUsage(quantity=low)).amount
        <= graduated_percentage.rate(charge, MeterUsage(quantity=high)).amount
    )


@given(tiers(prices, "unit_amount"), decimals("-1000", "1000000", 3))
def test_volume_is_never_negative(price_tiers: list[dict[str, object]], q: Decimal) -> None:
    charge = VolumeCharge.model_validate({"model": "volume", "meter": "m", "tiers": price_tiers})
    result = volume.rate(charge, MeterUsage(quantity=q))
    assert result.amount >= 0
    assert len(result.breakdown) == (1 if q > 0 else 0)


@given(
    decimals("0.001", "10000", 3),
    decimals("0.01", "100", 2),
    decimals("0", "10000", 3),
    decimals("-1000", "1000000", 3),
)
def test_package_is_a_non_negative_multiple_of_the_package_amount(
    size: Decimal, price: Decimal, free: Decimal, q: Decimal
) -> None:
    charge = PackageCharge.model_validate(
        {"model": "package", "meter": "m", "package_size": size, "package_amount": price, "free_units": free}
    )
    result = package.rate(charge, MeterUsage(quantity=q))
    assert result.amount >= 0
    assert result.amount % price == 0
    packages = result.amount / price
    billable = max(ZERO, q - free)
    # The fewest whole packages that hold the billable units.
    assert (packages - 1) * size < billable <= packages * size or (packages == 0 and billable == 0)


MIN_FEE, MAX_FEE = Decimal("0.50"), Decimal("20")
payments = st.lists(decimals("0", "100000", 2), max_size=20)


def card_charge(rate: Decimal, fixed: Decimal, free_events: int, free_amount: Decimal) -> PercentageCharge:
    return PercentageCharge.model_validate(
        {
            "model": "percentage",
            "meter": "m",
            "rate": rate,
            "fixed_amount": fixed,
            "free_events": free_events,
            "free_amount": free_amount,
            "per_transaction_min": MIN_FEE,
            "per_transaction_max": MAX_FEE,
        }
    )


@given(rates, flats, payments)
def test_percentage_fees_stay_within_the_clamps(rate: Decimal, fixed: Decimal, values: list[Decimal]) -> None:
    # No free part: every event pays a fee between the min and the max.
    charge = card_charge(rate, fixed, 0, ZERO)
    result = percentage.rate(charge, MeterUsage(quantity=sum(values, ZERO), events=len(values), values=values))
    assert len(values) * MIN_FEE <= result.amount <= len(values) * MAX_FEE


@given(rates, flats, payments, st.integers(min_value=0, max_value=5), decimals("0", "1000", 2))
def test_percentage_free_part_only_lowers_the_amount(
    rate: Decimal, fixed: Decimal, values: list[Decimal], free_events: int, free_amount: Decimal
) -> None:
    usage = MeterUsage(quantity=sum(values, ZERO), events=len(values), values=values)
    with_free = percentage.rate(card_charge(rate, fixed, free_events, free_amount), usage)
    without = percentage.rate(card_charge(rate, fixed, 0, ZERO), usage)
    assert 0 <= with_free.amount <= without.amount
    # The free part and the charged part together are the whole volume.
    assert sum((row.units for row in with_free.breakdown), ZERO) == usage.quantity
