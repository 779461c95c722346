"""The invoice store on SQLite and PostgreSQL: drafts refreshed in place, gap-free numbers, issued invoices
immutable in code and in the database, credit notes, void."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from billing.db import session_scope
from invoices import store
from invoices.errors import InvoiceStateError
from invoices.model import (
    DraftInvoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceScope,
    InvoiceStatus,
    LineDetails,
    LineKind,
    Party,
)
from pricing_plans.charge_models import BreakdownRow, UnitAmountKind

SETTINGS = store.FinalizeSettings(seller=Party(name="Seller Ltd."))
TODAY = dt.date(2026, 4, 2)


def draft(
    key: str = "period:acme:2026-03", amounts: tuple[str, ...] = ("49.00", "12.50"), tax: str = "0"
) -> DraftInvoice:
    lines = tuple(InvoiceLine(kind="usage", description=f"line {i}", amount=Decimal(a)) for i, a in enumerate(amounts))
    return DraftInvoice(
        billing_key=key,
        customer=Party(name="Acme", external_id=key.split(":")[1]),
        currency="USD",
        locale="en_US",
        period_start=dt.date(2026, 3, 1),
        period_end=dt.date(2026, 4, 1),
        lines=lines,
        tax_rate=Decimal(tax),
    )


def test_a_draft_is_written_once_and_refreshed_in_place(engine):
    with session_scope(engine) as session:
        first = store.upsert_draft(session, draft())
    with session_scope(engine) as session:
        again = store.upsert_draft(session, draft())
    with session_scope(engine) as session:
        changed = store.upsert_draft(session, draft(amounts=("49.00", "20.00")))
    assert (first.action, again.action, changed.action) == ("created", "unchanged", "updated")
    assert first.invoice_id == again.invoice_id == changed.invoice_id
    with session_scope(engine) as session:
        invoice = store.get_invoice(session, first.invoice_id)
    assert invoice.number is None and invoice.status is InvoiceStatus.DRAFT
    assert [str(line.amount) for line in invoice.lines] == ["49.00", "20.00"]
    assert str(invoice.total) == "69.00"


def test_lines_are_stored_as_plain_strings_and_read_back_typed(engine):
    row = BreakdownRow(
        1, Decimal(0), None, Decimal("1100"), Decimal("2.9"), Decimal("0.60"), Decimal("32.500"), "2 events",
        UnitAmountKind.PERCENT,
    )  # fmt: skip
    line = InvoiceLine(
        kind=LineKind.USAGE,
        description="Card payments",
        amount=Decimal("32.50"),
        meter="payments",
        model="percentage",
        details=LineDetails("2.9% of 1100 + 2 × 0.30", (row,), {"events": 2}),
    )
    stored = replace(draft(amounts=()), lines=(line,))
    _, lines = store.draft_row(stored)
    assert type(lines[0][2]) is str and lines[0][2] == "usage"  # hashed and stored as the plain string
    with session_scope(engine) as session:
        invoice_id = store.upsert_draft(session, stored).invoice_id
    with engine.connect() as connection:
        kind, details = connection.execute(
            text("SELECT kind, details FROM invoice_lines WHERE invoice_id = :id"), {"id": invoice_id}
        ).one()
    assert (kind, details) == (
        "usage",
        '{"explanation":"2.9% of 1100 + 2 \\u00d7 0.30","breakdown":[{"tier":1,"from":"0","to":null,"units":"1100",'
        '"unit_amount":"2.9","flat_amount":"0.60","amount":"32.500","note":"2 events"}],"events":2}',
    )
    with session_scope(engine) as session:
        (read,) = store.get_invoice(session, invoice_id).lines
    assert read.kind is LineKind.USAGE
    assert read.details == line.details
    assert read.details.breakdown is not None and read.details.breakdown[0].in_percent


def test_totals_tax_is_rounded_once_on_the_subtotal(engine):
    with session_scope(engine) as session:
        outcome = store.upsert_draft(session, draft(amounts=("10.05", "10.05", "10.05"), tax="19"))
        invoice = store.get_invoice(session, outcome.invoice_id)
    # subtotal 30.15; tax 19 % = 5.7285 → 5.73; total 35.88 (rounding per line would give 3 × 1.91 = 5.73 too,
    # but only one rounding step is applied)
    assert (str(invoice.subtotal), str(invoice.tax), str(invoice.total)) == ("30.15", "5.73", "35.88")


def test_finalizing_numbers_without_gaps_and_never_touches_an_issued_invoice(engine):
    ids = []
    for customer in ("a", "b", "c"):
        with session_scope(engine) as session:
            ids.append(store.upsert_draft(session, draft(f"period:{customer}:2026-03")).invoice_id)
    with session_scope(engine) as session:
        first = store.finalize(session, ids[0], SETTINGS, TODAY)
    with session_scope(engine) as session:
        rest = store.finalize_many(session, ids[1:], SETTINGS, TODAY)
    assert [first.number, *rest] == ["INV-2026-000001", "INV-2026-000002", "INV-2026-000003"]
    assert first.issue_date == TODAY and first.due_date == dt.date(2026, 4, 16)
    assert first.seller.name == "Seller Ltd."
    with session_scope(engine) as session:
        outcome = store.upsert_draft(session, draft("period:a:2026-03", amounts=("1.00",)))
    assert outcome.action == "issued"
    with session_scope(engine) as session, pytest.raises(InvoiceStateError):
        store.finalize(session, ids[0], SETTINGS, TODAY)


def test_a_failed_finalization_gives_its_number_back(engine):
    with session_scope(engine) as session:
        invoice_id = store.upsert_draft(session, draft()).invoice_id
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        store.finalize(session, invoice_id, SETTINGS, TODAY)
        raise RuntimeError("crash after numbering, before commit")
    with session_scope(engine) as session:
        assert store.finalize(session, invoice_id, SETTINGS, TODAY).number == "INV-2026-000001"


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE invoices SET total = '0' WHERE id = :id",
        "UPDATE invoices SET number = 'INV-X' WHERE id = :id",
        "UPDATE invoices SET status = 'draft', number = NULL WHERE id = :id",
        "UPDATE invoice_lines SET amount = '0' WHERE invoice_id = :id",
        "DELETE FROM invoice_lines WHERE invoice_id = :id",
        "DELETE FROM invoices WHERE id = :id",
        "UPDATE invoices SET timezone = 'Asia/Tokyo' WHERE id = :id",
        "UPDATE invoices SET scope = 'opening', subscription_id = 1 WHERE id = :id",
        "INSERT INTO invoice_lines (invoice_id, position, section, kind, description, quantity, amount, details) "
        "VALUES (:id, 9, '', 'usage', 'sneaked in', '1', '5.00', '{}')",
    ],
)
def test_the_database_refuses_to_change_an_issued_invoice(engine, statement):
    with session_scope(engine) as session:
        invoice_id = store.upsert_draft(session, draft()).invoice_id
        store.finalize(session, invoice_id, SETTINGS, TODAY)
    with pytest.raises(DBAPIError, match="cannot change"), engine.begin() as connection:
        connection.execute(text(statement), {"id": invoice_id})
    with session_scope(engine) as session:
        invoice = store.get_invoice(session, invoice_id)
    assert (invoice.number, str(invoice.total), len(invoice.lines)) == ("INV-2026-000001", "61.50", 2)


def test_a_line_cannot_be_moved_onto_an_issued_invoice(engine):
    with session_scope(engine) as session:
        issued = store.upsert_draft(session, draft("period:a:2026-03")).invoice_id
        store.finalize(session, issued, SETTINGS, TODAY)
        open_draft = store.upsert_draft(session, draft("period:b:2026-03", amounts=("7.00",))).invoice_id
    with pytest.raises(DBAPIError, match="cannot change"), engine.begin() as connection:
        connection.execute(
            text("UPDATE invoice_lines SET invoice_id = :issued WHERE invoice_id = :draft"),
            {"issued": issued, "draft": open_draft},
        )
    with session_scope(engine) as session:
        assert [str(line.amount) for line in store.get_invoice(session, issued).lines] == ["49.00", "12.50"]


def test_status_moves_on_but_never_back(engine):
    with session_scope(engine) as session:
        invoice_id = store.upsert_draft(session, draft()).invoice_id
        store.finalize(session, invoice_id, SETTINGS, TODAY)
        paid = store.set_status(session, invoice_id, InvoiceStatus.PAID)
    assert paid.status is InvoiceStatus.PAID
    with session_scope(engine) as session, pytest.raises(InvoiceStateError):
        store.set_status(session, invoice_id, InvoiceStatus.VOID)
    with pytest.raises(DBAPIError, match="cannot change"), engine.begin() as connection:
        connection.execute(text("UPDATE invoices SET status = 'void' WHERE id = :id"), {"id": invoice_id})


def test_void_keeps_the_number_and_a_credit_note_has_its_own_sequence(engine):
    with session_scope(engine) as session:
        first = store.upsert_draft(session, draft("period:a:2026-03", tax="20")).invoice_id
        second = store.upsert_draft(session, draft("period:b:2026-03")).invoice_id
        store.finalize_many(session, [first, second], SETTINGS, TODAY)
        voided = store.set_status(session, second, InvoiceStatus.VOID)
    assert (voided.number, voided.status) == ("INV-2026-000002", InvoiceStatus.VOID)
    # invoice a: 61.50 + 20 % tax 12.30 = 73.80. Credit 12.00 gross = 10.00 net + 2.00 tax.
    with session_scope(engine) as session:
        note = store.create_credit_note(session, "INV-2026-000001", Decimal("12.00"), "overcharged", SETTINGS, TODAY)
    assert (note.number, note.refers_to, note.kind.value) == ("CN-2026-000001", "INV-2026-000001", "credit_note")
    assert (str(note.subtotal), str(note.tax), str(note.total)) == ("10.00", "2.00", "12.00")
    # its line is stored with it (the credited net), and stays as issued
    assert [(line.kind, line.description, str(line.amount)) for line in note.lines] == [
        ("credit", "Credit for invoice INV-2026-000001: overcharged", "10.00")
    ]
    with session_scope(engine) as session:
        assert [str(line.amount) for line in store.get_invoice(session, "CN-2026-000001").lines] == ["10.00"]
    with session_scope(engine) as session, pytest.raises(ValueError, match=r"61\.80 USD left"):
        store.create_credit_note(session, "INV-2026-000001", Decimal("70.00"), "too much", SETTINGS, TODAY)
    with session_scope(engine) as session, pytest.raises(InvoiceStateError):
        store.create_credit_note(session, "INV-2026-000002", Decimal("1.00"), "void", SETTINGS, TODAY)


FINALIZER = textwrap.dedent(
    """
    import datetime as dt, json, sys
    from decimal import Decimal
    from billing.db import make_engine, session_scope
    from invoices import store
    from invoices.model import DraftInvoice, InvoiceLine, Party

    url, worker, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    engine = make_engine(url)
    numbers = []
    for i in range(count):
        key = f"period:w{worker}-{i}:2026-03"
        line = InvoiceLine(kind="usage", description="x", amount=Decimal("1.00"))
        draft = DraftInvoice(key, Party(name="x", external_id=f"w{worker}-{i}"), "USD", "en_US",
                             dt.date(2026, 3, 1), dt.date(2026, 4, 1), (line,))
        with session_scope(engine) as session:
            invoice_id = store.upsert_draft(session, draft).invoice_id
        with session_scope(engine) as session:
            numbers.append(store.finalize(session, invoice_id, store.FinalizeSettings(), dt.date(2026, 4, 2)).number)
    print(json.dumps(numbers))
    """
)


def test_concurrent_finalization_gives_gap_free_unique_numbers(db_url):
    workers, each = 4, 15
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    processes = [
        subprocess.Popen([sys.executable, "-c", FINALIZER, db_url, str(w), str(each)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
        for w in range(workers)
    ]
    numbers = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        numbers += json.loads(out)
    assert sorted(numbers) == [f"INV-2026-{n:06d}" for n in range(1, workers * each + 1)]


def test_an_invoice_records_what_it_bills_in_columns(engine):
    opening = replace(draft("start:42"), customer=Party(name="Acme", external_id="acme"))
    opening = replace(opening, scope=InvoiceScope.OPENING, subscription_id=42)
    with session_scope(engine) as session:
        period_id = store.upsert_draft(session, draft()).invoice_id
        opening_id = store.upsert_draft(session, opening).invoice_id
        store.finalize(session, period_id, SETTINGS, TODAY)
        note = store.create_credit_note(session, "INV-2026-000001", Decimal("1.00"), "goodwill", SETTINGS, TODAY)
        stored = {i.billing_key: (i.scope, i.subscription_id) for i in store.get_invoices(session, [period_id, opening_id])}
        found = store.opening_drafts(session)
    assert stored == {"period:acme:2026-03": (InvoiceScope.PERIOD, None), "start:42": (InvoiceScope.OPENING, 42)}
    assert (note.kind, note.scope, note.subscription_id) == (InvoiceKind.CREDIT_NOTE, InvoiceScope.CREDIT, None)
    assert [(d.invoice_id, d.billing_key, d.subscription_id) for d in found] == [(opening_id, "start:42", 42)]
    with session_scope(engine) as session:
        assert store.delete_opening_draft(session, 42) is True
        assert store.delete_opening_draft(session, 42) is False
        assert store.opening_drafts(session) == []


def test_only_an_opening_or_progressive_invoice_names_a_subscription():
    with pytest.raises(ValueError, match="opening or progressive invoice"):
        replace(draft("start:42"), scope=InvoiceScope.OPENING)
    with pytest.raises(ValueError, match="opening or progressive invoice"):
        replace(draft("progressive:42:2026-03:500.00"), scope=InvoiceScope.PROGRESSIVE)
    with pytest.raises(ValueError, match="opening or progressive invoice"):
        replace(draft(), subscription_id=42)


def test_a_coupons_terms_kept_on_its_line_leave_the_drafts_hash_as_it_was():
    """A discount line records its coupon's terms (for the invoice to word them) since a later version: a draft
    with a coupon hashes as it did before, so its approval still holds; its description, which says the terms,
    is hashed."""
    fee = InvoiceLine(kind="subscription", description="Growth, March", amount=Decimal("100.00"))
    coupon = InvoiceLine(kind="discount", description="Coupon SAVE20: 20 % off, forever", amount=Decimal("-20.00"),
                         section="Discounts", details=LineDetails(extra={"coupon": "SAVE20", "discounted": "100.00"}))
    terms = replace(coupon, details=LineDetails(extra={**coupon.details.extra, "terms": {"percent_off": "20"}}))
    reworded = replace(terms, description="Coupon SAVE20: 25 % off, forever")

    def content_hash(line: InvoiceLine) -> str:
        return store.draft_row(replace(draft(), lines=(fee, line)))[0]["content_hash"]

    assert content_hash(terms) == content_hash(coupon)
    assert content_hash(reworded) != content_hash(coupon)
    assert json.loads(store.draft_row(replace(draft(), lines=(fee, terms)))[1][1][11])["terms"] == {"percent_off": "20"}


def test_the_tax_rates_kept_on_the_lines_leave_the_drafts_hash_as_it_was():
    """The lines of an invoice of several rates record their own rate since a later version: such a draft hashes
    as it did before (the invoice's taxes, which are hashed, say the same), so its approval still holds."""
    fee = InvoiceLine(kind="subscription", description="Growth, March", amount=Decimal("100.00"))
    books = InvoiceLine(kind="usage", description="E-books", amount=Decimal("50.00"))

    def rated(line: InvoiceLine, rate: str, inclusive: bool = False) -> InvoiceLine:
        extra = {"tax_rate": rate} | ({"tax_inclusive": True} if inclusive else {})
        return replace(line, details=LineDetails(extra=extra))

    def content_hash(*lines: InvoiceLine) -> str:
        return store.draft_row(replace(draft(), lines=lines))[0]["content_hash"]

    assert content_hash(rated(fee, "19"), rated(books, "7", inclusive=True)) == content_hash(fee, books)
    assert content_hash(rated(fee, "19"), replace(books, amount=Decimal("50.01"))) != content_hash(fee, books)


def test_the_content_hash_reads_what_the_customer_sees_not_the_scope():
    # The same drafts hash to the same value release after release: a changed hash rewrites every draft.
    lines = (
        InvoiceLine(kind="subscription", description="Growth, March", amount=Decimal("49.00"), section="Growth (v1)",
                    service_start=dt.date(2026, 3, 1), service_end=dt.date(2026, 4, 1), subscription_id=7,
                    plan_code="growth", plan_version=1),
        InvoiceLine(kind="usage", description="API calls", amount=Decimal("12.50"), quantity=Decimal("125000"),
                    unit="call", section="Growth (v1)", meter="api_calls", model="graduated",
                    details=LineDetails(extra={"tiers": [{"from": "0", "to": "100000", "unit_price": "0.0001"}]}), subscription_id=7),
    )
    hashes = {
        store.draft_row(
            DraftInvoice(key, Party(name="Acme", address=("1 Road",), external_id="acme"), "EUR", "de_DE",
                         dt.date(2026, 3, 1), dt.date(2026, 4, 1), lines, tax_rate=Decimal("19"),
                         timezone="Europe/Berlin", scope=scope, subscription_id=subscription)
        )[0]["content_hash"]
        for key, scope, subscription in (
            ("period:acme:2026-03", InvoiceScope.PERIOD, None), ("start:7", InvoiceScope.OPENING, 7)
        )
    }
    assert hashes == {"cc1692b12cdf57cc091ffac34acedc2daa78697de45dfac15a28c6655c8eb5fd"}
