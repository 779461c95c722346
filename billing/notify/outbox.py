"""Notifications: the outbox and its delivery, at least once, by signed webhook and by e-mail.

A notification row is written before anything is sent (by ``billing.thresholds`` for a crossing, by
:func:`queue_invoice_finalized` for an issued invoice), in the transaction that decides it. Then
:func:`deliver_pending` sends each due ``pending`` row on its channels:

- **webhook** — ``POST`` to the customer's ``webhook_url``, else the global ``notification_webhook_url``, with the
  JSON body ``{"id", "kind", "customer", "period", ...}`` and the headers ``Idempotency-Key: <id>`` (the same on
  every attempt) and ``Billing-Signature: t=<unix time>,v1=<hex>``, where ``hex`` is the HMAC-SHA256 of
  ``"<unix time>.<body>"`` keyed with the endpoint's secret, as Stripe signs: the customer's own
  ``webhook_secret`` for its ``webhook_url`` (so no customer can forge what another's endpoint accepts), the
  global ``notification_webhook_secret`` for ``notification_webhook_url``. Nothing is sent unsigned: an endpoint
  without its secret is a failed attempt saying so. :func:`verify_signature` is the receiver's reference check.
  Any 2xx answer is a delivery.
- **e-mail** — over SMTP (``smtp_host``, ``smtp_port``, ``smtp_from``, optional ``smtp_username`` /
  ``smtp_password`` / ``smtp_starttls``) to the customer's address; ``invoice.finalized`` carries the invoice
  PDF. The ``Message-ID`` is derived from the notification id, so a resent message is recognizably the same.

Every attempt on every channel is recorded (``notification_attempts``), whatever happens. A round in which a
channel fails counts one attempt and is tried again after an exponential backoff with jitter (base
``notification_backoff_base_seconds``, doubling, capped at ``notification_backoff_max_seconds``, then a random
point in its upper half); channels that already succeeded are not sent again. After
``notification_max_attempts`` failed rounds the notification is ``dead`` with its last error; :func:`retry` puts
it back. A notification with no channel at all (no URL, no address or no SMTP server) is dead at once, saying so.

Claiming: a deliverer takes a batch of due rows and pushes their ``next_attempt_at`` a lease ahead in one short
transaction (PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED``; SQLite: the transaction's write lock serializes
deliverers), then sends outside any transaction. Two deliverers never send the same row at once; one killed
mid-send leaves the row pending, sent again when the lease ends — the receiver sees the same Idempotency-Key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import random
import smtplib
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from billing.config import Settings
from billing.core.domain import Customer
from billing.core.periods import Period
from billing.db import repository, session_scope
from billing.db.notification_tables import NOTIFICATION_STATUSES, DeliveryAttemptRow, NotificationRow
from billing.errors import BillingInputError, NotFoundError
from invoices.model import Invoice

__all__ = [
    "SIGNATURE_HEADER",
    "Attempt",
    "DeliveryReport",
    "Notification",
    "ReceivedWebhook",
    "attempts_of",
    "backoff_delay",
    "count_due",
    "deliver_pending",
    "get_notification",
    "list_notifications",
    "queue_invoice_finalized",
    "retry",
    "run_receiver",
    "sign",
    "verify_signature",
    "webhook_body",
]

SIGNATURE_HEADER = "Billing-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"

# Rows claimed per transaction, and how long a claim holds before another deliverer may take the row again.
_BATCH = 10
_MIN_LEASE = dt.timedelta(minutes=10)


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


@dataclass
class DeliveryReport:
    """What ``deliver_pending`` did: notifications sent, to be retried, dead; channel attempts made."""

    sent: int = 0
    retrying: int = 0
    dead: int = 0
    attempts: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def processed(self) -> int:
        return self.sent + self.retrying + self.dead


def _to_notification(row: NotificationRow) -> Notification:
    return Notification(
        id=row.id,
        kind=row.kind,
        customer=row.customer_external_id,
        period=row.period,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=_utc(row.next_attempt_at),
        created_at=_utc(row.created_at),
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
        sent_at=None if row.sent_at is None else _utc(row.sent_at),
    )


# -- reading -----------------------------------------------------------------------------------------------


def list_notifications(
    engine: Engine, *, status: str | None = None, customer: str | None = None, limit: int | None = None
) -> list[Notification]:
    """Notifications, oldest first (a crossing's levels in order), optionally of one status and one customer."""
    if status is not None and status not in NOTIFICATION_STATUSES:
        raise BillingInputError(f"status: expected one of {', '.join(NOTIFICATION_STATUSES)}, got {status!r}")
    statement = select(NotificationRow).order_by(
        NotificationRow.created_at,
        NotificationRow.customer_external_id,
        NotificationRow.subscription_id,
        NotificationRow.threshold_key,
        NotificationRow.level,
        NotificationRow.id,
    )
    if status is not None:
        statement = statement.where(NotificationRow.status == status)
    if customer is not None:
        statement = statement.where(NotificationRow.customer_external_id == customer)
    if limit is not None:
        statement = statement.limit(limit)
    with _reading(engine) as session:
        return [_to_notification(row) for row in session.scalars(statement)]


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
            Attempt(r.channel, r.target, _utc(r.attempted_at), r.outcome, r.http_status, r.error, r.duration_ms)
            for r in session.scalars(statement)
        ]


