"""The billing run against a real database (SQLite and PostgreSQL): hand-checked invoices, idempotent re-runs,
late usage, a mid-month upgrade, and a run killed with SIGKILL part-way then run again."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from billing import customers as service
from billing.db import session_scope
from billing.metering import meter_specs
from billing.periods import month
from billing.run import finalize_period, run_billing
from invoices import store
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
SETTINGS = store.FinalizeSettings()


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "run.toml")
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
    assert report.created == 2
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
    customers = [f"c{i:04d}" for i in range(1500)]
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
    process = subprocess.Popen(
        [sys.executable, "-m", "billing.cli", "run", "--period", "2026-03"], env=env, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    written = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        with session_scope(engine) as session:
            written = session.scalar(select(func.count()).select_from(InvoiceRow))
        if written >= 50:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read() if process.stderr else ""
    with session_scope(engine) as session:
        part = session.scalar(select(func.count()).select_from(InvoiceRow))
    assert 0 < part < len(customers), f"the run was not caught part-way ({part} invoices)"

    rerun = subprocess.run(
        [sys.executable, "-m", "billing.cli", "run", "--period", "2026-03"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert _snapshot(engine) == expected

