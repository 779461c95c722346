"""A batch of usage events from ``POST /v1/events``: parsed with exact decimals by the events' own JSON reader
(``meters.events.JSON_DECODER``: an object that repeats a key is kept as such, so that the event is rejected at
its index rather than read as "the last one wins"; the usual body, which has neither a fraction nor a repeated
key, by orjson, to the same result), ingested through ``billing.ingestion.ingest_batch``, and each
event's fate told apart.

Batches that arrive together are stored together (:class:`BatchWriter`, group commit): one thread of the process
ingests what the requests handed it since its last transaction in one transaction, then answers each request with
its own events' fates. A single-event request never waits behind a queue of one-event transactions, and the
database sees one writer of the API instead of one per request thread.

``meters.IngestReport`` counts what was stored, lists the duplicates by index (an id already stored, or met
earlier in the batch, with the same content: the database's unique event id decided it, in the transaction that
stored the others) and the rejections by index; every other event was stored now, *accepted*.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine

from billing.api.errors import printable
from billing.ingestion import ingest_batch
from dbkit.dialect import is_postgresql
from meters.events import JSON_DECODER, RepeatedKeys
from pricing_plans.models import Catalog

log = logging.getLogger(__name__)

__all__ = ["BatchError", "BatchOutcome", "BatchWriter", "EventOutcome", "ingest_events", "outcome_json", "parse_batch"]


class BatchError(ValueError):
    """Raised when a body is not a batch of events; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(slots=True)
class EventOutcome:
    """One event's fate: ``accepted``, ``duplicate`` or ``rejected`` (with the reason). (Not frozen: a frozen
    dataclass's constructor costs three times as much, and a batch makes one per event.)"""

    index: int
    id: str | None
    status: str
    reason: str | None = None


class BatchOutcome:
    """The totals (as ingestion counted them) and every event's outcome, in input order. A batch whose every
    event was stored now keeps only their ids (:meth:`all_accepted`): its outcomes are made when asked for, and
    its answer is written from the ids (an object per event costs more than storing the event)."""

    __slots__ = ("_events", "_ids", "accepted", "duplicates", "rejected")

    def __init__(
        self, accepted: int, duplicates: int, rejected: int, events: tuple[EventOutcome, ...] = (),
        ids: list[str] | None = None,
    ):
        self.accepted = accepted
        self.duplicates = duplicates
        self.rejected = rejected
        self._events = events
        self._ids = ids

    @classmethod
    def all_accepted(cls, ids: list[str]) -> BatchOutcome:
        """The outcome of a batch whose events (these ids, in order) were all stored now."""
        return cls(len(ids), 0, 0, ids=ids)

    @property
    def events(self) -> tuple[EventOutcome, ...]:
        if self._ids is not None:
            return tuple(EventOutcome(index, event_id, "accepted") for index, event_id in enumerate(self._ids))
        return self._events

    @property
    def ids(self) -> list[str] | None:
        """The ids of an outcome made by :meth:`all_accepted`; None for any other."""
        return self._ids


def parse_batch(body: bytes, max_events: int) -> list[Any]:
    """The ``events`` list of a request body (numbers as Decimal, never float; an event that repeats a key as a
    ``meters.events.RepeatedKeys``, which ingestion rejects).

    Raises BatchError when the body is not ``{"events": [...]}`` of at most
    ``max_events`` items, or names ``events`` twice.
    """
    events = _plain_batch(body)
    if events is None:
        events = _read_strictly(body)
    if len(events) > max_events:
        raise BatchError("events", f"at most {max_events:,} events per batch, got {len(events):,}")
    return events


def _plain_batch(body: bytes) -> list[Any] | None:
    """The usual body, read by orjson (about half the strict reader's time, the checks included): ``{"events":
    [...]}`` without a backslash, a number with a fraction or an exponent, a repeated key, or more than
    :data:`_DEPTH` levels; None for anything else, which the strict reader reads (and tells what is wrong with).

    Without a backslash, every string of the body (every key, every string value) is written between two quote
    characters and no other quote character occurs; a repeated key would be one string more in the body than in
    what orjson made of it (which keeps one of them), so the quotes are counted against the strings read."""
    if b"\\" in body:
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(document) is not dict or len(document) != 1 or type(document.get("events")) is not list:
        return None
    strings = _strings(document, _DEPTH)
    if strings is None or body.count(b'"') != 2 * strings:
        return None
    events: list[Any] = document["events"]
    return events


_DEPTH = 16
"""Levels of nesting the fast way reads (an event is three deep in its body); anything deeper is the strict
reader's to read or refuse, as it always did (orjson reads 1,024 levels, the strict reader fewer)."""


