"""Weeks and anniversary months beyond the month's run: the scheduler bills each as it ends and issues it after the
grace (exactly once, gap-free), the run accounts their unbilled events, the JSON report lists them, and `--period`
names them (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi import Response

from billing import customers as service
from billing.core.periods import month
from billing.db import session_scope
from billing.metering import meter_specs
from billing.run import run_billing
from billing.scheduler import bill_closed_periods
from invoices import store
from meters import ingest
from pricing_plans.loader import loads_catalog

D = dt.date

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
unit = "call"

[meters.exports]
name = "Exports"
aggregation = "count"
unit = "export"

[plans.monthly]
name = "Monthly"
currency = "USD"
[plans.monthly.subscription]
fee = 30.00
billing = "in_arrears"
[[plans.monthly.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.10

[plans.weekly]
name = "Weekly"
currency = "USD"
interval = "week"
[plans.weekly.subscription]
fee = 7.00
billing = "in_arrears"
[[plans.weekly.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.10

# a weekly add-on beside a calendar plan: a fee only (a meter is charged by one subscription at a time)
[plans.weekly_add_on]
name = "Weekly add-on"
currency = "USD"
interval = "week"
[plans.weekly_add_on.subscription]
fee = 7.00
billing = "in_arrears"

[plans.anniversary]
name = "Anniversary"
currency = "USD"
billing_anchor = "subscription_start"
[plans.anniversary.subscription]
fee = 31.00
billing = "in_arrears"
[[plans.anniversary.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.10
"""

CUSTOMERS = {"cal", "wes", "kiri", "anna", "mix"}


@pytest.fixture(scope="module")
def catalog():
    loaded, problems = loads_catalog(CATALOG, "cycle.toml")
    assert not problems
    return loaded


def events(customer: str, n: int, day: str, prefix: str, meter: str = "api_calls") -> list[dict]:
    return [
        {"id": f"{prefix}-{i}", "customer": customer, "meter": meter, "timestamp": f"{day}T12:00:00Z"} for i in range(n)
    ]


def put(engine, catalog, batch) -> None:
    report = ingest(engine, batch, meter_specs(catalog), CUSTOMERS)
    assert not report.rejected, report.rejected


def customer(engine, catalog, external_id: str, plan: str, start: dt.date, timezone: str = "UTC") -> None:
    service.create_customer(engine, external_id, external_id.title(), f"{external_id}@example.test", "USD", timezone)
    service.subscribe(engine, catalog, external_id, plan, start)


def stored(engine) -> list[tuple[str, str, str | None, str]]:
    """Every invoice: billing key, status, number, total."""
    with session_scope(engine) as session:
        found = store.list_invoices(session)
    return sorted((i.billing_key, i.status.value, i.number, str(i.total)) for i in found)


def lines(engine, key: str) -> list[tuple[str, str]]:
    with session_scope(engine) as session:
        return [(line.kind, str(line.amount)) for line in store.get_invoice(session, key).lines]


def at(day: int, hour: int = 12, month_number: int = 3) -> dt.datetime:
    return dt.datetime(2026, month_number, day, hour, tzinfo=dt.UTC)


# -- the scheduler ----------------------------------------------------------------------------------------------


