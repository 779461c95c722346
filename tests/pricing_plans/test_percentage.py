"""The percentage charge model: per transaction, rate % of its value plus a fixed fee, after the free part."""

from __future__ import annotations

import tomllib
from decimal import Decimal

import pytest

from pricing_plans.charge_models import MeterUsage, percentage, rate_charge
from pricing_plans.models import PercentageCharge
from pricing_plans.money import D, round_money

# A card processor's price: 2.9 % + 0.30 per payment, at least 0.50 and at most 20.00 a payment.
CARD = """
model = "percentage"
meter = "payment_volume"
rate = 2.9
fixed_amount = 0.30
per_transaction_min = 0.50
per_transaction_max = 20
"""

# The same price without clamps, plus a free part; each test adds its own limits.
BASE = """
model = "percentage"
meter = "payment_volume"
rate = 2.9
fixed_amount = 0.30
"""

PAYMENTS = ("100", "10", "1000")


def charge(toml: str) -> PercentageCharge:
    return PercentageCharge.model_validate(tomllib.loads(toml, parse_float=Decimal))


def usage(*values: str) -> MeterUsage:
    amounts = [D(v) for v in values]
    return MeterUsage(quantity=sum(amounts, D(0)), events=len(amounts), values=amounts)


def usd(amount: Decimal) -> str:
    return str(round_money(amount, "USD"))


def test_fee_per_event_clamped_to_min_and_max() -> None:
    result = percentage.rate(charge(CARD), usage(*PAYMENTS))
    # 100: 2.90 + 0.30 = 3.20; 10: 0.29 + 0.30 = 0.59; 1000: 29.00 + 0.30 = 29.30 → max 20
    # 3.20 + 0.59 + 20 = 23.79
    assert usd(result.amount) == "23.79"
    (row,) = result.breakdown
    # chargeable volume 100 + 10 + 1000 = 1110; fixed fees 3 × 0.30 = 0.90
    assert (row.tier, row.units, row.unit_amount, row.flat_amount, row.amount) == (
        1,
        D(1110),
        D("2.9"),
        D("0.90"),
        result.amount,
    )
    assert row.note == "3 events (1 cut to max 20)"
    # unclamped: 2.9 % × 1110 + 0.90 = 32.19 + 0.90 = 33.09
    assert result.explanation == (
        "3 events (1 cut to max 20): 2.9% × 1110 + 3 × 0.30 = 33.09 before clamping; total 23.79"
    )


def test_small_payment_raised_to_min() -> None:
    result = percentage.rate(charge(CARD), usage("1", "100"))
    # 1: 0.029 + 0.30 = 0.329 → min 0.50; 100: 3.20 → 0.50 + 3.20 = 3.70
    assert usd(result.amount) == "3.70"
    assert result.breakdown[0].note == "2 events (1 raised to min 0.50)"


def test_zero_value_payment_pays_the_fixed_fee() -> None:
    # 0 × 2.9 % + 0.30 = 0.30 → min 0.50
    assert usd(percentage.rate(charge(CARD), usage("0")).amount) == "0.50"
    assert usd(percentage.rate(charge(BASE), usage("0")).amount) == "0.30"


def test_no_free_part_without_clamps() -> None:
    # 3.20 + 0.59 + 29.30 = 33.09
    result = percentage.rate(charge(BASE), usage(*PAYMENTS))
    assert usd(result.amount) == "33.09"
    assert result.explanation == "3 events: 2.9% × 1110 + 3 × 0.30; total 33.09"


def test_free_events() -> None:
    result = percentage.rate(charge(BASE + "free_events = 1"), usage(*PAYMENTS))
    # 100 is free (no fixed fee either); 10: 0.59; 1000: 29.30 → 29.89
    assert usd(result.amount) == "29.89"
    free, paid = result.breakdown
    assert (free.tier, free.units, free.amount, free.note) == (1, D(100), D(0), "1 event free")
    # chargeable 10 + 1000 = 1010, fixed 2 × 0.30 = 0.60
    assert (paid.tier, paid.from_units, paid.units, paid.flat_amount, paid.note) == (
        2,
        D(100),
        D(1010),
        D("0.60"),
        "2 events",
    )


