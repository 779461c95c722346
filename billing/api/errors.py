"""The HTTP API's errors: every failure is answered as an RFC 9457 problem, ``application/problem+json``::

    HTTP/1.1 422 Unprocessable Content
    Content-Type: application/problem+json

    {"type": "/problems/invalid_input", "title": "Invalid input", "status": 422,
     "detail": "email: expected an address like name@example.com, got 'x'; currency: unknown currency 'EUX' …",
     "code": "invalid_input",
     "errors": [{"field": "email", "message": "expected an address like name@example.com, got 'x'"},
                {"field": "currency", "message": "unknown currency 'EUX' (expected an ISO 4217 code …)"}]}

``type`` identifies the kind of problem; it is a path on the API itself (``GET /problems/<code>`` describes it),
resolved against the URL that was called. ``code`` is the same kind as a short stable name, for clients that
switch on it (it is what ``type`` ends with). ``title`` is the kind for a person, ``detail`` this occurrence,
``status`` the HTTP status. ``errors`` names every invalid field, each with its own message — a dotted path into
the body (``events[3].value``), a query or path parameter, or a header (``Authorization``, ``Idempotency-Key``);
it is empty when no field is to blame.

The kinds are :data:`PROBLEMS` (the README's table is this one). One schema, :class:`Problem`, describes every
error in the OpenAPI document, under ``application/problem+json``; :func:`problem_openapi` makes it so.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from billing.errors import BillingInputError, ConflictError, NotFoundError

__all__ = [
    "ERROR_RESPONSES",
    "HEAD_REQUEST",
    "POST_ERROR_RESPONSES",
    "PROBLEMS",
    "PROBLEM_MEDIA_TYPE",
    "ApiError",
    "BodyCheck",
    "FieldError",
    "Problem",
    "ProblemKind",
    "body_checked_by",
    "currency_problems",
    "field_of",
    "input_error",
    "install_error_handlers",
    "not_found",
    "printable",
    "problem_openapi",
    "unknown_in_body",
]

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "/problems/"

_FIELD = re.compile(r"^([A-Za-z_][\w.\[\]-]*): ")


@dataclass(frozen=True, slots=True)
class ProblemKind:
    """One kind of problem: its HTTP status, a title, and when it happens."""

    status: int
    title: str
    description: str


PROBLEMS: dict[str, ProblemKind] = {
    "invalid_query": ProblemKind(
        400, "Invalid query", "a query parameter the route does not take, or starting_after with ending_before"
    ),
    "invalid_idempotency_key": ProblemKind(
        400,
        "Invalid Idempotency-Key",
        "an Idempotency-Key that is empty, longer than 255 characters or not printable ASCII",
    ),
    "unauthorized": ProblemKind(
        401, "Unauthorized", "no Authorization: Bearer <key> header, or a key unknown or revoked"
    ),
    "not_found": ProblemKind(
        404,
        "Not found",
        "an unknown customer, subscription, plan, invoice or route — and anything a key bound to a customer may "
        "not see (so a key learns nothing of others)",
    ),
    "method_not_allowed": ProblemKind(405, "Method not allowed", "the route does not take this method"),
    "already_exists": ProblemKind(409, "Already exists", "a customer with this external_id exists already"),
    "conflict": ProblemKind(
        409,
        "Conflict",
        "well-formed input that clashes with what is stored: an overlapping subscription, a subscription already "
        "cancelled, an invoice whose status does not allow the change",
    ),
    "idempotency_key_reused": ProblemKind(
        409, "Idempotency-Key reused", "an Idempotency-Key sent before with another method, path or body"
    ),
    "idempotency_key_in_progress": ProblemKind(
        409,
        "Idempotency-Key in progress",
        "a request with this Idempotency-Key is still running; retry after it (Retry-After says when)",
    ),
    "unsupported_media_type": ProblemKind(
        415, "Unsupported media type", "a body sent as another Content-Type than application/json"
    ),
    "body_too_large": ProblemKind(
        413,
        "Body too large",
        "a body larger than its route takes (32 MiB for events, else 1 MiB): refused while it is read, before any "
        "of it is parsed",
    ),
    "invalid_request": ProblemKind(
        422,
        "Invalid request",
        "the request does not match the schema: every field that does not, with what was expected",
    ),
    "invalid_input": ProblemKind(
        422, "Invalid input", "the engine refused the input: every bad field of a customer at once, an unknown plan"
    ),
    "too_many_events": ProblemKind(422, "Too many events", "a batch of more than 10,000 events"),
    "missing_signature": ProblemKind(400, "Missing signature", "a Stripe webhook without its Stripe-Signature header"),
    "invalid_signature": ProblemKind(
        400, "Invalid signature", "a Stripe-Signature that does not match the body and the webhook secret"
    ),
    "stale_timestamp": ProblemKind(400, "Stale timestamp", "a Stripe-Signature more than 300 seconds old"),
    "future_timestamp": ProblemKind(
        400, "Future timestamp", "a Stripe-Signature more than 300 seconds ahead of the server's clock"
    ),
    "invalid_payload": ProblemKind(400, "Invalid payload", "a signed Stripe webhook whose body is not an event"),
    "internal_error": ProblemKind(500, "Internal error", "a bug: logged with its traceback, never shown to the caller"),
    "webhook_secret_missing": ProblemKind(
        500, "Webhook secret missing", "STRIPE_WEBHOOK_SECRET is not set on the server"
    ),
    "catalog_invalid": ProblemKind(500, "Catalog invalid", "the server's catalog file cannot be read or has problems"),
    "metrics_unavailable": ProblemKind(500, "Metrics unavailable", "the month's figures cannot be computed"),
}
"""Every kind of problem the API answers with, by ``code``."""


class FieldError(BaseModel):
    """One invalid field and what was expected of it."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"field": "currency", "message": "unknown currency 'EUX' (expected an ISO 4217 "
                                                                       "code such as USD, EUR, JPY)"}]}
    )

    field: str = Field(description="A dotted path into the body (`events[3].value`), a query or path parameter, "
                       "or a header (`Authorization`).")
    message: str = Field(description="What is wrong with it, for a person.")


