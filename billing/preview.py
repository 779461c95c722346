"""A customer's usage in a billing period so far, the thresholds it reaches, and the upcoming invoice.

Nothing here prices anything itself: usage is aggregated per subscription window in one batch exactly as the
billing run does it (``billing.metering.aggregate_periods``, a weighted sum shared out over the part of the
period a subscription covers), and the preview is ``billing.core.compose.compose_period_invoice``, which rates through
``billing.core.rating.rate_period`` — the same functions that will write the invoice, so the preview and the invoice
agree line by line for the same usage. Thresholds are the catalog's (or the customer's own limits) evaluated with
``billing.thresholds``; the levels already notified come from the notifications table.

The preview carries the discount lines of the coupons applied to the customer that cover the period, as the
invoice will (the billing periods a repeating coupon already reduced are counted from the issued and draft
invoices before it), and the fees of the subscriptions that ended as the period began (an in-advance fee billed for
longer than they ran, given back; an in-arrears fee no invoice billed), as the run settles them. It leaves out late
usage of earlier, already issued periods (which the run adds to this
period's invoice) and a new subscription's opening invoice (a separate document).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select

from billing.config import get_settings
from billing.core.compose import BilledKey, Section, compose_period_invoice, period_key, section_window
from billing.core.domain import Customer, Subscription
from billing.core.fees import (
    arrears_fee_left_unbilled,
    billed_and_paid,
    credited_as_billed,
    fee_period_to_adjust,
    rate_fee,
    schedule_of,
)
from billing.core.overrides import SubscriptionOverride, fee_period_repriced
from billing.core.periods import Period, billing_period_named, month_of
from billing.coupons import applied_coupons
from billing.db import override_tables, repository, session_scope
from billing.db.notification_tables import NotificationRow
from billing.errors import BillingInputError, NotFoundError
from billing.metering import AnyUsage, UsageWindow, total_of
from billing.progressive import billed_progressively
from billing.thresholds import ThresholdSpec, crossed_levels, list_limits, plan_thresholds
from billing.usage_windows import ResolvedPlans, UsageKey, aggregate, charged_usage, resolve_plans, usage_windows
from dbkit import read_only, utcnow
from invoices import store
from invoices.model import DraftInvoice, LineKind
from pricing_plans.charge_models import MeterUsage
from pricing_plans.models import Catalog, Plan
from pricing_plans.money import HUNDRED, ZERO

__all__ = ["CustomerUsage", "MeterTotal", "ThresholdState", "current_period", "customer_usage"]

log = logging.getLogger(__name__)

_WHOLE = "customer"  # the key of the customer's whole period (each subscription's part is a UsageKey)
_PERCENT = Decimal("0.1")


@dataclass(frozen=True, slots=True)
class MeterTotal:
    """One meter's usage by the customer over the whole period so far."""

    code: str
    name: str
    unit: str
    usage: MeterUsage


@dataclass(frozen=True, slots=True)
class ThresholdState:
    """One threshold of one subscription: the value so far against its limit, and its levels.

    Attributes:
      spec: the threshold (key, kind, meter, limit, levels).
      value: units of the meter (usage) or usage charges so far (spend).
      percent: value / limit in percent, to one decimal; None for a zero limit.
      reached: the levels the value reaches now.
      notified: the levels already notified this period (from the notifications table).
    """

    subscription_id: int
    spec: ThresholdSpec
    value: Decimal
    percent: Decimal | None
    reached: tuple[int, ...]
    notified: tuple[int, ...]

    @property
    def full(self) -> bool:
        """The allowance used up: ``value >= limit``, exactly (``percent`` is rounded: 9,999 of 10,000 is 100.0 %
        and not full)."""
        return self.value >= self.spec.limit

    @property
    def blocked(self) -> bool:
        """A hard limit reached: usage is refused until the period ends, as the entitlements answer it."""
        return self.spec.hard_limit and self.full


@dataclass(frozen=True, slots=True)
class CustomerUsage:
    """A customer's period so far: usage per meter, thresholds, and the upcoming invoice (a draft, not stored)."""

    customer: Customer
    period: Period
    as_of: dt.datetime
    meters: tuple[MeterTotal, ...]
    thresholds: tuple[ThresholdState, ...]
    preview: DraftInvoice


def current_period(customer: Customer, now: dt.datetime) -> Period:
    """The calendar month that ``now`` falls in, in the customer's timezone."""
    return month_of(now.astimezone(ZoneInfo(customer.timezone)).date())


