"""Hard usage limits and entitlements: the catalog's ``hard_limit`` checked where it is written; a customer's
entitlement flipping to blocked at exactly 100 % of a hard limit, never a negative remainder, the period's end
(``resets_at``) for a monthly and a weekly plan in a timezone other than UTC, and unknown customers and meters as
404 problems over HTTP. Against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from billing import customers as service
from billing.cli import app
from billing.db import session_scope
from billing.db.entitlement_tables import UsageCounterRow
from billing.entitlements import customer_entitlements
from billing.errors import NotFoundError
from billing.metering import meter_specs
from billing.reactions import react_to_usage
from billing.thresholds import set_limit
from meters import aggregate_usage, ingest, meter_totals, to_epoch_us
from pricing_plans.loader import loads_catalog
from tests.billing.test_api import add_customer, error_of, live_api, post_events

__all__ = ["live_api"]

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
unit = "call"

[meters.tokens]
name = "Tokens"
aggregation = "sum"
unit = "token"

[meters.seats]
name = "Active users"
aggregation = "unique_count"
unique_property = "user"
unit = "user"

[plans.monthly]
name = "Monthly"
currency = "USD"
charges = [
  { meter = "api_calls", model = "per_unit", unit_amount = 0.01 },
  { meter = "tokens", model = "per_unit", unit_amount = 0.001 },
  { meter = "seats", model = "per_unit", unit_amount = 5 },
]
[[plans.monthly.thresholds]]
meter = "api_calls"
allowance = 1000
levels = [80, 100]
hard_limit = true
[[plans.monthly.thresholds]]
meter = "tokens"
allowance = 50
[[plans.monthly.thresholds]]
meter = "seats"
allowance = 2
hard_limit = true

[plans.weekly]
name = "Weekly"
currency = "USD"
interval = "week"
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.01 }]
[[plans.weekly.thresholds]]
meter = "api_calls"
allowance = 100
hard_limit = true
"""

NOW = dt.datetime(2026, 3, 20, 12, tzinfo=dt.UTC)  # a Friday; 08:00 in New York (EDT), 21:00 in Tokyo


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "entitlements.toml")
    assert not problems, problems
    return loaded


# -- the catalog ----------------------------------------------------------------------------------------------


def problems_of(extra: str) -> list[str]:
    _, problems = loads_catalog(CATALOG + extra, "limits.toml")
    return [str(problem) for problem in problems]


def test_a_hard_limit_is_an_allowance_one_per_meter_and_a_boolean():
    assert problems_of("""
[plans.capped]
name = "Capped"
currency = "USD"
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.01 }]
[[plans.capped.thresholds]]
spend_cap = 100.00
hard_limit = true
[[plans.capped.thresholds]]
meter = "api_calls"
allowance = 10
hard_limit = "yes"
""") == [
        "limits.toml: plans.capped.thresholds[0].hard_limit: only an allowance (meter + allowance) can be a hard "
        "limit; a spend cap alerts but is not enforced",
        "limits.toml: plans.capped.thresholds[1].hard_limit: expected true or false, got 'yes'",
    ]
    assert problems_of("""
[plans.twice]
name = "Twice"
currency = "USD"
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.01 }]
[[plans.twice.thresholds]]
meter = "api_calls"
allowance = 10
hard_limit = true
[[plans.twice.thresholds]]
meter = "api_calls"
allowance = 100
[[plans.twice.thresholds]]
meter = "api_calls"
allowance = 1000
hard_limit = true
""") == [
        "limits.toml: plans.twice.thresholds[2].hard_limit: a plan has one hard limit per meter (thresholds[0] is "
        "already the hard limit of 'api_calls')"
    ]


# -- against the database -----------------------------------------------------------------------------------


def customer(engine, catalog, who, plan, timezone, start=dt.date(2026, 1, 1)):
    service.create_customer(engine, who, who.title(), None, "USD", timezone=timezone)
    return service.subscribe(engine, catalog, who, plan, start)


