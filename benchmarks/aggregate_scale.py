"""Aggregation at scale: peak memory of a month of a ``latest`` meter, and a month spread over many customers.

- **Memory.** ``BENCH_LATEST_EVENTS`` events (default 10,000,000 × ``BENCH_SCALE``) of one ``latest`` meter for
  10,000 customers, aggregated by ``meters.aggregate_usage`` in a fresh process, its peak RSS beside a fresh
  process that runs a plain ``GROUP BY customer, meter`` of the same events and fetches its rows; and the same at a
  tenth of the events, to show what memory grows with. The same events are also aggregated as a ``percentage``
  charge's meter (its fees summed in the database), as a ``latest`` meter split by ``group_by``, and with every
  event's value handed back (what a percentage charge priced by dimension still reads). The events are generated
  by the database itself (SQLite: a recursive CTE; PostgreSQL: ``generate_series``), deterministic.
- **Many customers.** 1,000,000 events over 100,000 customers (× ``BENCH_SCALE``), the six kinds of
  ``benchmarks.aggregate`` (ten events per customer), aggregated for every customer's window, beside the plain
  ``GROUP BY customer, meter`` ``sum(value)`` of the same month.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from benchmarks import DATA, Figure, best_of, postgres_schema, postgres_url
from benchmarks.aggregate import METERS, _group_by, _load_postgres, _month_span, sqlite_database, windows
from billing.db import make_engine, upgrade
from meters import aggregate_usage

LATEST_EVENTS = 10_000_000
LATEST_CUSTOMERS = 10_000
MANY_EVENTS = 1_000_000
MANY_CUSTOMERS = 100_000
ROOT = Path(__file__).resolve().parent.parent

# Event i: customer i mod C, an instant spread over the month by a multiplicative hash, a value of 0–999.
_SQLITE_LATEST = (
    "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :events - 1) "
    "INSERT INTO usage_events (event_id, customer, meter, occurred_at, value, unique_value, properties, "
    "content_hash, received_at) "
    "SELECT 'l' || i, printf('c%05d', i % :customers), 'seats', :start + (i * 2654435761) % :span, "
    "((i * 40503) % 1000) * 1000000, NULL, NULL, i, :start + (i * 2654435761) % :span + 1000 FROM n"
)
_POSTGRES_LATEST = (
    "INSERT INTO usage_events (event_id, customer, meter, occurred_at, value, unique_value, properties, "
    "content_hash, received_at) "
    "SELECT 'l' || i, 'c' || lpad((i %% %(customers)s)::text, 5, '0'), 'seats', "
    "%(start)s + (i * 2654435761) %% %(span)s, ((i * 40503) %% 1000) * 1000000, NULL, NULL, i, "
    "%(start)s + (i * 2654435761) %% %(span)s + 1000 FROM generate_series(0::bigint, %(events)s - 1) i"
)

# Run in a fresh interpreter: prints the seconds and the peak RSS (KiB) of one aggregation or one GROUP BY.
_CHILD = """
import resource, sys, time
from benchmarks.aggregate import _group_by, windows
from billing.db import make_engine
from meters import MeterSpec, aggregate_usage
url, what, customers = sys.argv[1], sys.argv[2], int(sys.argv[3])
spans = windows(customers)
engine = make_engine(url)
started = time.perf_counter()
if what == "aggregate":
    found = aggregate_usage(engine, spans, [MeterSpec("seats", "latest")])
    assert len(found) == customers
elif what == "values":  # every event's value handed back, as charges priced by dimension still read them
    found = aggregate_usage(engine, spans, [MeterSpec("seats", "sum", keep_event_values=True)])
    assert sum(len(f.values) for f in found.values()) > 0
elif what == "fees":  # a percentage charge's fees summed in the database: 2.9 % + 0.30, min 0.50, first 10 free
    from decimal import Decimal
    from pricing_plans.charge_models.base import PerEventFeeTerms
    terms = PerEventFeeTerms(Decimal("2.9"), Decimal("0.30"), 10, Decimal(0), Decimal("0.50"), Decimal(25))
    found = aggregate_usage(engine, spans, [MeterSpec("seats", "sum", per_event_fees=(terms,))])
    assert sum(f.fees[terms].paid_events for f in found.values()) > 0
elif what == "split":  # a latest meter split by group_by (a property the events lack: one part a window)
    from meters import Split, aggregate_split_usage
    split = Split.of([], group_by=[["region"]])
    found = aggregate_split_usage(engine, spans, [MeterSpec("seats", "latest")], {"seats": split})
    assert len(found) == customers
else:
    _group_by(url, customers)
