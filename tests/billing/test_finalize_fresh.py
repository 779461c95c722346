"""Finalizing issues what a billing run writes now, not a draft as it was written (SQLite and PostgreSQL): a draft
written before a mid-month cancellation is rated again when it is finalized (by period, by id, by the command),
so the customer pays for the days the subscription ran; a customer the run cannot rate keeps its draft, unissued;
a draft whose period has nothing left to bill is refused by id."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing import customers as service
from billing.cli import app
from billing.config import get_settings
from billing.core.periods import month
from billing.db import make_engine, session_scope
from billing.errors import ConflictError
from billing.ingestion import ingest_batch
from billing.invoicing import OpenPeriodError
from billing.run import finalize_after_run, finalize_draft_fresh, finalize_period, finalize_period_fresh, run_billing
from billing.scheduler import bill_closed_periods
from invoices import store
from meters.ingest import write_postgres, write_sqlite
from pricing_plans.loader import loads_catalog

pytestmark = pytest.mark.db

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.adv]
name = "Adv"
currency = "USD"
subscription = { fee = 31.00, billing = "in_advance" }

[plans.arr]
name = "Arr"
currency = "USD"
subscription = { fee = 31.00, billing = "in_arrears" }
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 1.00 }]

[plans.wk]
name = "Weekly"
currency = "USD"
interval = "week"
subscription = { fee = 7.00, billing = "in_arrears" }

[plans.wka]
name = "Weekly ahead"
currency = "USD"
interval = "week"
subscription = { fee = 7.00, billing = "in_advance" }

[plans.legacy]
name = "Legacy"
currency = "USD"
subscription = { fee = 30.00, billing = "in_advance" }
"""

WITHOUT_ARR = CATALOG[: CATALOG.index("[plans.arr]")] + CATALOG[CATALOG.index("[plans.wk]") :]
WITHOUT_WK = CATALOG[: CATALOG.index("[plans.wk]")] + CATALOG[CATALOG.index("[plans.wka]") :]
WITHOUT_LEGACY = CATALOG[: CATALOG.index("[plans.legacy]")]

D = dt.date
SETTINGS = store.FinalizeSettings()
MARCH = month(2026, 3)


def load(text: str = CATALOG):
    loaded, problems = loads_catalog(text, "fresh.toml")
    assert not problems, problems
    return loaded


@pytest.fixture
def catalog():
    return load()


def at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), dt.UTC)


def fee_lines(engine, key: str) -> tuple[str, list[tuple[str, str]]]:
    """The invoice's status and its subscription lines: (description, amount)."""
    with session_scope(engine) as session:
        invoice = store.get_invoice(session, key)
        return invoice.status.value, [(line.description, str(line.amount)) for line in invoice.lines
                                      if line.kind == "subscription"]


def march_preview_then_cancelled(engine, catalog, plan: str) -> int:
    """acme on ``plan`` since 1 January, February issued on 1 March; March's draft written on 10 March (a preview);
    then the subscription cancelled on 16 March (its last day the 15th). The March draft's id."""
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", plan, D(2026, 1, 1))
    for number in (1, 2):
        period = month(2026, number)
        run_billing(engine, catalog, period, now=at(period.end))
        finalize_period(engine, period, SETTINGS, period.end, now=at(period.end))
    run_billing(engine, catalog, MARCH, now=at(D(2026, 3, 10)))
    status, lines = fee_lines(engine, "period:acme:2026-03")
    # as written before the cancellation: March's whole fee in arrears, April's in advance
    assert (status, [amount for _, amount in lines]) == ("draft", ["31.00"])
    service.cancel_subscription(engine, sub.id, D(2026, 3, 16), catalog=catalog)
    with session_scope(engine) as session:
        return store.get_invoice(session, "period:acme:2026-03").id