@pytest.mark.db
def test_the_cycle_bills_each_week_as_it_ends_and_issues_it_after_the_grace(engine, catalog) -> None:
    settings = store.FinalizeSettings()
    # both weekly from Wednesday 18 March 2026: wes in Los Angeles (UTC-7), kiri in Kiritimati (UTC+14)
    customer(engine, catalog, "wes", "weekly", D(2026, 3, 18), "America/Los_Angeles")
    customer(engine, catalog, "kiri", "weekly", D(2026, 3, 18), "Pacific/Kiritimati")
    customer(engine, catalog, "cal", "monthly", D(2026, 3, 1))
    put(engine, catalog, events("wes", 3, "2026-03-20", "w1"))  # 05:00 on the 20th in Los Angeles: week 12
    put(engine, catalog, events("kiri", 2, "2026-03-20", "k1"))  # 02:00 on the 21st in Kiritimati: week 12
    put(engine, catalog, events("cal", 10, "2026-03-05", "c1"))

    # Sunday 22 March 12:00 UTC: Monday 02:00 in Kiritimati (week 12, 16–22 March, has ended), Sunday 05:00 in
    # Los Angeles (not yet). Only kiri's week is billed, as a draft; March is still open for cal.
    first = bill_closed_periods(engine, catalog, settings, 1, now=at(22))
    assert (first.billed, first.finalized) == ({"2026-W12": 1}, [])
    # 7.00 × 5/7 (18–22 March) = 5.00; 2 calls × 0.10 = 0.20; 5.20
    assert stored(engine) == [("period:kiri:2026-W12", "draft", None, "5.20")]
    # a cycle run again (after a crash, say) refreshes the same draft, nothing more
    again = bill_closed_periods(engine, catalog, settings, 1, now=at(22))
    assert again.billed == {"2026-W12": 1} and stored(engine) == [("period:kiri:2026-W12", "draft", None, "5.20")]

    # Monday 23 March 12:00 UTC: week 12 has ended in Los Angeles too (one run for both); in Kiritimati it is
    # Tuesday 24th, a day (the grace) after the week's end: kiri's invoice is issued, wes's waits for its grace
    second = bill_closed_periods(engine, catalog, settings, 1, now=at(23))
    assert (second.billed, second.finalized) == ({"2026-W12": 2}, ["INV-2026-000001"])
    third = bill_closed_periods(engine, catalog, settings, 1, now=at(24))
    assert (third.billed, third.finalized) == ({"2026-W12": 1}, ["INV-2026-000002"])
    # wes: 5.00 + 3 × 0.10 = 5.30
    assert stored(engine) == [
        ("period:kiri:2026-W12", "finalized", "INV-2026-000001", "5.20"),
        ("period:wes:2026-W12", "finalized", "INV-2026-000002", "5.30"),
    ]
    assert bill_closed_periods(engine, catalog, settings, 1, now=at(24, 13)).billed == {}

    # a call of 21 March arrives after wes's week 12 was issued: late usage, on the last week ending in March
    put(engine, catalog, events("wes", 1, "2026-03-21", "late"))
    put(engine, catalog, events("wes", 2, "2026-03-25", "w2"))  # week 13: 23–29 March
    # Monday 30 March 12:00 UTC: week 13 has ended everywhere; in Kiritimati it is the 31st, past the grace
    fourth = bill_closed_periods(engine, catalog, settings, 1, now=at(30))
    assert (fourth.billed, fourth.finalized) == ({"2026-W13": 2}, ["INV-2026-000003"])
    # wes's week 13: 7.00 + 2 × 0.10 = 0.20, and week 12 re-rated: 4 calls × 0.10 = 0.40 − 0.30 billed = 0.10
    assert lines(engine, "period:wes:2026-W13") == [("subscription", "7.00"), ("usage", "0.20"), ("late_usage", "0.10")]

    # Wednesday 1 April 12:00 UTC: March has closed for cal (one run of the whole month, which refreshes the
    # weeks' drafts too); wes's week 13 is issued (1 April in Los Angeles, a day after its end)
    fifth = bill_closed_periods(engine, catalog, settings, 1, now=at(1, month_number=4))
    assert (fifth.billed, fifth.finalized) == ({"2026-03": 1}, ["INV-2026-000004"])
    sixth = bill_closed_periods(engine, catalog, settings, 1, now=at(2, month_number=4))
    assert (sixth.billed, sixth.finalized) == ({"2026-03": 1}, ["INV-2026-000005"])
    last = bill_closed_periods(engine, catalog, settings, 1, now=at(2, 13, month_number=4))
    assert (last.billed, last.finalized) == ({}, [])
    # each period billed once, numbered without a gap; cal's March: 30.00 + 10 × 0.10 = 31.00
    assert stored(engine) == [
        ("period:cal:2026-03", "finalized", "INV-2026-000005", "31.00"),
        ("period:kiri:2026-W12", "finalized", "INV-2026-000001", "5.20"),
        ("period:kiri:2026-W13", "finalized", "INV-2026-000003", "7.00"),
        ("period:wes:2026-W12", "finalized", "INV-2026-000002", "5.30"),
        ("period:wes:2026-W13", "finalized", "INV-2026-000004", "7.30"),
    ]