def send(engine, catalog, who, n, when, prefix, meter="api_calls", now=NOW, **fields):
    events = [
        {"id": f"{prefix}-{i}", "customer": who, "meter": meter, "timestamp": when, **fields} for i in range(n)
    ]
    report = ingest(engine, events, meter_specs(catalog), {who}, now=now)
    assert not report.rejected, report.rejected[:3]


def api_calls(engine, catalog, who="acme", now=NOW):
    return customer_entitlements(engine, catalog, who, meter="api_calls", now=now).meters[0]


def test_a_hard_limit_blocks_at_exactly_100_percent_and_nothing_remains_below_zero(engine, catalog):
    customer(engine, catalog, "acme", "monthly", "America/New_York")
    send(engine, catalog, "acme", 999, "2026-03-10T12:00:00Z", "a")
    before = api_calls(engine, catalog)
    assert (str(before.used), str(before.limit), str(before.remaining), before.blocked) == ("999", "1000", "1", False)
    assert before.hard_limit is True
    send(engine, catalog, "acme", 1, "2026-03-10T12:00:00Z", "b")  # 999 + 1 = 1000 = 100 % of 1000
    at = api_calls(engine, catalog)
    assert (str(at.used), str(at.remaining), at.blocked) == ("1000", "0", True)
    send(engine, catalog, "acme", 5, "2026-03-10T12:00:00Z", "c")  # 1005: 5 over, remaining stays 0
    over = api_calls(engine, catalog)
    assert (str(over.used), str(over.remaining), over.blocked) == ("1005", "0", True)
    # an allowance that is not a hard limit never blocks: 60 tokens of 50, remaining 0, not blocked
    send(engine, catalog, "acme", 3, "2026-03-10T12:00:00Z", "t", meter="tokens", value="20")
    tokens = customer_entitlements(engine, catalog, "acme", meter="tokens", now=NOW).meters[0]
    assert (str(tokens.used), str(tokens.limit), str(tokens.remaining), tokens.blocked, tokens.hard_limit) == (
        "60", "50", "0", False, False
    )
    assert str(tokens.credit_balance) == "0.00"  # no credit


def test_the_credit_balance_is_what_the_customers_credit_can_pay_now(engine, catalog):
    from billing import credits

    customer(engine, catalog, "acme", "monthly", "America/New_York")
    earlier = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    credits.grant_credit(engine, "acme", Decimal("25.00"), "USD", now=earlier)
    # expired at the start of 15 March in New York (04:00 UTC), before NOW, and not written off yet: not counted
    credits.grant_credit(engine, "acme", Decimal("10.00"), "USD", expires=dt.date(2026, 3, 15), now=earlier)
    # paid credit whose top-up invoice is not paid: not counted; credit in another currency: not counted
    credits.grant_credit(engine, "acme", Decimal("40.00"), "USD", paid=True, now=earlier)
    credits.grant_credit(engine, "acme", Decimal("7.00"), "EUR", now=earlier)
    found = customer_entitlements(engine, catalog, "acme", now=NOW).meters
    assert [str(e.credit_balance) for e in found] == ["25.00"] * len(found) and len(found) >= 1
    # a second before the expiry the 10.00 still counts: 25.00 + 10.00
    before = customer_entitlements(engine, catalog, "acme", now=dt.datetime(2026, 3, 15, 3, 59, 59, tzinfo=dt.UTC))
    assert str(before.meters[0].credit_balance) == "35.00"
    # the read wrote nothing: no expiry movement yet
    assert [e.kind for e in credits.ledger(engine, "acme") if e.kind == "expiry"] == []


def counters(engine):
    with session_scope(engine) as session:
        return sorted(
            (r.customer_external_id, r.meter, r.events, r.total, r.largest)
            for r in session.scalars(select(UsageCounterRow))
        )


