"""Payments received against invoices (SQLite and PostgreSQL): partial payments up to paid, an overpayment's
excess on the balance used by the next invoice, a reversal reopening the invoice and taking back what is left of
the excess, the refusals, two payments at once never over-applying, and the aged receivables on fixed dates.
The amounts are worked by hand in the comments."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal
from functools import partial

import pytest
from sqlalchemy import select

from billing import credits, invoicing, payments
from billing.core.aging import bucket_of
from billing.db import session_scope
from billing.errors import BillingInputError, ConflictError, NotFoundError
from invoices.model import InvoiceStatus
from invoices.store import FinalizeSettings
from invoices.tables import InvoiceRow
from tests.billing.test_credits import at, customer, draft, finalize, holds

pytestmark = pytest.mark.db

D = Decimal
NOW = at("2026-04-20T12:00:00")


def issued(engine, who: str, month: int, *amounts: str, on: str | None = None):
    """The invoice of ``who`` for 2026-``month``, finalized on the 2nd of the next month (due 14 days later)."""
    start = dt.date(2026, month, 1)
    when = on or f"2026-{month + 1:02d}-02T00:00:00"
    return finalize(engine, draft(engine, who, start, *amounts), when)


def pay(engine, number: str, amount: str, day: str = "2026-04-10", method: str = "bank_transfer", **extra):
    return payments.record_payment(
        engine, number, D(amount), method=method, received_on=dt.date.fromisoformat(day), now=NOW, **extra
    )


def test_partial_payments_leave_it_finalized_until_the_last_one_makes_it_paid(engine):
    who = customer(engine)
    invoice = issued(engine, who, 3, "100.00")
    first = pay(engine, invoice.number, "30.00", reference="TRX-1")
    assert (str(first.applied), str(first.excess), first.reference) == ("30.00", "0.00", "TRX-1")
    after_first = invoicing.get_invoice(engine, invoice.number)
    # 100.00 − 30.00 = 70.00 due, still finalized
    assert after_first.status is InvoiceStatus.FINALIZED
    assert (str(after_first.amount_paid), str(after_first.amount_due)) == ("30.00", "70.00")
    second = pay(engine, invoice.number, "70.00", method="card")
    assert (str(second.applied), str(second.excess)) == ("70.00", "0.00")
    paid = invoicing.get_invoice(engine, invoice.number)
    assert paid.status is InvoiceStatus.PAID
    assert (str(paid.amount_paid), str(paid.amount_due)) == ("100.00", "0.00")
    assert [(p.id, str(p.amount), p.method) for p in payments.list_payments(engine, invoice=invoice.number)] == [
        (first.id, "30.00", "bank_transfer"), (second.id, "70.00", "card")
    ]
    [usd] = credits.balance(engine, who)
    assert str(usd.balance) == "0.00"  # nothing paid beyond the invoice


def test_credits_come_first_and_payments_pay_what_they_left(engine):
    who = customer(engine)
    credits.grant_credit(engine, who, D("25.00"), "USD", now=at("2026-03-05T00:00:00"))
    invoice = issued(engine, who, 3, "100.00")
    assert str(invoice.amount_due) == "75.00"  # 100.00 − 25.00 of free credit
    payment = pay(engine, invoice.number, "75.00")
    shown = invoicing.get_invoice(engine, invoice.number)
    assert (str(payment.applied), shown.status, str(shown.amount_paid), str(shown.amount_due)) == (
        "75.00", InvoiceStatus.PAID, "75.00", "0.00"
    )


def test_an_overpayment_goes_to_the_balance_and_pays_the_next_invoice(engine):
    who = customer(engine)
    march = issued(engine, who, 3, "100.00")
    payment = pay(engine, march.number, "120.00")
    # the invoice takes the 100.00 it was owed; 120.00 − 100.00 = 20.00 to the balance
    assert (str(payment.applied), str(payment.excess), payment.balance_grant_id is not None) == (
        "100.00", "20.00", True
    )
    assert invoicing.get_invoice(engine, march.number).status is InvoiceStatus.PAID
    [usd] = credits.balance(engine, who)
    assert str(usd.balance) == "20.00"
    april = issued(engine, who, 4, "50.00")
    # the balance pays 20.00 of April's 50.00: 30.00 due
    assert [(c.kind, str(c.amount)) for c in april.credits_applied] == [("balance", "20.00")]
    assert str(april.amount_due) == "30.00"
    [usd] = credits.balance(engine, who)
    assert str(usd.balance) == "0.00"
    holds(engine)


def test_a_reversal_reopens_the_invoice_and_takes_back_the_unused_excess(engine):
    who = customer(engine)
    invoice = issued(engine, who, 3, "100.00")
    bounced = pay(engine, invoice.number, "120.00")
    reversed_ = payments.reverse_payment(engine, bounced.id, reason="bounced", on=dt.date(2026, 4, 15), now=NOW)
    assert (reversed_.reversed, reversed_.reversal_reason, str(reversed_.recovered), str(reversed_.unrecovered)) == (
        True, "bounced", "20.00", "0.00"
    )
    shown = invoicing.get_invoice(engine, invoice.number)
    # back to finalized, the 100.00 due again; the 20.00 left the balance
    assert (shown.status, str(shown.amount_paid), str(shown.amount_due)) == (InvoiceStatus.FINALIZED, "0.00", "100.00")
    [usd] = credits.balance(engine, who)
    assert str(usd.balance) == "0.00"
    with pytest.raises(ConflictError, match="was reversed on 2026-04-15"):
        payments.reverse_payment(engine, bounced.id, now=NOW)
    # paid again, properly this time
    pay(engine, invoice.number, "100.00", day="2026-04-16")
    assert invoicing.get_invoice(engine, invoice.number).status is InvoiceStatus.PAID
    holds(engine)


def test_a_reversal_after_the_excess_was_spent_takes_back_only_what_is_left(engine):
    who = customer(engine)
    march = issued(engine, who, 3, "100.00")
    bounced = pay(engine, march.number, "120.00")
    issued(engine, who, 4, "15.00")  # the balance pays April's 15.00 in full: 5.00 left on it
    reversed_ = payments.reverse_payment(engine, bounced.id, now=at("2026-05-03T00:00:00"))
    # 5.00 taken back; 15.00 spent already: unrecovered
    assert (str(reversed_.recovered), str(reversed_.unrecovered)) == ("5.00", "15.00")
    [usd] = credits.balance(engine, who, now=at("2026-05-03T00:00:00"))
    assert str(usd.balance) == "0.00"
    assert str(invoicing.get_invoice(engine, march.number).amount_due) == "100.00"
    holds(engine)


def test_a_partial_payment_reversed_restores_the_amount_due(engine):
    who = customer(engine)
    invoice = issued(engine, who, 3, "100.00")
    partial = pay(engine, invoice.number, "30.00")
    payments.reverse_payment(engine, partial.id, now=NOW)
    shown = invoicing.get_invoice(engine, invoice.number)
    assert (shown.status, str(shown.amount_paid), str(shown.amount_due)) == (InvoiceStatus.FINALIZED, "0.00", "100.00")


def test_drafts_void_invoices_and_bad_amounts_are_refused(engine):
    who = customer(engine)
    draft_id = draft(engine, who, dt.date(2026, 3, 1), "100.00")
    with pytest.raises(ConflictError, match="is a draft: finalize it"):
        payments.record_payment(engine, draft_id, D("10.00"), method="cash", now=NOW)
    invoice = issued(engine, who, 4, "100.00")
    for amount, message in (("0", "positive"), ("-5.00", "positive"), ("10.001", "whole minor units of USD")):
        with pytest.raises(BillingInputError, match=message):
            pay(engine, invoice.number, amount)
    with pytest.raises(BillingInputError, match="--currency: INV-2026-000001 is in USD, not EUR"):
        pay(engine, invoice.number, "10.00", currency="eur")
    with pytest.raises(BillingInputError, match="--method"):
        pay(engine, invoice.number, "10.00", method="cheque")
    with pytest.raises(BillingInputError, match="in the future"):
        pay(engine, invoice.number, "10.00", day="2026-04-22")
    with pytest.raises(NotFoundError):
        pay(engine, "INV-1999-000001", "10.00")
    partial = pay(engine, invoice.number, "10.00")
    with pytest.raises(ConflictError, match="reverse them first"):
        invoicing.set_invoice_status(engine, invoice.number, InvoiceStatus.VOID)
    payments.reverse_payment(engine, partial.id, now=NOW)
    invoicing.set_invoice_status(engine, invoice.number, InvoiceStatus.VOID)
    with pytest.raises(ConflictError, match="is void"):
        pay(engine, invoice.number, "10.00")
    assert payments.list_payments(engine) == [payments.list_payments(engine, invoice=invoice.number)[0]]


def test_a_reference_is_recorded_once_per_invoice(engine):
    who = customer(engine)
    invoice = issued(engine, who, 3, "100.00")
    first = pay(engine, invoice.number, "30.00", reference="TRX-1")
    with pytest.raises(ConflictError, match=f"payment {first.id} already records reference 'TRX-1'"):
        pay(engine, invoice.number, "30.00", reference="TRX-1")  # the same transfer told twice
    payments.reverse_payment(engine, first.id, now=NOW)
    pay(engine, invoice.number, "30.00", reference="TRX-1")  # presented again after it bounced
    assert str(invoicing.get_invoice(engine, invoice.number).amount_due) == "70.00"


def test_a_paid_invoice_paid_again_puts_it_all_on_the_balance(engine):
    who = customer(engine)
    invoice = issued(engine, who, 3, "40.00")
    pay(engine, invoice.number, "40.00")
    again = pay(engine, invoice.number, "40.00")
    assert (str(again.applied), str(again.excess)) == ("0.00", "40.00")
    [usd] = credits.balance(engine, who)
    assert str(usd.balance) == "40.00"


def test_two_payments_at_once_never_over_apply(engine):
    """Two threads pay 70.00 each on a 100.00 invoice at the same moment: one takes 70.00, the other the 30.00
    left and puts 40.00 on the balance; never 140.00 applied."""
    who = customer(engine)
    invoice = issued(engine, who, 3, "100.00")
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def one() -> None:
        try:
            barrier.wait()
            pay(engine, invoice.number, "70.00")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    found = payments.list_payments(engine, invoice=invoice.number)
    assert sorted((str(p.applied), str(p.excess)) for p in found) == [("30.00", "40.00"), ("70.00", "0.00")]
    shown = invoicing.get_invoice(engine, invoice.number)
    assert (shown.status, str(shown.amount_paid)) == (InvoiceStatus.PAID, "100.00")
    [usd] = credits.balance(engine, who)
    assert str(usd.balance) == "40.00"


def _at_once(*actions) -> list[str]:
    """Run the actions in threads released together; what each did: ``ok`` or its error's type."""
    barrier = threading.Barrier(len(actions))
    outcomes = [""] * len(actions)

    def run(index: int) -> None:
        barrier.wait()
        try:
            actions[index]()
            outcomes[index] = "ok"
        except Exception as error:  # (reported, and asserted on)
            outcomes[index] = type(error).__name__

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_a_void_or_a_payment_at_the_moment_of_a_credit_note_waits_for_it(engine):
    """On PostgreSQL a void (or a payment beyond what is due) locked the invoice, then the customer; a credit note
    the customer, then the invoice (its row's foreign key): 139 pairs of 140 deadlocked, one side a 500. Each now
    waits for the other: a void and a note, either order, end with the invoice void; a payment and a note both
    stand."""
    who = customer(engine)
    note = partial(invoicing.create_credit_note, engine, amount=D("10.00"), reason="race", today=dt.date(2026, 12, 2))
    note = partial(note, settings=invoicing.finalize_settings(), now=NOW)
    for round_ in range(1, 4):
        voided = issued(engine, who, round_, "100.00").number
        paid = issued(engine, who, round_ + 4, "100.00").number
        void = partial(invoicing.set_invoice_status, engine, voided, InvoiceStatus.VOID)
        outcomes = _at_once(void, partial(note, voided))
        assert outcomes[0] == "ok" and outcomes[1] in ("ok", "ConflictError"), outcomes  # (the note: void first)
        assert invoicing.get_invoice(engine, voided).status is InvoiceStatus.VOID
        assert _at_once(partial(pay, engine, paid, "120.00"), partial(note, paid)) == ["ok", "ok"]