class Problem(BaseModel):
    """Every error the API answers (RFC 9457, `application/problem+json`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "/problems/invalid_input",
                    "title": "Invalid input",
                    "status": 422,
                    "detail": "email: expected an address like name@example.com, got 'x'; currency: unknown "
                    "currency 'EUX' (expected an ISO 4217 code such as USD, EUR, JPY)",
                    "code": "invalid_input",
                    "errors": [
                        {"field": "email", "message": "expected an address like name@example.com, got 'x'"},
                        {"field": "currency",
                         "message": "unknown currency 'EUX' (expected an ISO 4217 code such as USD, EUR, JPY)"},
                    ],
                }
            ]
        }
    )

    type: str = Field(description="The kind of problem, a path on this API: `GET /problems/<code>` describes it.")
    title: str = Field(description="The kind of problem, for a person; the same for every occurrence.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="This occurrence, for a person: every problem found, each naming its field.")
    code: str = Field(description="The kind of problem as a stable machine-readable name (the end of `type`).")
    errors: list[FieldError] = Field(description="Every invalid field with its message; empty when no field is to "
                                     "blame.")


_STATUS_TEXT = {
    400: "A query parameter the route does not take, or an invalid Idempotency-Key",
    401: "No valid API key",
    404: "Not found (or not visible to this key)",
    409: "Conflict with what is stored, or an Idempotency-Key reused or in progress",
    413: "Body too large",
    415: "A body that is not application/json",
    422: "Invalid input; `errors` names every invalid field",
    500: "Internal error",
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": _STATUS_TEXT[status]} for status in (400, 401, 404, 422, 500)
}
"""The error answers every route may give, for the OpenAPI document (all :class:`Problem`)."""

POST_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": _STATUS_TEXT[status]} for status in (409, 413, 415)
}
"""The further error answers of a ``POST`` (a conflict, a reused Idempotency-Key, a body too large or not
JSON)."""


class ApiError(Exception):
    """An error answered as a :class:`Problem` with ``status``; raised by the routes and dependencies.

    ``field`` names the one field to blame (its message is ``message`` without a leading ``"field: "``);
    ``errors`` lists several as (field, message) pairs.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        errors: Iterable[tuple[str, str]] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = printable(message)
        self.field = None if field is None else printable(field)
        self.headers = headers
        if errors is not None:
            self.errors = [(printable(name), printable(text)) for name, text in errors]
        elif self.field is not None:
            self.errors = [(self.field, _without_field(self.message, self.field))]
        else:
            self.errors = []

    def problem(self) -> Problem:
        kind = PROBLEMS.get(self.code)
        return Problem(
            type=PROBLEM_TYPE_PREFIX + self.code,
            title=kind.title if kind else self.code.replace("_", " ").capitalize(),
            status=self.status,
            detail=self.message,
            code=self.code,
            errors=[FieldError(field=name, message=text) for name, text in self.errors],
        )

    def response(self) -> JSONResponse:
        return JSONResponse(
            status_code=self.status,
            content=self.problem().model_dump(),
            headers=self.headers,
            media_type=PROBLEM_MEDIA_TYPE,
        )


