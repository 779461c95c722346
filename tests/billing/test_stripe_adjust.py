"""Voids and credit notes issued after an invoice's push, carried to Stripe by ``billing stripe sync``
(``billing.stripe.adjust``), against the local stand-in for api.stripe.com of ``test_stripe``, on SQLite and
PostgreSQL. The invoice: 49.00 + 12.50 = 61.50 USD, pushed as 4,900 + 1,250 = 6,150 cents."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from billing import invoicing, payments
from billing.cli import app as cli_app
from billing.config import get_settings
from billing.credits import with_credits
from billing.db import session_scope
from billing.db.installation import installation_id
from billing.db.stripe_tables import StripeCreditNoteRow
from billing.stripe.sync import StripeItem, _Push, stripe_items, sync_invoices
from invoices import store
from invoices.model import InvoiceStatus
from tests.billing.test_stripe import (  # noqa: F401 (fixtures)
    API_KEY,
    FIRST,
    ISSUED,
    SETTINGS,
    add_customer,
    client,
    fake_stripe,
    invoice_event,
    issue,
    post,
    stripe_key,
    sync_row,
    webhooks,
)

NOTE = "CN-2026-000001"


def pushed(engine: Engine, client) -> str:  # noqa: F811
    """The 61.50 invoice issued and pushed: its Stripe id."""
    add_customer(engine)
    issue(engine)
    assert sync_invoices(engine, client).ok
    return sync_row(engine).stripe_invoice_id or ""


def credit(engine: Engine, amount: str, number: str = FIRST) -> None:
    invoicing.create_credit_note(engine, number, Decimal(amount), "service outage", SETTINGS, ISSUED)


def note_row(engine: Engine, number: str = NOTE) -> StripeCreditNoteRow:
    with session_scope(engine) as session:
        return session.execute(
            select(StripeCreditNoteRow).where(StripeCreditNoteRow.credit_note_number == number)
        ).scalar_one()


def test_a_void_after_the_push_voids_the_stripe_invoice_once(engine, fake_stripe, client):  # noqa: F811
    stripe_id = pushed(engine, client)
    invoicing.set_invoice_status(engine, FIRST, InvoiceStatus.VOID)
    before = len(fake_stripe.posts())

    report = sync_invoices(engine, client)

    assert report.ok and report.results == ()
    assert [(a.kind, a.document, a.outcome) for a in report.adjustments] == [("void", FIRST, "voided")]
    assert fake_stripe.posts()[before:] == [(f"/v1/invoices/{stripe_id}/void", stripe_key(engine, "void"))]
    assert fake_stripe.objects[stripe_id]["status"] == "void"
    row = sync_row(engine)
    assert row.void_outcome == "voided" and row.voided_at is not None and row.last_error is None
    again = sync_invoices(engine, client)
    assert again.adjustments == () and len(fake_stripe.posts()) == before + 1


def test_a_void_stripe_refused_goes_under_a_new_key_next_time(engine, fake_stripe, client):  # noqa: F811
    stripe_id = pushed(engine, client)
    fake_stripe.objects[stripe_id]["payment_processing"] = True  # Stripe refuses to void it for now
    invoicing.set_invoice_status(engine, FIRST, InvoiceStatus.VOID)
    key = stripe_key(engine, "void")

    refused = sync_invoices(engine, client)

    assert not refused.ok and "payment processing" in (refused.adjustments[0].error or "")
    assert (sync_row(engine).void_refusals, sync_row(engine).voided_at) == (1, None)
    assert sync_invoices(engine, client).adjustments[0].error == refused.adjustments[0].error  # still refused
    fake_stripe.objects[stripe_id]["payment_processing"] = False  # the payment failed: Stripe can void it now
    carried = sync_invoices(engine, client)
    assert carried.ok and [a.outcome for a in carried.adjustments] == ["voided"]
    # under the key Stripe refused, it would have answered the same refusal for a day
    sent = [p[1] for p in fake_stripe.posts() if p[0] == f"/v1/invoices/{stripe_id}/void"]
    assert sent == [key, f"{key}:2", f"{key}:3"] and fake_stripe.objects[stripe_id]["status"] == "void"
    assert (sync_row(engine).void_outcome, sync_row(engine).void_refusals) == ("voided", 2)
    assert sync_invoices(engine, client).adjustments == ()


def test_a_void_of_an_invoice_stripe_has_collected_voids_nothing_and_is_not_tried_again(engine, fake_stripe, client):  # noqa: F811
    stripe_id = pushed(engine, client)
    fake_stripe.pay(stripe_id)  # collected; its webhook has not arrived yet
    invoicing.set_invoice_status(engine, FIRST, InvoiceStatus.VOID)

    report = sync_invoices(engine, client)

    assert report.ok and [(a.kind, a.outcome) for a in report.adjustments] == [("void", "paid")]
    assert fake_stripe.objects[stripe_id]["status"] == "paid" and sync_row(engine).void_outcome == "paid"
    assert sync_invoices(engine, client).adjustments == ()


def test_a_credit_note_on_an_open_stripe_invoice_lowers_what_stripe_collects(engine, fake_stripe, client):  # noqa: F811
    stripe_id = pushed(engine, client)
    credit(engine, "20.00")  # 61.50 due → 41.50
    before = len(fake_stripe.posts())

    report = sync_invoices(engine, client)

    assert report.ok
    [adjustment] = report.adjustments
    assert (adjustment.kind, adjustment.document, str(adjustment.amount), adjustment.outcome) == (
        "credit_note", NOTE, "20.00", "pre_payment"
    )
    assert fake_stripe.posts()[before:] == [("/v1/credit_notes", stripe_key(engine, "credit_note", NOTE))]
    form = fake_stripe.requests[-1].form
    assert form == {
        "invoice": stripe_id,
        "amount": "2000",
        "memo": f"Credit note {NOTE}",
        "metadata[billing_credit_note_number]": NOTE,
        "metadata[billing_invoice_number]": FIRST,
    }
    assert fake_stripe.objects[stripe_id]["amount_remaining"] == 4150  # what is due here: 41.50
    assert str(invoicing.get_invoice(engine, FIRST).amount_due) == "41.50"
    row = note_row(engine)
    assert (row.mode, row.amount, row.stripe_credit_note_id) == ("pre_payment", 2000, adjustment.stripe_credit_note_id)
    assert sync_invoices(engine, client).adjustments == () and len(fake_stripe.of("credit_note")) == 1


def paid_event(stripe_id: str, amount_paid: int) -> str:
    event = json.loads(invoice_event("evt_paid", "invoice.paid", stripe_invoice=stripe_id, number=None))
    event["data"]["object"]["amount_paid"] = amount_paid
    return json.dumps(event)


def test_what_stripe_collects_after_the_note_pays_the_invoice_exactly(engine, fake_stripe, client, webhooks):  # noqa: F811
    stripe_id = pushed(engine, client)
    credit(engine, "20.00")
    assert sync_invoices(engine, client).ok
    fake_stripe.pay(stripe_id)
    assert fake_stripe.objects[stripe_id]["amount_paid"] == 4150

    assert post(webhooks, paid_event(stripe_id, 4150)).json()["outcome"] == "paid"

    invoice = invoicing.get_invoice(engine, FIRST)
    assert invoice.status is InvoiceStatus.PAID and str(invoice.amount_paid) == "41.50"
    assert [str(p.amount) for p in payments.list_payments(engine, invoice=FIRST)] == ["41.50"]


def test_a_credit_note_of_the_whole_amount_due_leaves_stripe_nothing_to_collect(engine, fake_stripe, client, webhooks):  # noqa: F811
    stripe_id = pushed(engine, client)
    credit(engine, "61.50")
    assert sync_invoices(engine, client).ok
    assert fake_stripe.objects[stripe_id]["amount_remaining"] == 0 and fake_stripe.objects[stripe_id]["status"] == "paid"
    # Stripe tells the invoice paid (nothing collected): ours is paid too, with no payment
    assert post(webhooks, paid_event(stripe_id, 0)).json()["outcome"] == "paid"
    assert invoicing.get_invoice(engine, FIRST).status is InvoiceStatus.PAID
    assert payments.list_payments(engine, invoice=FIRST) == []


def test_a_credit_note_after_stripe_collected_is_recorded_there_out_of_band(engine, fake_stripe, client):  # noqa: F811
    stripe_id = pushed(engine, client)
    fake_stripe.pay(stripe_id)  # collected 61.50; its webhook has not arrived yet, so 20.00 comes off what is due here
    credit(engine, "20.00")

    report = sync_invoices(engine, client)

    assert report.ok and [(a.outcome, str(a.amount)) for a in report.adjustments] == [("out_of_band", "20.00")]
    assert fake_stripe.posts()[-1] == ("/v1/credit_notes", stripe_key(engine, "credit_note:out_of_band", NOTE))
    assert fake_stripe.requests[-1].form["out_of_band_amount"] == "2000"
    assert fake_stripe.of("credit_note")[0]["type"] == "post_payment"


def test_a_credit_note_issued_before_the_push_is_in_the_pushed_items_and_not_carried_again(engine, fake_stripe, client):  # noqa: F811
    add_customer(engine)
    issue(engine)
    credit(engine, "20.00")

    report = sync_invoices(engine, client)

    assert report.ok and report.adjustments == ()
    stripe_invoice = fake_stripe.of("invoice")[0]
    assert [item["amount"] for item in fake_stripe.of("invoiceitem")] == [4900, 1250, -2000]
    assert stripe_invoice["amount_due"] == 4150 and fake_stripe.of("credit_note") == []
    keys = json.loads(sync_row(engine).stripe_item_keys or "null")
    assert keys[:2] == ["item:1", "item:2"] and len(keys) == 3 and keys[2].startswith("credit:")
    credit(engine, "1.50", FIRST)  # a second note, after the push: carried
    assert [a.document for a in sync_invoices(engine, client).adjustments] == ["CN-2026-000002"]
    assert fake_stripe.objects[stripe_invoice["id"]]["amount_remaining"] == 4000


@pytest.mark.parametrize("mode", ["drop", "refuse"])
def test_a_credit_note_whose_request_failed_is_made_once(engine, fake_stripe, client, mode):  # noqa: F811
    stripe_id = pushed(engine, client)
    credit(engine, "20.00")
    key = stripe_key(engine, "credit_note", NOTE)
    fake_stripe.fail(key, mode)

    first = sync_invoices(engine, client)

    assert not first.ok and first.adjustments[0].error is not None
    assert note_row(engine).synced_at is None and note_row(engine).last_error is not None
    second = sync_invoices(engine, client)
    assert second.ok and [a.outcome for a in second.adjustments] == ["pre_payment"]
    assert len(fake_stripe.of("credit_note")) == 1 and fake_stripe.objects[stripe_id]["amount_remaining"] == 4150
    sent = [p for p in fake_stripe.posts() if p[0] == "/v1/credit_notes"]
    # a refusal did nothing: sent again under the same key; a lost answer: the note made is found in Stripe
    assert sent == [("/v1/credit_notes", key)] * (2 if mode == "refuse" else 1)
    assert note_row(engine).stripe_credit_note_id == fake_stripe.of("credit_note")[0]["id"]


def test_a_credit_note_of_a_paid_invoice_moves_no_money_stripe_holds_and_is_not_carried(engine, fake_stripe, client):  # noqa: F811
    stripe_id = pushed(engine, client)
    invoicing.set_invoice_status(engine, FIRST, InvoiceStatus.PAID)
    credit(engine, "20.00")  # nothing was due: it refunds what was paid (outside the engine)
    assert sync_invoices(engine, client).adjustments == () and fake_stripe.of("credit_note") == []
    assert fake_stripe.objects[stripe_id]["amount_remaining"] == 6150


def test_billing_stripe_sync_prints_the_voids_and_credit_notes_it_carried(cli_env, engine, fake_stripe, client, monkeypatch):  # noqa: F811
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    monkeypatch.setenv("BILLING_STRIPE_API_BASE", fake_stripe.url)
    get_settings.cache_clear()
    pushed(engine, client)
    credit(engine, "20.00")

    result = CliRunner().invoke(cli_app, ["stripe", "sync", "--json"])

    assert result.exit_code == 0, (result.stdout, result.stderr)
    shown = json.loads(result.stdout)
    assert shown["invoices"] == [] and shown["failed"] == 0
    [carried] = shown["adjustments"]
    assert {k: carried[k] for k in ("kind", "document", "invoice_number", "amount", "outcome", "ok")} == {
        "kind": "credit_note", "document": NOTE, "invoice_number": FIRST, "amount": "20.00", "outcome": "pre_payment",
        "ok": True,
    }
    invoicing.set_invoice_status(engine, FIRST, InvoiceStatus.VOID)
    table = CliRunner().invoke(cli_app, ["stripe", "sync"])
    assert table.exit_code == 0, (table.stdout, table.stderr)
    assert "voided" in table.stdout and "carried 1, failed 0" in table.stdout


def test_a_note_then_a_void_before_the_next_sync_carries_only_the_void(engine, fake_stripe, client):  # noqa: F811
    stripe_id = pushed(engine, client)
    credit(engine, "20.00")
    invoicing.set_invoice_status(engine, FIRST, InvoiceStatus.VOID)

    report = sync_invoices(engine, client)

    assert report.ok and [(a.kind, a.outcome) for a in report.adjustments] == [("void", "voided")]
    assert fake_stripe.objects[stripe_id]["status"] == "void" and fake_stripe.of("credit_note") == []
    assert sync_invoices(engine, client).adjustments == ()


def test_a_void_stops_stripe_collecting_an_invoice_whose_push_did_not_finish(engine, fake_stripe, client):  # noqa: F811
    add_customer(engine)
    issue(engine)
    fake_stripe.fail(stripe_key(engine, "finalize"), "drop")  # finalized in Stripe, the answer lost
    assert not sync_invoices(engine, client).ok and sync_row(engine).step == "items"
    stripe_id = sync_row(engine).stripe_invoice_id or ""
    assert fake_stripe.objects[stripe_id]["status"] == "open"  # Stripe collects it
    invoicing.set_invoice_status(engine, FIRST, InvoiceStatus.VOID)

    report = sync_invoices(engine, client)

    assert report.ok and report.results == () and [a.outcome for a in report.adjustments] == ["voided"]
    assert fake_stripe.objects[stripe_id]["status"] == "void"


def _voided_after_a_stopped_push(engine, stripe, stripe_client) -> str:
    """The first invoice, its push stopped at its second item (a Stripe draft left), then voided here: the id of
    the Stripe draft."""
    add_customer(engine)
    issue(engine)
    stripe.fail(stripe_key(engine, "item:2"), "refuse")
    assert not sync_invoices(engine, stripe_client).ok
    stripe_id = sync_row(engine).stripe_invoice_id or ""
    invoicing.set_invoice_status(engine, FIRST, InvoiceStatus.VOID)
    return stripe_id


def test_a_void_deletes_the_draft_stripe_invoice_of_a_push_stopped_on_the_way(engine, fake_stripe, client):  # noqa: F811
    stripe_id = _voided_after_a_stopped_push(engine, fake_stripe, client)

    report = sync_invoices(engine, client)

    assert report.ok and [a.outcome for a in report.adjustments] == ["deleted"]
    assert stripe_id not in fake_stripe.objects and sync_row(engine).void_outcome == "deleted"


def test_a_note_issued_while_a_push_is_stopped_becomes_one_of_its_items(engine, fake_stripe, client):  # noqa: F811
    add_customer(engine)
    issue(engine)
    fake_stripe.fail(stripe_key(engine, "item:2"), "refuse")
    assert not sync_invoices(engine, client).ok  # item:1 made
    credit(engine, "20.00")

    report = sync_invoices(engine, client)

    assert report.ok and report.adjustments == ()
    stripe_invoice = fake_stripe.of("invoice")[0]
    assert [item["amount"] for item in fake_stripe.of("invoiceitem")] == [4900, 1250, -2000]
    assert stripe_invoice["amount_due"] == 4150 and fake_stripe.of("credit_note") == []  # 41.50, as due here
    assert sync_invoices(engine, client).adjustments == ()


def test_a_note_whose_answer_was_lost_and_whose_key_stripe_forgot_is_found_not_made_again(engine, fake_stripe, client):  # noqa: F811
    stripe_id = pushed(engine, client)
    credit(engine, "20.00")
    fake_stripe.fail(stripe_key(engine, "credit_note", NOTE), "drop")
    assert not sync_invoices(engine, client).ok
    fake_stripe.forget_keys()  # a day later

    report = sync_invoices(engine, client)

    [made] = fake_stripe.of("credit_note")
    assert report.ok and report.adjustments[0].stripe_credit_note_id == made["id"]
    assert note_row(engine).stripe_credit_note_id == made["id"]
    assert fake_stripe.objects[stripe_id]["amount_remaining"] == 4150


def push_begun(engine: Engine, client) -> tuple[_Push, list[StripeItem]]:  # noqa: F811
    """A push of the 61.50 invoice that read it and made its Stripe customer and invoice, its items not yet: the
    push and the items it read."""
    add_customer(engine)
    invoice = issue(engine)
    push = _Push(engine, client, installation_id(engine), invoice.id)
    with session_scope(engine) as session:
        push.invoice = with_credits(session, [store.get_invoice(session, invoice.id)])[0]
        push._load_state(session)
    items = stripe_items(push.invoice)
    push._ensure_customer()
    push._create_invoice()
    return push, items


def test_two_pushes_at_once_never_credit_a_note_twice(engine, fake_stripe, client):  # noqa: F811
    """Run A reads the invoice before the note, run B after it and pushes everything; A then finishes with its
    own (older) items: the credit B pushed stays recorded, so the note is not carried on top of it."""
    run_a, items_a = push_begun(engine, client)
    credit(engine, "20.00")
    assert sync_invoices(engine, client).ok  # run B: item:1, item:2, credit, finalized

    run_a._create_items(items_a)
    run_a._finalize()
    report = sync_invoices(engine, client)

    stripe_invoice = fake_stripe.of("invoice")[0]
    assert report.ok and report.adjustments == () and fake_stripe.of("credit_note") == []
    assert [item["amount"] for item in fake_stripe.of("invoiceitem")] == [4900, 1250, -2000]
    assert stripe_invoice["amount_remaining"] == 4150


def test_a_credit_note_stripe_refused_goes_under_a_new_key_next_time(engine, fake_stripe, client):  # noqa: F811
    stripe_id = pushed(engine, client)
    fake_stripe.objects[stripe_id]["amount_remaining"] = 1000  # Stripe collected part of it meanwhile
    credit(engine, "20.00")
    key = stripe_key(engine, "credit_note", NOTE)

    refused = sync_invoices(engine, client)

    assert not refused.ok and "InvalidRequestError" in (refused.adjustments[0].error or "")
    assert (note_row(engine).mode, note_row(engine).refusals) == (None, 1)
    assert sync_invoices(engine, client).adjustments[0].error == refused.adjustments[0].error  # still refused
    fake_stripe.objects[stripe_id]["amount_remaining"] = 6150  # that part refunded in Stripe
    carried = sync_invoices(engine, client)
    assert carried.ok and [a.outcome for a in carried.adjustments] == ["pre_payment"]
    sent = [p[1] for p in fake_stripe.posts() if p[0] == "/v1/credit_notes"]
    assert sent == [key, f"{key}:2", f"{key}:3"] and len(fake_stripe.of("credit_note")) == 1
    assert fake_stripe.objects[stripe_id]["amount_remaining"] == 4150


def test_a_void_whose_draft_deletion_answer_was_lost_is_settled(engine, fake_stripe, client):  # noqa: F811
    stripe_id = _voided_after_a_stopped_push(engine, fake_stripe, client)
    del fake_stripe.objects[stripe_id]  # deleted by a run whose answer was lost

    report = sync_invoices(engine, client)

    assert report.ok and [a.outcome for a in report.adjustments] == ["deleted"]
    assert sync_invoices(engine, client).adjustments == ()


def test_a_note_whose_item_another_run_made_with_its_answer_lost_is_pushed_once(engine, fake_stripe, client):  # noqa: F811
    run_a, items_a = push_begun(engine, client)
    credit(engine, "20.00")
    credit_key = next(i.key for i in stripe_items(invoicing.get_invoice(engine, FIRST)) if i.key.startswith("credit:"))
    fake_stripe.fail(stripe_key(engine, credit_key), "drop")
    assert not sync_invoices(engine, client).ok  # run B: its credit item made in Stripe, the answer lost

    run_a._create_items(items_a)
    run_a._finalize()  # the draft checked against what is due now: the credit item made again from its key
    report = sync_invoices(engine, client)

    assert report.ok and report.adjustments == () and fake_stripe.of("credit_note") == []
    assert [item["amount"] for item in fake_stripe.of("invoiceitem")] == [4900, 1250, -2000]
    assert fake_stripe.of("invoice")[0]["amount_remaining"] == 4150 and stripe_key(engine, credit_key) in fake_stripe.replayed


def test_a_draft_that_no_longer_asks_what_is_due_is_not_finalized(engine, fake_stripe, client):  # noqa: F811
    add_customer(engine)
    issue(engine)
    payments.record_payment(engine, FIRST, Decimal("10.00"), method="bank_transfer", received_on=ISSUED)
    fake_stripe.fail(stripe_key(engine, "finalize"), "refuse")
    assert not sync_invoices(engine, client).ok  # items 4900, 1250, payments -1000: 5150
    payments.record_payment(engine, FIRST, Decimal("5.00"), method="bank_transfer", received_on=ISSUED)

    report = sync_invoices(engine, client)

    assert not report.ok and "asks 5150 minor units and 4650 are due here" in (report.failed[0].error or "")
    assert fake_stripe.of("invoice")[0]["status"] == "draft" and sync_row(engine).step == "items"


def test_a_three_decimal_credit_note_stripe_could_not_settle_is_not_carried(engine, fake_stripe, client):  # noqa: F811
    """31.620 KWD pushed, then 1.005 credited: carried, it would leave Stripe to collect 30.615, which it cannot
    (three-decimal amounts end in 0); the note is not carried and the sync says why. 1.010 is carried."""
    add_customer(engine, "nasser", "KWD")
    issue(engine, "nasser", "KWD", (("Hosting", "31.500"), ("Support", "0.120")))
    assert sync_invoices(engine, client).ok
    credit(engine, "1.005")
    report = sync_invoices(engine, client)
    assert not report.ok and fake_stripe.of("credit_note") == []
    [adjustment] = report.adjustments
    assert adjustment.error == (
        "1.005 KWD credited, and Stripe collects and refunds KWD only in multiples of 0.010: not carried; settle it "
        "with the customer another way"
    )
    credit(engine, "1.010", FIRST)
    report = sync_invoices(engine, client)
    assert [(a.document, a.error) for a in report.adjustments] == [
        (NOTE, adjustment.error), ("CN-2026-000002", None),
    ]
    assert [n["amount"] for n in fake_stripe.of("credit_note")] == [1010]
