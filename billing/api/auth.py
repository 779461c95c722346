"""Authentication of the HTTP API: every route but ``/healthz`` needs ``Authorization: Bearer <API key>``
(keys are made by ``billing apikeys create``; see ``billing.apikeys``).

A key bound to a customer sees that customer's usage and invoices and nothing else: every other route, and every
other customer's usage or invoice, answers 404, exactly as if it did not exist.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from billing.api.deps import api_engine
from billing.api.errors import ApiError, not_found
from billing.apikeys import ApiKey, authenticate, recently_valid

__all__ = ["ApiKey", "bearer_key", "require_key", "require_unbound_key"]

_bearer = HTTPBearer(auto_error=False, description="An API key made by `billing apikeys create`.")


async def require_key(
    engine: Annotated[Engine, Depends(api_engine)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """The request's valid API key; 401 without one."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise ApiError(
            401, "unauthorized", "Authorization: expected 'Bearer <API key>'", "Authorization", challenge
        )
    key = recently_valid(engine, credentials.credentials) or await run_in_threadpool(
        authenticate, engine, credentials.credentials
    )
    if key is None:
        raise ApiError(401, "unauthorized", "Authorization: unknown or revoked API key", "Authorization", challenge)
    return key


def bearer_key(engine: Engine, authorization: str | None) -> ApiKey | None:
    """The valid API key an ``Authorization`` header value names (``Bearer <API key>``, read as ``require_key``
    reads it), or None: for what must check a credential before the routes do (the idempotency keys)."""
    scheme, credentials = get_authorization_scheme_param(authorization)
    if not (scheme and credentials) or scheme.lower() != "bearer":
        return None
    return authenticate(engine, credentials)


async def require_unbound_key(key: Annotated[ApiKey, Depends(require_key)]) -> ApiKey:
    """A key that is not bound to a customer; a bound key gets 404, as if the route did not exist."""
    if key.bound:
        raise not_found("not found")
    return key