# -- creating ----------------------------------------------------------------------------------------------


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

    now = _utcnow()
    rows: list[dict[str, Any]] = []
    for invoice in invoices:
        period = Period(invoice.period_start, invoice.period_end).label
        payload = {
            "customer": invoice.customer_id,
            "period": period,
            "invoice_number": invoice.number,
            "invoice": invoice_json(invoice),
            "created_at": now.isoformat(),
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
    statement = _insert(session, table).on_conflict_do_nothing().returning(table.c.id)
    inserted = set(session.connection().execute(statement, rows).scalars())
    return [row["id"] if row["id"] in inserted else None for row in rows]


def retry(engine: Engine, notification_id: str, *, now: dt.datetime | None = None) -> Notification:
    """Put a dead notification back to pending, due now, with a fresh count of attempts (its last error is kept
    until it is sent). Only a dead one: BillingInputError otherwise; NotFoundError if unknown."""
    moment = _utc(now) if now is not None else _utcnow()
    with session_scope(engine) as session:
        statement = _for_update(session, select(NotificationRow).where(NotificationRow.id == notification_id))
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


# -- signing -----------------------------------------------------------------------------------------------


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Billing-Signature`` header value: ``t=<timestamp>,v1=<HMAC-SHA256 of "<timestamp>.<body>" in hex>``."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: str, header: str | None, body: bytes | str, tolerance: int = 300, *, now: float | None = None
) -> bool:
    """Whether ``header`` (a ``Billing-Signature`` value) signs ``body`` (the raw request body, as received) with
    ``secret``, at a timestamp within ``tolerance`` seconds of now (which refuses replays of old requests).

    The reference for receivers::

        if not verify_signature(SECRET, request.headers["Billing-Signature"], request.body):
            return 400
        if seen(request.headers["Idempotency-Key"]):   # a retry of a notification already handled
            return 200
    """
    if not header:
        return False
    raw = body.encode() if isinstance(body, str) else body
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, raw, timestamp).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)


def webhook_body(notification: Notification) -> bytes:
    """The webhook's JSON body: ``id`` and ``kind``, then the payload fixed at creation (the same every attempt)."""
    document = {"id": notification.id, "kind": notification.kind, **notification.payload}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- delivering --------------------------------------------------------------------------------------------


