"""The clock, and the one rule for instants read back without an offset.

SQLite stores a timestamp without its offset; every instant this engine writes is UTC, so a naive instant read
back is UTC. An aware one is converted to UTC.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["as_utc", "utcnow"]


def utcnow() -> dt.datetime:
    """Now, as an aware UTC ``datetime``."""
    return dt.datetime.now(dt.UTC)


def as_utc(instant: dt.datetime) -> dt.datetime:
    """``instant`` as an aware UTC ``datetime``: a naive one is taken as UTC, an aware one converted."""
    return instant.replace(tzinfo=dt.UTC) if instant.tzinfo is None else instant.astimezone(dt.UTC)
