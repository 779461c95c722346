"""Exactly once and exactness on every event store: duplicates stored twice (merges stopped) counted once on
every query path, received cutoffs read from the first received copy, a batch retried after a lost id write,
ties of ``latest`` and half-even rounding alike on every backend."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from meters import EventValidator, MeterSpec, Split
from meters.queries import CountedWindow
from meters.store import EventStore
from tests.conftest import chdb_store
from tests.meters.conformance.test_conformance import CUSTOMERS, MARCH, METERS, NOW, event

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def _stopped(chdb_folder: Path) -> Any:
    store = chdb_store(chdb_folder)
    store.client.command(f"SYSTEM STOP MERGES {store.table}")
    return store


def test_a_copy_received_later_counts_once_on_every_path(chdb_folder: Path) -> None:
    store = _stopped(chdb_folder)
    validator = EventValidator(METERS, CUSTOMERS, NOW)
    first = validator.validate(event(1, "bytes", "2024-03-02T00:00:00Z", "1.5"))
    other = validator.validate(event(2, "bytes", "2024-03-03T00:00:00Z", "2", customer="globex"))
    store.insert_events([first])
    between = store.ingestion_cutoff()
    store.insert_events([first, other])  # another chunking: another token, stored again (received after the cutoff)
    through = store.ingestion_cutoff()
    assert int(store.client.query(f"SELECT count() FROM {store.table}")[0][0]) == 3
    plain = store.aggregate({"acme": MARCH}, METERS)[("acme", "bytes")]
    assert (str(plain.quantity), plain.events) == ("1.5", 1)
    until = store.aggregate({"acme": MARCH}, METERS, received_until=between)[("acme", "bytes")]
    assert (str(until.quantity), until.events) == ("1.5", 1)
    after = store.aggregate({"acme": MARCH}, METERS, received_after=between)[("acme", "bytes")]
    assert after.events == 0  # first received before the cutoff: not after it
    split = store.aggregate_split({"acme": MARCH}, METERS, {"bytes": Split.of()}, received_after=between)
    assert all(a.events == 0 for a in split.values())
    split = store.aggregate_split({"acme": MARCH}, METERS, {"bytes": Split.of()})
    assert [(str(a.quantity), a.events) for a in split.values()] == [("1.5", 1)]
    windows = {"a": CountedWindow("acme", *MARCH, between), "g": CountedWindow("globex", *MARCH, between)}
    assert store.late_windows(windows) == {"g"}
    assert store.count_events({"a": ("acme", *MARCH)}, ["bytes"]) == {("a", "bytes"): 1}
    totals = store.meter_totals("acme", [METERS["bytes"]], *MARCH)
    assert (str(totals["bytes"].quantity), totals["bytes"].events) == ("1.5", 1)
    between_us, through_us = (int((at - EPOCH) / dt.timedelta(microseconds=1)) for at in (between, through))
    assert set(store.received_spans(between_us, through_us)) == {"globex"}
    assert set(store.received_spans(0, between_us)) == {"acme"}
    assert store.last_events({"acme": MARCH[1]}) == {"acme": dt.datetime(2024, 3, 2, tzinfo=UTC)}
    assert store.received_since(through_us) is False


def test_a_batch_retried_after_its_ids_were_lost(chdb_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _stopped(chdb_folder)
    records = [event(n, "bytes", f"2024-03-{n:02d}T00:00:00Z", n) for n in range(1, 11)]
    validator = EventValidator(METERS, CUSTOMERS, NOW)
    events = [validator.validate(r) for r in records]

    def lost(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("lost")

    # the events inserted, the process gone before the ids were written
    monkeypatch.setattr(store.client, "insert_plain", lost)
    with pytest.raises(ConnectionError):
        store.insert_events(events)
    monkeypatch.undo()
    # the same batch again: its token drops the events' second insert; no conflict, counted once
    assert store.ingest(records, METERS, CUSTOMERS, now=NOW).summary() == "accepted 10, duplicates 0, rejected 0"
    found = store.aggregate({"acme": MARCH}, METERS)[("acme", "bytes")]
    assert (str(found.quantity), found.events) == ("55", 10)  # 1 + 2 + … + 10
    # a retry chunked otherwise: the events inserted again under other tokens, still counted once
    more = [event(n, "bytes", f"2024-03-{n:02d}T00:00:00Z", n) for n in range(11, 21)]
    monkeypatch.setattr(store.client, "insert_plain", lost)
    with pytest.raises(ConnectionError):
        store.insert_events([validator.validate(r) for r in more])
    monkeypatch.undo()
    assert store.ingest(more[:4], METERS, CUSTOMERS, now=NOW).summary() == "accepted 4, duplicates 0, rejected 0"
    assert store.ingest(more[2:], METERS, CUSTOMERS, now=NOW).summary() == "accepted 6, duplicates 2, rejected 0"
    found = store.aggregate({"acme": MARCH}, METERS)[("acme", "bytes")]
    assert (str(found.quantity), found.events) == ("210", 20)  # 1 + 2 + … + 20
    assert store.ingest(records + more, METERS, CUSTOMERS, now=NOW).summary() == "accepted 0, duplicates 20, rejected 0"


TIES = {
    "seats": MeterSpec("seats", "latest"),
    "level": MeterSpec("level", "weighted_sum"),
    "peak": MeterSpec("peak", "max"),
    "bytes": MeterSpec("bytes", "sum"),
}


def test_latest_ties_and_exact_values(event_store: EventStore) -> None:
    same = "2024-03-10T00:00:00Z"
    event_store.ingest([event(1, "seats", same, 5), event(2, "seats", same, 3)], TIES, CUSTOMERS, now=NOW)
    # a tie goes to the last batch, and in it to the greater id: seats-4 (9), whatever the order in the batch
    event_store.ingest([event(4, "seats", same, 9), event(3, "seats", same, 4)], TIES, CUSTOMERS, now=NOW)
    # a batch of more than a hundred (PostgreSQL copies those): seats-219 (219) wins, though sent first
    many = [event(n, "seats", same, n, customer="globex") for n in range(219, 99, -1)]
    event_store.ingest(many, TIES, CUSTOMERS, now=NOW)
    assert str(event_store.aggregate({"globex": MARCH}, TIES)[("globex", "seats")].quantity) == "219"
    # and one redelivered later: a duplicate, not the newest
    event_store.ingest([event(3, "seats", same, 4)], TIES, CUSTOMERS, now=NOW)
    event_store.ingest(
        [
            event(1, "bytes", "2024-03-01T00:00:00Z", "999999999999.999999"),
            event(2, "bytes", "2024-03-01T00:00:00Z", "999999999999.999999"),
            event(1, "peak", "2024-03-01T00:00:00Z", "0.000001"),
            event(2, "peak", "2024-03-02T00:00:00Z", "999999999999.999999"),
        ],
        TIES,
        CUSTOMERS,
        now=NOW,
    )
    rejected = event_store.ingest([event(3, "bytes", "2024-03-01T00:00:00Z", "1000000000000")], TIES, CUSTOMERS)
    assert rejected.rejected[0].reason == "value 1000000000000 is out of range (|value| < 10^12)"
    # a 2-second window: 0.000003 held the last second is 0.0000015 on average, half-even 0.000002;
    # -0.000001 held the last second is -0.0000005, half-even 0
    start = dt.datetime(2024, 4, 1, tzinfo=UTC)
    event_store.ingest(
        [
            event(1, "level", "2024-04-01T00:00:01Z", "0.000003", customer="globex"),
            event(2, "level", "2024-04-01T00:00:01Z", "-0.000001"),
        ],
        TIES,
        CUSTOMERS,
        now=NOW,
    )
    found = event_store.aggregate({"acme": MARCH}, TIES)
    got = {meter: str(a.quantity) for (_, meter), a in found.items()}
    assert got == {"seats": "9", "bytes": "1999999999999.999998", "peak": "999999999999.999999", "level": "0"}
    window = (start, start + dt.timedelta(seconds=2))
    found = event_store.aggregate({"acme": window, "globex": window}, TIES)
    assert (str(found[("acme", "level")].quantity), str(found[("globex", "level")].quantity)) == ("0", "0.000002")


def test_a_cutoff_taken_by_another_store_of_the_folder_waits_for_an_insert(chdb_folder: Path) -> None:
    import threading

    inserting = chdb_store(chdb_folder)
    cutting = type(inserting).open(inserting.url)  # another store of the same folder (another engine's)
    started, go = threading.Event(), threading.Event()
    real = inserting.client.insert

    def slow(*args: Any) -> None:
        started.set()
        go.wait(30)
        real(*args)

    inserting.client.insert = slow
    record = event(1, "bytes", "2024-03-02T00:00:00Z", "1.5")
    worker = threading.Thread(target=inserting.ingest, args=([record], METERS, CUSTOMERS), kwargs={"now": NOW})
    worker.start()
    started.wait(30)
    seen: dict[str, Any] = {}

    def cut() -> None:
        seen["cutoff"] = cutoff = cutting.ingestion_cutoff()
        seen["counted"] = cutting.aggregate({"acme": MARCH}, METERS, received_until=cutoff)[("acme", "bytes")].events

    cutter = threading.Thread(target=cut)
    cutter.start()
    cutter.join(2)  # blocked until the insert is done, or done already (the cutoff taken while it was under way)
    go.set()
    worker.join()
    cutter.join()
    # whatever a run counted at the cutoff is what is received by it: nothing received before it comes in later
    later = cutting.aggregate({"acme": MARCH}, METERS, received_until=seen["cutoff"])[("acme", "bytes")].events
    assert seen["counted"] == later


def test_a_month_of_a_customer_east_of_utc_across_partitions(event_store: EventStore) -> None:
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    april = (dt.datetime(2024, 4, 1, tzinfo=berlin), dt.datetime(2024, 5, 1, tzinfo=berlin))
    records = [
        event(1, "bytes", "2024-03-31T21:59:59.999999Z", 1),  # 23:59:59.999999 in Berlin: March
        event(2, "bytes", "2024-03-31T22:00:00Z", 2),  # midnight in Berlin: April, in March's UTC partition
        event(3, "bytes", "2024-04-30T21:59:59.999999Z", 4),  # April in Berlin
        event(4, "bytes", "2024-04-30T22:00:00Z", 8),  # May in Berlin
        event(1, "storage_gb", "2024-03-31T22:00:00Z", 10),  # held all April
    ]
    copies = getattr(event_store, "insert_events", None)
    if copies is not None:  # ClickHouse: merges stopped, every event stored twice
        event_store.client.command(f"SYSTEM STOP MERGES {event_store.table}")  # type: ignore[attr-defined]
        validator = EventValidator(METERS, CUSTOMERS, NOW)
        copies([validator.validate(r) for r in records[::-1]][:3])
    event_store.ingest(records, METERS, CUSTOMERS, now=NOW)
    if copies is not None:
        copies([validator.validate(r) for r in records])
    found = event_store.aggregate({"acme": april}, METERS)
    assert (str(found[("acme", "bytes")].quantity), found[("acme", "bytes")].events) == ("6", 2)  # 2 + 4
    assert str(found[("acme", "storage_gb")].quantity) == "10"
