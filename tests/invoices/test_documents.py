"""Invoices read as their customer reads them: the PDF's text (pdftotext), its pages as pictures (pdftoppm) and
its fonts (pdffonts). A German invoice reads German, a Japanese one Japanese (drawn with a CJK font), units take
the plural the number asks for, how to pay is printed, late usage and credit notes explain themselves, and no
page holds only the footer.

Every expected string is worked out by hand from the invoice the test writes.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image

from invoices.i18n import LOCALE_DIR, catalog_languages, catalog_problems, translations, unit_name
from invoices.model import InvoiceLine, InvoiceStatus, LineDetails, LineKind, Party, PaymentInstructions
from invoices.render import invoice_json, render_html, render_pdf
from tests.invoices.test_render import credit_note, eur_invoice, jpy_invoice, long_invoice, tier, usd_invoice
from tests.pdf import pdf_fonts, pdf_pictures, pdf_rows, pdf_text, pdf_words

PAYMENT = PaymentInstructions(
    bank_name="Bank of Ireland",
    account_holder="Meterly Inc.",
    iban="IE29 AIBK 9311 5212 3456 78",
    bic="AIBKIE2D",
    reference="INV-2026-000044",
    pay_online_url="https://invoice.stripe.com/i/acct_1Test/test_YWNjdF8x",
)


def _inked(picture: Path) -> float:
    """The share of a page's pixels that are not white: a page with only its footer has almost none."""
    image = Image.open(picture).convert("L")
    histogram = image.histogram()
    return 1 - sum(histogram[245:]) / (image.width * image.height)


# --------------------------------------------------------------------------------------------------- languages


def test_a_german_invoice_reads_german(tmp_path: Path) -> None:
    pdf = render_pdf(replace(eur_invoice(), payment=PAYMENT))
    pictures = pdf_pictures(pdf, tmp_path)
    assert len(pictures) == 1 and _inked(pictures[0]) > 0.02
    text = pdf_text(pdf)
    for label in [
        "Rechnung", "RECHNUNGSEMPFÄNGER", "Rechnungsdatum", "Fällig am", "Abrechnungszeitraum", "ZAHLBETRAG",
        "BESCHREIBUNG", "MENGE", "BETRAG", "Zwischensumme", "Rabatte", "USt. (20 %)", "Gesamtbetrag", "Zahlbetrag",
        "ZAHLUNG", "Kontoinhaber", "Verwendungszweck", "Stufe", "Einzelpreis", "Seite 1 von 1",
        "USt-IdNr. DE123456789",
    ]:  # fmt: skip
        assert label in text, label
    # 499.00 + 579.80 = 1,078.80 − 50.00 = 1,028.80; tax 20 % = 205.76; total 1,234.56
    for amount in ["1.078,80 €", "-50,00 €", "205,76 €", "1.234,56 €", "0,01 €", "57.980 Ereignisse"]:
        assert amount in text, amount
    assert "Zahlbar innerhalb von 30 Tagen: Bitte überweisen Sie 1.234,56 € bis zum 1. Mai 2026" in text
    words = text.replace(PAYMENT.pay_online_url or "", "").casefold()  # the link's address is no label
    for english in ["Invoice", "Amount due", "Subtotal", "Bill to", "Description", "Quantity", "Page 1", "Tax ID"]:
        assert english.casefold() not in words, english


@pytest.mark.parametrize(
    ("locale", "labels"),
    [
        ("fr_FR", ["Facture", "FACTURÉ À", "Montant dû", "Sous-total", "TVA (20 %)", "Page 1 sur 1"]),
        ("es_ES", ["Factura", "FACTURAR A", "Importe a pagar", "Subtotal", "IVA (20 %)", "Página 1 de 1"]),
        ("ru_RU", ["Счёт", "ПЛАТЕЛЬЩИК", "К оплате", "Промежуточный итог", "НДС (20 %)", "Страница 1 из 1"]),
    ],
)
def test_each_catalogued_language_prints_its_labels(locale: str, labels: list[str]) -> None:
    text = pdf_text(render_pdf(replace(eur_invoice(), locale=locale)))
    for label in labels:
        assert label in text, label
    assert "Amount due".casefold() not in text.casefold() and "Bill to".casefold() not in text.casefold()


