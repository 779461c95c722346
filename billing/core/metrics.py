"""Revenue and churn figures per period and currency: pure functions over plain records, no database.

:func:`compute_figures` takes the customers, their subscriptions, the catalog's plans and summaries of the issued
invoices, and returns one frozen :class:`PeriodFigures` per (period, currency). ``billing.metrics_store`` loads
those records from the database; ``billing metrics`` prints them.

Definitions (P = ``[P.start, P.end)``; ``P.end`` is the first day after the period):

- A customer is **active** on day t if any of their subscriptions has ``start_date <= t < end_date`` (an open
  end never ends). A customer is **paying** on the first day t of a month if active on t and either their MRR on
  t is positive (a paid plan) or their billed revenue of the month that ends on t is positive (pay as you go);
  the other active customers are **free**. **S** = customers paying on ``P.start``; **E** = paying on ``P.end``,
  so E(P) = S(P + 1) and a subscription ending on ``P.end`` is churn in P.
- **Churned C** = paying on ``P.start`` and not on ``P.end`` (left, or moved to a free plan); **involuntary** if
  any subscription of the customer that ended in ``(P.start, P.end]`` was cancelled ``involuntary``, else
  **voluntary**. A plan change (``cancel_reason`` None) between paid plans is never churn.
- **New N** = paying on ``P.end`` and not on ``P.start``, so E = S − C + N exactly. **Reactivated** = the new
  customers not active on ``P.start`` who had an earlier subscription; **converted** = the new customers who were
  free on ``P.start``. Both stay in N.
- **Customer churn rate** = C / S; **CRR** = (E − N) / S; **free → paid conversion rate** = converted / free
  customers on ``P.start``.
- An **open** period (its end has not passed in every timezone at the report's instant) has every ratio n/a.
- Every figure is per currency: a customer's figures go to the customer's currency; nothing is converted.
- **MRR** of a customer on day t = Σ over their subscriptions active on t of the plan's fee normalized to a
  month (``Plan.monthly_fee``: a weekly fee × 52 / 12, a quarterly fee / 3, a yearly fee / 12; times the seats
  held on t on a plan priced per seat) + the commitment minimum normalized to a month the same way
  (``per_month``), net of the tax inside a tax-inclusive plan's prices at the customer's rate (``plan_mrr``), kept
  to 12 decimal places (``MRR_DECIMALS``), never rounded to minor units before the display.
  A subscription with negotiated prices counts the fee and minimum of the plan in force on t (its override then).
- **MRR movements** per customer, m0 = MRR on ``P.start``, m1 = MRR on ``P.end``: m0 = 0 < m1 → **new**, or
  **reactivation** if the customer is a reactivated customer (so a customer already active on a free plan who
  starts paying is new MRR); m0 > 0 = m1 → **churned** (m0), whether the customer left or moved to a free plan;
  m1 > m0 > 0 → **expansion**; m0 > m1 > 0 → **contraction**. Then start + new + reactivation + expansion −
  contraction − churned = end, exactly: sums are taken in a context that traps any rounding.
- **Revenue churn** (net) = (churned + contraction − expansion) / MRR_start = 1 − NRR; negative is net expansion.
  (domain.md writes (MRR_start − MRR_end − MRR_new) / MRR_start; since MRR_end includes the new MRR, that would
  count new revenue twice. The standard net revenue churn, implemented here, removes new and reactivation MRR
  from MRR_end: (MRR_start − (MRR_end − new − reactivation)) / MRR_start.)
- **NRR** = (start + expansion − contraction − churned) / start; **GRR** = (start − contraction − churned) / start.
- **Billed revenue** of P = Σ (subtotal − discount − tax included in tax-inclusive prices − free credits
  applied) of the issued invoices (finalized, paid or uncollectible; kind invoice; not a top-up selling prepaid
  credit, which is a liability until used), minus the subtotals (net of tax) of issued credit notes against them,
  each line counted in the month of the service it bills (``line_month``: with its invoice, in
  ``InvoiceSummary.billed_month``, unless billed in advance or late) and what an invoice takes off as a whole
  shared among its lines' months (``billed_parts``). Free credits are subtracted at the amount applied,
  up to the invoice's net amount; paid credits are revenue when used, so an invoice they pay counts in full. Split
  by line kind: subscription, usage (with late usage), commitment, and credits & discounts (everything else, the
  tax inside tax-inclusive prices and the free credits taken off there), which add up to the billed revenue.
- **Billed customers** of P = customers whose billed revenue of P is positive. **NRR billed** and **GRR billed**
  take as base the customers billed in P − 1: NRR billed = Σ billed(P) / Σ billed(P − 1) and GRR billed =
  Σ min(billed(P), billed(P − 1)) / Σ billed(P − 1), over that base.
- **Trailing NRR / GRR billed** over n = 3 or 12 months, cohort-based: the base is the customers billed in the n
  months before the window ``[P − n + 1, P]``; NRR = Σ their billed revenue in the window / Σ their billed revenue
  in the n months before; GRR caps each customer's window revenue at its base revenue.
- **ARPA** = billed revenue / billed customers; **CLV** = ARPA / customer churn rate (of paying customers). When
  the catalog declares costs (a meter's ``unit_cost``, a plan's ``subscription_cost``), CLV is on gross margin:
  (billed revenue − cost of goods) / billed customers / customer churn rate, the cost of goods as the margins
  count it (``billing.core.margin.costs_of_goods``).
- **Coupon redemption rate** of P = coupons redeemed / coupons issued, over the coupons issued in P (by the UTC
  day of issue) to the customers billed in the currency, redeemed by the report's date: a coupon is redeemed when
  it first reduces one of the customer's finalized invoices (``billing.core.coupons.CouponIssue``).
- A ratio with a zero denominator is undefined (None, shown "n/a"), never an error or an infinity.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from itertools import accumulate, groupby
from typing import Any, NamedTuple

from billing.core.coupons import COUPON_PLANS, CouponIssue, coupon_counts
from billing.core.credits import net_of_discounts
from billing.core.domain import CancelReason, Customer, Subscription
from billing.core.fees import ADJUSTMENT
from billing.core.overrides import Negotiated
from billing.core.periods import Period
from billing.core.tax import TaxRules, buyer, treatment
from billing.errors import BillingError
from invoices.model import Invoice, InvoiceKind, InvoiceScope, InvoiceStatus, LineKind
from pricing_plans.models import Catalog, Plan, per_month
from pricing_plans.money import HUNDRED, ZERO, format_amount, round_money

__all__ = [
    "ISSUED",
    "JSON_KEYS",
    "MRR_DECIMALS",
    "BilledAmounts",
    "BilledHistory",
    "BilledSummary",
    "CustomerMonth",
    "DatedLine",
    "InvoiceSummary",
    "MetricsError",
    "PeriodFigures",
    "RevenueBase",
    "billed_by_customer",
    "billed_parts",
    "compute_figures",
    "figures_row",
    "first_billed_periods",
    "format_money",
    "format_rate",
    "has_ended_everywhere",
    "line_month",
    "line_plans",
    "month_number",
    "plan_mrr",
    "ratio",
    "revenue_base",
    "share_by_month",
    "summarize_invoice",
    "with_line_months",
]

JSON_KEYS = (
    "period",
    "currency",
    "period_open",
    "customers_start",
    "customers_end",
    "customers_new",
    "customers_churned",
    "customers_churned_voluntary",
    "customers_churned_involuntary",
    "customer_churn_rate",
    "crr",
    "free_customers_start",
    "free_customers_end",
    "free_to_paid_conversions",
    "free_to_paid_conversion_rate",
    "mrr_start",
    "mrr_end",
    "mrr_new",
    "mrr_expansion",
    "mrr_contraction",
    "mrr_churned",
    "mrr_reactivation",
    "revenue_churn_rate",
    "nrr",
    "grr",
    "billed_revenue",
    "nrr_billed",
    "grr_billed",
    "nrr_billed_3m",
    "grr_billed_3m",
    "nrr_billed_12m",
    "grr_billed_12m",
    "arpa",
    "clv",
    "coupons_issued",
    "coupons_redeemed",
    "coupon_redemption_rate",
)

ISSUED = frozenset({InvoiceStatus.FINALIZED, InvoiceStatus.PAID, InvoiceStatus.UNCOLLECTIBLE})
"""The statuses of an invoice that counts as billed revenue (not draft, not void)."""

USAGE_LINE_KINDS = frozenset({LineKind.USAGE, LineKind.LATE_USAGE})

# MRR sums run in this context: precise enough for any real sum, and it raises rather than round, so
# start + movements = end holds exactly or the computation fails loudly.
_EXACT = decimal.Context(prec=1000, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])
# Divisions (a yearly fee / 12, the ratios) at Python's default precision, whatever the caller's context.
_DIVIDE = decimal.Context(prec=28, rounding=decimal.ROUND_HALF_EVEN)
_ONE_DECIMAL = Decimal("0.1")
MRR_DECIMALS = 12
"""A plan's monthly MRR keeps this many decimal places (1000 / 12 = 83.333333333333): far below any minor unit,
and few enough that sums of MRR below 10^15 are exact even in Python's default 28-digit context."""
_MRR_QUANTUM = Decimal(1).scaleb(-MRR_DECIMALS)


