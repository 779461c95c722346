"""Intervals (week, month, quarter, year) and anniversary billing: the periods, the fee and commitment per
period, MRR, and the billing run of a month billing every period that ends in it (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from billing import customers as service
from billing.core import fees
from billing.core.domain import SubscriptionTerms
from billing.core.metrics import plan_mrr
from billing.core.periods import Period, Schedule, month
from billing.core.rating import commitment_minimum
from billing.db import session_scope
from billing.metering import meter_specs
from billing.run import finalize_period, run_billing
from invoices import store
from meters import ingest
from pricing_plans.loader import loads_catalog
from pricing_plans.models import Interval, per_month

D = dt.date

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
unit = "call"

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

[plans.anniversary_upfront]
name = "Anniversary upfront"
currency = "USD"
billing_anchor = "subscription_start"
[plans.anniversary_upfront.subscription]
fee = 28.00
billing = "in_advance"

[plans.quarterly]
name = "Quarterly"
currency = "USD"
interval = "quarter"
[plans.quarterly.subscription]
fee = 300.00
billing = "in_advance"
[plans.quarterly.commitment]
minimum = 90.00

[plans.quarterly_arrears]
name = "Quarterly in arrears"
currency = "USD"
interval = "quarter"
[plans.quarterly_arrears.subscription]
fee = 300.00
billing = "in_arrears"

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

[plans.annual]
name = "Annual"
currency = "USD"
interval = "year"
[plans.annual.subscription]
fee = 1200.00
billing = "in_arrears"
[plans.annual.commitment]
minimum = 600.00
"""


@pytest.fixture(scope="module")
def catalog():
    loaded, problems = loads_catalog(CATALOG, "periods.toml")
    assert not problems
    return loaded


def periods_from(schedule: Schedule, first: dt.date, count: int) -> list[tuple[str, str]]:
    period = schedule.billing_period(first)
    found = []
    for _ in range(count):
        found.append((period.start.isoformat(), period.end.isoformat()))
        period = schedule.next_billing_period(period)
    return found


# -- periods ----------------------------------------------------------------------------------------------------


def test_anniversary_months_from_the_31st_across_a_non_leap_february() -> None:
    schedule = Schedule(Interval.MONTH, D(2027, 1, 31))
    # each boundary counted from the start day: the 31st, or the last day of a shorter month; never the 28th after
    assert periods_from(schedule, D(2027, 1, 31), 5) == [
        ("2027-01-31", "2027-02-28"),
        ("2027-02-28", "2027-03-31"),
        ("2027-03-31", "2027-04-30"),
        ("2027-04-30", "2027-05-31"),
        ("2027-05-31", "2027-06-30"),
    ]
    assert schedule.billing_period(D(2027, 2, 27)) == Period(D(2027, 1, 31), D(2027, 2, 28))
    assert schedule.billing_period(D(2027, 2, 28)) == Period(D(2027, 2, 28), D(2027, 3, 31))
    assert Period(D(2027, 2, 28), D(2027, 3, 31)).label == "2027-02-28..2027-03-31"


def test_anniversary_months_from_the_31st_across_a_leap_february() -> None:
    schedule = Schedule(Interval.MONTH, D(2028, 1, 31))
    assert periods_from(schedule, D(2028, 1, 31), 3) == [
        ("2028-01-31", "2028-02-29"),
        ("2028-02-29", "2028-03-31"),
        ("2028-03-31", "2028-04-30"),
    ]
    # the billing periods whose last day falls in a month: February's ends on the 28th, March's on the 30th
    assert schedule.billing_periods_ending_in(month(2028, 2)) == [Period(D(2028, 1, 31), D(2028, 2, 29))]
    assert schedule.billing_periods_ending_in(month(2028, 3)) == [Period(D(2028, 2, 29), D(2028, 3, 31))]


def test_anniversary_quarters_and_years_and_calendar_ones() -> None:
    assert Schedule(Interval.QUARTER, D(2026, 1, 31)).fee_period(D(2026, 5, 3)) == Period(
        D(2026, 4, 30), D(2026, 7, 31)
    )
    assert Schedule(Interval.YEAR, D(2024, 2, 29)).fee_period(D(2025, 3, 1)) == Period(D(2025, 2, 28), D(2026, 2, 28))
    quarter = Schedule(Interval.QUARTER).fee_period(D(2026, 5, 3))
    assert (quarter, quarter.label) == (Period(D(2026, 4, 1), D(2026, 7, 1)), "2026-Q2")
    # a quarterly plan bills its usage monthly: its billing period is the month
    assert Schedule(Interval.QUARTER).billing_period(D(2026, 5, 3)) == month(2026, 5)
    assert Schedule(Interval.YEAR).fee_period(D(2026, 5, 3)).label == "2026"


