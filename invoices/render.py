"""Invoices rendered for machines and for people: JSON, HTML (Jinja2) and PDF (WeasyPrint, from the same HTML).

JSON keeps every amount exact: money is a string with exactly the currency's minor digits (``"49.00"``,
``"1500"`` for JPY), quantities and rates are plain decimal strings, dates are ISO, a breakdown's tier amounts
unrounded. The HTML and the PDF are for people, in the customer's language (the labels from the gettext catalogs
of :mod:`invoices.i18n`, amounts, numbers and dates formatted for the customer's locale with Babel): every
amount to the currency's minor digits, a tier's too, while a breakdown's unit prices keep all their digits
(``$0.00025``) because they are prices, not amounts to pay; no internal id (sections are headed by the plan's
name); how to pay, when the billing service gives it (``Invoice.payment``).

Periods are stored half-open, ``[start, end)``; JSON gives them as stored, the documents print the last day.
"""

from __future__ import annotations

import datetime as dt
import gettext
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from babel.dates import format_date, format_skeleton
from babel.numbers import format_currency, format_decimal, format_percent
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from invoices.i18n import N_, translations, unit_name
from invoices.model import (
    COUPON_TERMS,
    DISCOUNT_SECTION,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceScope,
    InvoiceStatus,
    LineKind,
    TaxLine,
)
from pricing_plans.charge_models import BreakdownRow
from pricing_plans.money import ZERO, format_amount, minor_digits, round_money

__all__ = [
    "Formatter",
    "coupon_terms",
    "invoice_json",
    "line_description",
    "render_html",
    "render_pdf",
    "tax_json",
    "tax_rows",
]

TEMPLATES = Path(__file__).parent / "templates"
TEMPLATE = "invoice.html.j2"

# Line kinds whose tier breakdown is printed under the line.
BREAKDOWN_KINDS = frozenset({LineKind.USAGE, LineKind.LATE_USAGE})


# --------------------------------------------------------------------------------------------------- JSON


def _iso(day: dt.date | None) -> str | None:
    return None if day is None else day.isoformat()


def _line_json(line: InvoiceLine, currency: str) -> dict[str, Any]:
    return {
        "section": line.section,
        "kind": str(line.kind),
        "description": line.description,
        "meter": line.meter,
        "model": line.model,
        "dimension": line.dimension,
        "quantity": str(line.quantity),
        "unit": line.unit,
        "amount": format_amount(line.amount, currency),
        "service_period": {"start": _iso(line.service_start), "end": _iso(line.service_end)},
        "details": line.details.as_dict(),
    }


def tax_json(tax: TaxLine, currency: str) -> dict[str, Any]:
    """One rate's tax: amounts in the currency's minor digits, the rate as a plain percentage."""
    return {
        "name": tax.name,
        "country": tax.country,
        "region": tax.region,
        "rate": f"{tax.rate.normalize():f}",
        "taxable_amount": format_amount(tax.taxable, currency),
        "tax_amount": format_amount(tax.amount, currency),
        "tax_included": format_amount(tax.included, currency),
        "reverse_charge": tax.reverse_charge,
        "exempt_reason": tax.exempt_reason,
        "note": tax.note,
    }


def invoice_json(invoice: Invoice) -> dict[str, Any]:
    """The invoice as a JSON-ready dict: money as exact strings in minor digits, quantities as strings, ISO dates."""
    currency = invoice.currency
    return {
        "id": invoice.id,
        "number": invoice.number,
        "kind": invoice.kind.value,
        "status": invoice.status.value,
        "billing_key": invoice.billing_key,
        "customer": invoice.customer.as_dict(),
        "seller": invoice.seller.as_dict(),
        "currency": currency,
        "locale": invoice.locale,
        "period": {"start": _iso(invoice.period_start), "end": _iso(invoice.period_end)},
        "issue_date": _iso(invoice.issue_date),
        "due_date": _iso(invoice.due_date),
        "refers_to": invoice.refers_to,
        "reason": invoice.reason,
        "lines": [_line_json(line, currency) for line in invoice.lines],
        "subtotal": format_amount(invoice.subtotal, currency),
        "discount": format_amount(invoice.discount, currency),
        "tax_rate": str(invoice.tax_rate),
        "tax": format_amount(invoice.tax, currency),
        "tax_included": format_amount(invoice.tax_included, currency),
        "taxes": [tax_json(tax, currency) for tax in invoice.taxes],
        "reverse_charge": invoice.reverse_charge,
        "tax_notes": list(dict.fromkeys(tax.note for tax in invoice.taxes if tax.note)),
        "total": format_amount(invoice.total, currency),
        "credits_applied": [
            {"kind": c.kind, "description": c.description, "amount": format_amount(c.amount, currency),
             "grant": c.grant_id}
            for c in invoice.credits_applied
        ],
        "amount_paid": format_amount(invoice.amount_paid, currency),
        "amount_due": format_amount(invoice.amount_due, currency),
    }


