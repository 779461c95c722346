"""Thresholds: the pure level logic at its boundaries, then ``check_thresholds`` against a real database (SQLite
and PostgreSQL): one batch jumping from 50 % to 130 % creates 80 then 100, once; re-runs create nothing; a new
month starts from zero; customer limits; a spend cap crossed on a graduated plan, hand-checked."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from billing import customers as service
from billing.cli import app
from billing.config import get_settings
from billing.core.periods import Period, month, month_of
from billing.db import session_scope
from billing.db.notification_tables import NotificationRow, ThresholdEvaluationRow
from billing.errors import BillingInputError, NotFoundError
from billing.ingestion import ingest_batch, ingest_path
from billing.invoicing import list_invoices
from billing.metering import meter_specs
from billing.reactions import react_to_usage
from billing.run import finalize_period, run_billing
from billing.thresholds import (
    ThresholdSpec,
    check_thresholds,
    crossed_levels,
    level_value,
    list_limits,
    plan_thresholds,
    set_limit,
)
from invoices.store import FinalizeSettings
from meters import ingest
from pricing_plans.loader import loads_catalog

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
unit = "call"

[plans.calls]
name = "Calls"
currency = "USD"
[[plans.calls.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.01
[[plans.calls.thresholds]]
meter = "api_calls"
allowance = 1000

[plans.graduated]
name = "Graduated"
currency = "USD"
[plans.graduated.subscription]
fee = 99.00
[plans.graduated.commitment]
minimum = 1000.00
[[plans.graduated.charges]]
meter = "api_calls"
model = "graduated"
tiers = [
  { up_to = 100, unit_amount = 0.50 }, { up_to = 1000, unit_amount = 0.40 }, { up_to = "inf", unit_amount = 0.30 },
]
[[plans.graduated.thresholds]]
spend_cap = 300.00
levels = [50, 80, 100]

[plans.quiet]
name = "Quiet"
currency = "USD"
[[plans.quiet.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.01
"""

MARCH_NOW = dt.datetime(2026, 3, 20, 12, tzinfo=dt.UTC)
APRIL_NOW = dt.datetime(2026, 4, 10, 12, tzinfo=dt.UTC)


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "thresholds.toml")
    assert not problems, problems
    return loaded


# -- pure ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", ()),
        ("1", ()),
        ("799", ()),
        ("800", (80,)),
        ("999.999999", (80,)),
        ("1000", (80, 100)),
        ("1300", (80, 100)),
    ],
)
def test_levels_are_reached_at_limit_times_level_over_100(value, expected):
    assert crossed_levels(Decimal(value), Decimal(1000), (80, 100)) == expected


def test_levels_come_back_in_increasing_order_and_money_limits_are_exact():
    assert crossed_levels(Decimal("5000"), Decimal(1000), (150, 50, 100)) == (50, 100, 150)
    assert level_value(Decimal("300.00"), 80) == Decimal("240")
    assert crossed_levels(Decimal("239.99"), Decimal("300.00"), (50, 80, 100)) == (50,)
    assert crossed_levels(Decimal("240.00"), Decimal("300.00"), (50, 80, 100)) == (50, 80)
    assert level_value(Decimal("0.03"), 50) == Decimal("0.015")


def test_no_usage_reaches_nothing_even_against_a_zero_limit():
    assert crossed_levels(Decimal(0), Decimal(0), (80, 100)) == ()
    assert crossed_levels(Decimal(1), Decimal(0), (80, 100)) == (80, 100)


