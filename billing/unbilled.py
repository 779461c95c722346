"""Usage no invoice will carry: the accepted events of a billing period that a billing run does not rate, counted
and named with why, so that the events rated and the events unbilled add up to the events of the period.

An event of customer C on meter M at instant t of period P (a month in C's timezone; in UTC for a customer billing
has no record of) is rated when a subscription of C that the run bills covers t and its plan charges M. Otherwise
it is unbilled, for one of these reasons (``Reason``):

- ``unknown_customer``: billing has no customer record for C;
- ``before_start`` / ``after_end`` / ``no_subscription``: no subscription of C covers t (before its next one
  started, after its last one ended, or C has none at all);
- ``unknown_plan``: the subscriptions covering t are on a plan version the catalog does not have;
- ``customer_skipped``: the run skips C (a plan priced in another currency than the customer's, or another of C's
  subscriptions on a plan version the catalog does not have: C's draft is kept as it was);
- ``meter_not_charged``: the plans covering t do not charge M (or M is not in the catalog at all);
- ``unpriced``: M's charge prices its events by dimension, has no default price, and the event matches none of
  its filters (the rating engine leaves it off the invoice: ``RatedPeriod.unpriced``).

How it counts: each customer's period is cut at its subscriptions' bounds into segments, each covered by a set of
subscriptions (maybe none), and each segment's events are counted by meter. A segment that is one subscription's
whole window takes the counts the run's aggregation already made (``counted``), so a run whose subscriptions cover
the period reads no event twice (and its parts, for a charge priced by dimension: those matching no filter of a
charge without default are unpriced); the others (gaps, overlapping subscriptions, meters the catalog lacks) are
counted in one batch by ``meters.count_events``. Which customers have events at all comes from
``meters.customers_by_meter``, a skip along the aggregation index.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import pairwise
from typing import Any

from sqlalchemy import Engine

from billing.core.compose import section_window
from billing.core.domain import Customer, Subscription
from billing.core.periods import Period
from billing.db import override_tables, repository, session_scope
from billing.event_store import event_store
from billing.metering import AnyUsage, total_of
from billing.usage_windows import ResolvedPlans, UsageKey, aggregate, resolve_plans, usage_windows
from dbkit import read_only
from pricing_plans.dimensions import DimensionedUsage
from pricing_plans.models import Catalog, Plan

__all__ = ["Reason", "UnbilledUsage", "UsageAccount", "account_usage", "unbilled_usage", "unpriced_usage"]


class Reason(StrEnum):
    """Why accepted events are not billed (see the module docstring)."""

    UNKNOWN_CUSTOMER = "unknown_customer"
    BEFORE_START = "before_start"
    AFTER_END = "after_end"
    NO_SUBSCRIPTION = "no_subscription"
    UNKNOWN_PLAN = "unknown_plan"
    CUSTOMER_SKIPPED = "customer_skipped"
    METER_NOT_CHARGED = "meter_not_charged"
    UNPRICED = "unpriced"


@dataclass(frozen=True, slots=True)
class UnbilledUsage:
    """``events`` accepted events of ``customer`` on ``meter`` in the period that no invoice carries, and why:
    ``reason``, and ``detail`` in words ("before its subscription started on 2026-10-15")."""

    customer: str
    meter: str
    reason: Reason
    detail: str
    events: int

    @property
    def message(self) -> str:
        """``100 events of customer latecomer (api_calls) before its subscription started on 2026-10-15``."""
        noun = "event" if self.events == 1 else "events"
        return f"{self.events:,} {noun} of customer {self.customer} ({self.meter}) {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer": self.customer,
            "meter": self.meter,
            "reason": self.reason.value,
            "detail": self.detail,
            "events": self.events,
            "message": self.message,
        }


@dataclass
class UsageAccount:
    """The events of a period: ``rated`` by the billing run, and those it leaves unbilled, grouped by customer,
    meter and reason (in that order). ``accepted`` is their sum: every stored event of the period."""

    period: Period
    rated: int = 0
    unbilled: list[UnbilledUsage] = field(default_factory=list)

    @property
    def unbilled_events(self) -> int:
        return sum(group.events for group in self.unbilled)

    @property
    def accepted(self) -> int:
        return self.rated + self.unbilled_events

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": self.period.label,
            "accepted": self.accepted,
            "rated": self.rated,
            "unbilled_events": self.unbilled_events,
            "unbilled": [group.as_dict() for group in self.unbilled],
        }


def unbilled_usage(engine: Engine, catalog: Catalog, period: Period, *, customer: str | None = None) -> UsageAccount:
    """The account of ``period`` (of ``customer`` only, if given) as a billing run of it would rate it now."""
    with session_scope(read_only(engine)) as session:
        subscriptions = [
            s
            for s in repository.subscriptions_active_between(session, period.start, period.end)
            if customer is None or s.customer_external_id == customer
        ]
        owners = repository.customers_by_external_id(session, {s.customer_external_id for s in subscriptions})
        overrides = override_tables.overrides_of(session, {s.id for s in subscriptions})
    plans = resolve_plans(catalog, subscriptions, owners, overrides=overrides, period=period)
    return account_usage(
        engine, catalog, period, subscriptions, owners, plans, customer=customer,
        counted=_split_usage(engine, catalog, period, subscriptions, owners, plans),
    )  # fmt: skip


def _split_usage(
    engine: Engine,
    catalog: Catalog,
    period: Period,
    subscriptions: Sequence[Subscription],
    owners: Mapping[str, Customer],
    plans: ResolvedPlans,
) -> dict[int, dict[str, AnyUsage]]:
    """The usage of the subscriptions whose plan has a charge priced by dimension without default, aggregated as
    the run does (by part): what tells the events it leaves unpriced."""
    unpriced = {
        sub_id
        for sub_id, plan in plans.priced().items()
        if any(charge.is_dimensioned and not charge.has_default for charge in plan.charges)
    }
    keys = [UsageKey(s.id, period) for s in subscriptions if s.id in unpriced]
    if not keys:
        return {}
    by_id = {s.id: s for s in subscriptions}
    windows = usage_windows(keys, by_id, owners)
    usage = aggregate(engine, catalog, windows, {key: plans.plans[key.subscription] for key in windows})
    return {key.subscription: found for key, found in usage.items()}


# A window of events to count: (customer, index of its segment).
_Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class _Segment:
    """Part of a customer's period, covered by ``covering`` (no subscription: a gap)."""

    customer: str
    part: Period
    covering: tuple[Subscription, ...]


