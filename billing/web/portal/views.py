"""What each portal page shows, read from the services the CLI and the API use, worded and formatted in the
customer's language: no figure is computed here that a service does not give (usage, thresholds and the upcoming
invoice from ``billing.preview``, credit from ``billing.credits``, invoices from ``billing.invoicing``, coupons
from ``billing.coupons``); this module only chooses words and formats.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from billing import credits, invoicing
from billing.config import Settings
from billing.core.coupons import AppliedCoupon
from billing.core.domain import Customer
from billing.core.periods import Period
from billing.coupons import applied_coupons
from billing.customers import get_customer
from billing.db import repository, session_scope
from billing.invoicing import PaymentState, payment_state
from billing.preview import CustomerUsage, ThresholdState, customer_usage
from billing.web.common import PageFormat, page_format
from dbkit import read_only, utcnow
from invoices.i18n import N_
from invoices.model import Invoice, InvoiceKind, InvoiceStatus, LineKind
from invoices.render import coupon_terms, line_description, tax_rows
from invoices.store import FinalizeSettings
from pricing_plans.models import Catalog
from pricing_plans.money import ZERO

__all__ = [
    "Bar",
    "Portal",
    "account_view",
    "credits_view",
    "invoices_view",
    "portal_of",
    "upcoming_view",
    "usage_view",
    "visible_invoice",
]

HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class Portal:
    """The customer a portal page is for, and how its words and figures are formatted."""

    customer: Customer
    f: PageFormat


def portal_of(engine: Engine, customer_id: str) -> Portal:
    """The portal of ``customer_id`` (NotFoundError if there is no such customer)."""
    customer = get_customer(engine, customer_id)
    return Portal(customer, page_format(customer.locale, customer.currency, customer.timezone))


# -- usage ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bar:
    """One meter's (or the spend's) use of its allowance, as drawn: ``width`` and ``levels`` in percent of the
    bar; ``state`` one of none (no allowance), ok, warning (an alert level reached), over, blocked."""

    label: str
    used: str
    limit: str | None
    percent: str | None
    width: Decimal
    levels: tuple[int, ...]
    state: str
    status: str
    description: str
    alerts: str | None = None


_STATUS = {
    "none": N_("No allowance: every unit counts at the plan's price"),
    "ok": N_("Within the allowance"),
    "warning": N_("Alert level reached"),
    "over": N_("Allowance used up"),
    "blocked": N_("Hard limit reached: usage is blocked until the period ends"),
}


def _state(threshold: ThresholdState) -> str:
    if threshold.blocked:
        return "blocked"
    if threshold.full:
        return "over"
    return "warning" if threshold.reached else "ok"


def _threshold_bar(label: str, threshold: ThresholdState, f: PageFormat, unit: str | None) -> Bar:
    spec = threshold.spec
    spend = spec.kind == "spend"
    used = f.money(threshold.value) if spend else f.quantity(threshold.value, unit)
    limit = f.money(spec.limit) if spend else f.quantity(spec.limit, unit)
    percent = threshold.percent
    width = HUNDRED if percent is None else min(percent, HUNDRED)
    state = _state(threshold)
    shown = f.percent(percent) if percent is not None else None
    description = f._("%(used)s of %(limit)s used", used=used, limit=limit)
    if shown is not None:
        description = f"{description} ({shown})"
    if spec.hard_limit:
        hard = f._("hard limit")
        description = f"{description} · {hard}"
    levels = tuple(level for level in spec.levels if 0 < level < 100)
    alerts = None
    if spec.levels:
        alerts = f._("Alerts at %(levels)s", levels=", ".join(f.percent(Decimal(n)) for n in spec.levels))
    return Bar(label, used, limit, shown, width, levels, state, f._(_STATUS[state]), description, alerts)


def _free_bar(label: str, quantity: Decimal, f: PageFormat, unit: str | None) -> Bar:
    used = f.quantity(quantity, unit)
    return Bar(label, used, None, None, ZERO, (), "none", f._(_STATUS["none"]), f._("%(used)s so far", used=used))


def _bars(found: CustomerUsage, catalog: Catalog, f: PageFormat) -> list[Bar]:
    """A bar per meter (one per allowance of it), then one per spend cap."""
    bars: list[Bar] = []
    states = [t for t in found.thresholds if t.spec.kind == "usage"]
    meters = {m.code: m for m in found.meters}
    codes = list(meters) + sorted({t.spec.meter for t in states if t.spec.meter and t.spec.meter not in meters})
    for code in codes:
        meter = catalog.meters.get(code)
        label = meter.name if meter else code
        unit = meter.unit if meter else None
        own = [t for t in states if t.spec.meter == code]
        bars.extend(_threshold_bar(label, t, f, unit) for t in own)
        if not own:
            bars.append(_free_bar(label, meters[code].usage.quantity, f, unit))
    bars.extend(_threshold_bar(f._("Spend on usage"), t, f, None) for t in found.thresholds if t.spec.kind == "spend")
    return bars


def usage_view(engine: Engine, catalog: Catalog, portal: Portal, now: dt.datetime | None = None) -> dict[str, Any]:
    """This period's usage against allowances, thresholds and hard limits: a bar per meter."""
    f = portal.f
    found = customer_usage(engine, catalog, portal.customer.external_id, now=now)
    return {
        "period": f.period(found.period.start, found.period.end),
        "as_of": f.datetime(found.as_of),
        "bars": _bars(found, catalog, f),
        "total": f.money(found.preview.totals.total),
    }


