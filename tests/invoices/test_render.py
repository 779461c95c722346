"""Rendering invoices and credit notes: exact JSON, locale-formatted HTML, a one-page PDF.

Every expected string below is worked out by hand from the invoice written in the test.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from invoices.i18n import translations
from invoices.model import (
    DISCOUNT_SECTION,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceScope,
    InvoiceStatus,
    LineDetails,
    LineKind,
    Party,
    compute_totals,
)
from invoices.render import Formatter, invoice_json, line_description, render_html, render_pdf
from pricing_plans.charge_models import BreakdownRow, UnitAmountKind

NBSP = "\xa0"

SELLER = Party(
    name="Meterly Inc.",
    address=("500 Market Street, Suite 300", "San Francisco, CA 94105", "United States"),
    email="billing@meterly.example",
    tax_id="US 12-3456789",
)

MARCH = (dt.date(2026, 3, 1), dt.date(2026, 4, 1))
FEBRUARY = (dt.date(2026, 2, 1), dt.date(2026, 3, 1))


def tier(
    n: int,
    low: str,
    high: str | None,
    units: str,
    unit: str,
    flat: str,
    amount: str,
    note: str = "",
    kind: UnitAmountKind = UnitAmountKind.PRICE,
) -> BreakdownRow:
    return BreakdownRow(
        tier=n,
        from_units=Decimal(low),
        to_units=None if high is None else Decimal(high),
        units=Decimal(units),
        unit_amount=Decimal(unit),
        flat_amount=Decimal(flat),
        amount=Decimal(amount),
        note=note,
        unit_amount_kind=kind,
    )


# API calls, graduated: 0–100,000 free; 100,000–1,000,000 at 0.00025; above at 0.0002 + 5.00 flat.
# 1,500,000 calls: 100,000 × 0 + 900,000 × 0.00025 (= 225.00) + 500,000 × 0.0002 + 5 (= 105.00) = 330.00.
API_BREAKDOWN = (
    tier(1, "0", "100000", "100000", "0", "0", "0"),
    tier(2, "100000", "1000000", "900000", "0.00025", "0", "225.00000"),
    tier(3, "1000000", None, "500000", "0.0002", "5.00", "105.0000"),
)


def usd_invoice(**changes: object) -> Invoice:
    """Two subscriptions (two sections), a 3-tier usage line, late usage for February, 19 % tax; the lines as the
    billing run writes them (sections named by plan, late usage with its account).

    Subtotal 49.00 + 330.00 + 12.05 + 3.40 = 394.45; tax 394.45 × 19 % = 74.9455 → 74.95; total 469.40.
    February's storage re-rated with its late usage: 154 GB-month × 0.10 = 15.40; 12.00 billed; difference 3.40.
    """
    lines = (
        InvoiceLine(
            kind=LineKind.SUBSCRIPTION,
            description="Growth subscription, 2026-03 (in advance)",
            amount=Decimal("49.00"),
            section="Growth",
            service_start=MARCH[0],
            service_end=MARCH[1],
            details=LineDetails(
                "49.00 for the full period (31 days)",
                (),
                {"service_period": {"start": "2026-03-01", "end": "2026-04-01"}, "billing": "in_advance"},
            ),
            subscription_id=1,
        ),
        InvoiceLine(
            kind=LineKind.USAGE,
            description="API calls",
            amount=Decimal("330.00"),
            quantity=Decimal("1500000"),
            unit="call",
            section="Growth",
            service_start=MARCH[0],
            service_end=MARCH[1],
            meter="api_calls",
            model="graduated",
            details=LineDetails("…", API_BREAKDOWN),
            subscription_id=1,
        ),
        InvoiceLine(
            kind=LineKind.USAGE,
            description="Storage",
            amount=Decimal("12.05"),
            quantity=Decimal("120.5"),
            unit="GB-month",
            section="Storage add-on",
            service_start=MARCH[0],
            service_end=MARCH[1],
            meter="storage",
            model="per_unit",
            details=LineDetails(breakdown=(tier(1, "0", None, "120.5", "0.10", "0", "12.050"),)),
            subscription_id=2,
        ),
        InvoiceLine(
            kind=LineKind.LATE_USAGE,
            description="Storage — late usage of 2026-02",
            amount=Decimal("3.40"),
            quantity=Decimal("154"),
            unit="GB-month",
            section="Late usage of 2026-02: Storage add-on",
            service_start=FEBRUARY[0],
            service_end=FEBRUARY[1],
            meter="storage",
            model="per_unit",
            details=LineDetails(
                breakdown=(tier(1, "0", None, "154", "0.10", "0", "15.40"),),
                extra={
                    "late": {
                        "period": "2026-02",
                        "charge": "Storage",
                        "plan": "Storage add-on",
                        "rated_now": "15.40",
                        "billed_before": "12.00",
                        "explanation": "2026-02 now rates to 15.40; 12.00 was billed; difference 3.40",
                    }
                },
            ),
            subscription_id=2,
        ),
    )
    invoice = Invoice(
        id=7,
        number="INV-2026-000042",
        kind=InvoiceKind.INVOICE,
        status=InvoiceStatus.FINALIZED,
        billing_key="period:acme:2026-03",
        customer=Party(
            name="Acme Corp",
            address=("1 Infinite Loop", "Cupertino, CA 95014"),
            email="ap@acme.example",
            external_id="acme",
        ),
        seller=SELLER,
        currency="USD",
        locale="en_US",
        period_start=MARCH[0],
        period_end=MARCH[1],
        lines=lines,
        subtotal=Decimal("394.45"),
        discount=Decimal("0.00"),
        tax_rate=Decimal("19"),
        tax=Decimal("74.95"),
        total=Decimal("469.40"),
        issue_date=dt.date(2026, 4, 1),
        due_date=dt.date(2026, 5, 1),
    )
    return replace(invoice, **changes)


def jpy_invoice() -> Invoice:
    """¥1,000 fee + 1,000 calls × ¥0.5 = ¥1,500; tax 10 % = ¥150; total ¥1,650."""
    lines = (
        InvoiceLine(kind="subscription", description="Starter subscription, 2026-03", amount=Decimal("1000")),
        InvoiceLine(
            kind="usage",
            description="API calls",
            amount=Decimal("500"),
            quantity=Decimal("1000"),
            unit="call",
            meter="api_calls",
            model="per_unit",
            details=LineDetails(breakdown=(tier(1, "0", None, "1000", "0.5", "0", "500.0"),)),
        ),
    )
    return Invoice(
        id=8,
        number="INV-2026-000043",
        kind=InvoiceKind.INVOICE,
        status=InvoiceStatus.FINALIZED,
        billing_key="period:kaisha:2026-03",
        customer=Party(name="Kaisha KK", address=("Tokyo",), external_id="kaisha"),
        seller=SELLER,
        currency="JPY",
        locale="en_US",
        period_start=MARCH[0],
        period_end=MARCH[1],
        lines=lines,
        subtotal=Decimal("1500"),
        discount=Decimal("0"),
        tax_rate=Decimal("10"),
        tax=Decimal("150"),
        total=Decimal("1650"),
        issue_date=dt.date(2026, 4, 1),
        due_date=dt.date(2026, 4, 15),
    )


def eur_invoice() -> Invoice:
    """de_DE: 499.00 + 57,980 events × 0.01 (= 579.80) = 1,078.80; discount 50.00; tax 20 % of 1,028.80 = 205.76;
    total 1,234.56."""
    lines = (
        InvoiceLine(
            kind="subscription",
            description="Business-Abonnement, 2026-03",
            amount=Decimal("499.00"),
            section="Business (v3)",
        ),
        InvoiceLine(
            kind="usage",
            description="Ereignisse",
            amount=Decimal("579.80"),
            quantity=Decimal("57980"),
            unit="event",
            section="Business (v3)",
            meter="events",
            model="volume",
            details=LineDetails(breakdown=(tier(2, "10000", "100000", "57980", "0.01", "0", "579.80", "tier 2"),)),
        ),
    )
    return Invoice(
        id=9,
        number="INV-2026-000044",
        kind=InvoiceKind.INVOICE,
        status=InvoiceStatus.FINALIZED,
        billing_key="period:gmbh:2026-03",
        customer=Party(name="Beispiel GmbH", address=("Hauptstraße 5", "10115 Berlin"), tax_id="DE123456789"),
        seller=SELLER,
        currency="EUR",
        locale="de_DE",
        period_start=MARCH[0],
        period_end=MARCH[1],
        lines=lines,
        subtotal=Decimal("1078.80"),
        discount=Decimal("50.00"),
        tax_rate=Decimal("20"),
        tax=Decimal("205.76"),
        total=Decimal("1234.56"),
        issue_date=dt.date(2026, 4, 1),
        due_date=dt.date(2026, 5, 1),
    )


def credit_note() -> Invoice:
    """50.00 credited on INV-2026-000042, with its 19 % tax (9.50): 59.50."""
    return Invoice(
        id=10,
        number="CN-2026-000001",
        kind=InvoiceKind.CREDIT_NOTE,
        status=InvoiceStatus.FINALIZED,
        billing_key="credit:INV-2026-000042:1",
        customer=usd_invoice().customer,
        seller=SELLER,
        currency="USD",
        locale="en_US",
        period_start=MARCH[0],
        period_end=MARCH[1],
        lines=(InvoiceLine(kind="credit", description="Credit on invoice INV-2026-000042", amount=Decimal("50.00")),),
        subtotal=Decimal("50.00"),
        discount=Decimal("0.00"),
        tax_rate=Decimal("19"),
        tax=Decimal("9.50"),
        total=Decimal("59.50"),
        issue_date=dt.date(2026, 4, 10),
        due_date=dt.date(2026, 4, 10),
        refers_to="INV-2026-000042",
        reason="API calls double-counted on 12 March",
    )


def long_invoice(count: int = 30) -> Invoice:
    """``count`` usage lines of 10.00 each, no tax."""
    lines = tuple(
        InvoiceLine(
            kind="usage",
            description=f"Meter {n:02d}",
            amount=Decimal("10.00"),
            quantity=Decimal("1000"),
            unit="events",
            section="Growth (v1)" if n <= count // 2 else "Scale (v2)",
            meter=f"meter_{n:02d}",
            model="graduated",
            details=LineDetails(
                breakdown=(
                    tier(1, "0", "500", "500", "0.01", "0", "5.00"),
                    tier(2, "500", None, "500", "0.01", "0", "5.00"),
                )
            ),
        )
        for n in range(1, count + 1)
    )
    total = Decimal("10.00") * count
    return replace(usd_invoice(), lines=lines, subtotal=total, tax_rate=Decimal(0), tax=Decimal("0.00"), total=total)


ALL = {"usd": usd_invoice, "jpy": jpy_invoice, "eur": eur_invoice, "credit_note": credit_note}


@pytest.mark.parametrize("make", ALL.values(), ids=ALL.keys())
def test_samples_add_up(make: Callable[[], Invoice]) -> None:
    invoice = make()
    totals = compute_totals(invoice.lines, invoice.currency, invoice.tax_rate, invoice.discount)
    assert (totals.subtotal, totals.tax, totals.total) == (invoice.subtotal, invoice.tax, invoice.total)


# --------------------------------------------------------------------------------------------------- JSON


def test_json_amounts_are_exact_strings() -> None:
    data = invoice_json(usd_invoice())
    assert json.loads(json.dumps(data)) == data
    assert (data["subtotal"], data["discount"], data["tax"], data["total"]) == ("394.45", "0.00", "74.95", "469.40")
    assert data["tax_rate"] == "19"
    assert [line["amount"] for line in data["lines"]] == ["49.00", "330.00", "12.05", "3.40"]
    assert [line["quantity"] for line in data["lines"]] == ["1", "1500000", "120.5", "154"]
    assert data["lines"][1]["details"]["breakdown"][1]["unit_amount"] == "0.00025"


def test_json_keys_dates_and_parties() -> None:
    data = invoice_json(usd_invoice())
    assert list(data) == [
        "id", "number", "kind", "status", "billing_key", "customer", "seller", "currency", "locale", "period",
        "issue_date", "due_date", "refers_to", "reason", "lines", "subtotal", "discount", "tax_rate", "tax",
        "tax_included", "taxes", "reverse_charge", "tax_notes", "total", "credits_applied", "amount_paid",
        "amount_due",
    ]  # fmt: skip
    assert (data["credits_applied"], data["amount_due"]) == ([], "469.40")
    # one rate: 394.45 × 19 % = 74.9455 → 74.95
    assert data["taxes"] == [
        {"name": "Tax", "country": None, "region": None, "rate": "19", "taxable_amount": "394.45",
         "tax_amount": "74.95", "tax_included": "0.00", "reverse_charge": False, "exempt_reason": None, "note": None}
    ]
    assert (data["tax_included"], data["reverse_charge"], data["tax_notes"]) == ("0.00", False, [])
    assert (data["number"], data["kind"], data["status"]) == ("INV-2026-000042", "invoice", "finalized")
    assert data["period"] == {"start": "2026-03-01", "end": "2026-04-01"}
    assert (data["issue_date"], data["due_date"]) == ("2026-04-01", "2026-05-01")
    assert data["customer"]["name"] == "Acme Corp"
    assert data["seller"]["tax_id"] == "US 12-3456789"
    late = data["lines"][3]
    assert list(late) == [
        "section", "kind", "description", "meter", "model", "dimension", "quantity", "unit", "amount",
        "service_period", "details",
    ]  # fmt: skip
    assert late["dimension"] is None
    assert late["service_period"] == {"start": "2026-02-01", "end": "2026-03-01"}
    assert late["section"] == "Late usage of 2026-02: Storage add-on"
    assert late["details"]["late"]["rated_now"] == "15.40"  # the exact account stays in the JSON


def test_json_lines_name_the_part_of_a_charge_priced_by_dimension() -> None:
    invoice = usd_invoice()
    part = '{"filter":{"country":["CA","US"]},"group":{"region":"eu"}}'
    lines = (invoice.lines[0], replace(invoice.lines[1], dimension=part), *invoice.lines[2:])
    data = invoice_json(replace(invoice, lines=lines))
    assert [line["dimension"] for line in data["lines"]] == [None, part, None, None]


def test_json_jpy_has_no_minor_digits() -> None:
    data = invoice_json(jpy_invoice())
    assert (data["subtotal"], data["discount"], data["tax"], data["total"]) == ("1500", "0", "150", "1650")
    assert [line["amount"] for line in data["lines"]] == ["1000", "500"]


def test_json_credit_note_and_draft() -> None:
    data = invoice_json(credit_note())
    assert (data["kind"], data["refers_to"], data["total"]) == ("credit_note", "INV-2026-000042", "59.50")
    assert data["reason"] == "API calls double-counted on 12 March"
    draft = invoice_json(usd_invoice(number=None, status=InvoiceStatus.DRAFT, issue_date=None, due_date=None))
    assert (draft["number"], draft["status"], draft["issue_date"], draft["due_date"]) == (None, "draft", None, None)


# --------------------------------------------------------------------------------------------------- HTML


def test_html_usd_invoice() -> None:
    html = render_html(usd_invoice())
    for text in [
        "INV-2026-000042",
        "Acme Corp",
        "Meterly Inc.",
        "US 12-3456789",
        "Bill to",
        ">Invoice<",
        "April 1, 2026",  # issue date
        "May 1, 2026",  # due date
        "March 2026",  # billing period
        ">Growth<",
        ">Storage add-on<",
        "Late usage of February 2026: Storage add-on",
        "Subscription fee, March 2026 (billed in advance)",
        f"1,500,000{NBSP}calls",
        f"120.5{NBSP}GB-months",
        f"154{NBSP}GB-months",
        "$394.45",  # subtotal
        "Tax (19%)",
        "$74.95",
        "$469.40",  # total and amount due
        "Net 30 days",
    ]:
        assert text in html, text
    assert "Discounts" not in html  # zero discount: no row
    assert "DRAFT" not in html


def test_html_breakdown_rows_keep_unit_price_digits() -> None:
    html = render_html(usd_invoice())
    # tier, range, units, unit price, flat fee, amount — each row of the API calls breakdown
    rows = [
        ["1", "0 – 100,000", "100,000", "$0.00", "$0.00", "$0.00"],
        ["2", "100,000 – 1,000,000", "900,000", "$0.00025", "$0.00", "$225.00"],
        ["3", "above 1,000,000", "500,000", "$0.0002", "$5.00", "$105.00"],
    ]
    for row in rows:
        for cell in row:
            assert f">{cell}</td>" in html, cell
    assert ">$0.10</td>" in html  # storage per-unit price, not rounded away


def test_html_service_period_only_when_it_differs() -> None:
    html = render_html(usd_invoice())
    assert "Service period:" not in html  # late usage names its period in its account instead
    lines = (replace(usd_invoice().lines[2], service_start=dt.date(2026, 3, 10)),)
    html = render_html(usd_invoice(lines=lines))
    assert html.count("Service period:") == 1
    assert "Service period: March 10, 2026 – March 31, 2026" in html


def test_html_jpy_invoice() -> None:
    html = render_html(jpy_invoice())
    assert "¥1,650" in html
    assert "¥1,500" in html
    assert ">¥0.5</td>" in html  # a unit price below the yen keeps its digit
    assert "Tax (10%)" in html


def test_html_eur_invoice_in_german() -> None:
    html = render_html(eur_invoice())
    assert f"1.234,56{NBSP}€" in html  # total
    assert f"1.078,80{NBSP}€" in html  # subtotal
    assert f"-50,00{NBSP}€" in html  # discounts row
    assert "Rabatte" in html
    assert f"205,76{NBSP}€" in html
    assert f"USt. (20{NBSP}%)" in html
    assert "1. April 2026" in html
    assert "März 2026" in html
    assert f"57.980{NBSP}Ereignisse" in html
    assert f">0,01{NBSP}€</td>" in html
    assert "10.000 – 100.000" in html
    assert 'lang="de-DE"' in html


def test_html_discount_section_heading_in_the_documents_language() -> None:
    """A coupon's line sits in the section stored as "Discounts"; a German invoice heads it "Rabatte" (the
    engine's word, translated), as its totals row. Same totals as ``eur_invoice``: the 50.00 now a coupon line."""
    base = eur_invoice()
    terms = {"amount_off": "50.00", "currency": "EUR", "duration": "once"}
    coupon = InvoiceLine(
        kind="discount",
        description="Coupon TREUE50: 50.00 EUR off, once",
        amount=Decimal("-50.00"),
        section=DISCOUNT_SECTION,
        details=LineDetails(extra={"coupon": "TREUE50", "terms": terms}),
    )
    html = render_html(replace(base, lines=(*base.lines, coupon), discount=Decimal("50.00")))
    assert '<tr class="section"><td colspan="3">Rabatte</td></tr>' in html
    assert f"Gutschein TREUE50: 50,00{NBSP}€ Rabatt auf einen Abrechnungszeitraum" in html
    assert "Discounts" not in html and "Coupon" not in html
    assert f"-50,00{NBSP}€" in html
    english = render_html(replace(base, locale="en_US", lines=(*base.lines, coupon), discount=Decimal("50.00")))
    assert '<tr class="section"><td colspan="3">Discounts</td></tr>' in english
    assert "Coupon TREUE50: 50.00 EUR off, once" in english  # the line's own words


