"""Negotiated prices: record a subscription's override of its plan, list its versions, and find the plans its
overrides give (the service the CLI and the HTTP API call; ``billing.core.overrides`` holds the rules).

Rules (the README's "Negotiated prices (overrides)"):
  - an override holds ``[subscription]``, ``[[charges]]`` (each with its ``meter``), ``[commitment]``,
    ``[[thresholds]]``, validated by the catalog loader against the subscription's plan version; each table
    present replaces the plan's (charges one meter at a time) from ``effective_from``;
  - ``effective_from`` is a billing-period boundary (the first day of a month), by default the first period not
    yet invoiced; a date inside a finalized period, before the subscription's first period or from its end on is
    refused; a change of the fee must start a fee period (a yearly plan's: 1 January), except in the
    subscription's first period;
  - every version is kept; an in-advance fee already billed for the period an override starts is adjusted on
    that period's invoice; the subscription's opening invoice, while a draft, is written again with it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from os import PathLike
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from billing.core.domain import Subscription
from billing.core.fees import opening_fee_period, schedule_of
from billing.core.overrides import (
    Negotiated,
    SubscriptionOverride,
    fee_anchor,
    first_period_start,
    negotiate,
    negotiated_plan,
)
from billing.core.periods import Period, Schedule
from billing.db import override_tables, repository, session_scope
from billing.errors import BillingInputError, NotFoundError
from billing.invoicing import check_meters_charged_once, write_opening_invoice
from dbkit import read_only
from invoices import store
from pricing_plans.errors import CatalogProblem, UnknownPlanError
from pricing_plans.loader import OVERRIDE_KEYS, loads_override
from pricing_plans.models import Catalog, Plan

__all__ = [
    "get_override",
    "list_overrides",
    "negotiated_plans",
    "override_json",
    "overrides_page",
    "read_override_file",
    "record_override",
    "set_override",
]


def read_override_file(path: str | PathLike[str]) -> dict[str, Any]:
    """An override file's tables; a file that cannot be read or is not TOML raises BillingInputError naming it
    (``FILE:LINE: invalid TOML: …``)."""
    name = str(path)
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as exc:
        raise BillingInputError(f"{name}: cannot read the override file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise BillingInputError(f"{name}: not UTF-8 text (byte {exc.start}): TOML files are UTF-8") from None
    document, problems = loads_override(text, name)
    if document is None:
        raise BillingInputError.of([str(p) for p in problems])
    return document


def set_override(
    engine: Engine,
    catalog: Catalog,
    subscription_id: int,
    document: Mapping[str, Any],
    effective_from: dt.date | None = None,
    *,
    source: str | None = None,
) -> SubscriptionOverride:
    """Record a new version of the subscription's negotiated prices, from ``effective_from`` (default: the first
    billing period not yet invoiced). Problems name ``source`` (the file) when given, else only the field
    (``charges[0].tiers[1].up_to: …``), as the API reports them. NotFoundError for an unknown subscription.
    The same tables from the same date again record nothing: the version recorded is returned."""
    return record_override(engine, catalog, subscription_id, document, effective_from, source=source)[0]


def record_override(
    engine: Engine,
    catalog: Catalog,
    subscription_id: int,
    document: Mapping[str, Any],
    effective_from: dt.date | None = None,
    *,
    source: str | None = None,
) -> tuple[SubscriptionOverride, bool]:
    """``set_override``, and whether it recorded a new version (False: the same tables from the same date were
    recorded already)."""
    with session_scope(engine) as session:
        subscription = repository.get_subscription(session, subscription_id, for_update=True)
        if subscription is None:
            raise NotFoundError(f"unknown subscription {subscription_id}")
        plan = _plan_of(catalog, subscription)
        effective, problems = negotiated_plan(plan, _draft(subscription, document), catalog)
        if effective is None:
            raise BillingInputError.of([_problem(p, source) for p in problems])
        start = _effective_from(session, subscription, plan, effective_from)
        existing = _existing(session, subscription.id)
        same_day = [o for o in existing if o.effective_from == start]
        if same_day and same_day[-1].document == override_tables.document_json(document):
            return same_day[-1], False  # recorded already: sending it again records nothing new
        negotiated, _ = negotiate(plan, existing, catalog)
        _check_fee_change(subscription, negotiated, effective, start)
        added = {charge.meter for charge in effective.charges} - {charge.meter for charge in plan.charges}
        check_meters_charged_once(session, catalog, subscription, added)
        override = override_tables.add_override(session, subscription.id, start, document)
        _refresh_opening(session, catalog, subscription, negotiated, override, effective)
        return override, True


def list_overrides(engine: Engine, subscription_id: int) -> list[SubscriptionOverride]:
    """Every version of the subscription's overrides, by date then id; NotFoundError for an unknown one."""
    with session_scope(read_only(engine)) as session:
        _subscription_or_raise(session, subscription_id)
        return list(override_tables.overrides_of(session, [subscription_id]).get(subscription_id, ()))


