"""Composing invoices from rated subscriptions. Pure: no database, no clock.

An invoice for customer-period P holds, per subscription active in P (a section each):
- the usage lines of P and the minimum-commitment true-up of P;
- the subscription fees ``billing.core.fees`` puts on P's invoice: an in-arrears fee for the fee period that
  ends with P, an in-advance fee for the fee period that starts right after it, the adjustment of a fee paid
  in advance for a fee period the subscription left early (a subscription's first in-advance fee is on its
  opening invoice, billed at its start);
- late usage: for each earlier period whose invoice was already issued, rate(all usage of that period) minus what
  was billed for it, as lines that name their period.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from billing.core.coupons import AppliedCoupon, discount_lines
from billing.core.domain import Customer, Subscription
from billing.core.fees import fee_adjustment, opening_fee, opening_fee_period, period_fees
from billing.core.periods import Period
from billing.core.rating import part_line_name, rate_period
from billing.core.tax import TaxRules, customer_taxes
from invoices.model import DraftInvoice, InvoiceLine, InvoiceScope, LineDetails, LineKind, Party
from pricing_plans.charge_models import MeterUsage
from pricing_plans.dimensions import NONE_LABEL, DimensionedUsage
from pricing_plans.models import Catalog, Plan
from pricing_plans.money import ZERO

__all__ = [
    "BilledKey",
    "LateUsage",
    "Namer",
    "Section",
    "bill_to",
    "compose_opening_invoice",
    "compose_period_invoice",
    "late_usage_lines",
    "line_namer",
    "opening_key",
    "period_key",
    "rest_to_bill",
    "section_lines",
    "section_window",
]


def period_key(customer: str, period: Period) -> str:
    return f"period:{customer}:{period.label}"


def opening_key(subscription_id: int) -> str:
    return f"start:{subscription_id}"


# What was billed for a period, by (meter, dimension: the part of a charge priced by dimension, else None); None:
# the commitment true-up.
BilledKey = tuple[str, str | None] | None


@dataclass(frozen=True, slots=True)
class Section:
    """One subscription's part of a customer-period: its plan version and the usage in its active window.

    ``billed_fee`` is what earlier invoices billed in advance as the fee of the fee period the subscription ends
    in (given when it ends in this billing period): the fee is then adjusted to the days it really ran.
    ``fee_only`` marks a subscription that ended as the period began: it has nothing but that adjustment.
    ``advance_plan`` prices the in-advance fee of the next fee period, when a negotiated price changes it.
    ``billed`` is what progressive invoices issued during the period billed for its usage, by (meter,
    dimension): each usage line bills the rest, rate(all usage of the period) − billed, so tiers stay right.
    ``billed_fee_paid`` is what the discounts of those invoices left of ``billed_fee`` (``fees.billed_and_paid``), when
    they took something off it: a fee that stops early gives back its share of what was paid.
    ``arrears_fee``: with ``fee_only``, the in-arrears fee of the fee period the subscription left as the period
    began, which no invoice billed (``fees.arrears_fee_left_unbilled``).
    """

    subscription: Subscription
    plan: Plan
    usage: Mapping[str, MeterUsage | DimensionedUsage]
    billed_fee: Decimal | None = None
    fee_only: bool = False
    advance_plan: Plan | None = None
    billed: Mapping[BilledKey, Decimal] | None = None
    billed_fee_paid: Decimal | None = None
    arrears_fee: InvoiceLine | None = None


@dataclass(frozen=True, slots=True)
class LateUsage:
    """Usage of an earlier, already invoiced period: what the period rates to now, and what was billed for it."""

    subscription: Subscription
    plan: Plan
    period: Period
    usage: Mapping[str, MeterUsage | DimensionedUsage]
    billed: Mapping[BilledKey, Decimal]


def section_window(subscription: Subscription, period: Period) -> Period | None:
    """The part of ``period`` the subscription covers, or None."""
    start = max(period.start, subscription.start_date)
    end = min(period.end, subscription.end_date or period.end)
    return Period(start, end) if start < end else None


def _section_title(plan: Plan, subscription: Subscription, period: Period) -> str:
    """What the customer reads above a subscription's lines: the plan's name (marked when its prices were
    negotiated), and the days it covers when it covers part of the period. No internal id: two subscriptions
    of one plan are told apart by the lines' ``subscription_id``, not by their section's text."""
    window = section_window(subscription, period)
    title = plan.name
    if window is not None and window != period:
        last_day = window.end - dt.timedelta(days=1)
        title += f", {window.start.isoformat()} – {last_day.isoformat()}"
    return title


def _placed(line: InvoiceLine, section: str, subscription: Subscription, plan: Plan) -> InvoiceLine:
    """A rated line in its section, with the subscription and plan version it came from. (Built field by field:
    every line of a billing run passes here, and ``dataclasses.replace`` takes half as long again.)"""
    return InvoiceLine(
        kind=line.kind,
        description=line.description,
        amount=line.amount,
        quantity=line.quantity,
        unit=line.unit,
        section=section,
        service_start=line.service_start,
        service_end=line.service_end,
        meter=line.meter,
        model=line.model,
        details=line.details,
        subscription_id=subscription.id,
        plan_code=plan.code,
        plan_version=plan.version,
        dimension=line.dimension,
    )


def section_lines(section: Section, period: Period, catalog: Catalog) -> list[InvoiceLine]:
    """The lines of one subscription for the invoice of ``period``: its fees (as ``fees.period_fees`` places
    them) around its usage lines and true-up."""
    subscription, plan = section.subscription, section.plan
    title = _section_title(plan, subscription, period)
    if section.fee_only:
        adjustment = fee_adjustment(
            subscription, plan, period, section.billed_fee, catalog.rounding, section.billed_fee_paid
        )
        given_back = _given_back_in_full(section, period, catalog) if section.billed else []
        return [
            _placed(line, title, subscription, plan)
            for line in (adjustment, section.arrears_fee, *given_back)
            if line
        ]
    rated = rate_period(subscription, plan, section.usage, period, meters=catalog.meters, rounding=catalog.rounding)
    fees = period_fees(
        subscription,
        plan,
        period,
        covering_fee=rated.fee_line,
        billed_in_advance_fee=section.billed_fee,
        rounding=catalog.rounding,
        advance_plan=section.advance_plan,
        paid_in_advance=section.billed_fee_paid,
    )
    usage_lines = (
        rated.usage_lines
        if not section.billed
        else rest_to_bill(rated.usage_lines, section.billed, namer=line_namer(plan, catalog))
    )
    lines = [
        fees.in_arrears,
        *usage_lines,
        rated.commitment_line,
        fees.adjustment,
        fees.in_advance,
    ]
    return [_placed(line, title, subscription, plan) for line in lines if line is not None]


def _given_back_in_full(section: Section, period: Period, catalog: Catalog) -> list[InvoiceLine]:
    """What the period's progressive invoices billed of the usage of a subscription that covers none of the
    period now (it ended as the period began), given back charge by charge."""
    billed = section.billed or {}
    rated = rate_period(section.subscription, section.plan, {}, period, meters=catalog.meters,
                        rounding=catalog.rounding)  # fmt: skip
    given_back = rest_to_bill(rated.usage_lines, billed, namer=line_namer(section.plan, catalog))
    return [line for line in given_back if _billed_key(line) in billed]


Namer = Callable[[str, str | None], str | None]
"""The description of a usage line of a charge part (meter, dimension), if the plan has that part."""


def line_namer(plan: Plan, catalog: Catalog) -> Namer:
    """How ``plan`` names a usage line of a charge part (``rating.part_line_name``)."""
    return lambda meter, dimension: part_line_name(plan, catalog.meters, meter, dimension)


def rest_to_bill(
    lines: Sequence[InvoiceLine],
    billed: Mapping[BilledKey, Decimal],
    note: str = "rest of the period",
    namer: Namer | None = None,
) -> list[InvoiceLine]:
    """Usage lines less what was billed of them before in the same period (by progressive invoices): each line's
    amount becomes rated − billed, its account in ``details.extra["billed_to_date"]``; a line billed in full
    before is left out. What was billed of a charge, or of a part of one, that no line rates now is given back
    on a line of its own (``_given_back``, named by ``namer`` as the plan names that part's lines, else after the
    lines of the same meter): the subscription no longer covers that usage (cancelled or changed from a day
    before it), or the charge is split otherwise (an override adds a ``group_by``)."""
    rest = []
    for line in lines:
        before = billed.get(_billed_key(line))
        if before is None:
            rest.append(line)
            continue
        difference = line.amount - before
        if difference == 0:
            continue
        account = {
            "charge": line.description,
            "rated": str(line.amount),
            "billed_before": str(before),
            "explanation": f"the period rates to {line.amount}; {before} was billed on progressive invoices",
        }
        details = replace(line.details, extra={**line.details.extra, "billed_to_date": account})
        rest.append(replace(line, description=f"{line.description} ({note})", amount=difference, details=details))
    rated = {_billed_key(line) for line in lines}
    for key, before in billed.items():
        if key is not None and key not in rated and before != 0:
            rest.append(_given_back(key, before, lines, note, namer))
    return rest


def _given_back(
    key: tuple[str, str | None], before: Decimal, lines: Sequence[InvoiceLine], note: str, namer: Namer | None
) -> InvoiceLine:
    """A line giving back ``before``, billed of the charge part ``key`` (meter, dimension) that no line of
    ``lines`` rates now; named as the plan names that part's lines (its filter's name: "Transfer — Europe"), else
    as the meter's lines are, with the part's filter and group values ("Transfer — de, fr")."""
    meter, dimension = key
    same_meter = next((line for line in lines if line.meter == meter), None)
    description = namer(meter, dimension) if namer is not None else None
    if description is None:
        description = meter if same_meter is None else _charge_name(same_meter)
        if dimension is not None:
            description = f"{description} — {_dimension_label(dimension)}"
    account = {
        "charge": description,
        "rated": "0",
        "billed_before": str(before),
        "explanation": f"no usage of it is rated in the period now; {before} was billed on progressive invoices",
    }
    period_start = lines[0].service_start if lines else None
    period_end = lines[0].service_end if lines else None
    return InvoiceLine(
        kind=LineKind.USAGE,
        description=f"{description} ({note})",
        amount=-before,
        quantity=ZERO,
        unit=same_meter.unit if same_meter is not None else None,
        service_start=period_start,
        service_end=period_end,
        meter=meter,
        model=same_meter.model if same_meter is not None else None,
        details=LineDetails(explanation=account["explanation"], extra={"billed_to_date": account}),
        dimension=dimension,
    )


def _charge_name(line: InvoiceLine) -> str:
    """The name of the charge a usage line rates, without the part its dimension names."""
    if line.dimension is None:
        return line.description
    label = f" — {_dimension_label(line.dimension)}"
    return line.description.removesuffix(label) if line.description.endswith(label) else (
        line.description.partition(" — ")[0]
    )


def _dimension_label(dimension: str) -> str:
    """A part's stored key (``pricing_plans.dimensions.dimension_key``: canonical JSON) as words: its filter's
    values, then its group's, as the lines of the part read."""
    try:
        content = json.loads(dimension)
        values = [", ".join(map(str, v)) for v in (content.get("filter") or {}).values()]
        values += [NONE_LABEL if v is None else str(v) for v in (content.get("group") or {}).values()]
    except (ValueError, AttributeError, TypeError):
        return dimension
    return " — ".join(values) or dimension


