"""Prepaid credits over HTTP (SQLite and PostgreSQL): a grant answers 201 with its ``Location``, is read back, and
is made once per ``Idempotency-Key``; invalid fields are named; the balance and the ledger (a cursor-paginated
list) answer what the CLI prints; a finalized invoice shows the credits applied and its amount due."""

from __future__ import annotations

import pytest

from tests.billing.test_api import add_customer, bill_month, error_of, live_api, month_usage, subscribe

__all__ = ["live_api"]

pytestmark = pytest.mark.db

GRANTS = "/v1/customers/acme/credits/grants"


def test_a_grant_is_created_read_and_pays_the_next_invoice(live_api):
    add_customer(live_api)
    subscribe(live_api)
    month_usage(live_api)
    with live_api.client() as client:
        body = {"amount": "5.00", "currency": "USD", "expires": "2099-01-01", "reason": "welcome"}
        created = client.post(GRANTS, json=body, headers={"Idempotency-Key": "grant-1"})
        again = client.post(GRANTS, json=body, headers={"Idempotency-Key": "grant-1"})
        paid = client.post(GRANTS, json={"amount": "20.00", "currency": "USD", "paid": True})
        assert created.status_code == 201, created.text
        grant = created.json()
        assert created.headers["location"] == f"{GRANTS}/{grant['id']}"
        assert again.json() == grant  # the same answer, one grant
        assert (grant["kind"], grant["amount"], grant["remaining"], grant["usable"]) == ("free", "5.00", "5.00", True)
        assert client.get(created.headers["location"]).json() == grant
        topup = paid.json()
        assert (topup["kind"], topup["usable"], topup["invoice"][:4]) == ("paid", False, "INV-")
        balance = client.get("/v1/customers/acme/credits/balance").json()
        [usd] = balance["balances"]
        assert (usd["free"], usd["paid"], usd["pending"], usd["total"]) == ("5.00", "0.00", "20.00", "5.00")
    [number] = bill_month(live_api)
    with live_api.client() as client:
        invoice = client.get(f"/v1/invoices/{number}").json()
        # 10.00 + 0.75 + 0.30 = 11.05, tax 19 % 2.10, total 13.15; the free 5.00 applies (the paid 20.00 is not
        # paid yet) → 8.15 due
        assert (invoice["total"], invoice["amount_due"]) == ("13.15", "8.15")
        assert invoice["credits_applied"] == [
            {"kind": "free", "description": "Free credit: welcome", "amount": "5.00", "grant": grant["id"]}
        ]
        first = client.get("/v1/customers/acme/credits/ledger", params={"limit": "2"}).json()
        rest = client.get(
            "/v1/customers/acme/credits/ledger", params={"starting_after": str(first["data"][-1]["id"])}
        ).json()
    legs = [(e["kind"], e["account"], e["amount"]) for e in first["data"] + rest["data"]]
    assert first["has_more"] is True and rest["has_more"] is False
    assert legs == [
        ("grant", "customer", "5.00"), ("grant", "promotion", "-5.00"),
        ("application", "customer", "-5.00"), ("application", "invoice", "5.00"),
    ]


def test_bad_grants_are_problems_naming_the_field(live_api):
    add_customer(live_api)
    with live_api.client() as client:
        negative = client.post(GRANTS, json={"amount": "-1", "currency": "USD"})
        fraction = client.post(GRANTS, json={"amount": "1.001", "currency": "USD"})
        currency = client.post(GRANTS, json={"amount": "1.00", "currency": "XXY"})
        expired = client.post(GRANTS, json={"amount": "1.00", "currency": "USD", "expires": "2020-01-01"})
        unknown = client.post("/v1/customers/nobody/credits/grants", json={"amount": "1.00", "currency": "USD"})
        missing = client.get(f"{GRANTS}/999")
    assert negative.status_code == 422 and error_of(negative)["field"] == "amount"
    assert fraction.status_code == 422 and error_of(fraction)["field"] == "amount"
    assert currency.status_code == 422 and error_of(currency)["field"] == "currency"
    assert expired.status_code == 422 and error_of(expired)["field"] == "expires"
    assert unknown.status_code == 404 and missing.status_code == 404


SETTINGS = "/v1/customers/acme/credits/settings/USD"


def test_the_low_balance_level_and_the_automatic_top_up_are_set_and_read_per_currency(live_api):
    add_customer(live_api)
    body = {"low_balance": "20.00", "auto_topup": {"below": "10.00", "amount": "50.00"}}
    with live_api.client() as client:
        first = client.put(SETTINGS, json=body)
        again = client.put(SETTINGS, json=body)
        read = client.get(SETTINGS)
        balance = client.get("/v1/customers/acme/credits/balance").json()
        euros = client.get("/v1/customers/acme/credits/settings/eur")
        off = client.put(SETTINGS, json={})
    assert first.status_code == 200, first.text
    usd = first.json()
    assert (usd["low_balance"], usd["auto_topup"]) == ("20.00", {"below": "10.00", "amount": "50.00"})
    # no paid credit (0.00 < 10.00): one top-up of 50.00 issued at once, and none more while it is unpaid
    [topup] = usd["grants"]
    assert (topup["kind"], topup["amount"], topup["usable"], usd["pending"]) == ("paid", "50.00", False, "50.00")
    assert topup["reason"] == "automatic top-up (paid credit below 10.00)"
    assert again.json() == usd and read.json() == usd and balance["balances"] == [usd]
    assert euros.json() == {"currency": "EUR", "free": "0.00", "paid": "0.00", "balance": "0.00", "total": "0.00",
                            "pending": "0.00", "low_balance": None, "auto_topup": None, "grants": []}
    assert (off.json()["low_balance"], off.json()["auto_topup"], len(off.json()["grants"])) == (None, None, 1)


def test_bad_credit_settings_are_problems_naming_the_field(live_api):
    add_customer(live_api)
    with live_api.client() as client:
        zero = client.put(SETTINGS, json={"low_balance": "0"})
        fraction = client.put(SETTINGS, json={"auto_topup": {"below": "1.001", "amount": "5.00"}})
        amount = client.put(SETTINGS, json={"auto_topup": {"below": "1.00", "amount": "0"}})
        half = client.put(SETTINGS, json={"auto_topup": {"below": "1.00"}})
        currency = client.put("/v1/customers/acme/credits/settings/XXY", json={"low_balance": "5.00"})
        read_currency = client.get("/v1/customers/acme/credits/settings/XXY")
        unknown = client.put("/v1/customers/nobody/credits/settings/USD", json={"low_balance": "5.00"})
    assert zero.status_code == 422 and error_of(zero)["field"] == "low_balance"
    assert fraction.status_code == 422 and error_of(fraction)["field"] == "auto_topup.below"
    assert amount.status_code == 422 and error_of(amount)["field"] == "auto_topup.amount"
    assert half.status_code == 422 and "amount" in error_of(half)["field"]
    assert currency.status_code == 422 and error_of(currency)["field"] == "currency"
    assert read_currency.status_code == 422 and error_of(read_currency)["field"] == "currency"
    assert unknown.status_code == 404
