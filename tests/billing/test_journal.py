"""The journal's pure rules (``billing.core.journal``): every entry balances, whatever the invoice, credit note,
payment or credit movement; a void undoes its invoice to the cent. Property tests over generated documents, and
a hand-checked negative invoice."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.core.journal import (
    CreditMovement,
    Payment,
    credit_entry,
    document_entry,
    payment_entry,
    unbalanced,
    void_entry,
)
from invoices.model import (
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceScope,
    InvoiceStatus,
    LineKind,
    Party,
    TaxLine,
    compute_totals,
)

DAY = dt.date(2026, 11, 3)
CENTS = st.integers(min_value=-100_000, max_value=100_000).map(lambda c: Decimal(c) / 100)
KINDS = [LineKind.SUBSCRIPTION, LineKind.USAGE, LineKind.LATE_USAGE, LineKind.COMMITMENT, LineKind.DISCOUNT]


def invoice(lines: list[InvoiceLine], rate: Decimal, *, kind: InvoiceKind = InvoiceKind.INVOICE,
            scope: InvoiceScope = InvoiceScope.PERIOD, number: str = "INV-2026-000001") -> Invoice:
    totals = compute_totals(lines, "USD", rate)
    return Invoice(
        id=1, number=number, kind=kind, status=InvoiceStatus.FINALIZED, billing_key="k", customer=Party(
            name="Acme", external_id="acme"), seller=Party(name="Seller"), currency="USD", locale="en_US",
        period_start=dt.date(2026, 10, 1), period_end=dt.date(2026, 11, 1), lines=tuple(lines),
        subtotal=totals.subtotal, discount=totals.discount, tax_rate=rate, tax=totals.tax, total=totals.total,
        issue_date=DAY, scope=scope, refers_to="INV-2026-000001" if kind is InvoiceKind.CREDIT_NOTE else None,
    )


line_strategy = st.builds(
    lambda kind, amount, meter: InvoiceLine(kind=kind, description="x", amount=amount, meter=meter),
    st.sampled_from(KINDS), CENTS, st.sampled_from([None, "api_calls", "storage_gb"]),
)
rates = st.sampled_from([Decimal(0), Decimal(7), Decimal("19"), Decimal("20"), Decimal("8.875")])


@settings(max_examples=200, deadline=None)
@given(st.lists(line_strategy, min_size=1, max_size=8), rates, st.sampled_from([InvoiceScope.PERIOD, InvoiceScope.CREDIT]))
def test_an_invoice_and_its_void_balance_and_cancel_out(lines, rate, scope):
    issued = invoice(lines, rate, scope=scope)
    entry = document_entry(issued)
    voided = void_entry(issued, DAY)
    assert unbalanced([entry, voided]) == []
    assert dict(entry.legs).get("accounts_receivable", Decimal(0)) == issued.total
    net: dict[str, Decimal] = {}
    for account, amount in (*entry.legs, *voided.legs):
        net[account] = net.get(account, Decimal(0)) + amount
    assert set(net.values()) <= {Decimal(0)}


@settings(max_examples=100, deadline=None)
@given(CENTS.filter(lambda a: a > 0), rates)
def test_a_credit_note_balances(amount, rate):
    net = (amount * 100 / (100 + rate)).quantize(Decimal("0.01"))
    note = invoice([InvoiceLine(kind=LineKind.CREDIT, description="credit", amount=net)], rate,
                   kind=InvoiceKind.CREDIT_NOTE, scope=InvoiceScope.CREDIT, number="CN-2026-000001")
    note = replace(note, tax=amount - net, total=amount, taxes=())  # as create_credit_note splits it
    entry = document_entry(note)
    assert unbalanced([entry]) == []
    assert dict(entry.legs)["accounts_receivable"] == -amount



def test_a_void_of_an_invoice_with_a_credit_note_leaves_nothing_booked():
    """119.00 (100.00 + 19 % VAT), a credit note of 30.00 (25.21 + 4.79 VAT), then the void: together the three
    entries leave every account at 0.00 (the void reverses the 89.00 the note left, not the 119.00)."""
    issued = invoice([InvoiceLine(kind=LineKind.SUBSCRIPTION, description="fee", amount=Decimal("100.00"))],
                     Decimal(19))
    note = invoice([InvoiceLine(kind=LineKind.CREDIT, description="credit", amount=Decimal("25.21"))], Decimal(19),
                   kind=InvoiceKind.CREDIT_NOTE, scope=InvoiceScope.CREDIT, number="CN-2026-000001")
    note = replace(note, tax=Decimal("4.79"), total=Decimal("30.00"), taxes=())
    voided = void_entry(issued, DAY, [note])
    assert [(account, str(amount)) for account, amount in voided.legs] == [
        ("accounts_receivable", "-89.00"), ("revenue:credit_notes", "-25.21"),
        ("revenue:subscription_fees", "100.00"), ("tax_payable", "14.21"),
    ]
    net: dict[str, Decimal] = {}
    for entry in (document_entry(issued), document_entry(note), voided):
        for account, amount in entry.legs:
            net[account] = net.get(account, Decimal(0)) + amount
    assert unbalanced([voided]) == [] and set(net.values()) == {Decimal(0)}

@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["grant", "application", "expiry", "reinstatement", "void", "refund", "overpayment", "reversal"]),
    st.sampled_from(["free", "paid", "balance"]),
    CENTS.filter(lambda a: a != 0),
)
def test_every_credit_movement_balances_or_moves_no_money(kind, grant_kind, amount):
    entry = credit_entry(CreditMovement("m", kind, grant_kind, DAY, "acme", "USD", amount, "INV-2026-000001"))
    if entry is None:
        assert kind == "grant" or grant_kind == "free"
    else:
        assert unbalanced([entry]) == []


def test_a_payment_and_a_negative_invoice_refunded_to_the_balance():
    """March's lines 30.00 and −50.32: total −20.32, refunded to the balance (a refund movement of 20.32)."""
    negative = invoice([InvoiceLine(kind=LineKind.SUBSCRIPTION, description="fee", amount=Decimal("30.00")),
                        InvoiceLine(kind=LineKind.SUBSCRIPTION, description="adjustment", amount=Decimal("-50.32"))],
                       Decimal(0))
    entry = document_entry(negative)
    refund = credit_entry(CreditMovement("refund:1", "refund", "balance", DAY, "acme", "USD", Decimal("20.32"),
                                         "INV-2026-000001"))
    assert refund is not None
    assert [(a, str(v)) for a, v in entry.legs] == [
        ("accounts_receivable", "-20.32"), ("revenue:subscription_fees", "20.32")
    ]
    assert [(a, str(v)) for a, v in refund.legs] == [("accounts_receivable", "20.32"), ("credit_liability", "-20.32")]
    paid = payment_entry(Payment("p1", DAY, "INV-2026-000002", "acme", "USD", Decimal("4.68"), "bank_transfer"))
    assert [(a, str(v)) for a, v in paid.legs] == [("accounts_receivable", "-4.68"), ("cash", "4.68")]
    assert unbalanced([entry, refund, paid]) == []


