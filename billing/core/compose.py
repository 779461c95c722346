"""Composing invoices from rated subscriptions. Pure: no database, no clock.

An invoice for customer-period P holds, per subscription active in P (a section each):
- the usage lines of P and the minimum-commitment true-up of P;
- an in-arrears fee for the fee period that ends with P;
- an in-advance fee for the fee period that starts right after P (if the subscription runs into it and started
  before it; a subscription's first in-advance fee is on its opening invoice, billed at its start);
- late usage: for each earlier period whose invoice was already issued, rate(all usage of that period) minus what
  was billed for it, as lines that name their period.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from billing.core.domain import Customer, Subscription
from billing.core.periods import Period
from billing.core.rating import RatedLine, fee_period_for, rate_fee, rate_period
from invoices.model import DraftInvoice, InvoiceLine, InvoiceScope, Party
from pricing_plans.charge_models import MeterUsage
from pricing_plans.models import Catalog, FeeBilling, Plan
from pricing_plans.money import ZERO

__all__ = [
    "LateUsage",
    "Section",
    "compose_opening_invoice",
    "compose_period_invoice",
    "late_usage_lines",
    "opening_key",
    "period_key",
    "section_window",
]


def period_key(customer: str, period: Period) -> str:
    return f"period:{customer}:{period.label}"


def opening_key(subscription_id: int) -> str:
    return f"start:{subscription_id}"


@dataclass(frozen=True, slots=True)
class Section:
    """One subscription's part of a customer-period: its plan version and the usage in its active window.

    ``billed_fee`` is what earlier invoices billed in advance as the fee of the fee period the subscription ends
    in (given when it ends in this billing period): the fee is then adjusted to the days it really ran.
    ``fee_only`` marks a subscription that ended as the period began: it has nothing but that adjustment.
    """

    subscription: Subscription
    plan: Plan
    usage: Mapping[str, MeterUsage]
    billed_fee: Decimal | None = None
    fee_only: bool = False


@dataclass(frozen=True, slots=True)
class LateUsage:
    """Usage of an earlier, already invoiced period: what the period rates to now, and what was billed for it."""

    subscription: Subscription
    plan: Plan
    period: Period
    usage: Mapping[str, MeterUsage]
    billed: Mapping[str | None, Decimal]  # by meter (None: the commitment true-up)


def section_window(subscription: Subscription, period: Period) -> Period | None:
    """The part of ``period`` the subscription covers, or None."""
    start = max(period.start, subscription.start_date)
    end = min(period.end, subscription.end_date or period.end)
    return Period(start, end) if start < end else None


def _section_title(plan: Plan, subscription: Subscription, period: Period) -> str:
    window = section_window(subscription, period)
    title = f"{plan.name} (plan {plan.code} v{plan.version}, subscription {subscription.id})"
    if window is not None and window != period:
        last_day = window.end - dt.timedelta(days=1)
        title += f", {window.start.isoformat()} to {last_day.isoformat()}"
    return title


def _line(
    rated: RatedLine,
    section: str,
    subscription: Subscription,
    plan: Plan,
    kind: str | None = None,
    description: str | None = None,
) -> InvoiceLine:
    return InvoiceLine(
        kind=kind or rated.kind,
        description=description or rated.description,
        amount=rated.amount,
        quantity=rated.quantity,
        unit=rated.unit,
        section=section,
        service_start=rated.service_start,
        service_end=rated.service_end,
        meter=rated.meter,
        model=rated.model,
        details=rated.details,
        subscription_id=subscription.id,
        plan_code=plan.code,
        plan_version=plan.version,
    )


def ends_in(subscription: Subscription, period: Period) -> bool:
    """Whether the subscription's last day falls in ``period`` (its exclusive end date in (start, end])."""
    end = subscription.end_date
    return end is not None and period.start < end <= period.end


def section_lines(section: Section, period: Period, catalog: Catalog) -> list[InvoiceLine]:
    """The lines of one subscription for the invoice of ``period``."""
    subscription, plan = section.subscription, section.plan
    title = _section_title(plan, subscription, period)
    fee = plan.subscription
    lines: list[InvoiceLine] = []
    if section.fee_only:
        adjustment = _advance_fee_adjustment(section, period, catalog)
        return [_line(adjustment, title, subscription, plan)] if adjustment else []
    rated = rate_period(subscription, plan, section.usage, period, meters=catalog.meters, rounding=catalog.rounding)
    if fee is not None and fee.billing is FeeBilling.IN_ARREARS:
        # the fee period's fee, on the invoice of the period it ends in — or of the period the subscription does
        fee_period = fee_period_for(plan, period)
        ends_here = ends_in(subscription, period) and subscription.end_date < fee_period.end  # type: ignore[operator]
        if (fee_period.end == period.end or ends_here) and rated.fee_line is not None:
            lines.append(_line(rated.fee_line, title, subscription, plan))
    lines.extend(_line(line, title, subscription, plan) for line in rated.usage_lines)
    if rated.commitment_line is not None:
        lines.append(_line(rated.commitment_line, title, subscription, plan))
    if fee is not None and fee.billing is FeeBilling.IN_ADVANCE:
        adjustment = _advance_fee_adjustment(section, period, catalog)
        if adjustment is not None:
            lines.append(_line(adjustment, title, subscription, plan))
        upcoming = fee_period_for(plan, period.next())
        runs_into_it = subscription.end_date is None or subscription.end_date > upcoming.start
        if upcoming.start == period.end and runs_into_it and subscription.start_date < upcoming.start:
            advance = rate_fee(subscription, plan, upcoming, catalog.rounding)
            if advance is not None:
                lines.append(_line(advance, title, subscription, plan))
    return lines


