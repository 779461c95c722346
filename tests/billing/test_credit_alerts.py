"""Credit alerts and automatic top-ups (SQLite and PostgreSQL): a low-balance alert once per fall below the level
(down, up through a grant, down again = two), a depleted alert on reaching 0.00, re-runs and a re-decided
crossing never duplicating one (its id is derived from its number); an automatic top-up issued once while its
invoice is unpaid, again once paid credit falls below the level again, paused by a voided one, and issued once
by a finalization killed after deciding it and run again."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from billing import credits, invoicing, payments
from billing.db import session_scope
from billing.db.credit_tables import CreditAccountRow
from billing.db.notification_tables import NotificationRow
from billing.errors import BillingInputError
from invoices.model import InvoiceStatus
from tests.billing.test_credits import at, customer, draft, finalize, holds
from tests.billing.test_notifications import receiver, smtp_server

__all__ = ["receiver", "smtp_server"]

pytestmark = pytest.mark.db

D = Decimal
ALERTS = uuid.UUID("5f0c6a52-8d4e-4a3b-9a51-2c7d0e6b1f93")


def alerts(engine, who: str = "acme") -> list[tuple[str, str, str, int]]:
    """The customer's credit alerts, oldest first: (kind, balance, level, number)."""
    with session_scope(engine) as session:
        rows = session.scalars(
            select(NotificationRow)
            .where(NotificationRow.customer_external_id == who, NotificationRow.kind.like("credit.%"))
            .order_by(NotificationRow.created_at, NotificationRow.kind.desc())
        ).all()
        found = []
        for row in rows:
            payload = json.loads(row.payload)
            assert row.id == str(uuid.uuid5(ALERTS, f"{row.kind}:{who}:{row.currency}:{payload['alert']}"))
            assert (str(row.value), str(row.limit_value)) == (payload["balance"], payload["level"])
            found.append((row.kind, payload["balance"], payload["level"], payload["alert"]))
        return found


def topups(engine, who: str = "acme") -> list[tuple[str, str, bool, str]]:
    """The customer's paid grants, read without settling anything: (amount, reason, usable, invoice status)."""
    with session_scope(engine) as session:
        grants = [g for g in credits._grants(session, who) if g.kind == "paid"]
    found = []
    for grant in grants:
        status = invoicing.get_invoice(engine, grant.invoice_number or "").status
        found.append((str(grant.amount), grant.reason or "", grant.usable, status.value))
    return found


def test_a_low_balance_alert_is_sent_once_per_fall_below_the_level(engine):
    who = customer(engine)
    # set while there is no credit (0.00 counts as below): nothing is sent
    credits.configure(engine, who, "USD", low_balance=D("20.00"), now=at("2026-02-01T00:00:00"))
    credits.grant_credit(engine, who, D("50.00"), "USD", now=at("2026-02-10T00:00:00"))
    assert alerts(engine) == []  # 0.00 → 50.00: up, not down
    # March 35.00: 50.00 − 35.00 = 15.00 < 20.00 → the first low-balance alert
    finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "35.00"), "2026-04-02T00:00:00")
    assert alerts(engine) == [("credit.balance_low", "15.00", "20.00", 1)]
    # read again, settled again: still below, nothing new
    credits.balance(engine, who, now=at("2026-04-03T00:00:00"))
    credits.settle_due(engine, at("2026-04-03T00:00:00"))
    assert len(alerts(engine)) == 1
    # a grant of 10.00: 25.00, back at or above 20.00; April 10.00: 15.00, below again → the second
    credits.grant_credit(engine, who, D("10.00"), "USD", now=at("2026-04-10T00:00:00"))
    assert len(alerts(engine)) == 1
    finalize(engine, draft(engine, who, dt.date(2026, 4, 1), "10.00"), "2026-05-02T00:00:00")
    # May 15.00: 15.00 − 15.00 = 0.00: depleted (already below the level: no third low-balance alert)
    finalize(engine, draft(engine, who, dt.date(2026, 5, 1), "15.00"), "2026-06-02T00:00:00")
    assert alerts(engine) == [
        ("credit.balance_low", "15.00", "20.00", 1),
        ("credit.balance_low", "15.00", "20.00", 2),
        ("credit.balance_depleted", "0.00", "0.00", 1),
    ]
    holds(engine)