def account_usage(
    engine: Engine,
    catalog: Catalog,
    period: Period,
    subscriptions: Sequence[Subscription],
    customers: Mapping[str, Customer],
    plans: ResolvedPlans,
    *,
    customer: str | None = None,
    counted: Mapping[int, Mapping[str, AnyUsage]] | None = None,
    only: Collection[str] | None = None,
    holes: Mapping[str, Collection[Period]] | None = None,
    owned: Callable[[str], bool] | None = None,
    unrated: Mapping[str, str] | None = None,
) -> UsageAccount:
    """Count the events of ``period`` (of ``customer`` only, if given) a billing run rates, and name those it does
    not, given what the run bills: ``subscriptions`` (those covering a day of the period), their ``customers`` by
    external id (the others are looked up), their ``plans``; ``counted``: the usage the run aggregated for each
    subscription's window of the period, by subscription id. ``only``: account these customers only (those billed
    in a week or an anniversary month, when ``period`` is one); ``holes``: parts of each customer's period not to
    account here (its weeks and anniversary months, when ``period`` is a calendar month: accounted with them);
    ``owned``: account the customers it accepts only (a shard's); ``unrated``: the customers the run does not rate
    now (a subscription whose plan is gone), with why."""
    present = event_store(engine).customers_by_meter(customer)
    if only is not None:
        present = {meter: found & set(only) for meter, found in present.items()}
    if owned is not None:
        present = {meter: {c for c in found if owned(c)} for meter, found in present.items()}
    with_events = set().union(*present.values()) if present else set()
    owners = dict(customers)
    missing = with_events - owners.keys()
    if missing:
        with session_scope(read_only(engine)) as session:
            owners.update(repository.customers_by_external_id(session, missing))
    by_customer: dict[str, list[Subscription]] = {}
    for subscription in subscriptions:
        by_customer.setdefault(subscription.customer_external_id, []).append(subscription)
    segments, events = _count_segments(
        engine, catalog, period, sorted(present), sorted(with_events), owners, by_customer, counted or {}, holes or {}
    )
    skipped = _skipped_customers(by_customer, plans, owners)
    history = _gap_history(engine, segments, events, owners)
    account = _account(period, catalog, plans, segments, events, owners, skipped, history, unrated or {})
    _unpriced(account, segments, counted or {}, plans.plans, {**skipped, **(unrated or {})})
    return account


