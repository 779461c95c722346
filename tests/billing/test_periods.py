"""Future and open periods: a billing run refuses a period that has not begun; finalizing (the run's --finalize,
``billing invoices finalize``, the service, the scheduler) refuses an invoice whose period has not ended in its
customer's timezone, unless the current period is explicitly allowed; never one to come. A draft of the current
period (a preview) stays allowed. The clock is fixed: ``now`` for the services, ``billing.invoicing.utcnow`` for
the commands (which issue, and number, the invoices they finalize on today's date). SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing import customers as service
from billing import invoicing
from billing.cli import app
from billing.config import get_settings
from billing.core.periods import PeriodState, has_begun_anywhere, month, period_state
from billing.db import make_engine
from billing.invoicing import OpenPeriodError, PeriodNotBegunError, finalize_invoice, list_invoices
from billing.run import finalize_period, run_billing
from billing.scheduler import bill_closed_periods
from invoices.store import FinalizeSettings
from pricing_plans.loader import loads_catalog
from tests.dates import this_year

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.starter]
name = "Starter"
currency = "USD"
effective_from = 2025-01-01
subscription = { fee = 10.00, billing = "in_arrears" }
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.5 }]

[plans.upfront]
name = "Upfront"
currency = "USD"
effective_from = 2025-01-01
subscription = { fee = 30.00, billing = "in_advance" }
"""

OCTOBER, NOVEMBER, DECEMBER, JANUARY = month(2026, 10), month(2026, 11), month(2026, 12), month(2027, 1)
NOW = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)  # a Saturday in the middle of November everywhere
SETTINGS = FinalizeSettings()
runner = CliRunner()


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "periods.toml")
    assert not problems
    return loaded


def statuses(engine):
    return [(i.customer_id, i.period_start.isoformat(), i.status.value, i.number) for i in list_invoices(engine)]


# -- the rule, pure ---------------------------------------------------------------------------------------------


def test_where_a_period_stands_in_a_timezone():
    # 1 December 2026 00:00 in Los Angeles is 08:00 UTC; in Kiritimati (UTC+14) it is 30 November 10:00 UTC.
    la, kiritimati = "America/Los_Angeles", "Pacific/Kiritimati"
    at = dt.datetime(2026, 12, 1, 7, 59, 59, tzinfo=dt.UTC)
    assert period_state(NOVEMBER, la, at) is PeriodState.OPEN
    assert period_state(NOVEMBER, la, at + dt.timedelta(seconds=1)) is PeriodState.ENDED
    assert period_state(DECEMBER, la, at) is PeriodState.FUTURE
    assert period_state(DECEMBER, kiritimati, dt.datetime(2026, 11, 30, 10, tzinfo=dt.UTC)) is PeriodState.OPEN
    assert period_state(DECEMBER, kiritimati, dt.datetime(2026, 11, 30, 9, 59, tzinfo=dt.UTC)) is PeriodState.FUTURE
    # a period has begun somewhere as soon as its first day begins in Kiritimati
    assert not has_begun_anywhere(DECEMBER, dt.datetime(2026, 11, 30, 9, 59, tzinfo=dt.UTC))
    assert has_begun_anywhere(DECEMBER, dt.datetime(2026, 11, 30, 10, tzinfo=dt.UTC))
    assert has_begun_anywhere(OCTOBER, NOW) and has_begun_anywhere(NOVEMBER, NOW)
    assert not has_begun_anywhere(JANUARY, NOW)


# -- the services -------------------------------------------------------------------------------------------------


def test_a_run_refuses_a_period_that_has_not_begun_and_writes_the_current_one_as_a_preview(engine, catalog):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "starter", dt.date(2026, 10, 1))
    with pytest.raises(PeriodNotBegunError, match="period 2027-01 has not begun: its first day is 2027-01-01"):
        run_billing(engine, catalog, JANUARY, now=NOW)
    with pytest.raises(PeriodNotBegunError, match="2026-12-01"):
        run_billing(engine, catalog, DECEMBER, now=NOW)
    assert statuses(engine) == []
    report = run_billing(engine, catalog, NOVEMBER, now=NOW)  # the current period: a draft, a preview
    assert report.created == 1
    assert statuses(engine) == [("acme", "2026-11-01", "draft", None)]