def test_a_late_true_up_and_a_top_up_are_worded_in_the_documents_language() -> None:
    """A minimum commitment's true-up re-rated by late usage, and the credit a top-up invoice sells: the engine's
    words, in German ("Ausgleich zur Mindestabnahme — Nachberechnung …", "Prepaid credit" translated)."""
    fmt = Formatter("EUR", "de_DE", translations("de_DE"))
    late = {"period": "2026-02", "charge": "Minimum commitment true-up (Enterprise)", "plan": "Enterprise",
            "rated_now": "90.00", "billed_before": "120.00"}  # fmt: skip
    re_rated = InvoiceLine(
        kind="late_usage", description="Minimum commitment true-up (Enterprise) — late usage of 2026-02",
        amount=Decimal("-30.00"), service_start=dt.date(2026, 2, 1), service_end=dt.date(2026, 3, 1),
        details=LineDetails(extra={"minimum": "500.00", "late": late}),
    )  # fmt: skip
    german = "Ausgleich zur Mindestabnahme — " + fmt._("late usage of %(period)s", period="Februar 2026")
    assert line_description(re_rated, fmt) == german and "Minimum" not in german
    given_back = InvoiceLine(  # (as the engine composes it: no account, no meter)
        kind="late_usage", description="Minimum commitment true-up of 2026-02, adjusted for late usage",
        amount=Decimal("-120.00"), service_start=dt.date(2026, 2, 1), service_end=dt.date(2026, 3, 1),
        details=LineDetails(explanation="now 0 − billed 120.00"),
    )  # fmt: skip
    assert line_description(given_back, fmt) == german
    sold = InvoiceLine(kind="credit", description="Prepaid credit (EUR)", amount=Decimal("100.00"))
    topup = replace(eur_invoice(), lines=(sold,), scope=InvoiceScope.CREDIT, billing_key="topup:7")
    assert line_description(sold, fmt, topup) == f"{fmt._('Prepaid credit')} (EUR)"
    assert fmt._("Prepaid credit") != "Prepaid credit"
    english = Formatter("EUR", "en_US")
    assert line_description(sold, english, topup) == "Prepaid credit (EUR)"
    assert line_description(re_rated, english) == "Minimum commitment true-up (Enterprise) — late usage of February 2026"
    assert line_description(given_back, english) == "Minimum commitment true-up of 2026-02, adjusted for late usage"


