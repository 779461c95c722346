"""Idempotent ingestion of usage events: an API batch (:func:`ingest`) or a JSON Lines / CSV file
(:func:`ingest_file`).

read → validate → store, chunk by chunk:

- read: a record per line (JSONL) or row (CSV), each with its line number (file) or index (batch);
- validate: :class:`meters.events.EventValidator`; a bad event becomes a :class:`Rejection` with its reason, and
  the good events of the same input are still stored;
- store: up to ``chunk_size`` events per transaction with ``INSERT … ON CONFLICT (event_id) DO NOTHING``; the
  ids the database refused are looked up and classified by content hash: the same content is a *duplicate*
  (counted once, reported), another content a *conflict* (rejected). PostgreSQL gets each chunk by ``COPY`` into
  a temporary staging table, then ``INSERT … SELECT … ORDER BY event_id ON CONFLICT DO NOTHING RETURNING``;
  SQLite by one ``executemany`` in a ``BEGIN IMMEDIATE`` transaction. The database enforces the unique
  ``event_id``, so re-ingesting a file, or two processes ingesting it at once, never stores an event twice.

A chunk's outcome (its accepted events, duplicates and rejections) is reported only once its transaction is
over, so the report always says exactly what is stored. If storing fails part-way, :class:`IngestInterrupted`
carries the report of every chunk that was settled and the first line that was not; ingesting the same input
again is safe.

A large JSON Lines file is parsed and validated by worker processes (one per spare CPU) while the calling
thread stores the chunks they hand back, in file order: parsing and storing each take about one core.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gc
import json
import multiprocessing
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import IO, Any, Literal

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from meters.errors import EventError, IngestInterrupted, MalformedFileError
from meters.events import (
    EVENT_FIELDS,
    EventValidator,
    MeterSpec,
    from_epoch_us,
    meters_by_code,
    parse_json_line,
    to_epoch_us,
)

__all__ = [
    "CHUNK_SIZE",
    "FileFormat",
    "IngestReport",
    "Progress",
    "Rejection",
    "ingest",
    "ingest_file",
    "ingestion_cutoff",
]

CHUNK_SIZE = 50_000
"""Events (file: lines) per transaction."""

FileFormat = Literal["jsonl", "csv"]
Progress = Callable[[int], None]
"""Called now and then with the number of bytes of the input settled so far."""

_COLUMNS = "event_id, customer, meter, occurred_at, value, unique_value, properties, content_hash"
_ID, _HASH = 0, 7  # positions in a UsageEvent
_CSV_REQUIRED = ("id", "customer", "meter", "timestamp")
_RETRIES = 3
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event that was not stored, and why.

    Attributes:
      line: where it came from: the line number in a file (1-based; a CSV record's first line) or the index in
        an API batch (0-based).
      event_id: its id when it could be read, else None.
      reason: why it was rejected (every problem found, joined by "; ").
      raw: the input as read: the JSONL line, the CSV record's text, or the batch record as JSON.
    """

    line: int
    event_id: str | None
    reason: str
    raw: str

    def as_json(self) -> str:
        """One line of a rejects file."""
        return json.dumps(
            {"line": self.line, "event_id": self.event_id, "reason": self.reason, "raw": self.raw},
            ensure_ascii=False,
        )


@dataclass
class IngestReport:
    """What an ingestion did.

    Attributes:
      source: what was ingested (a file name, ``<stdin>``, ``api``).
      accepted: events stored now.
      duplicates: events already stored with the same content (not counted again).
      rejected: the events not stored (invalid, or a conflicting id), in input order.
    """

    source: str
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def summary(self) -> str:
        return f"accepted {self.accepted}, duplicates {self.duplicates}, rejected {len(self.rejected)}"


