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

``period_fees`` puts these together for one subscription on the invoice of one billing period; ``quoted_fee`` gives
the fee a quote of one billing period shows, the one the run bills once per fee period.

A plan priced per seat (``seats = true``) bills fee × seats for the days each number of seats was held. In arrears
the fee of a fee period follows every quantity change in it. In advance a fee period is billed with the seats on
its first day (the subscription's start on an opening invoice); a change inside it is settled on the invoice of the
billing period the change falls in, as the fee for the days with the new seats minus what was billed: added seats
charged for the rest of the fee period, removed seats credited (``fee_period_to_adjust``, ``fee_adjustment``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from billing.core.credits import net_of_discounts
from billing.core.domain import Terms
from billing.core.periods import Period, Schedule
from invoices.model import Invoice, InvoiceLine, LineDetails, LineKind, TaxLine
from pricing_plans.models import BillingAnchor, FeeBilling, Interval, Plan
from pricing_plans.money import Rounding, round_money
from pricing_plans.proration import fee_for_period, seat_fee_for_period, trial_ends

__all__ = [
    "ADJUSTMENT",
    "REFUND_OF_PAID",
    "PeriodFees",
    "advance_fee",
    "advance_fee_period",
    "arrears_fee_due",
    "arrears_fee_left_unbilled",
    "billed_and_paid",
    "billed_in_advance",
    "billed_in_arrears",
    "credited_as_billed",
    "ends_in",
    "fee_adjustment",
    "fee_period_for",
    "fee_period_to_adjust",
    "given_back_elsewhere",
    "opening_fee",
    "opening_fee_period",
    "period_fees",
    "quoted_fee",
    "rate_fee",
    "refund_of_paid",
    "schedule_of",
    "seat_changes_in",
    "usage_periods_per_fee_period",
    "with_tax",
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


def rate_fee(
    terms: Terms,
    plan: Plan,
    fee_period: Period,
    rounding: Rounding = Rounding.HALF_UP,
    *,
    seats_as_of: dt.date | None = None,
) -> InvoiceLine | None:
    """The subscription fee for ``fee_period``, prorated by active days (trial days free); None without a fee.

    A fee per seat counts the quantity changes effective up to ``seats_as_of`` (None: all of them)."""
    if plan.subscription is None:
        return None
    billing = plan.subscription.billing
    quantity = Decimal(1)
    if plan.subscription.seats:
        schedule = _seat_schedule(terms, seats_as_of)
        charge = seat_fee_for_period(
            plan.subscription,
            fee_period.start,
            fee_period.end,
            terms.start_date,
            terms.end_date,
            schedule,
            trial_from=terms.trial_from,
        )
        quantity = Decimal(_seats_held(schedule, fee_period)[-1])
    else:
        charge = fee_for_period(
            plan.subscription,
            fee_period.start,
            fee_period.end,
            terms.start_date,
            terms.end_date,
            trial_from=terms.trial_from,
        )
    timing = "in advance" if billing is FeeBilling.IN_ADVANCE else "in arrears"
    return InvoiceLine(
        kind=LineKind.SUBSCRIPTION,
        description=f"{plan.name} subscription, {fee_period.label} ({timing})",
        amount=round_money(charge.amount, plan.currency, rounding),
        quantity=quantity,
        service_start=fee_period.start,
        service_end=fee_period.end,
        details=LineDetails(
            charge.explanation,
            charge.breakdown,
            {"service_period": fee_period.as_dict(), "billing": billing.value},
        ),
    )


def _seat_schedule(terms: Terms, as_of: dt.date | None) -> list[tuple[dt.date, int]]:
    """The quantity schedule (from, seats) by date, with the changes effective up to ``as_of`` (None: all)."""
    schedule = [(terms.start_date, terms.quantity)]
    schedule += [
        (change.effective_from, change.quantity)
        for change in terms.quantity_changes
        if as_of is None or change.effective_from <= as_of
    ]
    return schedule


def _seats_held(schedule: list[tuple[dt.date, int]], fee_period: Period) -> list[int]:
    """The numbers of seats in force on some day of ``fee_period``, in date order (at least the first)."""
    held = [
        count
        for index, (since, count) in enumerate(schedule)
        if (index == 0 or since < fee_period.end)
        and (index + 1 == len(schedule) or schedule[index + 1][0] > fee_period.start)
    ]
    return held or [schedule[-1][1]]


def seat_changes_in(terms: Terms, period: Period) -> list[tuple[dt.date, int, int]]:
    """The quantity changes effective in ``period`` while the subscription runs: (date, seats before, after)."""
    changes = []
    before = terms.quantity
    for change in terms.quantity_changes:
        runs = change.effective_from < (terms.end_date or period.end) and change.effective_from > terms.start_date
        if period.contains(change.effective_from) and runs and change.quantity != before:
            changes.append((change.effective_from, before, change.quantity))
        before = change.quantity
    return changes


def arrears_fee_due(terms: Terms, plan: Plan, period: Period) -> bool:
    """Whether the invoice of billing period ``period`` carries the in-arrears fee of the fee period covering it:
    that fee period ends with ``period``, or the subscription ends in ``period`` before the fee period does."""
    if not billed_in_arrears(plan):
        return False
    fee_period = fee_period_for(terms, plan, period)
    if fee_period.end == period.end:
        return True
    return ends_in(terms, period) and terms.end_date is not None and terms.end_date < fee_period.end


def arrears_fee_left_unbilled(terms: Terms, plan: Plan, period: Period) -> Period | None:
    """The fee period of an in-arrears fee that the subscription left as billing period ``period`` began (its end
    date on ``period.start``) before that fee period's end, if any: its fee, prorated to the days it ran, was due on
    the invoice of the billing period before, which does not bill it if it was issued before the subscription was
    ended (a quarterly fee from 24 April, cancelled on 1 June once May was issued: May's invoice expected the
    quarter to run on). The invoice of ``period`` then bills it, if nothing did. None otherwise."""
    end = terms.end_date
    if not billed_in_arrears(plan) or end is None or end != period.start or terms.start_date >= end:
        return None
    fee_period = schedule_of(terms, plan).fee_period(end - dt.timedelta(days=1))
    return fee_period if end < fee_period.end else None


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
    return advance_fee(terms, plan, opening_fee_period(terms, plan), rounding)


def advance_fee(
    terms: Terms, plan: Plan, fee_period: Period, rounding: Rounding = Rounding.HALF_UP
) -> InvoiceLine | None:
    """The in-advance fee of ``fee_period``, billed with the seats on its first day (or the subscription's)."""
    return rate_fee(terms, plan, fee_period, rounding, seats_as_of=max(fee_period.start, terms.start_date))


def fee_period_to_adjust(terms: Terms, plan: Plan, period: Period) -> Period | None:
    """The fee period whose in-advance fee the invoice of billing period ``period`` adjusts to the days the
    subscription ran: the subscription ends in ``period`` (its end date in [start, end]: on ``period.start``
    it ended as the period began) before that fee period ends, or its seats change in ``period``. None otherwise."""
    if not billed_in_advance(plan):
        return None
    fee_period = fee_period_for(terms, plan, period)
    if _seats_priced(plan) and seat_changes_in(terms, period):
        return fee_period
    end = terms.end_date
    if end is None or not period.start <= end <= period.end:
        return None
    return fee_period if end < fee_period.end else None


def _seats_priced(plan: Plan) -> bool:
    return plan.subscription is not None and plan.subscription.seats


ADJUSTMENT = "adjustment"
"""A line's ``details.extra`` key: the line adjusts a fee billed in advance (``fee_adjustment``: the days it really
ran, a price now in force, seats changed), with what was due and what was billed; its service is that fee's."""

REFUND_OF_PAID = "refund_of_paid"
"""A line's ``details.extra`` key: the line gives back part of a fee as it was paid, its discount already taken
off (``fee_adjustment``), so no coupon reduces it (``billing.core.coupons``, ``billing.core.tax``)."""


def refund_of_paid(line: InvoiceLine) -> bool:
    """The line gives back part of a fee net of the discounts it had (see :data:`REFUND_OF_PAID`)."""
    return bool(line.details.extra.get(REFUND_OF_PAID))


def billed_and_paid(
    documents: Iterable[tuple[Sequence[InvoiceLine], Decimal]], keys: Collection[tuple[int, dt.date]]
) -> tuple[dict[tuple[int, dt.date], Decimal], dict[tuple[int, dt.date], Decimal]]:
    """What the subscription fee lines of ``documents`` (each invoice's lines, and what its credit notes gave back
    of it in the terms of its lines, ``credited_as_billed``) bill for each of ``keys`` (subscription, fee period
    start; 0 for a key none bills), at the price, and what they came to once the discount lines of their invoices
    took their part (``billing.core.credits.net_of_discounts``) and the credit notes theirs (``_credited``; exact
    fractions, not rounded). A refund already net of its discount (``REFUND_OF_PAID``) counts at the price as the
    difference it gave back, and as paid at its amount: a second adjustment of the same fee period starts from
    both."""
    billed = dict.fromkeys(keys, Decimal(0))
    paid = dict.fromkeys(keys, Decimal(0))
    for lines, credited in documents:
        charged = [line for line in lines if line.kind is not LineKind.DISCOUNT]
        discounts = [
            (line.amount, line.details.extra.get("plans") or None) for line in lines if line.kind is LineKind.DISCOUNT
        ]
        nets = net_of_discounts([(line.plan_code, line.amount) for line in charged], discounts)
        nets = _credited(charged, nets, credited)
        for line, net in zip(charged, nets, strict=True):
            key = (line.subscription_id or 0, line.service_start or dt.date.min)
            if line.kind is not LineKind.SUBSCRIPTION or key not in billed:
                continue
            if refund_of_paid(line):
                terms = line.details.extra[ADJUSTMENT]
                billed[key] += Decimal(str(terms["due"])) - Decimal(str(terms["billed_in_advance"]))
                paid[key] += line.amount
            else:
                billed[key] += line.amount
                paid[key] += net
    return billed, paid


def _credited(lines: Sequence[InvoiceLine], nets: list[Decimal], credited: Decimal) -> list[Decimal]:
    """What is left of each line's ``nets`` once the invoice's credit notes gave back ``credited`` (in the terms of
    its lines): a note is taken from the invoice's other charges first (usage, most often what a note corrects),
    then from its subscription fees in proportion. So a fee's later refund never gives back more than the notes
    left of the invoice: 28.00 of fee and 72.00 of usage, a note of 72.00 leaves the fee whole; 86.00 leaves 14.00."""
    if credited <= 0:
        return nets
    kinds = [
        ("fee" if line.kind is LineKind.SUBSCRIPTION else "other", net) for line, net in zip(lines, nets, strict=True)
    ]
    return net_of_discounts(kinds, [(-credited, {"other"})])


def given_back_elsewhere(
    invoice: Invoice, others: Iterable[Invoice], inclusive: Collection[tuple[str, int]] | None = None
) -> Decimal:
    """What ``others`` (the other invoices) gave back, tax included, of the subscription fees that ``invoice`` billed:
    each fee's negative lines there (its refund when it stopped early, seats removed), in the share of the fee this
    invoice billed, each with the tax it bears on its own invoice (``with_tax``; ``inclusive``: the plan versions
    whose prices hold the tax). A credit note of the invoice can give back no more than what is left of it once
    these are counted (``billing.invoicing.create_credit_note``): 31.00 + 10 % billed, −15.00 − 1.50 given back on
    the next invoice, a note of at most 34.10 − 16.50 = 17.60."""
    here: dict[tuple[int, dt.date], Decimal] = {}
    for line in invoice.lines:
        if line.kind is LineKind.SUBSCRIPTION and line.subscription_id and line.amount > 0:
            key = (line.subscription_id, line.service_start or dt.date.min)
            here[key] = here.get(key, Decimal(0)) + line.amount
    billed, refunded = dict(here), dict.fromkeys(here, Decimal(0))
    for other in others:
        for line in other.lines:
            key = (line.subscription_id or 0, line.service_start or dt.date.min)
            if line.kind is not LineKind.SUBSCRIPTION or key not in here:
                continue
            if line.amount > 0:
                billed[key] += line.amount
            else:
                refunded[key] -= with_tax(other, line, inclusive)
    return sum((refunded[key] * here[key] / billed[key] for key in here), Decimal(0))


def with_tax(invoice: Invoice, line: InvoiceLine, inclusive: Collection[tuple[str, int]] | None = None) -> Decimal:
    """``line``'s amount with the tax it bears on ``invoice``: on an invoice with one rate, the amount itself for a
    plan whose prices hold the tax (``inclusive``: those plans' (code, version)), amount × (100 + rate) / 100 for
    the others; otherwise (several rates, or ``inclusive`` not known) the invoice's total over what its lines add
    up to after discounts: exact when its lines share one rate and one kind of price, an average of them if not."""
    rates = {tax.rate for tax in invoice.taxes}
    if inclusive is not None and len(rates) == 1:
        held = (line.plan_code, line.plan_version) in inclusive
        return line.amount if held else line.amount * (100 + rates.pop()) / 100
    lines = invoice.subtotal - invoice.discount
    return line.amount * invoice.total / lines if lines != 0 and invoice.total != 0 else line.amount


def credited_as_billed(taxes: Sequence[TaxLine], credited: Sequence[TaxLine]) -> Decimal:
    """What credit notes gave back of an invoice (the tax lines of each, ``credited``), in the terms of the
    invoice's lines (``taxes``: the invoice's): a rate's lines add up to its net plus, for prices with the tax
    inside, the tax included, so a note's part at a rate counts that share of its net and tax. A note of 15.50 on
    31.00 of prices with 10 % inside (14.09 + 1.41) counts 15.50; on 31.00 + 10 % (15.50 = 14.09 + 1.41), 14.09."""
    billed: dict[Decimal, tuple[Decimal, Decimal]] = {}
    for tax in taxes:
        lines, gross = billed.get(tax.rate, (Decimal(0), Decimal(0)))
        billed[tax.rate] = (lines + tax.taxable + tax.included, gross + tax.taxable + tax.amount)
    found = Decimal(0)
    for part in credited:
        lines, gross = billed.get(part.rate, (Decimal(0), Decimal(0)))
        found += (part.taxable + part.amount) * lines / gross if gross != 0 else part.taxable
    return found


def fee_adjustment(
    terms: Terms,
    plan: Plan,
    period: Period,
    billed: Decimal | None,
    rounding: Rounding = Rounding.HALF_UP,
    paid: Decimal | None = None,
) -> InvoiceLine | None:
    """The fee for the days the subscription really ran in the fee period covering ``period`` minus ``billed``,
    what earlier invoices billed in advance for it (negative: a credit, as the proration rules want). None when
    nothing was billed in advance, or when the difference is zero.

    ``paid``: what those invoices' coupons left of ``billed`` (``billed_and_paid``), when they took something off it. A
    credit then gives back its share of what was paid, not of the price: 28.00 billed with 50 % off (14.00 paid),
    half the days used, gives back 7.00, not 14.00. Such a line is a refund already net of its discount: no coupon
    reduces it again (``REFUND_OF_PAID``)."""
    if billed is None:
        return None
    fee_period = fee_period_for(terms, plan, period)
    # seat changes count once their day has come in this billing period; later ones wait for their own invoice
    due = rate_fee(terms, plan, fee_period, rounding, seats_as_of=period.end - dt.timedelta(days=1))
    if due is None:
        return None
    difference = due.amount - billed
    if difference == 0:
        return None
    explanation = f"{due.details.explanation or ''}; {billed} billed in advance; difference {difference}"
    adjustment: dict[str, object] = {"due": str(due.amount), "billed_in_advance": str(billed)}
    marks: dict[str, object] = {}
    if difference < 0 and paid is not None and 0 <= paid < billed:
        after = round_money(paid, plan.currency, rounding)
        difference = round_money(difference * paid / billed, plan.currency, rounding)
        explanation += f"; {after} of it paid after discounts: {difference}"
        adjustment["paid_after_discounts"] = str(after)
        marks[REFUND_OF_PAID] = True
        if difference == 0:
            return None
    adjustment["explanation"] = explanation
    quantity, details_explanation = due.quantity, due.details.explanation
    ended = terms.end_date is not None and terms.end_date <= period.end and terms.end_date < fee_period.end
    reason = f"adjusted to the end on {terms.end_date}" if ended else "adjusted to the fee now in force"
    description = f"{plan.name} subscription, {fee_period.label}: {reason}"
    changes = seat_changes_in(terms, period) if _seats_priced(plan) else []
    if changes and not ended:
        moves = ", ".join(f"{before} → {after} from {day.isoformat()}" for day, before, after in changes)
        description = f"{plan.name} seats, {fee_period.label}: {moves}"
        quantity = Decimal(changes[-1][2] - changes[0][1])
        details_explanation = f"{_seat_change_terms(terms, plan, fee_period, changes)}; due {explanation}"
        adjustment["explanation"] = details_explanation
    return replace(
        due,
        amount=difference,
        quantity=quantity,
        description=description,
        details=replace(
            due.details, explanation=details_explanation, extra={**due.details.extra, ADJUSTMENT: adjustment, **marks}
        ),
    )


def _seat_change_terms(terms: Terms, plan: Plan, fee_period: Period, changes: list[tuple[dt.date, int, int]]) -> str:
    """Each seat change's share of the fee: seats added (or removed) × fee × its days to the end of the fee period
    (or of the subscription) / the fee period's days; these add up to what the changes cost."""
    assert plan.subscription is not None
    fee = plan.subscription.fee
    until = min(fee_period.end, terms.end_date or fee_period.end)
    paid_from = trial_ends(plan.subscription, terms.start_date, terms.trial_from)
    parts = []
    for day, before, after in changes:
        days = max(0, (until - max(day, paid_from)).days)
        delta = after - before
        share = round_money(fee * delta * days / fee_period.days, plan.currency)
        verb = "added" if delta > 0 else "removed"
        parts.append(f"{abs(delta)} seats {verb} × {fee} × {days}/{fee_period.days} days = {share}")
    return "; ".join(parts)


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
    advance_plan: Plan | None = None,
    paid_in_advance: Decimal | None = None,
) -> PeriodFees:
    """The fees the invoice of billing period ``period`` carries for one subscription.

    ``covering_fee`` is the fee of the fee period covering ``period`` (``rate_fee``, as rating gives it);
    ``billed_in_advance_fee`` what earlier invoices billed in advance for it, when the subscription ends in
    ``period`` before that fee period does (see ``fee_period_to_adjust``) or a negotiated price takes effect with
    it. ``advance_plan`` prices the next fee period's in-advance fee when it differs from ``plan`` (a negotiated
    price in force from then, which may give a plan without a fee one). ``paid_in_advance``: what discounts left of
    ``billed_in_advance_fee`` (see ``fee_adjustment``).
    """
    if billed_in_arrears(plan):
        return PeriodFees(in_arrears=covering_fee if arrears_fee_due(terms, plan, period) else None)
    ahead = advance_plan or plan
    if not billed_in_advance(plan) and not billed_in_advance(ahead):
        return PeriodFees()
    upcoming = advance_fee_period(terms, ahead, period)
    return PeriodFees(
        adjustment=fee_adjustment(terms, plan, period, billed_in_advance_fee, rounding, paid_in_advance),
        in_advance=None if upcoming is None else advance_fee(terms, ahead, upcoming, rounding),
    )


def quoted_fee(terms: Terms, plan: Plan, period: Period, rounding: Rounding = Rounding.HALF_UP) -> InvoiceLine | None:
    """The subscription fee a quote of billing period ``period`` shows: the fee the billing run bills once per fee
    period, quoted with the billing period it is billed for, as the run places it.

    - In arrears: the fee of the fee period that ends with ``period`` (or that the subscription leaves in it), which
      the run bills on ``period``'s invoice (``period_fees``).
    - In advance: the fee of the fee period that begins with ``period``, which the run bills as ``period`` begins:
      on the opening invoice when the subscription starts in ``period`` (``opening_fee``: the fee period it starts
      in, prorated from its start), otherwise on the invoice of the billing period before, issued as that one ends
      (``period_fees``' in-advance fee).

    None on a fee period's other billing periods: a quarterly plan's fee is in one of three monthly quotes, a yearly
    plan's in one of twelve. A weekly or monthly plan's fee period is its billing period: each quote has its fee.
    What an end date or a change of seats adjusts of a fee paid in advance is not quoted."""
    if billed_in_arrears(plan):
        covering = rate_fee(terms, plan, fee_period_for(terms, plan, period), rounding)
        due = period_fees(terms, plan, period, covering_fee=covering, billed_in_advance_fee=None, rounding=rounding)
        return due.in_arrears
    if not billed_in_advance(plan) or terms.start_date >= period.end:
        return None
    if terms.start_date >= period.start:
        return opening_fee(terms, plan, rounding)
    before = schedule_of(terms, plan).previous_billing_period(period)
    return period_fees(terms, plan, before, covering_fee=None, billed_in_advance_fee=None, rounding=rounding).in_advance