# -- the upcoming invoice and coupons ---------------------------------------------------------------------------


def _coupon_terms(applied: AppliedCoupon, f: PageFormat) -> str:
    """Worded as the invoice words the coupon's discount line."""
    return coupon_terms(f.fmt, applied.coupon.terms_json) or applied.coupon.terms


def _coupons(engine: Engine, portal: Portal, period: Period) -> list[dict[str, str]]:
    """The coupons applied to the customer that reduce this period or will reduce a later one."""
    f = portal.f
    with session_scope(read_only(engine)) as session:
        applied = applied_coupons(session, [portal.customer.external_id], period).get(portal.customer.external_id, [])
    shown = []
    for coupon in applied:
        if coupon.used_up:
            continue
        when = f._("This period") if coupon.covers(period.start) else f._("From the next period")
        shown.append({"code": coupon.coupon.code, "terms": _coupon_terms(coupon, f), "when": when})
    return shown


def upcoming_view(engine: Engine, catalog: Catalog, portal: Portal, now: dt.datetime | None = None) -> dict[str, Any]:
    """The invoice the period will bring as its usage stands, rated as the billing run rates it (the usage
    preview's), and the coupons in force."""
    f = portal.f
    found = customer_usage(engine, catalog, portal.customer.external_id, now=now)
    preview = found.preview
    totals = preview.totals
    lines = [
        {
            "description": line_description(line, f.fmt),
            "quantity": f.quantity(line.quantity, line.unit) if line.quantity else "",
            "amount": f.money(line.amount),
        }
        for line in preview.lines
        if line.kind is not LineKind.DISCOUNT  # shown as the discount under the subtotal, with the coupons below
    ]
    rows = [(f._("Subtotal"), f.money(totals.subtotal))]
    if totals.discount:
        rows.append((f._("Discount"), f.money(-totals.discount)))
    # the taxes as the invoice will print them: added to the prices above the total, inside tax-inclusive prices
    # ("of which VAT (19 %)") under it
    rows.extend((label, f.money(amount)) for label, amount in tax_rows(preview.tax_lines, f.fmt))
    included = [(label, f.money(amount)) for label, amount in tax_rows(preview.tax_lines, f.fmt, included=True)]
    return {
        "period": f.period(found.period.start, found.period.end),
        "as_of": f.datetime(found.as_of),
        "lines": lines,
        "rows": rows,
        "total": f.money(totals.total),
        "included": included,
        "coupons": _coupons(engine, portal, found.period),
    }


# -- credits --------------------------------------------------------------------------------------------------

_MOVEMENTS = {
    "grant": N_("Credit granted"),
    "application": N_("Applied to an invoice"),
    "expiry": N_("Expired"),
    "reinstatement": N_("Reinstated"),
    "void": N_("Given back (invoice voided)"),
    "refund": N_("Refunded"),
    "overpayment": N_("Overpayment kept as credit"),
    "reversal": N_("Taken back (payment reversed)"),
}
_GRANT_KINDS = {"free": N_("Free credit"), "paid": N_("Prepaid credit"), "balance": N_("Customer balance")}


def credits_view(
    engine: Engine, portal: Portal, settings: FinalizeSettings, now: dt.datetime | None = None
) -> dict[str, Any]:
    """The credit balance per currency and the ledger's movements of the customer's own account, newest first.

    The balance is ``billing credits balance``'s: reading it brings the ledger up to now, which may issue an
    automatic top-up's invoice, numbered and dated with ``settings`` (the configured ones, as the CLI's and the
    API's)."""
    f = portal.f
    customer = portal.customer.external_id
    balances = credits.balance(engine, customer, now, settings)
    grants = {g.id: g for b in balances for g in b.grants}
    numbers = {i.id: i.number for i in invoicing.list_invoices(engine, customer=customer)}
    entries = [e for e in credits.ledger(engine, customer) if e.account == "customer"]
    return {
        "balances": [
            {
                "currency": b.currency,
                "total": f.money(b.total, b.currency),
                "parts": [
                    (f._(_GRANT_KINDS[kind]), f.money(amount, b.currency))
                    for kind, amount in (("free", b.free), ("paid", b.paid), ("balance", b.balance))
                ],
                "pending": f.money(b.pending, b.currency) if b.pending else None,
            }
            for b in balances
        ],
        "entries": [
            {
                "when": f.datetime(e.effective_at),
                "what": f._(_MOVEMENTS.get(e.kind, e.kind)),
                "kind": f._(_GRANT_KINDS[grants[e.grant_id].kind]) if e.grant_id in grants else "",
                "invoice": numbers.get(e.invoice_id) or "" if e.invoice_id is not None else "",
                "amount": f.money(e.amount, grants[e.grant_id].currency if e.grant_id in grants else None),
            }
            for e in reversed(entries)
        ],
    }