def test_unpaid_lists_the_invoices_with_an_amount_due(engine):
    who = customer(engine)
    credits.grant_credit(engine, who, D("10.00"), "USD", now=at("2026-01-05T00:00:00"))
    covered = issued(engine, who, 1, "10.00")  # credit pays it all: finalized, nothing due
    partly = issued(engine, who, 2, "100.00")
    settled = issued(engine, who, 3, "100.00")
    pay(engine, partly.number, "30.00")
    pay(engine, settled.number, "100.00")
    assert covered.status is InvoiceStatus.FINALIZED and str(covered.amount_due) == "0.00"
    unpaid = invoicing.list_invoices(engine, unpaid=True)
    assert [(i.number, str(i.amount_due)) for i in unpaid] == [(partly.number, "70.00")]
    page, more = invoicing.invoices_page(engine, limit=1, unpaid=True)
    assert ([i.number for i in page], more) == ([partly.number], False)


@pytest.mark.parametrize(
    ("due", "as_of", "bucket"),
    [
        ("2026-04-16", "2026-04-16", "current"),  # due today: not overdue
        ("2026-04-16", "2026-04-17", "1-30"),  # 1 day
        ("2026-04-16", "2026-05-16", "1-30"),  # 30 days
        ("2026-04-16", "2026-05-17", "31-60"),  # 31 days
        ("2026-04-16", "2026-06-15", "31-60"),  # 60 days
        ("2026-04-16", "2026-06-16", "61-90"),  # 61 days
        ("2026-04-16", "2026-07-15", "61-90"),  # 90 days
        ("2026-04-16", "2026-07-16", "90+"),  # 91 days
    ],
)
def test_aging_buckets_at_their_bounds(due, as_of, bucket):
    assert bucket_of(dt.date.fromisoformat(due), dt.date.fromisoformat(as_of)) == bucket


