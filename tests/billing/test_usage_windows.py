"""Usage windows, shared by the billing run, the threshold check and the usage preview: each subscription's plan
resolved (an unknown plan and a foreign currency reported alike), the part of a period each subscription covers
in its customer's timezone, and those windows aggregated in one batch (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from billing.core.domain import Customer, Subscription, SubscriptionStatus
from billing.core.periods import Period, month
from billing.metering import UsageWindow, meter_specs
from billing.usage_windows import UsageKey, aggregate, charged_usage, events_in, resolve_plans, usage_windows
from meters import ingest
from pricing_plans.charge_models import MeterUsage
from pricing_plans.loader import loads_catalog

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
[meters.storage]
name = "Storage"
aggregation = "sum"

[plans.calls]
name = "Calls"
currency = "USD"
[[plans.calls.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.01

[plans.euro]
name = "Euro calls"
currency = "EUR"
[[plans.euro.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.01
"""

MARCH = month(2026, 3)


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "windows.toml")
    assert loaded is not None, problems
    return loaded


def customer(external_id: str, timezone: str = "UTC") -> Customer:
    return Customer(1, external_id, external_id.title(), None, "USD", timezone, "en_US", (), None, Decimal(0))


def subscription(
    id: int, plan: str, start: dt.date, end: dt.date | None = None, *, version: int = 1, who: str = "acme"
) -> Subscription:
    return Subscription(id, 1, who, plan, version, start, end, SubscriptionStatus.ACTIVE, None, None)


def test_plans_are_resolved_and_an_unknown_plan_and_a_foreign_currency_reported_alike(catalog):
    known = subscription(1, "calls", dt.date(2026, 1, 1))
    unknown = subscription(2, "calls", dt.date(2026, 1, 1), version=7)
    foreign = subscription(3, "euro", dt.date(2026, 1, 1))
    resolved = resolve_plans(catalog, [known, unknown, foreign, unknown], {"acme": customer("acme")})
    assert set(resolved.plans) == {1, 3}  # the foreign plan is known: the caller decides what to skip
    assert resolved.priced() == {1: catalog.plan("calls")}
    assert resolved.foreign_currency == {3}
    assert [(p.kind, p.customer) for p in resolved.problems] == [
        ("unknown_plan", "acme"),
        ("currency", "acme"),
        ("unknown_plan", "acme"),
    ]  # in the order given, a subscription listed twice reported twice
    assert resolved.problems[1].message == "subscription 3: priced in EUR, the customer is billed in USD"
    assert resolved.problems[0].message.startswith("subscription 2: ")
    # without customers, no currency is checked
    assert resolve_plans(catalog, [foreign]).problems == []


def test_a_window_is_the_part_of_the_period_its_subscription_covers_in_its_customers_timezone():
    late_start = subscription(1, "calls", dt.date(2026, 3, 10))
    ended = subscription(2, "calls", dt.date(2026, 1, 1), dt.date(2026, 3, 1))
    stranger = subscription(3, "calls", dt.date(2026, 1, 1), who="nobody")
    february = month(2026, 2)
    keys = [UsageKey(1, MARCH), UsageKey(2, MARCH), UsageKey(2, february, late=True), UsageKey(3, MARCH)]
    windows = usage_windows(
        keys, {s.id: s for s in (late_start, ended, stranger)}, {"acme": customer("acme", "Europe/Berlin")}
    )
    assert windows == {
        UsageKey(1, MARCH): UsageWindow("acme", "Europe/Berlin", MARCH, Period(dt.date(2026, 3, 10), MARCH.end)),
        UsageKey(2, february, late=True): UsageWindow("acme", "Europe/Berlin", february, february),
    }
    assert UsageKey(1, MARCH) != UsageKey(1, MARCH, late=True)


