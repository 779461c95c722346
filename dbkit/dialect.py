"""The few places SQLite and PostgreSQL differ, answered once: callers ask, they never test ``dialect.name``.

- ``insert_for(bind, table)``: the dialect's own ``INSERT`` (which has ``on_conflict_do_nothing`` and
  ``on_conflict_do_update`` on both databases);
- ``insert_ignoring(session, table, values)``: insert a row unless it conflicts with one already there;
- ``for_update(bind, statement)``: ``SELECT … FOR UPDATE`` on PostgreSQL; SQLite has no row locks, and its
  write transactions begin IMMEDIATE, so they already hold the database's write lock;
- ``read_only(engine)``: an engine whose SQLite transactions begin DEFERRED (readers never queue for the write
  lock); PostgreSQL is unchanged.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

__all__ = [
    "dialect_of",
    "for_update",
    "insert_for",
    "insert_ignoring",
    "is_postgresql",
    "is_sqlite",
    "read_only",
]

Bind = Engine | Connection | Session | Dialect
_Select = TypeVar("_Select", bound=Select[*tuple[Any, ...]])


def dialect_of(bind: Bind) -> Dialect:
    if isinstance(bind, Dialect):
        return bind
    if isinstance(bind, Session):
        return bind.get_bind().dialect
    return bind.dialect


def is_postgresql(bind: Bind) -> bool:
    return dialect_of(bind).name == "postgresql"


def is_sqlite(bind: Bind) -> bool:
    return dialect_of(bind).name == "sqlite"


def insert_for(bind: Bind, table: Any) -> Any:
    """The dialect's ``INSERT`` for ``table`` (a ``Table`` or a mapped class), with its ``ON CONFLICT`` clauses."""
    module = postgresql if is_postgresql(bind) else sqlite
    return module.insert(table)


def insert_ignoring(session: Session | Connection, table: Any, values: dict[str, Any]) -> Any:
    """Insert ``values`` unless a row with the same unique key exists; the result's ``rowcount`` tells which."""
    return session.execute(insert_for(session, table).values(**values).on_conflict_do_nothing())


def for_update(bind: Bind, statement: _Select) -> _Select:
    """``statement`` locking the rows it reads until the transaction ends (PostgreSQL; see the module's note)."""
    return statement.with_for_update() if is_postgresql(bind) else statement


_READ_ONLY = "_dbkit_read_only"  # the read-only twin, kept on the engine: made once, not once per transaction


def read_only(engine: Engine) -> Engine:
    """``engine`` for transactions that only read: on SQLite they begin DEFERRED, not IMMEDIATE. The same
    object each time for one engine (so that what is cached per engine, such as a session factory, is too)."""
    if engine.get_execution_options().get("sqlite_begin") == "DEFERRED":
        return engine
    twin: Engine | None = engine.__dict__.get(_READ_ONLY)
    if twin is None:
        twin = engine.execution_options(sqlite_begin="DEFERRED")
        setattr(engine, _READ_ONLY, twin)
    return twin


