"""Minimum commitment: usage below the minimum is trued up to it."""

from __future__ import annotations

import pytest

from pricing_plans.commitment import true_up
from pricing_plans.money import D


@pytest.mark.parametrize(
    ("minimum", "usage", "expected"),
    [
        # domain.md: 300.00 − 212.40 = 87.60
        ("300.00", "212.40", "87.60"),
        # no usage: the whole minimum
        ("300.00", "0.00", "300.00"),
        # exactly at the minimum: nothing to true up
        ("300.00", "300.00", "0"),
        # above the minimum: never negative
        ("300.00", "412.40", "0"),
        # a cent below: 0.01
        ("300.00", "299.99", "0.01"),
        # three-digit currency (KWD): 50.000 − 12.345 = 37.655
        ("50.000", "12.345", "37.655"),
    ],
)
def test_true_up(minimum: str, usage: str, expected: str) -> None:
    assert true_up(D(minimum), D(usage)) == D(expected)


def test_usage_plus_true_up_is_the_minimum() -> None:
    usage = D("212.40")
    assert str(usage + true_up(D("300.00"), usage)) == "300.00"
    assert str(true_up(D("300.00"), usage)) == "87.60"
