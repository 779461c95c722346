"""Pinging pooled connections only when they may have gone stale.

SQLAlchemy's ``pool_pre_ping`` asks the server before every checkout whether the connection still works: a
round trip each time. An API request storing one event checks a connection out twice (the known customers, then
the storing transaction), so that was two round trips of the seven it took on PostgreSQL, each a wake-up of the
server's process on a busy machine. :func:`ping_after_idle` pings a connection only when it sat in the pool for
longer than ``idle`` seconds (or was never used): a connection in steady use was working a moment ago, and one
that broke meanwhile fails its first statement, which invalidates the pool as any lost connection does (the
statement's caller sees the error; a request is answered with it, and sending it again is safe).
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


def ping_after_idle(engine: Engine, idle: float = IDLE) -> None:
    """Ping each connection handed out by ``engine``'s pool that was idle longer than ``idle`` seconds; one that
    does not answer is replaced (the pool connects again, up to three times), as with ``pool_pre_ping``."""
    dialect = engine.dialect

    @event.listens_for(engine.pool, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        last = record.info.get(_CHECKED_IN)
        if last is not None and time.monotonic() - last <= idle:
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise DisconnectionError(f"the connection did not answer a ping: {exc}") from exc
            raise
        if not alive:
            raise DisconnectionError("the connection did not answer a ping")