# --------------------------------------------------------------------------------------------------- HTML


@dataclass(frozen=True, slots=True)
class Formatter:
    """Locale-aware formatting for one document: its currency, its customer's locale and language."""

    currency: str
    locale: str
    words: gettext.NullTranslations = field(default_factory=gettext.NullTranslations)

    def _(self, message: str, **values: object) -> str:
        """``message`` in the document's language, its ``%(name)s`` placeholders filled from ``values``."""
        text = self.words.gettext(message)
        return text % values if values else text

    def money(self, amount: Decimal) -> str:
        """An amount to pay, in the currency's minor digits ("$1,234.56", "1.234,56 €", "¥1,500")."""
        return format_currency(amount, self.currency, locale=self.locale)

    def amount(self, value: Decimal) -> str:
        """An unrounded amount (a tier's), rounded half up to the currency's minor digits for people; the exact
        value stays in the JSON."""
        return self.money(round_money(value, self.currency))

    def price(self, value: Decimal) -> str:
        """A price: never rounded to the currency, trailing zeros beyond it dropped ("$0.00025")."""
        return format_currency(
            _trim(value, minor_digits(self.currency)),
            self.currency,
            locale=self.locale,
            decimal_quantization=False,
        )

    def number(self, value: Decimal) -> str:
        """A quantity with every digit it has ("1,234,567.5")."""
        return format_decimal(value, locale=self.locale, decimal_quantization=False)

    def quantity(self, value: Decimal, unit: str | None, unit_plural: str | None = None) -> str:
        """A quantity and its unit in the form the quantity takes ("1 call", "260,000 calls", "3 Aufrufe")."""
        if not unit:
            return self.number(value)
        return f"{self.number(value)}\xa0{unit_name(unit, value, self.locale, unit_plural)}"

    def percent(self, rate: Decimal) -> str:
        """A rate given in percent (19 → "19 %" or "19%" as the locale writes it)."""
        return format_percent(rate / 100, locale=self.locale, decimal_quantization=False)

    def date(self, day: dt.date | None) -> str:
        return "—" if day is None else format_date(day, format="long", locale=self.locale)

    def period(self, start: dt.date | None, end: dt.date | None) -> str:
        """A half-open period as printed: a whole calendar month by its name, else first – last day."""
        if start is None or end is None:
            return "—"
        if start.day == 1 and end == _next_month(start):
            return format_skeleton("yMMMM", start, locale=self.locale)
        return f"{self.date(start)} – {self.date(end - dt.timedelta(days=1))}"

    def tier_range(self, row: BreakdownRow) -> str:
        low, high = row.from_units, row.to_units
        if high is None:
            return self._("all") if low == 0 else self._("above %(units)s", units=self.number(low))
        return f"{self.number(low)} – {self.number(high)}"


