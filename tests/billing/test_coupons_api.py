"""Coupons over HTTP (SQLite and PostgreSQL): created with 201 and ``Location``, every invalid field named in a
problem, listed a page at a time by code, issued and applied to a customer, Idempotency-Key honoured."""

from __future__ import annotations

import pytest

from tests.billing.test_api import add_customer, error_of, live_api

__all__ = ["live_api"]

pytestmark = pytest.mark.db

SPRING = {"code": "SPRING", "percent_off": "20", "duration": "repeating", "months": 3, "plans": ["starter"]}


def test_a_coupon_is_created_read_issued_and_applied(live_api):
    add_customer(live_api)
    add_customer(live_api, "beta")
    with live_api.client() as client:
        created = client.post("/v1/coupons", json=SPRING)
        assert created.status_code == 201, created.text
        assert created.headers["location"] == "/v1/coupons/SPRING"
        body = created.json()
        assert (body["percent_off"], body["amount_off"], body["months"], body["plans"]) == ("20", None, 3, ["starter"])
        assert (body["issued"], body["redeemed"], body["redemption_rate"]) == (0, 0, None)
        assert body == client.get(created.headers["location"]).json()  # (the create answers what GET reads)
        issued = client.post("/v1/coupons/SPRING/issue", json={"customer": "beta"})
        applied = client.post("/v1/coupons/SPRING/apply", json={"customer": "acme"})
        again = client.post("/v1/coupons/SPRING/apply", json={"customer": "acme"})
        read = client.get(created.headers["location"]).json()
    assert issued.status_code == applied.status_code == 201
    assert (issued.json()["customer"], issued.json()["applied_on"]) == ("beta", None)
    assert applied.json()["applied_on"] is not None and applied.json()["redeemed_at"] is None
    assert again.status_code == 409 and error_of(again)["code"] == "conflict"
    # issued to two customers, applied to one, redeemed by none yet: 0 / 2
    assert (read["issued"], read["applied"], read["redeemed"], read["redemption_rate"]) == (2, 1, 0, "0.0000")
    assert [c["customer"] for c in read["customers"]] == ["acme", "beta"]


def test_a_bad_coupon_is_a_problem_naming_every_invalid_field(live_api):
    add_customer(live_api)
    with live_api.client() as client:
        bad = client.post("/v1/coupons", json={"code": "X", "percent_off": "150", "duration": "repeating"})
        both = client.post("/v1/coupons", json={"code": "Y", "percent_off": "5", "amount_off": "5", "duration": "once"})
        client.post("/v1/coupons", json=SPRING)
        taken = client.post("/v1/coupons", json=SPRING)
        unknown_plan = client.post("/v1/coupons", json={**SPRING, "code": "Z", "plans": ["gold"]})
        euros = client.post(
            "/v1/coupons", json={"code": "EUR5", "amount_off": "5.00", "currency": "EUR", "duration": "once"}
        )
        wrong_currency = client.post("/v1/coupons/EUR5/apply", json={"customer": "acme"})
        missing = client.post("/v1/coupons/NOPE/issue", json={"customer": "acme"})
        nobody = client.post("/v1/coupons/SPRING/issue", json={"customer": "nobody"})
    assert bad.status_code == 422
    assert [e["field"] for e in bad.json()["errors"]] == ["percent_off", "months"]
    assert both.status_code == 422 and error_of(both)["field"] == "amount_off"
    assert taken.status_code == 409 and error_of(taken) == {
        "code": "already_exists",
        "message": "code: a coupon 'SPRING' exists already",
        "field": "code",
    }
    assert unknown_plan.status_code == 422 and error_of(unknown_plan)["field"] == "plans"
    assert euros.status_code == 201
    assert wrong_currency.status_code == 422 and error_of(wrong_currency)["field"] == "currency"
    assert missing.status_code == 404  # (the URL's coupon; the body's customer is a field)
    assert nobody.status_code == 422 and error_of(nobody)["field"] == "customer"


def test_coupons_are_listed_by_code_a_page_at_a_time_and_a_create_runs_once_per_idempotency_key(live_api):
    with live_api.client() as client:
        headers = {"Idempotency-Key": "coupon-1"}
        first = client.post("/v1/coupons", json={**SPRING, "code": "C2"}, headers=headers)
        replay = client.post("/v1/coupons", json={**SPRING, "code": "C2"}, headers=headers)
        for code in ("C3", "C1"):
            assert client.post("/v1/coupons", json={**SPRING, "code": code}).status_code == 201
        page1 = client.get("/v1/coupons", params={"limit": "2"}).json()
        page2 = client.get("/v1/coupons", params={"limit": "2", "starting_after": "C2"}).json()
        back = client.get("/v1/coupons", params={"limit": "2", "ending_before": "C3"}).json()
    assert first.status_code == replay.status_code == 201
    assert replay.headers.get("Idempotent-Replayed") == "true" and replay.json() == first.json()
    assert ([c["code"] for c in page1["data"]], page1["has_more"]) == (["C1", "C2"], True)
    assert ([c["code"] for c in page2["data"]], page2["has_more"]) == (["C3"], False)
    assert ([c["code"] for c in back["data"]], back["has_more"]) == (["C1", "C2"], False)
