"""Revenue and churn figures over a year of history: 100,000 customers × 12 months of paid invoices, on SQLite.

The history is written straight into the tables with bulk Core inserts (not by billing runs, which would take
hours): every customer on a 49.00 monthly plan from a month of 2025 (a few each month), a twentieth of them
leaving before the year ends; one issued period invoice a month with a fee line and a usage line of its own amount.
Then ``billing metrics --period 2025-01 --to 2025-12 --json`` runs as a user runs it (a new process, the CLI's
whole path): its wall seconds and peak memory (the child's maximum resident set size, from ``wait4``), beside a
baseline from the same run: a bare ``sqlite3`` process summing the same invoices per customer and month
(``SUM … GROUP BY``, binary floats, nothing else). No target: the figures show how far the metrics are from that
floor; memory should grow with customers, not invoices.

``BENCH_METRICS_CUSTOMERS`` sets the number of customers (default 100,000 × ``BENCH_SCALE``). The database is
cached under ``bench-data/``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlalchemy import func, insert, update

from benchmarks import DATA, Figure
from billing.db import make_engine, upgrade
from billing.db.tables import CustomerRow, SubscriptionRow
from invoices.tables import InvoiceLineRow, InvoiceRow

ROOT = Path(__file__).resolve().parent.parent
CUSTOMERS = 100_000
MONTHS = 12
YEAR = 2025
LAYOUT = 1  # bump when the generated history changes, so a cached database is rebuilt
BATCH = 20_000

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.pro]
name = "Pro"
currency = "USD"
[plans.pro.subscription]
fee = 49.00
billing = "in_arrears"
[[plans.pro.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.001
"""

BASELINE = """
import sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute(
    "SELECT customer_external_id, substr(period_start, 1, 7), SUM(total) FROM invoices GROUP BY 1, 2"
).fetchall()
print(len(rows))
"""


