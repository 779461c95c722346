"""Shared fixtures: a fresh, migrated database per test on SQLite and, when ``BILLING_TEST_DATABASE_URL`` is set,
on PostgreSQL too (every test that takes ``db_url`` or ``engine`` runs on both).

SQLite: the migrations run once into a template file, copied for each test. PostgreSQL: the migrations run once
into a schema of its own for this test run (dropped at the end); each test starts from emptied tables.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import Engine, text

from billing.db import make_engine, upgrade

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CATALOG = ROOT / "catalog.toml"
PG_URL = os.environ.get("BILLING_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "billing.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def _postgres_schema() -> Iterator[tuple[str, str]]:
    assert PG_URL
    schema = f"billing_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = make_engine(PG_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in PG_URL else "?"
    url = f"{PG_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    upgrade(url)
    try:
        yield url, schema
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _empty_postgres_tables(url: str, schema: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            tables = (
                connection.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = :s AND tablename <> 'alembic_version'"),
                    {"s": schema},
                )
                .scalars()
                .all()
            )
            if tables:
                names = ", ".join(f'"{schema}"."{t}"' for t in tables)
                connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh, migrated database (SQLite file or PostgreSQL schema)."""
    if request.param == "sqlite":
        path = tmp_path / "billing.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    url, schema = request.getfixturevalue("_postgres_schema")
    _empty_postgres_tables(url, schema)
    return url


@pytest.fixture(autouse=True)
def _close_cached_engines() -> Iterator[None]:
    """After each test, the engines the services cached (``billing.db.engines.get_engine``) close their pooled
    connections: a PostgreSQL run of the whole suite would otherwise keep dozens of idle connections open."""
    yield
    from billing.db.engines import dispose_engines

    dispose_engines()


@pytest.fixture
def one_thread() -> None:
    """This process runs one thread, so that it may fork parsing or rating workers (``dbkit.forkpool.can_fork``):
    waits for the threads earlier tests left (a writer's or a server's, which end once idle), and fails naming
    any that stays."""
    deadline = time.monotonic() + 30
    while threading.active_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    if threading.active_count() > 1:
        pytest.fail(f"threads still running, no worker could fork: {[t.name for t in threading.enumerate()]}")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def chdb_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test run's chDB folder (chDB holds one per process); each store in it has a database of its own."""
    pytest.importorskip("chdb")
    return tmp_path_factory.mktemp("chdb")


def chdb_store(folder: Path) -> Any:
    """A chDB event store in a database of its own, its table created."""
    from meters.store.clickhouse import ClickHouseEventStore

    store = ClickHouseEventStore.open(f"chdb://{folder}?database=t_{uuid.uuid4().hex[:12]}")
    store.create_tables()
    return store


@pytest.fixture
def sample_catalog_path() -> Path:
    return SAMPLE_CATALOG


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Environment for running the ``billing`` command against the test database and the sample catalog."""
    from billing.config import get_settings

    env = {
        "BILLING_DATABASE_URL": db_url,
        "BILLING_CATALOG": str(SAMPLE_CATALOG),
        "BILLING_CONFIG": str(ROOT / "config.toml"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()