def ingest(
    engine: Engine,
    records: Iterable[Mapping[str, Any]],
    meters: Iterable[MeterSpec] | Mapping[str, MeterSpec],
    known_customers: Collection[str],
    *,
    source: str = "api",
    now: dt.datetime | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> IngestReport:
    """Ingest a batch of events (mappings, e.g. parsed JSON objects); rejections name each event's index."""
    validator = EventValidator(meters, known_customers, now or dt.datetime.now(dt.UTC))

    def entries() -> Iterator[_Entry]:
        for index, record in enumerate(records):
            if isinstance(record, Mapping):
                yield index, record, record
            else:
                yield index, record, EventError(f"not an object (got {type(record).__name__})")

    chunks = _chunks(validator, entries(), chunk_size, "index")
    return _Ingestion(engine, source).run(chunks)


def ingest_file(
    engine: Engine,
    source: str | os.PathLike[str] | IO[bytes],
    meters: Iterable[MeterSpec] | Mapping[str, MeterSpec],
    known_customers: Collection[str],
    *,
    format: FileFormat | None = None,
    now: dt.datetime | None = None,
    progress: Progress | None = None,
    chunk_size: int = CHUNK_SIZE,
    workers: int | None = None,
) -> IngestReport:
    """Ingest a JSON Lines or CSV file (a path, ``"-"`` for standard input, or a binary stream).

    ``format`` defaults to ``csv`` for a ``.csv`` file and ``jsonl`` otherwise. A CSV file starts with a header
    naming its columns: ``id``, ``customer``, ``meter``, ``timestamp`` (required), ``value``, ``properties`` (a
    JSON object) and ``properties.<name>`` (one property per column). Raises :class:`MalformedFileError`, before
    storing anything, when the header is wrong. ``workers``: parsing processes (forked) for a JSON Lines file of
    more than one chunk (default: one per CPU but one, at most 4; 0, or a process running several threads,
    parses in this process).
    """
    name, fmt = _describe(source, format)
    settings = (meters_by_code(meters), known_customers, now or dt.datetime.now(dt.UTC))
    with _open(source) as stream:
        if fmt == "csv":
            lines = _Lines(stream)
            chunks = _chunks(EventValidator(*settings), _csv_entries(lines, name), chunk_size, "line")
            return _Ingestion(engine, name, progress, lambda: lines.bytes).run(chunks)
        if workers is None:
            workers = min(4, (os.cpu_count() or 1) - 1)
        chunks = _jsonl_chunks(stream, settings, chunk_size, workers)
        return _Ingestion(engine, name, progress).run(chunks)


# -- reading ---------------------------------------------------------------------------------------------

_Entry = tuple[int, object, "Mapping[str, Any] | EventError"]
"""One record read from the input: its line (or index), its raw form, and the record or why it can't be read."""


def _describe(source: str | os.PathLike[str] | IO[bytes], fmt: FileFormat | None) -> tuple[str, FileFormat]:
    if isinstance(source, str | os.PathLike):
        name = "<stdin>" if str(source) == "-" else str(source)
    else:
        name = str(getattr(source, "name", "<stream>"))
    if fmt is None:
        fmt = "csv" if name.lower().endswith(".csv") else "jsonl"
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"unknown format {fmt!r} (jsonl or csv)")
    return name, fmt


@contextlib.contextmanager
def _open(source: str | os.PathLike[str] | IO[bytes]) -> Iterator[IO[bytes]]:
    if isinstance(source, str | os.PathLike):
        if str(source) == "-":
            yield sys.stdin.buffer
            return
        with Path(source).open("rb") as stream:
            yield stream
        return
    yield source


def _decode(data: bytes) -> tuple[str, bool]:
    """A line's text without its line break, and whether it was valid UTF-8."""
    try:
        return data.decode("utf-8").rstrip("\r\n"), True
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace").rstrip("\r\n"), False