def _own_period(
    catalog: Catalog, customer: Customer, subscriptions: Iterable[Subscription], now: dt.datetime
) -> Period:
    """The customer's current billing period: the one its subscriptions active today share (a week, an
    anniversary month), or else the calendar month (``current_period``)."""
    today = now.astimezone(ZoneInfo(customer.timezone)).date()
    active = [s for s in subscriptions if s.overlaps(today, today + dt.timedelta(days=1))]
    plans = resolve_plans(catalog, active).plans
    own = {schedule_of(s, plans[s.id]).billing_period(today) for s in active if s.id in plans}
    return own.pop() if len(own) == 1 else current_period(customer, now)


def _named_period(
    catalog: Catalog, customer: Customer, subscriptions: Iterable[Subscription], named: Period
) -> Period:
    """The billing period ``named`` designates for the customer's subscriptions that share a day with it: itself
    (a calendar month, a week, ``START..END``) when it is theirs; a calendar month names the anniversary month
    ending in it. A month of a weekly plan, or a period that is not theirs, is refused (BillingInputError) with
    the periods that would do; with no subscription in it, ``named`` as given."""
    in_period = [s for s in subscriptions if s.overlaps(named.start, named.end)]
    plans = resolve_plans(catalog, in_period).plans
    found: set[Period] = set()
    for subscription in in_period:
        if subscription.id in plans:
            try:
                found.add(billing_period_named(schedule_of(subscription, plans[subscription.id]), named))
            except ValueError as error:
                raise BillingInputError(f"period: customer {customer.external_id}: {error}") from None
    if len(found) > 1:
        labels = ", ".join(p.label for p in sorted(found))
        raise BillingInputError(
            f"period: {named.label} names several billing periods of customer {customer.external_id} ({labels}): "
            "name one"
        )
    return found.pop() if found else named


def customer_usage(
    engine: Engine,
    catalog: Catalog,
    customer_id: str,
    period: Period | None = None,
    *,
    now: dt.datetime | None = None,
) -> CustomerUsage:
    """The usage of ``customer_id`` in ``period`` (default: the current one in the customer's timezone: its
    subscriptions' week or anniversary month, or the calendar month). A ``period`` given names one of the
    subscriptions' billing periods (``_named_period``).

    Raises NotFoundError for an unknown customer, BillingInputError for a period that names none.
    """
    as_of = now or utcnow()
    with session_scope(read_only(engine)) as session:
        customer = repository.get_customer(session, customer_id)
        if customer is None:
            raise NotFoundError(f"unknown customer {customer_id!r}")
        subscriptions = repository.subscriptions_of(session, customer.id)
        overrides = override_tables.overrides_of(session, {s.id for s in subscriptions})
    period = _named_period(catalog, customer, subscriptions, period) if period else None
    period = period or _own_period(catalog, customer, subscriptions, as_of)
    active, ended, resolved = _priced_subscriptions(catalog, customer, subscriptions, period, overrides)
    plans = resolved.priced()
    usage = _usage(engine, catalog, customer, period, active, plans)
    billed, paid = _billed_in_advance(engine, customer, period, active, resolved, ended)
    progressive = _billed_progressively(engine, customer, period)
    sections = [
        Section(
            s, plans[s.id], charged_usage(usage.get(UsageKey(s.id, period), {}), plans[s.id]), billed.get(s.id),
            advance_plan=_advance_plan(resolved, s, period), billed=progressive.get(s.id),
            billed_fee_paid=paid.get(s.id),
        )
        for s in active
    ]
    sections += _ended_sections(catalog, period, ended, plans, (billed, paid), progressive)
    rules = get_settings().tax_rules()
    with session_scope(read_only(engine)) as session:
        coupons = applied_coupons(session, [customer.external_id], period).get(customer.external_id, [])
        # (what the period's progressive invoices took off already: the period's discounts add up, as the run's)
        earlier = store.progressive_lines(session, [customer.external_id], period.start, period.end) if coupons else {}
    preview = compose_period_invoice(
        customer, period, sections, [], catalog, as_of, coupons, tax_rules=rules,
        earlier=earlier.get(customer.external_id, ()),
    )  # fmt: skip
    return CustomerUsage(
        customer=customer,
        period=period,
        as_of=as_of,
        meters=tuple(_meter_totals(usage.get(_WHOLE, {}), plans.values(), catalog)),
        thresholds=tuple(_thresholds(engine, customer, period, sections, preview)),
        preview=preview,
    )


