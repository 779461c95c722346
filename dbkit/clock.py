"""The clock, and the one rule for instants read back without an offset.

SQLite stores a timestamp without its offset; every instant this engine writes is UTC, so a naive instant read
back is UTC. An aware one is converted to UTC.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["as_utc", "iso_instant", "utcnow"]


def utcnow() -> dt.datetime:
    """Now, as an aware UTC ``datetime``."""
    return dt.datetime.now(dt.UTC)


def as_utc(instant: dt.datetime) -> dt.datetime:
    """``instant`` as an aware UTC ``datetime``: a naive one is taken as UTC, an aware one converted."""
    return instant.replace(tzinfo=dt.UTC) if instant.tzinfo is None else instant.astimezone(dt.UTC)


def iso_instant(instant: dt.datetime) -> str:
    """``instant`` as the API writes one: ISO 8601 in UTC, ``Z`` for its offset (``2026-10-14T09:30:02Z``)."""
    return as_utc(instant).isoformat().replace("+00:00", "Z")
