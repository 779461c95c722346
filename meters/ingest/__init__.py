"""Idempotent ingestion of usage events: an API batch (:func:`ingest`) or a JSON Lines / CSV file
(:func:`ingest_file`).

read → validate → store, chunk by chunk:

- read and validate (``read``): a record per line (JSONL) or row (CSV), each with its line number (file) or
  index (batch), validated by :class:`meters.events.EventValidator` (with each customer's late-usage window,
  when the caller gives it: ``earliest``); a bad event becomes a :class:`Rejection` with its reason, and the
  good events of the same input are still stored. A large JSON Lines file is parsed
  by forked worker processes (``parallel``) while this thread stores the chunks they hand back, in file order;
- store: up to ``chunk_size`` events per transaction with ``INSERT … ON CONFLICT (event_id) DO NOTHING``; the
  ids the database refused are looked up and classified by content hash: the same content is a *duplicate*
  (counted once, reported), another content a *conflict* (rejected). PostgreSQL gets each chunk by ``COPY``
  (``write_postgres``); SQLite by one ``executemany`` in a ``BEGIN IMMEDIATE`` transaction (``write_sqlite``).
  The database enforces the unique ``event_id``, so re-ingesting a file, or two processes ingesting it at
  once, never stores an event twice.

Whatever must change with the events stored (the orchestrator's usage counters) is done in the chunk's own
transaction: the ``meters_on_stored`` execution option of the engine, if set, is called as
``on_stored(connection, events, received_at, summary)`` with the events the chunk inserted (not its duplicates,
not its conflicts) once they are stored, before the transaction commits. A JSON Lines file parsed by worker
processes can have that work begun there: the ``meters_on_parsed`` execution option, if set, is called in the
worker as ``on_parsed(events, known_customers)`` with each chunk's valid events, and what it returns is handed to
``on_stored`` as ``summary`` when every one of them was inserted (else ``summary`` is None: the summary is of
events that were not all stored). An API batch's chunks are handed to it too, in process, before they are stored.

A chunk's outcome (its accepted events, duplicates and rejections) is reported only once its transaction is
over, so the report always says exactly what is stored. If storing fails part-way, :class:`IngestInterrupted`
carries the report of every chunk that was settled and the first line that was not; ingesting the same input
again is safe.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import IO, Any, Protocol

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from dbkit.clock import utcnow
from dbkit.collection import cyclic_collection_paused
from dbkit.dialect import is_postgresql
from meters.errors import IngestInterrupted, MalformedFileError
from meters.events import EventValidator, MeterSpec, from_epoch_us, meters_by_code
from meters.ingest import write_postgres, write_sqlite
from meters.ingest.parallel import jsonl_chunks
from meters.ingest.read import (
    CUSTOMER,
    HASH,
    ID,
    OCCURRED_AT,
    Chunk,
    FileFormat,
    Lines,
    Rejection,
    batch_chunks,
    csv_entries,
    describe,
    open_source,
    rejection,
    validated_chunks,
    widen,
)

__all__ = [
    "CHUNK_SIZE",
    "ON_PARSED",
    "ON_STORED",
    "ChunkStore",
    "FileFormat",
    "IngestReport",
    "Progress",
    "Rejection",
    "ingest",
    "ingest_file",
    "ingestion_cutoff",
]

CHUNK_SIZE = 100_000
"""Events (file: lines) per transaction."""

Progress = Callable[[int], None]
"""Called now and then with the number of bytes of the input settled so far."""

_RETRIES = 3

_BY_ID = itemgetter(ID)  # (a valid event's id is text)

ON_STORED = "meters_on_stored"
"""The execution option naming what to call, in each chunk's transaction, with the events the chunk inserted."""
ON_PARSED = "meters_on_parsed"
"""The execution option naming what to call in a parsing worker with each chunk's events (its result is the
``summary`` handed to ``on_stored``)."""


