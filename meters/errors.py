"""Every exception the meters package raises::

MeteringError
├── EventError            one event cannot be accepted (ingestion turns it into a Rejection)
├── ConflictingEvents     events stored with two contents under one id (an event store without a unique
│                         index, two ingestions racing): nothing that counts them can be exact
└── IngestError           a batch or file could not be ingested as a whole
    ├── MalformedFileError    the file cannot be read at all (a bad CSV header): nothing was stored
    └── IngestInterrupted     ingestion stopped part-way (database or I/O failure): ``report`` says
                              exactly what was stored before it stopped
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meters.ingest import IngestReport

__all__ = ["ConflictingEvents", "EventError", "IngestError", "IngestInterrupted", "MalformedFileError", "MeteringError"]


class MeteringError(Exception):
    """The root of the meters package's exceptions."""


class EventError(MeteringError, ValueError):
    """Raised when an event cannot be accepted; the message is the reason given back (and written to rejects).

    Attributes:
      event_id: the event's id when it could be read before the problem was found, else None.
    """

    event_id: str | None = None


class ConflictingEvents(MeteringError):
    """Raised by an aggregation that finds events stored with two contents under one id.

    Attributes:
      event_ids: the ids (the first 20 found).
    """

    def __init__(self, event_ids: list[str]):
        self.event_ids = event_ids
        super().__init__(
            f"event id(s) stored with different contents: {', '.join(event_ids)} "
            "(two ingestions raced with conflicting events; keep one version of each before billing)"
        )


class IngestError(MeteringError):
    """Raised when a batch or a file cannot be ingested as a whole."""


class MalformedFileError(IngestError):
    """Raised before anything is stored when a file cannot be read as events (e.g. a CSV header is wrong)."""


class IngestInterrupted(IngestError):
    """Raised when ingestion stops part-way (the database or the input failed).

    Attributes:
      report: what was stored (accepted, duplicates, rejected) before it stopped; chunks commit as a whole, so
        every event of ``report`` is settled and nothing else from the input is.
      line: the first line (or batch index) whose fate is unknown; ingesting the input again is safe.
      cause: the underlying exception.
    """

    def __init__(self, report: IngestReport, line: int, cause: BaseException):
        self.report = report
        self.line = line
        self.cause = cause
        super().__init__(
            f"ingestion stopped at line {line} ({type(cause).__name__}: {cause}); before it stopped: "
            f"{report.summary()} — ingesting the same input again is safe"
        )
