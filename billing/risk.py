"""Churn-risk warnings: gather each active customer's signals for a period from the database, assess them with the
pure rules of ``billing.core.risk``, and queue one ``customer.at_risk`` notification per customer and period for
those at risk.

Only what was known by the period's end is used (a cancellation recorded later does not count), so a past period
can be assessed again as it stood — which is what the demo's backtest does.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import dbkit
from billing.config import Settings, get_settings
from billing.core.domain import Customer, Subscription
from billing.core.metrics import LATEST_UTC_OFFSET, plan_mrr
from billing.core.periods import Period, month_of
from billing.core.risk import Assessment, Backtest, RiskRules, Signals, assess, backtest, rank
from billing.core.tax import Treatment, buyer, treatment
from billing.db import coupon_tables, repository, session_scope
from billing.db.notification_tables import NotificationRow
from billing.db.stripe_tables import DunningRow
from billing.db.tables import SubscriptionRow
from billing.event_store import event_store
from billing.metering import UsageWindow, aggregate_periods, total_of
from dbkit import iso_instant, read_only
from invoices import store
from pricing_plans.errors import UnknownPlanError
from pricing_plans.models import Catalog, Plan

__all__ = [
    "Known",
    "assess_period",
    "backtest_periods",
    "churned_by_period",
    "gather_signals",
    "last_closed_month",
    "queue_at_risk",
    "rules_from_settings",
]

HISTORY = 3
"""Periods before the assessed one whose usage makes the trailing average."""


def rules_from_settings(settings: Settings) -> RiskRules:
    """The rules' parameters from the settings (``[risk]`` in the configuration file, ``BILLING_RISK__…``)."""
    risk = settings.risk
    return RiskRules(
        usage_drop_share=risk.usage_drop_share,
        inactive_days=risk.inactive_days,
        adoption_share=risk.adoption_share,
        coupon_ending_periods=risk.coupon_ending_periods,
        level=risk.level,
        points=dict(risk.points),
    )


@dataclass(frozen=True, slots=True)
class Known:
    """What the database knew at the period's end, besides usage: when each subscription was cancelled (a plan
    change included), failed payments, the limits reached, the coupons applied and how each customer is taxed
    (the tax inside a tax-inclusive plan's prices is no MRR)."""

    cancelled: Mapping[int, dt.datetime | None]
    failed_payments: Mapping[str, int]
    limits_reached: Mapping[str, tuple[str, ...]]
    coupons: Mapping[str, list[coupon_tables.CustomerCoupon]]
    taxed: Mapping[str, Treatment] = field(default_factory=dict)


def _shift(period: Period, back: int) -> Period:
    for _ in range(back):
        period = period.previous()
    return period


def _end_instant(period: Period, customer: Customer) -> dt.datetime:
    return dt.datetime.combine(period.end, dt.time(), ZoneInfo(customer.timezone)).astimezone(dt.UTC)


def _active(subs: Sequence[Subscription], day: dt.date) -> list[Subscription]:
    return [s for s in subs if s.active_on(day)]


def _plan(catalog: Catalog, sub: Subscription) -> Plan | None:
    try:
        return catalog.plan(sub.plan_code, sub.plan_version)
    except UnknownPlanError:
        return None


def _known(session: Session, period: Period, customers: Sequence[str], as_of: dt.datetime) -> Known:
    rows = session.execute(select(SubscriptionRow.id, SubscriptionRow.cancelled_at))
    cancelled = {sub_id: at for sub_id, at in rows}
    start = dt.datetime.combine(period.start, dt.time(), dt.UTC)
    failures = session.execute(
        select(DunningRow.invoice_id).where(DunningRow.last_failure_at >= start, DunningRow.last_failure_at < as_of)
    ).scalars()
    failed: dict[str, int] = defaultdict(int)
    for invoice in store.get_invoices(session, list(failures)):
        failed[invoice.customer_id or ""] += 1
    reached: dict[str, list[str]] = defaultdict(list)
    alerts = session.execute(
        select(NotificationRow.customer_external_id, NotificationRow.threshold_key)
        .where(NotificationRow.kind.in_(("usage.threshold_crossed", "spend.threshold_crossed")))
        .where(NotificationRow.period == period.label, NotificationRow.level >= 100)
    )
    for customer, key in alerts:
        if key is not None and key not in reached[customer]:
            reached[customer].append(key)
    coupons: dict[str, list[coupon_tables.CustomerCoupon]] = defaultdict(list)
    for held in coupon_tables.customer_coupons(session, customers):
        if held.applied_on is not None and held.applied_at is not None and held.applied_at < as_of:
            coupons[held.customer].append(held)
    limits = {c: tuple(sorted(keys)) for c, keys in reached.items()}
    return Known(cancelled, dict(failed), limits, dict(coupons))


