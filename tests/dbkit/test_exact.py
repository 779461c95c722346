"""dbkit.exact: the sums, differences, least and greatest of exact decimals give the same numbers, scale and
sign on SQLite (Decimal functions on text) as on PostgreSQL (NUMERIC)."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Column, Engine, Integer, Table, insert, literal, select

from dbkit.exact import exact_greatest, exact_least, exact_sub, exact_sum
from dbkit.types import ExactDecimal, new_metadata

_METADATA = new_metadata()
_AMOUNTS = Table(
    "exact_amounts", _METADATA, Column("id", Integer, primary_key=True), Column("g", Integer), Column("a", ExactDecimal)
)
_ROWS = [
    (1, "1.5"), (1, "2.25"),  # different scales: 3.75
    (2, "-0.00"),  # no negative zero in NUMERIC: 0.00
    (3, None),  # a group of NULLs: NULL
    (4, "-5.10"), (4, "2"),  # -3.10
    (5, "123456789012345678901234567890.12"), (5, "0.01"),
    (6, "0.0000001"),
    (7, "0.00"), (7, "-0.00"),
    (8, "1E+2"),  # NUMERIC keeps no exponent: 100
    (9, "-1.00"), (9, "1.00"),
]  # fmt: skip


def _figures(engine: Engine) -> list[tuple[int, str, str, str, str]]:
    _METADATA.create_all(engine)
    zero = literal(Decimal(0), ExactDecimal())
    total = exact_sum(_AMOUNTS.c.a)
    try:
        with engine.begin() as connection:
            connection.execute(insert(_AMOUNTS), [{"g": g, "a": None if a is None else Decimal(a)} for g, a in _ROWS])
            statement = (
                select(_AMOUNTS.c.g, total, exact_sub(total, literal(Decimal("0.10"), ExactDecimal())),
                       exact_least(total, zero), exact_greatest(total, zero))
                .group_by(_AMOUNTS.c.g)
                .order_by(_AMOUNTS.c.g)
            )  # fmt: skip
            return [(g, *(str(value) for value in rest)) for g, *rest in connection.execute(statement)]
    finally:
        _METADATA.drop_all(engine)


def test_exact_functions_give_postgresql_numbers_scale_and_sign(engine: Engine) -> None:
    assert _figures(engine) == [
        (1, "3.75", "3.65", "0", "3.75"),
        (2, "0.00", "-0.10", "0.00", "0.00"),
        # LEAST/GREATEST skip NULLs (PostgreSQL): least(NULL, 0) = 0
        (3, "None", "None", "0", "0"),
        (4, "-3.10", "-3.20", "-3.10", "0"),
        (5, "123456789012345678901234567890.13", "123456789012345678901234567890.03", "0",
         "123456789012345678901234567890.13"),
        (6, "1E-7", "-0.0999999", "0", "1E-7"),
        (7, "0.00", "-0.10", "0.00", "0.00"),
        (8, "100", "99.90", "0", "100"),
        (9, "0.00", "-0.10", "0.00", "0.00"),
    ]  # fmt: skip


def test_exact_sum_of_no_rows_is_null(engine: Engine) -> None:
    _METADATA.create_all(engine)
    try:
        with engine.begin() as connection:
            assert connection.execute(select(exact_sum(_AMOUNTS.c.a))).scalar_one() is None
    finally:
        _METADATA.drop_all(engine)