def test_calendar_weeks_are_iso_weeks_from_monday() -> None:
    schedule = Schedule(Interval.WEEK)
    week = schedule.billing_period(D(2026, 4, 1))  # a Wednesday
    assert (week, week.label) == (Period(D(2026, 3, 30), D(2026, 4, 6)), "2026-W14")
    # the weeks whose Sunday falls in March 2026: 1, 8, 15, 22 and 29 March
    assert [p.label for p in schedule.billing_periods_ending_in(month(2026, 3))] == [
        "2026-W09",
        "2026-W10",
        "2026-W11",
        "2026-W12",
        "2026-W13",
    ]
    # anniversary weeks run from the start's weekday: a Thursday start bills Thursday to Wednesday
    assert Schedule(Interval.WEEK, D(2026, 3, 5)).billing_period(D(2026, 3, 18)) == Period(
        D(2026, 3, 12), D(2026, 3, 19)
    )


# -- fees, commitments, MRR -------------------------------------------------------------------------------------


def test_a_quarterly_fee_prorated_from_mid_quarter_in_advance(catalog) -> None:
    plan = catalog.plan("quarterly")
    terms = SubscriptionTerms(D(2026, 2, 10))
    # the opening invoice: Q1 2026 is 90 days (31 + 28 + 31); active 10 Feb – 31 Mar = 19 + 31 = 50 days
    # 300.00 × 50/90 = 166.666… → 166.67
    opening = fees.opening_fee(terms, plan)
    assert opening is not None
    assert (str(opening.amount), opening.service_start, opening.service_end) == ("166.67", D(2026, 1, 1), D(2026, 4, 1))
    # February's and March's invoices: no fee of their own; March's (the quarter's last month) bills Q2 in advance
    assert (
        fees.period_fees(terms, plan, month(2026, 2), covering_fee=None, billed_in_advance_fee=None).in_advance is None
    )
    march = fees.period_fees(terms, plan, month(2026, 3), covering_fee=None, billed_in_advance_fee=None)
    assert march.in_advance is not None
    assert (str(march.in_advance.amount), march.in_advance.description) == (
        "300.00",
        "Quarterly subscription, 2026-Q2 (in advance)",
    )
    # ending on 15 May: Q2 is 91 days (30 + 31 + 30), active 1 April – 14 May = 30 + 14 = 44 days
    # 300.00 × 44/91 = 145.054… → 145.05, minus the 300.00 billed in advance: a credit of −154.95
    ended = SubscriptionTerms(D(2026, 2, 10), D(2026, 5, 15))
    adjusted = fees.fee_adjustment(ended, plan, month(2026, 5), Decimal("300.00"))
    assert adjusted is not None and str(adjusted.amount) == "-154.95"


def test_a_quarterly_fee_prorated_from_mid_quarter_in_arrears(catalog) -> None:
    plan = catalog.plan("quarterly_arrears")
    terms = SubscriptionTerms(D(2026, 2, 10))
    assert not fees.arrears_fee_due(terms, plan, month(2026, 2))
    assert fees.arrears_fee_due(terms, plan, month(2026, 3))  # the quarter ends with March
    fee = fees.rate_fee(terms, plan, fees.fee_period_for(terms, plan, month(2026, 3)))
    assert fee is not None
    # 300.00 × 50/90 = 166.67, as in advance, on March's invoice
    assert (str(fee.amount), fee.description) == ("166.67", "Quarterly in arrears subscription, 2026-Q1 (in arrears)")


def test_a_quarterly_commitment_is_trued_up_monthly_and_mrr_normalizes_each_interval(catalog) -> None:
    quarterly = catalog.plan("quarterly")
    # minimum 90.00 per quarter, trued up each month: 90 / 3 = 30
    assert commitment_minimum(SubscriptionTerms(D(2026, 1, 1)), quarterly, month(2026, 2)) == Decimal(30)
    # MRR: 300 / 3 + 90 / 3 = 100 + 30 = 130
    assert str(plan_mrr(quarterly)) == "130.000000000000"
    assert str(quarterly.monthly_fee) == "100.00"  # 300.00 / 3
    # weekly: 7.00 × 52 / 12 = 364 / 12 = 30.333… (12 decimal places in MRR, full precision in monthly_fee)
    assert str(plan_mrr(catalog.plan("weekly"))) == "30.333333333333"
    assert str(catalog.plan("weekly").monthly_fee) == "30.33333333333333333333333333"
    # yearly, as before: 1200 / 12 + 600 / 12 = 100 + 50 = 150
    assert str(plan_mrr(catalog.plan("annual"))) == "150.000000000000"
    assert per_month(Decimal("10"), Interval.WEEK) == Decimal(520) / 12


