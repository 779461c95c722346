"""The catalog loader: every validation error of issue 3, printed exactly, and all of them at once."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from pricing_plans import (
    Catalog,
    CatalogError,
    GraduatedCharge,
    PackageCharge,
    PercentageCharge,
    Tier,
    load_catalog,
    load_catalog_or_raise,
    loads_catalog,
)

SAMPLE = Path(__file__).resolve().parents[2] / "catalog.toml"

METERS = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[meters.storage_gb]
name = "Storage"
aggregation = "weighted_sum"
unit = "GB-month"

[meters.payment_volume]
name = "Payment volume"
aggregation = "sum"
"""


def problems(text: str) -> list[str]:
    """The printed problems of a catalog made of METERS and ``text``."""
    catalog, found = loads_catalog(METERS + text, "catalog.toml")
    assert (catalog is None) == bool(found)
    return [str(problem) for problem in found]


def load(text: str) -> Catalog:
    catalog, found = loads_catalog(METERS + text, "catalog.toml")
    assert [str(p) for p in found] == []
    assert catalog is not None
    return catalog


# -- unknown keys ----------------------------------------------------------------------------------------


def test_unknown_key_in_a_plan_names_the_allowed_keys() -> None:
    assert problems(
        """
[plans.growth]
name = "Growth"
currency = "USD"
colour = "green"
"""
    ) == [
        "catalog.toml: plans.growth.colour: unknown key (allowed: code, version, effective_from, name, "
        "description, currency, interval, billing_anchor, subscription, charges, commitment, thresholds, progressive_billing, tax_inclusive, tax_category, subscription_cost)"
    ]


def test_unknown_key_in_a_charge_names_that_models_keys() -> None:
    assert problems(
        """
[plans.growth]
name = "Growth"
currency = "USD"

[[plans.growth.charges]]
meter = "api_calls"
model = "per_unit"
unit_price = 0.01
unit_amount = 0.01
"""
    ) == [
        "catalog.toml: plans.growth.charges[0].unit_price: unknown key "
        "(allowed: meter, description, model, unit_amount, filters, group_by)"
    ]


def test_unknown_key_in_a_tier() -> None:
    assert problems(
        """
[plans.growth]
name = "Growth"
currency = "USD"

[[plans.growth.charges]]
meter = "api_calls"
model = "graduated"
tiers = [{ up_to = 100, unit_amount = 0 }, { up_to = "inf", price = 1 }]
"""
    ) == [
        "catalog.toml: plans.growth.charges[0].tiers[1].price: unknown key (allowed: up_to, unit_amount, flat_amount)"
    ]


def test_unknown_top_level_and_catalog_keys() -> None:
    assert problems(
        """
[catalog]
rounding = "half_up"
precision = 2

[plan.growth]
name = "Growth"

[plans.growth]
name = "Growth"
currency = "USD"
"""
    ) == [
        "catalog.toml: plan: unknown key (allowed: catalog, meters, plans)",
        "catalog.toml: catalog.precision: unknown key (allowed: rounding)",
    ]


def test_a_key_the_loader_fills_is_an_unknown_key() -> None:
    text = """
[plans.growth]
key = "other"
name = "Growth"
currency = "USD"
"""
    assert problems(text) == [
        "catalog.toml: plans.growth.key: unknown key (allowed: code, version, effective_from, name, description, "
        "currency, interval, billing_anchor, subscription, charges, commitment, thresholds, progressive_billing, tax_inclusive, tax_category, subscription_cost)"
    ]


# -- missing keys ----------------------------------------------------------------------------------------


def test_missing_keys() -> None:
    assert problems(
        """
[plans.growth]
interval = "month"

[[plans.growth.charges]]
meter = "api_calls"
model = "per_unit"

[[plans.growth.charges]]
meter = "storage_gb"
"""
    ) == [
        "catalog.toml: plans.growth.name: required key is missing",
        "catalog.toml: plans.growth.currency: required key is missing",
        "catalog.toml: plans.growth.charges[0].unit_amount: required key is missing",
        "catalog.toml: plans.growth.charges[1].model: required key is missing (one of: per_unit, graduated, "
        "volume, package, percentage, graduated_percentage)",
    ]