def test_a_japanese_invoice_is_drawn_with_a_cjk_font(tmp_path: Path) -> None:
    customer = Party(name="株式会社サンプル", address=("東京都千代田区丸の内1-1-1",), external_id="kaisha")
    pdf = render_pdf(replace(jpy_invoice(), locale="ja_JP", customer=customer, payment=PAYMENT))
    fonts = pdf_fonts(pdf)
    assert "Noto-Sans-CJK-JP" in fonts or "NotoSansCJK" in fonts, fonts  # the glyphs come from Noto Sans CJK
    text = pdf_text(pdf)
    # the labels come back out of the PDF as text: the glyphs are real characters, not boxes
    for label in ["請求書", "請求先", "ご請求金額", "小計", "消費税（10%）", "合計", "お支払い方法", "株式会社サンプル", "口座名義"]:
        assert label in text, label
    # ¥1,000 + ¥500 = ¥1,500; tax 10 % = ¥150; total ¥1,650; 1,000 calls
    for amount in ["￥1,500", "￥150", "￥1,650", "1,000 回", "2026年4月15日"]:
        assert amount in text, amount
    pictures = pdf_pictures(pdf, tmp_path)
    assert len(pictures) == 1
    # the title 請求書 is drawn at the top right: ink there
    page = Image.open(pictures[0]).convert("L")
    title = page.crop((int(page.width * 0.6), int(page.height * 0.04), page.width, int(page.height * 0.1)))
    assert title.getextrema()[0] < 100  # type: ignore[index]


def test_a_locale_without_a_catalog_prints_english_labels_with_its_own_numbers() -> None:
    text = pdf_text(render_pdf(replace(eur_invoice(), locale="pt_BR")))
    assert "Amount due" in text and "Subtotal" in text and "BILL TO" in text
    assert "R$" not in text and "€ 1.234,56" in text  # Brazilian Portuguese writes euros "€ 1.234,56"


# --------------------------------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("unit", "quantity", "locale", "expected"),
    [
        ("request", "1", "en_US", "request"),
        ("request", "260000", "en_US", "requests"),
        ("request", "0", "en_US", "requests"),
        ("GB-month", "1.5", "en_US", "GB-months"),
        ("call", "1", "de_DE", "Aufruf"),
        ("call", "3", "de_DE", "Aufrufe"),
        ("call", "1", "ru_RU", "вызов"),
        ("call", "3", "ru_RU", "вызова"),
        ("call", "5", "ru_RU", "вызовов"),
        ("call", "21", "ru_RU", "вызов"),
        ("call", "1.5", "ru_RU", "вызова"),  # a fraction takes the genitive singular
        ("call", "2", "fr_FR", "appels"),
        ("call", "2", "ja_JP", "回"),
        ("widget", "1", "en_US", "widget"),  # a unit the catalogs do not know, without a plural: as written
        ("widget", "2", "en_US", "widget"),
    ],
)
def test_units_take_the_form_their_number_asks_for(unit: str, quantity: str, locale: str, expected: str) -> None:
    assert unit_name(unit, Decimal(quantity), locale) == expected


def test_a_meters_unit_plural_is_used_for_units_the_catalogs_do_not_know() -> None:
    assert unit_name("widget", Decimal(2), "en_US", "widgets") == "widgets"
    assert unit_name("widget", Decimal(1), "en_US", "widgets") == "widget"
    line = InvoiceLine(
        kind=LineKind.USAGE, description="Widgets", amount=Decimal("5.00"), quantity=Decimal("50"), unit="widget",
        details=LineDetails(extra={"unit_plural": "widgets"}),
    )  # fmt: skip
    invoice = replace(usd_invoice(), lines=(line,), subtotal=Decimal("5.00"), tax=Decimal("0.95"), total=Decimal("5.95"))
    assert "50\xa0widgets" in render_html(invoice)


