"""The API's event writer (``billing.api.events.BatchWriter``): batches of concurrent requests stored in one
transaction, each request answered with its own events' fates, indexed in its own batch."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import Future

from billing.api.events import BatchOutcome, BatchWriter, _Pending
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
    writer._thread = dead
    outcome = writer.submit(engine, catalog, [{"id": "y"}]).result(timeout=30)
    assert outcome.rejected == 1 and writer._thread is not dead
