"""The notification outbox: what is to be told, written before anything is sent, and what became of it.

A notification row is written in the transaction that decides it (by ``billing.thresholds`` for a crossing, by
:func:`queue_invoice_finalized` for an issued invoice), so a crash loses nothing and a rolled-back decision
announces nothing. ``billing.notify.delivery`` then sends each due ``pending`` row; this module keeps the rows'
state for it:

- **claiming** — :func:`claim_due` takes a batch of due rows and pushes their ``next_attempt_at`` a lease ahead in
  one short transaction (PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED``; SQLite: the transaction's write lock
  serializes deliverers), so two deliverers never send the same row at once; one killed mid-send leaves the row
  pending, sent again when the lease ends. It takes only rows that have somewhere to go (:class:`Destinations`).
- **nowhere to go** — a due row with no destination at all (no webhook URL, the customer's or the global one, and
  no e-mail: the customer's address with an SMTP server) is not attempted: :func:`mark_waiting` leaves it
  ``pending``, due, its attempts untouched, with the reason ``no destination configured``; the first deliverer
  that has a destination for it sends it.
- **attempts** — every attempt on every channel is recorded (:func:`record_attempt`), whatever happens; a channel
  that already succeeded is not sent again.
- **rounds and dead letters** — :func:`settle_round` marks a row ``sent``, or counts a failed round and schedules
  the next one, or, after the last allowed round, makes it ``dead`` with its last error. :func:`retry` puts a
  dead one back.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, Engine, and_, exists, func, or_, select, true, update
from sqlalchemy.orm import Session

import dbkit
from billing.core.domain import Customer
from billing.core.periods import Period
from billing.db import repository, session_scope
from billing.db.notification_tables import (
    INTERNAL_KINDS,
    NOTIFICATION_STATUSES,
    DeliveryAttemptRow,
    NotificationRow,
)
from billing.db.tables import CustomerRow
from billing.errors import BillingInputError, NotFoundError
from invoices.model import Invoice

__all__ = [
    "NO_DESTINATION",
    "Attempt",
    "Claimed",
    "Destinations",
    "Notification",
    "RoundOutcome",
    "attempts_of",
    "claim_due",
    "count_due",
    "get_notification",
    "list_notifications",
    "mark_waiting",
    "notifications_page",
    "queue_invoice_finalized",
    "queue_invoices_finalized",
    "record_attempt",
    "retry",
    "settle_round",
]

RoundOutcome = Literal["sent", "pending", "dead", "waiting"]

NO_DESTINATION = "no destination configured"
"""The reason a pending notification gives while it has nowhere to go (it is not a failure: nothing was tried)."""


# -- records -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notification:
    """A notification as stored (see ``billing.db.notification_tables.NotificationRow``)."""

    id: str
    kind: str
    customer: str
    period: str
    status: str
    attempts: int
    next_attempt_at: dt.datetime
    created_at: dt.datetime
    payload: dict[str, Any]
    subscription_id: int | None = None
    invoice_id: int | None = None
    threshold_key: str | None = None
    level: int | None = None
    meter: str | None = None
    value: Any = None
    limit: Any = None
    currency: str | None = None
    last_error: str | None = None
    sent_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One delivery attempt on one channel."""

    channel: str
    target: str
    attempted_at: dt.datetime
    outcome: str
    http_status: int | None
    error: str | None
    duration_ms: int


@dataclass(frozen=True, slots=True)
class Destinations:
    """Where notifications can go besides the customers' own webhook URLs: a global webhook URL
    (``notification_webhook_url``), an SMTP server for the customers' addresses (``smtp_host``)."""

    webhook: bool
    email: bool

    def condition(self) -> ColumnElement[bool]:
        """Whether a notification row has a destination: the global webhook, else its customer's own webhook URL
        or, with an SMTP server, its customer's e-mail address."""
        if self.webhook:
            return true()
        own = and_(CustomerRow.webhook_url.is_not(None), CustomerRow.webhook_url != "")
        if self.email:
            own = or_(own, and_(CustomerRow.email.is_not(None), CustomerRow.email != ""))
        # a kind told to the business only has no destination without the global webhook
        told = exists().where(CustomerRow.external_id == NotificationRow.customer_external_id, own)
        return and_(NotificationRow.kind.not_in(INTERNAL_KINDS), told)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A notification a deliverer holds for a lease: whom it is for, and the channels already delivered on."""

    notification: Notification
    customer: Customer | None
    done: frozenset[str]


def _to_notification(row: NotificationRow) -> Notification:
    return Notification(
        id=row.id,
        kind=row.kind,
        customer=row.customer_external_id,
        period=row.period,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=dbkit.as_utc(row.next_attempt_at),
        created_at=dbkit.as_utc(row.created_at),
        payload=json.loads(row.payload),
        subscription_id=row.subscription_id,
        invoice_id=row.invoice_id,
        threshold_key=row.threshold_key,
        level=row.level,
        meter=row.meter,
        value=row.value,
        limit=row.limit_value,
        currency=row.currency,
        last_error=row.last_error,
        sent_at=None if row.sent_at is None else dbkit.as_utc(row.sent_at),
    )


def _reading(engine: Engine) -> Any:
    """A session for reads only: it never queues for SQLite's write lock."""
    return session_scope(dbkit.read_only(engine))