def printable(text: str) -> str:
    """``text`` as valid UTF-8: a lone surrogate from the request becomes a visible escape, never a crash."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _without_field(message: str, field: str) -> str:
    """``"currency: unknown currency"`` → ``unknown currency`` when ``field`` is ``currency``."""
    prefix = f"{field}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def not_found(message: str, field: str | None = None) -> ApiError:
    """A 404 ``not_found``."""
    return ApiError(404, "not_found", message, field)


def field_of(message: str, default: str | None = None) -> str | None:
    """The field a service message starts with (``"currency: unknown currency"`` → ``currency``)."""
    match = _FIELD.match(message)
    return match.group(1) if match else default


def unknown_in_body(exc: NotFoundError, field: str) -> ApiError | NotFoundError:
    """An unknown resource the body names in ``field`` (``unknown customer 'x'``): the request's field is wrong,
    not its URL, so a 422 naming it (as an unknown plan is), not a 404; any other NotFoundError as it is."""
    if not str(exc).startswith(f"unknown {field} "):
        return exc
    return ApiError(422, "invalid_input", f"{field}: {exc}", field)


def input_error(exc: BillingInputError, default_field: str | None = None, code: str | None = None) -> ApiError:
    """The engine's refusal as a problem: 409 for a :class:`ConflictError`, else 422; every problem it lists as
    an entry of ``errors`` (those that name no field under ``default_field``, or left out without one)."""
    errors: list[tuple[str, str]] = []
    for text in exc.problems:
        field = field_of(text, default_field)
        if field is not None:
            errors.append((field, _without_field(text, field)))
    if isinstance(exc, ConflictError):
        return ApiError(409, code or "conflict", str(exc), errors=errors)
    return ApiError(422, code or "invalid_input", str(exc), errors=errors)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRANCHES = frozenset({"int", "str", "float", "decimal", "bool", "none"})


def _location(loc: Sequence[int | str]) -> str:
    """``("body", "events", 3, "value")`` → ``events[3].value``; the request part (body, query…) is dropped, and
    so are the names pydantic gives a union's branches (``amount_off.function-after[…]``, ``amount_off.int``: the
    field is ``amount_off``)."""
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header", "cookie") else list(loc)
    parts = [part for part in parts if isinstance(part, int) or _NAME.fullmatch(part)]
    while len(parts) > 1 and isinstance(parts[-1], str) and parts[-1] in _BRANCHES:
        parts.pop()
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    if not text and loc and loc[0] == "body":
        return "body"
    return text


_ENGINE_CHECK = "__billing_body_check__"
_Route = TypeVar("_Route", bound=Callable[..., Any])


BodyCheck = Callable[[Mapping[str, Any], frozenset[str]], Iterable[str]]


def body_checked_by(check: BodyCheck) -> Callable[[_Route], _Route]:
    """Mark a route whose body the engine checks beyond its schema: when the schema refuses the body, ``check``
    runs on the fields the schema did not refuse (values as sent; then the names of those it refused), and what it
    finds of those fields (``field: message``) joins the problem, so that one answer names every invalid field (a
    40-character ``locale`` and a bad ``email``)."""

    def mark(route: _Route) -> _Route:
        setattr(route, _ENGINE_CHECK, check)
        return route

    return mark


def currency_problems(given: Mapping[str, Any], refused: frozenset[str] = frozenset()) -> list[str]:
    """A body's ``currency``, if given as text, checked as the engine checks it (an ISO 4217 code it knows)."""
    from pricing_plans.money import minor_digits

    code = given.get("currency")
    if not isinstance(code, str):
        return []
    try:
        minor_digits(code.strip().upper())
    except ValueError as error:
        return [f"currency: {error}"]
    return []