class MetricsError(BillingError, ValueError):
    """Raised when the records cannot give figures: a subscription to a plan the catalog lacks, a plan priced in
    another currency than its customer, a subscription of an unknown customer."""


# -- inputs ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InvoiceSummary:
    """What the figures need of one invoice or credit note.

    Attributes:
      number: the issued number (None while draft).
      kind: invoice or credit note; ``refers_to`` is the credited invoice's number.
      status: draft, finalized, paid, void or uncollectible.
      customer_external_id, currency: whose and in which currency.
      period_start: the first day of the billing period the invoice is for.
      subtotal, discount: before tax; the billed amount of an invoice is ``subtotal − discount − tax_included``.
      line_amounts: the sum of the line amounts per line kind, as ``(kind, amount)`` pairs.
      tax_included: the tax inside tax-inclusive prices (part of the lines and the subtotal, not revenue).
      period_end, scope: the end of the billing period (exclusive) and what the invoice bills; an invoice of scope
        ``credit`` sells prepaid credit and is not revenue.
      free_credits: the free (promotional) credit applied to the invoice, tax included.
      service_start: an opening invoice's subscription's start (its fee is billed from then, not from the start
        of the fee's calendar period).
      dated_lines: the line amounts per month they count in, kind and plans, as ``(month, kind, amount, plans)``
        (month None: the invoice's own, ``billed_month``; plans: a charge's plan, the plans a discount reduces, none
        for every plan), where a line counts in another month than the invoice (``line_month``: a fee billed in
        advance, usage billed late); empty when every line counts in ``billed_month``.
    """

    number: str | None
    kind: InvoiceKind
    status: InvoiceStatus
    customer_external_id: str
    currency: str
    period_start: dt.date
    subtotal: Decimal
    discount: Decimal = ZERO
    refers_to: str | None = None
    line_amounts: tuple[tuple[str, Decimal], ...] = ()
    period_end: dt.date | None = None
    scope: InvoiceScope = InvoiceScope.PERIOD
    tax_included: Decimal = ZERO
    free_credits: Decimal = ZERO
    service_start: dt.date | None = None
    dated_lines: tuple[tuple[dt.date | None, str, Decimal, tuple[str, ...]], ...] = ()

    @property
    def billed_month(self) -> dt.date:
        """The first day of the month an invoice's lines with no service period count in (and all of what it takes
        off when none of its lines has one): the month its billing period's last day falls in (as the run of that
        month bills it: a week or an anniversary month ending in it; a progressive invoice of the period with it),
        or, for an opening invoice, the month its service starts in (the subscription's start: a yearly fee
        opened on 10 March counts in March, not in January)."""
        if self.scope is InvoiceScope.OPENING and self.service_start is not None:
            return max(self.service_start, self.period_start).replace(day=1)
        if self.period_end is None or self.scope not in (InvoiceScope.PERIOD, InvoiceScope.PROGRESSIVE):
            return self.period_start.replace(day=1)
        return (self.period_end - dt.timedelta(days=1)).replace(day=1)


class DatedLine(NamedTuple):
    """What ``line_month`` needs of an invoice line: its kind, service period, its subscription's start, amount,
    and whether it adjusts a fee billed in advance (``billing.core.fees.ADJUSTMENT``); and what ``billed_parts``
    needs: the plan of a charge, the plans a discount reduces (its coupon's; none: every plan)."""

    kind: str
    service_start: dt.date | None
    service_end: dt.date | None
    subscription_start: dt.date | None
    amount: Decimal
    adjusts_advance: bool = False
    plans: tuple[str, ...] = ()


def line_month(
    invoice: InvoiceSummary,
    service_start: dt.date | None,
    service_end: dt.date | None,
    subscription_start: dt.date | None = None,
    adjusts_advance: bool = False,
) -> dt.date | None:
    """The first day of the month a line of ``invoice`` counts in when that is not the invoice's own month
    (``billed_month``), else None. A line whose service overlaps the invoice's billing period (or with no service
    period) counts with the invoice: its own usage, a quarter's or a year's fee on a monthly invoice (or its
    refund). A line billed in advance, for service that begins after the period, counts in the month its service
    begins (or its subscription starts, when later): February's fee on January's invoice in February; and so does
    the adjustment of that fee (``adjusts_advance``) on the invoice of the period it began with: an anniversary
    month's fee from 15 January, billed in advance, and its refund when cancelled on 25 January, on the invoice of
    15 January – 14 February, both in January. A line billing service that ended before the period (usage billed
    late) counts in the month of that service's last day, where that period's invoice counted: March's late usage
    in March."""
    end = invoice.period_end
    if service_start is None or end is None:
        return None
    if service_start >= end or (adjusts_advance and service_start == invoice.period_start):
        begins = max(service_start, subscription_start or service_start)
        month = begins.replace(day=1)
    elif (service_start if service_end is None else service_end) <= invoice.period_start < end:
        month = (service_start if service_end is None else service_end - dt.timedelta(days=1)).replace(day=1)
    else:  # (service overlapping the period: a quarter's or a year's fee on a monthly invoice, or its refund)
        return None
    return None if month == invoice.billed_month else month


