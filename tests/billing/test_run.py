"""The billing run against a real database (SQLite and PostgreSQL): hand-checked invoices, idempotent re-runs,
late usage, a mid-month upgrade, and a run killed with SIGKILL part-way then run again."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from billing import customers as service
from billing import run as billing_run
from billing.core.periods import month
from billing.db import session_scope
from billing.metering import meter_specs
from billing.run import finalize_period, run_billing
from invoices import store
from invoices.errors import InvoiceNotFoundError
from invoices.tables import InvoiceRow
from meters import ingest
from pricing_plans.loader import load_catalog_or_raise, loads_catalog

ROOT = Path(__file__).resolve().parents[2]

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
unit = "call"

[meters.storage_gb]
name = "Storage"
aggregation = "weighted_sum"
unit = "GB-month"

[plans.basic]
name = "Basic"
currency = "USD"
[plans.basic.subscription]
fee = 30.00
billing = "in_arrears"
[[plans.basic.charges]]
meter = "api_calls"
model = "graduated"
tiers = [
  { up_to = 100, unit_amount = 0.50 }, { up_to = 1000, unit_amount = 0.40 }, { up_to = "inf", unit_amount = 0.30 },
]
[[plans.basic.charges]]
meter = "storage_gb"
model = "per_unit"
unit_amount = 0.10

[plans.pro]
name = "Pro"
currency = "USD"
[plans.pro.subscription]
fee = 62.00
billing = "in_advance"
[[plans.pro.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.01
"""

MARCH, APRIL = month(2026, 3), month(2026, 4)

YEARLY_AND_MORE = """
[plans.max]
name = "Max"
currency = "USD"
[plans.max.subscription]
fee = 93.00
billing = "in_advance"

[plans.annual]
name = "Annual"
currency = "USD"
interval = "year"
[plans.annual.subscription]
fee = 1200.00
billing = "in_arrears"

[plans.annual_upfront]
name = "Annual upfront"
currency = "USD"
interval = "year"
[plans.annual_upfront.subscription]
fee = 3650.00
billing = "in_advance"
"""
SETTINGS = store.FinalizeSettings()


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG + YEARLY_AND_MORE, "run.toml")
    assert not problems
    return loaded


def calls(customer: str, n: int, day: str, prefix: str) -> list[dict]:
    return [
        {"id": f"{prefix}-{i}", "customer": customer, "meter": "api_calls", "timestamp": f"{day}T12:00:00Z"}
        for i in range(n)
    ]


def put(engine, catalog, events, now=None):
    report = ingest(engine, events, meter_specs(catalog), {"acme", "beta"}, now=now)
    assert not report.rejected, report.rejected
    return report


def invoice_of(engine, key):
    with session_scope(engine) as session:
        return store.get_invoice(session, key)


def amounts(invoice):
    return [(line.kind, line.meter, str(line.amount)) for line in invoice.lines]


def test_a_run_writes_one_hand_checked_invoice_per_customer_and_reruns_change_nothing(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "basic", dt.date(2026, 3, 17))
    put(engine, catalog, calls("acme", 150, "2026-03-20", "a"))
    # 10 GB stored from 17 March 00:00 UTC: the level is 10 for 15 of March's 31 days → 10 × 15/31 GB-month
    put(engine, catalog, [{"id": "s1", "customer": "acme", "meter": "storage_gb",
                           "timestamp": "2026-03-17T00:00:00Z", "value": "10"}])
    report = run_billing(engine, catalog, MARCH)
    assert (report.created, report.updated, report.unchanged) == (1, 0, 0)
    invoice = invoice_of(engine, "period:acme:2026-03")
    # fee 30.00 × 15/31 = 14.516… → 14.52; calls 100 × 0.50 + 50 × 0.40 = 70.00;
    # storage 10 × 15/31 = 4.838710 GB-month × 0.10 = 0.483871 → 0.48
    assert amounts(invoice) == [
        ("subscription", None, "14.52"), ("usage", "api_calls", "70.00"), ("usage", "storage_gb", "0.48"),
    ]
    assert str(invoice.lines[2].quantity) == "4.838710"
    assert str(invoice.total) == "85.00"

    again = run_billing(engine, catalog, MARCH)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 1)
    put(engine, catalog, calls("acme", 10, "2026-03-21", "b"))
    refreshed = run_billing(engine, catalog, MARCH)
    assert (refreshed.created, refreshed.updated) == (0, 1)
    # 160 calls: 50.00 + 60 × 0.40 = 74.00
    assert amounts(invoice_of(engine, "period:acme:2026-03"))[1] == ("usage", "api_calls", "74.00")
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(InvoiceRow)) == 1


