"""Amounts as Stripe's API takes them: integers in *Stripe's* minor units of the currency, which are not always the
currency's own (ISO 4217's, which Babel gives and invoices here are rounded to).

- **Zero-decimal** in Stripe (:data:`ZERO_DECIMAL`): the amount in whole units (1500 JPY → ``1500``).
- **Three-decimal** (:data:`THREE_DECIMAL`): in thousandths (5.120 KWD → ``5120``); what Stripe charges or
  refunds must end in 0 (its payment partners' rule: 5.124 KWD cannot be collected), see :func:`collectable`.
- **Every other currency is two-decimal in Stripe's API**, also those whose own minor unit is the whole unit
  (ISK, HUF, COP, IDR…: Babel gives them 0 places): 5 ISK → ``500``, 100001 COP → ``10000100``. Sending
  ``5`` would ask 0.05 ISK, and an ``invoice.paid`` of ``500`` read with the currency's own places would record
  500 ISK collected where 5 ISK were.

From Stripe's currency documentation (https://docs.stripe.com/currencies): the zero-decimal list, the three-
decimal list and the special cases.
"""

from __future__ import annotations

from decimal import Decimal

__all__ = ["THREE_DECIMAL", "ZERO_DECIMAL", "collectable", "from_stripe", "stripe_digits", "to_stripe"]

ZERO_DECIMAL = frozenset(
    "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split()  # noqa: SIM905
)
THREE_DECIMAL = frozenset("BHD JOD KWD OMR TND".split())  # noqa: SIM905


def stripe_digits(currency: str) -> int:
    """How many decimal places Stripe's integer amounts of ``currency`` hold."""
    code = currency.upper()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def to_stripe(amount: Decimal, currency: str) -> int:
    """``amount`` (rounded to the currency's minor units here) as Stripe's integer: 12.50 USD → 1250, 1500 JPY →
    1500, 5 ISK → 500. Raises ValueError for an amount Stripe's units cannot hold."""
    scaled = amount.scaleb(stripe_digits(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(
            f"{amount} {currency.upper()}: Stripe takes {currency.upper()} amounts with at most "
            f"{stripe_digits(currency)} decimal places"
        )
    return int(scaled)


def from_stripe(amount: int, currency: str) -> Decimal:
    """Stripe's integer ``amount`` of ``currency`` as an amount (1250 USD → 12.50, 500 ISK → 5), exactly: what
    Stripe collected in fractions the currency has no unit for here (5.50 ISK, collected for an invoice pushed in
    the wrong units) is rounded when it is recorded, never taken for the whole amount due."""
    return Decimal(amount).scaleb(-stripe_digits(currency))


def collectable(amount: int, currency: str) -> bool:
    """Whether Stripe can charge or refund ``amount`` (its integer) of ``currency``: a three-decimal currency's
    amount must end in 0 (5.120 KWD, not 5.124)."""
    return currency.upper() not in THREE_DECIMAL or amount % 10 == 0