def test_a_usage_line_prints_its_plural_unit() -> None:
    line = replace(usd_invoice().lines[1], quantity=Decimal("260000"), unit="request")
    text = pdf_text(render_pdf(replace(usd_invoice(), lines=(line,))))
    assert "260,000 requests" in text and "260,000 request " not in text


# --------------------------------------------------------------------------------------------------- content


def test_tier_amounts_are_printed_to_the_cent_and_kept_exact_in_json() -> None:
    # 3 tiers: 1,000 × 0.0137443548 = 13.7443548; 2,000 × 0.0111 = 22.2; total 35.9443548 → 35.94
    rows = (
        tier(1, "0", "1000", "1000", "0.0137443548", "0", "13.7443548"),
        tier(2, "1000", None, "2000", "0.0111", "0.005", "22.205"),
    )
    line = replace(usd_invoice().lines[1], amount=Decimal("35.95"), quantity=Decimal("3000"), details=LineDetails(breakdown=rows))
    invoice = replace(usd_invoice(), lines=(line,))
    text = pdf_text(render_pdf(invoice))
    assert "$13.74" in text and "$22.21" in text  # the tier amounts, rounded half up to the cent (22.205)
    assert "$0.01" in text  # the flat fee 0.005, to the cent
    assert "$0.0137443548" in text and "$0.0111" in text  # unit prices keep their digits
    assert "13.7443548" not in text.replace("0.0137443548", "")
    breakdown = invoice_json(invoice)["lines"][0]["details"]["breakdown"]
    assert [row["amount"] for row in breakdown] == ["13.7443548", "22.205"]


def test_late_usage_explains_itself_on_the_page() -> None:
    text = pdf_text(render_pdf(usd_invoice()))
    assert "Late usage of February 2026: Storage add-on" in text
    assert "Storage — late usage of February 2026" in text
    # February re-rated: 154 GB-month × 0.10 = 15.40; 12.00 billed before; difference 3.40
    assert "re-rated February 2026: $15.40; billed before: $12.00; difference $3.40" in text
    german = pdf_text(render_pdf(usd_invoice(locale="de_DE")))
    assert "Februar 2026 neu berechnet: 15,40 $; bereits berechnet: 12,00 $; Differenz 3,40 $" in german


def test_no_internal_ids_on_the_document() -> None:
    # a line of subscription 1 in section "Growth": the id stays with the line, the page names the plan
    html = render_html(usd_invoice())
    text = pdf_text(render_pdf(usd_invoice()))
    for internal in ["subscription 1", "(v1)", "plan growth", "billing_key", "period:acme"]:
        assert internal not in text and internal not in html, internal
    assert "Growth" in text and "Storage add-on" in text


def test_two_subscriptions_of_one_plan_keep_their_own_sections() -> None:
    first = usd_invoice().lines[1]
    lines = (first, replace(first, subscription_id=9))
    html = render_html(usd_invoice(lines=lines))
    assert html.count('<tr class="section"><td colspan="3">Growth</td></tr>') == 2


def test_a_negotiated_price_is_marked_in_the_documents_language() -> None:
    lines = tuple(replace(line, section="Growth (negotiated price)") for line in usd_invoice().lines[:2])
    assert "Growth (negotiated price)" in render_html(usd_invoice(lines=lines))
    assert "Growth (vereinbarter Preis)" in render_html(usd_invoice(lines=lines, locale="de_DE"))


def test_a_credit_note_shows_its_lines(tmp_path: Path) -> None:
    pdf = render_pdf(credit_note())
    assert len(pdf_pictures(pdf, tmp_path)) == 1
    text, rows = pdf_text(pdf), pdf_rows(pdf)
    # 50.00 net + 19 % tax 9.50 = 59.50 credited on INV-2026-000042
    assert "Credit note" in text and "CN-2026-000001" in text
    assert "Credit on invoice INV-2026-000042 1 $50.00" in rows  # the line: description, quantity, amount
    for row in ["Subtotal $50.00", "Tax (19%) $9.50", "Total $59.50", "Total credited $59.50"]:
        assert any(line.endswith(row) for line in rows), row
    assert "HOW TO PAY" not in text and "Amount due".casefold() not in text.casefold()
    german = pdf_text(render_pdf(replace(credit_note(), locale="de_DE")))
    assert "Gutschrift zur Rechnung INV-2026-000042" in german and "Gutgeschrieben" in german
    # a credit note stored without its line (before credit notes stored theirs) prints it from its net amount
    assert "Credit on invoice INV-2026-000042 1 $50.00" in pdf_rows(render_pdf(replace(credit_note(), lines=())))