# -- reading -----------------------------------------------------------------------------------------------


def list_notifications(
    engine: Engine, *, status: str | None = None, customer: str | None = None, limit: int | None = None
) -> list[Notification]:
    """Notifications, oldest first (a crossing's levels in order), optionally of one status and one customer."""
    if status is not None and status not in NOTIFICATION_STATUSES:
        raise BillingInputError(f"status: expected one of {', '.join(NOTIFICATION_STATUSES)}, got {status!r}")
    statement = select(NotificationRow).order_by(*_PAGE_ORDER)
    if status is not None:
        statement = statement.where(NotificationRow.status == status)
    if customer is not None:
        statement = statement.where(NotificationRow.customer_external_id == customer)
    if limit is not None:
        statement = statement.limit(limit)
    with _reading(engine) as session:
        return [_to_notification(row) for row in session.scalars(statement)]


def notifications_page(
    engine: Engine,
    *,
    limit: int,
    after: str | None = None,
    before: str | None = None,
    status: str | None = None,
    customer: str | None = None,
) -> tuple[list[Notification], bool]:
    """At most ``limit`` notifications in the order ``list_notifications`` gives (oldest first, a crossing's levels
    in order), after the notification ``after`` or right before ``before``, optionally of one status and one
    customer; and whether more lie that way. A cursor that names no notification is refused (BillingInputError
    naming ``starting_after`` / ``ending_before``)."""
    if status is not None and status not in NOTIFICATION_STATUSES:
        raise BillingInputError(f"status: expected one of {', '.join(NOTIFICATION_STATUSES)}, got {status!r}")
    statement = select(NotificationRow)
    if status is not None:
        statement = statement.where(NotificationRow.status == status)
    if customer is not None:
        statement = statement.where(NotificationRow.customer_external_id == customer)
    order = _PAGE_ORDER
    with _reading(engine) as session:
        for field, cursor in (("starting_after", after), ("ending_before", before)):
            if cursor is None:
                continue
            row = session.execute(select(*order).where(NotificationRow.id == cursor)).first()
            if row is None:
                raise BillingInputError(f"{field}: unknown notification {cursor!r}")
            statement = statement.where(_beyond(order, tuple(row), later=field == "starting_after"))
        backward = before is not None and after is None
        ordered = statement.order_by(*(column.desc() for column in order) if backward else order)
        rows = list(session.scalars(ordered.limit(limit + 1)))
        found = [_to_notification(row) for row in rows[:limit]]
    return (found[::-1] if backward else found), len(rows) > limit


_PAGE_ORDER: tuple[ColumnElement[Any], ...] = (
    NotificationRow.created_at,
    NotificationRow.customer_external_id,
    func.coalesce(NotificationRow.subscription_id, 0),
    func.coalesce(NotificationRow.threshold_key, ""),
    func.coalesce(NotificationRow.level, 0),
    NotificationRow.id,
)
"""``list_notifications``'s order with no null in it (a keyset compares values), the id last: a total order."""


def _beyond(order: Sequence[ColumnElement[Any]], values: Sequence[Any], *, later: bool) -> ColumnElement[bool]:
    """The rows after (``later``) or before ``values`` in ``order``, compared column by column."""
    alternatives = []
    for index, column in enumerate(order):
        same = [earlier == value for earlier, value in zip(order[:index], values[:index], strict=True)]
        alternatives.append(and_(*same, column > values[index] if later else column < values[index]))
    return or_(*alternatives)


def get_notification(engine: Engine, notification_id: str) -> Notification:
    """One notification; NotFoundError if there is none."""
    with _reading(engine) as session:
        row = session.get(NotificationRow, notification_id)
        if row is None:
            raise NotFoundError(f"unknown notification {notification_id!r}")
        return _to_notification(row)


