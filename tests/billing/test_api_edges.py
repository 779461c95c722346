"""Requests at the edges of what the API takes, against the real uvicorn of ``test_api`` (SQLite and PostgreSQL):
days out of the calendar's reach, bodies nested too deeply, ids its paths cannot carry, and the answers that must
not tell a customer-bound key more than a missing resource would. Each was a 500, a wrong answer or a leak."""

from __future__ import annotations

import httpx
import pytest

from billing.apikeys import create_api_key
from tests.billing.test_api import MONTH, add_customer, error_of, live_api, subscribe

__all__ = ["live_api"]


def problem(response: httpx.Response) -> dict:
    """The problem's code, detail and every invalid field with its message."""
    error_of(response)  # (its shape checked)
    body = response.json()
    return {"status": body["status"], "code": body["code"], "detail": body["detail"],
            "errors": [(e["field"], e["message"]) for e in body["errors"]]}  # fmt: skip


@pytest.mark.db
def test_days_out_of_the_calendars_reach_are_refused_by_name_never_a_500(live_api):
    """An aging as of 0001-01-01 overflowed, an override from 9999-12-31 ran past year 9999 (500s, the connection
    dropped); a payment dated 0001-01-01 was recorded, and a number of seconds was read as a date."""
    add_customer(live_api)
    subscription = subscribe(live_api)
    outside = "expected a date from 1971-01-01 to 9998-12-31"
    with live_api.client() as client:
        aging = client.get("/v1/receivables/aging", params={"as_of": "0001-01-01"})
        override = client.put(f"/v1/subscriptions/{subscription['id']}/overrides",
                              json={"effective_from": "9999-12-31", "subscription": {"fee": "10.00"}})  # fmt: skip
        cancel = client.post(f"/v1/subscriptions/{subscription['id']}/cancel", json={"date": 0})
        seconds = client.get("/v1/receivables/aging", params={"as_of": "1000166400"})
        instant = client.post("/v1/subscriptions", json={"customer": "acme", "plan": "starter",
                                                         "start": "2025-02-01T00:00:00Z"})  # fmt: skip
        grant = client.post("/v1/customers/acme/credits/grants",
                            json={"amount": "5.00", "currency": "USD", "expires": "9999-12-31"})  # fmt: skip
        still = client.get("/v1/receivables/aging", params={"as_of": "2026-11-30"})
    assert problem(aging) == {"status": 422, "code": "invalid_request", "detail": f"as_of: {outside}",
                              "errors": [("as_of", outside)]}  # fmt: skip
    assert problem(override) == {
        "status": 422, "code": "invalid_input",
        "detail": f"effective_from: {outside}, got '9999-12-31'", "errors": [("effective_from", f"{outside}, got '9999-12-31'")],
    }  # fmt: skip
    assert problem(cancel)["errors"] == [("date", "expected a date (YYYY-MM-DD)")]
    assert problem(seconds)["errors"] == [("as_of", "expected a date (YYYY-MM-DD)")]
    assert problem(instant)["errors"] == [("start", "expected a date (YYYY-MM-DD)")]
    assert problem(grant)["errors"] == [("expires", outside)]
    assert still.status_code == 200, still.text


@pytest.mark.db
@pytest.mark.parametrize("path", ["/v1/customers", "/v1/subscriptions/1/overrides"])
def test_a_body_nested_too_deeply_is_a_422_naming_the_body(live_api, path):
    """Two thousand nested objects: the JSON parser gives up. Was a 500 (overrides) or a 400 ``http_error`` whose
    problem type is no page."""
    add_customer(live_api, "globex")
    subscribe(live_api, "globex")
    nested = '{"a":' * 2000 + "1" + "}" * 2000
    with live_api.client() as client:
        method = client.put if path.endswith("overrides") else client.post
        response = method(path, content=nested, headers={"Content-Type": "application/json"})
    found = problem(response)
    assert (found["status"], found["code"], [field for field, _ in found["errors"]]) == (422, "invalid_request", ["body"])
    assert "nested too deeply" in found["detail"]


@pytest.mark.db
@pytest.mark.parametrize("external_id", ["a/b", ".", ".."])
def test_a_customer_id_the_paths_cannot_carry_is_refused(live_api, external_id):
    """``a/b`` was created (201, ``Location: /v1/customers/a%2Fb``) and its Location answered 404: the router
    sees ``/v1/customers/a/b``."""
    with live_api.client() as client:
        response = client.post("/v1/customers", json={"external_id": external_id, "name": "A", "currency": "USD"})
        listed = client.get("/v1/customers").json()["data"]
    assert problem(response)["errors"] == [
        ("external_id", f"expected an id without spaces, control characters or '/', and not '.' or '..', got {external_id!r}")
    ]
    assert listed == []