def test_a_period_finalized_after_a_cancellation_bills_the_days_the_subscription_ran(engine, catalog):
    march_preview_then_cancelled(engine, catalog, "arr")
    report, numbers = finalize_period_fresh(engine, catalog, MARCH, SETTINGS, D(2026, 4, 1), now=at(D(2026, 4, 1)))
    assert (report.updated, len(numbers)) == (1, 1)
    # 31.00 × 15 of 31 days
    assert fee_lines(engine, "period:acme:2026-03") == ("finalized", [("Arr subscription, 2026-03 (in arrears)",
                                                                         "15.00")])


def test_an_advance_fee_finalized_after_a_cancellation_is_given_back_not_billed_again(engine, catalog):
    march_preview_then_cancelled(engine, catalog, "adv")
    # February's invoice billed March in advance (31.00); the draft of 10 March billed April in advance
    assert [amount for _, amount in fee_lines(engine, "period:acme:2026-02")[1]] == ["31.00"]
    finalize_period_fresh(engine, catalog, MARCH, SETTINGS, D(2026, 4, 1), now=at(D(2026, 4, 1)))
    status, lines = fee_lines(engine, "period:acme:2026-03")
    # no April fee; March's: 15 of 31 days ran, 31.00 was billed: 15.00 − 31.00
    assert (status, [amount for _, amount in lines]) == ("finalized", ["-16.00"])


def test_one_draft_finalized_by_id_is_rated_again_first(engine, catalog):
    draft = march_preview_then_cancelled(engine, catalog, "arr")
    issued = finalize_draft_fresh(engine, catalog, draft, SETTINGS, D(2026, 4, 1), now=at(D(2026, 4, 1)))
    assert (issued.id, str(issued.total)) == (draft, "15.00")
    assert fee_lines(engine, "period:acme:2026-03")[1] == [("Arr subscription, 2026-03 (in arrears)", "15.00")]


def test_a_customer_the_run_cannot_rate_keeps_its_draft(engine, catalog):
    draft = march_preview_then_cancelled(engine, catalog, "arr")
    service.create_customer(engine, "beta", "Beta", None, "USD", timezone="UTC")
    service.subscribe(engine, catalog, "beta", "adv", D(2026, 3, 1))
    missing = load(WITHOUT_ARR)  # plan arr is gone from the catalog: acme cannot be rated
    report, numbers = finalize_period_fresh(engine, missing, MARCH, SETTINGS, D(2026, 4, 1), now=at(D(2026, 4, 1)))
    assert {who for who, _ in report.skipped} == {"acme"}
    assert len(numbers) == 2  # beta's opening invoice and its March invoice; acme's draft stays one
    assert fee_lines(engine, "period:acme:2026-03") == ("draft", [("Arr subscription, 2026-03 (in arrears)", "31.00")])
    with pytest.raises(ConflictError, match=r"customer .acme. cannot be rated now .*nothing was finalized"):
        finalize_draft_fresh(engine, missing, draft, SETTINGS, D(2026, 4, 1), now=at(D(2026, 4, 1)))
    assert fee_lines(engine, "period:acme:2026-03")[0] == "draft"


def test_a_draft_whose_period_has_nothing_left_to_bill_is_refused_by_id_and_deleted(engine, catalog):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", "arr", D(2026, 3, 1))
    run_billing(engine, catalog, MARCH, now=at(D(2026, 3, 10)))
    draft = fee_lines(engine, "period:acme:2026-03")
    assert draft == ("draft", [("Arr subscription, 2026-03 (in arrears)", "31.00")])
    service.cancel_subscription(engine, sub.id, D(2026, 3, 1), catalog=catalog)  # on its start day: no day covered
    with session_scope(engine) as session:
        draft_id = store.get_invoice(session, "period:acme:2026-03").id
    with pytest.raises(ConflictError, match="nothing left to bill for 2026-03-01 to 2026-03-31"):
        finalize_draft_fresh(engine, catalog, draft_id, SETTINGS, D(2026, 4, 1), now=at(D(2026, 4, 1)))
    with session_scope(engine) as session:
        assert store.stored_drafts(session, ["period:acme:2026-03"]) == {}


