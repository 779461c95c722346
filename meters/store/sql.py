"""The event store of a SQL database (SQLite, PostgreSQL): the ``usage_events`` table beside the billing state,
answered by the functions of :mod:`meters` (the unique ``event_id`` decides duplicates, transactions order the
ingestion cutoff)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import IO, Any, TypeVar

from sqlalchemy import Engine

from dbkit.dialect import read_only
from meters.aggregate import MeterAggregate, Window, aggregate_usage
from meters.events import MeterSpec
from meters.ingest import FileFormat, IngestReport, Progress, ingest, ingest_file, ingestion_cutoff
from meters.queries import (
    CountedWindow,
    count_events,
    customers_by_meter,
    last_events,
    meter_totals,
    received_since,
    received_spans,
    windows_with_late_events,
)
from meters.split import PartKey, Split, aggregate_split_usage
from meters.tables import MetersBase

__all__ = ["SqlEventStore"]

Key = TypeVar("Key", bound=Hashable)
Specs = Iterable[MeterSpec] | Mapping[str, MeterSpec]


class SqlEventStore:
    """The events in a SQL database, through ``engine`` (see :class:`meters.store.EventStore`)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def create_tables(self) -> None:
        """The SQL databases' tables come with the billing database's migrations; this creates ``usage_events``
        only where it is missing (a database of events alone)."""
        MetersBase.metadata.create_all(self.engine)

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
        return ingest(self.engine, records, meters, known_customers, source=source, now=now, earliest=earliest)

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
        return ingest_file(
            self.engine, source, meters, known_customers, format=format, now=now, earliest=earliest, progress=progress
        )

    def aggregate(
        self,
        windows: Mapping[Any, Window],
        meters: Specs,
        *,
        received_until: dt.datetime | None = None,
        received_after: dt.datetime | None = None,
    ) -> dict[tuple[Any, str], MeterAggregate]:
        return aggregate_usage(
            self.engine, windows, meters, received_until=received_until, received_after=received_after
        )

    def aggregate_split(
        self,
        windows: Mapping[Any, Window],
        meters: Specs,
        splits: Mapping[str, Split],
        *,
        received_until: dt.datetime | None = None,
        received_after: dt.datetime | None = None,
    ) -> dict[PartKey, MeterAggregate]:
        return aggregate_split_usage(
            self.engine, windows, meters, splits, received_until=received_until, received_after=received_after
        )

    def late_windows(self, windows: Mapping[Key, CountedWindow]) -> set[Key]:
        with read_only(self.engine).connect() as connection, connection.begin():
            return windows_with_late_events(connection, windows)

    def ingestion_cutoff(self) -> dt.datetime:
        return ingestion_cutoff(self.engine)

    def received_since(self, after: int) -> bool:
        with read_only(self.engine).connect() as connection, connection.begin():
            return received_since(connection, after)

    def received_spans(self, after: int, through: int) -> dict[str, tuple[dt.datetime, dt.datetime]]:
        with read_only(self.engine).connect() as connection, connection.begin():
            return received_spans(connection, after, through)

    def last_events(self, before: Mapping[str, dt.datetime]) -> dict[str, dt.datetime]:
        return last_events(self.engine, before)

    def meter_totals(
        self,
        customer: str,
        meters: Iterable[MeterSpec],
        start: dt.datetime,
        end: dt.datetime,
        *,
        received_after: int | None = None,
    ) -> dict[str, MeterAggregate]:
        return meter_totals(self.engine, customer, meters, start, end, received_after=received_after)

    def count_events(
        self, windows: Mapping[Key, tuple[str, dt.datetime, dt.datetime]], meters: Iterable[str]
    ) -> dict[tuple[Key, str], int]:
        return count_events(self.engine, windows, meters)

    def customers_by_meter(self, customer: str | None = None) -> dict[str, set[str]]:
        return customers_by_meter(self.engine, customer)

    def close(self) -> None:
        """The engine belongs to whoever made it: nothing to release here."""
