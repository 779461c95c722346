"""When a plan's subscription fee is billed, and on which invoice. Pure: no database, no clock.

A fee is charged per fee period — the plan's interval: a week, month, quarter or year, on calendar boundaries or
from the subscription's start day (``schedule_of``, ``fee_period_for``) — prorated by the days the subscription is
active in it, trial days free (``rate_fee``).
Which invoice carries the fee of a fee period depends on how the plan bills it:

- in arrears: the invoice of the billing period the fee period ends in, or of the period the subscription ends
  in when it ends first (``arrears_fee_due``);
- in advance: the invoice of the billing period just before the fee period, for a subscription that started
  before it and runs into it (``advance_fee_period``). A subscription's first fee is on its opening invoice
  instead, written when it starts: the fee of the fee period it starts in, prorated from its start
  (``opening_fee_period``, ``opening_fee``);
- a subscription that ends before the end of a fee period paid in advance gets, on the invoice of the billing
  period it ends in, the fee for the days it really ran minus what was billed: usually a credit
  (``fee_period_to_adjust``, ``fee_adjustment``).

``period_fees`` puts these together for one subscription on the invoice of one billing period.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from billing.core.domain import Terms
from billing.core.periods import Period, Schedule
from invoices.model import InvoiceLine, LineDetails, LineKind
from pricing_plans.models import BillingAnchor, FeeBilling, Interval, Plan
from pricing_plans.money import Rounding, round_money
from pricing_plans.proration import fee_for_period

__all__ = [
    "PeriodFees",
    "advance_fee_period",
    "arrears_fee_due",
    "billed_in_advance",
    "billed_in_arrears",
    "ends_in",
    "fee_adjustment",
    "fee_period_for",
    "fee_period_to_adjust",
    "opening_fee",
    "opening_fee_period",
    "period_fees",
    "rate_fee",
    "schedule_of",
    "usage_periods_per_fee_period",
]


def billed_in_advance(plan: Plan) -> bool:
    """Whether the plan has a fee, billed at the start of each fee period."""
    return plan.subscription is not None and plan.subscription.billing is FeeBilling.IN_ADVANCE


def billed_in_arrears(plan: Plan) -> bool:
    """Whether the plan has a fee, billed at the end of each fee period."""
    return plan.subscription is not None and plan.subscription.billing is FeeBilling.IN_ARREARS


def schedule_of(terms: Terms, plan: Plan) -> Schedule:
    """A subscription's periods: its plan's interval, on calendar boundaries or from its start date."""
    anniversary = plan.billing_anchor is BillingAnchor.SUBSCRIPTION_START
    return Schedule(plan.interval, terms.start_date if anniversary else None)


def usage_periods_per_fee_period(plan: Plan) -> int:
    """How many billing periods one fee period holds: 3 on a quarterly plan, 12 on a yearly one (usage is billed
    monthly), 1 otherwise (a weekly plan bills its usage weekly, a monthly one monthly)."""
    return {Interval.QUARTER: 3, Interval.YEAR: 12}.get(plan.interval, 1)


def fee_period_for(terms: Terms, plan: Plan, period: Period) -> Period:
    """The fee period that covers a billing period: the one ``period`` starts in (the period itself on weekly
    and monthly plans)."""
    return schedule_of(terms, plan).fee_period(period.start)


def ends_in(terms: Terms, period: Period) -> bool:
    """Whether the subscription's last day falls in ``period`` (its exclusive end date in (start, end])."""
    end = terms.end_date
    return end is not None and period.start < end <= period.end


def rate_fee(terms: Terms, plan: Plan, fee_period: Period, rounding: Rounding = Rounding.HALF_UP) -> InvoiceLine | None:
    """The subscription fee for ``fee_period``, prorated by active days (trial days free); None without a fee."""
    if plan.subscription is None:
        return None
    billing = plan.subscription.billing
    charge = fee_for_period(plan.subscription, fee_period.start, fee_period.end, terms.start_date, terms.end_date)
    timing = "in advance" if billing is FeeBilling.IN_ADVANCE else "in arrears"
    return InvoiceLine(
        kind=LineKind.SUBSCRIPTION,
        description=f"{plan.name} subscription, {fee_period.label} ({timing})",
        amount=round_money(charge.amount, plan.currency, rounding),
        quantity=Decimal(1),
        service_start=fee_period.start,
        service_end=fee_period.end,
        details=LineDetails(
            charge.explanation,
            charge.breakdown,
            {"service_period": fee_period.as_dict(), "billing": billing.value},
        ),
    )


