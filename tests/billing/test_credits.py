"""Prepaid credits and the customer's balance on their double-entry ledger (SQLite and PostgreSQL): the order
credits pay in, expiry at the boundary, a paid grant usable only once its top-up invoice is paid, a negative
invoice's amount on the balance used by the next invoice, a void giving credits back, a failed finalization
applying nothing; and the ledger's invariants after each."""

from __future__ import annotations

import datetime as dt
import json
import threading
from decimal import Decimal

import pytest

from billing import credits, invoicing
from billing import customers as service
from billing.db import session_scope
from billing.errors import BillingInputError
from invoices import store
from invoices.model import DraftInvoice, InvoiceKind, InvoiceLine, InvoiceStatus, LineKind, Party

pytestmark = pytest.mark.db

SETTINGS = store.FinalizeSettings()
D = Decimal


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def customer(engine, name: str = "acme", timezone: str = "UTC", tax_rate: str = "0") -> str:
    service.create_customer(engine, name, name.title(), None, "USD", timezone=timezone, tax_rate=tax_rate)
    return name


def draft(engine, who: str, start: dt.date, *amounts: str, tax_rate: str = "0", timezone: str = "UTC") -> int:
    """A period draft of ``who`` for the month starting ``start``, one line per amount."""
    end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    lines = tuple(
        InvoiceLine(kind=LineKind.SUBSCRIPTION, description=f"line {i}", amount=D(a)) for i, a in enumerate(amounts)
    )
    invoice = DraftInvoice(
        billing_key=f"period:{who}:{start:%Y-%m}", customer=Party(name=who, external_id=who), currency="USD",
        locale="en_US", period_start=start, period_end=end, lines=lines, tax_rate=D(tax_rate), timezone=timezone,
    )
    with session_scope(engine) as session:
        return store.upsert_draft(session, invoice).invoice_id


def finalize(engine, invoice_id: int, now: str):
    instant = at(now)
    return invoicing.finalize_invoice(engine, invoice_id, SETTINGS, instant.date(), now=instant)


def applied(invoice) -> list[tuple[str, str]]:
    return [(c.kind, str(c.amount)) for c in invoice.credits_applied]


def holds(engine) -> None:
    with session_scope(engine) as session:
        assert credits.ledger_problems(session) == []


def test_free_before_paid_then_earliest_expiry_then_oldest(engine):
    who = customer(engine)
    now = at("2026-02-10T12:00:00")
    paid = credits.grant_credit(engine, who, D("20.00"), "USD", paid=True, now=now)
    credits.grant_credit(engine, who, D("10.00"), "USD", expires=dt.date(2026, 6, 1), reason="late", now=now)
    credits.grant_credit(engine, who, D("5.00"), "USD", expires=dt.date(2026, 5, 1), reason="soon", now=now)
    credits.grant_credit(engine, who, D("4.00"), "USD", reason="forever", now=now)
    invoicing.set_invoice_status(engine, paid.invoice_number or "", InvoiceStatus.PAID)
    # March 12.00 (tax 10 % on 10.00 + 0.91 → 10.91 + 1.09 = 12.00): the free grant expiring first pays 5.00,
    # then the one expiring on 1 June 7.00; the paid one is untouched
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "10.91", tax_rate="10"), "2026-04-02T00:00:00")
    assert (str(march.tax), str(march.total)) == ("1.09", "12.00")
    assert applied(march) == [("free", "5.00"), ("free", "7.00")]
    assert str(march.amount_due) == "0.00"
    # April 30.00: the 3.00 left of "late", then "forever" 4.00 (no expiry comes after any expiry), then the paid
    # 20.00 → 27.00 of credit, 30.00 − 27.00 = 3.00 due
    april = finalize(engine, draft(engine, who, dt.date(2026, 4, 1), "30.00"), "2026-05-02T00:00:00")
    assert [c.description for c in april.credits_applied] == ["Free credit: late", "Free credit: forever",
                                                             "Prepaid credit"]
    assert applied(april) == [("free", "3.00"), ("free", "4.00"), ("paid", "20.00")]
    assert str(april.amount_due) == "3.00"
    [usd] = credits.balance(engine, who, now=at("2026-05-02T00:00:00"))
    assert (str(usd.free), str(usd.paid), str(usd.total)) == ("0.00", "0.00", "0.00")
    holds(engine)


def test_a_lower_priority_number_is_used_first_within_a_kind(engine):
    who = customer(engine)
    now = at("2026-02-10T12:00:00")
    credits.grant_credit(engine, who, D("10.00"), "USD", expires=dt.date(2026, 5, 1), priority=5, now=now)
    first = credits.grant_credit(engine, who, D("10.00"), "USD", priority=1, now=now)
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "4.00"), "2026-04-02T00:00:00")
    assert [(c.grant_id, str(c.amount)) for c in march.credits_applied] == [(first.id, "4.00")]


def test_a_paid_grant_is_usable_only_once_its_top_up_invoice_is_paid(engine):
    who = customer(engine)
    grant = credits.grant_credit(engine, who, D("50.00"), "USD", paid=True, now=at("2026-02-10T12:00:00"))
    assert (grant.kind, grant.usable, str(grant.remaining)) == ("paid", False, "0.00")
    topup = invoicing.get_invoice(engine, grant.invoice_number or "")
    # the top-up invoice: one untaxed line, issued at once, not paid by credit itself
    assert (topup.status, str(topup.total), str(topup.amount_due)) == (InvoiceStatus.FINALIZED, "50.00", "50.00")
    assert topup.billing_key == f"topup:{grant.id}"
    [usd] = credits.balance(engine, who)
    assert (str(usd.paid), str(usd.pending)) == ("0.00", "50.00")
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "30.00"), "2026-04-02T00:00:00")
    assert applied(march) == [] and str(march.amount_due) == "30.00"
    invoicing.set_invoice_status(engine, grant.invoice_number or "", InvoiceStatus.PAID)
    [usd] = credits.balance(engine, who)
    assert (str(usd.paid), str(usd.pending)) == ("50.00", "0.00")
    april = finalize(engine, draft(engine, who, dt.date(2026, 4, 1), "30.00"), "2026-05-02T00:00:00")
    # 50.00 − 30.00 = 20.00 left
    assert applied(april) == [("paid", "30.00")] and str(april.amount_due) == "0.00"
    [usd] = credits.balance(engine, who)
    assert str(usd.paid) == "20.00"
    holds(engine)


