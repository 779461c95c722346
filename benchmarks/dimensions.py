"""Usage priced by event dimension: one month of 10,000,000 events with 3 properties, split by filters naming 50
property values and grouped by a property, → per-(customer, filter, group) quantities, events/s.

The path a billing run takes: ``billing.metering.aggregate_windows`` for every customer's March 2024 with the plan
of the charge priced by dimension, which asks ``meters`` for the plain per-meter totals and for the parts (a
``CASE`` over the events' properties, grouped by window, filter and group in the database). Beside it, a plain SQL
``GROUP BY customer, country, region`` ``count(*)`` over the same month of the same events: the least any split by
property costs. Both run warm (the baseline's first run warms the cache; its best of two is kept).

The events: 3 properties each — ``country`` (60 values, 50 of them named by the filters), ``direction`` (2) and
``region`` (5). The charge: 10 filters of 5 countries each, one more naming a country and a direction (so the
most-specific rule is exercised), its events grouped by ``region``; 20 % of the events match no filter.

The events are generated straight into the table (fixed seed; SQLite cached under ``bench-data/``).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from rich.console import Console

from benchmarks import DATA, Figure, best_of, postgres_schema, postgres_url, timed
from billing.db import make_engine, upgrade
from billing.metering import aggregate_windows
from dbkit import is_postgresql
from meters import to_epoch_us
from pricing_plans.dimensions import DimensionedUsage
from pricing_plans.loader import loads_catalog
from pricing_plans.models import Catalog

EVENTS = 10_000_000
CUSTOMERS = 10_000
VERSION = 1  # of the generator: a cached database of another version is made again
COUNTRIES = [f"C{i:02d}" for i in range(60)]  # C00…C49 named by the filters, C50…C59 by none
DIRECTIONS = ["inbound", "outbound"]
REGIONS = ["eu", "us", "apac", "latam", "africa"]
START = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
END = dt.datetime(2024, 4, 1, tzinfo=dt.UTC)
_INSERT = (
    "INSERT INTO usage_events (event_id, customer, meter, occurred_at, value, unique_value, properties, "
    "content_hash, received_at) VALUES (?, ?, 'sms', ?, NULL, NULL, ?, ?, ?)"
)


def catalog() -> Catalog:
    """The plan: an SMS charge with 10 filters of 5 countries (50 values) and one of a country and a direction,
    grouped by region."""
    filters = "".join(
        f"""
[[plans.sms.charges.filters]]
properties = {{ country = {json.dumps(COUNTRIES[i * 5 : i * 5 + 5])} }}
unit_amount = 0.0{i}
"""
        for i in range(10)
    )
    text = f"""
[meters.sms]
name = "SMS"
aggregation = "count"
unit = "message"

