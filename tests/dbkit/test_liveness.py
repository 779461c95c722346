"""dbkit.liveness: a pooled connection is pinged when it comes out of the pool after sitting idle, not when it
was in use a moment ago; one the server closed meanwhile is replaced before anyone uses it."""

from __future__ import annotations

import time

import psycopg
import pytest
from sqlalchemy import create_engine, text

from dbkit.liveness import ping_after_idle


@pytest.fixture
def pinged(db_url, monkeypatch):
    """An engine of one pooled connection that pings it after 0.2 s idle, and the list of its pings."""
    engine = create_engine(db_url, pool_size=1, max_overflow=0)
    ping_after_idle(engine, idle=0.2)
    pings: list[float] = []
    real = engine.dialect.do_ping

    def do_ping(dbapi_connection):
        pings.append(time.monotonic())
        return real(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", do_ping)
    yield engine, pings
    engine.dispose()


def test_a_connection_is_pinged_when_new_or_idle_not_when_just_used(pinged):
    engine, pings = pinged
    with engine.connect() as connection:  # new: never handed out before
        connection.execute(text("SELECT 1"))
    assert len(pings) == 1
    for _ in range(3):  # back in the pool a moment ago: no ping
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    assert len(pings) == 1
    time.sleep(0.3)  # idle longer than 0.2 s: pinged once more
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    assert len(pings) == 2


def test_a_connection_the_server_closed_while_idle_is_replaced_before_use(pinged, db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL: a server that closes a client's connection")
    engine, pings = pinged
    with engine.connect() as connection:
        first = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    other = create_engine(db_url, poolclass=None)
    with other.connect() as admin:
        assert admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar_one() is True
    other.dispose()
    time.sleep(0.3)
    with engine.connect() as connection:  # the ping finds it closed: the pool connects again
        second = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    assert second != first
    assert len(pings) == 3  # the first connection twice (new, then idle), its replacement once (new)


def _driver_statement(engine, sql: str):
    """``sql`` sent straight through the driver in a transaction, as ingestion's driver-level paths send theirs."""
    with engine.connect() as connection, connection.begin():
        cursor = connection.connection.dbapi_connection.cursor()
        cursor.execute(sql)
        return cursor.fetchone()[0]


def _raw_statement(engine, sql: str):
    """``sql`` sent on a raw pooled connection in autocommit, outside any transaction of SQLAlchemy's (as the
    known customers of an API batch are read)."""
    connection = engine.raw_connection()
    try:
        connection.driver_connection.autocommit = True
        cursor = connection.cursor()
        cursor.execute(sql)
        return cursor.fetchone()[0]
    finally:
        if not connection.driver_connection.closed:
            connection.driver_connection.autocommit = False
        connection.close()


@pytest.mark.parametrize("path", ["raw", "driver", "sqlalchemy"])
def test_after_the_server_drops_every_connection_one_request_fails_not_one_per_connection(db_url, path):
    """A restart of the database within a second of the pool's last use: the first request finds its connection
    gone and fails (as with any lost connection); the pool's other connections were used before that, so they
    are pinged and replaced before anyone uses them, whether the failure went through SQLAlchemy or straight
    through the driver (whose error SQLAlchemy never sees)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL: a server that closes a client's connections")
    engine = create_engine(db_url, pool_size=3, max_overflow=0)
    ping_after_idle(engine, idle=60.0)  # (only the loss makes the pool ping here)
    try:
        held = [engine.connect() for _ in range(3)]
        pids = [connection.execute(text("SELECT pg_backend_pid()")).scalar_one() for connection in held]
        for connection in held:
            connection.close()
        admin = create_engine(db_url)
        with admin.connect() as connection:
            for pid in pids:
                assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
        admin.dispose()
        time.sleep(0.2)  # (the server has closed them)

        def request():
            if path == "raw":
                return _raw_statement(engine, "SELECT pg_backend_pid()")
            if path == "driver":
                return _driver_statement(engine, "SELECT pg_backend_pid()")
            with engine.connect() as connection:
                return connection.execute(text("SELECT pg_backend_pid()")).scalar_one()

        outcomes = []
        for _ in range(6):
            try:
                outcomes.append(request())
            except Exception as exc:  # the lost connection's error, whichever layer raised it
                outcomes.append(type(exc).__name__)
        assert isinstance(outcomes[0], str), outcomes  # the first finds the server gone
        assert all(isinstance(pid, int) and pid not in pids for pid in outcomes[1:]), outcomes
    finally:
        engine.dispose()


def test_a_connection_in_use_while_the_server_went_away_is_pinged_after_it_comes_back(db_url):
    """One connection is held (in use) while the server drops every connection; another request finds the server
    gone; the held one comes back to the pool after that, unaware: it is pinged before anyone uses it again."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL: a server that closes a client's connections")
    engine = create_engine(db_url, pool_size=2, max_overflow=0)
    ping_after_idle(engine, idle=60.0)
    try:
        held = engine.connect()
        held_pid = held.execute(text("SELECT pg_backend_pid()")).scalar_one()
        held.commit()  # (idle in the application's hands: no transaction open)
        first = _raw_statement(engine, "SELECT pg_backend_pid()")  # the other pooled connection, used a moment ago
        admin = create_engine(db_url)
        with admin.connect() as connection:
            for pid in (first, held_pid):
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        admin.dispose()
        time.sleep(0.2)
        with pytest.raises(psycopg.OperationalError):  # the request that finds the server gone
            _raw_statement(engine, "SELECT pg_backend_pid()")
        held.close()  # back in the pool after the loss was found, never told
        pids = [_raw_statement(engine, "SELECT pg_backend_pid()") for _ in range(4)]
        assert first not in pids and held_pid not in pids
    finally:
        engine.dispose()