def get_override(engine: Engine, subscription_id: int, override_id: int) -> SubscriptionOverride:
    """One version of the subscription's overrides; NotFoundError for an unknown subscription or version."""
    with session_scope(read_only(engine)) as session:
        _subscription_or_raise(session, subscription_id)
        for override in _existing(session, subscription_id):
            if override.id == override_id:
                return override
    raise NotFoundError(f"unknown override {override_id} of subscription {subscription_id}")


def overrides_page(
    engine: Engine, subscription_id: int, *, limit: int, after: int | None = None, before: int | None = None
) -> tuple[list[SubscriptionOverride], bool]:
    """At most ``limit`` versions by id after ``after`` or right before ``before``, and whether more lie that
    way; NotFoundError for an unknown subscription."""
    with session_scope(read_only(engine)) as session:
        _subscription_or_raise(session, subscription_id)
        return override_tables.overrides_page(session, subscription_id, limit=limit, after=after, before=before)


def negotiated_plans(
    session: Session, catalog: Catalog, plans: Mapping[int, Plan]
) -> tuple[dict[int, Negotiated], dict[int, list[CatalogProblem]]]:
    """The negotiated plans of those subscriptions (by id, each with its plan version) that have overrides, and
    the problems of overrides that no longer apply to the catalog."""
    negotiated: dict[int, Negotiated] = {}
    problems: dict[int, list[CatalogProblem]] = {}
    for sub_id, versions in override_tables.overrides_of(session, plans).items():
        negotiated[sub_id], found = negotiate(plans[sub_id], versions, catalog)
        if found:
            problems[sub_id] = found
    return negotiated, problems


def override_json(override: SubscriptionOverride) -> dict[str, Any]:
    """A version as the API and ``--json`` show it: the tables it replaces (None: the plan's own), decimal numbers
    as strings."""
    document = override_tables.document_json(override.document)
    shown: dict[str, Any] = {
        "id": override.id,
        "subscription_id": override.subscription_id,
        "effective_from": override.effective_from.isoformat(),
        "created_at": override.created_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
    }
    return shown | {key: document.get(key) for key in OVERRIDE_KEYS}


# -- checks ----------------------------------------------------------------------------------------------


def _subscription_or_raise(session: Session, subscription_id: int) -> Subscription:
    subscription = repository.get_subscription(session, subscription_id)
    if subscription is None:
        raise NotFoundError(f"unknown subscription {subscription_id}")
    return subscription


def _plan_of(catalog: Catalog, subscription: Subscription) -> Plan:
    try:
        return catalog.plan(subscription.plan_code, subscription.plan_version)
    except UnknownPlanError as exc:
        raise BillingInputError(f"plan: subscription {subscription.id}: {exc}") from None


def _draft(subscription: Subscription, document: Mapping[str, Any]) -> SubscriptionOverride:
    """The override being recorded, as the rules read it (not stored yet: no id)."""
    return SubscriptionOverride(0, subscription.id, dt.date.min, document, dt.datetime.min)


def _problem(problem: CatalogProblem, source: str | None) -> str:
    if source is not None:
        return str(CatalogProblem(source, problem.path, problem.message, problem.line))
    return f"{problem.path}: {problem.message}" if problem.path else problem.message


def _existing(session: Session, subscription_id: int) -> tuple[SubscriptionOverride, ...]:
    return override_tables.overrides_of(session, [subscription_id]).get(subscription_id, ())