def test_plan_thresholds_apply_customer_limits_and_add_missing_ones_at_the_default_levels(catalog):
    calls = catalog.plan("calls")
    assert plan_thresholds(calls) == [ThresholdSpec("usage:api_calls", "usage", "api_calls", Decimal(1000), (80, 100))]
    own = plan_thresholds(calls, {"usage:api_calls": Decimal(50), "spend": Decimal("5.00")})
    assert own == [
        ThresholdSpec("usage:api_calls", "usage", "api_calls", Decimal(50), (80, 100), customer_limit=True),
        ThresholdSpec("spend", "spend", None, Decimal("5.00"), (80, 100), customer_limit=True),
    ]
    assert plan_thresholds(catalog.plan("graduated")) == [
        ThresholdSpec("spend", "spend", None, Decimal("300.00"), (50, 80, 100))
    ]
    assert plan_thresholds(catalog.plan("quiet")) == []
    # like the catalog's own thresholds, a customer's allowance counts only on plans that charge for the meter
    assert plan_thresholds(catalog.plan("graduated"), {"usage:storage": Decimal(5)}) == plan_thresholds(
        catalog.plan("graduated")
    )


def test_a_plan_with_two_thresholds_of_one_meter_keys_them_apart():
    loaded, problems = loads_catalog(
        CATALOG
        + """
[plans.twice]
name = "Twice"
currency = "USD"
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.01 }]
[[plans.twice.thresholds]]
meter = "api_calls"
allowance = 10
[[plans.twice.thresholds]]
meter = "api_calls"
allowance = 100
levels = [100]
""",
        "twice.toml",
    )
    assert not problems
    keys = [spec.key for spec in plan_thresholds(loaded.plan("twice"))]
    assert keys == ["usage:api_calls", "usage:api_calls#2"]


# -- against the database -----------------------------------------------------------------------------------


def customer(engine, catalog, external_id, plan, *, timezone="UTC", start=dt.date(2026, 1, 1)):
    service.create_customer(engine, external_id, external_id.title(), f"{external_id}@example.test", "USD",
                            timezone=timezone)
    return service.subscribe(engine, catalog, external_id, plan, start)


def calls(engine, catalog, who, n, when, prefix, now=MARCH_NOW):
    events = [{"id": f"{prefix}-{i}", "customer": who, "meter": "api_calls", "timestamp": when} for i in range(n)]
    report = ingest(engine, events, meter_specs(catalog), {who}, now=now)
    assert not report.rejected, report.rejected[:3]


def rows(engine):
    with session_scope(engine) as session:
        found = session.scalars(
            select(NotificationRow).order_by(NotificationRow.created_at, NotificationRow.level)
        ).all()
        return [(r.customer_external_id, r.period, r.threshold_key, r.level, str(r.value), str(r.limit_value))
                for r in found]


def test_one_batch_from_50_to_130_percent_creates_80_then_100_once(engine, catalog):
    sub = customer(engine, catalog, "acme", "calls")
    calls(engine, catalog, "acme", 500, "2026-03-05T10:00:00Z", "a")
    first = check_thresholds(engine, catalog, now=MARCH_NOW)
    assert first.created == [] and first.evaluations == 1 and first.subscriptions == 1

    calls(engine, catalog, "acme", 800, "2026-03-06T10:00:00Z", "b")  # 500 → 1300 of 1000 in one batch
    second = check_thresholds(engine, catalog, customers={"acme"}, now=MARCH_NOW)
    assert [(c.level, c.kind, str(c.value), str(c.limit), c.period) for c in second.created] == [
        (80, "usage.threshold_crossed", "1300", "1000", "2026-03"),
        (100, "usage.threshold_crossed", "1300", "1000", "2026-03"),
    ]
    assert rows(engine) == [
        ("acme", "2026-03", "usage:api_calls", 80, "1300", "1000"),
        ("acme", "2026-03", "usage:api_calls", 100, "1300", "1000"),
    ]

    # re-runs, and more usage past 100 %, create nothing more
    assert check_thresholds(engine, catalog, now=MARCH_NOW).created == []
    calls(engine, catalog, "acme", 50, "2026-03-07T10:00:00Z", "c")
    assert check_thresholds(engine, catalog, customers=["acme"], now=MARCH_NOW).created == []
    assert len(rows(engine)) == 2

    with session_scope(engine) as session:
        evaluation = session.get(ThresholdEvaluationRow, (sub.id, "2026-03", "usage:api_calls"))
        assert (evaluation.value, evaluation.limit_value, evaluation.highest_level) == (Decimal(1350), 1000, 100)