def test_aged_receivables_per_customer_and_currency_on_fixed_dates(engine):
    acme, beta = customer(engine, "acme"), customer(engine, "beta")
    # finalized on the 2nd of the next month, due 14 days later: Jan → due 16 Feb, Feb → 16 Mar, Mar → 16 Apr
    jan = issued(engine, acme, 1, "100.00")
    feb = issued(engine, acme, 2, "200.00")
    issued(engine, beta, 3, "50.00")
    pay(engine, jan.number, "40.00", day="2026-04-10")
    pay(engine, feb.number, "200.00", day="2026-04-18")
    aging = payments.aged_receivables(engine, dt.date(2026, 4, 16))
    rows = {(r.customer, r.currency): tuple(str(b) for b in r.buckets) for r in aging.rows}
    # on 16 April: acme's January 60.00 left (100.00 − 40.00), 59 days overdue → 31-60; February's 200.00 not paid
    # yet (paid on the 18th), 31 days overdue → 31-60: 260.00; beta's March 50.00 is due that day → current
    assert rows == {
        ("acme", "USD"): ("0.00", "0.00", "260.00", "0.00", "0.00"),
        ("beta", "USD"): ("50.00", "0.00", "0.00", "0.00", "0.00"),
    }
    [total] = aging.totals
    assert (str(total.total), total.invoices) == ("310.00", 3)
    # on 20 May: February paid; January 60.00, 93 days → 90+; beta 34 days → 31-60
    later = payments.aged_receivables(engine, dt.date(2026, 5, 20))
    assert {r.customer: tuple(str(b) for b in r.buckets) for r in later.rows} == {
        "acme": ("0.00", "0.00", "0.00", "0.00", "60.00"),
        "beta": ("0.00", "0.00", "50.00", "0.00", "0.00"),
    }
    # before anything was issued to beta (2 April 00:00 is its issue day: 1 April sees none of it)
    assert [r.customer for r in payments.aged_receivables(engine, dt.date(2026, 4, 1)).rows] == ["acme"]
    assert payments.aging_json(later)["totals"] == [
        {"currency": "USD", "invoices": 2, "current": "0.00", "1-30": "0.00", "31-60": "50.00", "61-90": "0.00",
         "90+": "60.00", "total": "110.00"}
    ]



