"""The billing run: every subscription active in a period → one draft invoice per customer, written once.

load → aggregate → rate → write (→ finalize), each stage timed:
- load: the subscriptions overlapping the period, their customers and plan versions (a few queries);
- aggregate: one batched aggregation of every section's usage window (not a query per customer), and of the
  earlier periods that received late usage;
- rate: pure (``billing.core.compose``); a big run is rated by forked worker processes, chunk by chunk, while this
  process writes the chunks they send back;
- write: each customer's invoice in its own transaction, so a run killed at any point and run again gives the
  same invoices as an uninterrupted run; an issued invoice is never touched; drafts are refreshed.

``RunReport.seconds`` splits the run's wall time into those phases ("rate" is the time spent waiting for rated
drafts once rating overlaps writing) and gives ``rating``, the time spent rating, wherever it ran.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import Engine, select

from billing.core.compose import (
    LateUsage,
    Section,
    compose_opening_invoice,
    compose_period_invoice,
    opening_key,
    period_key,
    section_window,
)
from billing.core.domain import Customer, Subscription
from billing.core.periods import Period, month_of
from billing.core.rating import fee_period_for, rate_fee
from billing.db import repository, session_scope
from billing.metering import UsageWindow, aggregate_periods, late_event_periods
from billing.notify.outbox import queue_invoices_finalized
from dbkit.forkpool import can_fork, fork_pool
from invoices import store
from invoices.model import DraftInvoice, InvoiceStatus
from invoices.tables import InvoiceRow
from meters import ingestion_cutoff
from pricing_plans.errors import UnknownPlanError
from pricing_plans.models import Catalog, FeeBilling, Plan
from pricing_plans.money import ZERO

__all__ = ["RunReport", "finalize_period", "run_billing"]

# Late usage is looked for this many periods back.
LATE_LOOKBACK_PERIODS = 12


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
    events: int = 0
    late_lines: int = 0
    finalized: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    rating_workers: int = 0  # worker processes that rated the drafts (0: rated in this process)
    removed: list[str] = field(default_factory=list)  # drafts of the period it deleted: nothing to bill now

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
) -> RunReport:
    """Write (or refresh) the draft invoices of ``period``: one per customer, plus opening invoices for
    subscriptions with an in-advance fee that start in it."""
    # A run builds many small, short-lived objects and keeps large ones (usage for every customer) alive:
    # the cyclic collector would rescan those again and again. Nothing here makes reference cycles worth it.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _run(engine, catalog, period, customer=customer, progress=progress, now=now, workers=workers)
    finally:
        if collecting:
            gc.enable()


def _run(
    engine: Engine,
    catalog: Catalog,
    period: Period,
    *,
    customer: str | None,
    progress: Callable[[int, int], None] | None,
    now: dt.datetime | None,
    workers: int | None,
) -> RunReport:
    report = RunReport(period=period)
    clock = _Clock(report)
    # Every event received up to this instant is committed and counted below; later ones are late for the drafts.
    usage_as_of = now or ingestion_cutoff(engine)

    # load
    with session_scope(engine) as session:
        # the day before the period too: a subscription that ended as the period began may owe a fee adjustment
        found = repository.subscriptions_active_between(session, period.start - dt.timedelta(days=1), period.end)
        if customer is not None:
            found = [s for s in found if s.customer_external_id == customer]
        subscriptions = [s for s in found if s.overlaps(period.start, period.end)]
        ended_as_it_began = [s for s in found if s.end_date == period.start]
        customer_ids = {s.customer_external_id for s in subscriptions}
        late_periods = late_event_periods(
            session, period, customer, lookback=LATE_LOOKBACK_PERIODS
        )
        customer_ids |= {c for c, _ in late_periods}
        customer_ids |= {s.customer_external_id for s in ended_as_it_began}
        customers = repository.customers_by_external_id(session, customer_ids)
        late_subscriptions = _subscriptions_for_late(session, late_periods)
    plans: dict[int, Plan] = {}
    for subscription in [*subscriptions, *ended_as_it_began, *late_subscriptions]:
        try:
            plans[subscription.id] = catalog.plan(subscription.plan_code, subscription.plan_version)
        except UnknownPlanError as error:
            report.skipped.append((subscription.customer_external_id, f"subscription {subscription.id}: {error}"))
    clock.lap("load")

    # aggregate: one batch for the period's sections and the earlier periods with late usage
    windows: dict[object, UsageWindow] = {}
    for subscription in subscriptions:
        window = section_window(subscription, period)
        owner = customers.get(subscription.customer_external_id)
        if window is not None and owner is not None and subscription.id in plans:
            windows[("now", subscription.id)] = UsageWindow(owner.external_id, owner.timezone, period, window)
    late_by_customer: dict[str, list[Period]] = {}
    for customer_id, late_period in late_periods:
        late_by_customer.setdefault(customer_id, []).append(late_period)
    late_subscriptions_by_customer: dict[str, list[Subscription]] = {}
    for subscription in late_subscriptions:
        if subscription.id in plans:
            late_subscriptions_by_customer.setdefault(subscription.customer_external_id, []).append(subscription)
    for customer_id, own_late_periods in late_by_customer.items():
        owner = customers.get(customer_id)
        if owner is None:
            continue
        for subscription in late_subscriptions_by_customer.get(customer_id, ()):
            for late_period in own_late_periods:
                window = section_window(subscription, late_period)
                if window is not None:
                    windows[("late", subscription.id, late_period)] = UsageWindow(
                        customer_id, owner.timezone, late_period, window
                    )
    usage = aggregate_periods(engine, catalog, windows)
    report.events = sum(u.events for by_meter in usage.values() for u in by_meter.values())
    # what issued invoices billed for each late period: {(customer, subscription): {meter: amount}}
    billed: dict[Period, dict[tuple[str, int | None], dict[str | None, Decimal]]] = {}
    with session_scope(engine) as session:
        for late_period in {p for _, p in late_periods}:
            owners = {c for c, p in late_periods if p == late_period}
            by_key = billed.setdefault(late_period, {})
            billing = store.billed_by_period(
                session, owners, late_period.start, exclude=[period_key(c, period) for c in owners]
            )
            for (c, sub_id, meter), amount in billing.items():
                by_key.setdefault((c, sub_id), {})[meter] = amount
        # in-advance fees of fee periods a subscription leaves before their end: adjusted to the days it ran
        adjustable = {
            s.id: fee_period_for(plans[s.id], period)
            for s in [*subscriptions, *ended_as_it_began]
            if s.id in plans
            and _billed_in_advance(plans[s.id])
            and s.end_date is not None
            and period.start <= s.end_date <= period.end
            and s.end_date < fee_period_for(plans[s.id], period).end
        }
        # The opening drafts this run writes count with the amount it composes now, not as stored before.
        openings = {
            s.id: s for s in subscriptions if s.id in adjustable and period.contains(s.start_date)
        }
        stored_openings = store.stored_drafts(session, [opening_key(i) for i in openings])
        issued_openings = {
            key for key, known in stored_openings.items() if known.status != InvoiceStatus.DRAFT.value
        }
        rewritten = [opening_key(i) for i in openings if opening_key(i) not in issued_openings]
        fees_billed = store.billed_fees(
            session,
            [(sub_id, fee_period.start) for sub_id, fee_period in adjustable.items()],
            exclude=[period_key(c, period) for c in customer_ids] + rewritten,
        )
        for sub_id, subscription in openings.items():
            if opening_key(sub_id) in issued_openings:
                continue
            fee = rate_fee(subscription, plans[sub_id], adjustable[sub_id], catalog.rounding)
            if fee is not None:
                key = (sub_id, adjustable[sub_id].start)
                fees_billed[key] = fees_billed.get(key, ZERO) + fee.amount
    clock.lap("aggregate")

    # rate (pure, in forked worker processes for a big run) → write (here, one transaction per invoice)
    by_customer: dict[str, list[Subscription]] = {}
    for subscription in subscriptions:
        by_customer.setdefault(subscription.customer_external_id, []).append(subscription)
    ended_by_customer: dict[str, list[Subscription]] = {}
    for subscription in ended_as_it_began:
        ended_by_customer.setdefault(subscription.customer_external_id, []).append(subscription)
    inputs = _RatingInputs(
        period=period,
        catalog=catalog,
        customers=customers,
        plans=plans,
        usage=usage,
        by_customer=by_customer,
        ended_by_customer=ended_by_customer,
        adjustable=adjustable,
        fees_billed=fees_billed,
        late_by_customer=late_by_customer,
        late_subscriptions_by_customer=late_subscriptions_by_customer,
        billed=billed,
        usage_as_of=usage_as_of,
    )
    ordered = sorted(customer_ids)
    # every draft this run can write: each customer's period invoice and the opening invoices of the period
    keys = [period_key(c, period) for c in ordered]
    keys += [opening_key(s.id) for s in subscriptions if period.contains(s.start_date)]
    with session_scope(engine) as session:
        stored = store.stored_drafts(session, keys)
    clock.lap("rate")

    unchanged: list[int] = []
    written: set[str] = set()
    produced: set[str] = set()
    done = 0
    chunks = _rated_chunks(inputs, ordered, workers, report)
    with closing(chunks), store.DraftWriter(engine) as writer:
        for chunk in chunks:
            clock.lap("rate")
            report.seconds["rating"] = report.seconds.get("rating", 0.0) + chunk.seconds
            report.skipped += chunk.skipped
            for draft in chunk.rated:
                known = stored.get(draft.billing_key)
                if known is not None and known.status != InvoiceStatus.DRAFT.value:
                    action = "issued"
                elif known is not None and known.content_hash == draft.row[0]["content_hash"]:
                    action = "unchanged"
                    unchanged.append(known.invoice_id)
                else:  # its own transaction
                    action = writer.write(draft.billing_key, draft.row, known_absent=known is None).action
                report.count(action)
                report.invoices += 1
                produced.add(draft.billing_key)
                report.late_lines += draft.late_lines
                written.add(draft.customer)
                if action != "issued":
                    report.totals[draft.currency] = report.totals.get(draft.currency, ZERO) + draft.total
            done += chunk.customers
            if progress is not None and done < len(ordered):
                progress(done, len(ordered))
            clock.lap("write")
    if progress is not None:
        progress(done, len(ordered))
    with session_scope(engine) as session:
        store.touch_drafts(session, unchanged, usage_as_of)
        # (a customer the run could not rate keeps its draft: a catalog or data mistake deletes nothing)
        produced |= {period_key(c, period) for c, _ in report.skipped}
        report.removed = store.remove_stale_drafts(session, period.start, produced, customer)
    report.customers = len(written)
    clock.lap("write")
    return report


# Customers rated per chunk: a worker's unit of work, and how often the progress bar moves.
_CHUNK = 200


@dataclass(frozen=True)
class _RatingInputs:
    """Everything rating one customer reads (all of it loaded and aggregated before rating starts)."""

    period: Period
    catalog: Catalog
    customers: Mapping[str, Customer]
    plans: Mapping[int, Plan]
    usage: Mapping[object, Mapping[str, object]]
    by_customer: Mapping[str, list[Subscription]]
    ended_by_customer: Mapping[str, list[Subscription]]
    adjustable: Mapping[int, Period]
    fees_billed: Mapping[tuple[int, dt.date], Decimal]
    late_by_customer: Mapping[str, list[Period]]
    late_subscriptions_by_customer: Mapping[str, list[Subscription]]
    billed: Mapping[Period, Mapping[tuple[str, int | None], Mapping[str | None, Decimal]]]
    usage_as_of: dt.datetime | None


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
    own = [s for s in inputs.by_customer.get(customer_id, []) if s.id in plans]
    if any(plans[s.id].currency != owner.currency for s in own):
        return [], f"plan currency differs from the customer's {owner.currency}"
    sections = [
        Section(
            s, plans[s.id], _meter_usage(inputs.usage, ("now", s.id), plans[s.id]),
            billed_fee=fees_billed.get((s.id, adjustable[s.id].start)) if s.id in adjustable else None,
        )
        for s in own
    ]
    sections += [
        Section(s, plans[s.id], {}, billed_fee=fees_billed.get((s.id, adjustable[s.id].start)), fee_only=True)
        for s in inputs.ended_by_customer.get(customer_id, ())
        if s.id in adjustable and fees_billed.get((s.id, adjustable[s.id].start))
    ]
    late = [
        LateUsage(
            subscription=s,
            plan=plans[s.id],
            period=late_period,
            usage=_meter_usage(inputs.usage, ("late", s.id, late_period), plans[s.id]),
            billed=inputs.billed[late_period].get((customer_id, s.id), {}),
        )
        for late_period in inputs.late_by_customer.get(customer_id, ())
        for s in inputs.late_subscriptions_by_customer.get(customer_id, ())
        if s.overlaps(late_period.start, late_period.end)
    ]
    if not sections and not late:
        # (a customer who left as the period began has nothing to settle)
        return [], ("no active subscription in the period" if customer_id in inputs.by_customer else None)
    drafts: list[DraftInvoice] = []
    # A subscription's opening invoice (its first in-advance fee) comes before the period's invoice.
    for subscription in own:
        if period.contains(subscription.start_date):
            opening = compose_opening_invoice(
                owner, subscription, plans[subscription.id], inputs.catalog, month_of(subscription.start_date)
            )
            if opening is not None:
                drafts.append(opening)
    draft = compose_period_invoice(owner, period, sections, late, inputs.catalog, inputs.usage_as_of)
    # A customer with a subscription in the period gets its invoice, even one with nothing on it (it records that
    # the period was billed); one without gets none when nothing is left to bill: late usage that re-rates to
    # what was billed, an advance fee already settled to the days it ran.
    if draft.lines or any(not section.fee_only for section in sections):
        drafts.append(draft)
    return drafts, None


def _rate_chunk(inputs: _RatingInputs, customer_ids: list[str]) -> _RatedChunk:
    started = time.perf_counter()
    rated: list[_Rated] = []
    skipped: list[tuple[str, str]] = []
    for customer_id in customer_ids:
        drafts, reason = _rate_customer(inputs, customer_id)
        if reason is not None:
            skipped.append((customer_id, reason))
        rated += [
            _Rated(
                billing_key=draft.billing_key,
                customer=customer_id,
                currency=draft.currency,
                total=draft.totals.total,
                late_lines=sum(1 for line in draft.lines if line.kind == "late_usage"),
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
    if workers <= 0 or not chunks or not _can_fork():
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


def _can_fork() -> bool:
    """Forking is safe (see ``dbkit.forkpool``). The workers only rate: they never touch the database
    connections they inherit."""
    return can_fork()


def _billed_in_advance(plan: Plan) -> bool:
    return plan.subscription is not None and plan.subscription.billing is FeeBilling.IN_ADVANCE


def _meter_usage(usage: Mapping[object, Mapping[str, object]], key: object, plan: Plan) -> dict:
    found = usage.get(key, {})
    return {charge.meter: found[charge.meter] for charge in plan.charges if charge.meter in found}


def _subscriptions_for_late(session, late_periods: Iterable[tuple[str, Period]]) -> list[Subscription]:
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
    batch: int = 1000,
) -> list[str]:
    """Finalize the period's drafts — its period invoices and the opening invoices of the subscriptions that start
    in it (a yearly plan's is dated by its fee year) — numbered in customer order, ``batch`` per transaction, each
    invoice's ``invoice.finalized`` notification queued with it. Drafts another process finalized meanwhile are
    left to it, so two finalizations of one period can run at once."""
    with session_scope(engine) as session:
        starting = [
            opening_key(s.id)
            for s in repository.subscriptions_active_between(session, period.start, period.end)
            if period.contains(s.start_date) and (customer is None or s.customer_external_id == customer)
        ]
        statement = (
            select(InvoiceRow.id)
            .where(
                InvoiceRow.status == InvoiceStatus.DRAFT.value,
                # period invoices by their period; opening invoices by their subscription's start (a yearly
                # plan's is dated by its fee year, which would issue it before the subscription starts)
                ((InvoiceRow.period_start == period.start) & InvoiceRow.billing_key.like("period:%"))
                | InvoiceRow.billing_key.in_(starting),
            )
            .order_by(InvoiceRow.customer_external_id, InvoiceRow.id)
        )
        if customer is not None:
            statement = statement.where(InvoiceRow.customer_external_id == customer)
        ids = list(session.execute(statement).scalars())
    numbers: list[str] = []
    for offset in range(0, len(ids), batch):
        with session_scope(engine) as session:
            chunk = store.claim_drafts(session, ids[offset : offset + batch])
            numbers += store.finalize_many(session, chunk, settings, today)
            # In the same transaction: an invoice is issued if and only if its e-mail and webhook are queued.
            queue_invoices_finalized(session, store.get_invoices(session, chunk))
    return numbers