def test_a_yearly_plan_is_unchanged(catalog) -> None:
    plan = catalog.plan("annual")
    terms = SubscriptionTerms(D(2026, 1, 1))
    assert fees.fee_period_for(terms, plan, month(2026, 3)) == Period(D(2026, 1, 1), D(2027, 1, 1))
    assert not fees.arrears_fee_due(terms, plan, month(2026, 11))
    assert fees.arrears_fee_due(terms, plan, month(2026, 12))
    # its commitment trued up each month: 600 / 12 = 50
    assert commitment_minimum(terms, plan, month(2026, 3)) == Decimal(50)


def test_an_anniversary_fee_is_whole_for_a_whole_anniversary_month(catalog) -> None:
    plan = catalog.plan("anniversary_upfront")
    terms = SubscriptionTerms(D(2026, 1, 31))
    opening = fees.opening_fee(terms, plan)
    # 31 January – 27 February is the whole first period: 28.00, not prorated
    assert opening is not None and (str(opening.amount), opening.service_end) == ("28.00", D(2026, 2, 28))
    # ending on 10 March: the period 28 Feb – 30 Mar is 31 days, 10 of them active: 28.00 × 10/31 = 9.032… → 9.03;
    # 28.00 was billed in advance: −18.97
    ended = SubscriptionTerms(D(2026, 1, 31), D(2026, 3, 10))
    period = Period(D(2026, 2, 28), D(2026, 3, 31))
    adjusted = fees.fee_adjustment(ended, plan, period, Decimal("28.00"))
    assert adjusted is not None and str(adjusted.amount) == "-18.97"


# -- the run ----------------------------------------------------------------------------------------------------


def calls(customer: str, n: int, day: str, prefix: str) -> list[dict]:
    return [
        {"id": f"{prefix}-{i}", "customer": customer, "meter": "api_calls", "timestamp": f"{day}T12:00:00Z"}
        for i in range(n)
    ]


def put(engine, catalog, events) -> None:
    report = ingest(engine, events, meter_specs(catalog), {"cal", "anna", "mid", "wes"})
    assert not report.rejected, report.rejected


def invoice(engine, key):
    with session_scope(engine) as session:
        return store.get_invoice(session, key)


def amounts(found) -> list[tuple[str, str]]:
    return [(line.kind, str(line.amount)) for line in found.lines]


def customer(engine, catalog, external_id: str, plan: str, start: dt.date) -> None:
    service.create_customer(engine, external_id, external_id.title(), f"{external_id}@example.test", "USD")
    service.subscribe(engine, catalog, external_id, plan, start)