def test_aged_receivables_count_a_credit_note_from_its_issue_on(engine):
    from tests.billing.test_credits import SETTINGS

    acme = customer(engine, "acme")
    march = issued(engine, acme, 3, "119.00")  # issued 2 April, due 16 April
    pay(engine, march.number, "50.00", day="2026-04-10")
    invoicing.create_credit_note(engine, march.number or "", Decimal("30.00"), "outage", SETTINGS,
                                 dt.date(2026, 4, 25), now=at("2026-04-25T09:00:00"))

    def owed(day: dt.date) -> list[tuple[str, ...]]:
        return [tuple(str(b) for b in r.buckets) for r in payments.aged_receivables(engine, day).rows]

    # 119.00 − 50.00 = 69.00 owed on 15 April (current) and on 20 April (4 days overdue); the note of 25 April
    # takes 30.00 off from that day on: 39.00, 9 days overdue
    assert owed(dt.date(2026, 4, 15)) == [("69.00", "0.00", "0.00", "0.00", "0.00")]
    assert owed(dt.date(2026, 4, 20)) == [("0.00", "69.00", "0.00", "0.00", "0.00")]
    assert owed(dt.date(2026, 4, 24)) == [("0.00", "69.00", "0.00", "0.00", "0.00")]
    assert owed(dt.date(2026, 4, 25)) == [("0.00", "39.00", "0.00", "0.00", "0.00")]

def test_aged_receivables_count_a_credit_from_the_date_the_document_that_applied_it_bears(engine):
    from tests.billing.test_credits import SETTINGS, draft

    tokyo, la = customer(engine, "kaisha", timezone="Asia/Tokyo"), customer(engine, "studio", timezone="America/Los_Angeles")
    credits.grant_credit(engine, tokyo, D("60.00"), "USD", now=at("2026-03-05T00:00:00"))
    credits.grant_credit(engine, la, D("25.00"), "USD", now=at("2026-03-05T00:00:00"))
    # finalized by hand at 20:00 UTC on 2 April (already the 3rd in Tokyo): dated 2 April, the UTC date
    march = invoicing.finalize_invoice(engine, draft(engine, tokyo, dt.date(2026, 3, 1), "100.00"), SETTINGS,
                                       dt.date(2026, 4, 2), now=at("2026-04-02T20:00:00"))
    # issued on its own date in Los Angeles, 2 April at 20:00 there (03:00 UTC on the 3rd), as the scheduler does
    theirs = invoicing.finalize_invoice(engine, draft(engine, la, dt.date(2026, 3, 1), "50.00"), SETTINGS,
                                        dt.date(2026, 4, 2), now=at("2026-04-03T03:00:00"))
    assert (str(march.amount_due), str(theirs.amount_due)) == ("40.00", "25.00")
    # a note by hand at 16:00 UTC on 24 April (01:00 on the 25th in Tokyo), dated the 24th as it is issued
    note = invoicing.create_credit_note(engine, march.number or "", Decimal("30.00"), "outage", SETTINGS,
                                        invoicing.issue_day(at("2026-04-24T16:00:00")), now=at("2026-04-24T16:00:00"))
    assert (note.issue_date, note.finalized_at) == (dt.date(2026, 4, 24), at("2026-04-24T16:00:00"))

    def owed(day: dt.date) -> dict[str, tuple[str, ...]]:
        return {r.customer: tuple(str(b) for b in r.buckets) for r in payments.aged_receivables(engine, day).rows}

    # on 2 April each invoice is owed less the credit that paid part of it when it was issued (100.00 − 60.00;
    # 50.00 − 25.00), both due 16 April
    assert owed(dt.date(2026, 4, 2)) == {
        "kaisha": ("40.00", "0.00", "0.00", "0.00", "0.00"), "studio": ("25.00", "0.00", "0.00", "0.00", "0.00")
    }
    # the note takes 30.00 off from its date on, the 24th: 40.00 then 10.00, 7 and 8 days overdue
    assert owed(dt.date(2026, 4, 23))["kaisha"] == ("0.00", "40.00", "0.00", "0.00", "0.00")
    assert owed(dt.date(2026, 4, 24))["kaisha"] == ("0.00", "10.00", "0.00", "0.00", "0.00")