def summarize_invoice(invoice: Invoice, starts: Mapping[int, dt.date] | None = None) -> InvoiceSummary:
    """The :class:`InvoiceSummary` of a stored invoice (its lines summed per kind, and per kind and the month
    they count in, ``line_month``; ``starts``: the subscriptions' start dates by id)."""
    amounts: dict[str, Decimal] = {}
    for line in invoice.lines:
        amounts[line.kind] = amounts.get(line.kind, ZERO) + line.amount
    summary = InvoiceSummary(
        number=invoice.number,
        kind=invoice.kind,
        status=invoice.status,
        customer_external_id=invoice.customer.external_id or "",
        currency=invoice.currency,
        period_start=invoice.period_start,
        subtotal=invoice.subtotal,
        discount=invoice.discount,
        refers_to=invoice.refers_to,
        line_amounts=tuple(sorted(amounts.items())),
        period_end=invoice.period_end,
        scope=invoice.scope,
        tax_included=invoice.tax_included,
    )
    dated = (
        DatedLine(
            line.kind, line.service_start, line.service_end, (starts or {}).get(line.subscription_id or 0),
            line.amount, ADJUSTMENT in line.details.extra, line_plans(line.kind, line.plan_code, line.details.extra),
        )
        for line in invoice.lines
    )  # fmt: skip
    return with_line_months(summary, dated)


def line_plans(kind: str, plan_code: str | None, extra: Mapping[str, Any]) -> tuple[str, ...]:
    """The plans of a line for ``DatedLine.plans``: a discount's coupon's plans (``COUPON_PLANS`` of its details;
    none: every plan), a charge's plan (none: a line of no plan)."""
    if kind == LineKind.DISCOUNT:
        return tuple(sorted(str(plan) for plan in extra.get(COUPON_PLANS) or ()))
    return () if plan_code is None else (plan_code,)


def with_line_months(summary: InvoiceSummary, lines: Iterable[DatedLine]) -> InvoiceSummary:
    """``summary`` with its ``dated_lines``, from its lines (``line_month``); unchanged when every line counts in
    the invoice's month."""
    found: dict[tuple[dt.date | None, str, tuple[str, ...], int], Decimal] = {}
    moved = False
    with decimal.localcontext(_EXACT):
        for n, (kind, service_start, service_end, subscription_start, amount, adjusts, plans) in enumerate(lines):
            month = line_month(summary, service_start, service_end, subscription_start, adjusts)
            moved = moved or month is not None
            key = (month, str(kind), plans, n if kind == LineKind.DISCOUNT else -1)  # (discounts: each in order)
            found[key] = found.get(key, ZERO) + amount
    if not moved:
        return summary
    dated = tuple((month, kind, amount, plans) for (month, kind, plans, _), amount in found.items())
    return replace(summary, dated_lines=dated)


# -- outputs -----------------------------------------------------------------------------------------------


def ratio(numerator: Decimal | int, denominator: Decimal | int) -> Decimal | None:
    """``numerator / denominator`` as a Decimal (28 significant digits), or None when the denominator is zero."""
    if denominator == 0:
        return None
    return _DIVIDE.divide(Decimal(numerator), Decimal(denominator))


@dataclass(frozen=True, slots=True)
class BilledAmounts:
    """One customer's billed revenue of one period, split by line kind; the parts add up to ``total``.

    Attributes:
      subscription: subscription fee lines.
      usage: usage and late-usage lines.
      commitment: commitment true-up lines.
      adjustments: everything else: credit lines, discounts (negative), credit notes (negative).
    """

    subscription: Decimal = ZERO
    usage: Decimal = ZERO
    commitment: Decimal = ZERO
    adjustments: Decimal = ZERO

    @property
    def total(self) -> Decimal:
        return self.subscription + self.usage + self.commitment + self.adjustments

    def __add__(self, other: BilledAmounts) -> BilledAmounts:
        return BilledAmounts(
            self.subscription + other.subscription,
            self.usage + other.usage,
            self.commitment + other.commitment,
            self.adjustments + other.adjustments,
        )


@dataclass(frozen=True, slots=True)
class RevenueBase:
    """A cohort's billed revenue then and now: the customers billed something in the base months, what they were
    billed then (``previous``), what they are billed in the window (``current``) and, each capped at its base,
    ``retained``."""

    customers: int = 0
    previous: Decimal = ZERO
    current: Decimal = ZERO
    retained: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class PeriodFigures:
    """The figures of one period in one currency. Counts are ints, money is Decimal at full precision; the
    ratios are properties (Decimal fractions, 0.9 for 90 %; None when undefined, and every one of them None while
    the period is open).

    Attributes:
      period, currency: which period, which currency; ``closed``: whether the period had ended everywhere at the
        report's instant.
      customers_start (S), customers_end (E), customers_new (N), customers_reactivated (part of N),
      customers_churned (C), customers_churned_voluntary, customers_churned_involuntary: paying customer counts.
      free_customers_start, free_customers_end: active customers who are not paying, on ``P.start`` and ``P.end``;
      conversions: customers free on ``P.start`` and paying on ``P.end`` (part of N).
      mrr_start, mrr_end, mrr_new, mrr_reactivation, mrr_expansion, mrr_contraction, mrr_churned: MRR and its
        movements; start + new + reactivation + expansion − contraction − churned = end.
      billed: the period's billed revenue, split by line kind.
      billed_customers: customers whose billed revenue of the period is positive.
      billed_base: the customers billed in the previous period and their revenue then and now (NRR and GRR
        billed, month on month); trailing_3, trailing_12: the same over 3 and 12 months (cohort-based).
    """

    period: Period
    currency: str
    closed: bool = True
    customers_start: int = 0
    customers_end: int = 0
    customers_new: int = 0
    customers_reactivated: int = 0
    customers_churned: int = 0
    customers_churned_voluntary: int = 0
    customers_churned_involuntary: int = 0
    free_customers_start: int = 0
    free_customers_end: int = 0
    conversions: int = 0
    mrr_start: Decimal = ZERO
    mrr_end: Decimal = ZERO
    mrr_new: Decimal = ZERO
    mrr_reactivation: Decimal = ZERO
    mrr_expansion: Decimal = ZERO
    mrr_contraction: Decimal = ZERO
    mrr_churned: Decimal = ZERO
    billed: BilledAmounts = field(default_factory=BilledAmounts)
    billed_customers: int = 0
    billed_base: RevenueBase = field(default_factory=RevenueBase)
    trailing_3: RevenueBase = field(default_factory=RevenueBase)
    trailing_12: RevenueBase = field(default_factory=RevenueBase)
    coupons_issued: int = 0
    coupons_redeemed: int = 0
    cost: Decimal | None = None

    def _rate(self, numerator: Decimal | int, denominator: Decimal | int) -> Decimal | None:
        return ratio(numerator, denominator) if self.closed else None

    @property
    def billed_revenue(self) -> Decimal:
        return self.billed.total

    @property
    def coupon_redemption_rate(self) -> Decimal | None:
        """Coupons redeemed / coupons issued in the period."""
        return self._rate(self.coupons_redeemed, self.coupons_issued)

    @property
    def customer_churn_rate(self) -> Decimal | None:
        """C / S."""
        return self._rate(self.customers_churned, self.customers_start)

    @property
    def crr(self) -> Decimal | None:
        """Customer retention rate (E − N) / S."""
        return self._rate(self.customers_end - self.customers_new, self.customers_start)

    @property
    def conversion_rate(self) -> Decimal | None:
        """Free → paid conversion rate: conversions / free customers on ``P.start``."""
        return self._rate(self.conversions, self.free_customers_start)

    @property
    def revenue_churn_rate(self) -> Decimal | None:
        """Net revenue churn (churned + contraction − expansion) / MRR_start = 1 − NRR."""
        return self._rate(self.mrr_churned + self.mrr_contraction - self.mrr_expansion, self.mrr_start)

    @property
    def nrr(self) -> Decimal | None:
        """Net revenue retention on MRR: (start + expansion − contraction − churned) / start."""
        return self._rate(self.mrr_start + self.mrr_expansion - self.mrr_contraction - self.mrr_churned, self.mrr_start)

    @property
    def grr(self) -> Decimal | None:
        """Gross revenue retention on MRR: (start − contraction − churned) / start."""
        return self._rate(self.mrr_start - self.mrr_contraction - self.mrr_churned, self.mrr_start)

    @property
    def nrr_billed(self) -> Decimal | None:
        """Σ billed(P) / Σ billed(P − 1) over the customers billed in P − 1."""
        return self._rate(self.billed_base.current, self.billed_base.previous)

    @property
    def grr_billed(self) -> Decimal | None:
        """Σ min(billed(P), billed(P − 1)) / Σ billed(P − 1) over the customers billed in P − 1."""
        return self._rate(self.billed_base.retained, self.billed_base.previous)

    def nrr_trailing(self, months: int) -> Decimal | None:
        """Trailing NRR billed over 3 or 12 months."""
        base = self.trailing_3 if months == 3 else self.trailing_12
        return self._rate(base.current, base.previous)

    def grr_trailing(self, months: int) -> Decimal | None:
        """Trailing GRR billed over 3 or 12 months."""
        base = self.trailing_3 if months == 3 else self.trailing_12
        return self._rate(base.retained, base.previous)

    @property
    def arpa(self) -> Decimal | None:
        """Average revenue per account: billed revenue / billed customers."""
        return self._rate(self.billed_revenue, self.billed_customers)

    @property
    def gross_margin_rate(self) -> Decimal | None:
        """(Billed revenue − cost of goods) / billed revenue; None when nothing declares a cost."""
        return None if self.cost is None else self._rate(self.billed_revenue - self.cost, self.billed_revenue)

    @property
    def clv(self) -> Decimal | None:
        """Customer lifetime value estimate: ARPA / customer churn rate, on gross margin when costs are declared:
        (billed revenue − cost of goods) / billed customers / customer churn rate."""
        churn = self.customer_churn_rate
        margin = self.billed_revenue if self.cost is None else self.billed_revenue - self.cost
        per_account = self._rate(margin, self.billed_customers)
        if per_account is None or churn is None:
            return None
        return ratio(per_account, churn)


