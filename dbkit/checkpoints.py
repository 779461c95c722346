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
from, and is durable, as before). Other processes on the same database keep their autocheckpoint.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable

from dbkit import writelock

__all__ = ["EVERY", "RESTART", "run_in_background"]

log = logging.getLogger(__name__)

EVERY = 0.05
"""Seconds between two checkpoints."""
RESTART = 1.0
"""Seconds between two checkpoints after which the log starts over."""

_threads: dict[str, threading.Thread] = {}
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
    connection.execute("PRAGMA wal_autocheckpoint=0")
    key = os.path.realpath(database)
    thread = _threads.get(key)
    if thread is not None and thread.is_alive():
        return
    with _guard:
        thread = _threads.get(key)
        if thread is None or not thread.is_alive():
            thread = threading.Thread(
                target=_checkpoints, args=(database, lock, time.sleep), name="sqlite-checkpoints", daemon=True
            )
            _threads[key] = thread
            thread.start()


def _checkpoints(database: str, lock: threading.Lock, sleep: Callable[[float], None]) -> None:
    """The thread: checkpoints of ``database`` for as long as the process runs."""
    connection = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA wal_autocheckpoint=0")
    restarted = time.monotonic()
    while True:
        sleep(EVERY)
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            if time.monotonic() - restarted >= RESTART:
                with lock:  # no write of this process meanwhile: its next one starts the log over
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                restarted = time.monotonic()
        except sqlite3.Error as exc:  # (a checkpoint that cannot run now is tried again at the next turn)
            log.warning("checkpoint of %s failed: %s", database, exc)
