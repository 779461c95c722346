"""Staff sessions of the finance console: an API key exchanged for a session, and the session's CSRF token.

Why an API key rather than passwords: the engine already has one credential for people and programs that may do
everything (``billing apikeys create``; 256 random bits, stored as a SHA-256, revocable), so the console adds no
second store of secrets, no password policy and no password hashing to keep up to date. A key bound to a customer
(``--customer``) cannot sign in: it sees only that customer's data.

- :func:`sign_in` checks the key and opens a session: a new random token (``bs_`` + 32 random bytes) that the
  browser keeps in an ``HttpOnly`` cookie; the database keeps only its SHA-256, the key it was opened with and its
  expiry (:data:`SESSION_HOURS` after sign-in). The key itself is never stored by the console. Rows of sessions
  expired more than :data:`KEPT_DAYS` ago are removed at the next sign-in.
- :func:`session_of` finds the live session of a token: not signed out, not expired, and its key not revoked
  since (revoking the key ends its sessions).
- :func:`sign_out` ends a session; the cookie is then worth nothing, even if it was copied.
- :func:`csrf_token` is the token every form of the session carries: an HMAC of the session token, so it is tied
  to that session (another session's token, or none, is refused) and needs no storage.
- :func:`set_notice` / :func:`take_notice`: the one message the next page shows after an action.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, delete, select, update

import dbkit
from billing.apikeys import authenticate, hash_key
from billing.db import session_scope
from billing.db.apikey_tables import ApiKeyRow
from billing.db.staff_tables import StaffSessionRow
from billing.errors import BillingInputError

__all__ = [
    "SESSION_HOURS",
    "StaffSession",
    "csrf_matches",
    "csrf_token",
    "session_of",
    "set_notice",
    "sign_in",
    "sign_out",
    "take_notice",
]

SESSION_HOURS = 12
"""How long a console session lasts after sign-in (a working day)."""
KEPT_DAYS = 30
"""Days an ended or expired session's row is kept (then removed at the next sign-in)."""
TOKEN_PREFIX = "bs_"
_MAX_TOKEN = 128


@dataclass(frozen=True, slots=True)
class StaffSession:
    """A live console session.

    Attributes:
      id: the session's id.
      key_id, key_name: the API key it was opened with (its name is who acts: "approved by console: Ada").
      created_at, expires_at: when it was opened, when it ends by itself.
      notice: the message kept for its next page, if any (:func:`take_notice` removes it).
    """

    id: int
    key_id: int
    key_name: str
    created_at: dt.datetime
    expires_at: dt.datetime
    notice: str | None = None

    @property
    def actor(self) -> str:
        """Who acts, as recorded beside an approval or a review flag."""
        return f"console: {self.key_name}"


def sign_in(engine: Engine, key: str, *, now: dt.datetime | None = None) -> tuple[StaffSession, str]:
    """Open a session for the API key ``key``; returns it and its token (shown to the browser only).

    Raises BillingInputError for an unknown or revoked key and for a key bound to a customer (the same message for
    every refusal: it tells nothing about which keys exist)."""
    found = authenticate(engine, key.strip())
    if found is None or found.bound:
        raise BillingInputError("API key: unknown, revoked, or bound to a customer")
    instant = now or dbkit.utcnow()
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with session_scope(engine) as session:
        session.execute(
            delete(StaffSessionRow).where(StaffSessionRow.expires_at < instant - dt.timedelta(days=KEPT_DAYS))
        )
        row = StaffSessionRow(
            token_hash=hash_key(token),
            api_key_id=found.id,
            created_at=instant,
            expires_at=instant + dt.timedelta(hours=SESSION_HOURS),
        )
        session.add(row)
        session.flush()
        opened = StaffSession(row.id, found.id, found.name, instant, row.expires_at)
    return opened, token


def session_of(engine: Engine, token: str | None, *, now: dt.datetime | None = None) -> StaffSession | None:
    """The live session of ``token``, or None (no token, unknown, signed out, expired, or its key revoked)."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_TOKEN:
        return None
    instant = now or dbkit.utcnow()
    statement = (
        select(StaffSessionRow, ApiKeyRow.name, ApiKeyRow.revoked_at)
        .join(ApiKeyRow, ApiKeyRow.id == StaffSessionRow.api_key_id)
        .where(StaffSessionRow.token_hash == hash_key(token))
    )
    with session_scope(dbkit.read_only(engine)) as session:
        found = session.execute(statement).one_or_none()
        if found is None:
            return None
        row, name, revoked_at = found
        if row.ended_at is not None or revoked_at is not None or dbkit.as_utc(row.expires_at) <= instant:
            return None
        return StaffSession(
            row.id, row.api_key_id, name, dbkit.as_utc(row.created_at), dbkit.as_utc(row.expires_at), row.notice
        )


def sign_out(engine: Engine, token: str | None, *, now: dt.datetime | None = None) -> bool:
    """End the session of ``token``; whether there was a live one."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_TOKEN:
        return False
    with session_scope(engine) as session:
        ended = session.execute(
            update(StaffSessionRow)
            .where(StaffSessionRow.token_hash == hash_key(token), StaffSessionRow.ended_at.is_(None))
            .values(ended_at=now or dbkit.utcnow(), notice=None)
        )
        return bool(ended.rowcount)  # type: ignore[attr-defined]


def csrf_token(token: str) -> str:
    """The CSRF token of the session whose token is ``token``: an HMAC-SHA256 of it, in hex."""
    return hmac.new(token.encode(), b"billing console csrf", hashlib.sha256).hexdigest()


def csrf_matches(token: str | None, sent: str | None) -> bool:
    """Whether ``sent`` is the CSRF token of the session ``token`` (compared in constant time)."""
    if not token or not sent:
        return False
    return hmac.compare_digest(csrf_token(token), sent)


def set_notice(engine: Engine, session_id: int, notice: str) -> None:
    """Keep ``notice`` for the session's next page."""
    with session_scope(engine) as session:
        session.execute(update(StaffSessionRow).where(StaffSessionRow.id == session_id).values(notice=notice[:4000]))


def take_notice(engine: Engine, staff: StaffSession) -> str | None:
    """The notice kept for the session (read with it), removed; no write when there is none."""
    if staff.notice is None:
        return None
    with session_scope(engine) as session:
        session.execute(update(StaffSessionRow).where(StaffSessionRow.id == staff.id).values(notice=None))
    return staff.notice