def test_the_command_finalizes_a_period_as_rated_now(cli_env, catalog, tmp_path: Path, monkeypatch):
    path = tmp_path / "fresh.toml"
    path.write_text(CATALOG, encoding="utf-8")
    monkeypatch.setenv("BILLING_CATALOG", str(path))
    get_settings.cache_clear()
    engine = make_engine(cli_env["BILLING_DATABASE_URL"])
    try:
        march_preview_then_cancelled(engine, catalog, "arr")
        misused = CliRunner().invoke(app, ["invoices", "finalize", "1", "--as-written"])
        assert misused.exit_code == 2 and "--as-written goes with --period" in misused.output
        done = CliRunner().invoke(app, ["invoices", "finalize", "--period", "2026-03"])
        assert done.exit_code == 0, done.output
        assert "finalized 1 invoice(s)" in done.output
        assert "(1 draft(s) rated again first: changed since written)" in " ".join(done.output.split())
        assert fee_lines(engine, "period:acme:2026-03")[1] == [("Arr subscription, 2026-03 (in arrears)", "15.00")]
    finally:
        engine.dispose()


def test_the_command_can_issue_drafts_as_written(cli_env, catalog, tmp_path: Path, monkeypatch):
    """``--as-written``: right after the shards' runs, the drafts are issued without a run of the whole period (so
    here, written before the cancellation, the month's fee), but those of a customer with a plan gone from the
    catalog, which stay drafts."""
    path = tmp_path / "fresh.toml"
    monkeypatch.setenv("BILLING_CATALOG", str(path))
    engine = make_engine(cli_env["BILLING_DATABASE_URL"])
    try:
        march_preview_then_cancelled(engine, catalog, "arr")
        path.write_text(WITHOUT_ARR, encoding="utf-8")
        get_settings.cache_clear()
        held = CliRunner().invoke(app, ["invoices", "finalize", "--period", "2026-03", "--as-written", "--json"])
        assert held.exit_code == 0, held.output
        assert json.loads(held.output) == {"finalized": [], "awaiting_approval": [], "left_as_drafts": [
            {"customer": "acme", "reason": "subscription 1: unknown plan 'arr' (known plans: adv, legacy, wk, wka)"}
        ]}
        assert fee_lines(engine, "period:acme:2026-03")[0] == "draft"
        path.write_text(CATALOG, encoding="utf-8")
        get_settings.cache_clear()
        done = CliRunner().invoke(app, ["invoices", "finalize", "--period", "2026-03", "--as-written"])
        assert done.exit_code == 0, done.output
        assert "finalized 1 invoice(s)" in done.output and "rated again" not in done.output
        assert fee_lines(engine, "period:acme:2026-03") == ("finalized", [("Arr subscription, 2026-03 (in arrears)",
                                                                             "31.00")])
    finally:
        engine.dispose()


def calls(count: int, first: int = 0) -> list[dict]:
    return [{"id": f"e{n}", "customer": "acme", "meter": "api_calls", "timestamp": "2026-10-20T12:00:00Z"}
            for n in range(first, first + count)]


@pytest.mark.parametrize("how", ["period", "id"])
def test_an_event_being_stored_while_a_finalization_runs_is_billed(engine, catalog, monkeypatch, how):
    """The run of a finalization counts the usage stored up to the ingestion cutoff, which waits for the chunks
    being stored: an event whose chunk commits while the finalization runs is on the invoice (a cutoff read from the
    clock would leave it on none: received before it, so never late, yet not stored when the month was counted)."""
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "arr", D(2026, 10, 1))
    assert ingest_batch(engine, catalog, calls(3), now=at(D(2026, 10, 20))).accepted == 3
    run_billing(engine, catalog, month(2026, 10))  # the draft: 31.00 + 3 calls
    stored = threading.Event()
    writers = [write_sqlite.SqliteWriter, write_postgres.PostgresWriter]
    originals = {writer: writer.store for writer in writers}

    def store_slowly(self, connection, events):
        done = originals[type(self)](self, connection, events)  # stored, its chunk's transaction still open
        stored.set()
        time.sleep(1)
        return done

    for writer in writers:
        monkeypatch.setattr(writer, "store", store_slowly)
    late = threading.Thread(target=ingest_batch, args=(engine, catalog, calls(1, first=99)))
    late.start()
    assert stored.wait(30)
    if how == "period":
        finalize_period_fresh(engine, catalog, month(2026, 10), SETTINGS, D(2026, 11, 2))
    else:
        finalize_draft_fresh(engine, catalog, "period:acme:2026-10", SETTINGS, D(2026, 11, 2))
    late.join()
    with session_scope(engine) as session:
        issued = store.get_invoice(session, "period:acme:2026-10")
    assert (issued.status.value, str(issued.total)) == ("finalized", "35.00")  # 31.00 + 4 calls × 1.00