def test_a_credit_pays_a_period_that_began_before_it_expired_never_one_that_began_after(engine):
    # New York: 2026-04-01 begins at 04:00 UTC (EDT, UTC−4)
    who = customer(engine, timezone="America/New_York")
    grant = credits.grant_credit(engine, who, D("25.00"), "USD", expires=dt.date(2026, 4, 1),
                                 now=at("2026-02-10T12:00:00"))
    assert grant.expires_at == at("2026-04-01T04:00:00")
    # a second before its expiry, nothing is written off; at it, all 25.00 is
    [usd] = credits.balance(engine, who, now=at("2026-04-01T03:59:59"))
    assert str(usd.free) == "25.00"
    [usd] = credits.balance(engine, who, now=at("2026-04-01T04:00:00"))
    assert str(usd.free) == "0.00"
    expiry = [e for e in credits.ledger(engine, who) if e.kind == "expiry"]
    assert [(e.account, str(e.amount), e.effective_at) for e in expiry] == [
        ("customer", "-25.00", at("2026-04-01T04:00:00")), ("expired", "25.00", at("2026-04-01T04:00:00")),
    ]
    # March began before the expiry: its invoice, finalized days after (grace), still takes 10.00 of it back
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "10.00"), "2026-04-05T12:00:00")
    assert applied(march) == [("free", "10.00")]
    # April began at the very instant it expired: nothing
    april = finalize(engine, draft(engine, who, dt.date(2026, 4, 1), "10.00"), "2026-05-05T12:00:00")
    assert applied(april) == [] and str(april.amount_due) == "10.00"
    # the grant: 25.00 granted, 25.00 written off, 10.00 reinstated and applied → remaining 0.00
    [usd] = credits.balance(engine, who, now=at("2026-05-05T12:00:00"))
    assert str(usd.grants[0].remaining) == "0.00"
    holds(engine)


def test_a_negative_invoice_keeps_its_total_and_its_amount_pays_the_next_invoice(engine):
    who = customer(engine)
    # a refund of −50.32 against a fee of 30.00: total −20.32
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "30.00", "-50.32"), "2026-04-02T00:00:00")
    assert (str(march.total), str(march.amount_due), applied(march)) == ("-20.32", "0.00", [])
    [usd] = credits.balance(engine, who)
    assert (str(usd.balance), str(usd.total)) == ("20.32", "20.32")
    # April 30.00: free credit 5.00 first, then the balance 20.32 → 30.00 − 25.32 = 4.68 due
    credits.grant_credit(engine, who, D("5.00"), "USD", now=at("2026-04-10T00:00:00"))
    april = finalize(engine, draft(engine, who, dt.date(2026, 4, 1), "30.00"), "2026-05-02T00:00:00")
    assert applied(april) == [("free", "5.00"), ("balance", "20.32")]
    assert [c.description for c in april.credits_applied][1] == "Customer balance"
    assert str(april.amount_due) == "4.68"
    refunds = [(e.kind, e.account, str(e.amount)) for e in credits.ledger(engine, who) if e.kind == "refund"]
    assert refunds == [("refund", "customer", "20.32"), ("refund", "refund", "-20.32")]
    holds(engine)


def test_a_credit_note_refunded_to_the_balance_uses_the_same_ledger(engine):
    who = customer(engine)
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "40.00"), "2026-04-02T00:00:00")
    invoicing.set_invoice_status(engine, march.number or "", InvoiceStatus.PAID)  # 40.00 paid in cash
    note = invoicing.create_credit_note(
        engine, march.number or "", D("12.50"), "outage", SETTINGS, dt.date(2026, 4, 3), to_balance=True
    )
    assert str(note.total) == "12.50"
    [usd] = credits.balance(engine, who)
    assert str(usd.balance) == "12.50"
    april = finalize(engine, draft(engine, who, dt.date(2026, 4, 1), "20.00"), "2026-05-02T00:00:00")
    # 20.00 − 12.50 = 7.50
    assert applied(april) == [("balance", "12.50")] and str(april.amount_due) == "7.50"
    holds(engine)


def test_a_voided_invoice_gives_its_credits_back(engine):
    who = customer(engine)
    credits.grant_credit(engine, who, D("10.00"), "USD", now=at("2026-02-10T00:00:00"))
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "6.00"), "2026-04-02T00:00:00")
    assert applied(march) == [("free", "6.00")]
    invoicing.set_invoice_status(engine, march.number or "", InvoiceStatus.VOID)
    [usd] = credits.balance(engine, who)
    assert str(usd.free) == "10.00"
    # the void invoice still shows what was applied and given back: its ledger has both
    kinds = [e.kind for e in credits.ledger(engine, who) if e.invoice_id == march.id]
    assert kinds == ["application", "application", "void", "void"]
    holds(engine)