def test_missing_meters_and_plans_sections() -> None:
    catalog, found = loads_catalog('[catalog]\nrounding = "half_even"\n', "catalog.toml")
    assert catalog is None
    assert [str(p) for p in found] == [
        "catalog.toml: meters: required key is missing (a [meters.<code>] table)",
        "catalog.toml: plans: required key is missing (a [plans.<code>] table)",
    ]


def test_missing_tier_bound() -> None:
    assert problems(
        """
[plans.growth]
name = "Growth"
currency = "USD"

[[plans.growth.charges]]
meter = "api_calls"
model = "volume"
tiers = [{ unit_amount = 1 }, { up_to = "inf", unit_amount = 0.5 }]
"""
    ) == ["catalog.toml: plans.growth.charges[0].tiers[0].up_to: required key is missing"]


# -- unknown meters, aggregations, models, currencies ------------------------------------------------------


def test_unknown_meter_in_a_charge() -> None:
    assert problems(
        """
[plans.growth]
name = "Growth"
currency = "USD"

[[plans.growth.charges]]
meter = "api_call"
model = "per_unit"
unit_amount = 0.01
"""
    ) == [
        "catalog.toml: plans.growth.charges[0].meter: unknown meter 'api_call' "
        "(known: api_calls, storage_gb, payment_volume)"
    ]


def test_unknown_aggregation() -> None:
    assert problems(
        """
[meters.seats]
name = "Seats"
aggregation = "average"

[plans.growth]
name = "Growth"
currency = "USD"
"""
    ) == [
        "catalog.toml: meters.seats.aggregation: unknown aggregation 'average' "
        "(expected one of: count, sum, max, unique_count, latest, weighted_sum)"
    ]


def test_unknown_model() -> None:
    assert problems(
        """
[plans.growth]
name = "Growth"
currency = "USD"

[[plans.growth.charges]]
meter = "api_calls"
model = "tiered"
"""
    ) == [
        "catalog.toml: plans.growth.charges[0].model: unknown model 'tiered' "
        "(expected one of: per_unit, graduated, volume, package, percentage, graduated_percentage)"
    ]


def test_unknown_interval_billing_and_rounding() -> None:
    assert problems(
        """
[catalog]
rounding = "half_down"

[plans.growth]
name = "Growth"
currency = "USD"
interval = "fortnight"
billing_anchor = "start_date"

[plans.growth.subscription]
fee = 49.00
billing = "upfront"
"""
    ) == [
        "catalog.toml: catalog.rounding: unknown rounding 'half_down' (expected one of: half_up, half_even)",
        "catalog.toml: plans.growth.interval: unknown interval 'fortnight' (expected one of: week, month, quarter, "
        "year)",
        "catalog.toml: plans.growth.billing_anchor: unknown billing_anchor 'start_date' "
        "(expected one of: calendar, subscription_start)",
        "catalog.toml: plans.growth.subscription.billing: unknown billing 'upfront' "
        "(expected one of: in_advance, in_arrears)",
    ]


def test_invalid_currency() -> None:
    assert problems(
        """
[plans.growth]
name = "Growth"
currency = "usd"

[plans.euro]
name = "Euro"
currency = "EURO"
"""
    ) == [
        "catalog.toml: plans.growth.currency: unknown currency 'usd' (expected an ISO 4217 code such as USD, EUR, JPY)",
        "catalog.toml: plans.euro.currency: unknown currency 'EURO' (expected an ISO 4217 code such as USD, EUR, JPY)",
    ]


# -- tiers -------------------------------------------------------------------------------------------------


def test_tiers_must_increase() -> None:
    assert problems(
        """
[plans.growth]
name = "Growth"
currency = "USD"

[[plans.growth.charges]]
meter = "api_calls"
model = "graduated"
tiers = [
  { up_to = 100, unit_amount = 0 },
  { up_to = 1000, unit_amount = 0.002 },
  { up_to = 500, unit_amount = 0.001 },
  { up_to = "inf", unit_amount = 0.0005 },
]
"""
    ) == ["catalog.toml: plans.growth.charges[0].tiers[2].up_to: tiers must increase (got 500 after 1000)"]