@pytest.mark.parametrize(
    ("months", "worded"),
    [
        (1, "скидка 20{NBSP}% на 1 расчётный период"),
        (3, "скидка 20{NBSP}% на 3 расчётных периода"),
        (5, "скидка 20{NBSP}% на 5 расчётных периодов"),
        (21, "скидка 20{NBSP}% на 21 расчётный период"),
    ],
)
def test_a_repeating_coupons_terms_take_the_languages_plural(months: int, worded: str) -> None:
    """Russian has three forms: 1 and 21 период, 3 периода, 5 периодов."""
    terms = {"percent_off": "20", "duration": "repeating", "months": months}
    line = InvoiceLine(
        kind="discount",
        description="Coupon SPRING",
        amount=Decimal("-10.00"),
        section=DISCOUNT_SECTION,
        details=LineDetails(extra={"coupon": "SPRING", "terms": terms}),
    )
    fmt = Formatter("RUB", "ru_RU", translations("ru_RU"))
    assert line_description(line, fmt) == "Купон SPRING: " + worded.format(NBSP=NBSP)


def test_html_credit_note() -> None:
    html = render_html(credit_note())
    assert ">Credit note<" in html
    assert "CN-2026-000001" in html
    assert "Credits invoice INV-2026-000042" in html
    assert "API calls double-counted on 12 March" in html
    assert "Total credited" in html
    assert "$59.50" in html
    assert "Amount due" not in html


