"""Exact aggregation of usage events into per-(window, meter) quantities.

A billing period is a calendar month in each customer's own timezone, so every customer has its own UTC window
``[start, end)``. :func:`aggregate_usage` takes all the windows of a run at once and asks the database a few
questions for all of them together, never one per customer: the windows go into a temporary table and the
events are read through the aggregation index (meter, customer, occurred_at, value, received_at, unique_value),
one index range per window and meter.

Who computes what (measured; see ``benchmarks/aggregate.py`` and ``benchmarks/aggregate_scale.py``):

- the database, exactly, on the fixed-point integers, every kind: ``count``, ``sum``, ``max`` and
  ``count(DISTINCT unique_value)`` for ``unique_count`` (one grouped query per kind, each computing only what its
  kind needs); ``latest``: its count, then the newest event's value by one index seek per window (``ORDER BY
  occurred_at DESC, id DESC LIMIT 1`` along the aggregation index); ``weighted_sum``: the level carried into each
  window (the sum of every earlier event) and Σ value × (window end − instant), on ``numeric`` (PostgreSQL) or
  as two 64-bit sums with the duration split into its high and low bits (SQLite). Nothing but one row per window
  and meter leaves the database, so memory grows with windows, not events;
- Python integers, as the rows stream by in chunks of ``_STREAM_ROWS`` (memory still bounded by the windows):
  what would overflow SQLite's 64-bit integers (its ``sum`` raises, a product turns into a float: both are
  caught, and the meter is summed again exactly);
- numpy, on the events themselves (loaded as int64 arrays and sorted by window, meter, time, id): only the
  meters whose every event's value is handed back (``keep_event_values``: the ``percentage`` charge model),
  which are as large as their events anyway. Every numpy sum is guarded: it runs in int64 only when a bound
  proves it cannot overflow, otherwise on Python integers. Nothing is ever summed in floating point.

The kinds:

- ``count``: the number of events; ``sum``: the sum of the values; ``max``: the largest value (0 if none);
- ``unique_count``: the number of distinct values of the meter's unique property;
- ``latest``: the value of the newest event in the window (ties: the one stored last; a chunk is stored
  in the order of its ids); 0 if none;
- ``weighted_sum``: events are increments (negative: decrements) of a level that carries over from earlier
  periods: the level at the window's start is the sum of every earlier event; the quantity is the time-weighted
  average level over the window, ∫ level dt / (end − start) — e.g. GB-month. It is the only quantity that is a
  ratio; it is rounded half-even to the value scale (6 decimal places).

``received_until`` / ``received_after`` count only the events received up to (inclusive) / after (exclusive) an
instant: late events are those received after their period's invoice was finalized. ``count``, ``sum`` and
``weighted_sum`` are linear in the events, so the late part of a quantity is the quantity of the late events.
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from itertools import groupby
from operator import itemgetter
from typing import Any, NamedTuple, cast, overload

import numpy as np
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from dbkit.dialect import is_postgresql, read_only
from meters.events import VALUE_DIGITS, MeterSpec, from_scaled, meters_by_code, to_epoch_us
from meters.fees import EventFees, FeeTerms, walk

__all__ = ["MeterAggregate", "Window", "aggregate_usage"]

Window = tuple[dt.datetime, dt.datetime] | tuple[str, dt.datetime, dt.datetime]
"""``(start, end)`` when the window's key is the customer's external id, else ``(customer, start, end)``."""

_INT64_LIMIT = 2**63
_HUNDRED = Decimal(100)
# PostgreSQL: from this many windows on, the count meters are aggregated on a second connection meanwhile.
PARALLEL_MIN_WINDOWS = 1000
_SPLIT = 24  # bits of the low half of a duration in the exact weighted-sum product


class MeterAggregate(NamedTuple):
    """One meter's usage in one window (a named tuple: a run builds one per window and meter, by the million).

    Attributes:
      key: the window's key (the customer's external id when windows map customer → (start, end)).
      customer: the customer's external id.
      meter: the meter's code.
      quantity: the aggregated quantity (see the module docstring), exact.
      events: the number of events in the window.
      values: each event's value in time order, for meters with ``keep_event_values``; else None.
      fees: the events' fees summed under each of the meter's ``per_event_fees`` terms; else None.
    """

    key: Hashable
    customer: str
    meter: str
    quantity: Decimal
    events: int
    values: Sequence[Decimal] | None = None
    fees: Mapping[FeeTerms, EventFees] | None = None


def aggregate_usage(
    engine: Engine,
    windows: Mapping[Any, Window],
    meters: Iterable[MeterSpec] | Mapping[str, MeterSpec],
    *,
    received_until: dt.datetime | None = None,
    received_after: dt.datetime | None = None,
) -> dict[tuple[Any, str], MeterAggregate]:
    """Every meter's quantity in every window: ``{(key, meter code): MeterAggregate}``.

    ``windows`` maps a key to a half-open UTC window: customer → ``(start, end)``, or any key →
    ``(customer, start, end)`` (several windows per customer: plan changes, late periods). Every (window, meter)
    pair gets an entry, zero when it had no events.
    """
    specs = meters_by_code(meters)
    keys, customers, starts, ends = _windows(windows)
    if not keys or not specs:
        return {}
    filters = _Filters(received_until, received_after)
    codes = sorted(specs)
    # The database computes every kind; numpy only the meters whose events are handed back one by one.
    in_numpy = {c for c in codes if specs[c].keep_event_values and specs[c].aggregation != "unique_count"}
    in_database = [c for c in codes if c not in in_numpy]
    with _snapshot(engine) as connection:
        _load_windows(connection, customers, starts, ends)
        counted = [c for c in in_database if specs[c].aggregation == "count"]
        if (
            is_postgresql(connection)
            and len(keys) >= PARALLEL_MIN_WINDOWS
            and counted
            and len(counted) < len(in_database) + len(in_numpy)
        ):
            # The count meters (usually most of the events) on a second connection that sees the same snapshot,
            # while this one computes the rest: PostgreSQL runs no query of a temporary table in parallel itself.
            snapshot = connection.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
            with _snapshot(_side_engine(engine), snapshot) as second, ThreadPoolExecutor(1) as pool:
                _load_windows(second, customers, starts, ends)
                counting = pool.submit(_totals, second, counted, specs, filters)
                totals, overflowed = _totals(connection, [c for c in in_database if c not in counted], specs, filters)
                totals.update(counting.result()[0])
        else:
            totals, overflowed = _totals(connection, in_database, specs, filters)
        if overflowed:
            totals.update(_streamed_sums(connection, sorted(overflowed), filters))
        latest = [c for c in in_database if specs[c].aggregation == "latest"]
        latest_values = _latest_values(connection, latest, filters) if latest else {}
        weighted = [c for c in codes if specs[c].aggregation == "weighted_sum"]
        levels = _levels(connection, weighted, filters) if weighted else {}
        dots = _weighted_dots(connection, [c for c in weighted if c in in_database], filters)
        loaded = sorted(c for c in codes if specs[c].keep_event_values)
        events = _EventRows.load(connection, loaded, filters) if loaded else _EventRows.empty(loaded)
        fees = {
            (c, terms): _per_event_fees(connection, c, terms, filters)
            for c in codes
            for terms in specs[c].per_event_fees
        }
    computed = _compute(events, specs, levels, starts, ends)
    for pair, value in latest_values.items():
        totals[pair] = (totals[pair][0], from_scaled(value))
    for pair in dots.keys() | {pair for pair in levels if pair[1] not in in_numpy}:
        count, dot = dots.get(pair, (0, 0))
        level, index = levels.get(pair, 0), pair[0]
        totals[pair] = (count, _time_weighted(level, dot, starts[index], ends[index]) if count else from_scaled(level))

    results: dict[tuple[Any, str], MeterAggregate] = {}
    for code in codes:
        if code in in_numpy:
            results.update(_numpy_results(code, specs[code], keys, customers, computed, levels))
        else:
            found = totals.get
            for index, key in enumerate(keys):
                count, quantity = found((index, code), _NONE)
                results[(key, code)] = MeterAggregate(key, customers[index], code, quantity, count)
        if specs[code].per_event_fees:
            _add_fees(results, code, specs[code].per_event_fees, keys, fees)
    return results


def _add_fees(
    results: dict[tuple[Any, str], MeterAggregate],
    code: str,
    all_terms: Sequence[FeeTerms],
    keys: list[Any],
    fees: Mapping[tuple[str, FeeTerms], Mapping[int, EventFees]],
) -> None:
    """Each window's fees per event of the meter, under each of its terms (none: no events)."""
    nothing = EventFees()
    for index, key in enumerate(keys):
        found = {terms: fees[(code, terms)].get(index, nothing) for terms in all_terms}
        results[(key, code)] = results[(key, code)]._replace(fees=found)