# -- formatting --------------------------------------------------------------------------------------------


def format_rate(value: Decimal | None) -> str:
    """A fraction as a percentage with one decimal (0.9 → "90.0"; half up), or "n/a" when undefined."""
    if value is None:
        return "n/a"
    percent = (value * HUNDRED).quantize(_ONE_DECIMAL, rounding=decimal.ROUND_HALF_UP)
    return str(percent.copy_abs() if percent == 0 else percent)  # never "-0.0"


def format_money(value: Decimal | None, currency: str) -> str:
    """An amount rounded to the currency's minor units ("12.35", "1500" for JPY), or "n/a"."""
    if value is None:
        return "n/a"
    rounded = round_money(value, currency)
    return format_amount(rounded.copy_abs() if rounded == 0 else rounded, currency)


def figures_row(figures: PeriodFigures) -> dict[str, str]:
    """The figures as the ``--json`` object (and CSV row): exactly :data:`JSON_KEYS`, every value a string."""
    f, currency = figures, figures.currency

    def money(value: Decimal | None) -> str:
        return format_money(value, currency)

    return {
        "period": f.period.label,
        "currency": currency,
        "period_open": "false" if f.closed else "true",
        "customers_start": str(f.customers_start),
        "customers_end": str(f.customers_end),
        "customers_new": str(f.customers_new),
        "customers_churned": str(f.customers_churned),
        "customers_churned_voluntary": str(f.customers_churned_voluntary),
        "customers_churned_involuntary": str(f.customers_churned_involuntary),
        "customer_churn_rate": format_rate(f.customer_churn_rate),
        "crr": format_rate(f.crr),
        "free_customers_start": str(f.free_customers_start),
        "free_customers_end": str(f.free_customers_end),
        "free_to_paid_conversions": str(f.conversions),
        "free_to_paid_conversion_rate": format_rate(f.conversion_rate),
        "mrr_start": money(f.mrr_start),
        "mrr_end": money(f.mrr_end),
        "mrr_new": money(f.mrr_new),
        "mrr_expansion": money(f.mrr_expansion),
        "mrr_contraction": money(f.mrr_contraction),
        "mrr_churned": money(f.mrr_churned),
        "mrr_reactivation": money(f.mrr_reactivation),
        "revenue_churn_rate": format_rate(f.revenue_churn_rate),
        "nrr": format_rate(f.nrr),
        "grr": format_rate(f.grr),
        "billed_revenue": money(f.billed_revenue),
        "nrr_billed": format_rate(f.nrr_billed),
        "grr_billed": format_rate(f.grr_billed),
        "nrr_billed_3m": format_rate(f.nrr_trailing(3)),
        "grr_billed_3m": format_rate(f.grr_trailing(3)),
        "nrr_billed_12m": format_rate(f.nrr_trailing(12)),
        "grr_billed_12m": format_rate(f.grr_trailing(12)),
        "arpa": money(f.arpa),
        "clv": money(f.clv),
        "coupons_issued": str(f.coupons_issued),
        "coupons_redeemed": str(f.coupons_redeemed),
        "coupon_redemption_rate": format_rate(f.coupon_redemption_rate),
    }


# -- computation -------------------------------------------------------------------------------------------


def plan_mrr(plan: Plan, quantity: int = 1, tax_rate: Decimal = ZERO) -> Decimal:
    """A plan's contribution to MRR: its fee normalized to a month (times ``quantity`` seats on a plan priced per
    seat) plus its commitment minimum normalized to a month (both × 52 / 12 on a weekly plan, / 3 on a quarterly
    one, / 12 on a yearly one), net of tax, kept to :data:`MRR_DECIMALS` decimal places. A tax-inclusive plan's
    prices hold the buyer's tax (``tax_rate``, percent): 119.00 a month at 19 % is 100.00 of MRR."""
    with decimal.localcontext(_DIVIDE):
        fee = plan.monthly_fee
        if plan.subscription is not None and plan.subscription.seats:
            fee = fee * quantity
        minimum = plan.commitment.minimum if plan.commitment is not None else ZERO
        minimum = per_month(minimum, plan.interval)
        gross = fee + minimum
        net = gross * HUNDRED / (HUNDRED + tax_rate) if plan.tax_inclusive and tax_rate else gross
        return net.quantize(_MRR_QUANTUM, rounding=decimal.ROUND_HALF_EVEN)


PlanIndex = Mapping[tuple[str, int], Plan]