@pytest.mark.db
def test_the_cycle_bills_an_anniversary_month_as_it_ends(engine, catalog) -> None:
    settings = store.FinalizeSettings()
    customer(engine, catalog, "anna", "anniversary", D(2026, 1, 15))
    put(engine, catalog, events("anna", 5, "2026-03-14", "a1"))  # 15 Feb – 14 Mar
    put(engine, catalog, events("anna", 7, "2026-03-15", "a2"))  # 15 Mar – 14 Apr
    # 15 March: the period 15 Feb – 14 Mar has ended (no calendar month has: March is open); so has the first, 15
    # Jan – 14 Feb (February's, within the cycle's look-back, past its grace: issued at once, 31.00 and no usage)
    first = bill_closed_periods(engine, catalog, settings, 2, now=at(15))
    assert first.billed == {"2026-01-15..2026-02-15": 1, "2026-02-15..2026-03-15": 1}
    assert first.finalized == ["INV-2026-000001"]
    # 31.00 (the whole period) + 5 × 0.10 = 31.50; issued two days after its end
    assert bill_closed_periods(engine, catalog, settings, 2, now=at(17)).finalized == ["INV-2026-000002"]
    assert stored(engine) == [
        ("period:anna:2026-01-15..2026-02-15", "finalized", "INV-2026-000001", "31.00"),
        ("period:anna:2026-02-15..2026-03-15", "finalized", "INV-2026-000002", "31.50"),
    ]
    # no invoice of a calendar month for her, ever: January's and February's runs bill her periods only
    assert bill_closed_periods(engine, catalog, settings, 2, now=at(18)).billed == {}
    assert run_billing(engine, catalog, month(2026, 1)).invoices == 0


@pytest.mark.db
def test_the_cycle_bills_a_calendar_month_beside_weeks_already_issued(engine, catalog) -> None:
    settings = store.FinalizeSettings()
    # one customer, a calendar plan and a weekly add-on from Monday 16 March: an invoice for March and one per week
    customer(engine, catalog, "mix", "monthly", D(2026, 3, 1))
    service.subscribe(engine, catalog, "mix", "weekly_add_on", D(2026, 3, 16))
    assert bill_closed_periods(engine, catalog, settings, 1, now=at(23)).billed == {"2026-W12": 1}
    assert bill_closed_periods(engine, catalog, settings, 1, now=at(24)).finalized == ["INV-2026-000001"]
    assert bill_closed_periods(engine, catalog, settings, 1, now=at(31)).finalized == ["INV-2026-000002"]
    # its weeks of March are issued; its March invoice is still due when March closes, and issued after the grace
    closed = bill_closed_periods(engine, catalog, settings, 1, now=at(1, month_number=4))
    assert (closed.billed, closed.finalized) == ({"2026-03": 1}, [])
    assert bill_closed_periods(engine, catalog, settings, 1, now=at(2, month_number=4)).finalized == ["INV-2026-000003"]
    # 30.00 for March (no usage); 7.00 for each whole week
    assert stored(engine) == [
        ("period:mix:2026-03", "finalized", "INV-2026-000003", "30.00"),
        ("period:mix:2026-W12", "finalized", "INV-2026-000001", "7.00"),
        ("period:mix:2026-W13", "finalized", "INV-2026-000002", "7.00"),
    ]


# -- unbilled events of weeks and anniversary months ----------------------------------------------------------


