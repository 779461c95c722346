"""``Idempotency-Key`` on every ``POST`` and ``PUT``: a retry gets the first answer instead of doing the work
twice.

A ``POST`` (or ``PUT``) that carries ``Idempotency-Key: <key>`` (1 to 255 printable ASCII characters; a UUID
does) is run once per key and credential (``Authorization``) for 24 hours; keys live in the database
(``billing.db.idempotency``), so this holds across restarts and across API processes on one database:

- the same key with the same request (method, path, query and body: a JSON body as the same JSON, whatever the
  order of its keys and its spacing, its numbers as written; any other body byte for byte) gets the first answer
  again, status, body, ``Content-Type`` and ``Location``, with ``Idempotent-Replayed: true``;
- the same key with another request is refused, 409 ``idempotency_key_reused``;
- the same key while its first request is still running is refused, 409 ``idempotency_key_in_progress`` with
  ``Retry-After``: of two requests with one key at once, one runs and the other is told to come back. A request
  whose server died mid-way holds its key for ``LEASE`` (10 minutes) after its last renewal at most.

An answer is kept when the request ran: a success, and a refusal by the engine (404, 409, 422 ``invalid_input``).
A request refused before it ran — malformed (400, 405, 413, 415, 422 ``invalid_request`` or ``too_many_events``),
unauthenticated (401) — or a server error (5xx, whose transaction was rolled back) keeps nothing: the key can
carry the corrected request. Without the header, or on any other method, nothing changes.

The credential is checked first, as the routes check it (``billing.api.auth.bearer_key``): a request without a
valid, unrevoked API key goes to the routes untouched (401) and never reaches the key store, so a revoked key
gets no stored answer (a customer's webhook secret, say) back. While a request runs its key's lease is renewed
every third of ``LEASE``, so a retry of a request that takes longer (a billing run) is told it is still running
rather than run a second time.

``Idempotency`` is a plain ASGI middleware inside ``BodyLimit`` (so the body it reads is already bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billing.api.auth import bearer_key
from billing.api.errors import ApiError
from billing.api.limits import BodyTooLarge
from billing.db import idempotency
from dbkit import utcnow

__all__ = ["HEADER", "REPLAYED_HEADER", "Idempotency", "canonical_json", "credential_scope", "request_fingerprint"]

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY = 255

_KEPT_HEADERS = (b"content-type", b"location")
_PARSE_INLINE = 64 * 1024
_NOT_KEPT_STATUS = frozenset({400, 401, 405, 413, 415})
_NOT_KEPT_CODES = frozenset({"invalid_request", "too_many_events"})
_COMPLETE_ATTEMPTS = 3
_COMPLETE_BACKOFF = 0.2  # seconds before the second attempt, doubled before each further one


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if bytes(key).lower() == name:
            return bytes(value)
    return None


def _valid_key(raw: bytes) -> str | None:
    """The key, if it is 1 to 255 printable ASCII characters."""
    if not 0 < len(raw) <= MAX_KEY or not all(0x20 <= byte < 0x7F for byte in raw):
        return None
    return raw.decode("ascii")


def credential_scope(authorization: bytes | None) -> str:
    """Whose keys these are: the SHA-256 (hex) of the request's ``Authorization`` header as ``Bearer <API key>``,
    however the header writes the scheme and the spaces around the key (``bearer  <API key>`` is the same
    credential, as the routes read it: one request, not two)."""
    text = (authorization or b"").decode("latin-1").strip()
    scheme, _, credentials = text.partition(" ")
    if scheme.lower() == "bearer":
        text = f"Bearer {credentials.strip()}"
    return hashlib.sha256(text.encode("latin-1")).hexdigest()


def request_fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    """What a key was first sent with: the SHA-256 (hex) of the method, path, query string and body (a JSON body
    in its canonical form, ``canonical_json``)."""
    return hashlib.sha256(b"\n".join([method.encode(), path.encode(), query, canonical_json(body)])).hexdigest()


class _Number:
    """A JSON number as written (``1.0`` and ``1.00`` are two requests, as the engine reads them)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _Repeated(ValueError):
    """An object names a key twice: which one counts is the parser's choice, so the body is kept as sent."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _Repeated
    return found


def _written(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(key) + ":" + _written(value[key]) for key in sorted(value)) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_written(item) for item in value) + "]"
    if isinstance(value, _Number):
        return value.text
    return json.dumps(value)


def canonical_json(body: bytes) -> bytes:
    """A JSON ``body`` written one way (keys sorted, no spaces, strings escaped alike, numbers as written), so that
    a client that writes the same object again on a retry sends the same request; any other body as it is."""
    try:
        value = json.loads(body, object_pairs_hook=_pairs, parse_float=_Number, parse_int=_Number,
                           parse_constant=_Number)  # fmt: skip
        return _written(value).encode()
    except (ValueError, RecursionError):  # (not JSON, a repeated key, nested past the parser's reach)
        return body


def _kept(status: int, body: bytes) -> bool:
    """Whether an answer is the request's outcome (kept for retries), not a refusal before it ran."""
    if status >= 500 or status in _NOT_KEPT_STATUS:
        return False
    if status == 422:
        try:
            code = json.loads(body).get("code")
        except (ValueError, AttributeError):
            return True
        return code not in _NOT_KEPT_CODES
    return True


