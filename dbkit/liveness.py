"""Pinging pooled connections only when they may have gone stale.

SQLAlchemy's ``pool_pre_ping`` asks the server before every checkout whether the connection still works: a
round trip, and the driver's cost of a statement, each time. An API request storing one event on PostgreSQL
checks a connection out once or twice, and the ping was a fifth of the request's CPU in the serving process.
:func:`ping_after_idle` pings a connection only when it may have gone stale:

- it sat in the pool for longer than ``idle`` seconds (or was never handed out), or
- a connection of the same pool was found lost since it was last handed out: the server restarted, or dropped
  its clients, and every connection in use or in the pool then is suspect.

A connection is found lost when the pool invalidates it (SQLAlchemy does so when a statement it runs finds the
server gone, and when the rollback of a returned connection fails) or when it comes back to the pool closed (a
statement sent straight through the driver found the server gone, and the caller's error went up past SQLAlchemy).
So a restart of the database fails the statements that were under way, and then the request that finds the server
gone first (and any that took a connection before that one failed), as ``pool_pre_ping`` would not; every connection
handed out after that is pinged first, and replaced if the server is gone. (A request that fails that way can be
sent again: events, and every POST with an ``Idempotency-Key``, are idempotent.)
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError

__all__ = ["IDLE", "ping_after_idle"]

IDLE = 1.0
"""Seconds a connection may sit in the pool and be handed out without a ping."""

_CHECKED_IN = "dbkit_checked_in"
_CHECKED_OUT = "dbkit_checked_out"


class _Lost:
    """When a connection of the pool was last found lost (``time.monotonic()``; minus infinity: never)."""

    at = float("-inf")

    def now(self) -> None:
        self.at = time.monotonic()


def ping_after_idle(engine: Engine, idle: float = IDLE) -> None:
    """Ping each connection handed out by ``engine``'s pool that was idle longer than ``idle`` seconds, or that
    was last handed out before a connection of the pool was found lost; one that does not answer is replaced (the
    pool connects again, up to three times), as with ``pool_pre_ping``."""
    dialect = engine.dialect
    lost = _Lost()

    @event.listens_for(engine.pool, "invalidate")
    def _invalidated(_dbapi_connection: Any, _record: Any, _exception: Any) -> None:
        lost.now()

    @event.listens_for(engine.pool, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is None or getattr(dbapi_connection, "closed", False):
            lost.now()
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        now = time.monotonic()
        last_in, last_out = record.info.get(_CHECKED_IN), record.info.get(_CHECKED_OUT)
        record.info[_CHECKED_OUT] = now  # (a ping that fails replaces the connection, and its record's info)
        # trusted: back in the pool a moment ago, and handed out last after the last loss found (a connection
        # handed out before it, in use while the server went away, may come back after it, unaware)
        if last_in is not None and last_out is not None and now - last_in <= idle and last_out > lost.at:
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise DisconnectionError(f"the connection did not answer a ping: {exc}") from exc
            raise
        if not alive:
            raise DisconnectionError("the connection did not answer a ping")
