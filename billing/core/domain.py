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

__all__ = [
    "CancelReason",
    "Customer",
    "QuantityChange",
    "Subscription",
    "SubscriptionStatus",
    "SubscriptionTerms",
    "Terms",
    "quantity_on",
]


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
      country: ISO 3166-1 alpha-2 (``DE``), which picks the tax rate; region: a subdivision of it (ISO 3166-2's
        part after the dash: ``NY``) where rates differ by region.
      tax_id: the buyer's tax id (VAT number), checked offline and stored compact (``DE136695976``).
      tax_exempt_reason: set for a customer that pays no tax: why (printed on its invoices).
      archived_at: when the customer was archived (None: active); an archived customer takes no new
        subscription, and its history is kept.
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
    country: str | None = None
    region: str | None = None
    tax_id: str | None = None
    tax_exempt_reason: str | None = None
    archived_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class QuantityChange:
    """A subscription's quantity (seats) from ``effective_from`` on, until its next change."""

    effective_from: dt.date
    quantity: int


def quantity_on(quantity: int, changes: tuple[QuantityChange, ...], day: dt.date) -> int:
    """The quantity in force on ``day``: the latest change on or before it, else the quantity at the start."""
    for change in reversed(changes):
        if change.effective_from <= day:
            return change.quantity
    return quantity


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
      quantity: the number of seats at the start (1 unless the plan is priced per seat).
      quantity_changes: later quantities, each from its effective date, in date order.
      chain_start: for a subscription that replaced another by a plan change, the start date of the first of
        that chain (its plan's trial counts from there: a plan change gives no new trial); None otherwise.
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
    quantity: int = 1
    quantity_changes: tuple[QuantityChange, ...] = ()
    chain_start: dt.date | None = None

    @property
    def trial_from(self) -> dt.date:
        """The day its plan's trial counts from: the start of its chain of plan changes."""
        return self.chain_start or self.start_date

    def quantity_on(self, day: dt.date) -> int:
        """The number of seats on ``day``."""
        return quantity_on(self.quantity, self.quantity_changes, day)

    @property
    def latest_quantity(self) -> int:
        """The quantity from the latest change on (the quantity at the start if it never changed)."""
        return self.quantity_changes[-1].quantity if self.quantity_changes else self.quantity

    @property
    def quantity_schedule(self) -> list[tuple[dt.date, int]]:
        """The seats by date: from the start, then each change."""
        return [(self.start_date, self.quantity), *((c.effective_from, c.quantity) for c in self.quantity_changes)]

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
    """What rating needs of a subscription: when it runs (``end_date`` exclusive, None: open), and its seats."""

    @property
    def start_date(self) -> dt.date: ...

    @property
    def end_date(self) -> dt.date | None: ...

    @property
    def quantity(self) -> int: ...

    @property
    def quantity_changes(self) -> tuple[QuantityChange, ...]: ...

    @property
    def trial_from(self) -> dt.date: ...


@dataclass(frozen=True, slots=True)
class SubscriptionTerms:
    """A subscription's dates, for quotes and tests."""

    start_date: dt.date
    end_date: dt.date | None = None
    quantity: int = 1
    quantity_changes: tuple[QuantityChange, ...] = ()
    chain_start: dt.date | None = None  # the start of the chain of plan changes it continues, if any

    @property
    def trial_from(self) -> dt.date:
        """The day the plan's trial counts from."""
        return self.chain_start or self.start_date
