"""The API's event writer (``billing.api.events.BatchWriter``): batches of concurrent requests stored in one
transaction, each request answered with its own events' fates, indexed in its own batch."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import uvicorn
from sqlalchemy import text

from billing.api import create_app
from billing.api.events import BatchOutcome, BatchWriter, _Pending
from billing.apikeys import create_api_key
from billing.config import Settings
from billing.customers import create_customer
from pricing_plans.loader import load_catalog_or_raise
from tests.dates import ended_month


def _pending(engine, catalog, records) -> _Pending:
    future: Future[BatchOutcome] = Future()
    return _Pending(engine, catalog, records, future)


def test_batches_stored_together_are_answered_each_with_its_own_fates(engine, sample_catalog_path):
    catalog = load_catalog_or_raise(sample_catalog_path)
    create_customer(engine, "acme", "Acme", None, "USD")
    meter = "api_calls"
    assert meter in catalog.meters
    when = dt.datetime.combine(ended_month().start, dt.time(12), dt.UTC).isoformat()

    def event(event_id: str, customer: str = "acme", value: int = 1) -> dict[str, object]:
        return {"id": event_id, "customer": customer, "meter": meter, "timestamp": when,
                "properties": {"region": f"r{value}"}}

    first = _pending(engine, catalog, [event("a"), event("b"), event("b")])
    second = _pending(engine, catalog, [event("c"), event("a"), event("b", value=2), event("d", "globex")])
    third = _pending(engine, catalog, [event("e"), event("e", value=3)])
    writer = BatchWriter(100)
    writer._queue.put(second)
    writer._queue.put(third)
    group, held = writer._gather(first)  # what the writer's thread does: all three share one transaction
    assert (group, held) == ([first, second, third], None)
    writer._store(group)

    one, two, three = (item.future.result(timeout=5) for item in group)
    assert (one.accepted, one.duplicates, one.rejected) == (2, 1, 0)
    assert [(e.index, e.id, e.status) for e in one.events] == [(0, "a", "accepted"), (1, "b", "accepted"),
                                                               (2, "b", "duplicate")]
    assert (two.accepted, two.duplicates, two.rejected) == (1, 1, 2)
    assert [(e.index, e.status) for e in two.events] == [(0, "accepted"), (1, "duplicate"), (2, "rejected"),
                                                         (3, "rejected")]
    # a conflict with another request's event reads as one with a stored event; with its own, names its index
    assert two.events[2].reason == "conflict: id 'b' was already ingested with other content"
    assert two.events[3].reason == "unknown customer 'globex'"
    assert [(e.index, e.status) for e in three.events] == [(0, "accepted"), (1, "rejected")]
    assert three.events[1].reason == "conflict: id 'e' is used by index 0 with other content"


def test_a_writer_whose_thread_is_gone_starts_another(engine, sample_catalog_path):
    catalog = load_catalog_or_raise(sample_catalog_path)
    writer = BatchWriter(100)
    assert writer.submit(engine, catalog, [{"id": "x"}]).result(timeout=30).rejected == 1
    dead = threading.Thread(target=lambda: None)  # as if the writer's thread had ended
    dead.start()
    dead.join(timeout=30)
    writer._threads, writer._idle = {dead}, {dead}
    outcome = writer.submit(engine, catalog, [{"id": "y"}]).result(timeout=30)
    assert outcome.rejected == 1 and dead not in writer._threads and len(writer._threads) == 1


@contextlib.contextmanager
def _serving(db_url: str, catalog: Path) -> Iterator[int]:
    """The API in a real uvicorn (its default HTTP parser) on 127.0.0.1, in a thread; yields its port."""
    app = create_app(Settings(database_url=db_url, catalog=str(catalog)))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the server did not start"
            time.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def test_50_concurrent_single_event_posts_are_each_stored_once_and_answered_after_their_commit(
    db_url, engine, sample_catalog_path
):
    """Fifty clients at once, each posting one event: 20 new ids, the same 20 again (same content), 5 of them a
    third time with other content, and 5 with an unknown customer. Whichever comes first, each id is accepted
    once and stored once; a later post of the same content is a duplicate, of other content a conflict; and
    every answer comes once its event is stored: the database holds it when the answer arrives."""
    create_customer(engine, "acme", "Acme", None, "USD")
    _, key = create_api_key(engine, "writer")
    when = dt.datetime.combine(ended_month().start, dt.time(12), dt.UTC).isoformat()

    def body(event_id: str, customer: str = "acme", region: str = "eu") -> bytes:
        event = {"id": event_id, "customer": customer, "meter": "api_calls", "timestamp": when,
                 "properties": {"region": region}}
        return json.dumps({"events": [event]}).encode()

    sent = [(f"e{n}", "eu") for n in range(20)] * 2 + [(f"e{n}", "us") for n in range(5)]
    bodies = [body(event_id, region=region) for event_id, region in sent]
    bodies += [body(f"x{n}", customer="nobody") for n in range(5)]
    answers: list[tuple[str, str, dict[str, object], int]] = []  # id, region, its fate, its rows when answered
    lock = threading.Lock()
    start = threading.Barrier(len(bodies))

    def post(port: int, content: bytes) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        start.wait(timeout=60)
        connection.request("POST", "/v1/events", body=content,
                           headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read())
        event = json.loads(content)["events"][0]
        rows = _stored(engine).get(event["id"], 0)  # read as soon as the answer arrives
        connection.close()
        assert response.status == 200 and answer["accepted"] + answer["duplicates"] + answer["rejected"] == 1
        with lock:
            answers.append((event["id"], event["properties"]["region"], answer["events"][0], rows))

    with _serving(db_url, sample_catalog_path) as port:
        threads = [threading.Thread(target=post, args=(port, content)) for content in bodies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

    assert len(answers) == 50
    assert all(fate["index"] == 0 for _, _, fate, _ in answers)  # indexed in its own request
    accepted = {event_id: region for event_id, region, fate, _ in answers if fate["status"] == "accepted"}
    assert sorted(accepted) == sorted(f"e{n}" for n in range(20))  # each id accepted once
    for event_id, region, fate, rows in answers:
        if event_id.startswith("x"):
            assert (fate["status"], fate["reason"]) == ("rejected", "unknown customer 'nobody'")
            continue
        assert rows == 1  # stored, once, before the answer came
        if fate["status"] == "accepted":
            continue
        if region == accepted[event_id]:
            assert fate["status"] == "duplicate", (event_id, region, fate)
        else:
            assert (fate["status"], fate["reason"]) == (
                "rejected", f"conflict: id {event_id!r} was already ingested with other content"
            ), (event_id, region, fate)
    assert _stored(engine) == {f"e{n}": 1 for n in range(20)}


def _stored(engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT event_id, count(*) FROM usage_events GROUP BY event_id"))
        return {event_id: count for event_id, count in rows}


def test_a_connection_lost_while_the_known_customers_are_read_gives_its_own_error_and_goes_back(engine):
    # PostgreSQL: the lookup runs in autocommit on a pooled connection; killed under it, the lookup raises the
    # database's own error (not "the connection is lost" from putting autocommit back) and the connection is
    # given back to the pool (invalidated), not held while the error lives.
    import psycopg
    import pytest
    from sqlalchemy import event

    from billing.ingestion import known_customers
    from dbkit.dialect import is_postgresql

    if not is_postgresql(engine):
        pytest.skip("PostgreSQL: SQLite's connections are in-process")
    create_customer(engine, "acme", "Acme", "acme@example.test", "USD")
    assert known_customers(engine, ["acme", "nobody"]) == {"acme": "UTC"}
    dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False).split("?")[0]

    def kill(dbapi_connection, record, proxy):  # after the pool's check of the connection
        with psycopg.connect(dsn, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (dbapi_connection.info.backend_pid,))

    event.listen(engine, "checkout", kill)
    try:
        with pytest.raises(psycopg.Error) as caught:
            known_customers(engine, ["acme"])
    finally:
        event.remove(engine, "checkout", kill)
    assert "terminat" in str(caught.value), caught.value
    assert engine.pool.checkedout() == 0
    assert known_customers(engine, ["acme"]) == {"acme": "UTC"}  # a fresh connection after the lost one
