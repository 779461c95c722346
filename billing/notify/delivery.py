"""Delivery: each due notification of the outbox sent, at least once, by signed webhook and by e-mail.

:func:`deliver_pending` claims due ``pending`` rows (``billing.notify.outbox``) and sends each on its channels,
outside any transaction:

- **webhook** — ``POST`` to the customer's ``webhook_url``, else the global ``notification_webhook_url``, with the
  JSON body ``{"id", "kind", "type", "timestamp", "customer", "period", ...}`` and the Standard Webhooks headers
  ``webhook-id: <id>`` (the same on every attempt), ``webhook-timestamp`` and ``webhook-signature``
  (``billing.notify.signing``: signed with that endpoint's secret, never sent unsigned). Any 2xx answer is a delivery.
- **e-mail** — over SMTP (``smtp_host``, ``smtp_port``, ``smtp_from``, optional ``smtp_username`` /
  ``smtp_password`` / ``smtp_starttls``) to the customer's address; ``invoice.finalized`` carries the invoice
  PDF, a credit alert (``credit.balance_low``, ``credit.balance_depleted``) says the balance and the level. The
  ``Message-ID`` is derived from the notification id, so a resent message is recognizably the same.

Every attempt on every channel is recorded, whatever happens. A round in which a channel fails counts one attempt
and is tried again after an exponential backoff with jitter (:func:`backoff_delay`: base
``notification_backoff_base_seconds``, doubling, capped at ``notification_backoff_max_seconds``, then a random
point in its upper half); channels that already succeeded are not sent again. After
``notification_max_attempts`` failed rounds the notification is ``dead`` with its last error
(``billing.notify.outbox.retry`` puts it back). A deliverer killed mid-send leaves the row pending, sent again when
its lease ends — the receiver sees the same webhook-id.

A notification with nowhere to go (no webhook URL, the customer's or ``notification_webhook_url``, and no e-mail:
the customer's address and ``smtp_host``) is not attempted and not counted as a failure: it stays ``pending`` with
the reason "no destination configured" and is delivered by the first run that has a destination for it (a fresh
install has none until one is configured; :func:`destination_warning` says so).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime

import httpx
from sqlalchemy import Engine

import dbkit
from billing.config import Settings
from billing.core.domain import Customer
from billing.db import session_scope
from billing.db.notification_tables import INTERNAL_KINDS
from billing.notify.outbox import (
    Attempt,
    Claimed,
    Destinations,
    Notification,
    RoundOutcome,
    claim_due,
    count_due,
    mark_waiting,
    record_attempt,
    settle_round,
)
from billing.notify.signing import MissingWebhookSecret, endpoint_secret, signed_headers

__all__ = [
    "DeliveryReport",
    "backoff_delay",
    "deliver_pending",
    "destination_warning",
    "destinations",
    "webhook_body",
]

# Rows claimed per transaction, and how long a claim holds before another deliverer may take the row again.
_BATCH = 10
_MIN_LEASE = dt.timedelta(minutes=10)



@dataclass
class DeliveryReport:
    """What ``deliver_pending`` did: notifications sent, to be retried, dead; channel attempts made; and how many
    due notifications wait, pending, for a destination (none attempted)."""

    sent: int = 0
    retrying: int = 0
    dead: int = 0
    attempts: int = 0
    waiting: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def processed(self) -> int:
        return self.sent + self.retrying + self.dead


class _DeliveryError(Exception):
    """A channel's refusal, with the HTTP status when there was one."""

    def __init__(self, message: str, http_status: int | None = None):
        super().__init__(message)
        self.http_status = http_status


