"""Stripe's invoice events at their edges: an event about another database's invoice of the same number (staging and
production pushing to one Stripe account, whose every event reaches every endpoint) is not ours; Stripe marking
its invoice paid with less than is due here leaves the rest due; a paid status is dated by the event, however late
it is delivered; a signature header the SDK verifies is never a 500."""

from __future__ import annotations

import datetime as dt
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import stripe
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from billing import customers, invoicing, payments
from billing.core.domain import SubscriptionStatus
from billing.db import make_engine, session_scope, upgrade
from billing.stripe.sync import sync_invoices
from invoices.model import InvoiceStatus
from invoices.tables import InvoiceStatusChangeRow
from pricing_plans.loader import load_catalog_or_raise
from tests.billing.test_stripe import (
    CATALOG,
    FIRST,
    FakeStripe,
    add_customer,
    client,
    fake_stripe,
    invoice_event,
    issue,
    post,
    signed,
    sync_row,
    webhooks,
)

__all__ = ["client", "fake_stripe", "webhooks"]  # (fixtures)

pytestmark = pytest.mark.db


def _event(event_type: str, event_id: str, stripe_object: dict[str, Any], **fields: Any) -> str:
    payload = json.loads(invoice_event(event_id, event_type, stripe_invoice=stripe_object["id"]))
    payload["data"]["object"].update(customer=stripe_object["customer"], metadata=stripe_object["metadata"], **fields)
    return json.dumps(payload)


def _staging_invoice_pushed(tmp_path: Path, client: stripe.StripeClient, fake: FakeStripe) -> dict[str, Any]:
    """Staging's INV-2026-000001 (globex, 61.50), pushed to the same Stripe account."""
    staging = make_engine(f"sqlite:///{tmp_path / 'staging.db'}")
    upgrade(staging)
    add_customer(staging, "globex")
    issue(staging, "globex")
    assert sync_invoices(staging, client).ok
    pushed = fake.objects[sync_row(staging).stripe_invoice_id]
    staging.dispose()
    return pushed


def test_another_databases_invoice_of_the_same_number_is_not_ours(
    engine: Engine, fake_stripe: FakeStripe, client: stripe.StripeClient, webhooks: TestClient, tmp_path: Path
) -> None:
    """It marked production's INV-2026-000001 (acme's, pushed as another Stripe invoice) paid with a 61.50 card
    payment, and its ``marked_uncollectible`` cancelled acme's subscription as involuntary churn."""
    staging = _staging_invoice_pushed(tmp_path, client, fake_stripe)
    assert staging["metadata"]["billing_invoice_number"] == FIRST
    catalog = load_catalog_or_raise_text(tmp_path)
    add_customer(engine, "acme")
    growth = customers.subscribe(engine, catalog, "acme", "growth", dt.date(2026, 1, 1))
    issue(engine, "acme")
    assert sync_invoices(engine, client).ok
    assert sync_row(engine).stripe_invoice_id != staging["id"]

    paid = post(webhooks, _event("invoice.paid", "evt_staging_paid", staging, amount_paid=6150)).json()
    given_up = post(webhooks, _event("invoice.marked_uncollectible", "evt_staging_lost", staging)).json()
    assert (paid["outcome"], given_up["outcome"]) == ("ignored", "ignored")
    ours = invoicing.get_invoice(engine, FIRST)
    assert (ours.status, str(ours.amount_due)) == (InvoiceStatus.FINALIZED, "61.50")
    assert payments.list_payments(engine, invoice=FIRST) == []
    assert customers.get_subscription(engine, growth.id).status is SubscriptionStatus.ACTIVE


def test_an_invoice_never_pushed_from_here_is_not_taken_by_its_number_from_another_database(
    engine: Engine, fake_stripe: FakeStripe, client: stripe.StripeClient, webhooks: TestClient, tmp_path: Path
) -> None:
    """Production's INV-2026-000001 is not pushed yet (no sync row): the number alone matched. Staging's names
    another customer (globex), so it is not this one; one naming this customer still is (a push from here that
    stopped before storing its Stripe id)."""
    staging = _staging_invoice_pushed(tmp_path, client, fake_stripe)
    add_customer(engine, "acme")
    issue(engine, "acme")
    assert post(webhooks, _event("invoice.paid", "evt_1", staging, amount_paid=6150)).json()["outcome"] == "ignored"
    older = {
        **staging,
        "id": "in_older",
        "metadata": {"billing_invoice_number": FIRST, "billing_customer_id": "globex"},
    }
    assert post(webhooks, _event("invoice.paid", "evt_2", older, amount_paid=6150)).json()["outcome"] == "ignored"
    own = {
        **older,
        "customer": "cus_acme",
        "metadata": {"billing_invoice_number": FIRST, "billing_customer_id": "acme"},
    }
    assert post(webhooks, _event("invoice.paid", "evt_3", own, amount_paid=6150)).json()["outcome"] == "paid"
    assert invoicing.get_invoice(engine, FIRST).status is InvoiceStatus.PAID


