"""Usage no invoice will carry: every accepted event of a period that the billing run does not rate is counted and
named with why, in the run's report, its JSON and ``billing usage unbilled``; rated + unbilled = the events of
the period in each customer's timezone. Counts worked out by hand below; SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing import customers as service
from billing.cli import app
from billing.config import get_settings
from billing.core.periods import month
from billing.db import make_engine, repository, session_scope
from billing.metering import meter_specs
from billing.run import run_billing
from billing.unbilled import Reason, unbilled_usage
from meters import MeterSpec, count_events, customers_by_meter, ingest
from pricing_plans.loader import loads_catalog

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[meters.storage_gb]
name = "Storage"
aggregation = "weighted_sum"
unit = "GB-month"

[plans.basic]
name = "Basic"
currency = "USD"
effective_from = 2025-01-01
subscription = { fee = 10.00 }
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.01 }]

[plans.store]
name = "Store"
currency = "USD"
effective_from = 2025-01-01
charges = [{ meter = "storage_gb", model = "per_unit", unit_amount = 0.10 }]
"""

OCTOBER = month(2026, 10)
runner = CliRunner()

# What October holds, customer by customer (every customer in UTC but leaver, in New York):
#   latecomer  basic from 15 Oct: 100 calls on 10 Oct (before its start), 40 calls on 20 Oct (rated),
#              7 storage events on 20 Oct (basic charges no storage)
#   leaver     basic 1 Sep – 10 Oct: 12 calls on 5 Oct (rated), 9 calls on 20 Oct and 3 at 02:00 UTC on 1 Nov
#              (22:00 on 31 Oct in New York) after its end; 2 calls at 02:00 UTC on 1 Oct are September's there
#   ghost      no customer record: 5 calls on 3 Oct (and 1 in September)
#   idle       no subscription ever: 4 calls
#   steady     basic all year: 50 calls (rated), 6 events of "legacy", a meter the catalog no longer has
#   both       basic and store all month: 10 calls and 4 storage events, all rated
#   retired    on plan "gold" version 1, which the catalog does not have: 8 calls
#   euro       billed in EUR, on basic (USD): the run skips it: 2 calls
# rated 40 + 12 + 50 + 14 = 116; unbilled 107 + 12 + 5 + 4 + 6 + 8 + 2 = 144; accepted 260
UNBILLED = [
    ("euro", "api_calls", Reason.CUSTOMER_SKIPPED, 2),
    ("ghost", "api_calls", Reason.UNKNOWN_CUSTOMER, 5),
    ("idle", "api_calls", Reason.NO_SUBSCRIPTION, 4),
    ("latecomer", "api_calls", Reason.BEFORE_START, 100),
    ("latecomer", "storage_gb", Reason.METER_NOT_CHARGED, 7),
    ("leaver", "api_calls", Reason.AFTER_END, 12),
    ("retired", "api_calls", Reason.UNKNOWN_PLAN, 8),
    ("steady", "legacy", Reason.METER_NOT_CHARGED, 6),
]


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "unbilled.toml")
    assert not problems
    return loaded


def events(customer: str, meter: str, n: int, instant: str, value: int | None = None) -> list[dict]:
    return [
        {"id": f"{customer}-{meter}-{instant}-{i}", "customer": customer, "meter": meter, "timestamp": instant}
        | ({} if value is None else {"value": value})
        for i in range(n)
    ]


