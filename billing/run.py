"""The billing run: every subscription active in a period → one draft invoice per customer, written once.

load scope → aggregate → load what was billed → rate → write (→ finalize), each stage a function, timed:
- load (``_load_scope``): the subscriptions overlapping the period, their customers and plan versions (a few
  queries);
- aggregate (``_aggregate``): one batched aggregation of every subscription's usage window (not a query per
  customer), and of the earlier periods that received late usage (``billing.usage_windows``, keyed by
  ``UsageKey``); and (``_account``) how many of the period's events that rates, and the ones no invoice will carry
  (no subscription covering them, a meter the plan does not charge, …: ``billing.unbilled``), each named in the
  report; then (``_load_billed``) what invoices already billed for those periods and for the in-advance fees
  being adjusted;
- rate: pure (``billing.core.compose``); a big run is rated by forked worker processes, chunk by chunk, while this
  process writes the chunks they send back;
- write: each customer's invoice in its own transaction, so a run killed at any point and run again gives the
  same invoices as an uninterrupted run; an issued invoice is never touched; drafts are refreshed.

``RunReport.seconds`` splits the run's wall time into those phases ("rate" is the time spent waiting for rated
drafts once rating overlaps writing) and gives ``rating``, the time spent rating, wherever it ran.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field, replace
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from billing import credits, invoicing
from billing.approval import ApprovalPolicy, issuable
from billing.config import get_settings
from billing.core.compose import (
    BilledKey,
    LateUsage,
    Section,
    compose_opening_invoice,
    compose_period_invoice,
    opening_key,
    period_key,
)
from billing.core.coupons import AppliedCoupon
from billing.core.domain import Customer, Subscription
from billing.core.fees import (
    arrears_fee_left_unbilled,
    billed_and_paid,
    credited_as_billed,
    fee_period_to_adjust,
    opening_fee,
    rate_fee,
    schedule_of,
)
from billing.core.overrides import Negotiated, fee_anchor, fee_period_repriced
from billing.core.periods import LATE_USAGE_MONTHS, Period, Schedule, has_begun_anywhere
from billing.core.periods import month as calendar_month
from billing.core.shards import Shard
from billing.core.tax import TaxRules
from billing.coupons import applied_coupons
from billing.db import override_tables, repository, session_scope
from billing.errors import ConflictError
from billing.event_store import event_store
from billing.invoicing import check_period_begun, check_period_can_close, check_period_finalizable, clock
from billing.metering import AnyUsage, late_event_periods
from billing.notify.outbox import queue_invoices_finalized
from billing.progressive import billed_progressively
from billing.unbilled import UnbilledUsage, UsageAccount, account_usage
from billing.usage_windows import (
    PlanProblem,
    ResolvedPlans,
    UsageKey,
    aggregate,
    charged_usage,
    resolve_plans,
    usage_windows,
)
from dbkit.collection import cyclic_collection_paused
from dbkit.dialect import read_only
from dbkit.forkpool import can_fork, fork_pool
from invoices import store
from invoices.model import DraftInvoice, Invoice, InvoiceLine, InvoiceScope, InvoiceStatus, LineKind
from pricing_plans.errors import AmountOutOfRangeError
from pricing_plans.models import BillingAnchor, Catalog, Interval, Plan
from pricing_plans.money import ZERO

__all__ = [
    "PeriodsApart",
    "RunReport",
    "finalize_after_run",
    "finalize_billing_period",
    "finalize_draft_fresh",
    "finalize_period",
    "finalize_period_fresh",
    "held_customers",
    "periods_apart",
    "run_billing",
    "usage_account",
    "waiting_for_earlier",
]


@dataclass
class RunReport:
    """What a billing run did."""

    period: Period
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    issued_untouched: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    totals: dict[str, Decimal] = field(default_factory=dict)
    invoices: int = 0
    customers: int = 0
    events: int = 0  # the period's usage events it rated (late events of earlier periods aside)
    unbilled: list[UnbilledUsage] = field(default_factory=list)  # the period's events no invoice carries, and why
    late_lines: int = 0
    finalized: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    rating_workers: int = 0  # worker processes that rated the drafts (0: rated in this process)
    removed: list[str] = field(default_factory=list)  # drafts of the period it deleted: nothing to bill now
    periods: list[Period] = field(default_factory=list)  # the weeks and anniversary months billed beside the month
    unrated: set[str] = field(default_factory=set)  # customers among the skipped whose drafts it left as they were
    # drafts its finalization left because their customer has an earlier one unissued (also among the skipped)
    waiting: list[tuple[str, str]] = field(default_factory=list)

    @property
    def unbilled_events(self) -> int:
        return sum(group.events for group in self.unbilled)

    @property
    def accepted(self) -> int:
        """Every stored usage event of the period (in each customer's timezone): rated or unbilled."""
        return self.events + self.unbilled_events

    def count(self, action: str) -> None:
        if action == "created":
            self.created += 1
        elif action == "updated":
            self.updated += 1
        elif action == "unchanged":
            self.unchanged += 1
        else:
            self.issued_untouched += 1


class _Clock:
    def __init__(self, report: RunReport):
        self.report = report
        self.started = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.report.seconds[phase] = self.report.seconds.get(phase, 0.0) + now - self.started
        self.started = now


def run_billing(
    engine: Engine,
    catalog: Catalog,
    period: Period,
    *,
    customer: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    now: dt.datetime | None = None,
    workers: int | None = None,
    only: Collection[Period] | None = None,
    shard: Shard | None = None,
) -> RunReport:
    """Write (or refresh) the draft invoices of every billing period whose last day falls in ``period`` (a
    calendar month): one per customer and billing period — the month itself for plans billed on calendar months,
    and each anniversary month or week that ends in it — plus opening invoices for subscriptions with an
    in-advance fee that start in them. A period that has not begun is refused (``PeriodNotBegunError``): the
    current one is billed as drafts (a preview), a period to come never (a week that has not begun is left for a
    later run).

    ``now``: the instant of the run (default: the clock), up to which received usage counts. ``only``: bill just
    these of those billing periods (the scheduler bills a week as it ends, before its month has). ``shard``: bill
    only the customers of that shard (``billing.core.shards``) and touch no other customer's draft: the runs of
    every shard of N, one after another or at the same time, write what one run writes."""
    check_period_begun(period, now)
    billing_periods = _billing_periods(engine, catalog, period, customer, now, shard)
    report = RunReport(period=period)
    customers: set[str] = set()
    for billing_period in billing_periods.periods:
        if only is not None and billing_period not in only:
            continue
        main = billing_period == period
        part, billed = _run_period(
            engine, catalog, billing_period, billing_periods, customer,
            progress=progress if main else None, now=now, workers=workers,
        )
        customers |= billed
        _merge(report, part, main=main)
    report.customers = len(customers)
    report.unbilled = _merged(report.unbilled)
    # (the drafts of a customer with a subscription whose plan is gone are kept in every period: never issued)
    report.unrated |= {p.customer for p in billing_periods.unknown}
    report.skipped += [(p.customer, p.message) for p in billing_periods.unknown]
    report.skipped = list(dict.fromkeys(report.skipped))  # (one message per week it was found in: once)
    if only is None:
        report.removed += _remove_drafts_of_unbilled_periods(engine, billing_periods, customer, report.unrated)
    return report


def usage_account(engine: Engine, catalog: Catalog, month: Period, *, customer: str | None = None) -> UsageAccount:
    """The events of the billing periods ``run_billing`` of ``month`` bills (of ``customer`` only, if given) —
    the month's and those of its weeks and anniversary months, each accounted as the run accounts them — rated
    or left unbilled, with why: what ``billing usage unbilled`` shows, without billing anything."""
    billing_periods = _billing_periods(engine, catalog, month, customer, None)
    account = UsageAccount(month)
    for period in billing_periods.periods:
        report = RunReport(period=period)
        scope = _load_scope(engine, catalog, period, billing_periods, customer, report)
        _account(engine, catalog, scope, _unpriced_usage(engine, catalog, scope), report, billing_periods)
        account.rated += report.events
        account.unbilled += report.unbilled
    account.unbilled = _merged(account.unbilled)
    return account


def _unpriced_usage(engine: Engine, catalog: Catalog, scope: _Scope) -> dict[UsageKey, dict[str, AnyUsage]]:
    """The usage of the scope's subscriptions whose plan has a charge priced by dimension without default,
    aggregated as the run does (by part): what tells the events it leaves unpriced (the others need no
    aggregation to be accounted)."""
    plans = scope.plans.plans
    keys = [
        UsageKey(s.id, scope.period)
        for s in scope.subscriptions
        if s.id in plans and any(c.is_dimensioned and not c.has_default for c in plans[s.id].charges)
    ]
    if not keys:
        return {}
    by_key = {key: scope.plans.for_period(key.subscription, key.period) for key in keys}
    windows = usage_windows(keys, {s.id: s for s in scope.subscriptions}, scope.customers)
    return aggregate(engine, catalog, windows, by_key)


def _merged(groups: list[UnbilledUsage]) -> list[UnbilledUsage]:
    """The unbilled groups of the run's periods as one list: a customer's events left unbilled for one reason in
    two of its periods (before its start, in the month and in its first week) are one group."""
    events: dict[tuple[str, str, str, str], int] = {}
    for group in groups:
        key = (group.customer, group.meter, group.reason.value, group.detail)
        events[key] = events.get(key, 0) + group.events
    by_key = {(g.customer, g.meter, g.reason.value, g.detail): g for g in groups}
    return [replace(by_key[key], events=n) for key, n in sorted(events.items())]


def _remove_drafts_of_unbilled_periods(
    engine: Engine, billing_periods: _BillingPeriods, customer: str | None, unrated: Collection[str] = ()
) -> list[str]:
    """Delete the period drafts of the weeks and anniversary months ending in the month that the run no longer
    bills (no subscription is billed in them now: ended before, or moved to another plan): each billed period's
    own run removed its stale drafts already. The drafts of the customers the run could not rate (``unrated``:
    a plan gone from the catalog, whose subscriptions cannot say how they are billed) are kept, as every run
    keeps them."""
    month, billed = billing_periods.month, set(billing_periods.periods)
    removed: list[str] = []

    def owned(owner: str) -> bool:
        return owner not in unrated and billing_periods.owns(owner)

    with session_scope(engine) as session:
        for start, end in sorted(store.draft_periods(session, month.start, month.end, customer)):
            if Period(start, end) not in billed:
                removed += store.remove_stale_drafts(session, start, (), customer, period_end=end, owned=owned)
    return removed


@dataclass(frozen=True)
class _BillingPeriods:
    """The billing periods a run of a month bills (in order of their ends, the month itself among them) and who
    is billed in each.

    Attributes:
      month: the run's period.
      members: the subscriptions billed in each billing period other than ``month`` (those whose plan bills
        weekly, or from their start day); every other subscription is billed in ``month``, except those of
        ``apart``.
      late_owner: the billing period whose invoice carries a customer's late usage of earlier periods (its last
        one in the run); ``month`` for a customer not listed.
      customers: the customers billed in each billing period of ``members``.
      cells: each customer's billing periods other than calendar months that share a day with ``month`` (those
        ending in it and the one running on past its end): the usage of their days is accounted with them, not
        with the month.
    """

    month: Period
    members: dict[Period, set[int]]
    late_owner: dict[str, Period]
    customers: dict[Period, set[str]] = field(default_factory=dict)
    cells: dict[str, set[Period]] = field(default_factory=dict)
    apart: set[int] = field(default_factory=set)  # billed on weeks or anniversary months: never in the month
    month_customers: set[str] = field(default_factory=set)  # with a subscription billed in the month
    shard: Shard | None = None  # the run bills this shard's customers only
    unknown: tuple[PlanProblem, ...] = ()  # subscriptions whose plan the catalog lacks (which periods bill them?)
    elsewhere: frozenset[int] = field(init=False)  # the subscriptions billed in a period other than the month

    def __post_init__(self) -> None:
        object.__setattr__(self, "elsewhere", frozenset(self.apart).union(*self.members.values()))

    @property
    def periods(self) -> list[Period]:
        return sorted({self.month, *self.members}, key=lambda p: (p.end, p.start))

    def owns(self, customer: str) -> bool:
        """Whether the customer is the run's to bill (every customer without a shard)."""
        return self.shard is None or self.shard.owns(customer)

    def bills(self, period: Period, subscription: Subscription) -> bool:
        if period == self.month:
            return subscription.id not in self.elsewhere
        return subscription.id in self.members.get(period, set())


def _billing_periods(
    engine: Engine, catalog: Catalog, month: Period, customer: str | None, now: dt.datetime | None,
    shard: Shard | None = None,
) -> _BillingPeriods:
    """The billing periods whose last day falls in ``month``: of each subscription whose plan does not bill it on
    calendar months (a week or an anniversary month), when the subscription covers a day of it, ended as it
    began, or ended on its start day inside it (an opening fee to give back), and it has begun somewhere."""
    instant = clock(now)
    with session_scope(read_only(engine)) as session:
        # a billing period ending in the month began at most 31 days before the month
        window = Period(month.start - dt.timedelta(days=31), month.end)
        found = repository.subscriptions_active_between(session, window.start, window.end)
        found += repository.subscriptions_ended_as_they_began(session, window, customer)
    if customer is not None:
        found = [s for s in found if s.customer_external_id == customer]
    if shard is not None:
        found = [s for s in found if shard.owns(s.customer_external_id)]
    resolved = resolve_plans(catalog, found)
    plans = resolved.plans
    found_periods = _BillingPeriods(month, {}, {})
    for subscription in found:
        plan = plans.get(subscription.id)
        if plan is None or (plan.interval is not Interval.WEEK and plan.billing_anchor is BillingAnchor.CALENDAR):
            continue  # billed on calendar months: in the month
        schedule = schedule_of(subscription, plan)
        if schedule.billing_period(month.start) != month:  # (an anniversary month from the 1st is the month)
            found_periods.apart.add(subscription.id)
        for period in schedule.billing_periods_ending_in(month):
            covers = (
                subscription.overlaps(period.start, period.end)
                or subscription.end_date == period.start
                or (subscription.end_date == subscription.start_date and period.contains(subscription.start_date))
            )
            if period != month and covers and has_begun_anywhere(period, instant):
                _add_member(found_periods, subscription, period)
        _add_cells(found_periods, subscription, schedule)
    elsewhere = found_periods.apart.union(*found_periods.members.values())
    # (the day before the month too: a subscription that ended as the month began may owe a fee adjustment in it)
    month_customers = {
        s.customer_external_id
        for s in found
        if s.id not in elsewhere and s.overlaps(month.start - dt.timedelta(days=1), month.end)
    }
    return _BillingPeriods(
        month, found_periods.members, found_periods.late_owner, found_periods.customers, found_periods.cells,
        found_periods.apart, month_customers, shard, _unknown_here(engine, month, resolved.unknown),
    )


def _unknown_here(engine: Engine, month: Period, unknown: list[PlanProblem]) -> tuple[PlanProblem, ...]:
    """The subscriptions whose plan is gone that may be billed in the month: those sharing a day with it, and
    those that ended before it but share a day with a draft of their customer's ending in it (a week or an
    anniversary month that began in the month before)."""
    found = []
    for problem in unknown:
        subscription = problem.subscription
        if subscription.overlaps(month.start, month.end):
            found.append(problem)
            continue
        with session_scope(read_only(engine)) as session:
            drafts = store.draft_periods(session, month.start, month.end, problem.customer)
        if any(Period(start, end) != month and subscription.overlaps(start, end) for start, end in drafts):
            found.append(problem)
    return tuple(found)


def _add_member(found: _BillingPeriods, subscription: Subscription, period: Period) -> None:
    owner = subscription.customer_external_id
    found.members.setdefault(period, set()).add(subscription.id)
    found.customers.setdefault(period, set()).add(owner)
    last = found.late_owner.get(owner, period)
    found.late_owner[owner] = max(last, period, key=lambda p: (p.end, p.start))


def _add_cells(found: _BillingPeriods, subscription: Subscription, schedule: Schedule) -> None:
    """The subscription's billing periods that share a day with the month and that it covers a day of."""
    month = found.month
    period = schedule.billing_period(month.start)
    while period.start < month.end:
        if period != month and subscription.overlaps(period.start, period.end):
            found.cells.setdefault(subscription.customer_external_id, set()).add(period)
        period = schedule.next_billing_period(period)


@dataclass(frozen=True)
class PeriodsApart:
    """The billing periods other than the month itself whose last day falls in ``month`` (weeks, anniversary
    months), with the customers billed in each (``customers``), and the subscriptions billed in them rather than
    in the month (``subscriptions``)."""

    month: Period
    customers: dict[Period, frozenset[str]]
    subscriptions: frozenset[int]
    month_customers: frozenset[str]  # those with a subscription billed in the month (or ended as it began)


def periods_apart(engine: Engine, catalog: Catalog, month: Period, *, now: dt.datetime | None = None) -> PeriodsApart:
    """What ``run_billing`` of ``month`` would bill besides the month: its weeks and anniversary months (those that
    have begun somewhere at ``now``), and who is billed in each; and who is billed in the month itself."""
    found = _billing_periods(engine, catalog, month, None, now)
    customers = {period: frozenset(owners) for period, owners in found.customers.items()}
    return PeriodsApart(month, customers, found.elsewhere, frozenset(found.month_customers))


def _merge(report: RunReport, part: RunReport, *, main: bool) -> None:
    """Add what the run of one billing period did to the run's report."""
    for name in ("created", "updated", "unchanged", "issued_untouched", "invoices", "events", "late_lines"):
        setattr(report, name, getattr(report, name) + getattr(part, name))
    report.skipped += part.skipped
    report.unrated |= part.unrated
    report.unbilled += part.unbilled
    report.finalized += part.finalized
    report.removed += part.removed
    for currency, total in part.totals.items():
        report.totals[currency] = report.totals.get(currency, ZERO) + total
    for phase, seconds in part.seconds.items():
        report.seconds[phase] = report.seconds.get(phase, 0.0) + seconds
    report.rating_workers = max(report.rating_workers, part.rating_workers)
    if not main:
        report.periods.append(part.period)


def _run_period(
    engine: Engine,
    catalog: Catalog,
    period: Period,
    billing_periods: _BillingPeriods,
    customer: str | None,
    *,
    progress: Callable[[int, int], None] | None,
    now: dt.datetime | None,
    workers: int | None,
) -> tuple[RunReport, set[str]]:
    """Bill one billing period: its report, and the customers it wrote an invoice for."""
    with cyclic_collection_paused():  # many small, short-lived objects beside large long-lived ones (usage)
        report = RunReport(period=period)
        clock = _Clock(report)
        # Every event received up to this instant is committed and counted; later ones are late for the drafts.
        usage_as_of = now or event_store(engine).ingestion_cutoff()
        scope = _load_scope(engine, catalog, period, billing_periods, customer, report)
        clock.lap("load")
        usage = _aggregate(engine, catalog, scope, report)
        _account(engine, catalog, scope, usage, report, billing_periods)
        billed = _load_billed(engine, catalog, scope)
        clock.lap("aggregate")
        inputs = _rating_inputs(catalog, scope, usage, billed, usage_as_of)
        stored = _stored_drafts(engine, scope)
        clock.lap("rate")
        written = _write_drafts(engine, inputs, scope, stored, workers, progress, clock)
        _settle(engine, scope, written, usage_as_of, report)
        clock.lap("write")
        return report, written.customers


# What issued invoices billed for an earlier period: {(customer, subscription): {(meter, dimension) (None: the
# true-up): amount}}.
BilledUsage = dict[tuple[str, int | None], dict[BilledKey, Decimal]]
# A subscription's fee period, by (subscription id, fee period start).
FeeKey = tuple[int, dt.date]


@dataclass(frozen=True)
class _Scope:
    """Who the run bills and with which plans: what the load stage found.

    Attributes:
      subscriptions: the subscriptions overlapping the period (of ``customer``, if the run is limited to one).
      ended_as_it_began: those that ended the day the period began (an in-advance fee may need adjusting).
      late_periods: (customer, earlier period) pairs whose issued invoice lacks events received since.
      late_subscriptions: the subscriptions active in those periods, of those customers.
      customers: every customer billed, by external id; ``customer_ids`` are their ids, found or not.
      plans: the plan version of each subscription the catalog knows.
    """

    period: Period
    customer: str | None
    subscriptions: list[Subscription]
    ended_as_it_began: list[Subscription]
    late_periods: list[tuple[str, Period]]
    late_subscriptions: list[Subscription]
    customers: dict[str, Customer]
    customer_ids: set[str]
    plans: ResolvedPlans
    late_by_customer: dict[str, list[Period]]
    late_subscriptions_by_customer: dict[str, list[Subscription]]  # those whose plan is known
    coupons: dict[str, list[AppliedCoupon]]  # the coupons applied to each customer, as of the period
    shard: Shard | None = None  # the run bills this shard's customers only
    unrated: Mapping[str, str] = field(default_factory=dict)  # customers not billed now (a plan gone), with why
    kept: frozenset[str] = frozenset()  # customers whose drafts stay, whatever the run writes (a plan gone)

    def owned(self) -> Callable[[str], bool] | None:
        """The shard's test of a customer (None: every customer is the run's)."""
        return None if self.shard is None else self.shard.owns


def _load_scope(
    engine: Engine,
    catalog: Catalog,
    period: Period,
    billing_periods: _BillingPeriods,
    customer: str | None,
    report: RunReport,
) -> _Scope:
    """load: the subscriptions in the period, the earlier periods with late usage, their customers and plans."""
    with session_scope(read_only(engine)) as session:
        # the day before the period too: a subscription that ended as the period began may owe a fee adjustment
        found = repository.subscriptions_active_between(session, period.start - dt.timedelta(days=1), period.end)
        found = [s for s in found if billing_periods.bills(period, s) and billing_periods.owns(s.customer_external_id)]
        if customer is not None:
            found = [s for s in found if s.customer_external_id == customer]
        subscriptions = [s for s in found if s.overlaps(period.start, period.end)]
        ended_as_it_began = [s for s in found if s.end_date == period.start]
        # a subscription cancelled (or changed) on its start day covers no day, but its opening invoice, if issued,
        # billed a fee in advance that its period's invoice gives back
        ended_as_it_began += [
            s for s in repository.subscriptions_ended_as_they_began(session, period, customer)
            if billing_periods.bills(period, s) and billing_periods.owns(s.customer_external_id)
        ]
        late_periods = [
            (c, late)
            for c, late in late_event_periods(session, period, customer, lookback=LATE_USAGE_MONTHS)
            if billing_periods.late_owner.get(c, billing_periods.month) == period and billing_periods.owns(c)
        ]
        customer_ids = {s.customer_external_id for s in subscriptions}
        customer_ids |= {c for c, _ in late_periods}
        customer_ids |= {s.customer_external_id for s in ended_as_it_began}
        customers = repository.customers_by_external_id(session, customer_ids)
        late_subscriptions = _subscriptions_for_late(session, late_periods)
        everyone = [*subscriptions, *ended_as_it_began, *late_subscriptions]
        overrides = override_tables.overrides_of(session, {s.id for s in everyone})
        coupons = applied_coupons(session, customer_ids, period)
    plans = resolve_plans(catalog, everyone, customers, overrides=overrides, period=period)
    report.skipped += [(problem.customer, problem.message) for problem in plans.unknown]
    late_by_customer: dict[str, list[Period]] = {}
    for customer_id, late_period in late_periods:
        late_by_customer.setdefault(customer_id, []).append(late_period)
    late_subscriptions_by_customer: dict[str, list[Subscription]] = {}
    for subscription in late_subscriptions:
        if subscription.id in plans.plans:
            late_subscriptions_by_customer.setdefault(subscription.customer_external_id, []).append(subscription)
    late_periods = [  # each late period is re-rated with the subscriptions billed in periods like it
        (c, late)
        for c, late in late_periods
        if any(_bills(s, plans.plans[s.id], late) for s in late_subscriptions_by_customer.get(c, ()))
    ]
    unrated = _unrated(period, plans, billing_periods, report, [*subscriptions, *ended_as_it_began])
    return _Scope(
        period, customer, subscriptions, ended_as_it_began, late_periods, late_subscriptions, customers,
        customer_ids, plans, late_by_customer, late_subscriptions_by_customer, coupons, billing_periods.shard,
        unrated=unrated,
        kept=frozenset(p.customer for p in billing_periods.unknown),
    )


def _may_bill(subscription: Subscription, period: Period) -> bool:
    """Whether ``period`` may bill ``subscription`` (as ``_billing_periods`` decides: it covers a day of it, ended
    as it began, or ended on its start day inside it)."""
    return (
        subscription.overlaps(period.start, period.end)
        or subscription.end_date == period.start
        or (subscription.end_date == subscription.start_date and period.contains(subscription.start_date))
    )


def _unrated(
    period: Period,
    plans: ResolvedPlans,
    billing_periods: _BillingPeriods,
    report: RunReport,
    billed_here: list[Subscription],
) -> dict[str, str]:
    """The customers the run does not rate in ``period``, with why: a subscription of theirs in it whose plan is
    gone, or one billed in another of the month's periods as far as the run can tell (the plan said which) whose
    days this period shares (added to ``report.skipped``)."""
    elsewhere = [p for p in billing_periods.unknown if _may_bill(p.subscription, period)]
    known_problems = {p.subscription.id for p in plans.unknown}
    report.skipped += [(p.customer, p.message) for p in elsewhere if p.subscription.id not in known_problems]
    # (a late-usage subscription whose plan is gone only leaves its late lines out: listed, rated again later)
    billed = {s.id for s in billed_here}
    unrated = {p.customer: p.message for p in reversed([*plans.unknown, *elsewhere]) if p.subscription.id in billed
               or p in elsewhere}  # fmt: skip
    report.unrated |= set(unrated)
    return unrated


def _aggregate(
    engine: Engine, catalog: Catalog, scope: _Scope, report: RunReport
) -> dict[UsageKey, dict[str, AnyUsage]]:
    """aggregate: one batch for the period's subscriptions and the earlier periods with late usage."""
    plans = scope.plans.plans
    keys = [UsageKey(s.id, scope.period) for s in scope.subscriptions if s.id in plans]
    keys += [
        UsageKey(subscription.id, late_period, late=True)
        for customer_id, own_late_periods in scope.late_by_customer.items()
        if customer_id in scope.customers
        for subscription in scope.late_subscriptions_by_customer.get(customer_id, ())
        for late_period in own_late_periods
        if _bills(subscription, plans[subscription.id], late_period)
    ]
    by_id = {s.id: s for s in [*scope.subscriptions, *scope.late_subscriptions]}
    # a charge priced by dimension is split by the plan pricing that period (a negotiated price then, if any)
    by_key = {key: scope.plans.for_period(key.subscription, key.period) for key in keys}
    return aggregate(engine, catalog, usage_windows(keys, by_id, scope.customers), by_key)


def _account(
    engine: Engine, catalog: Catalog, scope: _Scope, usage: Mapping[UsageKey, Mapping[str, AnyUsage]],
    report: RunReport, billing_periods: _BillingPeriods,
) -> None:
    """aggregate, the end: how many of the period's events the run rates, and which it leaves unbilled, with why
    (``billing.unbilled``; the windows just aggregated are not counted again). Each customer's time is accounted
    once: a week or an anniversary month with the run that bills it, whole, for the customers billed in it; the
    month for everyone else, and for those customers the month's days outside their weeks and anniversary months
    (``cells``: those running on past the month's end are accounted by the run of the month they end in)."""
    counted = {key.subscription: found for key, found in usage.items() if not key.late and key.period == scope.period}
    if scope.period == billing_periods.month:
        account = account_usage(
            engine, catalog, scope.period, scope.subscriptions, scope.customers, scope.plans,
            customer=scope.customer, counted=counted, holes=billing_periods.cells, owned=scope.owned(),
            unrated=scope.unrated,
        )
    else:
        owners = billing_periods.customers.get(scope.period, set())
        subscriptions, plans = _covering(engine, catalog, scope, owners)
        account = account_usage(
            engine, catalog, scope.period, subscriptions, scope.customers, plans,
            customer=scope.customer, counted=counted, only=owners, unrated=scope.unrated,
        )
    report.events = account.rated
    report.unbilled = account.unbilled


def _covering(
    engine: Engine, catalog: Catalog, scope: _Scope, owners: Collection[str]
) -> tuple[list[Subscription], ResolvedPlans]:
    """Every subscription of ``owners`` covering a day of the scope's period (those billed in it, and any billed
    on calendar months beside them, which rate the usage of these days too), with their plans."""
    billed = {s.id for s in scope.subscriptions}
    with session_scope(read_only(engine)) as session:
        found = repository.subscriptions_active_between(
            session, scope.period.start, scope.period.end, customers=sorted(owners)
        )
        others = [s for s in found if s.id not in billed]
        if not others:
            return scope.subscriptions, scope.plans
        subscriptions = [*scope.subscriptions, *others]
        overrides = override_tables.overrides_of(session, {s.id for s in subscriptions})
    return subscriptions, resolve_plans(
        catalog, subscriptions, scope.customers, overrides=overrides, period=scope.period
    )


@dataclass(frozen=True)
class _Billed:
    """What invoices already bill that this run's drafts must take into account.

    Attributes:
      late: for each earlier period with late usage, what its invoices billed.
      adjustable: the fee period of each subscription that leaves it before its end, its in-advance fee to be
        adjusted to the days it ran.
      fees: what invoices bill as the fee of those fee periods (the opening drafts this run writes counted with
        the amount it composes now).
      progressive: what the progressive invoices of the period billed, by subscription (plans with progressive
        billing only): the period's invoice bills the rest.
      earlier: the lines of the period's progressive invoices of each customer holding a coupon (their discounts
        count in the period's).
      fees_paid: what the discounts of the invoices that billed them left of those fees, where they took something.
      arrears: the fee period of each subscription that left it as the period began, whose in-arrears fee may be
        left unbilled (``fees.arrears_fee_left_unbilled``); what invoices billed of it is in ``fees``.
    """

    late: dict[Period, BilledUsage]
    adjustable: dict[int, Period]
    fees: dict[FeeKey, Decimal]
    progressive: dict[int, dict[BilledKey, Decimal]] = field(default_factory=dict)
    earlier: dict[str, list[InvoiceLine]] = field(default_factory=dict)
    fees_paid: dict[FeeKey, Decimal] = field(default_factory=dict)
    arrears: dict[int, Period] = field(default_factory=dict)


def _load_billed(engine: Engine, catalog: Catalog, scope: _Scope) -> _Billed:
    """load what was billed: for the late periods, and the in-advance fees of subscriptions ending early."""
    with session_scope(read_only(engine)) as session:
        late = _billed_late(session, scope)
        adjustable = _adjustable_fees(scope)
        arrears = {
            s.id: fee_period
            for s in scope.ended_as_it_began
            if s.id in scope.plans.plans
            and (fee_period := arrears_fee_left_unbilled(s, scope.plans.plans[s.id], scope.period)) is not None
        }
        fees, paid = _billed_fees(session, catalog, scope, adjustable | arrears)
        owners = store.customers_with_progressive_invoices(session, scope.period.start) & scope.customer_ids
        progressive = billed_progressively(session, owners, scope.period)
        # (one indexed query found whether any customer of the run has a progressive invoice in the period)
        earlier = store.progressive_lines(session, owners & set(scope.coupons), scope.period.start, scope.period.end)
    return _Billed(late, adjustable, fees, progressive, earlier, paid, arrears)


def _billed_late(session: Session, scope: _Scope) -> dict[Period, BilledUsage]:
    """What issued invoices billed for each late period, except this run's own period invoices."""
    billed: dict[Period, BilledUsage] = {}
    late_periods = scope.late_periods
    for late_period in {p for _, p in late_periods}:
        owners = {c for c, p in late_periods if p == late_period}
        by_key = billed.setdefault(late_period, {})
        billing = store.billed_by_period(
            session, owners, late_period.start, exclude=[period_key(c, scope.period) for c in owners]
        )
        for (c, sub_id, meter, dimension), amount in billing.items():
            by_key.setdefault((c, sub_id), {})[None if meter is None else (meter, dimension)] = amount
    return billed


def _adjustable_fees(scope: _Scope) -> dict[int, Period]:
    """In-advance fees of fee periods a subscription leaves before their end: adjusted to the days it ran; and
    of fee periods a negotiated price starts: adjusted to the fee in force."""
    plans, period = scope.plans.plans, scope.period
    adjustable = {
        s.id: fee_period
        for s in [*scope.subscriptions, *scope.ended_as_it_began]
        if s.id in plans and (fee_period := fee_period_to_adjust(s, plans[s.id], period)) is not None
    }
    for s in scope.subscriptions:
        negotiated = scope.plans.negotiated.get(s.id)
        repriced = None if negotiated is None else fee_period_repriced(s, negotiated, period)
        if s.id not in adjustable and repriced is not None:
            adjustable[s.id] = repriced
    return adjustable


def _billed_fees(
    session: Session, catalog: Catalog, scope: _Scope, adjustable: Mapping[int, Period]
) -> tuple[dict[FeeKey, Decimal], dict[FeeKey, Decimal]]:
    """What invoices bill as the adjustable fees, and what their discounts and credit notes left of those they
    reduced. The opening drafts this run writes count with the amount it composes now, not as stored before (an
    issued one as it was issued, its credit notes too; an opening invoice has no discount)."""
    plans, period = scope.plans.plans, scope.period
    openings = {s.id: s for s in scope.subscriptions if s.id in adjustable and period.contains(s.start_date)}
    stored_openings = store.stored_drafts(session, [opening_key(i) for i in openings])
    issued_openings = {key for key, known in stored_openings.items() if known.status != InvoiceStatus.DRAFT.value}
    rewritten = [opening_key(i) for i in openings if opening_key(i) not in issued_openings]
    keys = [(sub_id, fee_period.start) for sub_id, fee_period in adjustable.items()]
    excluded = [period_key(c, period) for c in scope.customer_ids] + rewritten
    documents = store.fee_invoices(session, keys, exclude=excluded)
    fees_billed, paid = billed_and_paid(
        [(invoice.lines, credited_as_billed(invoice.taxes, notes)) for invoice, notes in documents], set(keys)
    )
    for sub_id, subscription in openings.items():
        if opening_key(sub_id) in issued_openings:
            continue
        fee = opening_fee(subscription, plans[sub_id], catalog.rounding)
        if fee is not None:
            key = (sub_id, adjustable[sub_id].start)
            fees_billed[key] = fees_billed.get(key, ZERO) + fee.amount
            if key in paid:
                paid[key] += fee.amount
    return fees_billed, {key: amount for key, amount in paid.items() if amount != fees_billed.get(key)}


def _rating_inputs(
    catalog: Catalog,
    scope: _Scope,
    usage: Mapping[UsageKey, Mapping[str, AnyUsage]],
    billed: _Billed,
    usage_as_of: dt.datetime | None,
) -> _RatingInputs:
    """rate, its input: everything rating a customer reads, grouped by customer."""
    by_customer: dict[str, list[Subscription]] = {}
    for subscription in scope.subscriptions:
        by_customer.setdefault(subscription.customer_external_id, []).append(subscription)
    ended_by_customer: dict[str, list[Subscription]] = {}
    for subscription in scope.ended_as_it_began:
        ended_by_customer.setdefault(subscription.customer_external_id, []).append(subscription)
    return _RatingInputs(
        period=scope.period,
        catalog=catalog,
        customers=scope.customers,
        plans=scope.plans.plans,
        negotiated=scope.plans.negotiated,
        foreign_currency=scope.plans.foreign_currency,
        usage=usage,
        by_customer=by_customer,
        ended_by_customer=ended_by_customer,
        adjustable=billed.adjustable,
        fees_billed=billed.fees,
        fees_paid=billed.fees_paid,
        arrears=billed.arrears,
        late_by_customer=scope.late_by_customer,
        late_subscriptions_by_customer=scope.late_subscriptions_by_customer,
        billed=billed.late,
        usage_as_of=usage_as_of,
        progressive=billed.progressive,
        coupons=scope.coupons,
        tax_rules=get_settings().tax_rules(),
        earlier=billed.earlier,
        unrated=frozenset(scope.unrated),
    )


def _stored_drafts(engine: Engine, scope: _Scope) -> dict[str, store.StoredDraft]:
    """Every draft this run can write, as stored: each customer's period invoice and the period's opening
    invoices."""
    period = scope.period
    keys = [period_key(c, period) for c in sorted(scope.customer_ids)]
    keys += [opening_key(s.id) for s in scope.subscriptions if period.contains(s.start_date)]
    with session_scope(read_only(engine)) as session:
        return store.stored_drafts(session, keys)


@dataclass
class _Written:
    """What the write stage did: the drafts it found unchanged, the billing keys the run produced, the customers
    it wrote an invoice for."""

    unchanged: list[int] = field(default_factory=list)
    produced: set[str] = field(default_factory=set)
    customers: set[str] = field(default_factory=set)


def _write_drafts(
    engine: Engine,
    inputs: _RatingInputs,
    scope: _Scope,
    stored: Mapping[str, store.StoredDraft],
    workers: int | None,
    progress: Callable[[int, int], None] | None,
    clock: _Clock,
) -> _Written:
    """rate (pure, in forked worker processes for a big run) → write (here, one transaction per invoice), in
    customer order."""
    report = clock.report
    ordered = sorted(scope.customer_ids)
    written = _Written()
    done = 0
    chunks = _rated_chunks(inputs, ordered, workers, report)
    with closing(chunks), store.DraftWriter(engine) as writer:
        for chunk in chunks:
            clock.lap("rate")
            report.seconds["rating"] = report.seconds.get("rating", 0.0) + chunk.seconds
            report.skipped += chunk.skipped
            report.unrated |= {who for who, _ in chunk.skipped}
            for draft in chunk.rated:
                _write_draft(writer, draft, stored.get(draft.billing_key), written, report)
            done += chunk.customers
            if progress is not None and done < len(ordered):
                progress(done, len(ordered))
            clock.lap("write")
    if progress is not None:
        progress(done, len(ordered))
    return written


def _write_draft(
    writer: store.DraftWriter, draft: _Rated, known: store.StoredDraft | None, written: _Written, report: RunReport
) -> None:
    """Store one rated draft unless it is issued or unchanged (a stored draft with its content hash)."""
    if known is not None and known.status != InvoiceStatus.DRAFT.value:
        action = "issued"
    elif known is not None and known.content_hash == draft.row[0]["content_hash"]:
        action = "unchanged"
        written.unchanged.append(known.invoice_id)
    else:  # its own transaction
        action = writer.write(draft.billing_key, draft.row, known_absent=known is None).action
    report.count(action)
    report.invoices += 1
    written.produced.add(draft.billing_key)
    report.late_lines += draft.late_lines
    written.customers.add(draft.customer)
    if action != "issued":
        report.totals[draft.currency] = report.totals.get(draft.currency, ZERO) + draft.total


def _settle(
    engine: Engine, scope: _Scope, written: _Written, usage_as_of: dt.datetime | None, report: RunReport
) -> None:
    """write, the end: unchanged drafts get the new usage cutoff, and the period's drafts the run no longer
    produces are deleted."""
    with session_scope(engine) as session:
        store.touch_drafts(session, written.unchanged, usage_as_of)
        # (a customer the run could not rate keeps its draft: a catalog or data mistake deletes nothing)
        produced = written.produced | {period_key(c, scope.period) for c in report.unrated}
        # (nor the drafts of a customer with a subscription whose plan is gone: which periods it bills is unknown)
        produced |= {period_key(c, scope.period) for c in [*scope.unrated, *scope.kept]}
        report.removed = store.remove_stale_drafts(
            session, scope.period.start, produced, scope.customer, period_end=scope.period.end, owned=scope.owned()
        )
    report.customers = len(written.customers)


# Customers rated per chunk: a worker's unit of work, and how often the progress bar moves.
_CHUNK = 200


@dataclass(frozen=True)
class _RatingInputs:
    """Everything rating one customer reads (all of it loaded and aggregated before rating starts)."""

    period: Period
    catalog: Catalog
    customers: Mapping[str, Customer]
    plans: Mapping[int, Plan]  # in force for the period (negotiated prices included)
    negotiated: Mapping[int, Negotiated]  # the plans of subscriptions with negotiated prices, for other periods
    foreign_currency: frozenset[int]  # subscriptions priced in another currency than their customer's
    usage: Mapping[UsageKey, Mapping[str, AnyUsage]]
    by_customer: Mapping[str, list[Subscription]]
    ended_by_customer: Mapping[str, list[Subscription]]
    adjustable: Mapping[int, Period]
    fees_billed: Mapping[FeeKey, Decimal]
    fees_paid: Mapping[FeeKey, Decimal]  # what discounts left of the fees billed they reduced
    late_by_customer: Mapping[str, list[Period]]
    late_subscriptions_by_customer: Mapping[str, list[Subscription]]
    billed: Mapping[Period, BilledUsage]
    usage_as_of: dt.datetime | None
    progressive: Mapping[int, Mapping[BilledKey, Decimal]]  # what progressive invoices of the period billed
    coupons: Mapping[str, list[AppliedCoupon]]
    tax_rules: TaxRules | None = None  # the configuration's (``billing.core.tax``)
    earlier: Mapping[str, list[InvoiceLine]] = field(default_factory=dict)  # the period's progressive invoices' lines
    unrated: Collection[str] = frozenset()  # customers not rated now: their drafts are kept as they are
    arrears: Mapping[int, Period] = field(default_factory=dict)  # (``_Billed.arrears``)


@dataclass(frozen=True, slots=True)
class _Rated:
    """A draft rated and ready to store: what a rating worker sends back (the rows, not the draft's objects)."""

    billing_key: str
    customer: str
    currency: str
    total: Decimal
    late_lines: int
    row: store.DraftRow


@dataclass(frozen=True, slots=True)
class _RatedChunk:
    rated: list[_Rated]
    skipped: list[tuple[str, str]]
    customers: int
    seconds: float


def _rate_customer(inputs: _RatingInputs, customer_id: str) -> tuple[list[DraftInvoice], str | None]:
    """The drafts of one customer (its subscriptions' opening invoices, then its period invoice), or why it is
    skipped."""
    period, plans, fees_billed, adjustable = inputs.period, inputs.plans, inputs.fees_billed, inputs.adjustable
    owner = inputs.customers.get(customer_id)
    if owner is None:
        return [], "customer not found"
    if customer_id in inputs.unrated:
        # A plan gone from the catalog (listed among the skipped already): the customer's draft is kept as it was,
        # never written again without that subscription's charges (its fee, its usage, late or not).
        return [], None
    own = inputs.by_customer.get(customer_id, [])
    if any(s.id in inputs.foreign_currency for s in own):
        return [], f"plan currency differs from the customer's {owner.currency}"
    sections = [
        Section(
            s, plans[s.id], charged_usage(inputs.usage.get(UsageKey(s.id, period), {}), plans[s.id]),
            billed_fee=fees_billed.get((s.id, adjustable[s.id].start)) if s.id in adjustable else None,
            advance_plan=_advance_plan(inputs, s), billed=inputs.progressive.get(s.id),
            billed_fee_paid=inputs.fees_paid.get((s.id, adjustable[s.id].start)) if s.id in adjustable else None,
        )
        for s in own
    ]
    sections += _ended_sections(inputs, customer_id)
    late = _late_usage(inputs, customer_id)
    if not sections and not late:
        # (a customer who left as the period began has nothing to settle)
        return [], ("no active subscription in the period" if customer_id in inputs.by_customer else None)
    drafts: list[DraftInvoice] = []
    # A subscription's opening invoice (its first in-advance fee) comes before the period's invoice.
    for subscription in own:
        if period.contains(subscription.start_date):
            opening = compose_opening_invoice(
                owner, subscription, plans[subscription.id], inputs.catalog, inputs.tax_rules
            )
            if opening is not None:
                drafts.append(opening)
    draft = compose_period_invoice(
        owner, period, sections, late, inputs.catalog, inputs.usage_as_of, inputs.coupons.get(customer_id, ()),
        inputs.tax_rules, inputs.earlier.get(customer_id, ()),
    )
    # A customer with a subscription in the period gets its invoice, even one with nothing on it (it records that
    # the period was billed); one without gets none when nothing is left to bill: late usage that re-rates to
    # what was billed, an advance fee already settled to the days it ran.
    if draft.lines or any(not section.fee_only for section in sections):
        drafts.append(draft)
    return drafts, None


def _ended_sections(inputs: _RatingInputs, customer_id: str) -> list[Section]:
    """The sections of the customer's subscriptions that ended as the period began: an in-advance fee billed for
    longer than they ran, adjusted; an in-arrears fee of a fee period they left early that no invoice billed; and
    what the period's progressive invoices billed of their usage, given back (they cover none of it now: cancelled
    or changed from the period's first day after a progressive invoice)."""
    plans, fees_billed, adjustable, arrears = inputs.plans, inputs.fees_billed, inputs.adjustable, inputs.arrears
    sections = []
    for s in inputs.ended_by_customer.get(customer_id, ()):
        billed = inputs.progressive.get(s.id)
        if s.id in adjustable and fees_billed.get((s.id, adjustable[s.id].start)):
            sections.append(Section(
                s, plans[s.id], {}, billed_fee=fees_billed.get((s.id, adjustable[s.id].start)), fee_only=True,
                billed_fee_paid=inputs.fees_paid.get((s.id, adjustable[s.id].start)), billed=billed,
            ))
            continue
        fee = None
        if s.id in arrears and not fees_billed.get((s.id, arrears[s.id].start)):
            fee = rate_fee(s, plans[s.id], arrears[s.id], inputs.catalog.rounding)
        if (fee is not None and fee.amount) or billed:
            sections.append(Section(s, plans[s.id], {}, fee_only=True, arrears_fee=fee if fee else None, billed=billed))
    return sections


def _late_usage(inputs: _RatingInputs, customer_id: str) -> list[LateUsage]:
    """The customer's late usage of earlier periods, each to be rated again against what was billed for it."""
    return [
        LateUsage(
            subscription=s,
            plan=(plan := _plan_of_period(inputs, s, late_period)),
            period=late_period,
            usage=charged_usage(inputs.usage.get(UsageKey(s.id, late_period, late=True), {}), plan),
            billed=inputs.billed[late_period].get((customer_id, s.id), {}),
        )
        for late_period in inputs.late_by_customer.get(customer_id, ())
        for s in inputs.late_subscriptions_by_customer.get(customer_id, ())
        if s.overlaps(late_period.start, late_period.end) and _bills(s, inputs.plans[s.id], late_period)
    ]


def _plan_of_period(inputs: _RatingInputs, subscription: Subscription, period: Period) -> Plan:
    """The plan pricing a subscription's usage of an earlier period: its negotiated price then, if any."""
    negotiated = inputs.negotiated.get(subscription.id)
    return inputs.plans[subscription.id] if negotiated is None else negotiated.for_period(period)


def _advance_plan(inputs: _RatingInputs, subscription: Subscription) -> Plan | None:
    """The plan pricing the next fee period's in-advance fee, when a negotiated price gives it another one."""
    negotiated = inputs.negotiated.get(subscription.id)
    if negotiated is None:
        return None
    plan = inputs.plans[subscription.id]
    upcoming = schedule_of(subscription, plan).fee_period(inputs.period.end)  # as fees.advance_fee_period has it
    return negotiated.plan_on(fee_anchor(subscription, plan, upcoming))


def _rate_chunk(inputs: _RatingInputs, customer_ids: list[str]) -> _RatedChunk:
    started = time.perf_counter()
    rated: list[_Rated] = []
    skipped: list[tuple[str, str]] = []
    for customer_id in customer_ids:
        try:
            drafts, reason = _rate_customer(inputs, customer_id)
        except AmountOutOfRangeError as error:  # usage priced beyond what an invoice holds: keep its draft, say so
            drafts, reason = [], str(error)
        if reason is not None:
            skipped.append((customer_id, reason))
        rated += [
            _Rated(
                billing_key=draft.billing_key,
                customer=customer_id,
                currency=draft.currency,
                total=draft.totals.total,
                late_lines=sum(1 for line in draft.lines if line.kind is LineKind.LATE_USAGE),
                row=store.draft_row(draft),
            )
            for draft in drafts
        ]
    return _RatedChunk(rated, skipped, len(customer_ids), time.perf_counter() - started)


def _rated_chunks(
    inputs: _RatingInputs, customer_ids: list[str], workers: int | None, report: RunReport
) -> Iterator[_RatedChunk]:
    """The customers' drafts, rated chunk by chunk, in order. A run of more than a few chunks is rated by forked
    worker processes (``workers``; by default one fewer than the CPUs, at least one) while this process stores
    what they send back; otherwise, or where forking is not safe, here."""
    chunks = [customer_ids[i : i + _CHUNK] for i in range(0, len(customer_ids), _CHUNK)]
    if workers is None:
        workers = max(1, min(4, (os.cpu_count() or 1) - 1)) if len(chunks) >= 4 else 0
    if workers <= 0 or not chunks or not can_fork():
        for chunk in chunks:
            yield _rate_chunk(inputs, chunk)
        return
    report.rating_workers = workers
    # The workers inherit the inputs when they are forked: nothing is pickled.
    with fork_pool(workers, initializer=_start_worker, initargs=(inputs,)) as pool:
        futures = [pool.submit(_rate_chunk_in_worker, chunk) for chunk in chunks]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


_worker_inputs: _RatingInputs | None = None


def _start_worker(inputs: _RatingInputs) -> None:
    """A rating worker keeps the run's inputs it inherited (the pool already froze them and watches the run)."""
    global _worker_inputs
    _worker_inputs = inputs


def _rate_chunk_in_worker(customer_ids: list[str]) -> _RatedChunk:
    assert _worker_inputs is not None
    return _rate_chunk(_worker_inputs, customer_ids)


def _bills(subscription: Subscription, plan: Plan, period: Period) -> bool:
    """Whether ``period`` is one of the subscription's billing periods (a calendar month, an anniversary month or
    a week, as its plan bills)."""
    return schedule_of(subscription, plan).billing_period(period.start) == period


def _subscriptions_for_late(session: Session, late_periods: Iterable[tuple[str, Period]]) -> list[Subscription]:
    found: dict[int, Subscription] = {}
    for late_period in {p for _, p in late_periods}:
        wanted = {c for c, p in late_periods if p == late_period}
        for subscription in repository.subscriptions_active_between(session, late_period.start, late_period.end):
            if subscription.customer_external_id in wanted:
                found[subscription.id] = subscription
    return list(found.values())


def finalize_period(
    engine: Engine,
    period: Period,
    settings: store.FinalizeSettings,
    today: dt.date,
    *,
    customer: str | None = None,
    customers: Collection[str] | None = None,
    batch: int = 1000,
    now: dt.datetime | None = None,
    allow_open_period: bool = False,
    approval: ApprovalPolicy | None = None,
    leave: Collection[str] = (),
) -> list[str]:
    """Finalize the period's drafts — its period invoices (of every billing period whose last day falls in it)
    and the opening invoices of the subscriptions that start in it (a yearly plan's is dated by its fee year) —
    numbered in customer order, ``batch`` per transaction, each invoice's ``invoice.finalized`` notification
    queued with it; only ``customer``'s, or those of ``customers``, if given. Drafts another process finalized
    meanwhile are left to it, so two finalizations of one period can run at once.

    An issued invoice cannot be changed: if the period has not ended at ``now`` (default: the clock) in the
    timezone of a customer with a period draft, nothing is finalized (``OpenPeriodError``); with
    ``allow_open_period`` the current period is, a period that has not begun never. An opening invoice waits for
    its subscription to start. ``today`` is the issue date. With an ``approval`` policy, the drafts that wait for
    approval (``billing.approval``) stay drafts; the others are issued. The drafts of the customers in ``leave``
    stay drafts (those a billing run just now could not rate: :func:`finalize_period_fresh`).

    Finding the drafts only reads (it never holds SQLite's write lock); each batch claims its drafts again in its
    own write transaction."""
    instant = clock(now)
    wanted = {customer} if customer is not None else None if customers is None else set(customers)
    with session_scope(read_only(engine)) as session:
        starting = [
            s
            for s in repository.subscriptions_active_between(session, period.start, period.end)
            if period.contains(s.start_date) and (wanted is None or s.customer_external_id in wanted)
        ]
        # the period invoices of every billing period ending in it: the month's, weeks', anniversary months'
        closing = store.customers_with_drafts(session, period.start, InvoiceScope.PERIOD, ending_by=period.end)
        if wanted is not None:
            closing &= wanted
        if leave:
            closing -= set(leave)
            starting = [s for s in starting if s.customer_external_id not in leave]
            wanted = closing | {s.customer_external_id for s in starting}
        owners = repository.customers_by_external_id(
            session, closing | {s.customer_external_id for s in starting}
        )
        zones = {c: owners[c].timezone if c in owners else "UTC" for c in closing}
        check_period_can_close(period, zones, now=instant, allow_open_period=allow_open_period)
        started = [
            s.id
            for s in starting
            if s.customer_external_id in owners
            and s.start_date <= instant.astimezone(ZoneInfo(owners[s.customer_external_id].timezone)).date()
        ]
        # period invoices by their period; opening invoices by their subscription's start (a yearly plan's is
        # dated by its fee year, which would issue it before the subscription starts)
        ids = store.drafts_of_period(session, period.start, started, customers=wanted, ending_by=period.end)
    return _issue(engine, ids, settings, today, batch, approval, now)


def finalize_period_fresh(
    engine: Engine,
    catalog: Catalog,
    period: Period,
    settings: store.FinalizeSettings,
    today: dt.date,
    *,
    customer: str | None = None,
    now: dt.datetime | None = None,
    allow_open_period: bool = False,
    approval: ApprovalPolicy | None = None,
) -> tuple[RunReport, list[str]]:
    """Finalize the period's drafts (of ``customer`` only, if given) as a billing run writes them now: each is
    rated again first (:func:`run_billing`; the opening drafts it issues by ``invoicing.refresh_opening_drafts``),
    so what is issued bills the subscriptions, customers, prices and usage as they stand at the finalization, not
    as they stood when the draft was written (a cancellation, a plan or seat change since, events received since:
    a draft written before a mid-month cancellation would bill the whole month's fee). Refused before anything is
    written (``OpenPeriodError``) when the period has not ended for one of its customers, as ``billing run
    --finalize`` is. A customer whose draft cannot be rated now (``RunReport.unrated``: a plan missing from the
    catalog) keeps its drafts, unissued. The run's report (its ``unrated`` with the opening drafts' too) and the
    numbers given; with an ``approval`` policy a draft the run changed waits again (its approval was of other
    content). ``now``: the instant of the finalization (default: the clock; the run then counts the usage stored
    up to the ingestion cutoff, as every run does)."""
    instant = clock(now)
    check_period_finalizable(engine, period, customer=customer, now=instant, allow_open_period=allow_open_period)
    report = run_billing(engine, catalog, period, customer=customer, now=now)
    numbers = finalize_after_run(
        engine, catalog, period, report, settings, today, customer=customer, now=instant,
        allow_open_period=allow_open_period, approval=approval,
    )  # fmt: skip
    return report, numbers


def finalize_after_run(
    engine: Engine,
    catalog: Catalog,
    period: Period,
    report: RunReport,
    settings: store.FinalizeSettings,
    today: dt.date,
    *,
    customer: str | None = None,
    now: dt.datetime | None = None,
    allow_open_period: bool = False,
    approval: ApprovalPolicy | None = None,
) -> list[str]:
    """Finalize the period's drafts right after ``report``'s run of it (``billing run --finalize``): the opening
    drafts it issues composed again first (a weekly subscription's first week may end in the next month, whose run
    composes it), the drafts of the customers the run or that composing could not rate left as they are (added to
    ``report.skipped``), the others issued (``finalize_period``); the numbers given."""
    with session_scope(read_only(engine)) as session:
        subscriptions = [repository.get_subscription(session, d.subscription_id)
                         for d in store.opening_drafts(session, customer)]  # fmt: skip
    starting = [s.id for s in subscriptions if s is not None and period.contains(s.start_date)]
    openings = invoicing.refresh_opening_drafts(engine, catalog, starting).skipped
    report.skipped += openings
    report.unrated |= {who for who, _ in openings}
    numbers = finalize_period(
        engine, period, settings, today, customer=customer, now=now, allow_open_period=allow_open_period,
        approval=approval, leave=report.unrated,
    )  # fmt: skip
    report.waiting = waiting_for_earlier(engine, period, customer=customer)
    report.skipped += report.waiting
    return numbers


def held_customers(engine: Engine, catalog: Catalog, period: Period) -> dict[str, str]:
    """The customers a run of ``period`` would leave as they are because of the catalog (a subscription it may
    bill whose plan is gone), with why: what a finalization of drafts as written must leave too."""
    unknown = _billing_periods(engine, catalog, period, None, None).unknown
    return {problem.customer: problem.message for problem in reversed(unknown)}


def finalize_draft_fresh(
    engine: Engine,
    catalog: Catalog,
    key: str | int,
    settings: store.FinalizeSettings,
    today: dt.date,
    *,
    now: dt.datetime | None = None,
    allow_open_period: bool = False,
    approval: ApprovalPolicy | None = None,
) -> Invoice:
    """``invoicing.finalize_invoice`` of one draft composed again first, once the rules of its issue are checked
    (``OpenPeriodError`` before anything is written): a period draft by a billing run of its customer's month (the
    month its period's last day falls in), an opening draft from its subscription and customer as they are now, as
    :func:`finalize_period_fresh` does for a whole period. Refused (``ConflictError``, nothing finalized) when the
    customer cannot be rated now, or there is nothing left to bill (the draft is then deleted, as every run deletes
    it). ``now``: as for :func:`finalize_period_fresh`."""
    draft = invoicing.get_invoice(engine, key)
    if draft.status is InvoiceStatus.DRAFT and draft.customer_id is not None:
        invoicing.check_draft_can_issue(engine, draft, now=now, allow_open_period=allow_open_period)
        if draft.scope is InvoiceScope.PERIOD:
            last = draft.period_end - dt.timedelta(days=1)
            report = run_billing(engine, catalog, calendar_month(last.year, last.month), customer=draft.customer_id,
                                 now=now)  # fmt: skip
            left = [(who, why) for who, why in report.skipped if who in report.unrated]
            _check_rewritten(draft, left, draft.billing_key in report.removed)
        elif draft.scope is InvoiceScope.OPENING and draft.subscription_id is not None:
            opening = invoicing.refresh_opening_drafts(engine, catalog, [draft.subscription_id])
            _check_rewritten(draft, opening.skipped, bool(opening.dropped))
    return invoicing.finalize_invoice(
        engine, key, settings, today, now=now, allow_open_period=allow_open_period, approval=approval
    )


def _check_rewritten(draft: Invoice, skipped: list[tuple[str, str]], removed: bool) -> None:
    """Refuse to finalize ``draft`` when composing it again could not rate its customer, or removed it."""
    customer = draft.customer_id
    reasons = [why for who, why in skipped if who == customer]
    if reasons:
        raise ConflictError(
            f"invoice {draft.id}: customer {customer!r} cannot be rated now ({reasons[0]}), so its draft cannot be "
            "brought up to date; nothing was finalized"
        )
    if removed:
        last = draft.period_end - dt.timedelta(days=1)
        raise ConflictError(
            f"invoice {draft.id}: customer {customer!r} has nothing left to bill for "
            f"{draft.period_start.isoformat()} to {last.isoformat()} (its subscription covers none of it now), so "
            "its draft was deleted; nothing was finalized"
        )


def finalize_billing_period(
    engine: Engine,
    period: Period,
    settings: store.FinalizeSettings,
    today: dt.date,
    *,
    customers: Collection[str],
    batch: int = 1000,
    now: dt.datetime | None = None,
    approval: ApprovalPolicy | None = None,
) -> list[str]:
    """Finalize the period drafts of exactly ``period`` (a week, an anniversary month: any billing period) of
    ``customers``, as ``finalize_period`` does for a month: numbered in customer order, each with its
    ``invoice.finalized`` notification, never before the period has ended in the customer's timezone
    (``OpenPeriodError``). The scheduler issues a week's invoices this way once the week (and the grace) is
    over, without waiting for the month. With an ``approval`` policy, the drafts that wait for approval stay
    drafts."""
    instant = clock(now)
    with session_scope(read_only(engine)) as session:
        ids = store.period_drafts(session, period.start, period.end, customers)
        owners = repository.customers_by_external_id(session, set(customers))
    zones = {c: owners[c].timezone if c in owners else "UTC" for c in customers}
    check_period_can_close(period, zones, now=instant)
    return _issue(engine, ids, settings, today, batch, approval, now)


def _issue(
    engine: Engine,
    ids: list[int],
    settings: store.FinalizeSettings,
    today: dt.date,
    batch: int,
    approval: ApprovalPolicy | None = None,
    now: dt.datetime | None = None,
) -> list[str]:
    """Number the drafts ``ids``, ``batch`` per transaction; drafts another process finalized meanwhile are left
    to it, and (with ``approval``) those that wait for approval stay drafts — decided on the claimed rows, in the
    transaction that issues them, so a draft rewritten meanwhile is judged as it now is. ``now``: the instant they
    are issued and their credits applied (default: the clock as each batch is issued)."""
    numbers: list[str] = []
    held: list[int] = []
    for offset in range(0, len(ids), batch):
        with session_scope(engine) as session:
            # the customers before their drafts, as every writer of both takes them (a refresh of an opening draft,
            # a Stripe webhook's cancellation): never two transactions waiting for each other in a circle
            credits.lock_owners(session, ids[offset : offset + batch])
            chunk = store.claim_drafts(session, ids[offset : offset + batch])
            if approval is not None:
                chunk = issuable(session, chunk, approval)
            # a draft whose customer has an earlier one unissued (held for approval, not yet finalized) waits
            waiting = invoicing.earlier_drafts(session, chunk)
            held += [invoice_id for invoice_id in chunk if invoice_id in waiting]
            chunk = [invoice_id for invoice_id in chunk if invoice_id not in waiting]
            numbers += credits.finalize_with_credits(session, chunk, settings, today, now)
            # In the same transaction: an invoice is issued if and only if its e-mail and webhook are queued.
            queue_invoices_finalized(session, credits.with_credits(session, store.get_invoices(session, chunk)))
    if held and len(ids) > batch:  # (the draft it waited for may have been issued by a later batch)
        numbers += _issue(engine, held, settings, today, len(held), approval, now)
    return numbers


def waiting_for_earlier(
    engine: Engine, period: Period, *, customer: str | None = None, customers: Collection[str] | None = None
) -> list[tuple[str, str]]:
    """The period's drafts (of every billing period ending in it; ``customer``'s, or those of ``customers``, if
    given) that a finalization leaves because their customer has an earlier draft unissued, each as (customer,
    why): invoices are issued in the order of their periods."""
    with session_scope(read_only(engine)) as session:
        ids = store.drafts_of_period(
            session, period.start, (), customer=customer, customers=customers, ending_by=period.end
        )
        found = invoicing.earlier_drafts(session, ids, issued_along=())
        drafts = {invoice.id: invoice for invoice in store.get_invoices(session, sorted(found))}
    return [
        (earlier.customer_external_id, invoicing.waits_for_earlier(drafts[invoice_id], earlier))
        for invoice_id, earlier in found.items()
    ]