def test_a_finalization_that_fails_applies_nothing_and_its_rerun_applies_once(engine, monkeypatch):
    who = customer(engine)
    credits.grant_credit(engine, who, D("10.00"), "USD", now=at("2026-02-10T00:00:00"))
    invoice_id = draft(engine, who, dt.date(2026, 3, 1), "6.00")

    def crash(session, invoice):
        raise RuntimeError("killed")

    monkeypatch.setattr(invoicing, "queue_invoice_finalized", crash)
    with pytest.raises(RuntimeError):
        finalize(engine, invoice_id, "2026-04-02T00:00:00")
    assert [e for e in credits.ledger(engine, who) if e.kind == "application"] == []
    monkeypatch.undo()
    march = finalize(engine, invoice_id, "2026-04-02T00:00:00")
    assert applied(march) == [("free", "6.00")]
    [usd] = credits.balance(engine, who)
    assert str(usd.free) == "4.00"
    holds(engine)


def test_bad_grants_are_refused_naming_the_field(engine):
    who = customer(engine)
    now = at("2026-02-10T00:00:00")
    with pytest.raises(BillingInputError, match="AMOUNT"):
        credits.grant_credit(engine, who, D("1.001"), "USD", now=now)
    with pytest.raises(BillingInputError, match="AMOUNT"):
        credits.grant_credit(engine, who, D("-5"), "USD", now=now)
    # an amount no invoice could hold is refused as bad input, not an error of the server
    with pytest.raises(BillingInputError, match="AMOUNT: expected a positive amount below 1,000,000,000,000,000"):
        credits.grant_credit(engine, who, D("49845795137792882548397615671423"), "USD", now=now)
    with pytest.raises(BillingInputError, match="--currency"):
        credits.grant_credit(engine, who, D("5"), "XXY", now=now)
    with pytest.raises(BillingInputError, match="--expires"):
        credits.grant_credit(engine, who, D("5"), "USD", expires=dt.date(2026, 2, 10), now=now)
    with pytest.raises(BillingInputError, match="--priority: expected a whole number from 0 to 1,000,000, got 2147483648"):
        credits.grant_credit(engine, who, D("5"), "USD", priority=2**31, now=now)
    assert credits.grant_credit(engine, who, D("5"), "usd", now=now).currency == "USD"
    # what the customer holds stays below the largest amount: 5 + 999,999,999,999,995 reaches it
    with pytest.raises(BillingInputError, match=r"AMOUNT: .* would hold 1,000,000,000,000,000.00 USD of credit"):
        credits.grant_credit(engine, who, D("999999999999995"), "USD", now=now)
    assert str(credits.grant_credit(engine, who, D("999999999999994.99"), "USD", now=now).amount) == "999999999999994.99"


def test_the_scheduler_writes_expiries_off_on_their_date_and_makes_paid_top_ups_usable(engine):
    who = customer(engine, timezone="Europe/Berlin")
    credits.grant_credit(engine, who, D("7.00"), "USD", expires=dt.date(2026, 3, 1), now=at("2026-02-10T00:00:00"))
    paid = credits.grant_credit(engine, who, D("3.00"), "USD", paid=True, now=at("2026-02-10T00:00:00"))
    invoicing.set_invoice_status(engine, paid.invoice_number or "", InvoiceStatus.PAID)
    # Berlin: 1 March begins at 2026-02-28T23:00Z (CET, UTC+1)
    assert credits.settle_due(engine, at("2026-02-28T22:59:59")) == 1
    kinds = [(e.kind, e.account, str(e.amount)) for e in credits.ledger(engine, who) if e.kind != "grant"]
    assert kinds == []
    credits.settle_due(engine, at("2026-02-28T23:00:00"))
    entries = credits.ledger(engine, who)
    assert [(e.kind, e.account, str(e.amount)) for e in entries if e.grant_id == paid.id] == [
        ("grant", "customer", "3.00"), ("grant", "topup", "-3.00")
    ]
    assert [(e.kind, e.account, str(e.amount), e.effective_at) for e in entries if e.kind == "expiry"] == [
        ("expiry", "customer", "-7.00", at("2026-02-28T23:00:00")),
        ("expiry", "expired", "7.00", at("2026-02-28T23:00:00")),
    ]
    holds(engine)


def test_stripe_collects_the_amount_due_not_the_total(engine):
    from billing.stripe.sync import stripe_items

    who = customer(engine)
    credits.grant_credit(engine, who, D("5.00"), "USD", reason="welcome", now=at("2026-02-10T00:00:00"))
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "12.00"), "2026-04-02T00:00:00")
    # 12.00 − 5.00 = 7.00: Stripe is asked for 700 cents
    assert [(i.key, i.description, i.amount) for i in stripe_items(march)] == [
        ("item:1", "line 0", 1200), (f"credit:{march.credits_applied[0].grant_id}", "Free credit: welcome", -500),
    ]
    april = finalize(engine, draft(engine, who, dt.date(2026, 4, 1), "30.00", "-50.32"), "2026-05-02T00:00:00")
    # −20.32 goes to the balance: Stripe is asked for nothing
    assert [(i.key, i.amount) for i in stripe_items(april)] == [("item:1", 3000), ("item:2", -5032), ("balance", 2032)]


def test_an_opening_invoice_is_paid_by_a_credit_only_if_its_fee_period_began_before_the_expiry(engine):
    from invoices.model import InvoiceScope

    who = customer(engine)
    credits.grant_credit(engine, who, D("50.00"), "USD", expires=dt.date(2026, 3, 20), now=at("2026-02-10T00:00:00"))

    def opening(subscription_id: int, day: int) -> int:
        line = InvoiceLine(kind=LineKind.SUBSCRIPTION, description="fee", amount=D("10.00"),
                           service_start=dt.date(2026, 3, day), service_end=dt.date(2026, 4, 1))
        invoice = DraftInvoice(
            billing_key=f"start:{subscription_id}", customer=Party(name=who, external_id=who), currency="USD",
            locale="en_US", period_start=dt.date(2026, 3, 1), period_end=dt.date(2026, 4, 1), lines=(line,),
            scope=InvoiceScope.OPENING, subscription_id=subscription_id,
        )
        with session_scope(engine) as session:
            return store.upsert_draft(session, invoice).invoice_id

    # both bill March; one fee period begins on the 10th (before the expiry on the 20th), one on the 22nd (after)
    early = finalize(engine, opening(98, 10), "2026-03-25T00:00:00")
    late = finalize(engine, opening(99, 22), "2026-03-25T00:00:00")
    assert (applied(early), str(early.amount_due)) == ([("free", "10.00")], "0.00")
    assert (applied(late), str(late.amount_due)) == ([], "10.00")
    holds(engine)