@pytest.fixture
def october(engine, catalog):
    """The customers, subscriptions and events above."""
    for name in ("latecomer", "idle", "steady", "both", "retired"):
        service.create_customer(engine, name, name.title(), None, "USD", timezone="UTC")
    service.create_customer(engine, "leaver", "Leaver", None, "USD", timezone="America/New_York")
    service.create_customer(engine, "euro", "Euro", None, "EUR", timezone="UTC")
    service.subscribe(engine, catalog, "latecomer", "basic", dt.date(2026, 10, 15))
    leaving = service.subscribe(engine, catalog, "leaver", "basic", dt.date(2026, 9, 1))
    service.cancel_subscription(engine, leaving.id, dt.date(2026, 10, 10))
    service.subscribe(engine, catalog, "steady", "basic", dt.date(2026, 1, 1))
    service.subscribe(engine, catalog, "both", "basic", dt.date(2026, 10, 1))
    service.subscribe(engine, catalog, "both", "store", dt.date(2026, 10, 1))
    with session_scope(engine) as session:  # what the services refuse: a plan the catalog lacks, another currency
        for name, plan in (("retired", "gold"), ("euro", "basic")):
            owner = repository.get_customer(session, name)
            repository.add_subscription(
                session, customer=owner, plan_code=plan, plan_version=1, start_date=dt.date(2026, 10, 1)
            )
    batch = [
        *events("latecomer", "api_calls", 100, "2026-10-10T12:00:00Z"),
        *events("latecomer", "api_calls", 40, "2026-10-20T12:00:00Z"),
        *events("latecomer", "storage_gb", 7, "2026-10-20T12:00:00Z", value=1),
        *events("leaver", "api_calls", 12, "2026-10-05T12:00:00Z"),
        *events("leaver", "api_calls", 9, "2026-10-20T12:00:00Z"),
        *events("leaver", "api_calls", 3, "2026-11-01T02:00:00Z"),
        *events("leaver", "api_calls", 2, "2026-10-01T02:00:00Z"),
        *events("ghost", "api_calls", 5, "2026-10-03T12:00:00Z"),
        *events("ghost", "api_calls", 1, "2026-09-03T12:00:00Z"),
        *events("idle", "api_calls", 4, "2026-10-08T12:00:00Z"),
        *events("steady", "api_calls", 50, "2026-10-08T12:00:00Z"),
        *events("steady", "legacy", 6, "2026-10-08T12:00:00Z"),
        *events("both", "api_calls", 10, "2026-10-09T12:00:00Z"),
        *events("both", "storage_gb", 4, "2026-10-09T12:00:00Z", value=2),
        *events("retired", "api_calls", 8, "2026-10-09T12:00:00Z"),
        *events("euro", "api_calls", 2, "2026-10-09T12:00:00Z"),
    ]
    specs = {**meter_specs(catalog), "legacy": MeterSpec("legacy", "count")}  # a meter since removed
    known = {"latecomer", "leaver", "ghost", "idle", "steady", "both", "retired", "euro"}
    report = ingest(engine, batch, specs, known)
    assert (report.accepted, report.rejected) == (263, [])
    return engine


def groups(unbilled):
    return [(g.customer, g.meter, g.reason, g.events) for g in unbilled]


def test_a_run_names_every_event_it_does_not_rate_and_the_numbers_add_up(october, catalog):
    report = run_billing(october, catalog, OCTOBER)
    assert (report.events, report.unbilled_events, report.accepted) == (116, 144, 260)
    assert groups(report.unbilled) == UNBILLED
    messages = [g.message for g in report.unbilled]
    assert messages == [
        "2 events of customer euro (api_calls) while the run skips the customer: plan currency differs from the "
        "customer's EUR",
        "5 events of customer ghost (api_calls) of which billing has no customer record",
        "4 events of customer idle (api_calls) while it has no subscription",
        "100 events of customer latecomer (api_calls) before its subscription started on 2026-10-15",
        "7 events of customer latecomer (storage_gb) on a meter its plan basic v1 does not charge",
        "12 events of customer leaver (api_calls) after its subscription ended on 2026-10-10",
        f"8 events of customer retired (api_calls) while its subscription {report_sub(october, 'retired')} is on "
        "plan gold version 1, which the catalog does not have",
        "6 events of customer steady (legacy) on a meter the catalog does not have",
    ]


def report_sub(engine, customer):
    with session_scope(engine) as session:
        [subscription] = repository.list_subscriptions(session, customer=customer)
    return subscription.id


