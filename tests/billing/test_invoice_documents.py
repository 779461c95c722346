"""The invoice a customer receives, end to end: a billing run's invoice in the customer's language, with how to
pay it from ``[payment_instructions]``, printed by ``billing invoices render``; and the payment instructions'
settings, checked when they are read."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from billing import customers as service
from billing.cli import app
from billing.config import ConfigError, PaymentInstructions, Settings, get_settings
from billing.core.periods import month
from billing.db import session_scope
from billing.invoicing import printable
from billing.metering import meter_specs
from billing.run import finalize_period, run_billing
from invoices import store
from meters import ingest
from pricing_plans.loader import loads_catalog
from tests.pdf import pdf_fonts, pdf_text

CATALOG = """
[meters.api_calls]
name = "API-Aufrufe"
aggregation = "count"
unit = "call"

[meters.widgets]
name = "Widgets"
aggregation = "count"
unit = "widget"
unit_plural = "widgets"

[plans.pro]
name = "Pro"
currency = "EUR"
subscription = { fee = 50.00, billing = "in_arrears" }
[[plans.pro.charges]]
meter = "api_calls"
model = "graduated"
tiers = [{ up_to = 100, unit_amount = 0.10 }, { up_to = "inf", unit_amount = 0.0125 }]
[[plans.pro.charges]]
meter = "widgets"
model = "per_unit"
unit_amount = 1.00
"""

MARCH = month(2026, 3)


def _settings(**payment: str) -> Settings:
    return Settings(payment_instructions=PaymentInstructions(**payment))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------- settings


def test_an_iban_is_checked_and_printed_in_groups_of_four() -> None:
    assert PaymentInstructions(iban="de89370400440532013000").iban == "DE89 3704 0044 0532 0130 00"
    with pytest.raises(ValidationError, match="not a valid IBAN"):
        PaymentInstructions(iban="DE89 3704 0044 0532 0130 01")  # one digit off: the check digits catch it
    with pytest.raises(ValidationError, match="not a BIC"):
        PaymentInstructions(bic="COBA")


def test_the_reference_is_a_format_of_the_number_and_the_customer() -> None:
    assert PaymentInstructions().reference_for("INV-2026-000007", "acme") == "INV-2026-000007"
    custom = PaymentInstructions(reference="{customer}/{number}")
    assert custom.reference_for("INV-2026-000007", "acme") == "acme/INV-2026-000007"
    with pytest.raises(ValidationError, match=r"only \{number\} and \{customer\}"):
        PaymentInstructions(reference="{invoice}")


def test_a_bad_iban_in_the_configuration_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[payment_instructions]\niban = "IE29 AIBK 9311 5212 3456 79"\n')
    monkeypatch.setenv("BILLING_CONFIG", str(config))
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"payment_instructions\.iban: .*not a valid IBAN"):
            get_settings()
    finally:
        get_settings.cache_clear()


# --------------------------------------------------------------------------------------------------- end to end


@pytest.fixture
def german_invoice(engine):
    """acme (de_DE, EUR): 260 calls and 2 widgets in March 2026, the fee in arrears; finalized April 2.

    Calls: 100 × 0.10 + 160 × 0.0125 = 10.00 + 2.00 = 12.00; widgets 2 × 1.00; fee 50.00; total 64.00."""
    catalog, problems = loads_catalog(CATALOG, "catalog.toml")
    assert not problems
    service.create_customer(engine, "acme", "Beispiel GmbH", "ap@beispiel.test", "EUR", timezone="UTC", locale="de_DE")
    service.subscribe(engine, catalog, "acme", "pro", dt.date(2026, 3, 1))
    events = [
        {"id": f"c{i}", "customer": "acme", "meter": "api_calls", "timestamp": "2026-03-10T12:00:00Z"}
        for i in range(260)
    ]
    events += [
        {"id": f"w{i}", "customer": "acme", "meter": "widgets", "timestamp": "2026-03-11T12:00:00Z"} for i in range(2)
    ]
    assert not ingest(engine, events, meter_specs(catalog), {"acme"}).rejected
    run_billing(engine, catalog, MARCH)
    finalize_period(engine, MARCH, store.FinalizeSettings(payment_terms_days=14), dt.date(2026, 4, 2))
    with session_scope(engine) as session:
        return store.get_invoice(session, "period:acme:2026-03")


@pytest.mark.db
def test_a_billing_runs_invoice_prints_in_german_with_how_to_pay(engine, german_invoice) -> None:
    from invoices.render import render_pdf

    settings = _settings(bank_name="Commerzbank", iban="DE89370400440532013000", bic="COBADEFFXXX")
    invoice = printable(engine, german_invoice, settings)
    assert invoice.payment is not None
    assert (invoice.payment.reference, invoice.payment.account_holder) == (german_invoice.number, settings.seller.name)
    text = pdf_text(render_pdf(invoice))
    assert str(german_invoice.total) == "64.00"
    for expected in [
        "Rechnung", "Zahlbetrag", "64,00 €", "Abrechnungszeitraum März 2026", "Grundgebühr, März 2026 (nachträglich)",
        # the catalogs translate "call"; "widget" is the catalog's own unit, with its English plural
        "260 Aufrufe", "2 widgets", "12,00 €", "Zahlbar innerhalb von 14 Tagen: Bitte überweisen Sie 64,00 € bis zum "
        "16. April 2026 unter Angabe des Verwendungszwecks INV-2026-000001.", "IBAN DE89 3704 0044 0532 0130 00",
        "BIC COBADEFFXXX", "Bank Commerzbank", f"Kontoinhaber {settings.seller.name}",
        "Verwendungszweck INV-2026-000001", "Seite 1 von 1",
    ]:  # fmt: skip
        assert expected in text, expected
    assert "subscription" not in text.casefold() and "Pro (" not in text  # the section is the plan's name: "Pro"
    assert "DejaVu" in pdf_fonts(render_pdf(invoice))


@pytest.mark.db
def test_billing_invoices_render_prints_the_configured_payment_instructions(cli_env, engine, german_invoice) -> None:
    """``billing invoices render`` reads ``[payment_instructions]`` of the configuration in force (the sample
    config.toml's Irish account)."""
    target = Path("invoice.pdf")
    result = CliRunner().invoke(app, ["invoices", "render", german_invoice.number, "--format", "pdf", "-o", str(target)])
    assert result.exit_code == 0, result.output
    text = pdf_text(target.read_bytes())
    assert "IBAN IE29 AIBK 9311 5212 3456 78" in text and "BIC AIBKIE2D" in text
    assert "Kontoinhaber Northwind Cloud Ltd." in text
    # the JSON is the stored invoice's, without the printing's payment instructions
    result = CliRunner().invoke(app, ["invoices", "render", german_invoice.number, "--format", "json"])
    assert result.exit_code == 0 and "IE29" not in result.output


@pytest.mark.db
def test_a_draft_has_no_reference_to_quote(engine) -> None:
    catalog, _ = loads_catalog(CATALOG, "catalog.toml")
    service.create_customer(engine, "acme", "Acme", None, "EUR", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "pro", dt.date(2026, 3, 1))
    run_billing(engine, catalog, MARCH)
    with session_scope(engine) as session:
        draft = store.get_invoice(session, "period:acme:2026-03")
    payment = printable(engine, draft, _settings(iban="DE89370400440532013000")).payment
    assert payment is not None and payment.reference is None
