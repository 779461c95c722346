"""Usage windows: which plan version prices each subscription, and the usage each subscription had in a period.

The billing run, the threshold check and the usage preview all ask the same two questions, so they are answered
here, once:

- ``resolve_plans``: the catalog's plan version of each subscription, with the subscription's negotiated prices
  (``billing.core.overrides``) in force for the period asked; a plan the catalog does not know, one priced in
  another currency than its customer is billed in, or an override that no longer applies to the catalog is a
  ``PlanProblem`` (each caller decides whether that skips a subscription, a customer, or only a log line);
- ``usage_windows`` + ``aggregate``: the part of a period each subscription covers, in its customer's timezone,
  aggregated in one batch by ``billing.metering.aggregate_periods`` (which shares a weighted sum out over the
  part of the period a subscription covers), so the three count usage identically.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, TypeVar

from sqlalchemy import Engine

from billing.core.compose import section_window
from billing.core.domain import Customer, Subscription
from billing.core.overrides import Negotiated, SubscriptionOverride, fee_anchor, negotiate
from billing.core.periods import Period
from billing.metering import AnyUsage, UsageWindow, aggregate_periods, events_of
from pricing_plans.errors import UnknownPlanError
from pricing_plans.models import Catalog, Plan

__all__ = [
    "PlanProblem",
    "ResolvedPlans",
    "Usage",
    "UsageKey",
    "aggregate",
    "charged_usage",
    "events_in",
    "resolve_plans",
    "usage_windows",
]

K = TypeVar("K")


class UsageKey(NamedTuple):
    """One subscription's usage in one billing period: the period being billed, or (``late``) an earlier,
    already invoiced one that received events after it was billed."""

    subscription: int
    period: Period
    late: bool = False


# Each window's usage by meter code (a DimensionedUsage for a charge priced by dimension).
Usage = Mapping[K, Mapping[str, AnyUsage]]


@dataclass(frozen=True, slots=True)
class PlanProblem:
    """Why a subscription cannot be priced: its plan version is not in the catalog (``unknown_plan``), its
    plan is priced in another currency than the customer is billed in (``currency``), or one of its overrides no
    longer applies to the catalog (``override``: the catalog changed since it was recorded)."""

    subscription: Subscription
    kind: Literal["unknown_plan", "currency", "override"]
    detail: str

    @property
    def customer(self) -> str:
        return self.subscription.customer_external_id

    @property
    def message(self) -> str:
        """``subscription 7: <detail>``: how a report or a log names it."""
        return f"subscription {self.subscription.id}: {self.detail}"


@dataclass(frozen=True)
class ResolvedPlans:
    """The plan of every subscription the catalog knows (including those priced in another currency than
    their customer's: ``foreign_currency`` names them), and the problems found, in the order of the
    subscriptions. ``plans`` holds the plan in force for the period asked (negotiated prices included);
    ``negotiated`` the plans of the subscriptions with overrides, for other periods (``for_period``)."""

    plans: dict[int, Plan] = field(default_factory=dict)
    problems: list[PlanProblem] = field(default_factory=list)
    negotiated: dict[int, Negotiated] = field(default_factory=dict)

    @property
    def unknown(self) -> list[PlanProblem]:
        """The subscriptions that cannot be priced at all: unknown plan, or an override that no longer applies."""
        return [problem for problem in self.problems if problem.kind != "currency"]

    def for_period(self, subscription_id: int, period: Period) -> Plan:
        """The plan pricing the subscription's usage (and in-arrears fee) of ``period``."""
        negotiated = self.negotiated.get(subscription_id)
        return self.plans[subscription_id] if negotiated is None else negotiated.for_period(period)

    def for_fee(self, subscription: Subscription, fee_period: Period) -> Plan:
        """The plan pricing the subscription's fee of ``fee_period``."""
        negotiated = self.negotiated.get(subscription.id)
        if negotiated is None:
            return self.plans[subscription.id]
        return negotiated.plan_on(fee_anchor(subscription, negotiated.plan, fee_period))

    @property
    def foreign_currency(self) -> frozenset[int]:
        return frozenset(p.subscription.id for p in self.problems if p.kind == "currency")

    def priced(self) -> dict[int, Plan]:
        """The plans of the subscriptions that can be billed to their customer (known and in its currency)."""
        foreign = self.foreign_currency
        return {sub_id: plan for sub_id, plan in self.plans.items() if sub_id not in foreign}


def resolve_plans(
    catalog: Catalog,
    subscriptions: Iterable[Subscription],
    customers: Mapping[str, Customer] | None = None,
    *,
    overrides: Mapping[int, Sequence[SubscriptionOverride]] | None = None,
    period: Period | None = None,
) -> ResolvedPlans:
    """Each subscription's plan version from ``catalog``, with its ``overrides`` (by subscription id) in force for
    ``period`` (without a period: the plan version itself). With ``customers`` (by external id), a plan priced in
    another currency than its customer's is reported too; a subscription listed twice is reported twice."""
    resolved = ResolvedPlans()
    for subscription in subscriptions:
        try:
            plan = catalog.plan(subscription.plan_code, subscription.plan_version)
        except UnknownPlanError as error:
            resolved.problems.append(PlanProblem(subscription, "unknown_plan", str(error)))
            continue
        versions = (overrides or {}).get(subscription.id)
        if versions:
            negotiated, broken = negotiate(plan, versions, catalog)
            if broken:
                detail = "its negotiated price no longer applies to the catalog: " + "; ".join(map(str, broken))
                resolved.problems.append(PlanProblem(subscription, "override", detail))
                continue
            resolved.negotiated[subscription.id] = negotiated
            plan = plan if period is None else negotiated.for_period(period)
        resolved.plans[subscription.id] = plan
        owner = None if customers is None else customers.get(subscription.customer_external_id)
        if owner is not None and plan.currency != owner.currency:
            detail = f"priced in {plan.currency}, the customer is billed in {owner.currency}"
            resolved.problems.append(PlanProblem(subscription, "currency", detail))
    return resolved


def usage_windows(
    keys: Iterable[UsageKey], subscriptions: Mapping[int, Subscription], customers: Mapping[str, Customer]
) -> dict[UsageKey, UsageWindow]:
    """The window of each key, in the order given: the part of the key's period its subscription covers, in its
    customer's timezone. A key whose subscription does not cover the period, or whose customer is unknown, has
    none."""
    windows: dict[UsageKey, UsageWindow] = {}
    for key in keys:
        subscription = subscriptions[key.subscription]
        owner = customers.get(subscription.customer_external_id)
        part = section_window(subscription, key.period)
        if owner is not None and part is not None:
            windows[key] = UsageWindow(owner.external_id, owner.timezone, key.period, part)
    return windows


def aggregate(
    engine: Engine,
    catalog: Catalog,
    windows: Mapping[K, UsageWindow],
    plans: Mapping[K, Plan] | None = None,
    *,
    meters: Iterable[str] | None = None,
) -> dict[K, dict[str, AnyUsage]]:
    """Every window's usage by meter, in one batch (every key of ``windows`` is in the result); the meters of
    the charges of a window's plan (``plans``, by key) priced by dimension are split into their parts.
    ``meters``: only those (default: every meter of the catalog)."""
    return aggregate_periods(engine, catalog, windows, plans, meters=meters)


def charged_usage(usage: Mapping[str, AnyUsage], plan: Plan) -> dict[str, AnyUsage]:
    """The usage of the meters ``plan`` charges for: what rating a subscription reads."""
    return {charge.meter: usage[charge.meter] for charge in plan.charges if charge.meter in usage}


def events_in(usage: Usage[K]) -> int:
    """How many usage events the windows counted."""
    return sum(events_of(by_meter.values()) for by_meter in usage.values())