def test_html_draft_and_void_marks() -> None:
    draft = render_html(usd_invoice(number=None, status=InvoiceStatus.DRAFT, issue_date=None, due_date=None))
    assert '<div class="watermark">DRAFT</div>' in draft
    assert "INV-" not in draft
    void = render_html(usd_invoice(status=InvoiceStatus.VOID))
    assert '<div class="watermark">VOID</div>' in void
    assert "INV-2026-000042" in void


def test_html_escapes_customer_fields() -> None:
    evil = Party(name="<script>alert('x')</script> & Co", address=('<img src="x">',))
    html = render_html(usd_invoice(customer=evil))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co" in html
    assert "&lt;img src=&#34;x&#34;&gt;" in html


def test_html_has_no_network_resources() -> None:
    html = render_html(usd_invoice())
    assert "http://" not in html
    assert "https://" not in html
    assert "<link" not in html


# --------------------------------------------------------------------------------------------------- PDF


def pdf_pages(pdf: bytes, tmp_path: Path) -> int:
    """The number of pages, counted by rasterizing with pdftoppm (skips the test when poppler is missing)."""
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed")
    source = tmp_path / "invoice.pdf"
    source.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-png", "-r", "10", str(source), str(tmp_path / "page")], check=True)
    return len(list(tmp_path.glob("page*.png")))