# -- invoices ---------------------------------------------------------------------------------------------------


_PAYMENT_STATES = {  # invoicing.PaymentState → (style, words)
    PaymentState.CREDIT_NOTE: ("info", N_("Credit note")),
    PaymentState.VOID: ("muted", N_("Void")),
    PaymentState.UNCOLLECTIBLE: ("bad", N_("Uncollectible")),
    PaymentState.PAID: ("good", N_("Paid")),
    PaymentState.OVERDUE: ("bad", N_("Overdue")),
    PaymentState.PARTLY_PAID: ("warn", N_("Partly paid")),
    PaymentState.OPEN: ("warn", N_("Open")),
}


def _today(portal: Portal, now: dt.datetime | None) -> dt.date:
    """The customer's date now, in its timezone (an invoice is overdue, a subscription current, by its calendar)."""
    return (now or utcnow()).astimezone(ZoneInfo(portal.customer.timezone)).date()


def _issued(engine: Engine, customer: str) -> list[Invoice]:
    """The customer's invoices and credit notes that were issued (drafts are not the customer's yet), newest
    first."""
    found = invoicing.list_invoices(engine, customer=customer)
    return sorted((i for i in found if i.status is not InvoiceStatus.DRAFT), key=lambda i: i.id, reverse=True)


def invoices_view(engine: Engine, portal: Portal, now: dt.datetime | None = None) -> dict[str, Any]:
    """The invoices and credit notes issued to the customer, each with its payment state and its PDF."""
    f = portal.f
    today = _today(portal, now)
    rows = []
    for invoice in _issued(engine, portal.customer.external_id):
        style, words = _PAYMENT_STATES[payment_state(invoice, today)]
        rows.append(
            {
                "number": invoice.number,
                "period": f.period(invoice.period_start, invoice.period_end),
                "issued": f.short_date(invoice.issue_date),
                "due": f.short_date(invoice.due_date) if invoice.kind is InvoiceKind.INVOICE else "—",
                "total": f.money(invoice.total, invoice.currency),
                "amount_due": f.money(invoice.amount_due, invoice.currency),
                "style": style,
                "state": f._(words),
            }
        )
    return {"invoices": rows}


def visible_invoice(engine: Engine, portal: Portal, number: str, settings: Settings) -> Invoice | None:
    """The portal's customer's issued invoice or credit note numbered ``number``, ready to print (how to pay it
    from ``settings``); None for any other (another customer's, a draft, none)."""
    for invoice in _issued(engine, portal.customer.external_id):
        if invoice.number == number:
            return invoicing.printable(engine, invoicing.get_invoice(engine, invoice.id), settings)
    return None


# -- the customer's details -------------------------------------------------------------------------------------


def _plan_name(catalog: Catalog, code: str, version: int) -> str:
    versions = catalog.plans.get(code, ())
    return next((p.name for p in versions if p.version == version), versions[-1].name if versions else code)


def account_view(engine: Engine, catalog: Catalog, portal: Portal, now: dt.datetime | None = None) -> dict[str, Any]:
    """The customer's own details as billing knows them, and its subscriptions."""
    f, customer = portal.f, portal.customer
    with session_scope(read_only(engine)) as session:
        subscriptions = repository.subscriptions_of(session, customer.id)
    today = _today(portal, now)
    details = [
        (f._("Name"), customer.name),
        (f._("Customer id"), customer.external_id),
        (f._("E-mail"), customer.email or "—"),
        (f._("Address"), ", ".join(customer.address) or "—"),
        (f._("Country"), customer.country or "—"),
        (f._("Tax id"), customer.tax_id or "—"),
        (f._("Currency"), customer.currency),
        (f._("Language and region"), customer.locale),
        (f._("Timezone"), customer.timezone),
    ]
    plans = [
        {
            "plan": _plan_name(catalog, s.plan_code, s.plan_version),
            "seats": s.quantity,
            "since": f.short_date(s.start_date),
            "until": f.short_date(s.end_date) if s.end_date else "—",
            "active": s.overlaps(today, today + dt.timedelta(days=1)),
        }
        for s in subscriptions
    ]
    return {"details": details, "subscriptions": plans}
