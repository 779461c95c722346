"""Prices by event dimension in the catalog: ``filters`` and ``group_by`` on a charge, loaded into frozen records
or refused with every problem located (``plans.sms.charges[0].filters[1].properties: ...``)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from pricing_plans import (
    Catalog,
    ChargeFilter,
    GraduatedCharge,
    PackageCharge,
    PerUnitCharge,
    loads_catalog,
    rate_charge,
)
from pricing_plans.charge_models import MeterUsage

HEAD = """
[meters.sms]
name = "SMS"
aggregation = "count"

[plans.sms]
name = "SMS"
currency = "USD"
"""

SMS = """
[[plans.sms.charges]]
meter = "sms"
model = "per_unit"
unit_amount = 0.0100

[[plans.sms.charges.filters]]
name = "US & Canada"
properties = { country = ["US", "CA"] }
unit_amount = 0.0079

[[plans.sms.charges.filters]]
properties = { country = ["DE"], direction = ["inbound"] }
unit_amount = 0
"""


def problems(text: str) -> list[str]:
    catalog, found = loads_catalog(HEAD + text, "catalog.toml")
    assert (catalog is None) == bool(found)
    return [str(problem) for problem in found]


def load(text: str) -> Catalog:
    catalog, found = loads_catalog(HEAD + text, "catalog.toml")
    assert [str(p) for p in found] == []
    assert catalog is not None
    return catalog


def charge_of(text: str) -> PerUnitCharge:
    charge = load(text).plan("sms").charges[0]
    assert isinstance(charge, PerUnitCharge)
    return charge


# -- what loads ---------------------------------------------------------------------------------------------


def test_the_sms_example_loads_into_filters_with_their_own_prices() -> None:
    charge = charge_of(SMS)
    assert charge.unit_amount == Decimal("0.0100")
    assert charge.has_default and charge.is_dimensioned
    us, de = charge.filters
    assert us.name == "US & Canada" and us.label == "US & Canada"
    assert us.properties == {"country": ("US", "CA")}
    assert us.group_by is None
    assert isinstance(us.price, PerUnitCharge)
    assert (us.price.meter, us.price.unit_amount, us.price.filters) == ("sms", Decimal("0.0079"), ())
    assert de.name is None and de.label == "DE, inbound"  # the values joined
    assert de.price.model == "per_unit" and de.price.unit_amount == Decimal("0")
    # two properties before one: the DE filter is tried first
    assert charge.match_order == (1, 0)


def test_a_charge_without_filters_or_group_by_is_not_dimensioned() -> None:
    charge = charge_of('[[plans.sms.charges]]\nmeter = "sms"\nmodel = "per_unit"\nunit_amount = 0.01\n')
    assert (charge.filters, charge.group_by, charge.has_default, charge.is_dimensioned) == ((), (), True, False)
    assert charge.match_order == ()


def test_group_by_alone_makes_a_charge_dimensioned() -> None:
    charge = charge_of(
        '[[plans.sms.charges]]\nmeter = "sms"\nmodel = "per_unit"\nunit_amount = 0.01\ngroup_by = ["region"]\n'
    )
    assert charge.group_by == ("region",) and charge.is_dimensioned
    assert charge.group_by_of(None) == ("region",)


def test_a_filters_group_by_replaces_the_charges() -> None:
    charge = charge_of(
        """
[[plans.sms.charges]]
meter = "sms"
model = "per_unit"
unit_amount = 0.01
group_by = ["region"]

[[plans.sms.charges.filters]]
properties = { country = ["US"] }
unit_amount = 0.02
group_by = ["carrier", "region"]

[[plans.sms.charges.filters]]
properties = { country = ["DE"] }
unit_amount = 0.03
group_by = []

[[plans.sms.charges.filters]]
properties = { country = ["FR"] }
unit_amount = 0.04
"""
    )
    assert [charge.group_by_of(i) for i in (0, 1, 2, None)] == [("carrier", "region"), (), ("region",), ("region",)]


def test_a_charge_with_filters_may_have_no_default() -> None:
    charge = charge_of(
        """
[[plans.sms.charges]]
meter = "sms"
model = "per_unit"

[[plans.sms.charges.filters]]
properties = { country = ["US"] }
unit_amount = 0.0079
"""
    )
    assert charge.unit_amount is None and not charge.has_default
    with pytest.raises(ValueError, match="no unit_amount of its own"):
        rate_charge(charge, MeterUsage(quantity=Decimal(3), events=3))
    # the filter's price is a full record of the charge's model
    assert rate_charge(charge.filters[0].price, MeterUsage(quantity=Decimal(1000))).amount == Decimal("7.9000")


def test_each_filter_has_the_price_keys_of_its_charges_model() -> None:
    catalog = load(
        """