@pytest.mark.db
def test_the_run_names_the_unbilled_events_of_weekly_and_anniversary_customers(engine, catalog) -> None:
    customer(engine, catalog, "cal", "monthly", D(2026, 3, 1))
    customer(engine, catalog, "wes", "weekly", D(2026, 3, 18))  # week 12 (16–22 March) from Wednesday
    customer(engine, catalog, "anna", "anniversary", D(2026, 1, 31))  # 28 Feb – 30 Mar ends in March
    put(engine, catalog, events("cal", 10, "2026-03-05", "c1"))
    put(engine, catalog, events("wes", 4, "2026-03-05", "w0"))  # in no week of wes: before its start, in March
    put(engine, catalog, events("wes", 3, "2026-03-16", "w1"))  # week 12, before its start
    put(engine, catalog, events("wes", 3, "2026-03-20", "w2"))  # rated
    put(engine, catalog, events("wes", 2, "2026-03-20", "w3", meter="exports"))  # a meter its plan does not charge
    put(engine, catalog, events("wes", 2, "2026-03-31", "w4"))  # week 14: April's run
    put(engine, catalog, events("anna", 6, "2026-03-01", "a1"))  # rated
    put(engine, catalog, events("anna", 1, "2026-03-10", "a2", meter="exports"))
    put(engine, catalog, events("anna", 8, "2026-03-31", "a3"))  # 31 Mar – 29 Apr: April's run

    # `billing usage unbilled` counts as the run will, before any run
    from billing.run import usage_account

    ahead = usage_account(engine, catalog, month(2026, 3))
    march = run_billing(engine, catalog, month(2026, 3))
    assert (ahead.rated, ahead.unbilled) == (march.events, march.unbilled)
    assert [p.label for p in march.periods] == ["2026-W12", "2026-W13", "2026-02-28..2026-03-31"]
    assert [(g.customer, g.meter, g.reason.value, g.detail, g.events) for g in march.unbilled] == [
        ("anna", "exports", "meter_not_charged", "on a meter its plan anniversary v1 does not charge", 1),
        # 4 on 5 March (the month's days outside wes's weeks) + 3 on 16 March (week 12): one group
        ("wes", "api_calls", "before_start", "before its subscription started on 2026-03-18", 7),
        ("wes", "exports", "meter_not_charged", "on a meter its plan weekly v1 does not charge", 2),
    ]
    # rated: cal 10 + wes 3 + anna 6 = 19; unbilled 1 + 7 + 2 = 10; the calls of 31 March are April's
    assert (march.events, march.unbilled_events, march.accepted) == (19, 10, 29)

    april = run_billing(engine, catalog, month(2026, 4))
    # wes's week 14 (2 calls) and anna's 31 Mar – 29 Apr (8 calls), nothing unbilled
    assert (april.events, april.unbilled_events) == (10, 0)


# -- the run's JSON report ------------------------------------------------------------------------------------


def use_catalog(tmp_path, monkeypatch) -> str:
    from billing.config import get_settings

    path = tmp_path / "cycle.toml"
    path.write_text(CATALOG, encoding="utf-8")
    monkeypatch.setenv("BILLING_CATALOG", str(path))
    get_settings.cache_clear()
    return str(path)


def api_key():
    from billing.apikeys import ApiKey

    return ApiKey(id=1, name="tests", prefix="bk_test", customer=None, created_at=at(1), revoked_at=None)


@pytest.mark.db
def test_the_json_report_lists_the_weeks_and_anniversary_months_as_the_api_does(
    engine, catalog, cli_env, tmp_path, monkeypatch
) -> None:
    import json

    from typer.testing import CliRunner

    from billing.api import routes_runs
    from billing.api.schemas import BillingRunIn, BillingRunOut
    from billing.cli import app
    from billing.config import Settings

    path = use_catalog(tmp_path, monkeypatch)
    customer(engine, catalog, "anna", "anniversary", D(2026, 1, 31))
    customer(engine, catalog, "wes", "weekly", D(2026, 3, 18))
    settings = Settings(database_url=cli_env["BILLING_DATABASE_URL"], catalog=path)
    api = routes_runs.create_billing_run(BillingRunIn(period="2026-03"), engine, catalog, settings, api_key(), Response())
    result = CliRunner().invoke(app, ["run", "--period", "2026-03", "--json"])
    assert result.exit_code == 0, result.output
    cli = json.loads(result.stdout)
    # in the order they end: weeks 12 (16–22 March) and 13, then anna's 28 February – 30 March
    expected = [
        {"period": {"start": "2026-03-16", "end": "2026-03-23"}, "label": "2026-W12"},
        {"period": {"start": "2026-03-23", "end": "2026-03-30"}, "label": "2026-W13"},
        {"period": {"start": "2026-02-28", "end": "2026-03-31"}, "label": "2026-02-28..2026-03-31"},
    ]
    assert cli["billing_periods"] == api.model_dump(mode="json")["billing_periods"] == expected
    # the CLI's JSON is the API's object: the first run created the three drafts, the CLI's found them unchanged
    assert (api.created, cli["created"], cli["unchanged"]) == (3, 0, 3)
    assert BillingRunOut.model_validate(cli).billing_periods[0].label == "2026-W12"


