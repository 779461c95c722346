"""Ingestion in the product's request path, on SQLite and (when configured) PostgreSQL, each beside its raw
baseline from the same run:

- ``POST /v1/events`` in batches of 1,000 through ``billing serve`` (a real uvicorn on 127.0.0.1, reactor and
  scheduler running: timed once the reactor has reacted to a first event) with a real HTTP client (httpx,
  keep-alive), events/s; beside raw ``executemany`` (SQLite) / ``COPY`` (PostgreSQL) of the same rows, already
  parsed, in transactions of 1,000. Target ≥ 0.5× raw.
- the same number of events in batches of 1,000 from 4 clients at once (each its own keep-alive connection), beside
  the same raw baseline: what the server takes from several senders (for the record; the target is the first).
- single-event POSTs from 8 concurrent clients (each a process of its own) paced at 500 events/s in all: p50 and
  p99 latency (ms), beside the p50 of ``GET /healthz`` on the same server. Target p99 ≤ 10 ms.
- the delay from an event's acceptance (its answer received) to its alert (the notification row's
  ``created_at``), p99, for customers whose first event crosses their allowance, sent among the paced events.
  Target ≤ 2 s (the reactor's bound).

``billing ingest`` of a file on a catalog with thresholds is measured by ``benchmarks.ingest``, beside the raw
insert of the same rows with the same pragmas.

``BENCH_SCALE`` scales the numbers of events (the paced run lasts 10 s at scale 1).
"""

from __future__ import annotations

import datetime as dt
import gc
import http.client
import json
import multiprocessing
import multiprocessing.queues
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
from rich.console import Console
from sqlalchemy import bindparam, text

from benchmarks import DATA, Figure, postgres_schema, postgres_url, timed
from benchmarks.ingest import _COLUMNS, THRESHOLDS_CATALOG
from billing.apikeys import create_api_key
from billing.db import make_engine, upgrade

ROOT = Path(__file__).resolve().parent.parent
BATCH = 1_000
BATCH_EVENTS = 200_000
RATE = 500
CLIENTS = 8
CLIENTS_AT_ONCE = 4  # the batches' second figure: clients sending at once
PACED_SECONDS = 10.0
ALERT_EVERY = 10  # one event in this many of the paced run crosses an alert customer's allowance

# the ingestion benchmark's catalog with thresholds, and a plan whose allowance one event crosses
CATALOG = THRESHOLDS_CATALOG + """
[plans.tiny]
name = "Tiny"
currency = "USD"
[[plans.tiny.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.01
[[plans.tiny.thresholds]]
meter = "api_calls"
allowance = 1
levels = [100]
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _populate(url: str, names: list[str], plan: str, start: dt.date) -> None:
    """Customers (UTC) each on ``plan`` from ``start``, inserted in bulk."""
    engine = make_engine(url)
    with engine.begin() as connection:
        now = dt.datetime.now(dt.UTC)
        connection.execute(
            text(
                "INSERT INTO customers (external_id, name, currency, timezone, locale, address, tax_rate, created_at) "
                "VALUES (:e, :e, 'USD', 'UTC', 'en_US', '', 0, :now)"
            ),
            [{"e": name, "now": now} for name in names],
        )
        connection.execute(
            text(
                "INSERT INTO subscriptions (customer_id, plan_code, plan_version, start_date, status, created_at) "
                "SELECT id, :plan, 1, :start, 'active', :now FROM customers WHERE external_id IN :names"
            ).bindparams(bindparam("names", expanding=True)),
            {"plan": plan, "start": start, "now": now, "names": names},
        )
    engine.dispose()


@contextmanager
def _server(url: str, catalog: Path) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "BILLING_DATABASE_URL": url,
        "BILLING_CATALOG": str(catalog),
        "BILLING_CONFIG": str(ROOT / "config.toml"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "billing.cli", "serve", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"billing serve exited {process.returncode}: {process.stderr.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("billing serve did not answer /healthz within 120 s")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.communicate(timeout=60)


def _until_reacting(base: str, key: str, url: str, customer: str) -> None:
    """Wait until the server's scheduler process runs its reactor: one event sent, and its reaction seen (the
    scheduler's process starts once the API listens, and its start-up, about a second of CPU, would otherwise be
    measured as part of the first figure)."""
    from billing.reactions import pending_since

    stamp = dt.datetime.now(dt.UTC).isoformat()
    event = {"id": "warm-up", "customer": customer, "meter": "api_calls", "timestamp": stamp}
    response = httpx.post(f"{base}/v1/events", json={"events": [event]}, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text[:300]
    engine = make_engine(url)
    try:
        deadline = time.monotonic() + 120
        while pending_since(engine).year < 2000:
            if time.monotonic() > deadline:
                raise RuntimeError("the server's reactor did not react within 120 s")
            time.sleep(0.05)
    finally:
        engine.dispose()


def _reacted(url: str) -> None:
    """Wait until the server's reactor has reacted to every event stored (its cursor past the last one)."""
    from billing.event_store import event_store
    from billing.reactions import pending_since
    from meters import to_epoch_us

    engine = make_engine(url)
    try:
        deadline = time.monotonic() + 120
        while event_store(engine).received_since(to_epoch_us(pending_since(engine))):
            if time.monotonic() > deadline:
                raise RuntimeError("the server's reactor did not catch up within 120 s")
            time.sleep(0.1)
    finally:
        engine.dispose()