def _unpriced(
    account: UsageAccount,
    segments: Mapping[_Key, _Segment],
    counted: Mapping[int, Mapping[str, AnyUsage]],
    plans: Mapping[int, Plan],
    skipped: Mapping[str, str],
) -> None:
    """Move the events the run rates but prices at nothing (matching no filter of a charge without default)
    from ``rated`` to ``unbilled``: read off the parts the run aggregated for each subscription whose whole window
    is accounted here, on the meters no other subscription covering those days charges (an add-on beside it)."""
    by_customer: dict[str, list[_Segment]] = {}
    for segment in segments.values():
        by_customer.setdefault(segment.customer, []).append(segment)
    found: dict[tuple[str, str], int] = {}
    for customer, own in by_customer.items():
        if customer in skipped:
            continue
        for subscription in {s.id: s for segment in own for s in segment.covering}.values():
            window = section_window(subscription, account.period)
            if subscription.id not in counted or subscription.id not in plans or window is None:
                continue
            mine = [segment for segment in own if any(s.id == subscription.id for s in segment.covering)]
            if sum(segment.part.days for segment in mine) != window.days:
                continue  # part of its window is accounted elsewhere (a week, an anniversary month)
            beside = {s.id for segment in mine for s in segment.covering if s.id != subscription.id}
            for meter, n in _unpriced_events(counted[subscription.id], plans[subscription.id]).items():
                if any(other in plans and plans[other].charge_for(meter) is not None for other in beside):
                    continue  # (the other subscription's charge may price them)
                found[(customer, meter)] = found.get((customer, meter), 0) + n
    groups = _unpriced_groups(found)
    account.rated -= sum(group.events for group in groups)
    account.unbilled = sorted([*account.unbilled, *groups], key=_group_order)


def unpriced_usage(
    counted: Mapping[int, Mapping[str, AnyUsage]], subscriptions: Sequence[Subscription], plans: Mapping[int, Plan]
) -> list[UnbilledUsage]:
    """The events of the subscriptions' usage (``counted``, by subscription id) that match no filter of a charge
    without default price: rated at nothing, so unbilled (the billing periods the account leaves out: weeks and
    anniversary months)."""
    found: dict[tuple[str, str], int] = {}
    for subscription in subscriptions:
        if subscription.id in counted and subscription.id in plans:
            for meter, n in _unpriced_events(counted[subscription.id], plans[subscription.id]).items():
                key = (subscription.customer_external_id, meter)
                found[key] = found.get(key, 0) + n
    return _unpriced_groups(found)


def _unpriced_events(usage: Mapping[str, AnyUsage], plan: Plan) -> dict[str, int]:
    found: dict[str, int] = {}
    for charge in plan.charges:
        used = usage.get(charge.meter)
        if isinstance(used, DimensionedUsage) and not charge.has_default:
            n = sum(part_usage.events for part, part_usage in used.parts.items() if part.filter is None)
            if n:
                found[charge.meter] = n
    return found


def _unpriced_groups(found: Mapping[tuple[str, str], int]) -> list[UnbilledUsage]:
    detail = "matching no filter of its charge, which has no default price"
    groups = [UnbilledUsage(c, meter, Reason.UNPRICED, detail, n) for (c, meter), n in found.items()]
    return sorted(groups, key=_group_order)


def _group_order(group: UnbilledUsage) -> tuple[str, str, str, str]:
    return group.customer, group.meter, group.reason.value, group.detail


