"""Tier walking shared by the tiered charge models, and how numbers read in an explanation.

Tiers have inclusive upper bounds: tier i covers ``(previous up_to, up_to]`` (the first starts at 0, the open
last tier has ``up_to = None``). The catalog guarantees at least one tier, increasing bounds and an open last
tier, so the walk does not check them again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Generic, Protocol, TypeVar

from pricing_plans.money import ZERO

__all__ = ["Slice", "graduated_slices", "show", "show_amount", "volume_tier"]


class _Bounded(Protocol):
    @property
    def up_to(self) -> Decimal | None: ...


T = TypeVar("T", bound=_Bounded)


@dataclass(frozen=True, slots=True)
class Slice(Generic[T]):
    """The part of a quantity that falls in one tier.

    Attributes:
      number: the tier's 1-based position.
      tier: the tier itself (its prices).
      from_units: the tier's lower bound (exclusive, except 0 for the first tier).
      to_units: the tier's upper bound (inclusive), None for the open last tier.
      units: how much of the quantity the tier holds (always > 0).
    """

    number: int
    tier: T
    from_units: Decimal
    to_units: Decimal | None
    units: Decimal


def graduated_slices(tiers: Sequence[T], quantity: Decimal) -> Iterator[Slice[T]]:
    """The tiers that hold some of ``quantity``, each with its units: min(q, up_to) − previous bound.

    A quantity of 0 or less holds no units, so it yields nothing.
    """
    lower = ZERO
    for number, tier in enumerate(tiers, start=1):
        if quantity <= lower:
            return
        top = quantity if tier.up_to is None else min(quantity, tier.up_to)
        yield Slice(number, tier, lower, tier.up_to, top - lower)
        if tier.up_to is None:
            return
        lower = tier.up_to


def volume_tier(tiers: Sequence[T], quantity: Decimal) -> tuple[int, T, Decimal]:
    """The one tier ``quantity`` falls in (bounds inclusive), as (1-based number, tier, lower bound)."""
    lower = ZERO
    for number, tier in enumerate(tiers, start=1):
        if tier.up_to is None or quantity <= tier.up_to:
            return number, tier, lower
        lower = tier.up_to
    # The catalog makes the last tier open, so a valid charge never gets here.
    raise ValueError(f'no tier holds {quantity}: the last tier must be up_to = "inf"')


def show(number: Decimal) -> str:
    """A number as people write it, never in exponent form (Decimal("1E+3") → "1000")."""
    return format(number, "f")


_CENTS = Decimal("0.01")


def show_amount(amount: Decimal) -> str:
    """A computed amount without the trailing zeros products pile up, but with at least two decimals.

    825.0000 → "825.00", 33.090 → "33.09", 308.645 → "308.645": the explanation shows the unrounded amount.
    """
    trimmed = amount.normalize()
    try:
        cents = trimmed.quantize(_CENTS)
    except InvalidOperation:  # beyond 28 digits: show it whole rather than fail to explain it
        return format(trimmed, "f")
    return format(cents if cents == trimmed else trimmed, "f")