def test_one_invoice_taking_the_credit_from_above_the_level_to_zero_sends_both(engine):
    who = customer(engine)
    credits.grant_credit(engine, who, D("30.00"), "USD", now=at("2026-02-10T00:00:00"))
    credits.configure(engine, who, "USD", low_balance=D("20.00"), now=at("2026-02-11T00:00:00"))
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "42.50"), "2026-04-02T00:00:00")
    assert str(march.amount_due) == "12.50"  # 42.50 − 30.00
    assert alerts(engine) == [("credit.balance_low", "0.00", "20.00", 1), ("credit.balance_depleted", "0.00", "0.00", 1)]


def test_an_expiry_and_a_refund_move_the_balance_like_any_movement(engine):
    who = customer(engine)
    credits.grant_credit(engine, who, D("8.00"), "USD", expires=dt.date(2026, 3, 1), now=at("2026-02-10T00:00:00"))
    assert alerts(engine) == []
    # the expiry, written off by the scheduler, takes the credit to 0.00
    credits.settle_due(engine, at("2026-03-01T00:00:00"))
    assert alerts(engine) == [("credit.balance_depleted", "0.00", "0.00", 1)]
    # a negative invoice puts 20.32 on the balance (up); April's 30.00 uses it up (down): the second
    finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "30.00", "-50.32"), "2026-04-02T00:00:00")
    finalize(engine, draft(engine, who, dt.date(2026, 4, 1), "30.00"), "2026-05-02T00:00:00")
    assert [a[0::3] for a in alerts(engine)] == [("credit.balance_depleted", 1), ("credit.balance_depleted", 2)]


def test_a_crossing_decided_twice_is_one_notification(engine):
    who = customer(engine)
    credits.grant_credit(engine, who, D("50.00"), "USD", now=at("2026-02-10T00:00:00"))
    credits.configure(engine, who, "USD", low_balance=D("20.00"), now=at("2026-02-11T00:00:00"))
    finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "35.00"), "2026-04-02T00:00:00")
    assert len(alerts(engine)) == 1
    # as if another process had decided the same crossing from the state before it: the same id, no second row
    with session_scope(engine) as session:
        session.execute(update(CreditAccountRow).values(below_low=False, low_alerts=0))
    credits.balance(engine, who, now=at("2026-04-03T00:00:00"))
    assert alerts(engine) == [("credit.balance_low", "15.00", "20.00", 1)]


def test_a_low_balance_level_set_while_below_sends_nothing_until_the_next_fall(engine):
    who = customer(engine)
    credits.grant_credit(engine, who, D("10.00"), "USD", now=at("2026-02-10T00:00:00"))
    found, issued = credits.configure(engine, who, "USD", low_balance=D("20.00"), now=at("2026-02-11T00:00:00"))
    assert (str(found.low_balance), issued, alerts(engine)) == ("20.00", [], [])
    credits.configure(engine, who, "USD", low_balance=None, now=at("2026-02-12T00:00:00"))
    [usd] = credits.balance(engine, who, now=at("2026-02-12T00:00:00"))
    assert usd.low_balance is None
    with pytest.raises(BillingInputError, match="low_balance: expected a positive amount"):
        credits.configure(engine, who, "USD", low_balance=D("0"))
    with pytest.raises(BillingInputError, match=r"auto_topup\.amount"):
        credits.configure(engine, who, "USD", auto_topup=(D("10.00"), D("1.001")))
    with pytest.raises(BillingInputError, match="currency"):
        credits.configure(engine, who, "XXY", low_balance=D("5"))


