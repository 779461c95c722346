"""The process's engines: one per database URL for the life of the process, so its connection pool is shared.

``get_engine`` is the engine of the configured database (``database_url``); the scheduler's jobs call it. The
HTTP API takes the engine of its own settings (``billing.api.deps.api_engine``): an embedding application picks
the database with ``create_app(settings)``.
"""

from __future__ import annotations

import threading

from sqlalchemy import Engine

from billing.config import get_settings
from billing.db import make_engine

__all__ = ["checkpoint_in_background", "dispose_engines", "engine_for_url", "get_engine"]

_engines: dict[str, Engine] = {}
_lock = threading.Lock()
_background_checkpoints = False


def checkpoint_in_background() -> None:
    """Make the process's SQLite engines (those made from now on) leave the copying of the write-ahead log to a
    thread (``dbkit.checkpoints``): the API's process, whose writes keep requests waiting."""
    global _background_checkpoints
    _background_checkpoints = True


def engine_for_url(url: str) -> Engine:
    """The process's engine for ``url``, made on first use."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url, background_checkpoints=_background_checkpoints)
        return engine


def get_engine() -> Engine:
    """The engine of the configured database (the ``database_url`` setting)."""
    return engine_for_url(get_settings().database_url)


def dispose_engines() -> None:
    """Close every engine made so far (on shutdown, or between tests)."""
    with _lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.dispose()