def test_only_the_meters_a_plan_charges_for_are_rated(catalog):
    usage = {"api_calls": MeterUsage(quantity=Decimal(3), events=3), "storage": MeterUsage(quantity=Decimal(9))}
    assert charged_usage(usage, catalog.plan("calls")) == {"api_calls": usage["api_calls"]}


def test_windows_are_aggregated_in_one_batch_each_over_its_own_part(engine, catalog):
    events = [
        {"id": f"e{day}", "customer": "acme", "meter": "api_calls", "timestamp": f"2026-03-{day:02d}T12:00:00Z"}
        for day in (2, 5, 12, 20)
    ]
    report = ingest(engine, events, meter_specs(catalog), {"acme"}, now=dt.datetime(2026, 3, 25, tzinfo=dt.UTC))
    assert not report.rejected
    acme = customer("acme")
    windows = {
        UsageKey(1, MARCH): UsageWindow("acme", "UTC", MARCH, Period(dt.date(2026, 3, 10), MARCH.end)),
        "whole": UsageWindow("acme", acme.timezone, MARCH),
    }
    usage = aggregate(engine, catalog, windows)
    assert usage[UsageKey(1, MARCH)]["api_calls"].quantity == 2  # the 12th and the 20th
    assert usage["whole"]["api_calls"].quantity == 4
    assert events_in(usage) == 6


DIMENSIONED = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
[meters.disk]
name = "Disk"
aggregation = "weighted_sum"