@pytest.mark.db
def test_a_run_of_a_month_bills_the_anniversary_periods_ending_in_it(engine, catalog) -> None:
    customer(engine, catalog, "cal", "monthly", D(2026, 1, 1))
    customer(engine, catalog, "anna", "anniversary", D(2026, 1, 31))
    customer(engine, catalog, "mid", "anniversary", D(2026, 1, 15))
    put(engine, catalog, calls("cal", 10, "2026-03-05", "c"))
    put(engine, catalog, calls("anna", 4, "2026-02-27", "a1"))  # its period 31 Jan – 27 Feb: February's run
    put(engine, catalog, calls("anna", 6, "2026-02-28", "a2"))  # 28 Feb – 30 Mar: March's run
    put(engine, catalog, calls("anna", 8, "2026-03-31", "a3"))  # 31 Mar – 29 Apr: April's run
    put(engine, catalog, calls("mid", 5, "2026-03-14", "m1"))  # 15 Feb – 14 Mar: March's
    put(engine, catalog, calls("mid", 7, "2026-03-15", "m2"))  # 15 Mar – 14 Apr: April's

    report = run_billing(engine, catalog, month(2026, 3))
    assert [p.label for p in report.periods] == ["2026-02-15..2026-03-15", "2026-02-28..2026-03-31"]
    assert (report.created, report.customers, report.events, report.unbilled_events) == (3, 3, 21, 0)
    # cal, the calendar month: 30.00 + 10 × 0.10 = 1.00
    assert amounts(invoice(engine, "period:cal:2026-03")) == [("subscription", "30.00"), ("usage", "1.00")]
    # anna, 28 Feb – 30 Mar (31 days, all active): 31.00 + 6 × 0.10 = 0.60
    anna = invoice(engine, "period:anna:2026-02-28..2026-03-31")
    assert amounts(anna) == [("subscription", "31.00"), ("usage", "0.60")]
    assert (anna.period_start, anna.period_end) == (D(2026, 2, 28), D(2026, 3, 31))
    # mid, 15 Feb – 14 Mar: 31.00 + 5 × 0.10 = 0.50
    assert amounts(invoice(engine, "period:mid:2026-02-15..2026-03-15")) == [
        ("subscription", "31.00"),
        ("usage", "0.50"),
    ]

    # the run of April bills anna's 31 Mar – 29 Apr (30 days, the whole fee) and mid's 15 Mar – 14 Apr;
    # February's, the first periods of both
    april = run_billing(engine, catalog, month(2026, 4))
    assert [p.label for p in april.periods] == ["2026-03-15..2026-04-15", "2026-03-31..2026-04-30"]
    assert amounts(invoice(engine, "period:anna:2026-03-31..2026-04-30")) == [
        ("subscription", "31.00"),
        ("usage", "0.80"),
    ]
    february = run_billing(engine, catalog, month(2026, 2))
    assert [p.label for p in february.periods] == ["2026-01-15..2026-02-15", "2026-01-31..2026-02-28"]
    assert amounts(invoice(engine, "period:anna:2026-01-31..2026-02-28")) == [
        ("subscription", "31.00"),
        ("usage", "0.40"),
    ]

    # a re-run changes nothing; finalizing March issues the three invoices ending in March
    again = run_billing(engine, catalog, month(2026, 3))
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)
    numbers = finalize_period(engine, month(2026, 3), store.FinalizeSettings(), D(2026, 4, 2))
    assert len(numbers) == 3
    assert invoice(engine, "period:mid:2026-02-15..2026-03-15").number is not None
    assert invoice(engine, "period:anna:2026-03-31..2026-04-30").number is None


@pytest.mark.db
def test_a_weekly_plan_billed_over_a_month_boundary(engine, catalog) -> None:
    customer(engine, catalog, "wes", "weekly", D(2026, 3, 18))  # a Wednesday
    put(engine, catalog, calls("wes", 3, "2026-03-20", "w1"))  # week 12: 16–22 March
    put(engine, catalog, calls("wes", 2, "2026-03-31", "w2"))  # week 14: 30 March – 5 April
    put(engine, catalog, calls("wes", 4, "2026-04-02", "w3"))
    march = run_billing(engine, catalog, month(2026, 3))
    # the weeks ending in March that the subscription covers: 12 (from Wednesday 18th) and 13
    assert [p.label for p in march.periods] == ["2026-W12", "2026-W13"]
    # week 12: 7.00 × 5/7 days (18–22 March) = 5.00; 3 × 0.10 = 0.30
    assert amounts(invoice(engine, "period:wes:2026-W12")) == [("subscription", "5.00"), ("usage", "0.30")]
    assert amounts(invoice(engine, "period:wes:2026-W13")) == [("subscription", "7.00"), ("usage", "0.00")]
    april = run_billing(engine, catalog, month(2026, 4))
    assert [p.label for p in april.periods] == ["2026-W14", "2026-W15", "2026-W16", "2026-W17"]
    # week 14 ends on Sunday 5 April: billed in April, with the calls of 31 March and 2 April: 6 × 0.10 = 0.60
    week = invoice(engine, "period:wes:2026-W14")
    assert amounts(week) == [("subscription", "7.00"), ("usage", "0.60")]
    assert (week.period_start, week.period_end) == (D(2026, 3, 30), D(2026, 4, 6))


