"""A subscription's opening invoice (its first in-advance fee, prorated from its start): written as a draft when
the subscription is created, under the billing key the billing run uses, and finalized by the scheduler once the
subscription has started in the customer's timezone. Amounts worked out by hand; SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from billing import customers as service
from billing.config import get_settings
from billing.core.periods import month
from billing.db import session_scope
from billing.db.engines import dispose_engines
from billing.invoicing import finalize_opening_invoices
from billing.notify import list_notifications
from billing.run import finalize_period, run_billing
from billing.scheduler import bill_closed_periods, billing_cycle_job
from invoices import store
from invoices.errors import InvoiceNotFoundError
from invoices.model import InvoiceStatus
from pricing_plans.loader import loads_catalog

ROOT = Path(__file__).resolve().parents[2]

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.pro]
name = "Pro"
currency = "USD"
subscription = { fee = 49.00 }
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.01 }]

[plans.max]
name = "Max"
currency = "USD"
subscription = { fee = 99.00, billing = "in_advance" }

[plans.later]
name = "Later"
currency = "USD"
subscription = { fee = 49.00, billing = "in_arrears" }

[plans.metered]
name = "Metered"
currency = "USD"
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.01 }]
"""

D = dt.date
SETTINGS = store.FinalizeSettings()


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "opening.toml")
    assert not problems, problems
    return loaded


def customer(engine, who: str = "acme", timezone: str = "UTC") -> None:
    service.create_customer(engine, who, who.title(), f"ap@{who}.example", "USD", timezone=timezone)


def opening(engine, subscription_id: int):
    with session_scope(engine) as session:
        try:
            return store.get_invoice(session, f"start:{subscription_id}")
        except InvoiceNotFoundError:
            return None


def at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), dt.UTC)


# -- written when the subscription is created -------------------------------------------------------------


def test_subscribing_writes_the_opening_draft_with_the_prorated_fee(engine, catalog):
    customer(engine)
    subscription = service.subscribe(engine, catalog, "acme", "pro", D(2026, 3, 17))
    invoice = opening(engine, subscription.id)
    assert invoice is not None and invoice.status is InvoiceStatus.DRAFT and invoice.number is None
    assert (invoice.period_start, invoice.period_end) == (D(2026, 3, 1), D(2026, 4, 1))
    [line] = invoice.lines
    # 49.00 in advance for 17–31 March: 49 × 15/31 = 23.709… → 23.71
    assert (line.kind, line.amount, line.subscription_id) == ("subscription", Decimal("23.71"), subscription.id)
    assert line.section == "Pro, 2026-03-17 – 2026-03-31"  # the plan and the days it covers, no internal id
    assert invoice.total == Decimal("23.71") and invoice.customer.external_id == "acme"


@pytest.mark.parametrize("plan", ["later", "metered"])
def test_a_plan_without_an_in_advance_fee_writes_no_opening_invoice(engine, catalog, plan):
    customer(engine)
    subscription = service.subscribe(engine, catalog, "acme", plan, D(2026, 3, 17))
    assert opening(engine, subscription.id) is None
    with session_scope(engine) as session:
        assert store.list_invoices(session) == []


def test_the_billing_run_finds_the_opening_draft_and_leaves_it_unchanged(engine, catalog):
    customer(engine)
    subscription = service.subscribe(engine, catalog, "acme", "pro", D(2026, 3, 17))
    before = opening(engine, subscription.id)
    report = run_billing(engine, catalog, month(2026, 3))
    after = opening(engine, subscription.id)
    assert report.unchanged >= 1 and report.skipped == []
    assert (after.id, after.lines, after.total, after.status) == (before.id, before.lines, before.total, "draft")
    with session_scope(engine) as session:
        keys = sorted(i.billing_key for i in store.list_invoices(session))
    assert keys == ["period:acme:2026-03", f"start:{subscription.id}"]  # one opening invoice, not two


def test_a_plan_change_writes_the_new_opening_draft_and_shortens_the_old_one(engine, catalog):
    customer(engine)
    old = service.subscribe(engine, catalog, "acme", "pro", D(2026, 3, 17))
    new = service.change_plan(engine, catalog, old.id, "max", D(2026, 3, 24))
    # old: 17–23 March, 49 × 7/31 = 11.064… → 11.06; new: 24–31 March, 99 × 8/31 = 25.548… → 25.55
    assert opening(engine, old.id).total == Decimal("11.06")
    assert opening(engine, new.id).total == Decimal("25.55")
    assert [line.subscription_id for line in opening(engine, new.id).lines] == [new.id]