def _trim(value: Decimal, digits: int) -> Decimal:
    """Drop trailing zeros beyond ``digits`` (560.0000 → 560.00, 0.000250 → 0.00025)."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1).scaleb(-digits))
    normal = value.normalize()
    exponent = normal.as_tuple().exponent
    return value.quantize(Decimal(1).scaleb(-digits)) if isinstance(exponent, int) and -exponent < digits else normal


def _next_month(day: dt.date) -> dt.date:
    return dt.date(day.year + day.month // 12, day.month % 12 + 1, 1)


@dataclass(frozen=True, slots=True)
class LineView:
    """A line as the template prints it, every word in the document's language.

    ``description``: the line's own, or its words in the document's language for the lines the engine names
    (a subscription fee, a true-up, late usage, a credit note's line). ``account``: how a late-usage or
    rest-of-period line's amount came about ("re-rated October 2026: …; billed before: …; difference …").
    ``explanation`` and ``engine_notes``: the engine's own sentences (English), printed on English documents
    only. ``percentage``: the breakdown's unit amounts are rates in percent (its header then reads "Value" and
    "Rate"); each row says so for itself."""

    line: InvoiceLine
    description: str
    quantity: str
    service_period: str | None  # only when it differs from the billing period
    account: str | None
    breakdown: tuple[BreakdownRow, ...]
    explanation: str
    engine_notes: bool
    percentage: bool


def _line_view(line: InvoiceLine, invoice: Invoice, fmt: Formatter) -> LineView:
    extra = line.details.extra
    late = extra.get("late") if line.kind == LineKind.LATE_USAGE else None
    differs = late is None and line.service_start is not None and (
        (line.service_start, line.service_end) != (invoice.period_start, invoice.period_end)
    )
    rows = (line.details.breakdown or ()) if line.kind in BREAKDOWN_KINDS else ()
    english = not isinstance(fmt.words, gettext.GNUTranslations)  # no catalog: the labels are English
    unit_plural = extra.get("unit_plural")
    return LineView(
        line=line,
        description=_description(line, invoice, fmt),
        quantity=fmt.quantity(line.quantity, line.unit, unit_plural if isinstance(unit_plural, str) else None),
        service_period=fmt.period(line.service_start, line.service_end) if differs else None,
        account=_account(line, fmt),
        breakdown=rows,
        explanation="" if rows or not english else line.details.explanation or "",
        engine_notes=english,
        percentage=any(row.in_percent for row in rows),
    )


def line_description(line: InvoiceLine, fmt: Formatter, invoice: Invoice | None = None) -> str:
    """What the customer reads for a line (of ``invoice``, if it is one already: a credit note names the invoice
    it credits), in ``fmt``'s language: also for a line of an invoice still to come (the usage preview's)."""
    return _description(line, invoice, fmt)


def _description(line: InvoiceLine, invoice: Invoice | None, fmt: Formatter) -> str:
    """What the customer reads for a line: the engine's phrases in the document's language, the catalog's names
    (meters, plans, coupons) as the catalog writes them."""
    extra = line.details.extra
    period = fmt.period(line.service_start, line.service_end)
    late = extra.get("late")
    translated = isinstance(fmt.words, gettext.GNUTranslations)  # (in English the engine's own words stand)
    if line.kind == LineKind.LATE_USAGE and isinstance(late, dict) and "charge" in late:
        late_usage = fmt._("late usage of %(period)s", period=period)
        # (a true-up re-rated keeps its ``minimum``: the engine's words, translated)
        charge = fmt._("Minimum commitment true-up") if translated and "minimum" in extra else late["charge"]
        return f"{charge} — {late_usage}"
    if translated and line.kind == LineKind.LATE_USAGE and late is None and line.meter is None:
        # a true-up given back once late usage covered the minimum (the one late line without an account)
        return f"{fmt._('Minimum commitment true-up')} — {fmt._('late usage of %(period)s', period=period)}"
    to_date = extra.get("billed_to_date")
    if isinstance(to_date, dict) and "charge" in to_date:
        return str(to_date["charge"])
    if line.kind == LineKind.SUBSCRIPTION and "adjustment" not in extra and extra.get("billing") in _FEE_TIMING:
        return fmt._(_FEE_TIMING[extra["billing"]], period=period)
    if line.kind == LineKind.COMMITMENT:
        return fmt._("Minimum commitment true-up")
    if line.kind == LineKind.CREDIT and invoice and invoice.kind is InvoiceKind.CREDIT_NOTE and invoice.refers_to:
        return fmt._("Credit on invoice %(number)s", number=invoice.refers_to)
    if translated and line.kind == LineKind.CREDIT and invoice and invoice.kind is InvoiceKind.INVOICE and (
        invoice.scope is InvoiceScope.CREDIT
    ):
        return f"{fmt._('Prepaid credit')} ({invoice.currency})"  # a top-up invoice's credit sold
    terms = extra.get(COUPON_TERMS)
    if line.kind == LineKind.DISCOUNT and isinstance(terms, dict) and translated:
        worded = coupon_terms(fmt, terms)  # (in English the line's own description says the same)
        if worded is not None:
            return fmt._("Coupon %(code)s: %(terms)s", code=extra.get("coupon", ""), terms=worded)
    return line.description


def coupon_terms(fmt: Formatter, terms: Mapping[str, object]) -> str | None:
    """A coupon's terms in ``fmt``'s language ("20 % Rabatt auf 3 Abrechnungszeiträume"), from what a discount line
    records of them (``Coupon.terms_json``: ``percent_off`` or ``amount_off`` and ``currency``, ``duration``,
    ``months``); None when they cannot be read."""
    try:
        if "percent_off" in terms:
            off = fmt.percent(Decimal(str(terms["percent_off"])))
        else:
            currency = str(terms.get("currency") or fmt.currency)
            off = Formatter(currency, fmt.locale, fmt.words).money(Decimal(str(terms["amount_off"])))
    except (KeyError, ArithmeticError, ValueError):
        return None
    duration, months = terms.get("duration"), terms.get("months")
    if duration == "once":
        return fmt._("%(off)s off one billing period", off=off)
    if duration == "forever":
        return fmt._("%(off)s off every billing period", off=off)
    if duration != "repeating" or not isinstance(months, int) or isinstance(months, bool):
        return None
    plural = fmt.words.ngettext("%(off)s off %(count)s billing period", "%(off)s off %(count)s billing periods", months)
    return plural % {"off": off, "count": months}


_FEE_TIMING = {
    "in_advance": N_("Subscription fee, %(period)s (billed in advance)"),
    "in_arrears": N_("Subscription fee, %(period)s (billed in arrears)"),
}


def _account(line: InvoiceLine, fmt: Formatter) -> str | None:
    """How a late-usage line (or a line less what progressive invoices billed) came to its amount, from the
    account the engine keeps in its details."""
    extra = line.details.extra
    late, to_date = extra.get("late"), extra.get("billed_to_date")
    if isinstance(late, dict) and "rated_now" in late:
        return fmt._(
            "re-rated %(period)s: %(rated)s; billed before: %(billed)s; difference %(difference)s",
            period=fmt.period(line.service_start, line.service_end),
            rated=fmt.money(Decimal(late["rated_now"])),
            billed=fmt.money(Decimal(late["billed_before"])),
            difference=fmt.money(line.amount),
        )
    if isinstance(to_date, dict) and "rated" in to_date:
        return fmt._(
            "the period rates to %(rated)s; billed on progressive invoices: %(billed)s; difference %(difference)s",
            rated=fmt.money(Decimal(to_date["rated"])),
            billed=fmt.money(Decimal(to_date["billed_before"])),
            difference=fmt.money(line.amount),
        )
    return None


def _sections(invoice: Invoice, fmt: Formatter) -> list[tuple[str, list[LineView]]]:
    """The lines grouped by section and subscription (two subscriptions of one plan stay apart), in order."""
    groups: dict[tuple[str, int | None], list[InvoiceLine]] = {}
    for line in invoice.lines or _credited(invoice):
        groups.setdefault((line.section, line.subscription_id), []).append(line)
    return [
        (_heading(section, lines, fmt), [_line_view(line, invoice, fmt) for line in lines])
        for (section, _subscription), lines in groups.items()
    ]


def _credited(invoice: Invoice) -> tuple[InvoiceLine, ...]:
    """A credit note issued without a stored line (before credit notes stored theirs) prints the one line every
    credit note has: the credited net amount, for the credited invoice's period."""
    if invoice.kind is not InvoiceKind.CREDIT_NOTE:
        return ()
    return (
        InvoiceLine(
            kind=LineKind.CREDIT,
            description=f"Credit for invoice {invoice.refers_to}",
            amount=invoice.subtotal,
            service_start=invoice.period_start,
            service_end=invoice.period_end,
        ),
    )