def test_the_invoice_finalized_webhook_carries_the_credits_and_the_amount_due(engine):
    import json

    from billing.core.periods import month
    from billing.db.notification_tables import NotificationRow
    from billing.run import finalize_period

    who = customer(engine)
    credits.grant_credit(engine, who, D("5.00"), "USD", reason="welcome", now=at("2026-02-10T00:00:00"))
    draft(engine, who, dt.date(2026, 3, 1), "12.00")
    finalize_period(engine, month(2026, 3), SETTINGS, dt.date(2026, 4, 2), now=at("2026-04-02T00:00:00"))
    with session_scope(engine) as session:
        rows = session.query(NotificationRow).order_by(NotificationRow.kind).all()
        # the invoice's, and the alert that the 5.00 of credit is used up
        assert [row.kind for row in rows] == ["credit.balance_depleted", "invoice.finalized"]
        payload = json.loads(rows[1].payload)
    # 12.00 − 5.00 = 7.00
    assert (payload["invoice"]["total"], payload["invoice"]["amount_due"]) == ("12.00", "7.00")
    assert [c["amount"] for c in payload["invoice"]["credits_applied"]] == ["5.00"]


def _wait_for_a_lock_wait(engine) -> None:
    """Until another connection waits for a row lock (PostgreSQL)."""
    from sqlalchemy import text

    for _ in range(600):
        with engine.connect() as connection:
            waiting = connection.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
            ).scalar_one()
        if waiting:
            return
        threading.Event().wait(0.05)
    raise AssertionError("the finalization never waited for the customer's row")


