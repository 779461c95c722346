"""The API's conventions, against the real uvicorn of ``test_api`` on SQLite and PostgreSQL: cursor pagination on
every list, unknown query parameters refused, RFC 9457 problems naming every invalid field and matching the one
error schema of the OpenAPI document, 201 with ``Location``, examples on every schema, consistent operation ids,
and the routes that do over HTTP what the CLI does (plans, subscriptions, billing runs, finalize, void, credit
notes)."""

from __future__ import annotations

import datetime as dt
import re

import httpx
import pydantic
import pytest

from billing import customers as service
from billing.api import schemas
from billing.api.errors import FieldError, Problem
from billing.apikeys import create_api_key
from tests.billing.test_api import (
    MONTH,
    add_customer,
    bill_month,
    error_of,
    event,
    live_api,
    month_usage,
    subscribe,
)

__all__ = ["live_api"]

ROWS = 250


def walk(client: httpx.Client, path: str, key: str, limit: int, **params: str) -> tuple[list, list, list]:
    """Walk ``path`` forward from the start, then backward from the end: (ids forward, ids backward, the
    (size, has_more) of each page forward then backward)."""
    pages: list[tuple[int, bool]] = []
    forward: list = []
    cursor: dict[str, str] = {}
    while True:
        response = client.get(path, params={"limit": str(limit), **params, **cursor})
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"data", "has_more"}
        ids = [item[key] for item in body["data"]]
        forward += ids
        pages.append((len(ids), body["has_more"]))
        if not body["has_more"]:
            break
        cursor = {"starting_after": str(ids[-1])}
    backward: list = []
    cursor = {"ending_before": str(forward[-1])}
    backward = [forward[-1]]
    while True:
        response = client.get(path, params={"limit": str(limit), **params, **cursor})
        assert response.status_code == 200, response.text
        body = response.json()
        ids = [item[key] for item in body["data"]]
        assert ids == sorted(ids)  # a page read backward is still in ascending order
        backward = ids + backward
        pages.append((len(ids), body["has_more"]))
        if not body["has_more"]:
            break
        cursor = {"ending_before": str(ids[0])}
    return forward, backward, pages


def many_customers(api, count: int = ROWS) -> list[str]:
    """``count`` customers subscribed to the starter plan on MONTH's first day (through the service: quicker than HTTP)."""
    ids = [f"cust-{n:03d}" for n in range(count)]
    for external_id in ids:
        service.create_customer(api.engine, external_id, external_id.title(), None, "USD", timezone="UTC")
        service.subscribe(api.engine, api.catalog, external_id, "starter", MONTH.start)
    return ids


# -- pagination -----------------------------------------------------------------------------------------------


def test_a_250_row_list_is_walked_forward_and_backward_page_by_page(live_api):
    ids = many_customers(live_api)
    with live_api.client() as client:
        forward, backward, pages = walk(client, "/v1/customers", "external_id", 100)
        default = client.get("/v1/customers").json()
        tail = client.get("/v1/customers", params={"starting_after": "cust-239"}).json()
        between = client.get("/v1/customers", params={"starting_after": "cust-100x", "limit": "2"}).json()
        last = client.get("/v1/customers", params={"ending_before": "zzz", "limit": "3"}).json()
    assert forward == ids and backward == ids
    assert pages == [(100, True), (100, True), (50, False), (100, True), (100, True), (49, False)]
    assert len(default["data"]) == 100 and default["has_more"] is True  # the default limit
    assert [c["external_id"] for c in tail["data"]] == ids[240:] and tail["has_more"] is False
    # a cursor need not be an item: the page starts after (ends before) where it would be
    assert [c["external_id"] for c in between["data"]] == ["cust-101", "cust-102"] and between["has_more"]
    assert [c["external_id"] for c in last["data"]] == ids[-3:] and last["has_more"] is True