class _Lines:
    """A CSV input's lines, decoded; counts lines and bytes, and keeps the lines of the record being read."""

    def __init__(self, stream: IO[bytes]):
        self.stream = iter(stream)
        self.number = 0
        self.bytes = 0
        self.pending: list[str] = []
        self.invalid = False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        data = next(self.stream)
        self.number += 1
        self.bytes += len(data)
        if self.number == 1 and data.startswith(_BOM):
            data = data[len(_BOM) :]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("utf-8", "replace")
            self.invalid = True
        self.pending.append(text)
        return text

    def take(self) -> tuple[int, str, bool]:
        """The record just read: its first line number, its text (without the final line break), and whether
        it was valid UTF-8."""
        first = self.number - len(self.pending) + 1
        text = "".join(self.pending).rstrip("\r\n")
        valid = not self.invalid
        self.pending.clear()
        self.invalid = False
        return first, text, valid


def _csv_entries(lines: _Lines, name: str) -> Iterator[_Entry]:
    reader = csv.reader(lines, strict=True)
    header: list[str] | None = None
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            number, text, _ = lines.take()
            if header is None:
                raise MalformedFileError(f"{name}:{number}: the CSV header cannot be read: {exc}") from None
            yield number, text, EventError(f"not CSV: {exc}")
            continue
        number, text, valid = lines.take()
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if header is None:
            header = _csv_header(row, name, number)
            continue
        if not valid:
            yield number, text, EventError("not valid UTF-8")
            continue
        try:
            yield number, text, _csv_record(header, row)
        except EventError as error:
            if "id" in header and len(row) > header.index("id"):
                error.event_id = row[header.index("id")] or None
            yield number, text, error


def _csv_header(row: list[str], name: str, number: int) -> list[str]:
    header = [cell.strip() for cell in row]
    problems = []
    for column in header:
        if column not in EVENT_FIELDS and not (column.startswith("properties.") and len(column) > len("properties.")):
            problems.append(f"unknown column {column!r}")
    problems += [f"column {column!r} appears twice" for column in sorted(set(header)) if header.count(column) > 1]
    problems += [f"missing column {column!r}" for column in _CSV_REQUIRED if column not in header]
    if problems:
        allowed = ", ".join(EVENT_FIELDS) + ", properties.<name>"
        raise MalformedFileError(f"{name}:{number}: bad CSV header: {'; '.join(problems)} (columns: {allowed})")
    return header


def _csv_record(header: list[str], row: list[str]) -> dict[str, Any]:
    if len(row) != len(header):
        raise EventError(f"expected {len(header)} fields (as in the header), got {len(row)}")
    record: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    for column, cell in zip(header, row, strict=True):
        if cell == "":
            continue
        if column == "properties":
            try:
                parsed = json.loads(cell)
            except ValueError:
                raise EventError("'properties' must be a JSON object of strings (not JSON)") from None
            if not isinstance(parsed, dict):
                raise EventError("'properties' must be a JSON object of strings")
            for key, value in parsed.items():
                if key in properties:
                    raise EventError(f"property {key!r} given twice")
                properties[key] = value
        elif column.startswith("properties."):
            key = column[len("properties.") :]
            if key in properties:
                raise EventError(f"property {key!r} given twice")
            properties[key] = cell
        else:
            record[column] = cell
    if properties:
        record["properties"] = properties
    return record


# -- validating: records → chunks ------------------------------------------------------------------------