def _effective_from(session: Session, subscription: Subscription, plan: Plan, wanted: dt.date | None) -> dt.date:
    """The override's first day: a boundary of the subscription's billing periods in a period not yet invoiced,
    within the subscription's life."""
    schedule = schedule_of(subscription, plan)
    first = first_period_start(subscription, plan)
    invoiced_until = store.invoiced_until(  # (of its own billing periods: another plan's invoices bill other days)
        session,
        subscription.customer_external_id,
        of=lambda start, end: schedule.billing_period(start) == Period(start, end),
    )
    open_from = _boundary_from(schedule, max(first, invoiced_until or first))
    if wanted is None:
        wanted = open_from
    if isinstance(wanted, dt.datetime) or not isinstance(wanted, dt.date):
        raise BillingInputError(f"effective_from: expected a date (YYYY-MM-DD), got {wanted!r}")
    period = schedule.billing_period(wanted)
    if period.start != wanted:
        raise BillingInputError(
            f"effective_from: {wanted.isoformat()} is not a billing-period boundary (its billing period runs from "
            f"{period.start.isoformat()} to {period.last_day.isoformat()}: {period.start.isoformat()} or "
            f"{period.end.isoformat()})"
        )
    if invoiced_until is not None and wanted < invoiced_until:
        last_day = (invoiced_until - dt.timedelta(days=1)).isoformat()
        raise BillingInputError(
            f"effective_from: {wanted.isoformat()} lies in a finalized period (invoiced through {last_day}); the "
            f"first period not yet invoiced begins {open_from.isoformat()}"
        )
    if wanted < first:
        raise BillingInputError(
            f"effective_from: {wanted.isoformat()} is before subscription {subscription.id}'s first billing period "
            f"(from {first.isoformat()})"
        )
    if subscription.end_date is not None and wanted >= subscription.end_date:
        raise BillingInputError(
            f"effective_from: subscription {subscription.id} ends on {subscription.end_date.isoformat()}; an "
            "override must take effect before that"
        )
    return wanted


def _boundary_from(schedule: Schedule, day: dt.date) -> dt.date:
    """The first billing-period boundary on or after ``day``."""
    period = schedule.billing_period(day)
    return day if period.start == day else period.end


def _check_fee_change(subscription: Subscription, negotiated: Negotiated, effective: Plan, start: dt.date) -> None:
    """A fee is priced per fee period: a new fee starts a fee period, or the subscription's first period; and it
    is billed when the plan bills it (in advance or in arrears), so that no fee period is billed twice or never."""
    own, new = negotiated.plan.subscription, effective.subscription
    if own is not None and new is not None and own.billing is not new.billing:
        raise BillingInputError(
            f"subscription.billing: a negotiated fee is billed as the plan bills it ({own.billing.value}), got "
            f"{new.billing.value}"
        )
    if own is not None and new is not None and own.seats != new.seats:
        per = "per seat (seats = true)" if own.seats else "not per seat (seats = false)"
        raise BillingInputError(f"subscription.seats: a negotiated fee is {per}, as the plan's is")
    if own is None and new is not None and new.seats:
        # a subscription's seats follow its plan: without a fee it holds one seat and cannot be given more
        raise BillingInputError(
            f"subscription.seats: plan {subscription.plan_code!r} has no fee, so its subscriptions hold one seat; a "
            "negotiated fee on it cannot be per seat (seats = true)"
        )
    fee_period = schedule_of(subscription, effective).fee_period(start)
    if fee_anchor(subscription, effective, fee_period) == start:
        return
    before = negotiated.plan_on(start - dt.timedelta(days=1))
    if before.subscription == effective.subscription:
        return
    raise BillingInputError(
        f"subscription: the fee cannot change inside a fee period ({fee_period.label}); give the override's "
        f"[subscription] from {fee_period.end.isoformat()}, or keep the fee of {_fee(before)} until then"
    )


def _fee(plan: Plan) -> str:
    return "none" if plan.subscription is None else f"{plan.subscription.fee} {plan.currency}"


def _refresh_opening(
    session: Session,
    catalog: Catalog,
    subscription: Subscription,
    negotiated: Negotiated,
    override: SubscriptionOverride,
    effective: Plan,
) -> None:
    """The opening invoice, while a draft, is priced with the override now in force for its fee period."""
    anchor = fee_anchor(subscription, effective, opening_fee_period(subscription, effective))
    later = (o for o, _ in negotiated.versions if override.effective_from < o.effective_from <= anchor)
    if override.effective_from > anchor or any(True for _ in later):
        return
    customer = repository.get_customer(session, subscription.customer_external_id)
    if customer is not None:
        write_opening_invoice(session, catalog, customer, subscription, effective, only_draft=True)
