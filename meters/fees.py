"""Fees per event summed per window: what the ``percentage`` charge model reads instead of every event's value.

The terms (``FeeTerms``: any hashable object with these attributes, e.g. the pricing side's own) say: each event
pays rate % × its value + fixed_amount, clamped to [minimum, maximum] when set, after the free part — the first
``free_events`` events and at most ``free_amount`` of value, whichever runs out first (0: not set); an event
wholly inside it pays nothing, the one that straddles ``free_amount`` pays on its value above it.
:func:`meters.aggregate_usage` sums them in the database (``MeterSpec.per_event_fees``); :func:`walk` is the same
walk on ``Decimal``, for what the database's integers cannot hold.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from decimal import Decimal
from typing import NamedTuple, Protocol

__all__ = ["EventFees", "FeeTerms", "walk"]

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)


class FeeTerms(Hashable, Protocol):
    """What a fee per event depends on (the attributes read)."""

    @property
    def rate(self) -> Decimal: ...  # percent
    @property
    def fixed_amount(self) -> Decimal: ...
    @property
    def free_events(self) -> int: ...
    @property
    def free_amount(self) -> Decimal: ...
    @property
    def minimum(self) -> Decimal | None: ...
    @property
    def maximum(self) -> Decimal | None: ...


class EventFees(NamedTuple):
    """A window's events' fees under some terms, summed.

    Attributes:
      free_events: the events wholly inside the free part; ``free_value``: the value the free part covered.
      straddled: whether one event straddled ``free_amount``.
      paid_events, chargeable: the paid events and the value their rate applied to.
      raised, cut: the paid events whose fee was raised to the minimum, cut to the maximum.
      total: the sum of the paid events' clamped fees, exact.
      negative: (index, value) of the first event with a negative value, if any (its fee is not defined).
    """

    free_events: int = 0
    free_value: Decimal = _ZERO
    straddled: bool = False
    paid_events: int = 0
    chargeable: Decimal = _ZERO
    raised: int = 0
    cut: int = 0
    total: Decimal = _ZERO
    negative: tuple[int, Decimal] | None = None


def walk(terms: FeeTerms, values: Iterable[Decimal]) -> EventFees:
    """The fees of events with these values (in time order) under ``terms``; a negative value stops the walk."""
    low, high, fixed = terms.minimum, terms.maximum, terms.fixed_amount
    fraction = terms.rate / _HUNDRED
    in_free = terms.free_events > 0 or terms.free_amount > 0
    free_count = paid = raised = cut = 0
    straddled = False
    free_value = chargeable_total = total = _ZERO
    for index, value in enumerate(values):
        if value < 0:
            return EventFees(negative=(index, value))
        if in_free and terms.free_events and free_count == terms.free_events:
            in_free = False
        if in_free and terms.free_amount and free_value == terms.free_amount:
            in_free = False
        chargeable = value
        if in_free:
            room = terms.free_amount - free_value if terms.free_amount else value
            if value <= room:
                free_count += 1
                free_value += value
                continue
            free_value += room
            chargeable = value - room
            straddled = True
            in_free = False
        fee = chargeable * fraction + fixed
        if low is not None and fee < low:
            fee, raised = low, raised + 1
        if high is not None and fee > high:
            fee, cut = high, cut + 1
        paid += 1
        chargeable_total += chargeable
        total += fee
    return EventFees(free_count, free_value, straddled, paid, chargeable_total, raised, cut, total)
