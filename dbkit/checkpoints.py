"""SQLite's WAL checkpoints in a thread of their own, for a process whose writers keep someone waiting (the API's
event writer answering requests).

By default the connection whose commit takes the write-ahead log past 1,000 pages copies them into the database
file (SQLite's autocheckpoint) before its commit returns, on the writer's own thread: the request being answered,
and every request queued behind it, waits those milliseconds. A process that asks for background checkpoints
(:func:`run_in_background`, called for each connection it opens) turns that off on its connections and leaves the
copying to one thread per database file, on a connection of its own:

- every :data:`EVERY` seconds a ``PASSIVE`` checkpoint: it never waits for a writer or a reader, copies what it
  can, and runs with the interpreter's lock released (the writers go on meanwhile);
- every :data:`RESTART` seconds one more, while holding the process's lock of the database file
  (``dbkit.writelock.process_lock``, which the process's writers take before SQLite's): it copies the few pages
  written since the previous one, and the process's next write finds the log wholly copied and starts it over
  from its beginning (SQLite starts a log over only then), so the log stays about :data:`RESTART` seconds of
  writes long instead of growing.

The checkpoints are SQLite's own; they decide nothing about what is stored (a log that is not copied yet is read
from, and is durable, as before). Other processes on the same database keep their autocheckpoint. Should the
thread be gone (or a reader hold the log from starting over), a commit still copies the log once it is
:data:`SAFETY_NET` pages long. :func:`stop` ends the thread (an engine's disposal does).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time

from dbkit import writelock

__all__ = ["EVERY", "RESTART", "SAFETY_NET", "run_in_background", "stop"]

log = logging.getLogger(__name__)

EVERY = 0.05
"""Seconds between two checkpoints."""
RESTART = 1.0
"""Seconds between two checkpoints after which the log starts over."""
SAFETY_NET = 10_000
"""Pages (40 MB) of log after which a commit copies it after all (SQLite's autocheckpoint, 1,000 by default)."""

_threads: dict[str, tuple[threading.Thread, threading.Event]] = {}
_guard = threading.Lock()


def _after_fork_in_child() -> None:
    global _guard
    _threads.clear()  # the parent's threads are not the child's
    _guard = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def run_in_background(connection: sqlite3.Connection, database: str) -> None:
    """Leave ``connection``'s checkpoints to this process's checkpoint thread for the file ``database`` (started
    on its first connection). An in-memory database has no log: nothing is done."""
    lock = writelock.process_lock(database)
    if lock is None:
        return
    connection.execute(f"PRAGMA wal_autocheckpoint={SAFETY_NET}")
    key = os.path.realpath(database)
    running = _threads.get(key)
    if running is not None and running[0].is_alive():
        return
    with _guard:
        running = _threads.get(key)
        if running is None or not running[0].is_alive():
            stopping = threading.Event()
            thread = threading.Thread(
                target=_checkpoints, args=(database, lock, stopping), name="sqlite-checkpoints", daemon=True
            )
            _threads[key] = (thread, stopping)
            thread.start()


def stop(database: str) -> None:
    """End this process's checkpoint thread for the file ``database``, if it runs (waiting for its checkpoint)."""
    with _guard:
        running = _threads.pop(os.path.realpath(database), None)
    if running is not None:
        running[1].set()
        running[0].join()


def _checkpoints(database: str, lock: threading.Lock, stopping: threading.Event) -> None:
    """The thread: checkpoints of ``database`` until ``stopping`` is set."""
    connection: sqlite3.Connection | None = None
    restarted = time.monotonic()
    try:
        while not stopping.wait(EVERY):
            try:
                if connection is None:
                    connection = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
                    connection.execute("PRAGMA wal_autocheckpoint=0")
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                if time.monotonic() - restarted >= RESTART:
                    with lock:  # no write of this process meanwhile: its next one starts the log over
                        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    restarted = time.monotonic()
            except Exception as exc:  # (tried again at the next turn; the safety net holds meanwhile)
                log.warning("checkpoint of %s failed: %s", database, exc)
    finally:
        if connection is not None:
            connection.close()
