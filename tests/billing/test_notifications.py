"""Notifications against real peers on 127.0.0.1 started by the tests — an HTTP receiver that checks signatures
and an SMTP server (aiosmtpd) — and real processes: signing, retries with backoff, dead and retried, the invoice
e-mail with its PDF, concurrent threshold checks and deliverers, and a process killed before or while sending.
Every database test runs on SQLite and, when configured, PostgreSQL."""

from __future__ import annotations

import datetime as dt
import email
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import func, select

from billing import credits
from billing import customers as service
from billing.config import Settings
from billing.core.periods import month
from billing.db import repository, session_scope
from billing.db.notification_tables import DeliveryAttemptRow, NotificationRow
from billing.demo.receiver import run_receiver
from billing.errors import BillingInputError, NotFoundError
from billing.metering import meter_specs
from billing.notify import (
    NO_DESTINATION,
    SIGNATURE_HEADER,
    attempts_of,
    backoff_delay,
    deliver_pending,
    get_notification,
    list_notifications,
    queue_invoice_finalized,
    retry,
    sign,
    verify_signature,
    webhook_body,
)
from billing.run import finalize_period, run_billing
from billing.thresholds import check_thresholds
from invoices import store
from meters import ingest
from pricing_plans.loader import loads_catalog

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_dGVzdC1zZWNyZXQtMDEyMzQ1Njc4OQ=="  # Standard Webhooks: whsec_ and base64
MARCH_NOW = dt.datetime(2026, 3, 20, 12, tzinfo=dt.UTC)

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
unit = "call"