# -- --period on weeks and anniversary months -------------------------------------------------------------------


def test_quote_names_a_week_or_an_anniversary_month(tmp_path, monkeypatch) -> None:
    import json

    from typer.testing import CliRunner

    from billing.cli import app

    path = use_catalog(tmp_path, monkeypatch)
    runner = CliRunner()

    def quote(*args: str):
        return runner.invoke(app, ["quote", "--catalog", path, *args], env={"COLUMNS": "200"})

    week = quote(
        "--plan", "weekly", "--start", "2026-03-18", "--period", "2026-W12", "--usage", "api_calls=3", "--json"
    )
    assert week.exit_code == 0, week.output
    # 7.00 × 5/7 (Wednesday 18 to Sunday 22 March) = 5.00; 3 × 0.10 = 0.30
    data = json.loads(week.stdout)
    assert ([line["amount"] for line in data["lines"]], data["total"]) == (["5.00", "0.30"], "5.30")
    # by its dates too, and by default the week of --start
    same = quote(
        "--plan",
        "weekly",
        "--start",
        "2026-03-18",
        "--period",
        "2026-03-16..2026-03-23",
        "--usage",
        "api_calls=3",
        "--json",
    )
    default = quote("--plan", "weekly", "--start", "2026-03-18", "--usage", "api_calls=3", "--json")
    assert json.loads(same.stdout) == json.loads(default.stdout) == data

    # a month names the anniversary month ending in it: from 31 January, 28 February – 30 March, whole: 31.00
    anniversary = quote(
        "--plan", "anniversary", "--start", "2026-01-31", "--period", "2026-03", "--usage", "api_calls=6"
    )
    assert anniversary.exit_code == 0, anniversary.output
    text = " ".join(anniversary.output.split())
    assert "2026-02-28..2026-03-31" in text and "31.00" in text and "31.60" in text  # 31.00 + 6 × 0.10

    # a month of a weekly plan is not one period: refused, with the weeks that would do
    month_of_weeks = quote("--plan", "weekly", "--period", "2026-03", "--usage", "api_calls=3")
    assert month_of_weeks.exit_code != 0
    assert (
        "--period: plan weekly: 2026-03 is not one billing period of a weekly plan: name a week ending in it "
        "(2026-W09, 2026-W10, 2026-W11, 2026-W12, 2026-W13)" in " ".join(month_of_weeks.output.split())
    )
    bad = quote("--plan", "weekly", "--period", "2026-W60", "--usage", "api_calls=3")
    assert bad.exit_code != 0 and "--period: no ISO week '2026-W60'" in " ".join(bad.output.split())


