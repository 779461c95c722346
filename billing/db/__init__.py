"""The database: engines, sessions and migrations. The only place that knows which database it talks to.

SQLite is embedded by default (WAL journal, foreign keys on; writers take the write lock when their transaction
begins, so two writers never deadlock on a lock upgrade, and a writer that finds it taken waits up to 30 s, then
tries again a few times: ``dbkit.writelock``). PostgreSQL runs through psycopg 3. Every table is created by an
Alembic migration (``billing db upgrade``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from dbkit import checkpoints, writelock
from dbkit.exact import register_sqlite_functions
from dbkit.liveness import ping_after_idle

__all__ = [
    "MIGRATIONS",
    "current_revision",
    "head_revision",
    "known_revision",
    "make_engine",
    "session_scope",
    "upgrade",
]

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str, *, background_checkpoints: bool = False, **kwargs: Any) -> Engine:
    """An engine for ``url``, set up for the engine's needs on SQLite and PostgreSQL. Events it stores are added
    to the usage counters in their own transaction (``billing.db.counters``). ``background_checkpoints``
    (SQLite): the write-ahead log is copied into the database file by a thread of the process instead of by the
    commit that fills it (``dbkit.checkpoints``; a serving process's)."""
    if url.startswith("sqlite"):
        engine = _engine(url, connect_args={"timeout": writelock.BUSY_TIMEOUT_SECONDS}, **kwargs)
        _setup_sqlite(engine, background_checkpoints)
    else:
        engine = _engine(url, **kwargs)
        ping_after_idle(engine)  # (``pool_pre_ping`` pings before every checkout: a round trip each)
    parsed = _tally_parsed_for_sqlite if url.startswith("sqlite") else _tally_parsed
    engine.update_execution_options(meters_on_stored=_count_stored, meters_on_parsed=parsed)
    return engine


def _engine(url: str, **kwargs: Any) -> Engine:
    """``create_engine``, a URL it cannot use (no such dialect, a driver not installed, not a URL at all) refused
    as a setting (``ConfigError``: one line, with the URL's password hidden) rather than a traceback."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from billing.config import ConfigError

    try:
        return create_engine(url, **kwargs)
    except (ArgumentError, ImportError) as error:
        try:
            shown = make_url(url).render_as_string(hide_password=True)
        except ArgumentError:
            shown = url
        hint = " (expected sqlite:///FILE or postgresql+psycopg://user@host/database)"
        raise ConfigError(f"database_url: cannot use {shown!r}: {error}{hint}") from None


def _count_stored(connection: Any, events: Any, received_at: int, summary: object = None) -> None:
    from billing.db.counters import count_stored

    count_stored(connection, events, received_at, summary)


def _tally_parsed(events: Any, known_customers: object) -> object:
    from billing.db.counters import tally_parsed

    return tally_parsed(events, known_customers)


def _tally_parsed_for_sqlite(events: Any, known_customers: object) -> object:
    from billing.db.counters import tally_parsed

    return tally_parsed(events, known_customers, copy_text=False)  # (the COPY text is for PostgreSQL)


def _setup_sqlite(engine: Engine, background_checkpoints: bool) -> None:
    database = engine.url.database
    if background_checkpoints and database:

        @event.listens_for(engine, "engine_disposed")
        def _on_dispose(_engine: Engine) -> None:
            checkpoints.stop(database)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy (not the sqlite3 module) decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={writelock.BUSY_TIMEOUT_SECONDS * 1000}")  # (first: WAL may wait)
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA cache_size=-262144")
        cursor.close()
        register_sqlite_functions(dbapi_connection)  # exact sums of money stored as text (dbkit.exact)
        if background_checkpoints and database:
            checkpoints.run_in_background(dbapi_connection, database)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: a deferred transaction that later writes can fail at once
        # with "database is locked" instead of waiting; read-only paths ask for DEFERRED (dbkit.read_only).
        # Still locked after the busy timeout: begun again, a few times (nothing has happened in it yet).
        # A writer that has been writing back to back for a while first lets the others have a turn.
        # The process's lock of the file is held for the driver's connection (the transaction may end in
        # another thread), released when the transaction ends, and at the latest when the connection goes back
        # to the pool or is invalidated.
        # ``sqlite_poll`` (seconds): a writer that keeps a caller waiting looks for the lock that often first.
        options = connection.get_execution_options()
        mode = options.get("sqlite_begin", "IMMEDIATE")
        owner = connection.connection.dbapi_connection
        poll = options.get("sqlite_poll")
        # (a polling writer's tries go straight to the driver: a refused BEGIN costs microseconds, not an error
        # handled by SQLAlchemy)
        execute = connection.exec_driver_sql if poll is None else owner.execute
        writelock.begin(execute, mode, database=database, owner=owner, poll=poll)

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _on_end(connection: Any) -> None:
        try:
            owner = connection.connection.dbapi_connection
        except Exception:  # an invalidated connection: released by the pool's event below
            return
        writelock.ended(owner, only_if_held=True)

    @event.listens_for(engine, "checkin")
    @event.listens_for(engine, "invalidate")
    def _on_return(dbapi_connection: Any, *_: Any) -> None:
        writelock.ended(dbapi_connection, only_if_held=True)


# A sessionmaker is a class of its own: made once, bound to each transaction's engine when called. (One kept per
# engine, in a weak dictionary, kept every engine alive: the sessionmaker holds its engine, and with it the
# engine's compiled statements, for the life of the process.)
_SESSIONS = sessionmaker(expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    with _SESSIONS(bind=engine) as session, session.begin():
        yield session


def _alembic_config(engine_or_url: Engine | str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if isinstance(engine_or_url, str):
        config.set_main_option("sqlalchemy.url", engine_or_url.replace("%", "%%"))
    else:
        config.attributes["engine"] = engine_or_url
    return config


def upgrade(engine_or_url: Engine | str, revision: str = "head") -> None:
    """Apply the migrations up to ``revision``."""
    from alembic import command

    command.upgrade(_alembic_config(engine_or_url), revision)


def _scripts() -> Any:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config)


def head_revision() -> str | None:
    """The newest revision of the migrations: the one this version's tables are."""
    return _scripts().get_current_head()  # type: ignore[no-any-return]


def known_revision(revision: str) -> bool:
    """Whether ``revision`` is one of this version's migrations (a newer version's is not)."""
    from alembic.util import CommandError

    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: not initialized)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
