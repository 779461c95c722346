"""``POST /v1/events``: a batch of usage events.

The route a product calls on every request is served by a lean ASGI path (:func:`serve_events`, which the app
calls before its middleware and routing: ``billing.api.create_app``) rather than through FastAPI's stack, whose
middleware layers, routing and dependency solving cost more than storing an event. It answers exactly as the
API route :func:`post_events` (which the OpenAPI document shows) would, checking in the same order:

1. the body limit (:data:`MAX_BODY`): a declared ``Content-Length`` above it is a 413 before anything else; a
   body is counted while it is read, and refused 413 at the chunk that passes the limit (``billing.api.limits``);
2. no query parameters (400 ``invalid_query``);
3. the API key (401; a key bound to a customer gets 404), trusted for ``billing.apikeys.RECHECK`` seconds once
   found valid, as on every route;
4. the body: ``{"events": [...]}`` of at most 10,000 events (422), then each event's fate in the answer.

An answer sent before the body was read to its end carries ``Connection: close``. Errors are the API's problems
(``application/problem+json``). A request with an ``Idempotency-Key`` goes the full way (the middleware that
keeps its answer, then :func:`post_events`): a retried batch is safe either way, since the event ids make
ingestion idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.types import Message, Receive, Scope, Send

from billing.api.auth import ApiKey, require_key, require_unbound_key
from billing.api.deps import api_engine, get_catalog
from billing.api.errors import ERROR_RESPONSES, POST_ERROR_RESPONSES, ApiError
from billing.api.events import BatchError, BatchWriter, outcome_json, parse_batch
from billing.api.limits import content_length, too_large
from billing.api.pagination import refuse_unknown_query
from billing.api.schemas import EVENT_BATCH_SCHEMA, MAX_BATCH, EventBatchOut
from billing.config import Settings
from pricing_plans.models import Catalog

__all__ = ["MAX_BODY", "WRITER", "router", "serve_events", "takes"]

log = logging.getLogger(__name__)
router = APIRouter(tags=["events"])

MAX_BODY = 32 * 1024 * 1024
INLINE_PARSE = 256 * 1024
"""A larger body is parsed off the event loop (which serves the other requests meanwhile); a smaller one (about
1,500 events) costs less to parse than the hand-off to a thread."""
WRITER = BatchWriter(MAX_BATCH)
PATH = "/v1/events"
_JSON_HEADERS = [(b"content-type", b"application/json")]


_WITHOUT_415 = {status: answer for status, answer in POST_ERROR_RESPONSES.items() if status != 415}
"""(The route reads its body itself, whatever its Content-Type says, as it always has: no 415.)"""


@router.post(
    PATH,
    summary="Ingest a batch of usage events",
    response_model=EventBatchOut,
    operation_id="createEvents",
    responses={**ERROR_RESPONSES, **_WITHOUT_415},
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": EVENT_BATCH_SCHEMA}}}
    },
)
async def post_events(
    request: Request,
    engine: Annotated[Engine, Depends(api_engine)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> Response:
    """Store up to 10,000 events at once. Each event is told apart in the answer, in input order: ``accepted``
    (stored now), ``duplicate`` (its id was stored before with the same content) or ``rejected`` with the
    reason; the good events of a batch are stored even when others are rejected. Sending a batch again is
    safe. Batches that arrive together are stored in one transaction (``billing.api.events.BatchWriter``)."""
    body = await request.body()
    return Response(await _store(body, engine, catalog), media_type="application/json")


def takes(scope: Scope) -> bool:
    """Whether :func:`serve_events` answers this request: ``POST /v1/events`` without an ``Idempotency-Key``."""
    if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
        return False
    return all(name != b"idempotency-key" for name, _ in scope["headers"])


async def serve_events(
    scope: Scope, receive: Receive, send: Send, settings: Settings, engine: Callable[[], Engine]
) -> None:
    """Answer ``POST /v1/events`` (see the module docstring); ``engine`` gives the app's database engine."""
    headers: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name, value)
    declared = content_length(headers.get(b"content-length"))
    reader = _Body(receive, has_body=b"transfer-encoding" in headers or bool(declared))
    try:
        if declared is not None and declared > MAX_BODY:
            raise too_large(MAX_BODY, "POST", PATH)
        answer = await _answer(scope, reader, headers, settings, engine())
    except ApiError as exc:
        await _problem(exc, scope, receive, send, reader.done)
        return
    except Exception as exc:  # answered as the app's handler of unexpected errors answers them
        log.exception("POST %s failed", PATH, exc_info=exc)
        await _problem(ApiError(500, "internal_error", "internal error; the server logged it"), scope, receive, send,
                       reader.done)
        return
    if answer is None:  # the client went away
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


async def _answer(
    scope: Scope, reader: _Body, headers: dict[bytes, bytes], settings: Settings, engine: Engine
) -> bytes | None:
    if scope["query_string"]:
        refuse_unknown_query(Request(scope), PATH, frozenset())
    catalog = await get_catalog(settings)
    scheme, credentials = get_authorization_scheme_param(headers.get(b"authorization", b"").decode("latin-1"))
    bearer = HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials) if (
        scheme and credentials and scheme.lower() == "bearer"
    ) else None
    await require_unbound_key(await require_key(engine, bearer))
    body = await reader.read()
    return None if body is None else await _store(body, engine, catalog)


class _Body:
    """The request's body, read while it stays within :data:`MAX_BODY`; ``done`` once nothing is left unread."""

    def __init__(self, receive: Receive, *, has_body: bool):
        self.receive = receive
        self.done = not has_body

    async def read(self) -> bytes | None:
        """The body, or None if the client disconnected; raises the 413 at the chunk that passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message: Message = await self.receive()
            if message["type"] != "http.request":  # http.disconnect
                self.done = True
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise too_large(MAX_BODY, "POST", PATH)
            chunks.append(chunk)
            if not message.get("more_body", False):
                self.done = True
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _problem(exc: ApiError, scope: Scope, receive: Receive, send: Send, done: bool) -> None:
    """Send ``exc``'s problem; with ``Connection: close`` when the body was not read to its end."""

    async def closing_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = dict(message)
            kept = [(name, value) for name, value in message["headers"] if name.lower() != b"connection"]
            message["headers"] = [*kept, (b"connection", b"close")]
        await send(message)

    await exc.response()(scope, receive, send if done else closing_send)


async def _store(body: bytes, engine: Engine, catalog: Catalog) -> bytes:
    """The answer to ``body``, once its events are stored (or raises the 422 of a body that is no batch)."""
    if len(body) > MAX_BODY:
        raise ApiError(422, "too_many_events", f"body: at most {MAX_BODY // 1024 // 1024} MiB", "body")
    try:
        if len(body) <= INLINE_PARSE:
            records = parse_batch(body, MAX_BATCH)
        else:
            records = await run_in_threadpool(parse_batch, body, MAX_BATCH)
    except BatchError as exc:
        code = "too_many_events" if exc.field == "events" and "at most" in exc.message else "invalid_request"
        raise ApiError(422, code, str(exc), exc.field) from None
    outcome = await asyncio.wrap_future(WRITER.submit(engine, catalog, records))
    return outcome_json(outcome)