def _events(prefix: str, names: list[str], count: int, when: dt.datetime) -> list[dict[str, object]]:
    stamp = when.isoformat().replace("+00:00", "Z")
    return [
        {"id": f"{prefix}-{i:09d}", "customer": names[i % len(names)], "meter": "api_calls", "timestamp": stamp,
         "properties": {"region": "eu-west-1"}}
        for i in range(count)
    ]


def _concurrently(base: str, key: str, names: list[str], count: int) -> None:
    """``count`` new events in batches of 1,000 from CLIENTS_AT_ONCE clients, each on its own connection, at once
    (a product's servers each sending theirs): batches that arrive together are stored together."""
    events = _events("together", names, count, dt.datetime.now(dt.UTC))
    bodies = [json.dumps({"events": events[i : i + BATCH]}).encode() for i in range(0, count, BATCH)]

    def client(worker: int) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}",
                                                  "Content-Type": "application/json"}, timeout=120) as http:
            for body in bodies[worker::CLIENTS_AT_ONCE]:
                response = http.post("/v1/events", content=body)
                assert response.status_code == 200 and response.json()["accepted"] == BATCH, response.text[:300]

    with ThreadPoolExecutor(CLIENTS_AT_ONCE) as pool:
        for done in [pool.submit(client, worker) for worker in range(CLIENTS_AT_ONCE)]:
            done.result()  # a client's failed assertion fails the benchmark


def _raw_rows(events: list[dict[str, object]], names: list[str]) -> list[tuple[object, ...]]:
    from meters import EventValidator, MeterSpec, to_epoch_us

    validator = EventValidator([MeterSpec("api_calls", "count")], set(names), dt.datetime.now(dt.UTC))
    received = to_epoch_us(dt.datetime.now(dt.UTC))
    return [(*validator.validate(event), received) for event in events]


