"""Which part of a dimensioned charge an event falls in (``part_of``), how a part is named (``dimension_key``),
and the overlap rule checked against every event: a catalog is refused exactly when some event would match two
filters naming the most properties among those it matches."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pricing_plans import DimensionedUsage, MeterUsage, Part, PerUnitCharge, dimension_key, part_of
from pricing_plans.dimensions import ordered_parts


def charge(*filters: dict[str, Any], group_by: tuple[str, ...] = ()) -> PerUnitCharge:
    tables = [{"unit_amount": 1, **f} for f in filters]
    return PerUnitCharge.model_validate(
        {"meter": "sms", "model": "per_unit", "unit_amount": 1, "filters": tables, "group_by": list(group_by)}
    )


SMS = charge(
    {"name": "US & Canada", "properties": {"country": ["US", "CA"]}},
    {"properties": {"country": ["DE"], "direction": ["inbound"]}},
    {"properties": {"country": ["DE"]}, "group_by": ["carrier"]},
    group_by=("region",),
)


def test_an_event_goes_to_the_filter_naming_the_most_properties() -> None:
    assert part_of(SMS, {"country": "DE", "direction": "inbound"}) == Part(1, (None,))
    assert part_of(SMS, {"country": "DE", "direction": "outbound", "carrier": "t1"}) == Part(2, ("t1",))
    assert part_of(SMS, {"country": "CA", "region": "eu"}) == Part(0, ("eu",))


def test_an_event_matching_no_filter_is_in_the_unmatched_part() -> None:
    assert part_of(SMS, {"country": "FR", "region": "eu"}) == Part(None, ("eu",))
    assert part_of(SMS, {}) == Part(None, (None,))  # no country: matches no filter naming country
    assert part_of(SMS, {"country": "us"}) == Part(None, (None,))  # values are compared exactly


def test_an_ungrouped_charge_has_empty_groups() -> None:
    plain = charge({"properties": {"country": ["US"]}})
    assert part_of(plain, {"country": "US", "region": "eu"}) == Part(0, ())
    assert part_of(plain, {}) == Part(None, ())


def test_the_dimension_key_names_a_part_by_content() -> None:
    assert dimension_key(SMS, Part(0, ("eu",))) == '{"filter":{"country":["CA","US"]},"group":{"region":"eu"}}'
    assert dimension_key(SMS, Part(None, (None,))) == '{"filter":null,"group":{"region":null}}'
    assert (
        dimension_key(SMS, Part(1, ("eu",)))
        == '{"filter":{"country":["DE"],"direction":["inbound"]},"group":{"region":"eu"}}'
    )
    assert dimension_key(SMS, Part(2, ("t1",))) == '{"filter":{"country":["DE"]},"group":{"carrier":"t1"}}'
    # usage given without its split on a grouped charge: ungrouped
    assert dimension_key(SMS, Part(None)) == '{"filter":null,"group":{}}'


def test_the_dimension_key_does_not_depend_on_filter_order_or_names() -> None:
    one = charge({"properties": {"b": ["y", "x"], "a": ["z"]}}, {"properties": {"c": ["q"]}})
    two = charge({"properties": {"c": ["q"]}}, {"name": "renamed", "properties": {"a": ["z"], "b": ["x", "y"]}})
    assert (
        dimension_key(one, Part(0)) == dimension_key(two, Part(1)) == '{"filter":{"a":["z"],"b":["x","y"]},"group":{}}'
    )


def test_a_wrong_sized_group_is_a_bug_not_a_key() -> None:
    with pytest.raises(ValueError):
        dimension_key(SMS, Part(0, ("eu", "extra")))


def test_parts_are_ordered_by_filter_then_unmatched_then_group_values_with_none_last() -> None:
    parts = [Part(None, ("eu",)), Part(0, (None,)), Part(0, ("us",)), Part(0, ("eu",)), Part(2, ("t1",))]
    assert ordered_parts(SMS, parts) == [
        Part(0, ("eu",)),
        Part(0, ("us",)),
        Part(0, (None,)),
        Part(2, ("t1",)),
        Part(None, ("eu",)),
    ]


def test_dimensioned_usage_is_frozen() -> None:
    source = {Part(0): MeterUsage(quantity=Decimal(2), events=2)}
    usage = DimensionedUsage(parts=source, total=MeterUsage(quantity=Decimal(2), events=2))
    source[Part(None)] = MeterUsage()
    assert list(usage.parts) == [Part(0)]  # a copy
    with pytest.raises(TypeError):
        usage.parts[Part(None)] = MeterUsage()  # type: ignore[index]


# -- the overlap rule against every event -----------------------------------------------------------------

PROPERTIES = ("a", "b", "c")
VALUES = ("x", "y", "z")
# every event over those properties: each one of the values, another value, or missing
EVENTS = [
    {name: value for name, value in zip(PROPERTIES, chosen, strict=True) if value is not None}
    for chosen in itertools.product((*VALUES, "other", None), repeat=len(PROPERTIES))
]

filter_properties = st.dictionaries(
    st.sampled_from(PROPERTIES),
    st.lists(st.sampled_from(VALUES), min_size=1, max_size=3, unique=True),
    min_size=1,
    max_size=3,
)


def matching(c: PerUnitCharge, event: dict[str, str]) -> list[int]:
    return [
        index
        for index, f in enumerate(c.filters)
        if all(event.get(name) in values for name, values in f.properties.items())
    ]


@settings(max_examples=300, deadline=None)
@given(st.lists(filter_properties, min_size=1, max_size=5))
def test_a_catalog_is_refused_exactly_when_some_event_is_ambiguous(properties: list[dict[str, list[str]]]) -> None:
    tables = [{"properties": p, "unit_amount": 1} for p in properties]
    data = {"meter": "m", "model": "per_unit", "unit_amount": 1, "filters": tables}
    ambiguous = []
    for event in EVENTS:
        sizes = [len(properties[index]) for index in range(len(properties)) if _matches(properties[index], event)]
        if sizes and sizes.count(max(sizes)) > 1:
            ambiguous.append(event)
    try:
        c = PerUnitCharge.model_validate(data)
    except ValidationError as error:
        assert ambiguous, error
        assert all("overlaps filters" in e["msg"] for e in error.errors())
        return
    assert not ambiguous
    for event in EVENTS:
        found = matching(c, event)
        chosen = part_of(c, event).filter
        if not found:
            assert chosen is None
        else:
            assert chosen is not None and chosen in found
            assert len(c.filters[chosen].properties) == max(len(c.filters[i].properties) for i in found)


def _matches(properties: dict[str, list[str]], event: dict[str, str]) -> bool:
    return all(event.get(name) in values for name, values in properties.items())


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(PROPERTIES), st.one_of(st.none(), st.sampled_from((*VALUES, "é", '"'))), max_size=3
    ).map(lambda event: {k: v for k, v in event.items() if v is not None})
)
def test_the_dimension_key_is_canonical_json(event: dict[str, str]) -> None:
    c = charge({"properties": {"a": ["y", "x"]}}, group_by=("b", "c"))
    part = part_of(c, event)
    decoded = json.loads(dimension_key(c, part))
    assert decoded["filter"] == (None if part.filter is None else {"a": ["x", "y"]})
    assert decoded["group"] == {"b": event.get("b"), "c": event.get("c")}
    assert dimension_key(c, part) == json.dumps(decoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
