"""Column types and the table conventions every package's tables share.

- ``ExactDecimal`` is NUMERIC on PostgreSQL and TEXT on SQLite (SQLite's NUMERIC affinity would turn decimals
  into binary floats); either way Python sees ``Decimal`` and nothing is ever rounded by the database.
- ``UTCDateTime`` is a timezone-aware timestamp that always reads back as an aware UTC ``datetime`` (SQLite keeps
  no offset, so without it a value read back there is naive).
- ``ID_TYPE``: BIGINT, except on SQLite, which only auto-increments an INTEGER PRIMARY KEY.
- ``NAMING``: the constraint naming convention of every package's ``MetaData``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, MetaData, Numeric, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from dbkit.clock import as_utc

__all__ = ["ID_TYPE", "NAMING", "ExactDecimal", "UTCDateTime", "new_metadata"]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")


def new_metadata() -> MetaData:
    """A package's own ``MetaData``, with the shared naming convention."""
    return MetaData(naming_convention=NAMING)


class ExactDecimal(TypeDecorator[Decimal]):
    """An exact decimal column: NUMERIC on PostgreSQL, TEXT on SQLite."""

    impl = Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String())
        return dialect.type_descriptor(Numeric(asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError(f"refusing float {value!r} for an exact decimal column")
        value = Decimal(value)
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp with time zone that reads back as an aware UTC ``datetime`` on every database. Written as UTC
    (an instant with another offset is converted first: SQLite keeps no offset, and would read it back shifted)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return as_utc(value) if isinstance(value, dt.datetime) else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        return None if value is None else as_utc(value)
