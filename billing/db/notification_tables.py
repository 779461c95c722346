"""Thresholds and notifications: per-customer limit overrides, threshold evaluations, the notification outbox and
every delivery attempt.

Created by migration 0004; the credit alerts' kinds added by 0021.

Exactly once, by construction:
  - a threshold notification is unique on (subscription, period, threshold key, level), an invoice notification
    on (invoice, kind), a credit alert by its id (``billing.credits``); rows are inserted with ON CONFLICT DO
    NOTHING in the transaction that records the evaluation, so processes, retries and re-runs can only ever create
    one row per crossing;
  - the outbox row is written before anything is sent, so a crash loses nothing: a ``pending`` row is sent by the
    next deliverer. Its ``id`` (a UUID) is the ``Idempotency-Key`` of every attempt.

The invoices live in another package's metadata, so ``invoice_id`` carries no foreign key; an issued invoice is
never deleted (the database refuses it), so it cannot dangle.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from billing.db.tables import ID_TYPE, BillingBase, utcnow
from dbkit.types import ExactDecimal, UTCDateTime

__all__ = [
    "CHANNELS",
    "INTERNAL_KINDS",
    "NOTIFICATION_KINDS",
    "NOTIFICATION_STATUSES",
    "CustomerLimitRow",
    "DeliveryAttemptRow",
    "NotificationRow",
    "ThresholdEvaluationRow",
]

NOTIFICATION_KINDS = (
    "usage.threshold_crossed",
    "spend.threshold_crossed",
    "invoice.finalized",
    "credit.balance_low",
    "credit.balance_depleted",
    "customer.at_risk",
)
INTERNAL_KINDS = ("customer.at_risk",)
"""Kinds told to the business (the global webhook), never to the customer."""
NOTIFICATION_STATUSES = ("pending", "sent", "dead")
CHANNELS = ("webhook", "email")


class CustomerLimitRow(BillingBase):
    """A customer's own limit, replacing the catalog's for every threshold with the same key.

    ``threshold_key`` is ``usage:<meter>`` (then ``meter`` is set and ``limit_value`` is an allowance in the
    meter's units) or ``spend`` (``limit_value`` is a spend cap in the customer's currency).
    """

    __tablename__ = "customer_limits"
    __table_args__ = (CheckConstraint("kind IN ('usage', 'spend')", name="kind"),)

    customer_external_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("customers.external_id", ondelete="CASCADE"), primary_key=True
    )
    threshold_key: Mapped[str] = mapped_column(String(120), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    meter: Mapped[str | None] = mapped_column(String(100))
    limit_value: Mapped[Decimal] = mapped_column(ExactDecimal)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ThresholdEvaluationRow(BillingBase):
    """The latest evaluation of one threshold of one subscription in one period: the value seen, the limit that
    applied and the highest level reached. ``as_of`` is when the usage was read; an older reading never
    overwrites a newer one."""

    __tablename__ = "threshold_evaluations"

    subscription_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("subscriptions.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    period: Mapped[str] = mapped_column(String(32), primary_key=True)
    threshold_key: Mapped[str] = mapped_column(String(120), primary_key=True)
    customer_external_id: Mapped[str] = mapped_column(String(255))
    value: Mapped[Decimal] = mapped_column(ExactDecimal)
    limit_value: Mapped[Decimal] = mapped_column(ExactDecimal)
    highest_level: Mapped[int | None] = mapped_column(Integer)
    as_of: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    evaluated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class NotificationRow(BillingBase):
    """One logical notification (the outbox): created once, delivered at least once on every channel.

    Attributes:
      id: a UUID, the ``Idempotency-Key`` of every delivery attempt.
      kind: ``usage.threshold_crossed``, ``spend.threshold_crossed``, ``invoice.finalized``,
        ``credit.balance_low`` / ``credit.balance_depleted`` (a customer's credit fell below its low-balance level
        or to 0.00: ``value`` the balance, ``limit_value`` the level, ``currency``; its id is derived from the
        customer, the currency and the alert's number, so it is written once however often it is decided).
        ``customer.at_risk`` (told to the business only: the global webhook).
      customer_external_id, subscription_id, period: whom and which period it is about.
      threshold_key, level, meter, value, limit_value, currency: the crossing (threshold kinds).
      invoice_id: the invoice (``invoice.finalized``).
      payload: the JSON body's fields besides id and kind, fixed at creation so every attempt sends the same body.
      status: ``pending`` until every channel succeeded (``sent``) or the attempts ran out (``dead``).
      attempts: delivery rounds that failed; next_attempt_at: when the next round is due (also the claim lease).
      last_error: the last failure, kept when the notification is sent or dead.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("subscription_id", "period", "threshold_key", "level"),
        UniqueConstraint("invoice_id", "kind"),
        CheckConstraint(
            "kind IN ('usage.threshold_crossed', 'spend.threshold_crossed', 'invoice.finalized',"
            " 'credit.balance_low', 'credit.balance_depleted', 'customer.at_risk')",
            name="kind",
        ),
        CheckConstraint("status IN ('pending', 'sent', 'dead')", name="status"),
        Index("ix_notifications_due", "status", "next_attempt_at"),
        Index("ix_notifications_customer", "customer_external_id", "created_at"),
        # a churn-risk notification once per customer and period (migration 0025)
        Index(
            "ux_notifications_at_risk",
            "customer_external_id",
            "period",
            unique=True,
            sqlite_where=text("kind = 'customer.at_risk'"),
            postgresql_where=text("kind = 'customer.at_risk'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    customer_external_id: Mapped[str] = mapped_column(String(255))
    subscription_id: Mapped[int | None] = mapped_column(BigInteger)
    invoice_id: Mapped[int | None] = mapped_column(BigInteger)
    period: Mapped[str] = mapped_column(String(32))
    threshold_key: Mapped[str | None] = mapped_column(String(120))
    level: Mapped[int | None] = mapped_column(Integer)
    meter: Mapped[str | None] = mapped_column(String(100))
    value: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    limit_value: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    currency: Mapped[str | None] = mapped_column(String(3))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(8), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class DeliveryAttemptRow(BillingBase):
    """One attempt to deliver a notification on one channel, whatever its outcome (``ok`` or ``error``)."""

    __tablename__ = "notification_attempts"
    __table_args__ = (
        CheckConstraint("channel IN ('webhook', 'email')", name="channel"),
        CheckConstraint("outcome IN ('ok', 'error')", name="outcome"),
        Index("ix_notification_attempts_notification", "notification_id", "attempted_at"),
    )

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    notification_id: Mapped[str] = mapped_column(String(36), ForeignKey("notifications.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(8))
    target: Mapped[str] = mapped_column(String(2048))
    attempted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(8))
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
