"""Usage counters, kept at store time: every customer's events of each meter in each calendar month of the
customer's timezone — how many, the sum of their values and the largest — added to in the very transaction that
stores the events, so that threshold evaluation and entitlements read a row instead of scanning a period's events.

Exact by construction:

  newly stored only  ``meters`` calls :func:`count_stored` (the ``meters_on_stored`` execution option of every
            billing engine, ``billing.db.make_engine``) in each chunk's transaction with the events that chunk
            inserted: a duplicate (an id stored before, same content) and a conflicting redelivery (same id, other
            content) insert nothing and count nothing; a chunk that rolls back takes its counts with it;
  one upsert per counter  ``INSERT … ON CONFLICT DO UPDATE SET events = events + excluded.events, …``: the database
            adds, so concurrent chunks (PostgreSQL: row locks taken in key order; SQLite: the write lock) never lose
            an update; ``total`` is a fixed-point integer (values × 10^6, ``meters``' scale) and becomes NULL — "not
            countable, aggregate the events" — before it could leave 64 bits;
  every event, whatever its meter  counters are kept for every meter (the catalog may change a meter's
            aggregation); a reader uses them for ``count`` (events), ``sum`` (total) and ``max`` (largest) only.
            ``unique_count``, ``latest`` and ``weighted_sum`` do not add up and are aggregated from the events;
  windows of a stable function  the window of an event is its calendar month in its customer's timezone (read
            in the storing transaction); a timezone change recounts the customer's counters from its events in
            the transaction that changes it (:func:`rebuild`), and migration 0026 counted the events stored before;
  late events  counted like any other (the month they occurred in), whether or not that month is invoiced.

Events in another store (``events_url``: ClickHouse, chDB, another SQL database) are not counted, and counters
are then never read (``billing.event_store.events_counted``): their readers aggregate those events in their store.

``received_through`` is the latest ``received_at`` a counter counted: the usage reaction finds the customer
months with events received since it last looked among the counters, not the events.

:func:`check` recounts every counter from the events and names each that differs (``billing db check``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import repeat
from operator import is_not, itemgetter
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import Connection, Engine, bindparam, delete, select, text

from billing.core.periods import Period, month_of
from billing.db.entitlement_tables import UsageCounterRow
from billing.db.tables import CustomerRow
from dbkit.dialect import among, is_postgresql
from meters import from_epoch_us, from_scaled, to_epoch_us
from meters.ingest import write_postgres

__all__ = [
    "COUNTED_KINDS",
    "Counter",
    "CounterKey",
    "Mismatch",
    "Parsed",
    "check",
    "checked",
    "count_stored",
    "month_window",
    "read_counters",
    "rebuild",
    "recount",
    "tally_parsed",
    "timezones_of",
    "touched_months",
]

COUNTED_KINDS = frozenset({"count", "sum", "max"})
"""The aggregations a counter answers exactly; the others are aggregated from the events."""

_LIMIT = 4 * 10**18  # two totals below it add up within 64 bits
_NAMES = 900  # names per IN list

CounterKey = tuple[str, str, int, int]  # (customer, meter, window start, window end): microseconds UTC


@dataclass(frozen=True, slots=True)
class Counter:
    """A customer's events of a meter in one window: how many, the sum of their values (× 10^6; None: too large to
    count) and the largest value (× 10^6; None: no event had a value)."""

    events: int
    total: int | None
    largest: int | None

    def quantity(self, kind: str) -> Decimal | None:
        """The meter's quantity as ``meters`` aggregates it, for ``kind``; None when a counter cannot say."""
        if kind == "count":
            return Decimal(self.events)
        if kind == "sum":
            return None if self.total is None else from_scaled(self.total)
        if kind == "max":
            return from_scaled(self.largest or 0)
        return None


def month_window(zone: ZoneInfo, timezone: str, occurred_at: int) -> tuple[int, int]:
    """The calendar month (in ``timezone``) that the instant ``occurred_at`` (microseconds UTC) falls in, as UTC
    microseconds ``[start, end)``."""
    start, end = month_of(from_epoch_us(occurred_at).astimezone(zone).date()).utc_window(timezone)
    return to_epoch_us(start), to_epoch_us(end)