# --------------------------------------------------------------------------------------------------- how to pay


def test_how_to_pay_prints_the_bank_account_the_reference_and_the_online_page() -> None:
    text = pdf_text(render_pdf(usd_invoice(payment=replace(PAYMENT, reference="INV-2026-000042"))))
    assert "HOW TO PAY" in text
    assert "Net 30 days: please pay $469.40 by May 1, 2026, quoting INV-2026-000042 as the payment reference." in text
    for row in ["Account holder Meterly Inc.", "Bank Bank of Ireland", "IBAN IE29 AIBK 9311 5212 3456 78",
                "BIC AIBKIE2D", "Reference INV-2026-000042"]:  # fmt: skip
        assert row in text, row
    assert "Pay online: https://invoice.stripe.com/i/acct_1Test/test_YWNjdF8x" in text


def test_how_to_pay_without_instructions_asks_for_the_invoice_number() -> None:
    text = pdf_text(render_pdf(usd_invoice()))
    assert "quoting INV-2026-000042 as the payment reference" in text
    assert "IBAN" not in text and "Pay online" not in text


def test_a_paid_or_settled_invoice_asks_for_nothing() -> None:
    text = pdf_text(render_pdf(usd_invoice(status=InvoiceStatus.PAID, payment=PAYMENT)))
    assert "Paid. Thank you — nothing is left to pay on this invoice." in text
    assert "HOW TO PAY" not in text and "IBAN" not in text


# --------------------------------------------------------------------------------------------------- pages


@pytest.mark.parametrize("count", range(8, 21, 3))
def test_no_page_holds_only_the_footer(count: int, tmp_path: Path) -> None:
    pdf = render_pdf(long_invoice(count))
    pictures = pdf_pictures(pdf, tmp_path)
    for page in range(1, len(pictures) + 1):
        text = pdf_text(pdf, page)
        assert "$" in text, f"page {page} of {len(pictures)}: {text}"  # an amount besides the footer
        assert f"Page {page} of {len(pictures)}" in text
    assert "HOW TO PAY" in pdf_text(pdf, len(pictures))  # the totals and how to pay end the last page
    assert any(row.endswith(f"Total ${count * 10}.00") for row in pdf_rows(pdf)[-8:])


def test_a_section_heading_never_ends_a_page(tmp_path: Path) -> None:
    # 15 lines of "Growth", then "Scale": wherever the page breaks, a heading is followed by its first line
    pdf = render_pdf(long_invoice(30))
    for page in range(1, len(pdf_pictures(pdf, tmp_path)) + 1):
        text = pdf_text(pdf, page)
        for heading in ("Growth", "Scale"):
            if heading in text:
                assert text.index(heading) < text.rfind("Meter"), (page, text)


# --------------------------------------------------------------------------------------------------- catalogs


def test_the_catalogs_translate_every_label() -> None:
    assert {"en", "de", "fr", "es", "ru", "ja"} <= set(catalog_languages())
    assert catalog_problems() == []


def test_the_template_of_the_catalogs_lists_every_label_of_the_sources(tmp_path: Path) -> None:
    """`make translations` extracts the labels; a label added to the template or the renderer without it is
    found here."""
    from babel.messages.pofile import read_po

    root = Path(__file__).resolve().parents[2]
    target = tmp_path / "invoices.pot"
    pybabel = Path(sys.executable).parent / "pybabel"
    subprocess.run(
        [str(pybabel), "extract", "-F", "babel.cfg", "-k", "_unit_forms:1,2", "--no-location", "-o", str(target),
         "."],
        cwd=root, check=True, capture_output=True,
    )  # fmt: skip
    with target.open("rb") as fresh, (LOCALE_DIR / "invoices.pot").open("rb") as kept:
        assert {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(fresh)} == {
            m.id if isinstance(m.id, str) else m.id[0] for m in read_po(kept)
        }