def test_finalizing_an_open_period_is_refused_unless_allowed_and_a_future_one_always(engine, catalog):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "starter", dt.date(2026, 10, 1))
    run_billing(engine, catalog, OCTOBER, now=NOW)
    run_billing(engine, catalog, NOVEMBER, now=NOW)
    with pytest.raises(OpenPeriodError, match=r"period 2026-11 has not ended for customer acme \(UTC\)") as refused:
        finalize_period(engine, NOVEMBER, SETTINGS, NOW.date(), now=NOW)
    assert refused.value.allowable
    assert "its last day is 2026-11-30" in str(refused.value) and "nothing was finalized" in str(refused.value)
    assert statuses(engine) == [("acme", "2026-10-01", "draft", None), ("acme", "2026-11-01", "draft", None)]
    with pytest.raises(PeriodNotBegunError, match="2026-12-01"):
        finalize_period(engine, DECEMBER, SETTINGS, NOW.date(), now=NOW, allow_open_period=True)

    assert finalize_period(engine, OCTOBER, SETTINGS, NOW.date(), now=NOW) == ["INV-2026-000001"]
    assert finalize_period(engine, NOVEMBER, SETTINGS, NOW.date(), now=NOW, allow_open_period=True) == [
        "INV-2026-000002"
    ]


def test_a_period_is_closed_customer_by_customer_in_their_timezones(engine, catalog):
    service.create_customer(engine, "kiribati", "Kiribati", None, "USD", timezone="Pacific/Kiritimati")
    service.create_customer(engine, "la", "LA", None, "USD", timezone="America/Los_Angeles")
    for customer in ("kiribati", "la"):
        service.subscribe(engine, catalog, customer, "starter", dt.date(2026, 10, 1))
    run_billing(engine, catalog, NOVEMBER, now=NOW)
    # 1 December 05:00 UTC: 19:00 on 1 December in Kiritimati (November has ended), 21:00 on 30 November in LA
    at = dt.datetime(2026, 12, 1, 5, tzinfo=dt.UTC)
    with pytest.raises(OpenPeriodError, match=r"has not ended for customer la \(America/Los_Angeles\)"):
        finalize_period(engine, NOVEMBER, SETTINGS, at.date(), now=at)
    assert [s[2] for s in statuses(engine)] == ["draft", "draft"]  # nothing finalized, not even Kiribati's
    assert finalize_period(engine, NOVEMBER, SETTINGS, at.date(), customer="kiribati", now=at) == ["INV-2026-000001"]
    later = dt.datetime(2026, 12, 1, 8, tzinfo=dt.UTC)  # midnight in Los Angeles
    assert finalize_period(engine, NOVEMBER, SETTINGS, later.date(), now=later) == ["INV-2026-000002"]


def test_one_invoice_is_finalized_once_its_period_has_ended_an_opening_one_once_its_subscription_started(
    engine, catalog
):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="Europe/Berlin")
    service.subscribe(engine, catalog, "acme", "starter", dt.date(2026, 10, 1))
    upfront = service.subscribe(engine, catalog, "acme", "upfront", dt.date(2026, 12, 10))  # its opening draft
    run_billing(engine, catalog, NOVEMBER, now=NOW)
    with pytest.raises(OpenPeriodError, match="period 2026-11 has not ended for customer acme"):
        finalize_invoice(engine, "period:acme:2026-11", SETTINGS, NOW.date(), now=NOW)
    with pytest.raises(OpenPeriodError, match=f"subscription {upfront.id}, which starts on 2026-12-10"):
        finalize_invoice(engine, f"start:{upfront.id}", SETTINGS, NOW.date(), now=NOW, allow_open_period=True)
    assert [s[2] for s in statuses(engine)] == ["draft", "draft"]
    # 30 November 23:00 UTC is midnight on 1 December in Berlin
    ended = dt.datetime(2026, 11, 30, 23, tzinfo=dt.UTC)
    assert finalize_invoice(engine, "period:acme:2026-11", SETTINGS, ended.date(), now=ended).number == (
        "INV-2026-000001"
    )
    started = dt.datetime(2026, 12, 9, 23, tzinfo=dt.UTC)
    assert finalize_invoice(engine, f"start:{upfront.id}", SETTINGS, started.date(), now=started).number == (
        "INV-2026-000002"
    )


def test_the_billing_cycle_bills_the_previous_month_and_never_finalizes_an_open_one(engine, catalog):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "starter", dt.date(2026, 10, 1))
    report = bill_closed_periods(engine, catalog, SETTINGS, 2, now=NOW)
    assert report.billed == {"2026-10": 1} and report.finalized == ["INV-2026-000001"]
    assert statuses(engine) == [("acme", "2026-10-01", "finalized", "INV-2026-000001")]  # nothing of November