def attempts_of(engine: Engine, notification_id: str) -> list[Attempt]:
    """A notification's delivery attempts, oldest first."""
    statement = (
        select(DeliveryAttemptRow)
        .where(DeliveryAttemptRow.notification_id == notification_id)
        .order_by(DeliveryAttemptRow.attempted_at, DeliveryAttemptRow.id)
    )
    with _reading(engine) as session:
        return [
            Attempt(r.channel, r.target, dbkit.as_utc(r.attempted_at), r.outcome, r.http_status, r.error, r.duration_ms)
            for r in session.scalars(statement)
        ]


def count_due(engine: Engine, *, now: dt.datetime | None = None, destinations: Destinations | None = None) -> int:
    """How many pending notifications are due (only those with a destination, if ``destinations`` is given)."""
    moment = dbkit.as_utc(now) if now is not None else dbkit.utcnow()
    statement = select(func.count()).where(_due(moment))
    if destinations is not None:
        statement = statement.where(destinations.condition())
    with _reading(engine) as session:
        return session.scalar(statement) or 0


def _due(moment: dt.datetime) -> ColumnElement[bool]:
    return and_(NotificationRow.status == "pending", NotificationRow.next_attempt_at <= moment)


# -- queueing ----------------------------------------------------------------------------------------------


def queue_invoice_finalized(session: Session, invoice: Invoice) -> str | None:
    """Queue the ``invoice.finalized`` notification of an issued invoice, in the caller's transaction.

    Once per invoice (unique on invoice and kind): returns the new notification's id, or None if it was queued
    before. The webhook body carries the invoice as ``invoices.render.invoice_json`` gives it, frozen now so that
    every attempt sends the same body; the e-mail attaches the PDF, rendered when sent.
    """
    return queue_invoices_finalized(session, [invoice])[0]


def queue_invoices_finalized(session: Session, invoices: Sequence[Invoice]) -> list[str | None]:
    """``queue_invoice_finalized`` for many invoices: one multi-row insert (Core, not the ORM's per-row work);
    an invoice whose notification is already queued gets None."""
    from invoices.render import invoice_json

    now = dbkit.utcnow()
    rows: list[dict[str, Any]] = []
    for invoice in invoices:
        period = Period(invoice.period_start, invoice.period_end).label
        payload = {
            "customer": invoice.customer_id,
            "period": period,
            "invoice_number": invoice.number,
            "invoice": invoice_json(invoice),
            "created_at": dbkit.iso_instant(now),
        }
        rows.append({
            "id": str(uuid.uuid4()),
            "kind": "invoice.finalized",
            "customer_external_id": invoice.customer_id or "",
            "invoice_id": invoice.id,
            "period": period,
            "currency": invoice.currency,
            "payload": json.dumps(payload, sort_keys=True, default=str),
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        })
    if not rows:
        return []
    table = NotificationRow.__table__
    statement = dbkit.insert_for(session, table).on_conflict_do_nothing().returning(table.c.id)
    inserted = set(session.connection().execute(statement, rows).scalars())
    return [row["id"] if row["id"] in inserted else None for row in rows]


# -- delivery bookkeeping ----------------------------------------------------------------------------------


def mark_waiting(engine: Engine, now: dt.datetime, destinations: Destinations) -> int:
    """How many due notifications have no destination; those not saying so yet get the reason
    :data:`NO_DESTINATION` (their attempts and due time stay as they are: nothing was tried)."""
    waiting = and_(_due(now), ~destinations.condition())
    unmarked = and_(waiting, or_(NotificationRow.last_error.is_(None), NotificationRow.last_error != NO_DESTINATION))
    with _reading(engine) as session:  # (most of the time there is nothing to mark: no write lock for that)
        count: int = session.scalar(select(func.count()).where(waiting)) or 0
        stale: int = session.scalar(select(func.count()).where(unmarked)) or 0 if count else 0
    if stale:
        with session_scope(engine) as session:
            session.execute(update(NotificationRow).where(unmarked).values(last_error=NO_DESTINATION))
    return count