def test_aged_receivables_as_of_a_past_day_hold_an_invoice_voided_since(engine, monkeypatch):
    """An invoice owed on 4 May and voided on 5 May in New York (02:00 UTC on the 6th) was owed at the end of 4 May,
    as the export's receivable says (it dropped out of every earlier day's aging once voided); at the end of the
    5th, its customer's day of the void, it is not."""
    ny = customer(engine, "acme", timezone="America/New_York")
    credits.grant_credit(engine, ny, D("30.00"), "USD", now=at("2026-03-05T00:00:00"))
    march = issued(engine, ny, 3, "100.00")  # issued 2 April, due 16 April; 30.00 of it paid by the credit
    monkeypatch.setattr("invoices.store.lifecycle.utcnow", lambda: at("2026-05-06T02:00:00"))
    invoicing.set_invoice_status(engine, march.number or "", InvoiceStatus.VOID)
    monkeypatch.undo()

    def owed(day: dt.date) -> list[tuple[str, ...]]:
        return [tuple(str(b) for b in r.buckets) for r in payments.aged_receivables(engine, day).rows]

    # 100.00 − 30.00 = 70.00, due 16 April: 18 days overdue on 4 May; nothing from the 5th (the credit went back
    # to the customer with the void)
    assert owed(dt.date(2026, 4, 20)) == [("0.00", "70.00", "0.00", "0.00", "0.00")]
    assert owed(dt.date(2026, 5, 4)) == [("0.00", "70.00", "0.00", "0.00", "0.00")]
    assert owed(dt.date(2026, 5, 5)) == []
    assert owed(dt.date(2026, 4, 1)) == []  # (before it was issued)


def test_aged_receivables_as_of_a_past_day_hold_an_invoice_given_up_on_since(engine, monkeypatch):
    """An invoice owed on 4 May and marked uncollectible on 5 May in New York (02:00 UTC on the 6th) was owed at
    the end of 4 May: an aging as of a past day says the same whenever it is asked (it dropped out of every earlier
    day's aging once given up on). From the 5th on, given up on, it is no longer aged."""
    ny = customer(engine, "acme", timezone="America/New_York")
    credits.grant_credit(engine, ny, D("30.00"), "USD", now=at("2026-03-05T00:00:00"))
    march = issued(engine, ny, 3, "100.00")  # issued 2 April, due 16 April; 30.00 of it paid by the credit

    def owed(day: dt.date) -> list[tuple[str, ...]]:
        return [tuple(str(b) for b in r.buckets) for r in payments.aged_receivables(engine, day).rows]

    before = owed(dt.date(2026, 5, 4))
    monkeypatch.setattr("invoices.store.lifecycle.utcnow", lambda: at("2026-05-06T02:00:00"))
    invoicing.set_invoice_status(engine, march.number or "", InvoiceStatus.UNCOLLECTIBLE)
    monkeypatch.undo()
    # 100.00 − 30.00 = 70.00, due 16 April: 18 days overdue on 4 May, before and after it was given up on
    assert before == owed(dt.date(2026, 5, 4)) == [("0.00", "70.00", "0.00", "0.00", "0.00")]
    assert owed(dt.date(2026, 4, 20)) == [("0.00", "70.00", "0.00", "0.00", "0.00")]
    assert owed(dt.date(2026, 5, 5)) == []
    assert owed(dt.date(2026, 4, 1)) == []  # (before it was issued)
    # marked paid by hand on 7 May (no payment recorded): 4 May still says 70.00, and nothing is owed after
    monkeypatch.setattr("invoices.store.lifecycle.utcnow", lambda: at("2026-05-07T12:00:00"))
    invoicing.set_invoice_status(engine, march.number or "", InvoiceStatus.PAID)
    monkeypatch.undo()
    assert owed(dt.date(2026, 5, 4)) == [("0.00", "70.00", "0.00", "0.00", "0.00")]
    assert owed(dt.date(2026, 5, 5)) == owed(dt.date(2026, 5, 8)) == []