def test_only_the_meters_the_thresholds_read_are_aggregated(engine):
    """An allowance reads its meter; a spend cap, every meter its plan charges for; no other meter is aggregated
    (the report counts the events read). The spend is still rated from all the charged meters: 4 calls × 0.50 +
    3 GB × 2.00 = 8.00 of a 10.00 cap reaches 80 %."""
    loaded, problems = loads_catalog(
        """
[meters.api_calls]
name = "API calls"
aggregation = "count"
[meters.storage]
name = "Storage"
aggregation = "sum"
[meters.uploads]
name = "Uploads"
aggregation = "count"

[plans.allowance]
name = "Allowance"
currency = "USD"
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.50 },
           { meter = "storage", model = "per_unit", unit_amount = 2.00 }]
[[plans.allowance.thresholds]]
meter = "api_calls"
allowance = 5

[plans.capped]
name = "Capped"
currency = "USD"
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.50 },
           { meter = "storage", model = "per_unit", unit_amount = 2.00 }]
[[plans.capped.thresholds]]
spend_cap = 10.00
""",
        "meters.toml",
    )
    assert not problems, problems
    customer(engine, loaded, "acme", "allowance")
    customer(engine, loaded, "beta", "capped")
    events = []
    for who in ("acme", "beta"):
        events += [{"id": f"{who}-call-{i}", "customer": who, "meter": "api_calls", "timestamp": "2026-03-05T10:00:00Z"}
                   for i in range(4)]
        events += [{"id": f"{who}-gb", "customer": who, "meter": "storage", "value": 3,
                    "timestamp": "2026-03-05T11:00:00Z"}]
        events += [{"id": f"{who}-up-{i}", "customer": who, "meter": "uploads", "timestamp": "2026-03-05T12:00:00Z"}
                   for i in range(2)]
    assert ingest(engine, events, meter_specs(loaded), {"acme", "beta"}, now=MARCH_NOW).accepted == 14

    acme = check_thresholds(engine, loaded, customers={"acme"}, now=MARCH_NOW)
    assert acme.events == 4  # its 4 calls; neither its storage nor its uploads
    assert [(c.level, str(c.value)) for c in acme.created] == [(80, "4")]
    beta = check_thresholds(engine, loaded, customers={"beta"}, now=MARCH_NOW)
    assert beta.events == 5  # its 4 calls and its storage event; not its uploads
    assert [(c.kind, c.level, str(c.value)) for c in beta.created] == [("spend.threshold_crossed", 80, "8.00")]


def test_only_the_given_customers_are_checked(engine, catalog):
    customer(engine, catalog, "acme", "calls")
    customer(engine, catalog, "beta", "calls")
    calls(engine, catalog, "acme", 900, "2026-03-05T10:00:00Z", "a")
    calls(engine, catalog, "beta", 900, "2026-03-05T10:00:00Z", "b")
    assert [c.customer for c in check_thresholds(engine, catalog, customers={"beta"}, now=MARCH_NOW).created] == [
        "beta"
    ]
    assert check_thresholds(engine, catalog, customers=set(), now=MARCH_NOW).evaluations == 0
    assert [c.customer for c in check_thresholds(engine, catalog, now=MARCH_NOW).created] == ["acme"]


def test_a_new_period_starts_from_zero(engine, catalog):
    customer(engine, catalog, "acme", "calls")
    calls(engine, catalog, "acme", 1000, "2026-03-05T10:00:00Z", "march")
    assert [c.level for c in check_thresholds(engine, catalog, now=MARCH_NOW).created] == [80, 100]

    calls(engine, catalog, "acme", 10, "2026-04-02T10:00:00Z", "april-1", now=APRIL_NOW)
    assert check_thresholds(engine, catalog, now=APRIL_NOW).created == []
    calls(engine, catalog, "acme", 800, "2026-04-03T10:00:00Z", "april-2", now=APRIL_NOW)
    april = check_thresholds(engine, catalog, now=APRIL_NOW)
    assert [(c.period, c.level, str(c.value)) for c in april.created] == [("2026-04", 80, "810")]
    assert [(period, level) for _, period, _, level, _, _ in rows(engine)] == [
        ("2026-03", 80), ("2026-03", 100), ("2026-04", 80),
    ]