@dataclass
class IngestReport:
    """What an ingestion did.

    Attributes:
      source: what was ingested (a file name, ``<stdin>``, ``api``).
      accepted: events stored now.
      duplicates: events already stored with the same content (not counted again).
      rejected: the events not stored (invalid, or a conflicting id), in input order.
      duplicate_lines: which events were duplicates, by index (API batches only, :func:`ingest`; a file's
        duplicates are counted, not listed).
      spans: for each customer with events stored now, an interval (UTC) that covers their timestamps: the
        billing periods the ingestion changed lie in it. It may be wider than the customer's own events (a
        large input is bounded stretch by stretch), never narrower.
    """

    source: str
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    spans: dict[str, tuple[dt.datetime, dt.datetime]] = field(default_factory=dict)
    duplicate_lines: list[int] = field(default_factory=list)

    def summary(self) -> str:
        return f"accepted {self.accepted}, duplicates {self.duplicates}, rejected {len(self.rejected)}"


def ingest(
    engine: Engine | ChunkStore,
    records: Iterable[Mapping[str, Any]],
    meters: Iterable[MeterSpec] | Mapping[str, MeterSpec],
    known_customers: Collection[str],
    *,
    source: str = "api",
    now: dt.datetime | None = None,
    earliest: Mapping[str, dt.datetime] | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> IngestReport:
    """Ingest a batch of events (mappings, e.g. parsed JSON objects) into a SQL database (``engine``) or another
    event store (a :class:`ChunkStore`, see ``meters.store``); rejections name each event's index.

    ``earliest``: where each customer's late-usage window begins; an older event is rejected (see
    :class:`EventValidator`)."""
    validator = EventValidator(meters, known_customers, now or utcnow(), earliest)
    chunks = batch_chunks(validator, records if isinstance(records, list) else list(records), chunk_size)
    on_parsed = engine.get_execution_options().get(ON_PARSED) if isinstance(engine, Engine) else None
    if on_parsed is not None:
        chunks = _summarized(chunks, on_parsed, known_customers)
    return _Ingestion(engine, source, list_duplicates=True).run(chunks)


def _summarized(chunks: Iterator[Chunk], on_parsed: Callable[..., object], known: object) -> Iterator[Chunk]:
    """The chunks, each with what ``on_parsed`` makes of its events (as a file's parsing worker does)."""
    for chunk in chunks:
        if chunk.events:
            chunk.summary = on_parsed(chunk.events, known)
        yield chunk


def ingest_file(
    engine: Engine | ChunkStore,
    source: str | os.PathLike[str] | IO[bytes],
    meters: Iterable[MeterSpec] | Mapping[str, MeterSpec],
    known_customers: Collection[str],
    *,
    format: FileFormat | None = None,
    now: dt.datetime | None = None,
    earliest: Mapping[str, dt.datetime] | None = None,
    progress: Progress | None = None,
    chunk_size: int = CHUNK_SIZE,
    workers: int | None = None,
) -> IngestReport:
    """Ingest a JSON Lines or CSV file (a path, ``"-"`` for standard input, or a binary stream).

    ``format`` defaults to ``csv`` for a ``.csv`` file and ``jsonl`` otherwise. A CSV file starts with a header
    naming its columns: ``id``, ``customer``, ``meter``, ``timestamp`` (required), ``value``, ``properties`` (a
    JSON object) and ``properties.<name>`` (one property per column). Raises :class:`MalformedFileError`, before
    storing anything, when the header is wrong. ``workers``: parsing processes (forked) for a JSON Lines file of
    more than one chunk (default: one per CPU but one, two on a machine of two, at most 4; 0, or a process running
    several threads, parses in this process). ``earliest``: where each customer's late-usage window begins; an
    older event is rejected (see :class:`EventValidator`).
    """
    name, fmt = describe(source, format)
    settings = (meters_by_code(meters), known_customers, now or utcnow(), earliest)
    # A file's chunks: many objects, no cycles (not an API batch's: in a server, measured, pausing the collector
    # around each batch and leaving it to the threads in between cost more than it saved)
    with open_source(source) as stream, cyclic_collection_paused():
        if fmt == "csv":
            lines = Lines(stream)
            chunks = validated_chunks(EventValidator(*settings), csv_entries(lines, name), chunk_size, "line")
            return _Ingestion(engine, name, progress, lambda: lines.bytes).run(chunks)
        if workers is None:
            workers = _default_workers(os.cpu_count() or 1)
        on_parsed = engine.get_execution_options().get(ON_PARSED) if isinstance(engine, Engine) else None
        chunks = jsonl_chunks(stream, settings, chunk_size, workers, on_parsed)
        return _Ingestion(engine, name, progress).run(chunks)


def _default_workers(cpus: int) -> int:
    """Parsing processes beside the storing one: a line takes longer to parse than to store, so a machine of two
    CPUs runs two (the storing process waits less for chunks than the three share the CPUs: measured on a
    million-line file); a machine of one parses in process."""
    return 0 if cpus < 2 else min(4, max(2, cpus - 1))


class ChunkStore(Protocol):
    """An event store that is not a SQL database (``meters.store``): stores a chunk of events on its own."""

    def store_chunk(self, events: list[tuple[Any, ...]]) -> dict[str, int]:
        """Store ``events`` (``UsageEvent`` tuples); the ids that were already stored, with their content hashes."""
        ...


class _ChunkWriter(Protocol):
    """Stores a chunk of events in the connection's transaction (``write_sqlite``, ``write_postgres``)."""

    def store(self, connection: Connection, events: list[tuple[Any, ...]]) -> tuple[int, dict[str, int]]:
        """Store ``events``: their ``received_at`` (microseconds since the epoch, ordered with any ingestion
        cutoff), and the ids that were already stored, with their content hashes."""
        ...


class _Ingestion:
    """Stores chunks one after the other and keeps the report of the settled ones."""

    def __init__(
        self,
        engine: Engine | ChunkStore,
        source: str,
        progress: Progress | None = None,
        bytes_read: Callable[[], int] | None = None,
        *,
        list_duplicates: bool = False,
    ):
        self.engine = engine
        self.list_duplicates = list_duplicates
        self.report = IngestReport(source=source)
        self.spans: dict[str, list[int]] = {}  # of the events stored now, in µs
        self.progress = progress
        self.bytes_read = bytes_read
        self.bytes_settled = 0
        self.chunk_store = None if isinstance(engine, Engine) else engine
        self.write: _ChunkWriter = (
            write_postgres.PostgresWriter()
            if isinstance(engine, Engine) and is_postgresql(engine)
            else write_sqlite.SqliteWriter()
        )

    def run(self, chunks: Iterator[Chunk]) -> IngestReport:
        next_line = 0  # the first line (index) whose fate is not settled
        try:
            for chunk in chunks:
                next_line = chunk.first_line
                self._settle(chunk, self._store(chunk.events, chunk.summary))
                next_line = chunk.last_line + 1
        except MalformedFileError:
            raise
        except BaseException as exc:
            cause = exc.__cause__ if isinstance(exc, _WriteFailed) and exc.__cause__ is not None else exc
            self._finish()
            raise IngestInterrupted(self.report, next_line, cause) from cause
        self._finish()
        return self.report

    def _finish(self) -> None:
        self.report.rejected.sort(key=lambda rejection: rejection.line)
        self.report.duplicate_lines.sort()
        self.report.spans = {
            customer: (from_epoch_us(earliest), from_epoch_us(latest))
            for customer, (earliest, latest) in sorted(self.spans.items())
        }

    def _store(self, events: list[tuple[Any, ...]], summary: object = None) -> dict[str, int]:
        """Store ``events`` in one transaction; the ids that were already stored, with their content hashes.
        ``summary``: what ``on_parsed`` made of them (handed to ``on_stored`` if all of them are inserted)."""
        if not events:
            return {}
        # Stored in the order of their ids, on every backend: events of one chunk share their received_at, so a
        # tie of ``latest`` (one instant) goes to the greatest id, whatever the writer (PostgreSQL's inserts take
        # the unique index's locks in id order) and whatever the store
        events = sorted(events, key=_BY_ID)
        if self.chunk_store is not None:
            try:
                return self.chunk_store.store_chunk(events)
            except Exception as exc:
                raise _WriteFailed() from exc
        assert isinstance(self.engine, Engine)
        attempt = 0
        while True:
            attempt += 1
            try:
                with self.engine.connect() as connection, connection.begin():
                    received_at, stored = self.write.store(connection, events)
                    on_stored = connection.get_execution_options().get(ON_STORED)
                    if on_stored is not None:
                        if stored:
                            on_stored(connection, [e for e in events if e[ID] not in stored], received_at, None)
                        else:
                            on_stored(connection, events, received_at, summary)
                    return stored
            except Exception as exc:
                if attempt < _RETRIES and _is_transient(exc):
                    time.sleep(0.05 * attempt)
                    continue
                raise _WriteFailed() from exc

    def _settle(self, chunk: Chunk, stored: dict[str, int]) -> None:
        """Count the chunk's events as accepted, duplicates or conflicts, now that its transaction is over."""
        report = self.report
        report.rejected += chunk.rejections
        if not stored:
            report.accepted += len(chunk.events)
            for customer, (earliest, latest) in chunk.spans.items():
                widen(self.spans, customer, earliest, latest)
        else:
            for index, event in enumerate(chunk.events):
                stored_hash = stored.get(event[ID])
                if stored_hash is None:
                    report.accepted += 1
                    widen(self.spans, event[CUSTOMER], event[OCCURRED_AT], event[OCCURRED_AT])
                elif stored_hash == event[HASH]:
                    self._duplicate(chunk.lines[index])
                else:
                    report.rejected.append(
                        rejection(chunk.lines[index], event[ID], _conflict(event[ID]), chunk.raw(index))
                    )
        for line, raw, event, position in chunk.repeats:
            stored_hash = stored.get(event[ID])
            if stored_hash is None:  # the chunk's first event with this id was stored now
                stored_hash = chunk.events[position][HASH]
                reason = (
                    f"conflict: id {event[ID]!r} is used by {chunk.position} {chunk.lines[position]} "
                    "with other content"
                )
            else:
                reason = _conflict(event[ID])
            if stored_hash == event[HASH]:
                self._duplicate(line)
            else:
                report.rejected.append(rejection(line, event[ID], reason, raw))
        if self.progress is not None:
            self.bytes_settled += chunk.size
            self.progress(self.bytes_read() if self.bytes_read is not None else self.bytes_settled)

    def _duplicate(self, line: int) -> None:
        self.report.duplicates += 1
        if self.list_duplicates:
            self.report.duplicate_lines.append(line)


class _WriteFailed(Exception):
    """A chunk could not be stored (the database error is its ``__cause__``)."""


def _conflict(event_id: str) -> str:
    return f"conflict: id {event_id!r} was already ingested with other content"


def _is_transient(exc: Exception) -> bool:
    """Deadlocks and serialization failures (PostgreSQL) are worth another try."""
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    return getattr(original, "sqlstate", None) in {"40001", "40P01"}


def ingestion_cutoff(engine: Engine) -> dt.datetime:
    """An instant F such that every event received at or before F is already committed, and every event stored
    later is received after F: the cutoff a billing run gives ``aggregate_usage(received_until=F)`` when it
    finalizes a period, so that the events it did not count are exactly those with ``received_after=F`` (late).

    Waits for the chunks being stored at that moment (a fraction of a second), then reads the clock that
    ingestion stamps ``received_at`` with.
    """
    if is_postgresql(engine):
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            now = write_postgres.cutoff_at_once(connection)
    else:
        with engine.connect() as connection, connection.begin():
            now = write_sqlite.cutoff_now(connection)
    return from_epoch_us(now)
