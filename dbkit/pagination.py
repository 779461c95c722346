"""Keyset ("cursor") pagination: one page of a query in the order of a unique column, after or before a value of
that column — the same page however many rows come or go elsewhere, and as fast on the last page as on the first
(no ``OFFSET``).

    statement = keyset_page(select(CustomerRow), CustomerRow.external_id, after="acme", limit=100)
    rows, has_more = page_of(session.scalars(statement).all(), limit=100, before=None)

``after`` gives the rows that follow it; ``before`` the rows right before it (read backwards, then put back in
ascending order). One row more than ``limit`` is read to tell whether more rows lie that way (``has_more``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import ColumnElement

__all__ = ["keyset_page", "page_of"]

T = TypeVar("T")


def keyset_page(
    statement: Select[Any],
    column: ColumnElement[Any] | QueryableAttribute[Any],
    *,
    limit: int,
    after: Any = None,
    before: Any = None,
) -> Select[Any]:
    """``statement`` (with no ``ORDER BY`` of its own) limited to the ``limit`` rows after ``after`` (or from the
    first), or the ``limit`` rows right before ``before`` — plus one, which :func:`page_of` drops."""
    if before is not None:
        return statement.where(column < before).order_by(column.desc()).limit(limit + 1)
    if after is not None:
        statement = statement.where(column > after)
    return statement.order_by(column).limit(limit + 1)


def page_of(rows: Sequence[T], *, limit: int, before: Any = None) -> tuple[list[T], bool]:
    """The page read by a :func:`keyset_page` statement, in ascending order, and whether more rows lie beyond it
    (after it, or before it when it was read ``before`` a value)."""
    page = list(rows[:limit])
    if before is not None:
        page.reverse()
    return page, len(rows) > limit
