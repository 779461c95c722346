"""Webhook signatures and the secrets they are made with, as the Standard Webhooks specification
(https://www.standardwebhooks.com) has them, so that a receiver verifies them with a ``standardwebhooks``
library in any language.

Every webhook carries:

- ``webhook-id`` — the notification's id, the same on every attempt (the receiver's idempotency key);
- ``webhook-timestamp`` — this attempt's time, in Unix seconds;
- ``webhook-signature`` — ``v1,<base64 of the HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">``, keyed
  with the endpoint's secret.

A secret is ``whsec_`` followed by base64; the key is the bytes the base64 decodes to. The secret is the
endpoint's own: the customer's ``webhook_secret`` for its ``webhook_url`` (so no customer can forge what another's
endpoint accepts), the global ``notification_webhook_secret`` for ``notification_webhook_url``. Nothing is sent
unsigned: an endpoint without its secret raises :class:`MissingWebhookSecret`, one whose secret is not
``whsec_<base64>`` :class:`InvalidWebhookSecret`.

Customers' secrets (``whsec_`` and 48 hex digits, ``billing.customers.new_webhook_secret``) need no change: hex
digits are base64 characters, so each is a Standard Webhooks secret as it stands (its key: the 36 bytes its 48
characters decode to); a receiver hands the same string to its library.

Two headers of the engine's earlier scheme are still sent, for receivers not yet moved to the standard one:
``Idempotency-Key`` (the notification's id, as ``webhook-id``) and ``Billing-Signature: t=<unix time>,v1=<hex>``
(the HMAC-SHA256 of ``"<t>.<body>"`` keyed with the secret's text; :func:`sign`, :func:`verify_signature`). They
are deprecated: verify ``webhook-signature``.

:func:`verify_webhook` is the receiver's reference check (what ``standardwebhooks.Webhook(secret).verify`` does).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

from billing.config import MAKE_SECRET, Settings, webhook_key
from billing.core.domain import Customer

__all__ = [
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "WEBHOOK_ID_HEADER",
    "WEBHOOK_SIGNATURE_HEADER",
    "WEBHOOK_TIMESTAMP_HEADER",
    "InvalidWebhookSecret",
    "MissingWebhookSecret",
    "endpoint_secret",
    "sign",
    "sign_webhook",
    "signed_headers",
    "signing_key",
    "verify_signature",
    "verify_webhook",
]

WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"

SIGNATURE_HEADER = "Billing-Signature"
"""The earlier scheme's signature header (deprecated; still sent)."""
IDEMPOTENCY_HEADER = "Idempotency-Key"
"""The earlier scheme's idempotency header, the notification's id (deprecated: ``webhook-id`` is the same)."""


class MissingWebhookSecret(Exception):
    """The chosen endpoint has no secret to sign with, so nothing may be sent to it."""


class InvalidWebhookSecret(MissingWebhookSecret):
    """The chosen endpoint's secret cannot sign: it is not ``whsec_`` followed by base64."""


def signing_key(secret: str) -> bytes:
    """The key of a ``whsec_<base64>`` secret (the prefix is optional, as the specification's libraries take it).
    Raises :class:`InvalidWebhookSecret` for a secret that is not base64, or that is empty."""
    key = webhook_key(secret)
    if not key:
        raise InvalidWebhookSecret(
            f"the webhook secret is not whsec_ followed by base64 (Standard Webhooks); make one with {MAKE_SECRET}"
        )
    return key


def sign_webhook(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 of HMAC-SHA256 of "<id>.<timestamp>.<body>">``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(secret: str, message_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    """Every signature header of one webhook attempt: the Standard Webhooks three, and the earlier scheme's two."""
    return {
        WEBHOOK_ID_HEADER: message_id,
        WEBHOOK_TIMESTAMP_HEADER: str(timestamp),
        WEBHOOK_SIGNATURE_HEADER: sign_webhook(secret, message_id, timestamp, body),
        IDEMPOTENCY_HEADER: message_id,
        SIGNATURE_HEADER: sign(secret, body, timestamp),
    }


def verify_webhook(
    secret: str, headers: Mapping[str, str], body: bytes | str, tolerance: int = 300, *, now: float | None = None
) -> bool:
    """Whether ``headers`` (any case) carry a ``webhook-signature`` of ``body`` (the raw request body, as
    received) made with ``secret``, at a ``webhook-timestamp`` within ``tolerance`` seconds of now (which refuses
    replays of old requests). Several space-separated signatures (a rotation): one that matches is enough.

    The reference for receivers (``standardwebhooks`` does the same)::

        if not verify_webhook(SECRET, request.headers, request.body):
            return 400
        if seen(request.headers["webhook-id"]):   # a retry of a notification already handled
            return 200
    """
    found = {name.lower(): value for name, value in headers.items()}
    message_id = found.get(WEBHOOK_ID_HEADER)
    stamp = found.get(WEBHOOK_TIMESTAMP_HEADER, "")
    given = found.get(WEBHOOK_SIGNATURE_HEADER)
    if not message_id or not given or not stamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(stamp)) > tolerance:
        return False
    try:
        expected = sign_webhook(secret, message_id, int(stamp), body.encode() if isinstance(body, str) else body)
    except InvalidWebhookSecret:
        return False
    expected_digest = expected.partition(",")[2]
    for candidate in given.split():
        version, _, digest = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(expected_digest, digest):
            return True
    return False


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The deprecated ``Billing-Signature`` value: ``t=<timestamp>,v1=<HMAC-SHA256 of "<timestamp>.<body>" in
    hex>``, keyed with the secret's text."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: str, header: str | None, body: bytes | str, tolerance: int = 300, *, now: float | None = None
) -> bool:
    """Whether ``header`` (a deprecated ``Billing-Signature`` value) signs ``body`` with ``secret``, at a timestamp
    within ``tolerance`` seconds of now. Receivers verify ``webhook-signature`` instead (:func:`verify_webhook`)."""
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


def endpoint_secret(settings: Settings, customer: Customer | None) -> str:
    """The secret of the webhook endpoint a notification goes to: the customer's own for its URL, the global one
    for the global URL. Raises :class:`MissingWebhookSecret` when that endpoint has none, and
    :class:`InvalidWebhookSecret` when its secret is not ``whsec_<base64>``."""
    if customer is not None and customer.webhook_url:
        if not customer.webhook_secret:
            raise MissingWebhookSecret(
                f"customer {customer.external_id!r} has no webhook secret (created before per-endpoint secrets): "
                f"run `billing customers rotate-webhook-secret {customer.external_id}` and give the secret to its "
                "receiver; webhooks are never sent unsigned"
            )
        secret = customer.webhook_secret
        where = f"customer {customer.external_id!r}"
    else:
        if not settings.notification_webhook_secret:
            raise MissingWebhookSecret("notification_webhook_secret is not set: webhooks are never sent unsigned")
        secret = settings.notification_webhook_secret
        where = "notification_webhook_secret"
    try:
        signing_key(secret)
    except InvalidWebhookSecret as exc:
        raise InvalidWebhookSecret(f"{where}: {exc}") from None
    return secret
