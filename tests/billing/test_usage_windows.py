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
        ("unknown_plan", "acme"), ("currency", "acme"), ("unknown_plan", "acme")
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
