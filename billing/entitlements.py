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
             own limits, the usage reaction's cursor, the customer's usage counters and its credit's ledger legs:
             each an indexed read;
  counters   ``count``, ``sum`` and ``max`` meters are added up behind the request path: the usage reaction
             (``billing.reactions``), in the transaction that moves its cursor past the events it reacted to,
             writes each reacted-to customer's counters of its current windows — the exact aggregate of the
             window's events received up to the cursor (``usage_counters``). So a counter has counted every event
             of its window received up to the cursor; the request adds the events received since (the pending
             ones, a fraction of a second's worth: one query through the index of the order events were received
             in). The answer is exact whether or not the reaction is behind;
  otherwise  a window without a counter (a new period or subscription that no event has touched since) is
             aggregated from its events in one grouped query on the aggregation index (``meters.meter_totals``),
             and ``unique_count``, ``latest`` and ``weighted_sum`` meters, which do not add up, through the
             billing run's own aggregation.

The catalog is in memory.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, delete, select
from sqlalchemy.orm import Session

from billing.core.compose import section_window
from billing.core.domain import Customer, Subscription
from billing.core.fees import schedule_of
from billing.core.overrides import SubscriptionOverride
from billing.core.periods import Period
from billing.credits import spendable
from billing.db import override_tables, repository, session_scope
from billing.db.entitlement_tables import UsageCounterRow
from billing.db.reaction_tables import UsageReactionRow
from billing.errors import NotFoundError
from billing.event_store import event_store
from billing.metering import UsageWindow, aggregate_periods, meter_specs, total_of
from billing.thresholds import ThresholdSpec, limits_of, plan_thresholds
from billing.usage_windows import resolve_plans
from dbkit import insert_for, read_only, utcnow
from meters import MeterAggregate, MeterSpec, from_epoch_us, meter_totals, to_epoch_us
from meters.store.sql import SqlEventStore
from pricing_plans.models import Catalog, Plan
from pricing_plans.money import ZERO

__all__ = [
    "CounterUpdate",
    "Entitlement",
    "Entitlements",
    "customer_entitlements",
    "usage_counters",
    "write_counters",
]

_QUERY_KINDS = frozenset({"count", "sum", "max"})  # counted behind the request path; one grouped query otherwise
_REACTION = "thresholds"  # the usage reaction that writes the counters (``billing.reactions.THRESHOLDS``)

_CounterKey = tuple[str, int, int]  # (meter, window start, window end): microseconds UTC


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
        # the cursor before the counters: a counter written meanwhile has counted further than the cursor read
        cursor = _cursor(session)
        counted = _Counted(_counters_of(session, customer.external_id), cursor)
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
        used = _used(engine, session.connection(), catalog, customer, chosen, counted)
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


@dataclass(frozen=True, slots=True)
class _Counted:
    """The customer's usage counters (events, quantity, counted through, by key) and the reaction's cursor read
    before them (None: no reaction yet)."""

    counters: dict[_CounterKey, tuple[int, Decimal, int]]
    cursor: int | None

    def since(self, found: Sequence[tuple[int, Decimal, int] | None]) -> int | None:
        """From which ``received_at`` on the events of a window whose counters are ``found`` are still to be
        added: the later of the cursor and the instant they were counted through (every event of a counter's
        window received in between was counted by the pass that moved the cursor there). None: no counter (or
        counters of different instants) to start from."""
        if self.cursor is None or not found or any(counter is None for counter in found):
            return None
        throughs = {counter[2] for counter in found if counter is not None}
        return max(self.cursor, throughs.pop()) if len(throughs) == 1 else None