def test_pdf_small_invoice_is_one_page(tmp_path: Path) -> None:
    pdf = render_pdf(usd_invoice())
    assert pdf.startswith(b"%PDF")
    assert pdf_pages(pdf, tmp_path) == 1


def test_pdf_credit_note_and_german_invoice() -> None:
    for invoice in (credit_note(), eur_invoice()):
        pdf = render_pdf(invoice)
        assert pdf.startswith(b"%PDF")


def test_pdf_long_invoice_breaks_across_pages(tmp_path: Path) -> None:
    pdf = render_pdf(long_invoice(30))
    assert pdf.startswith(b"%PDF")
    assert pdf_pages(pdf, tmp_path) >= 2


def percentage_invoice(kind: UnitAmountKind) -> Invoice:
    """Card payments: 2 events free, then 2.9 % of 1,100.00 + 2 × 0.30 = 32.50 (rows of the percentage model)."""
    line = InvoiceLine(
        kind="usage",
        description="Card payments",
        amount=Decimal("32.50"),
        quantity=Decimal("1150"),
        section="Growth (v1)",
        meter="payments",
        model="percentage",
        details=LineDetails(
            breakdown=(
                tier(1, "0", "50", "50", "0", "0", "0", "2 events free", kind),
                tier(2, "50", None, "1100", "2.9", "0.60", "32.500", "2 events", kind),
            )
        ),
    )
    total = Decimal("32.50")
    return replace(usd_invoice(), lines=(line,), subtotal=total, tax_rate=Decimal(0), tax=Decimal("0.00"), total=total)


