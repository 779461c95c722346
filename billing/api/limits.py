"""Request body limits, enforced while the body is read: no request can make the server hold more than its
route's limit in memory.

``BodyLimit`` is a plain ASGI middleware around the whole application. It picks the limit of the request's path
(the routes that take more than the default say so; every other route, the Stripe webhook included, takes at
most :data:`DEFAULT_MAX_BODY`) and then:

- a ``Content-Length`` above the limit is answered 413 at once, before a byte of the body is read;
- otherwise the body is counted as the application reads it, chunk by chunk, and the first chunk that takes it
  past the limit is refused with 413 — so a chunked body, or one whose framing says less than it sends, is
  never read further than the limit plus the chunk that crossed it;
- a response sent before the body was read to its end (a 413, or a 401 that never needed the body) carries
  ``Connection: close``: the server closes the connection instead of waiting for the rest of an upload
  nobody will read.

The 413 is the API's usual error, a problem (``billing.api.errors``): ``application/problem+json`` with
``"code": "body_too_large"`` and the field ``body`` in ``errors``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import params
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billing.api.errors import ApiError

__all__ = [
    "DEFAULT_MAX_BODY", "BodyLimit", "BodyTooLarge", "content_length", "describe_limit", "read_body",
    "require_json_body", "too_large",
]

DEFAULT_MAX_BODY = 1024 * 1024
"""A JSON request to a route that names no limit of its own (a customer, a subscription, a Stripe event)."""


def describe_limit(limit: int) -> str:
    """``1 MiB (1,048,576 bytes)``."""
    if limit >= 1024 * 1024 and limit % (1024 * 1024) == 0:
        return f"{limit // (1024 * 1024)} MiB ({limit:,} bytes)"
    return f"{limit:,} bytes"


def _message(limit: int, method: str, path: str) -> str:
    return f"body: at most {describe_limit(limit)} on {method} {path}"


def too_large(limit: int, method: str, path: str) -> ApiError:
    """The 413 of a body past ``limit``, answered with ``Connection: close``."""
    return ApiError(413, "body_too_large", _message(limit, method, path), "body", {"Connection": "close"})


class BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` when the body read so far passes the limit; answered 413 ``body_too_large``.

    An ``HTTPException`` so that FastAPI's body parsing passes it on untouched (it turns other errors raised
    while reading a body into a 400).
    """

    def __init__(self, limit: int, method: str, path: str):
        super().__init__(413, _message(limit, method, path), headers={"Connection": "close"})
        self.limit = limit


class BodyLimit:
    """Refuse request bodies beyond a limit per path (``limits``) or ``default``, counting while they are read."""

    def __init__(self, app: ASGIApp, *, default: int = DEFAULT_MAX_BODY, limits: Mapping[str, int] | None = None):
        self.app = app
        self.default = default
        self.limits = dict(limits or {})

    def limit_for(self, path: str) -> int:
        return self.limits.get(path, self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope.get("method", ""), scope.get("path", "")
        limit = self.limit_for(path)
        headers = _headers(scope)
        declared = content_length(headers.get(b"content-length"))
        if declared is not None and declared > limit:
            await too_large(limit, method, path).response()(scope, receive, send)
            return

        # Is there body left that nobody read? None when the request has no body (nothing to wait for).
        has_body = b"transfer-encoding" in headers or bool(declared)
        read, done = 0, not has_body

        async def limited_receive() -> Message:
            nonlocal read, done
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    raise BodyTooLarge(limit, method, path)
                done = not message.get("more_body", False)
            elif message["type"] == "http.disconnect":
                done = True
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not done:
                message = dict(message)
                kept = [(name, value) for name, value in message.get("headers", []) if name.lower() != b"connection"]
                message["headers"] = [*kept, (b"connection", b"close")]
            await send(message)

        await self.app(scope, limited_receive, closing_send)


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by lower-case name (the first of repeated ones)."""
    found: dict[bytes, bytes] = {}
    for name, value in scope.get("headers", []):
        found.setdefault(bytes(name).lower(), bytes(value))
    return found


def content_length(value: Any) -> int | None:
    """The declared length, or None when absent or not a number (the server refuses such framing itself)."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


async def read_body(request: Request, limit: int) -> bytes:
    """The body of ``request``, read only while it stays within ``limit`` bytes; raises BodyTooLarge as soon as a
    declared ``Content-Length`` or the bytes received so far pass it. For routes that must hold to their limit
    even when mounted without :class:`BodyLimit`."""
    method, path = request.method, request.url.path
    declared = content_length(request.headers.get("content-length"))
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit, method, path)
    chunks: list[bytes] = []
    read = 0
    async for chunk in request.stream():
        read += len(chunk)
        if read > limit:
            raise BodyTooLarge(limit, method, path)
        chunks.append(chunk)
    return b"".join(chunks)


async def require_json_body(request: Request) -> None:
    """A body a route of the API reads as JSON comes as JSON (``application/json``, or a ``+json`` type): another
    ``Content-Type``, or none, is a 415 ``unsupported_media_type``, not a 422 that the body is no object. An
    app-wide dependency, run before the body is validated; the web pages' forms are not the API's."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or route.body_field is None or not route.path.startswith("/v1/"):
        return
    if isinstance(route.body_field.field_info, params.Form):
        return
    declared = request.headers.get("content-type")
    sent = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    if not sent:
        return
    kind = (declared or "").partition(";")[0].strip().lower()
    if kind != "application/json" and not (kind.startswith("application/") and kind.endswith("+json")):
        got = repr(kind) if kind else "none"
        raise ApiError(415, "unsupported_media_type", f"Content-Type: expected application/json, got {got}",
                       "Content-Type")  # fmt: skip