def test_aged_receivables_follow_each_invoices_status_history(engine, monkeypatch):
    """Two invoices of 100.00 issued 2 April (due 16 April), both given up on on 5 May; acme's voided on 20 May,
    beta's paid after all on 25 May, the payment bouncing on 28 May. Both were owed on 4 May (18 days overdue); from
    5 May neither was, given up on, until beta's was owed again from the 28th (42 days overdue on 28 May: 31-60).
    (With only an invoice's last status change, both counted as owed from 5 May to their void or payment.)"""
    from invoices import store

    acme, beta = customer(engine, "acme"), customer(engine, "beta")
    voided, paid = issued(engine, acme, 3, "100.00"), issued(engine, beta, 3, "100.00")
    monkeypatch.setattr("invoices.store.lifecycle.utcnow", lambda: at("2026-05-05T12:00:00"))
    for invoice in (voided, paid):
        invoicing.set_invoice_status(engine, invoice.number or "", InvoiceStatus.UNCOLLECTIBLE)
    monkeypatch.setattr("invoices.store.lifecycle.utcnow", lambda: at("2026-05-20T12:00:00"))
    invoicing.set_invoice_status(engine, voided.number or "", InvoiceStatus.VOID)
    monkeypatch.undo()
    payment = payments.record_payment(engine, paid.number or "", D("100.00"), method="bank_transfer",
                                      received_on=dt.date(2026, 5, 25), now=at("2026-05-25T12:00:00"))
    payments.reverse_payment(engine, payment.id, on=dt.date(2026, 5, 28), now=at("2026-05-28T12:00:00"))

    def owed(day: int) -> dict[str, tuple[str, ...]]:
        aging = payments.aged_receivables(engine, dt.date(2026, 5, day))
        return {r.customer: tuple(str(b) for b in r.buckets) for r in aging.rows}

    overdue = ("0.00", "100.00", "0.00", "0.00", "0.00")
    assert owed(4) == {"acme": overdue, "beta": overdue}
    assert owed(5) == owed(10) == owed(22) == owed(26) == {}
    assert owed(28) == {"beta": ("0.00", "0.00", "100.00", "0.00", "0.00")}
    with session_scope(engine) as session:
        history = store.status_histories(session, [paid.id])[paid.id]
    assert [(status.value, f"{since:%d %b}") for status, since in history] == [
        ("finalized", "02 Apr"), ("uncollectible", "05 May"), ("paid", "25 May"), ("finalized", "28 May")
    ]


def test_receivables_that_add_up_past_the_largest_amount_are_aged_not_an_error(engine):
    acme = customer(engine, "acme")
    # two invoices of 600,000,000,000,000.00 each (each below 10^15; together 1.2 × 10^15)
    issued(engine, acme, 1, "600000000000000.00")
    issued(engine, acme, 2, "600000000000000.00")
    aging = payments.aged_receivables(engine, dt.date(2026, 3, 10))
    # January's due 16 Feb: 22 days late on 10 March → 1-30; February's due 16 March → current
    assert payments.aging_json(aging)["totals"] == [
        {"currency": "USD", "invoices": 2, "current": "600000000000000.00", "1-30": "600000000000000.00",
         "31-60": "0.00", "61-90": "0.00", "90+": "0.00", "total": "1200000000000000.00"}
    ]


def test_payments_between_lists_received_and_reversed_in_the_period(engine):
    who = customer(engine)
    invoice = issued(engine, who, 3, "100.00")
    kept = pay(engine, invoice.number, "30.00", day="2026-04-10")
    bounced = pay(engine, invoice.number, "20.00", day="2026-03-31")
    payments.reverse_payment(engine, bounced.id, on=dt.date(2026, 4, 12), now=NOW)
    april = payments.payments_between(engine, dt.date(2026, 4, 1), dt.date(2026, 5, 1))
    assert [(p.id, p.received_on.isoformat(), p.reversed_on and p.reversed_on.isoformat()) for p in april] == [
        (bounced.id, "2026-03-31", "2026-04-12"), (kept.id, "2026-04-10", None)
    ]
    assert payments.payment_json(april[0]) | {"recorded_at": ""} == {
        "id": bounced.id, "invoice": invoice.number, "customer": who, "currency": "USD", "amount": "20.00",
        "applied": "20.00", "to_balance": "0.00", "method": "bank_transfer", "reference": None,
        "received_on": "2026-03-31", "recorded_at": "", "status": "reversed", "reversed_on": "2026-04-12",
        "reversal_reason": None, "balance_recovered": "0.00", "balance_unrecovered": "0.00",
    }


def test_the_ledger_records_the_overpayment_and_its_reversal_as_movements(engine):
    who = customer(engine)
    invoice = issued(engine, who, 3, "100.00")
    payment = pay(engine, invoice.number, "120.00")
    payments.reverse_payment(engine, payment.id, now=NOW)
    legs = [(e.movement, e.account, str(e.amount)) for e in credits.ledger(engine, who)]
    assert legs == [
        (f"overpayment:{payment.id}", "customer", "20.00"),
        (f"overpayment:{payment.id}", "payment", "-20.00"),
        (f"reversal:{payment.id}", "customer", "-20.00"),
        (f"reversal:{payment.id}", "payment", "20.00"),
    ]
    with session_scope(engine) as session:
        assert credits.ledger_problems(session) == []