def _used(
    engine: Engine,
    connection: Connection,
    catalog: Catalog,
    customer: Customer,
    chosen: Mapping[str, _Candidate],
    counted: _Counted,
) -> dict[str, Decimal]:
    """Each meter's quantity over its candidate's part of the period: its counter and the events received since,
    or one grouped query per distinct window; the billing run's aggregation for the meters that do not add up."""
    specs = meter_specs(catalog)
    by_window: dict[tuple[Period, Period], list[str]] = {}
    for code, candidate in chosen.items():
        by_window.setdefault((candidate.period, _part(candidate)), []).append(code)
    used: dict[str, Decimal] = {}
    others: dict[tuple[Period, Period], UsageWindow] = {}
    for (period, part), codes in by_window.items():
        simple = [specs[c] for c in codes if specs[c].aggregation in _QUERY_KINDS]
        if simple:
            start, end = part.utc_window(customer.timezone)
            window = (to_epoch_us(start), to_epoch_us(end))
            found = [counted.counters.get((spec.code, *window)) for spec in simple]
            after = counted.since(found)
            if after is not None:
                since = _meter_totals(engine, connection, customer.external_id, simple, start, end, after)
                for spec, counter in zip(simple, found, strict=True):
                    assert counter is not None
                    used[spec.code] = _added(spec.aggregation, counter[:2], since[spec.code])
            else:
                totals = _meter_totals(engine, connection, customer.external_id, simple, start, end, None)
                used.update({code: aggregate.quantity for code, aggregate in totals.items()})
        if len(simple) < len(codes):
            others[(period, part)] = UsageWindow(customer.external_id, customer.timezone, period, part)
    if others:
        aggregated = aggregate_periods(engine, catalog, others)
        for window_key, codes in by_window.items():
            for code in codes:
                if code not in used:
                    usage = aggregated[window_key].get(code)
                    used[code] = total_of(usage).quantity if usage is not None else ZERO
    return used


def _meter_totals(
    engine: Engine,
    connection: Connection,
    customer: str,
    meters: list[MeterSpec],
    start: dt.datetime,
    end: dt.datetime,
    received_after: int | None,
) -> dict[str, MeterAggregate]:
    """``meters.meter_totals`` in the request's transaction when the events live in the billing database, else the
    event store's."""
    events = event_store(engine)
    if isinstance(events, SqlEventStore) and events.engine is engine:
        return meter_totals(engine, customer, meters, start, end, received_after=received_after, connection=connection)
    return events.meter_totals(customer, meters, start, end, received_after=received_after)


def _part(candidate: _Candidate) -> Period:
    """The part of the candidate's period its subscription covers (usage counts over it)."""
    return section_window(candidate.subscription, candidate.period) or candidate.period


def _added(kind: str, counter: tuple[int, Decimal], since: MeterAggregate) -> Decimal:
    """A counter's quantity with the events received since it was counted, as the aggregation would give it."""
    events, quantity = counter
    if kind == "count":
        return Decimal(events + since.events)
    if kind == "sum":
        return _as_meters_give(quantity + since.quantity)
    if not since.events:  # max
        return quantity
    return since.quantity if not events else max(quantity, since.quantity)


def _as_meters_give(quantity: Decimal) -> Decimal:
    """A quantity written as ``meters`` writes it: a whole number without a point, else without trailing zeros."""
    return Decimal(int(quantity)) if quantity == quantity.to_integral_value() else quantity.normalize()


def _counters_of(session: Session, customer: str) -> dict[_CounterKey, tuple[int, Decimal, int]]:
    c = UsageCounterRow
    statement = select(c.meter, c.window_start, c.window_end, c.events, c.quantity, c.counted_through).where(
        c.customer_external_id == customer
    )
    rows = session.execute(statement)
    return {(meter, start, end): (events, quantity, through) for meter, start, end, events, quantity, through in rows}


def _cursor(session: Session) -> int | None:
    return session.scalar(select(UsageReactionRow.received_through).where(UsageReactionRow.name == _REACTION))


# -- the counters, behind the request path ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CounterUpdate:
    """What a pass writes: the counters of ``customers`` counted through ``through`` (``rows``); every other
    counter of theirs counted through less goes (it could no longer be kept exact)."""

    customers: frozenset[str]
    through: int
    rows: list[dict[str, object]]


