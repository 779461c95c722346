"""The questions asked of the stored events besides their aggregates (SQLite, and PostgreSQL when configured):
which windows received events after their usage was counted, and which event ids are stored."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, insert

from meters import CountedWindow, stored_event_ids, to_epoch_us, windows_with_late_events
from meters.tables import UsageEventRow

MARCH = (dt.datetime(2024, 3, 1, tzinfo=dt.UTC), dt.datetime(2024, 4, 1, tzinfo=dt.UTC))
APRIL = (dt.datetime(2024, 4, 1, tzinfo=dt.UTC), dt.datetime(2024, 5, 1, tzinfo=dt.UTC))
COUNTED = dt.datetime(2024, 4, 2, 6, tzinfo=dt.UTC)  # March's usage was counted with what arrived until then
US = dt.timedelta(microseconds=1)


def store(engine: Engine, *events: tuple[str, str, dt.datetime, dt.datetime]) -> None:
    """Events (id, customer, occurred, received) as ingestion stores them."""
    with engine.begin() as connection:
        connection.execute(
            insert(UsageEventRow),
            [
                {
                    "event_id": event_id,
                    "customer": customer,
                    "meter": "api_calls",
                    "occurred_at": to_epoch_us(occurred),
                    "received_at": to_epoch_us(received),
                    "content_hash": index,
                }
                for index, (event_id, customer, occurred, received) in enumerate(events)
            ],
        )


def late(engine: Engine, windows: dict[str, CountedWindow]) -> set[str]:
    with engine.connect() as connection:
        return windows_with_late_events(connection, windows)


def test_a_window_is_late_only_for_its_own_events_received_after_it_was_counted(engine: Engine) -> None:
    march_end = MARCH[1] - US
    store(
        engine,
        ("on-time", "acme", march_end, COUNTED),  # received at the very instant counted: not late
        ("late", "globex", MARCH[0], COUNTED + US),  # one microsecond after: late
        ("april", "initech", APRIL[0], COUNTED + dt.timedelta(days=1)),  # late, but not in March
        ("other", "umbrella", march_end, COUNTED + US),  # late in March, but umbrella's window ends earlier
    )
    windows = {
        "acme": CountedWindow("acme", *MARCH, counted_until=COUNTED),
        "globex": CountedWindow("globex", *MARCH, counted_until=COUNTED),
        "initech": CountedWindow("initech", *MARCH, counted_until=COUNTED),
        "umbrella": CountedWindow("umbrella", MARCH[0], march_end, counted_until=COUNTED),
    }
    assert late(engine, windows) == {"globex"}
    # One customer's windows: counted at different instants, each judged by its own.
    globex = {
        "early": CountedWindow("globex", *MARCH, counted_until=COUNTED),
        "later": CountedWindow("globex", *MARCH, counted_until=COUNTED + US),
    }
    assert late(engine, globex) == {"early"}
    assert late(engine, {}) == set()


def test_which_event_ids_are_stored(engine: Engine) -> None:
    store(engine, *((f"e{i}", "acme", MARCH[0], COUNTED) for i in range(2_500)))
    asked = [f"e{i}" for i in range(0, 3_000, 2)] + ["e0", "nope"]
    assert stored_event_ids(engine, asked) == {f"e{i}" for i in range(0, 2_500, 2)}
    assert stored_event_ids(engine, []) == set()
