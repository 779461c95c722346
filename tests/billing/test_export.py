"""Accounting exports: a month with a top-up, an invoice paid partly by free and paid credit, a credit note refunded
to the balance and two payments, exported and checked by hand — the journal's legs, its debits equal to its
credits, the receivable back to zero, the CSV columns; on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from billing import credits
from billing.cli import app as cli_app
from billing.config import get_settings
from billing.core.periods import month
from billing.customers import create_customer, subscribe
from billing.db import session_scope
from billing.db.engines import dispose_engines
from billing.export import COLUMNS, collect_export, export_period
from billing.ingestion import ingest_batch
from billing.invoicing import create_credit_note, finalize_invoice, get_invoice, list_invoices, set_invoice_status
from billing.payments import record_payment, reverse_payment
from billing.run import run_billing
from invoices import store
from invoices.model import InvoiceStatus
from invoices.store import FinalizeSettings
from pricing_plans.loader import load_catalog_or_raise
from pricing_plans.models import Catalog

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.starter]
name = "Starter"
currency = "USD"
effective_from = 2025-01-01
subscription = { fee = 10.00, billing = "in_arrears" }
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.5 }]
"""

OCTOBER = month(2026, 10)
NOVEMBER = month(2026, 11)
SETTINGS = FinalizeSettings()


def at(day: int, hour: int = 12) -> dt.datetime:
    """An instant of November 2026 (UTC)."""
    return dt.datetime(2026, 11, day, hour, tzinfo=dt.UTC)


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    return load_catalog_or_raise(path)


def mark(engine: Engine, number: str, status: InvoiceStatus, when: dt.datetime, monkeypatch) -> None:
    """Move an issued invoice on (paid, void) at ``when``, as Stripe's webhook would."""
    monkeypatch.setattr("invoices.store.lifecycle.utcnow", lambda: when)
    with session_scope(engine) as session:
        store.set_status(session, store.get_invoice(session, number).id, status)
    monkeypatch.undo()


