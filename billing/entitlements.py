"""Entitlements: what a customer may still use of each meter in its current billing period, for a product to
ask on every request (``GET /v1/customers/{customer}/entitlements``, ``billing entitlements CUSTOMER``).

A plan's allowance becomes a limit the product enforces with ``hard_limit = true`` on its threshold
(``[[plans.X.thresholds]]``); a customer's own allowance of that meter (``billing customers set-limit``) replaces
the limit and keeps it hard. Each meter the customer's current subscriptions charge for, or give an allowance of,
is answered as:

  used       the meter's quantity over the subscription's part of its current billing period (a calendar or
             anniversary month, or a week, in the customer's timezone), from every event stored so far: the
             quantity a threshold measures and the invoice rates (the meter's own aggregation, over all filters);
  limit      the allowance (None: the meter has none), ``remaining`` = max(limit − used, 0), never negative;
  blocked    a hard limit reached: ``used >= limit`` (so a hard limit of 0 blocks from the period's start);
             an allowance that is not a hard limit never blocks, it only alerts;
  resets_at  the instant the period ends (local midnight of its end day in the customer's timezone), when usage
             counts from zero again.

Where several current subscriptions give the meter an allowance (add-ons), the strictest hard limit answers
(else the smallest allowance). ``credit_balance`` is the credit that will pay for the meter's charges: the
customer's credit in its currency (the invoices' currency) that has not expired, free, paid (once its top-up
invoice is paid) and the cash balance, summed from the ledger without writing to it
(``billing.credits.spendable``); the same for every meter, since credits pay an invoice's total.

What a request reads, so that it stays fast (it never walks the period's events):

  rows       the customer by its unique external id, its subscriptions, their negotiated prices, the customer's
             own limits, its usage counters and its credit's ledger legs: each an indexed read;
  counters   ``count``, ``sum`` and ``max`` meters over a whole calendar month of the customer's timezone (a
             calendar-month plan's subscription covering the month) are read from the usage counters, which the
             transaction that stores events adds them to (``billing.db.counters``): exact, and current as of the
             last committed event, with nothing to add;
  otherwise  any other window (a week, an anniversary month, the part of a month a subscription covers, or a
             counter whose total outgrew 64 bits) is aggregated from its events in one grouped query on the
             aggregation index (``meters.meter_totals``), and ``unique_count``, ``latest`` and ``weighted_sum``
             meters, which do not add up, through the billing run's own aggregation.

The catalog is in memory.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine

from billing.core.compose import section_window
from billing.core.domain import Customer, Subscription
from billing.core.fees import schedule_of
from billing.core.overrides import SubscriptionOverride
from billing.core.periods import Period, month_of
from billing.credits import spendable
from billing.db import override_tables, repository, session_scope
from billing.db.counters import COUNTED_KINDS, Counter, read_counters
from billing.errors import NotFoundError
from billing.event_store import event_store, events_counted
from billing.metering import UsageWindow, aggregate_periods, meter_specs, total_of
from billing.thresholds import ThresholdSpec, limits_of, plan_thresholds
from billing.usage_windows import resolve_plans
from dbkit import read_only, utcnow
from meters import MeterAggregate, MeterSpec, meter_totals, to_epoch_us
from meters.store.sql import SqlEventStore
from pricing_plans.models import Catalog, Plan
from pricing_plans.money import ZERO

__all__ = ["Entitlement", "Entitlements", "customer_entitlements"]


@dataclass(frozen=True, slots=True)
class Entitlement:
    """One meter's standing in the customer's current billing period.

    Attributes:
      meter: the meter's code.
      used: its quantity so far in the period (the subscription's part of it), exact.
      limit: the allowance (a hard limit when ``hard_limit``); None when the meter has none.
      remaining: ``max(limit - used, 0)``; None without a limit.
      blocked: a hard limit reached (``used >= limit``); never for an allowance that only alerts.
      hard_limit: whether ``limit`` is enforced.
      resets_at: the end of the billing period (an aware UTC instant), when usage counts from zero again.
      period: that billing period (local dates, end exclusive).
      subscription_id: the subscription whose period and allowance answer.
      credit_balance: the credit that will pay for the meter's charges (the customer's, in its currency, not
        expired), in the currency's minor units.
    """

    meter: str
    used: Decimal
    limit: Decimal | None
    remaining: Decimal | None
    blocked: bool
    hard_limit: bool
    resets_at: dt.datetime
    period: Period
    subscription_id: int
    credit_balance: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Entitlements:
    """A customer's entitlements at ``as_of``, by meter code (in code order)."""

    customer: Customer
    as_of: dt.datetime
    meters: tuple[Entitlement, ...]


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A current subscription that charges for (or gives an allowance of) a meter, in its billing period."""

    subscription: Subscription
    period: Period
    spec: ThresholdSpec | None

    def strictness(self) -> tuple[int, Decimal, int]:
        """Sort key: a hard limit first, then the smallest allowance, then the oldest subscription."""
        hard = self.spec is not None and self.spec.hard_limit
        limit = self.spec.limit if self.spec is not None else Decimal("Infinity")
        return (0 if hard else 1, limit, self.subscription.id)


def customer_entitlements(
    engine: Engine, catalog: Catalog, customer_id: str, *, meter: str | None = None, now: dt.datetime | None = None
) -> Entitlements:
    """The customer's entitlement to each meter of its current subscriptions (only ``meter``, if given) at ``now``
    (default: the clock).

    Raises NotFoundError for an unknown customer, and for a ``meter`` that none of the customer's current
    subscriptions charges for or gives an allowance of (or that the catalog does not know).
    """
    as_of = now or utcnow()
    with session_scope(read_only(engine)) as session:
        customer = repository.get_customer(session, customer_id)
        if customer is None:
            raise NotFoundError(f"unknown customer {customer_id!r}")
        subscriptions = repository.subscriptions_of(session, customer.id)
        overrides = override_tables.overrides_of(session, {s.id for s in subscriptions})
        limits = limits_of(session, [customer.external_id]).get(customer.external_id, {})
        today = as_of.astimezone(ZoneInfo(customer.timezone)).date()
        active = [s for s in subscriptions if s.overlaps(today, today + dt.timedelta(days=1))]
        chosen = _chosen(_candidates(catalog, active, overrides, limits, today))
        if meter is not None:
            if meter not in chosen:
                known = "" if meter in catalog.meters else " (the catalog has no such meter)"
                raise NotFoundError(
                    f"customer {customer.external_id!r} has no current subscription with meter {meter!r}{known}"
                )
            chosen = {meter: chosen[meter]}
        used = _used(engine, session.connection(), catalog, customer, chosen)
        credit = spendable(session, customer.external_id, customer.currency, as_of) if chosen else None
    entitlements = tuple(_entitlement(code, chosen[code], used[code], customer, credit) for code in sorted(chosen))
    return Entitlements(customer, as_of, entitlements)


def _candidates(
    catalog: Catalog,
    active: Sequence[Subscription],
    overrides: Mapping[int, Sequence[SubscriptionOverride]],
    limits: Mapping[str, Decimal],
    today: dt.date,
) -> dict[str, list[_Candidate]]:
    """For each meter, every current subscription charging for it or giving an allowance of it, in its own
    current billing period, with the allowance that applies (the customer's own replacing the plan's)."""
    resolved = resolve_plans(catalog, active, overrides=overrides)
    found: dict[str, list[_Candidate]] = {}
    for subscription in active:
        base = resolved.plans.get(subscription.id)
        if base is None:  # a plan the catalog no longer knows: nothing of it can be answered
            continue
        period = schedule_of(subscription, base).billing_period(today)
        plan: Plan = resolved.for_period(subscription.id, period)
        allowances: dict[str, list[ThresholdSpec]] = {}
        for spec in plan_thresholds(plan, limits):
            if spec.kind == "usage" and spec.meter:
                allowances.setdefault(spec.meter, []).append(spec)
        for code in {c.meter for c in plan.charges} | set(allowances):
            if code in catalog.meters:
                found.setdefault(code, []).append(_Candidate(subscription, period, _allowance(allowances, code)))
    return found


def _allowance(allowances: Mapping[str, list[ThresholdSpec]], meter: str) -> ThresholdSpec | None:
    """The meter's allowance in a plan: its hard limit when it has one, else its smallest allowance."""
    specs = allowances.get(meter, [])
    hard = [spec for spec in specs if spec.hard_limit]
    ordered = hard or sorted(specs, key=lambda spec: spec.limit)
    return ordered[0] if ordered else None


