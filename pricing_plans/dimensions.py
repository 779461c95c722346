"""Usage by event dimension: which part of a charge an event falls in, and the usage of each part.

A charge with ``filters`` or ``group_by`` is rated per *part*: the filter an event matches (the matching filter
naming the most properties; None when it matches none) and the values of the properties the part is grouped by.
:func:`part_of` is the reference rule, one event at a time; the billing run computes the same parts in the
database (a ``CASE`` over the filters in :attr:`~pricing_plans.models.Charge.match_order`, then a ``GROUP BY``)
and hands the rating engine a :class:`DimensionedUsage`.

    part_of(charge, {"country": "US", "region": "eu"})      # Part(filter=0, group=("eu",))
    dimension_key(charge, part)   # '{"filter":{"country":["CA","US"]},"group":{"region":"eu"}}'
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from pricing_plans.charge_models.base import MeterUsage
from pricing_plans.models import Charge

__all__ = ["NONE_LABEL", "DimensionedUsage", "Part", "dimension_key", "ordered_parts", "part_of"]

# How a line names a group whose property the events did not have.
NONE_LABEL = "(none)"


class Part(NamedTuple):
    """One part of a dimensioned charge, rated on its own (one invoice line).

    Attributes:
      filter: the index into ``charge.filters`` of the filter the events match; None: they match no filter.
      group: the values of the part's group_by keys (the filter's, or the charge's), in their order; None for
        events without the property. ``()`` when the part is not grouped.
    """

    filter: int | None
    group: tuple[str | None, ...] = ()


def part_of(charge: Charge, properties: Mapping[str, str]) -> Part:
    """The part of ``charge`` an event with ``properties`` falls in.

    A filter matches when, for each property it names, the event's value is one of the filter's values; the
    event goes to the first match in ``charge.match_order`` (most properties first). A valid catalog never has
    two matching filters naming as many properties unless a more specific one also matches, so the order among
    equals never decides anything.
    """
    chosen: int | None = None
    for index in charge.match_order:
        wanted = charge.filters[index].properties
        if all(properties.get(name) in values for name, values in wanted.items()):
            chosen = index
            break
    return Part(chosen, tuple(properties.get(key) for key in charge.group_by_of(chosen)))


@dataclass(frozen=True, slots=True)
class DimensionedUsage:
    """A dimensioned charge's usage in one period.

    Attributes:
      parts: the usage of each part that has events (a part absent has none).
      total: the meter's own aggregate over all of the period's events (distinct values overall for
        ``unique_count``, not the sum of the parts): what a threshold on the meter measures.
    """

    parts: Mapping[Part, MeterUsage] = field(default_factory=dict)
    total: MeterUsage = field(default_factory=MeterUsage)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", MappingProxyType(dict(self.parts)))


def dimension_key(charge: Charge, part: Part) -> str:
    """A part named by its content, as canonical JSON: the filter's properties (each list sorted; null for
    events matching no filter) and the group's values by key (null for a missing property).

    Stable across catalog edits that keep the filter's content (reordering filters or renaming them does not
    change it), so a line stored with it can be found again when late usage is rated.
    """
    filter_properties = None
    if part.filter is not None:
        properties = charge.filters[part.filter].properties
        filter_properties = {name: sorted(values) for name, values in properties.items()}
    # A part of no group (``()``) on a grouped charge is usage given without its split: ungrouped.
    group = dict(zip(charge.group_by_of(part.filter), part.group, strict=True)) if part.group else {}
    return json.dumps(
        {"filter": filter_properties, "group": group}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def ordered_parts(charge: Charge, parts: Iterable[Part]) -> list[Part]:
    """Parts in invoice order: filters in catalog order, then the unmatched events; within each, groups by their
    values (a missing value last)."""

    def order(part: Part) -> tuple[int, tuple[tuple[bool, str], ...]]:
        filter_rank = len(charge.filters) if part.filter is None else part.filter
        return filter_rank, tuple((value is None, value or "") for value in part.group)

    return sorted(parts, key=order)