def test_free_amount_straddled() -> None:
    result = percentage.rate(charge(BASE + "free_amount = 150"), usage(*PAYMENTS))
    # 100 and 10 are free (110 of 150); 1000 straddles: 40 free, 960 charged:
    # 960 × 2.9 % + 0.30 = 27.84 + 0.30 = 28.14
    assert usd(result.amount) == "28.14"
    free, paid = result.breakdown
    assert (free.units, free.to_units, free.note) == (D(150), D(150), "2 events free, 1 partly")
    assert (paid.units, paid.flat_amount, paid.note) == (D(960), D("0.30"), "1 event")
    assert result.explanation == ("2 events free, 1 partly (150 of value); 1 event: 2.9% × 960 + 1 × 0.30; total 28.14")


def test_free_amount_filled_exactly_ends_the_free_part() -> None:
    # 100 + 10 = 110 fills the free amount exactly; 1000 pays in full: 29.30
    result = percentage.rate(charge(BASE + "free_amount = 110"), usage(*PAYMENTS))
    assert usd(result.amount) == "29.30"
    assert result.breakdown[0].note == "2 events free"


def test_free_events_run_out_first() -> None:
    # 2 free events (110 of value, under 1000); the third pays in full: 29.30
    result = percentage.rate(charge(BASE + "free_events = 2\nfree_amount = 1000"), usage(*PAYMENTS))
    assert usd(result.amount) == "29.30"
    assert result.breakdown[0].units == D(110)


def test_free_amount_runs_out_first() -> None:
    # The first payment straddles 50: 50 × 2.9 % + 0.30 = 1.45 + 0.30 = 1.75; then 0.59 and 29.30
    # 1.75 + 0.59 + 29.30 = 31.64; free_events = 3 never comes into play.
    result = percentage.rate(charge(BASE + "free_events = 3\nfree_amount = 50"), usage(*PAYMENTS))
    assert usd(result.amount) == "31.64"
    free, paid = result.breakdown
    assert (free.units, free.note) == (D(50), "0 events free, 1 partly")
    assert (paid.units, paid.note) == (D(1060), "3 events")


def test_everything_free() -> None:
    result = percentage.rate(charge(BASE + "free_events = 5"), usage(*PAYMENTS))
    assert usd(result.amount) == "0.00"
    (free,) = result.breakdown
    assert (free.units, free.note) == (D(1110), "3 events free")


def test_straddling_event_is_clamped_too() -> None:
    # 1000 straddles 990: 10 × 2.9 % + 0.30 = 0.59 → min 0.50 does not apply; with min 1.00 it does.
    raised = charge(BASE + "free_amount = 990\nper_transaction_min = 1.00")
    assert usd(percentage.rate(raised, usage("1000")).amount) == "1.00"


def test_without_values_a_single_event_is_its_quantity() -> None:
    # 200 × 2.9 % + 0.30 = 5.80 + 0.30 = 6.10
    result = percentage.rate(charge(BASE), MeterUsage(quantity=D(200), events=1))
    assert usd(result.amount) == "6.10"


def test_no_events() -> None:
    result = percentage.rate(charge(CARD), MeterUsage())
    assert (result.amount, result.breakdown, result.explanation) == (0, (), "no usage: 0")


def test_without_values_several_events_are_refused() -> None:
    with pytest.raises(ValueError, match="needs per-event values"):
        percentage.rate(charge(CARD), MeterUsage(quantity=D(1110), events=3))


def test_negative_value_is_refused() -> None:
    with pytest.raises(ValueError, match="negative value"):
        percentage.rate(charge(CARD), usage("100", "-10"))


def test_registry_dispatches_to_percentage() -> None:
    assert rate_charge(charge(CARD), usage(*PAYMENTS)) == percentage.rate(charge(CARD), usage(*PAYMENTS))