def _coupons_ending(held: Iterable[coupon_tables.CustomerCoupon], period: Period, window: int) -> tuple[str, ...]:
    """The coupons whose last discounted (monthly) period is ``period`` or one of the next ``window`` − 1."""
    ending: list[str] = []
    for coupon in held:
        limit = coupon.coupon.periods
        if limit is None or coupon.applied_on is None:
            continue
        # it reduces the periods that start after the day it was applied: the first is the next month's
        applied = coupon.applied_on.replace(day=1)
        last = _shift_forward(Period(applied, _month_end(applied)), limit)
        if period <= last <= _shift_forward(period, window - 1):
            ending.append(coupon.coupon.code)
    return tuple(sorted(ending))


def _month_end(day: dt.date) -> dt.date:
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def _shift_forward(period: Period, forward: int) -> Period:
    for _ in range(forward):
        period = period.next()
    return period



def gather_signals(
    engine: Engine, catalog: Catalog, period: Period, rules: RiskRules, as_of: dt.datetime | None = None
) -> list[Signals]:
    """The signals of every customer active on the period's last day, as the database knew them at ``as_of``
    (default: the latest of the customers' ends of the period, so a past period is assessed as it stood)."""
    with session_scope(read_only(engine)) as session:
        customers = {c.external_id: c for c in repository.list_customers(session)}
        by_customer: dict[str, list[Subscription]] = defaultdict(list)
        for sub in repository.list_subscriptions(session):
            by_customer[sub.customer_external_id].append(sub)
        active = sorted(c for c, subs in by_customer.items() if _active(subs, period.last_day) and c in customers)
        known_at = as_of or max((_end_instant(period, customers[c]) for c in active), default=dbkit.utcnow())
        tax_rules = get_settings().tax_rules()
        taxed = {c: treatment(tax_rules, buyer(customers[c])) for c in active}
        known = replace(_known(session, period, active, known_at), taxed=taxed)
    usage = _usage(engine, catalog, period, [customers[c] for c in active], by_customer)
    last = event_store(engine).last_events({c: min(_end_instant(period, customers[c]), known_at) for c in active})
    signals = []
    for c in active:
        subs = by_customer[c]
        last_day = last[c].astimezone(ZoneInfo(customers[c].timezone)).date() if c in last else None
        signals.append(_signals_of(c, subs, catalog, period, usage.get(c, {}), known, known_at, rules, last_day))
    return signals


def _usage(
    engine: Engine,
    catalog: Catalog,
    period: Period,
    customers: Sequence[Customer],
    subscriptions: Mapping[str, Sequence[Subscription]],
) -> dict[str, dict[str, list[Decimal | None]]]:
    """Per customer and meter, the quantities of the 3 periods before ``period`` and of ``period``, oldest first;
    None for a period the customer was not subscribed through (its first and last days)."""
    periods = [_shift(period, back) for back in range(HISTORY, -1, -1)]
    windows = {
        (c.external_id, index): UsageWindow(c.external_id, c.timezone, p)
        for c in customers
        for index, p in enumerate(periods)
    }
    found = aggregate_periods(engine, catalog, windows)
    usage: dict[str, dict[str, list[Decimal | None]]] = {}
    for c in customers:
        subs = subscriptions.get(c.external_id, ())
        through = [bool(_active(subs, p.start)) and bool(_active(subs, p.last_day)) for p in periods]
        through[-1] = True  # the assessed period itself always counts (a customer who started in it included)
        by_index = [found.get((c.external_id, index), {}) for index in range(len(periods))]
        meters = {meter for used in by_index for meter in used}
        usage[c.external_id] = {
            meter: [
                (total_of(used[meter]).quantity if meter in used else Decimal(0)) if ok else None
                for used, ok in zip(by_index, through, strict=True)
            ]
            for meter in meters
        }
    return usage


