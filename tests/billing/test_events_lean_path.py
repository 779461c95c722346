"""``POST /v1/events`` answers alike on its lean path and through the full stack (a request with an
``Idempotency-Key`` goes the full way): every variant of header, body and query below, status, headers that
matter and body compared."""

from __future__ import annotations

import uuid

import httpx
import pytest

from billing.apikeys import create_api_key
from tests.billing.test_api import add_customer, event, live_api  # noqa: F401 (the fixture)

VARIANTS = {
    "no key": ({}, b'{"events": []}', ""),
    "lowercase bearer": ({"Authorization": "bearer KEY"}, b'{"events": []}', ""),
    "uppercase bearer": ({"Authorization": "BEARER KEY"}, b'{"events": []}', ""),
    "basic scheme": ({"Authorization": "Basic KEY"}, b'{"events": []}', ""),
    "bearer without a key": ({"Authorization": "Bearer"}, b'{"events": []}', ""),
    "two spaces": ({"Authorization": "Bearer  KEY"}, b'{"events": []}', ""),
    "a key and more": ({"Authorization": "Bearer KEY more"}, b'{"events": []}', ""),
    "a key bound to a customer": ({"Authorization": "Bearer BOUND"}, b'{"events": []}', ""),
    "unknown key": ({"Authorization": "Bearer bk_nope"}, b'{"events": []}', ""),
    "charset": ({"Content-Type": "application/json; charset=utf-8"}, b'{"events": []}', ""),
    "no content type": ({"Content-Type": ""}, b'{"events": []}', ""),
    "text content type": ({"Content-Type": "text/plain"}, b'{"events": []}', ""),
    "empty body": ({}, b"", ""),
    "a list": ({}, b"[]", ""),
    "an object without events": ({}, b"{}", ""),
    "events not a list": ({}, b'{"events": 3}', ""),
    "not json": ({}, b"{", ""),
    "not utf-8": ({}, b'{"events": ["\xff"]}', ""),
    "a query parameter": ({}, b'{"events": []}', "limit=3"),
    "an empty query": ({}, b'{"events": []}', "x"),
    "one event": ({}, None, ""),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_lean_path_answers_as_the_full_stack(live_api, variant):  # noqa: F811
    add_customer(live_api)
    headers, body, query = VARIANTS[variant]
    headers = {"Content-Type": "application/json", **headers}
    if "Authorization" in headers:
        _, bound = create_api_key(live_api.engine, "bound", customer="acme")
        headers["Authorization"] = headers["Authorization"].replace("KEY", live_api.key).replace("BOUND", bound)
    if not headers["Content-Type"]:
        del headers["Content-Type"]
    answers = []
    for idempotency in (None, str(uuid.uuid4())):
        sent = dict(headers)
        if idempotency:
            sent["Idempotency-Key"] = idempotency
        content = body
        if content is None:
            content = httpx.Request("POST", "/", json={"events": [event(f"e-{idempotency}")]}).content
        client = live_api.client("" if "Authorization" in headers or variant == "no key" else None)
        with client:
            response = client.post("/v1/events" + (f"?{query}" if query else ""), content=content, headers=sent)
        kept = {name: response.headers.get(name) for name in ("content-type", "www-authenticate")}
        answer = response.json()
        for told in answer.get("events", []) if isinstance(answer, dict) else []:
            told["id"] = "an id of its own"  # each path stores an event of its own
        answers.append((response.status_code, kept, answer))
    lean, full = answers
    assert lean == full
