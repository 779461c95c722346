"""Progressive billing, the pure part: which amounts of a plan's ``progressive_billing`` the usage charges of a
period reach, and the invoice of the usage so far. No database, no clock.

A subscription's usage charges in a billing period (``rating.usage_charges``: its usage rated as the period's
invoice rates it) are compared with the plan's amounts. When they first reach one or more amounts above the
highest one already invoiced, one invoice is issued for the usage so far, less what earlier progressive
invoices of the period billed, line by line (each charge, each part of a charge priced by dimension):
rate(usage so far) − billed, the re-rating difference late usage is billed by, so graduated tiers stay right.
The period's own invoice bills the rest the same way (``compose.rest_to_bill``), with the fees and the
commitment true-up; the period's invoices add up to what one invoice would have billed. Coupons reduce each of
them by what they take off the period so far less what its earlier invoices took off, so the period's discounts
also add up to one invoice's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import replace
from decimal import Decimal

from billing.core.compose import BilledKey, bill_to, line_namer, rest_to_bill
from billing.core.coupons import AppliedCoupon, discount_lines
from billing.core.domain import Customer, Subscription
from billing.core.periods import Period
from billing.core.rating import rate_period
from billing.core.tax import TaxRules, customer_taxes
from invoices.model import DraftInvoice, InvoiceLine, InvoiceScope
from pricing_plans.charge_models import MeterUsage
from pricing_plans.dimensions import DimensionedUsage
from pricing_plans.models import Catalog, Plan

__all__ = ["PREFIX", "amounts_reached", "compose_progressive_invoice", "level_of", "progressive_key"]

PREFIX = "progressive:"


def progressive_key(subscription_id: int, period: Period, level: Decimal) -> str:
    """``progressive:<subscription id>:<period label>:<amount>``: unique per subscription, period and amount, so
    that however often the same crossing is evaluated, one invoice is issued for it."""
    return f"{PREFIX}{subscription_id}:{period.label}:{level}"


def level_of(billing_key: str) -> Decimal:
    """The amount a progressive invoice was issued at, from its billing key."""
    return Decimal(billing_key.rsplit(":", 1)[1])


def amounts_reached(amounts: Sequence[Decimal], charges: Decimal, invoiced: Decimal | None) -> tuple[Decimal, ...]:
    """The amounts ``charges`` reaches (``charges >= amount``) above ``invoiced``, the highest amount a
    progressive invoice of the period was issued at (None: none yet), in increasing order."""
    return tuple(a for a in amounts if charges >= a and (invoiced is None or a > invoiced))


def compose_progressive_invoice(
    customer: Customer,
    subscription: Subscription,
    plan: Plan,
    period: Period,
    usage: Mapping[str, MeterUsage | DimensionedUsage],
    billed: Mapping[BilledKey, Decimal],
    level: Decimal,
    *,
    through: dt.date,
    catalog: Catalog,
    usage_as_of: dt.datetime | None = None,
    tax_rules: TaxRules | None = None,
    coupons: Sequence[AppliedCoupon] = (),
    earlier: Sequence[InvoiceLine] = (),
) -> DraftInvoice:
    """The invoice of the subscription's usage from the period's start through ``through`` (its usage so far),
    less ``billed`` (what earlier progressive invoices of the period billed), issued as the usage charges
    reached ``level``. No fee and no commitment true-up: they stay on the period's invoice.

    The coupons applied to the customer reduce it as the period's invoice would (``coupons.discount_lines``):
    what they take off the period so far (``earlier``: the lines of the customer's earlier progressive invoices
    of the period, and this one's), less what the earlier invoices took off."""
    rated = rate_period(subscription, plan, usage, period, meters=catalog.meters, rounding=catalog.rounding)
    title = plan.name  # the invoice's billing period says "usage to date …, reached …"
    lines = [
        replace(line, section=title, subscription_id=subscription.id, plan_code=plan.code, plan_version=plan.version)
        for line in rest_to_bill(
            rated.usage_lines, billed, note="since the last invoice", namer=line_namer(plan, catalog)
        )
    ]
    if coupons:
        lines += discount_lines(lines, coupons, period.start, customer.currency, catalog.rounding, earlier)
    rate, taxes, taxed = customer_taxes(customer, tax_rules, lines, [plan], catalog.rounding)
    return DraftInvoice(
        billing_key=progressive_key(subscription.id, period, level),
        scope=InvoiceScope.PROGRESSIVE,
        subscription_id=subscription.id,
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