def test_a_movement_of_an_unknown_kind_is_refused():
    import pytest

    with pytest.raises(ValueError, match="no journal entry for a credit movement of kind 'gift'"):
        credit_entry(CreditMovement("gift:1", "gift", "free", DAY, "acme", "USD", Decimal("1.00")))


def test_taxes_recorded_per_rate_and_a_tax_inclusive_price():
    """An invoice with its taxes per rate: a price of 119.00 tax included at 19 % (taxable 100.00, tax 19.00
    inside the price) and 50.00 at 7 % added on top (3.50): total 100.00 + 50.00 + 22.50 = 172.50."""
    lines = [InvoiceLine(kind=LineKind.SUBSCRIPTION, description="fee", amount=Decimal("119.00")),
             InvoiceLine(kind=LineKind.USAGE, description="calls", amount=Decimal("50.00"), meter="api_calls")]
    taxes = (TaxLine(Decimal(19), Decimal("100.00"), Decimal("19.00"), Decimal("19.00")),
             TaxLine(Decimal(7), Decimal("50.00"), Decimal("3.50")))
    taxed = replace(invoice(lines, Decimal(0)), taxes=taxes, tax=Decimal("22.50"), total=Decimal("172.50"))
    entry = document_entry(taxed)
    assert [(a, str(v)) for a, v in entry.legs] == [
        ("accounts_receivable", "172.50"),
        ("revenue:subscription_fees", "-119.00"),
        ("revenue:tax_included", "19.00"),
        ("revenue:usage:api_calls", "-50.00"),
        ("tax_payable", "-22.50"),
    ]
    assert unbalanced([entry]) == []


def test_a_reverse_charge_is_listed_with_no_tax():
    from billing.core.journal import taxes_of

    reverse = TaxLine(Decimal(0), Decimal("100.00"), Decimal("0.00"), reverse_charge=True, country="DE")
    sale = replace(invoice([InvoiceLine(kind=LineKind.SUBSCRIPTION, description="fee", amount=Decimal("100.00"))],
                           Decimal(0)), taxes=(reverse,))
    assert taxes_of(sale) == [reverse]
    assert taxes_of(invoice([InvoiceLine(kind=LineKind.SUBSCRIPTION, description="fee", amount=Decimal("1.00"))],
                            Decimal(0))) == []  # no tax, no reverse charge, no exemption: nothing to report
    assert [(a, str(v)) for a, v in document_entry(sale).legs] == [
        ("accounts_receivable", "100.00"), ("revenue:subscription_fees", "-100.00")
    ]