def test_the_last_tier_must_be_inf() -> None:
    assert problems(
        """
[plans.growth]
name = "Growth"
currency = "USD"

[[plans.growth.charges]]
meter = "api_calls"
model = "volume"
tiers = [{ up_to = 100, unit_amount = 1 }, { up_to = 1000, unit_amount = 0.5 }]
"""
    ) == ['catalog.toml: plans.growth.charges[0].tiers[1].up_to: the last tier must be up_to = "inf" (got 1000)']


def test_only_the_last_tier_may_be_inf_and_bounds_are_positive() -> None:
    assert problems(
        """
[plans.growth]
name = "Growth"
currency = "USD"

[[plans.growth.charges]]
meter = "payment_volume"
model = "graduated_percentage"
tiers = [{ up_to = 0, rate = 1 }, { up_to = "inf", rate = 2 }, { up_to = "inf", rate = 3 }]
"""
    ) == [
        "catalog.toml: plans.growth.charges[0].tiers[0].up_to: must be > 0 (got 0)",
        'catalog.toml: plans.growth.charges[0].tiers[1].up_to: only the last tier may be up_to = "inf"',
    ]


def test_a_tier_bound_must_be_a_number_or_inf() -> None:
    assert problems(
        """
[plans.growth]
name = "Growth"
currency = "USD"

[[plans.growth.charges]]
meter = "api_calls"
model = "graduated"
tiers = [{ up_to = "many", unit_amount = 0 }, { up_to = "infinity", unit_amount = 1 }]
"""
    ) == [
        "catalog.toml: plans.growth.charges[0].tiers[0].up_to: expected a number or \"inf\", got 'many'",
        "catalog.toml: plans.growth.charges[0].tiers[1].up_to: expected a number or \"inf\", got 'infinity'",
    ]


# -- amounts, rates, packages ----------------------------------------------------------------------------


def test_negative_amounts() -> None:
    assert problems(
        """
[plans.growth]
name = "Growth"
currency = "USD"

[plans.growth.subscription]
fee = -49.00

[[plans.growth.charges]]
meter = "api_calls"
model = "graduated"
tiers = [{ up_to = 100, unit_amount = 0 }, { up_to = "inf", unit_amount = -0.002, flat_amount = -5 }]

[[plans.growth.charges]]
meter = "storage_gb"
model = "per_unit"
unit_amount = -0.25

[plans.growth.commitment]
minimum = -500.00
"""
    ) == [
        "catalog.toml: plans.growth.subscription.fee: must be ≥ 0 (got -49.00)",
        "catalog.toml: plans.growth.charges[0].tiers[1].unit_amount: must be ≥ 0 (got -0.002)",
        "catalog.toml: plans.growth.charges[0].tiers[1].flat_amount: must be ≥ 0 (got -5)",
        "catalog.toml: plans.growth.charges[1].unit_amount: must be ≥ 0 (got -0.25)",
        "catalog.toml: plans.growth.commitment.minimum: must be ≥ 0 (got -500.00)",
    ]


def test_rate_outside_0_to_100() -> None:
    assert problems(
        """
[plans.payments]
name = "Payments"
currency = "USD"

[[plans.payments.charges]]
meter = "payment_volume"
model = "percentage"
rate = 290

[plans.volume]
name = "Volume"
currency = "USD"

[[plans.volume.charges]]
meter = "payment_volume"
model = "graduated_percentage"
tiers = [{ up_to = 1000, rate = -1 }, { up_to = "inf", rate = 100.5 }]
"""
    ) == [
        "catalog.toml: plans.payments.charges[0].rate: must be a percent between 0 and 100 (got 290)",
        "catalog.toml: plans.volume.charges[0].tiers[0].rate: must be a percent between 0 and 100 (got -1)",
        "catalog.toml: plans.volume.charges[0].tiers[1].rate: must be a percent between 0 and 100 (got 100.5)",
    ]