class _Windows:
    """Each customer's month windows, worked out once per month."""

    def __init__(self, timezones: Mapping[str, str]):
        self.timezones = timezones
        self.zones: dict[str, ZoneInfo] = {}
        self.last: dict[str, tuple[int, int]] = {}
        self.months: dict[str, list[tuple[int, int]]] = {}

    def of(self, customer: str, occurred_at: int) -> tuple[int, int] | None:
        window = self.last.get(customer)
        if window is not None and window[0] <= occurred_at < window[1]:
            return window
        timezone = self.timezones.get(customer)
        if timezone is None:
            return None
        months = self.months.setdefault(timezone, [])
        for window in months:  # a timezone's months seen so far: a few
            if window[0] <= occurred_at < window[1]:
                break
        else:
            zone = self.zones.get(timezone)
            if zone is None:
                zone = self.zones[timezone] = ZoneInfo(timezone)
            window = month_window(zone, timezone, occurred_at)
            months.append(window)
        self.last[customer] = window
        return window


def timezones_of(connection: Connection, customers: Iterable[str]) -> dict[str, str]:
    """The customers' timezones (a chunk naming thousands of customers: every customer's, in one read). Read
    through the driver, in the connection's transaction: asked in every chunk's transaction, an API request's
    included, where building a statement would cost more than running it."""
    wanted = sorted(set(customers))
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if len(wanted) > _ALL_CUSTOMERS:
            cursor.execute("SELECT external_id, timezone FROM customers")
            return dict(cursor.fetchall())
        found: dict[str, str] = {}
        if not wanted:
            return found
        if is_postgresql(connection):  # one parameter, whatever the number of names
            cursor.execute("SELECT external_id, timezone FROM customers WHERE external_id = ANY(%s)", (wanted,))
            return dict(cursor.fetchall())
        for i in range(0, len(wanted), _NAMES):
            names = wanted[i : i + _NAMES]
            marks = ", ".join("?" * len(names))
            cursor.execute(f"SELECT external_id, timezone FROM customers WHERE external_id IN ({marks})", names)
            found.update(cursor.fetchall())
        return found
    finally:
        cursor.close()


_ALL_CUSTOMERS = 2 * _NAMES


def _tally(events: Iterable[Sequence[Any]], windows: _Windows) -> dict[CounterKey, list[Any]]:
    """[events, total, largest] by counter key; ``events``: (customer, meter, occurred_at, value) rows."""
    tallies: dict[CounterKey, list[Any]] = {}
    last = windows.last  # each customer's window of its previous event (events mostly come in time order)
    of = windows.of
    for customer, meter, occurred_at, value in events:
        window = last.get(customer)
        if window is None or not window[0] <= occurred_at < window[1]:
            window = of(customer, occurred_at)
            if window is None:  # a customer since deleted: nothing of it is evaluated
                continue
        key = (customer, meter, *window)
        tally = tallies.get(key)
        if tally is None:
            tallies[key] = [1, value or 0, value]
        elif value is None:
            tally[0] += 1
        else:
            tally[0] += 1
            tally[1] += value
            if tally[2] is None or value > tally[2]:
                tally[2] = value
    return tallies


_COLUMNS = (
    "customer_external_id",
    "meter",
    "window_start",
    "window_end",
    "events",
    "total",
    "largest",
    "received_through",
)
_ADD = f"""
INSERT INTO usage_counters ({", ".join(_COLUMNS)}) VALUES ({{marks}})
ON CONFLICT (customer_external_id, meter, window_start, window_end) DO UPDATE SET
  events = usage_counters.events + excluded.events,
  total = CASE WHEN usage_counters.total IS NULL OR excluded.total IS NULL
                    OR abs(usage_counters.total) >= {_LIMIT} OR abs(excluded.total) >= {_LIMIT} THEN NULL
               ELSE usage_counters.total + excluded.total END,
  largest = CASE WHEN usage_counters.largest IS NULL OR excluded.largest > usage_counters.largest
                 THEN excluded.largest ELSE usage_counters.largest END,
  received_through = CASE WHEN excluded.received_through > usage_counters.received_through
                          THEN excluded.received_through ELSE usage_counters.received_through END
"""
_ADD_SQLITE = _ADD.format(marks=", ".join("?" * len(_COLUMNS)))
def _added_where_unchanged(rows: str) -> str:
    """The upsert of the counter rows ``rows`` (with their customers' timezones as tallied) if every customer is
    still in that timezone, as the sub-statements ``unchanged`` (whether none changed) and ``added``."""
    return (
        # every row's customer still in the timezone it was tallied with (a customer's rows all name it)
        f"unchanged AS MATERIALIZED (SELECT count(*) = (SELECT count(*) FROM {rows}) AS same FROM {rows} rows "
        "JOIN customers ON customers.external_id = rows.customer_external_id AND customers.timezone = rows.timezone), "
        "added AS ("
        + _ADD.replace(
            "VALUES ({marks})",
            f"SELECT {', '.join('rows.' + column for column in _COLUMNS)} FROM {rows} rows CROSS JOIN unchanged "
            "WHERE unchanged.same "
            # the order of every other path (Python sorts by code point, as collation "C" does on UTF-8)
            'ORDER BY rows.customer_external_id COLLATE "C", rows.meter COLLATE "C", rows.window_start, '
            "rows.window_end",
        )
        + ")"
    )


