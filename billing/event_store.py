"""Where the usage events live: the event store of the ``events_url`` setting (see :mod:`meters.store`).

Unset (the default), the events live in the billing database itself, ``usage_events`` beside the billing state.
``chdb:///folder`` or ``clickhouse://user:password@host:8123/database`` puts them in ClickHouse; a SQL URL in
another SQL database. Billing state (customers, subscriptions, invoices, the ledger) never moves.

Everything that reads or stores events asks :func:`event_store` for the store of the billing database's engine.
"""

from __future__ import annotations

import threading
import weakref

from sqlalchemy import Engine

from billing.config import get_settings
from meters.ingest import ON_PARSED, ON_STORED
from meters.store import EventStore, is_clickhouse_url, open_event_store
from meters.store.sql import SqlEventStore

__all__ = ["create_event_tables", "event_store", "events_counted", "use_event_store"]

_STORES: weakref.WeakKeyDictionary[Engine, EventStore | None] = weakref.WeakKeyDictionary()
"""Each billing database's event store; None for the billing database itself (a store that held its engine would
keep the engine alive for ever: a weak dictionary's value must not refer to its key)."""
_LOCK = threading.Lock()


def use_event_store(engine: Engine, store: EventStore) -> None:
    """Keep the events of the billing database ``engine`` in ``store`` (an embedding application, the tests)."""
    base = _origin(engine)
    with _LOCK:
        _STORES[base] = _kept(base, store)


def event_store(engine: Engine) -> EventStore:
    """The event store of the billing database ``engine``: the one given to :func:`use_event_store`, else the
    ``events_url`` setting's, else the billing database itself. An engine made from another by
    ``execution_options`` (a read-only twin, a writer's polling one) has its origin's store; when that store is
    the billing database itself, it is reached through the twin, with the twin's options."""
    base = _origin(engine)
    with _LOCK:
        if base in _STORES:
            store = _STORES[base]
        else:
            store = _STORES[base] = _kept(base, _configured(base))
    return SqlEventStore(engine) if store is None else store


def _kept(base: Engine, store: EventStore) -> EventStore | None:
    """What :data:`_STORES` keeps of ``base``'s ``store``: None when it is the billing database itself."""
    return None if isinstance(store, SqlEventStore) and store.engine is base else store


def _configured(engine: Engine) -> EventStore:
    url = (get_settings().events_url or "").strip()
    if not url or url == engine.url.render_as_string(hide_password=False):
        return SqlEventStore(engine)
    if is_clickhouse_url(url):
        return open_event_store(url)
    from billing.db.engines import engine_for_url

    # the usage counters live beside the billing state: storing events in another database counts nothing there
    return SqlEventStore(engine_for_url(url).execution_options(**{ON_STORED: None, ON_PARSED: None}))


def events_counted(engine: Engine) -> bool:
    """Whether the usage counters (``billing.db.counters``) count the events of the billing database ``engine``:
    only when its events live in it, where the transaction that stores events adds them to the counters. Events
    in another store (ClickHouse, chDB, another SQL database) are not counted: thresholds and entitlements then
    aggregate them in their store, exactly, instead of reading counters."""
    store = event_store(engine)
    if not isinstance(store, SqlEventStore):
        return False
    return _origin(store.engine) is _origin(engine)


def _origin(engine: Engine) -> Engine:
    """The engine ``engine`` was made from by ``execution_options`` (itself if none)."""
    while (origin := getattr(engine, "_proxied", None)) is not None:
        engine = origin
    return engine


def create_event_tables(events_url: str | None) -> str | None:
    """Create the tables of a separate event store (``billing db upgrade``); the store's URL, or None when the
    events live in the billing database (its migrations made their table)."""
    url = (events_url or "").strip()
    if not url:
        return None
    store = open_event_store(url)
    try:
        store.create_tables()
        return store.url
    finally:
        store.close()
