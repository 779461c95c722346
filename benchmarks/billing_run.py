"""The billing run: 10,000 customers with 10,000,000 events in the period, on SQLite.

The events of ``benchmarks.aggregate`` (same generator, same cached database, every aggregation kind, customers
in five timezones) get a customer row and a subscription each on a plan that charges every meter, then
``billing.run.run_billing`` writes one draft per customer for March 2024: seconds and customers/s, split by phase
(load, aggregate, rate, write), beside the bare aggregation of the same events (``meters.aggregate_usage`` over
the same windows). Then every draft is finalized (gap-free numbers, the invoice.finalized notification queued).
Targets: ≥ 1,000 customers/s, the whole run within 3× of its aggregation phase, finalizing ≥ 1,000 invoices/s.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from sqlalchemy.engine import Engine

from benchmarks import Figure, timed
from benchmarks.aggregate import CUSTOMERS, EVENTS, METERS, TIMEZONES, sqlite_database, windows
from billing.core.periods import month
from billing.db import make_engine, repository, session_scope, upgrade
from billing.run import finalize_period, run_billing
from invoices.store import FinalizeSettings
from meters import aggregate_usage
from pricing_plans.loader import loads_catalog

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
[meters.bytes]
name = "Bytes"
aggregation = "sum"
[meters.active_users]
name = "Active users"
aggregation = "unique_count"
unique_property = "user_id"
[meters.peak_rps]
name = "Peak requests/s"
aggregation = "max"
[meters.storage_gb]
name = "Storage"
aggregation = "weighted_sum"
unit = "GB-month"
[meters.seats]
name = "Seats"
aggregation = "latest"

[plans.bench]
name = "Benchmark"
currency = "USD"
[plans.bench.subscription]
fee = 49.00
billing = "in_advance"
[[plans.bench.charges]]
meter = "api_calls"
model = "graduated"
tiers = [
  { up_to = 100, unit_amount = 0 }, { up_to = 1000, unit_amount = 0.002 }, { up_to = "inf", unit_amount = 0.001 },
]
[[plans.bench.charges]]
meter = "bytes"
model = "per_unit"
unit_amount = 0.0000000001
[[plans.bench.charges]]
meter = "active_users"
model = "volume"
tiers = [{ up_to = 100, unit_amount = 8 }, { up_to = "inf", unit_amount = 6 }]
[[plans.bench.charges]]
meter = "peak_rps"
model = "package"
package_size = 100
package_amount = 5
[[plans.bench.charges]]
meter = "storage_gb"
model = "per_unit"
unit_amount = 0.25
[[plans.bench.charges]]
meter = "seats"
model = "per_unit"
unit_amount = 3
[plans.bench.commitment]
minimum = 500.00
"""


def add_customers(engine: Engine, customers: int, timezones: list[str]) -> None:
    """Customers ``c00000``… (timezones in turn), each subscribed to the ``bench`` plan since January 2024."""
    with session_scope(engine) as session:
        for i in range(customers):
            record = repository.add_customer(
                session,
                external_id=f"c{i:05d}",
                name=f"Customer {i}",
                email=None,
                currency="USD",
                timezone=timezones[i % len(timezones)],
                locale="en_US",
            )
            repository.add_subscription(
                session, customer=record, plan_code="bench", plan_version=1, start_date=dt.date(2024, 1, 1)
            )


def run(scale: float, console: Console) -> list[Figure]:
    events, customers = max(1000, int(EVENTS * scale)), max(10, int(CUSTOMERS * scale))
    source = sqlite_database(events, customers, console)
    catalog, problems = loads_catalog(CATALOG, "bench.toml")
    assert catalog is not None, problems
    assert {m.code for m in METERS} == set(catalog.meters)
    with tempfile.TemporaryDirectory(prefix="bench-run-") as scratch:
        path = Path(scratch) / "run.db"
        shutil.copyfile(source, path)
        engine = make_engine(f"sqlite:///{path}")
        upgrade(engine)  # the cached events may predate the newest migrations
        add_customers(engine, customers, TIMEZONES)
        # Start from a database at rest, as a production one is between runs: the copy flushed to disk and the
        # set-up's journal checkpointed (else the run's first checkpoint pays for fsyncing a just-copied file).
        raw = engine.raw_connection()  # (outside a transaction, which a checkpoint needs)
        raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw.close()
        with path.open("rb+") as copied:
            os.fsync(copied.fileno())
        march = month(2024, 3)
        bare = min(timed(lambda: aggregate_usage(engine, windows(customers), METERS)) for _ in range(2))
        started = time.perf_counter()
        report = run_billing(engine, catalog, march)
        seconds = time.perf_counter() - started
        assert report.created == customers, report
        started = time.perf_counter()
        numbers = finalize_period(engine, march, FinalizeSettings(), dt.date(2024, 4, 2))
        finalize_seconds = time.perf_counter() - started
        assert len(numbers) == customers
        engine.dispose()
    phases = ", ".join(f"{k} {report.seconds.get(k, 0):.2f} s" for k in ("load", "aggregate", "rate", "write"))
    console.log(
        f"billing run: {customers:,} customers, {report.events:,} events in {seconds:.2f} s ({phases}); "
        f"bare aggregation {bare:.2f} s; finalized {len(numbers):,} in {finalize_seconds:.2f} s"
    )
    return [
        Figure(
            f"billing run, {customers:,} customers / {events:,} events, SQLite ({phases})",
            customers / seconds,
            "customers/s",
            customers / bare,
            "bare aggregation of the same events",
            "≥ 1,000 customers/s and the run within 3× of its aggregation",
            customers / seconds >= 1000 and seconds <= 3 * bare,
        ),
        Figure(
            f"finalizing {customers:,} invoices (numbers + invoice.finalized queued), SQLite",
            customers / finalize_seconds,
            "invoices/s",
            target="≥ 1,000 invoices/s",
            met=customers / finalize_seconds >= 1000,
        ),
    ]