def test_an_opening_draft_finalized_by_id_is_composed_again(engine, catalog):
    """Subscribed from 16 November on a plan billed in advance (its opening draft: 16 of 30 days of 31.00, no tax),
    then the customer's tax rate set to 20 %: the opening invoice issued by id is taxed."""
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "adv", D(2026, 11, 16))
    with session_scope(engine) as session:
        written = store.get_invoice(session, "start:1")
    assert (str(written.tax), str(written.total)) == ("0.00", "15.50")  # 31.00 × 15 / 30
    service.update_customer(engine, "acme", {"tax_rate": "20"})
    issued = finalize_draft_fresh(engine, catalog, written.id, SETTINGS, D(2026, 11, 20), now=at(D(2026, 11, 20)))
    assert (issued.status.value, str(issued.tax), str(issued.total)) == ("finalized", "3.10", "18.60")


def test_a_weekly_customer_that_cannot_be_rated_keeps_its_week_drafts(engine, catalog):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "wk", D(2026, 9, 28))
    run_billing(engine, catalog, month(2026, 10), now=at(D(2026, 11, 2)))
    with session_scope(engine) as session:
        weeks = sorted(key for key in store.stored_drafts(session, [f"period:acme:2026-W{n}" for n in range(40, 45)]))
    assert weeks == ["period:acme:2026-W40", "period:acme:2026-W41", "period:acme:2026-W42", "period:acme:2026-W43"]
    gone = load(WITHOUT_WK)
    with session_scope(engine) as session:
        week = store.get_invoice(session, "period:acme:2026-W41").id
    with pytest.raises(ConflictError, match="cannot be rated now"):
        finalize_draft_fresh(engine, gone, week, SETTINGS, D(2026, 11, 2), now=at(D(2026, 11, 2)))
    report, numbers = finalize_period_fresh(engine, gone, month(2026, 10), SETTINGS, D(2026, 11, 2),
                                            now=at(D(2026, 11, 2)))
    assert numbers == [] and {who for who, _ in report.skipped} == {"acme"} and report.removed == []
    with session_scope(engine) as session:
        assert sorted(store.stored_drafts(session, weeks)) == weeks  # every week still a draft


def test_a_refused_finalization_by_id_writes_nothing(engine, catalog):
    """A draft of the current month, finalized by id without allow_open_period: refused before the run, so the
    draft stays as it was written (the cancellation since is not in it yet)."""
    draft = march_preview_then_cancelled(engine, catalog, "arr")
    with pytest.raises(OpenPeriodError, match="has not ended"):
        finalize_draft_fresh(engine, catalog, draft, SETTINGS, D(2026, 3, 20), now=at(D(2026, 3, 20)))
    assert fee_lines(engine, "period:acme:2026-03") == ("draft", [("Arr subscription, 2026-03 (in arrears)",
                                                                     "31.00")])


def drafts_and_issued(engine) -> list[tuple[str, str, str]]:
    """(billing key, status, total) of every invoice."""
    with session_scope(engine) as session:
        return sorted((i.billing_key, i.status.value, str(i.total)) for i in store.list_invoices(session))