def backoff_delay(attempt: int, base_seconds: int, max_seconds: int, rng: random.Random | None = None) -> dt.timedelta:
    """The wait after the ``attempt``-th failed round: base × 2^(attempt−1), capped, then a random point in the
    upper half of that (so retries of many notifications spread out rather than arrive together)."""
    ceiling_ms = min(max_seconds * 1000, base_seconds * 1000 * 2 ** max(0, attempt - 1))
    chosen = (rng or random).randint(ceiling_ms // 2, ceiling_ms) if ceiling_ms > 0 else 0
    return dt.timedelta(milliseconds=chosen)


class _DeliveryError(Exception):
    def __init__(self, message: str, http_status: int | None = None):
        super().__init__(message)
        self.http_status = http_status


@dataclass(frozen=True, slots=True)
class _Claimed:
    notification: Notification
    customer: Customer | None
    done: frozenset[str]


def deliver_pending(
    engine: Engine,
    settings: Settings,
    *,
    now: dt.datetime | None = None,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DeliveryReport:
    """Send every due pending notification (at most ``limit``) on its channels; see the module docstring.

    ``now`` fixes the clock that decides what is due and when a retry is due (tests, the scheduler); the
    signature's timestamp is always the real time. ``progress(done, total)`` follows the notifications.
    """
    report = DeliveryReport()
    fixed = None if now is None else _utc(now)

    def clock() -> dt.datetime:
        return fixed or _utcnow()

    total = count_due(engine, now=clock())
    if limit is not None:
        total = min(total, limit)
    lease = max(_MIN_LEASE, dt.timedelta(seconds=2 * _BATCH * settings.notification_timeout_seconds + 60))
    rng = random.Random()
    with httpx.Client(timeout=settings.notification_timeout_seconds, follow_redirects=False) as client:
        while limit is None or report.processed < limit:
            size = _BATCH if limit is None else min(_BATCH, limit - report.processed)
            claimed = _claim(engine, clock(), size, lease)
            if not claimed:
                break
            for item in claimed:
                _deliver_one(engine, settings, client, item, clock, rng, report)
                if progress is not None:
                    progress(report.processed, max(total, report.processed))
    return report


def count_due(engine: Engine, *, now: dt.datetime | None = None) -> int:
    """How many pending notifications are due."""
    moment = _utc(now) if now is not None else _utcnow()
    statement = select(func.count()).where(
        NotificationRow.status == "pending", NotificationRow.next_attempt_at <= moment
    )
    with _reading(engine) as session:
        return session.scalar(statement) or 0


def _claim(engine: Engine, now: dt.datetime, size: int, lease: dt.timedelta) -> list[_Claimed]:
    """Take up to ``size`` due rows: lock them (skipping rows another deliverer holds), push their due time a lease
    ahead and commit, so nobody else sends them while this deliverer does."""
    statement = (
        select(NotificationRow)
        .where(NotificationRow.status == "pending", NotificationRow.next_attempt_at <= now)
        .order_by(
            NotificationRow.next_attempt_at, NotificationRow.created_at, NotificationRow.level, NotificationRow.id
        )
        .limit(size)
    )
    with session_scope(engine) as session:
        if session.get_bind().dialect.name == "postgresql":
            statement = statement.with_for_update(skip_locked=True)
        rows = list(session.scalars(statement))
        if not rows:
            return []
        ids = [row.id for row in rows]
        session.execute(update(NotificationRow).where(NotificationRow.id.in_(ids)).values(next_attempt_at=now + lease))
        customers = repository.customers_by_external_id(session, {row.customer_external_id for row in rows})
        succeeded: dict[str, set[str]] = {}
        done = select(DeliveryAttemptRow.notification_id, DeliveryAttemptRow.channel).where(
            DeliveryAttemptRow.notification_id.in_(ids), DeliveryAttemptRow.outcome == "ok"
        )
        for notification_id, channel in session.execute(done):
            succeeded.setdefault(notification_id, set()).add(channel)
        return [
            _Claimed(
                _to_notification(row),
                customers.get(row.customer_external_id),
                frozenset(succeeded.get(row.id, ())),
            )
            for row in rows
        ]


def _channels(settings: Settings, customer: Customer | None) -> dict[str, str]:
    """Where a notification goes: channel → target (URL or address)."""
    channels: dict[str, str] = {}
    url = (customer.webhook_url if customer else None) or settings.notification_webhook_url
    if url:
        channels["webhook"] = url
    if customer is not None and customer.email and settings.smtp_host:
        channels["email"] = customer.email
    return channels


def _webhook_secret(settings: Settings, customer: Customer | None) -> str:
    """The secret of the endpoint ``_channels`` chose: the customer's own for its URL, the global one for the
    global URL. Raises ``_DeliveryError`` (never sent unsigned) when that endpoint has none."""
    if customer is not None and customer.webhook_url:
        if not customer.webhook_secret:
            raise _DeliveryError(
                f"customer {customer.external_id!r} has no webhook secret (created before per-endpoint secrets): "
                f"run `billing customers rotate-webhook-secret {customer.external_id}` and give the secret to its "
                "receiver; webhooks are never sent unsigned"
            )
        return customer.webhook_secret
    if not settings.notification_webhook_secret:
        raise _DeliveryError("notification_webhook_secret is not set: webhooks are never sent unsigned")
    return settings.notification_webhook_secret


def _deliver_one(
    engine: Engine,
    settings: Settings,
    client: httpx.Client,
    item: _Claimed,
    clock: Callable[[], dt.datetime],
    rng: random.Random,
    report: DeliveryReport,
) -> None:
    notification = item.notification
    channels = _channels(settings, item.customer)
    errors: list[str] = []
    if not channels:
        errors.append(
            "no delivery channel: no webhook URL (the customer's or notification_webhook_url) and no e-mail "
            "(the customer's address and smtp_host)"
        )
    for channel, target in channels.items():
        if channel in item.done:
            continue
        started = time.perf_counter()
        attempted_at = clock()
        status: int | None = None
        error: str | None = None
        try:
            if channel == "webhook":
                status = _send_webhook(client, _webhook_secret(settings, item.customer), notification, target)
            else:
                _send_email(engine, settings, notification, item.customer, target)
        except _DeliveryError as exc:
            error, status = str(exc), exc.http_status
        except Exception as exc:  # anything a channel raises is this attempt's failure, recorded like the others
            error = f"{type(exc).__name__}: {exc}"
        report.attempts += 1
        if error is not None:
            errors.append(f"{channel}: {error}")
        with session_scope(engine) as session:
            session.add(
                DeliveryAttemptRow(
                    notification_id=notification.id,
                    channel=channel,
                    target=target[:2048],
                    attempted_at=attempted_at,
                    outcome="ok" if error is None else "error",
                    http_status=status,
                    error=error,
                    duration_ms=int((time.perf_counter() - started) * 1000),
                )
            )
    _record_outcome(engine, settings, notification, errors, clock(), rng, report, bool(channels))


def _record_outcome(
    engine: Engine,
    settings: Settings,
    notification: Notification,
    errors: list[str],
    now: dt.datetime,
    rng: random.Random,
    report: DeliveryReport,
    has_channels: bool,
) -> None:
    pending = (NotificationRow.id == notification.id) & (NotificationRow.status == "pending")
    with session_scope(engine) as session:
        row = session.execute(_for_update(session, select(NotificationRow).where(pending))).scalar_one_or_none()
        if row is None:  # another deliverer finished it (after our lease ran out), or it was retried by hand
            return
        if not errors:
            row.status, row.sent_at = "sent", now
            report.sent += 1
            return
        row.attempts += 1
        row.last_error = "; ".join(errors)
        report.errors.append((notification.id, row.last_error))
        if not has_channels or row.attempts >= settings.notification_max_attempts:
            row.status = "dead"
            report.dead += 1
        else:
            delay = backoff_delay(
                row.attempts, settings.notification_backoff_base_seconds, settings.notification_backoff_max_seconds, rng
            )
            row.next_attempt_at = now + delay
            report.retrying += 1


def _send_webhook(client: httpx.Client, secret: str, notification: Notification, url: str) -> int:
    body = webhook_body(notification)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "billing-engine-notifications",
        IDEMPOTENCY_HEADER: notification.id,
        SIGNATURE_HEADER: sign(secret, body, int(time.time())),
    }
    try:
        response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise _DeliveryError(f"{type(exc).__name__}: {exc or 'no answer'}") from None
    if not 200 <= response.status_code < 300:
        text = response.text.strip().replace("\n", " ")[:200]
        raise _DeliveryError(f"HTTP {response.status_code}" + (f": {text}" if text else ""), response.status_code)
    return response.status_code


def _send_email(
    engine: Engine, settings: Settings, notification: Notification, customer: Customer | None, address: str
) -> None:
    message = _email(engine, settings, notification, customer, address)
    assert settings.smtp_host is not None
    timeout = settings.notification_timeout_seconds
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password or "")
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise _DeliveryError(f"SMTP {type(exc).__name__}: {exc}") from None


