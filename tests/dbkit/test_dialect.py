"""dbkit.among: the rows whose column is among the values, however many (one array parameter on PostgreSQL).

dbkit.insert_bound: rows bound before the transaction (bind_rows) go in the same way, or update the row of their
unique key only when that row's reading is not newer.

dbkit.insert_many_ignoring: rows go in through the driver with the columns' own bind processing (an exact
decimal as text on SQLite, an aware instant read back as the same instant), a row whose unique key is already
stored is skipped, and the count says how many went in."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import JSON, Column, Engine, Integer, String, Table, UniqueConstraint, insert, select

from dbkit import among, bind_rows, insert_bound, insert_many_ignoring, is_sqlite
from dbkit.types import ExactDecimal, UTCDateTime, new_metadata

_METADATA = new_metadata()
_READINGS = Table(
    "many_readings",
    _METADATA,
    Column("id", Integer, primary_key=True),
    Column("key", String, nullable=False),
    Column("amount", ExactDecimal),
    Column("at", UTCDateTime),
    Column("code", String(5)),
    UniqueConstraint("key"),
)
_ODD = Table(  # a reserved word for a name, a JSON column, a default set in Python
    "many_odd",
    _METADATA,
    Column("id", Integer, primary_key=True),
    Column("order", Integer),
    Column("doc", JSON),
    Column("tries", Integer, default=0),
)
_AT = dt.datetime(2024, 3, 31, 22, 30, tzinfo=dt.timezone(dt.timedelta(hours=-2)))  # 2024-04-01 00:30 UTC


def test_inserts_processed_values_and_skips_stored_keys(engine: Engine) -> None:
    _METADATA.create_all(engine)
    try:
        with engine.begin() as connection:
            first = [
                {"key": "a", "amount": Decimal("12.50"), "at": _AT},
                {"key": "b", "amount": Decimal("-0.0001"), "at": _AT},  # the same instant object: processed once
                {"key": "c", "amount": None, "at": None},
            ]
            assert insert_many_ignoring(connection, _READINGS, first) == 3
        with engine.begin() as connection:
            again = [
                {"key": "b", "amount": Decimal("99"), "at": _AT},  # already stored: skipped, not overwritten
                {"key": "d", "amount": Decimal("1E+2"), "at": dt.datetime(2024, 4, 1, 0, 30, tzinfo=dt.UTC)},
            ]
            inserted = insert_many_ignoring(connection, _READINGS, again)
            if is_sqlite(engine):  # exact on SQLite; psycopg's executemany may count only the last statement
                assert inserted == 1
            assert insert_many_ignoring(connection, _READINGS, []) == 0
        with engine.connect() as connection:
            rows = connection.execute(select(_READINGS.c.key, _READINGS.c.amount, _READINGS.c.at)).all()
    finally:
        _METADATA.drop_all(engine)
    stored = {key: (None if amount is None else str(amount), at) for key, amount, at in rows}
    instant = dt.datetime(2024, 4, 1, 0, 30, tzinfo=dt.UTC)
    assert stored == {
        "a": ("12.50", instant),
        "b": ("-0.0001", instant),
        "c": (None, None),
        "d": ("1E+2" if is_sqlite(engine) else "100", instant),
    }


def test_among_picks_the_rows_of_the_values_given(engine: Engine) -> None:
    _METADATA.create_all(engine)
    keys = [f"k{i:05d}" for i in range(3_000)] + ["it's", "a,b", '{"x"}', "ünï"]
    try:
        with engine.begin() as connection:
            insert_many_ignoring(
                connection,
                _READINGS,
                [{"key": key, "amount": None, "at": None, "code": key[:5]} for key in [*keys, "abcde"]],
            )
        with engine.connect() as connection:

            def picked(values: list[str]) -> list[str]:
                statement = select(_READINGS.c.key).where(among(connection, _READINGS.c.key, values))
                return sorted(connection.execute(statement).scalars())

            wanted = [*keys[::7], "absent"]
            assert picked(wanted) == sorted(keys[::7])
            assert picked(["it's", "a,b", '{"x"}', "ünï"]) == sorted(["it's", "a,b", '{"x"}', "ünï"])
            assert picked([]) == []
            ids = connection.execute(select(_READINGS.c.id).where(among(connection, _READINGS.c.id, [1, 2, 3_004])))
            assert sorted(ids.scalars()) == [1, 2, 3_004]
            # a value longer than a VARCHAR(n) column is no value of it (never cut to n characters and matched)
            short = connection.execute(select(_READINGS.c.id).where(among(connection, _READINGS.c.code, ["abcdeXYZ"])))
            assert short.scalars().all() == []
            exact = connection.execute(select(_READINGS.c.key).where(among(connection, _READINGS.c.code, ["abcde"])))
            assert exact.scalars().all() == ["abcde"]
    finally:
        _METADATA.drop_all(engine)


def test_insert_many_writes_what_a_core_insert_writes_and_fills_in_no_default(engine: Engine) -> None:
    _METADATA.create_all(engine)
    try:
        with engine.begin() as connection:
            rows = [
                {"id": 1, "order": 7, "doc": None, "tries": 2},
                {"id": 2, "order": 8, "doc": {"a": [1]}, "tries": 0},
            ]
            assert insert_many_ignoring(connection, _ODD, rows) == 2
            connection.execute(insert(_ODD), [{"id": 3, "order": 9, "doc": None, "tries": 2}])  # the Core way
            with pytest.raises(ValueError, match="rows of many_odd must give tries"):
                insert_many_ignoring(connection, _ODD, [{"id": 4, "order": 1, "doc": None}])
        with engine.connect() as connection:
            stored = connection.execute(select(_ODD.c.order, _ODD.c.doc, _ODD.c.tries).order_by(_ODD.c.id)).all()
            # JSON null, as Core writes it (not SQL NULL)
            raw = connection.execute(select(_ODD.c.id).where(_ODD.c.doc.is_(None))).scalars().all()
    finally:
        _METADATA.drop_all(engine)
    assert [tuple(row) for row in stored] == [(7, None, 2), (8, {"a": [1]}, 0), (9, None, 2)]
    assert raw == []


def test_bound_rows_update_the_row_of_their_key_unless_it_holds_a_newer_reading(engine: Engine) -> None:
    _METADATA.create_all(engine)
    later = _AT + dt.timedelta(minutes=5)
    try:
        first = bind_rows(engine, _READINGS, [
            {"key": "a", "amount": Decimal("1.50"), "at": _AT, "code": "x"},
            {"key": "b", "amount": Decimal("2"), "at": later, "code": "y"},
        ])
        with engine.begin() as connection:
            insert_bound(connection, first, key=("key",), newer="at")
        again = bind_rows(engine, _READINGS, [
            {"key": "a", "amount": Decimal("3.25"), "at": later, "code": "z"},  # newer: updates
            {"key": "b", "amount": Decimal("9"), "at": _AT, "code": "w"},  # older than the stored one: kept out
            {"key": "c", "amount": None, "at": _AT, "code": None},  # new
        ])
        with engine.begin() as connection:
            insert_bound(connection, again, key=("key",), newer="at")
            insert_bound(connection, bind_rows(engine, _READINGS, []))  # nothing to send
        with engine.connect() as connection:
            rows = connection.execute(
                select(_READINGS.c.key, _READINGS.c.amount, _READINGS.c.at, _READINGS.c.code).order_by(_READINGS.c.key)
            ).all()
    finally:
        _METADATA.drop_all(engine)
    assert [(key, None if amount is None else str(amount), at, code) for key, amount, at, code in rows] == [
        ("a", "3.25", later.astimezone(dt.UTC), "z"),
        ("b", "2", later.astimezone(dt.UTC), "y"),
        ("c", None, _AT.astimezone(dt.UTC), None),
    ]
