"""A batch of usage events from ``POST /v1/events``: parsed with exact decimals by the events' own JSON reader
(``meters.events.JSON_DECODER``: an object that repeats a key is kept as such, so that the event is rejected at
its index rather than read as "the last one wins"), ingested through ``billing.ingestion.ingest_batch``, and each
event's fate told apart.

``meters.IngestReport`` counts what was stored and what was a duplicate, and lists the rejections by index. An
event that was not rejected is a *duplicate* when its id was already stored before the batch (ingestion rejects
a stored id with other content as a conflict, so a stored id that was not rejected has the same content) or
when an earlier event of the batch has it; otherwise it was stored now, *accepted*. The ids already stored are
read just before ingesting; an event that another client stores in between is reported accepted here and counted
as a duplicate in the totals, which always come from the ingestion itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from billing.api.errors import printable
from billing.ingestion import ingest_batch
from meters import stored_event_ids
from meters.events import JSON_DECODER, RepeatedKeys
from pricing_plans.models import Catalog

__all__ = ["BatchError", "BatchOutcome", "EventOutcome", "ingest_events", "parse_batch"]

log = logging.getLogger(__name__)

class BatchError(ValueError):
    """Raised when a body is not a batch of events; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """One event's fate: ``accepted``, ``duplicate`` or ``rejected`` (with the reason)."""

    index: int
    id: str | None
    status: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """The totals (as ingestion counted them) and every event's outcome, in input order."""

    accepted: int
    duplicates: int
    rejected: int
    events: tuple[EventOutcome, ...]


def parse_batch(body: bytes, max_events: int) -> list[Any]:
    """The ``events`` list of a request body (numbers as Decimal, never float; an event that repeats a key as a
    ``meters.events.RepeatedKeys``, which ingestion rejects).

    Raises BatchError when the body is not ``{"events": [...]}`` of at most
    ``max_events`` items, or names ``events`` twice.
    """
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
    if len(events) > max_events:
        raise BatchError("events", f"at most {max_events:,} events per batch, got {len(events):,}")
    return events


def _storable_id(value: object) -> str | None:
    """An id the database can be asked about (others are rejected by validation anyway)."""
    if not isinstance(value, str) or not 0 < len(value) <= 255 or "\x00" in value:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def ingest_events(engine: Engine, catalog: Catalog, records: list[Mapping[str, Any]]) -> BatchOutcome:
    """Ingest ``records`` and tell each one's fate."""
    ids = [_storable_id(record.get("id")) if isinstance(record, Mapping) else None for record in records]
    stored_before = stored_event_ids(engine, [i for i in ids if i is not None])
    report = ingest_batch(engine, catalog, records)
    rejected = {rejection.line: rejection for rejection in report.rejected}
    seen: set[str] = set()
    outcomes = []
    for index, event_id in enumerate(ids):
        rejection = rejected.get(index)
        if rejection is not None:
            shown = None if rejection.event_id is None else printable(rejection.event_id)
            outcomes.append(EventOutcome(index, shown, "rejected", printable(rejection.reason)))
            continue
        assert event_id is not None  # a valid event has a storable id
        status = "duplicate" if event_id in stored_before or event_id in seen else "accepted"
        seen.add(event_id)
        outcomes.append(EventOutcome(index, event_id, status))
    accepted = sum(1 for outcome in outcomes if outcome.status == "accepted")
    if accepted != report.accepted:
        log.warning(
            "events batch: %d accepted by ingestion, %d told apart (another client stored some of its ids meanwhile)",
            report.accepted,
            accepted,
        )
    return BatchOutcome(report.accepted, report.duplicates, len(report.rejected), tuple(outcomes))
