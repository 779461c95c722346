"""Aggregation: one month of 10,000,000 events for 10,000 customers → per-(customer, meter) quantities, events/s.

``meters.aggregate_usage`` for every customer's own March 2024 (five timezones, so five different UTC windows),
every aggregation kind, beside a plain SQL ``GROUP BY customer, meter`` ``sum(value)`` over the same month of the
same table. Target: ≥ 3,000,000 events/s and within 2× of the ``GROUP BY``. Both run warm, best of three.

The meter mix: count 60 %, sum 20 %, unique_count 12 % (1,000 distinct users per customer at most), max 3 %,
weighted_sum 3 % (plus half a percent more in February, the level carried into March), latest 2 %.

Also measured, to choose the unique_count kernel: SQL ``COUNT(DISTINCT)`` against loading the rows and counting
with numpy's sort-and-compare, and the sort-and-compare kernel against ``np.unique``.

The events are generated straight into the table (fixed seed; SQLite cached under ``bench-data/``).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
from rich.console import Console

from benchmarks import DATA, Figure, best_of, postgres_schema, postgres_url
from billing.db import make_engine, upgrade
from dbkit import is_postgresql
from meters import MeterSpec, aggregate_usage, to_epoch_us

EVENTS = 10_000_000
CUSTOMERS = 10_000
VERSION = 1  # of the generator: a cached database of another version is made again
TIMEZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "America/Los_Angeles"]
METERS = [
    MeterSpec("api_calls", "count"),
    MeterSpec("bytes", "sum"),
    MeterSpec("active_users", "unique_count", unique_property="user_id"),
    MeterSpec("peak_rps", "max"),
    MeterSpec("storage_gb", "weighted_sum"),
    MeterSpec("seats", "latest"),
]
MIX = [0.60, 0.20, 0.12, 0.03, 0.03, 0.02]
_INSERT = (
    "INSERT INTO usage_events (event_id, customer, meter, occurred_at, value, unique_value, properties, "
    "content_hash, received_at) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?)"
)


def windows(customers: int) -> dict[str, tuple[dt.datetime, dt.datetime]]:
    """Every customer's March 2024 in its own timezone, as UTC instants."""
    result = {}
    for i in range(customers):
        zone = ZoneInfo(TIMEZONES[i % len(TIMEZONES)])
        start = dt.datetime(2024, 3, 1, tzinfo=zone).astimezone(dt.UTC)
        end = dt.datetime(2024, 4, 1, tzinfo=zone).astimezone(dt.UTC)
        result[f"c{i:05d}"] = (start, end)
    return result


def _month_span(customers: int) -> tuple[int, int]:
    spans = windows(min(customers, len(TIMEZONES))).values()
    return to_epoch_us(min(s for s, _ in spans)), to_epoch_us(max(e for _, e in spans))


def generated_rows(events: int, customers: int) -> Iterator[list[tuple[object, ...]]]:
    """The events, in batches of rows (deterministic)."""
    rng = np.random.default_rng(2024)
    start, end = _month_span(customers)
    history = events // 200  # weighted_sum events in February: the level carried into March
    codes = np.array([m.code for m in METERS])
    batch = 500_000
    serial = 0
    for offset in range(0, events + history, batch):
        n = min(batch, events + history - offset)
        in_history = offset >= events
        low, high = (start - 29 * 86_400_000_000, start) if in_history else (start, end)
        occurred = np.sort(rng.integers(low, high, n))
        customer = rng.integers(0, customers, n)
        meter = np.full(n, 4) if in_history else rng.choice(len(METERS), n, p=MIX)
        value = rng.integers(1, 1_000_000, n) * 1_000_000
        value = np.where(meter == 4, rng.integers(-5, 20, n) * 1_000_000, value)
        user = rng.integers(0, 1000, n)
        hashes = rng.integers(-(2**62), 2**62, n)
        rows = []
        for c, m, t, v, u, h in zip(
            customer.tolist(),
            meter.tolist(),
            occurred.tolist(),
            value.tolist(),
            user.tolist(),
            hashes.tolist(),
            strict=True,
        ):
            serial += 1
            rows.append(
                (
                    f"e{serial:010d}",
                    f"c{c:05d}",
                    codes[m],
                    t,
                    None if m == 0 else v,
                    f"u{u}" if m == 2 else None,
                    h,
                    t + 1000,
                )
            )
        yield rows