def test_subscriptions_and_invoices_are_walked_by_id(live_api):
    many_customers(live_api)
    bill_month(live_api)
    with live_api.client() as client:
        subscriptions, back_subscriptions, _ = walk(client, "/v1/subscriptions", "id", 100)
        invoices, back_invoices, invoice_pages = walk(client, "/v1/invoices", "id", 100, period=MONTH.label)
        active = client.get("/v1/subscriptions", params={"status": "active", "customer": "cust-007"}).json()
        first = client.get("/v1/invoices", params={"limit": "1"}).json()["data"][0]
    assert len(subscriptions) == ROWS and subscriptions == sorted(subscriptions) == back_subscriptions
    assert len(invoices) == ROWS and invoices == sorted(invoices) == back_invoices
    assert invoice_pages[:3] == [(100, True), (100, True), (50, False)]
    assert [(s["customer"], s["plan"], s["status"]) for s in active["data"]] == [("cust-007", "starter", "active")]
    # the starter fee of 10.00 in arrears, no usage, no tax
    assert (first["customer"], first["status"], first["total"]) == ("cust-000", "finalized", "10.00")


def test_the_page_parameters_are_checked(live_api):
    add_customer(live_api)
    with live_api.client() as client:
        zero = client.get("/v1/customers", params={"limit": "0"})
        too_many = client.get("/v1/customers", params={"limit": "1001"})
        at_most = client.get("/v1/customers", params={"limit": "1000"})
        both = client.get("/v1/customers", params={"starting_after": "a", "ending_before": "z"})
        not_an_id = client.get("/v1/invoices", params={"starting_after": "INV-2026-000001"})
    assert zero.status_code == 422 and error_of(zero)["field"] == "limit"
    assert too_many.status_code == 422 and error_of(too_many)["field"] == "limit"
    assert at_most.status_code == 200
    assert both.status_code == 400 and error_of(both)["code"] == "invalid_query"
    assert [e["field"] for e in both.json()["errors"]] == ["starting_after", "ending_before"]
    assert not_an_id.status_code == 422 and error_of(not_an_id)["field"] == "starting_after"


def test_a_query_parameter_the_route_does_not_take_is_a_400_naming_it(live_api):
    add_customer(live_api)
    with live_api.client() as client:
        misspelt = client.get("/v1/invoices", params={"customr": "acme", "period": MONTH.label, "limt": "5"})
        on_a_read = client.get("/v1/customers/acme", params={"expand": "subscriptions"})
        on_a_post = client.post("/v1/customers?dry_run=1", json={"external_id": "x", "name": "X", "currency": "USD"})
        known = client.get("/v1/invoices", params={"customer": "acme", "period": MONTH.label, "limit": "5"})
    assert misspelt.status_code == 400 and error_of(misspelt)["code"] == "invalid_query"
    assert [e["field"] for e in misspelt.json()["errors"]] == ["customr", "limt"]
    assert "ending_before, limit, period, starting_after, status" in misspelt.json()["errors"][0]["message"]
    assert on_a_read.status_code == 400 and error_of(on_a_read)["field"] == "expand"
    assert on_a_post.status_code == 400 and error_of(on_a_post)["field"] == "dry_run"
    assert known.status_code == 200
    with live_api.client() as client:  # nothing was created by the refused POST
        assert [c["external_id"] for c in client.get("/v1/customers").json()["data"]] == ["acme"]


# -- errors -------------------------------------------------------------------------------------------------


def test_a_problem_names_every_invalid_field_with_its_own_message(live_api):
    with live_api.client() as client:
        schema_refusal = client.post(
            "/v1/customers", json={"external_id": "acme", "currency": 840, "address": "1 Main St", "vip": True}
        )
        engine_refusal = client.post(
            "/v1/customers", json={"external_id": "acme", "name": "Acme", "email": "not-mail", "currency": "EUX"}
        )
    assert schema_refusal.status_code == 422
    assert schema_refusal.headers["content-type"] == "application/problem+json"
    problem = schema_refusal.json()
    assert (problem["type"], problem["title"], problem["status"], problem["code"]) == (
        "/problems/invalid_request", "Invalid request", 422, "invalid_request"
    )
    assert [(e["field"], e["message"]) for e in problem["errors"]] == [
        ("name", "required"),
        ("currency", "Input should be a valid string"),
        ("address", "Input should be a valid list"),
        ("vip", "unknown field"),
    ]
    assert problem["detail"] == (
        "name: required; currency: Input should be a valid string; address: Input should be a valid list; "
        "vip: unknown field"
    )
    problem = engine_refusal.json()
    assert (engine_refusal.status_code, problem["code"], problem["title"]) == (422, "invalid_input", "Invalid input")
    assert problem["errors"] == [
        {"field": "email", "message": "expected an address like name@example.com, got 'not-mail'"},
        {"field": "currency", "message": "unknown currency 'EUX' (expected an ISO 4217 code such as USD, EUR, JPY)"},
    ]
    assert problem["detail"] == "; ".join(f"{e['field']}: {e['message']}" for e in problem["errors"])


