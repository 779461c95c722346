from __future__ import annotations

from sqlalchemy import inspect


def test_migrations_create_alembic_version(engine):
    assert "alembic_version" in inspect(engine).get_table_names()
