"""``billing run --shard K/N``: the customers split by a hash of their id, each shard writing its own customers'
drafts; the N shards, one after another or at the same time, write what one run writes (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from billing import customers as service
from billing.cli import app
from billing.core.periods import month
from billing.core.shards import Shard, parse_shard, shard_of
from billing.db import session_scope
from billing.db.tables import CustomerRow, SubscriptionRow
from billing.metering import meter_specs
from billing.run import finalize_period, run_billing
from invoices import store
from invoices.tables import InvoiceRow
from meters import ingest
from pricing_plans.loader import loads_catalog
from tests.billing.test_run import CATALOG, ROOT, YEARLY_AND_MORE, calls

WEEKLY = """
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
unit_amount = 0.02
"""
MARCH = month(2026, 3)
CUSTOMERS = [f"c{n:02d}" for n in range(16)]


def test_k_of_n_is_checked_and_every_customer_falls_in_exactly_one_shard():
    assert parse_shard("2/4") == Shard(2, 4) and parse_shard(" 4/4 ").label == "4/4"
    for junk in ("0/4", "5/4", "1/0", "a/4", "2", "2/4/1", "-1/4", "", "1.5/4"):
        with pytest.raises(ValueError, match="K/N"):
            parse_shard(junk)
    ids = [f"customer-{n}" for n in range(1000)]
    owners = [[k for k in range(1, 5) if Shard(k, 4).owns(c)] for c in ids]
    assert all(len(found) == 1 for found in owners)  # disjoint and complete
    sizes = Counter(found[0] for found in owners)
    assert sorted(sizes) == [1, 2, 3, 4] and min(sizes.values()) > 200  # about a quarter each
    # stable: a hash of the id's bytes (not Python's salted hash()), the same in every process
    # blake2b(b"acme", 8 bytes) = 0x302657b33c4da281: ≡ 1 (mod 4) (its last hex digit 1), so shard 1 + 1 = 2
    assert shard_of("acme", 4) == 2


@pytest.mark.parametrize("value", ["0/4", "5/4", "junk", "3"])
def test_a_bad_shard_is_a_usage_error(value):
    result = CliRunner().invoke(app, ["run", "--period", "2026-03", "--shard", value])
    assert result.exit_code == 2, result.output
    assert "--shard" in result.output and "K/N" in result.output


def test_a_shard_is_not_finalized_on_its_own():
    result = CliRunner().invoke(app, ["run", "--period", "2026-03", "--shard", "1/4", "--finalize"])
    assert result.exit_code == 2, result.output
    assert "billing invoices finalize --period" in result.output


def _invoices(engine) -> dict[str, tuple]:
    """Every invoice by billing key: status, number, totals, content hash and lines (what a run wrote)."""
    with session_scope(engine) as session:
        invoices = store.list_invoices(session, with_lines=True)
        hashes = dict(session.execute(select(InvoiceRow.billing_key, InvoiceRow.content_hash)).all())
    return {
        invoice.billing_key: (
            invoice.status.value,
            invoice.number,
            str(invoice.subtotal),
            str(invoice.total),
            hashes[invoice.billing_key],
            [
                (line.kind.value, line.meter, line.description, str(line.quantity), str(line.amount))
                for line in invoice.lines
            ],
        )
        for invoice in invoices
    }


def _drop_drafts(engine) -> None:
    """Delete the period drafts (the opening invoices were written as the subscriptions were made)."""
    with session_scope(engine) as session:
        session.execute(delete(InvoiceRow).where(InvoiceRow.status == "draft", InvoiceRow.scope == "period"))


def _customers_and_usage(engine, catalog) -> None:
    """Sixteen customers in three timezones on monthly, weekly, in-advance and yearly plans (a plan change, a
    cancellation, a late start, one without any subscription), February invoiced, then late February usage."""
    plans = ["basic", "pro", "weekly", "basic", "annual", "basic", "pro", "basic"]
    zones = ["UTC", "Asia/Tokyo", "America/New_York"]
    for n, customer in enumerate(CUSTOMERS):
        service.create_customer(engine, customer, customer.upper(), None, "USD", timezone=zones[n % 3])
    subscriptions = {
        n: service.subscribe(engine, catalog, customer, plans[n % 8], dt.date(2026, 1, 1))
        for n, customer in enumerate(CUSTOMERS[:-2])
    }
    service.subscribe(engine, catalog, CUSTOMERS[14], "pro", dt.date(2026, 3, 10))  # an opening invoice in March
    service.change_plan(engine, catalog, subscriptions[5].id, "pro", dt.date(2026, 3, 16))  # two sections
    service.cancel_subscription(engine, subscriptions[7].id, dt.date(2026, 3, 20))
    events = [e for n, c in enumerate(CUSTOMERS) for e in calls(c, 7 * n + 3, "2026-03-12", f"m{c}")]
    events += [e for c in CUSTOMERS[:6] for e in calls(c, 20, "2026-02-10", f"feb{c}")]
    events += [
        {"id": f"gb{c}", "customer": c, "meter": "storage_gb", "timestamp": "2026-03-05T06:00:00Z", "value": "12.5"}
        for c in CUSTOMERS[::3]
    ]
    specs = meter_specs(catalog)
    assert not ingest(engine, events, specs, set(CUSTOMERS)).rejected
    run_billing(engine, catalog, month(2026, 2))
    finalize_period(engine, month(2026, 2), store.FinalizeSettings(), dt.date(2026, 3, 2))
    late = [e for c in CUSTOMERS[:4] for e in calls(c, 9, "2026-02-27", f"late{c}")]
    assert not ingest(engine, late, specs, set(CUSTOMERS)).rejected


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG + YEARLY_AND_MORE + WEEKLY, "shards.toml")
    assert not problems
    return loaded


def test_four_shards_one_after_another_write_the_invoices_of_one_run(engine, catalog):
    _customers_and_usage(engine, catalog)
    whole = run_billing(engine, catalog, MARCH)
    expected = _invoices(engine)
    assert whole.created >= 14 and whole.late_lines and whole.unbilled  # c15 has events, no subscription

    _drop_drafts(engine)
    shards = [run_billing(engine, catalog, MARCH, shard=Shard(k, 4)) for k in range(1, 5)]
    assert _invoices(engine) == expected
    assert sum(r.created for r in shards) == whole.created
    assert sum(r.customers for r in shards) == whole.customers  # each customer billed by one shard only
    assert sum(r.late_lines for r in shards) == whole.late_lines
    assert sum(r.events for r in shards) == whole.events
    assert sorted(g.message for r in shards for g in r.unbilled) == sorted(g.message for g in whole.unbilled)
    assert all(r.created for r in shards)  # sixteen customers: every shard had some

    # run again, each shard finds its own drafts unchanged and removes none of the others'
    again = [run_billing(engine, catalog, MARCH, shard=Shard(k, 4)) for k in range(1, 5)]
    assert [(r.created, r.updated, r.removed) for r in again] == [(0, 0, [])] * 4
    assert sum(r.unchanged for r in again) == whole.created + whole.unchanged
    assert _invoices(engine) == expected

    # finalized once all shards have run: the numbers are given as for one run
    given = finalize_period(engine, MARCH, store.FinalizeSettings(), dt.date(2026, 4, 2))
    numbers = [number for _, number, *_ in _invoices(engine).values() if number]
    assert len(given) >= whole.created and len(numbers) == len(set(numbers))


def _end_before_march(engine, customers: list[str]) -> None:
    """End these customers' subscriptions on 15 February, as if they had left before March."""
    with session_scope(engine) as session:
        ids = select(CustomerRow.id).where(CustomerRow.external_id.in_(customers))
        session.execute(
            update(SubscriptionRow).where(SubscriptionRow.customer_id.in_(ids)).values(end_date=dt.date(2026, 2, 15))
        )