def _numpy_results(
    code: str,
    spec: MeterSpec,
    keys: list[Any],
    customers: list[str],
    computed: Mapping[tuple[int, str], _Computed],
    levels: Mapping[tuple[int, str], int],
) -> Iterator[tuple[tuple[Any, str], MeterAggregate]]:
    """The aggregates of a meter whose events are handed back one by one, from the numpy kernels."""
    kind = spec.aggregation
    nothing = _Computed()
    for index, key in enumerate(keys):
        found = computed.get((index, code), nothing)
        count = found.count
        if kind == "count":
            quantity = Decimal(count)
        elif kind == "sum":
            quantity = from_scaled(found.total)
        elif kind == "max":
            quantity = from_scaled(found.largest)
        elif kind == "latest":
            quantity = from_scaled(found.latest)
        else:  # weighted_sum
            quantity = found.weighted if found.count else from_scaled(levels.get((index, code), 0))
        values = (found.values or ()) if spec.keep_event_values else None
        yield (key, code), MeterAggregate(key, customers[index], code, quantity, count, values)


# The kinds the aggregation by part (meters.split) computes with queries of their own (on the events loaded into
# numpy only for a meter whose every event's value is handed back).
_NUMPY_KINDS = frozenset({"latest", "weighted_sum"})
_NONE = (0, Decimal(0))
_KINDS = ("count", "sum", "max", "unique_count", "latest", "weighted_sum")


def _windows(windows: Mapping[Any, Window]) -> tuple[list[Any], list[str], list[int], list[int]]:
    keys: list[Any] = []
    customers: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    instants: dict[dt.datetime, int] = {}  # many windows share their bounds (customers of one timezone)
    for key, window in windows.items():
        if len(window) == 2:
            customer, (start, end) = key, window
        else:
            customer, start, end = window
        start_us = instants.get(start)
        if start_us is None:
            start_us = instants[start] = to_epoch_us(start)
        end_us = instants.get(end)
        if end_us is None:
            end_us = instants[end] = to_epoch_us(end)
        if not isinstance(customer, str) or end_us <= start_us:
            raise ValueError(f"window {key!r}: expected a customer id and start < end, got {window!r}")
        keys.append(key)
        customers.append(customer)
        starts.append(start_us)
        ends.append(end_us)
    return keys, customers, starts, ends


