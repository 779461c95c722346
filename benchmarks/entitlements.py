"""Entitlements on the product's request path, on SQLite and (when configured) PostgreSQL: the latency of
``GET /v1/customers/{id}/entitlements`` through ``billing serve`` (a real uvicorn on 127.0.0.1, reactor and
scheduler running) with a real HTTP client (the standard library's, one kept-alive connection), beside
``GET /v1/customers/{id}`` (the customer read by its unique external id: a plain primary-key lookup through the
same server, routing, authentication and serialization) on the same database.

The data: 100 customers on a plan with a hard limit on a ``count`` meter and an allowance of a ``sum`` meter, and
this month's usage of each (1,000,000 events at scale 1, 10,000 a customer, half of each meter); one heavy
customer with 200,000 more, stored through ingestion and the table analyzed (as PostgreSQL's autovacuum does after
a bulk load). The server's usage reaction counts them before the requests start. The requests: 2,000 of each kind
at scale 1 (at least 300), in turns, for customers picked at random, then the same for the heavy customer alone:
p50 and p99 (ms). Target: a p99 within 3× the lookup's, whatever the number of events (the answer reads counters,
not the period's events).

``BENCH_SCALE`` scales the numbers of events and requests.
"""

from __future__ import annotations

import datetime as dt
import http.client
import random
import time
from pathlib import Path

from rich.console import Console
from sqlalchemy import text

from benchmarks import DATA, Figure, postgres_schema, postgres_url
from benchmarks.api_ingest import _percentile, _populate, _server
from billing.apikeys import create_api_key
from billing.db import make_engine, upgrade
from billing.metering import meter_specs
from meters import ingest
from pricing_plans.loader import loads_catalog

EVENTS = 1_000_000
HEAVY_EVENTS = 200_000
CUSTOMERS = 100
REQUESTS = 2_000

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
unit = "call"

[meters.tokens]
name = "Tokens"
aggregation = "sum"
unit = "token"

[plans.pro]
name = "Pro"
currency = "USD"
[[plans.pro.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.001
[[plans.pro.charges]]
meter = "tokens"
model = "per_unit"
unit_amount = 0.00001
[[plans.pro.thresholds]]
meter = "api_calls"
allowance = 1000000
hard_limit = true
[[plans.pro.thresholds]]
meter = "tokens"
allowance = 50000000
"""


def _usage(url: str, names: list[str], events: int, heavy: str, heavy_events: int) -> None:
    """This month's events, spread over its days so far, through ingestion (validated and stored as the API
    stores them)."""
    catalog, problems = loads_catalog(CATALOG, "entitlements-bench.toml")
    assert catalog is not None and not problems, problems
    specs = meter_specs(catalog)
    now = dt.datetime.now(dt.UTC)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    span = max(1, int((now - first).total_seconds()) - 60)
    engine = make_engine(url)
    rng = random.Random(15)

    def batch(prefix: str, who: list[str], count: int) -> None:
        for start in range(0, count, 50_000):
            rows = []
            for i in range(start, min(count, start + 50_000)):
                when = (first + dt.timedelta(seconds=rng.randrange(span))).isoformat()
                meter = "api_calls" if i % 2 else "tokens"
                row: dict[str, object] = {"id": f"{prefix}-{i}", "customer": who[i % len(who)], "meter": meter,
                                          "timestamp": when}
                if meter == "tokens":
                    row["value"] = str(rng.randrange(1, 2_000))
                rows.append(row)
            report = ingest(engine, rows, specs, set(who), now=now)
            assert not report.rejected, report.rejected[:3]

    batch("spread", names, events)
    batch("heavy", [heavy], heavy_events)
    with engine.begin() as connection:  # statistics, as PostgreSQL's autovacuum keeps them after a bulk load
        connection.execute(text("ANALYZE usage_events"))
    engine.dispose()


def _reacted(url: str, timeout: float = 120.0) -> None:
    """Wait until the usage reaction has reacted to every stored event (its counters are written)."""
    from billing.reactions import pending_since
    from meters import received_since, to_epoch_us

    engine = make_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                if not received_since(connection, to_epoch_us(pending_since(engine))):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the usage reaction did not catch up within {timeout:.0f} s")
    finally:
        engine.dispose()


def _latencies(base: str, key: str, paths: list[str]) -> list[float]:
    """Seconds each GET of ``paths`` took, in order, on one kept-alive connection."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Authorization": f"Bearer {key}"}
    took: list[float] = []
    try:
        for path in paths:
            sent = time.perf_counter()
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            took.append(time.perf_counter() - sent)
            assert response.status == 200, body[:300]
    finally:
        connection.close()
    return took


def _measure(label: str, url: str, scale: float, console: Console) -> list[Figure]:
    upgrade(url)
    names = [f"cust-{i:04d}" for i in range(CUSTOMERS)]
    heavy = "heavy"
    events = max(10_000, int(EVENTS * scale))
    heavy_events = max(2_000, int(HEAVY_EVENTS * scale))
    _populate(url, [*names, heavy], "pro", dt.date.today().replace(day=1))
    console.log(f"{label}: ingesting {events:,} + {heavy_events:,} events...")
    _usage(url, names, events, heavy, heavy_events)
    engine = make_engine(url)
    _, key = create_api_key(engine, "bench")
    engine.dispose()
    catalog = DATA / "entitlements-catalog.toml"
    catalog.write_text(CATALOG, encoding="utf-8")
    requests = max(300, int(REQUESTS * scale))
    rng = random.Random(5)
    picked = [rng.choice(names) for _ in range(requests)]
    figures: list[Figure] = []
    with _server(url, catalog) as base:
        _reacted(url)  # the reactor's first pass counts the ingested events
        _latencies(base, key, [f"/v1/customers/{who}/entitlements" for who in names])  # warm up
        for who, description in (
            (picked, f"{events // CUSTOMERS:,} events a customer"),
            ([heavy] * requests, f"{heavy_events:,} events, one customer"),
        ):
            # in turns, so that both kinds see the same server state
            paths = [p for w in who for p in (f"/v1/customers/{w}/entitlements", f"/v1/customers/{w}")]
            took = _latencies(base, key, paths)
            ours, lookup = took[0::2], took[1::2]
            p50, p99 = _percentile(ours, 0.5) * 1000, _percentile(ours, 0.99) * 1000
            l50, l99 = _percentile(lookup, 0.5) * 1000, _percentile(lookup, 0.99) * 1000
            name = f"GET …/entitlements ({description}, {requests:,} requests)"
            figures.append(Figure(f"{name}, p50 → {label}", p50, "ms", l50, "GET /v1/customers/{id} p50"))
            figures.append(
                Figure(
                    f"{name}, p99 → {label}", p99, "ms", l99, "GET /v1/customers/{id} p99", "≤ 3× lookup",
                    p99 <= 3 * l99,
                )
            )
    return figures


def run(scale: float, console: Console) -> list[Figure]:
    DATA.mkdir(exist_ok=True)
    path = DATA / "entitlements.db"
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    try:
        figures = _measure("SQLite", f"sqlite:///{path}", scale, console)
    finally:
        for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)
    pg = postgres_url()
    if pg:
        with postgres_schema(pg, "entitlements") as url:
            figures += _measure("PostgreSQL", url, scale, console)
    return figures