def test_the_period_is_the_month_in_the_customers_timezone(engine, catalog):
    customer(engine, catalog, "kiwi", "calls", timezone="Pacific/Auckland")  # UTC+13 in March
    now = dt.datetime(2026, 3, 31, 12, tzinfo=dt.UTC)  # 1 April, 01:00 in Auckland
    calls(engine, catalog, "kiwi", 900, "2026-03-31T10:00:00Z", "march", now=now)  # 23:00 on 31 March there
    assert check_thresholds(engine, catalog, now=now).created == []
    calls(engine, catalog, "kiwi", 800, "2026-03-31T11:30:00Z", "april", now=now)  # 00:30 on 1 April there
    assert [(c.period, c.level) for c in check_thresholds(engine, catalog, now=now).created] == [("2026-04", 80)]


def test_a_customer_limit_replaces_the_allowance_and_can_add_a_spend_cap(engine, catalog):
    customer(engine, catalog, "acme", "calls")
    customer(engine, catalog, "beta", "calls")
    set_limit(engine, catalog, "beta", meter="api_calls", allowance="100")
    set_limit(engine, catalog, "beta", meter="api_calls", allowance=Decimal(200))  # replaces the one before
    set_limit(engine, catalog, "beta", spend_cap="1.50")  # the plan has no spend threshold: added at 80, 100
    assert [(x.customer, x.key, x.limit) for x in list_limits(engine)] == [
        ("beta", "spend", Decimal("1.50")), ("beta", "usage:api_calls", Decimal(200)),
    ]
    for who in ("acme", "beta"):
        calls(engine, catalog, who, 170, "2026-03-05T10:00:00Z", who)
    created = check_thresholds(engine, catalog, now=MARCH_NOW).created
    # beta: 170 calls ≥ 80 % of 200; spend 170 × 0.01 = 1.70 ≥ 100 % of 1.50. acme: 170 of 1000, nothing.
    assert [(c.customer, c.threshold_key, c.level, str(c.value), str(c.limit)) for c in created] == [
        ("beta", "usage:api_calls", 80, "170", "200"),
        ("beta", "spend", 80, "1.70", "1.50"),
        ("beta", "spend", 100, "1.70", "1.50"),
    ]


def test_set_limit_refuses_bad_input(engine, catalog):
    customer(engine, catalog, "acme", "calls")
    with pytest.raises(BillingInputError, match="an allowance \\(with its meter\\) or a spend cap: one of the two"):
        set_limit(engine, catalog, "acme", meter="api_calls")
    with pytest.raises(BillingInputError, match="an allowance \\(with its meter\\) or a spend cap: one of the two"):
        set_limit(engine, catalog, "acme", meter="api_calls", allowance=1, spend_cap=1)
    with pytest.raises(BillingInputError, match="unknown meter 'nope'"):
        set_limit(engine, catalog, "acme", meter="nope", allowance=1)
    with pytest.raises(BillingInputError, match="meter: required"):
        set_limit(engine, catalog, "acme", allowance=1)
    with pytest.raises(BillingInputError, match="must be >= 0"):
        set_limit(engine, catalog, "acme", spend_cap="-1")
    with pytest.raises(BillingInputError, match="not a number"):
        set_limit(engine, catalog, "acme", spend_cap="lots")
    with pytest.raises(NotFoundError, match="unknown customer 'ghost'"):
        set_limit(engine, catalog, "ghost", spend_cap="1")


