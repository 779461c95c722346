"""The terminal's invoice and upcoming-invoice tables add up: the tax added to the prices between the subtotal
and the total, the tax already inside tax-inclusive prices in "of which" rows under it, a row per rate.

A customer in Germany (seller in Ireland: German VAT) on three plans billed monthly in arrears: 100.00 priced
without tax (19 % → 19.00 on top), 119.00 with the 19 % inside (19.00 of it is tax) and 50.00 at the reduced
7 % (3.50): subtotal 269.00 + 19.00 + 3.50 = 291.50. (The invoice table printed "19 % of 200.00 (included in the
prices) 38.00" and the upcoming invoice one row "Tax (19 %) 41.50": neither added up to the total.)"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing.cli import app
from billing.cli._common import tax_rows
from billing.config import get_settings
from billing.customers import create_customer, subscribe
from billing.db import make_engine
from pricing_plans.loader import load_catalog_or_raise

CATALOG = """
[meters.calls]
name = "Calls"
aggregation = "count"
unit = "call"

[plans.std]
name = "Standard plan"
currency = "EUR"
effective_from = 2025-01-01
subscription = { fee = 100.00, billing = "in_arrears" }

[plans.incl]
name = "Inclusive plan"
currency = "EUR"
effective_from = 2025-01-01
tax_inclusive = true
subscription = { fee = 119.00, billing = "in_arrears" }

[plans.red]
name = "Reduced plan"
currency = "EUR"
effective_from = 2025-01-01
tax_category = "reduced"
subscription = { fee = 50.00, billing = "in_arrears" }
"""

CONFIG = """
[seller]
name = "Seller Ltd"
country = "IE"

[tax.rates]
DE = { standard = 19, reduced = 7, name = "MwSt." }
"""

runner = CliRunner()

# 100.00 + 19 % on top, 119.00 with 19 % inside, 50.00 + 7 %: 269.00 + 19.00 + 3.50 = 291.50
ROWS = [
    "Subtotal 269.00",
    "MwSt. 19 % on top of the prices 19.00",
    "MwSt. 7 % of 50.00 3.50",
    "Total 291.50",
    "of which MwSt. 19 % inside the prices 19.00",
]


@pytest.fixture
def german(cli_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "catalog.toml").write_text(CATALOG, encoding="utf-8")
    (tmp_path / "config.toml").write_text(CONFIG, encoding="utf-8")
    monkeypatch.setenv("BILLING_CATALOG", str(tmp_path / "catalog.toml"))
    monkeypatch.setenv("BILLING_CONFIG", str(tmp_path / "config.toml"))
    get_settings.cache_clear()
    catalog = load_catalog_or_raise(tmp_path / "catalog.toml")
    engine = make_engine(cli_env["BILLING_DATABASE_URL"])
    create_customer(engine, "de", "DE B2C", None, "EUR", "UTC", country="DE")
    for plan in ("std", "incl", "red"):
        subscribe(engine, catalog, "de", plan, dt.date(2026, 3, 1))
    yield engine
    engine.dispose()


def _rows(output: str) -> list[str]:
    """The table's rows from the subtotal on, each as its words."""
    lines = [" ".join(line.replace("│", " ").split()) for line in output.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("Subtotal"))
    return [line for line in lines[start:] if line and not set(line) <= set("─━┃╇┡┩└┘┴+-=")]


def test_an_invoice_with_two_rates_and_a_tax_inclusive_price_adds_up_in_the_terminal(german):
    ran = runner.invoke(app, ["run", "--period", "2026-03", "--finalize"])
    assert ran.exit_code == 0, ran.output
    shown = runner.invoke(app, ["invoices", "show", "INV-2026-000001"], env={"COLUMNS": "160"})
    assert shown.exit_code == 0, shown.output
    assert _rows(shown.output)[:5] == ROWS
    upcoming = runner.invoke(app, ["usage", "de"], env={"COLUMNS": "160"})
    assert upcoming.exit_code == 0, upcoming.output
    assert _rows(upcoming.output)[:5] == ROWS


def test_the_tax_rows_of_a_rate_with_prices_of_both_kinds():
    taxes = [
        {"name": "VAT", "rate": "19", "taxable_amount": "200.00", "tax_amount": "38.00", "tax_included": "19.00",
         "note": None},
        {"name": "VAT", "rate": "0", "taxable_amount": "10.00", "tax_amount": "0.00", "tax_included": "0.00",
         "note": "Reverse charge"},
        {"name": "VAT", "rate": "7", "taxable_amount": "107.00", "tax_amount": "7.00", "tax_included": "7.00",
         "note": None},
    ]
    added, inside = tax_rows(taxes)
    assert added == [("VAT 19 % on top of the prices", "19.00", None), ("VAT 0 % of 10.00", "0.00", "Reverse charge")]
    assert inside == [("  of which VAT 19 % inside the prices", "19.00"), ("  of which VAT 7 % inside the prices", "7.00")]
