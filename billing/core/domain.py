"""The orchestrator's domain records: customers and subscriptions.

Frozen dataclasses with slots: a billing run creates them in bulk, so they stay light. ``billing.db.repository``
is the only place that builds them from rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

__all__ = ["CancelReason", "Customer", "Subscription", "SubscriptionStatus", "SubscriptionTerms", "Terms"]


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    CANCELLED = "cancelled"


class CancelReason(StrEnum):
    """Why a customer left: ``voluntary`` (they cancelled) or ``involuntary`` (payment failed for good)."""

    VOLUNTARY = "voluntary"
    INVOLUNTARY = "involuntary"


@dataclass(frozen=True, slots=True)
class Customer:
    """A customer.

    Attributes:
      id: the internal id.
      external_id: the id usage events and people use (``acme``).
      name, email: who is billed; email may be None.
      currency: ISO 4217 code; the customer's plans must be priced in it.
      timezone: IANA name; billing periods are calendar months in it.
      locale: Babel locale of invoices and messages (``de_DE``).
      address: the postal address, one string per line.
      webhook_url: where notifications are posted, if anywhere.
      tax_rate: percent (19 for 19 %).
      webhook_secret: the key that signs the webhooks posted to ``webhook_url`` (``whsec_…``); None without a
        URL, and for customers created before per-endpoint secrets (their webhooks fail until one is rotated in).
        Shown to people once, when created or rotated; kept out of ``repr`` so that it never reaches a log.
    """

    id: int
    external_id: str
    name: str
    email: str | None
    currency: str
    timezone: str
    locale: str
    address: tuple[str, ...]
    webhook_url: str | None
    tax_rate: Decimal
    webhook_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Subscription:
    """A customer on one version of a plan over ``[start_date, end_date)``.

    Attributes:
      id: the subscription's id.
      customer_id, customer_external_id: the customer, by internal and external id.
      plan_code, plan_version: the plan version, kept for the subscription's whole life.
      start_date: the first day.
      end_date: the first day no longer covered (exclusive); None while open-ended.
      status: ``cancelled`` once an end date has been set (which may lie in the future), else ``active``.
      cancel_reason: ``voluntary`` or ``involuntary`` for churn; None while active and for a plan change.
      previous_subscription_id: the subscription this one replaced by a plan change, if any.
    """

    id: int
    customer_id: int
    customer_external_id: str
    plan_code: str
    plan_version: int
    start_date: dt.date
    end_date: dt.date | None
    status: SubscriptionStatus
    cancel_reason: CancelReason | None
    previous_subscription_id: int | None

    def active_on(self, day: dt.date) -> bool:
        """Whether ``day`` falls in ``[start_date, end_date)``."""
        return self.start_date <= day and (self.end_date is None or day < self.end_date)

    def overlaps(self, start: dt.date, end: dt.date | None) -> bool:
        """Whether the subscription covers any day of ``[start, end)`` (``end`` None: open-ended).

        A subscription that ends on its start day covers no day and overlaps nothing.
        """
        if self.end_date is not None and self.end_date <= self.start_date:
            return False
        return (end is None or self.start_date < end) and (self.end_date is None or start < self.end_date)


class Terms(Protocol):
    """What rating needs of a subscription: when it runs (``end_date`` exclusive, None: open)."""

    @property
    def start_date(self) -> dt.date: ...

    @property
    def end_date(self) -> dt.date | None: ...


@dataclass(frozen=True, slots=True)
class SubscriptionTerms:
    """A subscription's dates, for quotes and tests."""

    start_date: dt.date
    end_date: dt.date | None = None