def test_the_scheduler_issues_a_customers_weeks_as_its_cycle_rates_them(engine, catalog):
    """acme billed weekly, cancelled on 15 October after October's weeks were written; beta's October already
    issued (so the cycle bills no whole month). The cycle rates the weeks before it issues the month's drafts:
    week 42 bills 3 of its 7 days, week 43 nothing (its draft deleted)."""
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    service.create_customer(engine, "beta", "Beta", None, "USD", timezone="UTC")
    weekly = service.subscribe(engine, catalog, "acme", "wk", D(2026, 9, 28))
    service.subscribe(engine, catalog, "beta", "arr", D(2026, 10, 1))
    october = month(2026, 10)
    run_billing(engine, catalog, october, now=at(D(2026, 11, 1)))
    finalize_period(engine, october, SETTINGS, D(2026, 11, 1), customer="beta", now=at(D(2026, 11, 1)))
    service.cancel_subscription(engine, weekly.id, D(2026, 10, 15), catalog=catalog)
    bill_closed_periods(engine, catalog, SETTINGS, 5, now=at(D(2026, 11, 8)))
    assert [row for row in drafts_and_issued(engine) if row[0].startswith("period:acme")] == [
        ("period:acme:2026-W40", "finalized", "7.00"),
        ("period:acme:2026-W41", "finalized", "7.00"),
        ("period:acme:2026-W42", "finalized", "3.00"),  # 12 to 14 October
    ]


def test_a_run_keeps_the_week_drafts_of_a_customer_it_cannot_rate_beside_others(engine, catalog):
    for who, plan in (("acme", "wk"), ("beta", "wka")):
        service.create_customer(engine, who, who.title(), None, "USD", timezone="UTC")
        service.subscribe(engine, catalog, who, plan, D(2026, 9, 28))
    october = month(2026, 10)
    run_billing(engine, catalog, october, now=at(D(2026, 11, 1)))
    weeks = [f"period:acme:2026-W{n}" for n in range(40, 44)]
    with session_scope(engine) as session:
        assert sorted(store.stored_drafts(session, weeks)) == weeks
    again = run_billing(engine, load(WITHOUT_WK), october, now=at(D(2026, 11, 2)))
    assert {who for who, _ in again.skipped} == {"acme"} and again.removed == []
    with session_scope(engine) as session:
        assert sorted(store.stored_drafts(session, weeks)) == weeks


def test_a_run_that_cannot_rate_a_customer_never_writes_its_draft_without_that_plan(engine, catalog):
    """arr and legacy (30.00 in advance) from September; September issued (it billed October's 30.00 in advance);
    legacy cancelled on 1 October: October's draft gives the 30.00 back. With legacy gone from the catalog, a run
    keeps that draft as it was, and counts acme's events as skipped, not rated."""
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "arr", D(2026, 9, 1))
    legacy = service.subscribe(engine, catalog, "acme", "legacy", D(2026, 9, 1))
    september, october = month(2026, 9), month(2026, 10)
    run_billing(engine, catalog, september, now=at(D(2026, 10, 1)))
    finalize_period(engine, september, SETTINGS, D(2026, 10, 1), now=at(D(2026, 10, 1)))
    service.cancel_subscription(engine, legacy.id, D(2026, 10, 1), catalog=catalog)
    assert ingest_batch(engine, catalog, calls(5), now=at(D(2026, 10, 20))).accepted == 5
    run_billing(engine, catalog, october, now=at(D(2026, 11, 1)))
    written = [row for row in drafts_and_issued(engine) if row[0] == "period:acme:2026-10"]
    assert written == [("period:acme:2026-10", "draft", "6.00")]  # 31.00 + 5 calls − 30.00 given back
    again = run_billing(engine, load(WITHOUT_LEGACY), october, now=at(D(2026, 11, 2)))
    assert {who for who, _ in again.skipped} == {"acme"} and (again.updated, again.events) == (0, 0)
    assert [(g.customer, g.meter, g.reason.value, g.events) for g in again.unbilled] == [
        ("acme", "api_calls", "customer_skipped", 5)
    ]
    assert [row for row in drafts_and_issued(engine) if row[0] == "period:acme:2026-10"] == written