@dataclass(frozen=True, slots=True)
class _Filters:
    received_until: dt.datetime | None
    received_after: dt.datetime | None

    def sql(self, marker: str) -> tuple[str, tuple[int, ...]]:
        """The filters' SQL (with the driver's parameter ``marker``) and their parameters."""
        clauses, params = [], []
        if self.received_until is not None:
            clauses.append("AND e.received_at <= {}")
            params.append(to_epoch_us(self.received_until))
        if self.received_after is not None:
            clauses.append("AND e.received_at > {}")
            params.append(to_epoch_us(self.received_after))
        return " ".join(clause.format(marker) for clause in clauses), tuple(params)


_SIDE_ENGINES: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def _side_engine(engine: Engine) -> Engine:
    """The second connection's engine: a connection of its own each time, never one of ``engine``'s pool (callers
    that each hold one of the pool's connections and wait for a second could otherwise exhaust it together)."""
    side = _SIDE_ENGINES.get(engine)
    if side is None:
        side = _SIDE_ENGINES[engine] = create_engine(engine.url, poolclass=NullPool)
    return side


@contextmanager
def _snapshot(engine: Engine, snapshot: str | None = None) -> Iterator[Connection]:
    """One read-only transaction (one snapshot for every query), rolled back at the end, which also drops the
    temporary windows table. SQLite: a deferred transaction, so ingestion is never blocked. PostgreSQL:
    ``snapshot``, exported by another transaction, makes this one see exactly what that one sees."""
    postgres = is_postgresql(engine)
    options: dict[str, Any] = {"isolation_level": "REPEATABLE READ"} if postgres else {}
    with read_only(engine).connect().execution_options(**options) as connection:
        transaction = connection.begin()
        try:
            if snapshot is not None:
                connection.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            if postgres:
                # Short grouped queries over index ranges: compiling them (JIT) costs more than it saves, and
                # count(DISTINCT) sorts each group in memory rather than on disk.
                connection.exec_driver_sql("SET LOCAL jit = off")
                connection.exec_driver_sql("SET LOCAL work_mem = '64MB'")
            yield connection
        finally:
            transaction.rollback()


