"""What the orchestrator asks of the stored events besides their aggregates: which windows received events after
their usage was counted (late usage), and which event ids are stored already.

Only ``meters`` reads ``usage_events``: callers hand in customers, instants and ids, and get answers back, never
rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection, Engine, select
from sqlalchemy.orm import Session

from dbkit.dialect import read_only
from meters.events import to_epoch_us
from meters.tables import UsageEventRow

__all__ = ["CountedWindow", "stored_event_ids", "windows_with_late_events"]

Key = TypeVar("Key", bound=Hashable)

_IDS_PER_QUERY = 1_000


@dataclass(frozen=True, slots=True)
class CountedWindow:
    """A customer's half-open UTC window ``[start, end)`` whose usage was counted with the events received up to
    ``counted_until`` (inclusive): an event of the window received after it is late."""

    customer: str
    start: dt.datetime
    end: dt.datetime
    counted_until: dt.datetime


def windows_with_late_events(bind: Session | Connection, windows: Mapping[Key, CountedWindow]) -> set[Key]:
    """The keys of the windows that hold at least one event received after their ``counted_until``.

    One query for all the windows: the events received after the earliest ``counted_until`` that occurred
    before the latest end (of the one customer, when every window is that customer's), matched here.
    """
    if not windows:
        return set()
    by_customer: dict[str, list[tuple[Key, int, int, int]]] = {}
    for key, window in windows.items():
        by_customer.setdefault(window.customer, []).append(
            (key, to_epoch_us(window.start), to_epoch_us(window.end), to_epoch_us(window.counted_until))
        )
    since = min(counted for spans in by_customer.values() for _, _, _, counted in spans)
    until = max(end for spans in by_customer.values() for _, _, end, _ in spans)
    statement = select(UsageEventRow.customer, UsageEventRow.occurred_at, UsageEventRow.received_at).where(
        UsageEventRow.received_at > since, UsageEventRow.occurred_at < until
    )
    if len(by_customer) == 1:
        statement = statement.where(UsageEventRow.customer == next(iter(by_customer)))
    late: set[Key] = set()
    for customer, occurred_at, received_at in bind.execute(statement):
        for key, start, end, counted in by_customer.get(customer, ()):
            if start <= occurred_at < end and received_at > counted:
                late.add(key)
    return late


def stored_event_ids(engine: Engine, event_ids: Iterable[str]) -> set[str]:
    """Which of ``event_ids`` are stored (in one read-only transaction)."""
    wanted = sorted(set(event_ids))
    found: set[str] = set()
    if not wanted:
        return found
    with read_only(engine).connect() as connection, connection.begin():
        for start in range(0, len(wanted), _IDS_PER_QUERY):
            chunk = wanted[start : start + _IDS_PER_QUERY]
            found.update(
                connection.scalars(select(UsageEventRow.event_id).where(UsageEventRow.event_id.in_(chunk)))
            )
    return found