def _advance_fee_adjustment(section: Section, period: Period, catalog: Catalog) -> RatedLine | None:
    """A fee billed in advance for a fee period the subscription did not run to its end: the fee for the days it
    really ran minus what was billed (negative: a credit), as domain.md's proration wants."""
    if section.billed_fee is None:
        return None
    subscription, plan = section.subscription, section.plan
    fee_period = fee_period_for(plan, period)
    due = rate_fee(subscription, plan, fee_period, catalog.rounding)
    if due is None:
        return None
    difference = due.amount - section.billed_fee
    if difference == 0:
        return None
    end = subscription.end_date
    details = dict(due.details)
    details["adjustment"] = {
        "due": str(due.amount),
        "billed_in_advance": str(section.billed_fee),
        "explanation": f"{due.details.get('explanation', '')}; {section.billed_fee} billed in advance; "
        f"difference {difference}",
    }
    return replace(
        due,
        amount=difference,
        description=f"{plan.name} subscription, {fee_period.label}: adjusted to the end on {end}",
        details=details,
    )


def late_usage_lines(late: LateUsage, catalog: Catalog) -> list[InvoiceLine]:
    """Lines for usage of an issued period: rate(all usage of it) − billed, per charge, so tiers stay right."""
    subscription, plan, period = late.subscription, late.plan, late.period
    rated = rate_period(subscription, plan, late.usage, period, meters=catalog.meters, rounding=catalog.rounding)
    section = f"Late usage of {period.label}: {plan.name} (subscription {subscription.id})"
    lines = []
    for line in rated.usage_lines:
        difference = line.amount - late.billed.get(line.meter, ZERO)
        if difference != 0:
            lines.append(_late(line, difference, late, section))
    commitment = rated.commitment_line.amount if rated.commitment_line else ZERO
    difference = commitment - late.billed.get(None, ZERO)
    if difference != 0 and rated.commitment_line is not None:
        lines.append(_late(rated.commitment_line, difference, late, section))
    elif difference != 0:
        # The usage now covers the minimum: the true-up billed before is given back.
        lines.append(
            InvoiceLine(
                kind="late_usage",
                description=f"Minimum commitment true-up of {period.label}, adjusted for late usage",
                amount=difference,
                section=section,
                service_start=period.start,
                service_end=period.end,
                subscription_id=subscription.id,
                plan_code=plan.code,
                plan_version=plan.version,
                details={"explanation": f"now 0 − billed {late.billed.get(None, ZERO)}"},
            )
        )
    return lines


def _late(line: RatedLine, difference: Decimal, late: LateUsage, section: str) -> InvoiceLine:
    billed = late.billed.get(line.meter, ZERO)
    details = dict(line.details)
    details["late"] = {
        "period": late.period.label,
        "rated_now": str(line.amount),
        "billed_before": str(billed),
        "explanation": f"{late.period.label} now rates to {line.amount}; {billed} was billed; difference {difference}",
    }
    return InvoiceLine(
        kind="late_usage",
        description=f"{line.description} — late usage of {late.period.label}",
        amount=difference,
        quantity=line.quantity,
        unit=line.unit,
        section=section,
        service_start=line.service_start,
        service_end=line.service_end,
        meter=line.meter,
        model=line.model,
        details=details,
        subscription_id=late.subscription.id,
        plan_code=late.plan.code,
        plan_version=late.plan.version,
    )


def bill_to(customer: Customer) -> Party:
    return Party(name=customer.name, address=customer.address, email=customer.email, external_id=customer.external_id)


def compose_period_invoice(
    customer: Customer,
    period: Period,
    sections: Sequence[Section],
    late: Sequence[LateUsage],
    catalog: Catalog,
    usage_as_of: dt.datetime | None = None,
) -> DraftInvoice:
    """The draft invoice of one customer for one period."""
    lines: list[InvoiceLine] = []
    for section in sections:
        lines.extend(section_lines(section, period, catalog))
    for item in late:
        lines.extend(late_usage_lines(item, catalog))
    return DraftInvoice(
        billing_key=period_key(customer.external_id, period),
        scope=InvoiceScope.PERIOD,
        customer=bill_to(customer),
        currency=customer.currency,
        locale=customer.locale,
        period_start=period.start,
        period_end=period.end,
        lines=tuple(lines),
        tax_rate=customer.tax_rate,
        rounding=catalog.rounding,
        timezone=customer.timezone,
        usage_as_of=usage_as_of,
    )


def compose_opening_invoice(
    customer: Customer, subscription: Subscription, plan: Plan, catalog: Catalog, start_period: Period
) -> DraftInvoice | None:
    """A new subscription's first invoice, at its start: the in-advance fee of its first fee period, prorated."""
    if plan.subscription is None or plan.subscription.billing is not FeeBilling.IN_ADVANCE:
        return None
    fee_period = fee_period_for(plan, start_period)
    fee = rate_fee(subscription, plan, fee_period, catalog.rounding)
    if fee is None:
        return None
    title = _section_title(plan, subscription, fee_period)
    return DraftInvoice(
        billing_key=opening_key(subscription.id),
        scope=InvoiceScope.OPENING,
        subscription_id=subscription.id,
        customer=bill_to(customer),
        currency=customer.currency,
        locale=customer.locale,
        period_start=fee_period.start,
        period_end=fee_period.end,
        lines=(_line(fee, title, subscription, plan),),
        tax_rate=customer.tax_rate,
        rounding=catalog.rounding,
        timezone=customer.timezone,
    )