def claim_due(
    engine: Engine, now: dt.datetime, size: int, lease: dt.timedelta, destinations: Destinations | None = None
) -> list[Claimed]:
    """Take up to ``size`` due rows (only rows with a destination, if ``destinations`` is given): lock them
    (skipping rows another deliverer holds), push their due time a lease ahead and commit, so nobody else sends
    them while this deliverer does."""
    statement = (
        select(NotificationRow)
        .where(_due(now), true() if destinations is None else destinations.condition())
        .order_by(
            NotificationRow.next_attempt_at, NotificationRow.created_at, NotificationRow.level, NotificationRow.id
        )
        .limit(size)
    )
    with session_scope(engine) as session:
        if dbkit.is_postgresql(session):
            statement = statement.with_for_update(skip_locked=True)
        rows = list(session.scalars(statement))
        if not rows:
            return []
        ids = [row.id for row in rows]
        session.execute(update(NotificationRow).where(NotificationRow.id.in_(ids)).values(next_attempt_at=now + lease))
        customers = repository.customers_by_external_id(session, {row.customer_external_id for row in rows})
        succeeded = _channels_delivered(session, ids)
        return [
            Claimed(
                _to_notification(row),
                customers.get(row.customer_external_id),
                frozenset(succeeded.get(row.id, ())),
            )
            for row in rows
        ]


def _channels_delivered(session: Session, ids: Sequence[str]) -> dict[str, set[str]]:
    """Notification id → the channels an earlier round already delivered it on (never sent there again)."""
    succeeded: dict[str, set[str]] = {}
    done = select(DeliveryAttemptRow.notification_id, DeliveryAttemptRow.channel).where(
        DeliveryAttemptRow.notification_id.in_(ids), DeliveryAttemptRow.outcome == "ok"
    )
    for notification_id, channel in session.execute(done):
        succeeded.setdefault(notification_id, set()).add(channel)
    return succeeded


def record_attempt(engine: Engine, notification_id: str, attempt: Attempt) -> None:
    """Record one attempt on one channel, in its own transaction (kept whatever the round's outcome)."""
    with session_scope(engine) as session:
        session.add(
            DeliveryAttemptRow(
                notification_id=notification_id,
                channel=attempt.channel,
                target=attempt.target[:2048],
                attempted_at=attempt.attempted_at,
                outcome=attempt.outcome,
                http_status=attempt.http_status,
                error=attempt.error,
                duration_ms=attempt.duration_ms,
            )
        )


def settle_round(
    engine: Engine,
    notification_id: str,
    errors: Sequence[str],
    now: dt.datetime,
    *,
    max_attempts: int,
    retry_delay: Callable[[int], dt.timedelta],
    deliverable: bool = True,
) -> RoundOutcome | None:
    """Record how a delivery round ended: ``sent`` without errors; otherwise one more failed round, due again
    after ``retry_delay(failed rounds)`` (``pending``), or ``dead`` after ``max_attempts`` failed rounds. A row
    that was not ``deliverable`` (it had no channel at all: nothing was tried) is ``waiting``: pending with the
    reason :data:`NO_DESTINATION`, no round counted, due again when its claim's lease ends. None when the row is
    no longer pending: another deliverer finished it after this one's lease ran out, or it was retried by hand."""
    pending = (NotificationRow.id == notification_id) & (NotificationRow.status == "pending")
    with session_scope(engine) as session:
        row = session.execute(dbkit.for_update(session, select(NotificationRow).where(pending))).scalar_one_or_none()
        if row is None:
            return None
        if not deliverable:
            row.last_error = NO_DESTINATION
            return "waiting"
        if not errors:
            row.status, row.sent_at = "sent", now
            if row.last_error == NO_DESTINATION:  # (a wait, not a failure: nothing to keep)
                row.last_error = None
            return "sent"
        row.attempts += 1
        row.last_error = "; ".join(errors)
        if row.attempts >= max_attempts:
            row.status = "dead"
            return "dead"
        row.next_attempt_at = now + retry_delay(row.attempts)
        return "pending"


def retry(engine: Engine, notification_id: str, *, now: dt.datetime | None = None) -> Notification:
    """Put a dead notification back to pending, due now, with a fresh count of attempts (its last error stays on
    record, as on any notification sent after a failed round: what went wrong before it got through). Only a dead
    one: BillingInputError otherwise; NotFoundError if unknown."""
    moment = dbkit.as_utc(now) if now is not None else dbkit.utcnow()
    with session_scope(engine) as session:
        statement = dbkit.for_update(session, select(NotificationRow).where(NotificationRow.id == notification_id))
        found = session.execute(statement).scalar_one_or_none()
        if found is None:
            raise NotFoundError(f"unknown notification {notification_id!r}")
        if found.status != "dead":
            raise BillingInputError(f"notification {notification_id} is {found.status}; only a dead one can be retried")
        found.status = "pending"
        found.attempts = 0
        found.next_attempt_at = moment
        session.flush()
        return _to_notification(found)