def _signals_of(
    customer: str,
    subs: Sequence[Subscription],
    catalog: Catalog,
    period: Period,
    usage: Mapping[str, list[Decimal | None]],
    known: Known,
    known_at: dt.datetime,
    rules: RiskRules,
    last_event: dt.date | None,
) -> Signals:
    current = _active(subs, period.last_day)
    allowances: dict[str, tuple[Decimal, Decimal]] = {}
    for sub in current:
        plan = _plan(catalog, sub)
        for threshold in plan.thresholds if plan is not None else ():
            if threshold.allowance is not None and threshold.meter and threshold.allowance > 0:
                used = usage.get(threshold.meter, [Decimal(0)])[-1] or Decimal(0)
                allowances[threshold.meter] = (used, Decimal(threshold.allowance))
    downgrade = cancellation = False
    for sub in current:
        if sub.end_date is None or sub.end_date <= period.end:
            continue
        cancelled_at = known.cancelled.get(sub.id)
        if cancelled_at is None or cancelled_at > known_at:
            continue  # not known yet at the period's end
        if sub.cancel_reason is not None:
            cancellation = True
        else:
            downgrade = downgrade or _is_downgrade(catalog, sub, subs, known.taxed.get(customer, Treatment()))
    since = min((s.start_date for s in subs if s.end_date is None or s.end_date > period.start), default=None)
    return Signals(
        customer=customer,
        usage=usage,
        last_event=last_event,
        active_since=since,
        allowances=allowances,
        limits_reached=known.limits_reached.get(customer, ()),
        failed_payments=known.failed_payments.get(customer, 0),
        downgrade_scheduled=downgrade,
        cancellation_scheduled=cancellation,
        coupons_ending=_coupons_ending(known.coupons.get(customer, ()), period, rules.coupon_ending_periods),
        metered=any(plan.charges for plan in (_plan(catalog, s) for s in current) if plan is not None),
    )


def _is_downgrade(
    catalog: Catalog, ending: Subscription, subs: Sequence[Subscription], taxed: Treatment = Treatment()
) -> bool:
    """Whether the plan change that ends ``ending`` moves to a plan with a lower MRR (net of the tax inside
    tax-inclusive prices, at the customer's rate ``taxed``, as ``billing metrics`` counts it)."""
    successor = next((s for s in subs if s.previous_subscription_id == ending.id), None)
    old, new = _plan(catalog, ending), _plan(catalog, successor) if successor is not None else None
    if old is None or new is None or successor is None:
        return False
    after = plan_mrr(new, successor.quantity, taxed.rate(new.tax_category))
    return after < plan_mrr(old, ending.quantity_on(ending.start_date), taxed.rate(old.tax_category))


def assess_period(
    engine: Engine, catalog: Catalog, period: Period, rules: RiskRules, as_of: dt.datetime | None = None
) -> list[Assessment]:
    """Every active customer's assessment for ``period``, highest risk first."""
    return rank(assess(signals, period, rules) for signals in gather_signals(engine, catalog, period, rules, as_of))


def queue_at_risk(engine: Engine, assessments: Iterable[Assessment]) -> list[str]:
    """Queue a ``customer.at_risk`` notification for each assessment at risk, once per customer and period
    (a unique index; a re-run adds nothing). Returns the ids of the notifications created now."""
    now = dbkit.utcnow()
    rows = []
    for a in assessments:
        if not a.at_risk:
            continue
        payload = {
            "customer": a.customer,
            "period": a.period.label,
            "score": a.score,
            "level": a.level,
            "reasons": [{"rule": r.rule.value, "detail": r.detail, "points": r.points} for r in a.reasons],
            "expansion_signals": list(a.expansion),
            "created_at": iso_instant(now),
        }
        rows.append({
            "id": str(uuid.uuid4()), "kind": "customer.at_risk", "customer_external_id": a.customer,
            "period": a.period.label, "level": a.score, "payload": json.dumps(payload, sort_keys=True),
            "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now,
        })  # fmt: skip
    if not rows:
        return []
    with session_scope(engine) as session:
        table = NotificationRow.__table__
        statement = dbkit.insert_for(session, table).on_conflict_do_nothing().returning(table.c.id)
        return list(session.connection().execute(statement, rows).scalars())


def churned_by_period(engine: Engine, periods: Sequence[Period]) -> dict[Period, set[str]]:
    """The customers who churned in each period: active (any subscription) on its first day, not on its end."""
    with session_scope(read_only(engine)) as session:
        by_customer: dict[str, list[Subscription]] = defaultdict(list)
        for sub in repository.list_subscriptions(session):
            by_customer[sub.customer_external_id].append(sub)
    return {
        p: {c for c, subs in by_customer.items() if _active(subs, p.start) and not _active(subs, p.end)}
        for p in periods
    }


def backtest_periods(
    engine: Engine, catalog: Catalog, assessed: Sequence[Period], observed: Sequence[Period], rules: RiskRules
) -> tuple[Backtest, dict[Period, list[Assessment]]]:
    """Assess each of ``assessed`` as it stood at its end, and compare the customers flagged at risk with those
    who churned in ``observed`` (``billing.core.risk.backtest``)."""
    found = {p: assess_period(engine, catalog, p, rules) for p in assessed}
    flags = {p: {a.customer for a in found[p] if a.at_risk} for p in assessed}
    return backtest(flags, churned_by_period(engine, observed)), found


def last_closed_month(now: dt.datetime) -> Period:
    """The latest month that has ended in every timezone at ``now`` (an aware instant): the one the scheduler
    assesses (an open month's usage is partial, so it is never assessed)."""
    return month_of((now.astimezone(dt.UTC) + LATEST_UTC_OFFSET).date()).previous()