def _strings(value: Any, depth: int) -> int | None:
    """How many strings (keys and values) ``value`` holds, or None if it holds a float (the strict reader makes
    that number a Decimal) or is nested more than ``depth`` levels deep."""
    if depth == 0:
        return None
    kind = type(value)
    if kind is str:
        return 1
    if kind is dict:
        count = len(value)
        values = value.values()
    elif kind is list:
        count = 0
        values = value
    else:
        return None if kind is float else 0
    for item in values:
        kind = type(item)
        if kind is str:
            count += 1
        elif kind is dict or kind is list or kind is float:
            inner = _strings(item, depth - 1)
            if inner is None:
                return None
            count += inner
    return count


def _read_strictly(body: bytes) -> list[Any]:
    """The ``events`` list of any body, read by the events' own JSON reader; BatchError when it is not one."""
    if not body.strip():
        raise BatchError("body", "required: a JSON object {\"events\": [...]}")
    try:
        text = body.decode("utf-8")
        document, end = JSON_DECODER.raw_decode(text.strip())
        if end != len(text.strip()):
            raise json.JSONDecodeError("Extra data", text, end)
    except UnicodeDecodeError:
        raise BatchError("body", "not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise BatchError("body", f"not valid JSON ({exc.msg}, column {exc.colno})") from None
    except (RecursionError, ValueError) as exc:
        raise BatchError("body", f"not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise BatchError("body", "expected a JSON object {\"events\": [...]}")
    if isinstance(document, RepeatedKeys):
        raise BatchError(document.repeated[0], "duplicate key (a key may appear once in an object)")
    unknown = sorted(key for key in document if key != "events")
    if unknown:
        raise BatchError(unknown[0], "unknown field (the body holds only \"events\")")
    events = document.get("events")
    if not isinstance(events, list):
        raise BatchError("events", "required: a list of events")
    return events


def ingest_events(engine: Engine, catalog: Catalog, records: list[Mapping[str, Any]]) -> BatchOutcome:
    """Ingest ``records`` and tell each one's fate, as the ingestion itself settled it."""
    report = ingest_batch(engine, catalog, records)
    if not report.rejected and not report.duplicate_lines:  # the usual batch: every event stored now
        return BatchOutcome.all_accepted([record["id"] for record in records])
    rejected = {rejection.line: rejection for rejection in report.rejected}
    duplicates = set(report.duplicate_lines)
    outcomes = []
    for index, record in enumerate(records):
        rejection = rejected.get(index)
        if rejection is not None:
            shown = None if rejection.event_id is None else printable(rejection.event_id)
            outcomes.append(EventOutcome(index, shown, "rejected", printable(rejection.reason)))
            continue
        status = "duplicate" if index in duplicates else "accepted"
        outcomes.append(EventOutcome(index, record["id"], status))
    return BatchOutcome(report.accepted, report.duplicates, len(report.rejected), tuple(outcomes))


def outcome_json(outcome: BatchOutcome) -> bytes:
    """The answer to a batch (``schemas.EventBatchOut``), written directly by orjson from the outcome's dataclasses
    (their fields are the answer's, in its order), or, for a batch whose every event was stored now, from plain
    dicts made from its ids (a third of a dataclass's cost): a batch of 10,000 events answers 10,000 results, and
    building a model of each costs more than storing them. Every string in it is valid UTF-8 (an accepted id is
    valid text; a rejection's id and reason went through ``printable``)."""
    totals = {"accepted": outcome.accepted, "duplicates": outcome.duplicates, "rejected": outcome.rejected}
    ids = outcome.ids
    if ids is None:
        return orjson.dumps({**totals, "events": outcome.events})
    events = [
        {"index": index, "id": event_id, "status": "accepted", "reason": None} for index, event_id in enumerate(ids)
    ]
    return orjson.dumps({**totals, "events": events})


def _part(outcome: BatchOutcome, start: int, count: int) -> BatchOutcome:
    """The outcome of the events ``[start, start + count)`` of a group, indexed from 0 again (a conflict with an
    event of the same request names its index in the request; one with another request's event, stored in the
    same transaction just before, reads as a conflict with a stored event)."""
    if outcome.ids is not None:
        return BatchOutcome.all_accepted(outcome.ids[start : start + count])
    events = tuple(
        EventOutcome(e.index - start, e.id, e.status, _reindexed(e.reason, start))
        for e in outcome.events[start : start + count]
    )
    totals = {"accepted": 0, "duplicate": 0, "rejected": 0}
    for event in events:
        totals[event.status] += 1
    return BatchOutcome(totals["accepted"], totals["duplicate"], totals["rejected"], events)


IDLE = 1.0
"""Seconds without a batch after which a writer's thread ends (the next batch starts another)."""
PG_WRITERS = 4
"""Threads that store batches at once on PostgreSQL (each on a connection of its own)."""
POLL = 0.0002
"""On SQLite, how often the writer looks for the database's write lock while another process holds it
(``dbkit.writelock``: a request waits for it, and SQLite's own busy handler sleeps 1, 2, 5, 10 ms and more)."""
_USED_BY = re.compile(r"^conflict: id (.*) is used by index (\d+) with other content$", re.DOTALL)


def _reindexed(reason: str | None, start: int) -> str | None:
    found = _USED_BY.match(reason) if reason is not None and start else None
    if found is None:
        return reason
    first = int(found.group(2))
    if first >= start:
        return f"conflict: id {found.group(1)} is used by index {first - start} with other content"
    return f"conflict: id {found.group(1)} was already ingested with other content"


@dataclass(frozen=True, slots=True)
class _Pending:
    """A request's batch, waiting for the writer."""

    engine: Engine
    catalog: Catalog
    records: list[Any]
    future: Future[BatchOutcome]


class BatchWriter:
    """The threads that store the batches of concurrent requests together: a thread takes every batch handed to
    the writer since its last transaction (up to ``max_events`` events, all for the same database and catalog),
    ingests them in one, and settles each request's future with its own part of the outcome. A failure fails the
    requests of that group only (nothing of theirs is stored, or what is stored is stored once: sending them
    again is safe).

    On SQLite one thread writes (the database has one write lock). On PostgreSQL up to :data:`PG_WRITERS`
    threads do: a batch that arrives while one transaction waits for its commit to reach the disk starts the
    next at once instead of waiting behind it, and PostgreSQL flushes commits that wait together in one write
    of its log. A thread ends after :data:`IDLE` seconds without work.
    """

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked child has no writer thread of its own

    def _reset(self) -> None:
        self._polling: tuple[Engine, Engine] | None = None  # the last engine, and it with ``sqlite_poll``
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._threads: set[threading.Thread] = set()
        self._idle: set[threading.Thread] = set()  # of those, the ones waiting for a batch
        self._start = threading.Lock()

    def submit(self, engine: Engine, catalog: Catalog, records: list[Any]) -> Future[BatchOutcome]:
        """Hand ``records`` to the writer; the future is settled once they are stored (or failed)."""
        future: Future[BatchOutcome] = Future()
        with self._start:  # (a thread ends when idle, under this lock, only if nothing is queued)
            self._queue.put(_Pending(engine, catalog, records, future))
            self._threads = {thread for thread in self._threads if thread.is_alive()}
            self._idle &= self._threads
            limit = PG_WRITERS if is_postgresql(engine) else 1
            if not self._threads or (not self._idle and len(self._threads) < limit):
                thread = threading.Thread(target=self._run, name="events-writer", daemon=True)
                self._threads.add(thread)
                self._idle.add(thread)  # (until it has taken its first batch)
                thread.start()
        return future

    def _run(self) -> None:
        me = threading.current_thread()
        held: _Pending | None = None
        while True:
            if held is not None:
                first = held
            else:
                try:
                    first = self._queue.get(timeout=IDLE)
                except queue.Empty:  # idle: the thread ends (a process that forks wants no idle threads)
                    with self._start:
                        if self._queue.empty():
                            self._threads.discard(me)
                            self._idle.discard(me)
                            return
                    continue
                with self._start:
                    self._idle.discard(me)
            group, held = self._gather(first)
            try:
                self._store(group)
            except Exception:  # (settling a future cannot fail; should anything else, the writer goes on)
                log.exception("the event writer failed to answer a group of %d requests", len(group))
            if held is None:
                with self._start:
                    self._idle.add(me)

    def _gather(self, first: _Pending) -> tuple[list[_Pending], _Pending | None]:
        """``first`` and the batches queued behind it that can share its transaction; the first one that cannot."""
        group = [first]
        size = len(first.records)
        while size < self.max_events:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return group, None
            if item.engine is not first.engine or item.catalog is not first.catalog:
                return group, item
            if size + len(item.records) > self.max_events:
                return group, item
            group.append(item)
            size += len(item.records)
        return group, None

    def _engine(self, engine: Engine) -> Engine:
        """``engine`` with the write lock looked for every :data:`POLL` seconds (SQLite; made once per engine)."""
        polling = self._polling
        if polling is None or polling[0] is not engine:
            polling = self._polling = (engine, engine.execution_options(sqlite_poll=POLL))
        return polling[1]

    def _store(self, group: list[_Pending]) -> None:
        live = [item for item in group if item.future.set_running_or_notify_cancel()]
        if not live:
            return
        records = [record for item in live for record in item.records]
        try:
            outcome = ingest_events(self._engine(live[0].engine), live[0].catalog, records)
        except BaseException as exc:  # each request answers with the error; the writer goes on
            failure = exc if isinstance(exc, Exception) else RuntimeError(f"the event writer was interrupted: {exc!r}")
            for item in live:
                item.future.set_exception(failure)
            return
        if len(live) == 1:
            live[0].future.set_result(outcome)
            return
        start = 0
        for item in live:
            item.future.set_result(_part(outcome, start, len(item.records)))
            start += len(item.records)
