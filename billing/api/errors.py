"""The HTTP API's errors: every failure is answered with one JSON shape.

    {"error": {"code": "invalid_input", "message": "currency: unknown currency 'EUX' …", "field": "currency"}}

``code`` is machine-readable, ``message`` is for a person and names the field, ``field`` is the field's name (a
dotted path into the body such as ``events[3].value``, a query or path parameter, or a header), or null when no
single field is to blame.

=====  ====================  ======================================================================
 401   ``unauthorized``      no ``Authorization: Bearer <key>`` header, or a key unknown or revoked
 404   ``not_found``         an unknown customer, subscription, invoice or route — and anything a key
                             bound to a customer may not see (so a key learns nothing of others)
 405   ``method_not_allowed``
 413   ``body_too_large``    a body larger than its route takes (32 MiB for events, else 1 MiB):
                             refused while it is read, before any of it is parsed
 422   ``too_many_events``   a batch of more than 10,000 events
 422   ``invalid_request``   the request does not match the schema (the field and what was expected)
 422   ``invalid_input``     the engine refused the input (:class:`~billing.errors.BillingInputError`)
 500   ``internal_error``    a bug: logged with its traceback, never shown to the caller
=====  ====================  ======================================================================
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from billing.errors import BillingInputError, NotFoundError

__all__ = [
    "ERROR_RESPONSES",
    "ApiError",
    "ErrorBody",
    "ErrorDetail",
    "field_of",
    "install_error_handlers",
    "not_found",
    "printable",
]

log = logging.getLogger(__name__)

_FIELD = re.compile(r"^([A-Za-z_][\w.\[\]-]*): ")


class ErrorDetail(BaseModel):
    """What went wrong: a machine-readable ``code``, a ``message`` naming the field, and the ``field``."""

    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No valid API key"},
    404: {"model": ErrorBody, "description": "Not found (or not visible to this key)"},
    422: {"model": ErrorBody, "description": "Invalid input; `field` names the culprit"},
}


class ApiError(Exception):
    """An error answered as ``{"error": {...}}`` with ``status``; raised by the routes and dependencies."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = printable(message)
        self.field = None if field is None else printable(field)
        self.headers = headers

    def response(self) -> JSONResponse:
        detail = ErrorDetail(code=self.code, message=self.message, field=self.field)
        return JSONResponse(status_code=self.status, content={"error": detail.model_dump()}, headers=self.headers)


def printable(text: str) -> str:
    """``text`` as valid UTF-8: a lone surrogate from the request becomes a visible escape, never a crash."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def not_found(message: str, field: str | None = None) -> ApiError:
    """A 404 ``not_found``."""
    return ApiError(404, "not_found", message, field)


def field_of(message: str, default: str | None = None) -> str | None:
    """The field a service message starts with (``"currency: unknown currency"`` → ``currency``)."""
    match = _FIELD.match(message)
    return match.group(1) if match else default


def _location(loc: Sequence[int | str]) -> str:
    """``("body", "events", 3, "value")`` → ``events[3].value``; the request part (body, query…) is dropped."""
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header", "cookie") else list(loc)
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    if not text and loc and loc[0] == "body":
        return "body"
    return text


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems: list[tuple[str, str]] = []
    for error in exc.errors():
        field = _location(error.get("loc", ()))
        message = str(error.get("msg", "invalid"))
        if error.get("type") == "json_invalid":
            field, message = "body", f"not valid JSON ({error.get('ctx', {}).get('error', message)})"
        elif error.get("type") == "missing":
            message = "required"
        problems.append((field, message))
    if not problems:
        return ApiError(422, "invalid_request", "the request is invalid").response()
    message = "; ".join(f"{field}: {text}" if field else text for field, text in problems)
    return ApiError(422, "invalid_request", message, problems[0][0] or None).response()


def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


def _input_error(request: Request, exc: Exception) -> JSONResponse:
    message = str(exc)
    return ApiError(422, "invalid_input", message, field_of(message)).response()


def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return not_found(str(exc)).response()


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
    code = codes.get(exc.status_code, "http_error")
    field = "body" if exc.status_code == 413 else None
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such route: {request.method} {request.url.path}"
    return ApiError(exc.status_code, code, message, field, headers=getattr(exc, "headers", None)).response()


def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return ApiError(500, "internal_error", "internal error; the server logged it").response()


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as ``{"error": {...}}``."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(BillingInputError, _input_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