def test_a_spend_cap_on_a_graduated_plan_counts_usage_charges_only(engine, catalog):
    customer(engine, catalog, "acme", "graduated")
    calls(engine, catalog, "acme", 700, "2026-03-05T10:00:00Z", "a")
    # 100 × 0.50 + 600 × 0.40 = 50.00 + 240.00 = 290.00 (the 99.00 fee and the 1000.00 commitment are not usage)
    # → 50 % (150.00) and 80 % (240.00) of 300.00, not 100 %
    first = check_thresholds(engine, catalog, now=MARCH_NOW).created
    assert [(c.kind, c.level, str(c.value), c.currency) for c in first] == [
        ("spend.threshold_crossed", 50, "290.00", "USD"),
        ("spend.threshold_crossed", 80, "290.00", "USD"),
    ]
    calls(engine, catalog, "acme", 24, "2026-03-06T10:00:00Z", "b")  # 290.00 + 24 × 0.40 = 299.60
    assert check_thresholds(engine, catalog, now=MARCH_NOW).created == []
    calls(engine, catalog, "acme", 1, "2026-03-07T10:00:00Z", "c")  # 300.00: exactly the cap
    assert [(c.level, str(c.value)) for c in check_thresholds(engine, catalog, now=MARCH_NOW).created] == [
        (100, "300.00")
    ]


def test_a_subscription_started_mid_month_counts_from_its_start(engine, catalog):
    customer(engine, catalog, "acme", "calls", start=dt.date(2026, 3, 10))
    calls(engine, catalog, "acme", 900, "2026-03-05T10:00:00Z", "before")  # before the subscription: not its usage
    assert check_thresholds(engine, catalog, now=MARCH_NOW).created == []
    calls(engine, catalog, "acme", 800, "2026-03-15T10:00:00Z", "after")
    assert [c.level for c in check_thresholds(engine, catalog, now=MARCH_NOW).created] == [80]


# -- usage that arrives late ---------------------------------------------------------------------------------

NOV_28 = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
OCTOBER, NOVEMBER = month(2026, 10), month(2026, 11)


def batch(who, n, when, prefix):
    return [{"id": f"{prefix}-{i}", "customer": who, "meter": "api_calls", "timestamp": when} for i in range(n)]


def issue_october(engine, catalog, who):
    """The customer's October invoice, issued on 3 November (before any of its usage arrived)."""
    run_billing(engine, catalog, OCTOBER, customer=who)
    assert len(finalize_period(engine, OCTOBER, FinalizeSettings(), dt.date(2026, 11, 3), customer=who)) == 1


def test_usage_ingested_today_for_last_month_is_alerted_in_last_month_unless_its_invoice_is_issued(engine, catalog):
    """On 28 November, 26 calls of October arrive for two customers with an allowance of 10 (260 %); the
    reaction to that usage evaluates October for both: acme's
    October invoice is not issued yet, so October's 80 % and 100 % alerts are created; beta's October invoice is
    issued (the calls will be billed as late usage on a later invoice), so it gets none. November has no usage."""
    for who in ("acme", "beta"):
        customer(engine, catalog, who, "calls")
        set_limit(engine, catalog, who, meter="api_calls", allowance="10")
    issue_october(engine, catalog, "beta")

    events = batch("acme", 26, "2026-10-20T09:00:00Z", "a") + batch("beta", 26, "2026-10-20T09:00:00Z", "b")
    report = ingest_batch(engine, catalog, events, now=NOV_28)
    assert (report.accepted, report.rejected) == (52, [])
    assert [row for row in rows(engine) if row[2] is not None] == []  # evaluated behind the request, not in it
    assert react_to_usage(engine, catalog, now=NOV_28).customers == 2
    alerts = [row for row in rows(engine) if row[2] is not None]  # beta's invoice.finalized is there too
    assert alerts == [
        ("acme", "2026-10", "usage:api_calls", 80, "26", "10"),
        ("acme", "2026-10", "usage:api_calls", 100, "26", "10"),
    ]
    # the scheduler's check of the current month finds nothing in November; October, asked for, is done already
    assert check_thresholds(engine, catalog, now=NOV_28).created == []
    again = check_thresholds(engine, catalog, now=NOV_28, period=OCTOBER)
    assert (again.created, again.issued) == ([], [("beta", "2026-10")])


