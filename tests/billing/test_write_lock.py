"""Writers under load: the scheduler's billing cycle for 2,000 customers while events arrive through the HTTP API
(a real uvicorn on 127.0.0.1, called with httpx, in one process as under ``billing serve``), four ``billing
ingest`` processes at once, and SQLite's write lock taken in turns and begun again when it stays locked. Every
database test runs on SQLite and, when configured, PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import event, func, select

from billing.api import create_app
from billing.apikeys import create_api_key
from billing.cli.serve import KEEP_ALIVE
from billing.config import Settings, get_settings
from billing.core.periods import month_of
from billing.db import repository, session_scope
from billing.db.engines import dispose_engines, engine_for_url
from billing.invoicing import list_invoices
from billing.scheduler import bill_closed_periods
from dbkit import is_sqlite, writelock
from invoices.model import InvoiceStatus
from invoices.store import FinalizeSettings
from meters.ingest import CHUNK_SIZE
from meters.tables import UsageEventRow
from pricing_plans.loader import load_catalog_or_raise
from tests.dates import ended_month

ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS = 2_000
EVENTS_PER_FILE = CHUNK_SIZE * 3 // 2  # two chunks: two write transactions, parsed by a worker process

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
def catalog_path(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    return path


def _serve(app: object) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",  # type: ignore[arg-type]
                            timeout_keep_alive=KEEP_ALIVE)  # as ``billing serve`` keeps idle connections
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


def _customers(engine, count: int, start: dt.date) -> None:
    """``count`` customers in UTC (c00000, c00001, …), each on ``starter`` from ``start``."""
    with session_scope(engine) as session:
        for i in range(count):
            customer = repository.add_customer(
                session, external_id=f"c{i:05d}", name=f"Customer {i}", email=None, currency="USD", timezone="UTC",
                locale="en_US",
            )
            repository.add_subscription(session, customer=customer, plan_code="starter", plan_version=1,
                                        start_date=start)


def _stored(engine, ids: list[str]) -> tuple[int, int]:
    """How many rows hold these event ids, and how many distinct ids they hold."""
    with session_scope(engine) as session:
        rows = distinct = 0
        for offset in range(0, len(ids), 5000):
            chunk = ids[offset : offset + 5000]
            where = UsageEventRow.event_id.in_(chunk)
            rows += session.scalar(select(func.count()).select_from(UsageEventRow).where(where)) or 0
            distinct += session.scalar(select(func.count(func.distinct(UsageEventRow.event_id))).where(where)) or 0
    return rows, distinct


def test_the_billing_cycle_of_2000_customers_while_events_arrive_through_the_api(
    db_url, catalog_path, monkeypatch
):
    """The scheduler's billing cycle (bill the closed month, finalize it) in a thread, the API in another, events
    posted all along: no request fails, every event is stored once, every invoice is issued."""
    for key, value in {
        "BILLING_DATABASE_URL": db_url,
        "BILLING_CATALOG": str(catalog_path),
        "BILLING_CONFIG": str(ROOT / "config.toml"),
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    engine = engine_for_url(db_url)  # the process's engine, shared by the API and the cycle as under serve
    if is_sqlite(engine):
        # 10,000 customers and a 30 s busy timeout, scaled down: 2,000 customers, and one BEGIN waits up to 2 s
        event.listen(engine, "connect", lambda connection, _: connection.execute("PRAGMA busy_timeout=2000"))
    catalog = load_catalog_or_raise(catalog_path)
    last_month = month_of(dt.datetime.now(dt.UTC).date()).previous()
    _customers(engine, CUSTOMERS, last_month.start)
    usage = [  # 4 calls of c00007 last month: 10.00 + 4 × 0.50 = 12.00
        {"id": f"last-{i}", "customer": "c00007", "meter": "api_calls",
         "timestamp": dt.datetime.combine(last_month.start + dt.timedelta(days=9), dt.time(12, i), dt.UTC).isoformat()}
        for i in range(4)
    ]
    _, key = create_api_key(engine, "load")
    server, thread, url = _serve(create_app(Settings(database_url=db_url, catalog=str(catalog_path))))
    cycle: dict[str, object] = {}

    def run_cycle() -> None:
        try:
            cycle["report"] = bill_closed_periods(engine, catalog, FinalizeSettings(), 0, lookback=1)
        except BaseException as exc:  # reported by the test below
            cycle["error"] = exc

    posted: list[str] = []
    failures: list[str] = []

    answered: dict[int, float] = {}  # when each client's last answer came

    def post(client: httpx.Client, events: list[dict]) -> None:
        began = time.monotonic()
        gap = began - answered.get(id(client), began)
        try:
            response = client.post("/v1/events", json={"events": events})
        except httpx.HTTPError as exc:
            failures.append(f"{type(exc).__name__}: {exc} (sent {gap:.3f} s after the client's previous answer, "
                            f"failed after {time.monotonic() - began:.3f} s)")
            return
        finally:
            answered[id(client)] = time.monotonic()
        if response.status_code != 200 or response.json()["accepted"] != len(events):
            failures.append(f"HTTP {response.status_code}: {response.text[:300]}")
        posted.extend(e["id"] for e in events)

    def poster(name: str, stop: threading.Event) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as client:
            batch = 0
            while not stop.is_set() or batch < 5:
                now = dt.datetime.now(dt.UTC).isoformat()
                events = [
                    {"id": f"{name}-{batch}-{i}", "customer": f"c{(batch * 25 + i) % CUSTOMERS:05d}",
                     "meter": "api_calls", "timestamp": now}
                    for i in range(25)
                ]
                post(client, events)
                batch += 1

    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as client:
            post(client, usage)
        stop = threading.Event()
        posters = [threading.Thread(target=poster, args=(f"p{n}", stop)) for n in range(2)]
        worker = threading.Thread(target=run_cycle)
        for started in (*posters, worker):
            started.start()
        worker.join(timeout=600)
        stop.set()
        for joined in posters:
            joined.join(timeout=600)
    finally:
        server.should_exit = True
        thread.join(timeout=15)

    try:
        assert "error" not in cycle, cycle.get("error")
        assert failures == []
        assert len(posted) >= 4 + 2 * 5 * 25
        assert _stored(engine, posted) == (len(posted), len(posted))  # every event stored, and once
        report = cycle["report"]
        assert report.billed == {last_month.label: CUSTOMERS}  # type: ignore[attr-defined]
        assert len(report.finalized) == CUSTOMERS  # type: ignore[attr-defined]
        invoices = list_invoices(engine)
        assert len(invoices) == CUSTOMERS and {i.status for i in invoices} == {InvoiceStatus.FINALIZED}
        year = last_month.end.year
        assert sorted(i.number for i in invoices) == [f"INV-{year}-{n:06d}" for n in range(1, CUSTOMERS + 1)]
        totals = {i.customer_id: str(i.total) for i in invoices}
        assert totals["c00007"] == "12.00" and totals["c00008"] == "10.00"
    finally:
        dispose_engines()
        get_settings.cache_clear()


def test_four_ingest_processes_at_once_all_succeed(db_url, catalog_path, tmp_path):
    """Four ``billing ingest`` processes, each with its own file of 150,000 events for 100 customers (two
    chunks, each its own write transaction), at once: all exit 0 and every event is stored once."""
    engine = engine_for_url(db_url)
    try:
        month = ended_month()  # inside the late-usage window whatever today is
        _customers(engine, 100, month.start)
        files = []
        for n in range(4):
            path = tmp_path / f"events-{n}.jsonl"
            with path.open("w", encoding="utf-8") as out:
                for i in range(EVENTS_PER_FILE):
                    record = {"id": f"f{n}-{i}", "customer": f"c{i % 100:05d}", "meter": "api_calls",
                              "timestamp": f"{month.start:%Y-%m}-{1 + i % 28:02d}T{i % 24:02d}:00:00Z"}
                    out.write(json.dumps(record) + "\n")
            files.append(path)
        env = {
            **os.environ,
            "BILLING_DATABASE_URL": db_url,
            "BILLING_CATALOG": str(catalog_path),
            "BILLING_CONFIG": str(ROOT / "config.toml"),
        }
        processes = [
            subprocess.Popen([sys.executable, "-m", "billing.cli", "ingest", str(path)],
                             env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for path in files
        ]
        outcomes = [process.communicate(timeout=600) for process in processes]
        for process, (stdout, stderr) in zip(processes, outcomes, strict=True):
            assert process.returncode == 0, stderr
            assert f"accepted {EVENTS_PER_FILE}, duplicates 0, rejected 0" in stdout, stdout + stderr
        ids = [f"f{n}-{i}" for n in range(4) for i in range(EVENTS_PER_FILE)]
        assert _stored(engine, ids) == (4 * EVENTS_PER_FILE, 4 * EVENTS_PER_FILE)
    finally:
        dispose_engines()


# -- SQLite's write lock -------------------------------------------------------------------------------------


def test_a_writer_that_stays_locked_out_begins_again_instead_of_failing(tmp_path, monkeypatch):
    """A BEGIN that is still locked out when its busy timeout runs out is tried again, and succeeds once the
    other writer is done; one that stays locked out for every attempt fails with "database is locked"."""
    monkeypatch.setattr(writelock._streak, "started", None)  # (no pause for turns: this thread has not been writing)
    path = tmp_path / "lock.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x INTEGER)")
    waiter = sqlite3.connect(path, isolation_level=None, timeout=0.2)
    holder.execute("BEGIN IMMEDIATE")
    sleeps: list[float] = []

    def wait_and_release(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            holder.execute("COMMIT")  # the other writer is done while this one waits for its third try
        time.sleep(seconds)

    assert writelock.begin(waiter.execute, sleep=wait_and_release) == 3
    waiter.execute("INSERT INTO t VALUES (1)")
    waiter.execute("COMMIT")
    writelock.ended()
    assert len(sleeps) == 2 and 0.025 <= sleeps[0] <= 0.05 and 0.05 <= sleeps[1] <= 0.1  # backoff, with jitter

    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        writelock.begin(waiter.execute, attempts=2, sleep=lambda seconds: None)
    holder.execute("ROLLBACK")
    assert not writelock.is_locked(sqlite3.OperationalError("no such table: t"))
    with pytest.raises(sqlite3.OperationalError, match="no such table"):  # other errors are not retried
        writelock.begin(lambda sql: waiter.execute("SELECT * FROM missing"), sleep=lambda seconds: None)
    holder.close()
    waiter.close()


def test_a_polling_writer_tries_begin_itself_then_waits_as_every_writer(tmp_path, monkeypatch):
    """A writer that polls (the API's event writer) tries BEGIN with SQLite's busy handler off, every ``poll``
    seconds, and begins at the first try after the other writer commits; past ``POLL_FOR`` it waits in SQLite's
    busy handler as every writer does. Either way the connection's busy timeout is set back."""
    monkeypatch.setattr(writelock._streak, "started", None)
    monkeypatch.setattr(writelock, "POLL_FOR", 3600.0)
    path = tmp_path / "poll.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x INTEGER)")
    waiter = sqlite3.connect(path, isolation_level=None, timeout=30)
    statements: list[str] = []

    def execute(sql: str) -> object:
        statements.append(sql)
        return waiter.execute(sql)

    holder.execute("BEGIN IMMEDIATE")
    tries: list[float] = []

    def between_tries(seconds: float) -> None:
        tries.append(seconds)
        if len(tries) == 3:
            holder.execute("COMMIT")  # the other writer is done after the third refused try

    assert writelock.begin(execute, poll=0.0005, sleep=between_tries) == 1
    assert tries == [0.0005] * 3
    assert statements == ["PRAGMA busy_timeout=0", *["BEGIN IMMEDIATE"] * 4, "PRAGMA busy_timeout=30000"]
    assert waiter.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    waiter.execute("INSERT INTO t VALUES (1)")
    waiter.execute("COMMIT")
    writelock.ended()

    # Locked out for longer than it polls: the busy handler waits, and the BEGIN after it succeeds.
    monkeypatch.setattr(writelock, "POLL_FOR", 0.0)
    holder.execute("BEGIN IMMEDIATE")
    statements.clear()
    release = threading.Timer(0.2, holder.execute, ["COMMIT"])

    def execute_then_release(sql: str) -> object:
        if sql == "PRAGMA busy_timeout=30000":  # the polling is over: the other writer commits a moment later
            release.start()
        return execute(sql)

    assert writelock.begin(execute_then_release, poll=0.0005, sleep=lambda seconds: None) == 1
    release.join()
    assert statements == ["PRAGMA busy_timeout=0", "BEGIN IMMEDIATE", "PRAGMA busy_timeout=30000", "BEGIN IMMEDIATE"]
    waiter.execute("INSERT INTO t VALUES (2)")
    waiter.execute("COMMIT")
    writelock.ended()
    assert holder.execute("SELECT count(*) FROM t").fetchone()[0] == 2
    holder.close()
    waiter.close()