def _load_windows(connection: Connection, customers: list[str], starts: list[int], ends: list[int]) -> None:
    rows = list(zip(range(len(customers)), customers, starts, ends, strict=True))
    driver: Any = connection.connection.dbapi_connection
    if is_postgresql(connection):
        with driver.cursor() as cursor:
            cursor.execute(
                "CREATE TEMPORARY TABLE usage_windows (idx integer PRIMARY KEY, customer text NOT NULL, "
                "start_us bigint NOT NULL, end_us bigint NOT NULL) ON COMMIT DROP"
            )
            with cursor.copy("COPY usage_windows (idx, customer, start_us, end_us) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute("ANALYZE usage_windows")
        return
    cursor = driver.cursor()
    try:
        cursor.execute(
            "CREATE TEMPORARY TABLE usage_windows (idx INTEGER PRIMARY KEY, customer TEXT NOT NULL, "
            "start_us INTEGER NOT NULL, end_us INTEGER NOT NULL)"
        )
        cursor.executemany("INSERT INTO usage_windows VALUES (?, ?, ?, ?)", rows)
    finally:
        cursor.close()


# The windows drive the join (SQLite: CROSS JOIN keeps them the outer loop): one index range per window & meter.
_JOIN = (
    "FROM usage_windows w CROSS JOIN usage_events e "
    "WHERE e.customer = w.customer AND e.meter IN ({meters}) {window} {filters}"
)
_IN_WINDOW = "AND e.occurred_at >= w.start_us AND e.occurred_at < w.end_us"
_BEFORE_WINDOW = "AND e.occurred_at < w.start_us"


def _sql(
    connection: Connection,
    select: str,
    meters: Sequence[str],
    window: str,
    filters: _Filters,
    tail: str,
    meter_case: bool,
) -> tuple[str, tuple[Any, ...]]:
    """The statement of ``_query`` and ``_streamed``, and its parameters."""
    marker = "%s" if is_postgresql(connection) else "?"
    filter_sql, filter_params = filters.sql(marker)
    where = _JOIN.format(meters=", ".join([marker] * len(meters)), window=window, filters=filter_sql)
    meter_sql = "e.meter"
    meter_params: tuple[str, ...] = ()
    if meter_case:
        meter_sql = "CASE e.meter " + " ".join(f"WHEN {marker} THEN {i}" for i in range(len(meters))) + " END"
        meter_params = tuple(meters)
    return f"{select.format(meter=meter_sql)} {where} {tail}", (*meter_params, *meters, *filter_params)


def _query(
    connection: Connection,
    select: str,
    meters: Sequence[str],
    window: str,
    filters: _Filters,
    tail: str = "",
    *,
    meter_case: bool = False,
) -> list[tuple[Any, ...]]:
    """Run ``select`` over the events of ``meters`` in (or before) each window, through the DB-API cursor
    (plain tuples, no per-row wrapping). ``{meter}`` in ``select`` is the meter's code, or its index in
    ``meters`` when ``meter_case``."""
    sql, params = _sql(connection, select, meters, window, filters, tail, meter_case)
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        return cast("list[tuple[Any, ...]]", cursor.fetchall())
    finally:
        cursor.close()


def _is_overflow(exc: Exception) -> bool:
    """SQLite's integer sum() overflowing 64 bits ("integer overflow"); the DB-API error may come unwrapped."""
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    return "integer overflow" in str(original).lower()


_SQL_AGGREGATE = {
    "count": None,
    "latest": None,  # its count; the value of its newest event: _latest_values
    "sum": "sum(e.value)",
    "max": "max(e.value)",
    "unique_count": "count(DISTINCT e.unique_value)",
}


def _totals(
    connection: Connection, codes: list[str], specs: Mapping[str, MeterSpec], filters: _Filters
) -> tuple[dict[tuple[int, str], tuple[int, Decimal]], set[str]]:
    """(events, quantity) per (window, meter) from the database, one grouped query per kind (each computes only
    what its kind needs: a count alone is much cheaper than a count, a sum and a max); and the sum meters whose
    total overflowed the database's 64-bit sum (SQLite), left to numpy."""
    totals: dict[tuple[int, str], tuple[int, Decimal]] = {}
    overflowed: set[str] = set()
    for kind, expression in _SQL_AGGREGATE.items():
        of_kind = [c for c in codes if specs[c].aggregation == kind]
        if not of_kind:
            continue
        select = f"SELECT w.idx, {{meter}}, count(*), {expression or 'count(*)'}"
        savepoint = connection.begin_nested()
        try:
            rows = _query(connection, select, of_kind, _IN_WINDOW, filters, "GROUP BY w.idx, e.meter")
        except Exception as exc:
            savepoint.rollback()
            if kind == "sum" and _is_overflow(exc):
                overflowed.update(of_kind)
                continue
            raise
        savepoint.commit()
        if kind in ("count", "latest", "unique_count"):  # (a latest meter's value: _latest_values)
            totals.update(((idx, meter), (count, Decimal(number))) for idx, meter, count, number in rows)
        else:
            totals.update(((idx, meter), (count, from_scaled(int(number or 0)))) for idx, meter, count, number in rows)
    return totals, overflowed


def _levels(connection: Connection, codes: list[str], filters: _Filters) -> dict[tuple[int, str], int]:
    """The level each window of a weighted_sum meter starts from: the sum of every earlier event."""
    savepoint = connection.begin_nested()
    try:
        rows = _query(
            connection, "SELECT w.idx, {meter}, sum(e.value)", codes, _BEFORE_WINDOW, filters, "GROUP BY w.idx, e.meter"
        )
        savepoint.commit()
        return {(idx, meter): int(total) for idx, meter, total in rows if total}
    except Exception as exc:
        savepoint.rollback()
        if not _is_overflow(exc):
            raise
    levels: dict[tuple[int, str], int] = {}
    for rows in _streamed(connection, "SELECT w.idx, {meter}, e.value", codes, _BEFORE_WINDOW, filters):
        for idx, meter, value in rows:
            if value:
                levels[(idx, meter)] = levels.get((idx, meter), 0) + value
    return levels


_STREAM_ROWS = 50_000  # rows fetched at a time when Python sums them: memory grows with windows, not events


def _streamed(
    connection: Connection,
    select: str,
    meters: Sequence[str],
    window: str,
    filters: _Filters,
    *,
    meter_case: bool = False,
    tail: str = "",
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``select`` over the events of ``meters`` in (or before) each window, ``_STREAM_ROWS`` at a
    time (never all of them at once)."""
    sql, params = _sql(connection, select, meters, window, filters, tail, meter_case)
    driver: Any = connection.connection.dbapi_connection
    # PostgreSQL: a server-side (named) cursor, so the rows stay on the server until fetched.
    cursor = driver.cursor("usage_rows") if is_postgresql(connection) else driver.cursor()
    try:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(_STREAM_ROWS):
            yield rows
    finally:
        cursor.close()


def _streamed_sums(
    connection: Connection, codes: list[str], filters: _Filters
) -> dict[tuple[int, str], tuple[int, Decimal]]:
    """(events, sum) per (window, meter) of sum meters whose total overflows the database's 64-bit ``sum``
    (SQLite), summed on Python integers as the rows stream by."""
    found: dict[tuple[int, str], list[int]] = {}
    for rows in _streamed(connection, "SELECT w.idx, {meter}, coalesce(e.value, 0)", codes, _IN_WINDOW, filters):
        for idx, meter, value in rows:
            counted = found.get((idx, meter))
            if counted is None:
                found[(idx, meter)] = [1, value]
            else:
                counted[0] += 1
                counted[1] += value
    return {key: (count, from_scaled(total)) for key, (count, total) in found.items()}


def _latest_values(connection: Connection, codes: list[str], filters: _Filters) -> dict[tuple[int, str], int]:
    """The value of each window's newest event (ties: the one stored last) of each ``latest`` meter: one index
    seek per window, from the window's end backwards (the aggregation index is ordered by meter, customer and
    instant), so nothing but one value per window leaves the database."""
    marker = "%s" if is_postgresql(connection) else "?"
    filter_sql, filter_params = filters.sql(marker)
    sql = (
        "SELECT w.idx, (SELECT coalesce(e.value, 0) FROM usage_events e "
        f"WHERE e.meter = {marker} AND e.customer = w.customer {_IN_WINDOW} {filter_sql} "
        "ORDER BY e.occurred_at DESC, e.id DESC LIMIT 1) FROM usage_windows w"
    )
    found: dict[tuple[int, str], int] = {}
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        for code in codes:
            cursor.execute(sql, (code, *filter_params))
            found.update(((idx, code), value) for idx, value in cursor.fetchall() if value is not None)
    finally:
        cursor.close()
    return found


def _weighted_dots(
    connection: Connection, codes: list[str], filters: _Filters
) -> dict[tuple[int, str], tuple[int, int]]:
    """(events, Σ value × (window end − instant)) per (window, meter) of the weighted_sum meters, exactly, in
    the database: PostgreSQL on ``numeric``; SQLite on two 64-bit sums, the duration split into its high and low
    ``_SPLIT`` bits (a product or a sum that would overflow comes back a float, or raises: then the meters are
    summed on Python integers as the rows stream by)."""
    if not codes:
        return {}
    if is_postgresql(connection):
        select = "SELECT w.idx, {meter}, count(*), sum(coalesce(e.value, 0)::numeric * (w.end_us - e.occurred_at))"
        rows = _query(connection, select, codes, _IN_WINDOW, filters, "GROUP BY w.idx, e.meter")
        return {(idx, meter): (count, int(dot)) for idx, meter, count, dot in rows}
    mask = (1 << _SPLIT) - 1
    select = (
        "SELECT w.idx, {meter}, count(*), "
        f"sum(coalesce(e.value, 0) * ((w.end_us - e.occurred_at) >> {_SPLIT})), "
        f"sum(coalesce(e.value, 0) * ((w.end_us - e.occurred_at) & {mask}))"
    )
    savepoint = connection.begin_nested()
    try:
        rows = _query(connection, select, codes, _IN_WINDOW, filters, "GROUP BY w.idx, e.meter")
        savepoint.commit()
        if all(type(high) is int and type(low) is int for _, _, _, high, low in rows):
            return {(idx, meter): (count, (high << _SPLIT) + low) for idx, meter, count, high, low in rows}
    except Exception as exc:
        savepoint.rollback()
        if not _is_overflow(exc):
            raise
    found: dict[tuple[int, str], list[int]] = {}
    select = "SELECT w.idx, {meter}, coalesce(e.value, 0), w.end_us - e.occurred_at"
    for rows in _streamed(connection, select, codes, _IN_WINDOW, filters):
        for idx, meter, value, remaining in rows:
            counted = found.setdefault((idx, meter), [0, 0])
            counted[0] += 1
            counted[1] += value * remaining
    return {key: (count, dot) for key, (count, dot) in found.items()}


def _places(number: Decimal | None) -> int:
    """The decimal places of ``number`` (0 for None or a whole number)."""
    if number is None:
        return 0
    exponent = number.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _per_event_fees(connection: Connection, code: str, terms: FeeTerms, filters: _Filters) -> dict[int, EventFees]:
    """The fees of each window's events of meter ``code`` under ``terms`` (``percentage`` model), summed in the
    database: each event's rank and running sum of value (window functions, in time order; ties: the one stored
    first) tell the free part, the straddling event and each paid event's chargeable value; its fee is an integer
    in units of 10^-(VALUE_DIGITS + 2 + places) — chargeable (scaled) × rate × 10^places + fixed — clamped and
    summed exactly (PostgreSQL on ``numeric``; SQLite on 64-bit integers, every result's type checked). What does
    not fit (or a free amount finer than the values' scale) is walked on ``Decimal`` as the events stream by,
    ``_STREAM_ROWS`` at a time: memory grows with windows, not events."""
    finer = [_places(x) - VALUE_DIGITS - 2 for x in (terms.fixed_amount, terms.minimum, terms.maximum)]
    places = max(_places(terms.rate), *finer, 0)
    unit = VALUE_DIGITS + 2 + places
    constants = [int(terms.rate.scaleb(places)), int(terms.fixed_amount.scaleb(unit))]
    constants += [int(x.scaleb(unit)) for x in (terms.minimum, terms.maximum) if x is not None]
    free_amount = terms.free_amount.scaleb(VALUE_DIGITS)
    exact = free_amount == free_amount.to_integral_value() and all(abs(c) < _INT64_LIMIT for c in constants)
    if exact:
        found = _summed_fees(connection, code, terms, filters, places, int(free_amount))
        if found is not None:
            return found
    return _walked_fees(connection, code, terms, filters)


# A scaled value's decimal places (0 … VALUE_DIGITS), as ``from_scaled`` gives them.
_PLACES = (
    "CASE "
    + " ".join(f"WHEN x.v % {10 ** (VALUE_DIGITS - p)} = 0 THEN {p}" for p in range(VALUE_DIGITS))
    + f" ELSE {VALUE_DIGITS} END"
)


def _fee_sql(terms: FeeTerms, places: int, free_amount: int, postgres: bool) -> str:
    """The grouped query over ``x`` (idx, v, rn, cum) of one meter's events: one row per window."""
    unit = VALUE_DIGITS + 2 + places
    rate, fixed = int(terms.rate.scaleb(places)), int(terms.fixed_amount.scaleb(unit))
    in_free = terms.free_events > 0 or free_amount > 0
    considered = "1 = 0"
    if in_free:
        considered = " AND ".join(
            ["1 = 1"]
            + ([f"x.rn <= {terms.free_events}"] if terms.free_events else [])
            + ([f"x.cum - x.v < {free_amount}"] if free_amount else [])
        )
    free = f"({considered}{f' AND x.cum <= {free_amount}' if free_amount else ''})"
    straddle = f"({considered} AND x.cum > {free_amount})" if free_amount else "(1 = 0)"
    value = "x.v::numeric" if postgres else "x.v"
    places_sql = _PLACES.replace("%", "%%") if postgres else _PLACES  # (psycopg: a literal % doubled)
    chargeable = f"CASE WHEN {straddle} THEN x.cum - {free_amount} ELSE x.v END"
    fee = f"(CASE WHEN {straddle} THEN (x.cum - {free_amount}) ELSE {value} END) * {rate} + {fixed}"
    low = high = "0"
    final = "y.fee"
    if terms.minimum is not None:  # raised to the minimum first, then cut to the maximum (as the model does)
        minimum = int(terms.minimum.scaleb(unit))
        low = f"CASE WHEN y.fee < {minimum} THEN 1 ELSE 0 END"
        final = f"CASE WHEN y.fee < {minimum} THEN {minimum} ELSE y.fee END"
    if terms.maximum is not None:
        maximum = int(terms.maximum.scaleb(unit))
        high = f"CASE WHEN {final} > {maximum} THEN 1 ELSE 0 END"
        final = f"CASE WHEN {final} > {maximum} THEN {maximum} ELSE {final} END"
    return (
        "SELECT y.idx, sum(y.free), "
        "sum(CASE WHEN y.free = 1 THEN y.v ELSE 0 END), "
        f"sum(CASE WHEN y.straddle = 1 THEN {free_amount} - (y.cum - y.v) ELSE 0 END), "
        "max(y.straddle), sum(1 - y.free), sum(CASE WHEN y.free = 0 THEN y.c ELSE 0 END), "
        f"sum(CASE WHEN y.free = 0 THEN {low} ELSE 0 END), sum(CASE WHEN y.free = 0 THEN {high} ELSE 0 END), "
        f"sum(CASE WHEN y.free = 0 THEN {final} ELSE 0 END), min(CASE WHEN y.v < 0 THEN y.rn END), "
        # the decimal places of the values in each sum (the walk's Decimal sums keep them: 0.5 + 0.5 is 1.0)
        "max(CASE WHEN y.free = 1 THEN y.pl ELSE 0 END), max(CASE WHEN y.free = 0 THEN y.pl ELSE 0 END), "
        f"max(CASE WHEN y.free = 0 AND {low} = 0 AND {high} = 0 THEN y.pl + 1 ELSE 0 END), "
        f"max(CASE WHEN y.straddle = 1 AND {low} = 0 AND {high} = 0 THEN 1 ELSE 0 END) "
        f"FROM (SELECT x.idx, x.v, x.rn, x.cum, {places_sql} AS pl, CASE WHEN {free} THEN 1 ELSE 0 END AS free, "
        f"CASE WHEN {straddle} THEN 1 ELSE 0 END AS straddle, {chargeable} AS c, {fee} AS fee FROM ({{events}}) x) y "
        "GROUP BY y.idx"
    )


def _summed_fees(
    connection: Connection, code: str, terms: FeeTerms, filters: _Filters, places: int, free_amount: int
) -> dict[int, EventFees] | None:
    """``_per_event_fees`` in the database; None when SQLite's 64 bits cannot hold it."""
    postgres = is_postgresql(connection)
    order = "PARTITION BY w.idx ORDER BY e.occurred_at, e.id"
    select = (
        "SELECT w.idx AS idx, coalesce(e.value, 0) AS v, ROW_NUMBER() OVER (" + order + ") AS rn, "
        "sum(coalesce(e.value, 0)) OVER (" + order + " ROWS UNBOUNDED PRECEDING) AS cum"
    )
    events, params = _sql(connection, select, [code], _IN_WINDOW, filters, "", False)
    sql = _fee_sql(terms, places, free_amount, postgres).format(events=events)
    savepoint = connection.begin_nested()
    try:
        rows = _run_sql(connection, sql, params)
        savepoint.commit()
    except Exception as exc:
        savepoint.rollback()
        if _is_overflow(exc):
            return None
        raise
    if not postgres and any(type(x) is not int for row in rows for x in row[1:10]):
        return None  # a product beyond 64 bits came back a float
    unit = VALUE_DIGITS + 2 + places
    found: dict[int, EventFees] = {}
    for idx, free, free_value, room, straddled, paid, chargeable, raised, cut, total, negative, *places_of in rows:
        if negative is not None:
            found[idx] = EventFees(negative=_negative(connection, code, idx, int(negative), filters))
            continue
        sums = (int(free_value) + int(room), int(chargeable), int(total))
        counts = (int(free), bool(straddled), int(paid), int(raised), int(cut))
        fees = _as_walked(terms, sums, counts, [int(p) for p in places_of], unit)
        if fees is None:
            return None
        found[idx] = fees
    return found


def _exponent(number: Decimal | None) -> int:
    exponent = 0 if number is None else number.as_tuple().exponent
    return exponent if isinstance(exponent, int) else 0


def _as_walked(
    terms: FeeTerms, sums: tuple[int, int, int], counts: tuple[int, bool, int, int, int], places: list[int], unit: int
) -> EventFees | None:
    """A window's sums as the walk on ``Decimal`` writes them (the same number of decimal places: the exponent
    of a Decimal sum is its terms' smallest), or None when one does not fit that many places."""
    free_value, chargeable, total = sums
    free, straddled, paid, raised, cut = counts
    # (unclamped: the places of the paid events whose fee was not clamped + 1, 0 when there are none)
    free_places, paid_places, unclamped, straddle_unclamped = places
    if straddled:  # the straddling event pays value − (free_amount − the value already free)
        free_places = max(free_places, -_exponent(terms.free_amount))
        paid_places = max(paid_places, free_places)
        if straddle_unclamped:
            unclamped = max(unclamped, free_places + 1)
    fraction = terms.rate / _HUNDRED
    exponents = [0]
    if unclamped:
        exponents += [_exponent(fraction) - (unclamped - 1), _exponent(terms.fixed_amount)]
    if raised:
        exponents.append(_exponent(terms.minimum))
    if cut:
        exponents.append(_exponent(terms.maximum))
    try:
        shown = (
            from_scaled(free_value).quantize(Decimal(1).scaleb(-free_places)),
            from_scaled(chargeable).quantize(Decimal(1).scaleb(-paid_places)),
            Decimal(total).scaleb(-unit).quantize(Decimal(1).scaleb(min(exponents))),
        )
    except InvalidOperation:
        return None
    if shown != (from_scaled(free_value), from_scaled(chargeable), Decimal(total).scaleb(-unit)):
        return None
    return EventFees(free, shown[0], straddled, paid, shown[1], raised, cut, shown[2])


def _run_sql(connection: Connection, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        return cast("list[tuple[Any, ...]]", cursor.fetchall())
    finally:
        cursor.close()


def _negative(connection: Connection, code: str, idx: int, rank: int, filters: _Filters) -> tuple[int, Decimal]:
    """(index, value) of the ``rank``-th event (1-based, in time order) of window ``idx``: a negative one."""
    marker = "%s" if is_postgresql(connection) else "?"
    select = "SELECT coalesce(e.value, 0)"
    sql, params = _sql(connection, select, [code], _IN_WINDOW + f" AND w.idx = {int(idx)}", filters, "", False)
    sql += f" ORDER BY e.occurred_at, e.id LIMIT 1 OFFSET {marker}"
    (value,) = _run_sql(connection, sql, (*params, rank - 1))[0]
    return rank - 1, from_scaled(int(value))


def _walked_fees(connection: Connection, code: str, terms: FeeTerms, filters: _Filters) -> dict[int, EventFees]:
    """``_per_event_fees`` on ``Decimal``, each window's values walked in time order as the rows stream by."""
    found: dict[int, EventFees] = {}
    select = "SELECT w.idx, coalesce(e.value, 0)"
    streamed = _streamed(connection, select, [code], _IN_WINDOW, filters, tail="ORDER BY w.idx, e.occurred_at, e.id")
    rows = (row for chunk in streamed for row in chunk)
    for idx, group in groupby(rows, key=itemgetter(0)):
        found[idx] = walk(terms, (from_scaled(value) for _, value in group))
    return found


def _time_weighted(level: int, dot: int, start: int, end: int) -> Decimal:
    """The time-weighted average level over ``[start, end)``: (level at the start × length + Σ value × time
    left) / length, rounded half-even to the value scale."""
    length = end - start
    return from_scaled(_divide_half_even(level * length + dot, length))


@dataclass(frozen=True, slots=True)
class _EventRows:
    """The events of the row meters, sorted by (window, meter, time, id), with the bounds of each group."""

    meters: list[str]
    window: np.ndarray
    meter: np.ndarray
    occurred_at: np.ndarray
    value: np.ndarray
    starts: np.ndarray

    @classmethod
    def empty(cls, meters: list[str]) -> _EventRows:
        nothing = np.zeros(0, dtype=np.int64)
        return cls(meters, nothing, nothing, nothing, nothing, nothing)

    @classmethod
    def load(cls, connection: Connection, meters: list[str], filters: _Filters) -> _EventRows:
        select = "SELECT w.idx, {meter}, e.occurred_at, e.id, coalesce(e.value, 0)"
        # chunk by chunk into int64 columns: never a Python tuple per event for all the events at once
        chunks = [
            np.array(rows, dtype=np.int64)
            for rows in _streamed(connection, select, meters, _IN_WINDOW, filters, meter_case=True)
        ]
        if not chunks:
            return cls.empty(meters)
        window, meter, occurred_at, ids, value = np.concatenate(chunks).T
        return cls.sorted(meters, window, meter, occurred_at, ids, value)

    @classmethod
    def sorted(
        cls,
        meters: list[str],
        window: np.ndarray,
        meter: np.ndarray,
        occurred_at: np.ndarray,
        ids: np.ndarray,
        value: np.ndarray,
    ) -> _EventRows:
        """The events given column by column (``meter``: an index into ``meters``), sorted and grouped."""
        if len(window) == 0:
            return cls.empty(meters)
        order = np.lexsort((ids, occurred_at, meter, window))
        window, meter, occurred_at, value = window[order], meter[order], occurred_at[order], value[order]
        boundary = np.empty(len(window), dtype=bool)
        boundary[0] = True
        boundary[1:] = (window[1:] != window[:-1]) | (meter[1:] != meter[:-1])
        return cls(meters, window, meter, occurred_at, value, np.flatnonzero(boundary))


@dataclass(slots=True)
class _Computed:
    count: int = 0
    total: int = 0
    largest: int = 0
    latest: int = 0
    weighted: Decimal = Decimal(0)
    values: Sequence[Decimal] | None = None


def _compute(
    events: _EventRows,
    specs: Mapping[str, MeterSpec],
    levels: Mapping[tuple[int, str], int],
    starts: list[int],
    ends: list[int],
) -> dict[tuple[int, str], _Computed]:
    """The numpy kernels, per (window, meter) group of the loaded events."""
    if len(events.starts) == 0:
        return {}
    group_starts = events.starts
    group_ends = np.append(group_starts[1:], len(events.window))
    windows = events.window[group_starts].tolist()
    codes = [events.meters[i] for i in events.meter[group_starts].tolist()]
    out = {
        (w, code): _Computed(count=n)
        for w, code, n in zip(windows, codes, (group_ends - group_starts).tolist(), strict=True)
    }
    kinds = [specs[code].aggregation for code in codes]
    values = events.value

    def each(kind: str) -> list[int]:
        return [i for i, k in enumerate(kinds) if k == kind]

    if latest := each("latest"):
        for i, value in zip(latest, values[group_ends[latest] - 1].tolist(), strict=True):
            out[(windows[i], codes[i])].latest = value
    if summed := each("sum"):
        sums = exact_group_sums(values, group_starts)
        for i in summed:
            out[(windows[i], codes[i])].total = sums[i]
    if largest := each("max"):
        maxima = np.maximum.reduceat(values, group_starts).tolist()
        for i in largest:
            out[(windows[i], codes[i])].largest = maxima[i]
    if weighted := each("weighted_sum"):
        end_us = np.asarray(ends, dtype=np.int64)
        start_us = np.asarray(starts, dtype=np.int64)
        remaining = end_us[events.window] - events.occurred_at  # how long each increment counts in its window
        dots = exact_group_dots(values, remaining, group_starts)
        for i in weighted:
            w, code = windows[i], codes[i]
            length = int(end_us[w] - start_us[w])
            integral = levels.get((w, code), 0) * length + dots[i]
            out[(w, code)].weighted = from_scaled(_divide_half_even(integral, length))
    keep = [i for i, code in enumerate(codes) if specs[code].keep_event_values]
    if keep:
        bounds_start, bounds_end = group_starts.tolist(), group_ends.tolist()
        for i in keep:
            out[(windows[i], codes[i])].values = EventValues(values[bounds_start[i] : bounds_end[i]])
    return out


class EventValues(Sequence[Decimal]):
    """The values of a window's events in time order, as ``Decimal`` when read, kept as the fixed-point int64
    array they were loaded as (8 bytes an event, where a tuple of ``Decimal`` takes about 130); equal to any
    sequence of the same values (a tuple of them included)."""

    __slots__ = ("_scaled",)

    def __init__(self, scaled: np.ndarray) -> None:
        self._scaled = scaled

    def __len__(self) -> int:
        return len(self._scaled)

    @overload
    def __getitem__(self, index: int) -> Decimal: ...

    @overload
    def __getitem__(self, index: slice) -> EventValues: ...

    def __getitem__(self, index: int | slice) -> Decimal | EventValues:
        if isinstance(index, slice):
            return EventValues(self._scaled[index])
        return from_scaled(int(self._scaled[index]))

    def __iter__(self) -> Iterator[Decimal]:
        return map(from_scaled, self._scaled.tolist())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EventValues):
            return bool(np.array_equal(self._scaled, other._scaled))
        return isinstance(other, Sequence) and not isinstance(other, str) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"EventValues({tuple(self)!r})"


def exact_group_sums(values: np.ndarray, starts: np.ndarray) -> list[int]:
    """The exact sum of each group of int64 ``values`` (groups begin at ``starts``), as Python integers.

    int64 when max|value| × largest group < 2^63 proves no partial sum can overflow, else Python integers.
    """
    if len(values) == 0:
        return []
    sizes = np.diff(np.append(starts, len(values)))
    bound = int(np.abs(values).max()) * int(sizes.max())
    if bound < _INT64_LIMIT:
        return [int(x) for x in np.add.reduceat(values, starts).tolist()]
    return [int(x) for x in np.add.reduceat(values.astype(object), starts).tolist()]


def exact_group_dots(values: np.ndarray, weights: np.ndarray, starts: np.ndarray) -> list[int]:
    """The exact Σ value × weight of each group (``weights`` ≥ 0), as Python integers.

    The weights (microseconds) are split into a high and a low part of ``_SPLIT`` bits, so the two int64 partial
    products stay small; the split runs in int64 only when a bound proves that neither partial sum can overflow,
    otherwise the products are taken on Python integers.
    """
    if len(values) == 0:
        return []
    sizes = np.diff(np.append(starts, len(values)))
    high, low = weights >> _SPLIT, weights & ((1 << _SPLIT) - 1)
    largest_part = max(int(high.max()), (1 << _SPLIT) - 1)
    if int(np.abs(values).max()) * largest_part * int(sizes.max()) < _INT64_LIMIT:
        high_sums = np.add.reduceat(values * high, starts).tolist()
        low_sums = np.add.reduceat(values * low, starts).tolist()
        return [(int(h) << _SPLIT) + int(lo) for h, lo in zip(high_sums, low_sums, strict=True)]
    products = values.astype(object) * weights.astype(object)
    return [int(x) for x in np.add.reduceat(products, starts).tolist()]


def _divide_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator (denominator > 0) rounded half-even, on integers."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient
