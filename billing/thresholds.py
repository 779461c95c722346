"""Usage and spend thresholds: which levels a subscription has reached in a billing period, each crossing
recorded as exactly one notification.

A threshold comes from the catalog (``[[plans.X.thresholds]]``: ``meter`` + ``allowance`` in the meter's units,
or ``spend_cap`` in the plan's currency; ``levels`` in percent, default ``[80, 100]``). A customer's own limit
(``billing customers set-limit``) replaces the catalog's allowance of that meter or the spend cap, in every plan
the customer is on; a customer limit with no threshold of that key in the plan adds one at the default levels
(an allowance, only to plans that charge for its meter).

``check_thresholds`` is the whole evaluation, of each customer's current calendar month (the scheduler's check),
of a given month (``billing thresholds check --period``), or of the months an ingestion put events in (usage
that arrives late: events of last month ingested today are alerted on in last month):

  load      the subscriptions covering a day of each period up to today (in each customer's timezone), their
            customers and limits; a period whose invoice the customer was already issued is left out (its
            usage is billed: an alert would come too late, and late usage is billed by a later invoice);
  aggregate every subscription's part of its periods: from the usage counters kept as events are stored
            (``billing.db.counters``) where a counter answers exactly (a whole calendar month; ``count``, ``sum``
            and ``max`` meters; no dimensioned or per-event charge under a spend cap), the others in ONE batched
            aggregation of their events;
  rate      spend = the period's usage charges so far, rated as the invoice rates them (``usage_charges``: the
            usage total of ``rate_period`` without its lines; pure);
  write     one transaction: each evaluation upserted, and each level reached inserted as a notification with
            ON CONFLICT DO NOTHING on (subscription, period, threshold key, level) — so however many processes,
            retries and re-runs evaluate the same crossing, one row exists. The period is in the key: a new
            month starts from zero.

Level ``L`` of limit ``X`` is reached when ``value >= X × L / 100`` (and the value is above zero: no usage
crosses nothing). One batch that jumps from 50 % to 130 % creates the 80 and the 100 notifications, in level order.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from operator import itemgetter
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from billing.core.domain import Customer, Subscription
from billing.core.fees import schedule_of
from billing.core.overrides import SubscriptionOverride
from billing.core.periods import Period, Schedule, month_of
from billing.core.rating import usage_charges
from billing.db import override_tables, repository, session_scope
from billing.db.counters import COUNTED_KINDS, Counter, CounterKey, read_counters
from billing.db.notification_tables import CustomerLimitRow, NotificationRow, ThresholdEvaluationRow
from billing.errors import BillingInputError, NotFoundError
from billing.event_store import events_counted
from billing.metering import AnyUsage, UsageWindow, meter_specs, total_of
from billing.usage_windows import UsageKey, aggregate, events_in, resolve_plans, usage_windows
from dbkit import (
    BoundRows,
    among,
    as_utc,
    bind_rows,
    insert_bound,
    insert_for,
    is_postgresql,
    iso_instant,
    read_only,
    utcnow,
)
from invoices import store
from meters import MeterSpec, to_epoch_us
from pricing_plans.charge_models import MeterUsage
from pricing_plans.errors import AmountOutOfRangeError
from pricing_plans.models import Catalog, PercentageCharge, Plan
from pricing_plans.money import HUNDRED, ZERO, D

__all__ = [
    "DEFAULT_LEVELS",
    "CheckReport",
    "Crossing",
    "CustomerLimit",
    "ThresholdSpec",
    "check_thresholds",
    "crossed_levels",
    "level_value",
    "limits_of",
    "list_limits",
    "plan_thresholds",
    "set_limit",
    "threshold_key",
]

DEFAULT_LEVELS: tuple[int, ...] = (80, 100)
SPEND_KEY = "spend"

_CHUNK = 5_000

ThresholdKind = Literal["usage", "spend"]


# -- pure: thresholds and levels --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThresholdSpec:
    """One threshold as evaluated for one subscription.

    Attributes:
      key: ``usage:<meter>`` or ``spend`` (``#2``, ``#3`` … for a plan's further thresholds of the same key).
      kind: ``usage`` (an allowance of ``meter``, in its units) or ``spend`` (a cap on usage charges, in money).
      meter: the meter of an allowance; None for spend.
      limit: the allowance or cap that applies (the customer's own, if set).
      levels: percentages of ``limit``, increasing.
      customer_limit: whether ``limit`` is the customer's own rather than the catalog's.
      hard_limit: whether the plan's threshold is a hard limit (enforced through the entitlements: a customer's
        own allowance replaces its limit and keeps it hard).
    """

    key: str
    kind: ThresholdKind
    meter: str | None
    limit: Decimal
    levels: tuple[int, ...]
    customer_limit: bool = False
    hard_limit: bool = False


def threshold_key(kind: ThresholdKind, meter: str | None) -> str:
    """``usage:<meter>`` for an allowance, ``spend`` for a spend cap: what a customer limit and a notification name."""
    return f"usage:{meter}" if kind == "usage" else SPEND_KEY


def plan_thresholds(plan: Plan, limits: Mapping[str, Decimal] | None = None) -> list[ThresholdSpec]:
    """The plan's thresholds with the customer's limits (by threshold key) applied.

    A customer limit replaces the limit of every threshold of its key; one for a key the plan has no threshold of
    adds a threshold at the default levels (an allowance only if the plan charges for its meter).
    """
    limits = limits or {}
    specs: list[ThresholdSpec] = []
    seen: dict[str, int] = {}
    for threshold in plan.thresholds:
        base = threshold_key(threshold.kind, threshold.meter)
        seen[base] = seen.get(base, 0) + 1
        key = base if seen[base] == 1 else f"{base}#{seen[base]}"
        catalog_limit = threshold.allowance if threshold.kind == "usage" else threshold.spend_cap
        assert catalog_limit is not None  # the catalog validates one of them
        own = limits.get(base)
        specs.append(
            ThresholdSpec(
                key=key,
                kind=threshold.kind,
                meter=threshold.meter,
                limit=catalog_limit if own is None else own,
                levels=tuple(threshold.levels),
                customer_limit=own is not None,
                hard_limit=threshold.hard_limit,
            )
        )
    for base, own in sorted(limits.items()):
        if base not in seen:
            kind: ThresholdKind = "spend" if base == SPEND_KEY else "usage"
            meter = None if kind == "spend" else base.removeprefix("usage:")
            if meter is not None and plan.charge_for(meter) is None:
                continue  # as in the catalog, an allowance is of a meter the plan charges for
            specs.append(ThresholdSpec(base, kind, meter, own, DEFAULT_LEVELS, customer_limit=True))
    return specs


def level_value(limit: Decimal, level: int) -> Decimal:
    """The value at which ``level`` percent of ``limit`` is reached: limit × level / 100, exact."""
    return limit * level / HUNDRED


def crossed_levels(value: Decimal, limit: Decimal, levels: Sequence[int]) -> tuple[int, ...]:
    """The levels reached by ``value``, in increasing order: ``value >= limit × level / 100``.

    Zero (or no) usage reaches nothing, even against a zero limit.
    """
    if value <= ZERO:
        return ()
    return tuple(level for level in sorted(levels) if value >= level_value(limit, level))


# -- customer limits ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomerLimit:
    """A customer's own allowance of a meter or spend cap, replacing the catalog's."""

    customer: str
    key: str
    kind: ThresholdKind
    meter: str | None
    limit: Decimal


_LIMIT = re.compile(r"-?[0-9]{1,15}(?:\.[0-9]{1,12})?")


def set_limit(
    engine: Engine,
    catalog: Catalog,
    customer: str,
    *,
    meter: str | None = None,
    allowance: Decimal | int | str | None = None,
    spend_cap: Decimal | int | str | None = None,
) -> CustomerLimit:
    """Set a customer's allowance of ``meter`` (units) or spend cap (money); replaces an earlier one of that key.

    Raises BillingInputError for bad input (every problem at once), NotFoundError for an unknown customer.
    """
    problems: list[str] = []
    if (allowance is None) == (spend_cap is None):
        problems.append("allowance: give an allowance (with its meter) or a spend cap: one of the two")
    if allowance is not None and not meter:
        problems.append("meter: required with an allowance")
    if spend_cap is not None and meter:
        problems.append("meter: not allowed with a spend cap (a spend cap is on money, not on a meter)")
    if meter and meter not in catalog.meters:
        problems.append(f"meter: unknown meter {meter!r} (known: {', '.join(sorted(catalog.meters)) or 'none'})")
    number: Decimal | None = None
    for name, raw in (("allowance", allowance), ("spend cap", spend_cap)):
        if raw is None:
            continue
        text = str(raw).strip()
        if not _LIMIT.fullmatch(text):  # (plain decimal notation, as amounts are: no 1e3, no 1_000, no NaN)
            problems.append(f"{name.replace(' ', '_')}: not a number: expected a decimal such as 250.00 (at most 15 "
                            f"digits before the point and 12 after), got {raw!r}")  # fmt: skip
            continue
        number = D(text)
        if number < 0:
            problems.append(f"{name.replace(' ', '_')}: must be >= 0 (got {raw})")
    if problems or number is None:
        raise BillingInputError.of(problems)
    kind: ThresholdKind = "usage" if allowance is not None else "spend"
    key = threshold_key(kind, meter)
    limit_meter = meter if kind == "usage" else None
    with session_scope(engine) as session:
        if repository.get_customer(session, customer) is None:
            raise NotFoundError(f"unknown customer {customer!r}")
        values = {
            "customer_external_id": customer,
            "threshold_key": key,
            "kind": kind,
            "meter": limit_meter,
            "limit_value": number,
            "updated_at": utcnow(),
        }
        statement = insert_for(session, CustomerLimitRow).values(**values)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["customer_external_id", "threshold_key"],
                set_={key: values[key] for key in ("kind", "meter", "limit_value", "updated_at")},
            )
        )
    return CustomerLimit(customer, key, kind, limit_meter, number)


def list_limits(engine: Engine, customer: str | None = None) -> list[CustomerLimit]:
    """Customers' own limits, by customer and key."""
    statement = select(CustomerLimitRow).order_by(CustomerLimitRow.customer_external_id, CustomerLimitRow.threshold_key)
    if customer is not None:
        statement = statement.where(CustomerLimitRow.customer_external_id == customer)
    with session_scope(read_only(engine)) as session:
        return [
            CustomerLimit(row.customer_external_id, row.threshold_key, row.kind, row.meter, row.limit_value)  # type: ignore[arg-type]
            for row in session.scalars(statement)
        ]


def limits_of(session: Session, customers: Iterable[str] | None) -> dict[str, dict[str, Decimal]]:
    """The customers' own limits (all customers' when None), by customer and threshold key."""
    found: dict[str, dict[str, Decimal]] = {}
    row = CustomerLimitRow
    statement = select(row.customer_external_id, row.threshold_key, row.limit_value)
    if customers is None:
        rows = list(session.execute(statement))
    else:
        wanted = sorted(set(customers))
        rows = []
        for i in range(0, len(wanted), _CHUNK):
            chunk = wanted[i : i + _CHUNK]
            rows += session.execute(statement.where(among(session, CustomerLimitRow.customer_external_id, chunk)))
    for customer, key, limit in rows:
        found.setdefault(customer, {})[key] = limit
    return found


# -- the check ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Crossing:
    """A level reached, as recorded in a notification."""

    notification_id: str
    kind: str
    customer: str
    subscription_id: int
    plan: str
    period: str
    threshold_key: str
    meter: str | None
    level: int
    value: Decimal
    limit: Decimal
    currency: str | None
    unit: str | None


@dataclass
class CheckReport:
    """What ``check_thresholds`` did.

    Attributes:
      subscriptions: subscriptions evaluated (those with at least one threshold), once per period.
      evaluations: thresholds evaluated.
      created: the notifications this call created, in order (customer, subscription, threshold, level).
      skipped: ``(customer, reason)`` for subscriptions that could not be evaluated.
      events: usage events read (of the meters the thresholds read: an allowance's, a spend cap's charged ones).
      issued: ``(customer, period label)`` not evaluated because the customer's invoice of the period is issued.
    """

    subscriptions: int = 0
    evaluations: int = 0
    created: list[Crossing] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    events: int = 0
    issued: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Target:
    """A subscription with thresholds, over one billing period it covers."""

    subscription: Subscription
    plan: Plan
    period: Period
    specs: tuple[ThresholdSpec, ...]

    @property
    def usage_key(self) -> UsageKey:
        return UsageKey(self.subscription.id, self.period)


_TargetKey = tuple[int, dt.date]  # (subscription id, period start)


@dataclass(frozen=True, slots=True)
class _Scope:
    """What the check evaluates: the subscriptions that may cover its periods, their customers and limits."""

    subscriptions: list[Subscription]
    owners: dict[str, Customer]
    limits: dict[str, dict[str, Decimal]]
    overrides: dict[int, tuple[SubscriptionOverride, ...]]  # negotiated prices, by subscription


@dataclass(frozen=True, slots=True)
class _Reached:
    """A level a threshold's value reaches."""

    target: _Target
    spec: ThresholdSpec
    level: int
    value: Decimal


def check_thresholds(
    engine: Engine,
    catalog: Catalog,
    *,
    customers: Iterable[str] | None = None,
    now: dt.datetime | None = None,
    period: Period | None = None,
    periods: Mapping[str, Iterable[Period]] | None = None,
    in_transaction: Callable[[Session], None] | None = None,
    make_way: bool = True,
) -> CheckReport:
    """Evaluate thresholds and create one notification per level reached.

    The periods evaluated: each customer's current calendar month in its timezone (the default); ``period``, one
    calendar month for every customer; or ``periods``, the months of each customer it names (those an
    ingestion put events in). In each period, the subscriptions covering at least one of its days up to today
    are evaluated, over the part of the period they cover. A customer's period whose invoice is issued is left
    out (``CheckReport.issued``). ``customers``: only those customers. ``now`` is when "today" is (default:
    the clock). Safe to run from any number of processes at once. ``in_transaction`` is called in the
    transaction that records the notifications (in one of its own when there is nothing to record): whatever it
    writes is committed with them, or not at all. The evaluations are recorded in it too (SQLite: just before, in
    short transactions that make way for an API writer between them; ``make_way=False``, a batch command's check,
    in one).

    Raises BillingInputError when ``period`` has not begun anywhere yet.
    """
    report = CheckReport()
    instant = as_utc(now or utcnow())
    utc_day = instant.date()
    asked, wanted = _asked(periods, None if customers is None else set(customers))
    if wanted is not None and not wanted:
        _finish(engine, in_transaction)
        return report
    if period is not None and period.start > utc_day + dt.timedelta(days=1):
        raise BillingInputError(f"period {period.label} has not begun (it starts on {period.start.isoformat()})")
    earliest, latest = _span(asked, period, utc_day)
    as_of = utcnow()
    scope = _load(engine, earliest, latest, wanted)
    targets = _targets(catalog, scope, instant, _periods_of(asked, period, instant), report)
    _leave_out_issued(engine, targets, report)
    # aggregate: one batch
    by_id = {target.subscription.id: target.subscription for target in targets.values()}
    windows = usage_windows([t.usage_key for t in targets.values()], by_id, scope.owners)
    usage = _usage(engine, catalog, targets.values(), windows)
    report.events = events_in(usage)
    report.subscriptions = len(targets)
    evaluations, crossings = _evaluate(targets, usage, catalog, as_of, report.skipped)
    report.evaluations = len(evaluations)
    _write(engine, catalog, evaluations, crossings, report, in_transaction, make_way)
    return report


def _asked(
    periods: Mapping[str, Iterable[Period]] | None, wanted: set[str] | None
) -> tuple[dict[str, set[Period]] | None, set[str] | None]:
    """The months ``periods`` asks of each customer (of the ``wanted`` ones; none without a month), and the
    customers wanted then: those it names, or ``wanted`` when it is None."""
    if periods is None:
        return None, wanted
    asked = {c: set(found) for c, found in periods.items() if wanted is None or c in wanted}
    asked = {c: found for c, found in asked.items() if found}
    return asked, set(asked)


def _periods_of(
    asked: Mapping[str, set[Period]] | None, period: Period | None, instant: dt.datetime
) -> Callable[[Customer], Iterable[Period]]:
    """The periods evaluated of a customer: those asked of it, ``period``, or its current calendar month."""

    def periods_of(owner: Customer) -> Iterable[Period]:
        if asked is not None:
            return sorted(asked[owner.external_id])
        if period is not None:
            return (period,)
        return (month_of(_today(instant, owner)),)

    return periods_of


def _usage(
    engine: Engine, catalog: Catalog, targets: Iterable[_Target], windows: Mapping[UsageKey, UsageWindow]
) -> dict[UsageKey, dict[str, AnyUsage]]:
    """aggregate: each target's usage of the meters its thresholds read. From the usage counters
    (``billing.db.counters``: one indexed read for all of them) when the target's window is a calendar month of
    its customer's timezone and a counter answers each of its meters exactly; the other targets' from their
    events, in one batched aggregation (every target's when the events live outside the billing database, where
    no counter is kept)."""
    specs = meter_specs(catalog)
    kept = events_counted(engine)  # no counters when the events live outside the billing database
    counted: dict[UsageKey, tuple[UsageWindow, set[str], tuple[int, int]]] = {}
    rest: dict[UsageKey, _Target] = {}
    for target in targets:
        window = windows.get(target.usage_key)
        if window is None:
            continue
        needed = _meters_needed((target,))
        bounds = _month_bounds(window)
        if kept and bounds is not None and _countable(target, needed, specs):
            counted[target.usage_key] = (window, needed, bounds)
        else:
            rest[target.usage_key] = target
    usage: dict[UsageKey, dict[str, AnyUsage]] = {}
    if counted:
        with read_only(engine).connect() as connection, connection.begin():
            found = read_counters(
                connection, {w.customer for w, _, _ in counted.values()}, {b[0] for _, _, b in counted.values()}
            )
        for key, (window, needed, (start, end)) in counted.items():
            by_meter = _from_counters(found, window.customer, needed, start, end, specs)
            if by_meter is None:  # a total too large for a counter: from the events
                rest[key] = next(t for t in targets if t.usage_key == key)
            else:
                usage[key] = by_meter
    if rest:
        of_rest = {key: windows[key] for key in rest}
        usage.update(aggregate(engine, catalog, of_rest, _plans(rest.values()), meters=_meters_needed(rest.values())))
    return usage


def _month_bounds(window: UsageWindow) -> tuple[int, int] | None:
    """The window's UTC bounds (microseconds) when it is a whole calendar month: a counter's window."""
    part = window.part or window.period
    if part.start.day != 1 or part != month_of(part.start):
        return None
    return _bounds(part, window.timezone)


@functools.lru_cache(maxsize=1024)
def _bounds(month: Period, timezone: str) -> tuple[int, int]:
    start, end = month.utc_window(timezone)
    return to_epoch_us(start), to_epoch_us(end)


def _countable(target: _Target, needed: set[str], specs: Mapping[str, MeterSpec]) -> bool:
    """Whether counters answer the target's thresholds exactly: every meter they read is counted (``count``,
    ``sum``, ``max``), and a spend cap's charges need neither each event's value (a ``percentage`` charge prices
    each event: its fees are summed from the events) nor a split by dimension."""
    if any(code not in specs or specs[code].aggregation not in COUNTED_KINDS for code in needed):
        return False
    if any(spec.kind == "spend" for spec in target.specs):
        charges = [charge for charge in target.plan.charges if charge.meter in needed]
        if any(charge.is_dimensioned or isinstance(charge, PercentageCharge) for charge in charges):
            return False
    return True


def _from_counters(
    found: Mapping[CounterKey, Counter],
    customer: str,
    needed: Iterable[str],
    start: int,
    end: int,
    specs: Mapping[str, MeterSpec],
) -> dict[str, AnyUsage] | None:
    """The meters' usage from their counters (no counter: no event); None when a counter cannot say."""
    usage: dict[str, AnyUsage] = {}
    for code in needed:
        counter = found.get((customer, code, start, end))
        if counter is None:
            usage[code] = MeterUsage(quantity=Decimal(0), events=0)
            continue
        quantity = counter.quantity(specs[code].aggregation)
        if quantity is None:
            return None
        usage[code] = MeterUsage(quantity=quantity, events=counter.events)
    return usage


def _plans(targets: Iterable[_Target]) -> dict[UsageKey, Plan]:
    """Each target's plan, by its usage key (a charge priced by dimension is aggregated by its parts)."""
    return {target.usage_key: target.plan for target in targets}


def _meters_needed(targets: Iterable[_Target]) -> set[str]:
    """The meters the thresholds of ``targets`` read: an allowance's meter; for a spend cap, every meter its plan
    charges for (the usage charges are rated from them). No other meter is aggregated."""
    needed: set[str] = set()
    for target in targets:
        for spec in target.specs:
            if spec.meter is not None:
                needed.add(spec.meter)
            elif spec.kind == "spend":
                needed.update(charge.meter for charge in target.plan.charges)
    return needed


def _span(asked: Mapping[str, set[Period]] | None, period: Period | None, utc_day: dt.date) -> tuple[dt.date, dt.date]:
    """The days ``[earliest, latest)`` the evaluated periods can fall in: those of the periods ``asked`` (by
    customer), of ``period``, or else of every customer's current month."""
    if asked is not None:
        earliest = min(p.start for found in asked.values() for p in found)
        latest = max(p.end for found in asked.values() for p in found)
    elif period is not None:
        earliest, latest = period.start, period.end
    else:  # every customer's "today" is within a day of the UTC date
        earliest = month_of(utc_day - dt.timedelta(days=1)).start
        latest = month_of(utc_day + dt.timedelta(days=1)).end
    return earliest, latest


def _write(
    engine: Engine,
    catalog: Catalog,
    evaluations: list[dict[str, Any]],
    crossings: list[_Reached],
    report: CheckReport,
    in_transaction: Callable[[Session], None] | None,
    make_way: bool = True,
) -> None:
    """write: the evaluations, then the notifications of the levels reached with whatever ``in_transaction``
    writes (in a transaction of its own when there are no evaluations).

    PostgreSQL: all in one transaction. SQLite: the transactions hold the database's one write lock, which the
    API's event writer waits for (a request waits behind them), so they are short: what can be made before is
    (the notifications' rows, every row bound for the database), and the evaluations are upserted
    :data:`_EVALUATIONS_AT_ONCE` at a time, each in a transaction of its own, with a pause between two in which a
    waiting writer takes its turn. Exactly once still holds: a crossing is told by its notification, whose
    unique key and ``in_transaction`` (the usage reaction's cursor) are committed together; an evaluation is a
    reading, which the next check reads again."""
    if not evaluations:
        _finish(engine, in_transaction)
        return
    rows, made = _notification_rows(engine, crossings, catalog)
    postgresql = is_postgresql(engine)
    bound_notifications = None
    if not postgresql:
        bound = bind_rows(engine, ThresholdEvaluationRow.__table__, evaluations)
        _upsert_evaluations(engine, bound, _EVALUATIONS_AT_ONCE if make_way else len(evaluations))
        bound_notifications = bind_rows(engine, NotificationRow.__table__, rows) if rows else None
    with session_scope(engine) as session:
        if postgresql:
            _record_evaluations(session, evaluations)
        inserted = _insert_notifications(session, rows, bound_notifications)
        report.created = [crossing for crossing in made if crossing.notification_id in inserted]
        if in_transaction is not None:
            in_transaction(session)


_EVALUATIONS_AT_ONCE = 100
"""SQLite: evaluations upserted per transaction (about a millisecond of the write lock)."""
_TURN = 0.001
"""SQLite: seconds between two such transactions (the API's event writer looks for the lock every 0.2 ms)."""


def _upsert_evaluations(engine: Engine, evaluations: BoundRows, at_once: int) -> None:
    """SQLite: upsert the evaluations (bound), ``at_once`` per transaction, with a pause between two; a reading
    older than the one stored (a slower concurrent check) changes nothing."""
    values = evaluations.values
    for start in range(0, len(values), at_once):
        if start:
            time.sleep(_TURN)
        part = BoundRows(evaluations.table, evaluations.columns, values[start : start + at_once])
        with session_scope(engine) as session:
            insert_bound(session.connection(), part, key=_EVALUATION_KEY, newer="as_of")


def _finish(engine: Engine, in_transaction: Callable[[Session], None] | None) -> None:
    """``in_transaction`` when the check records nothing: in a transaction of its own."""
    if in_transaction is not None:
        with session_scope(engine) as session:
            in_transaction(session)


def _load(engine: Engine, earliest: dt.date, latest: dt.date, wanted: set[str] | None) -> _Scope:
    """load: the subscriptions covering a day of ``[earliest, latest)``, their customers and the customers'
    limits."""
    with session_scope(read_only(engine)) as session:
        subscriptions = repository.subscriptions_active_between(session, earliest, latest, wanted)
        owners = repository.customers_by_external_id(session, {s.customer_external_id for s in subscriptions})
        limits = limits_of(session, None if wanted is None else owners)
        overrides = override_tables.overrides_of(session, {s.id for s in subscriptions})
    return _Scope(subscriptions, owners, limits, overrides)


def _targets(
    catalog: Catalog,
    scope: _Scope,
    instant: dt.datetime,
    periods_of: Callable[[Customer], Iterable[Period]],
    report: CheckReport,
) -> dict[_TargetKey, _Target]:
    """Each subscription with thresholds over each of its customer's periods that it covers up to today, by
    (subscription, period start); subscriptions whose plan the catalog does not know are skipped."""
    covering: list[tuple[Subscription, Period, dt.date]] = []
    for subscription in scope.subscriptions:
        owner = scope.owners.get(subscription.customer_external_id)
        if owner is None:
            continue
        tomorrow = _today(instant, owner) + dt.timedelta(days=1)
        for period in periods_of(owner):
            until = min(period.end, tomorrow)  # a period that has not begun yet covers no day so far
            if period.start < until and subscription.overlaps(period.start, until):
                covering.append((subscription, period, tomorrow))
    resolved = resolve_plans(catalog, list({s.id: s for s, _, _ in covering}.values()), overrides=scope.overrides)
    report.skipped += [(problem.customer, problem.message) for problem in resolved.unknown]
    targets: dict[_TargetKey, _Target] = {}
    of_plan: dict[int, tuple[ThresholdSpec, ...]] = {}  # by id(plan): the thresholds of a customer without limits
    for subscription, days, tomorrow in covering:
        base = resolved.plans.get(subscription.id)
        if base is None:
            continue
        limits = scope.limits.get(subscription.customer_external_id)
        # the subscription's own billing periods over those days: the month itself, or weeks, anniversary months;
        # each with its plan then (a negotiated price in force for it)
        for period in _billing_periods_over(schedule_of(subscription, base), days, min(days.end, tomorrow)):
            plan = resolved.for_period(subscription.id, period)
            if limits:
                specs = tuple(plan_thresholds(plan, limits))
            else:
                specs = of_plan.get(id(plan))  # type: ignore[assignment]
                if specs is None:
                    specs = of_plan[id(plan)] = tuple(plan_thresholds(plan))
            if specs and subscription.overlaps(period.start, min(period.end, tomorrow)):
                targets[(subscription.id, period.start)] = _Target(subscription, plan, period, specs)
    return targets


def _billing_periods_over(schedule: Schedule, days: Period, until: dt.date) -> list[Period]:
    """The billing periods of ``schedule`` with a day in ``[days.start, until)``, in order."""
    found = [schedule.billing_period(days.start)]
    while found[-1].end < until:
        found.append(schedule.next_billing_period(found[-1]))
    return found


def _leave_out_issued(engine: Engine, targets: dict[_TargetKey, _Target], report: CheckReport) -> None:
    """Remove the targets whose customer's invoice of the period is issued (finalized, paid, void or
    uncollectible): the usage of that period is billed, and what arrives now is late usage of a later invoice."""
    periods = {(target.period.start, target.period.end) for target in targets.values()}
    if not periods:
        return
    # (a period's own invoice: a week's issued invoice starting on the 1st leaves the month's open)
    with session_scope(read_only(engine)) as session:
        issued = {(a, b): store.customers_with_issued_invoice(session, a, period_end=b) for a, b in sorted(periods)}
    left_out: set[tuple[str, str]] = set()
    for key, target in list(targets.items()):
        customer = target.subscription.customer_external_id
        if customer in issued[(target.period.start, target.period.end)]:
            del targets[key]
            left_out.add((customer, target.period.label))
    report.issued = sorted(left_out)


def _today(instant: dt.datetime, owner: Customer) -> dt.date:
    return instant.astimezone(ZoneInfo(owner.timezone)).date()


def _evaluate(
    targets: Mapping[_TargetKey, _Target],
    usage: Mapping[UsageKey, Mapping[str, AnyUsage]],
    catalog: Catalog,
    as_of: dt.datetime,
    skipped: list[tuple[str, str]],
) -> tuple[list[dict[str, Any]], list[_Reached]]:
    """rate and evaluate (pure): each threshold's value against its limit, in subscription order; the
    evaluations as rows to upsert, and every level reached. A spend too large to be an amount (a huge quantity ×
    a price: the billing run skips such a customer too) leaves that subscription's spend caps unevaluated and is
    added to ``skipped``; its usage allowances, and every other customer, are evaluated as usual."""
    evaluations: list[dict[str, Any]] = []
    crossings: list[_Reached] = []
    for key in sorted(targets):
        target = targets[key]
        subscription_id = target.subscription.id
        found = usage.get(target.usage_key, {})
        spend: Decimal | None = None
        spend_failed = False
        for spec in target.specs:
            if spec.kind == "usage":
                metered = found.get(spec.meter) if spec.meter is not None else None
                # the meter across all filters, with its own aggregation (a dimensioned usage's total)
                value = total_of(metered).quantity if metered is not None else ZERO
            else:
                if spend is None and not spend_failed:
                    try:
                        spend = _spend(target, found, catalog)
                    except AmountOutOfRangeError as error:
                        skipped.append((target.subscription.customer_external_id, str(error)))
                        spend_failed = True
                if spend is None:  # could not be computed: its caps are left out, never compared
                    continue
                value = spend
            levels = crossed_levels(value, spec.limit, spec.levels)
            evaluations.append(
                {
                    "subscription_id": subscription_id,
                    "period": target.period.label,
                    "threshold_key": spec.key,
                    "customer_external_id": target.subscription.customer_external_id,
                    "value": value,
                    "limit_value": spec.limit,
                    "highest_level": levels[-1] if levels else None,
                    "as_of": as_of,
                    "evaluated_at": as_of,
                }
            )
            crossings.extend(_Reached(target, spec, level, value) for level in levels)
    return evaluations, crossings


def _spend(target: _Target, usage: Mapping[str, AnyUsage], catalog: Catalog) -> Decimal:
    """The period's usage charges so far, exactly as the invoice will rate them."""
    return usage_charges(target.subscription, target.plan, usage, target.period, rounding=catalog.rounding)


_EVALUATION_KEY = ("subscription_id", "period", "threshold_key")


def _record_evaluations(session: Session, evaluations: list[dict[str, Any]]) -> None:
    """PostgreSQL: upsert each evaluation; a reading older than the one stored (a slower concurrent check) changes
    nothing. A Core executemany on the table (not the ORM's bulk insert, which builds a state per row). (SQLite:
    :func:`_upsert_evaluations`.)"""
    table = ThresholdEvaluationRow.__table__
    statement = insert_for(session, table)
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=["subscription_id", "period", "threshold_key"],
        set_={
            "customer_external_id": excluded.customer_external_id,
            "value": excluded.value,
            "limit_value": excluded.limit_value,
            "highest_level": excluded.highest_level,
            "as_of": excluded.as_of,
            "evaluated_at": excluded.evaluated_at,
        },
        where=table.c.as_of <= excluded.as_of,
    )
    if is_postgresql(session.connection()) and len(evaluations) > _FEW_EVALUATIONS:
        _copy_evaluations(session, evaluations)
        return
    session.execute(statement, evaluations)


_FEW_EVALUATIONS = 100
_EVALUATION_COLUMNS = (
    "subscription_id",
    "period",
    "threshold_key",
    "customer_external_id",
    "value",
    "limit_value",
    "highest_level",
    "as_of",
    "evaluated_at",
)


def _copy_evaluations(session: Session, evaluations: list[dict[str, Any]]) -> None:
    """PostgreSQL, many evaluations: ``COPY`` into a temporary table, then one ``INSERT … SELECT … ON CONFLICT``
    (a statement per row costs about ten times as much). The same rule: an older reading changes nothing."""
    columns = ", ".join(_EVALUATION_COLUMNS)
    updated = ", ".join(f"{column} = excluded.{column}" for column in _EVALUATION_COLUMNS[3:])
    with _staged(session, "threshold_evaluations", _EVALUATION_COLUMNS, evaluations) as cursor:
        cursor.execute(
            f"INSERT INTO threshold_evaluations ({columns}) SELECT {columns} FROM threshold_evaluations_staging "
            "ORDER BY subscription_id, period, threshold_key "
            f"ON CONFLICT (subscription_id, period, threshold_key) DO UPDATE SET {updated} "
            "WHERE threshold_evaluations.as_of <= excluded.as_of"
        )


def _notification_rows(
    engine: Engine, crossings: list[_Reached], catalog: Catalog
) -> tuple[list[dict[str, Any]], list[Crossing]]:
    """The notification of each crossing not yet notified (read before the transaction that inserts them: one
    notified meanwhile by a concurrent check is left out by the unique key then), in (subscription, threshold,
    level) order, and the crossings they tell."""
    if not crossings:
        return [], []
    with session_scope(read_only(engine)) as session:
        existing = _existing_keys(session, {(c.target.subscription.id, c.target.period.label) for c in crossings})
    rows: list[dict[str, Any]] = []
    made: list[Crossing] = []
    created_at = utcnow()  # one instant for the check's notifications (a crossing's levels are told in order)
    texts = _Texts(created_at)
    for reached in crossings:
        target = reached.target
        if (target.subscription.id, texts.period(target.period)[0], reached.spec.key, reached.level) in existing:
            continue
        values, crossing = _notification(reached, catalog, created_at, texts)
        rows.append(values)
        made.append(crossing)
    return rows, made