_ADD_WHERE_UNCHANGED = (
    f"WITH listed ({', '.join(_COLUMNS)}, timezone) AS (VALUES {{rows}}), "
    + _added_where_unchanged("listed").replace("{", "{{").replace("}", "}}")
    + " SELECT same FROM unchanged"
)
_CHECKED_STAGING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS usage_counters_checked "
    "(LIKE usage_counters INCLUDING DEFAULTS, timezone text NOT NULL) ON COMMIT DELETE ROWS"
)
_ADD_CHECKED = (  # (the table is emptied by the same statement: its sub-statements share one snapshot)
    "WITH "
    + _added_where_unchanged("usage_counters_checked")
    + ", emptied AS (DELETE FROM usage_counters_checked) SELECT same FROM unchanged"
)
_TYPES = ("text", "text", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint", "text")  # (and the timezone)
_ADD_LISTED = (  # the rows as one JSON array of arrays (orjson writes it at once): one statement, one round trip
    f"WITH listed ({', '.join(_COLUMNS)}, timezone) AS (SELECT "
    + ", ".join(f"(element->>{i})::{kind}" for i, kind in enumerate(_TYPES))
    + " FROM jsonb_array_elements(%s::jsonb) element), "
    + _added_where_unchanged("listed")
    + " SELECT same FROM unchanged"
)
_TYPED_ROW = f"({', '.join(f'%s::{kind}' for kind in _TYPES)})"
_ADD_POSTGRESQL = _ADD.format(marks=", ".join(["%s"] * len(_COLUMNS)))


def count_stored(
    connection: Connection, events: Sequence[Sequence[Any]], received_at: int, summary: object = None
) -> None:
    """Add the events a chunk stored (``meters``' event tuples: id, customer, meter, occurred_at, value, …) to
    their counters, in the chunk's transaction: one executemany of the upsert, in key order (concurrent chunks
    lock counters in one order, so they never deadlock). ``summary``: the chunk's :func:`tally_parsed`, made
    while it was parsed; used if every customer's timezone is still the one it was made with."""
    if not events:
        return
    rows = None
    if isinstance(summary, Parsed):
        if is_postgresql(connection):
            if _added_if_unchanged(connection, summary, received_at):
                return  # (else a customer's timezone changed: nothing was added, the chunk is tallied again)
        else:
            rows = _parsed_rows(connection, summary)
    if rows is None:
        large = len(events) > _SQL_TALLY and not is_postgresql(connection)
        if large and _sqlite_added(connection, events, received_at):
            return
        windows = _Windows(timezones_of(connection, {event[1] for event in events}))
        rows = _rows(_tally(((e[1], e[2], e[3], e[4]) for e in events), windows))
    if rows:
        _add(connection, [(*row, received_at) for row in rows])


@dataclass(frozen=True, slots=True)
class Parsed:
    """A chunk's counters as tallied in the process that parsed it: the timezone of each of its customers then,
    and the counters' rows in key order (without ``received_through``)."""

    timezones: dict[str, str]
    rows: list[tuple[Any, ...]]
    copy_text: bytes | None = None  # past _MANY rows: in COPY's text format, each line ending before received_through


def tally_parsed(events: Sequence[Sequence[Any]], known_customers: object, *, copy_text: bool = True) -> Parsed | None:
    """``meters_on_parsed``: a chunk's counters, tallied where it is parsed (a worker process of a file's
    ingestion; an API batch's in process) with the timezones the ingestion began with (``known_customers``:
    external id → timezone); with their text for PostgreSQL's ``COPY`` when there are many (``copy_text``)."""
    if not isinstance(known_customers, Mapping):
        return None
    named = set(map(itemgetter(1), events))
    timezones = {customer: known_customers[customer] for customer in named if customer in known_customers}
    rows = _tallied_rows(events, timezones) if len(events) >= _ARRAY_TALLY else None
    if rows is None:
        rows = _rows(_tally(((e[1], e[2], e[3], e[4]) for e in events), _Windows(timezones)))
    return Parsed(timezones, rows, _copy_text(rows, timezones) if copy_text and len(rows) > _MANY else None)


_ARRAY_TALLY = 5_000
"""Events from which a chunk is tallied with numpy (:func:`_tallied_rows`): a file's chunks, not an API batch's."""


def _tallied_rows(events: Sequence[Sequence[Any]], timezones: Mapping[str, str]) -> list[tuple[Any, ...]] | None:
    """``_rows(_tally(…))`` of a large chunk, the same rows made with numpy (a chunk of 100,000 events in a third of
    the time): each event's counter key as one integer, the events sorted by it, each run of equal keys summed.
    None when a value, or a sum of them, would not fit in 64 bits (the caller tallies such a chunk in Python).
    Events of a customer without a timezone are left out, as :func:`_tally` leaves them."""
    import numpy as np

    columns = _Columns.of(events, timezones)
    if columns is None:
        return None
    if not len(columns.who):
        return []
    windows, at = _event_windows(columns, timezones)
    slots, meters = len(windows), len(columns.meters)
    keys = (columns.who * meters + columns.what) * slots + at
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    firsts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    present = columns.present[order]
    counts = np.diff(np.r_[firsts, len(keys)]).tolist()
    totals = np.add.reduceat(columns.values[order], firsts).tolist()
    valued = np.logical_or.reduceat(present, firsts).tolist()
    lowest = np.iinfo(np.int64).min  # (never the largest of a counter with a value: ``valued`` says which have one)
    largest = np.maximum.reduceat(np.where(present, columns.values[order], lowest), firsts).tolist()
    group = keys[firsts]
    window_of = (group % slots).tolist()
    meter_of = (group // slots % meters).tolist()
    customer_of = (group // slots // meters).tolist()
    names, codes = columns.names, columns.meters
    return [
        (names[c], codes[m], *windows[w], n, t if abs(t) < _LIMIT else None, big if v else None)
        for c, m, w, n, t, v, big in zip(customer_of, meter_of, window_of, counts, totals, valued, largest, strict=True)
    ]


@dataclass(frozen=True, slots=True)
class _Columns:
    """A chunk's events as int64 columns (those of customers with a timezone): customer (its position in ``names``,
    sorted), meter (in ``meters``, sorted), occurred_at, value (0 for none) and whether it has a value."""

    names: list[str]
    meters: list[str]
    who: Any
    what: Any
    occurred: Any
    values: Any
    present: Any

    @staticmethod
    def of(events: Sequence[Sequence[Any]], timezones: Mapping[str, str]) -> _Columns | None:
        import numpy as np

        count = len(events)
        customers = list(map(itemgetter(1), events))
        meters = list(map(itemgetter(2), events))
        names = sorted(set(customers).intersection(timezones))
        codes = sorted(set(meters))
        raw = list(map(itemgetter(4), events))
        try:
            occurred = np.fromiter(map(itemgetter(3), events), np.int64, count)
            values = np.fromiter(map(_NONE_AS_ZERO.get, raw, raw), np.int64, count)  # (a value is its own default)
        except (OverflowError, TypeError):
            return None
        position = {name: index for index, name in enumerate(names)}
        who = np.fromiter(map(position.get, customers, repeat(-1)), np.int64, count)
        what = np.fromiter(map({code: index for index, code in enumerate(codes)}.__getitem__, meters), np.int64, count)
        present = np.fromiter(map(is_not, raw, repeat(None)), np.bool_, count)
        kept = who >= 0
        if not kept.all():
            who, what, occurred, values, present = who[kept], what[kept], occurred[kept], values[kept], present[kept]
        if len(values) and max(int(values.max()), -int(values.min())) > (2**63 - 1) // len(values):
            return None  # a sum of them could leave 64 bits (as Python ints: -2^63 has no int64 opposite)
        return _Columns(names, codes, who, what, occurred, values, present)


_NONE_AS_ZERO: dict[Any, int] = {None: 0}


def _event_windows(columns: _Columns, timezones: Mapping[str, str]) -> tuple[list[tuple[int, int]], Any]:
    """The month windows the events fall in (each of their customer's timezone), in key order, and each event's
    window by its position among them."""
    import numpy as np

    zones = sorted({timezones[name] for name in columns.names})
    zone_of = np.array([zones.index(timezones[name]) for name in columns.names], np.int64)[columns.who]
    windows: list[tuple[int, int]] = []
    at = np.empty(len(columns.who), np.int64)
    for index, timezone in enumerate(zones):
        mine = zone_of == index
        instants = columns.occurred[mine]
        zone = ZoneInfo(timezone)
        found = [month_window(zone, timezone, int(instants.min()))]
        while found[-1][1] <= int(instants.max()):
            found.append(month_window(zone, timezone, found[-1][1]))
        starts = np.array([start for start, _ in found], np.int64)
        at[mine] = np.searchsorted(starts, instants, side="right") - 1 + len(windows)
        windows += found
    order = sorted(range(len(windows)), key=windows.__getitem__)
    rank = np.empty(len(windows), np.int64)
    rank[order] = np.arange(len(windows))
    return [windows[i] for i in order], rank[at]


def _copy_text(rows: list[tuple[Any, ...]], timezones: Mapping[str, str]) -> bytes:
    """``rows`` as lines of ``COPY``'s text format (made where the chunk is parsed: written row by row by the
    driver, they cost the storing process a second of every 100,000 events), each with its customer's timezone
    (as tallied) and ending with the tab before ``received_through``, which the storing transaction adds (a tab
    and a newline end every line and occur nowhere else: a value's tab, newline and backslash are escaped)."""
    escaped = _Escaped()
    lines = []
    for customer, meter, start, end, events, total, largest in rows:
        lines.append(
            f"{escaped[customer]}\t{escaped[meter]}\t{start}\t{end}\t{events}\t{_NULL if total is None else total}\t"
            f"{_NULL if largest is None else largest}\t{escaped[timezones[customer]]}\t\n"
        )
    return "".join(lines).encode()


_NULL = "\\N"


class _Escaped(dict[str, str]):
    """Texts as ``COPY``'s text format writes them (backslash, tab, newline and carriage return escaped), each
    escaped once (a chunk names each customer and meter many times)."""

    def __missing__(self, text: str) -> str:
        escaped = self[text] = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
        return escaped


def _parsed_rows(connection: Connection, parsed: Parsed) -> list[tuple[Any, ...]] | None:
    """The rows of ``parsed`` if each of its customers still has the timezone it was tallied with (read in the
    storing transaction, as :func:`rebuild` changes it); None if one changed or is gone."""
    now = timezones_of(connection, parsed.timezones)
    if any(now.get(customer) != timezone for customer, timezone in parsed.timezones.items()):
        return None
    return parsed.rows


def _added_if_unchanged(connection: Connection, parsed: Parsed, received_at: int) -> bool:
    """PostgreSQL: add the rows of ``parsed`` if each of its customers still has the timezone they were tallied
    with, in one statement that reads the timezones as it adds (its snapshot is taken under the ingestion lock,
    as :func:`rebuild`'s change of a timezone is); whether it added them. All or none: adding some, then the rest
    tallied again, would lock counters out of key order. (A read of the timezones, then the upsert: two
    statements, and the names sent twice.) Up to :data:`_FEW` rows go in the statement as values, up to
    :data:`_MANY` (an API batch's) as one JSON parameter, more (a file's chunk) through a table."""
    timezones = parsed.timezones
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if len(parsed.rows) > _MANY:
            return _copied_if_unchanged(cursor, parsed, received_at)
        rows = [(*row, received_at, timezones[row[0]]) for row in parsed.rows]
        if len(rows) > _FEW:  # one round trip (the table's path takes four)
            cursor.execute(_ADD_LISTED, (orjson.dumps(rows).decode(),))
            return bool(cursor.fetchone()[0])
        cursor.execute(
            _ADD_WHERE_UNCHANGED.format(rows=", ".join([_TYPED_ROW] * len(rows))),
            [value for row in rows for value in row],
        )
        return bool(cursor.fetchone()[0])
    finally:
        cursor.close()


def _copied_if_unchanged(cursor: Any, parsed: Parsed, received_at: int) -> bool:
    """:func:`_added_if_unchanged` of many counters: their rows, each with the timezone it was tallied in, copied
    into a temporary table (from the text its worker wrote, when the connection speaks UTF-8), then one statement
    that compares the timezones, adds the rows if none changed and empties the table."""
    cursor.execute(_CHECKED_STAGING)
    columns = f"{', '.join(_COLUMNS[:-1])}, timezone, received_through"  # (the order of :func:`_copy_text`)
    with cursor.copy(f"COPY usage_counters_checked ({columns}) FROM STDIN") as copy:
        if parsed.copy_text is not None and cursor.connection.info.encoding == "utf-8":
            copy.write(parsed.copy_text.replace(b"\t\n", b"\t%d\n" % received_at))
        else:
            timezones = parsed.timezones
            for row in parsed.rows:
                copy.write_row((*row, timezones[row[0]], received_at))
    cursor.execute(_ADD_CHECKED)
    return bool(cursor.fetchone()[0])


def _rows(tallies: dict[CounterKey, list[Any]]) -> list[tuple[Any, ...]]:
    return [
        (*key, tally[0], tally[1] if abs(tally[1]) < _LIMIT else None, tally[2])
        for key, tally in sorted(tallies.items())
    ]


def _add(connection: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Add ``rows`` (in key order, each with its ``received_through``) to their counters."""
    postgresql = is_postgresql(connection)
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if postgresql and len(rows) > _FEW:
            _copy_added(cursor, rows)
        else:
            cursor.executemany(_ADD_POSTGRESQL if postgresql else _ADD_SQLITE, rows)  # psycopg: one round trip
    finally:
        cursor.close()


_FEW = 100
_MANY = 1_000
"""PostgreSQL: up to this many counters go to their statement as JSON (1,000: 7.9 ms, the table's path 8.4 ms;
2,500: 18.8 against 17.8 ms; 5,000: 39.9 against 32 ms), more through the table."""
_SQL_TALLY = 1_000


def _sqlite_added(connection: Connection, events: Sequence[Sequence[Any]], received_at: int) -> bool:
    """SQLite, a large chunk: tally its rows in the database (one grouped ``INSERT … SELECT`` over the rowids the
    chunk was given, joined to the month windows of its customers) instead of event by event in Python. The
    chunk holds the write lock, so its rows are the last ``len(events)`` rowids, contiguous; anything unexpected
    (another count, a sum beyond 64 bits) leaves it to the Python tally: False."""
    last = connection.exec_driver_sql("SELECT coalesce(max(id), 0) FROM usage_events").scalar_one()
    first = last - len(events) + 1
    ours = connection.exec_driver_sql("SELECT count(*) FROM usage_events WHERE id >= ?", (first,)).scalar_one()
    if ours != len(events):
        return False
    spans = connection.exec_driver_sql(
        "SELECT customer, min(occurred_at), max(occurred_at) FROM usage_events WHERE id >= ? GROUP BY customer",
        (first,),
    ).all()
    windows = _Windows(timezones_of(connection, [customer for customer, _, _ in spans]))
    rows: list[tuple[str, int, int]] = []
    for customer, earliest, latest in spans:
        window = windows.of(customer, earliest)
        while window is not None:
            rows.append((customer, *window))
            window = None if latest < window[1] else windows.of(customer, window[1])
    connection.exec_driver_sql(_WINDOWS)
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    savepoint = connection.begin_nested()
    try:
        cursor.executemany("INSERT INTO temp.usage_counter_windows VALUES (?, ?, ?)", rows)
        cursor.execute(_ADD_GROUPED, (received_at, first))
    except Exception as exc:
        savepoint.rollback()
        if "integer overflow" not in str(exc).lower():  # a sum beyond 64 bits: the Python tally says NULL
            raise
        return False
    finally:
        cursor.close()
    savepoint.commit()
    connection.exec_driver_sql("DELETE FROM temp.usage_counter_windows")
    return True


_WINDOWS = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS usage_counter_windows "
    "(customer TEXT NOT NULL, window_start INTEGER NOT NULL, window_end INTEGER NOT NULL, "
    "PRIMARY KEY (customer, window_start)) WITHOUT ROWID"
)
_ADD_GROUPED = _ADD.replace(
    "VALUES ({marks})",
    "SELECT e.customer, e.meter, w.window_start, w.window_end, count(*), "
    f"CASE WHEN abs(coalesce(sum(e.value), 0)) < {_LIMIT} THEN coalesce(sum(e.value), 0) END, max(e.value), ? "
    "FROM usage_events AS e JOIN temp.usage_counter_windows AS w ON w.customer = e.customer "
    "AND e.occurred_at >= w.window_start AND e.occurred_at < w.window_end "
    "WHERE e.id >= ? GROUP BY e.customer, e.meter, w.window_start, w.window_end",
)
_STAGING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS usage_counters_staging "
    "(LIKE usage_counters INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)


def _copy_added(cursor: Any, rows: list[tuple[Any, ...]], text: bytes | None = None) -> None:
    """PostgreSQL, many counters: ``COPY`` into a temporary table, then the same upsert as one ``INSERT … SELECT``
    in key order (a statement per row costs several times as much). ``text``: the rows already in ``COPY``'s
    text format."""
    columns = ", ".join(_COLUMNS)
    cursor.execute(_STAGING)
    with cursor.copy(f"COPY usage_counters_staging ({columns}) FROM STDIN") as copy:
        if text is not None:
            copy.write(text)
        else:
            for row in rows:
                copy.write_row(row)
    cursor.execute(
        _ADD.replace(
            "VALUES ({marks})",
            f"SELECT {columns} FROM usage_counters_staging "
            # the order of the executemany path (Python sorts by code point, as collation "C" does on UTF-8)
            'ORDER BY customer_external_id COLLATE "C", meter COLLATE "C", window_start, window_end',
        )
    )
    cursor.execute("DELETE FROM usage_counters_staging")


# -- reading ----------------------------------------------------------------------------------------------


def read_counters(
    connection: Connection, customers: Iterable[str], starts: Iterable[int] | None = None
) -> dict[CounterKey, Counter]:
    """The counters of ``customers`` (only the windows starting at ``starts``, if given). Thousands of customers
    and a few starts: every counter of those starts in one read, the customers picked here."""
    c = UsageCounterRow
    statement = select(c.customer_external_id, c.meter, c.window_start, c.window_end, c.events, c.total, c.largest)
    wanted_starts = None if starts is None else sorted(set(starts))
    if wanted_starts is not None:
        statement = statement.where(c.window_start.in_(wanted_starts))
    wanted = sorted(set(customers))
    if wanted_starts is not None and len(wanted) > _ALL_CUSTOMERS:
        batches = [statement]
    else:
        batches = [
            statement.where(among(connection, c.customer_external_id, wanted[i : i + _NAMES]))
            for i in range(0, len(wanted), _NAMES)
        ]
    chosen = set(wanted)
    found: dict[CounterKey, Counter] = {}
    for batch in batches:
        for customer, meter, start, end, events, total, largest in connection.execute(batch):
            if customer in chosen:
                found[(customer, meter, start, end)] = Counter(events, total, largest)
    return found


def touched_months(connection: Connection, after: int) -> dict[str, list[Period]]:
    """The calendar months (each customer's, in its timezone) with events received after ``after`` (microseconds):
    the counters that counted one, through their ``received_through`` index — not the events."""
    c = UsageCounterRow
    statement = select(c.customer_external_id, c.window_start).where(c.received_through > after).distinct()
    starts: dict[str, set[int]] = {}
    for customer, start in connection.execute(statement):
        starts.setdefault(customer, set()).add(start)
    timezones = timezones_of(connection, starts)
    touched: dict[str, list[Period]] = {}
    for customer, found in starts.items():
        timezone = timezones.get(customer)
        if timezone is not None:  # a customer since deleted: nothing of it is evaluated
            zone = ZoneInfo(timezone)
            touched[customer] = sorted({month_of(from_epoch_us(s).astimezone(zone).date()) for s in found})
    return touched


# -- recounting -------------------------------------------------------------------------------------------


def recount(connection: Connection, customers: Iterable[str] | None = None) -> dict[CounterKey, Counter]:
    """Every counter as the stored events make it (of ``customers`` only, if given: through the aggregation
    index, for each meter they have counters of), read event by event."""
    timezones = dict(connection.execute(select(CustomerRow.external_id, CustomerRow.timezone)).all())
    windows = _Windows(timezones)
    tallies: dict[CounterKey, list[Any]] = {}
    sql = "SELECT customer, meter, occurred_at, value FROM usage_events"
    if customers is None:
        streamed = text(sql).execution_options(stream_results=True, yield_per=50_000)  # never all in memory
        for key, tally in _tally(connection.execute(streamed), windows).items():
            _merge(tallies, key, tally)
    else:
        names = sorted(set(customers))
        statement = text(f"{sql} WHERE meter IN :meters AND customer IN :names").bindparams(
            bindparam("meters", expanding=True), bindparam("names", expanding=True)
        )
        c = UsageCounterRow
        for i in range(0, len(names), _NAMES):
            batch = names[i : i + _NAMES]
            meters = connection.execute(select(c.meter).where(c.customer_external_id.in_(batch)).distinct())
            codes = sorted(meters.scalars())
            if codes:
                rows = connection.execute(statement, {"meters": codes, "names": batch})
                for key, tally in _tally(rows, windows).items():
                    _merge(tallies, key, tally)
    return {key: Counter(t[0], t[1] if abs(t[1]) < _LIMIT else None, t[2]) for key, t in tallies.items()}


def _merge(tallies: dict[CounterKey, list[Any]], key: CounterKey, tally: list[Any]) -> None:
    known = tallies.get(key)
    if known is None:
        tallies[key] = tally
        return
    known[0] += tally[0]
    known[1] += tally[1]
    if tally[2] is not None and (known[2] is None or tally[2] > known[2]):
        known[2] = tally[2]


def rebuild(connection: Connection, customers: Iterable[str] | None = None) -> int:
    """Count the counters again from the events (of ``customers`` only, if given), in the caller's transaction:
    after a timezone change, and when the counters are first made. Returns how many counters there are."""
    wanted = None if customers is None else sorted(set(customers))
    if is_postgresql(connection):
        # no chunk of events is being stored meanwhile, and none is until this transaction ends: a chunk that read
        # the customer's old timezone is committed (and recounted below), a later one reads the new timezone
        write_postgres.cutoff_now(connection)
    counted = recount(connection, wanted)
    c = UsageCounterRow
    if wanted is None:
        connection.execute(delete(c))
    else:
        for i in range(0, len(wanted), _NAMES):
            connection.execute(delete(c).where(c.customer_external_id.in_(wanted[i : i + _NAMES])))
    through = connection.execute(text("SELECT coalesce(max(received_at), 0) FROM usage_events")).scalar_one()
    rows = [
        {
            "customer_external_id": key[0],
            "meter": key[1],
            "window_start": key[2],
            "window_end": key[3],
            "events": counter.events,
            "total": counter.total,
            "largest": counter.largest,
            "received_through": through,
        }
        for key, counter in sorted(counted.items())
    ]
    if rows:
        connection.execute(c.__table__.insert(), rows)
    return len(rows)


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A counter that differs from the events: what is stored (None: no counter) and what the events make."""

    key: CounterKey
    stored: Counter | None
    counted: Counter | None


def check(connection: Connection) -> tuple[int, list[Mismatch]]:
    """Recount every counter from the events and compare: (counters compared, the ones that differ)."""
    counted = recount(connection)
    stored: dict[CounterKey, Counter] = {}
    c = UsageCounterRow
    rows = connection.execute(
        select(c.customer_external_id, c.meter, c.window_start, c.window_end, c.events, c.total, c.largest)
    )
    for customer, meter, start, end, events, total, largest in rows:
        stored[(customer, meter, start, end)] = Counter(events, total, largest)
    differ = [
        Mismatch(key, stored.get(key), counted.get(key))
        for key in sorted(set(stored) | set(counted))
        if stored.get(key) != counted.get(key)
    ]
    return len(set(stored) | set(counted)), differ


def checked(engine: Engine) -> tuple[int, list[Mismatch]]:
    """:func:`check` in a transaction of its own that sees one state of the database: the events recounted and
    the counters compared with them are of the same instant, however many chunks are stored meanwhile
    (PostgreSQL: a repeatable-read snapshot; SQLite: the write lock, held by every transaction of the engine)."""
    with engine.connect() as connection:
        if is_postgresql(connection):
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            return check(connection)