def late_usage_lines(late: LateUsage, catalog: Catalog) -> list[InvoiceLine]:
    """Lines for usage of an issued period: rate(all usage of it) − billed, per charge (and per part of a charge
    priced by dimension: each filter and group has its own tiers), so tiers stay right."""
    subscription, plan, period = late.subscription, late.plan, late.period
    rated = rate_period(subscription, plan, late.usage, period, meters=catalog.meters, rounding=catalog.rounding)
    section = f"Late usage of {period.label}: {plan.name}"
    lines = []
    for line in rated.usage_lines:
        difference = line.amount - late.billed.get(_billed_key(line), ZERO)
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
                kind=LineKind.LATE_USAGE,
                description=f"Minimum commitment true-up of {period.label}, adjusted for late usage",
                amount=difference,
                section=section,
                service_start=period.start,
                service_end=period.end,
                subscription_id=subscription.id,
                plan_code=plan.code,
                plan_version=plan.version,
                details=LineDetails(explanation=f"now 0 − billed {late.billed.get(None, ZERO)}"),
            )
        )
    return lines


def _billed_key(line: InvoiceLine) -> BilledKey:
    return None if line.meter is None else (line.meter, line.dimension)


def _late(line: InvoiceLine, difference: Decimal, late: LateUsage, section: str) -> InvoiceLine:
    billed = late.billed.get(_billed_key(line), ZERO)
    account = {
        "period": late.period.label,
        "charge": line.description,
        "plan": late.plan.name,
        "rated_now": str(line.amount),
        "billed_before": str(billed),
        "explanation": f"{late.period.label} now rates to {line.amount}; {billed} was billed; difference {difference}",
    }
    late_line = replace(
        line,
        kind=LineKind.LATE_USAGE,
        description=f"{line.description} — late usage of {late.period.label}",
        amount=difference,
        details=replace(line.details, extra={**line.details.extra, "late": account}),
    )
    return _placed(late_line, section, late.subscription, late.plan)


