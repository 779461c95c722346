"""The scheduler: jobs stored in the test database survive a restart; the billing cycle bills closed periods in
each customer's timezone and finalizes after the grace period; a failing job is logged and retried."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from pathlib import Path

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED
from sqlalchemy import Engine, select

from billing.config import get_settings
from billing.core.periods import Period, month, month_of
from billing.customers import cancel_subscription, create_customer, subscribe
from billing.db import make_engine, session_scope
from billing.db.engines import dispose_engines
from billing.db.scheduler_tables import SchedulerJobRow
from billing.ingestion import ingest_batch
from billing.invoicing import list_invoices
from billing.run import run_billing
from billing.scheduler import (
    JOBS,
    RETRY_DELAY,
    JobSpec,
    bill_closed_periods,
    build_scheduler,
    install_jobs,
    stop_scheduler,
)
from invoices.model import InvoiceStatus
from invoices.store import FinalizeSettings
from pricing_plans.loader import load_catalog_or_raise, loads_catalog
from pricing_plans.models import Catalog

ROOT = Path(__file__).resolve().parents[2]

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
"""


@pytest.fixture
def catalog(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Catalog:
    """The catalog above; the settings (which the jobs read) point at it and at the test database."""
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    for key, value in {
        "BILLING_DATABASE_URL": db_url,
        "BILLING_CATALOG": str(path),
        "BILLING_CONFIG": str(ROOT / "config.toml"),
        "BILLING_FINALIZE_GRACE_DAYS": "0",
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield load_catalog_or_raise(path)
    dispose_engines()
    get_settings.cache_clear()


def customer_with_usage(engine: Engine, catalog: Catalog, external_id: str, timezone: str, period: Period) -> None:
    """A customer on ``starter`` from the period's start, with 4 API calls in it: 10.00 + 4 × 0.50 = 12.00. The calls
    are ingested as they happen (``now``: the last of them), so that a period long past is still within the
    late-usage window."""
    create_customer(engine, external_id, f"{external_id} Inc.", None, "USD", timezone)
    subscribe(engine, catalog, external_id, "starter", period.start)
    middle = dt.datetime.combine(period.start + dt.timedelta(days=14), dt.time(12), dt.UTC)
    events = [
        {"id": f"{external_id}-{i}", "customer": external_id, "meter": "api_calls",
         "timestamp": (middle + dt.timedelta(minutes=i)).isoformat()}
        for i in range(4)
    ]
    assert ingest_batch(engine, catalog, events, now=middle + dt.timedelta(minutes=3)).accepted == 4


def stored_jobs(engine: Engine) -> dict[str, float | None]:
    with session_scope(engine) as session:
        return {row.id: row.next_run_time for row in session.scalars(select(SchedulerJobRow))}


BILLING_ONLY = tuple(job for job in JOBS if job.id == "billing_cycle")


def test_a_due_billing_job_runs_after_a_restart_and_writes_the_invoices(engine, db_url, catalog):
    last_month = month_of(dt.datetime.now(dt.UTC).date()).previous()
    customer_with_usage(engine, catalog, "acme", "UTC", last_month)

    first = build_scheduler(engine)
    first.start(paused=True)  # nothing runs: the job is only stored
    install_jobs(first, BILLING_ONLY)
    stop_scheduler(first)
    assert list(stored_jobs(engine)) == ["billing_cycle"]
    assert list_invoices(engine) == []

    restarted_engine = make_engine(db_url)
    second = build_scheduler(restarted_engine)
    done = threading.Event()
    outcomes: list[int] = []
    second.add_listener(lambda event: (outcomes.append(event.code), done.set()), EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    second.start(paused=True)
    install_jobs(second, BILLING_ONLY)  # the stored job is kept as it is: still due
    second.resume()
    try:
        assert done.wait(60), "the due billing job did not run after the restart"
    finally:
        stop_scheduler(second)
        restarted_engine.dispose()
    assert outcomes == [EVENT_JOB_EXECUTED]
    [invoice] = list_invoices(engine)
    assert (invoice.customer_id, invoice.period_start, invoice.status, invoice.total) == (
        "acme", last_month.start, InvoiceStatus.FINALIZED, 12
    )
    next_run = stored_jobs(engine)["billing_cycle"]
    assert next_run is not None and next_run > dt.datetime.now(dt.UTC).timestamp() + 50 * 60  # an hour on


def test_the_billing_cycle_follows_each_customers_timezone_and_the_grace_period(engine, catalog):
    october = month(2026, 10)
    customer_with_usage(engine, catalog, "kiribati", "Pacific/Kiritimati", october)  # UTC+14
    customer_with_usage(engine, catalog, "la", "America/Los_Angeles", october)  # UTC-7 in November
    settings = FinalizeSettings()

    # 1 November 05:00 UTC: 19:00 in Kiritimati (October has closed), 22:00 on 31 October in Los Angeles.
    early = bill_closed_periods(engine, catalog, settings, 2, now=dt.datetime(2026, 11, 1, 5, tzinfo=dt.UTC))
    assert early.billed == {"2026-10": 1} and early.finalized == []
    assert [(i.customer_id, i.status) for i in list_invoices(engine)] == [("kiribati", InvoiceStatus.DRAFT)]

    # 2 November 12:00 UTC: closed everywhere (one run for the month); 3 November in Kiritimati, two days after
    # the end: past the grace; 2 November 04:00 in Los Angeles: within it.
    later = bill_closed_periods(engine, catalog, settings, 2, now=dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC))
    assert later.billed == {"2026-10": 2} and later.finalized == ["INV-2026-000001"]
    assert [(i.customer_id, i.status) for i in list_invoices(engine)] == [
        ("kiribati", InvoiceStatus.FINALIZED), ("la", InvoiceStatus.DRAFT)
    ]

    # 3 November 12:00 UTC: 3 November in Los Angeles too.
    final = bill_closed_periods(engine, catalog, settings, 2, now=dt.datetime(2026, 11, 3, 12, tzinfo=dt.UTC))
    assert final.billed == {"2026-10": 1} and final.finalized == ["INV-2026-000002"]
    invoices = list_invoices(engine)
    assert [(i.customer_id, i.status, i.total) for i in invoices] == [
        ("kiribati", InvoiceStatus.FINALIZED, 12),
        ("la", InvoiceStatus.FINALIZED, 12),
    ]
    again = bill_closed_periods(engine, catalog, settings, 2, now=dt.datetime(2026, 11, 3, 13, tzinfo=dt.UTC))
    assert again.billed == {} and again.finalized == []


def test_the_billing_cycle_leaves_a_draft_it_cannot_rate_now(engine, catalog):
    """October's draft written, then the plan gone from the catalog: the next cycle cannot rate the customer, so
    it does not issue the draft as it was written (it logs the customer as skipped); once the plan is back, the
    cycle issues it."""
    october = month(2026, 10)
    customer_with_usage(engine, catalog, "acme", "UTC", october)
    settings = FinalizeSettings()
    drafted = bill_closed_periods(engine, catalog, settings, 5, now=dt.datetime(2026, 11, 1, 5, tzinfo=dt.UTC))
    assert drafted.billed == {"2026-10": 1} and drafted.finalized == []
    other = '[plans.other]\nname = "Other"\ncurrency = "USD"\nsubscription = { fee = 1.00, billing = "in_arrears" }\n'
    plan_gone, problems = loads_catalog(CATALOG[: CATALOG.index("[plans.starter]")] + other, "gone.toml")
    assert not problems
    later = dt.datetime(2026, 11, 8, 12, tzinfo=dt.UTC)  # past the grace of 5 days
    left = bill_closed_periods(engine, plan_gone, settings, 5, now=later)
    assert left.finalized == [] and {who for who, _ in left.skipped} == {"acme"}
    assert [(i.customer_id, i.status) for i in list_invoices(engine)] == [("acme", InvoiceStatus.DRAFT)]
    issued = bill_closed_periods(engine, catalog, settings, 5, now=later)
    assert issued.finalized == ["INV-2026-000001"] and issued.skipped == []
    assert [(i.status, i.total) for i in list_invoices(engine)] == [(InvoiceStatus.FINALIZED, 12)]


ADDON = '\n[plans.addon]\nname = "Addon"\ncurrency = "USD"\nsubscription = { fee = 30.00, billing = "in_advance" }\n'
LEGACY = '\n[plans.legacy]\nname = "Legacy"\ncurrency = "USD"\nsubscription = { fee = 5.00, billing = "in_arrears" }\n'


def test_a_customer_left_unrated_in_one_period_has_its_other_periods_issued(engine, catalog):
    """Two plans gone from the catalog: an add-on whose opening invoice is dated November, and a plan acme left in
    September. The cycle leaves September's draft as it was written (its run cannot rate acme: it does not write it
    again without that plan's fee) and the add-on's opening draft, and issues October's, which neither is in."""
    wider, problems = loads_catalog(CATALOG + ADDON + LEGACY, "wider.toml")
    assert not problems
    customer_with_usage(engine, wider, "acme", "UTC", month(2026, 9))
    legacy = subscribe(engine, wider, "acme", "legacy", dt.date(2026, 9, 1))
    cancel_subscription(engine, legacy.id, dt.date(2026, 9, 20), catalog=wider)
    subscribe(engine, wider, "acme", "addon", dt.date(2026, 11, 5))
    run_billing(engine, wider, month(2026, 9), now=dt.datetime(2026, 10, 1, 12, tzinfo=dt.UTC))
    report = bill_closed_periods(engine, catalog, FinalizeSettings(), 5, now=dt.datetime(2026, 11, 8, 12, tzinfo=dt.UTC))
    assert report.finalized == ["INV-2026-000001"]
    assert [(i.period_start, i.status, str(i.total)) for i in list_invoices(engine)] == [
        # as written before, never again without legacy's line: 10.00 + 4 × 0.50 + 19 of 30 days of 5.00 (3.17)
        (dt.date(2026, 9, 1), InvoiceStatus.DRAFT, "15.17"),
        (dt.date(2026, 10, 1), InvoiceStatus.FINALIZED, "10.00"),
        (dt.date(2026, 11, 1), InvoiceStatus.DRAFT, "26.00"),  # the add-on's opening invoice: 26 of 30 days
    ]


def failing_job() -> None:
    """A job that always fails (module-level: the job store keeps a reference to it)."""
    raise RuntimeError("the payment gateway is down")


def test_a_failing_job_is_logged_and_retried_soon(engine, catalog, caplog):
    scheduler = build_scheduler(engine)
    failed = threading.Event()
    scheduler.add_listener(lambda event: failed.set(), EVENT_JOB_ERROR)
    spec = JobSpec("failing", failing_job, dt.timedelta(hours=6), dt.timedelta(minutes=5))
    caplog.set_level(logging.ERROR, logger="billing.scheduler")
    scheduler.start(paused=True)
    install_jobs(scheduler, (spec,))
    scheduler.resume()
    try:
        assert failed.wait(30), "the job did not run"
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
        while dt.datetime.now(dt.UTC) < deadline:  # the listener reschedules right after the failure
            job = scheduler.get_job("failing")
            if job.next_run_time < dt.datetime.now(dt.UTC) + dt.timedelta(hours=1):
                break
            time.sleep(0.02)
        job = scheduler.get_job("failing")
    finally:
        stop_scheduler(scheduler)
    assert job is not None, "a failed job must not be dropped"
    retry_in = job.next_run_time - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=4) < retry_in <= RETRY_DELAY
    [record] = [r for r in caplog.records if r.name == "billing.scheduler" and r.levelno == logging.ERROR]
    assert "job failing failed: the payment gateway is down" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