def test_percentage_min_above_max_and_negative_free_events() -> None:
    assert problems(
        """
[plans.payments]
name = "Payments"
currency = "USD"

[[plans.payments.charges]]
meter = "payment_volume"
model = "percentage"
rate = 2.9
free_events = -1
per_transaction_min = 25.00
per_transaction_max = 0.50
"""
    ) == ["catalog.toml: plans.payments.charges[0].free_events: must be ≥ 0 (got -1)"]
    assert problems(
        """
[plans.payments]
name = "Payments"
currency = "USD"

[[plans.payments.charges]]
meter = "payment_volume"
model = "percentage"
rate = 2.9
per_transaction_min = 25.00
per_transaction_max = 0.50
"""
    ) == [
        "catalog.toml: plans.payments.charges[0].per_transaction_min: must not exceed per_transaction_max "
        "(got 25.00 > 0.50)"
    ]


@pytest.mark.parametrize("size", ["0", "-1000"])
def test_package_size_must_be_positive(size: str) -> None:
    assert problems(
        f"""
[plans.growth]
name = "Growth"
currency = "USD"

[[plans.growth.charges]]
meter = "api_calls"
model = "package"
package_size = {size}
package_amount = 2.00
"""
    ) == [f"catalog.toml: plans.growth.charges[0].package_size: must be > 0 (got {size})"]


# -- meters ------------------------------------------------------------------------------------------------


def test_unique_property_missing_for_unique_count() -> None:
    assert problems(
        """
[meters.active_users]
name = "Active users"
aggregation = "unique_count"

[meters.requests]
name = "Requests"
aggregation = "count"
unique_property = "user_id"

[plans.growth]
name = "Growth"
currency = "USD"
"""
    ) == [
        "catalog.toml: meters.active_users.unique_property: required when aggregation is unique_count "
        "(the event property whose values are counted)",
        "catalog.toml: meters.requests.unique_property: only allowed when aggregation is unique_count "
        "(got aggregation 'count')",
    ]


def test_percentage_models_need_a_summed_meter() -> None:
    assert problems(
        """
[plans.growth]
name = "Growth"
currency = "USD"

[[plans.growth.charges]]
meter = "api_calls"
model = "percentage"
rate = 1
"""
    ) == [
        "catalog.toml: plans.growth.charges[0].model: percentage needs a meter aggregated by sum "
        "(meter 'api_calls' is count)"
    ]


# -- plans, charges and thresholds across records ---------------------------------------------------------


def test_two_charges_on_one_meter() -> None:
    assert problems(
        """
[plans.growth]
name = "Growth"
currency = "USD"

[[plans.growth.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.01

[[plans.growth.charges]]
meter = "api_calls"
model = "package"
package_size = 1000
package_amount = 2
"""
    ) == [
        "catalog.toml: plans.growth.charges[1].meter: meter 'api_calls' already has a charge in this plan "
        "(charges[0]); a plan has at most one charge per meter"
    ]


def test_thresholds() -> None:
    assert problems(
        """
[plans.growth]
name = "Growth"
currency = "USD"

[[plans.growth.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.01

[[plans.growth.thresholds]]
meter = "storage_gb"
allowance = 100

[[plans.growth.thresholds]]
meter = "seats"
allowance = 10

[[plans.growth.thresholds]]
allowance = 10

[[plans.growth.thresholds]]
spend_cap = 100.00
levels = [100, 80]
"""
    ) == [
        "catalog.toml: plans.growth.thresholds[2].meter: required with allowance: the meter whose units are counted",
        "catalog.toml: plans.growth.thresholds[3].levels: must increase without repeats (got [100, 80])",
        "catalog.toml: plans.growth.thresholds[0].meter: meter 'storage_gb' has no charge in this plan",
        "catalog.toml: plans.growth.thresholds[1].meter: unknown meter 'seats' "
        "(known: api_calls, storage_gb, payment_volume)",
    ]