def _count_segments(
    engine: Engine,
    catalog: Catalog,
    period: Period,
    meters: list[str],
    with_events: list[str],
    owners: Mapping[str, Customer],
    by_customer: Mapping[str, list[Subscription]],
    counted: Mapping[int, Mapping[str, AnyUsage]],
    holes: Mapping[str, Collection[Period]],
) -> tuple[dict[_Key, _Segment], dict[tuple[_Key, str], int]]:
    """Cut each customer's period into segments by the subscriptions covering them, and count each segment's
    events by meter: a segment the run aggregated whole for a single subscription takes the run's counts (only
    the meters the catalog does not have are counted here); the others are counted here, every meter."""
    strangers = [m for m in meters if m not in catalog.meters]  # meters the catalog does not have (any more)
    segments: dict[_Key, _Segment] = {}
    everything: dict[_Key, tuple[str, dt.datetime, dt.datetime]] = {}  # counted here, every meter
    uncatalogued: dict[_Key, tuple[str, dt.datetime, dt.datetime]] = {}  # counted here, the strangers only
    events: dict[tuple[_Key, str], int] = {}
    for customer_id in with_events:
        owner = owners.get(customer_id)
        timezone = owner.timezone if owner is not None else "UTC"
        own = by_customer.get(customer_id, []) if owner is not None else []
        for index, (part, covering) in enumerate(_cut(period, own, holes.get(customer_id, ()))):
            key = (customer_id, index)
            segments[key] = _Segment(customer_id, part, covering)
            single = covering[0] if len(covering) == 1 else None
            if single is not None and single.id in counted and part == section_window(single, period):
                events.update(((key, meter), total_of(usage).events) for meter, usage in counted[single.id].items())
                if strangers:
                    uncatalogued[key] = (customer_id, *part.utc_window(timezone))
            else:
                everything[key] = (customer_id, *part.utc_window(timezone))
    store = event_store(engine)
    events.update(store.count_events(everything, meters))
    events.update(store.count_events(uncatalogued, strangers))
    return segments, events


def _gap_history(
    engine: Engine,
    segments: Mapping[_Key, _Segment],
    events: Mapping[tuple[_Key, str], int],
    owners: Mapping[str, Customer],
) -> dict[str, list[Subscription]]:
    """Every subscription, past or future, of the known customers with events in a gap (a segment no subscription
    covers), by customer: what tells why the gap is not covered."""
    gaps = {key[0] for (key, _), n in events.items() if n and not segments[key].covering and key[0] in owners}
    history: dict[str, list[Subscription]] = {}
    if gaps:
        with session_scope(read_only(engine)) as session:
            for subscription in repository.subscriptions_of_customers(session, gaps):
                history.setdefault(subscription.customer_external_id, []).append(subscription)
    return history


def _account(
    period: Period,
    catalog: Catalog,
    plans: ResolvedPlans,
    segments: Mapping[_Key, _Segment],
    events: Mapping[tuple[_Key, str], int],
    owners: Mapping[str, Customer],
    skipped: Mapping[str, str],
    history: Mapping[str, list[Subscription]],
    unrated: Mapping[str, str],
) -> UsageAccount:
    """Sort the counted events into those the run rates and those it does not, the latter grouped by customer,
    meter and why (``unrated``: customers the run does not rate now although their plan charges the meter)."""
    charged = {sub_id: frozenset(charge.meter for charge in plan.charges) for sub_id, plan in plans.plans.items()}
    account = UsageAccount(period)
    groups: dict[tuple[str, str, Reason, str], int] = {}
    for (key, meter), n in events.items():
        if not n:
            continue
        segment = segments[key]
        if segment.customer not in owners:
            why: tuple[Reason, str] | None = (Reason.UNKNOWN_CUSTOMER, "of which billing has no customer record")
        elif not segment.covering:
            why = _gap(segment, history.get(segment.customer, []))
        elif segment.customer not in skipped and any(meter in charged.get(s.id, ()) for s in segment.covering):
            why = None  # rated, unless the customer is not rated now at all
            if segment.customer in unrated:
                why = Reason.CUSTOMER_SKIPPED, f"while the run skips the customer: {unrated[segment.customer]}"
        else:
            why = _covered(segment, meter, plans, skipped, catalog)
        if why is None:
            account.rated += n
        else:
            group = (segment.customer, meter, *why)
            groups[group] = groups.get(group, 0) + n
    account.unbilled = [
        UnbilledUsage(customer_id, meter, reason, detail, n)
        for (customer_id, meter, reason, detail), n in sorted(groups.items())
    ]
    return account