def _plan_index(plans: Catalog | PlanIndex | Iterable[Plan]) -> dict[tuple[str, int], Plan]:
    if isinstance(plans, Catalog):
        return {(p.code, p.version): p for p in plans.all_plans()}
    if isinstance(plans, Mapping):
        return dict(plans)
    return {(p.code, p.version): p for p in plans}


def _covers_a_day(subscription: Subscription) -> bool:
    return subscription.end_date is None or subscription.end_date > subscription.start_date


class _History:
    """The subscriptions by customer, with each plan's MRR resolved once."""

    def __init__(
        self,
        customers: Iterable[Customer],
        subscriptions: Iterable[Subscription],
        plans: Catalog | PlanIndex | Iterable[Plan],
        negotiated: Mapping[int, Negotiated] | None = None,
        tax_rules: TaxRules | None = None,
    ) -> None:
        customers = list(customers)
        self.currency: dict[str, str] = {c.external_id: c.currency for c in customers}
        # how each customer is taxed: the tax inside a tax-inclusive plan's prices is not revenue
        rules = tax_rules or TaxRules()
        self.taxed = {c.external_id: treatment(rules, buyer(c)) for c in customers}
        index = _plan_index(plans)
        self.subscriptions: dict[str, list[Subscription]] = defaultdict(list)
        self.mrr_of: dict[int, Decimal] = {}
        self.per_seat: dict[int, Plan] = {}  # subscriptions priced per seat whose seats change: MRR by day
        # subscriptions with negotiated prices: MRR by day, with the plan in force that day
        self.negotiated = {sub_id: found for sub_id, found in (negotiated or {}).items() if found.versions}
        for sub in subscriptions:
            currency = self.currency.get(sub.customer_external_id)
            if currency is None:
                raise MetricsError(f"subscription {sub.id} belongs to unknown customer {sub.customer_external_id!r}")
            plan = index.get((sub.plan_code, sub.plan_version))
            if plan is None:
                raise MetricsError(
                    f"subscription {sub.id} is on plan {sub.plan_code!r} version {sub.plan_version}, "
                    "which the catalog does not have"
                )
            if plan.currency != currency:
                raise MetricsError(
                    f"subscription {sub.id}: plan {plan.code!r} is priced in {plan.currency}, "
                    f"customer {sub.customer_external_id!r} pays in {currency}; figures never mix currencies"
                )
            self.subscriptions[sub.customer_external_id].append(sub)
            self.mrr_of[sub.id] = plan_mrr(plan, sub.quantity, self._tax_rate(sub, plan))
            if sub.quantity_changes and plan.subscription is not None and plan.subscription.seats:
                self.per_seat[sub.id] = plan

    def state_on(self, day: dt.date) -> dict[str, Decimal]:
        """The customers active on ``day``, each with their MRR that day."""
        state: dict[str, Decimal] = {}
        with decimal.localcontext(_EXACT):
            for customer, subs in self.subscriptions.items():
                active = [s for s in subs if s.active_on(day)]
                if len(active) == 1:  # (the plan's MRR itself: not a new number per customer)
                    state[customer] = self._mrr(active[0], day)
                elif active:
                    state[customer] = sum((self._mrr(s, day) for s in active), ZERO)
        return state

    def of_currency(self, state: Mapping[str, Decimal], currency: str) -> dict[str, Decimal]:
        """The part of a :meth:`state_on` of the customers paying in ``currency``."""
        return {c: m for c, m in state.items() if self.currency[c] == currency}

    def _tax_rate(self, subscription: Subscription, plan: Plan) -> Decimal:
        """The tax rate (percent) inside ``plan``'s prices for the subscription's customer; 0 for a tax-exclusive
        plan, a reverse-charged or an exempt buyer."""
        if not plan.tax_inclusive:
            return ZERO
        return self.taxed[subscription.customer_external_id].rate(plan.tax_category)

    def _mrr(self, subscription: Subscription, day: dt.date) -> Decimal:
        negotiated = self.negotiated.get(subscription.id)
        if negotiated is not None:
            plan = negotiated.plan_on(day)
            return plan_mrr(plan, subscription.quantity_on(day), self._tax_rate(subscription, plan))
        seats = self.per_seat.get(subscription.id)
        if seats is None:
            return self.mrr_of[subscription.id]
        return plan_mrr(seats, subscription.quantity_on(day), self._tax_rate(subscription, seats))

    def had_subscription_before(self, customer: str, day: dt.date) -> bool:
        return any(s.start_date < day and _covers_a_day(s) for s in self.subscriptions.get(customer, ()))

    def churn_reason(self, customer: str, period: Period) -> CancelReason:
        """Involuntary if any subscription that ended in ``(P.start, P.end]`` ended involuntarily."""
        ended = [
            s.cancel_reason
            for s in self.subscriptions.get(customer, ())
            if s.end_date is not None and period.start < s.end_date <= period.end
        ]
        return CancelReason.INVOLUNTARY if CancelReason.INVOLUNTARY in ended else CancelReason.VOLUNTARY


def billed_by_customer(
    invoices: Iterable[InvoiceSummary],
) -> dict[tuple[str, dt.date], dict[str, BilledAmounts]]:
    """Billed revenue per (currency, month start) and customer: each issued invoice's ``subtotal − discount``
    (less the tax inside its prices and the free credit applied) split by month (``billed_parts``) and line kind,
    less the subtotals of issued credit notes against them, shared among the credited invoice's months as what
    it takes off is."""
    billed: dict[tuple[str, dt.date], dict[str, BilledAmounts]] = defaultdict(dict)
    issued: dict[str, InvoiceSummary] = {}
    credit_notes: list[InvoiceSummary] = []
    with decimal.localcontext(_EXACT):
        _sum_invoices(invoices, billed, issued, credit_notes)
        for note in credit_notes:
            credited = issued.get(note.refers_to or "")
            if credited is None:  # against a void, draft or unloaded invoice, which counts for nothing here
                continue
            weights = {month: sum(kinds.values(), ZERO) for month, kinds in _month_lines(credited).items()}
            for month, part in share_by_month(-note.subtotal, weights, credited.billed_month).items():
                _add_billed(billed, credited, month, BilledAmounts(adjustments=part))
    return billed


def _sum_invoices(
    invoices: Iterable[InvoiceSummary],
    billed: dict[tuple[str, dt.date], dict[str, BilledAmounts]],
    issued: dict[str, InvoiceSummary],
    credit_notes: list[InvoiceSummary],
) -> None:
    for inv in invoices:
        if inv.status not in ISSUED:
            continue
        if inv.kind is InvoiceKind.CREDIT_NOTE:
            credit_notes.append(inv)
            continue
        if inv.scope is InvoiceScope.CREDIT:  # a top-up: prepaid credit is revenue when used, not when sold
            continue
        if inv.number is not None:
            issued[inv.number] = inv
        for month, amounts in billed_parts(inv).items():
            _add_billed(billed, inv, month, amounts)


