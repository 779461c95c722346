"""Numbers and money: one way to make a number, one way to round it.

Money and quantities are :class:`decimal.Decimal` everywhere. :func:`D` refuses ``float`` so that a binary
fraction never slips into an amount; :func:`round_money` rounds once to the currency's minor units, which come
from Babel (ISO 4217 data), never from a hand-written table.
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from enum import StrEnum
from functools import cache

from babel.numbers import get_currency_precision, list_currencies

__all__ = [
    "ONE",
    "ZERO",
    "D",
    "Rounding",
    "format_amount",
    "is_known_currency",
    "minor_digits",
    "minor_units",
    "round_money",
]

ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)


class Rounding(StrEnum):
    """How a line amount is rounded to the currency's minor units."""

    HALF_UP = "half_up"
    HALF_EVEN = "half_even"

    @property
    def decimal_mode(self) -> str:
        return decimal.ROUND_HALF_UP if self is Rounding.HALF_UP else decimal.ROUND_HALF_EVEN


def D(value: Decimal | int | str | None = None) -> Decimal:
    """Make a Decimal from an int, a string or a Decimal. ``None`` and ``""`` give zero; a float is refused."""
    if value is None or value == "":
        return ZERO
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, float):
        raise TypeError(f"refusing float {value!r}: write money and quantities as Decimal, int or str")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            number = Decimal(value.strip().replace("_", ""))
        except decimal.InvalidOperation:
            raise ValueError(f"not a number: {value!r}") from None
        if not number.is_finite():
            raise ValueError(f"not a finite number: {value!r}")
        return number
    raise TypeError(f"cannot make a number from {type(value).__name__}")


@cache
def _known_currencies() -> frozenset[str]:
    return frozenset(list_currencies())


def is_known_currency(code: str) -> bool:
    """Whether ``code`` is an ISO 4217 currency code that Babel knows."""
    return code in _known_currencies()


@cache
def minor_digits(currency: str) -> int:
    """The number of minor-unit digits of ``currency`` (USD 2, JPY 0, BHD 3), from Babel."""
    if not is_known_currency(currency):
        raise ValueError(f"unknown currency {currency!r} (expected an ISO 4217 code such as USD, EUR, JPY)")
    return get_currency_precision(currency)


@cache
def _quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-minor_digits(currency))


def round_money(amount: Decimal, currency: str, rounding: Rounding = Rounding.HALF_UP) -> Decimal:
    """Round ``amount`` once to the minor units of ``currency`` ("12.345" USD half_up → "12.35")."""
    return amount.quantize(_quantum(currency), rounding=rounding.decimal_mode)


def minor_units(amount: Decimal, currency: str) -> int:
    """An already rounded amount as an integer of minor units (12.50 USD → 1250, 1500 JPY → 1500)."""
    scaled = amount.scaleb(minor_digits(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} {currency} is not rounded to the currency's minor units")
    return int(scaled)


def format_amount(amount: Decimal, currency: str) -> str:
    """The canonical string of an amount: exactly the currency's minor digits ("49.00", "1500" for JPY)."""
    return str(amount.quantize(_quantum(currency)))