@dataclass
class _Chunk:
    """The validated events of a stretch of the input, stored together, and the rejections found in it.

    ``events`` are UsageEvents as plain tuples (cheap to hand from a worker process). An id met again in the
    same stretch waits in ``repeats`` (line, raw, event, position of the first one) until the first is settled.
    A worker does not send the raw lines back: ``block`` (the stretch's lines, kept by the reader) has them.
    """

    first_line: int
    last_line: int = -1
    events: list[tuple[Any, ...]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    raws: list[object] | None = field(default_factory=list)
    repeats: list[tuple[int, object, tuple[Any, ...], int]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    position: str = "line"
    block: list[bytes] | None = None
    size: int = 0  # bytes of input

    def raw(self, index: int) -> object:
        if self.raws is not None:
            return self.raws[index]
        assert self.block is not None
        return _decode(self.block[self.lines[index] - self.first_line])[0]


class _ChunkBuilder:
    """Validates records one by one into a chunk."""

    def __init__(self, validator: EventValidator, first_line: int, position: str, keep_raw: bool = True):
        self.validate = validator.validate
        self.chunk = _Chunk(first_line, position=position, raws=[] if keep_raw else None)
        self.first: dict[str, int] = {}
        self.count = 0

    def add(self, line: int, raw: object, record: Mapping[str, Any] | EventError) -> None:
        chunk = self.chunk
        chunk.last_line = line
        self.count += 1
        if isinstance(record, EventError):
            chunk.rejections.append(_rejection(line, record.event_id, str(record), raw))
            return
        try:
            event = self.validate(record)
        except EventError as error:
            event_id = record.get("id")
            chunk.rejections.append(_rejection(line, event_id if isinstance(event_id, str) else None, str(error), raw))
            return
        events = chunk.events
        position = self.first.setdefault(event[_ID], len(events))
        if position == len(events):
            events.append(tuple(event))
            chunk.lines.append(line)
            if chunk.raws is not None:
                chunk.raws.append(raw)
        else:
            chunk.repeats.append((line, raw, tuple(event), position))


def _rejection(line: int, event_id: str | None, reason: str, raw: object) -> Rejection:
    if not isinstance(raw, str):
        raw = json.dumps(raw, ensure_ascii=False, default=str)
    return Rejection(line, event_id, reason, raw)


def _chunks(validator: EventValidator, entries: Iterator[_Entry], size: int, position: str) -> Iterator[_Chunk]:
    """Entries validated in this process, ``size`` at a time."""
    builder: _ChunkBuilder | None = None
    for line, raw, record in entries:
        if builder is None:
            builder = _ChunkBuilder(validator, line, position)
        builder.add(line, raw, record)
        if builder.count >= size:
            yield builder.chunk
            builder = None
    if builder is not None:
        yield builder.chunk


def _jsonl_block(validator: EventValidator, first_line: int, block: list[bytes], keep_raw: bool) -> _Chunk:
    """Parse and validate a stretch of JSON Lines (``block[0]`` is line ``first_line``).

    The hot loop of a file ingestion: the common case (a valid event whose id is new in the chunk) is inlined;
    everything else goes through :meth:`_ChunkBuilder.add`, which does the same.
    """
    builder = _ChunkBuilder(validator, first_line, "line", keep_raw)
    chunk = builder.chunk
    add, validate, first = builder.add, validator.validate, builder.first
    events, lines, raws = chunk.events, chunk.lines, chunk.raws
    for number, data in enumerate(block, first_line):
        try:
            text = data.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            add(number, data.decode("utf-8", "replace").rstrip("\r\n"), EventError("not valid UTF-8"))
            continue
        if not text or text.isspace():
            continue
        try:
            record = parse_json_line(text)
        except EventError as error:
            add(number, text, error)
            continue
        try:
            event = validate(record)
        except EventError:
            add(number, text, record)  # validates again, to report the problem
            continue
        position = first.setdefault(event[_ID], len(events))
        if position != len(events):
            chunk.repeats.append((number, text, tuple(event), position))
            continue
        events.append(tuple(event))
        lines.append(number)
        if raws is not None:
            raws.append(text)
    chunk.last_line = first_line + len(block) - 1
    return chunk


def _jsonl_blocks(stream: IO[bytes], size: int) -> Iterator[tuple[int, list[bytes]]]:
    number = 1
    lines = iter(stream)
    while block := list(islice(lines, size)):
        if number == 1 and block[0].startswith(_BOM):
            block[0] = block[0][len(_BOM) :]
        yield number, block
        number += len(block)


_Settings = tuple[dict[str, MeterSpec], Collection[str], dt.datetime]
_worker_validator: EventValidator | None = None


def _can_fork() -> bool:
    """Forking is safe here: the platform has it and this process runs one thread (a lock held by another
    thread at the fork would stay held for ever in the child)."""
    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


def _start_worker(settings: _Settings) -> None:
    global _worker_validator
    # The child inherited the parent's objects, database connections among them: never collect them here (a
    # collected connection would close the parent's socket or file).
    gc.freeze()
    _worker_validator = EventValidator(*settings)


def _jsonl_block_in_worker(first_line: int, block: list[bytes]) -> _Chunk:
    assert _worker_validator is not None
    return _jsonl_block(_worker_validator, first_line, block, keep_raw=False)


def _jsonl_chunks(stream: IO[bytes], settings: _Settings, size: int, workers: int) -> Iterator[_Chunk]:
    """A JSON Lines input, chunk by chunk, in order; validated by worker processes when it is more than one
    chunk long and ``workers`` > 0, so that the caller stores a chunk while the next ones are parsed."""
    blocks = _jsonl_blocks(stream, size)
    head = list(islice(blocks, 2))
    if len(head) < 2 or workers <= 0 or not _can_fork():
        validator = EventValidator(*settings)
        for first_line, block in chain(head, blocks):
            chunk = _jsonl_block(validator, first_line, block, keep_raw=True)
            chunk.size = sum(map(len, block))
            yield chunk
        return
    # fork, not spawn: spawn would run the caller's main module again in each worker. The workers only parse
    # (every module they need is already imported) and never touch the parent's database connections.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(settings,)) as pool:
        in_flight: deque[tuple[Future[_Chunk], list[bytes]]] = deque()
        try:
            for first_line, block in chain(head, blocks):
                in_flight.append((pool.submit(_jsonl_block_in_worker, first_line, block), block))
                if len(in_flight) > workers:
                    yield _received(*in_flight.popleft())
            while in_flight:
                yield _received(*in_flight.popleft())
        finally:
            for future, _ in in_flight:
                future.cancel()


def _received(future: Future[_Chunk], block: list[bytes]) -> _Chunk:
    chunk = future.result()
    chunk.block = block
    chunk.size = sum(map(len, block))
    return chunk


# -- storing ---------------------------------------------------------------------------------------------


class _Ingestion:
    """Stores chunks one after the other and keeps the report of the settled ones."""

    def __init__(
        self,
        engine: Engine,
        source: str,
        progress: Progress | None = None,
        bytes_read: Callable[[], int] | None = None,
    ):
        self.engine = engine
        self.report = IngestReport(source=source)
        self.progress = progress
        self.bytes_read = bytes_read
        self.bytes_settled = 0
        self.write = _PostgresWriter() if engine.dialect.name == "postgresql" else _write_sqlite

    def run(self, chunks: Iterator[_Chunk]) -> IngestReport:
        next_line = 0  # the first line (index) whose fate is not settled
        try:
            for chunk in chunks:
                next_line = chunk.first_line
                self._settle(chunk, self._store(chunk.events))
                next_line = chunk.last_line + 1
        except MalformedFileError:
            raise
        except BaseException as exc:
            cause = exc.__cause__ if isinstance(exc, _WriteFailed) and exc.__cause__ is not None else exc
            self._sort()
            raise IngestInterrupted(self.report, next_line, cause) from cause
        self._sort()
        return self.report

    def _sort(self) -> None:
        self.report.rejected.sort(key=lambda rejection: rejection.line)

    def _store(self, events: list[tuple[Any, ...]]) -> dict[str, int]:
        """Store ``events`` in one transaction; the ids that were already stored, with their content hashes."""
        if not events:
            return {}
        attempt = 0
        while True:
            attempt += 1
            try:
                with self.engine.connect() as connection, connection.begin():
                    return self.write(connection, events, _received_now(connection))
            except Exception as exc:
                if attempt < _RETRIES and _is_transient(exc):
                    time.sleep(0.05 * attempt)
                    continue
                raise _WriteFailed() from exc

    def _settle(self, chunk: _Chunk, stored: dict[str, int]) -> None:
        """Count the chunk's events as accepted, duplicates or conflicts, now that its transaction is over."""
        report = self.report
        report.rejected += chunk.rejections
        if not stored:
            report.accepted += len(chunk.events)
        else:
            for index, event in enumerate(chunk.events):
                stored_hash = stored.get(event[_ID])
                if stored_hash is None:
                    report.accepted += 1
                elif stored_hash == event[_HASH]:
                    report.duplicates += 1
                else:
                    report.rejected.append(
                        _rejection(chunk.lines[index], event[_ID], _conflict(event[_ID]), chunk.raw(index))
                    )
        for line, raw, event, position in chunk.repeats:
            stored_hash = stored.get(event[_ID])
            if stored_hash is None:  # the chunk's first event with this id was stored now
                stored_hash = chunk.events[position][_HASH]
                reason = (
                    f"conflict: id {event[_ID]!r} is used by {chunk.position} {chunk.lines[position]} "
                    "with other content"
                )
            else:
                reason = _conflict(event[_ID])
            if stored_hash == event[_HASH]:
                report.duplicates += 1
            else:
                report.rejected.append(_rejection(line, event[_ID], reason, raw))
        if self.progress is not None:
            self.bytes_settled += chunk.size
            self.progress(self.bytes_read() if self.bytes_read is not None else self.bytes_settled)


class _WriteFailed(Exception):
    """A chunk could not be stored (the database error is its ``__cause__``)."""


def _conflict(event_id: str) -> str:
    return f"conflict: id {event_id!r} was already ingested with other content"


def _is_transient(exc: Exception) -> bool:
    """Deadlocks and serialization failures (PostgreSQL) are worth another try."""
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    return getattr(original, "sqlstate", None) in {"40001", "40P01"}


# The PostgreSQL advisory lock that orders a chunk's received_at with ``ingestion_cutoff``: each chunk holds it
# shared while it is stored, a cutoff takes it exclusively for the instant it reads the clock.
_RECEIVING_LOCK = 0x6D65746572730001


def _received_now(connection: Connection) -> int:
    """The chunk's ``received_at``, read once no cutoff is being taken (see :func:`ingestion_cutoff`).

    SQLite: the chunk's ``BEGIN IMMEDIATE`` already holds the database's single write lock. PostgreSQL: a shared
    advisory lock, and the database's clock (the same clock for every ingesting host).
    """
    if connection.dialect.name != "postgresql":
        return to_epoch_us(dt.datetime.now(dt.UTC))
    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock_shared({_RECEIVING_LOCK})")
    return int(connection.exec_driver_sql(_DATABASE_CLOCK).scalar_one())


_DATABASE_CLOCK = "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"


def ingestion_cutoff(engine: Engine) -> dt.datetime:
    """An instant F such that every event received at or before F is already committed, and every event stored
    later is received after F: the cutoff a billing run gives ``aggregate_usage(received_until=F)`` when it
    finalizes a period, so that the events it did not count are exactly those with ``received_after=F`` (late).

    Waits for the chunks being stored at that moment (a fraction of a second), then reads the clock that
    ingestion stamps ``received_at`` with.
    """
    with engine.connect() as connection, connection.begin():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_RECEIVING_LOCK})")
            now = int(connection.exec_driver_sql(_DATABASE_CLOCK).scalar_one())
        else:  # BEGIN IMMEDIATE (billing.db): no chunk is being stored while this transaction lasts
            now = to_epoch_us(dt.datetime.now(dt.UTC))
    return from_epoch_us(now)