def _heading(section: str, lines: list[InvoiceLine], fmt: Formatter) -> str:
    """A section's heading: the plan's name as the catalog writes it (with the days it covers when it covers
    part of the period), the mark of a negotiated price (which the engine appends to the plan's name) in the
    document's language; a section of late usage says so, and of which period; the discounts' heading is in the
    document's language."""
    if section == DISCOUNT_SECTION and all(line.kind == LineKind.DISCOUNT for line in lines):
        return fmt._("Discounts")
    late = lines[0].details.extra.get("late")
    if isinstance(late, dict) and "plan" in late and all(line.kind == LineKind.LATE_USAGE for line in lines):
        first = lines[0]
        section = fmt._(
            "Late usage of %(period)s: %(plan)s",
            period=fmt.period(first.service_start, first.service_end),
            plan=late["plan"],
        )
    mark = f"({NEGOTIATED_PRICE})"
    if mark in section:
        negotiated = fmt._("negotiated price")
        return section.replace(mark, f"({negotiated})")
    return section


# The mark the engine appends to the name of a plan whose prices were negotiated for one subscription.
NEGOTIATED_PRICE = "negotiated price"


@cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _tax_rows(invoice: Invoice, fmt: Formatter, *, included: bool = False) -> list[tuple[str, Decimal]]:
    return tax_rows(invoice.taxes, fmt, included=included)