class Idempotency:
    """Run each ``POST`` with an ``Idempotency-Key`` once (see the module docstring); ``engine`` gives the
    database the keys are kept in."""

    def __init__(self, app: ASGIApp, *, engine: Callable[[], Engine]):
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = _header(scope, b"idempotency-key") if scope["type"] == "http" else None
        if raw is None or scope.get("method") not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        engine = self.engine()
        authorization = _header(scope, b"authorization")
        credential = None if authorization is None else authorization.decode("latin-1")
        known = await run_in_threadpool(bearer_key, engine, credential)
        if known is None:  # no answer is kept for, or replayed to, an unknown or revoked key: the routes refuse it
            await self.app(scope, receive, send)
            return
        key = _valid_key(raw)
        if key is None:
            refusal = ApiError(
                400,
                "invalid_idempotency_key",
                f"{HEADER}: expected 1 to {MAX_KEY} printable ASCII characters (a UUID, say)",
                HEADER,
            )
            await refusal.response()(scope, receive, send)
            return
        try:
            body = await _read_all(receive)
        except BodyTooLarge as exc:
            await ApiError(413, "body_too_large", str(exc.detail), "body", exc.headers).response()(
                scope, receive, send
            )
            return
        if body is None:  # nobody to answer, and no whole request to run
            return

        owner = credential_scope(authorization)
        method, path, query = scope["method"], scope.get("path", ""), scope.get("query_string", b"")
        # (parsing a large body is work for a thread, not for the event loop that serves the other requests)
        fingerprint = (
            request_fingerprint(method, path, query, body)
            if len(body) <= _PARSE_INLINE
            else await run_in_threadpool(request_fingerprint, method, path, query, body)
        )
        # a key first sent before fingerprints were of canonical JSON was of the body's bytes: still the same request
        legacy = hashlib.sha256(b"\n".join([method.encode(), path.encode(), query, body])).hexdigest()
        found = await run_in_threadpool(idempotency.claim, engine, owner, key, fingerprint, also=legacy)
        if found.outcome == "replay":
            assert found.answer is not None
            await _replay(found.answer, send)
            return
        conflict = _conflict(found, key)
        if conflict is not None:
            await conflict.response()(scope, receive, send)
            return
        await self._run(scope, body, receive, send, engine, owner, key)

    async def _run(
        self, scope: Scope, body: bytes, receive: Receive, send: Send, engine: Engine, owner: str, key: str
    ) -> None:
        """Run the request with its body, keep its answer (or release the key), then pass the answer on: kept
        before the client sees it, so a retry sent the moment the answer arrives is replayed, never refused as
        still running."""
        delivered = False

        async def replay_body() -> Message:
            nonlocal delivered
            if delivered:  # the body was read: what comes next is the client's disconnection
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        status = 500
        headers: dict[str, str] = {}
        chunks: list[bytes] = []
        messages: list[Message] = []

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", []):
                    if bytes(name).lower() in _KEPT_HEADERS:
                        headers[bytes(name).decode("latin-1").lower()] = bytes(value).decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))
            messages.append(message)  # (the API's answers are small JSON documents: held until kept)

        heartbeat = asyncio.create_task(_hold(engine, owner, key))
        try:
            await self.app(scope, replay_body, capture)
        except BaseException:
            await _stop(heartbeat)
            await run_in_threadpool(_forget, engine, owner, key)
            raise
        await _stop(heartbeat)
        answer = b"".join(chunks)
        if _kept(status, answer):
            await _keep(engine, owner, key, idempotency.StoredAnswer(status, headers, answer))
        else:
            await run_in_threadpool(_forget, engine, owner, key)
        try:
            for message in messages:
                await send(message)
        except OSError:  # the client left before its answer: it is kept for its retry all the same
            pass