def test_catalogs_compile_from_the_po_files_on_a_fresh_clone() -> None:
    assert not list(LOCALE_DIR.rglob("*.mo"))  # nothing compiled is kept: the .po files are compiled when used
    assert translations("de_DE").gettext("Amount due") == "Zahlbetrag"
    assert translations("de_AT").gettext("Amount due") == "Zahlbetrag"  # by language
    assert translations("en_GB").gettext("Amount due") == "Amount due"


def test_fee_lines_read_in_the_documents_language() -> None:
    fee = usd_invoice().lines[0]  # March's fee, billed in advance: a whole month prints by its name
    html = render_html(usd_invoice(lines=(fee,), locale="fr_FR"))
    assert "Abonnement, mars 2026 (terme à échoir)" in html
    assert "Growth subscription" not in html
    assert "49.00 for the full period" not in html  # the engine's English explanation: English documents only
    assert "49.00 for the full period (31 days)" in render_html(usd_invoice(lines=(fee,)))


def test_a_partly_paid_invoice_shows_the_payments_and_asks_for_the_rest() -> None:
    # total 469.40 − 200.00 received = 269.40 due
    invoice = usd_invoice(amount_paid=Decimal("200.00"), payment=replace(PAYMENT, reference="INV-2026-000042"))
    rows = pdf_rows(render_pdf(invoice))
    assert any(row.endswith("Payments received -$200.00") for row in rows)
    assert any(row.endswith("Amount due $269.40") for row in rows)
    assert "please pay $269.40 by May 1, 2026" in pdf_text(render_pdf(invoice))
    german = pdf_rows(render_pdf(replace(invoice, locale="de_DE")))
    assert any(row.endswith("Erhaltene Zahlungen -200,00 $") for row in german)


def test_taxes_print_per_rate_with_the_reverse_charge_wording_in_the_documents_language() -> None:
    from invoices.model import TaxLine

    # 394.45 net: 300.00 at 19 % = 57.00 and 94.45 reverse-charged at 0 %; total 451.45
    taxes = (
        TaxLine(rate=Decimal(19), taxable=Decimal("300.00"), amount=Decimal("57.00"), name="VAT"),
        TaxLine(rate=Decimal(0), taxable=Decimal("94.45"), amount=Decimal("0.00"), name="VAT", reverse_charge=True,
                note="Reverse charge: the customer accounts for the VAT (Article 196 of Directive 2006/112/EC)"),
    )  # fmt: skip
    invoice = usd_invoice(taxes=taxes, tax=Decimal("57.00"), total=Decimal("451.45"))
    rows = pdf_rows(render_pdf(invoice))
    assert any(row.endswith("VAT (19%) $57.00") for row in rows) and any(row.endswith("VAT (0%) $0.00") for row in rows)
    text = pdf_text(render_pdf(invoice))
    assert "Reverse charge: VAT to be accounted for by the recipient (Article 196, Directive 2006/112/EC)." in text
    german = pdf_text(render_pdf(replace(invoice, locale="de_DE")))
    assert "USt. (19 %) 57,00 $" in german
    assert "Steuerschuldnerschaft des Leistungsempfängers (Reverse Charge, Art. 196 Richtlinie 2006/112/EG)." in german
    assert "Reverse charge" not in german.replace("(Reverse Charge", "")


def test_an_exempt_buyers_reason_is_printed_once_in_the_documents_language() -> None:
    from invoices.model import TaxLine

    exempt = TaxLine(rate=Decimal(0), taxable=Decimal("394.45"), amount=Decimal("0.00"), exempt_reason="charity",
                     note="Exempt from tax: charity")  # fmt: skip
    invoice = usd_invoice(taxes=(exempt,), tax=Decimal("0.00"), total=Decimal("394.45"))
    assert pdf_text(render_pdf(invoice)).count("Exempt from tax: charity") == 1
    german = pdf_text(render_pdf(replace(invoice, locale="de_DE")))
    assert "Steuerbefreit: charity" in german and "Exempt from tax" not in german