def test_a_run_finalized_at_once_composes_its_opening_drafts_again(engine, catalog):
    """A weekly plan billed in advance from Thursday 29 October (its first week ends in November: October's run
    does not compose its opening invoice), then the customer's tax rate set to 20 %: `billing run --finalize` of
    October issues the opening invoice taxed (4 of 7 days of 7.00: 4.00, tax 0.80)."""
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "wka", D(2026, 10, 29))
    service.update_customer(engine, "acme", {"tax_rate": "20"})
    october = month(2026, 10)
    report = run_billing(engine, catalog, october, now=at(D(2026, 11, 2)))
    finalize_after_run(engine, catalog, october, report, SETTINGS, D(2026, 11, 2), now=at(D(2026, 11, 2)))
    with session_scope(engine) as session:
        opening = store.get_invoice(session, "start:1")
    assert (opening.status.value, str(opening.tax), str(opening.total)) == ("finalized", "0.80", "4.80")


def test_a_plan_gone_that_ended_before_the_month_holds_nothing_back(engine, catalog):
    """legacy ended on 20 September (now gone from the catalog); arr from 1 October, its draft written on the 10th,
    then cancelled on its start day. October's finalization deletes the draft (nothing to bill) and issues nothing:
    the old plan neither keeps the draft nor holds the customer."""
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    legacy = service.subscribe(engine, catalog, "acme", "legacy", D(2026, 9, 1))
    service.cancel_subscription(engine, legacy.id, D(2026, 9, 20), catalog=catalog)
    arr = service.subscribe(engine, catalog, "acme", "arr", D(2026, 10, 1))
    october = month(2026, 10)
    run_billing(engine, catalog, october, now=at(D(2026, 10, 10)))
    service.cancel_subscription(engine, arr.id, D(2026, 10, 1), catalog=catalog)  # covers no day now
    report, numbers = finalize_period_fresh(engine, load(WITHOUT_LEGACY), october, SETTINGS, D(2026, 11, 1),
                                            now=at(D(2026, 11, 1)))
    assert (numbers, report.unrated, report.removed) == ([], set(), ["period:acme:2026-10"])
    assert [row for row in drafts_and_issued(engine) if "2026-10" in row[0]] == []


def test_late_usage_on_a_plan_gone_does_not_hold_the_customer(engine, catalog):
    """legacy until 15 February, then arr; February issued; an event of 20 February received on 5 March (late
    usage of February, under arr). With legacy gone from the catalog, March is still issued (31.00 and the late
    call); legacy's late lines (none here) would be left out and listed among the skipped."""
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    legacy = service.subscribe(engine, catalog, "acme", "legacy", D(2026, 1, 1))
    service.change_plan(engine, catalog, legacy.id, "arr", D(2026, 2, 15))
    february = month(2026, 2)
    run_billing(engine, catalog, february, now=at(D(2026, 3, 1)))
    finalize_period(engine, february, SETTINGS, D(2026, 3, 1), now=at(D(2026, 3, 1)))
    late = [{"id": "late-1", "customer": "acme", "meter": "api_calls", "timestamp": "2026-02-20T12:00:00Z"}]
    assert ingest_batch(engine, catalog, late, now=at(D(2026, 3, 5))).accepted == 1
    report, numbers = finalize_period_fresh(engine, load(WITHOUT_LEGACY), MARCH, SETTINGS, D(2026, 4, 1),
                                            now=at(D(2026, 4, 1)))
    assert report.unrated == set() and len(numbers) == 1
    assert [row for row in drafts_and_issued(engine) if "2026-03" in row[0]] == [
        ("period:acme:2026-03", "finalized", "32.00")
    ]