def test_a_finalization_takes_the_customer_before_the_number_sequence(engine, db_url):
    """A paid grant holds its customer's row, then takes the invoice number sequence; a finalization must take
    them in the same order, or each waits for the other (PostgreSQL stops one: a deadlock)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("row locks: PostgreSQL (SQLite's write transaction holds the whole database)")
    from billing.db import repository

    who = customer(engine)
    credits.grant_credit(engine, who, D("5.00"), "USD", now=at("2026-02-10T00:00:00"))
    invoice_id = draft(engine, who, dt.date(2026, 3, 1), "30.00")
    failures: list[BaseException] = []

    def finalization() -> None:
        try:
            with session_scope(engine) as session:
                credits.finalize_with_credits(
                    session, [invoice_id], SETTINGS, dt.date(2026, 4, 2), at("2026-04-02T00:00:00")
                )
        except BaseException as error:  # (reported below)
            failures.append(error)

    with session_scope(engine) as session:  # as a paid grant does: the customer first...
        repository.get_customer(session, who, for_update=True)
        worker = threading.Thread(target=finalization)
        worker.start()
        _wait_for_a_lock_wait(engine)  # the finalization waits for the customer, holding nothing else
        store.next_numbers(session, store.sequence_name(InvoiceKind.INVOICE, "INV-{year}-{seq:06d}", 2026))
        session.rollback()  # ...then the sequence: free, the finalization did not take it first
    worker.join(60)
    assert failures == []
    assert applied(invoicing.get_invoice(engine, invoice_id)) == [("free", "5.00")]


def bal(engine, who, now="2026-06-01T00:00:00") -> tuple[str, str, str, str]:
    """(free, paid, balance, pending) in USD."""
    [usd] = credits.balance(engine, who, now=at(now))
    return (str(usd.free), str(usd.paid), str(usd.balance), str(usd.pending))


def test_voiding_a_negative_invoice_takes_its_balance_back_or_is_refused_once_it_was_spent(engine):
    from billing.errors import ConflictError

    for who in ("acme", "bob"):
        customer(engine, who)
        march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "30.00", "-50.32"), "2026-04-02T00:00:00")
        assert str(march.total) == "-20.32" and bal(engine, who)[2] == "20.32"
    acme_march = invoicing.get_invoice(engine, "period:acme:2026-03")
    invoicing.set_invoice_status(engine, acme_march.number or "", InvoiceStatus.VOID)
    assert bal(engine, "acme") == ("0.00", "0.00", "0.00", "0.00")  # the void took the 20.32 back
    # bob spent 15.00 of it on April before March was voided: the void is refused, nothing changes
    april = finalize(engine, draft(engine, "bob", dt.date(2026, 4, 1), "15.00"), "2026-05-02T00:00:00")
    assert applied(april) == [("balance", "15.00")]
    bob_march = invoicing.get_invoice(engine, "period:bob:2026-03")
    with pytest.raises(ConflictError, match=r"15\.00 USD of the balance it gave the customer has already paid"):
        invoicing.set_invoice_status(engine, bob_march.number or "", InvoiceStatus.VOID)
    assert invoicing.get_invoice(engine, bob_march.id).status is InvoiceStatus.FINALIZED
    assert bal(engine, "bob") == ("0.00", "0.00", "5.32", "0.00")  # 20.32 − 15.00
    holds(engine)


def test_a_credit_note_gives_back_free_credit_as_free_credit_and_only_cash_paid_as_balance(engine):
    who = customer(engine)
    credits.grant_credit(engine, who, D("100.00"), "USD", reason="promo", now=at("2026-02-10T00:00:00"))
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "100.00"), "2026-04-02T00:00:00")
    assert applied(march) == [("free", "100.00")] and str(march.amount_due) == "0.00"
    invoicing.create_credit_note(engine, march.number or "", D("100.00"), "goodwill", SETTINGS, dt.date(2026, 4, 3),
                                 to_balance=True)
    # paid by free credit: the free credit comes back, no cash balance is made of it
    assert bal(engine, who) == ("100.00", "0.00", "0.00", "0.00")
    # April 130.00: the 100.00 of free credit, then 30.00 paid in cash
    april = finalize(engine, draft(engine, who, dt.date(2026, 4, 1), "130.00"), "2026-05-02T00:00:00")
    assert applied(april) == [("free", "100.00")] and str(april.amount_due) == "30.00"
    invoicing.set_invoice_status(engine, april.number or "", InvoiceStatus.PAID)
    # a note of 110.00 to the balance: the 30.00 paid in cash goes to the balance, then 80.00 of free credit back
    invoicing.create_credit_note(engine, april.number or "", D("110.00"), "outage", SETTINGS, dt.date(2026, 5, 3),
                                 to_balance=True)
    assert bal(engine, who) == ("80.00", "0.00", "30.00", "0.00")
    # the last 20.00: no cash left to refund: the rest of the free credit
    invoicing.create_credit_note(engine, april.number or "", D("20.00"), "outage", SETTINGS, dt.date(2026, 5, 3),
                                 to_balance=True)
    assert bal(engine, who) == ("100.00", "0.00", "30.00", "0.00")
    holds(engine)


def test_a_credit_note_of_an_unpaid_invoice_reduces_its_amount_due_and_a_void_takes_it_back(engine):
    who = customer(engine)
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "100.00"), "2026-04-02T00:00:00")
    note = invoicing.create_credit_note(engine, march.number or "", D("40.00"), "outage", SETTINGS,
                                        dt.date(2026, 4, 3), to_balance=True)
    again = invoicing.get_invoice(engine, march.id)
    # as Stripe does: the customer owes 100.00 − 40.00 = 60.00, and holds no balance
    assert str(again.amount_due) == "60.00"
    assert [(c.description, str(c.amount)) for c in again.credits_applied] == [(f"Credit note {note.number}", "40.00")]
    assert bal(engine, who) == ("0.00", "0.00", "0.00", "0.00")
    invoicing.set_invoice_status(engine, march.number or "", InvoiceStatus.VOID)
    assert bal(engine, who) == ("0.00", "0.00", "0.00", "0.00")  # the 40.00 came back from the void: taken back
    holds(engine)


def test_credit_notes_of_top_ups_take_the_prepaid_credit_back(engine):
    from billing.errors import ConflictError

    who = customer(engine)
    unpaid = credits.grant_credit(engine, who, D("200.00"), "USD", paid=True, now=at("2026-02-10T00:00:00"))
    invoicing.create_credit_note(engine, unpaid.invoice_number or "", D("50.00"), "x", SETTINGS, dt.date(2026, 2, 11),
                                 to_balance=True)
    # unpaid: no balance; 150.00 left to pay, and awaited
    assert str(invoicing.get_invoice(engine, unpaid.invoice_number or "").amount_due) == "150.00"
    assert bal(engine, who) == ("0.00", "0.00", "0.00", "150.00")
    invoicing.set_invoice_status(engine, unpaid.invoice_number or "", InvoiceStatus.PAID)
    assert bal(engine, who) == ("0.00", "150.00", "0.00", "0.00")
    # paid, then spent 100.00 of; a note of 30.00 to the balance takes 30.00 of the credit back
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "100.00"), "2026-04-02T00:00:00")
    assert applied(march) == [("paid", "100.00")]
    invoicing.create_credit_note(engine, unpaid.invoice_number or "", D("30.00"), "x", SETTINGS, dt.date(2026, 4, 3),
                                 to_balance=True)
    assert bal(engine, who) == ("0.00", "20.00", "30.00", "0.00")
    # 20.00 is left unspent: a note of 50.00 would refund credit already spent
    with pytest.raises(ConflictError, match=r"of which 20\.00 is left unspent"):
        invoicing.create_credit_note(engine, unpaid.invoice_number or "", D("50.00"), "x", SETTINGS,
                                     dt.date(2026, 4, 3))
    # a top-up void or uncollectible awaits nothing any more
    for status in (InvoiceStatus.VOID, InvoiceStatus.UNCOLLECTIBLE):
        grant = credits.grant_credit(engine, who, D("70.00"), "USD", paid=True, now=at("2026-04-10T00:00:00"))
        assert bal(engine, who)[3] == "70.00"
        invoicing.set_invoice_status(engine, grant.invoice_number or "", status)
        assert bal(engine, who)[3] == "0.00"
    holds(engine)


def _march_at_ten_percent(engine, who: str, lines: tuple, taxes: tuple | None = None):
    """A March invoice of ``lines`` taxed at 10 % (or as ``taxes`` say), finalized on 2 April."""
    march = DraftInvoice(
        billing_key=f"period:{who}:2026-03", customer=Party(name=who, external_id=who), currency="USD",
        locale="en_US", period_start=dt.date(2026, 3, 1), period_end=dt.date(2026, 4, 1), lines=lines,
        tax_rate=D("10"), timezone="UTC", taxes=taxes,
    )
    with session_scope(engine) as session:
        invoice_id = store.upsert_draft(session, march).invoice_id
    return finalize(engine, invoice_id, "2026-04-02T00:00:00")


def test_a_credit_never_pays_an_in_advance_fee_of_a_period_that_begins_after_it_expired(engine):
    who = customer(engine, tax_rate="10")
    credits.grant_credit(engine, who, D("100.00"), "USD", expires=dt.date(2026, 4, 1), now=at("2026-02-10T00:00:00"))
    lines = (
        InvoiceLine(kind=LineKind.USAGE, description="March usage", amount=D("5.00"),
                    service_start=dt.date(2026, 3, 1), service_end=dt.date(2026, 4, 1)),
        InvoiceLine(kind=LineKind.SUBSCRIPTION, description="Fee, April (in advance)", amount=D("30.00"),
                    service_start=dt.date(2026, 4, 1), service_end=dt.date(2026, 5, 1)),
    )
    issued = _march_at_ten_percent(engine, who, lines)
    # (5.00 + 30.00) × 1.10 = 38.50; the credit expired as April began: it pays the March usage with its tax,
    # 5.00 × 1.10 = 5.50, not the April fee
    assert str(issued.total) == "38.50"
    assert applied(issued) == [("free", "5.50")] and str(issued.amount_due) == "33.00"
    holds(engine)


def test_an_expiring_credit_pays_a_tax_inclusive_line_with_the_tax_already_inside(engine):
    from invoices.model import TaxLine

    who = customer(engine, tax_rate="10")
    credits.grant_credit(engine, who, D("100.00"), "USD", expires=dt.date(2026, 4, 1), now=at("2026-02-10T00:00:00"))
    lines = (
        InvoiceLine(kind=LineKind.USAGE, description="March usage", amount=D("5.50"),
                    service_start=dt.date(2026, 3, 1), service_end=dt.date(2026, 4, 1)),
        InvoiceLine(kind=LineKind.SUBSCRIPTION, description="Fee, April (in advance)", amount=D("33.00"),
                    service_start=dt.date(2026, 4, 1), service_end=dt.date(2026, 5, 1)),
    )
    inside = (TaxLine(rate=D(10), taxable=D("35.00"), amount=D("3.50"), included=D("3.50")),)
    issued = _march_at_ten_percent(engine, who, lines, inside)
    # prices with 10 % inside: 5.50 + 33.00 = 38.50 in all; the credit pays the March usage as priced, 5.50 (its
    # tax is inside it: not 5.50 × 1.10 = 6.05, which would pay 0.55 of April's fee)
    assert str(issued.total) == "38.50"
    assert applied(issued) == [("free", "5.50")] and str(issued.amount_due) == "33.00"
    holds(engine)


def test_an_expiring_credit_pays_its_share_of_a_discounted_invoice(engine):
    who = customer(engine, tax_rate="10")
    credits.grant_credit(engine, who, D("100.00"), "USD", expires=dt.date(2026, 4, 1), now=at("2026-02-10T00:00:00"))
    lines = (
        InvoiceLine(kind=LineKind.USAGE, description="March usage", amount=D("5.00"),
                    service_start=dt.date(2026, 3, 1), service_end=dt.date(2026, 4, 1)),
        InvoiceLine(kind=LineKind.SUBSCRIPTION, description="Fee, April (in advance)", amount=D("30.00"),
                    service_start=dt.date(2026, 4, 1), service_end=dt.date(2026, 5, 1)),
        InvoiceLine(kind=LineKind.DISCOUNT, description="Coupon", amount=D("-10.00")),
    )
    issued = _march_at_ten_percent(engine, who, lines)
    # (5.00 + 30.00 − 10.00) × 1.10 = 27.50; the March usage is 5 of the 35.00 of service: 27.50 × 5 / 35 = 3.93
    # (the discount, which has no service dates, is shared by every line, not taken from the March usage alone)
    assert str(issued.total) == "27.50"
    assert applied(issued) == [("free", "3.93")] and str(issued.amount_due) == "23.57"
    holds(engine)


def test_a_credit_that_never_expires_applied_first_leaves_an_expiring_one_the_days_before_its_expiry(engine):
    who = customer(engine, tax_rate="10")
    now = at("2026-02-10T00:00:00")
    credits.grant_credit(engine, who, D("10.00"), "USD", priority=0, reason="forever", now=now)
    credits.grant_credit(engine, who, D("5.00"), "USD", priority=5, expires=dt.date(2026, 4, 1), reason="soon", now=now)
    lines = (
        InvoiceLine(kind=LineKind.USAGE, description="March usage", amount=D("5.00"),
                    service_start=dt.date(2026, 3, 1), service_end=dt.date(2026, 4, 1)),
        InvoiceLine(kind=LineKind.SUBSCRIPTION, description="Fee, April (in advance)", amount=D("30.00"),
                    service_start=dt.date(2026, 4, 1), service_end=dt.date(2026, 5, 1)),
    )
    issued = _march_at_ten_percent(engine, who, lines)
    # 38.50 in all, of which "soon" may pay the March usage with its tax, 5.50. "forever" comes first (priority 0)
    # and may pay any of it: its 10.00 go to the April fee (33.00), which "soon" may not pay, so "soon" still pays
    # all it has, 5.00 (taken back from its write-off on 1 April): 38.50 − 15.00 = 23.50 due
    assert applied(issued) == [("free", "10.00"), ("free", "5.00")] and str(issued.amount_due) == "23.50"
    assert bal(engine, who)[0] == "0.00"
    holds(engine)


def test_an_expiring_credit_pays_its_lines_less_only_the_coupons_that_reduce_them(engine):
    from invoices.model import LineDetails

    who = customer(engine, tax_rate="10")
    credits.grant_credit(engine, who, D("100.00"), "USD", expires=dt.date(2026, 4, 1), now=at("2026-02-10T00:00:00"))
    lines = (
        InvoiceLine(kind=LineKind.USAGE, description="March usage", amount=D("5.00"), plan_code="basic",
                    plan_version=1, service_start=dt.date(2026, 3, 1), service_end=dt.date(2026, 4, 1)),
        InvoiceLine(kind=LineKind.SUBSCRIPTION, description="Support, April (in advance)", amount=D("30.00"),
                    plan_code="support", plan_version=1, service_start=dt.date(2026, 4, 1),
                    service_end=dt.date(2026, 5, 1)),
        InvoiceLine(kind=LineKind.DISCOUNT, description="Coupon HALF: 50 % off support", amount=D("-15.00"),
                    details=LineDetails(extra={"coupon": "HALF", "plans": ["support"]})),
    )
    issued = _march_at_ten_percent(engine, who, lines)
    # (5.00 + 30.00 − 15.00) × 1.10 = 22.00; the coupon reduces support only, so the March usage is still 5.00 of
    # the 20.00 left: 22.00 × 5 / 20 = 5.50 (shared by every line it would be 22.00 × 5 / 35 = 3.14)
    assert str(issued.total) == "22.00"
    assert applied(issued) == [("free", "5.50")] and str(issued.amount_due) == "16.50"
    holds(engine)


def test_a_credit_note_is_split_into_net_and_tax_with_the_catalogs_rounding(engine):
    from pricing_plans.money import Rounding

    who = customer(engine, tax_rate="20")
    issued = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "100.00", tax_rate="20"), "2026-04-02T00:00:00")
    assert str(issued.total) == "120.00"
    # 30.15 back, tax included: net 30.15 × 100 / 120 = 25.125, half to even 25.12 (half up would say 25.13), tax
    # the rest, 5.03
    note = invoicing.create_credit_note(engine, issued.number or "", D("30.15"), "outage", SETTINGS,
                                        dt.date(2026, 4, 3), rounding=Rounding.HALF_EVEN)
    assert (str(note.subtotal), str(note.tax), str(note.total)) == ("25.12", "5.03", "30.15")
    up = invoicing.create_credit_note(engine, issued.number or "", D("30.15"), "outage", SETTINGS,
                                      dt.date(2026, 4, 3))
    assert (str(up.subtotal), str(up.tax)) == ("25.13", "5.02")


@pytest.mark.parametrize("zone", ["Etc/GMT-14", "Etc/GMT+12"])  # UTC+14, UTC−12: at any hour one is not UTC's day
def test_the_cli_issues_a_credit_note_on_the_utc_date_whatever_the_hosts_timezone(engine, cli_env, monkeypatch, zone):
    import time

    from typer.testing import CliRunner

    from billing.cli import app
    from dbkit import utcnow

    who = customer(engine)
    issued = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "10.00"), "2026-04-02T00:00:00")
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        before = utcnow().date()
        result = CliRunner().invoke(app, ["invoices", "credit", issued.number or "", "--amount", "1.00", "--reason",
                                          "outage", "--json"], env=cli_env)
        after = utcnow().date()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert result.exit_code == 0, result.output
    note = json.loads(result.output)
    assert note["issue_date"] in {before.isoformat(), after.isoformat()}


def test_a_credit_note_of_a_partly_paid_invoice_reduces_what_is_due_then_refunds_the_payment(engine):
    from billing import payments

    who = customer(engine)
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "100.00"), "2026-04-02T00:00:00")
    payments.record_payment(engine, march.number or "", D("30.00"), method="bank_transfer",
                            received_on=dt.date(2026, 4, 5), now=at("2026-04-05T12:00:00"))
    # 70.00 due: a note of 50.00 takes 50.00 off it, no balance
    invoicing.create_credit_note(engine, march.number or "", D("50.00"), "outage", SETTINGS, dt.date(2026, 4, 6),
                                 to_balance=True)
    again = invoicing.get_invoice(engine, march.id)
    assert (str(again.amount_paid), str(again.amount_due)) == ("30.00", "20.00")
    assert bal(engine, who)[2] == "0.00"
    # a note of 30.00 more: the 20.00 still due, then 10.00 of the 30.00 paid back to the balance
    invoicing.create_credit_note(engine, march.number or "", D("30.00"), "outage", SETTINGS, dt.date(2026, 4, 6),
                                 to_balance=True)
    assert str(invoicing.get_invoice(engine, march.id).amount_due) == "0.00"
    assert bal(engine, who) == ("0.00", "0.00", "10.00", "0.00")
    # the last 20.00: the rest of the payment
    invoicing.create_credit_note(engine, march.number or "", D("20.00"), "outage", SETTINGS, dt.date(2026, 4, 6),
                                 to_balance=True)
    assert bal(engine, who) == ("0.00", "0.00", "30.00", "0.00")
    holds(engine)


def test_a_reversed_overpayment_does_not_stand_in_the_way_of_a_void(engine):
    from billing import payments

    who = customer(engine)
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "100.00"), "2026-04-02T00:00:00")
    paid = payments.record_payment(engine, march.number or "", D("130.00"), method="bank_transfer",
                                   received_on=dt.date(2026, 4, 5), now=at("2026-04-05T12:00:00"))
    assert str(paid.excess) == "30.00" and bal(engine, who)[2] == "30.00"
    payments.reverse_payment(engine, paid.id, reason="bounced", now=at("2026-04-06T12:00:00"))
    assert bal(engine, who)[2] == "0.00"
    # the excess went with its payment's reversal: the void has no balance of its own to take back, nothing spent
    invoicing.set_invoice_status(engine, march.number or "", InvoiceStatus.VOID)
    assert invoicing.get_invoice(engine, march.id).status is InvoiceStatus.VOID
    holds(engine)


# -- the largest amount a customer may hold ------------------------------------------------------------------

BIG = Decimal("999999999999990.00")  # 10 below 10^15


def test_a_credit_note_that_only_reduces_what_is_due_is_taken_whatever_the_customer_holds(engine):
    who = customer(engine)
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "30.00"), "2026-04-02T00:00:00")
    credits.grant_credit(engine, who, BIG, "USD", now=at("2026-04-03T00:00:00"))
    # 20.00 off the 30.00 due: applied to the invoice at once, nothing more is held
    note = invoicing.create_credit_note(engine, march.number or "", Decimal("20.00"), "goodwill", SETTINGS,
                                        dt.date(2026, 4, 4), now=at("2026-04-04T00:00:00"))
    assert str(note.total) == "20.00"
    [usd] = credits.balance(engine, who, now=at("2026-04-05T00:00:00"))
    assert (str(usd.free), str(usd.balance)) == ("999999999999990.00", "0.00")


def test_credit_given_back_past_the_largest_amount_is_still_read_and_invoices_still_finalize(engine):
    who = customer(engine)
    credits.grant_credit(engine, who, BIG, "USD", now=at("2026-03-10T00:00:00"))
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "30.00"), "2026-04-02T00:00:00")
    assert str(march.amount_due) == "0.00"  # paid by the free grant: 999,999,999,999,960.00 left
    credits.grant_credit(engine, who, Decimal("39.99"), "USD", now=at("2026-04-03T00:00:00"))  # 999,999,999,999,999.99
    invoicing.set_invoice_status(engine, march.number or "", InvoiceStatus.VOID)  # the 30.00 comes back
    [usd] = credits.balance(engine, who, now=at("2026-04-05T00:00:00"))
    assert str(usd.free) == "1000000000000029.99"  # read as it is, not an error
    assert credits.balance_json(who, [usd])["balances"][0]["total"] == "1000000000000029.99"
    april = finalize(engine, draft(engine, who, dt.date(2026, 4, 1), "5.00"), "2026-05-02T00:00:00")
    assert str(april.amount_due) == "0.00"
    # but nothing more is granted
    with pytest.raises(BillingInputError, match=r"AMOUNT: acme would hold 1,000,000,000,000,025\.00 USD"):
        credits.grant_credit(engine, who, Decimal("0.01"), "USD", now=at("2026-05-03T00:00:00"))


def test_a_void_top_up_holds_nothing_and_leaves_room_for_grants(engine):
    who = customer(engine)
    paid = credits.grant_credit(engine, who, Decimal("900000000000000.00"), "USD", paid=True, now=at("2026-03-10T00:00:00"))
    invoicing.set_invoice_status(engine, paid.invoice_number or "", InvoiceStatus.VOID)
    more = credits.grant_credit(engine, who, Decimal("200000000000000.00"), "USD", now=at("2026-03-12T00:00:00"))
    assert str(more.amount) == "200000000000000.00"


def test_a_credit_note_asked_for_by_invoice_id_names_the_invoice_by_its_number(engine):
    """The line and billing key of a note carry the credited invoice's number however it was asked for (by id,
    they carried the internal id: "Credit for invoice 1: outage")."""
    who = customer(engine)
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "100.00"), "2026-04-02T00:00:00")
    note = invoicing.create_credit_note(engine, str(march.id), D("10.00"), "outage", SETTINGS, dt.date(2026, 4, 3))
    assert ([line.description for line in note.lines], note.billing_key, note.refers_to) == (
        [f"Credit for invoice {march.number}: outage"], f"credit:{march.number}:1", march.number
    )


PRORATED = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.adv]
name = "Advance"
currency = "USD"
subscription = { fee = 28.00, billing = "in_advance" }

[plans.arr]
name = "Arrears"
currency = "USD"
subscription = { fee = 56.00, billing = "in_arrears" }
"""