def _insert_notifications(session: Session, rows: list[dict[str, Any]], bound: BoundRows | None) -> set[str]:
    """Insert the notifications ``rows`` (``bound``: the same, bound for SQLite) unless already there (the unique
    key makes a concurrent insert of the same crossing do nothing); the ids this transaction inserted."""
    if not rows:
        return set()
    # INSERT … ON CONFLICT DO NOTHING (not an ORM insert per notification), and the ids this transaction created:
    # on PostgreSQL, a few by one multi-row statement RETURNING them, many through a staging table; on SQLite by
    # one executemany of the rows bound before the transaction.
    if bound is not None:
        return _executed_notifications(session, bound)
    if len(rows) <= _FEW_EVALUATIONS:
        statement = insert_for(session, NotificationRow.__table__).on_conflict_do_nothing()
        ordered = sorted(rows, key=_BY_CROSSING)  # (the unique key's locks in the order of every other path)
        return set(session.execute(statement.returning(NotificationRow.id), ordered).scalars())
    return _copy_notifications(session, rows)


def _executed_notifications(session: Session, rows: BoundRows) -> set[str]:
    """SQLite: one executemany of ``INSERT … ON CONFLICT DO NOTHING`` on the driver's cursor (a statement with
    ``RETURNING`` is sent as many multi-row statements, each built anew); the transaction holds the write lock, so
    when every row counts as inserted, every id is one of this transaction's; else the ids (new UUIDs) now stored
    are."""
    inserted = insert_bound(session.connection(), rows)
    position = rows.columns.index("id")
    ids = [row[position] for row in rows.values]
    if inserted == len(ids):
        return set(ids)
    found: set[str] = set()
    for i in range(0, len(ids), _CHUNK):
        found.update(session.scalars(select(NotificationRow.id).where(NotificationRow.id.in_(ids[i : i + _CHUNK]))))
    return found


