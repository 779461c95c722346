"""Lists and their query parameters, as every list route answers them.

Every list is ``{"data": [...], "has_more": bool}``, one page in a fixed order (each route says which: customers
by external id, subscriptions and invoices by id, plans by code, metrics by currency), and takes:

- ``limit`` — at most this many items, 1 to :data:`MAX_LIMIT` (default :data:`DEFAULT_LIMIT`);
- ``starting_after=<cursor>`` — the items that follow the one with that id; to walk forward, pass the last id of
  the page (``has_more`` says whether more follow);
- ``ending_before=<cursor>`` — the items right before the one with that id, still in ascending order; to walk
  backward, pass the first id of the page (``has_more`` then says whether more precede).

The cursor need not be an item that still exists: the page starts at the first id after (or ends at the last id
before) it. ``starting_after`` with ``ending_before`` is a 400. A query parameter the route does not take is a
400 ``invalid_query`` naming it (:func:`reject_unknown_query`), never silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BeforeValidator

from billing.api.errors import ApiError

__all__ = ["DEFAULT_LIMIT", "DIGITS_ONLY", "MAX_LIMIT", "Page", "page_params", "paginate", "reject_unknown_query"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_ID = 2**63 - 1

T = TypeVar("T")


def _digits_only(value: Any) -> Any:
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError(f"expected an id (a whole number), got {value!r}")
    return value


DIGITS_ONLY = BeforeValidator(_digits_only)
"""An id in a path is its digits only, as a cursor is: ``1_0``, ``+1``, ``1.0`` and `` 1`` are no ids (lax
integer parsing read ``1_0`` as 10)."""


@dataclass(frozen=True, slots=True)
class Page:
    """Which page was asked for."""

    limit: int
    starting_after: str | None = None
    ending_before: str | None = None

    def ids(self) -> tuple[int | None, int | None]:
        """The cursors as ids (integers) for lists ordered by id."""
        return _id(self.starting_after, "starting_after"), _id(self.ending_before, "ending_before")


def _id(value: str | None, field: str) -> int | None:
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or not 0 <= int(value) <= MAX_ID:
        raise ApiError(422, "invalid_request", f"{field}: expected an id (a whole number), got {value!r}", field)
    return int(value)


def _cursor(value: str | None, field: str) -> str | None:
    """A cursor the database can be asked about (no NUL, valid Unicode)."""
    if value is None:
        return None
    if "\x00" in value:
        raise ApiError(422, "invalid_request", f"{field}: must not contain NUL characters", field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(422, "invalid_request", f"{field}: must be valid Unicode", field) from None
    return value


def page_params(
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description=f"At most this many items (1 to {MAX_LIMIT}).", examples=[100])
    ] = DEFAULT_LIMIT,
    starting_after: Annotated[
        str | None,
        Query(min_length=1, max_length=255, description="The items after the one with this id (the last id of the "
              "previous page)."),
    ] = None,
    ending_before: Annotated[
        str | None,
        Query(min_length=1, max_length=255, description="The items right before the one with this id (the first id "
              "of the next page)."),
    ] = None,
) -> Page:
    """The page a list route was asked for (a FastAPI dependency)."""
    if starting_after is not None and ending_before is not None:
        raise ApiError(
            400,
            "invalid_query",
            "starting_after and ending_before: give one or the other",
            errors=[("starting_after", "not with ending_before"), ("ending_before", "not with starting_after")],
        )
    return Page(limit, _cursor(starting_after, "starting_after"), _cursor(ending_before, "ending_before"))


def paginate(items: Sequence[T], key: Callable[[T], str], page: Page) -> tuple[list[T], bool]:
    """One page of a short list held in memory (plans, a month's currencies), ``items`` in ascending ``key``."""
    if page.ending_before is not None:
        before = [item for item in items if key(item) < page.ending_before]
        return before[-page.limit :], len(before) > page.limit
    after = [item for item in items if page.starting_after is None or key(item) > page.starting_after]
    return after[: page.limit], len(after) > page.limit


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters a route takes: its own and those of its dependencies, all the way down."""
    names = {param.alias for param in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return names


_ALLOWED = "_billing_query_parameters"  # the names a route takes, kept on the route once worked out


async def reject_unknown_query(request: Request) -> None:
    """Refuse a query parameter the route does not take (400 ``invalid_query`` naming each); an app-wide
    dependency, so that a misspelt ``limt`` or ``customr`` is never silently ignored."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    allowed: frozenset[str] | None = getattr(route, _ALLOWED, None)
    if allowed is None:
        allowed = frozenset(_query_names(route.dependant))
        setattr(route, _ALLOWED, allowed)
    refuse_unknown_query(request, route.path, allowed)


def refuse_unknown_query(request: Request, path: str, allowed: frozenset[str]) -> None:
    """400 ``invalid_query`` naming each query parameter of ``request`` outside ``allowed``."""
    unknown = sorted({name for name in request.query_params if name not in allowed})
    if unknown:
        takes = ", ".join(sorted(allowed)) or "no query parameters"
        raise ApiError(
            400,
            "invalid_query",
            f"{', '.join(unknown)}: unknown query parameter{'s' if len(unknown) > 1 else ''} "
            f"({request.method} {path} takes {takes})",
            errors=[(name, f"unknown query parameter; this route takes {takes}") for name in unknown],
        )