def test_duplicate_plan_code_and_version() -> None:
    assert problems(
        """
[plans.growth]
name = "Growth"
currency = "USD"

[plans.growth_copy]
code = "growth"
name = "Growth (copy)"
currency = "USD"

[plans.growth_2026]
code = "growth"
version = 2
effective_from = 2026-01-01
name = "Growth"
currency = "USD"

[plans.growth_2026b]
code = "growth"
version = 2
effective_from = 2026-02-01
name = "Growth"
currency = "USD"
"""
    ) == [
        "catalog.toml: plans.growth_copy.version: plan 'growth' version 1 is already defined by plans.growth",
        "catalog.toml: plans.growth_2026b.version: plan 'growth' version 2 is already defined by plans.growth_2026",
    ]


def test_a_plan_table_declared_twice_is_a_toml_error_with_its_line() -> None:
    text = """\
[plans.growth]
name = "Growth"
currency = "USD"

[plans.growth]
name = "Growth again"
"""
    catalog, found = loads_catalog(text, "catalog.toml")
    assert catalog is None
    assert [str(p) for p in found] == [
        "catalog.toml:5: invalid TOML: Cannot declare ('plans', 'growth') twice (column 14)"
    ]


def test_versions_of_a_plan_are_dated_and_keep_currency_and_interval() -> None:
    assert problems(
        """
[plans.growth]
name = "Growth"
currency = "USD"
effective_from = 2026-01-01

[plans.growth_v2]
code = "growth"
version = 2
name = "Growth"
currency = "USD"

[plans.growth_v3]
code = "growth"
version = 3
effective_from = 2025-06-01
name = "Growth"
currency = "EUR"
interval = "year"
"""
    ) == [
        "catalog.toml: plans.growth_v2.effective_from: required for version 2 of 'growth': the date from which "
        "new subscriptions get it",
        "catalog.toml: plans.growth_v3.currency: must be the same in every version of 'growth' (got EUR, version 1 "
        "has USD); another currency is another plan code",
        "catalog.toml: plans.growth_v3.interval: must be the same in every version of 'growth' (got year, version 1 "
        "has month); another interval is another plan code",
    ]
    assert problems(
        """
[plans.growth]
name = "Growth"
currency = "USD"
effective_from = 2026-01-01

[plans.growth_v2]
code = "growth"
version = 2
effective_from = 2026-01-01
name = "Growth"
currency = "USD"
"""
    ) == [
        "catalog.toml: plans.growth_v2.effective_from: must be after version 1's effective_from "
        "(got 2026-01-01, not after 2026-01-01)"
    ]


def test_versions_are_kept_in_order_and_a_subscription_keeps_its_version() -> None:
    catalog = load(
        """
[plans.growth_v2]
code = "growth"
version = 2
effective_from = 2027-01-01
name = "Growth"
currency = "USD"

[[plans.growth_v2.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.0015

[plans.growth]
name = "Growth"
currency = "USD"

[[plans.growth.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.002
"""
    )
    assert [(p.key, p.code, p.version) for p in catalog.plans["growth"]] == [
        ("growth", "growth", 1),
        ("growth_v2", "growth", 2),
    ]
    assert catalog.plan("growth").version == 2
    assert catalog.plan("growth", 1).charges[0].unit_amount == Decimal("0.002")
    assert catalog.plan_for_start("growth", dt.date(2026, 12, 31)).version == 1
    assert catalog.plan_for_start("growth", dt.date(2027, 1, 1)).version == 2


# -- wrong types, floats, TOML syntax ----------------------------------------------------------------------


def test_wrong_types() -> None:
    assert problems(
        """
[plans.growth]
name = 5
currency = "USD"
version = "2"
effective_from = "soon"
charges = "api_calls"

[plans.growth.subscription]
fee = "forty-nine"
trial_days = 1.5

[plans.seats]
name = "Seats"
currency = "USD"
thresholds = [1]

[plans.other]
"""
    ) == [
        "catalog.toml: plans.growth.version: expected a whole number, got '2'",
        "catalog.toml: plans.growth.effective_from: expected a date (YYYY-MM-DD), got 'soon'",
        "catalog.toml: plans.growth.name: expected a string, got 5",
        "catalog.toml: plans.growth.subscription.fee: expected a number, got 'forty-nine'",
        "catalog.toml: plans.growth.subscription.trial_days: expected a whole number, got 1.5",
        "catalog.toml: plans.growth.charges: expected an array, got 'api_calls'",
        "catalog.toml: plans.seats.thresholds[0]: expected a table, got 1",
        "catalog.toml: plans.other.name: required key is missing",
        "catalog.toml: plans.other.currency: required key is missing",
    ]