def test_the_billing_cycle_never_finalizes_an_open_period_whatever_the_grace(engine, catalog):
    service.create_customer(engine, "kiribati", "Kiribati", None, "USD", timezone="Pacific/Kiritimati")
    service.create_customer(engine, "la", "LA", None, "USD", timezone="America/Los_Angeles")
    for customer in ("kiribati", "la"):
        service.subscribe(engine, catalog, customer, "starter", dt.date(2026, 11, 1))
    run_billing(engine, catalog, NOVEMBER, customer="la", now=NOW)  # someone's preview of LA's November
    # 30 November 10:30 UTC: 00:30 on 1 December in Kiritimati, 02:30 on 30 November in Los Angeles; a grace of
    # -1 day would finalize LA's November on its last day
    at = dt.datetime(2026, 11, 30, 10, 30, tzinfo=dt.UTC)
    report = bill_closed_periods(engine, catalog, SETTINGS, -1, now=at)
    assert report.billed == {"2026-11": 1} and report.finalized == ["INV-2026-000001"]
    assert statuses(engine) == [
        ("kiribati", "2026-11-01", "finalized", "INV-2026-000001"),
        ("la", "2026-11-01", "draft", None),
    ]


# -- the commands -----------------------------------------------------------------------------------------------


@pytest.fixture
def cli(cli_env, catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The commands against the test database with the catalog above, on 28 November 2026 at noon (UTC)."""
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    monkeypatch.setenv("BILLING_CATALOG", str(path))
    monkeypatch.setattr(invoicing, "utcnow", lambda: NOW)
    get_settings.cache_clear()
    engine = make_engine(cli_env["BILLING_DATABASE_URL"])
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="America/New_York")
    service.subscribe(engine, catalog, "acme", "starter", dt.date(2026, 10, 1))
    yield engine
    engine.dispose()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_the_commands_refuse_future_and_open_periods_and_allow_the_current_one_when_asked(cli):
    engine = cli
    future = invoke("run", "--period", "2027-01")
    assert future.exit_code == 1
    assert "period 2027-01 has not begun: its first day is 2027-01-01" in " ".join(future.output.split())
    refused = invoke("run", "--period", "2026-11", "--finalize")
    assert refused.exit_code == 1
    message = " ".join(refused.output.split())
    assert "period 2026-11 has not ended for customer acme (America/New_York)" in message
    assert "nothing was finalized (--allow-open-period finalizes the current period now)" in message
    assert statuses(engine) == []  # refused before the run wrote anything

    preview = invoke("run", "--period", "2026-11")
    assert preview.exit_code == 0, preview.output
    assert invoke("invoices", "finalize", "--period", "2026-11").exit_code == 1
    draft = list_invoices(engine)[0].id
    one = invoke("invoices", "finalize", str(draft))
    assert one.exit_code == 1 and "has not ended" in one.output
    assert statuses(engine) == [("acme", "2026-11-01", "draft", None)]

    never = invoke("run", "--period", "2026-12", "--finalize", "--allow-open-period")
    assert never.exit_code == 1 and "2026-12-01" in never.output
    assert invoke("run", "--period", "2026-11", "--allow-open-period").exit_code == 2  # only with --finalize

    allowed = invoke("run", "--period", "2026-11", "--finalize", "--allow-open-period")
    assert allowed.exit_code == 0, allowed.output
    year = this_year()  # the commands issue (and number) invoices today
    assert statuses(engine) == [("acme", "2026-11-01", "finalized", f"INV-{year}-000001")]
    october = invoke("run", "--period", "2026-10", "--finalize")  # ended: nothing to allow
    assert october.exit_code == 0, october.output
    assert [s[2:] for s in statuses(engine)] == [
        ("finalized", f"INV-{year}-000002"), ("finalized", f"INV-{year}-000001")
    ]


def test_finalizing_one_invoice_or_a_period_with_the_option(cli):
    engine = cli
    assert invoke("run", "--period", "2026-11").exit_code == 0
    draft = list_invoices(engine)[0].id
    assert invoke("invoices", "finalize", str(draft), "--allow-open-period").exit_code == 0
    assert statuses(engine) == [("acme", "2026-11-01", "finalized", f"INV-{this_year()}-000001")]
