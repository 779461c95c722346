"""Usage split by event properties, hand-checked for every kind, on SQLite and (when configured) PostgreSQL.

Every number below is worked out by hand in the comment beside it.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine

from meters import MeterSpec, PartKey, Split, aggregate_split_usage, aggregate_usage, ingest

pytestmark = pytest.mark.db

UTC = dt.UTC
NOW = dt.datetime(2024, 6, 1, tzinfo=UTC)
MARCH = (dt.datetime(2024, 3, 1, tzinfo=UTC), dt.datetime(2024, 4, 1, tzinfo=UTC))
METERS = {
    "sms": MeterSpec("sms", "count"),
    "bytes": MeterSpec("bytes", "sum"),
    "peak": MeterSpec("peak", "max"),
    "users": MeterSpec("users", "unique_count", unique_property="user"),
    "seats": MeterSpec("seats", "latest"),
    "storage": MeterSpec("storage", "weighted_sum"),
    "payments": MeterSpec("payments", "sum", keep_event_values=True),
}
SMS = Split.of(
    [{"country": ["DE"], "direction": ["inbound"]}, {"country": ["US", "CA"]}, {"country": ["DE"]}],
    group_by=[[], ["region"], [], ["region"]],
)


def store(engine: Engine, *events: tuple[str, str, object, dict[str, str] | None]) -> None:
    """acme's events as (meter, timestamp, value, properties); ids made up from their position."""
    records = []
    for number, (meter, timestamp, value, properties) in enumerate(events):
        record: dict[str, object] = {"id": f"e{number}", "customer": "acme", "meter": meter, "timestamp": timestamp}
        if value is not None:
            record["value"] = value
        if properties is not None:
            record["properties"] = properties
        records.append(record)
    report = ingest(engine, records, METERS, {"acme", "globex"}, now=NOW)
    assert report.rejected == [] and report.accepted == len(events)


def parts(engine: Engine, splits: dict[str, Split], **options: Any) -> dict[tuple[Any, ...], tuple[str, int]]:
    """acme's March parts as {(meter, filter, group): (quantity, events)}."""
    found = aggregate_split_usage(engine, {"acme": MARCH}, METERS, splits, **options)
    assert all(isinstance(a.quantity, Decimal) and key.key == "acme" for key, a in found.items())
    return {(k.meter, k.filter, k.group): (str(a.quantity), a.events) for k, a in found.items()}


def test_count_first_filter_in_order_and_groups(engine: Engine) -> None:
    store(
        engine,
        ("sms", "2024-03-02T00:00:00Z", None, {"country": "DE", "direction": "inbound"}),  # filter 0 (tried first)
        ("sms", "2024-03-03T00:00:00Z", None, {"country": "DE", "direction": "outbound"}),  # filter 2
        ("sms", "2024-03-04T00:00:00Z", None, {"country": "DE"}),  # filter 2: no direction, filter 0 fails
        ("sms", "2024-03-05T00:00:00Z", None, {"country": "US", "region": "east"}),  # filter 1, east
        ("sms", "2024-03-06T00:00:00Z", None, {"country": "CA", "region": "east"}),  # filter 1, east
        ("sms", "2024-03-07T00:00:00Z", None, {"country": "CA"}),  # filter 1, no region: None
        ("sms", "2024-03-08T00:00:00Z", None, {"country": "FR", "region": "eu"}),  # unmatched, eu
        ("sms", "2024-03-09T00:00:00Z", None, None),  # unmatched, no properties at all: None
        ("sms", "2024-03-10T00:00:00Z", None, {"country": "us"}),  # unmatched: values compare exactly
        ("sms", "2024-02-29T23:59:59Z", None, {"country": "US", "region": "east"}),  # February: not counted
    )
    assert parts(engine, {"sms": SMS}) == {
        ("sms", 0, ()): ("1", 1),
        ("sms", 2, ()): ("2", 2),
        ("sms", 1, ("east",)): ("2", 2),
        ("sms", 1, (None,)): ("1", 1),
        ("sms", None, ("eu",)): ("1", 1),
        ("sms", None, (None,)): ("2", 2),  # the event without properties and the "us" one
    }