def test_the_counters_kept_at_store_time_answer_exactly_as_the_events_do(engine, catalog):
    customer(engine, catalog, "acme", "monthly", "America/New_York")
    send(engine, catalog, "acme", 600, "2026-03-10T12:00:00Z", "a")
    send(engine, catalog, "acme", 2, "2026-03-10T12:00:00Z", "t", meter="tokens", value="1.5")
    # counted as they were stored, nothing reacted to: 600 calls; 2 tokens events of 1.5 = 3 (3,000,000 × 10^-6)
    assert counters(engine) == [("acme", "api_calls", 600, 0, None), ("acme", "tokens", 2, 3_000_000, 1_500_000)]
    assert str(api_calls(engine, catalog).used) == "600"
    send(engine, catalog, "acme", 399, "2026-03-11T12:00:00Z", "b")
    send(engine, catalog, "acme", 1, "2026-03-11T12:00:00Z", "t2", meter="tokens", value="0.5")
    pending = api_calls(engine, catalog)
    assert (str(pending.used), str(pending.remaining), pending.blocked) == ("999", "1", False)  # 600 + 399
    tokens = customer_entitlements(engine, catalog, "acme", meter="tokens", now=NOW).meters[0]
    assert str(tokens.used) == "3.5"  # 3 + 0.5
    send(engine, catalog, "acme", 1, "2026-03-12T12:00:00Z", "c")  # the 1,000th: 100 % of the hard limit
    at = api_calls(engine, catalog)
    assert (str(at.used), str(at.remaining), at.blocked) == ("1000", "0", True)
    react_to_usage(engine, catalog, now=NOW)
    assert api_calls(engine, catalog) == at  # a reaction changes no counter
    with session_scope(engine) as session:  # the answer is the counter's: a counter made wrong shows through
        session.get(UsageCounterRow, ("acme", "api_calls", *[to_epoch_us(x) for x in at.period.utc_window(
            "America/New_York")])).events = 7
    assert str(api_calls(engine, catalog).used) == "7"
    # April: a counter of its own, from zero; March's stays
    april = dt.datetime(2026, 4, 2, 12, tzinfo=dt.UTC)
    send(engine, catalog, "acme", 2, "2026-04-02T11:00:00Z", "apr", now=april)
    assert [row[:3] for row in counters(engine)] == [
        ("acme", "api_calls", 2), ("acme", "api_calls", 7), ("acme", "tokens", 3)
    ]
    assert str(api_calls(engine, catalog, now=april).used) == "2"


def test_a_unique_count_hard_limit_counts_distinct_values_through_the_runs_aggregation(engine, catalog):
    customer(engine, catalog, "acme", "monthly", "UTC")
    send(engine, catalog, "acme", 3, "2026-03-10T12:00:00Z", "u1", meter="seats", properties={"user": "ann"})
    one = customer_entitlements(engine, catalog, "acme", meter="seats", now=NOW).meters[0]
    assert (str(one.used), str(one.remaining), one.blocked) == ("1", "1", False)
    send(engine, catalog, "acme", 1, "2026-03-11T12:00:00Z", "u2", meter="seats", properties={"user": "bob"})
    two = customer_entitlements(engine, catalog, "acme", meter="seats", now=NOW).meters[0]
    assert (str(two.used), str(two.remaining), two.blocked) == ("2", "0", True)  # 2 distinct users of 2