def test_an_automatic_top_up_is_issued_once_while_unpaid_and_again_after_the_next_fall(engine):
    who = customer(engine)
    # no paid credit (0.00 < 10.00): the first top-up is issued as the setting is saved
    found, issued = credits.configure(engine, who, "USD", auto_topup=(D("10.00"), D("50.00")),
                                      now=at("2026-02-10T00:00:00"))
    [first] = issued
    assert (str(found.pending), first.kind, first.usable) == ("50.00", "paid", False)
    topup = invoicing.get_invoice(engine, first.invoice_number or "")
    assert (topup.billing_key, str(topup.total), topup.status) == (f"topup:{first.id}", "50.00", InvoiceStatus.FINALIZED)
    # unpaid: reads, settling and another save of nothing issue no second one
    credits.balance(engine, who, now=at("2026-02-11T00:00:00"))
    credits.settle_due(engine, at("2026-02-11T00:00:00"))
    assert len(topups(engine)) == 1
    invoicing.set_invoice_status(engine, first.invoice_number or "", InvoiceStatus.PAID)
    [usd] = credits.balance(engine, who, now=at("2026-02-12T00:00:00"))
    assert (str(usd.paid), str(usd.pending)) == ("50.00", "0.00")
    # March 44.00: paid 6.00 < 10.00 → the second top-up, in the finalization's transaction
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "44.00"), "2026-04-02T00:00:00")
    assert str(march.amount_due) == "0.00"
    reason = "automatic top-up (paid credit below 10.00)"
    assert topups(engine) == [("50.00", reason, True, "paid"), ("50.00", reason, False, "finalized")]
    # April 6.00: paid 0.00, the second still unpaid: no third
    finalize(engine, draft(engine, who, dt.date(2026, 4, 1), "6.00"), "2026-05-02T00:00:00")
    assert len(topups(engine)) == 2
    holds(engine)


def test_a_voided_automatic_top_up_pauses_them_until_the_setting_is_saved_again(engine):
    who = customer(engine)
    _, [first] = credits.configure(engine, who, "USD", auto_topup=(D("10.00"), D("25.00")),
                                   now=at("2026-02-10T00:00:00"))
    invoicing.set_invoice_status(engine, first.invoice_number or "", InvoiceStatus.VOID)
    credits.balance(engine, who, now=at("2026-02-11T00:00:00"))
    assert [t[3] for t in topups(engine)] == ["void"]
    # saved again: the paid credit is still 0.00 → one new top-up at once
    _, [second] = credits.configure(engine, who, "USD", auto_topup=(D("10.00"), D("25.00")),
                                    now=at("2026-02-12T00:00:00"))
    assert [t[3] for t in topups(engine)] == ["void", "finalized"]
    invoicing.set_invoice_status(engine, second.invoice_number or "", InvoiceStatus.PAID)
    # turned off: paid 25.00 − 20.00 = 5.00 < 10.00, and nothing is issued
    found, issued = credits.configure(engine, who, "USD", auto_topup=None, now=at("2026-02-13T00:00:00"))
    assert (found.topup_below, issued) == (None, [])
    finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "20.00"), "2026-04-02T00:00:00")
    assert [t[3] for t in topups(engine)] == ["void", "paid"]


KILLED = textwrap.dedent(
    """
    import datetime as dt, os, signal, sys
    from billing import credits, invoicing
    from billing.db import make_engine
    from invoices.store import FinalizeSettings

    url, invoice_id = sys.argv[1], int(sys.argv[2])
    engine = make_engine(url)
    watch = credits._watch

    def watch_then_die(session, owner, now, settings):
        issued = watch(session, owner, now, settings)
        session.flush()
        print("issued", issued, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    credits._watch = watch_then_die
    now = dt.datetime(2026, 4, 2, tzinfo=dt.UTC)
    invoicing.finalize_invoice(engine, invoice_id, FinalizeSettings(), now.date(), now=now)
    """
)