def test_a_paid_top_up_is_usable_and_a_bounce_takes_back_what_is_left_until_it_is_paid_again(engine):
    who = customer(engine)
    grant = credits.grant_credit(engine, who, D("50.00"), "USD", paid=True, now=at("2026-03-05T00:00:00"))
    topup = grant.invoice_number or ""
    bounced = pay(engine, topup, "50.00", day="2026-03-06")
    [usd] = credits.balance(engine, who)
    assert (str(usd.paid), str(usd.pending)) == ("50.00", "0.00")  # paid by transfer: usable, as Stripe's would be
    march = issued(engine, who, 3, "30.00")
    # the credit pays March's 30.00: 50.00 − 30.00 = 20.00 left
    assert ([(c.kind, str(c.amount)) for c in march.credits_applied], str(march.amount_due)) == (
        [("paid", "30.00")], "0.00"
    )
    payments.reverse_payment(engine, bounced.id, on=dt.date(2026, 4, 3), now=NOW)
    shown = invoicing.get_invoice(engine, topup)
    assert (shown.status, str(shown.amount_due)) == (InvoiceStatus.FINALIZED, "50.00")
    # the transfer bounced: the 20.00 left of the credit leaves the balance (the 30.00 spent is what the top-up
    # invoice, owed again, pays for); April's 40.00 gets no credit
    [usd] = credits.balance(engine, who)
    assert str(usd.paid) == "0.00"
    april = issued(engine, who, 4, "40.00")
    assert (april.credits_applied, str(april.amount_due)) == ((), "40.00")
    holds(engine)
    # paid again: the 20.00 taken back is usable again; May's 25.00 takes it, 25.00 − 20.00 = 5.00 due
    pay(engine, topup, "50.00", day="2026-04-16")
    [usd] = credits.balance(engine, who)
    assert str(usd.paid) == "20.00"
    may = issued(engine, who, 5, "25.00")
    assert ([(c.kind, str(c.amount)) for c in may.credits_applied], str(may.amount_due)) == (
        [("paid", "20.00")], "5.00"
    )
    holds(engine)


def test_a_reversal_is_not_dated_in_the_future(engine):
    who = customer(engine)
    invoice = issued(engine, who, 3, "100.00")
    payment = pay(engine, invoice.number, "30.00")
    with pytest.raises(BillingInputError, match="--date: 2026-04-22 is in the future"):
        payments.reverse_payment(engine, payment.id, on=dt.date(2026, 4, 22), now=NOW)
    assert not payments.get_payment(engine, payment.id).reversed
    assert str(invoicing.get_invoice(engine, invoice.number).amount_due) == "70.00"


def test_credit_of_a_bounced_payment_that_comes_back_from_a_voided_invoice_is_taken_back_too(engine):
    who = customer(engine)
    march = issued(engine, who, 3, "100.00")
    bounced = pay(engine, march.number, "120.00")
    april = issued(engine, who, 4, "15.00")  # paid by the 20.00 excess: 5.00 left on the balance
    reversed_ = payments.reverse_payment(engine, bounced.id, now=at("2026-05-03T00:00:00"))
    assert (str(reversed_.recovered), str(reversed_.unrecovered)) == ("5.00", "15.00")
    # April is voided: the 15.00 the excess paid comes back to its grant — money that was never received, so it
    # is taken back at once, and the payment has nothing unrecovered any more (20.00 taken back of 20.00)
    invoicing.set_invoice_status(engine, april.number, InvoiceStatus.VOID)
    [usd] = credits.balance(engine, who, now=at("2026-05-04T00:00:00"))
    assert str(usd.balance) == "0.00"
    shown = payments.get_payment(engine, bounced.id)
    assert (str(shown.recovered), str(shown.unrecovered)) == ("20.00", "0.00")
    assert payments.payment_json(shown)["balance_unrecovered"] == "0.00"
    may = issued(engine, who, 5, "30.00")
    assert (may.credits_applied, str(may.amount_due)) == ((), "30.00")
    holds(engine)