# this process's own peak (VmHWM, KiB): Linux carries ru_maxrss over an exec, so it would include the parent's
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    pass
print(time.perf_counter() - started, peak)
"""


def latest_events() -> int:
    """How many events the memory figure aggregates: ``BENCH_LATEST_EVENTS``, else 10,000,000 × the scale."""
    from benchmarks import scale

    configured = os.environ.get("BENCH_LATEST_EVENTS")
    return int(configured) if configured else max(100_000, int(LATEST_EVENTS * scale()))


def _latest_sqlite(events: int, console: Console) -> str:
    DATA.mkdir(exist_ok=True)
    path = DATA / f"latest-{events}-{LATEST_CUSTOMERS}-v1.db"
    if not path.exists():
        console.log(f"generating {events:,} events of a latest meter into {path.name} (once)...")
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        upgrade(f"sqlite:///{tmp}")
        import sqlite3

        connection = sqlite3.connect(tmp, isolation_level=None)
        connection.execute("PRAGMA journal_mode=OFF")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA cache_size=-262144")
        index = connection.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'ix_usage_events_aggregation'"
        ).fetchone()[0]
        connection.execute("DROP INDEX ix_usage_events_aggregation")
        connection.execute("DROP INDEX ix_usage_events_received_at")
        start, end = _month_span(LATEST_CUSTOMERS)
        connection.execute("BEGIN")
        connection.execute(
            _SQLITE_LATEST, {"events": events, "customers": LATEST_CUSTOMERS, "start": start, "span": end - start}
        )
        connection.execute("COMMIT")
        connection.execute(index)
        connection.execute("CREATE INDEX ix_usage_events_received_at ON usage_events (received_at)")
        connection.execute("ANALYZE")
        connection.close()
        tmp.rename(path)
    return f"sqlite:///{path}"


def _latest_postgres(url: str, events: int) -> None:
    upgrade(url)
    engine = make_engine(url)
    start, end = _month_span(LATEST_CUSTOMERS)
    with engine.connect() as connection:
        driver = connection.connection.dbapi_connection
        assert driver is not None
        with driver.cursor() as cursor:
            cursor.execute("DROP INDEX ix_usage_events_aggregation")
            cursor.execute(
                _POSTGRES_LATEST,
                {"events": events, "customers": LATEST_CUSTOMERS, "start": start, "span": end - start},
            )
            cursor.execute(
                "CREATE INDEX ix_usage_events_aggregation ON usage_events "
                "(meter, customer, occurred_at, value, received_at, unique_value) INCLUDE (id)"
            )
        driver.commit()
        driver.autocommit = True
        driver.execute("VACUUM ANALYZE usage_events")
        driver.autocommit = False
    engine.dispose()


def _child(url: str, what: str) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of a fresh process aggregating the latest meter, or running the GROUP BY."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, url, what, str(LATEST_CUSTOMERS)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )
    seconds, peak = done.stdout.split()
    return float(seconds), int(peak) / 1024


def _memory_figures(url: str, events: int, backend: str) -> list[Figure]:
    seconds, peak = _child(url, "aggregate")
    base_seconds, base_peak = _child(url, "group_by")
    _, values_peak = _child(url, "values")
    fees_seconds, fees_peak = _child(url, "fees")
    split_seconds, split_peak = _child(url, "split")
    return [
        Figure(
            f"peak RSS, aggregate {events:,} events of a latest meter, {LATEST_CUSTOMERS:,} customers ({backend}; "
            "lower is better)",
            peak,
            "MB",
            base_peak,
            "a fresh process: plain GROUP BY, rows fetched",
            "does not grow with events",
        ),
        Figure(
            f"peak RSS, the same events as a percentage charge's meter, fees summed in the database ({backend}; "
            "lower is better)",
            fees_peak,
            "MB",
            base_peak,
            "a fresh process: plain GROUP BY, rows fetched",
            "does not grow with events",
        ),
        Figure(
            f"peak RSS, the same events as a latest meter split by group_by ({backend}; lower is better)",
            split_peak,
            "MB",
            base_peak,
            "a fresh process: plain GROUP BY, rows fetched",
            "does not grow with events",
        ),
        Figure(
            f"peak RSS, the same events with every value handed back (a percentage charge priced by dimension) "
            f"({backend}; lower is better)",
            values_peak,
            "MB",
            base_peak,
            "a fresh process: plain GROUP BY, rows fetched",
        ),
        Figure(
            f"percentage fees of {events:,} events summed in the database ({backend})",
            events / fees_seconds,
            "events/s",
            events / base_seconds,
            "plain SQL GROUP BY sum",
        ),
        Figure(
            f"latest of {events:,} events split by group_by ({backend})",
            events / split_seconds,
            "events/s",
            events / base_seconds,
            "plain SQL GROUP BY sum",
        ),
        Figure(
            f"aggregate {events:,} events of a latest meter ({backend})",
            events / seconds,
            "events/s",
            events / base_seconds,
            "plain SQL GROUP BY sum",
        ),
    ]


def _many_customers(url: str, events: int, customers: int, backend: str) -> Figure:
    engine = make_engine(url)
    spans = windows(customers)

    def ours() -> None:
        assert len(aggregate_usage(engine, spans, METERS)) == customers * len(METERS)

    started = time.perf_counter()
    ours()  # warms the cache
    seconds = min(time.perf_counter() - started, best_of(1, ours))
    baseline = best_of(2, lambda: _group_by(url, customers))
    engine.dispose()
    return Figure(
        f"aggregate {events:,} events over {customers:,} customers, 6 kinds ({backend})",
        events / seconds,
        "events/s",
        events / baseline,
        "plain SQL GROUP BY sum",
    )


def run(scale: float, console: Console) -> list[Figure]:
    latest = latest_events()
    events = max(10_000, int(MANY_EVENTS * scale))
    customers = max(1_000, int(MANY_CUSTOMERS * scale))
    figures = _memory_figures(_latest_sqlite(latest, console), latest, "SQLite")
    tenth = max(10_000, latest // 10)
    figures += _memory_figures(_latest_sqlite(tenth, console), tenth, "SQLite")[:4]
    path = sqlite_database(events, customers, console)
    figures.append(_many_customers(f"sqlite:///{path}", events, customers, "SQLite"))
    pg = postgres_url()
    if pg:
        with postgres_schema(pg, "latest") as url:
            console.log(f"generating {latest:,} events of a latest meter into PostgreSQL...")
            _latest_postgres(url, latest)
            figures += _memory_figures(url, latest, "PostgreSQL")
        with postgres_schema(pg, "many") as url:
            console.log(f"generating {events:,} events of {customers:,} customers into PostgreSQL...")
            _load_postgres(url, events, customers)
            figures.append(_many_customers(url, events, customers, "PostgreSQL"))
    return figures
