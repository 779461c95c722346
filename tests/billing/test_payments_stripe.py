"""Payments received from Stripe (SQLite and PostgreSQL): ``invoice.paid`` records what Stripe collected as a card
payment referenced by the Stripe invoice id, once however often the webhook comes (the same event again, or
another event about the same Stripe invoice); a partial payment recorded before is taken off what is pushed to
Stripe, and what Stripe then collects in full pays the rest, the difference going to the balance."""

from __future__ import annotations

import json

import pytest

from billing import credits, invoicing, payments
from billing.stripe.sync import stripe_items
from invoices.model import InvoiceStatus
from tests.billing.test_stripe import FIRST, add_customer, invoice_event, issue, post, webhooks

__all__ = ["webhooks"]

pytestmark = pytest.mark.db


def paid_event(event_id: str, stripe_invoice: str, amount_paid: int | None) -> str:
    payload = json.loads(invoice_event(event_id, "invoice.paid", stripe_invoice=stripe_invoice))
    if amount_paid is not None:
        payload["data"]["object"]["amount_paid"] = amount_paid
    return json.dumps(payload)


def test_a_stripe_payment_is_recorded_once_however_often_it_is_delivered(engine, webhooks):
    add_customer(engine)
    issue(engine)  # 49.00 + 12.50 = 61.50
    assert post(webhooks, paid_event("evt_1", "in_1", 6150)).json()["outcome"] == "paid"
    assert post(webhooks, paid_event("evt_1", "in_1", 6150)).json()["outcome"] == "duplicate"  # redelivered
    assert post(webhooks, paid_event("evt_2", "in_1", 6150)).json()["outcome"] == "ignored"  # same Stripe invoice
    [payment] = payments.list_payments(engine)
    assert (payment.invoice_number, str(payment.amount), payment.method, payment.reference) == (
        FIRST, "61.50", "card", "in_1"
    )
    assert payment.received_on.isoformat() == "2026-04-20"  # the event's day
    invoice = invoicing.get_invoice(engine, FIRST)
    assert (invoice.status, str(invoice.amount_paid), str(invoice.amount_due)) == (InvoiceStatus.PAID, "61.50", "0.00")


def test_a_stripe_payment_without_its_amount_pays_what_is_due(engine, webhooks):
    add_customer(engine)
    issue(engine)
    payments.record_payment(engine, FIRST, payments.parse_amount("20.00"), method="bank_transfer")
    assert post(webhooks, paid_event("evt_1", "in_1", None)).json()["outcome"] == "paid"
    found = payments.list_payments(engine, invoice=FIRST)
    # 61.50 − 20.00 = 41.50 collected by Stripe
    assert [(str(p.amount), p.method) for p in found] == [("20.00", "bank_transfer"), ("41.50", "card")]


def test_a_bank_transfer_before_the_push_is_taken_off_and_a_full_collection_overpays_to_the_balance(engine, webhooks):
    add_customer(engine)
    issue(engine)
    payments.record_payment(engine, FIRST, payments.parse_amount("20.00"), method="bank_transfer")
    invoice = invoicing.get_invoice(engine, FIRST)
    items = stripe_items(invoice)
    assert [(i.key, i.amount) for i in items][-1] == ("payments", -2000)
    assert sum(i.amount for i in items) == 4150  # what Stripe collects: 61.50 − 20.00
    # Stripe still collected the full 61.50 (pushed before the transfer): 41.50 to the invoice, 20.00 to the balance
    post(webhooks, paid_event("evt_1", "in_1", 6150))
    last = payments.list_payments(engine, invoice=FIRST)[-1]
    assert (str(last.applied), str(last.excess)) == ("41.50", "20.00")
    [usd] = credits.balance(engine, "acme")
    assert str(usd.balance) == "20.00"


def test_what_stripe_collects_on_an_invoice_voided_here_is_kept_on_the_balance(engine, webhooks):
    """Voiding an invoice does not stop Stripe collecting it: the money it collects is recorded (nothing is owed on
    a void invoice, so all of it goes to the customer's balance), never dropped."""
    add_customer(engine)
    issue(engine)  # 61.50, pushed to Stripe as in_1
    invoicing.set_invoice_status(engine, FIRST, InvoiceStatus.VOID)
    assert post(webhooks, paid_event("evt_1", "in_1", 6150)).json()["outcome"] == "to_balance"
    assert post(webhooks, paid_event("evt_2", "in_1", 6150)).json()["outcome"] == "ignored"  # recorded once
    [payment] = payments.list_payments(engine, invoice=FIRST)
    assert (str(payment.amount), str(payment.applied), str(payment.excess), payment.reference) == (
        "61.50", "0.00", "61.50", "in_1"
    )
    invoice = invoicing.get_invoice(engine, FIRST)
    assert (invoice.status, str(invoice.amount_paid), str(invoice.amount_due)) == (InvoiceStatus.VOID, "0.00", "0.00")
    [usd] = credits.balance(engine, "acme")
    assert str(usd.balance) == "61.50"