def test_a_file_alerts_in_every_month_its_events_fall_in_in_the_customers_timezone(engine, catalog, tmp_path):
    """A file of October and November events for a customer in Auckland (UTC+13): 31 October 12:00 UTC is
    1 November there, so October has 9 calls (80 % of 10) and November 10 (80 % and 100 %)."""
    customer(engine, catalog, "kiwi", "calls", timezone="Pacific/Auckland")
    set_limit(engine, catalog, "kiwi", meter="api_calls", allowance="10")
    lines = batch("kiwi", 9, "2026-10-15T00:00:00Z", "oct")
    lines += batch("kiwi", 1, "2026-10-31T12:00:00Z", "nov-1") + batch("kiwi", 9, "2026-11-15T00:00:00Z", "nov")
    path = tmp_path / "usage.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    report = ingest_path(engine, catalog, path, now=NOV_28)
    assert report.accepted == 19
    assert sorted(rows(engine)) == [
        ("kiwi", "2026-10", "usage:api_calls", 80, "9", "10"),
        ("kiwi", "2026-11", "usage:api_calls", 80, "10", "10"),
        ("kiwi", "2026-11", "usage:api_calls", 100, "10", "10"),
    ]


def test_a_period_that_has_not_begun_cannot_be_checked(engine, catalog):
    with pytest.raises(BillingInputError, match=r"period 2027-01 has not begun \(it starts on 2027-01-01\)"):
        check_thresholds(engine, catalog, now=NOV_28, period=month(2027, 1))


# -- the commands -------------------------------------------------------------------------------------------


def test_set_limit_and_thresholds_check_commands(cli_env, engine, catalog, tmp_path, monkeypatch):
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    monkeypatch.setenv("BILLING_CATALOG", str(path))
    get_settings.cache_clear()
    runner = CliRunner()
    customer(engine, catalog, "acme", "calls", start=dt.date(2020, 1, 1))
    now = dt.datetime.now(dt.UTC)
    calls(engine, catalog, "acme", 90, now.isoformat(), "today", now=now)

    result = runner.invoke(app, ["customers", "set-limit", "acme", "--meter", "api_calls", "--allowance", "100"])
    assert result.exit_code == 0, result.output
    assert "allowance of api_calls set to 100" in result.stdout
    result = runner.invoke(app, ["customers", "set-limit", "acme", "--spend-cap", "x"])
    assert result.exit_code == 2 and "--spend-cap: not a number" in result.stderr  # (a bad option: a usage error)

    result = runner.invoke(app, ["thresholds", "check"])
    assert result.exit_code == 0, result.output
    assert "usage:api_calls" in result.stdout and "80 %" in result.stdout and "90" in result.stdout
    assert "created 1 notifications" in result.stdout
    result = runner.invoke(app, ["thresholds", "check", "--customer", "acme"])
    assert "created 0 notifications" in result.stdout

    result = runner.invoke(app, ["notifications", "list", "--status", "pending", "--customer", "acme"])
    assert result.exit_code == 0, result.output
    assert "usage.threshold_crossed" in result.stdout and "usage:api_calls 80 %" in result.stdout
    assert "no notifications" in runner.invoke(app, ["notifications", "list", "--status", "sent"]).stdout
    result = runner.invoke(app, ["notifications", "list", "--status", "lost"])
    assert result.exit_code == 2 and "--status: expected one of pending, sent, dead" in result.stderr  # (a bad option)