def test_resets_at_is_the_end_of_the_monthly_period_in_the_customers_timezone(engine, catalog):
    customer(engine, catalog, "acme", "monthly", "America/New_York")
    # 2026-03-01T03:00Z is 22:00 on 28 February in New York: February's usage, not March's
    send(engine, catalog, "acme", 7, "2026-03-01T03:00:00Z", "feb")
    send(engine, catalog, "acme", 2, "2026-03-01T05:00:00Z", "mar")  # 00:00 on 1 March (EST, UTC-5)
    march = api_calls(engine, catalog)
    assert str(march.used) == "2"
    assert (march.period.start, march.period.end) == (dt.date(2026, 3, 1), dt.date(2026, 4, 1))
    # midnight of 1 April in New York, after the switch to summer time on 8 March: UTC-4
    assert march.resets_at == dt.datetime(2026, 4, 1, 4, tzinfo=dt.UTC)
    # at 03:59Z on 1 April it is still March in New York; at 04:00Z April starts from zero
    last = api_calls(engine, catalog, now=dt.datetime(2026, 4, 1, 3, 59, tzinfo=dt.UTC))
    assert (str(last.used), last.resets_at) == ("2", dt.datetime(2026, 4, 1, 4, tzinfo=dt.UTC))
    april = api_calls(engine, catalog, now=dt.datetime(2026, 4, 1, 4, tzinfo=dt.UTC))
    assert (str(april.used), april.resets_at) == ("0", dt.datetime(2026, 5, 1, 4, tzinfo=dt.UTC))


def test_resets_at_is_the_end_of_the_iso_week_in_tokyo(engine, catalog):
    customer(engine, catalog, "kaito", "weekly", "Asia/Tokyo")
    # Friday 20 March 21:00 in Tokyo: the ISO week Monday 16 to Sunday 22 March, ending at Monday 23 March 00:00
    # JST = 22 March 15:00 UTC
    send(engine, catalog, "kaito", 100, "2026-03-16T00:00:00Z", "w12")  # Monday 16 March 09:00 JST
    send(engine, catalog, "kaito", 4, "2026-03-15T14:59:59Z", "w11")  # Sunday 15 March 23:59:59 JST: last week
    week = api_calls(engine, catalog, "kaito")
    assert (week.period.start, week.period.end) == (dt.date(2026, 3, 16), dt.date(2026, 3, 23))
    assert week.resets_at == dt.datetime(2026, 3, 22, 15, tzinfo=dt.UTC)
    assert (str(week.used), str(week.remaining), week.blocked) == ("100", "0", True)  # 100 of 100: blocked
    # 22 March 15:00 UTC is Monday 23 March in Tokyo though still Sunday in UTC: a new week, unblocked
    monday = api_calls(engine, catalog, "kaito", now=dt.datetime(2026, 3, 22, 15, tzinfo=dt.UTC))
    assert (str(monday.used), monday.blocked) == ("0", False)
    assert monday.resets_at == dt.datetime(2026, 3, 29, 15, tzinfo=dt.UTC)


def test_a_customers_own_allowance_replaces_the_hard_limit_and_stays_hard(engine, catalog):
    customer(engine, catalog, "acme", "monthly", "UTC")
    send(engine, catalog, "acme", 30, "2026-03-10T12:00:00Z", "a")
    set_limit(engine, catalog, "acme", meter="api_calls", allowance=30)
    own = api_calls(engine, catalog)
    assert (str(own.limit), str(own.remaining), own.blocked, own.hard_limit) == ("30", "0", True, True)


def test_the_list_has_every_meter_of_the_current_subscriptions_and_unknowns_are_not_found(engine, catalog):
    customer(engine, catalog, "acme", "monthly", "UTC")
    found = customer_entitlements(engine, catalog, "acme", now=NOW)
    assert [e.meter for e in found.meters] == ["api_calls", "seats", "tokens"]
    assert all(e.used == Decimal(0) and not e.blocked for e in found.meters)
    with pytest.raises(NotFoundError, match="unknown customer 'nobody'"):
        customer_entitlements(engine, catalog, "nobody", now=NOW)
    with pytest.raises(NotFoundError, match="no current subscription with meter 'storage'"):
        customer_entitlements(engine, catalog, "acme", meter="storage", now=NOW)
    # before the subscription starts, the customer has no entitlement at all
    early = customer_entitlements(engine, catalog, "acme", now=dt.datetime(2025, 12, 1, tzinfo=dt.UTC))
    assert early.meters == ()


