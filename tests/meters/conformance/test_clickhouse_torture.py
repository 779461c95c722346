"""chDB with merges stopped: every event delivered twice, past the ingestion check as two racing ingestions
would, some in conflicting form: the quantities are the clean SQLite store's before any merge and after
``OPTIMIZE … FINAL``; the same chunk inserted twice is stored once (its deduplication token); conflicting
contents stored under one id stop the aggregation rather than be counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meters import EventValidator, Split
from meters.errors import ConflictingEvents
from meters.store import EventStore
from tests.conftest import chdb_store
from tests.meters.conformance.test_conformance import CUSTOMERS, MARCH, METERS, NOW, random_events


def _answers(store: EventStore) -> tuple[dict[Any, Any], dict[Any, Any]]:
    windows = {c: (c, *MARCH) for c in ("acme", "globex")}
    split = Split.of([{"country": ["US"]}], [["country"], []])
    plain = store.aggregate(windows, METERS)
    parts = store.aggregate_split(windows, METERS, {"sms": split, "storage_gb": split, "seats": split})
    return (
        {k: (str(a.quantity), a.events, a.values) for k, a in plain.items()},
        {k: (str(a.quantity), a.events, a.values) for k, a in parts.items()},
    )


def _rows(store: Any) -> int:
    return int(store.client.query(f"SELECT count() FROM {store.table}")[0][0])


def test_duplicates_before_and_after_merges(chdb_folder: Path, reference: EventStore) -> None:
    records = random_events(7)
    reference.ingest(records, METERS, CUSTOMERS, now=NOW)
    store: Any = chdb_store(chdb_folder)
    store.client.command(f"SYSTEM STOP MERGES {store.table}")
    validator = EventValidator(METERS, CUSTOMERS, NOW)
    events = [validator.validate(record) for record in records]
    # two ingestions racing: both pass the check, each inserts every event (received at its own instant)
    store.insert_events(events[:250])
    store.insert_events(events[100:])
    store.insert_events(events[:150])
    store.insert_events(events[:150])  # the same chunk again: its token drops it
    assert _rows(store) == 250 + 300 + 150
    # and an ordinary redelivery, some events changed: duplicates and conflicts, nothing stored
    changed = [
        dict(r, value="1") if "value" in r else dict(r, customer="globex" if r["customer"] == "acme" else "acme")
        for r in records[:40]
    ]
    report = store.ingest(records[300:] + changed, METERS, CUSTOMERS, now=NOW)
    assert report.summary() == "accepted 0, duplicates 100, rejected 40"
    assert _rows(store) == 700
    assert _answers(store) == _answers(reference)
    store.client.command(f"SYSTEM START MERGES {store.table}")
    store.client.command(f"OPTIMIZE TABLE {store.table} FINAL")
    assert _rows(store) == 400  # one row per event once merged
    assert _answers(store) == _answers(reference)


def test_a_raced_conflict_is_reported_and_stops_the_aggregation_until_resolved(
    chdb_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: Any = chdb_store(chdb_folder)
    store.client.command(f"SYSTEM STOP MERGES {store.table}")
    first = {"id": "x", "customer": "acme", "meter": "bytes", "timestamp": "2024-03-02T00:00:00Z", "value": 1}
    other = dict(first, timestamp="2024-03-03T00:00:00Z", value=5)  # another sorting key: no merge joins them
    assert store.ingest([first], METERS, CUSTOMERS, now=NOW).summary() == "accepted 1, duplicates 0, rejected 0"
    # a second ingestion whose check ran before the first one's insert: it finds nothing and inserts too
    monkeypatch.setattr(store, "stored_hashes", lambda ids: {})
    raced = store.ingest([other], METERS, CUSTOMERS, now=NOW)
    assert raced.summary() == "accepted 0, duplicates 0, rejected 1"  # its own check after the insert finds it
    assert raced.rejected[0].reason == "conflict: id 'x' was already ingested with other content"
    monkeypatch.undo()
    assert _rows(store) == 2
    with pytest.raises(ConflictingEvents, match="x"):
        store.aggregate({"acme": MARCH}, METERS)
    with pytest.raises(ConflictingEvents):
        store.aggregate_split({"acme": MARCH}, METERS, {"bytes": Split.of()})
    store.aggregate({"globex": MARCH}, METERS)  # another customer's windows are not concerned
    # the first received content is the event, as on SQL (the deletion is a mutation: merges must run)
    store.client.command(f"SYSTEM START MERGES {store.table}")
    assert store.resolve_conflicts() == 1
    found = store.aggregate({"acme": MARCH}, METERS)[("acme", "bytes")]
    assert (str(found.quantity), found.events) == ("1", 1)
    assert store.ingest([other], METERS, CUSTOMERS, now=NOW).summary() == "accepted 0, duplicates 0, rejected 1"


def test_a_conflict_raced_while_conflicts_are_resolved_is_kept(chdb_folder: Path) -> None:
    store: Any = chdb_store(chdb_folder)
    first = {"id": "x", "customer": "acme", "meter": "bytes", "timestamp": "2024-03-02T00:00:00Z", "value": 1}
    also = {"id": "y", "customer": "acme", "meter": "bytes", "timestamp": "2024-03-05T00:00:00Z", "value": 2}
    store.ingest([first], METERS, CUSTOMERS, now=NOW)
    validator = EventValidator(METERS, CUSTOMERS, NOW)
    store.insert_events([validator.validate(dict(first, timestamp="2024-03-03T00:00:00Z", value=5))])
    store._raced(["x"])  # recorded, as the ingestion that lost records it
    real = store.client.query
    raced: list[bool] = []

    def query(sql: str, params: Any = None) -> Any:
        rows = real(sql, params)
        if not raced and "usage_event_conflicts" in sql:  # resolve_conflicts has read the conflicts
            raced.append(True)  # meanwhile, another id raced and was recorded
            store.ingest([also], METERS, CUSTOMERS, now=NOW)
            store.insert_events([validator.validate(dict(also, timestamp="2024-03-06T00:00:00Z", value=7))])
            store._raced(["y"])
        return rows

    store.client.query = query
    assert store.resolve_conflicts() == 1
    store.client.query = real
    with pytest.raises(ConflictingEvents, match="y"):  # not forgotten: it was not resolved
        store.aggregate({"acme": MARCH}, METERS)
    assert store.resolve_conflicts() == 1
    found = store.aggregate({"acme": MARCH}, METERS)[("acme", "bytes")]
    assert (str(found.quantity), found.events) == ("3", 2)  # x 1 and y 2, the first contents
