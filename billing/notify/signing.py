"""Webhook signatures and the secrets they are made with.

Every webhook carries ``Billing-Signature: t=<unix time>,v1=<hex>``, where ``hex`` is the HMAC-SHA256 of
``"<unix time>.<body>"`` keyed with the endpoint's secret, as Stripe signs. The secret is the endpoint's own: the
customer's ``webhook_secret`` for its ``webhook_url`` (so no customer can forge what another's endpoint accepts),
the global ``notification_webhook_secret`` for ``notification_webhook_url``. Nothing is sent unsigned: an endpoint
without its secret raises :class:`MissingWebhookSecret`. :func:`verify_signature` is the receiver's reference check.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from billing.config import Settings
from billing.core.domain import Customer

__all__ = [
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "MissingWebhookSecret",
    "endpoint_secret",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "Billing-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class MissingWebhookSecret(Exception):
    """The chosen endpoint has no secret to sign with, so nothing may be sent to it."""


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


def endpoint_secret(settings: Settings, customer: Customer | None) -> str:
    """The secret of the webhook endpoint a notification goes to: the customer's own for its URL, the global one
    for the global URL. Raises :class:`MissingWebhookSecret` when that endpoint has none."""
    if customer is not None and customer.webhook_url:
        if not customer.webhook_secret:
            raise MissingWebhookSecret(
                f"customer {customer.external_id!r} has no webhook secret (created before per-endpoint secrets): "
                f"run `billing customers rotate-webhook-secret {customer.external_id}` and give the secret to its "
                "receiver; webhooks are never sent unsigned"
            )
        return customer.webhook_secret
    if not settings.notification_webhook_secret:
        raise MissingWebhookSecret("notification_webhook_secret is not set: webhooks are never sent unsigned")
    return settings.notification_webhook_secret