def test_meter_totals_agree_with_the_aggregation(engine, catalog):
    customer(engine, catalog, "acme", "monthly", "UTC")
    send(engine, catalog, "acme", 4, "2026-03-10T12:00:00Z", "t", meter="tokens", value="1.25")
    send(engine, catalog, "acme", 3, "2026-03-12T12:00:00Z", "c")
    specs = [meter_specs(catalog)[code] for code in ("api_calls", "tokens", "seats")]
    start, end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
    fast = meter_totals(engine, "acme", specs, start, end)
    slow = aggregate_usage(engine, {"acme": (start, end)}, specs)
    assert {m: (str(a.quantity), a.events) for m, a in fast.items()} == {
        m: (str(a.quantity), a.events) for (_, m), a in slow.items()
    } == {"api_calls": ("3", 3), "tokens": ("5", 4), "seats": ("0", 0)}  # 4 × 1.25 = 5


def test_billing_entitlements_prints_a_table_and_json(cli_env, engine, tmp_path, monkeypatch):
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    monkeypatch.setenv("BILLING_CATALOG", str(path))
    loaded, _ = loads_catalog(CATALOG, str(path))
    today = dt.datetime.now(dt.UTC)
    customer(engine, loaded, "acme", "monthly", "UTC", start=today.date().replace(day=1))
    send(engine, loaded, "acme", 2, today.isoformat(), "now", now=today)
    runner = CliRunner()
    shown = runner.invoke(app, ["entitlements", "acme"])
    assert shown.exit_code == 0, shown.output
    assert "api_calls" in shown.output and "998" in shown.output  # 1000 − 2
    as_json = runner.invoke(app, ["entitlements", "acme", "--json"])
    assert as_json.exit_code == 0, as_json.output
    import json

    body = json.loads(as_json.output)
    calls = next(e for e in body["entitlements"] if e["meter"] == "api_calls")
    assert (calls["used"], calls["limit"], calls["remaining"], calls["blocked"]) == ("2", "1000", "998", False)
    unknown = runner.invoke(app, ["entitlements", "nobody"])
    assert unknown.exit_code != 0 and "unknown customer 'nobody'" in unknown.output


# -- over HTTP ------------------------------------------------------------------------------------------------


def test_entitlements_over_http_and_unknowns_as_404_problems(live_api):
    add_customer(live_api, "acme", timezone="Europe/Berlin")
    today = dt.datetime.now(dt.UTC)
    start = today.date().replace(day=1) - dt.timedelta(days=40)
    service.subscribe(live_api.engine, live_api.catalog, "acme", "starter", start)
    events = [{"id": f"e{i}", "customer": "acme", "meter": "api_calls", "timestamp": today.isoformat()}
              for i in range(6)]
    assert post_events(live_api, events).json()["accepted"] == 6
    with live_api.client() as client:
        listed = client.get("/v1/customers/acme/entitlements")
        one = client.get("/v1/customers/acme/entitlements/api_calls")
        no_customer = client.get("/v1/customers/nobody/entitlements")
        no_meter = client.get("/v1/customers/acme/entitlements/storage")
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["customer"] == "acme" and body["timezone"] == "Europe/Berlin"
    assert [e["meter"] for e in body["entitlements"]] == ["api_calls", "compute_minutes"]
    assert one.status_code == 200, one.text
    calls = one.json()
    # the starter plan's allowance of 5 calls only alerts: 6 used, 0 remaining, not blocked
    assert (calls["used"], calls["limit"], calls["remaining"], calls["blocked"], calls["hard_limit"]) == (
        "6", "5", "0", False, False
    )
    assert calls["credit_balance"] == "0.00" and calls == body["entitlements"][0]
    assert (no_customer.status_code, error_of(no_customer)["code"]) == (404, "not_found")
    assert "unknown customer 'nobody'" in error_of(no_customer)["message"]
    assert (no_meter.status_code, error_of(no_meter)["code"]) == (404, "not_found")
    assert "no current subscription with meter 'storage'" in error_of(no_meter)["message"]