def test_html_prints_a_breakdown_as_its_rows_say_rates_in_percent_or_prices() -> None:
    html = render_html(percentage_invoice(UnitAmountKind.PERCENT))
    assert '<th class="num">Value</th>' in html and '<th class="num">Rate</th>' in html
    for cell in ["$1,100.00", "2.9%", "$0.60", "$32.50", "$50.00", "0%"]:
        assert f">{cell}</td>" in html, cell
    # the same rows saying their unit amounts are prices: the model's name does not decide
    html = render_html(percentage_invoice(UnitAmountKind.PRICE))
    assert '<th class="num">Units</th>' in html and '<th class="num">Unit price</th>' in html
    for cell in ["1,100", "$2.90", "$0.60", "$32.50"]:
        assert f">{cell}</td>" in html, cell
    assert ">2.9%</td>" not in html


def test_json_gives_the_breakdown_rows_as_strings_without_their_kind() -> None:
    (line,) = invoice_json(percentage_invoice(UnitAmountKind.PERCENT))["lines"]
    assert line["kind"] == "usage" and type(line["kind"]) is str
    assert line["details"] == {
        "breakdown": [
            {"tier": 1, "from": "0", "to": "50", "units": "50", "unit_amount": "0", "flat_amount": "0",
             "amount": "0", "note": "2 events free"},
            {"tier": 2, "from": "50", "to": None, "units": "1100", "unit_amount": "2.9", "flat_amount": "0.60",
             "amount": "32.500", "note": "2 events"},
        ]
    }  # fmt: skip