def test_a_credit_never_pays_a_fee_of_a_subscription_that_started_after_it_expired(engine):
    """A credit of 100.00 expiring on 10 February; subscriptions from 15 February. Their fee lines' service period
    is February's fee period (from the 1st), yet they serve from the 15th: the opening invoice (28.00 × 14/28 =
    14.00 in advance) and February's invoice (56.00 × 14/28 = 28.00 in arrears) are due in full, no credit
    applied (a credit never pays a line whose service began after it expired); one from 5 February is paid by it
    (28.00 × 24/28 = 24.00)."""
    from billing.core.periods import month
    from billing.invoicing import finalize_opening_invoices
    from billing.run import finalize_period, run_billing
    from pricing_plans.loader import loads_catalog

    catalog, problems = loads_catalog(PRORATED, "prorated.toml")
    assert not problems, problems
    late, early = customer(engine, "late"), customer(engine, "early")
    for who in (late, early):
        credits.grant_credit(engine, who, D("100.00"), "USD", expires=dt.date(2026, 2, 10), now=at("2026-02-01T00:00:00"))
    opening = service.subscribe(engine, catalog, late, "adv", dt.date(2026, 2, 15))
    service.subscribe(engine, catalog, late, "arr", dt.date(2026, 2, 15))
    paid = service.subscribe(engine, catalog, early, "adv", dt.date(2026, 2, 5))
    finalize_opening_invoices(engine, catalog, SETTINGS, now=at("2026-02-15T12:00:00"))
    first = invoicing.get_invoice(engine, f"start:{opening.id}")
    assert (str(first.total), applied(first), str(first.amount_due)) == ("14.00", [], "14.00")
    covered = invoicing.get_invoice(engine, f"start:{paid.id}")
    assert (str(covered.total), applied(covered), str(covered.amount_due)) == ("24.00", [("free", "24.00")], "0.00")
    run_billing(engine, catalog, month(2026, 2), customer=late, now=at("2026-03-01T01:00:00"))
    finalize_period(engine, month(2026, 2), SETTINGS, dt.date(2026, 3, 1), customer=late)
    february = invoicing.get_invoice(engine, "period:late:2026-02")
    # March's in-advance fee (28.00, from 1 March) and February's arrears fee (28.00): neither began before 10 February
    assert (str(february.total), applied(february), str(february.amount_due)) == ("56.00", [], "56.00")
    holds(engine)