[plans.sms]
name = "SMS"
currency = "USD"
[[plans.sms.charges]]
meter = "sms"
model = "per_unit"
unit_amount = 0.01
group_by = ["region"]
{filters}
[[plans.sms.charges.filters]]
properties = {{ country = ["C00"], direction = ["inbound"] }}
unit_amount = 0
"""
    loaded, problems = loads_catalog(text, "bench-dimensions.toml")
    assert not problems, problems
    return loaded


def generated_rows(events: int, customers: int) -> Iterator[list[tuple[object, ...]]]:
    """The events, in batches of rows (deterministic); properties as the ingestion stores them (canonical JSON)."""
    rng = np.random.default_rng(14)
    texts = [
        json.dumps({"country": c, "direction": d, "region": r}, sort_keys=True, separators=(",", ":"))
        for c in COUNTRIES
        for d in DIRECTIONS
        for r in REGIONS
    ]
    start, end = to_epoch_us(START), to_epoch_us(END)
    batch = 500_000
    serial = 0
    for offset in range(0, events, batch):
        n = min(batch, events - offset)
        occurred = np.sort(rng.integers(start, end, n)).tolist()
        customer = rng.integers(0, customers, n).tolist()
        properties = rng.integers(0, len(texts), n).tolist()
        hashes = rng.integers(-(2**62), 2**62, n).tolist()
        rows = []
        for c, t, p, h in zip(customer, occurred, properties, hashes, strict=True):
            serial += 1
            rows.append((f"e{serial:010d}", f"c{c:05d}", t, texts[p], h, t + 1000))
        yield rows


def sqlite_database(events: int, customers: int, console: Console) -> Path:
    """The cached SQLite database of the benchmark (made when missing)."""
    DATA.mkdir(exist_ok=True)
    path = DATA / f"dimensions-{events}-{customers}-v{VERSION}.db"
    if path.exists():
        return path
    console.log(f"generating {events:,} events with properties into {path.name} (once)...")
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
                    "COPY usage_events (event_id, customer, occurred_at, properties, content_hash, received_at, "
                    "meter) FROM STDIN"
                ) as copy:
                    for row in rows:
                        copy.write_row((*row, "sms"))
            cursor.execute(
                "CREATE INDEX ix_usage_events_aggregation ON usage_events "
                "(meter, customer, occurred_at, value, received_at, unique_value) INCLUDE (id)"
            )
        driver.commit()
        driver.autocommit = True
        driver.execute("VACUUM ANALYZE usage_events")
        driver.autocommit = False
    engine.dispose()


def _group_by(url: str) -> None:
    """The baseline: a plain GROUP BY on the properties over the month (no windows, no filters)."""
    engine = make_engine(url)
    with engine.connect() as connection:
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        if is_postgresql(engine):
            marker = "%s"
            country = "properties::jsonb ->> 'country'"
            region = "properties::jsonb ->> 'region'"
        else:
            marker = "?"
            country = "json_extract(properties, '$.country')"
            region = "json_extract(properties, '$.region')"
        cursor.execute(
            f"SELECT customer, {country}, {region}, count(*) FROM usage_events "
            f"WHERE meter = 'sms' AND occurred_at >= {marker} AND occurred_at < {marker} GROUP BY 1, 2, 3",
            (to_epoch_us(START), to_epoch_us(END)),
        )
        cursor.fetchall()
        cursor.close()
        connection.rollback()
    engine.dispose()


def _measure(url: str, events: int, customers: int, backend: str) -> Figure:
    engine = make_engine(url)
    loaded = catalog()
    plan = loaded.plan("sms")
    spans = {f"c{i:05d}": (f"c{i:05d}", START, END) for i in range(customers)}
    plans = dict.fromkeys(spans, plan)
    result: dict[object, object] = {}

    def ours() -> None:
        result.update(aggregate_windows(engine, loaded, spans, plans))

    baseline = best_of(2, lambda: _group_by(url))  # (the first run warms the cache for both)
    seconds = timed(ours)
    engine.dispose()
    found = [usage["sms"] for usage in result.values()]  # type: ignore[index]
    assert all(isinstance(usage, DimensionedUsage) for usage in found)
    assert sum(usage.total.events for usage in found) == events
    assert sum(used.events for usage in found for used in usage.parts.values()) == events
    return Figure(
        f"aggregate by dimension {events:,} events, 3 properties, 50 filter values ({backend})",
        events / seconds,
        "events/s",
        events / baseline,
        "plain SQL GROUP BY the properties",
    )


def run(scale: float, console: Console) -> list[Figure]:
    events = max(10_000, int(EVENTS * scale))
    customers = max(100, int(CUSTOMERS * min(1.0, scale * 10)))
    path = sqlite_database(events, customers, console)
    figures = [_measure(f"sqlite:///{path}", events, customers, "SQLite")]
    pg = postgres_url()
    if pg:
        with postgres_schema(pg, "dimensions") as url:
            console.log(f"generating {events:,} events with properties into PostgreSQL...")
            _load_postgres(url, events, customers)
            figures.append(_measure(url, events, customers, "PostgreSQL"))
    return figures