def test_tax_inside_tax_inclusive_prices_is_printed_under_the_total_and_adds_nothing() -> None:
    from invoices.model import TaxLine

    # prices of 394.45 that include 19 % VAT: tax 394.45 × 19 / 119 = 62.979… → 62.98, net 331.47; total 394.45
    included = TaxLine(rate=Decimal(19), taxable=Decimal("331.47"), amount=Decimal("62.98"),
                       included=Decimal("62.98"), name="VAT")  # fmt: skip
    invoice = usd_invoice(taxes=(included,), tax=Decimal("62.98"), total=Decimal("394.45"))
    rows = pdf_rows(render_pdf(invoice))
    assert any(row.endswith("Subtotal $394.45") for row in rows)
    assert any(row.endswith("Total $394.45") for row in rows)
    assert any(row.endswith("of which VAT (19%) $62.98") for row in rows)
    assert not any(row.endswith("VAT (19%) $62.98") and "of which" not in row for row in rows)  # nothing added
    german = pdf_rows(render_pdf(replace(invoice, locale="de_DE")))
    assert any(row.endswith("davon USt. (19 %) 62,98 $") for row in german)


def test_a_rate_with_tax_on_top_and_tax_inside_prints_each_part_once() -> None:
    from invoices.model import TaxLine

    # 19 %: 300.00 of tax-exclusive prices (tax 57.00 added) and 119.00 of tax-inclusive ones (19.00 inside)
    mixed = TaxLine(rate=Decimal(19), taxable=Decimal("400.00"), amount=Decimal("76.00"), included=Decimal("19.00"),
                    name="VAT")  # fmt: skip
    invoice = usd_invoice(taxes=(mixed,), tax=Decimal("76.00"), total=Decimal("451.45"))
    rows = pdf_rows(render_pdf(invoice))
    assert any(row.endswith("VAT (19%) $57.00") and "of which" not in row for row in rows)
    assert any(row.endswith("of which VAT (19%) $19.00") for row in rows)


def test_credits_applied_read_in_the_documents_language() -> None:
    from invoices.model import AppliedCredit

    # total 469.40 − 10.00 free credit − 5.00 of a credit note's balance = 454.40 due
    applied = (
        AppliedCredit(kind="free", description="Free credit: welcome", amount=Decimal("10.00"), grant_id=1),
        AppliedCredit(kind="balance", description="Credit note CN-2026-000003", amount=Decimal("5.00"), grant_id=2),
    )
    invoice = usd_invoice(credits_applied=applied, locale="de_DE")
    rows = pdf_rows(render_pdf(invoice))
    assert any(row.endswith("Gratisguthaben: welcome -10,00 $") for row in rows)
    assert any(row.endswith("Gutschrift CN-2026-000003 -5,00 $") for row in rows)
    assert any(row.endswith("Zahlbetrag 454,40 $") for row in rows)
    assert not any("Free credit" in row or "Credit note" in row for row in rows)


def test_a_word_longer_than_its_column_breaks_and_every_amount_stays_on_the_page() -> None:
    """A line split by an event property whose value is a 64-character digest widened the lines table past the A4
    page: the Quantity and Amount columns were drawn off it, and no amount of those lines could be read."""
    digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    invoice = usd_invoice()
    lines = tuple(replace(line, description=f"{line.description} — sha256:{digest}") for line in invoice.lines)
    pdf = render_pdf(replace(invoice, lines=lines))
    width, words = pdf_words(pdf)
    margin = 16 / 25.4 * 72  # the page's 16 mm side margins, in points
    assert [word for _, end, word in words if end > width - margin + 0.5] == []
    text = pdf_text(pdf)
    for line in invoice.lines:
        assert f"${line.amount:,}" in text, line.amount
