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
  (``SHARED_STRETCH`` when another thread of this process is waiting to write), holding the lock for at least
  ``BUSY_SHARE`` of that time, pauses ``PAUSE`` before its next ``BEGIN`` — longer than a waiter's sleep, so a
  waiter gets its turn. A writer of many short transactions that leaves the lock free most of the time (the API's
  event writer under a steady stream) never pauses: a waiter finds the lock free at most of its looks.
- **queueing in the process** — SQLite's busy handler polls: a waiting writer sleeps up to 100 ms between two
  looks, so a short write that finds the lock taken waits far longer than the transaction that holds it. Writers
  of one process (the API's request threads, its usage reactor, a billing run's workers) therefore queue on a
  lock of the process for the database file first (``database=`` of :func:`begin`), and the next one begins the
  moment the previous one ends; only writers of other processes meet SQLite's busy handler. A writer that waits
  on it longer than the busy timeout goes on without it (SQLite's own lock still keeps one writer at a time).
- **looking often, for a writer that answers someone** — a writer that keeps a caller waiting (the API's event
  writer, answering requests) may ask to look every ``poll`` seconds instead (``poll`` of :func:`begin`): its
  ``BEGIN`` runs with SQLite's busy handler off and is tried again after ``poll`` for up to ``POLL_FOR``
  seconds, so it begins within a fraction of a millisecond of the moment another process's writer commits,
  instead of after the busy handler's next sleep (1, 2, 5, 10 ms and longer). After ``POLL_FOR`` it waits as
  every writer does.
"""

from __future__ import annotations

import logging
import math
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable

__all__ = [
    "BEGIN_ATTEMPTS",
    "BUSY_SHARE",
    "BUSY_TIMEOUT_SECONDS",
    "PAUSE",
    "POLL_FOR",
    "SHARED_STRETCH",
    "STRETCH",
    "begin",
    "ended",
    "is_locked",
    "process_lock",
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
BUSY_SHARE = 0.5
"""The share of a stretch a writer must have held the lock for to pause after it."""
POLL_FOR = 0.25
"""Seconds a polling writer (``poll`` of :func:`begin`) tries ``BEGIN`` itself before SQLite's busy handler waits."""

# SQLite's primary result codes: SQLITE_BUSY (another connection holds the lock), SQLITE_LOCKED (a table is
# locked by this connection's own shared cache).
_BUSY_CODES = frozenset({5, 6})


class _Streak(threading.local):
    """This thread's series of back-to-back write transactions: when it began, when its last one ended (a gap
    of ``PAUSE`` or more between two ends a series: a waiter could take its turn in it)."""

    started: float | None = None
    last_end: float = -math.inf
    busy: float = 0.0  # seconds of the series spent holding the lock
    began: float | None = None  # when the open write transaction began


_streak = _Streak()
_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()
# the process locks held by open write transactions, by owner (a connection: a transaction may end in another
# thread than the one it began in); None: one that went on without
_held: dict[object, threading.Lock | None] = {}
_waiting = 0  # threads of this process in BEGIN right now
_waiting_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """A forked child starts with no writer of its own: locks another thread of the parent held stay behind."""
    global _process_locks_guard, _waiting_lock, _waiting
    _process_locks.clear()
    _process_locks_guard = threading.Lock()
    _waiting_lock = threading.Lock()
    _waiting = 0
    _held.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def is_locked(exc: BaseException) -> bool:
    """Whether ``exc`` (the sqlite3 module's, or SQLAlchemy's wrapping it) is SQLite saying the database is locked."""
    original = getattr(exc, "orig", None) or exc
    if not isinstance(original, sqlite3.OperationalError):
        return False
    code = getattr(original, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _BUSY_CODES
    return "locked" in str(original)


def process_lock(database: str | None) -> threading.Lock | None:
    """The lock the writers of this process take before SQLite's, for the database file ``database`` (None for
    an in-memory database: no other connection shares it)."""
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    known = _process_locks.get(database)
    if known is not None:
        return known
    key = os.path.realpath(database)
    with _process_locks_guard:
        lock = _process_locks.get(key)
        if lock is None:
            lock = _process_locks[key] = threading.Lock()
        _process_locks[database] = lock  # (as named, too: found without resolving the path again)
        return lock


def begin(
    execute: Callable[[str], object],
    mode: str = "IMMEDIATE",
    *,
    database: str | None = None,
    owner: object = None,
    attempts: int = BEGIN_ATTEMPTS,
    base_delay: float = 0.05,
    sleep: Callable[[float], None] = time.sleep,
    poll: float | None = None,
) -> int:
    """Run ``BEGIN <mode>`` through ``execute``; see the module docstring. A write transaction (any mode but
    DEFERRED) first pauses if this thread has been writing back to back for too long; when the database stays
    locked for the whole busy timeout, ``BEGIN`` is tried again after 0.05 s, 0.1 s, 0.2 s, … (each a random
    point in the upper half of that), ``attempts`` times in all. Returns the attempt that succeeded; the last
    "database is locked" is raised. ``database``: the database file, whose process lock a write transaction
    takes first (see the module docstring), held until :func:`ended` is called with the same ``owner`` (the
    connection; by default the thread). Call :func:`ended` when a write transaction begun here ends. ``poll``:
    a write transaction looks for the lock every ``poll`` seconds for up to ``POLL_FOR`` first (see the module
    docstring); ``execute`` then runs ``PRAGMA busy_timeout`` too."""
    writing = mode.upper() != "DEFERRED"
    if writing:
        _take_turns(sleep)
    held = _acquire(database) if writing else None
    try:
        if writing and poll is not None and _polled(execute, mode, poll, sleep):
            attempt = _begun()
        else:
            attempt = _begin(execute, mode, writing, attempts, base_delay, sleep)
    except BaseException:
        if held is not None:
            held.release()
        raise
    if writing:
        _held[_owner(owner)] = held
    return attempt


def _owner(owner: object) -> object:
    return ("thread", threading.get_ident()) if owner is None else ("object", id(owner))


def _acquire(database: str | None) -> threading.Lock | None:
    """This process's lock of ``database``, taken (None: there is none, or it stayed taken for the busy timeout)."""
    lock = process_lock(database)
    if lock is None:
        return None
    _enter_waiting(True)
    try:
        if lock.acquire(timeout=BUSY_TIMEOUT_SECONDS):
            return lock
    finally:
        _leave_waiting(True)
    log.warning("a writer of this process held the database for %d s; beginning without waiting for it",
                BUSY_TIMEOUT_SECONDS)
    return None


def _polled(execute: Callable[[str], object], mode: str, poll: float, sleep: Callable[[float], None]) -> bool:
    """``BEGIN`` with SQLite's busy handler off, tried every ``poll`` seconds for up to ``POLL_FOR``: whether it
    began (the busy timeout is set back either way)."""
    deadline = time.monotonic() + POLL_FOR
    _enter_waiting(True)
    execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                execute(f"BEGIN {mode}")
                return True
            except Exception as exc:
                if not is_locked(exc):
                    raise
            if time.monotonic() >= deadline:
                return False
            sleep(poll)
    finally:
        execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
        _leave_waiting(True)


def _begun() -> int:
    """A write transaction has begun at its first attempt: the series of back-to-back writes goes on."""
    now = time.monotonic()
    if _streak.started is None or now - _streak.last_end >= PAUSE:
        _streak.started = now
        _streak.busy = 0.0
    _streak.began = now
    return 1


def _begin(
    execute: Callable[[str], object],
    mode: str,
    writing: bool,
    attempts: int,
    base_delay: float,
    sleep: Callable[[float], None],
) -> int:
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
            _begun()
        return attempt


def ended(owner: object = None, *, only_if_held: bool = False) -> None:
    """The write transaction begun with :func:`begin` (by this thread, or for ``owner``) has ended (committed or
    rolled back): the process lock it held is released. ``only_if_held``: nothing to do unless ``owner`` has a
    write transaction open (the end of a read, or a second call for the same transaction)."""
    key = _owner(owner)
    if only_if_held and key not in _held:
        return
    now = _streak.last_end = time.monotonic()
    if _streak.began is not None:
        _streak.busy += now - _streak.began
        _streak.began = None
    held = _held.pop(key, None)
    if held is not None:
        held.release()


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
        if _streak.busy >= BUSY_SHARE * (now - started):
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
