"""Reading an input into validated chunks: the records of a JSON Lines or CSV file (each with its line number)
or of an API batch (each with its index), validated by :class:`meters.events.EventValidator`, ``size`` at a time.

A bad record becomes a :class:`Rejection` with its reason; the good records of the same input still make their
chunk. An id met again inside a chunk waits in the chunk's ``repeats`` until the first one's fate is settled.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import os
import sys
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice, repeat
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, Final, Literal

import orjson

from meters.errors import EventError, MalformedFileError
from meters.events import (
    EVENT_FIELDS,
    JSON_DECODER,
    EventValidator,
    MeterSpec,
    RepeatedKeys,
    keys_once,
    parse_json_line,
)

__all__ = [
    "COLUMNS",
    "CUSTOMER",
    "HASH",
    "ID",
    "OCCURRED_AT",
    "Chunk",
    "Entry",
    "FileFormat",
    "Rejection",
    "Settings",
    "batch_chunks",
    "csv_entries",
    "describe",
    "jsonl_block",
    "jsonl_blocks",
    "open_source",
    "rejection",
    "validated_chunks",
]

FileFormat = Literal["jsonl", "csv"]

COLUMNS = "event_id, customer, meter, occurred_at, value, unique_value, properties, content_hash"
"""The stored columns of an event tuple (a UsageEvent), in its order."""
ID: Final = 0  # positions in a UsageEvent
CUSTOMER: Final = 1
OCCURRED_AT: Final = 3
HASH: Final = 7
_CSV_REQUIRED = ("id", "customer", "meter", "timestamp")
_BOM = b"\xef\xbb\xbf"

Settings = tuple[dict[str, MeterSpec], Collection[str], dt.datetime, Mapping[str, dt.datetime] | None]
"""What an :class:`EventValidator` is made of: the meters by code, the known customers, now, and where each
customer's late-usage window begins."""


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


Entry = tuple[int, object, "Mapping[str, Any] | EventError"]
"""One record read from the input: its line (or index), its raw form, and the record or why it can't be read."""


def describe(source: str | os.PathLike[str] | IO[bytes], fmt: FileFormat | None) -> tuple[str, FileFormat]:
    """The input's name for reports and rejections, and its format (``.csv`` files are CSV unless told)."""
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
def open_source(source: str | os.PathLike[str] | IO[bytes]) -> Iterator[IO[bytes]]:
    """The input as a binary stream, closed afterwards only if it was opened here."""
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


class Lines:
    """A CSV input's lines, decoded; counts lines and bytes, and keeps the lines of the record being read."""

    def __init__(self, stream: IO[bytes]):
        self.stream = iter(stream)
        self.number = 0
        self.bytes = 0
        self.pending: list[str] = []
        self.invalid = False

    def __iter__(self) -> Lines:
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


def csv_entries(lines: Lines, name: str) -> Iterator[Entry]:
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
                parsed = JSON_DECODER.decode(cell)
            except (ValueError, RecursionError):
                raise EventError("'properties' must be a JSON object of strings (not JSON)") from None
            if not isinstance(parsed, dict):
                raise EventError("'properties' must be a JSON object of strings")
            if isinstance(parsed, RepeatedKeys):
                raise EventError("; ".join(f"duplicate key {key!r} in 'properties'" for key in parsed.repeated))
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


