"""Progressive billing: an invoice of a subscription's usage so far, issued during its period as soon as the
period's usage charges reach an amount of the plan's ``[plans.X.progressive_billing] amounts``.

Evaluated like thresholds, for the billing periods the ingested events fall in (``billing.reactions`` after each
ingestion, and the scheduler's regular check), never for a period whose period invoice is issued:

  load      the subscriptions covering a day of each period up to today whose plan has progressive billing, and
            the highest amount each was already invoiced at in the period;
  aggregate their usage so far in one batch, and rate it (``rating.usage_charges``, as the invoice rates it);
  issue     for each subscription that reached amounts above the highest invoiced, in a transaction of its own:
            the subscription's row locked, the amounts invoiced read again, what earlier progressive invoices of
            the period billed read (``store.billed_by_period``), a draft of the period's invoice written
            before removed (it would bill the same usage again), the invoice composed
            (``billing.core.progressive``; the customer's coupons reduce it as they would the period's
            invoice, less what its earlier invoices took off), written and finalized with the next gap-free
            number, its ``invoice.finalized`` notification queued with it.

Exactly once: the billing key ``progressive:<subscription>:<period>:<amount>`` is unique, and the highest amount
reached is re-read under the lock, so a re-run (after a crash, or by another process at the same time) finds the
crossing invoiced and issues nothing. A batch that reaches two amounts at once issues one invoice, at the higher.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from billing import credits
from billing.config import get_settings
from billing.core.compose import BilledKey, period_key
from billing.core.domain import Customer, Subscription
from billing.core.fees import schedule_of
from billing.core.periods import Period, month_of
from billing.core.progressive import amounts_reached, compose_progressive_invoice, level_of
from billing.core.rating import usage_charges
from billing.coupons import applied_coupons
from billing.db import override_tables, repository, session_scope
from billing.event_store import event_store
from billing.invoicing import finalize_settings
from billing.metering import AnyUsage
from billing.notify.outbox import queue_invoices_finalized
from billing.usage_windows import UsageKey, aggregate, charged_usage, resolve_plans, usage_windows
from dbkit import as_utc, read_only, utcnow
from invoices import store
from pricing_plans.errors import AmountOutOfRangeError
from pricing_plans.models import Catalog, Plan

__all__ = ["ProgressiveReport", "billed_progressively", "issue_progressive_invoices"]


@dataclass
class ProgressiveReport:
    """What ``issue_progressive_invoices`` did: the subscription periods evaluated, the numbers of the invoices
    it issued, and ``(customer, reason)`` for subscriptions it could not evaluate."""

    evaluated: int = 0
    issued: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Target:
    subscription: Subscription
    owner: Customer
    plan: Plan
    period: Period
    invoiced: Decimal | None  # the highest amount already invoiced in the period

    @property
    def usage_key(self) -> UsageKey:
        return UsageKey(self.subscription.id, self.period)


def issue_progressive_invoices(
    engine: Engine,
    catalog: Catalog,
    settings: store.FinalizeSettings | None = None,
    *,
    periods: Mapping[str, Iterable[Period]] | None = None,
    customers: Iterable[str] | None = None,
    now: dt.datetime | None = None,
) -> ProgressiveReport:
    """Issue the progressive invoices due: for the calendar months of each customer named in ``periods`` (those
    an ingestion put events in), or else each customer's current month (of ``customers`` only, if given) — the
    billing periods of each subscription over their days up to today. ``now``: when "today" is (default: the
    clock). ``settings``: how issued invoices are numbered and dated (default: the configuration's, read only
    when an invoice is issued). Safe to run from any number of processes at once."""
    report = ProgressiveReport()
    instant = as_utc(now or utcnow())
    wanted = None if customers is None else set(customers)
    if periods is not None:
        wanted = {c for c, found in periods.items() if found and (wanted is None or c in wanted)}
        if not wanted:
            return report
    targets = _targets(engine, catalog, instant, periods, wanted, report)
    if not targets:
        return report
    usage_as_of = event_store(engine).ingestion_cutoff()
    by_id = {t.subscription.id: t.subscription for t in targets}
    owners = {t.owner.external_id: t.owner for t in targets}
    windows = usage_windows([t.usage_key for t in targets], by_id, owners)
    usage = aggregate(engine, catalog, windows, {t.usage_key: t.plan for t in targets})
    report.evaluated = len(targets)
    for target in targets:
        found = charged_usage(usage.get(target.usage_key, {}), target.plan)
        _evaluate(engine, catalog, settings, target, found, instant, usage_as_of, report)
    return report


def _targets(
    engine: Engine,
    catalog: Catalog,
    instant: dt.datetime,
    periods: Mapping[str, Iterable[Period]] | None,
    wanted: set[str] | None,
    report: ProgressiveReport,
) -> list[_Target]:
    """load: each subscription with progressive billing over each of its billing periods that has a day in the
    months asked, up to today; a period whose period invoice is issued is left out (its usage is billed)."""
    asked = {c: sorted(set(found)) for c, found in (periods or {}).items() if wanted is None or c in wanted}
    utc_day = instant.date()
    days = [p for found in asked.values() for p in found] or [month_of(utc_day - dt.timedelta(days=1))]
    earliest = min(p.start for p in days)
    latest = max(max(p.end for p in days), month_of(utc_day + dt.timedelta(days=1)).end)
    with session_scope(read_only(engine)) as session:
        found = repository.subscriptions_active_between(session, earliest, latest, wanted)
        owners = repository.customers_by_external_id(session, {s.customer_external_id for s in found})
        overrides = override_tables.overrides_of(session, {s.id for s in found})
        resolved = resolve_plans(catalog, found, owners, overrides=overrides)
        report.skipped += [(problem.customer, problem.message) for problem in resolved.unknown]
        covering: list[tuple[Subscription, Customer, Period]] = []
        for subscription in found:
            owner = owners.get(subscription.customer_external_id)
            if owner is None or subscription.id not in resolved.plans or subscription.id in resolved.foreign_currency:
                continue
            today = instant.astimezone(ZoneInfo(owner.timezone)).date()
            months = asked.get(owner.external_id) if periods is not None else [month_of(today)]
            for period in _billing_periods(subscription, resolved.plans[subscription.id], months or (), today):
                covering.append((subscription, owner, period))
        return _open_targets(session, covering, resolved.for_period)


def _billing_periods(
    subscription: Subscription, plan: Plan, months: Iterable[Period], today: dt.date
) -> list[Period]:
    """The subscription's billing periods with a day in ``months`` up to ``today`` that it covers a day of, and
    that have not ended (a progressive invoice is issued during its period: once it has ended, its own invoice
    bills it all)."""
    schedule = schedule_of(subscription, plan)
    found: list[Period] = []
    for month in months:
        until = min(month.end, today + dt.timedelta(days=1))
        if month.start >= until:
            continue
        period = schedule.billing_period(month.start)
        while period.start < until:
            covers = subscription.overlaps(period.start, min(period.end, until))
            if period not in found and covers and period.end > today:
                found.append(period)
            period = schedule.next_billing_period(period)
    return found


def _open_targets(
    session: Session,
    covering: list[tuple[Subscription, Customer, Period]],
    plan_for: Callable[[int, Period], Plan],
) -> list[_Target]:
    """The targets among ``covering`` whose plan then has progressive billing and whose period invoice is not
    issued, with the highest amount each was invoiced at so far."""
    targets: list[_Target] = []
    starts = sorted({period.start for _, _, period in covering})
    # (a period's own invoice: a week's issued invoice starting on the 1st leaves the month's open)
    ends = sorted({(period.start, period.end) for _, _, period in covering})
    issued = {(a, b): store.customers_with_issued_invoice(session, a, period_end=b) for a, b in ends}
    for start in starts:
        open_ = [
            (s, o, p) for s, o, p in covering if p.start == start and o.external_id not in issued[(p.start, p.end)]
        ]
        here = [(s, o, p, plan) for s, o, p in open_ if (plan := plan_for(s.id, p)).progressive_billing is not None]
        keys = store.progressive_keys(session, [s.id for s, _, _, _ in here], start)
        for subscription, owner, period, plan in here:
            invoiced = max((level_of(key) for key in keys.get(subscription.id, ())), default=None)
            targets.append(_Target(subscription, owner, plan, period, invoiced))
    return targets


def _evaluate(
    engine: Engine,
    catalog: Catalog,
    settings: store.FinalizeSettings | None,
    target: _Target,
    usage: Mapping[str, AnyUsage],
    instant: dt.datetime,
    usage_as_of: dt.datetime,
    report: ProgressiveReport,
) -> None:
    """rate and issue: the invoice of the target's usage so far if its charges reached a new amount."""
    subscription, plan, period = target.subscription, target.plan, target.period
    assert plan.progressive_billing is not None
    try:
        charges = usage_charges(subscription, plan, usage, period, rounding=catalog.rounding)
    except AmountOutOfRangeError as error:
        report.skipped.append((subscription.customer_external_id, str(error)))
        return
    reached = amounts_reached(plan.progressive_billing.amounts, charges, target.invoiced)
    if not reached:
        return
    with session_scope(engine) as session:
        # one issuer at a time; the customer first, as every writer of both takes them (never a circle of waits)
        repository.lock_customers(session, [subscription.customer_external_id])
        repository.get_subscription(session, subscription.id, for_update=True)
        keys = store.progressive_keys(session, [subscription.id], period.start).get(subscription.id, [])
        invoiced = max((level_of(key) for key in keys), default=None)
        if invoiced is not None and invoiced >= reached[-1]:
            return  # issued meanwhile, by another process or an earlier run
        report.issued += _issue(session, catalog, settings, target, usage, reached[-1], instant, usage_as_of)


