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

from pricing_plans.errors import AmountOutOfRangeError

__all__ = [
    "MAX_AMOUNT",
    "MAX_FRACTION_DIGITS",
    "ONE",
    "WEIGHTS",
    "ZERO",
    "D",
    "Rounding",
    "check_amount",
    "format_amount",
    "format_sum",
    "is_known_currency",
    "minor_digits",
    "minor_units",
    "number_problem",
    "round_money",
    "settled",
    "sum_in_minor_units",
]

ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)

# The engine computes in Python's default decimal context, 28 significant digits, and a database column holds
# what it is given (ExactDecimal: NUMERIC without a precision on PostgreSQL, text on SQLite), so the limit on
# amounts is the arithmetic's, not the column's. An amount below 10^15 has at most 15 digits before the decimal
# point; with the currency's minor digits (at most 4) it takes at most 19 of the 28, which leaves room to add up
# a thousand million such lines and to multiply by a tax rate without a digit being rounded away. Catalog numbers
# also have at most 12 digits after the point, so that each one (at most 27 digits) is exact in that context.
MAX_AMOUNT = Decimal(10) ** 15
MAX_FRACTION_DIGITS = 12
_MAX_SHOWN = f"{MAX_AMOUNT:,}"


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


def number_problem(value: Decimal) -> str | None:
    """Why a catalog number cannot be kept exactly, or None: at least :data:`MAX_AMOUNT`, or more than
    :data:`MAX_FRACTION_DIGITS` digits after the decimal point (trailing zeros do not count)."""
    if not value.is_finite():
        return "must be a finite number"
    if value.copy_abs() >= MAX_AMOUNT:  # (copy_abs: no context, so 1E+1000000 is compared, never overflows)
        return f"too large: must be below {_MAX_SHOWN} (at most 15 digits before the decimal point; got {value})"
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    if digits and any(digits) and -(exponent + trailing_zeros) > MAX_FRACTION_DIGITS:
        return f"too many decimal places: at most {MAX_FRACTION_DIGITS} digits after the decimal point (got {value})"
    return None


def check_amount(amount: Decimal, currency: str) -> Decimal:
    """``amount`` itself when it is below :data:`MAX_AMOUNT`; else :class:`AmountOutOfRangeError`."""
    if not amount.is_finite() or amount.copy_abs() >= MAX_AMOUNT:
        raise AmountOutOfRangeError(
            f"the amount {amount} {currency} is too large: amounts must stay below {_MAX_SHOWN} {currency}"
        )
    return amount


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


WEIGHTS = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN)
"""The context of weights: what discounts leave of an invoice's lines, in proportion to them (no amounts)."""

_SETTLED = Decimal(1).scaleb(-40)


def settled(weight: Decimal) -> Decimal:
    """``weight`` (computed in :data:`WEIGHTS`) to 40 decimal places, rid of the noise of its last digits: what
    10 % and 100 % off left of 6.15 and 29.01, 31.6399…9 in 60 digits, is 31.64 again and rounds down to what it
    is. A weight that is not in minor units keeps 40 decimals, closer than rounding to them can tell."""
    return weight.quantize(_SETTLED, context=WEIGHTS)


def round_money(amount: Decimal, currency: str, rounding: Rounding = Rounding.HALF_UP) -> Decimal:
    """Round ``amount`` once to the minor units of ``currency`` ("12.345" USD half_up → "12.35").

    An amount of :data:`MAX_AMOUNT` or more raises :class:`AmountOutOfRangeError` (never a rounded guess).
    """
    return check_amount(amount, currency).quantize(_quantum(currency), rounding=rounding.decimal_mode)


def minor_units(amount: Decimal, currency: str) -> int:
    """An already rounded amount as an integer of minor units (12.50 USD → 1250, 1500 JPY → 1500)."""
    scaled = amount.scaleb(minor_digits(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} {currency} is not rounded to the currency's minor units")
    return int(scaled)


def format_amount(amount: Decimal, currency: str) -> str:
    """The canonical string of an amount: exactly the currency's minor digits ("49.00", "1500" for JPY)."""
    return str(check_amount(amount, currency).quantize(_quantum(currency)))


def sum_in_minor_units(amount: Decimal, currency: str) -> Decimal:
    """A sum of amounts that were each checked and rounded (a customer's balance, receivables' totals), in the
    currency's minor digits however large it is: such a sum may pass :data:`MAX_AMOUNT` (many invoices of a
    customer, every customer's) and is still read and shown, never an error."""
    return amount.quantize(_quantum(currency), context=_WIDE)


def format_sum(amount: Decimal, currency: str) -> str:
    """The canonical string of :func:`sum_in_minor_units` ("2000000000000000.00")."""
    return str(sum_in_minor_units(amount, currency))


_WIDE = decimal.Context(prec=60)
