"""The migrations and the table definitions agree, on every backend."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from billing.db.metadata import ALL_METADATA


def test_migrations_create_every_table(engine):
    tables = set(inspect(engine).get_table_names())
    assert {"alembic_version", "customers", "subscriptions"} <= tables


def test_migrations_match_the_table_definitions(engine):
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), list(ALL_METADATA))
    assert differences == []
