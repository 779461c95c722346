"""Alembic environment: every package's tables, on the engine or URL that ``billing.db.upgrade`` hands in."""

from __future__ import annotations

from alembic import context

from billing.db import make_engine
from billing.db.metadata import ALL_METADATA

config = context.config
target_metadata = list(ALL_METADATA)


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    owned = engine is None
    if engine is None:
        engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        if owned:
            engine.dispose()


run_migrations_online()