def sqlite_database(events: int, customers: int, console: Console) -> Path:
    """The cached SQLite database of the benchmark (made when missing)."""
    DATA.mkdir(exist_ok=True)
    path = DATA / f"aggregate-{events}-{customers}-v{VERSION}.db"
    if path.exists():
        return path
    console.log(f"generating {events:,} events into {path.name} (once)...")
    tmp = path.with_suffix(".tmp")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    upgrade(f"sqlite:///{tmp}")
    connection = sqlite3.connect(tmp, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute("PRAGMA cache_size=-262144")
    index = connection.execute("SELECT sql FROM sqlite_master WHERE name = 'ix_usage_events_aggregation'").fetchone()[0]
    connection.execute("DROP INDEX ix_usage_events_aggregation")
    for rows in generated_rows(events, customers):
        connection.execute("BEGIN")
        connection.executemany(_INSERT, rows)
        connection.execute("COMMIT")
    connection.execute(index)
    connection.execute("ANALYZE")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    Path(f"{tmp}-wal").unlink(missing_ok=True)
    Path(f"{tmp}-shm").unlink(missing_ok=True)
    tmp.rename(path)
    return path


def _load_postgres(url: str, events: int, customers: int) -> None:
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as connection:
        driver = connection.connection.dbapi_connection
        assert driver is not None
        with driver.cursor() as cursor:
            cursor.execute("DROP INDEX ix_usage_events_aggregation")
            for rows in generated_rows(events, customers):
                with cursor.copy(
                    "COPY usage_events (event_id, customer, meter, occurred_at, value, unique_value, content_hash, "
                    "received_at) FROM STDIN"
                ) as copy:
                    for row in rows:
                        copy.write_row(row)
            cursor.execute(
                "CREATE INDEX ix_usage_events_aggregation ON usage_events "
                "(meter, customer, occurred_at, value, received_at, unique_value) INCLUDE (id)"
            )
        driver.commit()
        driver.autocommit = True
        driver.execute("VACUUM ANALYZE usage_events")
        driver.autocommit = False
    engine.dispose()


def _group_by(url: str, customers: int) -> None:
    """The baseline: a plain GROUP BY sum over the month (no per-customer windows, no kinds)."""
    start, end = _month_span(customers)
    engine = make_engine(url)
    with engine.connect() as connection:
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        marker = "%s" if is_postgresql(engine) else "?"
        cursor.execute(
            "SELECT customer, meter, sum(value) FROM usage_events "
            f"WHERE occurred_at >= {marker} AND occurred_at < {marker} GROUP BY customer, meter",
            (start, end),
        )
        cursor.fetchall()
        cursor.close()
        connection.rollback()
    engine.dispose()


def sort_and_compare(group: np.ndarray, code: np.ndarray, groups: int) -> np.ndarray:
    """Distinct codes per group: sort the (group, code) keys, count where a key differs from the one before."""
    keys = np.sort(group.astype(np.int64) << 32 | code.astype(np.int64))
    new = np.empty(len(keys), dtype=bool)
    new[:1] = True
    new[1:] = keys[1:] != keys[:-1]
    return np.bincount((keys >> 32)[new], minlength=groups)


def _unique_figures(path: Path, customers: int) -> list[Figure]:
    start, end = _month_span(customers)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA cache_size=-262144")
    where = "WHERE meter = 'active_users' AND occurred_at >= ? AND occurred_at < ?"
    rows = connection.execute(f"SELECT count(*) FROM usage_events {where}", (start, end)).fetchone()[0]

    def in_sql() -> None:
        connection.execute(
            f"SELECT customer, count(DISTINCT unique_value) FROM usage_events {where} GROUP BY customer", (start, end)
        ).fetchall()

    def in_numpy() -> None:
        fetched = connection.execute(f"SELECT customer, unique_value FROM usage_events {where}", (start, end))
        customer_codes: dict[str, int] = {}
        value_codes: dict[str, int] = {}
        pairs = [
            (customer_codes.setdefault(c, len(customer_codes)), value_codes.setdefault(u, len(value_codes)))
            for c, u in fetched
        ]
        table = np.array(pairs, dtype=np.int64)
        sort_and_compare(table[:, 0], table[:, 1], len(customer_codes))

    sql_seconds = best_of(3, in_sql)
    numpy_seconds = best_of(3, in_numpy)
    connection.close()

    rng = np.random.default_rng(1)
    group, code = rng.integers(0, customers, rows), rng.integers(0, 1000, rows)
    kernel = best_of(3, lambda: sort_and_compare(group, code, customers))
    unique = best_of(3, lambda: np.unique(group.astype(np.int64) << 32 | code, return_counts=False))
    return [
        Figure(
            "unique_count: SQL COUNT(DISTINCT) (kept)",
            rows / sql_seconds,
            "events/s",
            rows / numpy_seconds,
            "rows loaded + numpy sort-and-compare",
        ),
        Figure("unique_count kernel: numpy sort-and-compare", rows / kernel, "events/s", rows / unique, "np.unique"),
    ]


def _measure(url: str, events: int, customers: int, backend: str) -> Figure:
    engine = make_engine(url)
    spans = windows(customers)
    result: dict[object, object] = {}

    def ours() -> None:
        result.update(aggregate_usage(engine, spans, METERS))

    started = time.perf_counter()
    ours()  # warms the cache
    first = time.perf_counter() - started
    seconds = min(first, best_of(2, ours))
    baseline = best_of(3, lambda: _group_by(url, customers))
    engine.dispose()
    assert len(result) == customers * len(METERS)
    measured = events / seconds
    ratio_ok = seconds <= 2 * baseline
    return Figure(
        f"aggregate {events:,} events, {customers:,} customers, 6 kinds ({backend})",
        measured,
        "events/s",
        events / baseline,
        "plain SQL GROUP BY sum",
        "≥ 3,000,000 events/s, within 2× of GROUP BY",
        measured >= 3_000_000 and ratio_ok,
    )


def run(scale: float, console: Console) -> list[Figure]:
    events = max(10_000, int(EVENTS * scale))
    customers = max(100, int(CUSTOMERS * min(1.0, scale * 10)))
    path = sqlite_database(events, customers, console)
    figures = [_measure(f"sqlite:///{path}", events, customers, "SQLite")]
    figures += _unique_figures(path, customers)
    pg = postgres_url()
    if pg:
        with postgres_schema(pg, "aggregate") as url:
            console.log(f"generating {events:,} events into PostgreSQL...")
            _load_postgres(url, events, customers)
            figures.append(_measure(url, events, customers, "PostgreSQL"))
    return figures