def bill_to(customer: Customer) -> Party:
    """The buyer as printed on its invoice: a snapshot, which later edits of the customer do not change once the
    invoice is issued."""
    return Party(
        name=customer.name,
        address=customer.address,
        email=customer.email,
        tax_id=customer.tax_id,
        external_id=customer.external_id,
        country=customer.country,
    )


def compose_period_invoice(
    customer: Customer,
    period: Period,
    sections: Sequence[Section],
    late: Sequence[LateUsage],
    catalog: Catalog,
    usage_as_of: dt.datetime | None = None,
    coupons: Sequence[AppliedCoupon] = (),
    tax_rules: TaxRules | None = None,
    earlier: Sequence[InvoiceLine] = (),
) -> DraftInvoice:
    """The draft invoice of one customer for one period; the coupons applied to the customer add their discount
    lines (``billing.core.coupons``) after the others, before tax; then the tax per rate (``billing.core.tax``,
    under ``tax_rules``; None: the customer's own rate). ``earlier``: the lines of the period's progressive
    invoices, so that the period's discounts add up to what one invoice would have taken off."""
    lines: list[InvoiceLine] = []
    for section in sections:
        lines.extend(section_lines(section, period, catalog))
    for item in late:
        lines.extend(late_usage_lines(item, catalog))
    if coupons:
        lines.extend(discount_lines(lines, coupons, period.start, customer.currency, catalog.rounding, earlier))
    plans = [p for s in sections for p in (s.plan, s.advance_plan)] + [item.plan for item in late]
    rate, taxes, taxed = customer_taxes(customer, tax_rules, lines, plans, catalog.rounding)
    return DraftInvoice(
        billing_key=period_key(customer.external_id, period),
        scope=InvoiceScope.PERIOD,
        customer=bill_to(customer),
        currency=customer.currency,
        locale=customer.locale,
        period_start=period.start,
        period_end=period.end,
        lines=taxed,
        tax_rate=rate,
        taxes=taxes,
        rounding=catalog.rounding,
        timezone=customer.timezone,
        usage_as_of=usage_as_of,
    )


def compose_opening_invoice(
    customer: Customer, subscription: Subscription, plan: Plan, catalog: Catalog, tax_rules: TaxRules | None = None
) -> DraftInvoice | None:
    """A new subscription's first invoice, at its start: the in-advance fee of its first fee period, prorated
    (``fees.opening_fee``); None for a plan without an in-advance fee."""
    fee = opening_fee(subscription, plan, catalog.rounding)
    if fee is None:
        return None
    fee_period = opening_fee_period(subscription, plan)
    title = _section_title(plan, subscription, fee_period)
    lines = (_placed(fee, title, subscription, plan),)
    rate, taxes, taxed = customer_taxes(customer, tax_rules, lines, [plan], catalog.rounding)
    return DraftInvoice(
        billing_key=opening_key(subscription.id),
        scope=InvoiceScope.OPENING,
        subscription_id=subscription.id,
        customer=bill_to(customer),
        currency=customer.currency,
        locale=customer.locale,
        period_start=fee_period.start,
        period_end=fee_period.end,
        lines=taxed,
        tax_rate=rate,
        taxes=taxes,
        rounding=catalog.rounding,
        timezone=customer.timezone,
    )