def _cut(
    period: Period, subscriptions: Sequence[Subscription], holes: Collection[Period] = ()
) -> list[tuple[Period, tuple[Subscription, ...]]]:
    """``period`` cut at the bounds of the parts the subscriptions cover: each piece with the subscriptions that
    cover it (none: a gap); the pieces inside ``holes`` left out."""
    windows = [(s, part) for s in subscriptions if (part := section_window(s, period)) is not None]
    inside = [
        Period(max(h.start, period.start), min(h.end, period.end))
        for h in holes
        if h.start < period.end and period.start < h.end
    ]
    bounds = sorted(
        {period.start, period.end, *(p.start for _, p in windows), *(p.end for _, p in windows)}
        | {day for hole in inside for day in (hole.start, hole.end)}
    )
    return [
        (Period(start, end), tuple(s for s, part in windows if part.start <= start and end <= part.end))
        for start, end in pairwise(bounds)
        if not any(hole.start <= start and end <= hole.end for hole in inside)
    ]


def _skipped_customers(
    by_customer: Mapping[str, list[Subscription]], plans: ResolvedPlans, owners: Mapping[str, Customer]
) -> dict[str, str]:
    """The customers the billing run skips (it rates none of their usage), with why: one of their subscriptions is
    priced in another currency than theirs (as ``billing.run`` decides)."""
    foreign = plans.foreign_currency
    skipped: dict[str, str] = {}
    for customer_id, own in by_customer.items():
        owner = owners.get(customer_id)
        if owner is not None and any(s.id in foreign and s.id in plans.plans for s in own):
            skipped[customer_id] = f"plan currency differs from the customer's {owner.currency}"
    return skipped


def _gap(segment: _Segment, history: Sequence[Subscription]) -> tuple[Reason, str]:
    """Why no subscription covers ``segment``: before the customer's next subscription, after its last one, or
    none at all."""
    lasting = [s for s in history if s.end_date is None or s.end_date > s.start_date]
    ended = [s for s in lasting if s.end_date is not None and s.end_date <= segment.part.start]
    coming = [s for s in lasting if s.start_date >= segment.part.end]
    if ended:
        last = max(ended, key=lambda s: (s.end_date, s.id))
        assert last.end_date is not None
        return Reason.AFTER_END, f"after its subscription ended on {last.end_date.isoformat()}"
    if coming:
        first = min(coming, key=lambda s: (s.start_date, s.id))
        return Reason.BEFORE_START, f"before its subscription started on {first.start_date.isoformat()}"
    return Reason.NO_SUBSCRIPTION, "while it has no subscription"


def _covered(
    segment: _Segment, meter: str, plans: ResolvedPlans, skipped: Mapping[str, str], catalog: Catalog
) -> tuple[Reason, str] | None:
    """None if a subscription covering ``segment`` charges ``meter`` (rated); otherwise why not."""
    if segment.customer in skipped:
        return Reason.CUSTOMER_SKIPPED, f"while the run skips the customer: {skipped[segment.customer]}"
    priced = [s for s in segment.covering if s.id in plans.plans]
    if not priced:
        first = segment.covering[0]
        return (
            Reason.UNKNOWN_PLAN,
            f"while its subscription {first.id} is on plan {first.plan_code} version {first.plan_version}, which "
            "the catalog does not have",
        )
    if any(plans.plans[s.id].charge_for(meter) is not None for s in priced):
        return None
    if meter not in catalog.meters:
        return Reason.METER_NOT_CHARGED, "on a meter the catalog does not have"
    named = ", ".join(sorted({f"{plans.plans[s.id].code} v{plans.plans[s.id].version}" for s in priced}))
    return Reason.METER_NOT_CHARGED, f"on a meter its plan {named} does not charge"