def billed_parts(inv: InvoiceSummary) -> dict[dt.date, BilledAmounts]:
    """An invoice's billed revenue per month (first day), split by line kind. Each line counts in its month
    (``line_month``: the invoice's own, ``billed_month``, unless it bills service outside the invoice's billing
    period): a fee billed in advance on January's invoice counts in February, March's usage billed late in March,
    as if each line had been billed by the run of its own period. What the invoice takes off
    as a whole (its discount, the tax inside tax-inclusive prices, the free credit applied) is shared among those
    months in proportion to their lines (``share_by_month``): the tax inside prices of an invoice of refunds only in
    proportion to them (an anniversary month's refund counting with its fee a month before the invoice takes its
    own tax there); each discount line in proportion to what the discounts before it left of the lines it reduces
    (a coupon for some plans: of those plans' lines; ``_discount_shares``)."""
    months = _month_lines(inv)
    net = inv.subtotal - inv.discount - inv.tax_included  # (the tax inside prices: under adjustments)
    total = net - min(inv.free_credits, max(net, ZERO))  # free credit given away is no revenue
    weights = {month: sum(kinds.values(), ZERO) for month, kinds in months.items()}
    shares = _discount_shares(inv)
    for month, share in share_by_month(-inv.tax_included, weights, inv.billed_month, signed=True).items():
        shares[month] = shares.get(month, ZERO) + share
    rest = total - sum(weights.values(), ZERO) - sum(shares.values(), ZERO)
    for month, share in share_by_month(rest, weights, inv.billed_month).items():
        shares[month] = shares.get(month, ZERO) + share
    parts: dict[dt.date, BilledAmounts] = {}
    # (the invoice's own month is always there, if only with 0: an issued invoice bills its customer in it)
    for month in sorted(months.keys() | shares.keys() | {inv.billed_month}):
        kinds = months.get(month, {})
        subscription = kinds.get(LineKind.SUBSCRIPTION, ZERO)
        usage = sum((amount for kind, amount in kinds.items() if kind in USAGE_LINE_KINDS), ZERO)
        commitment = kinds.get(LineKind.COMMITMENT, ZERO)
        other = weights.get(month, ZERO) - subscription - usage - commitment + shares.get(month, ZERO)
        parts[month] = BilledAmounts(subscription, usage, commitment, other)
    return parts


def _discount_shares(inv: InvoiceSummary) -> dict[dt.date, Decimal]:
    """The discount lines of ``inv`` shared among its months, per month, as the discounts took them off its lines
    (``billing.core.credits.net_of_discounts``: in order, each from what the ones before it left of the lines of
    its coupon's plans): 10 % off every plan after 50 % off an add-on's 30.00 for February, beside the base plan's
    20.00 for January, takes 3.50 of the 35.00 left, 2.00 off January and 1.50 off February."""
    anchor = inv.billed_month
    lines: dict[tuple[dt.date, str | None], Decimal] = {}  # per month and plan (None: a line of no plan)
    discounts: list[tuple[Decimal, tuple[str, ...] | None]] = []
    for month, kind, amount, plans in inv.dated_lines:
        if kind == LineKind.DISCOUNT:
            discounts.append((amount, plans or None))
        else:
            key = (month or anchor, plans[0] if plans else None)
            lines[key] = lines.get(key, ZERO) + amount
    taken: dict[dt.date, Decimal] = {}
    with decimal.localcontext(_DIVIDE):  # (weights: a third of what is left is no exact amount)
        nets = net_of_discounts([(plan, amount) for (_, plan), amount in lines.items()], discounts)
        for ((month, _), amount), net in zip(lines.items(), nets, strict=True):
            taken[month] = taken.get(month, ZERO) + amount - net
    whole = sum((amount for amount, _ in discounts), ZERO)
    return share_by_month(whole, taken if whole < 0 else {}, anchor)


def _month_lines(inv: InvoiceSummary) -> dict[dt.date, dict[str, Decimal]]:
    """An invoice's line amounts per month their service begins in and kind, discounts left out (the discount is
    shared as the invoice's)."""
    anchor = inv.billed_month
    lines = inv.dated_lines or tuple((None, kind, amount, ()) for kind, amount in inv.line_amounts)
    months: dict[dt.date, dict[str, Decimal]] = {}
    for month, kind, amount, _ in lines:
        if kind == LineKind.DISCOUNT:
            continue
        kinds = months.setdefault(month or anchor, {})
        kinds[kind] = kinds.get(kind, ZERO) + amount
    return months


def share_by_month(
    amount: Decimal, weights: Mapping[dt.date, Decimal], anchor: dt.date, *, signed: bool = False
) -> dict[dt.date, Decimal]:
    """``amount`` shared among the months in proportion to their positive ``weights`` (``signed``, when none is
    positive: to the negative ones, as the tax inside prices is in refunds), each part rounded to the decimal
    places of ``amount`` (half to even) on the running sum, so that the parts add up to it exactly: 10.00 over
    weights 1, 1, 1 is 3.33, 3.34, 3.33. All of it in the one month taking a part, or in ``anchor`` when none
    does. (Weights of both signs are never mixed: their sum can be near zero, and the parts unbounded.)"""
    if amount == 0:
        return {}
    taking = sorted((month, weight) for month, weight in weights.items() if weight > 0)
    if signed and not taking:
        taking = sorted((month, weight) for month, weight in weights.items() if weight < 0)
    whole = sum((weight for _, weight in taking), ZERO)
    if len(taking) <= 1:
        return {taking[0][0] if taking else anchor: amount}
    quantum = Decimal(1).scaleb(min(amount.as_tuple().exponent, 0))  # type: ignore[arg-type]
    parts: dict[dt.date, Decimal] = {}
    done = running = ZERO
    for month, weight in taking:
        running += weight
        upto = _DIVIDE.divide(_DIVIDE.multiply(amount, running), whole).quantize(quantum, context=_DIVIDE)
        parts[month] = upto - done
        done = upto
    return parts


def _add_billed(
    billed: dict[tuple[str, dt.date], dict[str, BilledAmounts]],
    invoice: InvoiceSummary,
    month: dt.date,
    amounts: BilledAmounts,
) -> None:
    per_customer = billed[(invoice.currency, month)]
    customer = invoice.customer_external_id
    per_customer[customer] = per_customer.get(customer, BilledAmounts()) + amounts


