"""Storing chunks of events on PostgreSQL: ``COPY``, optimistic first, then through a staging table (see
:class:`PostgresWriter`); and the clock ingestion stamps ``received_at`` with, ordered with the ingestion
cutoff by an advisory lock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from meters.ingest.read import COLUMNS

__all__ = ["PostgresWriter", "cutoff_now"]

# The advisory lock that orders a chunk's received_at with the ingestion cutoff: each chunk holds it shared while
# it is stored, a cutoff takes it exclusively for the instant it reads the clock.
_RECEIVING_LOCK = 0x6D65746572730001

# The database's clock: the same clock for every ingesting host.
_DATABASE_CLOCK = "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"


def cutoff_now(connection: Connection) -> int:
    """The ingestion cutoff, microseconds since the epoch, read once the chunks being stored are committed."""
    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_RECEIVING_LOCK})")
    return int(connection.exec_driver_sql(_DATABASE_CLOCK).scalar_one())


SMALL = 100
"""Chunks of at most this many events are inserted with one statement rather than copied."""

_STAGING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS usage_events_staging ("
    "event_id text, customer text, meter text, occurred_at bigint, value bigint, unique_value text, "
    "properties text, content_hash bigint) ON COMMIT DELETE ROWS"
)


class PostgresWriter:
    """Stores chunks on PostgreSQL.

    The first try is optimistic: ``COPY`` straight into ``usage_events`` (as fast as PostgreSQL takes rows), inside
    a savepoint. The first chunk that holds an id already stored makes that ``COPY`` fail on the unique index;
    the savepoint is rolled back and that chunk, and every later one of this ingestion, goes the classifying way:
    ``COPY`` into a temporary staging table, then ``INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING`` (slower:
    each row is a speculative insertion). Either way the unique index decides, so concurrent ingestions of the
    same events store each of them once.
    """

    def __init__(self) -> None:
        self.optimistic = True

    def received_now(self, connection: Connection) -> int:
        """The chunk's ``received_at``, read under the shared advisory lock (no cutoff is being taken): the lock,
        then the clock, two statements sent at once (one round trip), run in that order."""
        driver: Any = connection.connection.dbapi_connection
        with driver.cursor() as cursor:
            cursor.execute(f"SELECT pg_advisory_xact_lock_shared({_RECEIVING_LOCK}); {_DATABASE_CLOCK}")
            cursor.nextset()
            return int(cursor.fetchone()[0])

    def __call__(self, connection: Connection, events: list[tuple[Any, ...]], received_at: int) -> dict[str, int]:
        driver: Any = connection.connection.dbapi_connection
        if len(events) <= SMALL:
            return self._inserted(driver, events, received_at)
        if self.optimistic:
            savepoint = connection.begin_nested()
            try:
                with (
                    driver.cursor() as cursor,
                    cursor.copy(f"COPY usage_events ({COLUMNS}, received_at) FROM STDIN") as copy,
                ):
                    for event in events:
                        copy.write_row((*event, received_at))
            except Exception as exc:
                savepoint.rollback()
                if getattr(exc, "sqlstate", None) != "23505":  # unique_violation
                    raise
                self.optimistic = False
            else:
                savepoint.commit()
                return {}
        return self._classified(driver, events, received_at)

    @staticmethod
    def _inserted(driver: Any, events: list[tuple[Any, ...]], received_at: int) -> dict[str, int]:
        """A few events (an API request's): one ``INSERT … ON CONFLICT DO NOTHING RETURNING``, fewer round trips
        than a savepoint and a ``COPY``."""
        row = f"({', '.join(['%s'] * (len(COLUMNS.split(',')) + 1))})"
        ordered = sorted(events, key=lambda event: event[0])  # one lock order on the unique index (no deadlock)
        with driver.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO usage_events ({COLUMNS}, received_at) VALUES {', '.join([row] * len(ordered))} "
                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                [value for event in ordered for value in (*event, received_at)],
            )
            inserted = {found[0] for found in cursor.fetchall()}
            refused = [event[0] for event in ordered if event[0] not in inserted]
            if not refused:
                return {}
            cursor.execute("SELECT event_id, content_hash FROM usage_events WHERE event_id = ANY(%s)", (refused,))
            return dict(cursor.fetchall())

    @staticmethod
    def _classified(driver: Any, events: list[tuple[Any, ...]], received_at: int) -> dict[str, int]:
        with driver.cursor() as cursor:
            cursor.execute(_STAGING)
            with cursor.copy(f"COPY usage_events_staging ({COLUMNS}) FROM STDIN") as copy:
                for event in events:
                    copy.write_row(event)
            # ORDER BY event_id: concurrent ingestions take the unique index's locks in one order (no deadlock).
            # The ids not inserted are those already stored, possibly by a transaction that committed meanwhile.
            cursor.execute(
                f"WITH inserted AS (INSERT INTO usage_events ({COLUMNS}, received_at) "
                f"SELECT {COLUMNS}, %s FROM usage_events_staging ORDER BY event_id "
                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id) "
                "SELECT s.event_id FROM usage_events_staging s "
                "WHERE NOT EXISTS (SELECT 1 FROM inserted i WHERE i.event_id = s.event_id)",
                (received_at,),
            )
            refused = [row[0] for row in cursor.fetchall()]
            if not refused:
                return {}
            cursor.execute("SELECT event_id, content_hash FROM usage_events WHERE event_id = ANY(%s)", (refused,))
            return dict(cursor.fetchall())