def test_a_body_the_schema_refuses_still_has_its_other_fields_checked_by_the_engine(live_api):
    """A 40-character locale is the schema's refusal; the bad email, the unknown currency and a VAT number that
    fails its check digits are the engine's: one answer names all four, the schema's first. A patch and a coupon
    are checked the same way; a field the schema refused is not named twice, and a field checked against another
    the body does not give (a patch's region, against the stored country) is left to the engine."""
    with live_api.client() as client:
        created = client.post(
            "/v1/customers",
            json={"external_id": "acme", "name": "Acme", "email": "not-mail", "currency": "EUX", "locale": "x" * 40,
                  "country": "DE", "tax_id": "DE136695977"},
        )
        add_customer(live_api)
        patched = client.patch("/v1/customers/acme", json={"email": "still-not-mail", "name": 7, "region": "NY"})
        coupon = client.post(
            "/v1/coupons", json={"code": "SPRING", "percent_off": "120", "duration": "repeating", "months": 0}
        )
    assert created.status_code == 422, created.text
    assert [(e["field"], e["message"]) for e in created.json()["errors"]] == [
        ("locale", "String should have at most 35 characters"),
        ("email", "expected an address like name@example.com, got 'not-mail'"),
        ("currency", "unknown currency 'EUX' (expected an ISO 4217 code such as USD, EUR, JPY)"),
        ("tax_id", "'DE136695977': not a valid VAT number of Germany (wrong check digit)"),
    ]
    assert [e["field"] for e in patched.json()["errors"]] == ["name", "email"]
    assert [(e["field"], e["message"]) for e in coupon.json()["errors"]] == [
        ("months", "Input should be greater than or equal to 1"),
        ("percent_off", "expected a number above 0 and at most 100, got 120"),
    ]


def test_every_error_is_one_schema_in_the_openapi_document_and_the_server_sends_that(live_api):
    add_customer(live_api)
    subscribe(live_api)
    with live_api.client() as client:
        document = client.get("/openapi.json").json()
        answers = [
            client.get("/v1/customers", params={"limt": "1"}),  # 400
            httpx.get(f"{live_api.url}/v1/customers", timeout=60),  # 401
            client.get("/v1/customers/nobody"),  # 404
            client.get("/v1/nothing-here"),  # 404, no such route
            client.delete("/v1/customers/acme"),  # 405
            client.post("/v1/customers", json={"external_id": "acme", "name": "A", "currency": "USD"}),  # 409
            client.post("/v1/subscriptions", json={"customer": "acme", "plan": "starter", "start": "2026-11-01"}),
            client.post("/v1/customers", json={}),  # 422
            client.post("/v1/events", json={"events": "nope"}),  # 422, read by the route itself
        ]
    statuses = [a.status_code for a in answers]
    assert statuses == [400, 401, 404, 404, 405, 409, 409, 422, 422]  # 413: test_body_limits
    schema = document["components"]["schemas"]["Problem"]
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for answer in answers:
        assert answer.headers["content-type"] == "application/problem+json", answer.text
        body = answer.json()
        assert set(body) == set(schema["properties"]) >= set(schema["required"]), body
        Problem.model_validate(body)
        assert all(FieldError.model_validate(e) for e in body["errors"])
    # every error answer of every operation is that schema, under application/problem+json
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            errors = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
            assert errors, (method, path)
            if method in ("post", "put", "patch"):  # a body may be too large; a reused Idempotency-Key conflicts
                expected = {"413"} if path == "/v1/stripe/webhooks" else {"409", "413"}  # (Stripe sends no key)
                assert expected <= set(errors), (method, path, sorted(errors))
            for status, answer in errors.items():
                assert answer["content"] == {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                }, (method, path, status)
    with httpx.Client(base_url=live_api.url, timeout=60) as client:
        described = client.get("/problems/invalid_query").json()
        unknown = client.get("/problems/nope")
    assert described["status"] == 400 and described["title"] == "Invalid query"
    assert unknown.status_code == 404


