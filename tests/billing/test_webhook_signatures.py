"""Outgoing webhooks follow the Standard Webhooks specification: a delivered webhook verifies with the
specification's own ``standardwebhooks`` library — with a customer's secret as the engine has always made them
(``whsec_`` and 48 hex digits) and with the global ``whsec_<base64>`` one — and with no other secret, body or
time; the engine's reference check agrees with the library both ways; a global secret that is not base64 is
never used to send. Real receivers on 127.0.0.1, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import datetime as dt
import time

import pydantic
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from billing import customers as service
from billing.config import ConfigError, get_settings
from billing.notify import deliver_pending, get_notification, webhook_body
from billing.notify.signing import (
    InvalidWebhookSecret,
    sign_webhook,
    signed_headers,
    signing_key,
    verify_signature,
    verify_webhook,
)
from tests.billing.test_notifications import SECRET, catalog, crossing, free_port, receiver, settings

__all__ = ["catalog", "receiver"]


def test_a_delivered_webhook_verifies_with_the_standardwebhooks_library(engine, catalog, receiver):
    url, received = receiver()
    [notification_id] = crossing(engine, catalog)
    assert deliver_pending(engine, settings(notification_webhook_url=url)).sent == 1
    [request] = received
    headers = {name.lower(): value for name, value in request.headers.items()}

    payload = Webhook(SECRET).verify(request.raw, headers)  # raises unless it verifies

    assert payload["id"] == notification_id and payload["kind"] == "usage.threshold_crossed"
    # the specification's payload fields: the type, and when it happened (the notification's creation, to the
    # microsecond, in UTC), beside the payload's own fields
    created = get_notification(engine, notification_id).created_at
    assert payload["type"] == "usage.threshold_crossed"
    assert payload["timestamp"] == created.isoformat().replace("+00:00", "Z") and payload["timestamp"].endswith("Z")
    assert payload["meter"] == "api_calls"
    assert headers["webhook-id"] == notification_id and request.raw == webhook_body(get_notification(engine, notification_id))
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 600
    assert headers["webhook-signature"].startswith("v1,")
    assert request.verified  # the demo receiver's own check (billing.notify.signing.verify_webhook)
    # the earlier scheme's headers are still there, for receivers not yet moved
    assert headers["idempotency-key"] == notification_id
    assert verify_signature(SECRET, headers["billing-signature"], request.raw)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(request.raw + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(base64.b64encode(b"another endpoint's key").decode()).verify(request.raw, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(request.raw, headers | {"webhook-id": "another-notification"})


def test_a_customers_secret_as_the_engine_makes_it_verifies_with_the_library_as_it_is(engine, catalog, receiver):
    port = free_port()
    crossing(engine, catalog, "acme", webhook_url=f"http://127.0.0.1:{port}/hooks")
    secret = service.get_customer(engine, "acme").webhook_secret
    assert secret.startswith("whsec_") and len(signing_key(secret)) == 36  # 48 hex digits are base64 too
    _, received = receiver(secret=secret, port=port)
    assert deliver_pending(engine, settings()).sent == 1
    [request] = received
    headers = {name.lower(): value for name, value in request.headers.items()}
    assert Webhook(secret).verify(request.raw, headers)["customer"] == "acme"
    with pytest.raises(WebhookVerificationError):  # the global secret does not sign for the customer's endpoint
        Webhook(SECRET).verify(request.raw, headers)


def test_the_reference_check_and_the_library_agree_both_ways():
    body = '{"id":"n1","kind":"invoice.finalized","customer":"müller"}'.encode()
    now = int(time.time())
    ours = signed_headers(SECRET, "n1", body, now)
    Webhook(SECRET).verify(body, ours)
    theirs = Webhook(SECRET).sign("n1", dt.datetime.fromtimestamp(now, dt.UTC), body.decode())
    assert theirs == ours["webhook-signature"] == sign_webhook(SECRET, "n1", now, body)
    assert verify_webhook(SECRET, {"Webhook-Id": "n1", "Webhook-Timestamp": str(now), "Webhook-Signature": theirs},
                          body)
    rotated = f"v1,{base64.b64encode(b'0' * 32).decode()} {theirs}"  # several signatures: one matching is enough
    assert verify_webhook(SECRET, ours | {"webhook-signature": rotated}, body)
    assert not verify_webhook(SECRET, ours, body + b" ")
    assert not verify_webhook(SECRET, ours, body, now=now + 301)  # a replay, five minutes on
    assert not verify_webhook("whsec_" + base64.b64encode(b"other").decode(), ours, body)
    assert not verify_webhook("whsec_not base64!", ours, body)
    assert not verify_webhook(SECRET, {k: v for k, v in ours.items() if k != "webhook-id"}, body)


def test_a_global_secret_that_is_not_base64_is_refused_when_the_settings_are_read(tmp_path, monkeypatch):
    """Refused up front, naming the setting and the file, rather than failing every delivery to the global URL."""
    with pytest.raises(pydantic.ValidationError, match="notification_webhook_secret"):
        settings(notification_webhook_secret="whsec_a_b!")
    config = tmp_path / "config.toml"
    config.write_text('notification_webhook_secret = "supersecret"\n', encoding="utf-8")
    monkeypatch.setenv("BILLING_CONFIG", str(config))
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"config.toml: notification_webhook_secret: .*expected whsec_"):
            get_settings()
    finally:
        get_settings.cache_clear()
    with pytest.raises(InvalidWebhookSecret):
        signing_key("whsec_")