[plans.calls]
name = "Calls"
currency = "USD"
[[plans.calls.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.01
[[plans.calls.thresholds]]
meter = "api_calls"
allowance = 1000
"""


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "notifications.toml")
    assert not problems, problems
    return loaded


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    return path


@pytest.fixture
def receiver():
    """A webhook receiver on a free port; yields (url, requests received), stopped after the test."""
    servers = []

    def start(secret: str = SECRET, port: int = 0, fail_first: int = 0):
        server, received = run_receiver("127.0.0.1", port, secret, fail_first=fail_first)
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/hooks", received

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class Mailbox:
    """An aiosmtpd handler keeping every message received."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@pytest.fixture
def smtp_server():
    """A real SMTP server on 127.0.0.1 and a free port; yields (port, mailbox)."""
    from aiosmtpd.controller import Controller

    controllers = []

    def start(port: int | None = None):
        mailbox = Mailbox()
        controller = Controller(mailbox, hostname="127.0.0.1", port=port or free_port())
        controller.start()
        controllers.append(controller)
        return controller.port, mailbox

    yield start
    for controller in controllers:
        controller.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def settings(**overrides) -> Settings:
    values = {
        "notification_webhook_url": None,
        "notification_webhook_secret": SECRET,
        "notification_timeout_seconds": 5,
        "smtp_host": None,
        "smtp_from": "billing@northwind.example",
    }
    return Settings(**{**values, **overrides})


def add_customer(engine, catalog, who="acme", *, email=None, webhook_url=None, start=dt.date(2026, 1, 1)):
    service.create_customer(engine, who, who.title(), email, "USD", timezone="UTC", webhook_url=webhook_url)
    return service.subscribe(engine, catalog, who, "calls", start)


def use(engine, catalog, who, n, prefix, *, when="2026-03-05T10:00:00Z", now=MARCH_NOW):
    events = [{"id": f"{prefix}-{i}", "customer": who, "meter": "api_calls", "timestamp": when} for i in range(n)]
    assert not ingest(engine, events, meter_specs(catalog), {who}, now=now).rejected


def crossing(engine, catalog, who="acme", levels=1, **customer):
    """A customer whose usage crossed 80 % (levels=1) or 80 and 100 % (levels=2) of 1000 calls: the ids."""
    add_customer(engine, catalog, who, **customer)
    use(engine, catalog, who, 800 if levels == 1 else 1000, who)
    created = check_thresholds(engine, catalog, customers={who}, now=MARCH_NOW).created
    assert len(created) == levels
    return [c.notification_id for c in created]


def env_for(db_url: str, catalog_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "BILLING_DATABASE_URL": db_url,
        "BILLING_CATALOG": str(catalog_path),
        "BILLING_CONFIG": str(ROOT / "config.toml"),
        **extra,
    }


# -- signing (pure) ------------------------------------------------------------------------------------------


def test_a_signature_verifies_with_the_secret_only():
    body = b'{"id":"n1","kind":"usage.threshold_crossed"}'
    now = 1_774_000_000
    header = sign(SECRET, body, now)
    assert header.startswith(f"t={now},v1=") and len(header.rpartition("v1=")[2]) == 64
    assert verify_signature(SECRET, header, body, now=now)
    assert verify_signature(SECRET, header, body.decode(), now=now + 300)
    assert not verify_signature("whsec_other", header, body, now=now)  # a bad secret does not verify
    assert not verify_signature(SECRET, header, body + b" ", now=now)  # nor a changed body
    assert not verify_signature(SECRET, header, body, now=now + 301)  # nor an old request (replay)
    assert not verify_signature(SECRET, None, body, now=now)
    assert not verify_signature(SECRET, "v1=abc", body, now=now)
    assert not verify_signature(SECRET, f"t={now}", body, now=now)
    # several v1 signatures (a rotated secret): one that matches is enough
    assert verify_signature(SECRET, f"t={now},v1={'0' * 64},{header.split(',')[1]}", body, now=now)


def test_backoff_doubles_from_the_base_up_to_the_cap_with_jitter_in_the_upper_half():
    rng = random.Random(7)
    for attempt, ceiling in [(1, 30), (2, 60), (3, 120), (6, 960), (9, 3600), (20, 3600)]:
        for _ in range(50):
            delay = backoff_delay(attempt, 30, 3600, rng)
            assert dt.timedelta(seconds=ceiling / 2) <= delay <= dt.timedelta(seconds=ceiling)
    assert len({backoff_delay(3, 30, 3600, rng) for _ in range(20)}) > 1
    assert backoff_delay(1, 0, 0, rng) == dt.timedelta(0)


# -- webhooks -----------------------------------------------------------------------------------------------


def test_a_crossing_is_delivered_signed_with_its_id_as_idempotency_key(engine, catalog, receiver):
    url, received = receiver()
    [notification_id] = crossing(engine, catalog)
    report = deliver_pending(engine, settings(notification_webhook_url=url))
    assert (report.sent, report.retrying, report.dead, report.attempts) == (1, 0, 0, 1)

    [request] = received
    assert request.verified and request.status == 200
    assert request.idempotency_key == notification_id
    assert request.raw == webhook_body(get_notification(engine, notification_id))
    body = request.body
    assert {k: body[k] for k in ("id", "kind", "customer", "period", "meter", "level", "value", "limit")} == {
        "id": notification_id,
        "kind": "usage.threshold_crossed",
        "customer": "acme",
        "period": "2026-03",
        "meter": "api_calls",
        "level": 80,
        "value": "800",
        "limit": "1000",
    }
    assert body["unit"] == "call" and body["level_value"] == "800" and body["threshold"] == "usage:api_calls"

    sent = get_notification(engine, notification_id)
    assert sent.status == "sent" and sent.sent_at is not None and sent.attempts == 0
    [attempt] = attempts_of(engine, notification_id)
    assert (attempt.channel, attempt.target, attempt.outcome, attempt.http_status) == ("webhook", url, "ok", 200)
    assert deliver_pending(engine, settings(notification_webhook_url=url)).processed == 0  # nothing left to send


def test_a_receiver_with_another_secret_refuses_and_the_notification_stays_pending(engine, catalog, receiver):
    url, received = receiver(secret="whsec_not_the_same")
    [notification_id] = crossing(engine, catalog)
    start = dt.datetime.now(dt.UTC)
    report = deliver_pending(engine, settings(notification_webhook_url=url), now=start)
    assert (report.sent, report.retrying) == (0, 1)
    assert [r.verified for r in received] == [False]
    pending = get_notification(engine, notification_id)
    assert pending.status == "pending" and pending.attempts == 1 and "HTTP 400" in pending.last_error
    assert start + dt.timedelta(seconds=15) <= pending.next_attempt_at <= start + dt.timedelta(seconds=30)


def own_endpoint(engine, catalog, receiver, who):
    """A customer with a webhook URL of its own, its receiver verifying with the customer's secret: (secret, the
    requests received)."""
    port = free_port()
    crossing(engine, catalog, who, webhook_url=f"http://127.0.0.1:{port}/hooks")
    secret = service.get_customer(engine, who).webhook_secret
    _, received = receiver(secret=secret, port=port)
    return secret, received


def test_the_customers_own_url_wins_over_the_global_one(engine, catalog, receiver):
    _, own = own_endpoint(engine, catalog, receiver, "acme")
    global_url, shared = receiver()
    crossing(engine, catalog, "beta")
    assert deliver_pending(engine, settings(notification_webhook_url=global_url)).sent == 2
    assert [(r.body["customer"], r.verified) for r in own] == [("acme", True)]
    assert [(r.body["customer"], r.verified) for r in shared] == [("beta", True)]


def test_each_endpoint_verifies_with_its_own_secret_only(engine, catalog, receiver):
    """No customer can forge what another customer's endpoint (or the global one) accepts: each endpoint's
    webhooks verify with its own secret and with no other."""
    acme_secret, acme = own_endpoint(engine, catalog, receiver, "acme")
    globex_secret, globex = own_endpoint(engine, catalog, receiver, "globex")
    global_url, shared = receiver()  # verifies with the global SECRET
    crossing(engine, catalog, "beta")  # no URL of its own: the global endpoint
    assert len({acme_secret, globex_secret, SECRET}) == 3
    assert deliver_pending(engine, settings(notification_webhook_url=global_url)).sent == 3

    [to_acme], [to_globex], [to_global] = acme, globex, shared
    assert (to_acme.body["customer"], to_globex.body["customer"], to_global.body["customer"]) == (
        "acme", "globex", "beta"
    )
    secrets = {"acme": acme_secret, "globex": globex_secret, "global": SECRET}
    for request, own in ((to_acme, "acme"), (to_globex, "globex"), (to_global, "global")):
        assert request.verified and request.status == 200
        header = request.headers[SIGNATURE_HEADER]
        verifies = {name for name, secret in secrets.items() if verify_signature(secret, header, request.raw)}
        assert verifies == {own}
    # a request signed with another customer's secret (or the global one) is refused by acme's endpoint
    forged_body = to_acme.raw
    for secret in (globex_secret, SECRET):
        assert not verify_signature(acme_secret, sign(secret, forged_body, int(time.time())), forged_body)


def test_a_customer_url_without_a_secret_is_never_sent_unsigned_and_a_rotated_secret_delivers(
    engine, catalog, receiver
):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks"
    with session_scope(engine) as session:  # a customer from before per-endpoint secrets: a URL, no secret
        repository.add_customer(
            session, external_id="old", name="Old", email=None, currency="USD", timezone="UTC", locale="en_US",
            webhook_url=url,
        )
    service.subscribe(engine, catalog, "old", "calls", dt.date(2026, 1, 1))
    use(engine, catalog, "old", 800, "old")
    [created] = check_thresholds(engine, catalog, customers={"old"}, now=MARCH_NOW).created
    server, received = run_receiver("127.0.0.1", port, "whsec_nobody_knows")  # records whatever it is sent
    try:
        t0 = dt.datetime.now(dt.UTC)
        report = deliver_pending(engine, settings(), now=t0)  # the global secret is set: it is not used here
    finally:
        server.shutdown()
        server.server_close()
    assert (report.sent, report.retrying) == (0, 1) and received == []  # nothing sent, not even unsigned
    pending = get_notification(engine, created.notification_id)
    assert pending.status == "pending"
    assert "customer 'old' has no webhook secret" in pending.last_error
    assert "billing customers rotate-webhook-secret old" in pending.last_error
    [attempt] = attempts_of(engine, created.notification_id)
    assert (attempt.channel, attempt.target, attempt.outcome) == ("webhook", url, "error")

    secret = service.rotate_webhook_secret(engine, "old").webhook_secret
    _, received = receiver(secret=secret, port=port)  # the receiver now holds the rotated secret
    assert deliver_pending(engine, settings(), now=t0 + dt.timedelta(hours=1)).sent == 1  # the retry
    [request] = received
    assert request.verified and request.idempotency_key == created.notification_id
    assert not verify_signature(SECRET, request.headers[SIGNATURE_HEADER], request.raw)


def test_receiver_down_then_up_delivers_with_the_same_key_on_every_attempt(engine, catalog, receiver):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks"
    first, second = crossing(engine, catalog, levels=2)
    t0 = dt.datetime.now(dt.UTC)
    down = deliver_pending(engine, settings(notification_webhook_url=url), now=t0)
    assert (down.sent, down.retrying) == (0, 2)
    assert "ConnectError" in get_notification(engine, first).last_error

    _, received = receiver(port=port, fail_first=1)  # up, but the first request fails with 503
    assert deliver_pending(engine, settings(notification_webhook_url=url), now=t0).processed == 0  # not due yet
    later = deliver_pending(engine, settings(notification_webhook_url=url), now=t0 + dt.timedelta(minutes=1))
    assert (later.sent, later.retrying) == (1, 1)
    last = deliver_pending(engine, settings(notification_webhook_url=url), now=t0 + dt.timedelta(minutes=5))
    assert (last.sent, last.retrying) == (1, 0)

    statuses = {key: [r.status for r in received if r.idempotency_key == key] for key in (first, second)}
    assert sorted(statuses.values()) == [[200], [503, 200]] and len(received) == 3
    assert all(r.verified for r in received)
    for notification_id in (first, second):
        assert get_notification(engine, notification_id).status == "sent"
        attempts = attempts_of(engine, notification_id)
        assert attempts[0].outcome == "error" and "ConnectError" in attempts[0].error
        assert attempts[0].http_status is None
        assert attempts[-1].outcome == "ok" and attempts[-1].http_status == 200
        assert all(a.outcome == "error" for a in attempts[:-1])
    # one logical notification per id: the receiver accepted each key once
    accepted = [r.idempotency_key for r in received if r.status == 200]
    assert sorted(accepted) == sorted([first, second])


def test_after_max_attempts_it_is_dead_with_its_last_error_and_retry_delivers_it(engine, catalog, receiver):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks"
    config = settings(notification_webhook_url=url, notification_max_attempts=3)
    [notification_id] = crossing(engine, catalog)
    t0 = dt.datetime.now(dt.UTC)
    outcomes = [deliver_pending(engine, config, now=t0 + dt.timedelta(hours=h)) for h in (0, 1, 2, 3)]
    assert [(o.retrying, o.dead) for o in outcomes] == [(1, 0), (1, 0), (0, 1), (0, 0)]
    dead = get_notification(engine, notification_id)
    assert dead.status == "dead" and dead.attempts == 3 and "ConnectError" in dead.last_error
    assert [n.id for n in list_notifications(engine, status="dead")] == [notification_id]
    assert len(attempts_of(engine, notification_id)) == 3

    retried = retry(engine, notification_id)
    assert (retried.status, retried.attempts, retried.last_error) == ("pending", 0, dead.last_error)
    with pytest.raises(BillingInputError, match="is pending; only a dead one can be retried"):
        retry(engine, notification_id)
    _, received = receiver(port=port)
    assert deliver_pending(engine, config).sent == 1
    sent = get_notification(engine, notification_id)
    assert sent.status == "sent" and sent.attempts == 0
    assert [r.idempotency_key for r in received] == [notification_id]
    assert len(attempts_of(engine, notification_id)) == 4
    with pytest.raises(BillingInputError, match="is sent"):
        retry(engine, notification_id)
    with pytest.raises(NotFoundError):
        retry(engine, "no-such-id")


def test_without_a_destination_a_notification_waits_pending_and_is_delivered_once_one_is_configured(
    engine, catalog, receiver
):
    """No webhook URL and no e-mail for it: not attempted, not a failure, never dead; pending with the reason, as
    long as it takes; a customer with its own URL gets its notification meanwhile; the first delivery with a
    destination sends it."""
    waiting = crossing(engine, catalog, "acme", levels=2)
    _, own = own_endpoint(engine, catalog, receiver, "beta")
    t0 = dt.datetime.now(dt.UTC)
    for hours in (0, 1, 24, 24 * 30):  # far beyond every retry and the maximum of attempts
        report = deliver_pending(engine, settings(notification_max_attempts=1), now=t0 + dt.timedelta(hours=hours))
        assert (report.sent, report.retrying, report.dead, report.attempts, report.waiting, report.errors) == (
            1 if hours == 0 else 0, 0, 0, 1 if hours == 0 else 0, 2, []
        )
    # an SMTP server is no destination for a customer without an e-mail address
    report = deliver_pending(engine, settings(smtp_host="127.0.0.1", smtp_port=free_port()), now=t0)
    assert (report.processed, report.attempts, report.waiting) == (0, 0, 2)
    assert [(r.body["customer"], r.verified) for r in own] == [("beta", True)]
    for notification_id in waiting:
        pending = get_notification(engine, notification_id)
        assert (pending.status, pending.attempts, pending.last_error) == ("pending", 0, NO_DESTINATION)
        assert pending.next_attempt_at <= t0 and attempts_of(engine, notification_id) == []
    assert [(n.customer, n.status, n.last_error) for n in list_notifications(engine, status="pending")] == [
        ("acme", "pending", "no destination configured"), ("acme", "pending", "no destination configured")
    ]

    url, received = receiver()
    report = deliver_pending(engine, settings(notification_webhook_url=url, notification_max_attempts=1))
    assert (report.sent, report.retrying, report.dead, report.attempts, report.waiting) == (2, 0, 0, 2, 0)
    assert sorted((r.idempotency_key, r.body["level"], r.verified) for r in received) == sorted(
        zip(waiting, (80, 100), (True, True), strict=True)
    )
    for notification_id in waiting:
        sent = get_notification(engine, notification_id)
        assert (sent.status, sent.attempts, sent.last_error) == ("sent", 0, None)


def test_a_customers_e_mail_address_is_a_destination_once_smtp_is_configured(engine, catalog, smtp_server):
    [notification_id] = crossing(engine, catalog, "acme", email="ap@acme.test")
    assert deliver_pending(engine, settings()).waiting == 1
    port, mailbox = smtp_server()
    report = deliver_pending(engine, settings(smtp_host="127.0.0.1", smtp_port=port))
    assert (report.sent, report.waiting) == (1, 0)
    [message] = mailbox.messages
    assert message["To"] == "ap@acme.test" and message["Message-ID"] == f"<{notification_id}@billing-engine>"
    assert get_notification(engine, notification_id).status == "sent"


def test_a_webhook_is_never_sent_unsigned(engine, catalog, receiver):
    url, received = receiver()
    [notification_id] = crossing(engine, catalog)
    report = deliver_pending(engine, settings(notification_webhook_url=url, notification_webhook_secret=None))
    assert report.retrying == 1 and received == []
    assert "notification_webhook_secret is not set" in get_notification(engine, notification_id).last_error


# -- e-mail -------------------------------------------------------------------------------------------------


def finalized_invoice(engine, catalog):
    run_billing(engine, catalog, month(2026, 3))
    finalize_period(engine, month(2026, 3), store.FinalizeSettings(), dt.date(2026, 4, 1))
    with session_scope(engine) as session:
        return store.get_invoice(session, "period:acme:2026-03")


def test_the_finalized_invoice_is_mailed_with_its_pdf_and_posted_as_json(engine, catalog, receiver, smtp_server):
    url, received = receiver()
    port, mailbox = smtp_server()
    add_customer(engine, catalog, "acme", email="ap@acme.test")
    use(engine, catalog, "acme", 250, "a")
    invoice = finalized_invoice(engine, catalog)
    assert invoice.number and str(invoice.total) == "2.50"
    # finalizing queued the invoice.finalized notification in the same transaction
    [queued] = [n for n in list_notifications(engine) if n.kind == "invoice.finalized"]
    notification_id = queued.id
    assert queued.invoice_id == invoice.id
    with session_scope(engine) as session:
        assert queue_invoice_finalized(session, invoice) is None  # once per invoice

    report = deliver_pending(engine, settings(notification_webhook_url=url, smtp_host="127.0.0.1", smtp_port=port))
    assert (report.sent, report.attempts) == (1, 2)

    [(sender, recipients)] = mailbox.envelopes
    assert (sender, recipients) == ("billing@northwind.example", ["ap@acme.test"])
    [message] = mailbox.messages
    assert message["Subject"] == f"Invoice {invoice.number} for 2026-03"
    assert message["Message-ID"] == f"<{notification_id}@billing-engine>"
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == f"{invoice.number}.pdf"
    assert attachment.get_content().startswith(b"%PDF")
    assert "2.50 USD" in message.get_body(("plain",)).get_content()

    [request] = received
    assert request.verified and request.idempotency_key == notification_id
    assert request.body["kind"] == "invoice.finalized" and request.body["period"] == "2026-03"
    assert request.body["invoice"]["number"] == invoice.number
    assert request.body["invoice"]["total"] == "2.50"
    assert {a.channel for a in attempts_of(engine, notification_id)} == {"webhook", "email"}


def test_the_mailed_pdf_shows_the_amount_due_after_the_credits_applied(engine, catalog, smtp_server, tmp_path):
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    port, mailbox = smtp_server()
    add_customer(engine, catalog, "acme", email="ap@acme.test")
    use(engine, catalog, "acme", 250, "a")
    credits.grant_credit(engine, "acme", Decimal("1.00"), "USD", now=dt.datetime(2026, 3, 6, tzinfo=dt.UTC))
    finalized_invoice(engine, catalog)  # 2.50, of which the credit pays 1.00: 1.50 due
    deliver_pending(engine, settings(smtp_host="127.0.0.1", smtp_port=port))
    [message] = [m for m in mailbox.messages if m["Subject"].startswith("Invoice ")]  # (besides the credit's alert)
    [attachment] = list(message.iter_attachments())
    (tmp_path / "invoice.pdf").write_bytes(attachment.get_content())
    text = subprocess.run(
        ["pdftotext", "-layout", str(tmp_path / "invoice.pdf"), "-"], capture_output=True, text=True, check=True
    ).stdout
    lines = [" ".join(line.split()) for line in text.splitlines()]
    # (the totals column stands beside how to pay: a line may begin with the bank's details)
    assert any(line.endswith("Amount due $1.50") for line in lines)
    assert any(line.endswith("Total $2.50") for line in lines) and "$2.50 by" not in text


def test_a_threshold_e_mail_and_a_channel_that_already_succeeded_is_not_sent_again(
    engine, catalog, receiver, smtp_server
):
    url, received = receiver()
    port = free_port()  # the SMTP server is down at first
    config = settings(notification_webhook_url=url, smtp_host="127.0.0.1", smtp_port=port)
    [notification_id] = crossing(engine, catalog, email="ops@acme.test")
    t0 = dt.datetime.now(dt.UTC)
    first = deliver_pending(engine, config, now=t0)
    assert (first.sent, first.retrying) == (0, 1)
    pending = get_notification(engine, notification_id)
    assert pending.last_error.startswith("email: SMTP") and len(received) == 1

    _, mailbox = smtp_server(port)
    assert deliver_pending(engine, config, now=t0 + dt.timedelta(hours=1)).sent == 1
    assert len(received) == 1  # the webhook had succeeded: not sent again
    [message] = mailbox.messages
    assert message["Subject"] == "API calls: 80 % of your allowance reached (2026-03)"
    assert "800 of 1000 call" in message.get_body(("plain",)).get_content()
    assert [(a.channel, a.outcome) for a in attempts_of(engine, notification_id)] == [
        ("webhook", "ok"), ("email", "error"), ("email", "ok"),
    ]


# -- processes ----------------------------------------------------------------------------------------------

CHECK_SCRIPT = textwrap.dedent(
    """
    import datetime as dt, json, sys, time
    from pathlib import Path
    from billing.db import make_engine
    from billing.metering import meter_specs
    from billing.thresholds import check_thresholds
    from meters import ingest
    from pricing_plans.loader import load_catalog_or_raise

    url, catalog_path, tag, go, count = sys.argv[1:]
    engine = make_engine(url)
    catalog = load_catalog_or_raise(catalog_path)
    now = dt.datetime(2026, 3, 20, 12, tzinfo=dt.UTC)
    customers = [f"c{i:02d}" for i in range(int(count))]
    while not Path(go).exists():
        time.sleep(0.001)
    created = []
    for c in customers:
        events = [{"id": f"{tag}-{c}-{i}", "customer": c, "meter": "api_calls", "timestamp": "2026-03-05T10:00:00Z"}
                  for i in range(600)]
        assert not ingest(engine, events, meter_specs(catalog), {c}, now=now).rejected
        created += [x.notification_id for x in check_thresholds(engine, catalog, customers={c}, now=now).created]
    created += [x.notification_id for x in check_thresholds(engine, catalog, now=now).created]
    print(json.dumps(created))
    """
)


def test_two_processes_ingesting_crossing_batches_at_once_create_each_notification_once(
    engine, catalog, db_url, catalog_path, tmp_path
):
    customers = [f"c{i:02d}" for i in range(12)]
    for who in customers:
        add_customer(engine, catalog, who)
    script = tmp_path / "check.py"
    script.write_text(CHECK_SCRIPT, encoding="utf-8")
    go = tmp_path / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), db_url, str(catalog_path), tag, str(go), str(len(customers))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        )
        for tag in ("p1", "p2")
    ]
    time.sleep(1.0)  # both started and waiting
    go.touch()
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    created = [json.loads(stdout) for stdout, _ in outputs]

    # 600 + 600 = 1200 calls of 1000 for every customer: 80 and 100 % each, created once, by one process or the other
    with session_scope(engine) as session:
        keys = session.execute(
            select(NotificationRow.customer_external_id, NotificationRow.level, NotificationRow.id)
        ).all()
    assert sorted((c, lv) for c, lv, _ in keys) == sorted((c, lv) for c in customers for lv in (80, 100))
    assert not set(created[0]) & set(created[1])
    assert sorted(created[0] + created[1]) == sorted(i for _, _, i in keys)