@pytest.mark.db
def test_late_usage_listing_and_revenue_of_anniversary_periods(engine, catalog) -> None:
    customer(engine, catalog, "cal", "monthly", D(2026, 1, 1))
    customer(engine, catalog, "anna", "anniversary", D(2026, 1, 31))
    put(engine, catalog, calls("anna", 6, "2026-03-10", "a1"))
    run_billing(engine, catalog, month(2026, 3))
    finalize_period(engine, month(2026, 3), store.FinalizeSettings(), D(2026, 4, 2))
    with session_scope(engine) as session:
        listed = store.list_invoices(session, period_start=D(2026, 3, 1))
        # the month's invoices: cal's March and anna's 28 Feb – 30 Mar, which ends in March
        assert sorted(i.billing_key for i in listed) == ["period:anna:2026-02-28..2026-03-31", "period:cal:2026-03"]
        assert [i.period_label for i in listed if i.customer_id == "anna"] == ["2026-02-28 – 2026-03-30"]
    # billed revenue of March: cal 30.00 + anna 31.00 + 6 × 0.10 = 61.60, anna's invoice counted in March,
    # the month its period's last day falls in
    from billing.metrics_store import figures_from_database

    (usd,) = figures_from_database(engine, catalog, [month(2026, 3)])
    assert str(usd.billed_revenue) == "61.60"

    # 4 calls of 20 March arrive after anna's invoice was issued: late usage of 28 Feb – 30 Mar, on her invoice of
    # 31 Mar – 29 Apr (April's run): 10 calls × 0.10 = 1.00, 0.60 was billed → 0.40
    put(engine, catalog, calls("anna", 4, "2026-03-20", "late"))
    april = run_billing(engine, catalog, month(2026, 4))
    assert april.late_lines == 1
    lines = invoice(engine, "period:anna:2026-03-31..2026-04-30").lines
    late = lines[-1]
    assert (late.kind, str(late.amount), late.service_start, late.service_end) == (
        "late_usage",
        "0.40",
        D(2026, 2, 28),
        D(2026, 3, 31),
    )
    # cal's April invoice has no late line: the late events were anna's
    assert [line.kind for line in invoice(engine, "period:cal:2026-04").lines] == ["subscription", "usage"]


THRESHOLDS = (
    CATALOG
    + """
[plans.anniversary_alerts]
name = "Anniversary with an allowance"
currency = "USD"
billing_anchor = "subscription_start"
[[plans.anniversary_alerts.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.10
[[plans.anniversary_alerts.thresholds]]
meter = "api_calls"
allowance = 10
"""
)


@pytest.mark.db
def test_a_threshold_measures_the_subscriptions_own_anniversary_period(engine) -> None:
    from billing.thresholds import check_thresholds

    loaded, problems = loads_catalog(THRESHOLDS, "periods.toml")
    assert not problems
    customer(engine, loaded, "anna", "anniversary_alerts", D(2026, 1, 15))
    now = dt.datetime(2026, 3, 20, 12, tzinfo=dt.UTC)
    # 6 calls on 10 March (period 15 Feb – 14 Mar), 5 on 16 March (15 Mar – 14 Apr): neither period reaches 80 %
    # of 10, although the calendar month of March holds 11
    events = calls("anna", 6, "2026-03-10", "a") + calls("anna", 5, "2026-03-16", "b")
    assert not ingest(engine, events, meter_specs(loaded), {"anna"}, now=now).rejected
    report = check_thresholds(engine, loaded, now=now)
    assert report.created == []
    # 3 more on 17 March: 8 of 10 in the current period, 15 March – 14 April → the 80 % level
    assert not ingest(engine, calls("anna", 3, "2026-03-17", "c"), meter_specs(loaded), {"anna"}, now=now).rejected
    report = check_thresholds(engine, loaded, now=now)
    assert [(c.level, str(c.value), c.period) for c in report.created] == [(80, "8", "2026-03-15..2026-04-15")]
    # `billing usage` shows the same period: the subscription's own, not the calendar month
    from billing.preview import customer_usage

    usage = customer_usage(engine, loaded, "anna", now=now)
    assert (usage.period, str(usage.meters[0].usage.quantity)) == (Period(D(2026, 3, 15), D(2026, 4, 15)), "8")


