"""What the orchestrator asks of the stored events besides their aggregates: which windows received events after
their usage was counted (late usage), which event ids are stored already, which (meter, customer) pairs have
events at all, and how many events windows hold by meter (unbilled usage).

Only ``meters`` reads ``usage_events``: callers hand in customers, instants and ids, and get answers back, never
rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, bindparam, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from dbkit.dialect import is_postgresql, read_only
from meters.aggregate import MeterAggregate, aggregate_usage
from meters.events import MeterSpec, from_epoch_us, from_scaled, to_epoch_us
from meters.tables import UsageEventRow

__all__ = [
    "CountedWindow",
    "count_events",
    "customers_by_meter",
    "last_events",
    "meter_totals",
    "received_since",
    "received_spans",
    "stored_event_ids",
    "windows_with_late_events",
]

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


# A loose scan of the aggregation index (meter, customer, …): each step seeks the next distinct value, so the
# queries cost one index seek per distinct meter, or per customer of a meter, never a read of every event.
_METERS = text(
    "WITH RECURSIVE m(meter) AS ("
    " SELECT min(meter) FROM usage_events"
    " UNION ALL"
    " SELECT (SELECT min(e.meter) FROM usage_events e WHERE e.meter > m.meter) FROM m WHERE m.meter IS NOT NULL"
    ") SELECT meter FROM m WHERE meter IS NOT NULL"
)
_CUSTOMERS_OF_METER = text(
    "WITH RECURSIVE c(customer) AS ("
    " SELECT min(customer) FROM usage_events WHERE meter = :meter"
    " UNION ALL"
    " SELECT (SELECT min(e.customer) FROM usage_events e WHERE e.meter = :meter AND e.customer > c.customer)"
    " FROM c WHERE c.customer IS NOT NULL"
    ") SELECT customer FROM c WHERE customer IS NOT NULL"
)


def customers_by_meter(engine: Engine, customer: str | None = None) -> dict[str, set[str]]:
    """Every meter code with stored events (whether a catalog still has it or not) and the customers with events
    of it (``customer`` only, if given), in one read-only transaction that skips along the aggregation index."""
    found: dict[str, set[str]] = {}
    with read_only(engine).connect() as connection, connection.begin():
        for meter in connection.scalars(_METERS).all():
            if customer is None:
                customers = set(connection.scalars(_CUSTOMERS_OF_METER, {"meter": meter}))
            else:
                hit = connection.scalar(
                    select(UsageEventRow.id)
                    .where(UsageEventRow.meter == meter, UsageEventRow.customer == customer)
                    .limit(1)
                )
                customers = set() if hit is None else {customer}
            if customers:
                found[meter] = customers
    return found


def last_events(engine: Engine, before: Mapping[str, dt.datetime]) -> dict[str, dt.datetime]:
    """Each customer's last event instant before its instant in ``before`` (customers without one are left out),
    in one read-only transaction: one grouped query per distinct instant, by chunks of customers."""
    by_instant: dict[dt.datetime, list[str]] = {}
    for customer, instant in before.items():
        by_instant.setdefault(instant, []).append(customer)
    found: dict[str, dt.datetime] = {}
    with read_only(engine).connect() as connection, connection.begin():
        for instant, customers in by_instant.items():
            for i in range(0, len(customers), _IDS_PER_QUERY):
                chunk = sorted(customers[i : i + _IDS_PER_QUERY])
                rows = connection.execute(
                    select(UsageEventRow.customer, func.max(UsageEventRow.occurred_at))
                    .where(UsageEventRow.customer.in_(chunk), UsageEventRow.occurred_at < to_epoch_us(instant))
                    .group_by(UsageEventRow.customer)
                )
                found.update({customer: from_epoch_us(last) for customer, last in rows if last is not None})
    return found


def count_events(
    engine: Engine, windows: Mapping[Key, tuple[str, dt.datetime, dt.datetime]], meters: Iterable[str]
) -> dict[tuple[Key, str], int]:
    """How many events of each of ``meters`` each window ``(customer, start, end)`` (half-open, UTC) holds, in one
    batch (``aggregate_usage``'s count); the pairs without events are left out."""
    codes = sorted(set(meters))
    if not windows or not codes:
        return {}
    found = aggregate_usage(engine, windows, [MeterSpec(code, "count") for code in codes])
    return {pair: aggregate.events for pair, aggregate in found.items() if aggregate.events}


def received_since(bind: Session | Connection, after: int) -> bool:
    """Whether any event was received after ``after`` (``received_at``, microseconds since the epoch): one
    index probe, so that a reader with nothing new to read takes no lock to find the ingestion cutoff."""
    e = UsageEventRow
    return bind.execute(select(e.received_at).where(e.received_at > after).limit(1)).first() is not None


def received_spans(
    bind: Session | Connection, after: int, through: int
) -> dict[str, tuple[dt.datetime, dt.datetime]]:
    """For each customer with events received in ``(after, through]`` (``received_at``, microseconds since the
    epoch), the earliest and latest instant those events occurred at (UTC): what arrived since a reader last
    looked. Read through the index on ``received_at``."""
    e = UsageEventRow
    statement = (
        select(e.customer, func.min(e.occurred_at), func.max(e.occurred_at))
        .where(e.received_at > after, e.received_at <= through)
        .group_by(e.customer)
    )
    return {
        customer: (from_epoch_us(earliest), from_epoch_us(latest))
        for customer, earliest, latest in bind.execute(statement)
    }


_ONE_QUERY_KINDS = frozenset({"count", "sum", "max"})
"""The kinds ``meter_totals`` answers with one grouped query (and the kinds whose aggregates add up)."""


def meter_totals(
    engine: Engine,
    customer: str,
    meters: Iterable[MeterSpec],
    start: dt.datetime,
    end: dt.datetime,
    *,
    received_after: int | None = None,
    connection: Connection | None = None,
) -> dict[str, MeterAggregate]:
    """One customer's quantity of each meter in the UTC window ``[start, end)``, exactly as ``aggregate_usage``
    computes it, for a request path: ``count``, ``sum`` and ``max`` in one grouped query on the aggregation
    index (no temporary table); any other kind, or a sum too large for the database's 64-bit ``sum``, through
    ``aggregate_usage``. Every meter gets an entry, zero when it had no events.

    ``received_after`` (``received_at`` microseconds): only the events received after it, read through the index
    of the order events were received in (a few: those a usage counter has not counted yet); ``count``, ``sum``
    and ``max`` meters only. ``connection``: ask on it (in its transaction) rather than on one of ``engine``'s.
    """
    specs = {spec.code: spec for spec in meters}
    simple = sorted(code for code, spec in specs.items() if spec.aggregation in _ONE_QUERY_KINDS)
    if received_after is not None and len(simple) < len(specs):
        raise ValueError("received_after: only count, sum and max meters can be counted from an instant on")
    found: dict[str, MeterAggregate] = {}
    if simple:
        window = (to_epoch_us(start), to_epoch_us(end))
        if connection is None:
            with read_only(engine).connect() as own:
                rows = _grouped_totals(own, customer, simple, *window, received_after)
        else:
            rows = _grouped_totals(connection, customer, simple, *window, received_after)
        if rows is not None:
            counted = {meter: (events, total, largest) for meter, events, total, largest in rows}
            for code in simple:
                events, total, largest = counted.get(code, (0, None, None))
                kind = specs[code].aggregation
                scaled = {"sum": total, "max": largest}.get(kind)
                quantity = Decimal(events) if kind == "count" else from_scaled(int(scaled or 0))
                found[code] = MeterAggregate(customer, customer, code, quantity, int(events))
    rest = [spec for code, spec in specs.items() if code not in found]
    if rest:
        after = None if received_after is None else from_epoch_us(received_after)
        aggregated = aggregate_usage(engine, {customer: (start, end)}, rest, received_after=after)
        found.update({meter: aggregate for (_, meter), aggregate in aggregated.items()})
    return found


def _grouped_totals(
    connection: Connection, customer: str, codes: list[str], start: int, end: int, received_after: int | None
) -> list[tuple[str, int, int | None, int | None]] | None:
    """``(meter, count, sum, max)`` of the window's events (received after ``received_after``, when given), or
    None when the database's ``sum`` overflows (SQLite)."""
    e = UsageEventRow
    statement = select(e.meter, func.count(), func.sum(e.value), func.max(e.value)).where(
        e.meter.in_(codes), e.customer == customer, e.occurred_at >= start, e.occurred_at < end
    )
    if received_after is None:
        query: Any = statement.group_by(e.meter)
        values: dict[str, Any] = {}
    else:
        # Both databases would take the aggregation index (meter and customer equal) and walk the whole window:
        # the events received since a recent instant are few, and the index of the order events were received in
        # finds them (SQLite: INDEXED BY; PostgreSQL: a materialized CTE, whose only usable index is that one).
        if is_postgresql(connection):
            recent = (
                "WITH recent AS MATERIALIZED (SELECT meter, customer, occurred_at, value FROM usage_events "
                "WHERE received_at > :after) SELECT meter, count(*), sum(value), max(value) FROM recent"
            )
        else:
            recent = (
                "SELECT meter, count(*), sum(value), max(value) FROM usage_events "
                "INDEXED BY ix_usage_events_received_at"
            )
        where = " AND ".join(
            (*(("received_at > :after",) if not is_postgresql(connection) else ()),
             "customer = :customer", "meter IN :codes", "occurred_at >= :start", "occurred_at < :end")
        )
        query = text(f"{recent} WHERE {where} GROUP BY meter").bindparams(bindparam("codes", expanding=True))
        values = {"after": received_after, "customer": customer, "codes": codes, "start": start, "end": end}
    if is_postgresql(connection):  # its sum() of bigints is a numeric: it never overflows
        return [tuple(row) for row in connection.execute(query, values)]
    try:
        with connection.begin_nested():  # a savepoint: the transaction it is asked in goes on after an overflow
            return [tuple(row) for row in connection.execute(query, values)]
    except DBAPIError:  # SQLite's integer overflow in sum(): the aggregation sums on Python integers
        return None