def _email(
    engine: Engine, settings: Settings, notification: Notification, customer: Customer | None, address: str
) -> EmailMessage:
    payload = notification.payload
    name = customer.name if customer else notification.customer
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = address
    message["Date"] = format_datetime(_utcnow())
    message["Message-ID"] = f"<{notification.id}@billing-engine>"
    message["X-Billing-Notification"] = f"{notification.kind} {notification.id}"
    if notification.kind == "invoice.finalized":
        from invoices import store
        from invoices.render import render_pdf

        assert notification.invoice_id is not None
        with _reading(engine) as session:
            invoice = store.get_invoice(session, notification.invoice_id)
        number = invoice.number or str(invoice.id)
        message["Subject"] = f"Invoice {number} for {notification.period}"
        due = f", due {invoice.due_date.isoformat()}" if invoice.due_date else ""
        message.set_content(
            f"Hello {name},\n\nplease find attached invoice {number} for {notification.period}: "
            f"{payload['invoice']['total']} {invoice.currency}{due}.\n"
        )
        message.add_attachment(render_pdf(invoice), maintype="application", subtype="pdf", filename=f"{number}.pdf")
        return message
    level, period = payload["level"], payload["period"]
    if notification.kind == "usage.threshold_crossed":
        what = payload.get("meter_name") or payload["meter"]
        unit = payload.get("unit") or "units"
        message["Subject"] = f"{what}: {level} % of your allowance reached ({period})"
        text = (
            f"your usage of {what} reached {level} % of your allowance for {period}: "
            f"{payload['value']} of {payload['limit']} {unit}."
        )
    else:
        currency = payload.get("currency") or ""
        message["Subject"] = f"Usage charges: {level} % of your spend cap reached ({period})"
        text = (
            f"your usage charges for {period} reached {level} % of your spend cap: "
            f"{payload['value']} of {payload['limit']} {currency}."
        )
    message.set_content(f"Hello {name},\n\n{text}\n")
    return message


