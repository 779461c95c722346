"""A customer's usage in a billing period so far, the thresholds it reaches, and the upcoming invoice.

Nothing here prices anything itself: usage is aggregated per subscription window in one batch exactly as the
billing run does it (``billing.metering.aggregate_periods``, a weighted sum shared out over the part of the
period a subscription covers), and the preview is ``billing.core.compose.compose_period_invoice``, which rates through
``billing.core.rating.rate_period`` — the same functions that will write the invoice, so the preview and the invoice
agree line by line for the same usage. Thresholds are the catalog's (or the customer's own limits) evaluated with
``billing.thresholds``; the levels already notified come from the notifications table.

The preview leaves out late usage of earlier, already issued periods (which the run adds to this period's
invoice) and a new subscription's opening invoice (a separate document).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select

from billing.core.compose import Section, compose_period_invoice, section_window
from billing.core.domain import Customer, Subscription
from billing.core.periods import Period, month_of
from billing.db import repository, session_scope
from billing.db.notification_tables import NotificationRow
from billing.errors import NotFoundError
from billing.metering import UsageWindow, aggregate_periods
from billing.thresholds import ThresholdSpec, crossed_levels, list_limits, plan_thresholds
from dbkit import read_only
from invoices.model import DraftInvoice
from pricing_plans.charge_models import MeterUsage
from pricing_plans.errors import UnknownPlanError
from pricing_plans.models import Catalog, Plan
from pricing_plans.money import HUNDRED, ZERO

__all__ = ["CustomerUsage", "MeterTotal", "ThresholdState", "current_period", "customer_usage"]

log = logging.getLogger(__name__)

_WHOLE = ("now", "customer")  # the customer's whole period; "now" keys are shared out like the run's
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


def customer_usage(
    engine: Engine,
    catalog: Catalog,
    customer_id: str,
    period: Period | None = None,
    *,
    now: dt.datetime | None = None,
) -> CustomerUsage:
    """The usage of ``customer_id`` in ``period`` (default: the current one in the customer's timezone).

    Raises NotFoundError for an unknown customer.
    """
    as_of = now or dt.datetime.now(dt.UTC)
    with session_scope(read_only(engine)) as session:
        customer = repository.get_customer(session, customer_id)
        if customer is None:
            raise NotFoundError(f"unknown customer {customer_id!r}")
        subscriptions = repository.subscriptions_of(session, customer.id)
    period = period or current_period(customer, as_of)

    plans: dict[int, Plan] = {}
    windows: dict[object, UsageWindow] = {_WHOLE: UsageWindow(customer.external_id, customer.timezone, period)}
    active: list[Subscription] = []
    for subscription in subscriptions:
        window = section_window(subscription, period)
        if window is None:
            continue
        try:
            plan = catalog.plan(subscription.plan_code, subscription.plan_version)
        except UnknownPlanError as error:
            log.warning("usage of %s: subscription %d skipped: %s", customer_id, subscription.id, error)
            continue
        if plan.currency != customer.currency:
            log.warning("usage of %s: subscription %d is priced in %s", customer_id, subscription.id, plan.currency)
            continue
        plans[subscription.id] = plan
        active.append(subscription)
        windows[("now", subscription.id)] = UsageWindow(customer.external_id, customer.timezone, period, window)
    usage = aggregate_periods(engine, catalog, windows)

    sections = [Section(s, plans[s.id], _charged(usage.get(("now", s.id), {}), plans[s.id])) for s in active]
    preview = compose_period_invoice(customer, period, sections, [], catalog, as_of)
    return CustomerUsage(
        customer=customer,
        period=period,
        as_of=as_of,
        meters=tuple(_meter_totals(usage.get(_WHOLE, {}), plans.values(), catalog)),
        thresholds=tuple(_thresholds(engine, customer, period, sections, preview)),
        preview=preview,
    )


def _charged(found: Mapping[str, MeterUsage], plan: Plan) -> dict[str, MeterUsage]:
    return {charge.meter: found[charge.meter] for charge in plan.charges if charge.meter in found}


def _meter_totals(found: Mapping[str, MeterUsage], plans: Iterable[Plan], catalog: Catalog) -> list[MeterTotal]:
    """Every meter with usage, and every meter a subscribed plan charges for (zero if unused)."""
    used = {code for code, usage in found.items() if usage.events or usage.quantity}
    codes = used | {charge.meter for plan in plans for charge in plan.charges}
    totals = []
    for code in sorted(codes):
        meter = catalog.meters.get(code)
        totals.append(
            MeterTotal(
                code=code,
                name=meter.name if meter else code,
                unit=meter.unit if meter else "unit",
                usage=found.get(code) or MeterUsage(),
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
            (line.amount for line in preview.lines if line.kind == "usage" and line.subscription_id == subscription_id),
            ZERO,
        )
        for spec in plan_thresholds(section.plan, limits):
            if spec.kind == "usage":
                found = section.usage.get(spec.meter or "")
                value = found.quantity if found is not None else ZERO
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
            if subscription_id is not None and key is not None:
                found.setdefault((subscription_id, key), set()).add(level)
    return found
