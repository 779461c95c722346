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
- **Alerts** (:func:`alerts_due`): a ``low`` alert when the balance is found below the low-balance level after it
  was last found at or above it, a ``depleted`` alert when it is found at 0.00 after it was last found above; a
  customer without any credit yet counts as at 0.00 (below every level, depleted), so a first grant sends
  nothing, and its spending does.
- **Automatic top-up** (:func:`topup_due`): when the paid balance is below the level, unless a top-up of that
  currency is on its way (its invoice unpaid, or paid and its credit not yet usable), or the last automatic
  top-up ended void or uncollectible.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

from pricing_plans.money import round_money

__all__ = [
    "KIND_ORDER",
    "AlertState",
    "Allocation",
    "GrantView",
    "alerts_due",
    "allocate",
    "application_order",
    "day_start",
    "net_of_discounts",
    "payable_before",
    "topup_due",
    "usable_for",
]

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


def payable_before(
    services: Sequence[tuple[dt.datetime, Decimal]], expires_at: dt.datetime, total: Decimal, currency: str
) -> Decimal:
    """The most a credit expiring at ``expires_at`` pays of an invoice of ``total`` whose lines are ``services``
    (when each line's service began, its amount): the lines that began before it expired, as their share of the
    lines makes of the total — with their tax added (or already inside a tax-inclusive price), and their part of
    the invoice's discounts taken off. 5.50 of 38.50 in lines, total 38.50 (tax inside): 5.50; total 42.35 (10 %
    added): 6.05."""
    lines = sum((amount for _, amount in services), ZERO)
    before = sum((amount for began, amount in services if began < expires_at), ZERO)
    if before == lines:
        return max(total, ZERO)
    if lines <= 0 or before <= 0:
        return ZERO
    return min(round_money(total * before / lines, currency), max(total, ZERO))


def net_of_discounts(
    lines: Sequence[tuple[str | None, Decimal]], discounts: Sequence[tuple[Decimal, Collection[str] | None]]
) -> list[Decimal]:
    """What is left of each line (its plan, its amount) once the discounts (each a negative amount and the plans
    it reduces; None: every plan) took their part, in order: a discount from the positive lines of its plans in
    proportion to what is left of them, what it takes beyond them from every positive line. A negative line (a
    refund) takes no part and is left as it is (the tax, ``billing.core.tax``, nets each rate's lines first, as
    its amounts per rate must). Exact fractions: they weigh lines, they are not amounts."""
    left = [amount for _, amount in lines]
    for amount, plans in discounts:
        rest = amount
        for scope in (plans, None) if plans else (None,):
            covered = [i for i, (plan, _) in enumerate(lines) if (scope is None or plan in scope) and left[i] > 0]
            whole = sum((left[i] for i in covered), ZERO)
            if rest >= 0 or whole <= 0:
                continue
            placed = max(rest, -whole)
            for i in covered:
                left[i] = left[i] * (whole + placed) / whole
            rest -= placed
    return left


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


def allocate(
    grants: Sequence[GrantView], amount: Decimal, caps: Mapping[int, Decimal] | None = None
) -> list[Allocation]:
    """What each grant pays of ``amount`` (an invoice's total), in application order, never more than it has.
    ``caps``: the most of the invoice a grant may pay (the part billed for service that began before it expired,
    ``payable_before``). The parts are nested (a grant expiring earlier may pay less of the invoice, never
    another part of it), so each grant pays from the part the fewest others may pay first: a credit that never
    expires, applied first, pays the fee for the days after another one's expiry, leaving it the days before."""
    total = max(amount, ZERO)
    limits = {grant.id: min(max(caps[grant.id], ZERO), total) for grant in grants if caps and grant.id in caps}
    bounds = sorted({*limits.values(), total})
    room = [high - low for low, high in zip([ZERO, *bounds[:-1]], bounds, strict=True)]  # each layer's part
    allocations: list[Allocation] = []
    for grant in application_order(grants):
        want = max(grant.available, ZERO)
        take = ZERO
        for layer in range(bounds.index(limits.get(grant.id, total)), -1, -1):  # the outermost first
            part = min(room[layer], want - take)
            room[layer] -= part
            take += part
        if take > 0:
            allocations.append(Allocation(grant.id, take))
    return allocations


@dataclass(frozen=True, slots=True)
class AlertState:
    """Where a customer's credit in one currency stood when last looked at: below its low-balance level, at 0.00;
    and how many alerts of each kind were sent (the next one's number is one more)."""

    below_low: bool = True
    depleted: bool = True
    low_alerts: int = 0
    depleted_alerts: int = 0


def alerts_due(state: AlertState, balance: Decimal, level: Decimal | None) -> tuple[AlertState, list[str]]:
    """The state after finding ``balance`` against the low-balance ``level`` (None: no low-balance alert), and
    the alerts to send: ``low`` on going below the level, ``depleted`` on reaching 0.00 (both, in that order,
    when one movement does both)."""
    below = level is not None and balance < level
    depleted = balance <= 0
    alerts = [name for name, now, before in (("low", below, state.below_low), ("depleted", depleted, state.depleted))
              if now and not before]
    after = AlertState(
        below,
        depleted,
        state.low_alerts + ("low" in alerts),
        state.depleted_alerts + ("depleted" in alerts),
    )
    return after, alerts


def topup_due(paid: Decimal, below: Decimal | None, *, unpaid: bool, paused: bool) -> bool:
    """Whether an automatic top-up is to be issued: the paid balance is below the level (strictly), no top-up
    invoice of the currency is unpaid, and automatic top-ups are not paused."""
    return below is not None and paid < below and not unpaid and not paused
