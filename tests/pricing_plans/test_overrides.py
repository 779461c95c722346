"""An override file applied to a plan by the catalog loader: tables replaced, charges by meter, located errors."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pricing_plans.charge_models import MeterUsage, rate_charge
from pricing_plans.loader import apply_override, loads_catalog, loads_override

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[meters.storage_gb]
name = "Storage"
aggregation = "max"

[meters.payments]
name = "Payments"
aggregation = "count"

[plans.growth]
name = "Growth"
currency = "USD"
subscription = { fee = 50.00, billing = "in_advance" }
commitment = { minimum = 100.00 }
[[plans.growth.charges]]
meter = "api_calls"
model = "graduated"
tiers = [{ up_to = 100, unit_amount = 0.10 }, { up_to = "inf", unit_amount = 0.05 }]
[[plans.growth.charges]]
meter = "storage_gb"
model = "per_unit"
unit_amount = 0.25
[[plans.growth.thresholds]]
meter = "api_calls"
allowance = 1000
"""


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "catalog.toml")
    assert not problems
    return loaded


def override(catalog, text: str):
    document, problems = loads_override(text)
    assert not problems
    return apply_override(catalog.plan("growth"), document, catalog, "override.toml")


def messages(problems) -> list[str]:
    return [str(problem) for problem in problems]


def test_a_charge_replaces_the_plans_charge_on_its_meter_and_the_rest_of_the_plan_stays(catalog):
    plan, problems = override(
        catalog,
        """
        [[charges]]
        meter = "api_calls"
        model = "graduated"
        tiers = [{ up_to = 200, unit_amount = 0 }, { up_to = "inf", unit_amount = 0.04 }]
        """,
    )
    assert problems == []
    growth = catalog.plan("growth")
    assert [c.meter for c in plan.charges] == ["api_calls", "storage_gb"]  # in the plan's order
    assert plan.charges[1] == growth.charges[1]
    assert (plan.subscription, plan.commitment, plan.thresholds) == (
        growth.subscription,
        growth.commitment,
        growth.thresholds,
    )
    # 300 calls: 200 × 0 + 100 × 0.04 = 4.00 (the plan's own tiers: 100 × 0.10 + 200 × 0.05 = 20.00)
    assert str(rate_charge(plan.charges[0], MeterUsage(quantity=Decimal(300))).amount) == "4.00"
    assert str(rate_charge(growth.charges[0], MeterUsage(quantity=Decimal(300))).amount) == "20.00"


def test_each_table_present_replaces_the_plans_and_a_charge_on_another_meter_is_added(catalog):
    plan, problems = override(
        catalog,
        """
        [subscription]
        fee = 40.00
        [commitment]
        minimum = 0
        [[charges]]
        meter = "payments"
        model = "per_unit"
        unit_amount = 0.30
        [[thresholds]]
        spend_cap = 500
        """,
    )
    assert problems == []
    assert str(plan.subscription.fee) == "40.00"
    assert str(plan.commitment.minimum) == "0"
    assert [c.meter for c in plan.charges] == ["api_calls", "storage_gb", "payments"]
    assert [(t.kind, str(t.spend_cap)) for t in plan.thresholds] == [("spend", "500")]
    # the plan keeps its identity: a subscription stays on its plan version
    assert (plan.code, plan.version, plan.name, plan.currency) == ("growth", 1, "Growth", "USD")


def test_an_empty_override_is_the_plan_itself(catalog):
    plan, problems = override(catalog, "")
    assert problems == [] and plan == catalog.plan("growth")


def test_every_problem_is_located_in_the_override_file(catalog):
    plan, problems = override(
        catalog,
        """
        currency = "EUR"
        [subscription]
        fee = -1
        [[charges]]
        meter = "api_calls"
        model = "graduated"
        tiers = [{ up_to = 100, unit_amount = 0.10 }, { up_to = 50, unit_amount = 0.05 }, { up_to = "inf" }]
        [[charges]]
        meter = "sms"
        model = "per_unit"
        unit_amount = 0.01
        [[charges]]
        meter = "storage_gb"
        model = "per_unit"
        unit_price = 0.2
        [[thresholds]]
        meter = "payments"
        allowance = 10
        """,
    )
    assert plan is None
    # (a charge's allowed keys are a plan charge's, whatever they are: the same record validates both)
    unknown_charge_key = [m for m in messages(problems) if "charges[2].unit_price" in m]
    assert len(unknown_charge_key) == 1
    assert unknown_charge_key[0].startswith("override.toml: charges[2].unit_price: unknown key (allowed: meter, ")
    assert sorted(m for m in messages(problems) if m not in unknown_charge_key) == sorted(
        [
            "override.toml: currency: unknown key (allowed: subscription, charges, commitment, thresholds, progressive_billing)",
            "override.toml: subscription.fee: must be ≥ 0 (got -1)",
            "override.toml: charges[0].tiers[1].up_to: tiers must increase (got 50 after 100)",
            "override.toml: charges[1].meter: unknown meter 'sms' (known: api_calls, storage_gb, payments)",
            "override.toml: charges[2].unit_amount: required key is missing",
            "override.toml: thresholds[0].meter: meter 'payments' has no charge in this plan",
        ]
    )


def test_two_charges_on_one_meter_and_a_value_model_on_a_counted_meter_are_refused(catalog):
    _, problems = override(
        catalog,
        """
        [[charges]]
        meter = "storage_gb"
        model = "per_unit"
        unit_amount = 0.2
        [[charges]]
        meter = "storage_gb"
        model = "per_unit"
        unit_amount = 0.3
        [[charges]]
        meter = "payments"
        model = "percentage"
        rate = 2.9
        """,
    )
    assert messages(problems) == [
        "override.toml: charges[1].meter: meter 'storage_gb' already has a charge in this override (charges[0])",
        "override.toml: charges[2].model: percentage needs a meter aggregated by sum (meter 'payments' is count)",
    ]


def test_a_toml_syntax_error_names_its_line():
    document, problems = loads_override('[[charges]]\nmeter = "api_calls"\nmodel = \n', "deal.toml")
    assert document is None
    assert len(problems) == 1 and str(problems[0]).startswith("deal.toml:3: invalid TOML")


def test_a_charge_with_filters_is_validated_as_a_plans_charge_is(catalog):
    plan, problems = override(
        catalog,
        """
        [[charges]]
        meter = "api_calls"
        model = "per_unit"
        unit_amount = 0.01
        group_by = ["region"]
        [[charges.filters]]
        name = "EU"
        properties = { region = ["eu"] }
        unit_amount = 0.005
        """,
    )
    assert problems == []
    charge = plan.charges[0]
    assert (charge.group_by, charge.filters[0].label, str(charge.filters[0].price.unit_amount)) == (
        ("region",),
        "EU",
        "0.005",
    )
    _, problems = override(
        catalog,
        """
        [[charges]]
        meter = "api_calls"
        model = "per_unit"
        unit_amount = 0.01
        [[charges.filters]]
        properties = { region = [] }
        unit_amount = 0.002
        """,
    )
    assert messages(problems) == [
        "override.toml: charges[0].filters[0].properties.region: at least one value is required (an empty list "
        "matches no event)"
    ]