def test_thresholds_check_of_a_given_period(cli_env, engine, catalog, tmp_path, monkeypatch):
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    monkeypatch.setenv("BILLING_CATALOG", str(path))
    get_settings.cache_clear()
    runner = CliRunner()
    today = dt.datetime.now(dt.UTC)
    last = month_of(today.date()).previous()
    customer(engine, catalog, "acme", "calls", start=dt.date(2020, 1, 1))
    set_limit(engine, catalog, "acme", meter="api_calls", allowance="10")
    calls(engine, catalog, "acme", 26, f"{last.start.isoformat()}T12:00:00Z", "late", now=today)  # no check yet

    # the usage stored but not reacted to yet is evaluated in its own month (last month), whatever is asked
    current = runner.invoke(app, ["thresholds", "check"])
    assert current.exit_code == 0, current.output
    assert last.label in current.stdout and "100 %" in current.stdout and "created 2 notifications" in current.stdout
    result = runner.invoke(app, ["thresholds", "check", "--period", last.label])
    assert result.exit_code == 0 and "created 0 notifications" in result.stdout

    run_billing(engine, catalog, last)
    finalize_period(engine, last, FinalizeSettings(), today.date())
    issued = runner.invoke(app, ["thresholds", "check", "--period", last.label])
    assert issued.exit_code == 0 and "created 0 notifications" in issued.stdout
    assert f"not evaluated: 1 customer period(s) whose invoice is already issued ({last.label})" in issued.stderr

    bad = runner.invoke(app, ["thresholds", "check", "--period", "2026-13"])
    assert bad.exit_code == 2 and "--period: expected a month as YYYY-MM, got '2026-13'" in bad.stderr
    ahead = month_of(today.date()).next().next()
    future = runner.invoke(app, ["thresholds", "check", "--period", ahead.label])
    assert future.exit_code == 1 and f"period {ahead.label} has not begun" in future.stderr


def test_the_unique_key_alone_keeps_a_crossing_to_one_row(engine, catalog, monkeypatch):
    """What a concurrent check meets: its look-up found nothing yet, so it inserts; ON CONFLICT DO NOTHING on
    (subscription, period, threshold key, level) leaves the row of whoever came first."""
    import billing.thresholds as thresholds

    customer(engine, catalog, "acme", "calls")
    calls(engine, catalog, "acme", 1000, "2026-03-05T10:00:00Z", "a")
    first = check_thresholds(engine, catalog, now=MARCH_NOW).created
    monkeypatch.setattr(thresholds, "_existing_keys", lambda session, pairs: set())
    assert check_thresholds(engine, catalog, now=MARCH_NOW).created == []
    with session_scope(engine) as session:
        ids = session.scalars(select(NotificationRow.id).order_by(NotificationRow.level)).all()
    assert ids == [c.notification_id for c in first]


HUGE_CATALOG = """
[meters.storage_gb]
name = "Storage"
aggregation = "sum"
unit = "GB"

[plans.storage]
name = "Storage"
currency = "USD"
[[plans.storage.charges]]
meter = "storage_gb"
model = "per_unit"
unit_amount = 100000
[[plans.storage.thresholds]]
meter = "storage_gb"
allowance = 10
[[plans.storage.thresholds]]
spend_cap = 100.00
levels = [100]
"""


def test_a_spend_too_large_for_an_invoice_is_skipped_and_every_other_alert_still_goes_out(engine):
    """20 × 999,999,999,999 GB at 100,000.00 a GB is about 2 × 10^18: no invoice can hold it (the run skips that
    customer). Its spend cap is left out and said so; its allowance and the other customer's cap are evaluated."""
    catalog, problems = loads_catalog(HUGE_CATALOG, "huge.toml")
    assert not problems, problems
    customer(engine, catalog, "big", "storage")
    customer(engine, catalog, "small", "storage")
    events = [{"id": f"big-{i}", "customer": "big", "meter": "storage_gb", "timestamp": "2026-03-05T10:00:00Z",
               "value": "999999999999"} for i in range(20)]
    events.append({"id": "small-1", "customer": "small", "meter": "storage_gb", "timestamp": "2026-03-05T10:00:00Z",
                   "value": "0.002"})  # 0.002 × 100,000.00 = 200.00: twice the cap
    report = ingest(engine, events, meter_specs(catalog), {"big", "small"}, now=MARCH_NOW)
    assert report.accepted == 21 and not report.rejected
    checked = check_thresholds(engine, catalog, now=MARCH_NOW)
    assert [(c.customer, c.threshold_key, c.level, str(c.value)) for c in checked.created] == [
        ("big", "usage:storage_gb", 80, "19999999999980"),
        ("big", "usage:storage_gb", 100, "19999999999980"),
        ("small", "spend", 100, "200.00"),
    ]
    assert [who for who, _ in checked.skipped] == ["big"]
    assert "costs more than an invoice line may hold" in checked.skipped[0][1]