DELIVER_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from billing.config import Settings
    from billing.db import make_engine
    from billing.notify import deliver_pending

    url, hook, secret, go = sys.argv[1:]
    engine = make_engine(url)
    while not Path(go).exists():
        time.sleep(0.001)
    report = deliver_pending(engine, Settings(notification_webhook_url=hook, notification_webhook_secret=secret))
    print(json.dumps({"sent": report.sent, "attempts": report.attempts}))
    """
)


def test_two_deliverers_at_once_never_send_the_same_notification(engine, catalog, db_url, receiver, tmp_path):
    url, received = receiver()
    ids = [i for n in range(15) for i in crossing(engine, catalog, f"c{n:02d}", levels=2)]
    script = tmp_path / "deliver.py"
    script.write_text(DELIVER_SCRIPT, encoding="utf-8")
    go = tmp_path / "go"
    processes = [
        subprocess.Popen([sys.executable, str(script), db_url, url, SECRET, str(go)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        for _ in range(2)
    ]
    time.sleep(1.0)
    go.touch()
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    reports = [json.loads(stdout) for stdout, _ in outputs]
    assert sum(r["sent"] for r in reports) == len(ids) == 30
    assert sorted(r.idempotency_key for r in received) == sorted(ids)  # each exactly once
    assert not any(r.duplicate for r in received)


KILL_SCRIPT = textwrap.dedent(
    """
    import datetime as dt, sys, time
    from billing.config import get_settings
    from billing.db import make_engine
    from billing.notify import deliver_pending
    from billing.thresholds import check_thresholds
    from pricing_plans.loader import load_catalog_or_raise

    settings = get_settings()
    engine = make_engine(settings.database_url)
    catalog = load_catalog_or_raise(settings.catalog)
    if sys.argv[1] == "create":
        report = check_thresholds(engine, catalog, now=dt.datetime(2026, 3, 20, 12, tzinfo=dt.UTC))
        print(len(report.created), flush=True)
        time.sleep(600)  # killed here: created, not delivered
    deliver_pending(engine, settings)
    """
)


def test_a_process_killed_between_creating_and_delivering_loses_nothing(
    engine, catalog, db_url, catalog_path, receiver, tmp_path
):
    url, received = receiver()
    add_customer(engine, catalog, "acme")
    use(engine, catalog, "acme", 1000, "a")
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT, encoding="utf-8")
    env = env_for(db_url, catalog_path, BILLING_NOTIFICATION_WEBHOOK_URL=url, BILLING_NOTIFICATION_WEBHOOK_SECRET=SECRET)
    process = subprocess.Popen([sys.executable, str(script), "create"], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "2"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert [n.status for n in list_notifications(engine)] == ["pending", "pending"] and received == []

    deliver = subprocess.run([sys.executable, "-m", "billing.cli", "notifications", "deliver"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert deliver.returncode == 0, deliver.stderr
    assert "sent 2, to retry 0, dead 0" in deliver.stdout
    assert [n.status for n in list_notifications(engine)] == ["sent", "sent"]
    assert sorted(r.body["level"] for r in received) == [80, 100] and all(r.verified for r in received)


def billing_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "billing.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


NO_DESTINATION_WARNING = "warning: no notification destination is configured (notification_webhook_url, smtp_host)"


def test_with_nowhere_to_send_deliver_warns_and_the_invoices_notifications_wait_for_a_destination(
    engine, catalog, db_url, catalog_path, receiver, tmp_path
):
    """A fresh install (config.toml: no webhook URL, no SMTP) with two issued invoices: `notifications deliver`
    warns, exits 0, attempts nothing and kills nothing; `notifications list` gives the reason; once a webhook URL
    is configured, the next `deliver` sends both, without a warning."""
    add_customer(engine, catalog, "acme")
    add_customer(engine, catalog, "beta")
    use(engine, catalog, "acme", 250, "a")
    run_billing(engine, catalog, month(2026, 3))
    assert len(finalize_period(engine, month(2026, 3), store.FinalizeSettings(), dt.date(2026, 4, 1))) == 2
    env = env_for(db_url, catalog_path)
    for _ in range(2):
        deliver = billing_cli(env, tmp_path, "notifications", "deliver")
        assert deliver.returncode == 0, deliver.stderr
        assert NO_DESTINATION_WARNING in deliver.stderr
        assert "sent 0, to retry 0, dead 0 (0 attempts); 2 waiting for a destination (pending)" in deliver.stdout
    assert [(n.kind, n.status, n.attempts) for n in list_notifications(engine)] == [
        ("invoice.finalized", "pending", 0), ("invoice.finalized", "pending", 0)
    ]
    listing = billing_cli(env, tmp_path, "notifications", "list", "--status", "pending")
    assert listing.returncode == 0, listing.stderr
    rows = [line for line in listing.stdout.splitlines() if "invoice.finalized" in line]
    assert len(rows) == 2 and all("pending" in row and "no destination configured" in row for row in rows)

    url, received = receiver()
    configured = {**env, "BILLING_NOTIFICATION_WEBHOOK_URL": url, "BILLING_NOTIFICATION_WEBHOOK_SECRET": SECRET}
    deliver = billing_cli(configured, tmp_path, "notifications", "deliver")
    assert deliver.returncode == 0, deliver.stderr
    assert "sent 2, to retry 0, dead 0 (2 attempts)\n" in deliver.stdout and "warning" not in deliver.stderr
    assert sorted((r.body["customer"], r.body["invoice"]["total"], r.verified) for r in received) == [
        ("acme", "2.50", True), ("beta", "0.00", True)  # 250 calls × 0.01; none
    ]


def test_init_warns_while_no_notification_destination_is_configured(tmp_path):
    env = {**os.environ, "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}",
           "BILLING_CONFIG": str(ROOT / "config.toml")}
    init = billing_cli(env, tmp_path, "init")
    assert init.returncode == 0, init.stderr
    assert NO_DESTINATION_WARNING in init.stderr
    for configured in ({"BILLING_SMTP_HOST": "mail.example"}, {"BILLING_NOTIFICATION_WEBHOOK_URL": "https://x.test/h"}):
        init = billing_cli({**env, **configured}, tmp_path, "init", "--force")
        assert init.returncode == 0 and "warning" not in init.stderr, init.stderr


def test_a_process_killed_while_sending_leaves_the_notification_to_the_next_deliverer(
    engine, catalog, db_url, catalog_path, receiver, tmp_path
):
    [notification_id] = crossing(engine, catalog)
    with socket.socket() as black_hole:  # accepts connections and never answers
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen()
        black_hole.settimeout(60)
        hole_url = f"http://127.0.0.1:{black_hole.getsockname()[1]}/hooks"
        script = tmp_path / "kill.py"
        script.write_text(KILL_SCRIPT, encoding="utf-8")
        env = env_for(db_url, catalog_path, BILLING_NOTIFICATION_WEBHOOK_URL=hole_url,
                      BILLING_NOTIFICATION_WEBHOOK_SECRET=SECRET)
        process = subprocess.Popen([sys.executable, str(script), "deliver"], env=env, cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        connection, _ = black_hole.accept()  # the deliverer has claimed the row and is sending
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        connection.close()
    claimed = get_notification(engine, notification_id)
    assert claimed.status == "pending" and claimed.attempts == 0
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(DeliveryAttemptRow)) == 0

    url, received = receiver()
    config = settings(notification_webhook_url=url)
    assert deliver_pending(engine, config).processed == 0  # claimed: nobody else sends it while the lease holds
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=11)
    assert deliver_pending(engine, config, now=later).sent == 1  # the lease ran out: sent, same key
    assert [r.idempotency_key for r in received] == [notification_id]