def test_finalized_invoices_are_left_alone_and_late_usage_goes_on_the_next_invoice(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "basic", dt.date(2026, 1, 1))
    put(engine, catalog, calls("acme", 100, "2026-03-10", "a"))
    run_billing(engine, catalog, MARCH)
    numbers = finalize_period(engine, MARCH, SETTINGS, dt.date(2026, 4, 2))
    assert numbers == ["INV-2026-000001"]
    # 50 March calls arrive after March was invoiced
    put(engine, catalog, calls("acme", 50, "2026-03-31", "late"))
    put(engine, catalog, calls("acme", 10, "2026-04-03", "apr"))
    march_again = run_billing(engine, catalog, MARCH)
    assert march_again.issued_untouched == 1
    assert str(invoice_of(engine, "INV-2026-000001").total) == "80.00"  # 30.00 + 100 × 0.50
    april = run_billing(engine, catalog, APRIL)
    assert april.late_lines == 1
    invoice = invoice_of(engine, "period:acme:2026-04")
    # April: fee 30.00, 10 calls × 0.50 = 5.00, storage 0.00; late March: 150 calls now rate to
    # 100 × 0.50 + 50 × 0.40 = 70.00, 50.00 was billed → 20.00 (priced in the second tier)
    assert amounts(invoice) == [
        ("subscription", None, "30.00"), ("usage", "api_calls", "5.00"), ("usage", "storage_gb", "0.00"),
        ("late_usage", "api_calls", "20.00"),
    ]
    late = invoice.lines[-1]
    assert "2026-03" in late.description and late.service_start == dt.date(2026, 3, 1)
    # finalizing April and running it again bills the late usage once only
    finalize_period(engine, APRIL, SETTINGS, dt.date(2026, 5, 2))
    may = run_billing(engine, catalog, month(2026, 5))
    assert may.late_lines == 0


def test_mid_month_upgrade_two_sections_and_the_opening_invoice(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="Europe/Berlin")
    basic = service.subscribe(engine, catalog, "acme", "basic", dt.date(2026, 1, 1))
    service.change_plan(engine, catalog, basic.id, "pro", dt.date(2026, 3, 16))
    put(engine, catalog, calls("acme", 100, "2026-03-10", "a") + calls("acme", 200, "2026-03-20", "b"))
    report = run_billing(engine, catalog, MARCH)
    # the period invoice; pro's opening invoice was written by the plan change, and the run finds it unchanged
    assert (report.created, report.unchanged) == (1, 1)
    invoice = invoice_of(engine, "period:acme:2026-03")
    # basic 1–15 March: fee 30.00 × 15/31 = 14.516… → 14.52, 100 calls × 0.50 = 50.00, storage 0.00;
    # pro from 16 March: 200 calls × 0.01 = 2.00, then April's fee in advance 62.00
    assert amounts(invoice) == [
        ("subscription", None, "14.52"), ("usage", "api_calls", "50.00"), ("usage", "storage_gb", "0.00"),
        ("usage", "api_calls", "2.00"), ("subscription", None, "62.00"),
    ]
    assert len({line.section for line in invoice.lines}) == 2
    opening = invoice_of(engine, f"start:{basic.id + 1}")
    # pro's first fee, at its start: 62.00 × 16/31 = 32.00
    assert amounts(opening) == [("subscription", None, "32.00")]


def test_late_usage_on_an_open_invoice_is_not_billed_again_on_the_next(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "basic", dt.date(2026, 1, 1))
    put(engine, catalog, calls("acme", 10, "2026-03-10", "a"))
    run_billing(engine, catalog, MARCH)
    finalize_period(engine, MARCH, SETTINGS, dt.date(2026, 4, 2))
    put(engine, catalog, calls("acme", 5, "2026-03-30", "late"))
    run_billing(engine, catalog, APRIL)  # April, still a draft, bills the 5 late calls: 5 × 0.50 = 2.50
    may = run_billing(engine, catalog, month(2026, 5))
    assert may.late_lines == 0
    run_billing(engine, catalog, APRIL)  # refreshing April keeps its late line once
    late = [
        (invoice.billing_key, str(line.amount))
        for key in ("period:acme:2026-04", "period:acme:2026-05")
        for invoice in [invoice_of(engine, key)]
        for line in invoice.lines
        if line.kind == "late_usage"
    ]
    assert late == [("period:acme:2026-04", "2.50")]