def _chosen(candidates: Mapping[str, list[_Candidate]]) -> dict[str, _Candidate]:
    return {code: min(found, key=_Candidate.strictness) for code, found in candidates.items()}


def _used(
    engine: Engine,
    connection: Connection,
    catalog: Catalog,
    customer: Customer,
    chosen: Mapping[str, _Candidate],
) -> dict[str, Decimal]:
    """Each meter's quantity over its candidate's part of the period: its usage counter when the part is a calendar
    month, else one grouped query per distinct window; the billing run's aggregation for the meters that do not
    add up."""
    specs = meter_specs(catalog)
    by_window: dict[tuple[Period, Period], list[str]] = {}
    for code, candidate in chosen.items():
        by_window.setdefault((candidate.period, _part(candidate)), []).append(code)
    # no counters when the events live outside the billing database: every window from the event store
    counters = read_counters(connection, [customer.external_id]) if events_counted(engine) else None
    used: dict[str, Decimal] = {}
    others: dict[tuple[Period, Period], UsageWindow] = {}
    for (period, part), codes in by_window.items():
        simple = [specs[c] for c in codes if specs[c].aggregation in COUNTED_KINDS]
        start, end = part.utc_window(customer.timezone)
        if counters is not None and part.start.day == 1 and part == month_of(part.start):
            window = (to_epoch_us(start), to_epoch_us(end))
            for spec in list(simple):
                counter = counters.get((customer.external_id, spec.code, *window), _NO_EVENTS)
                quantity = counter.quantity(spec.aggregation)
                if quantity is not None:
                    used[spec.code] = quantity
                    simple.remove(spec)
        if simple:
            totals = _meter_totals(engine, connection, customer.external_id, simple, start, end)
            used.update({spec.code: totals[spec.code].quantity for spec in simple})
        if any(c not in used for c in codes):
            others[(period, part)] = UsageWindow(customer.external_id, customer.timezone, period, part)
    if others:
        aggregated = aggregate_periods(engine, catalog, others)
        for window_key, codes in by_window.items():
            for code in codes:
                if code not in used:
                    usage = aggregated[window_key].get(code)
                    used[code] = total_of(usage).quantity if usage is not None else ZERO
    return used