def test_a_boolean_is_not_a_number() -> None:
    assert problems(
        """
[plans.growth]
name = "Growth"
currency = "USD"

[plans.growth.commitment]
minimum = true
"""
    ) == ["catalog.toml: plans.growth.commitment.minimum: expected a number, got true"]


def test_numbers_are_decimals_never_floats() -> None:
    catalog = load_catalog_or_raise(SAMPLE)
    calls = catalog.plan("api_growth", 1).charges[0]
    assert isinstance(calls, GraduatedCharge)
    assert type(calls.tiers[1].unit_amount) is Decimal
    assert calls.tiers[1].unit_amount == Decimal("0.002")
    assert str(calls.tiers[1].unit_amount) == "0.002"
    assert calls.tiers[-1].up_to is None
    assert type(calls.tiers[0].up_to) is Decimal
    fee = catalog.plan("api_growth", 1).subscription
    assert fee is not None
    assert str(fee.fee) == "49.00"
    payments = catalog.plan("payments").charges[0]
    assert isinstance(payments, PercentageCharge)
    assert (str(payments.rate), str(payments.fixed_amount)) == ("2.9", "0.30")


def test_a_float_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        Tier(up_to=100, unit_amount=0.1)  # type: ignore[arg-type]
    assert "floats are not accepted; read the TOML with parse_float=Decimal" in str(caught.value)


def test_toml_syntax_error_with_its_line() -> None:
    catalog, found = loads_catalog('[meters.api_calls]\nname = "API calls"\naggregation = count\n', "catalog.toml")
    assert catalog is None
    assert [str(p) for p in found] == ["catalog.toml:3: invalid TOML: Invalid value (column 15)"]


def test_toml_error_at_the_end_of_the_file_names_the_last_line() -> None:
    catalog, found = loads_catalog('[plans.growth]\nname = "Growth\n', "catalog.toml")
    assert catalog is None
    assert [str(p) for p in found] == ["catalog.toml:2: invalid TOML: Illegal character '\\n' (column 15)"]
    catalog, found = loads_catalog("[plans.growth]\ntiers = [1,\n", "catalog.toml")
    assert [str(p) for p in found] == ["catalog.toml:2: invalid TOML: Invalid value at the end of the file"]


# -- every problem, not just the first -----------------------------------------------------------------------


def test_every_problem_of_every_plan_is_reported() -> None:
    assert problems(
        """
[meters.users]
name = "Users"
aggregation = "unique_count"

[plans.growth]
name = "Growth"
currency = "USD"

[[plans.growth.charges]]
meter = "api_calls"
model = "graduated"
tiers = [{ up_to = 1000, unit_amount = 0 }, { up_to = 500, unit_amount = 0.002 }, { up_to = 2000, unit_amount = 1 }]

[[plans.growth.charges]]
meter = "storage"
model = "per_unit"
unit_amount = 0.25

[plans.seats]
name = "Seats"
currency = "EUER"

[[plans.seats.charges]]
meter = "api_calls"
model = "package"
package_size = 0
package_amount = -2

[plans.payments]
name = "Payments"
currency = "USD"
fee = 10

[[plans.payments.charges]]
meter = "payment_volume"
model = "percentage"
rate = 101
"""
    ) == [
        "catalog.toml: meters.users.unique_property: required when aggregation is unique_count "
        "(the event property whose values are counted)",
        "catalog.toml: plans.growth.charges[0].tiers[1].up_to: tiers must increase (got 500 after 1000)",
        'catalog.toml: plans.growth.charges[0].tiers[2].up_to: the last tier must be up_to = "inf" (got 2000)',
        "catalog.toml: plans.seats.currency: unknown currency 'EUER' (expected an ISO 4217 code such as USD, EUR, JPY)",
        "catalog.toml: plans.seats.charges[0].package_size: must be > 0 (got 0)",
        "catalog.toml: plans.seats.charges[0].package_amount: must be ≥ 0 (got -2)",
        "catalog.toml: plans.payments.charges[0].rate: must be a percent between 0 and 100 (got 101)",
        "catalog.toml: plans.payments.fee: unknown key (allowed: code, version, effective_from, name, description, "
        "currency, interval, billing_anchor, subscription, charges, commitment, thresholds, progressive_billing, tax_inclusive, tax_category, subscription_cost)",
        "catalog.toml: plans.growth.charges[1].meter: unknown meter 'storage' "
        "(known: api_calls, storage_gb, payment_volume, users)",
    ]


