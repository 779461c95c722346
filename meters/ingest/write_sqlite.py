"""Storing chunks of events on SQLite: one ``executemany`` of ``INSERT … ON CONFLICT (event_id) DO NOTHING`` in
the chunk's ``BEGIN IMMEDIATE`` transaction (``billing.db`` begins every write transaction so), which holds the
database's single write lock: no other chunk, and no ingestion cutoff, runs meanwhile.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from dbkit.clock import utcnow
from meters.events import to_epoch_us
from meters.ingest.read import COLUMNS, ID

__all__ = ["SqliteWriter", "cutoff_now"]

_LOOKUP = 10_000  # ids per query when the ids already stored are looked up


def cutoff_now(connection: Connection) -> int:
    """The ingestion cutoff, microseconds since the epoch: the transaction's ``BEGIN IMMEDIATE`` waits for the
    chunk being stored, and no chunk is stored while it lasts."""
    return to_epoch_us(utcnow())


class SqliteWriter:
    """Stores a chunk; returns the ids that were already stored, with their content hashes."""

    def store(self, connection: Connection, events: list[tuple[Any, ...]]) -> tuple[int, dict[str, int]]:
        """Store ``events``: their ``received_at`` (the clock: the write lock is already held, so no cutoff is
        being taken), and the ids that were already stored, with their content hashes."""
        received_at = to_epoch_us(utcnow())
        return received_at, self._stored(connection, events, received_at)

    @staticmethod
    def _stored(connection: Connection, events: list[tuple[Any, ...]], received_at: int) -> dict[str, int]:
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(
                f"INSERT INTO usage_events ({COLUMNS}, received_at) "
                f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, {int(received_at)}) ON CONFLICT (event_id) DO NOTHING",
                events,
            )
            inserted = cursor.rowcount
            if inserted == len(events):
                return {}
            # The write lock is held, and SQLite gives a new row the id after the greatest: this chunk's rows are
            # the last ``inserted`` ids, and the rows with an id up to ``before`` were stored before it.
            greatest: int = cursor.execute("SELECT coalesce(max(id), 0) FROM usage_events").fetchone()[0]
            before = greatest - inserted
            stored: dict[str, int] = {}
            ids = [event[ID] for event in events]
            for start in range(0, len(ids), _LOOKUP):
                batch = ids[start : start + _LOOKUP]
                cursor.execute(
                    "SELECT event_id, content_hash FROM usage_events "
                    f"WHERE id <= ? AND event_id IN ({', '.join('?' * len(batch))})",
                    (before, *batch),
                )
                stored.update(cursor.fetchall())
            return stored
        finally:
            cursor.close()