@pytest.fixture
def november(engine: Engine, catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """Acme (UTC, USD, tax 20 %) in November 2026:

    1 Nov  free credit 5.00 granted; paid credit 6.00 sold on top-up INV-2026-000001 (6.00, untaxed)
    2 Nov  the top-up is paid by bank transfer (payment 1, 6.00)
    3 Nov  October's INV-2026-000002: fee 10.00 + 4 calls × 0.50 = 12.00, tax 2.40, total 14.40; credits applied:
           free 5.00, then paid 6.00; amount due 14.40 − 11.00 = 3.40
    10 Nov credit note CN-2026-000001 of 1.20 (net 1.00 = 1.20 × 100 / 120, tax 0.20): the invoice is unpaid, so
           the note reduces what it owes, 3.40 − 1.20 = 2.20 (nothing goes to the balance)
    12 Nov payment 2 of 5.00 for INV-2026-000002: it takes 2.20, the excess 2.80 goes to the balance
    14 Nov payment 2 bounces: reversed, INV-2026-000002 owes 2.20 again, the 2.80 is taken back off the balance
    """
    create_customer(engine, "acme", "Acme Corp", None, "USD", "UTC", tax_rate="20")
    subscribe(engine, catalog, "acme", "starter", OCTOBER.start)
    events = [
        {"id": f"call-{i}", "customer": "acme", "meter": "api_calls", "timestamp": f"2026-10-15T12:0{i}:00Z"}
        for i in range(4)
    ]
    assert ingest_batch(engine, catalog, events, now=dt.datetime(2026, 10, 15, 13, tzinfo=dt.UTC)).accepted == 4
    credits.grant_credit(engine, "acme", Decimal("5.00"), "USD", reason="welcome", now=at(1, 9))
    credits.grant_credit(engine, "acme", Decimal("6.00"), "USD", paid=True, settings=SETTINGS, now=at(1, 10))
    record_payment(engine, "INV-2026-000001", Decimal("6.00"), method="bank_transfer", received_on=dt.date(2026, 11, 2),
                   reference="TRX-1", now=at(2))
    run_billing(engine, catalog, OCTOBER, now=at(1, 0))
    [draft] = [i for i in list_invoices(engine) if i.number is None]
    issued = finalize_invoice(engine, draft.id, SETTINGS, dt.date(2026, 11, 3), now=at(3))
    assert (issued.number, issued.total, issued.amount_due) == ("INV-2026-000002", Decimal("14.40"), Decimal("3.40"))
    create_credit_note(engine, "INV-2026-000002", Decimal("1.20"), "outage", SETTINGS, dt.date(2026, 11, 10), now=at(10))
    assert get_invoice(engine, "INV-2026-000002").amount_due == Decimal("2.20")
    paid = record_payment(engine, "INV-2026-000002", Decimal("5.00"), method="bank_transfer",
                          received_on=dt.date(2026, 11, 12), reference="TRX-2", now=at(12))
    assert (paid.applied, paid.excess) == (Decimal("2.20"), Decimal("2.80"))
    reverse_payment(engine, paid.id, reason="returned by the bank", on=dt.date(2026, 11, 14), now=at(14))
    return engine


def test_the_journal_of_a_month_balances_and_says_what_happened(november):
    export = collect_export(november, NOVEMBER)
    assert export.problems() == []
    assert export.totals() == {"USD": (Decimal("56.60"), Decimal("56.60"))}
    applied = _id(november, "INV-2026-000002")
    legs = [(e.date.day, e.entry, account, str(amount)) for e in export.entries for account, amount in e.legs]
    assert legs == [
        (1, "invoice:INV-2026-000001", "accounts_receivable", "6.00"),
        (1, "invoice:INV-2026-000001", "deferred_revenue", "-6.00"),
        (2, "payment:1", "accounts_receivable", "-6.00"),
        (2, "payment:1", "cash", "6.00"),
        (3, "invoice:INV-2026-000002", "accounts_receivable", "14.40"),
        (3, "invoice:INV-2026-000002", "revenue:subscription_fees", "-10.00"),
        (3, "invoice:INV-2026-000002", "revenue:usage:api_calls", "-2.00"),
        (3, "invoice:INV-2026-000002", "tax_payable", "-2.40"),
        (3, f"credit:apply:{applied}:1", "accounts_receivable", "-5.00"),
        (3, f"credit:apply:{applied}:1", "promotional_credits", "5.00"),
        (3, f"credit:apply:{applied}:2", "accounts_receivable", "-6.00"),
        (3, f"credit:apply:{applied}:2", "deferred_revenue", "6.00"),
        (10, "credit_note:CN-2026-000001", "accounts_receivable", "-1.20"),
        (10, "credit_note:CN-2026-000001", "revenue:credit_notes", "1.00"),
        (10, "credit_note:CN-2026-000001", "tax_payable", "0.20"),
        # the note reduces what the unpaid invoice owes: a balance grant of 1.20 applied to it at once
        (10, f"credit:apply:{applied}:3", "accounts_receivable", "-1.20"),
        (10, f"credit:apply:{applied}:3", "credit_liability", "1.20"),
        (10, "credit:reduce:3", "accounts_receivable", "1.20"),
        (10, "credit:reduce:3", "credit_liability", "-1.20"),
        (12, "credit:overpayment:2", "accounts_receivable", "2.80"),
        (12, "credit:overpayment:2", "credit_liability", "-2.80"),
        (12, "payment:2", "accounts_receivable", "-5.00"),
        (12, "payment:2", "cash", "5.00"),
        (14, "credit:reversal:2", "accounts_receivable", "-2.80"),
        (14, "credit:reversal:2", "credit_liability", "2.80"),
        (14, "payment:2:reversal", "accounts_receivable", "5.00"),
        (14, "payment:2:reversal", "cash", "-5.00"),
    ]
    by_account: dict[str, Decimal] = {}
    for entry in export.entries:
        for account, amount in entry.legs:
            by_account[account] = by_account.get(account, Decimal(0)) + amount
    # INV-2026-000002 owes its 2.20 again; the paid credit sold was used; cash 6.00 (the 5.00 bounced); tax due
    # 2.40 − 0.20; the balance owes acme nothing (the overpayment's 2.80 came back off it)
    assert {k: str(v) for k, v in by_account.items()} == {
        "accounts_receivable": "2.20", "deferred_revenue": "0.00", "cash": "6.00", "revenue:subscription_fees":
        "-10.00", "revenue:usage:api_calls": "-2.00", "tax_payable": "-2.20", "promotional_credits": "5.00",
        "revenue:credit_notes": "1.00", "credit_liability": "0.00",
    }
    # October's export holds none of it: everything was issued, paid or moved in November
    assert collect_export(november, OCTOBER).entries == []


def _id(engine: Engine, number: str) -> int:
    return get_invoice(engine, number).id


def test_the_csv_files_have_their_columns_and_rows(november, tmp_path):
    export_period(november, NOVEMBER, tmp_path / "out")
    files = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert files == sorted(f"{name}.csv" for name in COLUMNS)
    for name, columns in COLUMNS.items():
        with (tmp_path / "out" / f"{name}.csv").open(newline="", encoding="utf-8") as file:
            assert next(csv.reader(file)) == list(columns), name
    journal = (tmp_path / "out" / "journal.csv").read_text(encoding="utf-8").splitlines()
    assert journal[0] == "entry,line,date,account,debit,credit,currency,customer,document,memo"
    assert journal[1] == (
        "invoice:INV-2026-000001,1,2026-11-01,accounts_receivable,6.00,0.00,USD,acme,INV-2026-000001,"
        "top-up invoice INV-2026-000001 issued"
    )
    rows = _rows(tmp_path / "out" / "invoices.csv")
    assert [(r["number"], r["scope"], r["status"], r["total"], r["credits_applied"], r["amount_paid"], r["amount_due"])
            for r in rows] == [
        ("INV-2026-000001", "credit", "paid", "6.00", "0.00", "6.00", "0.00"),
        ("INV-2026-000002", "period", "finalized", "14.40", "12.20", "0.00", "2.20"),  # the payment bounced
    ]
    assert [(r["number"], r["refers_to"], r["net"], r["tax"], r["total"]) for r in _rows(
        tmp_path / "out" / "credit_notes.csv")] == [("CN-2026-000001", "INV-2026-000002", "1.00", "0.20", "1.20")]
    assert [(r["document"], r["tax_rate"], r["taxable"], r["tax"], r["tax_included"])
            for r in _rows(tmp_path / "out" / "taxes.csv")] == [
        ("INV-2026-000002", "20", "12.00", "2.40", "0.00"), ("CN-2026-000001", "20", "-1.00", "-0.20", "0.00")
    ]
    assert [(r["payment"], r["kind"], r["date"], r["invoice_number"], r["amount"], r["applied"], r["to_balance"],
             r["reference"]) for r in _rows(tmp_path / "out" / "payments.csv")] == [
        ("1", "received", "2026-11-02", "INV-2026-000001", "6.00", "6.00", "0.00", "TRX-1"),
        ("2", "received", "2026-11-12", "INV-2026-000002", "5.00", "2.20", "2.80", "TRX-2"),
        ("2", "reversal", "2026-11-14", "INV-2026-000002", "-5.00", "-2.20", "-2.80", "TRX-2"),
    ]
    lines = _rows(tmp_path / "out" / "invoice_lines.csv")
    assert [(r["document"], r["kind"], r["amount"], r["account"]) for r in lines if r["document"].startswith("INV")] == [
        ("INV-2026-000001", "credit", "6.00", "deferred_revenue"),
        ("INV-2026-000002", "subscription", "10.00", "revenue:subscription_fees"),
        ("INV-2026-000002", "usage", "2.00", "revenue:usage:api_calls"),
    ]
    # a credit note's lines (when it stores them) go to revenue:credit_notes
    assert {r["account"] for r in lines if r["document"].startswith("CN")} <= {"revenue:credit_notes"}
    movements = _rows(tmp_path / "out" / "credit_movements.csv")
    # every movement's two legs sum to zero; 8 movements: free grant, paid grant usable, 2 applications, the
    # credit note's reduction and its application, the overpayment, its reversal
    assert len(movements) == 16
    assert sum(Decimal(r["amount"]) for r in movements) == 0
    # written again, the files are the same bytes
    first = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    export_period(november, NOVEMBER, tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == first


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_a_voided_invoice_is_reversed_and_its_credit_given_back(november, catalog, monkeypatch):
    """Beta: October's invoice 10.00 (no tax), 3.00 of free credit applied on 3 November, voided on 20 November;
    the credit comes back when the ledger is next brought up to date (20 November, 13:00). (Grants 1 to 4 are
    acme's: free, paid, the credit note's reduction, the overpayment's balance; beta's is 5.)"""
    create_customer(november, "beta", "Beta Ltd", None, "USD", "UTC")
    subscribe(november, catalog, "beta", "starter", OCTOBER.start)
    credits.grant_credit(november, "beta", Decimal("3.00"), "USD", now=at(1, 9))
    run_billing(november, catalog, OCTOBER, customer="beta", now=at(1, 0))
    [draft] = [i for i in list_invoices(november, customer="beta")]
    issued = finalize_invoice(november, draft.id, SETTINGS, dt.date(2026, 11, 3), now=at(3))
    assert (issued.number, issued.total, issued.amount_due) == ("INV-2026-000003", Decimal("10.00"), Decimal("7.00"))
    mark(november, "INV-2026-000003", InvoiceStatus.VOID, at(20), monkeypatch)
    credits.balance(november, "beta", now=at(20, 13))
    export = collect_export(november, NOVEMBER)
    assert export.problems() == []
    beta = [(e.date.day, e.entry, account, str(amount)) for e in export.entries if e.customer == "beta"
            for account, amount in e.legs]
    assert beta == [
        (3, "invoice:INV-2026-000003", "accounts_receivable", "10.00"),
        (3, "invoice:INV-2026-000003", "revenue:subscription_fees", "-10.00"),
        (3, f"credit:apply:{issued.id}:5", "accounts_receivable", "-3.00"),
        (3, f"credit:apply:{issued.id}:5", "promotional_credits", "3.00"),
        (20, "void:INV-2026-000003", "accounts_receivable", "-10.00"),
        (20, "void:INV-2026-000003", "revenue:subscription_fees", "10.00"),
        (20, f"credit:void:{issued.id}:5", "accounts_receivable", "3.00"),
        (20, f"credit:void:{issued.id}:5", "promotional_credits", "-3.00"),
    ]
    assert export.totals() == {"USD": (Decimal("82.60"), Decimal("82.60"))}  # 56.60 + 10 + 3 + 10 + 3



def test_a_voided_invoice_with_a_credit_note_leaves_nothing_booked(november, catalog, monkeypatch):
    """Beta's October invoice of 10.00, a credit note of 4.00 on 10 November, voided on 20 November: the void
    reverses the 6.00 the note left of it, and the month's entries leave every account of beta's at 0.00."""
    from billing.invoicing import create_credit_note, set_invoice_status

    create_customer(november, "beta", "Beta Ltd", None, "USD", "UTC")
    subscribe(november, catalog, "beta", "starter", OCTOBER.start)
    run_billing(november, catalog, OCTOBER, customer="beta", now=at(1, 0))
    [draft] = [i for i in list_invoices(november, customer="beta")]
    issued = finalize_invoice(november, draft.id, SETTINGS, dt.date(2026, 11, 3), now=at(3))
    note = create_credit_note(november, issued.number or "", Decimal("4.00"), "outage", SETTINGS,
                              dt.date(2026, 11, 10), now=at(10))
    monkeypatch.setattr("invoices.store.lifecycle.utcnow", lambda: at(20))
    monkeypatch.setattr("billing.invoicing.clock", lambda now=None: at(20))
    set_invoice_status(november, issued.number or "", InvoiceStatus.VOID)  # (the balance the note gave taken back)
    monkeypatch.undo()
    export = collect_export(november, NOVEMBER)
    assert export.problems() == []
    [void] = [e for e in export.entries if e.entry == f"void:{issued.number}"]
    assert [(account, str(amount)) for account, amount in void.legs] == [
        ("accounts_receivable", "-6.00"), ("revenue:credit_notes", "-4.00"), ("revenue:subscription_fees", "10.00"),
    ]
    net: dict[str, Decimal] = {}
    for entry in export.entries:
        if entry.customer == "beta":
            for account, amount in entry.legs:
                net[account] = net.get(account, Decimal(0)) + amount
    assert note.number is not None and set(net.values()) == {Decimal(0)}, net

def test_the_command_writes_json(november, db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", db_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli_app, ["export", "--period", "2026-11", "--to", str(tmp_path / "j"),
                                              "--format", "json", "--json"])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output)
        assert summary["journal"] == {"USD": {"debit": "56.60", "credit": "56.60"}} and summary["balanced"] is True
        journal = json.loads((tmp_path / "j" / "journal.json").read_text(encoding="utf-8"))
        assert journal[0] == {
            "entry": "invoice:INV-2026-000001", "line": "1", "date": "2026-11-01", "account": "accounts_receivable",
            "debit": "6.00", "credit": "0.00", "currency": "USD", "customer": "acme", "document": "INV-2026-000001",
            "memo": "top-up invoice INV-2026-000001 issued",
        }
        bad = CliRunner().invoke(cli_app, ["export", "--period", "2026-11", "--to", str(tmp_path), "--format", "xls"])
        assert bad.exit_code == 2 and "--format: expected csv or json" in bad.output
    finally:
        dispose_engines()
        get_settings.cache_clear()


