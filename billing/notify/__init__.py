"""Notifications: the outbox (queued in the same transaction as what they report), their signing, and their
delivery by webhook and e-mail with retries and dead letters.

- ``outbox`` — the notification rows: queueing in the caller's transaction, listing, claiming, attempts, dead
  letters and their retry;
- ``signing`` — the Standard Webhooks headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), their
  reference check, and which secret signs for an endpoint;
- ``delivery`` — sending what is due by webhook and e-mail, with backoff; a notification with nowhere to go
  waits, pending, until a destination is configured.
"""

from __future__ import annotations

from billing.notify.delivery import DeliveryReport, backoff_delay, deliver_pending, destination_warning, webhook_body
from billing.notify.outbox import (
    NO_DESTINATION,
    Attempt,
    Notification,
    attempts_of,
    count_due,
    get_notification,
    list_notifications,
    notifications_page,
    queue_invoice_finalized,
    queue_invoices_finalized,
    retry,
)
from billing.notify.signing import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    WEBHOOK_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_TIMESTAMP_HEADER,
    sign,
    sign_webhook,
    verify_signature,
    verify_webhook,
)

__all__ = [
    "IDEMPOTENCY_HEADER",
    "NO_DESTINATION",
    "SIGNATURE_HEADER",
    "WEBHOOK_ID_HEADER",
    "WEBHOOK_SIGNATURE_HEADER",
    "WEBHOOK_TIMESTAMP_HEADER",
    "Attempt",
    "DeliveryReport",
    "Notification",
    "attempts_of",
    "backoff_delay",
    "count_due",
    "deliver_pending",
    "destination_warning",
    "get_notification",
    "list_notifications",
    "notifications_page",
    "queue_invoice_finalized",
    "queue_invoices_finalized",
    "retry",
    "sign",
    "sign_webhook",
    "verify_signature",
    "verify_webhook",
    "webhook_body",
]