def tax_rows(taxes: Iterable[TaxLine], fmt: Formatter, *, included: bool = False) -> list[tuple[str, Decimal]]:
    """One row per rate (an invoice's ``taxes``, a draft's ``tax_lines``): its name in the document's language
    when the catalogs know it ("Tax", "VAT"), and its rate. The tax added to the prices (``included`` False: the
    rows between the subtotal and the total, so that they add up), or the tax already inside tax-inclusive prices
    (``included`` True: "of which VAT (19 %)" rows under the total, which add nothing)."""
    rows = []
    for tax in taxes:
        amount = tax.included if included else tax.amount - tax.included
        if amount == 0 and (included or tax.included != 0):
            continue  # (a rate with no tax on top of its prices, only tax inside them, or the reverse)
        rate = fmt.percent(tax.rate)
        if tax.name == "Tax":
            label = fmt._("Tax (%(rate)s)", rate=rate)
        else:
            label = f"{fmt._(tax.name)} ({rate})"
        rows.append((fmt._("of which %(tax)s", tax=label) if included else label, amount))
    return rows


# What pays part of an invoice below its total (``AppliedCredit.description``, written in English by the ledger).
CREDIT_LABELS = (N_("Free credit"), N_("Prepaid credit"), N_("Customer balance"))


def _credit_rows(invoice: Invoice, fmt: Formatter) -> list[tuple[str, Decimal]]:
    """The credits applied to the invoice in the document's language: the kind of credit translated, the reason
    given when it was granted kept as written ("Gratisguthaben: welcome"), a credit note named by its number."""
    rows = []
    for credit in invoice.credits_applied:
        label = credit.description
        for known in CREDIT_LABELS:
            if label == known or label.startswith(known + ": "):
                label = fmt._(known) + label[len(known) :]
                break
        else:
            if label.startswith("Credit note "):
                label = fmt._("Credit note %(number)s", number=label[len("Credit note ") :])
        rows.append((label, credit.amount))
    return rows


# Tax names the catalogs translate (a tax's name comes from the configuration).
TAX_NAMES = (N_("VAT"), N_("Sales tax"), N_("GST"))


def _reverse_charge(invoice: Invoice, fmt: Formatter) -> list[str]:
    """What is printed under the totals about tax: the reverse-charge wording in the document's language when a
    tax is reverse-charged, an exempt buyer's reason, and the other taxes' notes as configured."""
    notes = []
    if invoice.reverse_charge:
        notes.append(
            fmt._("Reverse charge: VAT to be accounted for by the recipient (Article 196, Directive 2006/112/EC).")
        )
    for tax in invoice.taxes:
        if tax.exempt_reason:
            notes.append(fmt._("Exempt from tax: %(reason)s", reason=tax.exempt_reason))
        if tax.note and not tax.reverse_charge and not tax.exempt_reason:  # those two are worded above
            notes.append(tax.note)
    return list(dict.fromkeys(notes))


def _reference(invoice: Invoice) -> str:
    payment = invoice.payment
    return (payment.reference if payment is not None and payment.reference else None) or invoice.number or ""