@contextmanager
def _staged(session: Session, table: str, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Iterator[Any]:
    """PostgreSQL: a cursor once ``rows`` (their ``columns``) are copied into ``<table>_staging``, a temporary table
    like ``table`` made on the connection's first use; emptied when the block ends (and at every commit)."""
    driver: Any = session.connection().connection.dbapi_connection
    with driver.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {table}_staging (LIKE {table} INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        )
        with cursor.copy(f"COPY {table}_staging ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(tuple(row[column] for column in columns))
        yield cursor
        cursor.execute(f"DELETE FROM {table}_staging")


def _copy_notifications(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """PostgreSQL, many notifications: ``COPY`` straight into the table, in the order of the crossings' key, inside
    a savepoint; the ids of the rows inserted. If one of the crossings is already told (a concurrent check's
    notification, committed meanwhile: the unique key refuses it), the savepoint is rolled back and the rows go
    through :func:`_staged_notifications`."""
    columns = list(rows[0])
    ordered = sorted(rows, key=_BY_CROSSING)  # (the unique key's locks in the order every other path takes them)
    driver: Any = session.connection().connection.dbapi_connection
    with driver.cursor() as cursor:
        cursor.execute(f"SAVEPOINT {_NOTIFICATIONS_COPIED}")
        try:
            with cursor.copy(f"COPY notifications ({', '.join(columns)}) FROM STDIN") as copy:
                for row in ordered:
                    copy.write_row(tuple(row[column] for column in columns))
        except Exception as exc:
            if getattr(exc, "sqlstate", None) != "23505":  # unique_violation
                raise
            cursor.execute(f"ROLLBACK TO SAVEPOINT {_NOTIFICATIONS_COPIED}")
        else:
            return {row["id"] for row in rows}
    return _staged_notifications(session, columns, rows)


_BY_CROSSING = itemgetter("subscription_id", "period", "threshold_key", "level")
_NOTIFICATIONS_COPIED = "notifications_copied"


def _staged_notifications(session: Session, columns: list[str], rows: list[dict[str, Any]]) -> set[str]:
    """PostgreSQL, many notifications, some perhaps told already: ``COPY`` into a temporary table, then one ``INSERT
    … SELECT … ON CONFLICT DO NOTHING RETURNING id`` in the order of the crossings' key (multi-row statements of
    tens of thousands of values cost the driver more to send than the database to run); the ids of the rows it
    inserted."""
    listed = ", ".join(columns)
    with _staged(session, "notifications", columns, rows) as cursor:
        cursor.execute(
            f"INSERT INTO notifications ({listed}) SELECT {listed} FROM notifications_staging "
            # (the order of the other paths: Python sorts text by code point, as collation "C" does on UTF-8)
            'ORDER BY subscription_id, period COLLATE "C", threshold_key COLLATE "C", level '
            "ON CONFLICT DO NOTHING RETURNING id"
        )
        return {found[0] for found in cursor.fetchall()}


class _Texts:
    """What a check's notifications say that many of them share, worked out once: the instant, each period's label
    and bounds, each level's value (tens of thousands of notifications in a pass after a large file)."""

    def __init__(self, created_at: dt.datetime):
        self.created_at = iso_instant(created_at)
        self._periods: dict[int, tuple[str, str, str]] = {}  # by id: the check's periods live as long as this
        self._levels: dict[tuple[Decimal, int], str] = {}

    def period(self, period: Period) -> tuple[str, str, str]:
        """The period's label, first day and end, as the payload writes them."""
        found = self._periods.get(id(period))
        if found is None:
            found = self._periods[id(period)] = (period.label, period.start.isoformat(), period.end.isoformat())
        return found

    def level(self, limit: Decimal, level: int) -> str:
        found = self._levels.get((limit, level))
        if found is None:
            found = self._levels[(limit, level)] = _plain(level_value(limit, level))
        return found


def _new_id() -> str:
    """A random (version 4) UUID as text, as ``str(uuid.uuid4())`` writes it, at a third of its cost."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _notification(
    reached: _Reached, catalog: Catalog, created_at: dt.datetime, texts: _Texts
) -> tuple[dict[str, Any], Crossing]:
    """A crossing's notification row (its payload what the webhook and the e-mail say), and the crossing."""
    subscription, plan, period = reached.target.subscription, reached.target.plan, reached.target.period
    spec, level, value = reached.spec, reached.level, reached.value
    kind = "usage.threshold_crossed" if spec.kind == "usage" else "spend.threshold_crossed"
    currency = plan.currency if spec.kind == "spend" else None
    notification_id = _new_id()
    label = texts.period(period)[0]
    payload = _payload(reached, catalog, currency, texts)
    values = {
        "id": notification_id,
        "kind": kind,
        "customer_external_id": subscription.customer_external_id,
        "subscription_id": subscription.id,
        "invoice_id": None,
        "period": label,
        "threshold_key": spec.key,
        "level": level,
        "meter": spec.meter,
        "value": value,
        "limit_value": spec.limit,
        "currency": currency,
        "payload": orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode(),
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": created_at,
        "created_at": created_at,
    }
    crossing = Crossing(
        notification_id=notification_id,
        kind=kind,
        customer=subscription.customer_external_id,
        subscription_id=subscription.id,
        plan=plan.code,
        period=label,
        threshold_key=spec.key,
        meter=spec.meter,
        level=level,
        value=value,
        limit=spec.limit,
        currency=currency,
        unit=payload["unit"],
    )
    return values, crossing


def _payload(reached: _Reached, catalog: Catalog, currency: str | None, texts: _Texts) -> dict[str, Any]:
    """The notification's payload: the crossing in the words of a webhook receiver."""
    subscription, plan = reached.target.subscription, reached.target.plan
    spec, level = reached.spec, reached.level
    meter = catalog.meters.get(spec.meter) if spec.meter is not None else None
    label, start, end = texts.period(reached.target.period)
    return {
        "customer": subscription.customer_external_id,
        "subscription": subscription.id,
        "plan": plan.code,
        "plan_version": plan.version,
        "period": label,
        "period_start": start,
        "period_end": end,
        "threshold": spec.key,
        "meter": spec.meter,
        "meter_name": meter.name if meter is not None else None,
        "level": level,
        "value": str(reached.value),
        "limit": str(spec.limit),
        "level_value": texts.level(spec.limit, level),
        "currency": currency,
        "unit": meter.unit if meter is not None and spec.kind == "usage" else None,
        "customer_limit": spec.customer_limit,
        "created_at": texts.created_at,
    }


def _existing_keys(session: Session, pairs: set[tuple[int, str]]) -> set[tuple[int, str, str | None, int | None]]:
    found: set[tuple[int, str, str | None, int | None]] = set()
    ids = sorted({subscription_id for subscription_id, _ in pairs})
    periods = sorted({label for _, label in pairs})
    for i in range(0, len(ids), _CHUNK):
        n = NotificationRow
        statement = select(n.subscription_id, n.period, n.threshold_key, n.level).where(
            among(session, n.subscription_id, ids[i : i + _CHUNK]), n.period.in_(periods)
        )
        found.update((s, p, k, lv) for s, p, k, lv in session.execute(statement) if s is not None)
    return found


# -- helpers -----------------------------------------------------------------------------------------------


def _plain(number: Decimal) -> str:
    """A decimal without exponent or trailing zeros after the point: 8000, 400, 0.015."""
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