def test_sum_max_and_kept_values_per_part(engine: Engine) -> None:
    eu, us = {"region": "eu"}, {"region": "us"}
    store(
        engine,
        ("bytes", "2024-03-02T00:00:00Z", "1.5", eu),
        ("bytes", "2024-03-03T00:00:00Z", "2.25", eu),
        ("bytes", "2024-03-04T00:00:00Z", "10", us),
        ("peak", "2024-03-02T00:00:00Z", "7", eu),
        ("peak", "2024-03-03T00:00:00Z", "3", eu),
        ("peak", "2024-03-04T00:00:00Z", "4", us),
        ("payments", "2024-03-05T00:00:00Z", "20", eu),
        ("payments", "2024-03-02T00:00:00Z", "30", eu),
        ("payments", "2024-03-03T00:00:00Z", "5", us),
    )
    by_region = Split.of([], group_by=[["region"]])
    assert parts(engine, {"bytes": by_region, "peak": by_region, "payments": by_region}) == {
        ("bytes", None, ("eu",)): ("3.75", 2),  # 1.5 + 2.25
        ("bytes", None, ("us",)): ("10", 1),
        ("peak", None, ("eu",)): ("7", 2),  # max(7, 3)
        ("peak", None, ("us",)): ("4", 1),
        ("payments", None, ("eu",)): ("50", 2),  # 30 + 20
        ("payments", None, ("us",)): ("5", 1),
    }
    found = aggregate_split_usage(engine, {"acme": MARCH}, METERS, {"payments": by_region})
    assert found[PartKey("acme", "payments", None, ("eu",))].values == (Decimal(30), Decimal(20))  # time order


def test_unique_count_per_filter_and_overall(engine: Engine) -> None:
    store(
        engine,
        ("users", "2024-03-02T00:00:00Z", None, {"user": "ann", "plan": "pro"}),
        ("users", "2024-03-03T00:00:00Z", None, {"user": "ann", "plan": "pro"}),  # ann again in pro
        ("users", "2024-03-04T00:00:00Z", None, {"user": "ann", "plan": "free"}),  # ann in free too
        ("users", "2024-03-05T00:00:00Z", None, {"user": "bob", "plan": "free"}),
        ("users", "2024-03-06T00:00:00Z", None, {"user": "cy", "plan": "team"}),  # unmatched
    )
    split = Split.of([{"plan": ["pro"]}, {"plan": ["free"]}])
    assert parts(engine, {"users": split}) == {
        ("users", 0, ()): ("1", 2),  # ann
        ("users", 1, ()): ("2", 2),  # ann, bob
        ("users", None, ()): ("1", 1),  # cy
    }
    # the meter overall: ann, bob, cy — 3, not 1 + 2 + 1 = 4
    assert aggregate_usage(engine, {"acme": MARCH}, METERS)[("acme", "users")].quantity == 3


def test_latest_and_weighted_sum_per_part(engine: Engine) -> None:
    a, b = {"disk": "a"}, {"disk": "b"}
    store(
        engine,
        ("seats", "2024-03-02T00:00:00Z", "5", a),
        ("seats", "2024-03-20T00:00:00Z", "3", a),  # a's newest: 3
        ("seats", "2024-03-10T00:00:00Z", "9", b),
        ("storage", "2024-02-15T00:00:00Z", "10", a),  # a's level carried into March: 10
        ("storage", "2024-03-17T00:00:00Z", "20", a),  # +20 for the last 15 of March's 31 days
        ("storage", "2024-02-10T00:00:00Z", "5", b),  # b: no March event, level 5 all month
    )
    split = Split.of([{"disk": ["a"]}])
    assert parts(engine, {"seats": split, "storage": split}) == {
        ("seats", 0, ()): ("3", 2),
        ("seats", None, ()): ("9", 1),
        ("storage", 0, ()): ("19.677419", 1),  # 10 + 20 × 15/31 = 10 + 9.6774193… → 19.677419
        ("storage", None, ()): ("5", 0),
    }