def backoff_delay(attempt: int, base_seconds: int, max_seconds: int, rng: random.Random | None = None) -> dt.timedelta:
    """The wait after the ``attempt``-th failed round: base × 2^(attempt−1), capped, then a random point in the
    upper half of that (so retries of many notifications spread out rather than arrive together)."""
    ceiling_ms = min(max_seconds * 1000, base_seconds * 1000 * 2 ** max(0, attempt - 1))
    chosen = (rng or random).randint(ceiling_ms // 2, ceiling_ms) if ceiling_ms > 0 else 0
    return dt.timedelta(milliseconds=chosen)


def destinations(settings: Settings) -> Destinations:
    """Where notifications can go besides the customers' own webhook URLs, as configured."""
    return Destinations(webhook=bool(settings.notification_webhook_url), email=bool(settings.smtp_host))


def destination_warning(settings: Settings) -> str | None:
    """What to tell the operator while no notification destination is configured (None once one is)."""
    if settings.notification_webhook_url or settings.smtp_host:
        return None
    return (
        "no notification destination is configured (notification_webhook_url, smtp_host): notifications stay "
        "pending, marked \"no destination configured\", and are delivered once one is; only customers with a "
        "webhook_url of their own get theirs meanwhile"
    )


def webhook_body(notification: Notification) -> bytes:
    """The webhook's JSON body: ``id`` and ``kind``, the payload fixed at creation, and the Standard Webhooks
    payload fields ``type`` (the kind) and ``timestamp`` (when the notification was created, ``Z``); the same
    bytes every attempt. The payload's fields stay at the top level, where receivers read them, not under
    ``data``."""
    document = {
        "id": notification.id,
        "kind": notification.kind,
        **notification.payload,
        "type": notification.kind,
        "timestamp": dbkit.iso_instant(notification.created_at),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


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
    fixed = None if now is None else dbkit.as_utc(now)

    def clock() -> dt.datetime:
        return fixed or dbkit.utcnow()

    where = destinations(settings)
    report.waiting = mark_waiting(engine, clock(), where)
    total = count_due(engine, now=clock(), destinations=where)
    if limit is not None:
        total = min(total, limit)
    lease = max(_MIN_LEASE, dt.timedelta(seconds=2 * _BATCH * settings.notification_timeout_seconds + 60))
    rng = random.Random()
    client: httpx.Client | None = None  # made once there is something to send
    try:
        while limit is None or report.processed < limit:
            size = _BATCH if limit is None else min(_BATCH, limit - report.processed)
            claimed = claim_due(engine, clock(), size, lease, where)
            if not claimed:
                break
            if client is None:
                client = httpx.Client(
                    timeout=settings.notification_timeout_seconds, follow_redirects=False, verify=_tls()
                )
            for item in claimed:
                _deliver_one(engine, settings, client, item, clock, rng, report)
                if progress is not None:
                    progress(report.processed, max(total, report.processed))
    finally:
        if client is not None:
            client.close()
    return report


def _tls() -> ssl.SSLContext:
    """The webhooks' TLS context (httpx's own: the certificate authorities it trusts), made once per process:
    loading them costs about 50 ms of CPU, and the delivery runs after every threshold pass that crossed a level."""
    global _TLS_CONTEXT
    if _TLS_CONTEXT is None:
        _TLS_CONTEXT = httpx.create_ssl_context()
    return _TLS_CONTEXT


_TLS_CONTEXT: ssl.SSLContext | None = None


def _channels(settings: Settings, customer: Customer | None, kind: str = "") -> dict[str, str]:
    """Where a notification goes: channel → target (URL or address). A kind told to the business only (a
    customer at risk) goes to the global webhook, never to the customer."""
    if kind in INTERNAL_KINDS:
        return {"webhook": settings.notification_webhook_url} if settings.notification_webhook_url else {}
    channels: dict[str, str] = {}
    url = (customer.webhook_url if customer else None) or settings.notification_webhook_url
    if url:
        channels["webhook"] = url
    if customer is not None and customer.email and settings.smtp_host:
        channels["email"] = customer.email
    return channels


def _deliver_one(
    engine: Engine,
    settings: Settings,
    client: httpx.Client,
    item: Claimed,
    clock: Callable[[], dt.datetime],
    rng: random.Random,
    report: DeliveryReport,
) -> None:
    """One round for one notification: every channel not yet delivered on, each attempt recorded, then the
    round's outcome (sent, retried after a backoff, or dead)."""
    notification = item.notification
    channels = _channels(settings, item.customer, notification.kind)  # (claimed: it has one, unless changed since)
    errors: list[str] = []
    for channel, target in channels.items():
        if channel in item.done:
            continue
        attempt = _attempt(engine, settings, client, item, channel, target, clock)
        report.attempts += 1
        if attempt.error is not None:
            errors.append(f"{channel}: {attempt.error}")
        record_attempt(engine, notification.id, attempt)
    outcome = settle_round(
        engine,
        notification.id,
        errors,
        clock(),
        max_attempts=settings.notification_max_attempts,
        retry_delay=lambda failed: backoff_delay(
            failed, settings.notification_backoff_base_seconds, settings.notification_backoff_max_seconds, rng
        ),
        deliverable=bool(channels),
    )
    _count(report, notification.id, outcome, errors)


def _count(report: DeliveryReport, notification_id: str, outcome: RoundOutcome | None, errors: list[str]) -> None:
    """Add one settled round to the report; a round that failed reports its errors, whether retried or dead."""
    if outcome is None:  # no longer pending: settled by someone else
        return
    if outcome == "waiting":
        report.waiting += 1
        return
    if outcome == "sent":
        report.sent += 1
        return
    report.errors.append((notification_id, "; ".join(errors)))
    if outcome == "dead":
        report.dead += 1
    else:
        report.retrying += 1


def _attempt(
    engine: Engine,
    settings: Settings,
    client: httpx.Client,
    item: Claimed,
    channel: str,
    target: str,
    clock: Callable[[], dt.datetime],
) -> Attempt:
    """Send on one channel; whatever happens is the attempt's outcome (a channel's exception is its failure)."""
    started = time.perf_counter()
    attempted_at = clock()
    status: int | None = None
    error: str | None = None
    try:
        if channel == "webhook":
            status = _send_webhook(client, endpoint_secret(settings, item.customer), item.notification, target)
        else:
            _send_email(engine, settings, item.notification, item.customer, target)
    except _DeliveryError as exc:
        error, status = str(exc), exc.http_status
    except MissingWebhookSecret as exc:
        error = str(exc)
    except Exception as exc:  # anything a channel raises is this attempt's failure, recorded like the others
        error = f"{type(exc).__name__}: {exc}"
    duration_ms = int((time.perf_counter() - started) * 1000)
    outcome = "ok" if error is None else "error"
    return Attempt(channel, target, attempted_at, outcome, status, error, duration_ms)


def _send_webhook(client: httpx.Client, secret: str, notification: Notification, url: str) -> int:
    body = webhook_body(notification)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "billing-engine-notifications",
        **signed_headers(secret, notification.id, body, int(time.time())),
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
    """The message for one notification: its headers, then the invoice's or the alert's text."""
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = address
    message["Date"] = format_datetime(dbkit.utcnow())
    message["Message-ID"] = f"<{notification.id}@billing-engine>"
    message["X-Billing-Notification"] = f"{notification.kind} {notification.id}"
    name = customer.name if customer else notification.customer
    if notification.kind == "invoice.finalized":
        _invoice_email(engine, message, notification, name)
    elif notification.kind.startswith("credit."):
        _credit_email(message, notification, name)
    else:
        _alert_email(message, notification, name)
    return message


def _credit_email(message: EmailMessage, notification: Notification, name: str) -> None:
    """A credit alert's e-mail: the credit fell below its low-balance level, or is used up."""
    payload = notification.payload
    currency, balance = payload["currency"], payload["balance"]
    if notification.kind == "credit.balance_low":
        message["Subject"] = f"Your credit balance is below {payload['level']} {currency}"
        text = f"your credit balance is {balance} {currency}, below {payload['level']} {currency}."
    else:
        message["Subject"] = f"Your credit balance ({currency}) is used up"
        text = f"your credit balance is {balance} {currency}: the next invoices are charged in full."
    message.set_content(f"Hello {name},\n\n{text}\n")


def _invoice_email(engine: Engine, message: EmailMessage, notification: Notification, name: str) -> None:
    """An issued invoice's e-mail, with its PDF (rendered now, from the stored invoice, with the credits applied to
    it and the payments received: its amount due is the one the API and the CLI show)."""
    from billing.credits import with_credits  # (the credits queue this notification: imported when used)
    from billing.invoicing import printable  # imported late: invoicing queues notifications
    from invoices import store
    from invoices.render import render_pdf

    assert notification.invoice_id is not None
    with session_scope(dbkit.read_only(engine)) as session:
        invoice = with_credits(session, [store.get_invoice(session, notification.invoice_id)])[0]
    invoice = printable(engine, invoice)
    number = invoice.number or str(invoice.id)
    message["Subject"] = f"Invoice {number} for {notification.period}"
    due = f", due {invoice.due_date.isoformat()}" if invoice.due_date else ""
    message.set_content(
        f"Hello {name},\n\nplease find attached invoice {number} for {notification.period}: "
        f"{notification.payload['invoice']['total']} {invoice.currency}{due}.\n"
    )
    message.add_attachment(render_pdf(invoice), maintype="application", subtype="pdf", filename=f"{number}.pdf")


def _alert_email(message: EmailMessage, notification: Notification, name: str) -> None:
    """A usage or spend alert's e-mail: which level of which allowance or cap was reached."""
    payload = notification.payload
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