def test_a_finalization_killed_after_deciding_a_top_up_issues_it_once_when_run_again(engine, db_url):
    who = customer(engine)
    credits.grant_credit(engine, who, D("30.00"), "USD", paid=True, now=at("2026-02-10T00:00:00"))
    [grant] = [g for b in credits.balance(engine, who, now=at("2026-02-10T00:00:00")) for g in b.grants]
    invoicing.set_invoice_status(engine, grant.invoice_number or "", InvoiceStatus.PAID)
    credits.configure(engine, who, "USD", auto_topup=(D("10.00"), D("40.00")), low_balance=D("15.00"),
                      now=at("2026-02-11T00:00:00"))
    assert len(topups(engine)) == 1  # paid 30.00: none due
    invoice_id = draft(engine, who, dt.date(2026, 3, 1), "25.00")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    killed = subprocess.run([sys.executable, "-c", KILLED, db_url, str(invoice_id)], capture_output=True, text=True,
                            env=env, timeout=120)
    assert killed.returncode == -signal.SIGKILL and "issued [" in killed.stdout, killed.stderr
    assert "issued []" not in killed.stdout
    # killed inside the transaction: no top-up, no alert, the invoice still a draft
    assert (len(topups(engine)), alerts(engine)) == (1, [])
    assert invoicing.get_invoice(engine, invoice_id).status is InvoiceStatus.DRAFT
    # run again: 30.00 − 25.00 = 5.00 < 10.00 → one top-up of 40.00; 5.00 < 15.00 → one alert
    finalize(engine, invoice_id, "2026-04-02T00:00:00")
    credits.settle_due(engine, at("2026-04-03T00:00:00"))
    assert [(t[0], t[3]) for t in topups(engine)] == [("30.00", "paid"), ("40.00", "finalized")]
    assert alerts(engine) == [("credit.balance_low", "5.00", "15.00", 1)]
    holds(engine)


def test_a_credit_alert_is_posted_signed_and_mailed(engine, receiver, smtp_server):
    from billing import customers as service
    from billing.notify import deliver_pending
    from tests.billing.test_notifications import settings

    url, received = receiver()
    port, mailbox = smtp_server()
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="Europe/Berlin")
    credits.grant_credit(engine, "acme", D("50.00"), "USD", now=at("2026-02-10T00:00:00"))
    credits.configure(engine, "acme", "USD", low_balance=D("20.00"), now=at("2026-02-11T00:00:00"))
    # 23:30 UTC on 1 April is 2 April in Berlin: the alert's period is the customer's day
    finalize(engine, draft(engine, "acme", dt.date(2026, 3, 1), "35.00"), "2026-04-01T23:30:00")
    [alert] = credits_notifications(engine)
    report = deliver_pending(engine, settings(notification_webhook_url=url, smtp_host="127.0.0.1", smtp_port=port))
    assert report.sent >= 1
    [request] = [r for r in received if r.body["kind"] == "credit.balance_low"]
    assert request.verified and request.idempotency_key == alert
    assert {k: request.body[k] for k in ("customer", "currency", "period", "balance", "level", "alert")} == {
        "customer": "acme", "currency": "USD", "period": "2026-04-02", "balance": "15.00", "level": "20.00", "alert": 1,
    }
    [message] = [m for m in mailbox.messages if m["Message-ID"] == f"<{alert}@billing-engine>"]
    assert message["Subject"] == "Your credit balance is below 20.00 USD"
    assert "your credit balance is 15.00 USD, below 20.00 USD." in message.get_body(("plain",)).get_content()


def credits_notifications(engine) -> list[str]:
    with session_scope(engine) as session:
        return list(session.scalars(select(NotificationRow.id).where(NotificationRow.kind.like("credit.%"))))


