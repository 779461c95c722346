"""Gross margin and markup per meter and per plan, and the repeat purchase rate of one-off purchases. Pure: the
lines and purchases come from ``billing.metrics_store``.

- **Per meter** (currency c, month P): revenue = Σ amount of the meter's usage lines billed in P (before
  invoice-level discounts and tax; a tax-inclusive plan's line less its share of the tax inside,
  :func:`net_of_tax`); units = Σ their quantities (every unit rated, free ones included); cost =
  ``unit_cost[c]`` × units. Late-usage lines (differences of an earlier month re-rated) are left out: their
  quantity is the whole month's, not the late part.
- **Per plan**: revenue = Σ amount of the plan's fee, usage and commitment lines billed in P; cost = the cost of its
  usage lines (as above, meters without a unit cost in c cost nothing) + ``subscription_cost`` × the plan's
  subscriptions with a fee line in P. Only a plan that declares ``subscription_cost`` has cost figures (a plan
  without one would show the cost of a few meters as its whole cost, and an absurd markup).
- **Gross margin** = revenue − cost; **gross margin rate** = (revenue − cost) / revenue; **markup** = (revenue −
  cost) / cost (cost 300, price 450 → 50 %). Undefined (n/a) when the denominator is 0 or no cost is declared.
- **Cost of goods** of a month and currency = Σ the meters' costs + Σ the declared subscription costs (the cost
  side of the margins, over every meter and plan): CLV applies the gross margin it leaves
  (``billing.core.metrics``).
- **Repeat purchase rate** of P = returning buyers / buyers in P, where a buyer bought a one-off purchase (a
  top-up of prepaid credit) in P, and a returning buyer had bought one in an earlier month too.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace

from billing.core.metrics import ratio
from billing.core.periods import Period, month_of
from invoices.model import TaxLine
from pricing_plans.models import Catalog
from pricing_plans.money import ZERO, round_money

__all__ = [
    "LineRecord",
    "Margin",
    "Purchase",
    "RepeatPurchases",
    "costs_of_goods",
    "declares_costs",
    "margins",
    "net_of_tax",
    "repeat_purchases",
]

_EXACT = decimal.Context(prec=1000, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])
_SHARE = decimal.Context(prec=34)  # a share and what it takes out of a line, rounded to minor units after
_PLAN_KINDS = frozenset({"subscription", "usage", "commitment"})


@dataclass(frozen=True, slots=True)
class LineRecord:
    """An issued line: its month (the month its billing period's last day falls in), currency, kind, meter, plan
    and subscription, quantity and amount."""

    month: dt.date
    currency: str
    kind: str
    meter: str | None
    plan_code: str | None
    plan_version: int | None
    subscription_id: int | None
    quantity: decimal.Decimal
    amount: decimal.Decimal


@dataclass(frozen=True, slots=True)
class Margin:
    """Revenue and cost of one meter or plan (``scope``: ``meter`` or ``plan``) in one month and currency; cost
    None when nothing in it declares a cost."""

    scope: str
    key: str
    period: Period
    currency: str
    revenue: decimal.Decimal
    cost: decimal.Decimal | None
    units: decimal.Decimal = ZERO

    @property
    def gross_margin(self) -> decimal.Decimal | None:
        return None if self.cost is None else self.revenue - self.cost

    @property
    def gross_margin_rate(self) -> decimal.Decimal | None:
        margin = self.gross_margin
        return None if margin is None else ratio(margin, self.revenue)

    @property
    def markup(self) -> decimal.Decimal | None:
        margin = self.gross_margin
        return None if margin is None or self.cost is None else ratio(margin, self.cost)


def _meter_cost(catalog: Catalog, meter: str | None, currency: str, units: decimal.Decimal) -> decimal.Decimal | None:
    found = catalog.meters.get(meter or "")
    unit_cost = found.unit_cost.get(currency) if found is not None else None
    return None if unit_cost is None else unit_cost * units


def margins(lines: Iterable[LineRecord], catalog: Catalog) -> list[Margin]:
    """Per month and currency, a margin per meter (its usage lines) and per plan, by scope then key."""
    meters: dict[tuple[dt.date, str, str], list[decimal.Decimal]] = defaultdict(lambda: [ZERO, ZERO])
    plans: dict[tuple[dt.date, str, str], list[decimal.Decimal]] = defaultdict(lambda: [ZERO, ZERO])
    plan_costs: dict[tuple[dt.date, str, str], decimal.Decimal | None] = {}
    subscriptions: dict[tuple[dt.date, str, str], set[tuple[int | None, decimal.Decimal | None]]] = defaultdict(set)
    with decimal.localcontext(_EXACT):
        for line in lines:
            plan_key = (line.month, line.currency, line.plan_code or "")
            if line.kind == "usage" and line.meter:
                totals = meters[(line.month, line.currency, line.meter)]
                totals[0] += line.amount
                totals[1] += line.quantity
                cost = _meter_cost(catalog, line.meter, line.currency, line.quantity)
                if cost is not None:
                    plan_costs[plan_key] = (plan_costs.get(plan_key) or ZERO) + cost
            if line.kind in _PLAN_KINDS and line.plan_code:
                plans[plan_key][0] += line.amount
                if line.kind == "subscription":
                    subscriptions[plan_key].add((line.subscription_id, _subscription_cost(catalog, line)))
        found = [
            Margin("meter", meter, month_of(m), c, revenue, _meter_cost(catalog, meter, c, units), units)
            for (m, c, meter), (revenue, units) in meters.items()
        ]
        for key, (revenue, _) in plans.items():
            declared = [c for _, c in subscriptions.get(key, ()) if c is not None]
            cost = (plan_costs.get(key) or ZERO) + sum(declared, ZERO) if declared else None
            found.append(Margin("plan", key[2], month_of(key[0]), key[1], revenue, cost))
    return sorted(found, key=lambda x: (x.period, x.currency, x.scope, x.key))


def net_of_tax(lines: Sequence[LineRecord], inclusive: Collection[int], taxes: Iterable[TaxLine]) -> list[LineRecord]:
    """An invoice's ``lines`` with the tax inside tax-inclusive prices taken out of the lines at positions
    ``inclusive`` (its tax-inclusive plans' lines), before discounts as every revenue here is:

    - one rate with tax inside (its ``included`` not 0): each line less amount × rate / (100 + rate), rounded to
      minor units — 119.00 at 19 % is 100.00, whatever a coupon took off the invoice;
    - several: the tax inside (Σ ``included``) shared over those lines by amount, the largest line taking what
      rounding leaves (the invoice does not say which line was taxed at which rate; the sum is exact);
    - none (an exempt buyer, a reverse charge): the lines as they are."""
    inside = [tax for tax in taxes if tax.included]
    if not inside or not inclusive:
        return list(lines)
    out = list(lines)
    with decimal.localcontext(_SHARE):  # (rounded: also where the sums' exact context is in force)
        rates = {tax.rate for tax in inside}
        if len(rates) == 1:
            rate = rates.pop()
            for i in inclusive:
                tax = round_money(lines[i].amount * rate / (100 + rate), lines[i].currency)
                out[i] = replace(lines[i], amount=lines[i].amount - tax)
            return out
        total = sum((tax.included for tax in inside), ZERO)
        gross = sum((lines[i].amount for i in inclusive), ZERO)
        if not gross:
            return out
        shares = {i: round_money(total * lines[i].amount / gross, lines[i].currency) for i in inclusive}
        largest = max(inclusive, key=lambda i: abs(lines[i].amount))
        shares[largest] += total - sum(shares.values(), ZERO)
        for i, share in shares.items():
            out[i] = replace(lines[i], amount=lines[i].amount - share)
    return out


def _subscription_cost(catalog: Catalog, line: LineRecord) -> decimal.Decimal | None:
    for plan in catalog.plans.get(line.plan_code or "", ()):
        if plan.code == line.plan_code and (line.plan_version is None or plan.version == line.plan_version):
            return plan.subscription_cost
    return None


@dataclass(frozen=True, slots=True)
class Purchase:
    """A one-off purchase: whose, in which currency, on which day."""

    customer: str
    currency: str
    day: dt.date


@dataclass(frozen=True, slots=True)
class RepeatPurchases:
    period: Period
    currency: str
    buyers: int
    returning: int

    @property
    def rate(self) -> decimal.Decimal | None:
        """Returning buyers / buyers in the period."""
        return ratio(self.returning, self.buyers)


def repeat_purchases(purchases: Iterable[Purchase], periods: Iterable[Period]) -> list[RepeatPurchases]:
    """Per period and currency with a buyer: buyers, and those of them who had bought before the period."""
    bought = list(purchases)
    found: list[RepeatPurchases] = []
    for period in periods:
        by_currency: dict[str, set[str]] = defaultdict(set)
        before: dict[str, set[str]] = defaultdict(set)
        for p in bought:
            if period.contains(p.day):
                by_currency[p.currency].add(p.customer)
            elif p.day < period.start:
                before[p.currency].add(p.customer)
        for currency in sorted(by_currency):
            buyers = by_currency[currency]
            found.append(RepeatPurchases(period, currency, len(buyers), len(buyers & before[currency])))
    return found


def declares_costs(catalog: Catalog) -> bool:
    """Whether any meter declares a ``unit_cost`` or any plan a ``subscription_cost``."""
    return any(m.unit_cost for m in catalog.meters.values()) or any(
        p.subscription_cost is not None for p in catalog.all_plans()
    )


def costs_of_goods(
    usage: Iterable[tuple[dt.date, str, str, decimal.Decimal]],
    subscriptions: Iterable[tuple[dt.date, str, str, int | None, int]],
    catalog: Catalog,
) -> dict[tuple[dt.date, str], decimal.Decimal]:
    """The cost of what was sold per (month, currency), as the margins count it: ``unit_cost`` × the units of
    each meter's usage lines (``usage``: month, currency, meter, units) + ``subscription_cost`` × the plan's
    subscriptions with a fee line (``subscriptions``: month, currency, plan code, plan version, how many). Only
    the (month, currency) pairs where something declares a cost are present."""
    found: dict[tuple[dt.date, str], decimal.Decimal] = {}
    with decimal.localcontext(_EXACT):
        for month, currency, meter, units in usage:
            cost = _meter_cost(catalog, meter, currency, units)
            if cost is not None:
                found[(month, currency)] = found.get((month, currency), ZERO) + cost
        for month, currency, code, version, count in subscriptions:
            record = LineRecord(month, currency, "subscription", None, code, version, None, ZERO, ZERO)
            per_subscription = _subscription_cost(catalog, record)
            if per_subscription is not None:
                found[(month, currency)] = found.get((month, currency), ZERO) + per_subscription * count
    return found