def test_the_listing_counts_what_the_run_counts_and_one_customer_alone(october, catalog):
    account = unbilled_usage(october, catalog, OCTOBER)  # every window counted here, none taken from a run
    assert (account.rated, account.unbilled_events, account.accepted) == (116, 144, 260)
    assert groups(account.unbilled) == UNBILLED
    latecomer = run_billing(october, catalog, OCTOBER, customer="latecomer")
    assert (latecomer.events, latecomer.accepted) == (40, 147)
    assert groups(latecomer.unbilled) == [g for g in UNBILLED if g[0] == "latecomer"]
    assert groups(unbilled_usage(october, catalog, OCTOBER, customer="ghost").unbilled) == [UNBILLED[1]]
    # September: leaver's 2 calls at 22:00 on 30 September in New York, rated; ghost's 1
    september = unbilled_usage(october, catalog, month(2026, 9))
    assert (september.rated, groups(september.unbilled)) == (
        2, [("ghost", "api_calls", Reason.UNKNOWN_CUSTOMER, 1)]
    )


def test_who_has_events_and_how_many_a_window_holds(october):
    found = customers_by_meter(october)
    assert found == {
        "api_calls": {"latecomer", "leaver", "ghost", "idle", "steady", "both", "retired", "euro"},
        "legacy": {"steady"},
        "storage_gb": {"latecomer", "both"},
    }
    assert customers_by_meter(october, "steady") == {"api_calls": {"steady"}, "legacy": {"steady"}}
    assert customers_by_meter(october, "nobody") == {}
    start = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    windows = {
        "first half": ("latecomer", start, dt.datetime(2026, 10, 15, tzinfo=dt.UTC)),
        "second half": ("latecomer", dt.datetime(2026, 10, 15, tzinfo=dt.UTC), dt.datetime(2026, 11, 1, tzinfo=dt.UTC)),
    }
    assert count_events(october, windows, ["api_calls", "storage_gb", "legacy"]) == {
        ("first half", "api_calls"): 100,
        ("second half", "api_calls"): 40,
        ("second half", "storage_gb"): 7,
    }


@pytest.fixture
def cli(cli_env, october, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    monkeypatch.setenv("BILLING_CATALOG", str(path))
    get_settings.cache_clear()
    return make_engine(cli_env["BILLING_DATABASE_URL"])


def test_the_run_and_the_usage_command_print_and_give_as_json_what_is_unbilled(cli):
    printed = runner.invoke(app, ["run", "--period", "2026-10"])
    assert printed.exit_code == 0, printed.output
    text = " ".join(printed.output.split())
    assert "usage events in the period │ 260" in text and "usage events rated │ 116" in text
    assert "usage events unbilled │ 144" in text
    assert "unbilled: 100 events of customer latecomer (api_calls) before its subscription started on 2026-10-15" in text

    as_json = runner.invoke(app, ["run", "--period", "2026-10", "--json"])
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert report["events"] == {"accepted": 260, "rated": 116, "unbilled": 144}
    assert [(g["customer"], g["meter"], g["reason"], g["events"]) for g in report["unbilled"]] == [
        (c, m, r.value, n) for c, m, r, n in UNBILLED
    ]
    # four period invoices and the opening invoices of latecomer's and both's basic (its fee is billed in advance)
    assert report["unchanged"] == 6 and report["finalized"] == []

    listed = runner.invoke(app, ["usage", "unbilled", "--period", "2026-10", "--json"])
    assert listed.exit_code == 0, listed.output
    account = json.loads(listed.stdout)
    assert (account["accepted"], account["rated"], account["unbilled_events"]) == (260, 116, 144)
    assert account["unbilled"] == report["unbilled"]
    table = runner.invoke(app, ["usage", "unbilled", "--period", "2026-10", "--customer", "leaver"])
    assert table.exit_code == 0, table.output
    lines = [" ".join(line.split()) for line in table.output.splitlines()]
    assert "│ leaver │ api_calls │ after_end │ 12 │ after its subscription ended on 2026-10-10 │" in lines
    assert "24 events in the period: 12 rated, 12 unbilled" in " ".join(table.output.split())
    assert runner.invoke(app, ["usage", "unbilled", "--period", "October"]).exit_code == 2