@dataclass
class Chunk:
    """The validated events of a stretch of the input, stored together, and the rejections found in it.

    ``events`` are UsageEvents as plain tuples (cheap to hand from a worker process). An id met again in the
    same stretch waits in ``repeats`` (line, raw, event, position of the first one) until the first is settled.
    A worker does not send the raw lines back: ``block`` (the stretch's lines, kept by the reader) has them.
    ``spans``: for each customer of ``events``, an interval of ``occurred_at`` that covers its events
    (:func:`spans_of`).
    """

    first_line: int
    last_line: int = -1
    events: list[tuple[Any, ...]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    raws: list[object] | None = field(default_factory=list)
    repeats: list[tuple[int, object, tuple[Any, ...], int]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    position: str = "line"
    block: list[bytes] | None = None
    size: int = 0  # bytes of input
    summary: object = None  # what ``meters_on_parsed`` made of ``events`` (see ``meters.ingest``)

    def raw(self, index: int) -> object:
        if self.raws is not None:
            return self.raws[index]
        assert self.block is not None
        return _decode(self.block[self.lines[index] - self.first_line])[0]


class _ChunkBuilder:
    """Validates records one by one into a chunk."""

    def __init__(self, validator: EventValidator, first_line: int, position: str, keep_raw: bool = True):
        self.validate = validator.validate
        self.chunk = Chunk(first_line, position=position, raws=[] if keep_raw else None)
        self.first: dict[str, int] = {}
        self.count = 0

    def add(self, line: int, raw: object, record: Mapping[str, Any] | EventError) -> None:
        chunk = self.chunk
        chunk.last_line = line
        self.count += 1
        if isinstance(record, EventError):
            chunk.rejections.append(rejection(line, record.event_id, str(record), raw))
            return
        try:
            event = self.validate(record)
        except EventError as error:
            event_id = record.get("id")
            chunk.rejections.append(rejection(line, event_id if isinstance(event_id, str) else None, str(error), raw))
            return
        events = chunk.events
        position = self.first.setdefault(event[ID], len(events))
        if position == len(events):
            events.append(tuple(event))
            chunk.lines.append(line)
            if chunk.raws is not None:
                chunk.raws.append(raw)
        else:
            chunk.repeats.append((line, raw, tuple(event), position))


def spans_of(events: list[tuple[Any, ...]]) -> dict[str, tuple[int, int]]:
    """Each customer of ``events`` with the earliest and latest ``occurred_at`` of them all: an interval that
    covers the customer's events. Not each customer's own (that would cost a Python step per event on the hot
    path); a chunk is a stretch of the input, whose events are usually close in time."""
    if not events:
        return {}
    times = list(map(itemgetter(OCCURRED_AT), events))
    span = (min(times), max(times))
    return dict.fromkeys(set(map(itemgetter(CUSTOMER), events)), span)


def widen(spans: dict[str, list[int]], customer: str, earliest: int, latest: int) -> None:
    """Make ``spans[customer]`` (earliest, latest) cover ``[earliest, latest]``."""
    span = spans.get(customer)
    if span is None:
        spans[customer] = [earliest, latest]
        return
    if earliest < span[0]:
        span[0] = earliest
    if latest > span[1]:
        span[1] = latest


def rejection(line: int, event_id: str | None, reason: str, raw: object) -> Rejection:
    if not isinstance(raw, str):
        raw = json.dumps(raw, ensure_ascii=False, default=str)
    return Rejection(line, event_id, reason, raw)


def validated_chunks(validator: EventValidator, entries: Iterator[Entry], size: int, position: str) -> Iterator[Chunk]:
    """Entries validated in this process, ``size`` at a time."""
    builder: _ChunkBuilder | None = None
    for line, raw, record in entries:
        if builder is None:
            builder = _ChunkBuilder(validator, line, position)
        builder.add(line, raw, record)
        if builder.count >= size:
            builder.chunk.spans = spans_of(builder.chunk.events)
            yield builder.chunk
            builder = None
    if builder is not None:
        builder.chunk.spans = spans_of(builder.chunk.events)
        yield builder.chunk


_COLUMNS_FROM = 16
"""Events from which a batch is first validated a column at a time (``EventValidator.validate_all``: a few tens
of microseconds more than :meth:`~EventValidator.validate` for one event, a third of its time for a thousand)."""


def batch_chunks(validator: EventValidator, records: list[Any], size: int) -> Iterator[Chunk]:
    """An API batch's records (each positioned by its index) validated in this process, ``size`` at a time.

    A batch of valid events with distinct ids is validated a column at a time when it is not small. Otherwise, the
    hot loop of a request: the common case (a valid event whose id is new in the chunk) is inlined; anything
    else (not an object, invalid, an id met again) goes through :meth:`_ChunkBuilder.add`, which does the same.
    """
    if _COLUMNS_FROM <= len(records) <= size:
        events = validator.validate_all(records)
        if events is not None:  # the usual batch: every event valid, no id given twice
            chunk = Chunk(0, len(records) - 1, events, list(range(len(records))), list(records), position="index")
            chunk.spans = spans_of(events)
            yield chunk
            return
    for start in range(0, len(records), size):
        builder = _ChunkBuilder(validator, start, "index")
        chunk = builder.chunk
        add, validate, first = builder.add, validator.validate, builder.first
        events, lines, raws = chunk.events, chunk.lines, chunk.raws
        assert raws is not None
        stop = min(start + size, len(records))
        for index in range(start, stop):
            record = records[index]
            if not isinstance(record, Mapping):
                add(index, record, EventError(f"not an object (got {type(record).__name__})"))
                continue
            try:
                event = validate(record)
            except EventError:
                add(index, record, record)  # validates again, to report the problems
                continue
            if event[ID] in first:
                add(index, record, record)
                continue
            first[event[ID]] = len(events)
            events.append(tuple(event))
            lines.append(index)
            raws.append(record)
        chunk.last_line = stop - 1
        builder.count = stop - start
        chunk.spans = spans_of(events)
        yield chunk


def jsonl_block(validator: EventValidator, first_line: int, block: list[bytes], keep_raw: bool) -> Chunk:
    """Parse and validate a stretch of JSON Lines (``block[0]`` is line ``first_line``).

    The hot loop of a file ingestion: the common case (a valid event whose id is new in the chunk) is inlined;
    everything else goes through :meth:`_ChunkBuilder.add`, which does the same. A line is read with the fast
    JSON reader, and again with the strict one (which tells repeated keys) only when it is not a valid event or
    :func:`meters.events.keys_once` cannot vouch for it.
    """
    if len(block) >= _COLUMNS_FROM:
        usual = _usual_block(validator, first_line, block, keep_raw)
        if usual is not None:
            return usual
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
            record = parse_json_line(text, strict=False)
        except EventError as error:
            add(number, text, error)
            continue
        try:
            event = validate(record)
        except EventError:
            add(number, text, parse_json_line(text))  # validates again, to report every problem
            continue
        if not keys_once(text, record):
            add(number, text, parse_json_line(text))  # read strictly, then validated (and kept) as any other
            continue
        position = first.setdefault(event[ID], len(events))
        if position != len(events):
            chunk.repeats.append((number, text, tuple(event), position))
            continue
        events.append(tuple(event))
        lines.append(number)
        if raws is not None:
            raws.append(text)
    chunk.last_line = first_line + len(block) - 1
    chunk.spans = spans_of(events)
    return chunk


def _usual_block(validator: EventValidator, first_line: int, block: list[bytes], keep_raw: bool) -> Chunk | None:
    """The chunk of a usual stretch of JSON Lines, read and validated a column at a time: every line one valid
    event without a backslash, no blank line, no id twice. None for any other stretch (:func:`jsonl_block` reads
    it line by line, to the same events, and tells what is wrong where).

    Each line is read by orjson (what the fast reader makes of it, but a number with a fraction or an exponent,
    which orjson makes a float: such a line is read again by the fast reader, whose numbers are Decimal), the
    events validated by ``EventValidator.validate_all``; a line that names a key twice is one quoted string more
    than its event holds (see :func:`meters.events.keys_once`), counted over the whole stretch: each line holds
    at least its event's strings, so the totals are equal only if every line's are."""
    try:
        texts = [data.decode("utf-8").rstrip("\r\n") for data in block]
        records = list(map(orjson.loads, texts))
    except (UnicodeDecodeError, orjson.JSONDecodeError):
        return None
    if set(map(type, records)) != {dict} or not all(texts) or any("\\" in text for text in texts):
        return None
    values = list(map(dict.get, records, repeat("value")))
    if float in set(map(type, values)):
        for index, value in enumerate(values):
            if type(value) is float:
                try:
                    records[index] = parse_json_line(texts[index], strict=False)
                except EventError:  # (orjson reads deeper nesting than the standard library's reader)
                    return None
                values[index] = records[index].get("value")
    events = validator.validate_all(records)
    if events is None:
        return None
    maps = [found for found in map(dict.get, records, repeat("properties")) if found]
    strings = sum(map(len, records)) + 4 * len(records) + list(map(type, values)).count(str) + 2 * sum(map(len, maps))
    if sum(text.count('"') for text in texts) != 2 * strings:
        return None
    lines = list(range(first_line, first_line + len(block)))
    chunk = Chunk(first_line, lines[-1], events, lines, texts if keep_raw else None, position="line")  # type: ignore[arg-type]
    chunk.spans = spans_of(events)
    return chunk


def jsonl_blocks(stream: IO[bytes], size: int) -> Iterator[tuple[int, list[bytes]]]:
    number = 1
    lines = iter(stream)
    while block := list(islice(lines, size)):
        if number == 1 and block[0].startswith(_BOM):
            block[0] = block[0][len(_BOM) :]
        yield number, block
        number += len(block)