def test_stripe_collecting_less_than_is_due_here_leaves_the_rest_due(
    engine: Engine, fake_stripe: FakeStripe, client: stripe.StripeClient, webhooks: TestClient
) -> None:
    """61.50, 20.00 of it by bank transfer before the push: Stripe asks 41.50. The transfer bounces here, so
    61.50 is due again; Stripe collects its 41.50. The invoice was marked paid with 20.00 written off."""
    add_customer(engine)
    issue(engine)
    transfer = payments.record_payment(engine, FIRST, Decimal("20.00"), method="bank_transfer")
    assert sync_invoices(engine, client).ok
    pushed = fake_stripe.objects[sync_row(engine).stripe_invoice_id]
    assert pushed["amount_due"] == 4150
    payments.reverse_payment(engine, transfer.id, reason="bounced")
    answer = post(webhooks, _event("invoice.paid", "evt_paid", pushed, amount_paid=4150)).json()
    assert answer["outcome"] == "partly_paid"  # (not paid: it is not)
    invoice = invoicing.get_invoice(engine, FIRST)
    assert (invoice.status, str(invoice.amount_paid), str(invoice.amount_due)) == (
        InvoiceStatus.FINALIZED,
        "41.50",
        "20.00",
    )


def test_an_invoice_below_stripes_minimum_charge_stays_due_when_stripe_marks_it_paid(
    engine: Engine, fake_stripe: FakeStripe, client: stripe.StripeClient, webhooks: TestClient
) -> None:
    """Stripe does not charge 0.30 USD (its minimum is 0.50): it marks its invoice paid with ``amount_paid`` 0 and
    carries the 0.30 to the customer's next Stripe invoice. Here the invoice was paid with nothing received."""
    add_customer(engine)
    issue(engine, lines=(("API calls: 300 × 0.001", "0.30"),))
    assert sync_invoices(engine, client).ok
    pushed = fake_stripe.objects[sync_row(engine).stripe_invoice_id]
    answer = post(webhooks, _event("invoice.paid", "evt_small", pushed, amount_due=30, amount_paid=0))
    assert (answer.status_code, answer.json()["outcome"]) == (200, "partly_paid")
    invoice = invoicing.get_invoice(engine, FIRST)
    assert (invoice.status, str(invoice.amount_due)) == (InvoiceStatus.FINALIZED, "0.30")


def test_a_late_delivered_payment_dates_the_paid_status_by_the_event(engine: Engine, webhooks: TestClient) -> None:
    add_customer(engine)
    issue(engine)
    created = dt.datetime(2026, 4, 20, 12, 0, tzinfo=dt.UTC)  # delivered today
    payload = json.loads(invoice_event("evt_paid", "invoice.paid", created=created))
    payload["data"]["object"]["amount_paid"] = 6150
    assert post(webhooks, json.dumps(payload)).json()["outcome"] == "paid"
    with session_scope(engine) as session:
        history = [
            (row.status, row.changed_at.replace(tzinfo=dt.UTC))
            for row in session.scalars(select(InvoiceStatusChangeRow).order_by(InvoiceStatusChangeRow.id))
        ]
    assert history[-1] == ("paid", created)  # was the delivery's instant


def test_a_signature_header_with_a_second_equals_sign_in_its_timestamp_is_a_400(
    engine: Engine, webhooks: TestClient
) -> None:
    """The SDK reads ``t=1796176737=x`` as 1796176737 and verifies it; the route then read the whole value and
    answered 500. A captured delivery, an hour old, replayed so: stale, 400."""
    add_customer(engine)
    issue(engine)
    payload = invoice_event("evt_x", "invoice.paid")
    timestamp, signature = signed(payload, timestamp=int(time.time()) - 3600)["Stripe-Signature"].split(",")
    answer = post(webhooks, payload, headers={"Stripe-Signature": f"{timestamp}=x,{signature}"})
    assert answer.status_code == 400 and answer.json()["type"].endswith("stale_timestamp")


def load_catalog_or_raise_text(tmp_path: Path) -> Any:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    return load_catalog_or_raise(str(path))