def _issue(
    session: Session,
    catalog: Catalog,
    settings: store.FinalizeSettings | None,
    target: _Target,
    usage: Mapping[str, AnyUsage],
    level: Decimal,
    instant: dt.datetime,
    usage_as_of: dt.datetime,
) -> list[str]:
    """Write and finalize the progressive invoice at ``level``, in the caller's transaction."""
    subscription, owner, period = target.subscription, target.owner, target.period
    own = billed_progressively(session, [owner.external_id], period).get(subscription.id, {})
    today = instant.astimezone(ZoneInfo(owner.timezone)).date()
    through = min(today, period.end - dt.timedelta(days=1))
    # A draft of the period's invoice written before now bills this usage too: it goes (nothing is lost: a draft
    # has no number), and the next billing run writes the period's invoice again, for the rest.
    store.remove_stale_drafts(session, period.start, (), owner.external_id, period_end=period.end)
    coupons = applied_coupons(session, [owner.external_id], period).get(owner.external_id, [])
    earlier = store.progressive_lines(session, [owner.external_id], period.start, period.end) if coupons else {}
    draft = compose_progressive_invoice(
        owner, subscription, target.plan, period, usage, own, level,
        through=through, catalog=catalog, usage_as_of=usage_as_of, tax_rules=get_settings().tax_rules(),
        coupons=coupons, earlier=earlier.get(owner.external_id, ()),
    )
    outcome = store.upsert_draft(session, draft)
    if outcome.action == "issued":
        return []
    numbers = credits.finalize_with_credits(
        session, [outcome.invoice_id], settings or finalize_settings(), today, instant
    )
    # In the same transaction: an invoice is issued if and only if its e-mail and webhook are queued.
    queue_invoices_finalized(session, credits.with_credits(session, store.get_invoices(session, [outcome.invoice_id])))
    return numbers


def billed_progressively(
    session: Session, customers: Iterable[str], period: Period
) -> dict[int, dict[BilledKey, Decimal]]:
    """What the progressive invoices of ``period`` billed for the usage of each subscription of ``customers``, by
    (meter, dimension): every invoice but the period's own that bills usage of the period (drafts of the period's
    invoice are left out; nothing else bills a period's usage before it is issued)."""
    owners = set(customers)
    if not owners:
        return {}
    billed = store.billed_by_period(session, owners, period.start, exclude=[period_key(c, period) for c in owners])
    by_subscription: dict[int, dict[BilledKey, Decimal]] = {}
    for (_, subscription_id, meter, dimension), amount in billed.items():
        if subscription_id is not None:
            by_subscription.setdefault(subscription_id, {})[None if meter is None else (meter, dimension)] = amount
    return by_subscription
