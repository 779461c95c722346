"""What every charge model takes and gives.

A charge model is a pure function ``rate(charge, usage) -> ChargeAmount``: no database, no clock, no rounding
(the line is rounded once, later, by the caller with :func:`pricing_plans.money.round_money`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

from pricing_plans.money import ZERO

__all__ = [
    "BreakdownRow",
    "ChargeAmount",
    "MeterUsage",
    "PerEventFeeTerms",
    "PerEventFees",
    "UnitAmountKind",
    "price_key",
]

_T = TypeVar("_T")


def price_key(value: _T | None, key: str) -> _T:
    """A charge's own price key, which a charge with filters may lack (it then has no default price)."""
    if value is None:
        raise ValueError(f"the charge has no {key} of its own: it prices only the events its filters match")
    return value


@dataclass(frozen=True, slots=True, eq=False)
class PerEventFeeTerms:
    """What a fee per event (the ``percentage`` model) depends on: rate % × value + fixed_amount, clamped to
    [minimum, maximum] when set, after the free part (the first ``free_events`` events and at most ``free_amount``
    of value, whichever runs out first; 0: not set). Hashable: the key of a window's ``PerEventFees``.

    Equal only when written alike (2.9 is not 2.90): the sums keep the places of the terms they were summed
    under, and an invoice prints them."""

    rate: Decimal
    fixed_amount: Decimal = ZERO
    free_events: int = 0
    free_amount: Decimal = ZERO
    minimum: Decimal | None = None
    maximum: Decimal | None = None

    def _written(self) -> tuple[object, ...]:
        numbers = (self.rate, self.fixed_amount, self.free_amount, self.minimum, self.maximum)
        return (self.free_events, *(None if x is None else x.as_tuple() for x in numbers))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PerEventFeeTerms) and self._written() == other._written()

    def __hash__(self) -> int:
        return hash(self._written())


@dataclass(frozen=True, slots=True)
class PerEventFees:
    """The fees of a window's events under some ``PerEventFeeTerms``, summed (by the database, or as the events
    stream by): what the ``percentage`` model prints, without each event's value.

    Attributes:
      free_events: the events wholly inside the free part; ``free_value``: the value the free part covered.
      straddled: whether one event straddled ``free_amount`` (its value above it paid).
      paid_events, chargeable: the paid events and the value their rate applied to.
      raised, cut: the paid events whose fee was raised to the minimum, cut to the maximum.
      total: the sum of the paid events' clamped fees, exact.
      negative: (index, value) of the first event with a negative value (the model prices no refunds), if any.
    """

    free_events: int = 0
    free_value: Decimal = ZERO
    straddled: bool = False
    paid_events: int = 0
    chargeable: Decimal = ZERO
    raised: int = 0
    cut: int = 0
    total: Decimal = ZERO
    negative: tuple[int, Decimal] | None = None


@dataclass(frozen=True, slots=True)
class MeterUsage:
    """A meter's usage in one period, as a charge model needs it.

    Attributes:
      quantity: the meter's aggregated quantity (count, sum, GB-month, ...).
      events: how many events made it.
      values: each event's value in time order; needed by the ``percentage`` model (per-transaction fees,
        free events) unless ``fees`` has its terms, None otherwise.
      fees: the events' fees summed under the terms of each ``percentage`` charge of the meter (what that model
        reads instead of ``values``), None otherwise.
    """

    quantity: Decimal = ZERO
    events: int = 0
    values: Sequence[Decimal] | None = None
    fees: Mapping[PerEventFeeTerms, PerEventFees] | None = None


class UnitAmountKind(StrEnum):
    """What a breakdown row's ``unit_amount`` is: a price per unit, or a rate in percent of a value volume.

    A price is printed as money with every digit it has ($0.00025); a rate as a percentage (2.9 %), and the
    row's units, then a value volume, as money.
    """

    PRICE = "price"
    PERCENT = "percent"


@dataclass(frozen=True, slots=True)
class BreakdownRow:
    """How one tier (or step) of a charge was computed.

    Attributes:
      tier: 1-based tier number (1 for single-step models).
      from_units: the tier's lower bound (exclusive for graduated tiers after the first; 0 for the first).
      to_units: the tier's upper bound (inclusive), None for the open last tier.
      units: the units priced in this row (for percentage models: the value volume).
      unit_amount: the price per unit, or the rate in percent for percentage models (``unit_amount_kind``).
      flat_amount: the flat amount the row adds.
      amount: units × unit_amount (or rate % of units) + flat_amount, at full precision.
      note: a short explanation ("ceil(2100 / 1000) = 3 packages", "12 events, 3 free").
      unit_amount_kind: whether ``unit_amount`` is a price or a rate in percent (then ``units`` is the value
        volume it applies to). Set by the charge model that made the row; not part of ``as_dict``, which gives
        the row as invoices store it, and from which ``from_dict`` reads it back with the model's kind.
    """

    tier: int
    from_units: Decimal
    to_units: Decimal | None
    units: Decimal
    unit_amount: Decimal
    flat_amount: Decimal
    amount: Decimal
    note: str = ""
    unit_amount_kind: UnitAmountKind = UnitAmountKind.PRICE

    @property
    def in_percent(self) -> bool:
        """Whether ``unit_amount`` is a rate in percent (and ``units`` a value volume)."""
        return self.unit_amount_kind is UnitAmountKind.PERCENT

    def as_dict(self) -> dict[str, str | int | None]:
        return {
            "tier": self.tier,
            "from": str(self.from_units),
            "to": None if self.to_units is None else str(self.to_units),
            "units": str(self.units),
            "unit_amount": str(self.unit_amount),
            "flat_amount": str(self.flat_amount),
            "amount": str(self.amount),
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], unit_amount_kind: UnitAmountKind) -> BreakdownRow:
        """The row ``as_dict`` gave; ``unit_amount_kind`` is the kind of the charge model that made it."""
        upper = data.get("to")
        return cls(
            tier=int(data["tier"]),
            from_units=Decimal(data["from"]),
            to_units=None if upper is None else Decimal(upper),
            units=Decimal(data["units"]),
            unit_amount=Decimal(data["unit_amount"]),
            flat_amount=Decimal(data["flat_amount"]),
            amount=Decimal(data["amount"]),
            note=str(data.get("note") or ""),
            unit_amount_kind=unit_amount_kind,
        )


@dataclass(frozen=True, slots=True)
class ChargeAmount:
    """The unrounded amount of a charge and how it was computed.

    Attributes:
      amount: at full precision (the caller rounds the line once).
      breakdown: one row per tier or step that holds some of the usage.
      explanation: one readable sentence ("100 × 0.50 + 900 × 0.40 + 500 × 0.30 = 560.00").
    """

    amount: Decimal
    breakdown: tuple[BreakdownRow, ...] = field(default_factory=tuple)
    explanation: str = ""