def _draft_owners(engine) -> dict[str, str]:
    with session_scope(engine) as session:
        rows = session.execute(select(InvoiceRow.billing_key, InvoiceRow.customer_external_id))
        return dict(rows.all())


def test_the_drafts_of_customers_that_left_are_removed_by_their_own_shard_only(engine, catalog):
    _customers_and_usage(engine, catalog)
    run_billing(engine, catalog, MARCH)
    owners = _draft_owners(engine)
    gone = ["c02", "c03", "c06", "c10"]  # both weekly customers (their weeks are billed no more), two monthly ones
    _end_before_march(engine, gone)

    removed: dict[int, list[str]] = {}
    for k in range(1, 5):
        before = set(_draft_owners(engine))
        removed[k] = run_billing(engine, catalog, MARCH, shard=Shard(k, 4)).removed
        assert before - set(_draft_owners(engine)) == set(removed[k])
        assert {shard_of(owners[key], 4) for key in removed[k]} <= {k}  # never another shard's draft
    every = [key for keys in removed.values() for key in keys]
    assert len(every) == len(set(every))
    assert {owners[key] for key in every} == set(gone)
    # what one run would do now: nothing left to remove, nothing to write again
    whole = run_billing(engine, catalog, MARCH)
    assert (whole.created, whole.updated, whole.removed) == (0, 0, [])


@pytest.mark.slow
def test_four_shards_at_once_in_their_own_processes_write_the_invoices_of_one_run(
    engine, catalog, db_url, tmp_path: Path
):
    _customers_and_usage(engine, catalog)
    run_billing(engine, catalog, MARCH)
    expected = _invoices(engine)
    _drop_drafts(engine)
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG + YEARLY_AND_MORE + WEEKLY, encoding="utf-8")
    env = {
        **os.environ,
        "BILLING_DATABASE_URL": db_url,
        "BILLING_CATALOG": str(path),
        "BILLING_CONFIG": str(ROOT / "config.toml"),
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "billing.cli", "run", "--period", "2026-03", "--shard", f"{k}/4", "--json"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(1, 5)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    assert _invoices(engine) == expected