def _raw(url: str, rows: list[tuple[object, ...]], chunk: int) -> float:
    """Seconds to store ``rows`` raw (executemany / COPY), ``chunk`` rows per transaction."""
    if url.startswith("sqlite"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA cache_size=-262144")  # as the engine's connections (billing.db)
        sql = f"INSERT INTO usage_events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"

        def go() -> None:
            for start in range(0, len(rows), chunk):
                connection.execute("BEGIN IMMEDIATE")
                connection.executemany(sql, rows[start : start + chunk])
                connection.execute("COMMIT")

        seconds = timed(go)
        connection.close()
        return seconds
    engine = make_engine(url)
    with engine.connect() as connection:
        driver = connection.connection.dbapi_connection
        assert driver is not None

        def copy_all() -> None:
            for start in range(0, len(rows), chunk):
                with driver.cursor() as cursor, cursor.copy(f"COPY usage_events ({_COLUMNS}) FROM STDIN") as copy:
                    for row in rows[start : start + chunk]:
                        copy.write_row(row)
                driver.commit()

        seconds = timed(copy_all)
    engine.dispose()
    return seconds


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _paced(
    base: str, key: str, names: list[str], alert_names: list[str], count: int
) -> tuple[list[float], dict[str, float]]:
    """Single-event POSTs from CLIENTS client processes (each its own interpreter and keep-alive connection, as
    separate senders are: threads of one interpreter would queue for its lock, and measure that), ``RATE``
    events/s in all; the latencies (s) and, for the alert customers, when each one's event was answered (epoch
    seconds)."""
    when = dt.datetime.now(dt.UTC).isoformat()
    start = time.perf_counter() + 1.0  # (perf_counter is the system's monotonic clock: the same in every process)
    context = multiprocessing.get_context("fork")
    results: multiprocessing.queues.Queue[tuple[list[float], dict[str, float]]] = context.Queue()
    clients = [
        context.Process(target=_client, args=(worker, base, key, names, alert_names, count, when, start, results))
        for worker in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    latencies: list[float] = []
    answered: dict[str, float] = {}
    for _ in clients:
        took, alerted = results.get(timeout=120 + count / RATE)
        latencies += took
        answered.update(alerted)
    for client in clients:
        client.join()
        if client.exitcode != 0:
            raise RuntimeError(f"a paced client exited {client.exitcode}")
    return latencies, answered


def _client(
    worker: int, base: str, key: str, names: list[str], alert_names: list[str], count: int, when: str,
    start: float, results: multiprocessing.queues.Queue[tuple[list[float], dict[str, float]]],
) -> None:
    """One paced client: every CLIENTS-th event from ``worker`` on, each at its due time; sends back the latencies
    and when each alert customer's event was answered."""
    # the standard library's client on a kept-alive connection: on a small machine, a heavier client's own CPU
    # would be most of what is measured
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    latencies: list[float] = []
    answered: dict[str, float] = {}
    try:
        for n in range(worker, count, CLIENTS):
            pause = start + n / RATE - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            alert = n % ALERT_EVERY == 0 and n // ALERT_EVERY < len(alert_names)
            who = alert_names[n // ALERT_EVERY] if alert else names[n % len(names)]
            event = {"id": f"one-{n}", "customer": who, "meter": "api_calls", "timestamp": when}
            body = json.dumps({"events": [event]})
            sent = time.perf_counter()
            connection.request("POST", "/v1/events", body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            latencies.append(time.perf_counter() - sent)
            assert response.status == 200 and json.loads(answer)["accepted"] == 1, answer
            if alert:
                answered[who] = time.time()
    finally:
        connection.close()
    results.put((latencies, answered))


def _alert_delays(url: str, answered: dict[str, float]) -> list[float]:
    engine = make_engine(url)
    from billing.notify import list_notifications

    deadline = time.monotonic() + 30
    while True:
        created = {n.customer: n.created_at.timestamp() for n in list_notifications(engine) if n.customer in answered}
        if len(created) == len(answered) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    engine.dispose()
    missing = set(answered) - set(created)
    if missing:
        raise RuntimeError(f"no alert within 30 s for {len(missing)} customer(s)")
    return [max(0.0, created[who] - answered[who]) for who in answered]


def _http(label: str, url: str, raw_url: str, scale: float, catalog: Path) -> list[Figure]:
    """The HTTP figures: batches, paced single events, acceptance → alert."""
    figures: list[Figure] = []
    names = [f"api-{i:04d}" for i in range(200)]
    paced_count = max(500, int(RATE * PACED_SECONDS * scale))
    alert_names = [f"alert-{i:04d}" for i in range(paced_count // ALERT_EVERY)]
    first_of_month = dt.date.today().replace(day=1)
    for target in (url, raw_url):
        upgrade(target)
    _populate(url, names, "pro", first_of_month)
    _populate(url, alert_names, "tiny", first_of_month)
    engine = make_engine(url)
    _, key = create_api_key(engine, "bench")
    engine.dispose()

    count = max(10 * BATCH, int(BATCH_EVENTS * scale)) // BATCH * BATCH
    events = _events("batch", names, count, dt.datetime.now(dt.UTC))
    bodies = [json.dumps({"events": events[i : i + BATCH]}).encode() for i in range(0, count, BATCH)]
    with _server(url, catalog) as base:
        _until_reacting(base, key, url, names[0])
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}",
                                                  "Content-Type": "application/json"}, timeout=120) as http:
            def post_all() -> None:
                for body in bodies:
                    response = http.post("/v1/events", content=body)
                    assert response.status_code == 200 and response.json()["accepted"] == BATCH, response.text[:300]

            ours = timed(post_all)
            health = []
            for _ in range(200):
                sent = time.perf_counter()
                http.get("/healthz")
                health.append(time.perf_counter() - sent)
        together = timed(lambda: _concurrently(base, key, names, count))
        baseline = _raw(raw_url, _raw_rows(events, names), BATCH)
        raw = f"raw {'executemany' if label == 'SQLite' else 'COPY'}, 1,000/txn"
        figures.append(Figure(f"POST /v1/events, {count:,} in batches of 1,000 → {label}", count / ours, "events/s",
                              count / baseline, raw, "≥ 0.5× raw", ours <= 2 * baseline))
        figures.append(Figure(f"the same from {CLIENTS_AT_ONCE} clients at once → {label}", count / together,
                              "events/s", count / baseline, raw))
        _reacted(url)  # the reactor takes in the batches first (the paced clients would wait for its cores)
        latencies, answered = _paced(base, key, names, alert_names, paced_count)
        p50, p99 = _percentile(latencies, 0.5) * 1000, _percentile(latencies, 0.99) * 1000
        h50 = statistics.median(health) * 1000
        figures.append(Figure(f"single-event POST, 8 clients at {RATE}/s, p50 → {label}", p50, "ms", h50,
                              "GET /healthz p50"))
        figures.append(Figure(f"single-event POST, 8 clients at {RATE}/s, p99 → {label}", p99, "ms", h50,
                              "GET /healthz p50", "≤ 10 ms", p99 <= 10))
        delays = _alert_delays(url, answered)
    d99 = _percentile(delays, 0.99)
    figures.append(Figure(f"acceptance → alert, p99 of {len(delays)} → {label}", d99, "s",
                          statistics.median(delays), "p50", "≤ 2 s", d99 <= 2))
    return figures


def _backend(label: str, url: str, raw_url: str, scale: float) -> list[Figure]:
    catalog = DATA / "api-ingest-catalog.toml"
    catalog.write_text(CATALOG, encoding="utf-8")
    return _http(label, url, raw_url, scale, catalog)


def run(scale: float, console: Console) -> list[Figure]:
    """Every figure, on SQLite and (when configured) PostgreSQL."""
    DATA.mkdir(exist_ok=True)
    gc.freeze()
    figures: list[Figure] = []
    try:
        paths = [DATA / f"api-{name}.db" for name in ("ours", "raw")]
        for path in paths:
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)
        figures += _backend("SQLite", f"sqlite:///{paths[0]}", f"sqlite:///{paths[1]}", scale)
        for path in paths:
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)
        pg = postgres_url()
        if pg:
            with postgres_schema(pg, "api") as ours, postgres_schema(pg, "apiraw") as raw:
                figures += _backend("PostgreSQL", ours, raw, scale)
    finally:
        gc.unfreeze()
    return figures