def compute_figures(
    customers: Iterable[Customer],
    subscriptions: Iterable[Subscription],
    plans: Catalog | PlanIndex | Iterable[Plan],
    invoices: Iterable[InvoiceSummary] | BilledHistory | BilledSummary,
    periods: Sequence[Period],
    *,
    negotiated: Mapping[int, Negotiated] | None = None,
    coupons: Iterable[CouponIssue] = (),
    as_of: dt.datetime | None = None,
    costs: Mapping[tuple[dt.date, str], Decimal] | None = None,
    tax_rules: TaxRules | None = None,
) -> list[PeriodFigures]:
    """The figures of each period, per currency: ordered by period, then currency.

    ``tax_rules``: the configuration's (None: each customer's own rate), for the tax inside tax-inclusive prices,
    which MRR leaves out (``plan_mrr``). ``costs``: the cost of goods per (month start, currency) where the catalog
    declares costs (``billing.core.margin.costs_of_goods``): CLV is then on gross margin.

    ``invoices``: the invoice summaries, or their billed revenue per customer and month already summed
    (:class:`BilledHistory`; :class:`BilledSummary`, summed for these very periods). ``coupons``: the coupons
    issued to customers, for the redemption rate; a redemption after ``as_of`` (the report's date; None: whenever)
    does not count. A period that has not ended everywhere at ``as_of`` is open: its ratios are all undefined. The
    trailing 12-month figures need the invoices of the 23 months before each period.

    The currencies are those of every customer and of every invoice; a currency with no activity in a period
    gets zeros and undefined ratios. ``plans`` is the catalog, or its plans by ``(code, version)``;
    ``negotiated`` the plans of the subscriptions with negotiated prices, by subscription id (their MRR on a day
    is that of the plan in force then).

    Raises MetricsError for a subscription whose plan version the catalog lacks or whose plan is priced in
    another currency than its customer's.
    """
    customers = list(customers)
    history = _History(customers, subscriptions, plans, negotiated, tax_rules)
    summary = _summary_of(invoices, periods)
    currencies = sorted({c.currency for c in customers} | summary.currencies)
    issued = coupon_counts(coupons, periods, as_of)
    figures: list[PeriodFigures] = []
    end_day: dt.date | None = None
    end_state: dict[str, Decimal] = {}
    for period in periods:  # only two days' states are held at once: the period's start and end
        start_state = end_state if period.start == end_day else history.state_on(period.start)
        end_day, end_state = period.end, history.state_on(period.end)
        index = summary.index(period.start)
        for currency in currencies:
            found = _period_figures(
                _Instant(history.of_currency(start_state, currency), summary.paying_test(currency, index - 1)),
                _Instant(history.of_currency(end_state, currency), summary.paying_test(currency, index)),
                history,
                period,
                summary.total(currency, index),
                summary.billed_customers(currency, index),
            )
            counted = issued.get((period.start, currency), (0, 0))
            closed = as_of is None or has_ended_everywhere(period, as_of)
            found = replace(found, cost=(costs or {}).get((period.start, currency)))
            figures.append(_with_retention(found, currency, closed, summary, period, counted))
    return figures


def _summary_of(
    invoices: Iterable[InvoiceSummary] | BilledHistory | BilledSummary, periods: Sequence[Period]
) -> BilledSummary:
    if isinstance(invoices, BilledSummary):
        if tuple(invoices.periods) != tuple(periods):
            raise ValueError("the billed revenue was summed for other periods")
        return invoices
    history = invoices if isinstance(invoices, BilledHistory) else BilledHistory.of(invoices)
    summary = BilledSummary(periods, history.first_runs, history.currencies)
    summary.add(history.customer_months(), history.month_totals())
    return summary


def _with_retention(
    found: PeriodFigures, currency: str, closed: bool, summary: BilledSummary, period: Period,
    coupons: tuple[int, int],
) -> PeriodFigures:  # fmt: skip
    """A period's figures with their currency, whether the period is closed, the revenue retention bases (month
    on month, trailing 3 and 12 months) and the coupons issued and redeemed."""
    return replace(
        found,
        currency=currency,
        closed=closed,
        billed_base=summary.retention(currency, period, 1),
        trailing_3=summary.retention(currency, period, 3),
        trailing_12=summary.retention(currency, period, 12),
        coupons_issued=coupons[0],
        coupons_redeemed=coupons[1],
    )


LATEST_UTC_OFFSET = dt.timedelta(hours=-12)
"""The timezone where each day ends last (UTC−12)."""


def has_ended_everywhere(period: Period, now: dt.datetime) -> bool:
    """Whether ``period`` has ended in every timezone at ``now`` (an aware instant): its figures are final."""
    return (now.astimezone(dt.UTC) + LATEST_UTC_OFFSET).date() >= period.end


@dataclass(frozen=True, slots=True)
class CustomerMonth:
    """One customer's billed revenue of one month (``month``: its first day) in one currency."""

    currency: str
    customer: str
    month: dt.date
    total: Decimal


@dataclass(slots=True)
class BilledHistory:
    """The invoices as the figures use them: billed revenue per (currency, month) and customer, where each
    currency's billing history starts, and the currencies invoiced. Built a chunk of invoices at a time
    (:meth:`add`)."""

    billed: dict[tuple[str, dt.date], dict[str, BilledAmounts]] = field(default_factory=dict)
    first_runs: dict[str, dt.date] = field(default_factory=dict)
    currencies: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, invoices: Iterable[InvoiceSummary]) -> BilledHistory:
        history = cls()
        history.add(invoices)
        return history

    def add(self, invoices: Iterable[InvoiceSummary]) -> None:
        """Add a chunk of invoices with the credit notes against them (a note whose invoice is in another chunk
        counts with that chunk)."""
        chunk = list(invoices)
        with decimal.localcontext(_EXACT):
            for key, customers in billed_by_customer(chunk).items():
                into = self.billed.setdefault(key, {})
                for customer, amounts in customers.items():
                    into[customer] = into[customer] + amounts if customer in into else amounts
        for currency, first in first_billed_periods(chunk).items():
            if currency not in self.first_runs or first < self.first_runs[currency]:
                self.first_runs[currency] = first
        self.currencies.update(inv.currency for inv in chunk)

    def customer_months(self) -> list[CustomerMonth]:
        """The billed revenue as :class:`CustomerMonth` records, by currency, customer and month."""
        rows = [
            CustomerMonth(currency, customer, month, amounts.total)
            for (currency, month), customers in self.billed.items()
            for customer, amounts in customers.items()
        ]
        return sorted(rows, key=lambda r: (r.currency, r.customer, r.month))

    def month_totals(self) -> dict[tuple[str, dt.date], BilledAmounts]:
        """The billed revenue per (currency, month), split by line kind."""
        with decimal.localcontext(_EXACT):
            return {key: sum(customers.values(), BilledAmounts()) for key, customers in self.billed.items()}


def first_billed_periods(invoices: Iterable[InvoiceSummary]) -> dict[str, dt.date]:
    """Per currency, the first month with an issued period invoice: where the billing history starts (before it,
    at most opening fees were billed, so no revenue cohort can be based there)."""
    first: dict[str, dt.date] = {}
    for inv in invoices:
        if inv.kind is InvoiceKind.INVOICE and inv.status in ISSUED and inv.scope is InvoiceScope.PERIOD:
            month = inv.billed_month
            if inv.currency not in first or month < first[inv.currency]:
                first[inv.currency] = month
    return first


WINDOWS = (1, 3, 12)
"""The revenue retention windows, in months: month on month, trailing 3 and trailing 12."""


def month_number(day: dt.date) -> int:
    """The month of ``day`` counted from year 0 (consecutive months are consecutive numbers)."""
    return day.year * 12 + day.month - 1


