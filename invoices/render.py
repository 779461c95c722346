"""Invoices rendered for machines and for people: JSON, HTML (Jinja2) and PDF (WeasyPrint, from the same HTML).

JSON keeps every amount exact: money is a string with exactly the currency's minor digits (``"49.00"``,
``"1500"`` for JPY), quantities and rates are plain decimal strings, dates are ISO. The HTML and the PDF are for
people: amounts and dates are formatted for the customer's locale with Babel, and a breakdown's unit prices keep
all their digits (``$0.00025``) because they are prices, not amounts to pay.

Periods are stored half-open, ``[start, end)``; JSON gives them as stored, the documents print the last day.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from babel.dates import format_date, format_skeleton
from babel.numbers import format_currency, format_decimal, format_percent
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from invoices.model import Invoice, InvoiceKind, InvoiceLine, InvoiceScope, InvoiceStatus, LineKind, TaxLine
from pricing_plans.charge_models import BreakdownRow
from pricing_plans.money import ZERO, format_amount, minor_digits

__all__ = ["invoice_json", "render_html", "render_pdf"]

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


def _tax_json(tax: TaxLine, currency: str) -> dict[str, Any]:
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
        "taxes": [_tax_json(tax, currency) for tax in invoice.taxes],
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
    """Locale-aware formatting for one document: its currency and its customer's locale."""

    currency: str
    locale: str

    def money(self, amount: Decimal) -> str:
        """An amount to pay, in the currency's minor digits ("$1,234.56", "1.234,56 €", "¥1,500")."""
        return format_currency(amount, self.currency, locale=self.locale)

    def price(self, value: Decimal) -> str:
        """A price or an unrounded amount: never rounded to the currency, trailing zeros beyond it dropped."""
        return format_currency(
            _trim(value, minor_digits(self.currency)),
            self.currency,
            locale=self.locale,
            decimal_quantization=False,
        )

    def number(self, value: Decimal) -> str:
        """A quantity with every digit it has ("1,234,567.5")."""
        return format_decimal(value, locale=self.locale, decimal_quantization=False)

    def quantity(self, value: Decimal, unit: str | None) -> str:
        return f"{self.number(value)} {unit}" if unit else self.number(value)

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
            return "all" if low == 0 else f"above {self.number(low)}"
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
    """A line as the template prints it. ``percentage``: the breakdown's unit amounts are rates in percent
    (its header then reads "Value" and "Rate"); each row says so for itself."""

    line: InvoiceLine
    service_period: str | None  # only when it differs from the billing period
    breakdown: tuple[BreakdownRow, ...]
    explanation: str
    percentage: bool


def _line_view(line: InvoiceLine, invoice: Invoice, fmt: Formatter) -> LineView:
    differs = line.service_start is not None and (
        (line.service_start, line.service_end) != (invoice.period_start, invoice.period_end)
    )
    rows = (line.details.breakdown or ()) if line.kind in BREAKDOWN_KINDS else ()
    return LineView(
        line=line,
        service_period=fmt.period(line.service_start, line.service_end) if differs else None,
        breakdown=rows,
        explanation="" if rows else line.details.explanation or "",
        percentage=any(row.in_percent for row in rows),
    )


@cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _context(invoice: Invoice) -> dict[str, Any]:
    fmt = Formatter(invoice.currency, invoice.locale)
    credit_note = invoice.kind is InvoiceKind.CREDIT_NOTE
    settled = invoice.status in (InvoiceStatus.PAID, InvoiceStatus.VOID)
    terms_days = (invoice.due_date - invoice.issue_date).days if invoice.issue_date and invoice.due_date else None
    return {
        "invoice": invoice,
        "fmt": fmt,
        "credit_note": credit_note,
        "title": "Credit note" if credit_note else "Invoice" if not _progressive(invoice) else "Progressive invoice",
        "watermark": {InvoiceStatus.DRAFT: "DRAFT", InvoiceStatus.VOID: "VOID"}.get(invoice.status),
        "status": invoice.status.value.capitalize(),
        "billing_period": _progress(invoice, fmt) if _progressive(invoice) else fmt.period(
            invoice.period_start, invoice.period_end
        ),
        "sections": [(name, [_line_view(line, invoice, fmt) for line in lines]) for name, lines in invoice.sections()],
        "amount_due": ZERO if settled else invoice.amount_due,
        "terms_days": terms_days,
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
    return f"usage to date, {fmt.period(invoice.period_start, through)}, reached {fmt.money(level)}"


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