@pytest.mark.db
def test_a_bound_key_cannot_tell_another_customers_invoice_from_a_missing_one(live_api):
    """globex's invoice 1 answered "no invoice '1'", a missing one "no invoice 999": a key bound to acme could
    count every invoice. Both now read alike."""
    for customer in ("globex", "acme"):
        add_customer(live_api, customer)
        subscribe(live_api, customer)
    with live_api.client() as client:
        run = client.post("/v1/billing-runs", json={"period": MONTH.label})
        assert run.status_code == 201, run.text
        globex = next(i for i in client.get("/v1/invoices").json()["data"] if i["customer"] == "globex")
    _, bound = create_api_key(live_api.engine, "acme's", "acme")
    with live_api.client(bound) as client:
        other, missing = client.get(f"/v1/invoices/{globex['id']}"), client.get("/v1/invoices/999")
    assert (other.status_code, missing.status_code) == (404, 404)
    assert problem(other)["detail"] == f"no invoice '{globex['id']}'"
    assert problem(missing)["detail"] == "no invoice '999'"


@pytest.mark.db
def test_one_idempotency_key_is_one_request_however_the_header_writes_the_api_key(live_api):
    """``Bearer K``, ``bearer K`` and ``Bearer  K`` are one credential: one grant, then two replays (before: three
    grants)."""
    add_customer(live_api)
    body = {"amount": "5.00", "currency": "USD"}
    answers = []
    for header in (f"Bearer {live_api.key}", f"bearer {live_api.key}", f"Bearer  {live_api.key}"):
        with httpx.Client(base_url=live_api.url, timeout=60) as client:
            answers.append(client.post("/v1/customers/acme/credits/grants", json=body,
                                       headers={"Authorization": header, "Idempotency-Key": "grant-1"}))  # fmt: skip
    assert [a.status_code for a in answers] == [201, 201, 201]
    assert [a.headers.get("Idempotent-Replayed") for a in answers] == [None, "true", "true"]
    assert len({a.json()["id"] for a in answers}) == 1
    with live_api.client() as client:
        balance = client.get("/v1/customers/acme/credits/balance").json()
    assert balance["balances"][0]["free"] == "5.00", balance


@pytest.mark.db
def test_a_unions_invalid_field_is_named_as_the_field_once(live_api):
    """``amount_off`` takes a string or an integer: a 38-character string was named
    ``amount_off.function-after[functools.partial(…)]`` and again ``amount_off.int``."""
    with live_api.client() as client:
        response = client.post("/v1/coupons", json={"code": "B", "amount_off": "9" * 38, "currency": "USD",
                                                    "duration": "once", "percent_off": "x" * 40})  # fmt: skip
    assert [field for field, _ in problem(response)["errors"]] == ["percent_off", "amount_off"]


@pytest.mark.db
def test_a_405_allows_every_method_the_path_takes(live_api):
    """``DELETE /v1/customers`` said ``Allow: POST`` though GET lists them; ``/v1/customers/acme`` said GET
    without PATCH."""
    with live_api.client() as client:
        listed, one = client.delete("/v1/customers"), client.delete("/v1/customers/acme")
    assert (listed.status_code, listed.headers["Allow"]) == (405, "GET, HEAD, POST")
    assert (one.status_code, one.headers["Allow"]) == (405, "GET, HEAD, PATCH")


@pytest.mark.db
def test_a_head_is_answered_as_its_get_without_the_body(live_api):
    """``HEAD`` on a resource was a 405 though ``GET`` reads it (RFC 9110 9.3.2: the server answers it as the GET,
    its Content-Length included, no body)."""
    add_customer(live_api)
    with live_api.client() as client:
        got, head = client.get("/v1/customers/acme"), client.head("/v1/customers/acme")
        missing, events = client.head("/v1/customers/nobody"), client.head("/v1/events")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len(got.content)) == got.headers["content-length"]
    assert head.headers["content-type"] == got.headers["content-type"] == "application/json"
    assert (missing.status_code, missing.content, missing.headers["content-type"]) == (
        404, b"", "application/problem+json")  # fmt: skip
    assert (events.status_code, events.headers["Allow"]) == (405, "POST")



