"""Negotiated prices: a subscription's overrides of its plan, version by version. Pure: no database, no clock.

An override holds some of a plan's tables (``[subscription]``, ``[[charges]]``, ``[commitment]``,
``[[thresholds]]``) and takes effect on a billing-period boundary. Each override is relative to the plan, not to
the override before it: the one in force on a day is the latest whose ``effective_from`` is not after it, and
the subscription is priced with its plan version with that override's tables in place (``Negotiated.plan_on``).
Before the first override, and for a subscription without one, the plan itself prices it.

Which override prices what:
- a billing period's usage, commitment and in-arrears fee: the override in force on the period's first day;
- a fee period's in-advance fee: the override in force on the first day of the fee period, or of the
  subscription's first billing period when it started inside the fee period (``fee_anchor``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from billing.core.domain import Terms
from billing.core.fees import billed_in_advance, schedule_of
from billing.core.periods import Period
from pricing_plans.errors import CatalogProblem
from pricing_plans.loader import apply_override
from pricing_plans.models import Catalog, Plan

__all__ = [
    "NEGOTIATED",
    "Negotiated",
    "SubscriptionOverride",
    "fee_anchor",
    "fee_period_repriced",
    "first_period_start",
    "in_force",
    "negotiate",
    "negotiated_plan",
]

NEGOTIATED = "negotiated price"


@dataclass(frozen=True, slots=True)
class SubscriptionOverride:
    """One version of a subscription's negotiated prices.

    Attributes:
      id: the version's id (later versions of the same date win: higher id).
      subscription_id: whose prices they are.
      effective_from: the billing-period boundary from which it prices the subscription.
      document: the override's tables as written (TOML or JSON), numbers as Decimal or decimal strings.
      created_at: when it was recorded (UTC).
    """

    id: int
    subscription_id: int
    effective_from: dt.date
    document: Mapping[str, Any]
    created_at: dt.datetime


def in_force(overrides: Sequence[SubscriptionOverride], day: dt.date) -> SubscriptionOverride | None:
    """The override in force on ``day``: the latest (by date, then id) that took effect on or before it."""
    found = [o for o in overrides if o.effective_from <= day]
    return max(found, key=lambda o: (o.effective_from, o.id), default=None)


def negotiated_plan(
    plan: Plan, override: SubscriptionOverride, catalog: Catalog
) -> tuple[Plan | None, list[CatalogProblem]]:
    """``plan`` with ``override``'s tables in place, named "<plan name> (negotiated price)" so that invoices say
    so (the plan itself when the override changes nothing); or None and why the override no longer applies (the
    catalog changed since it was recorded)."""
    source = f"override {override.id} of subscription {override.subscription_id}"
    effective, problems = apply_override(plan, override.document, catalog, source)
    if effective is None:
        return None, problems
    if effective == plan:  # no table, or the plan's own: the plan's prices, under its own name
        return plan, []
    return effective.model_copy(update={"name": f"{plan.name} ({NEGOTIATED})"}), []


@dataclass(frozen=True, slots=True)
class Negotiated:
    """A subscription's plan version and the effective plan of each of its overrides, by date."""

    plan: Plan
    versions: tuple[tuple[SubscriptionOverride, Plan], ...] = ()

    def plan_on(self, day: dt.date) -> Plan:
        """The plan that prices what is billed from ``day``: the plan with the override then in force."""
        current = in_force([override for override, _ in self.versions], day)
        if current is None:
            return self.plan
        return next(plan for override, plan in self.versions if override.id == current.id)

    def for_period(self, period: Period) -> Plan:
        return self.plan_on(period.start)

    def takes_effect(self, day: dt.date) -> bool:
        """Whether an override takes effect on ``day``."""
        return any(override.effective_from == day for override, _ in self.versions)


def negotiate(
    plan: Plan, overrides: Sequence[SubscriptionOverride], catalog: Catalog
) -> tuple[Negotiated, list[CatalogProblem]]:
    """The subscription's ``Negotiated`` plans, and the problems of the overrides that no longer apply (those are
    left out)."""
    versions: list[tuple[SubscriptionOverride, Plan]] = []
    problems: list[CatalogProblem] = []
    for override in sorted(overrides, key=lambda o: (o.effective_from, o.id)):
        effective, found = negotiated_plan(plan, override, catalog)
        problems += found
        if effective is not None:
            versions.append((override, effective))
    return Negotiated(plan, tuple(versions)), problems


def first_period_start(terms: Terms, plan: Plan) -> dt.date:
    """The first day of the billing period a subscription starts in (an override cannot change the plan's
    interval or anchor, so the plan version's schedule is the subscription's)."""
    return schedule_of(terms, plan).billing_period(terms.start_date).start


def fee_anchor(terms: Terms, plan: Plan, fee_period: Period) -> dt.date:
    """The day whose override prices a fee period's fee: its first day, or the first day of the subscription's
    first billing period when the subscription started inside the fee period."""
    return max(fee_period.start, first_period_start(terms, plan))


def fee_period_repriced(terms: Terms, negotiated: Negotiated, period: Period) -> Period | None:
    """The fee period whose in-advance fee the invoice of billing period ``period`` adjusts to a negotiated price:
    the one an override starts (its fee priced by the override in force from ``period``'s first day); None
    otherwise. What was billed for it at the old price is settled on that invoice, as a plan change's fee is."""
    plan = negotiated.for_period(period)
    if not billed_in_advance(plan) or not negotiated.takes_effect(period.start):
        return None
    fee_period = schedule_of(terms, plan).fee_period(period.start)
    return fee_period if fee_anchor(terms, plan, fee_period) == period.start else None