def test_load_catalog_or_raise_holds_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(
        METERS
        + """
[plans.a]
name = "A"
currency = "XXY"

[plans.b]
name = "B"
currency = "USD"
interval = "weekly"
""",
        encoding="utf-8",
    )
    with pytest.raises(CatalogError) as caught:
        load_catalog_or_raise(path)
    assert str(caught.value) == (
        f"{path}: plans.a.currency: unknown currency 'XXY' (expected an ISO 4217 code such as USD, EUR, JPY)\n"
        f"{path}: plans.b.interval: unknown interval 'weekly' (expected one of: week, month, quarter, year)"
    )
    assert len(caught.value.problems) == 2


def test_a_missing_file() -> None:
    catalog, found = load_catalog("no/such/catalog.toml")
    assert catalog is None
    assert [str(p) for p in found] == ["no/such/catalog.toml: cannot read the catalog: No such file or directory"]


def test_a_syntax_error_in_a_file_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text('[catalog]\nrounding = "half_up"\n\n[meters.api_calls\n', encoding="utf-8")
    catalog, found = load_catalog(path)
    assert catalog is None
    assert [str(p) for p in found] == [
        f"{path}:4: invalid TOML: Expected ']' at the end of a table declaration (column 18)"
    ]


# -- the sample catalog --------------------------------------------------------------------------------------


def test_the_sample_catalog_loads_without_problems() -> None:
    catalog, found = load_catalog(SAMPLE)
    assert [str(p) for p in found] == []
    assert catalog is not None
    assert set(catalog.meters) == {
        "api_calls", "storage_gb", "active_users", "payment_volume", "compute_minutes", "sms", "vm_hours",
        "object_storage", "warehouse_storage", "compute_credits", "cloud_recordings", "analysed_minutes", "ai_tokens",
    }
    assert catalog.meters["storage_gb"].aggregation == "weighted_sum"
    assert catalog.meters["active_users"].unique_property == "user_id"
    assert {(p.code, p.version, p.currency, p.interval.value) for p in catalog.all_plans()} == {
        ("api_growth", 1, "USD", "month"),
        ("api_growth", 2, "USD", "month"),
        ("seats", 1, "EUR", "month"),
        ("payments", 1, "USD", "month"),
        ("enterprise", 1, "USD", "month"),
        ("enterprise_annual", 1, "USD", "year"),
        ("starter_jp", 1, "JPY", "month"),
        ("sms", 1, "USD", "month"),
        ("cloud", 1, "EUR", "month"),
        ("warehouse", 1, "USD", "month"),
        ("meetings", 1, "USD", "month"),
        ("meetings_storage", 1, "USD", "month"),
        ("call_analytics", 1, "RUB", "month"),
        ("ai_tokens", 1, "USD", "month"),
    }
    growth = catalog.plan("api_growth", 1)
    assert growth.subscription is not None and str(growth.subscription.fee) == "49.00"
    assert growth.subscription.billing == "in_advance"
    assert [(c.meter, c.model) for c in growth.charges][:2] == [("api_calls", "graduated"), ("storage_gb", "per_unit")]
    assert [(t.kind, t.levels) for t in growth.thresholds] == [("usage", (80, 100)), ("spend", (50, 80, 100))]
    assert catalog.plan("api_growth").key == "api_growth_2027"
    assert catalog.plan("api_growth").effective_from == dt.date(2027, 1, 1)
    seats = catalog.plan("seats")
    assert seats.subscription is not None
    assert (seats.subscription.billing, seats.subscription.trial_days) == ("in_arrears", 14)
    assert [(c.meter, c.model) for c in seats.charges] == [("active_users", "volume")]
    payments = catalog.plan("payments").charges[0]
    assert isinstance(payments, PercentageCharge)
    assert (payments.per_transaction_min, payments.per_transaction_max, payments.free_events) == (
        Decimal("0.50"),
        Decimal("25.00"),
        10,
    )
    enterprise = catalog.plan("enterprise")
    assert enterprise.commitment is not None and enterprise.commitment.minimum == Decimal("2000.00")
    assert [c.model for c in enterprise.charges][:2] == ["package", "graduated_percentage"]
    jp = catalog.plan("starter_jp")
    assert jp.subscription is not None and jp.subscription.fee == Decimal(5000)
    assert isinstance(jp.charges[0], PackageCharge)


