"""SQLite's one write lock: how a write transaction begins, so that no writer holds the lock for long and a writer
that has to wait retries instead of failing.

SQLite lets one connection at a time write. Write transactions begin ``BEGIN IMMEDIATE`` (``billing.db``, the
billing run's draft writer), so a writer waits for the lock at its first statement and never in mid-transaction
(where an upgrade from reading to writing could fail at once, without waiting). Reads run in DEFERRED
transactions (``dbkit.read_only``), which never take the lock, and every write transaction is small (an invoice, a
chunk of events, a batch of finalized invoices). Two more rules, both here:

- **waiting, then trying again** — the connection's busy timeout (``BUSY_TIMEOUT_SECONDS``) makes ``BEGIN`` wait:
  SQLite tries again and again, sleeping up to 100 ms in between. When that wait runs out, :func:`begin` begins
  once more after a short backoff with jitter, up to ``BEGIN_ATTEMPTS`` times, and only then lets "database is
  locked" through. Nothing has happened in the transaction when ``BEGIN`` fails, so beginning it again is safe.
- **taking turns** — short transactions are not enough: a writer that commits and begins again at once (a billing
  run storing invoice after invoice, a finalization batch after batch, an ingestion chunk after chunk) leaves the
  lock free for microseconds, and a waiting writer, which looks only every 100 ms, almost never sees it free: it
  waits until the whole series is over. So a thread that has been writing back to back for ``STRETCH`` seconds
  (``SHARED_STRETCH`` when another thread of this process is waiting to write) pauses ``PAUSE`` before its next
  ``BEGIN`` — longer than a waiter's sleep, so a waiter gets its turn.
"""

from __future__ import annotations

import logging
import math
import random
import sqlite3
import threading
import time
from collections.abc import Callable

__all__ = [
    "BEGIN_ATTEMPTS",
    "BUSY_TIMEOUT_SECONDS",
    "PAUSE",
    "SHARED_STRETCH",
    "STRETCH",
    "begin",
    "ended",
    "is_locked",
]

log = logging.getLogger(__name__)

BUSY_TIMEOUT_SECONDS = 30
"""How long one ``BEGIN`` waits for the write lock (SQLite's ``busy_timeout``)."""
BEGIN_ATTEMPTS = 5
"""How many times a write transaction tries to begin before "database is locked" is an error."""
STRETCH = 2.0
"""Seconds of back-to-back write transactions after which a writer pauses for others."""
SHARED_STRETCH = 0.25
"""The same, while another thread of this process waits for the lock."""
PAUSE = 0.15
"""The pause: longer than the longest sleep of SQLite's busy handler (100 ms), so a waiter tries within it."""

# SQLite's primary result codes: SQLITE_BUSY (another connection holds the lock), SQLITE_LOCKED (a table is
# locked by this connection's own shared cache).
_BUSY_CODES = frozenset({5, 6})


class _Streak(threading.local):
    """This thread's series of back-to-back write transactions: when it began, when its last one ended (a gap
    of ``PAUSE`` or more between two ends a series: a waiter could take its turn in it)."""

    started: float | None = None
    last_end: float = -math.inf


_streak = _Streak()
_waiting = 0  # threads of this process in BEGIN right now
_waiting_lock = threading.Lock()


def is_locked(exc: BaseException) -> bool:
    """Whether ``exc`` (the sqlite3 module's, or SQLAlchemy's wrapping it) is SQLite saying the database is locked."""
    original = getattr(exc, "orig", None) or exc
    if not isinstance(original, sqlite3.OperationalError):
        return False
    code = getattr(original, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _BUSY_CODES
    return "locked" in str(original)


def begin(
    execute: Callable[[str], object],
    mode: str = "IMMEDIATE",
    *,
    attempts: int = BEGIN_ATTEMPTS,
    base_delay: float = 0.05,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run ``BEGIN <mode>`` through ``execute``; see the module docstring. A write transaction (any mode but
    DEFERRED) first pauses if this thread has been writing back to back for too long; when the database stays
    locked for the whole busy timeout, ``BEGIN`` is tried again after 0.05 s, 0.1 s, 0.2 s, … (each a random
    point in the upper half of that), ``attempts`` times in all. Returns the attempt that succeeded; the last
    "database is locked" is raised. Call :func:`ended` when a write transaction begun here ends."""
    writing = mode.upper() != "DEFERRED"
    if writing:
        _take_turns(sleep)
    attempt = 0
    while True:
        attempt += 1
        try:
            _enter_waiting(writing)
            try:
                execute(f"BEGIN {mode}")
            finally:
                _leave_waiting(writing)
        except Exception as exc:
            if attempt >= attempts or not is_locked(exc):
                raise
            delay = base_delay * 2 ** (attempt - 1)
            log.warning(
                "the database is still locked by another writer (attempt %d of %d); trying again", attempt, attempts
            )
            sleep(random.uniform(delay / 2, delay))
            continue
        if writing:
            now = time.monotonic()
            if _streak.started is None or now - _streak.last_end >= PAUSE:
                _streak.started = now
        return attempt


def ended() -> None:
    """The write transaction this thread began with :func:`begin` has ended (committed or rolled back)."""
    _streak.last_end = time.monotonic()


def _take_turns(sleep: Callable[[float], None]) -> None:
    """Pause before beginning if this thread has been writing back to back for longer than its stretch."""
    started = _streak.started
    if started is None:
        return
    now = time.monotonic()
    if now - _streak.last_end >= PAUSE:  # it has not been writing back to back: others had their chance
        _streak.started = None
        return
    stretch = SHARED_STRETCH if _waiting > 0 else STRETCH
    if now - started >= stretch:
        sleep(PAUSE)
        _streak.started = None


def _enter_waiting(writing: bool) -> None:
    global _waiting
    if writing:
        with _waiting_lock:
            _waiting += 1


def _leave_waiting(writing: bool) -> None:
    global _waiting
    if writing:
        with _waiting_lock:
            _waiting -= 1