def test_a_writer_writing_back_to_back_pauses_for_the_others(monkeypatch):
    """A thread that has been beginning write transactions back to back for longer than its stretch pauses before
    the next (long enough for a waiting writer's next try); reads and writers with gaps never pause."""
    clock = [1000.0]
    monkeypatch.setattr(writelock.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(writelock._streak, "started", None)
    monkeypatch.setattr(writelock._streak, "last_end", -math.inf)
    monkeypatch.setattr(writelock._streak, "busy", 0.0)
    pauses: list[float] = []

    def write(seconds: float, *, mode: str = "IMMEDIATE", gap: float = 0.001) -> None:
        writelock.begin(lambda sql: None, mode, sleep=pauses.append)
        clock[0] += seconds
        if mode != "DEFERRED":
            writelock.ended()
        clock[0] += gap

    done = threading.Event()
    threading.Thread(target=lambda: (write(0.01), done.set())).start()  # another thread: a streak of its own
    assert done.wait(10)
    for _ in range(19):  # 19 × 0.1 s back to back: within the 2 s stretch
        write(0.1)
    assert pauses == []
    write(0.1)  # 2 s of writing: the next one pauses first
    write(0.1)
    assert pauses == [writelock.PAUSE]
    for _ in range(30):  # reads never pause, writes with gaps longer than a pause never pause
        write(0.1, mode="DEFERRED")
        write(0.1, gap=writelock.PAUSE + 0.001)
    assert pauses == [writelock.PAUSE]

    monkeypatch.setattr(writelock, "_waiting", 1)  # another thread of this process waits: a shorter stretch
    for _ in range(3):
        write(0.1)
    assert pauses == [writelock.PAUSE]
    write(0.1)
    assert pauses == [writelock.PAUSE, writelock.PAUSE]

    monkeypatch.setattr(writelock, "_waiting", 0)
    for _ in range(400):  # 4 s of short transactions that leave the lock free 90 % of the time: never a pause
        write(0.001, gap=0.009)
    assert pauses == [writelock.PAUSE, writelock.PAUSE]


def test_writers_of_one_process_queue_on_its_lock_and_the_next_begins_when_the_holder_ends(tmp_path):
    """Two threads of one process: the second writer waits on the process's lock of the database file (not in
    SQLite's busy handler, which polls), begins once the first commits, and leaves the lock free when it ends."""
    from billing.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'queue.db'}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    lock = writelock.process_lock(str(tmp_path / "queue.db"))
    assert lock is not None and not lock.locked()
    order: list[str] = []
    holder = engine.connect()
    holder.begin()
    holder.exec_driver_sql("INSERT INTO t VALUES (1)")
    assert lock.locked()

    def second() -> None:
        with engine.begin() as connection:
            order.append("second began")
            connection.exec_driver_sql("INSERT INTO t VALUES (2)")

    thread = threading.Thread(target=second)
    thread.start()
    deadline = time.monotonic() + 10
    while writelock._waiting == 0 and time.monotonic() < deadline:  # the second writer is queued
        time.sleep(0.01)
    assert writelock._waiting == 1 and order == []
    order.append("first commits")
    holder.commit()
    holder.close()
    thread.join(10)
    assert order == ["first commits", "second began"]
    assert not lock.locked() and writelock._waiting == 0
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 2
    engine.dispose()