def test_a_yearly_in_arrears_fee_is_billed_when_the_subscription_ends_mid_year(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", "annual", dt.date(2026, 1, 1))
    service.cancel_subscription(engine, sub.id, dt.date(2026, 7, 1))
    fees = []
    for number in range(1, 8):
        run_billing(engine, catalog, month(2026, number))
        finalize_period(engine, month(2026, number), SETTINGS, dt.date(2026, number, 28))
    for number in range(1, 7):
        invoice = invoice_of(engine, f"period:acme:2026-{number:02d}")
        fees += [(number, str(line.amount)) for line in invoice.lines if line.kind == "subscription"]
    # 1 January to 30 June: 181 of 2026's 365 days: 1,200.00 × 181/365 = 595.068… → 595.07, on June's invoice
    # (the months before have nothing on them: their invoices record that they were billed)
    assert fees == [(6, "595.07")]
    assert [str(invoice_of(engine, f"period:acme:2026-{n:02d}").total) for n in range(1, 6)] == ["0.00"] * 5


def test_an_in_advance_fee_is_adjusted_when_the_plan_changes_mid_period(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    pro = service.subscribe(engine, catalog, "acme", "pro", dt.date(2026, 1, 1))
    run_billing(engine, catalog, month(2026, 2))  # bills March's fee in advance: 62.00
    finalize_period(engine, month(2026, 2), SETTINGS, dt.date(2026, 3, 2))
    service.change_plan(engine, catalog, pro.id, "max", dt.date(2026, 3, 16))
    run_billing(engine, catalog, MARCH)
    invoice = invoice_of(engine, "period:acme:2026-03")
    # pro ran 1–15 March: 62.00 × 15/31 = 30.00 due, 62.00 billed → −32.00; max (no usage charges): April's
    # fee 93.00 in advance
    assert [(line.kind, line.plan_code, str(line.amount)) for line in invoice.lines] == [
        ("usage", "pro", "0.00"), ("subscription", "pro", "-32.00"), ("subscription", "max", "93.00"),
    ]
    # max's own first fee, 16–31 March, is its opening invoice: 93.00 × 16/31 = 48.00; March costs 30 + 48
    opening = invoice_of(engine, f"start:{pro.id + 1}")
    assert [str(line.amount) for line in opening.lines] == ["48.00"]


def test_a_subscription_that_ends_as_the_period_begins_gets_its_advance_fee_back(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    pro = service.subscribe(engine, catalog, "acme", "pro", dt.date(2026, 1, 1))
    run_billing(engine, catalog, MARCH)  # bills April's fee in advance: 62.00
    finalize_period(engine, MARCH, SETTINGS, dt.date(2026, 4, 2))
    service.cancel_subscription(engine, pro.id, dt.date(2026, 4, 1))  # recorded after March was issued
    run_billing(engine, catalog, APRIL)
    invoice = invoice_of(engine, "period:acme:2026-04")
    assert [(line.kind, str(line.amount)) for line in invoice.lines] == [("subscription", "-62.00")]
    again = run_billing(engine, catalog, APRIL)
    assert (again.created, again.unchanged) == (0, 1)


def test_a_yearly_opening_invoice_is_finalized_with_its_start_month(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", "annual_upfront", dt.date(2026, 10, 17))
    run_billing(engine, catalog, month(2026, 10))
    numbers = finalize_period(engine, month(2026, 10), SETTINGS, dt.date(2026, 11, 2))
    opening = invoice_of(engine, f"start:{sub.id}")
    # 17 October to 31 December: 76 of 365 days: 3,650.00 × 76/365 = 760.00
    assert opening.number in numbers and [str(line.amount) for line in opening.lines] == ["760.00"]


def test_a_subscription_that_starts_and_ends_in_one_period_pays_its_days_once(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    pro = service.subscribe(engine, catalog, "acme", "pro", dt.date(2026, 3, 10))  # opening draft: 22 days
    service.cancel_subscription(engine, pro.id, dt.date(2026, 3, 20))
    run_billing(engine, catalog, MARCH)
    finalize_period(engine, MARCH, SETTINGS, dt.date(2026, 4, 2))
    fees = [
        (invoice.billing_key, str(line.amount))
        for key in (f"start:{pro.id}", "period:acme:2026-03")
        for invoice in [invoice_of(engine, key)]
        for line in invoice.lines
        if line.kind == "subscription"
    ]
    # 10–19 March: 62.00 × 10/31 = 20.00, on the opening invoice; nothing to adjust on March's
    assert fees == [(f"start:{pro.id}", "20.00")]


def test_a_yearly_opening_invoice_is_not_issued_before_its_subscription_starts(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", "annual_upfront", dt.date(2026, 3, 10))
    run_billing(engine, catalog, month(2026, 1))
    assert finalize_period(engine, month(2026, 1), SETTINGS, dt.date(2026, 2, 3)) == []
    assert invoice_of(engine, f"start:{sub.id}").number is None


def test_two_finalizations_of_one_period_at_once_share_the_work(engine, catalog):
    for name in ("a", "b", "c", "d"):
        service.create_customer(engine, name, name, None, "USD", timezone="UTC")
        service.subscribe(engine, catalog, name, "basic", dt.date(2026, 1, 1))
    run_billing(engine, catalog, MARCH)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def finalize() -> None:
        try:
            results.append(finalize_period(engine, MARCH, SETTINGS, dt.date(2026, 4, 2), batch=1))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=finalize) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(n for numbers in results for n in numbers) == [f"INV-2026-{i:06d}" for i in range(1, 5)]


def _snapshot(engine):
    with session_scope(engine) as session:
        invoices = store.list_invoices(session, with_lines=True)
    return {
        invoice.billing_key: (str(invoice.total), [(line.description, str(line.amount)) for line in invoice.lines])
        for invoice in invoices
    }


@pytest.mark.slow
def test_a_run_killed_part_way_and_run_again_gives_the_same_invoices(engine, db_url, tmp_path):
    catalog = load_catalog_or_raise(ROOT / "catalog.toml")
    specs = meter_specs(catalog)
    customers = [f"c{i:04d}" for i in range(1000)]  # five chunks: rated by forked worker processes
    from billing.db import repository

    with session_scope(engine) as session:
        for customer in customers:
            record = repository.add_customer(
                session, external_id=customer, name=customer, email=None, currency="USD", timezone="UTC",
                locale="en_US",
            )
            repository.add_subscription(
                session, customer=record, plan_code="api_growth", plan_version=1, start_date=dt.date(2026, 1, 1)
            )
    events = [
        {"id": f"{c}-{i}", "customer": c, "meter": "api_calls", "timestamp": "2026-03-05T10:00:00Z"}
        for n, c in enumerate(customers)
        for i in range(n % 7)
    ]
    assert not ingest(engine, events, specs, set(customers)).rejected

    reference = run_billing(engine, catalog, MARCH)
    assert reference.created == len(customers)
    expected = _snapshot(engine)
    with session_scope(engine) as session:
        session.execute(delete(InvoiceRow))  # drafts only: nothing issued yet

    env = {**os.environ, "BILLING_DATABASE_URL": db_url, "BILLING_CATALOG": str(ROOT / "catalog.toml"),
           "BILLING_CONFIG": str(ROOT / "config.toml")}
    # The process kills itself, as a power cut would, inside the transaction of its 51st invoice (the invoice row
    # written, its lines not): a fixed point, so the test does not depend on how fast the run is.
    crash_at_51 = (
        "import os, signal\n"
        "from invoices import store\n"
        "from billing.cli import main\n"
        "original, calls = store._Prepared.execute_many, []\n"
        "def execute_many(self, cursor, rows):\n"
        "    calls.append(1)\n"
        "    if len(calls) > 50:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return original(self, cursor, rows)\n"
        "store._Prepared.execute_many = execute_many\n"
        "main()\n"
    )
    process = subprocess.run(
        [sys.executable, "-c", crash_at_51, "run", "--period", "2026-03"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr
    with session_scope(engine) as session:
        part = session.scalar(select(func.count()).select_from(InvoiceRow))
    assert part == 50, f"expected the 50 invoices committed before the crash, found {part}"

    # (the killed run's worker processes die with it: on PostgreSQL, one left behind would keep the crashed
    # session and its locks alive, and this re-run would wait for ever)
    rerun = subprocess.run(
        [sys.executable, "-m", "billing.cli", "run", "--period", "2026-03"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert re.search(r"rating worker processes\s*│\s*[1-9]", rerun.stdout), rerun.stdout
    assert _snapshot(engine) == expected



def test_rating_in_worker_processes_writes_the_invoices_rating_here_writes(engine, catalog, monkeypatch, one_thread):
    monkeypatch.setattr(billing_run, "_CHUNK", 2)  # nine customers: five chunks, rated by two workers
    for n in range(9):
        service.create_customer(engine, f"c{n}", f"C{n}", None, "USD", timezone="UTC" if n % 2 else "Asia/Tokyo")
    subscribed = {n: service.subscribe(engine, catalog, f"c{n}", "basic", dt.date(2026, 1, 1)) for n in (0, 1, 2, 5, 7)}
    service.subscribe(engine, catalog, "c3", "pro", dt.date(2026, 1, 1))
    service.subscribe(engine, catalog, "c4", "pro", dt.date(2026, 3, 10))  # an opening invoice in March
    service.change_plan(engine, catalog, subscribed[5].id, "pro", dt.date(2026, 3, 16))  # two sections
    service.cancel_subscription(engine, subscribed[7].id, dt.date(2026, 3, 20))
    # c8 has no subscription at all; c6's ended before March
    sub6 = service.subscribe(engine, catalog, "c6", "basic", dt.date(2026, 1, 1))
    service.cancel_subscription(engine, sub6.id, dt.date(2026, 2, 1))
    events = [e for n in range(9) for e in calls(f"c{n}", 10 * n + 5, "2026-03-12", f"m{n}")]
    events += calls("c1", 20, "2026-02-10", "feb")
    report = ingest(engine, events, meter_specs(catalog), {f"c{n}" for n in range(9)})
    assert not report.rejected
    run_billing(engine, catalog, month(2026, 2))
    finalize_period(engine, month(2026, 2), SETTINGS, dt.date(2026, 3, 2))
    late = ingest(engine, calls("c1", 7, "2026-02-27", "late"), meter_specs(catalog), {"c1"})
    assert not late.rejected

    def march(workers):
        with session_scope(engine) as session:
            session.execute(delete(InvoiceRow).where(InvoiceRow.status == "draft"))
        return run_billing(engine, catalog, MARCH, workers=workers), _snapshot(engine)

    forked, forked_invoices = march(workers=2)
    here, here_invoices = march(workers=0)
    assert (forked.rating_workers, here.rating_workers) == (2, 0)
    assert forked_invoices == here_invoices
    summary = ("created", "updated", "unchanged", "issued_untouched", "skipped", "totals", "invoices", "customers",
               "late_lines")
    assert [getattr(forked, name) for name in summary] == [getattr(here, name) for name in summary]
    # c1 (basic, UTC): fee 30.00 + 15 calls × 0.50 = 7.50, storage 0.00, and February's 7 late calls: 27 calls
    # rate to 13.50, 10.00 was billed → 3.50
    assert forked_invoices["period:c1:2026-03"][0] == "41.00"
    # March: a period invoice for each customer subscribed in it (not c6, ended in January's last day, nor
    # c8), and the opening invoices of c4's subscription and of c5's new plan; February's six stay issued
    march_keys = sorted(k for k in forked_invoices if k.endswith("2026-03") or k.startswith("start:"))
    assert march_keys == [f"period:c{n}:2026-03" for n in (0, 1, 2, 3, 4, 5, 7)] + ["start:7", "start:8"]
    assert (forked.created, forked.issued_untouched, forked.late_lines, forked.skipped) == (9, 0, 1, [])


def test_late_usage_that_changes_nothing_gives_a_customer_who_left_no_empty_invoice(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    basic = service.subscribe(engine, catalog, "acme", "basic", dt.date(2026, 1, 1))
    service.cancel_subscription(engine, basic.id, dt.date(2026, 4, 1))
    put(engine, catalog, calls("acme", 10, "2026-03-10", "a"))
    run_billing(engine, catalog, MARCH)
    assert finalize_period(engine, MARCH, SETTINGS, dt.date(2026, 4, 2)) == ["INV-2026-000001"]
    # a storage reading of 0 GB for March arrives after March was invoiced: re-rated, March costs what it did
    put(engine, catalog, [{"id": "gauge", "customer": "acme", "meter": "storage_gb", "timestamp": "2026-03-30T08:00:00Z",
                           "value": 0}])
    april = run_billing(engine, catalog, APRIL)
    assert (april.created, april.invoices, april.late_lines, april.skipped) == (0, 0, 0, [])
    with pytest.raises(InvoiceNotFoundError, match="period:acme:2026-04"):
        invoice_of(engine, "period:acme:2026-04")


def test_an_advance_fee_settled_as_its_subscription_ends_leaves_no_empty_invoice_after(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    upfront = service.subscribe(engine, catalog, "acme", "annual_upfront", dt.date(2026, 1, 1))
    service.cancel_subscription(engine, upfront.id, dt.date(2026, 4, 1))  # known before anything is billed
    for number in (1, 2, 3):
        run_billing(engine, catalog, month(2026, number))
        finalize_period(engine, month(2026, number), SETTINGS, dt.date(2026, number, 28))
    # the opening invoice bills the days it runs, 1 January to 31 March: 90/365 × 3,650.00 = 900.00; the plan has
    # no usage charges, so January to March have nothing more on them
    assert [str(line.amount) for line in invoice_of(engine, f"start:{upfront.id}").lines] == ["900.00"]
    assert [str(invoice_of(engine, f"period:acme:2026-0{n}").total) for n in (1, 2, 3)] == ["0.00"] * 3
    april = run_billing(engine, catalog, APRIL)  # it ended as April began, its fee settled: no April invoice
    assert (april.created, april.invoices, april.skipped) == (0, 0, [])
    with pytest.raises(InvoiceNotFoundError):
        invoice_of(engine, "period:acme:2026-04")


def test_a_draft_left_with_nothing_to_invoice_is_removed_by_the_next_run(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    service.create_customer(engine, "beta", "Beta", "ap@beta.test", "USD", timezone="UTC")
    acme = service.subscribe(engine, catalog, "acme", "basic", dt.date(2026, 3, 1))
    service.subscribe(engine, catalog, "beta", "basic", dt.date(2026, 3, 1))
    first = run_billing(engine, catalog, APRIL)
    assert first.created == 2
    service.cancel_subscription(engine, acme.id, dt.date(2026, 4, 1))  # April is only a draft: allowed
    again = run_billing(engine, catalog, APRIL, customer="beta")  # a run for beta leaves acme's draft alone
    assert (again.unchanged, again.removed) == (1, [])
    again = run_billing(engine, catalog, APRIL)
    assert (again.unchanged, again.removed) == (1, ["period:acme:2026-04"])
    assert finalize_period(engine, APRIL, SETTINGS, dt.date(2026, 5, 2)) == ["INV-2026-000001"]
    assert invoice_of(engine, "INV-2026-000001").customer.external_id == "beta"  # acme owes nothing for April
    with pytest.raises(InvoiceNotFoundError):
        invoice_of(engine, "period:acme:2026-04")


def test_a_customer_the_run_cannot_rate_keeps_its_draft(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    service.create_customer(engine, "beta", "Beta", "ap@beta.test", "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "basic", dt.date(2026, 3, 1))
    service.subscribe(engine, catalog, "beta", "pro", dt.date(2026, 3, 1))
    assert run_billing(engine, catalog, APRIL).created == 2
    without_pro, problems = loads_catalog(CATALOG.split("[plans.pro]")[0], "run.toml")  # a catalog mistake
    assert not problems
    again = run_billing(engine, without_pro, APRIL)
    assert [c for c, _ in again.skipped] == ["beta"]  # its plan unknown: its draft is not written again
    assert (again.unchanged, again.removed) == (1, [])
    assert [str(line.amount) for line in invoice_of(engine, "period:beta:2026-04").lines] == ["0.00", "62.00"]


def test_an_end_date_inside_an_invoiced_period_is_refused_with_advice(engine, catalog):
    from billing.errors import BillingInputError

    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    pro = service.subscribe(engine, catalog, "acme", "pro", dt.date(2026, 3, 1))
    run_billing(engine, catalog, APRIL)
    finalize_period(engine, APRIL, SETTINGS, dt.date(2026, 5, 2))  # April issued, May's fee billed in advance
    with pytest.raises(BillingInputError, match=r"invoiced through 2026-04-30; end it on 2026-05-01 or later"):
        service.cancel_subscription(engine, pro.id, dt.date(2026, 4, 16))
    assert service.cancel_subscription(engine, pro.id, dt.date(2026, 5, 1)).end_date == dt.date(2026, 5, 1)
