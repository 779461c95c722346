"""Subscription fee proration: fee × active days / days in the period, trial days free."""

from __future__ import annotations

import tomllib
from datetime import date
from decimal import Decimal

import pytest

from pricing_plans.models import SubscriptionFee
from pricing_plans.money import D, round_money
from pricing_plans.proration import fee_for_period, seat_fee_for_period, trial_ends

MONTHLY = "fee = 30.00"
OCTOBER = (date(2025, 10, 1), date(2025, 11, 1))  # 31 days, half-open


def fee(toml: str) -> SubscriptionFee:
    return SubscriptionFee.model_validate(tomllib.loads(toml, parse_float=Decimal))


def usd(amount: Decimal) -> str:
    return str(round_money(amount, "USD"))


def test_domain_example_starts_mid_month() -> None:
    # Active 17..31 October = 15 of 31 days: 30 × 15 / 31 = 450 / 31 = 14.516129… → 14.52
    result = fee_for_period(fee(MONTHLY), *OCTOBER, date(2025, 10, 17), None)
    assert result.amount == D("30.00") * 15 / 31
    assert usd(result.amount) == "14.52"
    assert result.explanation == "30.00 × 15/31 days"


@pytest.mark.parametrize(
    "start",
    [date(2025, 10, 1), date(2024, 3, 9)],
    ids=["starts-on-the-first-day", "started-before"],
)
def test_whole_period_is_exactly_the_fee(start: date) -> None:
    result = fee_for_period(fee(MONTHLY), *OCTOBER, start, None)
    # Not 30.00 × 31/31 computed: the fee itself, digits and all.
    assert str(result.amount) == "30.00"
    assert result.explanation == "30.00 for the full period (31 days)"


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        # ends 11 October (exclusive): active 1..10 = 10 days: 300 / 31 = 9.677… → 9.68
        (date(2025, 1, 1), date(2025, 10, 11), "9.68"),
        # 17..26 October = 10 days: 9.68
        (date(2025, 10, 17), date(2025, 10, 27), "9.68"),
        # the last day only: 30 / 31 = 0.967… → 0.97
        (date(2025, 10, 31), None, "0.97"),
        # the first day only: 0.97
        (date(2025, 9, 1), date(2025, 10, 2), "0.97"),
        # ends on the period's end: the whole period
        (date(2025, 9, 1), date(2025, 11, 1), "30.00"),
    ],
)
def test_partial_periods(start: date, end: date | None, expected: str) -> None:
    assert usd(fee_for_period(fee(MONTHLY), *OCTOBER, start, end).amount) == expected


def test_trial_days_are_free() -> None:
    # Starts 25 September with 14 trial days: pays from 9 October, 9..31 = 23 days: 690 / 31 = 22.258… → 22.26
    result = fee_for_period(fee(MONTHLY + "\ntrial_days = 14"), *OCTOBER, date(2025, 9, 25), None)
    assert usd(result.amount) == "22.26"
    assert result.explanation == "30.00 × 23/31 days"


def test_trial_over_the_whole_period() -> None:
    # Starts 10 October, 30 trial days: pays from 9 November, after this period.
    result = fee_for_period(fee(MONTHLY + "\ntrial_days = 30"), *OCTOBER, date(2025, 10, 10), None)
    assert result.amount == 0
    assert result.explanation == "no active days in the period (in trial until 2025-11-08): 0"


def test_a_plan_change_continues_the_trial_it_began() -> None:
    """A subscription that replaced another on 5 October by a plan change, whose chain began on 1 October: its
    14 trial days count from 1 October, not 5. Pays from 15 October: 15..31 = 17 days, 30 × 17 / 31 = 16.451… →
    16.45 (counted from its own start it would pay 13 days, 12.58)."""
    result = fee_for_period(
        fee(MONTHLY + "\ntrial_days = 14"), *OCTOBER, date(2025, 10, 5), None, trial_from=date(2025, 10, 1)
    )
    assert usd(result.amount) == "16.45"
    assert result.explanation == "30.00 × 17/31 days"


def test_a_plan_change_after_the_trial_gives_no_new_one() -> None:
    """The chain began 1 September; the plan changed on 20 October, after the 14 trial days: the new plan's
    subscription pays from its first day, 20..31 = 12 days: 30 × 12 / 31 = 11.612… → 11.61."""
    result = fee_for_period(
        fee(MONTHLY + "\ntrial_days = 14"), *OCTOBER, date(2025, 10, 20), None, trial_from=date(2025, 9, 1)
    )
    assert usd(result.amount) == "11.61"
    assert trial_ends(fee(MONTHLY + "\ntrial_days = 14"), date(2025, 10, 20), date(2025, 9, 1)) == date(2025, 10, 20)
    assert trial_ends(fee(MONTHLY + "\ntrial_days = 14"), date(2025, 10, 20)) == date(2025, 11, 3)


def test_a_seat_fee_continues_the_trial_too() -> None:
    """3 seats at 30.00 on a subscription from 5 October whose chain began 1 October, 14 trial days: 3 × 30 ×
    17/31 = 49.354… → 49.35."""
    result = seat_fee_for_period(
        fee(MONTHLY + "\ntrial_days = 14\nseats = true"),
        *OCTOBER,
        date(2025, 10, 5),
        None,
        [(date(2025, 10, 5), 3)],
        trial_from=date(2025, 10, 1),
    )
    assert usd(result.amount) == "49.35"


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (date(2025, 11, 1), None),  # starts after the period (its end is exclusive)
        (date(2025, 1, 1), date(2025, 10, 1)),  # ended on the period's first day (exclusive)
        (date(2025, 1, 1), date(2025, 6, 1)),  # ended long before
    ],
)
def test_not_active_in_the_period(start: date, end: date | None) -> None:
    result = fee_for_period(fee(MONTHLY), *OCTOBER, start, end)
    assert (result.amount, result.explanation) == (0, "no active days in the period (subscription not active): 0")


def test_february_of_a_leap_year() -> None:
    # 15..29 February 2024 = 15 of 29 days: 450 / 29 = 15.517… → 15.52
    result = fee_for_period(fee(MONTHLY), date(2024, 2, 1), date(2024, 3, 1), date(2024, 2, 15), None)
    assert usd(result.amount) == "15.52"
    assert result.explanation == "30.00 × 15/29 days"


@pytest.mark.parametrize(
    ("year", "expected", "days"),
    [
        # 1 July..31 December = 184 days; 2024 has 366: 120 × 184 / 366 = 22,080 / 366 = 60.327… → 60.33
        (2024, "60.33", "184/366"),
        # 2025 has 365: 22,080 / 365 = 60.493… → 60.49
        (2025, "60.49", "184/365"),
    ],
)
def test_yearly_period(year: int, expected: str, days: str) -> None:
    result = fee_for_period(fee("fee = 120.00"), date(year, 1, 1), date(year + 1, 1, 1), date(year, 7, 1), None)
    assert usd(result.amount) == expected
    assert result.explanation == f"120.00 × {days} days"


def test_jpy_fee() -> None:
    # 3,000 × 15 / 31 = 45,000 / 31 = 1,451.61… → 1452 yen
    result = fee_for_period(fee("fee = 3000"), *OCTOBER, date(2025, 10, 17), None)
    assert str(round_money(result.amount, "JPY")) == "1452"


def test_empty_period_is_refused() -> None:
    with pytest.raises(ValueError, match="empty billing period"):
        fee_for_period(fee(MONTHLY), date(2025, 10, 1), date(2025, 10, 1), date(2025, 1, 1), None)