@pytest.mark.db
def test_an_id_in_a_path_is_its_digits_only(live_api):
    """``/v1/subscriptions/1_0`` was subscription 10 (lax integer parsing reads ``1_0`` as 10), and ``1.0``, ``+1``
    were subscription 1; an id in a path is now read as a cursor is, digits only."""
    ids = []
    for n in range(10):
        add_customer(live_api, f"c{n}")
        ids.append(subscribe(live_api, f"c{n}")["id"])
    assert ids[-1] == 10
    with live_api.client() as client:
        answers = {path: client.get(f"/v1/subscriptions/{path}") for path in ("1_0", "1.0", "+1", "%201", "10")}
    assert {path: answer.status_code for path, answer in answers.items()} == {
        "1_0": 422, "1.0": 422, "+1": 422, "%201": 422, "10": 200
    }
    assert problem(answers["1_0"])["errors"] == [
        ("subscription_id", "expected an id (a whole number), got '1_0'")
    ]
    assert answers["10"].json()["id"] == 10


@pytest.mark.db
def test_a_refused_body_names_its_other_invalid_fields_and_an_unknown_customer_in_it(live_api):
    """A run's impossible period beside a non-boolean ``finalize``, and a grant's or a payment's unknown currency
    beside a non-decimal amount, named only the schema's field; an unknown customer in a body was a 404 naming no
    field (the URL was right: the body's customer was not)."""
    add_customer(live_api)
    with live_api.client() as client:
        run = client.post("/v1/billing-runs", json={"period": "2099-99", "finalize": "maybe"})
        grant = client.post("/v1/customers/acme/credits/grants", json={"amount": "x", "currency": "QQQ"})
        nobody = client.post("/v1/billing-runs", json={"period": "2026-10", "customer": "nobody"})
        coupon = client.post("/v1/coupons", json={"code": "SPRING", "percent_off": "10", "duration": "once"})
        apply = client.post("/v1/coupons/SPRING/apply", json={"customer": "nobody"})
        unknown_coupon = client.post("/v1/coupons/NOPE/apply", json={"customer": "acme"})
    assert problem(run)["errors"] == [
        ("finalize", "Input should be a valid boolean, unable to interpret input"),
        ("period", "expected a month as YYYY-MM, got '2099-99'"),
    ]
    assert [field for field, _ in problem(grant)["errors"]] == ["amount", "currency"]
    assert problem(grant)["errors"][1][1].startswith("unknown currency 'QQQ'")
    assert coupon.status_code == 201
    for answer in (nobody, apply):
        assert answer.status_code == 422 and problem(answer)["errors"] == [("customer", "unknown customer 'nobody'")]
    assert unknown_coupon.status_code == 404  # (the URL's coupon)


@pytest.mark.db
def test_a_body_sent_as_another_media_type_is_a_415(live_api):
    """A customer's JSON sent as ``text/plain`` was a 422 "Input should be a valid dictionary"; it is a 415 naming
    Content-Type, as is a body sent without one (the framework reads only what says it is JSON).
    ``application/json; charset=utf-8`` and a ``+json`` type are JSON; a body-less action is not asked for one."""
    body = b'{"external_id": "%s", "name": "Acme", "currency": "USD"}'
    with live_api.client() as client:
        plain = client.post("/v1/customers", content=body % b"a", headers={"Content-Type": "text/plain"})
        form = client.post("/v1/customers", content=b"external_id=a", headers={
            "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        charset = client.post("/v1/customers", content=body % b"b", headers={
            "Content-Type": "application/json; charset=utf-8"})  # fmt: skip
        plus = client.post("/v1/customers", content=body % b"c", headers={"Content-Type": "application/merge+json"})
        bare = client.post("/v1/customers", content=body % b"d", headers={"Content-Type": ""})
        unsaid = client.post("/v1/customers", content=body % b"e")  # (httpx sends no Content-Type with content)
    assert (plain.status_code, problem(plain)["code"]) == (415, "unsupported_media_type")
    assert problem(plain)["errors"] == [("Content-Type", "expected application/json, got 'text/plain'")]
    assert form.status_code == 415
    assert [r.status_code for r in (charset, plus)] == [201, 201]
    assert "content-type" not in unsaid.request.headers
    for none in (bare, unsaid):
        assert problem(none)["errors"] == [("Content-Type", "expected application/json, got none")]
    with live_api.client() as client:
        subscription = client.post("/v1/subscriptions", json={"customer": "b", "plan": "starter", "start": "2026-10-01"})
        cancel = client.post(f"/v1/subscriptions/{subscription.json()['id']}/cancel")  # (no body, no type)
    assert cancel.status_code == 200, cancel.text
