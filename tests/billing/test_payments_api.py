"""Payments and receivables over HTTP (SQLite and PostgreSQL): a payment answers 201 with its ``Location`` and is
made once per ``Idempotency-Key``; the invoice shows ``amount_paid`` and ``amount_due`` and leaves the unpaid list
once paid; an overpayment's excess, a reversal (409 the second time), bad fields named, a draft refused, the
cursor-paginated payment list and the aged receivables."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.billing.test_api import MONTH, add_customer, bill_month, error_of, live_api, month_usage, subscribe

__all__ = ["live_api"]

pytestmark = pytest.mark.db

PAID_ON = (MONTH.end + dt.timedelta(days=3)).isoformat()


def test_payments_pay_an_invoice_in_parts_and_a_reversal_reopens_it(live_api):
    add_customer(live_api)
    subscribe(live_api)
    month_usage(live_api)
    [number] = bill_month(live_api)
    with live_api.client() as client:
        # 10.00 + 0.75 + 0.30 = 11.05, tax 19 % 2.10, total 13.15
        body = {"amount": "5.00", "currency": "USD", "date": PAID_ON, "method": "bank_transfer", "reference": "T1"}
        first = client.post(f"/v1/invoices/{number}/payments", json=body, headers={"Idempotency-Key": "pay-1"})
        again = client.post(f"/v1/invoices/{number}/payments", json=body, headers={"Idempotency-Key": "pay-1"})
        assert first.status_code == 201, first.text
        payment = first.json()
        assert first.headers["location"] == f"/v1/payments/{payment['id']}"
        assert again.json() == payment  # one payment
        assert client.get(first.headers["location"]).json() == payment
        invoice = client.get(f"/v1/invoices/{number}").json()
        assert (invoice["status"], invoice["amount_paid"], invoice["amount_due"]) == ("finalized", "5.00", "8.15")
        unpaid = client.get("/v1/invoices", params={"unpaid": "true"}).json()["data"]
        assert [(i["number"], i["amount_paid"], i["amount_due"]) for i in unpaid] == [(number, "5.00", "8.15")]
        # 10.00 more: 8.15 to the invoice, 1.85 to the balance
        rest = client.post(f"/v1/invoices/{number}/payments", json={"amount": "10.00", "method": "card"}).json()
        assert (rest["applied"], rest["to_balance"], rest["status"]) == ("8.15", "1.85", "succeeded")
        invoice = client.get(f"/v1/invoices/{number}").json()
        assert (invoice["status"], invoice["amount_paid"], invoice["amount_due"]) == ("paid", "13.15", "0.00")
        assert client.get("/v1/invoices", params={"unpaid": "true"}).json()["data"] == []
        [usd] = client.get("/v1/customers/acme/credits/balance").json()["balances"]
        assert usd["balance"] == "1.85"
        page = client.get("/v1/payments", params={"limit": "1"}).json()
        after = client.get("/v1/payments", params={"starting_after": str(page["data"][0]["id"])}).json()
        assert ([p["id"] for p in page["data"] + after["data"]], page["has_more"], after["has_more"]) == (
            [payment["id"], rest["id"]], True, False
        )
        reversed_ = client.post(f"/v1/payments/{rest['id']}/reverse", json={"reason": "charge-back"})
        assert reversed_.status_code == 200, reversed_.text
        assert (reversed_.json()["status"], reversed_.json()["balance_recovered"]) == ("reversed", "1.85")
        invoice = client.get(f"/v1/invoices/{number}").json()
        assert (invoice["status"], invoice["amount_paid"], invoice["amount_due"]) == ("finalized", "5.00", "8.15")
        twice = client.post(f"/v1/payments/{rest['id']}/reverse")
        assert twice.status_code == 409 and error_of(twice)["code"] == "conflict"
        # due 14 days after its issue (2 days after the month): on the month's end + 30 days it is 14 days late
        as_of = (MONTH.end + dt.timedelta(days=30)).isoformat()
        aging = client.get("/v1/receivables/aging", params={"as_of": as_of}).json()
    assert aging["data"] == [
        {"customer": "acme", "name": "Acme", "currency": "USD", "invoices": 1, "current": "0.00", "1-30": "8.15",
         "31-60": "0.00", "61-90": "0.00", "90+": "0.00", "total": "8.15"}
    ]
    assert aging["totals"][0]["total"] == "8.15"


def test_bad_payments_are_problems_naming_the_field(live_api):
    add_customer(live_api)
    subscribe(live_api)
    month_usage(live_api)
    [number] = bill_month(live_api)
    url = f"/v1/invoices/{number}/payments"
    with live_api.client() as client:
        fraction = client.post(url, json={"amount": "1.001", "method": "cash"})
        zero = client.post(url, json={"amount": "0", "method": "cash"})
        currency = client.post(url, json={"amount": "1.00", "method": "cash", "currency": "EUR"})
        method = client.post(url, json={"amount": "1.00", "method": "cheque"})
        future = client.post(url, json={"amount": "1.00", "method": "cash", "date": "2999-01-01"})
        unknown = client.post("/v1/invoices/INV-1999-000001/payments", json={"amount": "1.00", "method": "cash"})
        missing = client.get("/v1/payments/999")
        beyond = client.get("/v1/payments", params={"invoice": "99999999999999999999"})  # no id that large
        reverse_missing = client.post("/v1/payments/999/reverse")
    assert fraction.status_code == 422 and error_of(fraction)["field"] == "amount"
    assert zero.status_code == 422 and error_of(zero)["field"] == "amount"
    assert currency.status_code == 422 and error_of(currency)["field"] == "currency"
    assert method.status_code == 422 and error_of(method)["field"] == "method"
    assert future.status_code == 422 and error_of(future)["field"] == "date"
    assert (unknown.status_code, missing.status_code, reverse_missing.status_code) == (404, 404, 404)
    assert beyond.status_code == 404 and error_of(beyond)["message"] == "no invoice '99999999999999999999'"


def test_overpayments_that_would_take_the_balance_past_the_largest_amount_are_refused_naming_the_amount(live_api):
    add_customer(live_api)
    subscribe(live_api)
    month_usage(live_api)
    [number] = bill_month(live_api)  # 13.15 due
    url = f"/v1/invoices/{number}/payments"
    with live_api.client() as client:
        first = client.post(url, json={"amount": "509597621067316.80", "method": "bank_transfer"})
        second = client.post(url, json={"amount": "509597621067316.80", "method": "bank_transfer"})
        [usd] = client.get("/v1/customers/acme/credits/balance").json()["balances"]
        payments = client.get("/v1/payments").json()["data"]
    assert first.status_code == 201 and first.json()["to_balance"] == "509597621067303.65"
    # 509,597,621,067,303.65 held + 509,597,621,067,316.80 = 1,019,195,242,134,620.45: refused, nothing recorded
    assert second.status_code == 422, second.text
    assert error_of(second)["field"] == "amount"
    assert "would hold 1,019,195,242,134,620.45 USD" in error_of(second)["message"]
    assert usd["balance"] == "509597621067303.65"
    assert [p["amount"] for p in payments] == ["509597621067316.80"]


def test_a_draft_cannot_be_paid(live_api):
    from billing.run import run_billing

    add_customer(live_api)
    subscribe(live_api)
    run_billing(live_api.engine, live_api.catalog, MONTH)
    with live_api.client() as client:
        [draft] = client.get("/v1/invoices", params={"status": "draft"}).json()["data"]
        refused = client.post(f"/v1/invoices/{draft['id']}/payments", json={"amount": "1.00", "method": "cash"})
    assert refused.status_code == 409 and "is a draft" in error_of(refused)["message"]