[plans.by_region]
name = "By region"
currency = "USD"
[[plans.by_region.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.01
group_by = ["region"]
[[plans.by_region.charges]]
meter = "disk"
model = "per_unit"
[[plans.by_region.charges.filters]]
properties = { tier = ["ssd"] }
unit_amount = 0.10

[plans.by_tier]
name = "By tier"
currency = "USD"
[[plans.by_tier.charges]]
meter = "api_calls"
model = "per_unit"
[[plans.by_tier.charges.filters]]
properties = { tier = ["gold"] }
unit_amount = 0.02
[[plans.by_tier.charges.filters]]
properties = { tier = ["gold"], region = ["eu"] }
unit_amount = 0.03
"""


def test_windows_of_plans_that_split_a_meter_differently(engine):
    from pricing_plans.dimensions import DimensionedUsage, Part

    catalog, problems = loads_catalog(DIMENSIONED, "dimensioned.toml")
    assert catalog is not None, problems
    props = [{"region": "eu", "tier": "gold"}, {"region": "us", "tier": "gold"}, {"region": "eu"}, {}]
    events = [
        {"id": f"{who}{n}", "customer": who, "meter": "api_calls", "timestamp": f"2026-03-{n + 2:02d}T12:00:00Z",
         "properties": p}
        for who in ("acme", "beta") for n, p in enumerate(props)
    ]  # fmt: skip
    # 20 GB of ssd from 1 March and 10 GB of hdd from 1 March, for acme; its subscription covers 17–31 March
    events += [
        {"id": "d1", "customer": "acme", "meter": "disk", "timestamp": "2026-03-01T00:00:00Z", "value": "20",
         "properties": {"tier": "ssd"}},
        {"id": "d2", "customer": "acme", "meter": "disk", "timestamp": "2026-03-01T00:00:00Z", "value": "10",
         "properties": {"tier": "hdd"}},
    ]  # fmt: skip
    report = ingest(engine, events, meter_specs(catalog), {"acme", "beta"}, now=dt.datetime(2026, 4, 2, tzinfo=dt.UTC))
    assert not report.rejected
    part = Period(dt.date(2026, 3, 17), MARCH.end)
    windows = {
        "a": UsageWindow("acme", "UTC", MARCH),
        "a-part": UsageWindow("acme", "UTC", MARCH, part),
        "b": UsageWindow("beta", "UTC", MARCH),
        "plain": UsageWindow("beta", "UTC", MARCH),
    }
    plans = {"a": catalog.plan("by_region"), "a-part": catalog.plan("by_region"), "b": catalog.plan("by_tier")}
    usage = aggregate(engine, catalog, windows, plans)

    def parts(found: object) -> dict[Part, tuple[str, int]]:
        assert isinstance(found, DimensionedUsage)
        return {p: (str(u.quantity), u.events) for p, u in found.parts.items()}

    # by region (no filters): eu ×2, us ×1, none ×1
    assert parts(usage["a"]["api_calls"]) == {
        Part(None, ("eu",)): ("2", 2), Part(None, ("us",)): ("1", 1), Part(None, (None,)): ("1", 1),
    }  # fmt: skip
    # by tier: gold in eu → the filter naming both (index 1), gold elsewhere → index 0, the rest unmatched
    assert parts(usage["b"]["api_calls"]) == {Part(1): ("1", 1), Part(0): ("1", 1), Part(None): ("2", 2)}
    assert usage["plain"]["api_calls"] == MeterUsage(quantity=Decimal(4), events=4)
    # a weighted sum shared out over the part of March the subscription covers, part by part: 15 of 31 days
    # → ssd 20 × 15/31 = 9.677419…, hdd 10 × 15/31 = 4.838709…, the total 30 × 15/31 = 14.516129…
    disk = usage["a-part"]["disk"]
    assert parts(disk) == {Part(0): ("9.677419", 0), Part(None): ("4.838710", 0)}
    assert isinstance(disk, DimensionedUsage) and str(disk.total.quantity) == "14.516129"
    assert parts(usage["a"]["disk"]) == {Part(0): ("20", 1), Part(None): ("10", 1)}  # the whole month


PAYMENTS = """
[meters.payment_volume]
name = "Payments"
aggregation = "sum"

[plans.card]
name = "Card"
currency = "USD"
[[plans.card.charges]]
meter = "payment_volume"
model = "percentage"
rate = 2.9
fixed_amount = 0.30
per_transaction_min = 0.50
per_transaction_max = 25.00
free_events = 2
"""


def test_percentage_fees_are_summed_by_the_database_negotiated_terms_too(engine):
    from billing.metering import aggregate_windows
    from meters.events import from_scaled
    from pricing_plans.charge_models.percentage import rate

    catalog, problems = loads_catalog(PAYMENTS, "payments.toml")
    assert catalog is not None, problems
    values = ["12", "5", "100", "2000", "0.10"]  # in time order
    events = [
        {
            "id": f"p{n}",
            "customer": "acme",
            "meter": "payment_volume",
            "timestamp": f"2026-03-0{n + 1}T00:00:00Z",
            "value": value,
        }
        for n, value in enumerate(values)
    ]
    assert not ingest(
        engine, events, meter_specs(catalog), {"acme"}, now=dt.datetime(2026, 3, 25, tzinfo=dt.UTC)
    ).rejected
    card = catalog.plan("card")
    charge = card.charges[0]
    deal = card.model_copy(update={"charges": [charge.model_copy(update={"rate": Decimal("1.5")})]})
    window = ("acme", dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
    usage = aggregate_windows(engine, catalog, {"list": window, "deal": window}, {"list": card, "deal": deal})
    listed, negotiated = usage["list"]["payment_volume"], usage["deal"]["payment_volume"]
    assert listed.values is None and listed.events == 5  # no event's value loaded
    # 12 and 5 free; 100: 2.90 + 0.30 = 3.20; 2000: 58.30 cut to 25.00; 0.10: 0.0029 + 0.30 raised to 0.50
    assert rate(charge, listed).amount == Decimal("28.70")
    walked = MeterUsage(listed.quantity, 5, tuple(from_scaled(int(Decimal(v) * 10**6)) for v in values))
    assert rate(charge, listed) == rate(charge, walked)  # explanation and breakdown too
    # negotiated 1.5 %: 100: 1.50 + 0.30 = 1.80; 2000: 30.30 cut to 25.00; 0.10: 0.50
    assert rate(deal.charges[0], negotiated).amount == Decimal("27.30")