_NO_EVENTS = Counter(0, 0, None)


def _meter_totals(
    engine: Engine,
    connection: Connection,
    customer: str,
    meters: list[MeterSpec],
    start: dt.datetime,
    end: dt.datetime,
) -> dict[str, MeterAggregate]:
    """``meters.meter_totals`` in the request's transaction when the events live in the billing database, else the
    event store's."""
    events = event_store(engine)
    if isinstance(events, SqlEventStore) and events.engine is engine:
        return meter_totals(engine, customer, meters, start, end, connection=connection)
    return events.meter_totals(customer, meters, start, end)


def _part(candidate: _Candidate) -> Period:
    """The part of the candidate's period its subscription covers (usage counts over it)."""
    return section_window(candidate.subscription, candidate.period) or candidate.period


def _entitlement(
    meter: str, candidate: _Candidate, used: Decimal, customer: Customer, credit: Decimal | None
) -> Entitlement:
    spec = candidate.spec
    limit = spec.limit if spec is not None else None
    hard = spec is not None and spec.hard_limit
    return Entitlement(
        meter=meter,
        used=used,
        limit=limit,
        remaining=None if limit is None else max(limit - used, ZERO),
        blocked=hard and limit is not None and used >= limit,
        hard_limit=hard,
        resets_at=candidate.period.utc_window(customer.timezone)[1],
        period=candidate.period,
        subscription_id=candidate.subscription.id,
        credit_balance=credit,
    )
