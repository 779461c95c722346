"""Storing chunks of events on PostgreSQL: ``COPY``, optimistic first, then through a staging table (see
:class:`PostgresWriter`); and the clock ingestion stamps ``received_at`` with, ordered with the ingestion
cutoff by an advisory lock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from meters.ingest.read import COLUMNS

__all__ = ["PostgresWriter", "cutoff_at_once", "cutoff_now"]

# The advisory lock that orders a chunk's received_at with the ingestion cutoff: each chunk holds it shared while
# it is stored, a cutoff takes it exclusively for the instant it reads the clock.
_RECEIVING_LOCK = 0x6D65746572730001

# The database's clock: the same clock for every ingesting host.
_DATABASE_CLOCK = "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"


def cutoff_now(connection: Connection) -> int:
    """The ingestion cutoff, microseconds since the epoch, read once the chunks being stored are committed; no
    chunk is stored until the connection's transaction ends (``billing.db.counters.rebuild`` counts under it)."""
    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_RECEIVING_LOCK})")
    return int(connection.exec_driver_sql(_DATABASE_CLOCK).scalar_one())


def cutoff_at_once(connection: Connection) -> int:
    """The ingestion cutoff as :func:`cutoff_now` reads it, in one statement of a transaction of its own
    (``connection``: in autocommit mode): the lock is taken, the clock read and the lock released by the database
    in one go. (Held by a transaction of the client's, the lock stayed taken for the client's round trips, and
    every chunk waited for them: the reactor's process, which takes a cutoff every pass, runs at a lower priority,
    and a busy machine could leave it waiting for a core while it held the lock.)"""
    return int(connection.exec_driver_sql(_CUTOFF_AT_ONCE).scalar_one())


_CUTOFF_AT_ONCE = (
    f"WITH lock AS MATERIALIZED (SELECT pg_advisory_xact_lock({_RECEIVING_LOCK}) AS held) "
    f"SELECT ({_DATABASE_CLOCK.removeprefix('SELECT ')}) FROM lock"
)

_OPTIMISTIC = "meters_optimistic_copy"  # the savepoint an optimistic COPY is rolled back to

SMALL = 100
"""Chunks of at most this many events are inserted with one statement rather than copied."""

# The lock, then the clock read under it (``clock`` reads from ``lock``, so it is computed once the lock is held),
# then the rows with that clock; the clock comes back even when no row was inserted.
_INSERT_SMALL = (
    f"WITH lock AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared({_RECEIVING_LOCK}) AS held), "
    f"clock AS MATERIALIZED (SELECT ({_DATABASE_CLOCK.removeprefix('SELECT ')}) AS t FROM lock), "
    f"inserted AS (INSERT INTO usage_events ({COLUMNS}, received_at) "
    f"SELECT rows.*, clock.t FROM (VALUES {{rows}}) AS rows ({COLUMNS}) CROSS JOIN clock "
    'ORDER BY rows.event_id COLLATE "C" '
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id) "
    "SELECT clock.t, inserted.event_id FROM clock LEFT JOIN inserted ON true"
)
_TYPED_ROW = "(%s::text, %s::text, %s::text, %s::bigint, %s::bigint, %s::text, %s::text, %s::bigint)"

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

    def store(self, connection: Connection, events: list[tuple[Any, ...]]) -> tuple[int, dict[str, int]]:
        """Store ``events``: their ``received_at``, and the ids that were already stored, with their hashes."""
        driver: Any = connection.connection.dbapi_connection
        if len(events) <= SMALL:
            return self._inserted(driver, events)
        optimistic = self.optimistic
        received_at = self._received_now(driver, optimistic)
        if optimistic:
            try:
                with (
                    driver.cursor() as cursor,
                    cursor.copy(f"COPY usage_events ({COLUMNS}, received_at) FROM STDIN") as copy,
                ):
                    for event in events:
                        copy.write_row((*event, received_at))
            except Exception as exc:
                if getattr(exc, "sqlstate", None) != "23505":  # unique_violation
                    raise  # (the transaction is rolled back)
                with driver.cursor() as cursor:
                    cursor.execute(f"ROLLBACK TO SAVEPOINT {_OPTIMISTIC}")
                self.optimistic = False
            else:
                return received_at, {}  # (the savepoint is released by the commit)
        return received_at, self._classified(driver, events, received_at)

    @staticmethod
    def _received_now(driver: Any, savepoint: bool) -> int:
        """The chunk's ``received_at``, read under the shared advisory lock (no cutoff is being taken): the lock,
        then the clock (and the savepoint of an optimistic ``COPY``), statements sent at once (one round trip),
        run in that order."""
        with driver.cursor() as cursor:
            after = f"; SAVEPOINT {_OPTIMISTIC}" if savepoint else ""
            cursor.execute(f"SELECT pg_advisory_xact_lock_shared({_RECEIVING_LOCK}); {_DATABASE_CLOCK}{after}")
            cursor.nextset()
            return int(cursor.fetchone()[0])

    @staticmethod
    def _inserted(driver: Any, events: list[tuple[Any, ...]]) -> tuple[int, dict[str, int]]:
        """A few events (an API request's): one statement takes the shared lock, reads the clock under it and
        inserts them with it as their ``received_at`` (``ON CONFLICT DO NOTHING``), answering the clock and the
        ids inserted: a statement's round trip and its cost in the driver (for one event, more than the rest of
        storing it) instead of three."""
        ordered = sorted(events, key=lambda event: event[0])  # one lock order on the unique index (no deadlock)
        with driver.cursor() as cursor:
            cursor.execute(
                _INSERT_SMALL.format(rows=", ".join([_TYPED_ROW] * len(ordered))),
                [value for event in ordered for value in event],
            )
            answered = cursor.fetchall()
            received_at = int(answered[0][0])
            inserted = {event_id for _, event_id in answered}
            refused = [event[0] for event in ordered if event[0] not in inserted]
            if not refused:
                return received_at, {}
            cursor.execute("SELECT event_id, content_hash FROM usage_events WHERE event_id = ANY(%s)", (refused,))
            return received_at, dict(cursor.fetchall())

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
                f'SELECT {COLUMNS}, %s FROM usage_events_staging ORDER BY event_id COLLATE "C" '
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
