"""The event store: where usage events live, behind one interface, whatever the database.

Billing state (customers, subscriptions, invoices, the ledger) always lives in the SQL database; the usage events
live in the event store named by an ``events_url``:

- ``sqlite:///…``, ``postgresql+psycopg://…``: the SQL database's own ``usage_events`` table
  (:class:`meters.store.sql.SqlEventStore`, which runs :mod:`meters.aggregate`, :mod:`meters.split`,
  :mod:`meters.queries` and :mod:`meters.ingest`);
- ``chdb:///path/to/folder``: ClickHouse embedded in this process (chDB), its data in that folder;
  ``clickhouse://user:password@host:8123/database`` (``clickhouses://`` for TLS): a ClickHouse server or cluster
  (:class:`meters.store.clickhouse.ClickHouseEventStore`; the same SQL and table engines on both).

Every store answers alike (``tests/meters/conformance`` runs one suite against each): the same quantities to the
last digit, the same duplicates and conflicts, the same late windows.

    store = open_event_store("chdb:///var/lib/billing/events")
    store.create_tables()
    report = store.ingest(records, specs, {"acme"})
    usage = store.aggregate({"acme": (march_start_utc, april_start_utc)}, specs)
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import IO, Any, Protocol, TypeVar

from meters.aggregate import MeterAggregate, Window
from meters.events import MeterSpec
from meters.ingest import FileFormat, IngestReport, Progress
from meters.queries import CountedWindow
from meters.split import PartKey, Split

__all__ = ["CLICKHOUSE_SCHEMES", "EventStore", "is_clickhouse_url", "open_event_store"]

Key = TypeVar("Key", bound=Hashable)
Specs = Iterable[MeterSpec] | Mapping[str, MeterSpec]

CLICKHOUSE_SCHEMES = ("chdb", "clickhouse", "clickhouses")


class EventStore(Protocol):
    """Stores usage events exactly once and answers what the billing engine asks of them."""

    @property
    def url(self) -> str:
        """The store's ``events_url`` (with any password hidden)."""
        ...

    def create_tables(self) -> None:
        """Create the store's tables if they are missing (``billing db upgrade``)."""
        ...

    def ingest(
        self,
        records: Iterable[Mapping[str, Any]],
        meters: Specs,
        known_customers: Collection[str],
        *,
        source: str = "api",
        now: dt.datetime | None = None,
        earliest: Mapping[str, dt.datetime] | None = None,
    ) -> IngestReport:
        """Store a batch idempotently (see :func:`meters.ingest`): duplicates counted once and reported, an id
        already stored with other content rejected as a conflict."""
        ...

    def ingest_file(
        self,
        source: str | os.PathLike[str] | IO[bytes],
        meters: Specs,
        known_customers: Collection[str],
        *,
        format: FileFormat | None = None,
        now: dt.datetime | None = None,
        earliest: Mapping[str, dt.datetime] | None = None,
        progress: Progress | None = None,
    ) -> IngestReport:
        """Store a JSON Lines or CSV file idempotently (see :func:`meters.ingest_file`)."""
        ...

    def aggregate(
        self,
        windows: Mapping[Any, Window],
        meters: Specs,
        *,
        received_until: dt.datetime | None = None,
        received_after: dt.datetime | None = None,
    ) -> dict[tuple[Any, str], MeterAggregate]:
        """Every meter's quantity in every window (see :func:`meters.aggregate_usage`)."""
        ...

    def aggregate_split(
        self,
        windows: Mapping[Any, Window],
        meters: Specs,
        splits: Mapping[str, Split],
        *,
        received_until: dt.datetime | None = None,
        received_after: dt.datetime | None = None,
    ) -> dict[PartKey, MeterAggregate]:
        """Every split meter's usage in every window, part by part (see :func:`meters.aggregate_split_usage`)."""
        ...

    def late_windows(self, windows: Mapping[Key, CountedWindow]) -> set[Key]:
        """The keys of the windows holding an event received after their ``counted_until`` (late usage)."""
        ...

    def ingestion_cutoff(self) -> dt.datetime:
        """An instant F: every event received at or before F is stored, every event stored later is received
        after F (see :func:`meters.ingestion_cutoff`)."""
        ...

    def received_since(self, after: int) -> bool:
        """Whether any event was received after ``after`` (microseconds since the epoch)."""
        ...

    def received_spans(self, after: int, through: int) -> dict[str, tuple[dt.datetime, dt.datetime]]:
        """Per customer with events received in ``(after, through]``, the earliest and latest instant they occurred
        at (see :func:`meters.received_spans`)."""
        ...

    def last_events(self, before: Mapping[str, dt.datetime]) -> dict[str, dt.datetime]:
        """Each customer's last event instant before its instant in ``before`` (see
        :func:`meters.queries.last_events`)."""
        ...

    def meter_totals(
        self,
        customer: str,
        meters: Iterable[MeterSpec],
        start: dt.datetime,
        end: dt.datetime,
        *,
        received_after: int | None = None,
    ) -> dict[str, MeterAggregate]:
        """One customer's quantity of each meter in ``[start, end)``, for a request path (see
        :func:`meters.meter_totals`)."""
        ...

    def count_events(
        self, windows: Mapping[Key, tuple[str, dt.datetime, dt.datetime]], meters: Iterable[str]
    ) -> dict[tuple[Key, str], int]:
        """How many events of each meter each window holds (unbilled usage; see :func:`meters.count_events`)."""
        ...

    def customers_by_meter(self, customer: str | None = None) -> dict[str, set[str]]:
        """Every meter code with stored events and the customers with events of it (see
        :func:`meters.customers_by_meter`)."""
        ...

    def close(self) -> None:
        """Release the store's connections."""
        ...


def is_clickhouse_url(url: str) -> bool:
    """Whether ``url`` names a ClickHouse event store (chDB or a server)."""
    return url.split(":", 1)[0].lower() in CLICKHOUSE_SCHEMES


def open_event_store(url: str, engine: Any = None) -> EventStore:
    """The event store of ``url``. A SQL URL takes ``engine`` when given (the billing database's engine, when the
    events live beside the billing state), else an engine made for the URL."""
    if is_clickhouse_url(url):
        from meters.store.clickhouse import ClickHouseEventStore

        return ClickHouseEventStore.open(url)
    from meters.store.sql import SqlEventStore

    if engine is None:
        from sqlalchemy import create_engine

        engine = create_engine(url)
    return SqlEventStore(engine)