def test_quotes_unicode_and_odd_property_names(engine: Engine) -> None:
    odd = 'say "hi"\\'
    store(
        engine,
        ("sms", "2024-03-02T00:00:00Z", None, {"país": "Côte d'Ivoire", odd: "x'y\"z"}),
        ("sms", "2024-03-03T00:00:00Z", None, {"país": "Côte d'Ivoire", odd: "plain"}),
        ("sms", "2024-03-04T00:00:00Z", None, {"país": "日本", "a.b": "dot"}),
        ("sms", "2024-03-05T00:00:00Z", None, {"país": "'; DROP TABLE usage_events; --"}),
    )
    split = Split.of(
        [{"país": ["Côte d'Ivoire"], odd: ["x'y\"z"]}, {"país": ["日本", "'; DROP TABLE usage_events; --"]}],
        group_by=[[odd], ["a.b"], []],
    )
    assert parts(engine, {"sms": split}) == {
        ("sms", 0, ("x'y\"z",)): ("1", 1),
        ("sms", 1, ("dot",)): ("1", 1),
        ("sms", 1, (None,)): ("1", 1),
        ("sms", None, ()): ("1", 1),  # the Ivorian event whose odd property is "plain"
    }


def test_received_filters_and_windows(engine: Engine) -> None:
    store(engine, ("sms", "2024-03-02T00:00:00Z", None, {"country": "US"}))
    between = dt.datetime.now(UTC)
    time.sleep(0.002)
    ingest(
        engine,
        [{"id": "late", "customer": "acme", "meter": "sms", "timestamp": "2024-03-05T00:00:00Z",
          "properties": {"country": "US", "region": "west"}}],
        METERS,
        {"acme"},
        now=NOW,
    )  # fmt: skip
    assert parts(engine, {"sms": SMS}, received_after=between) == {("sms", 1, ("west",)): ("1", 1)}
    assert parts(engine, {"sms": SMS}, received_until=between) == {("sms", 1, (None,)): ("1", 1)}
    both = aggregate_split_usage(engine, {"m": ("acme", *MARCH), "g": ("globex", *MARCH)}, METERS, {"sms": SMS})
    assert {(k.key, k.filter, k.group) for k in both} == {("m", 1, (None,)), ("m", 1, ("west",))}


@pytest.mark.parametrize("meter", ["sms", "bytes", "peak", "users", "seats", "payments"])
def test_split_matches_the_reference_rule(engine: Engine, meter: str) -> None:
    """Random events: each part's quantity equals the meter's own aggregate of the events the Python rule
    assigns to that part (computed by aggregating them alone, under another customer)."""
    rng = random.Random(14)
    split = Split.of(
        [{"c": ["1", "2"], "d": ["x"]}, {"c": ["1", "3"]}, {"d": ["y"]}],
        group_by=[["e"], [], ["c", "e"], ["d"]],
    )
    events = []
    for number in range(300):
        properties = {k: rng.choice(["1", "2", "3", "x", "y"]) for k in "cde" if rng.random() < 0.8}
        properties["user"] = rng.choice("abcdefg")
        value = str(rng.randint(0, 50)) if meter != "sms" and meter != "users" else None
        when = f"2024-03-{1 + number % 28:02d}T{number % 24:02d}:{number % 60:02d}:00Z"
        events.append((properties, value, when, number))
    records = [
        {"id": f"r{n}", "customer": "acme", "meter": meter, "timestamp": when, "properties": p}
        | ({"value": v} if v is not None else {})
        for p, v, when, n in events
    ]
    # each part's events again, under a customer of their own, aggregated whole
    by_part: dict[tuple[Any, ...], str] = {}
    for p, v, when, n in events:
        part = split.part_of(p)
        customer = by_part.setdefault(part, f"part{len(by_part)}")
        record = {"id": f"p{n}", "customer": customer, "meter": meter, "timestamp": when, "properties": p}
        records.append(record | ({"value": v} if v is not None else {}))
    report = ingest(engine, records, METERS, {"acme", *by_part.values()}, now=NOW)
    assert report.rejected == []
    whole = aggregate_usage(engine, {c: MARCH for c in by_part.values()}, METERS)
    found = aggregate_split_usage(engine, {"acme": MARCH}, METERS, {meter: split})
    assert {(k.filter, k.group): (a.quantity, a.events, a.values) for k, a in found.items()} == {
        part: (whole[(c, meter)].quantity, whole[(c, meter)].events, whole[(c, meter)].values)
        for part, c in by_part.items()
    }


