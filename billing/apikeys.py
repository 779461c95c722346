"""API keys: made by ``billing apikeys create``, sent to the HTTP API as ``Authorization: Bearer <key>``.

A key is ``bk_`` followed by 32 random bytes (``secrets.token_urlsafe``). It is shown once, when it is created;
the database keeps only its SHA-256 (looked up by the hash, then compared in constant time) and its first
characters, so that ``billing apikeys list`` can tell keys apart. A key revoked through this process (the API)
is refused from the next request on; one revoked by another process (``billing apikeys revoke`` while the server
runs) within :data:`RECHECK` seconds: a serving process keeps the keys it has just found valid that long, so that
a stream of requests does not read the same key once per request.

A key bound to a customer (``--customer``) sees that customer's usage and invoices and nothing else (the API
answers 404 to everything else, as if it did not exist).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
import weakref
from dataclasses import dataclass

from sqlalchemy import Engine, Select, bindparam, select

import dbkit
from billing.db import repository, session_scope
from billing.db.apikey_tables import ApiKeyRow
from billing.db.tables import CustomerRow
from billing.errors import BillingInputError, NotFoundError

__all__ = [
    "KEY_PREFIX",
    "RECHECK",
    "ApiKey",
    "authenticate",
    "create_api_key",
    "hash_key",
    "list_api_keys",
    "recently_valid",
    "revoke_api_key",
]

KEY_PREFIX = "bk_"
_SHOWN = 12  # characters of a key kept in clear, to recognize it (the prefix and 9 random ones)
_MAX_KEY = 512
RECHECK = 1.0
"""Seconds a serving process trusts a key it found valid before it reads it again."""
_VALID: dict[tuple[str, str], tuple[float, ApiKey]] = {}  # (database, key hash) → (read at, key), ≤ RECHECK old
_VALID_LOCK = threading.Lock()
_VALID_MAX = 10_000


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
        created_at=dbkit.as_utc(row.created_at),
        revoked_at=None if row.revoked_at is None else dbkit.as_utc(row.revoked_at),
    )


def _with_customer() -> Select[ApiKeyRow, str | None]:
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
            name=name, prefix=key[:_SHOWN], key_hash=hash_key(key), customer_id=customer_id, created_at=dbkit.utcnow()
        )
        session.add(row)
        session.flush()
        return _api_key(row, customer), key


def list_api_keys(engine: Engine, *, include_revoked: bool = True) -> list[ApiKey]:
    """Every key, oldest first."""
    with session_scope(dbkit.read_only(engine)) as session:
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
            row.revoked_at = dbkit.utcnow()
            session.flush()
        revoked = _api_key(row, customer)
    with _VALID_LOCK:  # once committed: a key found valid before now is read again
        _VALID.clear()
    return revoked


def recently_valid(engine: Engine, key: str) -> ApiKey | None:
    """``key``, if this process found it valid less than :data:`RECHECK` seconds ago (no database read); else
    None (:func:`authenticate` tells)."""
    if not key.startswith(KEY_PREFIX) or len(key) > _MAX_KEY:
        return None
    cached = _VALID.get((_database(engine), hash_key(key)))
    if cached is not None and time.monotonic() - cached[0] < RECHECK:
        return cached[1]
    return None


def authenticate(engine: Engine, key: str) -> ApiKey | None:
    """The valid (not revoked) key ``key``, or None."""
    if not key.startswith(KEY_PREFIX) or len(key) > _MAX_KEY:
        return None
    digest = hash_key(key)
    cached = _VALID.get((_database(engine), digest))
    if cached is not None and time.monotonic() - cached[0] < RECHECK:
        return cached[1]
    read_at = time.monotonic()
    with dbkit.read_only(engine).connect() as connection, connection.begin():
        found = connection.execute(_BY_HASH, {"digest": digest}).one_or_none()
    if found is None:
        return None
    if not hmac.compare_digest(found.key_hash, digest) or found.revoked_at is not None:
        return None
    valid = ApiKey(
        id=found.id,
        name=found.name,
        prefix=found.prefix,
        customer=found.external_id,
        created_at=dbkit.as_utc(found.created_at),
        revoked_at=None,
    )
    with _VALID_LOCK:
        if len(_VALID) >= _VALID_MAX:
            _VALID.clear()
        _VALID[(_database(engine), digest)] = (read_at, valid)
    return valid


_DATABASES: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def _database(engine: Engine) -> str:
    """The engine's database URL as text, made once per engine (hashing a URL renders it: tens of microseconds on
    every request)."""
    name = _DATABASES.get(engine)
    if name is None:
        name = _DATABASES[engine] = engine.url.render_as_string(hide_password=False)
    return name


_BY_HASH = (
    select(
        ApiKeyRow.id, ApiKeyRow.name, ApiKeyRow.prefix, ApiKeyRow.key_hash, ApiKeyRow.created_at,
        ApiKeyRow.revoked_at, CustomerRow.external_id,
    )
    .outerjoin(CustomerRow, CustomerRow.id == ApiKeyRow.customer_id)
    .where(ApiKeyRow.key_hash == bindparam("digest"))
)