class BilledSummary:
    """What the figures of some periods (months) need of the billed revenue, summed one customer at a time so
    that memory grows with customers, not with invoices or months: per (currency, month) the billed revenue
    and how many customers were billed > 0; per customer which months billed it > 0 (a bit per month); per
    (currency, period, window) the revenue retention base. Feed it :class:`CustomerMonth` records grouped by
    currency and customer (:meth:`add`; the database sums them: ``billing.metrics_store``)."""

    def __init__(self, periods: Sequence[Period], first_runs: Mapping[str, dt.date], currencies: Iterable[str]):
        self.periods = tuple(periods)
        self.first_runs = dict(first_runs)
        self.currencies = set(currencies)
        self._origin = month_number(self.periods[0].start) if self.periods else 0
        self._indexes = sorted({self.index(p.start) for p in self.periods})
        self._low = (self._indexes[0] if self._indexes else 0) - 2 * max(WINDOWS) + 1
        self._high = self._indexes[-1] if self._indexes else 0
        self._totals: dict[tuple[str, int], BilledAmounts] = {}
        self._counts: dict[tuple[str, int], int] = defaultdict(int)
        self._positive: dict[tuple[str, str], int] = {}
        self._bases: dict[tuple[str, int, int], list[Any]] = {}

    def index(self, month: dt.date) -> int:
        """The month's position relative to the first period's (0), as the summary counts months."""
        return month_number(month) - self._origin

    def add(self, rows: Iterable[CustomerMonth], months: Mapping[tuple[str, dt.date], BilledAmounts]) -> None:
        """Add the billed revenue of customers, each customer's records together, and the billed revenue of each
        (currency, month) split by line kind (the sum of the customers')."""
        with decimal.localcontext(_EXACT):
            for (currency, customer), group in groupby(rows, key=lambda r: (r.currency, r.customer)):
                self.currencies.add(currency)
                self._add_customer(currency, customer, group)
            for (currency, month), amounts in months.items():
                key = (currency, self.index(month))
                self._totals[key] = self._totals[key] + amounts if key in self._totals else amounts

    def _add_customer(self, currency: str, customer: str, rows: Iterable[CustomerMonth]) -> None:
        low, high = self._low, self._high
        totals = [ZERO] * (high - low + 1)
        mask = 0
        for row in rows:
            i = self.index(row.month)
            if not low <= i <= high:
                continue
            totals[i - low] += row.total
        for i in range(max(low, self._indexes[0] - 1), high + 1):
            if totals[i - low] > 0:
                self._counts[(currency, i)] += 1
                mask |= 1 << (i - low)
        if mask:
            self._positive[(currency, customer)] = mask
        prefix = [ZERO, *accumulate(totals)]
        bases = self._bases
        for index in self._indexes:
            end = index - low + 1  # the window's months end at ``index``; the base's at ``index − months``
            for months in WINDOWS:
                middle = end - months
                before = prefix[middle] - prefix[middle - months if middle > months else 0]
                if before <= 0:
                    continue
                now = prefix[end] - prefix[middle]
                base = bases.get((currency, index, months))
                if base is None:
                    bases[(currency, index, months)] = [1, before, now, min(before, now)]
                else:
                    base[0] += 1
                    base[1] += before
                    base[2] += now
                    base[3] += min(before, now)

    def total(self, currency: str, index: int) -> BilledAmounts:
        """The billed revenue of the month at ``index``."""
        return self._totals.get((currency, index), BilledAmounts())

    def billed_customers(self, currency: str, index: int) -> int:
        """How many customers were billed > 0 in the month at ``index``."""
        return self._counts.get((currency, index), 0)

    def paying_test(self, currency: str, index: int) -> Callable[[str], bool]:
        """Whether a customer was billed > 0 in the month at ``index`` (from the month before the first period)."""
        bit = 1 << (index - self._low)
        positive = self._positive
        return lambda customer: bool(positive.get((currency, customer), 0) & bit)

    def retention(self, currency: str, period: Period, months: int) -> RevenueBase:
        """Revenue retention over ``months`` months up to ``period``, of the customers billed in the ``months``
        before; an empty base when those reach before the currency's billing history's start."""
        history_start = self.first_runs.get(currency)
        index = self.index(period.start)
        if history_start is None or index - 2 * months + 1 < self.index(history_start):
            return RevenueBase()
        found = self._bases.get((currency, index, months))
        if found is None:
            return RevenueBase()
        return RevenueBase(int(found[0]), found[1], found[2], found[3])


@dataclass(frozen=True, slots=True)
class _Instant:
    """The customers active on the first day of a month with their MRR, and whether each was billed > 0 in the
    month that ends then."""

    active: Mapping[str, Decimal]
    billed_positive: Callable[[str], bool]

    def paying(self) -> set[str]:
        """Active customers with MRR > 0 (a paid plan) or billed revenue > 0 in the month that just ended."""
        return {c for c, mrr in self.active.items() if mrr > 0 or self.billed_positive(c)}


def _period_figures(
    start: _Instant, end: _Instant, history: _History, period: Period, billed: BilledAmounts, billed_customers: int
) -> PeriodFigures:
    """One currency's figures for one period: paying and free customer counts, the MRR bridge and what was
    billed (the retention bases are added by the caller)."""
    paying_start, paying_end = start.paying(), end.paying()
    churned = paying_start - paying_end
    new = paying_end - paying_start
    converted = {c for c in new if c in start.active}
    reactivated = {c for c in new - converted if history.had_subscription_before(c, period.start)}
    involuntary = sum(1 for c in churned if history.churn_reason(c, period) is CancelReason.INVOLUNTARY)
    moves = _mrr_moves(start.active, end.active, reactivated)
    with decimal.localcontext(_EXACT):
        mrr_start = sum(start.active.values(), ZERO)
        mrr_end = sum(end.active.values(), ZERO)
    return PeriodFigures(
        period=period,
        currency="",
        customers_start=len(paying_start),
        customers_end=len(paying_end),
        customers_new=len(new),
        customers_reactivated=len(reactivated),
        customers_churned=len(churned),
        customers_churned_voluntary=len(churned) - involuntary,
        customers_churned_involuntary=involuntary,
        free_customers_start=len(start.active) - len(paying_start),
        free_customers_end=len(end.active) - len(paying_end),
        conversions=len(converted),
        mrr_start=mrr_start,
        mrr_end=mrr_end,
        mrr_new=moves["new"],
        mrr_reactivation=moves["reactivation"],
        mrr_expansion=moves["expansion"],
        mrr_contraction=moves["contraction"],
        mrr_churned=moves["churned"],
        billed=billed,
        billed_customers=billed_customers,
    )


def _mrr_moves(
    start: Mapping[str, Decimal], end: Mapping[str, Decimal], reactivated: set[str]
) -> dict[str, Decimal]:
    """The MRR bridge: each customer's change from the period's start to its end, as new, reactivation,
    expansion, contraction or churned MRR."""
    moves = {"new": ZERO, "reactivation": ZERO, "expansion": ZERO, "contraction": ZERO, "churned": ZERO}
    with decimal.localcontext(_EXACT):
        for customer in start.keys() | end.keys():
            m0, m1 = start.get(customer, ZERO), end.get(customer, ZERO)
            if m0 == 0 < m1:
                moves["reactivation" if customer in reactivated else "new"] += m1
            elif m0 > 0 == m1:
                moves["churned"] += m0
            elif m1 > m0 > 0:
                moves["expansion"] += m1 - m0
            elif m0 > m1 > 0:
                moves["contraction"] += m0 - m1
    return moves


def revenue_base(before: Mapping[str, Decimal], now: Mapping[str, Decimal]) -> RevenueBase:
    """Revenue retention of a cohort: the customers billed something ``before`` (each customer's billed revenue
    over the base months), with what they were billed then and ``now`` (over the window); retained is what each
    still pays, up to what it paid before."""
    with decimal.localcontext(_EXACT):
        base = [c for c, amount in before.items() if amount > 0]
        previous = [before[c] for c in base]
        current = [now.get(c, ZERO) for c in base]
        return RevenueBase(
            customers=len(base),
            previous=sum(previous, ZERO),
            current=sum(current, ZERO),
            retained=sum((min(p, q) for p, q in zip(previous, current, strict=True)), ZERO),
        )