# -- a receiver, for tests and the demo --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceivedWebhook:
    """One request a :func:`run_receiver` server got.

    Attributes:
      idempotency_key: the ``Idempotency-Key`` header.
      verified: whether the signature verified with the receiver's secret.
      duplicate: whether a request with this key was already accepted (a retry the receiver ignores).
      status: the HTTP status answered.
      body: the parsed JSON body (None if it was not JSON).
      raw: the body as received; headers: the request's headers.
    """

    idempotency_key: str | None
    verified: bool
    duplicate: bool
    status: int
    body: dict[str, Any] | None
    raw: bytes
    headers: Mapping[str, str]


def run_receiver(
    host: str, port: int, secret: str, *, fail_first: int = 0
) -> tuple[ThreadingHTTPServer, list[ReceivedWebhook]]:
    """Start a webhook receiver on ``host:port`` (0: any free port) in a background thread; returns the server
    (``server.server_address[1]`` is its port; ``server.shutdown()`` stops it) and the list it appends every
    request to. It answers 400 to a bad signature, 503 to the first ``fail_first`` good ones, then 200 — a repeat
    of an accepted Idempotency-Key is answered 200 and marked ``duplicate``: one logical notification per id."""
    received: list[ReceivedWebhook] = []
    accepted: set[str] = set()
    lock = threading.Lock()
    failures = [fail_first]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            key = self.headers.get(IDEMPOTENCY_HEADER)
            verified = verify_signature(secret, self.headers.get(SIGNATURE_HEADER), raw)
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            with lock:
                duplicate = key is not None and key in accepted
                if not verified:
                    status = 400
                elif failures[0] > 0 and not duplicate:
                    failures[0] -= 1
                    status = 503
                else:
                    status = 200
                    if key is not None:
                        accepted.add(key)
                received.append(ReceivedWebhook(key, verified, duplicate, status, body, raw, dict(self.headers)))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True).start()
    return server, received


# -- helpers -----------------------------------------------------------------------------------------------


def _insert(session: Session, model: Any) -> Any:
    module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return module.insert(model)


def _for_update(session: Session, statement: Any) -> Any:
    # SQLite has no row locks; its transactions begin IMMEDIATE and so already hold the write lock.
    return statement.with_for_update() if session.get_bind().dialect.name == "postgresql" else statement


def _reading(engine: Engine) -> Any:
    return session_scope(engine.execution_options(sqlite_begin="DEFERRED"))


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(instant: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they were stored in UTC.
    return instant.replace(tzinfo=dt.UTC) if instant.tzinfo is None else instant.astimezone(dt.UTC)
