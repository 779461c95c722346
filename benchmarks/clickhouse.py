"""The ClickHouse event store on chDB (ClickHouse in this process): ingestion and a month's aggregation, each
beside plain ClickHouse doing the least the same data needs, with peak memory.

- ingest: the store's ``store_chunk`` (the ids of each 50,000-event chunk looked up, the rest inserted with a
  deduplication token into the ``ReplacingMergeTree``), beside a plain ``INSERT`` of the same rows into a plain
  ``MergeTree`` table of the same columns;
- aggregate: ``ClickHouseEventStore.aggregate`` of every customer's own March (5 timezones) for the 6 kinds of
  ``benchmarks.aggregate`` (``FINAL``, every kind computed in ClickHouse), beside a plain
  ``GROUP BY customer, meter`` ``sum(value)`` of the month on the plain table; both warm, best of three. Peak
  memory: the process's resident set sampled during the call, less what it was before.

Sizes: ``benchmarks.aggregate``'s generator, 1,000,000 events for 1,000 customers at ``BENCH_SCALE=1`` (a few
minutes on 2 cores); ``BENCH_CLICKHOUSE_EVENTS=10000000`` (or ``100000000``) for the month of the issue's sizes,
with ``BENCH_CLICKHOUSE_CUSTOMERS`` customers (default: events / 1,000).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks import Figure, best_of, timed
from benchmarks.aggregate import METERS, _month_span, generated_rows, windows
from meters.events import content_hash
from meters.store.clickhouse import ClickHouseEventStore, close_chdb, usage_events_ddl

_CHUNK = 50_000


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory(function: Callable[[], object]) -> tuple[float, int]:
    """(seconds, peak resident bytes above the start) of ``function()``, sampled every 5 ms."""
    start = _rss()
    peak = [start]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    seconds = timed(function)
    done.set()
    sampler.join()
    return seconds, max(peak[0], _rss()) - start


def _events(events: int, customers: int) -> list[list[tuple[Any, ...]]]:
    """The generator's rows as stored events (``UsageEvent`` tuples), in chunks."""
    chunks: list[list[tuple[Any, ...]]] = []
    for rows in generated_rows(events, customers):
        stored = [(i, c, m, t, v, u, None, content_hash(c, m, t, v, None)) for i, c, m, t, v, u, _, _ in rows]
        chunks.extend(stored[s : s + _CHUNK] for s in range(0, len(stored), _CHUNK))
    return chunks


def run(scale: float, console: Console) -> list[Figure]:
    events = int(os.environ.get("BENCH_CLICKHOUSE_EVENTS", 0)) or int(1_000_000 * scale)
    customers = int(os.environ.get("BENCH_CLICKHOUSE_CUSTOMERS", 0)) or max(events // 1000, 5)
    folder = Path(tempfile.mkdtemp(prefix="bench-chdb-"))
    try:
        return _run(events, customers, folder, console)
    finally:
        close_chdb()
        shutil.rmtree(folder, ignore_errors=True)


def _run(events: int, customers: int, folder: Path, console: Console) -> list[Figure]:
    console.log(f"generating {events:,} events for {customers:,} customers...")
    chunks = _events(events, customers)
    total = sum(len(chunk) for chunk in chunks)
    store = ClickHouseEventStore.open(f"chdb://{folder}?database=bench")
    store.create_tables()
    plain = "`bench`.plain_events"
    store.client.command(usage_events_ddl(plain, "MergeTree", dedup_window=0))
    console.log("ingesting into the store, then plainly...")
    ingest_s, ingest_peak = peak_memory(lambda: [store.store_chunk(chunk) for chunk in chunks])
    plain_s = timed(
        lambda: [store.client.insert(plain, [(*e[:4], _dec(e[4]), *e[5:], 0, 0) for e in c], "") for c in chunks]
    )
    by_customer = windows(customers)
    start, end = _month_span(customers)
    in_month = total - events // 200 if total > events else total

    def aggregate() -> None:
        store.aggregate(by_customer, METERS)

    def group_by() -> None:
        store.client.query(
            f"SELECT customer, meter, sum(value) FROM {plain} WHERE occurred_at >= {start} AND occurred_at < {end} "
            "GROUP BY customer, meter"
        )

    aggregate()  # warm
    aggregate_s = best_of(3, aggregate)
    _, aggregate_peak = peak_memory(aggregate)
    group_s = best_of(3, group_by)
    _, group_peak = peak_memory(group_by)
    mib = 1024 * 1024
    console.log(
        f"peak memory above the start: ingest {ingest_peak / mib:,.0f} MiB, aggregate {aggregate_peak / mib:,.0f} "
        f"MiB, plain GROUP BY {group_peak / mib:,.0f} MiB"
    )
    return [
        Figure(
            f"chDB ingest, {total:,} events (store_chunk: ids looked up, dedup token)",
            total / ingest_s,
            "events/s",
            total / plain_s,
            "plain INSERT, MergeTree",
        ),
        Figure(
            f"chDB aggregate a month, {in_month:,} events, {customers:,} windows, 6 kinds",
            in_month / aggregate_s,
            "events/s",
            in_month / group_s,
            "plain GROUP BY customer, meter",
        ),
        Figure(
            "chDB aggregate: peak memory (MiB above the start; lower is better)",
            aggregate_peak / mib,
            "MiB",
            group_peak / mib,
            "plain GROUP BY's",
        ),
    ]


def _dec(scaled: int | None) -> Any:
    from meters.events import from_scaled

    return None if scaled is None else from_scaled(scaled)
