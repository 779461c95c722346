"""What every charge model takes and gives.

A charge model is a pure function ``rate(charge, usage) -> ChargeAmount``: no database, no clock, no rounding
(the line is rounded once, later, by the caller with :func:`pricing_plans.money.round_money`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from pricing_plans.money import ZERO

__all__ = ["BreakdownRow", "ChargeAmount", "MeterUsage"]


@dataclass(frozen=True, slots=True)
class MeterUsage:
    """A meter's usage in one period, as a charge model needs it.

    Attributes:
      quantity: the meter's aggregated quantity (count, sum, GB-month, ...).
      events: how many events made it.
      values: each event's value in time order; needed by the ``percentage`` model (per-transaction fees,
        free events), None otherwise.
    """

    quantity: Decimal = ZERO
    events: int = 0
    values: Sequence[Decimal] | None = None


@dataclass(frozen=True, slots=True)
class BreakdownRow:
    """How one tier (or step) of a charge was computed.

    Attributes:
      tier: 1-based tier number (1 for single-step models).
      from_units: the tier's lower bound (exclusive for graduated tiers after the first; 0 for the first).
      to_units: the tier's upper bound (inclusive), None for the open last tier.
      units: the units priced in this row (for percentage models: the value volume).
      unit_amount: the price per unit (for percentage models: the rate in percent).
      flat_amount: the flat amount the row adds.
      amount: units × unit_amount (or rate % of units) + flat_amount, at full precision.
      note: a short explanation ("ceil(2100 / 1000) = 3 packages", "12 events, 3 free").
    """

    tier: int
    from_units: Decimal
    to_units: Decimal | None
    units: Decimal
    unit_amount: Decimal
    flat_amount: Decimal
    amount: Decimal
    note: str = ""

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