def _billed_progressively(engine: Engine, customer: Customer, period: Period) -> dict[int, dict[BilledKey, Decimal]]:
    """What progressive invoices of the period billed already (the upcoming invoice bills the rest)."""
    with session_scope(read_only(engine)) as session:
        if customer.external_id not in store.customers_with_progressive_invoices(session, period.start):
            return {}
        return billed_progressively(session, [customer.external_id], period)


def _advance_plan(resolved: ResolvedPlans, subscription: Subscription, period: Period) -> Plan | None:
    """The plan of the next fee period's in-advance fee, when a negotiated price is recorded (as the run has it)."""
    if subscription.id not in resolved.negotiated:
        return None
    upcoming = schedule_of(subscription, resolved.plans[subscription.id]).fee_period(period.end)
    return resolved.for_fee(subscription, upcoming)


def _billed_in_advance(
    engine: Engine,
    customer: Customer,
    period: Period,
    active: Sequence[Subscription],
    resolved: ResolvedPlans,
    ended: Sequence[Subscription] = (),
) -> tuple[dict[int, Decimal], dict[int, Decimal]]:
    """What invoices billed in advance for the fee periods the period's invoice adjusts (a subscription ending in
    it or as it began, seats changing in it, a negotiated price starting with it), and of the in-arrears fee
    periods a subscription that ended as it began left early, and what their discounts left of those they
    reduced, by subscription: the preview settles them as the run will."""
    plans = resolved.plans
    adjusted = {s.id: f for s in [*active, *ended] if (f := fee_period_to_adjust(s, plans[s.id], period)) is not None}
    for s in ended:
        unbilled = arrears_fee_left_unbilled(s, plans[s.id], period)
        if s.id not in adjusted and unbilled is not None:
            adjusted[s.id] = unbilled
    for s in active:
        negotiated = resolved.negotiated.get(s.id)
        repriced = None if negotiated is None else fee_period_repriced(s, negotiated, period)
        if s.id not in adjusted and repriced is not None:
            adjusted[s.id] = repriced
    if not adjusted:
        return {}, {}
    keys, excluded = [(i, f.start) for i, f in adjusted.items()], [period_key(customer.external_id, period)]
    with session_scope(read_only(engine)) as session:
        documents = store.fee_invoices(session, keys, exclude=excluded)
    billed, paid = billed_and_paid(
        [(invoice.lines, credited_as_billed(invoice.taxes, notes)) for invoice, notes in documents], set(keys)
    )
    gross = {i: billed[(i, f.start)] for i, f in adjusted.items()}
    return gross, {i: paid[(i, f.start)] for i, f in adjusted.items() if paid.get((i, f.start), gross[i]) != gross[i]}


def _priced_subscriptions(
    catalog: Catalog,
    customer: Customer,
    subscriptions: Iterable[Subscription],
    period: Period,
    overrides: Mapping[int, Sequence[SubscriptionOverride]],
) -> tuple[list[Subscription], list[Subscription], ResolvedPlans]:
    """The customer's subscriptions in ``period`` that can be priced, those that ended as it began (on its first
    day, or on their own start day inside it: the run settles their fees), and their plans (negotiated prices in
    force included); one whose plan is unknown or priced in another currency is left out of the preview (and
    logged), as the run leaves it off the invoice."""
    subscriptions = list(subscriptions)
    in_period = [s for s in subscriptions if section_window(s, period) is not None]
    ended = [
        s
        for s in subscriptions
        if s.end_date == period.start or (s.end_date == s.start_date and period.contains(s.start_date))
    ]
    resolved = resolve_plans(
        catalog, [*in_period, *ended], {customer.external_id: customer}, overrides=overrides, period=period
    )
    for problem in resolved.problems:
        log.warning("usage of %s: %s (skipped)", customer.external_id, problem.message)
    plans = resolved.priced()
    return [s for s in in_period if s.id in plans], [s for s in ended if s.id in plans], resolved