def _engine_problems(request: Request, body: Any, named: set[str]) -> list[tuple[str, str]]:
    """What the route's engine check (``body_checked_by``) finds in the fields of ``body`` not ``named``."""
    check = getattr(request.scope.get("endpoint"), _ENGINE_CHECK, None)
    if check is None or not isinstance(body, dict):
        return []
    rest = {name: value for name, value in body.items() if name not in named}
    try:
        found = list(check(rest, frozenset(named)))
    except Exception:  # (the schema's refusal stands on its own: a check the odd body trips up adds nothing)
        log.debug("the engine's check of a refused body failed", exc_info=True)
        return []
    problems = []
    for text in found:
        field = field_of(text, None)
        if field is not None and _top(field) not in named:
            problems.append((field, _without_field(text, field)))
    return problems


def _top(field: str) -> str:
    """The body's own field a location is in: ``address[2]`` → ``address``."""
    return re.split(r"[.\[]", field, maxsplit=1)[0]


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems: list[tuple[str, str]] = []
    for error in exc.errors():
        field = _location(error.get("loc", ())) or "body"
        message = str(error.get("msg", "invalid"))
        if error.get("type") == "json_invalid":
            field, message = "body", f"not valid JSON ({error.get('ctx', {}).get('error', message)})"
        elif error.get("type") == "missing":
            message = "required"
        elif error.get("type") == "extra_forbidden":
            message = "unknown field"
        elif error.get("type") == "value_error":  # (our own validators' words, without pydantic's preamble)
            message = message.removeprefix("Value error, ")
        if all(seen != field for seen, _ in problems):  # (a union's branches each say why: the first is enough)
            problems.append((field, message))
    if not problems:
        return ApiError(422, "invalid_request", "the request is invalid").response()
    problems += _engine_problems(request, getattr(exc, "body", None), {_top(field) for field, _ in problems})
    detail = "; ".join(f"{field}: {text}" for field, text in problems)
    return ApiError(422, "invalid_request", detail, errors=problems).response()


def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


def _input_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BillingInputError)
    return input_error(exc).response()


def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return not_found(str(exc)).response()


HEAD_REQUEST = "billing.head_request"
"""The scope key that marks a ``HEAD`` request the application answers as its ``GET`` (``billing.api``)."""


def _method(request: Request) -> str:
    """The request's method as the client sent it (a ``HEAD`` is routed as its ``GET``)."""
    return "HEAD" if request.scope.get(HEAD_REQUEST) else request.method


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        # (the framework's answer to a body its JSON parser gave up on: nested too deeply, say)
        message = "body: not JSON this server reads (nested too deeply?)"
        return ApiError(422, "invalid_request", message, "body").response()
    codes = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
    code = codes.get(exc.status_code, "http_error")
    field = "body" if exc.status_code == 413 else None
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such route: {_method(request)} {request.url.path}"
    elif exc.status_code == 405 and message == "Method Not Allowed":
        message = f"{request.url.path} does not take {_method(request)}"
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed(request)}
    return ApiError(exc.status_code, code, message, field, headers=headers).response()


def _allowed(request: Request) -> str:
    """Every method some route of the path takes (the router names only the first route's that matched)."""
    from starlette.routing import Match, Route

    methods: set[str] = set()
    routes = list(request.app.router.routes)
    while routes:
        route = routes.pop()
        inner = getattr(route, "original_router", None)  # (a router included whole: its own routes)
        if inner is not None:
            routes += inner.routes
        elif isinstance(route, Route) and route.methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    if "GET" in methods:
        methods.add("HEAD")  # (answered as the GET, without its body)
    return ", ".join(sorted(methods))


def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return ApiError(500, "internal_error", "internal error; the server logged it").response()


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as a :class:`Problem`."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(BillingInputError, _input_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)


def problem_openapi(document: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI ``document`` with every error answer (4xx, 5xx) described once, as it is sent: the
    :class:`Problem` schema under ``application/problem+json``; FastAPI's own validation-error schemas, which the
    server never sends, are left out."""
    reference = {"$ref": "#/components/schemas/Problem"}
    for path in document.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict):
                continue
            for status, answer in operation.get("responses", {}).items():
                if str(status)[:1] in ("4", "5"):
                    answer["content"] = {PROBLEM_MEDIA_TYPE: {"schema": reference}}
    schemas = document.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document