def _page_label(fmt: Formatter) -> str:
    """The page counter as CSS ``content``: "Page " counter(page) " of " counter(pages), in the document's
    language."""
    text = fmt._("Page %(page)s of %(pages)s", page="\0page\0", pages="\0pages\0")
    parts = []
    for n, piece in enumerate(text.split("\0")):
        if n % 2:
            parts.append(f"counter({piece})")
        elif piece:
            parts.append('"' + piece.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return " ".join(parts)


def _context(invoice: Invoice) -> dict[str, Any]:
    fmt = Formatter(invoice.currency, invoice.locale, translations(invoice.locale))
    _ = fmt._
    credit_note = invoice.kind is InvoiceKind.CREDIT_NOTE
    settled = invoice.status in (InvoiceStatus.PAID, InvoiceStatus.VOID)
    terms_days = (invoice.due_date - invoice.issue_date).days if invoice.issue_date and invoice.due_date else None
    title = _("Credit note") if credit_note else _("Progressive invoice") if _progressive(invoice) else _("Invoice")
    statuses = {
        InvoiceStatus.DRAFT: _("Draft"),
        InvoiceStatus.FINALIZED: _("Issued"),
        InvoiceStatus.PAID: _("Paid"),
        InvoiceStatus.VOID: _("Void"),
        InvoiceStatus.UNCOLLECTIBLE: _("Uncollectible"),
    }
    return {
        "invoice": invoice,
        "fmt": fmt,
        "_": _,
        "credit_note": credit_note,
        "title": title,
        "watermark": {InvoiceStatus.DRAFT: _("DRAFT"), InvoiceStatus.VOID: _("VOID")}.get(invoice.status),
        "status": statuses[invoice.status],
        "billing_period": _progress(invoice, fmt) if _progressive(invoice) else fmt.period(
            invoice.period_start, invoice.period_end
        ),
        "sections": _sections(invoice, fmt),
        "tax_rows": _tax_rows(invoice, fmt),
        "included_tax_rows": _tax_rows(invoice, fmt, included=True),
        "credit_rows": _credit_rows(invoice, fmt),
        "reverse_charge": _reverse_charge(invoice, fmt),
        "amount_due": ZERO if settled else invoice.amount_due,
        "terms_days": terms_days,
        "reference": _reference(invoice),
        "payment": invoice.payment,
        "page_label": Markup(_page_label(fmt)),
    }


def _progressive(invoice: Invoice) -> bool:
    return invoice.scope is InvoiceScope.PROGRESSIVE


def _progress(invoice: Invoice, fmt: Formatter) -> str:
    """What a progressive invoice bills: ``usage to date, March 1, 2026 – March 14, 2026, reached $500.00`` (from
    the period's start through its issue date; the amount reached ends its billing key)."""
    level = Decimal(invoice.billing_key.rsplit(":", 1)[1])
    through = invoice.period_end
    if invoice.issue_date is not None:
        through = min(invoice.issue_date + dt.timedelta(days=1), invoice.period_end)
    return fmt._(
        "usage to date, %(period)s, reached %(amount)s",
        period=fmt.period(invoice.period_start, through),
        amount=fmt.money(level),
    )


def render_html(invoice: Invoice) -> str:
    """The invoice or credit note as a self-contained HTML page (inline CSS, no network resources)."""
    return _environment().get_template(TEMPLATE).render(_context(invoice), inline_css=True)


def render_pdf(invoice: Invoice) -> bytes:
    """The invoice as an A4 PDF, printed by WeasyPrint from the HTML of :func:`render_html`."""
    import weasyprint  # imported late: it loads Pango, which JSON and HTML rendering don't need

    stylesheet, fonts = _printing()
    html = _environment().get_template(TEMPLATE).render(_context(invoice), inline_css=False)
    pdf: bytes = weasyprint.HTML(string=html, base_url=str(TEMPLATES)).write_pdf(
        stylesheets=[stylesheet], font_config=fonts
    )
    return pdf


_printer = threading.local()


def _printing() -> tuple[Any, Any]:
    """The stylesheet, parsed once, and the font configuration, kept between documents (together a quarter of
    the time of printing a PDF), for this thread."""
    if not hasattr(_printer, "stylesheet"):
        import weasyprint
        from weasyprint.text.fonts import FontConfiguration

        _printer.fonts = FontConfiguration()
        _printer.stylesheet = weasyprint.CSS(filename=str(TEMPLATES / "invoice.css"), font_config=_printer.fonts)
    return _printer.stylesheet, _printer.fonts