def _ended_sections(
    catalog: Catalog,
    period: Period,
    ended: Sequence[Subscription],
    plans: Mapping[int, Plan],
    fees: tuple[Mapping[int, Decimal], Mapping[int, Decimal]],
    progressive: Mapping[int, dict[BilledKey, Decimal]],
) -> list[Section]:
    """The sections of the subscriptions that ended as the period began, as the run writes them
    (``billing.run._ended_sections``): an in-advance fee billed for longer than they ran, adjusted; an in-arrears
    fee of a fee period they left early that no invoice billed; what progressive invoices billed, given back.
    ``fees``: what invoices billed of the fee periods concerned, and what their discounts left of it."""
    billed, paid = fees
    sections = []
    for s in ended:
        given_back = progressive.get(s.id)
        plan = plans[s.id]
        if billed.get(s.id) and fee_period_to_adjust(s, plan, period) is not None:
            sections.append(Section(
                s, plan, {}, billed_fee=billed[s.id], fee_only=True, billed_fee_paid=paid.get(s.id), billed=given_back
            ))  # fmt: skip
            continue
        unbilled = arrears_fee_left_unbilled(s, plan, period)
        fee = None
        if unbilled is not None and not billed.get(s.id):
            fee = rate_fee(s, plan, unbilled, catalog.rounding)
        if (fee is not None and fee.amount) or given_back:
            sections.append(Section(s, plan, {}, fee_only=True, arrears_fee=fee if fee else None, billed=given_back))
    return sections


def _usage(
    engine: Engine,
    catalog: Catalog,
    customer: Customer,
    period: Period,
    active: list[Subscription],
    plans: Mapping[int, Plan],
) -> dict[UsageKey | str, dict[str, AnyUsage]]:
    """In one batch: the customer's usage over the whole period (``_WHOLE``) and each subscription's part (split
    by dimension for its plan's charges priced so)."""
    windows: dict[UsageKey | str, UsageWindow] = {
        _WHOLE: UsageWindow(customer.external_id, customer.timezone, period)
    }
    keys = [UsageKey(s.id, period) for s in active]
    for key, window in usage_windows(keys, {s.id: s for s in active}, {customer.external_id: customer}).items():
        windows[key] = window
    return aggregate(engine, catalog, windows, {key: plans[key.subscription] for key in keys})


def _meter_totals(found: Mapping[str, AnyUsage], plans: Iterable[Plan], catalog: Catalog) -> list[MeterTotal]:
    """Every meter with usage, and every meter a subscribed plan charges for (zero if unused)."""
    totals_by_code = {code: total_of(usage) for code, usage in found.items()}
    used = {code for code, usage in totals_by_code.items() if usage.events or usage.quantity}
    codes = used | {charge.meter for plan in plans for charge in plan.charges}
    totals = []
    for code in sorted(codes):
        meter = catalog.meters.get(code)
        totals.append(
            MeterTotal(
                code=code,
                name=meter.name if meter else code,
                unit=meter.unit if meter else "unit",
                usage=totals_by_code.get(code) or MeterUsage(),
            )
        )
    return totals


def _thresholds(
    engine: Engine, customer: Customer, period: Period, sections: list[Section], preview: DraftInvoice
) -> list[ThresholdState]:
    limits = {limit.key: limit.limit for limit in list_limits(engine, customer.external_id)}
    notified = _notified_levels(engine, customer, period)
    states = []
    for section in sections:
        subscription_id = section.subscription.id
        spend = sum(
            (
                line.amount
                for line in preview.lines
                if line.kind is LineKind.USAGE and line.subscription_id == subscription_id
            ),
            ZERO,
        )
        for spec in plan_thresholds(section.plan, limits):
            if spec.kind == "usage":
                found = section.usage.get(spec.meter or "")
                value = total_of(found).quantity if found is not None else ZERO
            else:
                value = spend
            percent = (value * HUNDRED / spec.limit).quantize(_PERCENT) if spec.limit else None
            states.append(
                ThresholdState(
                    subscription_id=subscription_id,
                    spec=spec,
                    value=value,
                    percent=percent,
                    reached=crossed_levels(value, spec.limit, spec.levels),
                    notified=tuple(sorted(notified.get((subscription_id, spec.key), ()))),
                )
            )
    return states


def _notified_levels(engine: Engine, customer: Customer, period: Period) -> dict[tuple[int, str], set[int]]:
    statement = select(NotificationRow.subscription_id, NotificationRow.threshold_key, NotificationRow.level).where(
        NotificationRow.customer_external_id == customer.external_id,
        NotificationRow.period == period.label,
        NotificationRow.level.is_not(None),
    )
    found: dict[tuple[int, str], set[int]] = {}
    with session_scope(read_only(engine)) as session:
        for subscription_id, key, level in session.execute(statement):
            if subscription_id is not None and key is not None and level is not None:
                found.setdefault((subscription_id, key), set()).add(level)
    return found
