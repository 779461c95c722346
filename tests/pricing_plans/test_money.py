"""Numbers and money: D() refuses floats, round_money() rounds once to the currency's minor units (Babel)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pricing_plans.money import (
    D,
    Rounding,
    format_amount,
    is_known_currency,
    minor_digits,
    minor_units,
    round_money,
)


class TestD:
    def test_refuses_float(self) -> None:
        with pytest.raises(TypeError, match="refusing float"):
            D(0.1)  # type: ignore[arg-type]

    def test_refuses_bool(self) -> None:
        with pytest.raises(TypeError, match="boolean"):
            D(True)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("0.1", "0.1"),
            (" 1_000.50 ", "1000.50"),
            (7, "7"),
            (None, "0"),
            ("", "0"),
            (Decimal("0.00025"), "0.00025"),
        ],
    )
    def test_makes_exact_decimals(self, value: Decimal | int | str | None, expected: str) -> None:
        assert str(D(value)) == expected

    def test_sums_exactly(self) -> None:
        # The float classic 0.1 + 0.2 != 0.3 does not happen.
        assert D("0.1") + D("0.2") == D("0.3")

    @pytest.mark.parametrize("value", ["abc", "NaN", "Infinity", "1,5"])
    def test_refuses_what_is_not_a_finite_number(self, value: str) -> None:
        with pytest.raises(ValueError):
            D(value)


@pytest.mark.parametrize(
    ("amount", "half_up", "half_even"),
    [
        # the digit before the 5 is even: half_even rounds down
        ("2.345", "2.35", "2.34"),
        # odd: both round up
        ("2.355", "2.36", "2.36"),
        ("0.125", "0.13", "0.12"),
        # not a half: both round to nearest
        ("2.3449", "2.34", "2.34"),
        # negative (a credit): half_up rounds away from zero
        ("-2.345", "-2.35", "-2.34"),
        # already rounded amounts keep two digits
        ("560", "560.00", "560.00"),
    ],
)
def test_round_money_usd(amount: str, half_up: str, half_even: str) -> None:
    assert str(round_money(D(amount), "USD")) == half_up
    assert str(round_money(D(amount), "USD", Rounding.HALF_UP)) == half_up
    assert str(round_money(D(amount), "USD", Rounding.HALF_EVEN)) == half_even


@pytest.mark.parametrize(
    ("amount", "half_up", "half_even"),
    [
        ("1234.5", "1235", "1234"),
        ("1235.5", "1236", "1236"),
        ("425.75", "426", "426"),
        ("0.4", "0", "0"),
    ],
)
def test_round_money_jpy_has_no_minor_digits(amount: str, half_up: str, half_even: str) -> None:
    assert minor_digits("JPY") == 0
    assert str(round_money(D(amount), "JPY")) == half_up
    assert str(round_money(D(amount), "JPY", Rounding.HALF_EVEN)) == half_even


@pytest.mark.parametrize("currency", ["KWD", "BHD"])
def test_round_money_three_digit_currencies(currency: str) -> None:
    # Babel's ISO 4217 data: 3 minor digits (fils)
    assert minor_digits(currency) == 3
    assert str(round_money(D("1.2345"), currency)) == "1.235"
    assert str(round_money(D("1.2345"), currency, Rounding.HALF_EVEN)) == "1.234"
    assert str(round_money(D("2.5"), currency)) == "2.500"


def test_rounding_modes_map_to_decimal() -> None:
    assert Rounding("half_up") is Rounding.HALF_UP
    assert Rounding("half_even") is Rounding.HALF_EVEN


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("49", "USD", "49.00"),
        ("49.5", "EUR", "49.50"),
        ("1500", "JPY", "1500"),
        ("1500.0", "JPY", "1500"),
        ("2.5", "BHD", "2.500"),
        ("0", "KWD", "0.000"),
    ],
)
def test_format_amount(amount: str, currency: str, expected: str) -> None:
    assert format_amount(D(amount), currency) == expected


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [("12.50", "USD", 1250), ("1500", "JPY", 1500), ("1.235", "KWD", 1235), ("-0.01", "USD", -1)],
)
def test_minor_units(amount: str, currency: str, expected: int) -> None:
    assert minor_units(D(amount), currency) == expected


def test_minor_units_refuses_an_unrounded_amount() -> None:
    with pytest.raises(ValueError, match="not rounded"):
        minor_units(D("12.345"), "USD")


def test_unknown_currency() -> None:
    assert is_known_currency("USD")
    assert not is_known_currency("QQQ")
    with pytest.raises(ValueError, match="unknown currency 'QQQ'"):
        round_money(D("1.00"), "QQQ")