def _month(index: int) -> dt.date:
    return dt.date(YEAR + index // 12, index % 12 + 1, 1)


def _customer(i: int) -> tuple[int, int]:
    """The months (0-based, end exclusive) customer ``i`` is subscribed: from a month of the year, a twentieth
    leaving a few months later."""
    first = i % 6  # half the base from January, the rest over the next five months
    first = 0 if i % 2 == 0 else first
    last = MONTHS if i % 20 else min(MONTHS, first + 3 + i % 5)
    return first, last


def _stamp(month: dt.date) -> dt.datetime:
    return dt.datetime(month.year, month.month, month.day, 6, tzinfo=dt.UTC)


def _invoices(customers: range) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    invoice_id = 0
    for i in customers:
        first, last = _customer(i)
        for m in range(first, last):
            invoice_id += 1
            start, end = _month(m), _month(m + 1)
            usage = Decimal(i % 997 + m * 13) / 100
            subtotal = Decimal("49.00") + usage
            stamp = _stamp(end)
            yield (
                {
                    "id": invoice_id, "billing_key": f"period:c{i:06d}:{start:%Y-%m}", "kind": "invoice",
                    "scope": "period", "status": "draft",
                    "customer_external_id": f"c{i:06d}", "customer": '{"name": "C"}', "seller": "{}",
                    "currency": "USD", "locale": "en_US", "timezone": "UTC", "period_start": start,
                    "period_end": end, "subtotal": subtotal, "discount": Decimal(0), "tax_rate": Decimal(0),
                    "tax": Decimal(0), "total": subtotal, "created_at": stamp, "updated_at": stamp,
                },
                [
                    {"invoice_id": invoice_id, "position": 0, "kind": "subscription", "description": "Pro",
                     "quantity": Decimal(1), "amount": Decimal("49.00"), "service_start": start, "service_end": end,
                     "plan_code": "pro", "plan_version": 1},
                    {"invoice_id": invoice_id, "position": 1, "kind": "usage", "description": "API calls",
                     "meter": "api_calls", "model": "per_unit", "quantity": usage * 1000, "amount": usage,
                     "service_start": start, "service_end": end, "plan_code": "pro", "plan_version": 1},
                ],
            )  # fmt: skip


def database(customers: int, console: Console) -> Path:
    """The cached SQLite database with ``customers`` customers' year of invoices (built when missing)."""
    DATA.mkdir(exist_ok=True)
    path = DATA / f"metrics-{customers}-v{LAYOUT}.db"
    if path.exists():
        return path
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{partial}")
    upgrade(engine)
    started = time.perf_counter()
    with engine.begin() as connection:
        stamp = _stamp(_month(0))
        connection.execute(
            insert(CustomerRow),
            [
                {"id": i + 1, "external_id": f"c{i:06d}", "name": f"Customer {i}", "currency": "USD",
                 "timezone": "UTC", "locale": "en_US", "created_at": stamp}
                for i in range(customers)
            ],
        )  # fmt: skip
        subscriptions = []
        for i in range(customers):
            first, last = _customer(i)
            ended = last < MONTHS
            subscriptions.append(
                {"id": i + 1, "customer_id": i + 1, "plan_code": "pro", "plan_version": 1,
                 "start_date": _month(first), "end_date": _month(last) if ended else None,
                 "status": "cancelled" if ended else "active", "cancel_reason": "voluntary" if ended else None,
                 "created_at": _stamp(_month(first)), "cancelled_at": _stamp(_month(last)) if ended else None}
            )  # fmt: skip
        connection.execute(insert(SubscriptionRow), subscriptions)
        invoices: list[dict[str, Any]] = []
        lines: list[dict[str, Any]] = []
        for invoice, invoice_lines in _invoices(range(customers)):
            invoices.append(invoice)
            lines.extend(invoice_lines)
            if len(invoices) >= BATCH:
                connection.execute(insert(InvoiceRow), invoices)
                connection.execute(insert(InvoiceLineRow), lines)
                invoices, lines = [], []
        if invoices:
            connection.execute(insert(InvoiceRow), invoices)
            connection.execute(insert(InvoiceLineRow), lines)
        # written as drafts (a new invoice is one), then issued all at once
        connection.execute(
            update(InvoiceRow).values(
                status="finalized", number=func.printf("INV-%09d", InvoiceRow.id), issue_date=InvoiceRow.period_end,
                due_date=InvoiceRow.period_end, finalized_at=InvoiceRow.created_at,
            )
        )  # fmt: skip
    raw = engine.raw_connection()
    raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()
    engine.dispose()
    partial.rename(path)
    console.log(f"metrics: wrote {customers:,} customers' year of invoices in {time.perf_counter() - started:.0f} s")
    return path


LAUNCHER = """
import json, os, resource, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
cpu = usage.ru_utime + usage.ru_stime
print(json.dumps([time.perf_counter() - started, usage.ru_maxrss, os.waitstatus_to_exitcode(status), cpu]))
"""
"""Runs a command and prints its wall seconds, peak resident set size (KB), exit code and CPU seconds. A child's maximum
resident set size starts from its parent's at the fork (Linux keeps it across ``exec``), so the measured
command is forked from this small process, not from the benchmark's."""


def measure(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall seconds, peak resident memory (MB) and CPU seconds (user + system) of one run of ``argv`` (the
    child's own rusage)."""
    done = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER, *argv], env=env, capture_output=True, text=True, check=False
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr[-2000:]}")
    seconds, peak_kb, code, cpu = json.loads(lines[-1])
    if code != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {code}: {done.stderr[-2000:]}")
    return float(seconds), peak_kb / 1024, float(cpu)


def run(scale: float, console: Console) -> list[Figure]:
    customers = int(os.environ.get("BENCH_METRICS_CUSTOMERS") or max(100, int(CUSTOMERS * scale)))
    path = database(customers, console)
    folder = path.parent / f"metrics-{customers}-config"
    folder.mkdir(exist_ok=True)
    (folder / "catalog.toml").write_text(CATALOG)
    config = folder / "config.toml"
    config.write_text(f'database_url = {json.dumps(f"sqlite:///{path}")}\ncatalog = "catalog.toml"\n')
    env = {**os.environ, "BILLING_CONFIG": str(config), "PYTHONPATH": str(ROOT)}
    last = _month(MONTHS - 1)
    argv = [sys.executable, "-m", "billing", "metrics", "--period", f"{YEAR}-01", "--to", f"{last:%Y-%m}", "--json"]
    seconds, memory, cpu = measure(argv, env)
    bare_seconds, bare_memory, bare_cpu = measure([sys.executable, "-c", BASELINE, str(path)], env)
    _, idle_memory, _ = measure([sys.executable, "-c", "pass"], env)
    invoices = sum(_customer(i)[1] - _customer(i)[0] for i in range(customers))
    console.log(
        f"metrics: {customers:,} customers, {invoices:,} invoices: billing metrics {seconds:.1f} s "
        f"({cpu:.1f} CPU-s), {memory:,.0f} MB peak; bare SUM … GROUP BY {bare_seconds:.1f} s ({bare_cpu:.1f} CPU-s), "
        f"{bare_memory:,.0f} MB; "
        f"python -c pass {idle_memory:,.0f} MB"
    )
    label = f"billing metrics, {MONTHS} months × {customers:,} customers"
    return [
        Figure(f"{label}: wall time", seconds, "s", bare_seconds, "bare SQLite SUM … GROUP BY"),
        Figure(f"{label}: CPU time", cpu, "CPU-s", bare_cpu, "bare SQLite SUM … GROUP BY"),
        Figure(f"{label}: peak memory", memory, "MB", bare_memory, "bare SQLite SUM … GROUP BY"),
        Figure(f"{label}: peak memory", memory, "MB", idle_memory, "python -c pass"),
        Figure(
            f"{label}: memory above python -c pass, per customer",
            (memory - idle_memory) * 1024 / customers,
            "KB",
            None,
            "",
            f"{invoices:,} invoices",
        ),
    ]
