"""Aggregation, hand-checked for every kind, on SQLite and (when configured) PostgreSQL.

Every number below is worked out by hand in the comment beside it.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from sqlalchemy import Engine

from dbkit import is_postgresql
from meters import MeterAggregate, MeterSpec, aggregate_usage, ingest, ingestion_cutoff
from meters import aggregate as aggregate_module
from meters.aggregate import exact_group_dots, exact_group_sums

UTC = dt.UTC
NOW = dt.datetime(2024, 6, 1, tzinfo=UTC)
METERS = {
    "api_calls": MeterSpec("api_calls", "count"),
    "payments": MeterSpec("payments", "sum", keep_event_values=True),
    "bytes": MeterSpec("bytes", "sum"),
    "peak": MeterSpec("peak", "max"),
    "seats": MeterSpec("seats", "latest"),
    "storage_gb": MeterSpec("storage_gb", "weighted_sum"),
    "active_users": MeterSpec("active_users", "unique_count", unique_property="user_id"),
}
CUSTOMERS = {"acme", "globex", "initech"}


def month(year: int, month_: int, zone: str = "UTC") -> tuple[dt.datetime, dt.datetime]:
    tz = ZoneInfo(zone)
    start = dt.datetime(year, month_, 1, tzinfo=tz)
    end = dt.datetime(year + month_ // 12, month_ % 12 + 1, 1, tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


MARCH = month(2024, 3)


def store(
    engine: Engine,
    *events: tuple[str, str, str, object] | tuple[str, str, str, object, dict[str, str]],
    now: dt.datetime = NOW,
) -> None:
    """Events as (customer, meter, timestamp, value[, properties]); ids are made up from their position."""
    records = []
    for number, (customer, meter, timestamp, value, *properties) in enumerate(events):
        record: dict[str, object] = {
            "id": f"{meter}-{customer}-{timestamp}-{number}",
            "customer": customer,
            "meter": meter,
            "timestamp": timestamp,
        }
        if value is not None:
            record["value"] = value
        if properties:
            record["properties"] = properties[0]
        records.append(record)
    report = ingest(engine, records, METERS, CUSTOMERS, now=now)
    assert report.rejected == [] and report.accepted == len(events)


def usage(engine: Engine, windows: dict[object, object] | None = None, **options: object) -> dict[str, Decimal]:
    """acme's March quantities by meter (or the given windows')."""
    found = aggregate_usage(engine, windows or {"acme": MARCH}, METERS, **options)  # type: ignore[arg-type]
    assert all(isinstance(aggregate.quantity, Decimal) for aggregate in found.values())
    return {meter: aggregate.quantity for (key, meter), aggregate in found.items() if key == "acme"}


def test_count(engine: Engine) -> None:
    store(
        engine,
        ("acme", "api_calls", "2024-02-29T23:59:59.999999Z", None),  # February: not counted
        ("acme", "api_calls", "2024-03-01T00:00:00Z", None),  # the first instant of March: counted
        ("acme", "api_calls", "2024-03-15T12:00:00+05:00", None),
        ("acme", "api_calls", "2024-03-31T23:59:59.999999Z", None),  # the last instant of March: counted
        ("acme", "api_calls", "2024-04-01T00:00:00Z", None),  # April: not counted
        ("globex", "api_calls", "2024-03-15T12:00:00Z", None),  # another customer
    )
    assert usage(engine)["api_calls"] == 3


def test_ten_events_of_a_tenth_sum_to_exactly_one(engine: Engine) -> None:
    store(engine, *(("acme", "bytes", f"2024-03-{day:02d}T08:00:00Z", "0.1") for day in range(1, 11)))
    total = usage(engine)["bytes"]
    assert total == Decimal(1) and str(total) == "1"


def test_sum_max_and_latest(engine: Engine) -> None:
    store(
        engine,
        ("acme", "bytes", "2024-03-02T00:00:00Z", "1.25"),
        ("acme", "bytes", "2024-03-03T00:00:00Z", "2.000001"),
        ("acme", "bytes", "2024-04-03T00:00:00Z", "100"),  # April
        ("acme", "peak", "2024-03-02T00:00:00Z", "7.5"),
        ("acme", "peak", "2024-03-09T00:00:00Z", "12.25"),
        ("acme", "peak", "2024-03-10T00:00:00Z", "3"),
        ("acme", "peak", "2024-04-01T00:00:00Z", "99"),  # April
        ("acme", "seats", "2024-03-20T00:00:00Z", "4"),  # stored first, but not the newest
        ("acme", "seats", "2024-03-25T00:00:00Z", "6"),
        ("acme", "seats", "2024-03-05T00:00:00Z", "9"),
        ("acme", "seats", "2024-04-02T00:00:00Z", "1"),  # April
    )
    quantities = usage(engine)
    assert quantities["bytes"] == Decimal("3.250001")  # 1.25 + 2.000001
    assert quantities["peak"] == Decimal("12.25")
    assert quantities["seats"] == Decimal(6)  # the value of the newest March event (25 March)


def test_latest_of_two_events_at_the_same_instant_is_the_one_stored_last(engine: Engine) -> None:
    store(engine, ("acme", "seats", "2024-03-20T00:00:00Z", "4"))
    store(engine, ("acme", "seats", "2024-03-20T01:00:00+01:00", "5"))
    assert usage(engine)["seats"] == 5


def test_unique_count_across_duplicates(engine: Engine) -> None:
    events = [
        ("acme", "active_users", "2024-03-01T10:00:00Z", None, {"user_id": "ana"}),
        ("acme", "active_users", "2024-03-02T10:00:00Z", None, {"user_id": "ana"}),  # ana again
        ("acme", "active_users", "2024-03-03T10:00:00Z", None, {"user_id": "bo", "device": "ios"}),
        ("acme", "active_users", "2024-02-28T10:00:00Z", None, {"user_id": "cy"}),  # February
        ("globex", "active_users", "2024-03-03T10:00:00Z", None, {"user_id": "dee"}),  # another customer
    ]
    store(engine, *events)
    again = ingest(
        engine,
        [  # the same events sent again: duplicates, not counted twice
            {"id": f"active_users-{c}-{t}-{n}", "customer": c, "meter": m, "timestamp": t, "properties": p}
            for n, (c, m, t, _, p) in enumerate(events)
        ],
        METERS,
        CUSTOMERS,
        now=NOW,
    )
    assert (again.accepted, again.duplicates) == (0, 5)
    found = aggregate_usage(engine, {"acme": MARCH}, METERS)[("acme", "active_users")]
    assert (found.quantity, found.events) == (Decimal(2), 3)  # ana and bo; three events


def test_weighted_sum_carries_the_level_across_period_boundaries(engine: Engine) -> None:
    store(
        engine,
        ("acme", "storage_gb", "2024-02-10T00:00:00Z", "10"),  # level 10 from 10 February
        ("acme", "storage_gb", "2024-03-11T00:00:00Z", "20"),  # level 30 from 11 March
        ("acme", "storage_gb", "2024-03-21T00:00:00Z", "-15"),  # level 15 from 21 March
    )
    # February 2024 (29 days): 0 GB for 9 days, 10 GB for 20 days → 200 GB-days / 29 = 6.8965517241… GB-month.
    feb = aggregate_usage(engine, {"acme": month(2024, 2)}, METERS)[("acme", "storage_gb")]
    assert (feb.quantity, feb.events) == (Decimal("6.896552"), 1)
    # March (31 days): 10 GB × 10 days (carried from February) + 30 GB × 10 days + 15 GB × 11 days
    # = 100 + 300 + 165 = 565 GB-days / 31 = 18.2258064516… GB-month.
    march = aggregate_usage(engine, {"acme": MARCH}, METERS)[("acme", "storage_gb")]
    assert (march.quantity, march.events) == (Decimal("18.225806"), 2)
    # April: no event; the level of 15 GB carries over for the whole month.
    april = aggregate_usage(engine, {"acme": month(2024, 4)}, METERS)[("acme", "storage_gb")]
    assert (april.quantity, april.events) == (Decimal(15), 0)


def test_weighted_sum_half_a_month(engine: Engine) -> None:
    # The catalog's own example: 10 GB held for half a month is 5 GB-month (April: 30 days, from the 16th).
    store(engine, ("acme", "storage_gb", "2024-04-16T00:00:00Z", "10"))
    assert usage(engine, {"acme": month(2024, 4)})["storage_gb"] == Decimal(5)


def test_windows_in_the_customers_timezone(engine: Engine) -> None:
    # Berlin's March 2024 is [29 Feb 23:00 UTC, 31 Mar 22:00 UTC): summer time starts on 31 March.
    store(
        engine,
        ("acme", "api_calls", "2024-02-29T23:30:00Z", None),  # 1 March 00:30 in Berlin
        ("acme", "api_calls", "2024-03-31T21:59:59Z", None),  # 31 March 23:59:59 in Berlin
        ("acme", "api_calls", "2024-03-31T22:30:00Z", None),  # 1 April 00:30 in Berlin
        ("acme", "storage_gb", "2024-03-16T11:30:00Z", "7.43"),
    )
    berlin = usage(engine, {"acme": month(2024, 3, "Europe/Berlin")})
    utc = usage(engine, {"acme": MARCH})
    assert (berlin["api_calls"], utc["api_calls"]) == (2, 2)
    # Berlin's March lasts 31 days − 1 hour = 743 hours; 7.43 GB from 16 March 11:30 UTC to 31 March 22:00 UTC
    # is 370.5 hours → 7.43 × 370.5 / 743 = 3.705 GB-month exactly.
    assert berlin["storage_gb"] == Decimal("3.705")


def test_several_windows_per_customer_and_every_pair_present(engine: Engine) -> None:
    store(
        engine,
        ("acme", "api_calls", "2024-03-05T00:00:00Z", None),
        ("acme", "api_calls", "2024-03-25T00:00:00Z", None),
        ("acme", "api_calls", "2024-04-05T00:00:00Z", None),
    )
    windows = {
        ("old plan", "acme"): ("acme", dt.datetime(2024, 3, 1, tzinfo=UTC), dt.datetime(2024, 3, 17, tzinfo=UTC)),
        ("new plan", "acme"): ("acme", dt.datetime(2024, 3, 17, tzinfo=UTC), dt.datetime(2024, 4, 1, tzinfo=UTC)),
        ("april", "initech"): ("initech", *month(2024, 4)),
    }
    found = aggregate_usage(engine, windows, list(METERS.values()))
    assert len(found) == 3 * len(METERS)
    assert found[(("old plan", "acme"), "api_calls")] == MeterAggregate(
        ("old plan", "acme"), "acme", "api_calls", Decimal(1), 1
    )
    assert found[(("new plan", "acme"), "api_calls")].quantity == 1
    assert found[(("april", "initech"), "api_calls")].quantity == 0
    assert found[(("april", "initech"), "payments")].values == ()


def test_per_event_values_in_time_order(engine: Engine) -> None:
    store(
        engine,
        ("acme", "payments", "2024-03-20T00:00:00Z", "120.00"),
        ("acme", "payments", "2024-03-02T00:00:00Z", "19.99"),
        ("acme", "payments", "2024-03-11T00:00:00Z", "0.5"),
        ("acme", "payments", "2024-04-11T00:00:00Z", "1000"),
    )
    found = aggregate_usage(engine, {"acme": MARCH}, METERS)[("acme", "payments")]
    assert found.values == (Decimal("19.99"), Decimal("0.5"), Decimal(120))
    assert (found.quantity, found.events) == (Decimal("140.49"), 3)
    assert aggregate_usage(engine, {"acme": MARCH}, METERS)[("acme", "bytes")].values is None


def test_late_events_are_told_apart_by_when_they_were_received(engine: Engine) -> None:
    store(
        engine,
        ("acme", "api_calls", "2024-03-05T00:00:00Z", None),
        ("acme", "bytes", "2024-03-05T00:00:00Z", "2"),
        ("acme", "storage_gb", "2024-03-01T00:00:00Z", "10"),
    )
    finalized = ingestion_cutoff(engine)  # March's invoice is finalized; then late events for March arrive
    store(
        engine,
        ("acme", "api_calls", "2024-03-30T00:00:00Z", None),
        ("acme", "bytes", "2024-03-30T00:00:00Z", "0.5"),
        ("acme", "storage_gb", "2024-03-16T00:00:00Z", "31"),
    )
    everything = usage(engine)
    timely = usage(engine, received_until=finalized)
    late = usage(engine, received_after=finalized)
    assert (timely["api_calls"], late["api_calls"], everything["api_calls"]) == (1, 1, 2)
    assert (timely["bytes"], late["bytes"], everything["bytes"]) == (2, Decimal("0.5"), Decimal("2.5"))
    # weighted_sum is linear in the events: 10 GB all month + 31 GB for 16 of 31 days = 10 + 16 = 26.
    assert (timely["storage_gb"], late["storage_gb"], everything["storage_gb"]) == (10, 16, 26)


def test_sums_beyond_64_bits_stay_exact(engine: Engine) -> None:
    # 10 × 999,999,999,999.999999 = 9,999,999,999,999.99999 — scaled × 10^6 that is ~10^19 > 2^63: SQLite's
    # integer sum overflows and numpy takes over (on Python integers); PostgreSQL sums bigints as numeric.
    big = "999999999999.999999"
    store(engine, *(("acme", "bytes", f"2024-03-{day:02d}T00:00:00Z", big) for day in range(1, 11)))
    store(
        engine, ("acme", "storage_gb", "2024-03-16T12:00:00Z", big), ("acme", "storage_gb", "2024-03-01T00:00:00Z", big)
    )
    quantities = usage(engine)
    assert quantities["bytes"] == Decimal(big) * 10
    # all month + 15.5 of 31 days = 1.5 × the value, exactly: 1,499,999,999,999.9999985 → half-even, 6 places.
    assert quantities["storage_gb"] == Decimal("1499999999999.999998")


def test_a_carried_level_beyond_64_bits_stays_exact(engine: Engine) -> None:
    big = "999999999999.999999"
    store(engine, *(("acme", "storage_gb", f"2024-02-{day:02d}T00:00:00Z", big) for day in range(1, 11)))
    assert usage(engine)["storage_gb"] == Decimal(big) * 10  # the level carried all through March


def test_latest_and_weighted_sum_leave_the_events_in_the_database(engine: Engine, monkeypatch) -> None:
    # No meter here hands its events back one by one, so no event row is loaded: every kind is computed by the
    # database, and what comes back is one row per window and meter (memory grows with windows, not events).
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("events loaded")

    monkeypatch.setattr(aggregate_module._EventRows, "load", refuse)
    store(
        engine,
        ("acme", "seats", "2024-03-20T00:00:00Z", "4"),
        ("acme", "seats", "2024-03-25T00:00:00Z", "0"),  # the newest: 0 seats
        ("globex", "seats", "2024-03-20T00:00:00Z", "4"),
        ("globex", "seats", "2024-03-20T01:00:00+01:00", "5"),  # the same instant, stored last
        ("acme", "storage_gb", "2024-02-10T00:00:00Z", "10"),  # level 10 carried into March
        ("acme", "storage_gb", "2024-03-11T00:00:00Z", "20"),  # level 30 from 11 March
    )
    finalized = ingestion_cutoff(engine)
    store(
        engine, ("globex", "seats", "2024-03-30T00:00:00Z", "8"), ("acme", "storage_gb", "2024-03-21T00:00:00Z", "-15")
    )
    meters = [METERS["seats"], METERS["storage_gb"]]
    both = {"acme": MARCH, "globex": MARCH}
    found = aggregate_usage(engine, both, meters)
    timely = aggregate_usage(engine, both, meters, received_until=finalized)
    late = aggregate_usage(engine, both, meters, received_after=finalized)
    assert found[("acme", "seats")] == MeterAggregate("acme", "acme", "seats", Decimal(0), 2)
    assert (found[("globex", "seats")].quantity, found[("globex", "seats")].events) == (8, 3)
    assert (timely[("globex", "seats")].quantity, late[("globex", "seats")].quantity) == (5, 8)
    # 10 GB × 10 days + 30 GB × 10 days + 15 GB × 11 days = 565 GB-days / 31 = 18.2258064516… → 18.225806;
    # received by the cutoff: 10 × 10 + 30 × 21 = 730 / 31 = 23.548387…; after it: −15 × 11 / 31 = −5.322580645…
    assert (found[("acme", "storage_gb")].quantity, found[("acme", "storage_gb")].events) == (Decimal("18.225806"), 2)
    assert timely[("acme", "storage_gb")].quantity == Decimal("23.548387")
    assert late[("acme", "storage_gb")].quantity == Decimal("-5.322581")
    # globex never stored any: 0, no events
    assert (found[("globex", "storage_gb")].quantity, found[("globex", "storage_gb")].events) == (0, 0)


def test_sums_too_large_for_the_database_are_streamed_in_chunks(engine: Engine, monkeypatch) -> None:
    # SQLite: the 64-bit sums overflow, so the rows are summed on Python integers two at a time (PostgreSQL's
    # numeric sums never overflow): the results are those of test_sums_beyond_64_bits_stay_exact.
    monkeypatch.setattr(aggregate_module, "_STREAM_ROWS", 2)
    big = "999999999999.999999"
    store(engine, *(("acme", "bytes", f"2024-03-{day:02d}T00:00:00Z", big) for day in range(1, 11)))
    store(engine, *(("acme", "storage_gb", f"2024-02-{day:02d}T00:00:00Z", big) for day in range(1, 4)))
    store(
        engine, ("acme", "storage_gb", "2024-03-16T12:00:00Z", big), ("acme", "storage_gb", "2024-03-01T00:00:00Z", big)
    )
    quantities = usage(engine)
    assert quantities["bytes"] == Decimal(big) * 10
    # 3 carried all month + 1 all month + 1 for 15.5 of 31 days = 4.5 × the value = 4,499,999,999,999.9999955
    # → half-even at 6 places: …999996
    assert quantities["storage_gb"] == Decimal("4499999999999.999996")


def test_no_windows_or_no_meters(engine: Engine) -> None:
    assert aggregate_usage(engine, {}, METERS) == {}
    assert aggregate_usage(engine, {"acme": MARCH}, []) == {}


def test_bad_windows(engine: Engine) -> None:
    with pytest.raises(ValueError, match="start < end"):
        aggregate_usage(engine, {"acme": (MARCH[1], MARCH[0])}, METERS)
    with pytest.raises(ValueError, match="naive"):
        aggregate_usage(engine, {"acme": (dt.datetime(2024, 3, 1), dt.datetime(2024, 4, 1))}, METERS)


# -- the exact kernels, without a database ----------------------------------------------------------------


@pytest.mark.parametrize("magnitude", [10**3, 10**15, 10**18 - 1])
def test_exact_group_sums_match_python_integers(magnitude: int) -> None:
    rng = random.Random(magnitude)
    values = [rng.randrange(-magnitude, magnitude) for _ in range(5000)]
    starts = sorted({0, *rng.sample(range(1, 5000), 40)})
    expected = [sum(values[a:b]) for a, b in zip(starts, [*starts[1:], 5000], strict=True)]
    assert exact_group_sums(np.array(values, dtype=np.int64), np.array(starts)) == expected


@pytest.mark.parametrize("magnitude", [10**3, 10**9, 10**18 - 1])
def test_exact_group_dots_match_python_integers(magnitude: int) -> None:
    rng = random.Random(magnitude)
    values = [rng.randrange(-magnitude, magnitude) for _ in range(3000)]
    weights = [rng.randrange(0, 2**45) for _ in range(3000)]  # microseconds: up to a year
    starts = sorted({0, *rng.sample(range(1, 3000), 30)})
    bounds = list(zip(starts, [*starts[1:], 3000], strict=True))
    expected = [sum(v * w for v, w in zip(values[a:b], weights[a:b], strict=True)) for a, b in bounds]
    got = exact_group_dots(np.array(values, dtype=np.int64), np.array(weights, dtype=np.int64), np.array(starts))
    assert got == expected


def test_postgresql_counts_on_a_second_connection_of_the_same_snapshot(engine: Engine, monkeypatch) -> None:
    if not is_postgresql(engine):
        pytest.skip("the second connection is PostgreSQL's")
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    import meters.aggregate

    rng = random.Random(7)
    events = []
    for customer in sorted(CUSTOMERS):
        for day in range(1, 31):
            stamp = f"2024-03-{day:02d}T{rng.randrange(24):02d}:00:00Z"
            events += [
                (customer, "api_calls", stamp, None),
                (customer, "bytes", stamp, str(rng.randrange(1, 10**6))),
                (customer, "peak", stamp, str(rng.randrange(100))),
                (customer, "active_users", stamp, None, {"user_id": f"u{rng.randrange(12)}"}),
                (customer, "payments", stamp, f"{rng.randrange(1, 10**4)}.{rng.randrange(100):02d}"),
            ]
    store(engine, *events)
    cutoff = ingestion_cutoff(engine)
    store(engine, ("acme", "api_calls", "2024-03-31T12:00:00Z", None))  # received after the cutoff
    windows = {c: MARCH for c in CUSTOMERS} | {("april", c): (c, *month(2024, 4)) for c in CUSTOMERS}
    checkouts: list[object] = []
    count_checkouts = lambda *args: checkouts.append(args)  # noqa: E731
    event.listen(Pool, "checkout", count_checkouts)  # every pool's, the second connection's included

    def aggregate(min_windows: int, **filters: object) -> tuple[dict, int]:
        monkeypatch.setattr(meters.aggregate, "PARALLEL_MIN_WINDOWS", min_windows)
        checkouts.clear()
        found = aggregate_usage(engine, windows, METERS, **filters)  # type: ignore[arg-type]
        return found, len(checkouts)

    try:
        for filters in ({}, {"received_until": cutoff}):
            alone, connections_alone = aggregate(10**9, **filters)
            together, connections_together = aggregate(0, **filters)
            assert (connections_alone, connections_together) == (1, 2)
            assert together == alone
    finally:
        event.remove(Pool, "checkout", count_checkouts)
    # an engine with a pool of one connection: the second connection is never taken from the pool
    from billing.db import make_engine

    tiny = make_engine(engine.url.render_as_string(hide_password=False), pool_size=1, max_overflow=0, pool_timeout=3)
    try:
        assert aggregate_usage(tiny, windows, METERS) == aggregate(10**9)[0]  # type: ignore[arg-type]
    finally:
        tiny.dispose()
    # 30 calls a customer in March (and acme's late one, when it counts), none in April
    everything, _ = aggregate(0)
    timely, _ = aggregate(0, received_until=cutoff)
    assert [everything[(c, "api_calls")].quantity for c in ("acme", "globex", "initech")] == [31, 30, 30]
    assert timely[("acme", "api_calls")].quantity == 30
    assert everything[(("april", "acme"), "api_calls")].quantity == 0
