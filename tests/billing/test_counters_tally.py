"""The usage counters of a large chunk, tallied with numpy where it is parsed, are exactly those of the event by
event tally: by hand on a few events across two timezones' month ends, and against the plain tally on generated
chunks (values missing, negative, near the 64-bit bounds; customers without a timezone; months of several zones)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.db import counters
from billing.db.counters import _rows, _tallied_rows, _tally, _Windows, tally_parsed
from meters import to_epoch_us

ZONES = {"acme": "UTC", "kiwi": "Pacific/Auckland", "nyc": "America/New_York"}


def at(text: str) -> int:
    return to_epoch_us(dt.datetime.fromisoformat(text))


def event(customer: str, meter: str, when: str, value: int | None = None) -> tuple[object, ...]:
    return (f"e-{customer}-{when}-{value}", customer, meter, at(when), value, None, None, 0)


def plain(events, zones):
    return _rows(_tally(((e[1], e[2], e[3], e[4]) for e in events), _Windows(zones)))


def test_a_chunk_tallied_with_numpy_by_hand(monkeypatch):
    events = [
        event("acme", "api_calls", "2026-03-31T23:59:59+00:00"),
        event("acme", "api_calls", "2026-04-01T00:00:00+00:00"),
        event("acme", "storage", "2026-03-10T00:00:00+00:00", 2_500_000),
        event("acme", "storage", "2026-03-11T00:00:00+00:00", -500_000),
        # 11:30 UTC on 31 March is 00:30 on 1 April in Auckland (NZDT, +13:00): April there
        event("kiwi", "api_calls", "2026-03-31T11:30:00+00:00"),
        event("kiwi", "api_calls", "2026-03-31T10:30:00+00:00"),
        event("gone", "api_calls", "2026-03-15T00:00:00+00:00"),  # no timezone: a customer since deleted
    ]
    march = (at("2026-03-01T00:00:00+00:00"), at("2026-04-01T00:00:00+00:00"))
    april = (at("2026-04-01T00:00:00+00:00"), at("2026-05-01T00:00:00+00:00"))
    kiwi_march = (at("2026-02-28T11:00:00+00:00"), at("2026-03-31T11:00:00+00:00"))
    kiwi_april = (at("2026-03-31T11:00:00+00:00"), at("2026-04-30T12:00:00+00:00"))  # (NZST from 5 April)
    expected = [
        ("acme", "api_calls", *march, 1, 0, None),
        ("acme", "api_calls", *april, 1, 0, None),
        ("acme", "storage", *march, 2, 2_000_000, 2_500_000),
        ("kiwi", "api_calls", *kiwi_march, 1, 0, None),
        ("kiwi", "api_calls", *kiwi_april, 1, 0, None),
    ]
    assert _tallied_rows(events, ZONES) == expected
    assert plain(events, ZONES) == expected
    monkeypatch.setattr(counters, "_ARRAY_TALLY", 1)
    parsed = tally_parsed(events, ZONES)
    assert parsed is not None
    assert parsed.rows == expected
    assert parsed.timezones == {"acme": "UTC", "kiwi": "Pacific/Auckland"}


def test_a_sum_that_could_leave_64_bits_is_left_to_the_plain_tally(monkeypatch):
    big = 2**62
    events = [event("acme", "storage", f"2026-03-0{day}T00:00:00+00:00", big) for day in (1, 2, 3)]
    assert _tallied_rows(events, ZONES) is None
    monkeypatch.setattr(counters, "_ARRAY_TALLY", 1)
    parsed = tally_parsed(events, ZONES)
    assert parsed is not None
    march = (at("2026-03-01T00:00:00+00:00"), at("2026-04-01T00:00:00+00:00"))
    # 3 × 2^62 is past the counters' limit (4 × 10^18): no total, "aggregate the events"
    assert parsed.rows == [("acme", "storage", *march, 3, None, big)]
    assert _tallied_rows([event("acme", "storage", "2026-03-01T00:00:00+00:00", 2**64)], ZONES) is None


START = at("2026-02-20T00:00:00+00:00")
SPAN = at("2026-05-10T00:00:00+00:00") - START

values = st.one_of(
    st.none(),
    st.integers(-10**12, 10**12),
    st.sampled_from([0, 1, 10**6, 4 * 10**18 // 64, -(4 * 10**18 // 64)]),
)
chunk = st.lists(
    st.tuples(
        st.sampled_from([*ZONES, "gone"]),
        st.sampled_from(["api_calls", "storage", "peak"]),
        st.integers(0, SPAN),
        values,
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(chunk)
def test_the_numpy_tally_equals_the_plain_one(drawn):
    events = [(f"e{i}", who, meter, START + offset, value, None, None, 0) for i, (who, meter, offset, value) in
              enumerate(drawn)]
    found = _tallied_rows(events, ZONES)
    assert found is not None
    assert found == plain(events, ZONES)


@pytest.mark.parametrize("zones", [{}, {"other": "UTC"}])
def test_a_chunk_of_customers_without_a_timezone_counts_nothing(zones):
    events = [event("acme", "api_calls", "2026-03-02T00:00:00+00:00")]
    assert _tallied_rows(events, zones) == []


def test_the_lowest_64_bit_value_is_left_to_the_plain_tally():
    lowest = -(2**63)
    events = [event("acme", "storage", f"2026-03-0{day}T00:00:00+00:00", lowest) for day in (1, 2)]
    assert _tallied_rows(events, ZONES) is None  # (its sum leaves 64 bits; np.abs(-2^63) is -2^63)
    assert plain(events, ZONES)[0][5] is None  # no total: "aggregate the events"


def test_the_copy_text_of_many_counters_is_written_for_postgresql_only(monkeypatch):
    from billing.db import counters, make_engine

    monkeypatch.setattr(counters, "_MANY", 149)  # (5,000 by default: fewer go in one statement, no text is written)

    events = [event(f"c{i:03d}", "api_calls", "2026-03-05T00:00:00+00:00") for i in range(150)]
    zones = {f"c{i:03d}": "UTC" for i in range(150)}
    for url, written in (("sqlite://", False), ("postgresql+psycopg://nobody@127.0.0.1:1/none", True)):
        engine = make_engine(url)  # (no connection is made)
        parsed = engine.get_execution_options()["meters_on_parsed"](events, zones)
        assert len(parsed.rows) == 150
        assert (parsed.copy_text is not None) is written
        engine.dispose()
