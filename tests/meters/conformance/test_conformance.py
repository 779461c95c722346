"""One suite for every event store (SQLite, PostgreSQL, chDB): every aggregation kind, filters and group_by,
late usage, duplicates and conflicts. Every number is worked out by hand in the comment beside it; the random
cases compare each store with a clean SQLite store."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

from meters import MeterSpec, Split
from meters.queries import CountedWindow
from meters.split import PartKey
from meters.store import EventStore

UTC = dt.UTC
NOW = dt.datetime(2024, 6, 1, tzinfo=UTC)
MARCH = (dt.datetime(2024, 3, 1, tzinfo=UTC), dt.datetime(2024, 4, 1, tzinfo=UTC))
FEBRUARY = (dt.datetime(2024, 2, 1, tzinfo=UTC), dt.datetime(2024, 3, 1, tzinfo=UTC))
METERS = {
    "api_calls": MeterSpec("api_calls", "count"),
    "bytes": MeterSpec("bytes", "sum"),
    "peak": MeterSpec("peak", "max"),
    "seats": MeterSpec("seats", "latest"),
    "storage_gb": MeterSpec("storage_gb", "weighted_sum"),
    "active_users": MeterSpec("active_users", "unique_count", unique_property="user_id"),
    "payments": MeterSpec("payments", "sum", keep_event_values=True),
    "sms": MeterSpec("sms", "sum"),
}
CUSTOMERS = {"acme", "globex"}


def event(
    n: int, meter: str, when: str, value: Any = None, customer: str = "acme", **properties: str
) -> dict[str, Any]:
    record: dict[str, Any] = {"id": f"{meter}-{n}", "customer": customer, "meter": meter, "timestamp": when}
    if value is not None:
        record["value"] = value
    if properties:
        record["properties"] = properties
    return record


EVENTS = [
    event(1, "api_calls", "2024-03-01T00:00:00Z"),
    event(2, "api_calls", "2024-03-15T10:00:00+02:00"),
    event(3, "api_calls", "2024-03-31T23:59:59.999999Z"),
    event(4, "api_calls", "2024-02-29T23:59:59Z"),  # February
    event(1, "bytes", "2024-03-02T00:00:00Z", "1.5"),
    event(2, "bytes", "2024-03-03T00:00:00Z", "2.25"),
    event(3, "bytes", "2024-03-04T00:00:00Z", 3),
    event(4, "bytes", "2024-02-04T00:00:00Z", 100),  # February
    event(1, "peak", "2024-03-02T00:00:00Z", 4),
    event(2, "peak", "2024-03-03T00:00:00Z", "9.5"),
    event(3, "peak", "2024-03-04T00:00:00Z", 2),
    event(1, "seats", "2024-03-02T00:00:00Z", 5),
    event(2, "seats", "2024-03-20T00:00:00Z", 7),
    event(3, "seats", "2024-03-10T00:00:00Z", 9),
    event(1, "storage_gb", "2024-02-15T00:00:00Z", 10, tier="hot"),
    event(2, "storage_gb", "2024-03-16T12:00:00Z", 20, tier="cold"),
    event(1, "active_users", "2024-03-02T00:00:00Z", user_id="u1"),
    event(2, "active_users", "2024-03-03T00:00:00Z", user_id="u2"),
    event(3, "active_users", "2024-03-04T00:00:00Z", user_id="u1"),
    event(1, "payments", "2024-03-05T00:00:00Z", 10),
    event(2, "payments", "2024-03-01T00:00:00Z", "2.5"),
    event(1, "sms", "2024-03-05T00:00:00Z", 1, country="US", region="na"),
    event(2, "sms", "2024-03-06T00:00:00Z", 2, country="CA", region="na"),
    event(3, "sms", "2024-03-07T00:00:00Z", 4, country="FR", region="eu"),
    event(4, "sms", "2024-03-08T00:00:00Z", 8, country="US", region="na"),
    event(5, "sms", "2024-03-09T00:00:00Z", 16, region="eu"),
]


def quantities(store: EventStore, window: tuple[dt.datetime, dt.datetime] = MARCH) -> dict[str, tuple[str, int]]:
    found = store.aggregate({"acme": window}, METERS)
    return {meter: (str(a.quantity), a.events) for (_, meter), a in found.items()}


def test_every_kind(event_store: EventStore) -> None:
    report = event_store.ingest(EVENTS, METERS, CUSTOMERS, now=NOW)
    assert report.summary() == "accepted 26, duplicates 0, rejected 0"
    assert quantities(event_store) == {
        "api_calls": ("3", 3),  # the February event is out
        "bytes": ("6.75", 3),  # 1.5 + 2.25 + 3
        "peak": ("9.5", 3),
        "seats": ("7", 3),  # the newest: March 20th
        # level 10 (carried from February) for 15.5 days, then 30 for 15.5 days: (10 + 30) / 2
        "storage_gb": ("20", 1),
        "active_users": ("2", 3),  # u1, u2
        "payments": ("12.5", 2),
        "sms": ("31", 5),  # 1 + 2 + 4 + 8 + 16
    }
    payments = event_store.aggregate({"acme": MARCH}, [METERS["payments"]])[("acme", "payments")]
    assert payments.values == (Decimal("2.5"), Decimal("10"))  # in time order
    assert event_store.aggregate({"acme": MARCH}, [METERS["seats"]])[("acme", "seats")].values is None
    # February: the storage level is 10 from the 15th on, over 29 days: 10 × 15 / 29 = 5.172413… → 5.172414
    february = quantities(event_store, FEBRUARY)
    assert february["storage_gb"] == ("5.172414", 1)
    assert february["bytes"] == ("100", 1)
    assert february["seats"] == ("0", 0)  # no event: 0
    assert february["peak"] == ("0", 0)
    # several windows of one customer, keyed freely; a customer without events gets zeros
    windows = {
        "a": ("acme", *MARCH),
        "b": ("acme", MARCH[0], dt.datetime(2024, 3, 16, 12, tzinfo=UTC)),
        "g": ("globex", *MARCH),
    }
    found = event_store.aggregate(windows, METERS)
    assert str(found[("b", "storage_gb")].quantity) == "10"  # the first half: level 10 throughout
    assert str(found[("b", "seats")].quantity) == "9"  # March 10th's
    assert (str(found[("g", "bytes")].quantity), found[("g", "bytes")].events) == ("0", 0)


def test_filters_and_group_by(event_store: EventStore) -> None:
    event_store.ingest(EVENTS, METERS, CUSTOMERS, now=NOW)
    by_country = Split.of([{"country": ["US", "CA"]}], [["country"], ["region"]])
    by_tier = Split.of([{"tier": ["hot"]}], [[], []])
    parts = event_store.aggregate_split({"acme": MARCH}, METERS, {"sms": by_country, "storage_gb": by_tier})
    found = {(p.meter, p.filter, p.group): (str(a.quantity), a.events) for p, a in parts.items()}
    assert found == {
        ("sms", 0, ("US",)): ("9", 2),  # 1 + 8
        ("sms", 0, ("CA",)): ("2", 1),
        ("sms", None, ("eu",)): ("20", 2),  # FR's 4 and the 16 without a country
        # the hot tier's level 10 carried in, no event in March: still a part
        ("storage_gb", 0, ()): ("10", 0),
        ("storage_gb", None, ()): ("10", 1),  # 0 for half of March, 20 for the other half
    }
    assert all(isinstance(p, PartKey) for p in parts)
    # two filters, the first that matches takes the event; a missing group property is None
    two = Split.of([{"region": ["na"], "country": ["US"]}, {"region": ["eu", "na"]}], [[], ["country"], []])
    parts = event_store.aggregate_split({"acme": MARCH}, METERS, {"sms": two})
    found = {(p.filter, p.group): str(a.quantity) for p, a in parts.items()}
    assert found == {(0, ()): "9", (1, ("CA",)): "2", (1, ("FR",)): "4", (1, (None,)): "16"}


def test_duplicates_and_conflicts(event_store: EventStore) -> None:
    first = event_store.ingest(EVENTS[:8], METERS, CUSTOMERS, now=NOW)
    assert first.summary() == "accepted 8, duplicates 0, rejected 0"
    again = event_store.ingest(EVENTS[:10], METERS, CUSTOMERS, now=NOW)
    assert again.summary() == "accepted 2, duplicates 8, rejected 0"
    assert again.duplicate_lines == list(range(8))
    changed = dict(EVENTS[4], value="1.6")
    conflict = event_store.ingest(
        [changed, dict(EVENTS[5], timestamp="2024-03-03T01:00:00+01:00")], METERS, CUSTOMERS, now=NOW
    )
    # the same instant written with another offset is the same content
    assert conflict.summary() == "accepted 0, duplicates 1, rejected 1"
    assert conflict.rejected[0].reason == "conflict: id 'bytes-1' was already ingested with other content"
    # within one batch: a repeat with the same content is a duplicate, with other content a conflict
    batch = [
        event(9, "bytes", "2024-03-09T00:00:00Z", 1),
        event(9, "bytes", "2024-03-09T00:00:00Z", 1),
        event(10, "bytes", "2024-03-10T00:00:00Z", 1),
        event(10, "bytes", "2024-03-10T00:00:00Z", 2),
    ]
    inner = event_store.ingest(batch, METERS, CUSTOMERS, now=NOW)
    assert inner.summary() == "accepted 2, duplicates 1, rejected 1"
    assert quantities(event_store)["bytes"] == ("8.75", 5)  # 1.5 + 2.25 + 3 + 1 + 1: the first contents


def test_late_usage(event_store: EventStore) -> None:
    event_store.ingest(EVENTS, METERS, CUSTOMERS, now=NOW)
    cutoff = event_store.ingestion_cutoff()
    windows = {
        "march": CountedWindow("acme", *MARCH, cutoff),
        "february": CountedWindow("acme", *FEBRUARY, cutoff),
        "globex": CountedWindow("globex", *MARCH, cutoff),
    }
    assert event_store.late_windows(windows) == set()
    # a duplicate redelivered after the cutoff is not late: it was counted when first received
    event_store.ingest(EVENTS[:3], METERS, CUSTOMERS, now=NOW)
    assert event_store.late_windows(windows) == set()
    event_store.ingest([event(7, "bytes", "2024-03-20T00:00:00Z", "0.25")], METERS, CUSTOMERS, now=NOW)
    assert event_store.late_windows(windows) == {"march"}
    assert event_store.late_windows({}) == set()
    until = event_store.aggregate({"acme": MARCH}, METERS, received_until=cutoff)[("acme", "bytes")]
    after = event_store.aggregate({"acme": MARCH}, METERS, received_after=cutoff)
    assert (str(until.quantity), until.events) == ("6.75", 3)
    assert (str(after[("acme", "bytes")].quantity), after[("acme", "bytes")].events) == ("0.25", 1)
    assert after[("acme", "api_calls")].events == 0  # the redelivered duplicates are not counted again


def test_unbilled_usage(event_store: EventStore) -> None:
    event_store.ingest(
        [*EVENTS, event(11, "bytes", "2024-03-02T00:00:00Z", 5, customer="globex")], METERS, CUSTOMERS, now=NOW
    )
    counted = event_store.count_events({"a": ("acme", *MARCH), "g": ("globex", *MARCH)}, ["api_calls", "bytes"])
    assert counted == {("a", "api_calls"): 3, ("a", "bytes"): 3, ("g", "bytes"): 1}
    by_meter = event_store.customers_by_meter()
    assert by_meter["bytes"] == {"acme", "globex"} and by_meter["sms"] == {"acme"}
    assert event_store.customers_by_meter("globex") == {"bytes": {"globex"}}


def random_events(seed: int, count: int = 400) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    meters = sorted(METERS)
    records = []
    for n in range(count):
        meter = rng.choice(meters)
        when = dt.datetime(2024, 2, 1, tzinfo=UTC) + dt.timedelta(seconds=rng.randrange(0, 90 * 86400))
        value = None if meter in ("api_calls", "active_users") else str(Decimal(rng.randrange(-(10**9), 10**9)) / 10**6)
        if meter != "storage_gb" and value is not None:
            value = value.lstrip("-")
        properties = {"country": rng.choice(["US", "CA", "FR"]), "user_id": f"u{rng.randrange(5)}"}
        if rng.random() < 0.3:
            del properties["country"]
        records.append(
            {
                "id": f"r{n}",
                "customer": rng.choice(["acme", "globex"]),
                "meter": meter,
                "timestamp": when.isoformat(),
                "properties": properties,
                **({"value": value} if value is not None else {}),
            }
        )
    return records


def test_random_usage_matches_the_reference(event_store: EventStore, reference: EventStore) -> None:
    records = random_events(19)
    for store in (event_store, reference):
        store.ingest(records, METERS, CUSTOMERS, now=NOW)
        store.ingest(records[::3], METERS, CUSTOMERS, now=NOW)
    windows = {
        (c, i): (c, MARCH[0] + dt.timedelta(days=i), MARCH[1] + dt.timedelta(days=2 * i))
        for c in ("acme", "globex")
        for i in range(3)
    }
    split = Split.of([{"country": ["US", "CA"]}], [["country"], []])
    splits = {"sms": split, "storage_gb": split, "seats": split, "payments": split}
    for kind in ("aggregate", "aggregate_split"):
        args: tuple[Any, ...] = (windows, METERS) if kind == "aggregate" else (windows, METERS, splits)
        expected = getattr(reference, kind)(*args)
        found = getattr(event_store, kind)(*args)
        assert {k: (str(a.quantity), a.events, a.values) for k, a in found.items()} == {
            k: (str(a.quantity), a.events, a.values) for k, a in expected.items()
        }


def test_awkward_text_is_stored_as_given(event_store: EventStore) -> None:
    awkward = "it's a \\ back\tslash\nand\rmore ü"
    record = event(1, "sms", "2024-03-05T00:00:00Z", 1, country=awkward)
    record["id"] = awkward
    assert event_store.ingest([record], METERS, CUSTOMERS, now=NOW).summary() == "accepted 1, duplicates 0, rejected 0"
    assert event_store.ingest([record], METERS, CUSTOMERS, now=NOW).summary() == "accepted 0, duplicates 1, rejected 0"
    split = Split.of([{"country": [awkward]}], [["country"], []])
    parts = event_store.aggregate_split({"acme": MARCH}, METERS, {"sms": split})
    assert {(p.filter, p.group): str(a.quantity) for p, a in parts.items()} == {(0, (awkward,)): "1"}


def test_events_at_one_instant_come_in_the_order_of_their_ids(event_store: EventStore) -> None:
    tied = [event(n, "payments", "2024-03-05T12:00:00Z", value) for n, value in ((9, 30), (2, 5), (5, "0.5"))]
    seats = [event(n, "seats", "2024-03-05T12:00:00Z", value) for n, value in ((9, 1), (2, 2), (5, 3))]
    others = [event(100 + n, "api_calls", "2024-03-01T00:00:00Z") for n in range(150)]  # (a large batch)
    for batch in (tied + seats, [*others, event(7, "payments", "2024-03-05T12:00:00Z", 7)]):
        assert not event_store.ingest(batch, METERS, CUSTOMERS, now=NOW).rejected
    found = event_store.aggregate({"acme": MARCH}, METERS)
    # one batch: payments-2 (5), payments-5 (0.5), payments-9 (30), whatever the order given; a later batch after
    assert list(found[("acme", "payments")].values or ()) == [Decimal(5), Decimal("0.5"), Decimal(30), Decimal(7)]
    assert str(found[("acme", "seats")].quantity) == "1"  # seats-9, the last in the order of the ids