@pytest.mark.db
def test_billing_run_period_names_the_month_and_lists_the_periods_it_billed(
    engine, catalog, cli_env, tmp_path, monkeypatch
) -> None:
    from typer.testing import CliRunner

    from billing.cli import app
    from billing.config import get_settings

    path = tmp_path / "periods.toml"
    path.write_text(CATALOG, encoding="utf-8")
    monkeypatch.setenv("BILLING_CATALOG", str(path))
    get_settings.cache_clear()
    customer(engine, catalog, "anna", "anniversary", D(2026, 1, 31))
    customer(engine, catalog, "wes", "weekly", D(2026, 3, 18))
    result = CliRunner().invoke(app, ["run", "--period", "2026-03"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    # in the order they end; anna 31.00 + wes 5.00 (18–22 March: 7.00 × 5/7) + 7.00 = 43.00
    text = " ".join(result.output.split())
    assert "billing periods besides the month │ 2026-W12, 2026-W13, 2026-02-28..2026-03-31" in text
    assert "total USD │ 43.00" in text
    assert "billing 2026-03" not in result.stdout  # (the progress bar: on a terminal's standard error only)
    with session_scope(engine) as session:
        keys = sorted(i.billing_key for i in store.list_invoices(session, period_start=D(2026, 3, 1)))
    assert keys == ["period:anna:2026-02-28..2026-03-31", "period:wes:2026-W12", "period:wes:2026-W13"]


@pytest.mark.db
def test_a_rerun_removes_the_drafts_of_weeks_no_longer_billed(engine, catalog) -> None:
    customer(engine, catalog, "wes", "weekly", D(2026, 3, 2))  # a Monday
    first = run_billing(engine, catalog, month(2026, 3))
    assert [p.label for p in first.periods] == ["2026-W10", "2026-W11", "2026-W12", "2026-W13"]
    (subscription,) = service.list_subscriptions(engine, customer="wes")
    service.cancel_subscription(engine, subscription.id, D(2026, 3, 16))  # its last day: Sunday 15 March
    again = run_billing(engine, catalog, month(2026, 3))
    # week 12 is still looked at (a subscription ending as a period begins may owe a fee adjustment: not this
    # one, billed in arrears), week 13 no more; both drafts go
    assert [p.label for p in again.periods] == ["2026-W10", "2026-W11", "2026-W12"]
    assert sorted(again.removed) == ["period:wes:2026-W12", "period:wes:2026-W13"]
    with session_scope(engine) as session:
        keys = sorted(i.billing_key for i in store.list_invoices(session, period_start=D(2026, 3, 1)))
    assert keys == ["period:wes:2026-W10", "period:wes:2026-W11"]


SHARES = """
[meters.calls]
name = "Calls"
aggregation = "count"

[plans.q]
name = "Quarterly"
currency = "USD"
interval = "quarter"
commitment = { minimum = 100.00 }

[plans.qa]
name = "Quarterly from the start day"
currency = "USD"
interval = "quarter"
billing_anchor = "subscription_start"
commitment = { minimum = 100.00 }

[plans.y]
name = "Yearly"
currency = "USD"
interval = "year"
commitment = { minimum = 2000.00 }

[plans.y121]
name = "Yearly 121"
currency = "USD"
interval = "year"
commitment = { minimum = 121.00 }
"""


def test_the_monthly_shares_of_a_quarterly_or_yearly_commitment_add_up_to_it() -> None:
    """Each month was owed the minimum / 3 (/ 12) rounded on its own: a quarter of 100.00 billed 3 × 33.33 = 99.99,
    a year of 2,000.00 12 × 166.67 = 2,000.04. Rounded cumulatively, the k-th month owes round(M × k / n) −
    round(M × (k − 1) / n)."""
    catalog, problems = loads_catalog(SHARES, "shares.toml")
    assert not problems, problems

    def shares(code: str, start: dt.date, periods: list[Period]) -> list[str]:
        terms = SubscriptionTerms(start)
        return [str(round(commitment_minimum(terms, catalog.plan(code), p), 2)) for p in periods]

    assert shares("q", D(2026, 1, 1), [month(2026, m) for m in (1, 2, 3)]) == ["33.33", "33.34", "33.33"]
    yearly = shares("y", D(2026, 1, 1), [month(2026, m) for m in range(1, 13)])
    assert yearly[:3] == ["166.67", "166.66", "166.67"] and sum(map(Decimal, yearly)) == Decimal("2000.00")
    # a quarter from 15 January: its months are 15 January – 14 February, …; the third ends on 14 April
    anniversary = [Period(D(2026, 1, 15), D(2026, 2, 15)), Period(D(2026, 2, 15), D(2026, 3, 15)),
                   Period(D(2026, 3, 15), D(2026, 4, 15))]  # fmt: skip
    assert shares("qa", D(2026, 1, 15), anniversary) == ["33.33", "33.34", "33.33"]
    # from 22 April, 9 of April's 30 days: April is the 4th month, round(121 × 4 / 12) − round(121 × 3 / 12) =
    # 40.33 − 30.25 = 10.08, × 9 / 30 = 3.024 → 3.02
    assert commitment_minimum(SubscriptionTerms(D(2026, 4, 22)), catalog.plan("y121"), month(2026, 4)) == Decimal(
        "3.024")  # fmt: skip
