"""API keys: made by ``billing apikeys create``, sent as ``Authorization: Bearer <key>``.

A key is ``bk_`` followed by 32 random bytes (``secrets.token_urlsafe``). It is shown once, when it is created;
the database keeps only its SHA-256 (looked up by the hash, then compared in constant time) and its first
characters, so that ``billing apikeys list`` can tell keys apart. A revoked key is refused from the next request
on.

A key bound to a customer (``--customer``) sees that customer's usage and invoices and nothing else: every other
route, and every other customer's usage or invoice, answers 404, exactly as if it did not exist.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine, Select, select

from billing.api.errors import ApiError, not_found
from billing.db import repository, session_scope
from billing.db.apikey_tables import ApiKeyRow
from billing.db.engines import get_engine
from billing.db.tables import CustomerRow
from billing.errors import BillingInputError, NotFoundError
from dbkit import as_utc, read_only, utcnow

__all__ = [
    "KEY_PREFIX",
    "ApiKey",
    "authenticate",
    "create_api_key",
    "hash_key",
    "list_api_keys",
    "require_key",
    "require_unbound_key",
    "revoke_api_key",
]

KEY_PREFIX = "bk_"
_SHOWN = 12  # characters of a key kept in clear, to recognize it (the prefix and 9 random ones)
_MAX_KEY = 512


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored (never the key itself).

    Attributes:
      id: the key's id (``billing apikeys revoke ID``).
      name: what it is for.
      prefix: its first characters (``bk_AbC123xy…``).
      customer: the external id of the customer it is bound to; None for a key that sees everything.
      created_at, revoked_at: when it was made and revoked (None while valid).
    """

    id: int
    name: str
    prefix: str
    customer: str | None
    created_at: dt.datetime
    revoked_at: dt.datetime | None

    @property
    def bound(self) -> bool:
        return self.customer is not None


def hash_key(key: str) -> str:
    """The SHA-256 of a key, in hex: what the database stores."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _api_key(row: ApiKeyRow, customer: str | None) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        customer=customer,
        created_at=utcnow() if row.created_at is None else as_utc(row.created_at),
        revoked_at=None if row.revoked_at is None else as_utc(row.revoked_at),
    )


def _with_customer() -> Select[tuple[ApiKeyRow, str | None]]:
    return select(ApiKeyRow, CustomerRow.external_id).outerjoin(CustomerRow, CustomerRow.id == ApiKeyRow.customer_id)


def create_api_key(engine: Engine, name: str, customer: str | None = None) -> tuple[ApiKey, str]:
    """Make a key named ``name`` (bound to ``customer``'s external id, if given); returns it and the key itself,
    which is never stored and cannot be shown again.

    Raises BillingInputError for a blank or too long name, NotFoundError for an unknown customer.
    """
    name = (name or "").strip()
    if not name:
        raise BillingInputError("name: required, got nothing")
    if len(name) > 255:
        raise BillingInputError(f"name: at most 255 characters, got {len(name)}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with session_scope(engine) as session:
        customer_id = None
        if customer is not None:
            found = repository.get_customer(session, customer)
            if found is None:
                raise NotFoundError(f"unknown customer {customer!r}")
            customer_id = found.id
        row = ApiKeyRow(
            name=name, prefix=key[:_SHOWN], key_hash=hash_key(key), customer_id=customer_id, created_at=utcnow()
        )
        session.add(row)
        session.flush()
        return _api_key(row, customer), key


def list_api_keys(engine: Engine, *, include_revoked: bool = True) -> list[ApiKey]:
    """Every key, oldest first."""
    with session_scope(read_only(engine)) as session:
        statement = _with_customer().order_by(ApiKeyRow.id)
        if not include_revoked:
            statement = statement.where(ApiKeyRow.revoked_at.is_(None))
        return [_api_key(row, customer) for row, customer in session.execute(statement)]


def revoke_api_key(engine: Engine, key_id: int) -> ApiKey:
    """Revoke key ``key_id`` (from the next request on); revoking a revoked key changes nothing.

    Raises NotFoundError for an unknown id.
    """
    with session_scope(engine) as session:
        found = session.execute(_with_customer().where(ApiKeyRow.id == key_id)).one_or_none()
        if found is None:
            raise NotFoundError(f"unknown API key {key_id}")
        row, customer = found
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            session.flush()
        return _api_key(row, customer)


def authenticate(engine: Engine, key: str) -> ApiKey | None:
    """The valid (not revoked) key ``key``, or None."""
    if not key.startswith(KEY_PREFIX) or len(key) > _MAX_KEY:
        return None
    digest = hash_key(key)
    with session_scope(read_only(engine)) as session:
        found = session.execute(_with_customer().where(ApiKeyRow.key_hash == digest)).one_or_none()
    if found is None:
        return None
    row, customer = found
    if not hmac.compare_digest(row.key_hash, digest) or row.revoked_at is not None:
        return None
    return _api_key(row, customer)


_bearer = HTTPBearer(auto_error=False, description="An API key made by `billing apikeys create`.")


def require_key(
    engine: Annotated[Engine, Depends(get_engine)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """The request's valid API key; 401 without one."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise ApiError(
            401, "unauthorized", "Authorization: expected 'Bearer <API key>'", "Authorization", challenge
        )
    key = authenticate(engine, credentials.credentials)
    if key is None:
        raise ApiError(401, "unauthorized", "Authorization: unknown or revoked API key", "Authorization", challenge)
    return key


def require_unbound_key(key: Annotated[ApiKey, Depends(require_key)]) -> ApiKey:
    """A key that is not bound to a customer; a bound key gets 404, as if the route did not exist."""
    if key.bound:
        raise not_found("not found")
    return key