def test_the_export_has_the_months_recognized_revenue_and_the_credit_note_takes_it_back(november):
    (row,) = collect_export(november, NOVEMBER).tables["revenue"]
    # CN-2026-000001 (net 1.00, issued 10 Nov) against October's fee 10.00 and usage 2.00 of [10-01, 11-01):
    # billed −1.00 in November and, October being past, recognized −1.00 at once; nothing deferred:
    # 0.00 + (−1.00) − (−1.00) = 0.00
    assert row == {
        "period": "2026-11", "currency": "USD", "billed": "-1.00", "recognized": "-1.00",
        "deferred_opening": "0.00", "deferred_added": "-1.00", "deferred_closing": "0.00",
    }  # fmt: skip
    (october,) = collect_export(november, OCTOBER).tables["revenue"]
    # October: the fee and the usage of October, 10.00 + 2.00, recognized in October (the top-up sells credit: no
    # revenue until used)
    assert (october["billed"], october["recognized"], october["deferred_closing"]) == ("12.00", "12.00", "0.00")


def test_the_revenue_file_is_what_billing_metrics_revenue_prints(november, db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", db_url)
    get_settings.cache_clear()
    try:
        for label in ("2026-10", "2026-11"):
            done = CliRunner().invoke(cli_app, ["export", "--period", label, "--to", str(tmp_path / label),
                                                "--format", "json"])  # fmt: skip
            assert done.exit_code == 0, done.output
            exported = json.loads((tmp_path / label / "revenue.json").read_text(encoding="utf-8"))
            printed = CliRunner().invoke(cli_app, ["metrics", "revenue", "--period", label, "--json"])
            assert printed.exit_code == 0, printed.output
            assert exported == json.loads(printed.stdout)["data"]
            for row in exported:  # opening + added − recognized = closing
                opening, added, recognized, closing = (
                    Decimal(row[k]) for k in ("deferred_opening", "deferred_added", "recognized", "deferred_closing")
                )
                assert opening + added - recognized == closing
    finally:
        dispose_engines()
        get_settings.cache_clear()


def _accounts(engine: Engine, *periods) -> dict[str, str]:
    """Each account's net over the months' journals (debit positive), zeros left out."""
    net: dict[str, Decimal] = {}
    for period in periods:
        export = collect_export(engine, period)
        assert export.problems() == []
        for entry in export.entries:
            for account, amount in entry.legs:
                net[account] = net.get(account, Decimal(0)) + amount
    return {account: str(amount) for account, amount in sorted(net.items()) if amount != 0}


def test_a_credit_note_of_a_top_up_takes_back_deferred_revenue_not_revenue(engine):
    """A top-up sold prepaid credit (deferred revenue), never revenue: its note takes deferred revenue back. Paid
    50.00, a note of 20.00 to the balance: 30.00 of prepaid credit left (deferred revenue), 20.00 owed to the
    customer (credit liability), nothing receivable, no revenue moved. (Booked as revenue given back, the note
    left credit notes at 20.00 and the receivable at -20.00: the credit taken back credited it a second time.)"""
    create_customer(engine, "acme", "Acme Corp", None, "USD", "UTC")
    topup = credits.grant_credit(engine, "acme", Decimal("50.00"), "USD", paid=True, settings=SETTINGS, now=at(2))
    record_payment(engine, topup.invoice_number or "", Decimal("50.00"), method="bank_transfer",
                   received_on=dt.date(2026, 11, 3), now=at(3))
    create_credit_note(engine, topup.invoice_number or "", Decimal("20.00"), "unused", SETTINGS,
                       dt.date(2026, 11, 10), to_balance=True, now=at(10))
    [usd] = credits.balance(engine, "acme", now=at(11))
    assert (str(usd.paid), str(usd.balance)) == ("30.00", "20.00")
    assert _accounts(engine, NOVEMBER) == {
        "cash": "50.00", "credit_liability": "-20.00", "deferred_revenue": "-30.00",
    }


def test_a_note_of_an_unpaid_top_up_leaves_no_deferred_revenue_once_its_credit_is_spent(engine):
    """An unpaid top-up of 50.00, a note of 20.00 (30.00 due), paid 30.00, and the 30.00 of credit spent on
    December's invoice: nothing deferred is left, and no revenue but the invoice's."""
    create_customer(engine, "acme", "Acme Corp", None, "USD", "UTC")
    topup = credits.grant_credit(engine, "acme", Decimal("50.00"), "USD", paid=True, settings=SETTINGS, now=at(2))
    create_credit_note(engine, topup.invoice_number or "", Decimal("20.00"), "smaller pack", SETTINGS,
                       dt.date(2026, 11, 5), now=at(5))
    record_payment(engine, topup.invoice_number or "", Decimal("30.00"), method="bank_transfer",
                   received_on=dt.date(2026, 11, 6), now=at(6))
    spent = finalize_invoice(engine, _draft(engine, "acme", "30.00"), SETTINGS, dt.date(2026, 11, 20),
                                          now=at(20))
    assert str(spent.amount_due) == "0.00"
    assert _accounts(engine, NOVEMBER) == {"cash": "30.00", "revenue:subscription_fees": "-30.00"}


def test_a_bounced_top_up_holds_its_credit_back_and_moves_no_money_for_it(engine):
    """README's example: a 50.00 top-up paid, 30.00 of it spent, the transfer bounces (20.00 held back), April's
    40.00 unpaid, paid again (20.00 back), May's 25.00 takes it: 45.00 receivable (40.00 + 5.00), nothing owed to
    the customer. (Booked as the balance's, holding the credit back took 20.00 off the receivable and put 20.00 on
    the credit liability's debit side.)"""
    create_customer(engine, "acme", "Acme Corp", None, "USD", "UTC")
    topup = credits.grant_credit(engine, "acme", Decimal("50.00"), "USD", paid=True, settings=SETTINGS, now=at(2))
    number = topup.invoice_number or ""
    bounced = record_payment(engine, number, Decimal("50.00"), method="bank_transfer",
                             received_on=dt.date(2026, 11, 3), now=at(3))
    finalize_invoice(engine, _draft(engine, "acme", "30.00", 1), SETTINGS, dt.date(2026, 11, 4), now=at(4))
    reverse_payment(engine, bounced.id, on=dt.date(2026, 11, 5), now=at(5))
    [usd] = credits.balance(engine, "acme", now=at(5, 13))
    assert (str(usd.paid), str(usd.pending)) == ("0.00", "20.00")  # held back until the top-up is paid again
    assert _accounts(engine, NOVEMBER) == {
        "accounts_receivable": "50.00", "deferred_revenue": "-20.00", "revenue:subscription_fees": "-30.00",
    }
    finalize_invoice(engine, _draft(engine, "acme", "40.00", 2), SETTINGS, dt.date(2026, 11, 6), now=at(6))
    record_payment(engine, number, Decimal("50.00"), method="bank_transfer", received_on=dt.date(2026, 11, 7),
                   now=at(7))
    may = finalize_invoice(engine, _draft(engine, "acme", "25.00", 3), SETTINGS, dt.date(2026, 11, 8),
                                        now=at(8))
    assert str(may.amount_due) == "5.00"
    assert _accounts(engine, NOVEMBER) == {
        "accounts_receivable": "45.00", "cash": "50.00", "revenue:subscription_fees": "-95.00",
    }


def test_credit_movements_are_booked_on_the_date_of_the_document_that_made_them(engine):
    """Issued by hand, a document bears the UTC date; its credit movements are booked with it, in its month, as
    aged receivables count them. Tokyo (UTC+9): 100.00 issued at 20:00 UTC on 31 March (5:00 on 1 April there),
    60.00 of free credit applied: March's receivable is 40.00, not 100.00. Los Angeles (UTC-7): 50.00 issued at
    02:00 UTC on 1 April (19:00 on 31 March there), 25.00 applied: April's receivable is 25.00, and March holds
    none of it (it was -25.00). A note by hand at 16:00 UTC on 30 April (1 May in Tokyo):
    the note takes what is due off in April, with the note (it was in May's export)."""
    march, april, may = month(2026, 3), month(2026, 4), month(2026, 5)
    create_customer(engine, "kaisha", "Kaisha", None, "USD", "Asia/Tokyo")
    create_customer(engine, "studio", "Studio", None, "USD", "America/Los_Angeles")
    late_march = dt.datetime(2026, 3, 31, 20, tzinfo=dt.UTC)
    credits.grant_credit(engine, "kaisha", Decimal("60.00"), "USD", now=late_march - dt.timedelta(days=2))
    credits.grant_credit(engine, "studio", Decimal("25.00"), "USD", now=late_march - dt.timedelta(days=2))
    tokyo = finalize_invoice(engine, _draft(engine, "kaisha", "100.00", month=2), SETTINGS,
                                          dt.date(2026, 3, 31), now=late_march)
    angeles = finalize_invoice(engine, _draft(engine, "studio", "50.00", month=2), SETTINGS,
                                            dt.date(2026, 4, 1), now=dt.datetime(2026, 4, 1, 2, tzinfo=dt.UTC))
    assert (str(tokyo.amount_due), str(angeles.amount_due)) == ("40.00", "25.00")
    journal = collect_export(engine, march).entries
    assert {(e.entry, e.date.isoformat()) for e in journal if e.customer == "kaisha"} == {
        ("invoice:INV-2026-000001", "2026-03-31"), (f"credit:apply:{tokyo.id}:1", "2026-03-31"),
    }
    assert _accounts(engine, march) == {
        "accounts_receivable": "40.00", "promotional_credits": "60.00", "revenue:subscription_fees": "-100.00",
    }
    assert _accounts(engine, april) == {
        "accounts_receivable": "25.00", "promotional_credits": "25.00", "revenue:subscription_fees": "-50.00",
    }
    create_credit_note(engine, "INV-2026-000001", Decimal("40.00"), "outage", SETTINGS, dt.date(2026, 4, 30),
                       now=dt.datetime(2026, 4, 30, 16, tzinfo=dt.UTC))
    assert [e.entry for e in collect_export(engine, may).entries] == []
    # the note, then the 40.00 it took off the amount due (a balance grant applied at once), all on 30 April
    assert [(e.entry, e.date.isoformat()) for e in collect_export(engine, april).entries if e.customer == "kaisha"] == [
        ("credit_note:CN-2026-000001", "2026-04-30"), ("credit:apply:1:3", "2026-04-30"),
        ("credit:reduce:3", "2026-04-30"),
    ]


def _draft(engine: Engine, who: str, amount: str, n: int = 1, month: int = 10) -> int:
    """A draft of ``who`` with one fee line of ``amount`` (the ``n``-th billing key of the month)."""
    from invoices.model import DraftInvoice, InvoiceLine, LineKind, Party

    start = dt.date(2026, month, 1)
    draft = DraftInvoice(
        billing_key=f"period:{who}:2026-{month:02d}:{n}", customer=Party(name=who, external_id=who), currency="USD",
        locale="en_US", period_start=start, period_end=(start + dt.timedelta(days=31)).replace(day=1),
        lines=(InvoiceLine(kind=LineKind.SUBSCRIPTION, description="fee", amount=Decimal(amount)),),
        tax_rate=Decimal(0), timezone="UTC",
    )
    with session_scope(engine) as session:
        return store.upsert_draft(session, draft).invoice_id


def test_a_payment_s_excess_is_booked_on_the_day_the_payment_was_received(engine):
    """A transfer of 120.00 for an invoice of 100.00, received on 31 October and recorded on 12 November: the
    payment and its 20.00 excess put on the balance are both October's (the excess was November's, leaving
    October's receivable at -20.00; recorded more than a week after, it was in no month); reversed on 30 November,
    recorded on 15 December, both in November."""
    create_customer(engine, "acme", "Acme Corp", None, "USD", "UTC")
    finalize_invoice(engine, _draft(engine, "acme", "100.00", month=9), SETTINGS, dt.date(2026, 10, 2),
                     now=dt.datetime(2026, 10, 2, tzinfo=dt.UTC))
    paid = record_payment(engine, "INV-2026-000001", Decimal("120.00"), method="bank_transfer",
                          received_on=dt.date(2026, 10, 31), now=at(12))
    assert _accounts(engine, OCTOBER) == {
        "cash": "120.00", "credit_liability": "-20.00", "revenue:subscription_fees": "-100.00",
    }
    assert _accounts(engine, NOVEMBER) == {}
    reverse_payment(engine, paid.id, on=dt.date(2026, 11, 30), now=dt.datetime(2026, 12, 15, tzinfo=dt.UTC))
    assert _accounts(engine, NOVEMBER) == {"accounts_receivable": "100.00", "cash": "-120.00",
                                           "credit_liability": "20.00"}
    assert _accounts(engine, month(2026, 12)) == {}


def test_credit_that_comes_back_after_it_expired_is_written_off_when_it_comes_back(engine, monkeypatch):
    """50.00 of paid credit expiring on 1 April is written off then; the March invoice of 25.00 finalized on 5
    April takes 15.00 of it back from the write-off (its period began before the expiry) and 10.00 of free credit;
    voided on 10 May, the 15.00 comes back and is written off again on 10 May, not on 1 April: April's export is
    the same after the void as before it."""
    create_customer(engine, "acme", "Acme Corp", None, "USD", "UTC")
    april, may = month(2026, 4), month(2026, 5)
    paid = credits.grant_credit(engine, "acme", Decimal("50.00"), "USD", paid=True, expires=dt.date(2026, 4, 1),
                                settings=SETTINGS, now=dt.datetime(2026, 2, 20, tzinfo=dt.UTC))
    record_payment(engine, paid.invoice_number or "", Decimal("50.00"), method="bank_transfer",
                   received_on=dt.date(2026, 2, 21), now=dt.datetime(2026, 2, 21, tzinfo=dt.UTC))
    credits.grant_credit(engine, "acme", Decimal("10.00"), "USD", expires=dt.date(2026, 4, 1),
                         now=dt.datetime(2026, 2, 20, tzinfo=dt.UTC))
    march = finalize_invoice(engine, _draft(engine, "acme", "25.00", month=3), SETTINGS, dt.date(2026, 4, 5),
                             now=dt.datetime(2026, 4, 5, 12, tzinfo=dt.UTC))
    assert [(c.kind, str(c.amount)) for c in march.credits_applied] == [("free", "10.00"), ("paid", "15.00")]
    before = _accounts(engine, april)
    assert before == {"deferred_revenue": "50.00", "promotional_credits": "10.00", "revenue:breakage": "-35.00",
                      "revenue:subscription_fees": "-25.00"}
    voided_at = dt.datetime(2026, 5, 10, 12, tzinfo=dt.UTC)
    for clock in ("billing.invoicing.utcnow", "invoices.store.lifecycle.utcnow"):
        monkeypatch.setattr(clock, lambda: voided_at)
    set_invoice_status(engine, march.number or "", InvoiceStatus.VOID)
    monkeypatch.undo()
    assert _accounts(engine, april) == before
    # May: the void (fees +25.00, the receivable net of the credits given back), the free 10.00 back (expired again:
    # free credit moves no money), the paid 15.00 back and written off again that day
    assert _accounts(engine, may) == {"promotional_credits": "-10.00", "revenue:breakage": "-15.00",
                                      "revenue:subscription_fees": "25.00"}



def test_credit_spent_before_it_expired_and_given_back_after_is_written_off_when_it_comes_back(engine, monkeypatch):
    """25.00 of paid credit expiring on 10 April, spent in full on March's invoice on 2 April: nothing to write off
    on the 10th. March is voided on 10 May: the 25.00 comes back and is written off that day (it was written off
    on 10 April, rewriting April's export)."""
    create_customer(engine, "acme", "Acme Corp", None, "USD", "UTC")
    paid = credits.grant_credit(engine, "acme", Decimal("25.00"), "USD", paid=True, expires=dt.date(2026, 4, 10),
                                settings=SETTINGS, now=dt.datetime(2026, 2, 20, tzinfo=dt.UTC))
    record_payment(engine, paid.invoice_number or "", Decimal("25.00"), method="bank_transfer",
                   received_on=dt.date(2026, 2, 21), now=dt.datetime(2026, 2, 21, tzinfo=dt.UTC))
    march = finalize_invoice(engine, _draft(engine, "acme", "25.00", month=3), SETTINGS, dt.date(2026, 4, 2),
                             now=dt.datetime(2026, 4, 2, 12, tzinfo=dt.UTC))
    assert str(march.amount_due) == "0.00"
    credits.balance(engine, "acme", now=dt.datetime(2026, 4, 20, tzinfo=dt.UTC))  # (settled: nothing written off)
    before = _accounts(engine, month(2026, 4))
    assert before == {"deferred_revenue": "25.00", "revenue:subscription_fees": "-25.00"}
    voided_at = dt.datetime(2026, 5, 10, 12, tzinfo=dt.UTC)
    for clock in ("billing.invoicing.utcnow", "invoices.store.lifecycle.utcnow"):
        monkeypatch.setattr(clock, lambda: voided_at)
    set_invoice_status(engine, march.number or "", InvoiceStatus.VOID)
    monkeypatch.undo()
    assert _accounts(engine, month(2026, 4)) == before
    assert _accounts(engine, month(2026, 5)) == {"revenue:breakage": "-25.00", "revenue:subscription_fees": "25.00"}


def test_credit_taken_back_from_its_write_off_is_booked_with_the_invoice_that_takes_it(engine):
    """Tokyo: 60.00 of paid credit expired on 20 March (written off in March); February's 100.00, issued by hand at
    20:00 UTC on 31 March (1 April in Tokyo, dated 31 March), takes it back from the write-off and applies it: the
    reinstatement is March's with the invoice and the application (it was April's: March showed 60.00 of breakage
    that never happened)."""
    create_customer(engine, "kaisha", "Kaisha", None, "USD", "Asia/Tokyo")
    paid = credits.grant_credit(engine, "kaisha", Decimal("60.00"), "USD", paid=True, expires=dt.date(2026, 3, 20),
                                settings=SETTINGS, now=dt.datetime(2026, 2, 10, tzinfo=dt.UTC))
    record_payment(engine, paid.invoice_number or "", Decimal("60.00"), method="bank_transfer",
                   received_on=dt.date(2026, 2, 11), now=dt.datetime(2026, 2, 11, tzinfo=dt.UTC))
    credits.balance(engine, "kaisha", now=dt.datetime(2026, 3, 25, tzinfo=dt.UTC))  # (written off)
    invoice = finalize_invoice(engine, _draft(engine, "kaisha", "100.00", month=2), SETTINGS, dt.date(2026, 3, 31),
                               now=dt.datetime(2026, 3, 31, 20, tzinfo=dt.UTC))
    assert str(invoice.amount_due) == "40.00"
    # March: the write-off (deferred +60, breakage -60), taken back (-60, +60), applied (+60; receivable -60)
    assert _accounts(engine, month(2026, 3)) == {
        "accounts_receivable": "40.00", "deferred_revenue": "60.00", "revenue:subscription_fees": "-100.00",
    }
    assert _accounts(engine, month(2026, 4)) == {}


def test_a_reinstatement_is_never_booked_before_the_write_off_it_takes_back_from(engine):
    """Tokyo: 60.00 of paid credit expiring on 1 April (15:00 UTC on 31 March), February's 100.00 issued by hand at
    16:00 UTC on 31 March (1 April there; dated 31 March, the UTC date): written off on 1 April, it is taken back
    from the write-off on 1 April too, and the application is March's with the invoice. (Booked with the invoice,
    the reinstatement put 60.00 of negative breakage in March, a month without the write-off.)"""
    create_customer(engine, "kaisha", "Kaisha", None, "USD", "Asia/Tokyo")
    paid = credits.grant_credit(engine, "kaisha", Decimal("60.00"), "USD", paid=True, expires=dt.date(2026, 4, 1),
                                settings=SETTINGS, now=dt.datetime(2026, 2, 10, tzinfo=dt.UTC))
    record_payment(engine, paid.invoice_number or "", Decimal("60.00"), method="bank_transfer",
                   received_on=dt.date(2026, 2, 11), now=dt.datetime(2026, 2, 11, tzinfo=dt.UTC))
    invoice = finalize_invoice(engine, _draft(engine, "kaisha", "100.00", month=2), SETTINGS, dt.date(2026, 3, 31),
                               now=dt.datetime(2026, 3, 31, 16, tzinfo=dt.UTC))
    assert str(invoice.amount_due) == "40.00"
    # March: the invoice and the application (deferred revenue still held the 60.00); April: the write-off and
    # its taking back, which net to nothing
    assert _accounts(engine, month(2026, 3)) == {
        "accounts_receivable": "40.00", "deferred_revenue": "60.00", "revenue:subscription_fees": "-100.00",
    }
    assert _accounts(engine, month(2026, 4)) == {}