def test_a_subscription_ended_on_its_start_day_keeps_no_opening_draft(engine, catalog):
    customer(engine)
    first = service.subscribe(engine, catalog, "acme", "pro", D(2026, 3, 17))
    second = service.change_plan(engine, catalog, first.id, "max", D(2026, 3, 17))  # changed on the same day
    assert opening(engine, first.id) is None
    assert opening(engine, second.id).total == Decimal("47.90")  # 99 × 15/31 = 47.903… → 47.90
    service.cancel_subscription(engine, second.id, D(2026, 3, 17))
    assert opening(engine, second.id) is None


# -- finalized by the scheduler once started -------------------------------------------------------------


def test_the_scheduler_finalizes_opening_invoices_once_started_in_the_customers_timezone(engine, catalog):
    customer(engine, "acme", "UTC")
    customer(engine, "kiri", "Pacific/Kiritimati")  # UTC+14: 18 March starts there at 10:00 UTC on the 17th
    acme = service.subscribe(engine, catalog, "acme", "pro", D(2026, 3, 18))
    kiri = service.subscribe(engine, catalog, "kiri", "pro", D(2026, 3, 18))

    early = bill_closed_periods(engine, catalog, SETTINGS, 2, now=at(D(2026, 3, 17), 9))
    assert early.finalized == []
    report = bill_closed_periods(engine, catalog, SETTINGS, 2, now=at(D(2026, 3, 17), 12))
    assert report.finalized == ["INV-2026-000001"]
    issued = opening(engine, kiri.id)
    assert (issued.status, issued.number, issued.issue_date) == ("finalized", "INV-2026-000001", D(2026, 3, 18))
    assert issued.total == Decimal("22.13")  # 49 × 14/31 = 22.129… → 22.13
    assert opening(engine, acme.id).status == "draft"  # still the 17th in UTC

    later = bill_closed_periods(engine, catalog, SETTINGS, 2, now=at(D(2026, 3, 18), 0))
    assert later.finalized == ["INV-2026-000002"] and opening(engine, acme.id).status == "finalized"
    # each with its invoice.finalized notification, queued in the same transaction
    queued = [n for n in list_notifications(engine) if n.kind == "invoice.finalized"]
    assert sorted((n.customer, n.invoice_id) for n in queued) == sorted(
        [("kiri", issued.id), ("acme", opening(engine, acme.id).id)]
    )
    assert bill_closed_periods(engine, catalog, SETTINGS, 2, now=at(D(2026, 3, 19))).finalized == []

    # the billing run and the period's finalization leave the issued opening invoices alone
    before = opening(engine, acme.id)
    run = run_billing(engine, catalog, month(2026, 3))
    assert run.issued_untouched == 2
    numbers = finalize_period(engine, month(2026, 3), SETTINGS, D(2026, 4, 2))
    assert sorted(numbers) == ["INV-2026-000003", "INV-2026-000004"]  # the two period invoices
    assert opening(engine, acme.id) == before


def test_a_cancellation_made_before_the_start_is_billed_as_it_stands_at_the_start(engine, catalog):
    customer(engine)
    subscription = service.subscribe(engine, catalog, "acme", "pro", D(2026, 4, 1))
    assert opening(engine, subscription.id).total == Decimal("49.00")
    service.cancel_subscription(engine, subscription.id, D(2026, 4, 10))
    report = finalize_opening_invoices(engine, catalog, SETTINGS, now=at(D(2026, 4, 1)))
    assert report.finalized == ["INV-2026-000001"]
    assert opening(engine, subscription.id).total == Decimal("14.70")  # 1–9 April: 49 × 9/30 = 14.70


def test_the_billing_cycle_job_finalizes_the_opening_invoice(engine, db_url, catalog, tmp_path, monkeypatch):
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    for key, value in {
        "BILLING_DATABASE_URL": db_url,
        "BILLING_CATALOG": str(path),
        "BILLING_CONFIG": str(ROOT / "config.toml"),
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        customer(engine)
        today = dt.datetime.now(dt.UTC).date()
        started = service.subscribe(engine, catalog, "acme", "pro", today)
        future = service.subscribe(engine, catalog, "acme", "max", today + dt.timedelta(days=40))
        billing_cycle_job()
    finally:
        dispose_engines()
        get_settings.cache_clear()
    issued = opening(engine, started.id)
    assert issued.status == "finalized" and issued.number.endswith("-000001")
    assert issued.issue_date >= today and issued.seller.name == "Northwind Cloud Ltd."  # the configured seller
    assert opening(engine, future.id).status == "draft"
    [queued] = [n for n in list_notifications(engine) if n.kind == "invoice.finalized"]
    assert queued.invoice_id == issued.id