@pytest.mark.db
def test_usage_of_a_named_week_or_anniversary_month(engine, catalog) -> None:
    from billing.api import routes_customers
    from billing.core.periods import Period, parse_period
    from billing.errors import BillingInputError
    from billing.preview import customer_usage

    customer(engine, catalog, "wes", "weekly", D(2026, 3, 18))
    customer(engine, catalog, "anna", "anniversary", D(2026, 1, 31))
    put(engine, catalog, events("wes", 3, "2026-03-20", "w1"))
    put(engine, catalog, events("wes", 2, "2026-03-24", "w2"))  # week 13
    put(engine, catalog, events("anna", 6, "2026-03-01", "a1"))
    now = at(28)

    week = customer_usage(engine, catalog, "wes", parse_period("2026-W12"), now=now)
    # week 12 only: 3 calls; 7.00 × 5/7 = 5.00 + 0.30
    assert (week.period.label, str(week.meters[0].usage.quantity), str(week.preview.totals.total)) == (
        "2026-W12",
        "3",
        "5.30",
    )
    with pytest.raises(
        BillingInputError,
        match=r"period: customer wes: 2026-03 is not one billing period of a "
        r"weekly plan: name a week ending in it \(2026-W09, 2026-W10, 2026-W11, 2026-W12, 2026-W13\)",
    ):
        customer_usage(engine, catalog, "wes", parse_period("2026-03"), now=now)

    # the API: a month names anna's anniversary month ending in it, as its label does
    by_month = routes_customers.get_usage("anna", engine, catalog, api_key(), period="2026-03")
    by_label = routes_customers.get_usage("anna", engine, catalog, api_key(), period="2026-02-28..2026-03-31")
    assert by_month.label == by_label.label == "2026-02-28..2026-03-31"
    assert (by_month.period.start, by_month.period.end) == (D(2026, 2, 28), D(2026, 3, 31))
    # 31.00 + 6 × 0.10 = 31.60
    assert by_month.preview.total == by_label.preview.total == "31.60"
    # a week is not one of anna's periods: refused, naming the one its first day falls in
    with pytest.raises(
        BillingInputError,
        match=r"2026-W09 is not one of the subscription's billing periods \(that "
        r"of its first day is 2026-01-31..2026-02-28\)",
    ):
        customer_usage(engine, catalog, "anna", parse_period("2026-W09"), now=now)
    # with no subscription in it, a period is taken as given
    assert customer_usage(engine, catalog, "anna", parse_period("2025-W09"), now=now).period == Period(
        D(2025, 2, 24), D(2025, 3, 3)
    )


@pytest.mark.db
def test_the_days_of_a_week_are_accounted_with_every_subscription_covering_them(engine, catalog) -> None:
    customer(engine, catalog, "mix", "monthly", D(2026, 3, 1))
    service.subscribe(engine, catalog, "mix", "weekly_add_on", D(2026, 3, 16))
    put(engine, catalog, events("mix", 2, "2026-03-05", "m1"))  # the month's days outside its weeks
    put(engine, catalog, events("mix", 3, "2026-03-20", "m2"))  # week 12, which both plans cover (monthly rates)
    put(engine, catalog, events("mix", 1, "2026-03-20", "m3", meter="exports"))  # charged by neither
    march = run_billing(engine, catalog, month(2026, 3))
    # each event counted once: 2 + 3 rated, the export unbilled, named with both plans covering its day
    assert (march.events, march.unbilled_events) == (5, 1)
    assert [(g.customer, g.meter, g.reason.value, g.detail) for g in march.unbilled] == [
        ("mix", "exports", "meter_not_charged", "on a meter its plan monthly v1, weekly_add_on v1 does not charge")
    ]


FILTERED = """
[meters.sms]
name = "SMS"
aggregation = "count"
unit = "message"

[plans.weekly_sms]
name = "Weekly SMS"
currency = "USD"
interval = "week"
[[plans.weekly_sms.charges]]
meter = "sms"
model = "per_unit"
[[plans.weekly_sms.charges.filters]]
properties = { country = ["US"] }
unit_amount = 0.10
"""


@pytest.mark.db
def test_usage_unbilled_names_the_unpriced_events_of_a_week_as_the_run_does(engine) -> None:
    from billing.run import usage_account

    loaded, problems = loads_catalog(FILTERED, "filtered.toml")
    assert loaded is not None, problems
    customer(engine, loaded, "wes", "weekly_sms", D(2026, 3, 2))  # a Monday
    batch = [
        {"id": f"s{n}", "customer": "wes", "meter": "sms", "timestamp": "2026-03-03T12:00:00Z",
         "properties": {"country": country}}
        for n, country in enumerate(["US", "US", "FR"])
    ]  # fmt: skip
    assert not ingest(engine, batch, meter_specs(loaded), {"wes"}).rejected
    # week 10 (2–8 March): 2 US messages rated; the French one matches no filter of a charge without default
    ahead = usage_account(engine, loaded, month(2026, 3))
    assert (ahead.rated, [(g.meter, g.reason.value, g.events) for g in ahead.unbilled]) == (2, [("sms", "unpriced", 1)])
    march = run_billing(engine, loaded, month(2026, 3))
    assert (march.events, march.unbilled) == (ahead.rated, ahead.unbilled)