def test_every_schema_has_examples_that_fit_it_and_operation_ids_are_consistent(live_api):
    with live_api.client() as client:
        document = client.get("/openapi.json").json()
    models = {
        name: value
        for module in (schemas, __import__("billing.api.errors", fromlist=["Problem"]),
                       __import__("billing.api.routes_stripe", fromlist=["WebhookReceipt"]))
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, pydantic.BaseModel)
    }
    for name, schema in document["components"]["schemas"].items():
        assert schema.get("examples"), f"{name} has no examples"
        for example in schema["examples"]:
            if name == "EventBatchIn":  # (a JSON schema the route reads by itself: no model)
                event = schema["properties"]["events"]["items"]
                assert all(set(event["required"]) <= set(e) <= set(event["properties"]) for e in example["events"])
            else:
                models[name].model_validate(example)
    events = document["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert events == {"$ref": "#/components/schemas/EventBatchIn"}
    # every POST and PUT documents the Idempotency-Key it takes, and the header of an answer given again
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            headers = [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]
            keyed = method in ("post", "put") and path != "/v1/stripe/webhooks"  # (signed by Stripe, no API key)
            assert [h for h in headers if h != "stripe-signature"] == (["Idempotency-Key"] if keyed else []), path
            success = next(answer for status, answer in operation["responses"].items() if status[0] == "2")
            assert ("Idempotent-Replayed" in success.get("headers", {})) == keyed, path
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    verbs = "list|get|create|cancel|change|finalize|void|approve|receive|issue|apply|reverse|revoke|rotate"
    assert [i for i in ids if not re.fullmatch(rf"({verbs})[A-Z][A-Za-z]+", i)] == []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method == "get" and operation["operationId"].startswith("list"):
                names = {p["name"] for p in operation.get("parameters", [])}
                assert {"limit", "starting_after", "ending_before"} <= names, path
                answer = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
                listed = document["components"]["schemas"][answer.rpartition("/")[2]]
                assert set(listed["properties"]) == {"data", "has_more"}, path


# -- creates, and what the CLI can do ----------------------------------------------------------------------


def test_creates_answer_201_with_the_location_of_what_they_made(live_api):
    with live_api.client() as client:
        customer = client.post("/v1/customers", json={"external_id": "acme:eu", "name": "Acme", "currency": "USD"})
        subscription = client.post(
            "/v1/subscriptions", json={"customer": "acme:eu", "plan": "starter", "start": "2026-10-01"}
        )
        assert customer.status_code == 201 and customer.headers["location"] == "/v1/customers/acme%3Aeu"
        assert subscription.status_code == 201
        assert subscription.headers["location"] == f"/v1/subscriptions/{subscription.json()['id']}"
        assert client.get(customer.headers["location"]).json()["external_id"] == "acme:eu"
        assert client.get(subscription.headers["location"]).json() == subscription.json()


def test_plans_are_listed_and_read_from_the_catalog(live_api):
    with live_api.client() as client:
        listed = client.get("/v1/plans")
        page = client.get("/v1/plans", params={"limit": "1", "starting_after": "euro"})
        starter = client.get("/v1/plans/starter")
        first_version = client.get("/v1/plans/starter", params={"version": "1"})
        missing = client.get("/v1/plans/gold")
        no_version = client.get("/v1/plans/starter", params={"version": "2"})
    assert listed.status_code == 200
    assert [(p["code"], p["version"], p["currency"]) for p in listed.json()["data"]] == [
        ("euro", 1, "EUR"), ("starter", 1, "USD"), ("team", 1, "USD")
    ]
    assert [p["code"] for p in page.json()["data"]] == ["starter"] and page.json()["has_more"] is True
    plan = starter.json()
    assert plan == first_version.json()
    assert (plan["name"], plan["versions"], plan["subscription"]) == (
        "Starter", [1], {"fee": "10.00", "billing": "in_arrears", "trial_days": 0, "seats": False}
    )
    assert plan["charges"][0]["tiers"] == [
        {"up_to": "3", "unit_amount": "0", "flat_amount": "0"},
        {"up_to": None, "unit_amount": "0.25", "flat_amount": "0"},
    ]
    assert plan["charges"][1] == {"meter": "compute_minutes", "description": None, "model": "per_unit",
                                  "unit_amount": "0.015"}
    assert missing.status_code == 404 and "unknown plan 'gold'" in error_of(missing)["message"]
    assert no_version.status_code == 404 and error_of(no_version)["field"] == "version"


def test_a_billing_run_finalize_void_and_credit_over_http(live_api):
    add_customer(live_api)
    subscribe(live_api)
    month_usage(live_api)
    add_customer(live_api, "globex")
    subscribe(live_api, "globex")
    with live_api.client() as client:
        run = client.post("/v1/billing-runs", json={"period": MONTH.label})
        again = client.post("/v1/billing-runs", json={"period": MONTH.label})
        drafts = client.get("/v1/invoices", params={"status": "draft"}).json()["data"]
        acme_draft = next(i for i in drafts if i["customer"] == "acme")
        finalized = client.post(f"/v1/invoices/{acme_draft['id']}/finalize")
        twice = client.post(f"/v1/invoices/{acme_draft['id']}/finalize")
        number = finalized.json()["number"]
        credit = client.post(f"/v1/invoices/{number}/credit-notes", json={"amount": "3.15", "reason": "Outage"})
        too_much = client.post(f"/v1/invoices/{number}/credit-notes", json={"amount": "10.01", "reason": "Again"})
        bad_amount = client.post(f"/v1/invoices/{number}/credit-notes", json={"amount": "1.001", "reason": "x"})
        globex_draft = next(i for i in drafts if i["customer"] == "globex")
        void_draft = client.post(f"/v1/invoices/{globex_draft['id']}/void")
        credit_draft = client.post(f"/v1/invoices/{globex_draft['id']}/credit-notes",
                                   json={"amount": "1.00", "reason": "x"})
        rest = client.post("/v1/billing-runs", json={"period": MONTH.label, "customer": "globex", "finalize": True})
        voided = client.post(f"/v1/invoices/{number}/void")
        bad_period = client.post("/v1/billing-runs", json={"period": "2026-13"})
        unknown_customer = client.post("/v1/billing-runs", json={"period": MONTH.label, "customer": "nobody"})
    assert run.status_code == 201, run.text
    assert run.headers["Location"] == f"/v1/billing-runs/{run.json()['id']}"
    report = run.json()
    assert (report["label"], report["created"], report["updated"]) == (MONTH.label, 2, 0)
    assert report["events"] == {"accepted": 8, "rated": 8, "unbilled": 0} and report["unbilled"] == []
    # acme: 10.00 + 0.75 + 0.30 = 11.05, with 19 % tax 13.15; globex: the fee, 10.00, with tax 11.90
    assert report["totals"] == {"USD": "25.05"} and report["finalized"] == [] and report["skipped"] == []
    assert (again.json()["created"], again.json()["unchanged"]) == (0, 2)
    assert finalized.status_code == 200 and finalized.json()["status"] == "finalized"
    assert (finalized.json()["total"], len(finalized.json()["lines"])) == ("13.15", 3)
    assert twice.status_code == 409 and error_of(twice)["code"] == "conflict"
    assert credit.status_code == 201, credit.text
    note = credit.json()
    assert (note["kind"], note["refers_to"], note["total"]) == ("credit_note", number, "3.15")
    assert credit.headers["location"] == f"/v1/invoices/{note['id']}"
    assert too_much.status_code == 422 and error_of(too_much)["field"] == "amount"
    assert "10.00 USD left to credit" in error_of(too_much)["message"]
    assert bad_amount.status_code == 422 and error_of(bad_amount)["field"] == "amount"
    assert void_draft.status_code == 409 and credit_draft.status_code == 409
    assert rest.status_code == 201 and len(rest.json()["finalized"]) == 1
    assert voided.status_code == 200 and (voided.json()["status"], voided.json()["number"]) == ("void", number)
    assert bad_period.status_code == 422 and error_of(bad_period)["field"] == "period"
    assert unknown_customer.status_code == 422 and error_of(unknown_customer)["field"] == "customer"


def test_a_key_bound_to_a_customer_sees_none_of_the_new_routes(live_api):
    add_customer(live_api)
    sid = subscribe(live_api)["id"]
    month_usage(live_api)
    [number] = bill_month(live_api)
    _, bound = create_api_key(live_api.engine, "acme portal", customer="acme")
    with live_api.client(bound) as client:
        answers = [
            client.get("/v1/subscriptions"),
            client.get(f"/v1/subscriptions/{sid}"),
            client.get("/v1/plans"),
            client.get("/v1/plans/starter"),
            client.post("/v1/billing-runs", json={"period": MONTH.label}),
            client.post(f"/v1/invoices/{number}/void"),
            client.post(f"/v1/invoices/{number}/finalize"),
            client.post(f"/v1/invoices/{number}/credit-notes", json={"amount": "1.00", "reason": "x"}),
        ]
        own = client.get("/v1/invoices", params={"period": MONTH.label})
    assert [a.status_code for a in answers] == [404] * len(answers)
    assert own.status_code == 200 and [i["number"] for i in own.json()["data"]] == [number]


def test_events_answer_problems_too(live_api):
    add_customer(live_api)
    with live_api.client() as client:
        batch = client.post("/v1/events", json={"events": [event("e1"), event("e1", customer="nobody")]})
        not_a_batch = client.post("/v1/events", json={"evnts": []})
    assert batch.status_code == 200 and batch.json()["accepted"] == 1
    assert not_a_batch.status_code == 422 and error_of(not_a_batch)["field"] == "evnts"


@pytest.mark.parametrize("path", ["/v1/customers", "/v1/subscriptions", "/v1/invoices"])
def test_an_empty_list_is_an_empty_page(live_api, path):
    with live_api.client() as client:
        assert client.get(path).json() == {"data": [], "has_more": False}


def test_over_http_an_open_period_is_not_issued_unless_asked_and_a_period_to_come_never(live_api):
    """The rules of ``billing run`` and ``billing invoices finalize`` hold over HTTP: the current month is written
    as drafts, issued only with ``allow_open_period``; a billing run that would finalize it writes nothing."""
    today = dt.datetime.now(dt.UTC).date()
    current = today.replace(day=1)
    # the month after next: next month has begun somewhere (UTC+14) from 10:00 UTC on this month's last day
    coming = (current + dt.timedelta(days=62)).replace(day=1)
    add_customer(live_api, timezone="UTC")
    subscribe(live_api, start=current.isoformat())
    with live_api.client() as client:
        refused_run = client.post("/v1/billing-runs", json={"period": f"{current:%Y-%m}", "finalize": True})
        nothing_written = client.get("/v1/invoices").json()["data"]
        future_run = client.post("/v1/billing-runs", json={"period": f"{coming:%Y-%m}"})
        alone = client.post("/v1/billing-runs", json={"period": f"{current:%Y-%m}", "allow_open_period": True})
        preview = client.post("/v1/billing-runs", json={"period": f"{current:%Y-%m}"})
        draft = client.get("/v1/invoices", params={"status": "draft"}).json()["data"][0]
        refused = client.post(f"/v1/invoices/{draft['id']}/finalize")
        still_draft = client.get(f"/v1/invoices/{draft['id']}").json()["status"]
        allowed = client.post(f"/v1/invoices/{draft['id']}/finalize", params={"allow_open_period": "true"})
    assert refused_run.status_code == 422 and "has not ended" in error_of(refused_run)["message"]
    assert nothing_written == []
    assert future_run.status_code == 422
    assert f"its first day is {coming.isoformat()}" in error_of(future_run)["message"]
    assert alone.status_code == 422 and error_of(alone)["field"] == "allow_open_period"
    assert preview.status_code == 201 and preview.json()["created"] == 1 and preview.json()["finalized"] == []
    assert refused.status_code == 422 and "nothing was finalized" in error_of(refused)["message"]
    assert still_draft == "draft"
    assert allowed.status_code == 200 and allowed.json()["status"] == "finalized"


def test_a_plan_change_over_http_ends_the_subscription_and_answers_the_new_one(live_api):
    """``billing subscriptions change`` had no route: ``POST /v1/subscriptions/{id}/change-plan`` ends the
    subscription the day before ``date`` (no churn reason) and answers 201 with the new subscription, which points
    back to it; the plan it has already, an unknown plan, a second change of the ended one are refused."""
    add_customer(live_api)
    old = subscribe(live_api, start=MONTH.start.isoformat())
    day = (MONTH.start + dt.timedelta(days=10)).isoformat()
    with live_api.client() as client:
        changed = client.post(f"/v1/subscriptions/{old['id']}/change-plan", json={"plan": "team", "date": day})
        ended = client.get(f"/v1/subscriptions/{old['id']}").json()
        located = client.get(changed.headers["location"]).json()
        again = client.post(f"/v1/subscriptions/{old['id']}/change-plan", json={"plan": "starter", "date": day})
        same = client.post(f"/v1/subscriptions/{changed.json()['id']}/change-plan", json={"plan": "team"})
        unknown = client.post(f"/v1/subscriptions/{changed.json()['id']}/change-plan", json={"plan": "gold"})
        missing = client.post("/v1/subscriptions/999999/change-plan", json={"plan": "team"})
    assert changed.status_code == 201, changed.text
    new = changed.json()
    assert (new["plan"], new["start_date"], new["previous_subscription_id"], new["status"]) == (
        "team", day, old["id"], "active"
    )
    assert located == new and changed.headers["location"] == f"/v1/subscriptions/{new['id']}"
    assert (ended["end_date"], ended["status"], ended["cancel_reason"]) == (day, "cancelled", None)
    assert again.status_code == 409, again.text
    assert same.status_code == 422 and error_of(same)["field"] == "plan"
    assert unknown.status_code == 422 and error_of(unknown)["field"] == "plan"
    assert missing.status_code == 404


def test_a_webhook_secret_is_rotated_over_http_and_shown_once(live_api):
    """``billing customers rotate-webhook-secret`` had no route: the answer carries the new secret (a customer read
    afterwards does not), which is not the one the create answered; a customer without a webhook_url is a 422."""
    with live_api.client() as client:
        created = client.post("/v1/customers", json={"external_id": "acme", "name": "Acme", "currency": "USD",
                                                     "webhook_url": "https://hooks.acme.example/b"})  # fmt: skip
        rotated = client.post("/v1/customers/acme/webhook_secret/rotate")
        read = client.get("/v1/customers/acme").json()
        add_customer(live_api, "beta")
        without = client.post("/v1/customers/beta/webhook_secret/rotate")
        unknown = client.post("/v1/customers/nobody/webhook_secret/rotate")
    first = created.json()["webhook_secret"]
    assert rotated.status_code == 200, rotated.text
    assert re.fullmatch(r"whsec_[0-9a-f]{48}", rotated.json()["webhook_secret"]) and rotated.json()["webhook_secret"] != first
    assert "webhook_secret" not in read
    assert without.status_code == 422 and "has no webhook_url" in error_of(without)["message"]
    assert unknown.status_code == 404


def test_notifications_are_listed_a_page_at_a_time_as_the_cli_lists_them(live_api):
    """``billing notifications list`` had no route: ``GET /v1/notifications`` walks them oldest first, forward and
    backward, by customer and by status, and each is the CLI's ``--json`` object."""
    from billing.cli._json import notification_json
    from billing.notify import list_notifications
    from billing.reactions import react_to_usage

    ids = many_customers(live_api, 5)
    for who in ids[:2]:  # 6 calls of an allowance of 5: two levels crossed at once, told in order (80, then 100)
        month_usage(live_api, who)
    react_to_usage(live_api.engine, live_api.catalog)
    bill_month(live_api)  # five invoices finalized: five notifications more, pending (nowhere to send them)
    with live_api.client() as client:
        whole = client.get("/v1/notifications").json()
        forward, cursor = [], {}
        while True:
            page = client.get("/v1/notifications", params={"limit": "2", **cursor}).json()
            forward += [n["id"] for n in page["data"]]
            if not page["has_more"]:
                break
            cursor = {"starting_after": page["data"][-1]["id"]}
        back = client.get("/v1/notifications", params={"limit": "2", "ending_before": forward[-1]}).json()
        one = client.get("/v1/notifications", params={"customer": ids[3]}).json()
        sent = client.get("/v1/notifications", params={"status": "sent"}).json()
        unknown = client.get("/v1/notifications", params={"starting_after": "nope"})
        bad_status = client.get("/v1/notifications", params={"status": "lost"})
    assert [n["id"] for n in whole["data"]] == forward and len(forward) == 9 and whole["has_more"] is False
    assert ([n["id"] for n in back["data"]], back["has_more"]) == (forward[6:8], True)
    assert [(n["kind"], n["customer"], n["level"]) for n in whole["data"][:4]] == [
        ("usage.threshold_crossed", ids[0], 80), ("usage.threshold_crossed", ids[0], 100),
        ("usage.threshold_crossed", ids[1], 80), ("usage.threshold_crossed", ids[1], 100),
    ]  # fmt: skip
    assert [(n["kind"], n["customer"], n["status"]) for n in one["data"]] == [("invoice.finalized", ids[3], "pending")]
    assert sent == {"data": [], "has_more": False}
    assert unknown.status_code == 422 and error_of(unknown)["field"] == "starting_after"
    assert bad_status.status_code == 422 and error_of(bad_status)["field"] == "status"
    assert whole["data"] == [notification_json(n) for n in list_notifications(live_api.engine)]  # in its order


def test_a_customers_own_limits_are_set_and_listed_over_http(live_api):
    """``billing customers set-limit`` had no route: ``PUT /v1/customers/{id}/limits`` sets an allowance or a spend
    cap (again: replaced), ``GET`` lists them by threshold; each invalid field is named."""
    add_customer(live_api)
    with live_api.client() as client:
        usage = client.put("/v1/customers/acme/limits", json={"meter": "api_calls", "allowance": "50000"})
        client.put("/v1/customers/acme/limits", json={"spend_cap": 700})
        spend = client.put("/v1/customers/acme/limits", json={"spend_cap": "500.00"})
        listed = client.get("/v1/customers/acme/limits").json()
        first = client.get("/v1/customers/acme/limits", params={"limit": "1"}).json()
        both = client.put("/v1/customers/acme/limits", json={"meter": "nope", "allowance": "-1", "spend_cap": "5"})
        neither = client.put("/v1/customers/acme/limits", json={})
        unknown = client.put("/v1/customers/nobody/limits", json={"spend_cap": "5"})
        notation = [client.put("/v1/customers/acme/limits", json={"spend_cap": cap}) for cap in ("1e3", "1_000",
                    "1e999999", "9" * 16)]  # fmt: skip
    assert usage.status_code == 200, usage.text
    assert usage.json() == {"customer": "acme", "threshold": "usage:api_calls", "kind": "usage", "meter": "api_calls",
                            "limit": "50000"}  # fmt: skip
    assert spend.json()["limit"] == "500.00"
    assert [(x["threshold"], x["limit"]) for x in listed["data"]] == [("spend", "500.00"), ("usage:api_calls", "50000")]
    assert ([x["threshold"] for x in first["data"]], first["has_more"]) == (["spend"], True)
    assert both.status_code == 422
    assert [e["field"] for e in both.json()["errors"]] == ["allowance", "meter", "meter", "allowance"]
    assert neither.status_code == 422 and error_of(neither)["field"] == "allowance"
    assert unknown.status_code == 404
    # plain decimal notation, bounded, as every amount of the API (1e999999 was stored, a 1 MB answer after)
    assert [(r.status_code, error_of(r)["field"]) for r in notation] == [(422, "spend_cap")] * 4


def test_the_usage_a_run_leaves_unbilled_is_read_over_http_as_the_cli_reads_it(live_api):
    """``billing usage unbilled`` had no route: ``GET /v1/unbilled-usage`` accounts a month's events without
    billing anything. acme's 8 events are rated; 2 of latecomer's 3 calls fall before its subscription starts on
    the 10th: 11 accepted = 9 rated + 2 unbilled."""
    from billing.run import usage_account
    from tests.billing.test_api import post_events

    add_customer(live_api)
    subscribe(live_api)
    month_usage(live_api)
    add_customer(live_api, "latecomer")
    subscribe(live_api, "latecomer", start=(MONTH.start + dt.timedelta(days=9)).isoformat())
    assert post_events(live_api, [event(f"late-{day}", "latecomer", day=day) for day in (3, 5, 12)]).json()["accepted"] == 3
    with live_api.client() as client:
        whole = client.get("/v1/unbilled-usage", params={"period": MONTH.label})
        one = client.get("/v1/unbilled-usage", params={"period": MONTH.label, "customer": "acme"})
        bad = client.get("/v1/unbilled-usage", params={"period": "2026-13"})
        invoices = client.get("/v1/invoices").json()
    assert whole.status_code == 200, whole.text
    body = whole.json()
    assert (body["accepted"], body["rated"], body["unbilled_events"]) == (11, 9, 2)
    assert [(g["customer"], g["meter"], g["reason"], g["events"]) for g in body["unbilled"]] == [
        ("latecomer", "api_calls", "before_start", 2)
    ]
    assert body == usage_account(live_api.engine, live_api.catalog, MONTH).as_dict()
    assert (one.json()["accepted"], one.json()["unbilled"]) == (8, [])
    assert bad.status_code == 422 and error_of(bad)["field"] == "period"
    assert invoices == {"data": [], "has_more": False}  # (nothing billed)
