"""dbkit.checkpoints: a process that asks for background checkpoints never copies the write-ahead log in a
commit; its checkpoint thread does, and the log starts over instead of growing."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from billing.db import make_engine
from dbkit import checkpoints


def _log(path: Path) -> tuple[int, int]:
    """(frames in the log, frames of it copied into the database), as a passive checkpoint that copies nothing
    more reads them (another connection, its own checkpoints off)."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA wal_autocheckpoint=0")
        _busy, frames, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return frames, copied
    finally:
        connection.close()


def _until(condition: object, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_the_checkpoint_thread_copies_the_log_and_starts_it_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoints, "EVERY", 0.01)
    monkeypatch.setattr(checkpoints, "RESTART", 0.2)
    path = tmp_path / "log.db"
    engine = make_engine(f"sqlite:///{path}", background_checkpoints=True)
    try:
        with engine.begin() as connection:  # a commit copies only a log of 10,000 pages (the thread's safety net)
            assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == checkpoints.SAFETY_NET
            connection.execute(text("CREATE TABLE readings (id INTEGER PRIMARY KEY, body TEXT)"))
        written = 0
        started = time.monotonic()
        while time.monotonic() - started < 1.0:  # a writer of small transactions, as the API's event writer
            with engine.begin() as connection:
                connection.execute(text("INSERT INTO readings (body) VALUES (:body)"), {"body": "x" * 200})
            written += 1
            time.sleep(0.001)  # (requests arrive apart: a writer that never lets go starves the restart)
        # every transaction appended a frame at least: a log that never started over would hold them all
        frames, _ = _log(path)
        assert written > 100 and frames < written
        # and what is written is copied without any writer's help
        assert _until(lambda: (lambda log: log[0] == log[1])(_log(path)))
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM readings").scalar_one() == written
    finally:
        engine.dispose()
    # the engine's disposal ends the thread
    assert not [t for t in threading.enumerate() if t.name == "sqlite-checkpoints" and t.is_alive()]


def test_without_background_checkpoints_a_commit_copies_the_log(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == 1000  # SQLite's own
    finally:
        engine.dispose()