WEEK_AND_MONTH = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
[meters.storage]
name = "Storage"
aggregation = "sum"

[plans.calls]
name = "Calls"
currency = "USD"
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 1.00 }]
thresholds = [{ meter = "api_calls", allowance = 10, levels = [80, 100] }]
progressive_billing = { amounts = [10.00] }

[plans.weekly]
name = "Weekly storage"
currency = "USD"
interval = "week"
charges = [{ meter = "storage", model = "per_unit", unit_amount = 1.00 }]
"""


def test_an_issued_invoice_of_a_week_starting_on_the_1st_leaves_the_months_thresholds_and_progressive_billing(engine):
    """A customer on a monthly plan and a weekly one: the week of 1–7 June 2026 (a Monday) is invoiced and issued
    on 10 June. Its invoice starts on 1 June as June's does: it was taken for June's, so 12 calls of 10 (120 %)
    made no alert and no progressive invoice (12 calls × 1.00 reach the 10.00 amount)."""
    catalog, problems = loads_catalog(WEEK_AND_MONTH, "week_and_month.toml")
    assert not problems, problems
    customer(engine, catalog, "acme", "calls")
    service.subscribe(engine, catalog, "acme", "weekly", dt.date(2026, 1, 1))
    now = dt.datetime(2026, 6, 10, 12, tzinfo=dt.UTC)
    stored = {"id": "s1", "customer": "acme", "meter": "storage", "timestamp": "2026-06-02T00:00:00Z", "value": 3}
    assert ingest_batch(engine, catalog, [stored], now=now).accepted == 1
    week = Period(dt.date(2026, 6, 1), dt.date(2026, 6, 8))
    run_billing(engine, catalog, month(2026, 6), only=[week], now=now)
    assert len(finalize_period(engine, week, FinalizeSettings(), dt.date(2026, 6, 10), customer="acme", now=now)) == 1

    assert ingest_batch(engine, catalog, batch("acme", 12, "2026-06-10T10:00:00Z", "c"), now=now).accepted == 12
    reaction = react_to_usage(engine, catalog, now=now)
    assert [(c.period, c.level, str(c.value)) for c in reaction.created] == [("2026-06", 80, "12"), ("2026-06", 100, "12")]
    assert len(reaction.progressive) == 1
    assert check_thresholds(engine, catalog, now=now).issued == []
    (progressive,) = [i for i in list_invoices(engine, customer="acme") if i.number == reaction.progressive[0]]
    assert (progressive.period_start, progressive.period_end, str(progressive.total)) == (
        dt.date(2026, 6, 1), dt.date(2026, 7, 1), "12.00")  # fmt: skip


STORAGE = """
[meters.storage]
name = "Storage"
aggregation = "weighted_sum"
unit = "GB"

[plans.store]
name = "Store"
currency = "USD"
charges = [{ meter = "storage", model = "per_unit", unit_amount = 1.00 }]
thresholds = [{ meter = "storage", allowance = 100, levels = [100] }]
"""


def test_a_late_weighted_sum_event_is_alerted_in_every_later_month_it_raises(engine):
    """+500 GB on 31 January 23:00 UTC, received on 2 March: January holds it one hour of 744 (0.67 GB-month,
    nothing), February all month (500 of 100) and March since its start (500). The reaction evaluated January
    alone; February was never told and March waited for the scheduler's check."""
    catalog, problems = loads_catalog(STORAGE, "storage.toml")
    assert not problems, problems
    customer(engine, catalog, "acme", "store")
    now = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)
    event = {"id": "s1", "customer": "acme", "meter": "storage", "timestamp": "2026-01-31T23:00:00Z", "value": 500}
    assert ingest_batch(engine, catalog, [event], now=now).accepted == 1
    reaction = react_to_usage(engine, catalog, now=now)
    assert [(c.period, c.level, str(c.value)) for c in reaction.created] == [("2026-02", 100, "500"), ("2026-03", 100, "500")]
    assert check_thresholds(engine, catalog, now=now).created == []
