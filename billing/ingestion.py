"""Ingestion as the orchestrator runs it: the catalog's meters, the known customers and each customer's
late-usage window handed to ``meters``. What reacts to the stored usage (thresholds: alerts follow usage, not a
schedule, and late usage too — events of last month ingested today are alerted on in last month, as long as its
invoice is not issued) runs behind it (``billing.reactions``): an API batch is answered as soon as its events are
stored, and the serving process's reactor evaluates them within a bounded delay; a file (``billing ingest``, a
batch command) evaluates everything pending in one batched pass at its end.

The late-usage window (``billing.core.periods.LATE_USAGE_MONTHS``): a billing run bills late usage of the
periods up to 12 months before its own, so an event older than the first day of the month 12 months before the
current one (in its customer's timezone) would be stored and never billed. Ingestion rejects it instead, with
that reason.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select

from billing.core.periods import Period, late_usage_start, months_between
from billing.db.tables import CustomerRow
from billing.event_store import event_store
from billing.metering import meter_specs
from billing.reactions import react_to_usage, wake
from dbkit import as_utc, cyclic_collection_paused, is_sqlite, read_only, utcnow
from meters import IngestReport
from pricing_plans.models import Catalog

__all__ = ["TRUSTED", "ingest_batch", "ingest_path", "known_customers", "late_usage_windows", "periods_touched"]


def known_customers(engine: Engine, only: Iterable[str] | None = None) -> dict[str, str]:
    """The customers events may name (all, or those among ``only``): external id → timezone."""
    if only is None:
        with read_only(engine).connect() as connection, connection.begin():  # a read: never waits for writers
            return {external_id: timezone for external_id, timezone in connection.execute(_ALL_CUSTOMERS)}
    wanted = sorted(set(only))
    found: dict[str, str] = {}
    if not wanted:
        return found
    # Asked on every API batch: through the driver, one statement per chunk of names (PostgreSQL: one in all), in
    # autocommit (SQLite's connections run a statement outside a transaction in a snapshot of its own; PostgreSQL's
    # then has no transaction to roll back when the connection goes back to the pool: a round trip saved).
    postgresql = not is_sqlite(engine)
    connection = engine.raw_connection()
    driver: Any = connection.driver_connection
    try:
        cursor = connection.cursor()
        if postgresql and not driver.autocommit:
            driver.autocommit = True
        if postgresql:
            cursor.execute("SELECT external_id, timezone FROM customers WHERE external_id = ANY(%s)", (wanted,))
            found.update(cursor.fetchall())
        for start in range(0, 0 if postgresql else len(wanted), _NAMES_PER_QUERY):
            chunk = wanted[start : start + _NAMES_PER_QUERY]
            cursor.execute(
                f"SELECT external_id, timezone FROM customers WHERE external_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            found.update(cursor.fetchall())
        cursor.close()
    finally:
        try:
            if postgresql and not driver.closed:
                driver.autocommit = False
        except Exception:  # a connection that cannot be put back as it was is not put back (the first error goes on)
            connection.invalidate()
        finally:
            connection.close()
    return found


_ALL_CUSTOMERS = select(CustomerRow.external_id, CustomerRow.timezone)
_NAMES_PER_QUERY = 900  # bound parameters per statement stay well within every database's limit


def late_usage_windows(customers: Mapping[str, str], now: dt.datetime) -> dict[str, dt.datetime]:
    """Where each customer's late-usage window begins at ``now``: local midnight of its first day, in the
    customer's timezone (``customers``: external id → timezone)."""
    by_zone: dict[str, dt.datetime] = {}
    windows: dict[str, dt.datetime] = {}
    for customer, timezone in customers.items():
        start = by_zone.get(timezone)
        if start is None:
            zone = ZoneInfo(timezone)
            start = dt.datetime.combine(late_usage_start(now.astimezone(zone).date()), dt.time(), zone)
            by_zone[timezone] = start
        windows[customer] = start
    return windows


def periods_touched(report: IngestReport, customers: Mapping[str, str]) -> dict[str, list[Period]]:
    """The calendar months (in each customer's timezone) that the events an ingestion stored fall in."""
    touched: dict[str, list[Period]] = {}
    for customer, (earliest, latest) in report.spans.items():
        timezone = customers.get(customer)
        if timezone is not None:
            zone = ZoneInfo(timezone)
            touched[customer] = months_between(earliest.astimezone(zone).date(), latest.astimezone(zone).date())
    return touched