def test_split_checks_its_shape() -> None:
    with pytest.raises(ValueError, match="needs 2 group_by"):
        Split.of([{"c": ["1"]}], group_by=[["x"]])
    with pytest.raises(ValueError, match="filter 0"):
        Split.of([{"c": []}])
    assert Split.of([{"c": ["1"]}]) == Split.of([{"c": ("1",)}])  # hashable, equal by content
    assert SMS.part_of({"country": "CA"}) == (1, (None,))


def test_sums_beyond_64_bits_stay_exact_per_part(engine: Engine) -> None:
    # 10 × 999,999,999,999.999999 per part: scaled × 10^6 ~10^19 > 2^63, SQLite's sum overflows and numpy takes
    # over on Python integers (PostgreSQL sums bigints as numeric); likewise the level carried into March.
    big = "999999999999.999999"
    store(
        engine,
        *(("bytes", f"2024-03-{day:02d}T00:00:00Z", big, {"r": "eu"}) for day in range(1, 11)),
        ("bytes", "2024-03-11T00:00:00Z", "1", {"r": "us"}),
        *(("storage", f"2024-02-{day:02d}T00:00:00Z", big, {"r": "eu"}) for day in range(1, 11)),
    )
    by_region = Split.of([], group_by=[["r"]])
    assert parts(engine, {"bytes": by_region, "storage": by_region}) == {
        ("bytes", None, ("eu",)): ("9999999999999.99999", 10),  # 10 × big
        ("bytes", None, ("us",)): ("1", 1),
        ("storage", None, ("eu",)): ("9999999999999.99999", 0),  # the level carried all through March
    }


def test_latest_per_group_by_filter_and_group_ties_to_the_one_stored_last(engine: Engine) -> None:
    store(
        engine,
        ("seats", "2024-03-05T00:00:00Z", "4", {"plan": "pro", "disk": "a"}),
        ("seats", "2024-03-09T00:00:00Z", "6", {"plan": "pro", "disk": "a"}),
        ("seats", "2024-03-09T00:00:00Z", "8", {"plan": "pro", "disk": "a"}),  # same instant, stored last: 8
        ("seats", "2024-03-01T00:00:00Z", "2", {"plan": "pro", "disk": "b"}),
        ("seats", "2024-03-30T00:00:00Z", "1", {"plan": "pro"}),  # no disk: group (None,)
        ("seats", "2024-03-31T00:00:00Z", "7", {"plan": "free", "disk": "a"}),  # no filter matches
        ("seats", "2024-04-01T00:00:00Z", "99", {"plan": "pro", "disk": "a"}),  # April: not in the window
    )
    split = Split.of([{"plan": ["pro"]}], group_by=[["disk"], []])
    assert parts(engine, {"seats": split}) == {
        ("seats", 0, ("a",)): ("8", 3),
        ("seats", 0, ("b",)): ("2", 1),
        ("seats", 0, (None,)): ("1", 1),
        ("seats", None, ()): ("7", 1),
    }


def test_weighted_sum_per_group_beyond_64_bits_stays_exact(engine: Engine) -> None:
    # big (scaled ~10^18) × 15 days' microseconds >> 24 (~7.7 × 10^4) does not fit 64 bits: SQLite's product turns
    # into a float, and the parts are summed again on Python integers as the rows stream by.
    big = "999999999999.999999"
    store(
        engine,
        ("storage", "2024-03-17T00:00:00Z", big, {"r": "eu"}),  # the last 15 of March's 31 days
        ("storage", "2024-02-20T00:00:00Z", "3", {"r": "us"}),  # us: 3 carried in
        ("storage", "2024-03-01T00:00:00Z", "2", {"r": "us"}),  # +2 all month
    )
    by_region = Split.of([], group_by=[["r"]])
    assert parts(engine, {"storage": by_region}) == {
        ("storage", None, ("eu",)): ("483870967741.935483", 1),  # big × 15/31 = 483,870,967,741.9354834…
        ("storage", None, ("us",)): ("5", 1),  # 3 × 31/31 + 2 × 31/31
    }
