"""Exact decimal arithmetic inside the database, so that grouped queries can add money up where the rows are.

PostgreSQL stores ``ExactDecimal`` as NUMERIC and adds it exactly. SQLite stores it as text (``dbkit.types``) and
its own ``SUM``, ``-``, ``MIN`` and ``<`` would turn it into binary floats or compare it as text; there these
expressions call small functions registered on every connection (:func:`register_sqlite_functions`) that work
on ``decimal.Decimal`` and hand back text, so the sums are exact on both databases and only the groups' results
reach the caller.

- ``exact_sum(x)``: the sum of a group (NULLs ignored; NULL for a group of NULLs, as ``SUM``);
- ``exact_sub(a, b)``: ``a − b``; ``exact_least(a, b)``, ``exact_greatest(a, b)``: the smaller, the larger
  (NULLs skipped, as PostgreSQL's ``LEAST`` and ``GREATEST``);
- the results are the numbers, scale and sign NUMERIC gives (no exponent, no ``-0.00``);
- ``month_of(day, days_before=0)``: the first day of the month of ``day − days_before`` days, as the text
  ``YYYY-MM-01`` (compare it with ``date.isoformat()``).
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Any

from sqlalchemy import String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from dbkit.types import ExactDecimal

__all__ = [
    "exact_greatest",
    "exact_least",
    "exact_sub",
    "exact_sum",
    "month_of",
    "register_sqlite_functions",
]

_EXACT = decimal.Context(prec=1000, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])


class exact_sum(FunctionElement[Decimal]):
    type = ExactDecimal()
    inherit_cache = True
    name = "exact_sum"


class exact_sub(FunctionElement[Decimal]):
    type = ExactDecimal()
    inherit_cache = True
    name = "exact_sub"


class exact_least(FunctionElement[Decimal]):
    type = ExactDecimal()
    inherit_cache = True
    name = "exact_least"


class exact_greatest(FunctionElement[Decimal]):
    type = ExactDecimal()
    inherit_cache = True
    name = "exact_greatest"


class month_of(FunctionElement[str]):
    """``month_of(day)`` or ``month_of(day, 1)`` (the month of the day before)."""

    type = String()
    inherit_cache = True
    name = "month_of"


def _args(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> list[str]:
    return [compiler.process(arg, **kw) for arg in element.clauses]


@compiles(exact_sum)
def _sum_default(element: exact_sum, compiler: SQLCompiler, **kw: Any) -> str:
    return f"SUM({_args(element, compiler, **kw)[0]})"


@compiles(exact_sub)
def _sub_default(element: exact_sub, compiler: SQLCompiler, **kw: Any) -> str:
    a, b = _args(element, compiler, **kw)
    return f"({a} - {b})"


@compiles(exact_least)
def _least_default(element: exact_least, compiler: SQLCompiler, **kw: Any) -> str:
    return f"LEAST({', '.join(_args(element, compiler, **kw))})"


@compiles(exact_greatest)
def _greatest_default(element: exact_greatest, compiler: SQLCompiler, **kw: Any) -> str:
    return f"GREATEST({', '.join(_args(element, compiler, **kw))})"


@compiles(month_of)
def _month_default(element: month_of, compiler: SQLCompiler, **kw: Any) -> str:
    args = _args(element, compiler, **kw)
    day = args[0] if len(args) == 1 else f"({args[0]} - CAST({args[1]} AS INTEGER))"
    return f"to_char({day}, 'YYYY-MM-01')"


@compiles(exact_sum, "sqlite")
@compiles(exact_sub, "sqlite")
@compiles(exact_least, "sqlite")
@compiles(exact_greatest, "sqlite")
def _sqlite_call(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> str:
    return f"dbkit_{element.name}({', '.join(_args(element, compiler, **kw))})"


@compiles(month_of, "sqlite")
def _month_sqlite(element: month_of, compiler: SQLCompiler, **kw: Any) -> str:
    args = _args(element, compiler, **kw)
    if len(args) == 1:
        return f"strftime('%Y-%m-01', {args[0]})"
    return f"strftime('%Y-%m-01', {args[0]}, '-' || {args[1]} || ' days')"


def _decimal(value: Any) -> Decimal:
    if value.__class__ is float:
        raise TypeError(f"refusing float {value!r} in exact arithmetic")
    return Decimal(value)  # text as stored, or an integer


class _Sum:
    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: Any) -> None:
        if value is not None:
            total = self.total
            self.total = _decimal(value) if total is None else _EXACT.add(total, _decimal(value))

    def finalize(self) -> str | None:
        return None if self.total is None else _numeric(self.total)


def _numeric(value: Decimal) -> str:
    """``value`` as PostgreSQL's NUMERIC would give it back: no exponent (``1E+2`` is ``100``, the scale never
    below 0) and no negative zero (``-0.00`` is ``0.00``)."""
    if value.is_zero():
        value = value.copy_abs()
    return format(value, "f")


def _sub(a: Any, b: Any) -> str | None:
    return None if a is None or b is None else _numeric(_EXACT.subtract(_decimal(a), _decimal(b)))


def _least(a: Any, b: Any) -> str | None:
    """The smaller; NULLs are skipped, as PostgreSQL's ``LEAST`` does (NULL only when both are)."""
    values = [_decimal(value) for value in (a, b) if value is not None]
    return _numeric(min(values)) if values else None


def _greatest(a: Any, b: Any) -> str | None:
    """The larger; NULLs are skipped, as PostgreSQL's ``GREATEST`` does."""
    values = [_decimal(value) for value in (a, b) if value is not None]
    return _numeric(max(values)) if values else None


def register_sqlite_functions(dbapi_connection: Any) -> None:
    """Register the exact functions on a new ``sqlite3`` connection (the engine's ``connect`` event)."""
    dbapi_connection.create_aggregate("dbkit_exact_sum", 1, _Sum)
    dbapi_connection.create_function("dbkit_exact_sub", 2, _sub, deterministic=True)
    dbapi_connection.create_function("dbkit_exact_least", 2, _least, deterministic=True)
    dbapi_connection.create_function("dbkit_exact_greatest", 2, _greatest, deterministic=True)