def test_credit_of_a_bounced_top_up_that_comes_back_from_a_voided_invoice_waits_for_the_top_up_to_be_paid(engine):
    who = customer(engine)
    grant = credits.grant_credit(engine, who, D("50.00"), "USD", paid=True, now=at("2026-03-05T00:00:00"))
    topup = grant.invoice_number or ""
    bounced = pay(engine, topup, "50.00", day="2026-03-06")
    march = issued(engine, who, 3, "30.00")  # paid by the credit: 20.00 left
    payments.reverse_payment(engine, bounced.id, on=dt.date(2026, 4, 3), now=NOW)  # 20.00 taken back
    invoicing.set_invoice_status(engine, march.number, InvoiceStatus.VOID)  # its 30.00 comes back: taken back too
    [usd] = credits.balance(engine, who)
    assert str(usd.paid) == "0.00"
    april = issued(engine, who, 4, "40.00")
    assert (april.credits_applied, str(april.amount_due)) == ((), "40.00")
    # paid again: all 50.00 is the customer's (20.00 + 30.00 taken back); May's 60.00 takes it → 10.00 due
    pay(engine, topup, "50.00", day="2026-04-16")
    may = issued(engine, who, 5, "60.00")
    assert ([(c.kind, str(c.amount)) for c in may.credits_applied], str(may.amount_due)) == (
        [("paid", "50.00")], "10.00"
    )
    holds(engine)


def test_a_top_up_paid_at_an_instant_is_paid_and_its_credit_usable_from_that_instant(engine):
    """The instant a payment is recorded at (``now``) is when its invoice became paid, not the clock's: the paid
    credit's movement, which the month's export reads, is dated by it."""
    who = customer(engine)
    grant = credits.grant_credit(engine, who, D("50.00"), "USD", paid=True, now=at("2026-03-05T00:00:00"))
    pay(engine, grant.invoice_number or "", "50.00", day="2026-03-06")
    [usd] = credits.balance(engine, who)  # (which brings the ledger up to date)
    assert str(usd.paid) == "50.00"
    [usable] = [e for e in credits.ledger(engine, who) if e.movement == f"grant:{grant.id}" and e.account == "customer"]
    assert (str(usable.amount), usable.effective_at) == ("50.00", NOW)
    with session_scope(engine) as session:
        changed = session.scalar(select(InvoiceRow.status_changed_at).where(InvoiceRow.number == grant.invoice_number))
    assert changed == NOW


def test_a_bounced_top_up_credited_then_paid_again_gives_back_only_what_was_paid_for(engine):
    """50.00 top-up paid, the transfer bounces (all 50.00 held back, shown as pending), a note of 20.00 takes
    30.00 off what is owed, 30.00 paid: 30.00 of credit comes back, not 50.00 (20.00 nobody paid for)."""
    who = customer(engine)
    grant = credits.grant_credit(engine, who, D("50.00"), "USD", paid=True, now=at("2026-03-05T00:00:00"))
    topup = grant.invoice_number or ""
    bounced = pay(engine, topup, "50.00", day="2026-03-06")
    [usd] = credits.balance(engine, who)
    assert str(usd.paid) == "50.00"  # usable
    payments.reverse_payment(engine, bounced.id, on=dt.date(2026, 3, 10), now=NOW)
    [usd] = credits.balance(engine, who)
    assert (str(usd.paid), str(usd.pending)) == ("0.00", "50.00")
    invoicing.create_credit_note(engine, topup, D("20.00"), "smaller pack", FinalizeSettings(), dt.date(2026, 4, 1))
    [usd] = credits.balance(engine, who)
    assert str(usd.pending) == "30.00"
    assert str(invoicing.get_invoice(engine, topup).amount_due) == "30.00"
    pay(engine, topup, "30.00", day="2026-04-16")
    [usd] = credits.balance(engine, who)
    assert (str(usd.paid), str(usd.pending)) == ("30.00", "0.00")
    may = issued(engine, who, 5, "45.00")
    assert ([(c.kind, str(c.amount)) for c in may.credits_applied], str(may.amount_due)) == (
        [("paid", "30.00")], "15.00"
    )
    holds(engine)


def test_a_note_of_a_bounced_top_up_takes_back_at_most_what_is_held_back(engine):
    """50.00 top-up paid, 30.00 of it spent, the transfer bounces (20.00 held back, 50.00 owed): a note of 40.00
    would leave 10.00 to pay for 30.00 spent, and is refused; one of 20.00 leaves 30.00 to pay, and nothing
    comes back once paid."""
    who = customer(engine)
    grant = credits.grant_credit(engine, who, D("50.00"), "USD", paid=True, now=at("2026-03-05T00:00:00"))
    topup = grant.invoice_number or ""
    bounced = pay(engine, topup, "50.00", day="2026-03-06")
    issued(engine, who, 3, "30.00")  # paid by the credit
    payments.reverse_payment(engine, bounced.id, on=dt.date(2026, 4, 3), now=NOW)
    with pytest.raises(ConflictError, match=r"of which 20\.00 is left unspent: a credit note of it"):
        invoicing.create_credit_note(engine, topup, D("40.00"), "smaller pack", FinalizeSettings(), dt.date(2026, 4, 5))
    invoicing.create_credit_note(engine, topup, D("20.00"), "smaller pack", FinalizeSettings(), dt.date(2026, 4, 5))
    assert str(invoicing.get_invoice(engine, topup).amount_due) == "30.00"
    pay(engine, topup, "30.00", day="2026-04-16")
    [usd] = credits.balance(engine, who)
    assert (str(usd.paid), str(usd.pending)) == ("0.00", "0.00")
    holds(engine)
