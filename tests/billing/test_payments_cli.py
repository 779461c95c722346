"""``billing payments record|list|reverse``, ``billing invoices list --unpaid`` and ``billing invoices aging`` in the
terminal (SQLite and PostgreSQL), on the world of ``test_cli_json``: acme's INV-2026-000001 of 13.26, issued
2026-11-03 and due 2026-11-17; beta's invoice is a draft."""

from __future__ import annotations

import pytest

from billing.cli import app
from tests.billing.test_cli_json import runner, world

__all__ = ["world"]

pytestmark = pytest.mark.db


def run(*args: str) -> tuple[int, str]:
    """The exit status and the output's words (a table's borders left out)."""
    result = runner.invoke(app, list(args))
    text = "".join(" " if "\u2500" <= c <= "\u257f" else c for c in result.output)
    return result.exit_code, " ".join(text.split())


def test_record_list_reverse_and_the_unpaid_list(world):
    code, out = run("payments", "record", "INV-2026-000001", "--amount", "10.00", "--date", "2026-11-10",
                    "--method", "bank_transfer", "--reference", "TRX-1")
    assert code == 0 and "payment 1: 10.00 USD received on 2026-11-10 against INV-2026-000001" in out
    code, out = run("invoices", "list", "--unpaid")
    # 13.26 − 10.00 = 3.26 due
    assert code == 0 and "1 invoice(s)" in out and "INV-2026-000001" in out and "10.00 3.26" in out
    code, out = run("payments", "record", "INV-2026-000001", "--amount", "5.00", "--date", "2026-11-11",
                    "--method", "card")
    # 3.26 to the invoice, 5.00 − 3.26 = 1.74 to the balance
    assert code == 0 and "1.74 beyond what was due went to acme's balance" in out
    assert run("invoices", "list", "--unpaid")[1].startswith("0 invoice(s)")
    code, out = run("payments", "list", "--invoice", "INV-2026-000001")
    assert code == 0 and "2 payment(s)" in out and "TRX-1" in out and "succeeded" in out
    code, out = run("payments", "reverse", "2", "--reason", "charge-back", "--date", "2026-11-12")
    assert code == 0 and "3.26 USD owed again on INV-2026-000001" in out
    assert "1.74 taken back from the balance; 0.00 already spent" in out
    code, out = run("invoices", "show", "INV-2026-000001")
    assert code == 0 and "Payments received -10.00" in out and "Amount due 3.26" in out
    code, out = run("invoices", "aging", "--as-of", "2026-11-30")
    # due 17 November: 13 days overdue on the 30th
    assert code == 0 and "acme USD 1 0.00 3.26 0.00 0.00 0.00 3.26" in out


def test_bad_input_is_a_clear_error(world):
    code, out = run("payments", "record", "INV-2026-000001", "--amount", "ten", "--method", "cash")
    assert (code, out) == (2, "error: --amount: expected a decimal amount such as 30.00, got 'ten'")
    code, out = run("payments", "record", "INV-2026-000001", "--amount", "1.005", "--method", "cash")
    assert code == 2 and "--amount: expected a positive amount" in out and "whole minor units of USD" in out
    code, out = run("payments", "record", "INV-2026-000001", "--amount", "1.00", "--method", "cheque")
    assert code == 2 and "--method: expected one of bank_transfer, card, cash, other" in out
    code, out = run("payments", "record", "INV-2026-000001", "--amount", "1.00", "--method", "cash", "--date", "11/10")
    assert code == 2 and "--date: expected a date YYYY-MM-DD" in out
    code, out = run("payments", "record", "2", "--amount", "1.00", "--method", "cash")  # beta's draft
    assert code == 1 and "is a draft: finalize it before recording a payment" in out
    code, out = run("payments", "reverse", "99")
    assert code == 1 and "no payment 99" in out
    code, out = run("invoices", "aging", "--as-of", "soon")
    assert code == 2 and "--as-of: expected a date YYYY-MM-DD" in out


def test_ids_beyond_the_databases_range_are_not_found_rather_than_a_crash(world):
    huge = "99999999999999999999"  # above 2**63 − 1: no row has it
    code, out = run("payments", "reverse", huge)
    assert code == 2 and "PAYMENT_ID" in out and "9223372036854775807" in out
    code, out = run("payments", "record", huge, "--amount", "1.00", "--method", "cash")
    assert (code, out) == (1, f"error: no invoice '{huge}'")
    code, out = run("payments", "list", "--invoice", huge)
    assert (code, out) == (1, f"error: no invoice '{huge}'")
    code, out = run("invoices", "show", huge)
    assert code == 1 and f"no invoice '{huge}'" in out


def test_the_currency_if_given_must_be_the_invoices(world):
    code, out = run("payments", "record", "INV-2026-000001", "--amount", "1.00", "--method", "cash", "--currency", "EUR")
    assert (code, out) == (2, "error: --currency: INV-2026-000001 is in USD, not EUR")
    code, out = run("payments", "record", "INV-2026-000001", "--amount", "1.00", "--method", "cash", "--currency", "usd",
                    "--date", "2026-11-10")
    assert code == 0 and "payment 1: 1.00 USD received on 2026-11-10 against INV-2026-000001" in out