def test_an_effective_from_written_as_a_number_is_refused_and_one_in_quotes_is_ordered() -> None:
    """``effective_from = 0`` was read as 1970-01-01 (seconds since the epoch) and ``"2020-01-01"`` as a date the
    version order did not look at: three versions dated 2025, 2020 and 1970 loaded, and a subscription from June
    2025 got version 3."""
    assert problems(
        """
[plans.api]
name = "API"
currency = "USD"
effective_from = 2025-01-01

[plans.api_v2]
code = "api"
version = 2
name = "API"
currency = "USD"
effective_from = "2020-01-01"

[plans.api_v3]
code = "api"
version = 3
name = "API"
currency = "USD"
effective_from = 0
"""
    ) == [
        "catalog.toml: plans.api_v3.effective_from: expected a date (YYYY-MM-DD), got 0",
        "catalog.toml: plans.api_v2.effective_from: must be after version 1's effective_from (got 2020-01-01, not "
        "after 2025-01-01)",
    ]


def test_a_negative_zero_is_zero() -> None:
    """``fee = -0.0`` passed the ≥ 0 check and was printed as -0.00 on quotes and ``plans show``."""
    catalog, found = loads_catalog(
        """
[meters.calls]
name = "Calls"
aggregation = "count"

[plans.p]
name = "P"
currency = "USD"
subscription = { fee = -0.0 }
charges = [{ meter = "calls", model = "per_unit", unit_amount = -0.0 }]
""",
        "catalog.toml",
    )
    assert found == [] and catalog is not None
    plan = catalog.plan("p")
    assert (str(plan.subscription.fee), str(plan.charges[0].unit_amount)) == ("0.0", "0.0")


def test_empty_or_unaddressable_codes_and_blank_names_are_refused() -> None:
    """Each was accepted: a meter events could only name as "", a plan whose code no address or command could
    carry (``/v1/plans/a b``), names that print nothing on an invoice."""
    assert problems(
        """
[meters.""]
name = " "
aggregation = "count"

[plans.growth]
name = ""
code = "a b"
currency = "USD"
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.01 }]
thresholds = [{ meter = "api_calls", allowance = 100, levels = [] }]  # shown, never alerted on: fine
"""
    ) == [
        "catalog.toml: meters.\"\".code: expected 1 to 100 letters, digits and _ - . : beginning with a letter or "
        "digit, got ''",
        "catalog.toml: meters.\"\".name: expected the name people read on invoices and pages, got ' '",
        "catalog.toml: plans.growth.code: expected 1 to 100 letters, digits and _ - . : beginning with a letter or "
        "digit, got 'a b'",
        "catalog.toml: plans.growth.name: expected the name people read on invoices and pages, got ''",
    ]
    assert problems(f'\n[plans.{"p" * 101}]\nname = "Long"\ncurrency = "USD"\n')[0].endswith(f"got '{'p' * 101}'")


def test_a_byte_order_mark_is_named() -> None:
    catalog, found = loads_catalog('\ufeff[meters.api_calls]\nname = "API calls"\naggregation = "count"\n', "c.toml")
    assert catalog is None
    assert [str(p) for p in found] == [
        "c.toml:1: invalid TOML: Invalid statement (column 1): the file begins with a byte order mark; save it as "
        "UTF-8 without BOM"
    ]