def usage_counters(
    engine: Engine, catalog: Catalog, customers: Iterable[str], through: int, now: dt.datetime
) -> CounterUpdate:
    """The counters of ``customers``' current windows (at ``now``) of their ``count``, ``sum`` and ``max``
    meters: each window's exact aggregate of the events received up to ``through`` (``received_at``
    microseconds), for :func:`write_counters`. One batched aggregation for all of them; none when no plan of the
    catalog has a hard limit (entitlements are then answered from the events)."""
    wanted = frozenset(customers)
    update = CounterUpdate(wanted, through, [])
    if not wanted or not any(t.hard_limit for plan in catalog.all_plans() for t in plan.thresholds):
        return update  # a catalog without hard limits: nothing is enforced per request, no pass pays for counters
    with session_scope(read_only(engine)) as session:
        owners = repository.customers_by_external_id(session, wanted)
        subscriptions = repository.subscriptions_of_customers(session, owners)
        overrides = override_tables.overrides_of(session, {s.id for s in subscriptions})
        limits = limits_of(session, owners)
    specs = meter_specs(catalog)
    windows: dict[tuple[str, int, int], tuple[str, dt.datetime, dt.datetime]] = {}
    codes: dict[tuple[str, int, int], set[str]] = {}
    for owner in owners.values():
        today = now.astimezone(ZoneInfo(owner.timezone)).date()
        active = [
            s
            for s in subscriptions
            if s.customer_external_id == owner.external_id and s.overlaps(today, today + dt.timedelta(days=1))
        ]
        chosen = _chosen(_candidates(catalog, active, overrides, limits.get(owner.external_id, {}), today))
        for code, candidate in chosen.items():
            if specs[code].aggregation in _QUERY_KINDS:
                start, end = _part(candidate).utc_window(owner.timezone)
                key = (owner.external_id, to_epoch_us(start), to_epoch_us(end))
                windows[key] = (owner.external_id, start, end)
                codes.setdefault(key, set()).add(code)
    _live_counters(engine, set(owners), now, specs, windows, codes)
    if not windows:
        return update
    needed = [specs[code] for code in sorted(set().union(*codes.values()))]
    aggregated = event_store(engine).aggregate(windows, needed, received_until=from_epoch_us(through))
    written = utcnow()
    rows: list[dict[str, object]] = [
        {
            "customer_external_id": key[0],
            "meter": code,
            "window_start": key[1],
            "window_end": key[2],
            "events": aggregated[(key, code)].events,
            "quantity": aggregated[(key, code)].quantity,
            "counted_through": through,
            "updated_at": written,
        }
        for key in sorted(codes)
        for code in sorted(codes[key])
    ]
    return CounterUpdate(wanted, through, rows)


_LIVE_MARGIN = dt.timedelta(hours=1)


def _live_counters(
    engine: Engine,
    customers: set[str],
    now: dt.datetime,
    specs: Mapping[str, MeterSpec],
    windows: dict[tuple[str, int, int], tuple[str, dt.datetime, dt.datetime]],
    codes: dict[tuple[str, int, int], set[str]],
) -> None:
    """Add the customers' counters that may still be read (their window ends after ``now``, less a margin for the
    clocks of other processes) to those to count: a counter a request may read has counted every event of its
    window that any later pass reacted to, even when that pass saw other current windows (a subscription that
    started or ended, a limit changed) than the request."""
    c = UsageCounterRow
    wanted = sorted(customers)
    rows = []
    with session_scope(read_only(engine)) as session:
        for i in range(0, len(wanted), 5_000):
            statement = select(c.customer_external_id, c.meter, c.window_start, c.window_end).where(
                c.customer_external_id.in_(wanted[i : i + 5_000]), c.window_end > to_epoch_us(now - _LIVE_MARGIN)
            )
            rows += list(session.execute(statement))
    for customer, meter, start, end in rows:
        spec = specs.get(meter)
        if spec is not None and spec.aggregation in _QUERY_KINDS:
            key = (customer, start, end)
            windows[key] = (customer, from_epoch_us(start), from_epoch_us(end))
            codes.setdefault(key, set()).add(meter)


def write_counters(session: Session, update: CounterUpdate) -> None:
    """Upsert the counters (one counted through an earlier instant than the one stored changes nothing), then
    delete the customers' counters that neither this pass nor a later one counted: a counter the pass did not
    recount (a window no longer current, a meter no longer counted) would miss the customer's newer events."""
    table = UsageCounterRow.__table__
    if update.rows:
        statement = insert_for(session, table)
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=["customer_external_id", "meter", "window_start", "window_end"],
            set_={
                "events": excluded.events,
                "quantity": excluded.quantity,
                "counted_through": excluded.counted_through,
                "updated_at": excluded.updated_at,
            },
            where=table.c.counted_through < excluded.counted_through,
        )
        session.execute(statement, update.rows)
    wanted = sorted(update.customers)
    for i in range(0, len(wanted), 5_000):
        c = UsageCounterRow
        session.execute(
            delete(c).where(c.customer_external_id.in_(wanted[i : i + 5_000]), c.counted_through < update.through)
        )


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