def arrears_fee_due(terms: Terms, plan: Plan, period: Period) -> bool:
    """Whether the invoice of billing period ``period`` carries the in-arrears fee of the fee period covering it:
    that fee period ends with ``period``, or the subscription ends in ``period`` before the fee period does."""
    if not billed_in_arrears(plan):
        return False
    fee_period = fee_period_for(terms, plan, period)
    if fee_period.end == period.end:
        return True
    return ends_in(terms, period) and terms.end_date is not None and terms.end_date < fee_period.end


def advance_fee_period(terms: Terms, plan: Plan, period: Period) -> Period | None:
    """The fee period whose in-advance fee the invoice of billing period ``period`` carries: the one starting
    right after ``period``, when the subscription runs into it and started before it (a subscription starting
    on it gets its fee on its opening invoice); None otherwise."""
    if not billed_in_advance(plan):
        return None
    upcoming = schedule_of(terms, plan).fee_period(period.end)
    runs_into_it = terms.end_date is None or terms.end_date > upcoming.start
    if upcoming.start == period.end and runs_into_it and terms.start_date < upcoming.start:
        return upcoming
    return None


def opening_fee_period(terms: Terms, plan: Plan) -> Period:
    """The fee period of a subscription's opening invoice: the one it starts in."""
    return schedule_of(terms, plan).fee_period(terms.start_date)


def opening_fee(terms: Terms, plan: Plan, rounding: Rounding = Rounding.HALF_UP) -> InvoiceLine | None:
    """What a subscription's opening invoice bills: the in-advance fee of the fee period it starts in, prorated
    from its start (and to its end, if it ends in that fee period); None for a plan without an in-advance fee."""
    if not billed_in_advance(plan):
        return None
    return rate_fee(terms, plan, opening_fee_period(terms, plan), rounding)


def fee_period_to_adjust(terms: Terms, plan: Plan, period: Period) -> Period | None:
    """The fee period whose in-advance fee the invoice of billing period ``period`` adjusts to the days the
    subscription ran: the subscription ends in ``period`` (its end date in [start, end]: on ``period.start``
    it ended as the period began) before that fee period ends. None otherwise."""
    end = terms.end_date
    if not billed_in_advance(plan) or end is None or not period.start <= end <= period.end:
        return None
    fee_period = fee_period_for(terms, plan, period)
    return fee_period if end < fee_period.end else None


def fee_adjustment(
    terms: Terms, plan: Plan, period: Period, billed: Decimal | None, rounding: Rounding = Rounding.HALF_UP
) -> InvoiceLine | None:
    """The fee for the days the subscription really ran in the fee period covering ``period`` minus ``billed``,
    what earlier invoices billed in advance for it (negative: a credit, as the proration rules want). None when
    nothing was billed in advance, or when the difference is zero."""
    if billed is None:
        return None
    fee_period = fee_period_for(terms, plan, period)
    due = rate_fee(terms, plan, fee_period, rounding)
    if due is None:
        return None
    difference = due.amount - billed
    if difference == 0:
        return None
    adjustment = {
        "due": str(due.amount),
        "billed_in_advance": str(billed),
        "explanation": f"{due.details.explanation or ''}; {billed} billed in advance; difference {difference}",
    }
    return replace(
        due,
        amount=difference,
        description=f"{plan.name} subscription, {fee_period.label}: adjusted to the end on {terms.end_date}",
        details=replace(due.details, extra={**due.details.extra, "adjustment": adjustment}),
    )


@dataclass(frozen=True, slots=True)
class PeriodFees:
    """The fee lines of one subscription on the invoice of one billing period, in the order they are printed
    around its usage lines: the in-arrears fee before them; after them the adjustment of a fee paid in advance,
    then the next fee period's in-advance fee."""

    in_arrears: InvoiceLine | None = None
    adjustment: InvoiceLine | None = None
    in_advance: InvoiceLine | None = None


def period_fees(
    terms: Terms,
    plan: Plan,
    period: Period,
    *,
    covering_fee: InvoiceLine | None,
    billed_in_advance_fee: Decimal | None,
    rounding: Rounding = Rounding.HALF_UP,
) -> PeriodFees:
    """The fees the invoice of billing period ``period`` carries for one subscription.

    ``covering_fee`` is the fee of the fee period covering ``period`` (``rate_fee``, as rating gives it);
    ``billed_in_advance_fee`` what earlier invoices billed in advance for it, when the subscription ends in
    ``period`` before that fee period does (see ``fee_period_to_adjust``).
    """
    if billed_in_arrears(plan):
        return PeriodFees(in_arrears=covering_fee if arrears_fee_due(terms, plan, period) else None)
    if not billed_in_advance(plan):
        return PeriodFees()
    upcoming = advance_fee_period(terms, plan, period)
    return PeriodFees(
        adjustment=fee_adjustment(terms, plan, period, billed_in_advance_fee, rounding),
        in_advance=None if upcoming is None else rate_fee(terms, plan, upcoming, rounding),
    )
