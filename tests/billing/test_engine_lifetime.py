"""An engine the process lets go of is freed, with its pool and compiled statements: the per-engine caches
(session factories, event stores) must not keep it alive. A process that opens databases one after another (the
test suite; a console of several databases) would otherwise hold every engine it ever made."""

from __future__ import annotations

import gc
import weakref

from sqlalchemy import select

from billing.db import make_engine, session_scope
from billing.event_store import event_store
from meters.store.sql import SqlEventStore


def test_an_engine_let_go_of_is_freed_after_transactions_and_its_event_store(db_url):
    engine = make_engine(db_url)
    with session_scope(engine) as session:
        assert session.scalar(select(1)) == 1
    store = event_store(engine)
    assert isinstance(store, SqlEventStore) and store.engine is engine  # the billing database keeps its events
    twin = engine.execution_options(isolation_level="AUTOCOMMIT")
    assert event_store(twin).engine is twin  # a twin reaches the same store through its own options
    freed = weakref.ref(engine)
    engine.dispose()
    del engine, session, store, twin
    gc.collect()
    assert freed() is None