def _conflict(found: idempotency.Claim, key: str) -> ApiError | None:
    """The refusal of a claim on ``key`` that may not run: the key was sent with another request, or its request
    is still running (retried within the lease's remaining time, 1 to 5 seconds); None when it may."""
    if found.outcome == "reused":
        return ApiError(
            409,
            "idempotency_key_reused",
            f"{HEADER}: {key!r} was sent with another request (method, path or body); use a new key for a new "
            "request",
            HEADER,
        )
    if found.outcome == "running":
        assert found.started_at is not None
        left = found.started_at + idempotency.LEASE - utcnow()
        retry = max(1, min(math.ceil(left.total_seconds()), 5))
        return ApiError(
            409,
            "idempotency_key_in_progress",
            f"{HEADER}: a request with {key!r} is still running; retry once it is answered",
            HEADER,
            {"Retry-After": str(retry)},
        )
    return None


async def _hold(engine: Engine, owner: str, key: str) -> None:
    """Renew the key's lease every third of ``LEASE`` while its request runs (until cancelled): a long request (a
    billing run) holds its key however long it takes, and a retry is told it is running instead of running it
    again. Only a request whose server died lets its key go, ``LEASE`` after the last renewal."""
    while True:
        await asyncio.sleep(idempotency.LEASE.total_seconds() / 3)
        try:
            await run_in_threadpool(idempotency.renew, engine, owner, key)
        except Exception:  # tried again at the next beat; the lease has two more thirds to run
            log.exception("could not renew the lease of Idempotency-Key %r", key)


async def _stop(heartbeat: asyncio.Task[None]) -> None:
    heartbeat.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await heartbeat


async def _keep(engine: Engine, owner: str, key: str, answer: idempotency.StoredAnswer) -> None:
    """Store the answer, trying again a few times (a dropped connection, a lock timeout) before giving up."""
    for attempt in range(_COMPLETE_ATTEMPTS):
        try:
            await run_in_threadpool(idempotency.complete, engine, owner, key, answer)
            return
        except Exception:
            if attempt + 1 == _COMPLETE_ATTEMPTS:  # the answer is sent all the same; the key stays running until
                log.exception("could not keep the answer of Idempotency-Key %r", key)  # its lease ends
                return
            log.warning("could not keep the answer of Idempotency-Key %r; trying again", key, exc_info=True)
            await asyncio.sleep(_COMPLETE_BACKOFF * 2**attempt)


def _forget(engine: Engine, owner: str, key: str) -> None:
    try:
        idempotency.release(engine, owner, key)
    except Exception:  # the key stays running until its lease ends
        log.exception("could not release Idempotency-Key %r", key)


async def _read_all(receive: Receive) -> bytes | None:
    """The whole request body (BodyLimit, outside, bounds it: BodyTooLarge past the route's limit); None when the
    client left before sending all of it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(bytes(message.get("body", b"")))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _replay(answer: idempotency.StoredAnswer, send: Send) -> None:
    headers: list[tuple[bytes, bytes]] = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers.items()
    ]
    headers += [
        (b"content-length", str(len(answer.body)).encode()),
        (REPLAYED_HEADER.lower().encode(), b"true"),
    ]
    start: dict[str, Any] = {"type": "http.response.start", "status": answer.status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": answer.body})