def _write_sqlite(connection: Connection, events: list[tuple[Any, ...]], received_at: int) -> dict[str, int]:
    # BEGIN IMMEDIATE (billing.db) holds the write lock: the rows with an id above ``before`` are this chunk's.
    before = connection.exec_driver_sql("SELECT coalesce(max(id), 0) FROM usage_events").scalar_one()
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(
            f"INSERT INTO usage_events ({_COLUMNS}, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, {int(received_at)}) "
            "ON CONFLICT (event_id) DO NOTHING",
            events,
        )
        if cursor.rowcount == len(events):
            return {}
        stored: dict[str, int] = {}
        ids = [event[_ID] for event in events]
        for start in range(0, len(ids), 10_000):
            batch = ids[start : start + 10_000]
            cursor.execute(
                "SELECT event_id, content_hash FROM usage_events "
                f"WHERE id <= ? AND event_id IN ({', '.join('?' * len(batch))})",
                (before, *batch),
            )
            stored.update(cursor.fetchall())
        return stored
    finally:
        cursor.close()


_STAGING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS usage_events_staging ("
    "event_id text, customer text, meter text, occurred_at bigint, value bigint, unique_value text, "
    "properties text, content_hash bigint) ON COMMIT DELETE ROWS"
)


class _PostgresWriter:
    """Stores chunks on PostgreSQL.

    The first try is optimistic: ``COPY`` straight into ``usage_events`` (as fast as PostgreSQL takes rows), inside
    a savepoint. The first chunk that holds an id already stored makes that ``COPY`` fail on the unique index;
    the savepoint is rolled back and that chunk, and every later one of this ingestion, goes the classifying way:
    ``COPY`` into a temporary staging table, then ``INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING`` (slower:
    each row is a speculative insertion). Either way the unique index decides, so concurrent ingestions of the
    same events store each of them once.
    """

    def __init__(self) -> None:
        self.optimistic = True

    def __call__(self, connection: Connection, events: list[tuple[Any, ...]], received_at: int) -> dict[str, int]:
        driver: Any = connection.connection.dbapi_connection
        if self.optimistic:
            savepoint = connection.begin_nested()
            try:
                with (
                    driver.cursor() as cursor,
                    cursor.copy(f"COPY usage_events ({_COLUMNS}, received_at) FROM STDIN") as copy,
                ):
                    for event in events:
                        copy.write_row((*event, received_at))
            except Exception as exc:
                savepoint.rollback()
                if getattr(exc, "sqlstate", None) != "23505":  # unique_violation
                    raise
                self.optimistic = False
            else:
                savepoint.commit()
                return {}
        return self._classified(driver, events, received_at)

    @staticmethod
    def _classified(driver: Any, events: list[tuple[Any, ...]], received_at: int) -> dict[str, int]:
        with driver.cursor() as cursor:
            cursor.execute(_STAGING)
            with cursor.copy(f"COPY usage_events_staging ({_COLUMNS}) FROM STDIN") as copy:
                for event in events:
                    copy.write_row(event)
            # ORDER BY event_id: concurrent ingestions take the unique index's locks in one order (no deadlock).
            # The ids not inserted are those already stored, possibly by a transaction that committed meanwhile.
            cursor.execute(
                f"WITH inserted AS (INSERT INTO usage_events ({_COLUMNS}, received_at) "
                f"SELECT {_COLUMNS}, %s FROM usage_events_staging ORDER BY event_id "
                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id) "
                "SELECT s.event_id FROM usage_events_staging s "
                "WHERE NOT EXISTS (SELECT 1 FROM inserted i WHERE i.event_id = s.event_id)",
                (received_at,),
            )
            refused = [row[0] for row in cursor.fetchall()]
            if not refused:
                return {}
            cursor.execute("SELECT event_id, content_hash FROM usage_events WHERE event_id = ANY(%s)", (refused,))
            return dict(cursor.fetchall())