TRUSTED = 30.0
"""Seconds an API batch trusts a customer it found. Customers are never deleted, so what a longer trust risks is
only a timezone changed meanwhile (see :func:`ingest_batch`); a shorter one costs a stream of batches over ten
thousand customers a lookup of a thousand names in each (a tenth of a batch's time on PostgreSQL)."""

_RECENT: weakref.WeakKeyDictionary[Engine, dict[str, tuple[str, float]]] = weakref.WeakKeyDictionary()
_RECENT_MOST = 100_000  # customers remembered per engine (forgotten all at once beyond it)


def _recently_known(engine: Engine, names: set[str]) -> dict[str, str]:
    """:func:`known_customers` among ``names``, those found within :data:`TRUSTED` seconds taken as found."""
    recent = _RECENT.get(engine)
    if recent is None:
        recent = _RECENT.setdefault(engine, {})
    now = time.monotonic()
    found: dict[str, str] = {}
    missing: list[str] = []
    for name in names:
        known = recent.get(name)
        if known is not None and now - known[1] < TRUSTED:
            found[name] = known[0]
        else:
            missing.append(name)
    if missing:
        fresh = known_customers(engine, missing)
        if len(recent) + len(fresh) > _RECENT_MOST:
            recent.clear()
        for name, timezone in fresh.items():
            recent[name] = (timezone, now)
        found.update(fresh)
    return found


def _touched(records: Iterable[Mapping[str, Any]]) -> set[str]:
    """The customers a batch names that the database can be asked about (text it can store: no NUL character,
    no lone surrogate); any other is unknown, and validation says so."""
    named = {r["customer"] for r in records if isinstance(r, Mapping) and isinstance(r.get("customer"), str)}
    return {customer for customer in named if "\x00" not in customer and _encodable(customer)}


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def ingest_batch(
    engine: Engine, catalog: Catalog, records: list[Mapping[str, Any]], *, now: dt.datetime | None = None
) -> IngestReport:
    """Ingest an API batch (rejections name each event's index). The thresholds of the periods its stored events
    fall in are evaluated behind it (``billing.reactions``): this process's reactor, if it runs one, is woken.

    A customer found in the database is trusted to exist, with the timezone read, for :data:`TRUSTED` seconds
    (customers are never deleted; a timezone changed meanwhile moves the late-usage window of those seconds'
    events by the difference of the two zones, and their counters are kept in the new one all the same: they
    read the timezone as they count)."""
    instant = as_utc(now or utcnow())
    customers = _recently_known(engine, _touched(records))
    report = event_store(engine).ingest(
        records, meter_specs(catalog), customers, now=instant, earliest=late_usage_windows(customers, instant)
    )
    if report.accepted:
        wake()
    return report


def ingest_path(
    engine: Engine,
    catalog: Catalog,
    source: str | os.PathLike[str] | IO[bytes],
    *,
    file_format: Any = None,
    progress: Callable[[int], None] | None = None,
    now: dt.datetime | None = None,
) -> IngestReport:
    """Ingest a JSON Lines or CSV file (``-`` for standard input), then react to the usage stored: one batched
    evaluation of the thresholds of every customer month with events received since the last reaction (this
    file's, and any other still pending)."""
    instant = as_utc(now or utcnow())
    customers = known_customers(engine)
    report = event_store(engine).ingest_file(
        source,
        meter_specs(catalog),
        customers,
        format=file_format,
        progress=progress,
        now=instant,
        earliest=late_usage_windows(customers, instant),
    )
    # Even when this file stored nothing new: an earlier ingest stopped (Ctrl-C, a kill) after storing its events
    # and before reacting leaves them pending, and its input sent again is all duplicates. (Nothing pending: one
    # indexed read.)
    with cyclic_collection_paused():  # (a batch command's pass: tens of thousands of rows, no cycles among them)
        react_to_usage(engine, catalog, now=instant, make_way=False)  # (a file's chunks held the lock longer)
    return report