def test_credits_applied_are_rows_below_the_total_and_reduce_the_amount_due() -> None:
    from invoices.model import AppliedCredit

    invoice = usd_invoice(
        credits_applied=(
            AppliedCredit("free", "Free credit: welcome", Decimal("50.00"), 1),
            AppliedCredit("balance", "Customer balance", Decimal("20.32"), 2),
        )
    )
    # total 469.40 − 50.00 − 20.32 = 399.08
    data = invoice_json(invoice)
    assert data["credits_applied"] == [
        {"kind": "free", "description": "Free credit: welcome", "amount": "50.00", "grant": 1},
        {"kind": "balance", "description": "Customer balance", "amount": "20.32", "grant": 2},
    ]
    assert data["amount_due"] == "399.08"
    html = render_html(invoice)
    assert "Free credit: welcome" in html and "Customer balance" in html
    assert "-$50.00" in html and "$399.08" in html


def test_payments_received_are_a_row_below_the_credits_and_reduce_the_amount_due() -> None:
    from invoices.model import AppliedCredit

    invoice = usd_invoice(
        credits_applied=(AppliedCredit("free", "Free credit: welcome", Decimal("50.00"), 1),),
        amount_paid=Decimal("100.00"),
    )
    # total 469.40 − 50.00 of credit − 100.00 paid = 319.40
    data = invoice_json(invoice)
    assert (data["amount_paid"], data["amount_due"]) == ("100.00", "319.40")
    html = render_html(invoice)
    assert "Payments received" in html and "-$100.00" in html and "$319.40" in html


def test_a_negative_total_is_kept_and_nothing_is_due() -> None:
    invoice = usd_invoice(total=Decimal("-20.32"))
    assert invoice_json(invoice)["amount_due"] == "0.00"
    assert "To the customer&#39;s balance" in render_html(invoice) or "To the customer's balance" in render_html(invoice)