def test_the_cycle_goes_on_when_every_due_customer_of_a_day_is_left(engine, catalog):
    """acme on arr and on wk; October's month invoice issued by id, week 43 still a draft; then wk gone from the
    catalog. The cycle's run of acme's October cannot rate it, leaves its draft, and the cycle finishes."""
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "arr", D(2026, 10, 1))
    service.subscribe(engine, catalog, "acme", "wk", D(2026, 9, 28))
    bill_closed_periods(engine, catalog, SETTINGS, 10, now=at(D(2026, 11, 2)))
    with session_scope(engine) as session:
        month_draft = store.get_invoice(session, "period:acme:2026-10").id
    finalize_draft_fresh(engine, catalog, month_draft, SETTINGS, D(2026, 11, 3), now=at(D(2026, 11, 3)))
    report = bill_closed_periods(engine, load(WITHOUT_WK), SETTINGS, 10, now=at(D(2026, 11, 12)))
    assert "acme" in report.unrated and report.finalized == []
    assert ("period:acme:2026-W43", "draft", "7.00") in drafts_and_issued(engine)


WITHOUT_WKA = CATALOG[: CATALOG.index("[plans.wka]")] + CATALOG[CATALOG.index("[plans.legacy]") :]


def test_a_week_draft_of_a_plan_gone_that_ended_before_the_month_is_kept_and_held(engine, catalog):
    """wk from 28 September to 29 October: November's run writes week 44 (26 October to 1 November: 4 of its days,
    4.00). With wk gone from the catalog, November's finalization keeps that draft, unissued (not deleted as if
    nothing were left to bill), and finalizing it by id is refused for what it is."""
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    weekly = service.subscribe(engine, catalog, "acme", "wk", D(2026, 9, 28))
    service.cancel_subscription(engine, weekly.id, D(2026, 10, 30), catalog=catalog)
    november = month(2026, 11)
    run_billing(engine, catalog, november, now=at(D(2026, 11, 2)))
    assert ("period:acme:2026-W44", "draft", "4.00") in drafts_and_issued(engine)
    gone = load(WITHOUT_WK)
    with session_scope(engine) as session:
        week = store.get_invoice(session, "period:acme:2026-W44").id
    with pytest.raises(ConflictError, match="cannot be rated now"):
        finalize_draft_fresh(engine, gone, week, SETTINGS, D(2026, 12, 1), now=at(D(2026, 12, 1)))
    report, numbers = finalize_period_fresh(engine, gone, november, SETTINGS, D(2026, 12, 1), now=at(D(2026, 12, 1)))
    assert (numbers, report.unrated, report.removed) == ([], {"acme"}, [])
    assert ("period:acme:2026-W44", "draft", "4.00") in drafts_and_issued(engine)


def test_a_week_that_gives_back_a_fee_of_a_plan_gone_is_never_issued_without_it(engine, catalog):
    """wk and wka (7.00 a week in advance) from 5 October; wka cancelled as week 46 begins (9 November): week 46's
    draft bills wk's 7.00 and gives wka's 7.00 back (0.00). With wka gone from the catalog, neither a run nor the
    scheduler writes that week again without the 7.00 given back, nor issues it."""
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "wk", D(2026, 10, 5))
    ahead = service.subscribe(engine, catalog, "acme", "wka", D(2026, 10, 5))
    bill_closed_periods(engine, catalog, SETTINGS, 3, now=at(D(2026, 11, 12)))
    service.cancel_subscription(engine, ahead.id, D(2026, 11, 9), catalog=catalog)
    bill_closed_periods(engine, catalog, SETTINGS, 3, now=at(D(2026, 11, 16)))
    assert ("period:acme:2026-W46", "draft", "0.00") in drafts_and_issued(engine)
    gone = load(WITHOUT_WKA)
    again = run_billing(engine, gone, month(2026, 11), now=at(D(2026, 11, 17)))
    assert "acme" in again.unrated and again.updated == 0
    cycle = bill_closed_periods(engine, gone, SETTINGS, 3, now=at(D(2026, 11, 20)))
    assert "acme" in cycle.unrated and cycle.finalized == []
    assert ("period:acme:2026-W46", "draft", "0.00") in drafts_and_issued(engine)
