"""Prepaid credits and the customer's balance, the pure rules: which credit pays for an invoice, in which order,
and until when. No database, no clock.

- **Order**: free credit before paid credit, paid credit before the customer's cash balance (refunds, negative
  invoices); within each, the lower ``priority`` number first, then the earliest expiry (a credit that never
  expires last), then the oldest grant.
- **Expiry**: a credit expires at the start of its expiry day in the customer's timezone. It pays for the charges
  of any period that began before that instant, even when the period's invoice is finalized after it (grace days
  never make a credit lapse); it never pays for a period that began at or after it.
- **Amount**: credits pay at most the invoice's total, after tax (like a payment); an invoice of zero or less
  takes none.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

__all__ = ["KIND_ORDER", "Allocation", "GrantView", "allocate", "application_order", "day_start", "usable_for"]

ZERO = Decimal(0)
KIND_ORDER = {"free": 0, "paid": 1, "balance": 2}


@dataclass(frozen=True, slots=True)
class GrantView:
    """A grant as the rules see it.

    Attributes:
      available: what it can still pay (its remaining amount; for a period that began before it expired, also
        what its expiry wrote off and no invoice took back since).
      expires_at: the instant it expires (None: never); granted_at: when it was granted (its order among equals).
    """

    id: int
    kind: str
    priority: int
    expires_at: dt.datetime | None
    granted_at: dt.datetime
    available: Decimal


@dataclass(frozen=True, slots=True)
class Allocation:
    grant_id: int
    amount: Decimal


def day_start(day: dt.date, timezone: str) -> dt.datetime:
    """The instant ``day`` begins in ``timezone``, in UTC."""
    return dt.datetime.combine(day, dt.time(), ZoneInfo(timezone)).astimezone(dt.UTC)


def usable_for(expires_at: dt.datetime | None, period_began: dt.datetime) -> bool:
    """Whether a credit expiring at ``expires_at`` pays for a period that began at ``period_began``."""
    return expires_at is None or period_began < expires_at


def application_order(grants: Iterable[GrantView]) -> list[GrantView]:
    """Free, then paid, then balance; lower priority number first; earliest expiry; oldest; lowest id."""
    never = dt.datetime.max.replace(tzinfo=dt.UTC)
    return sorted(
        grants,
        key=lambda g: (KIND_ORDER[g.kind], g.priority, g.expires_at or never, g.granted_at, g.id),
    )


def allocate(grants: Sequence[GrantView], amount: Decimal) -> list[Allocation]:
    """What each grant pays of ``amount`` (an invoice's total), in application order, never more than it has."""
    left = max(amount, ZERO)
    allocations: list[Allocation] = []
    for grant in application_order(grants):
        if left <= 0:
            break
        take = min(grant.available, left)
        if take > 0:
            allocations.append(Allocation(grant.id, take))
            left -= take
    return allocations