def test_a_top_up_paid_but_not_yet_made_usable_is_not_bought_again(engine):
    who = customer(engine)
    _, [first] = credits.configure(engine, who, "USD", auto_topup=(D("10.00"), D("50.00")),
                                   now=at("2026-02-10T00:00:00"))
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "5.00"), "2026-04-02T00:00:00")
    assert str(march.amount_due) == "5.00"  # the top-up is not paid: nothing pays March, and no second top-up
    invoicing.set_invoice_status(engine, first.invoice_number or "", InvoiceStatus.PAID)
    # a credit note refunded to the balance moves the credit without settling the ledger: the paid top-up is on
    # its way, so none is bought again
    invoicing.create_credit_note(engine, march.number or "", D("2.00"), "outage", invoicing.store.FinalizeSettings(),
                                 dt.date(2026, 4, 3), to_balance=True)
    assert [t[3] for t in topups(engine)] == ["paid"]
    [usd] = credits.balance(engine, who, now=at("2026-04-04T00:00:00"))
    # (March is unpaid: the note takes 2.00 off what is due, 5.00 − 2.00 = 3.00, and puts nothing on the balance)
    assert (str(usd.paid), str(usd.balance), len(topups(engine))) == ("50.00", "0.00", 1)
    assert str(invoicing.get_invoice(engine, march.id).amount_due) == "3.00"


def test_a_reversed_overpayment_taking_the_balance_to_zero_alerts(engine):
    from billing import payments

    who = customer(engine)
    march = finalize(engine, draft(engine, who, dt.date(2026, 3, 1), "100.00"), "2026-04-02T00:00:00")
    # 120.00 paid against 100.00: the excess 20.00 goes to the balance (up: nothing)
    paid = payments.record_payment(engine, march.number or "", D("120.00"), method="bank_transfer",
                                   received_on=dt.date(2026, 4, 10), now=at("2026-04-10T00:00:00"))
    assert (str(paid.excess), alerts(engine)) == ("20.00", [])
    # the transfer bounces: the 20.00 is taken back, the balance is 0.00 → depleted
    payments.reverse_payment(engine, paid.id, reason="bounced", on=dt.date(2026, 4, 12), now=at("2026-04-12T00:00:00"))
    assert alerts(engine) == [("credit.balance_depleted", "0.00", "0.00", 1)]
    holds(engine)


def test_no_automatic_top_up_while_a_bounced_one_is_owed_again(engine):
    """The first automatic top-up is paid (its credit usable), then its payment bounces: it is owed again, so no
    second one is issued (one was, at the next read: the bounced top-up's credit had been usable once, and only
    top-ups never made usable counted as on their way). Paid again, its credit is back and none is due."""
    who = customer(engine)
    _, [first] = credits.configure(engine, who, "USD", auto_topup=(D("10.00"), D("50.00")),
                                   now=at("2026-02-10T00:00:00"))
    number = first.invoice_number or ""
    paid = payments.record_payment(engine, number, D("50.00"), method="bank_transfer",
                                   received_on=dt.date(2026, 2, 11), now=at("2026-02-11T00:00:00"))
    [usd] = credits.balance(engine, who, now=at("2026-02-12T00:00:00"))
    assert str(usd.paid) == "50.00"
    payments.reverse_payment(engine, paid.id, on=dt.date(2026, 2, 13), now=at("2026-02-13T00:00:00"))
    [usd] = credits.balance(engine, who, now=at("2026-02-14T00:00:00"))
    credits.settle_due(engine, at("2026-02-15T00:00:00"))
    assert (str(usd.paid), str(usd.pending)) == ("0.00", "50.00")
    assert topups(engine) == [("50.00", "automatic top-up (paid credit below 10.00)", True, "finalized")]
    payments.record_payment(engine, number, D("50.00"), method="bank_transfer", received_on=dt.date(2026, 2, 16),
                            now=at("2026-02-16T00:00:00"))
    [usd] = credits.balance(engine, who, now=at("2026-02-17T00:00:00"))
    assert (str(usd.paid), len(topups(engine))) == ("50.00", 1)
    holds(engine)