[[plans.sms.charges]]
meter = "sms"
model = "graduated"
tiers = [{ up_to = 100, unit_amount = 0.50 }, { up_to = "inf", unit_amount = 0.40 }]

[[plans.sms.charges.filters]]
properties = { country = ["US"] }
tiers = [{ up_to = 10, unit_amount = 1 }, { up_to = "inf", unit_amount = 0.10, flat_amount = 2 }]
"""
    )
    charge = catalog.plan("sms").charges[0]
    assert isinstance(charge, GraduatedCharge)
    price = charge.filters[0].price
    assert isinstance(price, GraduatedCharge)
    assert price.tiers is not None and [t.flat_amount for t in price.tiers] == [Decimal(0), Decimal(2)]
    # 10 × 1 + 5 × 0.10 + 2 (the second tier's flat amount) = 12.50
    assert rate_charge(price, MeterUsage(quantity=Decimal(15))).amount == Decimal("12.50")


def test_a_package_filter_keeps_its_free_units() -> None:
    catalog = load(
        """
[[plans.sms.charges]]
meter = "sms"
model = "package"

[[plans.sms.charges.filters]]
properties = { country = ["US"] }
package_size = 100
package_amount = 5
free_units = 50
"""
    )
    charge = catalog.plan("sms").charges[0]
    assert isinstance(charge, PackageCharge) and not charge.has_default
    price = charge.filters[0].price
    assert isinstance(price, PackageCharge) and price.free_units == Decimal(50)


def test_a_charge_dumps_as_the_catalog_writes_it_and_loads_back() -> None:
    charge = charge_of(SMS)
    dumped = charge.model_dump(mode="json")
    assert dumped["filters"][0] == {
        "name": "US & Canada",
        "properties": {"country": ["US", "CA"]},
        "group_by": None,
        "unit_amount": "0.0079",
    }
    assert PerUnitCharge.model_validate(dumped) == charge
    plain = charge_of('[[plans.sms.charges]]\nmeter = "sms"\nmodel = "per_unit"\nunit_amount = 0.01\n')
    # a charge priced as a whole dumps as it always did
    assert plain.model_dump(mode="json") == {
        "meter": "sms",
        "description": None,
        "model": "per_unit",
        "unit_amount": "0.01",
    }
    assert PerUnitCharge.model_validate_json(charge.model_dump_json()) == charge


def test_filters_are_frozen() -> None:
    charge = charge_of(SMS)
    assert isinstance(charge.filters, tuple) and isinstance(charge.filters[0].properties["country"], tuple)
    with pytest.raises(ValidationError):
        charge.filters[0].name = "other"  # type: ignore[misc]
    assert isinstance(charge.filters[0], ChargeFilter)


# -- the overlap rule ---------------------------------------------------------------------------------------

OVERLAP_HINT = (
    "which no filter naming more properties matches (make the lists disjoint, or add a more specific filter for "
    "such events)"
)


def filters(*tables: str) -> str:
    text = '[[plans.sms.charges]]\nmeter = "sms"\nmodel = "per_unit"\nunit_amount = 0.01\n'
    for properties in tables:
        text += f"\n[[plans.sms.charges.filters]]\nproperties = {properties}\nunit_amount = 0.02\n"
    return text


def test_two_filters_sharing_a_value_overlap() -> None:
    assert problems(filters('{ country = ["US", "CA"] }', '{ country = ["CA", "MX"] }')) == [
        "catalog.toml: plans.sms.charges[0].filters[1].properties: overlaps filters[0]: both name 1 property and "
        f'both match an event with country = "CA", {OVERLAP_HINT}'
    ]


def test_disjoint_lists_do_not_overlap() -> None:
    charge = charge_of(filters('{ country = ["US", "CA"] }', '{ country = ["MX"] }'))
    assert len(charge.filters) == 2


def test_filters_of_different_sizes_never_conflict() -> None:
    # US inbound matches both; the filter naming two properties wins
    charge = charge_of(filters('{ country = ["US"] }', '{ country = ["US"], direction = ["inbound"] }'))
    assert charge.match_order == (1, 0)


def test_filters_on_different_properties_overlap_unless_a_more_specific_filter_covers_them() -> None:
    # an event with country = "US" and direction = "inbound" matches both
    assert problems(filters('{ country = ["US"] }', '{ direction = ["inbound"] }')) == [
        "catalog.toml: plans.sms.charges[0].filters[1].properties: overlaps filters[0]: both name 1 property and "
        f'both match an event with country = "US", direction = "inbound", {OVERLAP_HINT}'
    ]
    covered = filters(
        '{ country = ["US"] }', '{ direction = ["inbound"] }', '{ country = ["US"], direction = ["inbound"] }'
    )
    assert len(charge_of(covered).filters) == 3


def test_several_more_specific_filters_may_cover_an_overlap_together() -> None:
    # the overlap is country US or CA with direction inbound: two filters of two properties cover it together
    together = filters(
        '{ country = ["US", "CA"] }',
        '{ direction = ["inbound"] }',
        '{ country = ["US"], direction = ["inbound"] }',
        '{ country = ["CA"], direction = ["inbound"] }',
    )
    assert len(charge_of(together).filters) == 4
    # with only one of them, CA inbound is still matched by both filters of one property
    partly = filters(
        '{ country = ["US", "CA"] }', '{ direction = ["inbound"] }', '{ country = ["US"], direction = ["inbound"] }'
    )
    assert problems(partly) == [
        "catalog.toml: plans.sms.charges[0].filters[1].properties: overlaps filters[0]: both name 1 property and "
        f'both match an event with country = "CA", direction = "inbound", {OVERLAP_HINT}'
    ]


def test_a_more_specific_filter_on_another_property_does_not_cover_an_overlap() -> None:
    # events with country = "US" may lack a plan property: the filter on country and plan covers only some of them
    assert problems(
        filters('{ country = ["US"] }', '{ country = ["US"] }', '{ country = ["US"], plan = ["pro"] }')
    ) == [
        "catalog.toml: plans.sms.charges[0].filters[1].properties: overlaps filters[0]: both name 1 property and "
        f'both match an event with country = "US", {OVERLAP_HINT}'
    ]


def test_filters_of_two_properties_overlap_like_filters_of_one() -> None:
    assert problems(
        filters(
            '{ country = ["US", "CA"], direction = ["inbound"] }',
            '{ country = ["CA"], direction = ["inbound", "outbound"] }',
        )
    ) == [
        "catalog.toml: plans.sms.charges[0].filters[1].properties: overlaps filters[0]: both name 2 properties and "
        f'both match an event with country = "CA", direction = "inbound", {OVERLAP_HINT}'
    ]


# -- every invalid shape, located ----------------------------------------------------------------------------


def charge_with(filter_table: str, charge_keys: str = "unit_amount = 0.01\n") -> str:
    charge = f'[[plans.sms.charges]]\nmeter = "sms"\nmodel = "per_unit"\n{charge_keys}'
    return f"{charge}\n[[plans.sms.charges.filters]]\n{filter_table}"


def test_a_filter_without_its_models_price_keys() -> None:
    assert problems(charge_with('properties = { country = ["US"] }\n')) == [
        "catalog.toml: plans.sms.charges[0].filters[0].unit_amount: required key is missing"
    ]


def test_a_filter_of_a_tiered_model_without_tiers() -> None:
    text = (
        '[[plans.sms.charges]]\nmeter = "sms"\nmodel = "volume"\n\n[[plans.sms.charges.filters]]\n'
        'properties = { country = ["US"] }\nunit_amount = 0.01\n'
    )
    assert problems(text) == [
        "catalog.toml: plans.sms.charges[0].filters[0].tiers: required key is missing",
        "catalog.toml: plans.sms.charges[0].filters[0].unit_amount: unknown key (allowed: name, properties, "
        "group_by, tiers)",
    ]


def test_a_filters_invalid_price_is_located_in_the_filter() -> None:
    text = charge_with(
        'properties = { country = ["US"] }\nunit_amount = -1\n', 'unit_amount = 0.01\ngroup_by = ["a", "a"]\n'
    )
    assert problems(text) == [
        "catalog.toml: plans.sms.charges[0].filters[0].unit_amount: must be ≥ 0 (got -1)",
        "catalog.toml: plans.sms.charges[0].group_by[1]: 'a' is listed twice",
    ]


def test_an_empty_value_list_and_a_value_listed_twice() -> None:
    assert problems(
        charge_with('properties = { country = ["US", "CA", "US"], direction = [] }\nunit_amount = 0\n')
    ) == [
        "catalog.toml: plans.sms.charges[0].filters[0].properties.country[2]: 'US' is listed twice",
        "catalog.toml: plans.sms.charges[0].filters[0].properties.direction: at least one value is required (an "
        "empty list matches no event)",
    ]


def test_an_empty_properties_table_and_a_missing_one() -> None:
    assert problems(charge_with("properties = {}\nunit_amount = 0\n")) == [
        "catalog.toml: plans.sms.charges[0].filters[0].properties: at least one property is required "
        '(properties = { country = ["US"] })'
    ]
    assert problems(charge_with("unit_amount = 0\n")) == [
        "catalog.toml: plans.sms.charges[0].filters[0].properties: required key is missing"
    ]


def test_a_property_given_as_a_string_instead_of_a_list() -> None:
    assert problems(charge_with('properties = { country = "US" }\nunit_amount = 0\n')) == [
        "catalog.toml: plans.sms.charges[0].filters[0].properties.country: expected an array, got 'US'"
    ]


def test_a_filters_group_by_repeated_and_empty() -> None:
    assert problems(
        charge_with('properties = { country = ["US"] }\nunit_amount = 0\ngroup_by = ["region", "", "region"]\n')
    ) == [
        "catalog.toml: plans.sms.charges[0].filters[0].group_by[1]: must not be empty (an event property's name)",
        "catalog.toml: plans.sms.charges[0].filters[0].group_by[2]: 'region' is listed twice",
    ]


def test_an_unknown_key_in_a_filter_names_the_filters_keys_and_the_models_price_keys() -> None:
    assert problems(charge_with('properties = { country = ["US"] }\nunit_amount = 0\nmeter = "sms"\ncolour = 1\n')) == [
        "catalog.toml: plans.sms.charges[0].filters[0].meter: unknown key (allowed: name, properties, group_by, "
        "unit_amount)",
        "catalog.toml: plans.sms.charges[0].filters[0].colour: unknown key (allowed: name, properties, group_by, "
        "unit_amount)",
    ]


def test_an_empty_filter_name() -> None:
    assert problems(charge_with('name = ""\nproperties = { country = ["US"] }\nunit_amount = 0\n')) == [
        "catalog.toml: plans.sms.charges[0].filters[0].name: must not be empty"
    ]


def test_filters_must_be_an_array_of_tables() -> None:
    text = '[[plans.sms.charges]]\nmeter = "sms"\nmodel = "per_unit"\nunit_amount = 0.01\nfilters = "US"\n'
    assert problems(text) == ["catalog.toml: plans.sms.charges[0].filters: expected an array, got 'US'"]


def test_without_filters_the_price_keys_stay_required() -> None:
    text = '[[plans.sms.charges]]\nmeter = "sms"\nmodel = "package"\npackage_size = 100\ngroup_by = ["region"]\n'
    assert problems(text) == ["catalog.toml: plans.sms.charges[0].package_amount: required key is missing"]


def test_a_default_is_all_of_the_models_price_keys_or_none() -> None:
    text = charge_with(
        'properties = { country = ["US"] }\npackage_size = 10\npackage_amount = 1\n', "package_size = 100\n"
    )
    text = text.replace('model = "per_unit"', 'model = "package"')
    assert problems(text) == [
        "catalog.toml: plans.sms.charges[0].package_amount: required key is missing (the charge's own price keys "
        "come together: package_size given)"
    ]
    no_default = charge_with(
        'properties = { country = ["US"] }\npackage_size = 10\npackage_amount = 1\n', "free_units = 5\n"
    )
    no_default = no_default.replace('model = "per_unit"', 'model = "package"')
    assert problems(no_default) == [
        "catalog.toml: plans.sms.charges[0].free_units: only allowed with the charge's own price keys "
        "(package_size, package_amount); this charge has no default"
    ]


def test_every_problem_at_once() -> None:
    text = (
        filters('{ country = ["US"] }', '{ country = ["US"] }')
        + "\n[[plans.sms.charges.filters]]\nproperties = { region = [] }\n"
    )
    assert problems(text) == [
        "catalog.toml: plans.sms.charges[0].filters[2].properties.region: at least one value is required (an empty "
        "list matches no event)",
        "catalog.toml: plans.sms.charges[0].filters[2].unit_amount: required key is missing",
    ]


def test_a_filter_built_in_code_must_be_priced_by_its_charges_model() -> None:
    us = charge_of(SMS).filters[0]
    with pytest.raises(ValidationError, match=r"the filter's price must be a graduated charge on meter 'sms'"):
        GraduatedCharge(meter="sms", model="graduated", filters=(us,))
    with pytest.raises(ValidationError, match=r"the filter's price must be a per_unit charge on meter 'calls'"):
        PerUnitCharge(meter="calls", model="per_unit", filters=(us,))
