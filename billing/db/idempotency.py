"""The HTTP API's idempotency keys (migration 0011): the first answer to a ``POST`` sent with an
``Idempotency-Key``, kept for a day so that a retry — after a lost answer, a timeout, a server restart — gets that
answer again instead of doing the work twice.

A key belongs to the credential that sent it (``scope``: the SHA-256 of the ``Authorization`` header), so two
clients cannot read or block each other's keys. ``fingerprint`` is the SHA-256 of the request's method, path,
query and body: the same key with another request is refused, never answered with the first request's answer.

A row is *running* (``status`` NULL) from the moment a request claims the key until its answer is stored
(:func:`complete`) or dropped (:func:`release`: an answer that is not kept, so the key may carry the request
again). While its request runs, the API renews the row's lease (:func:`renew`, every third of
:data:`LEASE`); a running row not renewed for :data:`LEASE` (its server was killed mid-request) can be claimed
again. A row older than :data:`RETENTION` is forgotten: the key is free, and such rows are
deleted whenever a key is claimed.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine, Index, Integer, LargeBinary, String, Text, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from billing.db import session_scope
from billing.db.tables import BillingBase
from dbkit import for_update, insert_for, utcnow
from dbkit.types import UTCDateTime

__all__ = [
    "LEASE",
    "RETENTION",
    "Claim",
    "IdempotencyKeyRow",
    "StoredAnswer",
    "claim",
    "complete",
    "release",
    "renew",
]

RETENTION = dt.timedelta(hours=24)
"""How long a key's answer is kept (and the key stays taken)."""

LEASE = dt.timedelta(minutes=10)
"""How long a running request holds its key since it was claimed or last renewed (:func:`renew`) before a retry
may run it again (its server died mid-request)."""


class IdempotencyKeyRow(BillingBase):
    """One key of one credential: the request it was first sent with, and once done, the answer."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    status: Mapped[int | None] = mapped_column(Integer)
    headers: Mapped[str | None] = mapped_column(Text)  # JSON: the answer's headers that are replayed
    body: Mapped[bytes | None] = mapped_column(LargeBinary)


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """An answer as it is replayed: status, the headers kept (content type, location), body."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Claim:
    """What to do with a request that carries a key.

    ``run``: the key is this request's now (answer it, then :func:`complete` or :func:`release`); ``replay``: send
    ``answer`` again; ``reused``: the key came with another request first; ``running``: the first request with
    this key has not been answered yet (``started_at`` says since when).
    """

    outcome: Literal["run", "replay", "reused", "running"]
    answer: StoredAnswer | None = None
    started_at: dt.datetime | None = None


_CLAIM_ATTEMPTS = 5
"""How often :func:`claim` inserts again when the row it collided with was deleted before it could read it."""


def claim(
    engine: Engine,
    scope: str,
    key: str,
    fingerprint: str,
    *,
    now: dt.datetime | None = None,
    also: str | None = None,
) -> Claim:
    """Claim ``key`` of ``scope`` for a request with ``fingerprint``, in one transaction (two requests with one key
    at once: one runs, the other is told it is running).

    The row the insert collided with can be gone by the time it is read (on PostgreSQL, a :func:`release` of
    another request committed in between): the key is free again, so the insert is tried again.
    """
    now = now or utcnow()
    with session_scope(engine) as session:
        session.execute(delete(IdempotencyKeyRow).where(IdempotencyKeyRow.created_at < now - RETENTION))
        fresh = {"scope": scope, "key": key, "fingerprint": fingerprint, "created_at": now, "started_at": now}
        statement = select(IdempotencyKeyRow).where(IdempotencyKeyRow.scope == scope, IdempotencyKeyRow.key == key)
        for _ in range(_CLAIM_ATTEMPTS):
            inserted = session.execute(
                insert_for(session, IdempotencyKeyRow.__table__)
                .values(**fresh)
                .on_conflict_do_nothing()
                .returning(IdempotencyKeyRow.__table__.c.key)
            ).first()
            if inserted is not None:
                return Claim("run")
            row = session.execute(for_update(session, statement)).scalar_one_or_none()
            if row is not None:
                break
        else:
            raise RuntimeError(
                f"Idempotency-Key {key!r}: released and taken again {_CLAIM_ATTEMPTS} times while being claimed"
            )
        # (``also``: the same request as an earlier version fingerprinted it, for a key first sent before it changed)
        if row.fingerprint not in (fingerprint, also):
            return Claim("reused", started_at=row.created_at)
        if row.status is None:
            if row.started_at + LEASE > now:
                return Claim("running", started_at=row.started_at)
            row.started_at = now  # its request died with its server: this one runs instead
            return Claim("run")
        headers = json.loads(row.headers or "{}")
        return Claim("replay", StoredAnswer(row.status, headers, row.body or b""))


def renew(engine: Engine, scope: str, key: str, *, now: dt.datetime | None = None) -> bool:
    """Hold running ``key`` of ``scope`` for another :data:`LEASE` from ``now``: its request is still running (a
    long billing run), so a retry is told so instead of running it again. False when the key is no longer running
    (answered or released)."""
    with session_scope(engine) as session:
        result = session.execute(
            update(IdempotencyKeyRow)
            .where(IdempotencyKeyRow.scope == scope, IdempotencyKeyRow.key == key, IdempotencyKeyRow.status.is_(None))
            .values(started_at=now or utcnow())
        )
        return bool(getattr(result, "rowcount", 0))


def complete(engine: Engine, scope: str, key: str, answer: StoredAnswer) -> None:
    """Keep ``answer`` as the key's: every retry within :data:`RETENTION` gets it."""
    with session_scope(engine) as session:
        session.execute(
            update(IdempotencyKeyRow)
            .where(IdempotencyKeyRow.scope == scope, IdempotencyKeyRow.key == key)
            .values(status=answer.status, headers=json.dumps(answer.headers, sort_keys=True), body=answer.body)
        )


def release(engine: Engine, scope: str, key: str) -> None:
    """Forget a running key whose answer is not kept: the next request with it runs."""
    with session_scope(engine) as session:
        session.execute(
            delete(IdempotencyKeyRow).where(
                IdempotencyKeyRow.scope == scope, IdempotencyKeyRow.key == key, IdempotencyKeyRow.status.is_(None)
            )
        )
