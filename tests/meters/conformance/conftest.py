"""The event stores every conformance test runs against: SQLite, PostgreSQL (when ``BILLING_TEST_DATABASE_URL``
is set) and chDB (ClickHouse in this process; one folder for the test run, a database of its own per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from billing.db import make_engine
from meters.store import EventStore
from meters.store.sql import SqlEventStore
from tests.conftest import BACKENDS, chdb_store

STORES = [*BACKENDS, "chdb"]


@pytest.fixture(params=STORES)
def event_store(request: pytest.FixtureRequest) -> Iterator[EventStore]:
    """An empty event store of each kind."""
    if request.param == "chdb":
        store = chdb_store(request.getfixturevalue("chdb_folder"))
        yield store
        store.client.command(f"DROP DATABASE IF EXISTS `{store.database}`")  # type: ignore[attr-defined]
        return
    engine = make_engine(_sql_url(request, request.param))
    yield SqlEventStore(engine)
    engine.dispose()


def _sql_url(request: pytest.FixtureRequest, backend: str) -> str:
    import shutil

    from tests.conftest import _empty_postgres_tables

    if backend == "sqlite":
        path = request.getfixturevalue("tmp_path") / "billing.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    url, schema = request.getfixturevalue("_postgres_schema")
    _empty_postgres_tables(url, schema)
    return str(url)


@pytest.fixture
def reference(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EventStore]:
    """A second, clean SQLite store: the reference the other stores' answers are compared with."""
    import shutil

    path = tmp_path / "reference.db"
    shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
    engine = make_engine(f"sqlite:///{path}")
    yield SqlEventStore(engine)
    engine.dispose()
