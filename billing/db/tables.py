"""The orchestrator's tables: customers and subscriptions (and, in later migrations, what billing runs,
notifications and payments need). Rows stay here; ``billing.db.repository`` maps them to domain records."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dbkit.clock import utcnow
from dbkit.types import ID_TYPE, ExactDecimal, UTCDateTime, new_metadata


class BillingBase(DeclarativeBase):
    metadata = new_metadata()


class CustomerRow(BillingBase):
    """A customer. ``external_id`` is the id usage events and people use; ``id`` is internal."""

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    currency: Mapped[str] = mapped_column(String(3))
    timezone: Mapped[str] = mapped_column(String(64))
    locale: Mapped[str] = mapped_column(String(35), default="en_US")
    address: Mapped[str] = mapped_column(Text, default="")  # lines separated by "\n"
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    # The key that signs the webhooks posted to webhook_url ("whsec_" + 48 hex digits); NULL without a URL.
    webhook_secret: Mapped[str | None] = mapped_column(String(255))
    tax_rate: Mapped[Decimal] = mapped_column(ExactDecimal, default=Decimal(0))  # percent, e.g. 19 for 19 %
    country: Mapped[str | None] = mapped_column(String(2))  # ISO 3166-1 alpha-2
    region: Mapped[str | None] = mapped_column(String(3))  # a subdivision of the country (ISO 3166-2's suffix)
    tax_id: Mapped[str | None] = mapped_column(String(64))  # checked offline, stored compact ("DE136695976")
    tax_exempt_reason: Mapped[str | None] = mapped_column(Text)  # set: the customer pays no tax, for this reason
    archived_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # archived: no new subscription
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class SubscriptionRow(BillingBase):
    """A customer on one version of a plan over ``[start_date, end_date)`` (end exclusive, None: open)."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint("end_date IS NULL OR end_date >= start_date", name="end_after_start"),
        CheckConstraint("status IN ('active', 'cancelled')", name="status"),
        CheckConstraint("cancel_reason IS NULL OR cancel_reason IN ('voluntary', 'involuntary')", name="reason"),
        Index("ix_subscriptions_customer", "customer_id", "start_date"),
    )

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="RESTRICT"))
    plan_code: Mapped[str] = mapped_column(String(100))
    plan_version: Mapped[int]
    start_date: Mapped[dt.date] = mapped_column(Date)
    end_date: Mapped[dt.date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="active")
    cancel_reason: Mapped[str | None] = mapped_column(String(16))
    previous_subscription_id: Mapped[int | None] = mapped_column(ForeignKey("subscriptions.id"))
    # A plan change's subscription: the start date of the first of its chain, which its trial counts from.
    chain_start: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class SubscriptionQuantityRow(BillingBase):
    """A subscription's quantity (seats) from ``effective_from`` on, until its next row. A subscription without a
    row on or before its start date starts with 1."""

    __tablename__ = "subscription_quantities"
    __table_args__ = (CheckConstraint("quantity > 0", name="positive"),)

    subscription_id: Mapped[int] = mapped_column(
        ID_TYPE, ForeignKey("subscriptions.id", ondelete="CASCADE"), primary_key=True
    )
    effective_from: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    quantity: Mapped[int]
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
