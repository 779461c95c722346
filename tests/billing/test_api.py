"""The HTTP API, served by a real uvicorn on 127.0.0.1 and called with httpx, on SQLite and PostgreSQL.

The catalog is a small TOML string; the usage is a few events; the amounts are worked out by hand below.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine
from typer.testing import CliRunner

from billing.api import create_app
from billing.apikeys import create_api_key, revoke_api_key
from billing.cli import app as cli_app
from billing.config import Settings, get_settings
from billing.core.metrics import JSON_KEYS
from billing.core.periods import month_of
from billing.db import make_engine
from billing.db.engines import dispose_engines
from billing.run import finalize_period, run_billing
from invoices.store import FinalizeSettings
from pricing_plans.loader import load_catalog_or_raise
from pricing_plans.models import Catalog
from tests.dates import ended_month

ROOT = Path(__file__).resolve().parents[2]

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
unit = "call"

[meters.compute_minutes]
name = "Compute minutes"
aggregation = "sum"
unit = "minute"

[plans.starter]
name = "Starter"
currency = "USD"
effective_from = 2025-01-01
subscription = { fee = 10.00, billing = "in_arrears" }
charges = [
  { meter = "api_calls", model = "graduated", tiers = [{ up_to = 3, unit_amount = 0 }, { up_to = "inf", unit_amount = 0.25 }] },
  { meter = "compute_minutes", model = "per_unit", unit_amount = 0.015 },
]
thresholds = [{ meter = "api_calls", allowance = 5, levels = [80, 100] }]

[plans.euro]
name = "Euro"
currency = "EUR"
effective_from = 2025-01-01
subscription = { fee = 5.00, billing = "in_arrears" }

[plans.team]
name = "Team"
currency = "USD"
effective_from = 2025-01-01
subscription = { fee = 10.00, billing = "in_advance", seats = true }
"""

MONTH = ended_month()
"""The month the usage below falls in and is billed: two months back, so that the API accepts its events and the run
bills and finalizes it whatever today is. The amounts do not depend on which month it is (the fee is billed in
arrears for the whole month, the events fall on days 1 to 6 and 20)."""


@dataclass
class LiveApi:
    """A running API: its base URL, the database behind it, the catalog, and a key that sees everything."""

    url: str
    engine: Engine
    catalog: Catalog
    key: str

    def client(self, key: str | None = None) -> httpx.Client:
        """An httpx client with ``Authorization: Bearer`` (``key`` default: the unbound key; "" for none)."""
        key = self.key if key is None else key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def _serve(app: object) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture
def live_api(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveApi]:
    """The API on a real uvicorn (a thread, a free port) over the test database and the catalog above."""
    catalog_path = tmp_path / "catalog.toml"
    catalog_path.write_text(CATALOG, encoding="utf-8")
    for key, value in {
        "BILLING_DATABASE_URL": db_url,
        "BILLING_CATALOG": str(catalog_path),
        "BILLING_CONFIG": str(ROOT / "config.toml"),
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    engine = make_engine(db_url)
    _, key = create_api_key(engine, "tests")
    app = create_app(Settings(database_url=db_url, catalog=str(catalog_path)))
    server, thread, url = _serve(app)
    try:
        yield LiveApi(url=url, engine=engine, catalog=load_catalog_or_raise(catalog_path), key=key)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        dispose_engines()
        engine.dispose()
        get_settings.cache_clear()


# -- helpers ---------------------------------------------------------------------------------------------


def add_customer(api: LiveApi, external_id: str = "acme", **fields: object) -> dict:
    body = {"external_id": external_id, "name": external_id.title(), "email": f"ap@{external_id}.example",
            "currency": "USD", "tax_rate": "19", **fields}
    with api.client() as client:
        response = client.post("/v1/customers", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def subscribe(
    api: LiveApi, customer: str = "acme", plan: str = "starter", start: str = MONTH.start.isoformat()
) -> dict:
    with api.client() as client:
        response = client.post("/v1/subscriptions", json={"customer": customer, "plan": plan, "start": start})
    assert response.status_code == 201, response.text
    return response.json()


def event(event_id: str, customer: str = "acme", meter: str = "api_calls", day: int = 5, **extra: object) -> dict:
    timestamp = f"{MONTH.start:%Y-%m}-{day:02d}T12:00:00Z"
    return {"id": event_id, "customer": customer, "meter": meter, "timestamp": timestamp, **extra}


def post_events(api: LiveApi, events: list) -> httpx.Response:
    with api.client() as client:
        return client.post("/v1/events", json={"events": events})


def month_usage(api: LiveApi, customer: str = "acme") -> None:
    """6 API calls (3 free, 3 × 0.25 = 0.75) and 12.5 + 7.5 = 20 compute minutes (× 0.015 = 0.30)."""
    events = [event(f"{customer}-call-{i}", customer, day=i + 1) for i in range(6)]
    events += [
        event(f"{customer}-min-1", customer, "compute_minutes", value="12.5"),
        event(f"{customer}-min-2", customer, "compute_minutes", day=20, value=7.5),
    ]
    response = post_events(api, events)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 8


def bill_month(api: LiveApi) -> list[str]:
    run_billing(api.engine, api.catalog, MONTH)
    return finalize_period(api.engine, MONTH, FinalizeSettings(), MONTH.end + dt.timedelta(days=2))


def error_of(response: httpx.Response) -> dict:
    """The problem (RFC 9457) of an error response, checked for its shape; ``field`` is the first invalid field."""
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body = response.json()
    assert set(body) == {"type", "title", "status", "detail", "code", "errors"}, body
    assert body["status"] == response.status_code and body["type"] == f"/problems/{body['code']}", body
    assert all(set(error) == {"field", "message"} for error in body["errors"]), body
    return {"code": body["code"], "message": body["detail"], "field": body["errors"][0]["field"] if body["errors"] else None}


# -- events ------------------------------------------------------------------------------------------------


def test_an_events_batch_tells_accepted_duplicate_and_rejected_apart(live_api):
    add_customer(live_api)
    batch = [
        event("e1"),
        event("e1"),  # the same event again, in the same batch
        event("e2", customer="nobody"),
        event("e3", meter="compute_minutes", value=0.1234567),  # a JSON number, read exactly: 7 decimals
        "not an event",
        event("e4", meter="compute_minutes", value=0.1),
        event("e1", day=6),  # the id of e1 with other content
    ]
    response = post_events(live_api, batch)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 1, 4)
    statuses = [(e["index"], e["id"], e["status"]) for e in body["events"]]
    assert statuses == [
        (0, "e1", "accepted"),
        (1, "e1", "duplicate"),
        (2, "e2", "rejected"),
        (3, "e3", "rejected"),
        (4, None, "rejected"),
        (5, "e4", "accepted"),
        (6, "e1", "rejected"),
    ]
    reasons = {e["index"]: e["reason"] for e in body["events"]}
    assert reasons[0] is None and reasons[1] is None
    assert "unknown customer 'nobody'" in reasons[2]
    assert "more than 6 decimal places" in reasons[3]
    assert "not an object" in reasons[4]
    assert "conflict" in reasons[6]

    again = post_events(live_api, [event("e1"), event("e4", meter="compute_minutes", value="0.10"), event("e5")])
    assert [e["status"] for e in again.json()["events"]] == ["duplicate", "duplicate", "accepted"]
    assert (again.json()["accepted"], again.json()["duplicates"]) == (1, 2)


def test_a_batch_that_is_not_a_batch_is_refused_with_the_field(live_api):
    too_many = {"events": [event(f"x{i}") for i in range(10_001)]}
    with live_api.client() as client:
        big = client.post("/v1/events", json=too_many)
        not_json = client.post("/v1/events", content=b"{nope", headers={"content-type": "application/json"})
        unknown = client.post("/v1/events", json={"evnts": []})
        not_a_list = client.post("/v1/events", json={"events": {"id": "e1"}})
    assert big.status_code == 422 and error_of(big) | {"message": ""} == {
        "code": "too_many_events", "field": "events", "message": ""
    }
    assert "at most 10,000 events" in error_of(big)["message"]
    assert not_json.status_code == 422 and error_of(not_json)["field"] == "body"
    assert unknown.status_code == 422 and error_of(unknown)["field"] == "evnts"
    assert not_a_list.status_code == 422 and error_of(not_a_list)["field"] == "events"


def test_lenient_numbers_repeated_keys_and_events_older_than_the_late_usage_window_are_rejected(live_api):
    """Each event of the body on its own line, written by hand: the duplicate key is in the text, not in a dict."""
    add_customer(live_api)
    now = dt.datetime.now(dt.UTC)
    when = now.replace(day=1, hour=12, minute=0, second=0, microsecond=0).isoformat()
    window_start = month_of(now.date()).start.replace(year=now.year - 1)  # the month 12 months back
    too_old = f"{(window_start - dt.timedelta(days=1)).isoformat()}T23:59:59Z"
    head = f'"customer": "acme", "meter": "compute_minutes", "timestamp": "{when}"'
    lines = [
        f'{{"id": "n1", {head}, "value": "1_000"}}',
        f'{{"id": "n2", {head}, "value": "\u0665"}}',
        f'{{"id": "n3", {head}, "value": " 5 "}}',
        f'{{"id": "d1", {head}, "value": 1, "id": "d2"}}',
        f'{{"id": "ok", {head}, "value": 1.5e3}}',
        '{"id": "y1", "customer": "acme", "meter": "api_calls", "timestamp": "0001-01-01T00:00:00Z"}',
        f'{{"id": "y2", "customer": "acme", "meter": "api_calls", "timestamp": "{too_old}"}}',
        f'{{"id": "z1", "customer": "ac\\u0000me", "meter": "api_calls", "timestamp": "{when}"}}',  # never sent to the database
    ]
    body = '{"events": [\n' + ",\n".join(lines) + "\n]}"
    with live_api.client() as client:
        response = client.post("/v1/events", content=body.encode(), headers={"content-type": "application/json"})
        twice = client.post(
            "/v1/events", content=b'{"events": [], "events": []}', headers={"content-type": "application/json"}
        )
    assert response.status_code == 200, response.text
    outcome = [(e["index"], e["id"], e["status"], e["reason"]) for e in response.json()["events"]]
    plain = "is not a number in plain decimal notation (like 1500 or -2.5)"
    assert outcome == [
        (0, "n1", "rejected", f"value '1_000' {plain}"),
        (1, "n2", "rejected", f"value '\u0665' {plain}"),
        (2, "n3", "rejected", f"value ' 5 ' {plain}"),
        (3, "d2", "rejected", "duplicate key 'id'"),
        (4, "ok", "accepted", None),
        (5, "y1", "rejected", "timestamp '0001-01-01T00:00:00Z' is out of range (before 1970-01-01T00:00:00+00:00)"),
        (6, "y2", "rejected", f"timestamp '{too_old}' is older than the late-usage window of customer 'acme', which "
         f"begins at {window_start.isoformat()}T00:00:00+00:00: usage that old is never billed"),
        (7, "z1", "rejected", "'customer' holds a NUL character or an invalid unicode escape"),
    ]
    assert twice.status_code == 422 and error_of(twice) == {
        "code": "invalid_request", "field": "events",
        "message": "events: duplicate key (a key may appear once in an object)",
    }


def test_a_draft_finalized_after_a_cancellation_is_rated_again_first(live_api):
    """A draft written while the subscription ran the whole month, then a cancellation on the 11th (its last day
    the 10th): finalizing it over HTTP issues the fee for 10 days, not the month's 10.00."""
    add_customer(live_api)
    sid = subscribe(live_api)["id"]
    run_billing(live_api.engine, live_api.catalog, MONTH)
    with live_api.client() as client:
        draft = client.get("/v1/invoices", params={"customer": "acme"}).json()["data"][0]
        before = client.get(f"/v1/invoices/{draft['id']}").json()
        end = (MONTH.start + dt.timedelta(days=10)).isoformat()
        assert client.post(f"/v1/subscriptions/{sid}/cancel", json={"date": end}).status_code == 200
        issued = client.post(f"/v1/invoices/{draft['id']}/finalize")
    assert issued.status_code == 200, issued.text
    fee = [line["amount"] for line in before["lines"] if line["kind"] == "subscription"]
    assert fee == ["10.00"]
    days = (MONTH.end - MONTH.start).days  # 10.00 × 10 days of the month's 28 to 31
    prorated = {28: "3.57", 29: "3.45", 30: "3.33", 31: "3.23"}[days]
    body = issued.json()
    assert (body["id"], body["status"]) == (draft["id"], "finalized")
    assert [line["amount"] for line in body["lines"] if line["kind"] == "subscription"] == [prorated]


def test_usage_posted_today_for_last_month_is_alerted_in_last_month(live_api):
    """13 API calls of last month, posted today, against an allowance of 5 (260 %): the reaction to that usage
    creates the 80 % and 100 % alerts, last month's. A customer whose invoice of last month is issued gets none."""
    from billing.notify import list_notifications
    from billing.reactions import react_to_usage

    today = dt.datetime.now(dt.UTC)
    last = month_of(today.date()).previous()
    for who in ("acme", "beta"):
        add_customer(live_api, who)
        subscribe(live_api, who, start=(last.start - dt.timedelta(days=40)).isoformat())
    run_billing(live_api.engine, live_api.catalog, last, customer="beta")
    assert len(finalize_period(live_api.engine, last, FinalizeSettings(), today.date(), customer="beta")) == 1

    when = f"{(last.start + dt.timedelta(days=9)).isoformat()}T12:00:00Z"
    events = [{"id": f"{who}-{i}", "customer": who, "meter": "api_calls", "timestamp": when}
              for who in ("acme", "beta") for i in range(13)]
    response = post_events(live_api, events)
    assert response.status_code == 200 and response.json()["accepted"] == 26, response.text

    def alerts() -> list[tuple[str, str, str | None, int | None, str]]:
        return [
            (n.customer, n.period, n.threshold_key, n.level, str(n.value))
            for n in list_notifications(live_api.engine)
            if n.kind == "usage.threshold_crossed"
        ]

    assert alerts() == []  # answered once stored: the evaluation runs behind the request (the serving reactor's)
    react_to_usage(live_api.engine, live_api.catalog)
    assert alerts() == [("acme", last.label, "usage:api_calls", 80, "13"), ("acme", last.label, "usage:api_calls", 100, "13")]


# -- customers and subscriptions ------------------------------------------------------------------------------


def test_customers_are_created_read_and_listed(live_api):
    created = add_customer(live_api, "acme", timezone="Europe/Berlin", address=["1 Main St", "Springfield"])
    assert created == {
        "external_id": "acme", "name": "Acme", "email": "ap@acme.example", "currency": "USD",
        "timezone": "Europe/Berlin", "locale": "en_US", "address": ["1 Main St", "Springfield"],
        "webhook_url": None, "tax_rate": "19", "country": None, "region": None, "tax_id": None,
        "tax_exempt_reason": None, "archived_at": None, "webhook_secret": None,
    }
    add_customer(live_api, "globex")
    with live_api.client() as client:
        assert client.get("/v1/customers/acme").json() == {k: v for k, v in created.items() if k != "webhook_secret"}
        assert [c["external_id"] for c in client.get("/v1/customers").json()["data"]] == ["acme", "globex"]
        missing = client.get("/v1/customers/nobody")
        duplicate = client.post("/v1/customers", json={"external_id": "acme", "name": "A", "currency": "USD"})
        invalid = client.post(
            "/v1/customers", json={"external_id": "x", "name": "X", "email": "not-mail", "currency": "EUX"}
        )
        extra = client.post("/v1/customers", json={"external_id": "y", "name": "Y", "currency": "USD", "vip": True})
        float_rate = client.post("/v1/customers", json={"external_id": "z", "name": "Z", "currency": "USD",
                                                        "tax_rate": 19.5})
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    assert duplicate.status_code == 409
    assert error_of(duplicate) == {
        "code": "already_exists", "message": "customer 'acme' already exists", "field": "external_id"
    }
    assert invalid.status_code == 422
    problem = error_of(invalid)
    assert problem["code"] == "invalid_input" and problem["field"] == "email"
    assert "email: expected an address" in problem["message"] and "currency: unknown currency 'EUX'" in problem["message"]
    assert [e["field"] for e in invalid.json()["errors"]] == ["email", "currency"]
    assert extra.status_code == 422 and error_of(extra)["field"] == "vip"
    assert float_rate.status_code == 422 and error_of(float_rate)["field"].startswith("tax_rate")


def test_a_customers_webhook_secret_is_returned_once_when_it_is_created(live_api):
    created = add_customer(live_api, "acme", webhook_url="https://hooks.acme.example/billing")
    secret = created["webhook_secret"]
    assert re.fullmatch(r"whsec_[0-9a-f]{48}", secret)
    assert add_customer(live_api, "globex", webhook_url="https://hooks.globex.example/b")["webhook_secret"] != secret
    with live_api.client() as client:
        read = client.get("/v1/customers/acme")
        listed = client.get("/v1/customers")
        schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert read.json()["webhook_url"] == "https://hooks.acme.example/billing"
    assert "webhook_secret" not in read.json() and "whsec_" not in read.text and "whsec_" not in listed.text
    assert "webhook_secret" in schema["CustomerCreatedOut"]["properties"]
    assert "webhook_secret" not in schema["CustomerOut"]["properties"]


def test_subscriptions_are_created_and_cancelled(live_api):
    add_customer(live_api)
    subscription = subscribe(live_api, start="2026-10-01")
    assert subscription | {"id": 0} == {
        "id": 0, "customer": "acme", "plan": "starter", "plan_version": 1, "start_date": "2026-10-01",
        "end_date": None, "status": "active", "cancel_reason": None, "previous_subscription_id": None,
        "quantity": 1, "quantities": [{"effective_from": "2026-10-01", "quantity": 1}],
    }
    sid = subscription["id"]
    with live_api.client() as client:
        overlapping = client.post("/v1/subscriptions", json={"customer": "acme", "plan": "starter", "start": "2026-11-01"})
        other_currency = client.post("/v1/subscriptions", json={"customer": "acme", "plan": "euro", "start": "2026-11-01"})
        unknown_plan = client.post("/v1/subscriptions", json={"customer": "acme", "plan": "gold", "start": "2026-11-01"})
        unknown_customer = client.post("/v1/subscriptions", json={"customer": "x", "plan": "starter", "start": "2026-11-01"})
        bad_date = client.post("/v1/subscriptions", json={"customer": "acme", "plan": "starter", "start": "2026-13-01"})
        cancelled = client.post(f"/v1/subscriptions/{sid}/cancel", json={"date": "2026-12-01", "reason": "voluntary"})
        again = client.post(f"/v1/subscriptions/{sid}/cancel", json={"date": "2026-12-01"})
        unknown = client.post("/v1/subscriptions/999999/cancel", json={"date": "2026-12-01"})
    assert overlapping.status_code == 409 and "overlaps" in error_of(overlapping)["message"]
    assert other_currency.status_code == 422 and error_of(other_currency)["field"] == "plan"
    assert unknown_plan.status_code == 422 and error_of(unknown_plan)["field"] == "plan"
    # (the body's customer is wrong, not the URL: a 422 naming it, as for an unknown plan)
    assert unknown_customer.status_code == 422 and error_of(unknown_customer) == {
        "code": "invalid_input", "message": "customer: unknown customer 'x'", "field": "customer"
    }
    assert bad_date.status_code == 422 and error_of(bad_date)["field"] == "start"
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["end_date"], cancelled.json()["cancel_reason"]) == (
        "cancelled", "2026-12-01", "voluntary"
    )
    assert again.status_code == 409 and "already cancelled" in error_of(again)["message"]
    assert unknown.status_code == 404


def test_seats_are_given_on_create_and_changed_by_date(live_api):
    add_customer(live_api)
    with live_api.client() as client:
        created = client.post(
            "/v1/subscriptions", json={"customer": "acme", "plan": "team", "start": "2026-10-01", "quantity": 5}
        )
        sid = created.json()["id"]
        not_per_seat = client.post(
            "/v1/subscriptions", json={"customer": "acme", "plan": "starter", "start": "2026-10-01", "quantity": 2}
        )
        zero = client.post(
            "/v1/subscriptions", json={"customer": "acme", "plan": "starter", "start": "2026-10-01", "quantity": 0}
        )
        headers = {"Idempotency-Key": "seats-8"}
        body = {"quantity": 8, "effective_from": "2026-10-11"}
        changed = client.post(f"/v1/subscriptions/{sid}/quantity", json=body, headers=headers)
        retried = client.post(f"/v1/subscriptions/{sid}/quantity", json=body, headers=headers)
        early = {"quantity": 3, "effective_from": "2026-09-30"}
        before_start = client.post(f"/v1/subscriptions/{sid}/quantity", json=early)
        unknown = client.post("/v1/subscriptions/999999/quantity", json={"quantity": 3})
        read = client.get(f"/v1/subscriptions/{sid}")
    assert created.status_code == 201 and created.headers["location"] == f"/v1/subscriptions/{sid}"
    assert (created.json()["quantity"], created.json()["quantities"]) == (
        5, [{"effective_from": "2026-10-01", "quantity": 5}]
    )
    assert not_per_seat.status_code == 422 and error_of(not_per_seat)["field"] == "quantity"
    assert "not priced per seat" in error_of(not_per_seat)["message"]
    assert zero.status_code == 422 and error_of(zero)["field"] == "quantity"
    assert changed.status_code == 200, changed.text
    assert changed.json()["quantity"] == 8
    assert changed.json()["quantities"] == [
        {"effective_from": "2026-10-01", "quantity": 5}, {"effective_from": "2026-10-11", "quantity": 8}
    ]
    assert retried.status_code == 200 and retried.json() == changed.json()
    assert read.json() == changed.json()
    assert before_start.status_code == 422 and error_of(before_start)["field"] == "date"
    assert unknown.status_code == 404


def test_cancelling_without_a_date_ends_the_subscription_today_in_the_customers_timezone(live_api):
    add_customer(live_api, timezone="Pacific/Kiritimati")
    sid = subscribe(live_api)["id"]
    with live_api.client() as client:
        response = client.post(f"/v1/subscriptions/{sid}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["end_date"] == dt.datetime.now(ZoneInfo("Pacific/Kiritimati")).date().isoformat()


# -- usage -------------------------------------------------------------------------------------------------


def test_usage_preview_is_the_invoice_the_run_writes(live_api):
    add_customer(live_api)
    sid = subscribe(live_api)["id"]
    month_usage(live_api)
    with live_api.client() as client:
        response = client.get("/v1/customers/acme/usage", params={"period": MONTH.label})
    assert response.status_code == 200, response.text
    usage = response.json()
    assert (usage["label"], usage["period"], usage["currency"]) == (
        MONTH.label, {"start": MONTH.start.isoformat(), "end": MONTH.end.isoformat()}, "USD"
    )
    assert [(m["meter"], m["quantity"], m["events"]) for m in usage["meters"]] == [
        ("api_calls", "6", 6),
        ("compute_minutes", "20", 2),
    ]
    assert usage["thresholds"] == [
        {"subscription_id": sid, "key": "usage:api_calls", "kind": "usage", "meter": "api_calls", "limit": "5",
         "value": "6", "percent": "120.0", "levels": [80, 100], "reached": [80, 100],
         "notified": usage["thresholds"][0]["notified"]},
    ]
    preview = usage["preview"]
    # fee 10.00 (in arrears, the whole month) + calls 3 × 0.25 + minutes 20 × 0.015 = 11.05; tax 19 % = 2.0995 → 2.10
    assert [(line["kind"], line["amount"]) for line in preview["lines"]] == [
        ("subscription", "10.00"), ("usage", "0.75"), ("usage", "0.30"),
    ]
    assert (preview["subtotal"], preview["tax_rate"], preview["tax"], preview["total"]) == (
        "11.05", "19", "2.10", "13.15"
    )

    bill_month(live_api)
    with live_api.client() as client:
        invoices = client.get("/v1/invoices", params={"customer": "acme", "period": MONTH.label}).json()["data"]
        invoice = client.get(f"/v1/invoices/{invoices[0]['id']}").json()
    assert [(line["kind"], line["amount"]) for line in invoice["lines"]] == [
        (line["kind"], line["amount"]) for line in preview["lines"]
    ]
    assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == ("11.05", "2.10", "13.15")


def test_usage_defaults_to_the_current_period_in_the_customers_timezone(live_api):
    add_customer(live_api, timezone="Asia/Tokyo")
    subscribe(live_api, start="2026-01-01")
    with live_api.client() as client:
        usage = client.get("/v1/customers/acme/usage").json()
        unknown = client.get("/v1/customers/nobody/usage")
        bad = client.get("/v1/customers/acme/usage", params={"period": "2026-13"})
    current = month_of(dt.datetime.now(ZoneInfo("Asia/Tokyo")).date())
    assert usage["label"] == current.label
    assert usage["preview"]["total"] == "11.90"  # the fee of 10.00 and its 19 % tax: no usage yet
    assert usage["thresholds"][0]["reached"] == []
    assert unknown.status_code == 404
    assert bad.status_code == 422 and error_of(bad)["field"] == "period"


# -- invoices and metrics ------------------------------------------------------------------------------------


def test_invoices_are_listed_read_as_json_and_as_pdf(live_api):
    add_customer(live_api)
    subscribe(live_api)
    month_usage(live_api)
    [number] = bill_month(live_api)
    with live_api.client() as client:
        listed = client.get("/v1/invoices").json()["data"]
        by_number = client.get(f"/v1/invoices/{number}")
        pdf = client.get(f"/v1/invoices/{number}/pdf")
        finalized = client.get("/v1/invoices", params={"status": "finalized"}).json()["data"]
        drafts = client.get("/v1/invoices", params={"status": "draft"}).json()["data"]
        missing = client.get("/v1/invoices/INV-1999-000001")
        missing_pdf = client.get("/v1/invoices/123456789/pdf")
        bad_status = client.get("/v1/invoices", params={"status": "open"})
    assert [(i["number"], i["customer"], i["status"], i["total"]) for i in listed] == [
        (number, "acme", "finalized", "13.15")
    ]
    assert listed == finalized and drafts == []
    assert by_number.status_code == 200
    invoice = by_number.json()
    assert (invoice["number"], invoice["currency"], invoice["period"]) == (
        number, "USD", {"start": MONTH.start.isoformat(), "end": MONTH.end.isoformat()}
    )
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    assert missing.status_code == 404 and missing_pdf.status_code == 404
    assert bad_status.status_code == 422 and error_of(bad_status)["field"] == "status"


def test_metrics_of_a_month(live_api):
    add_customer(live_api)
    subscribe(live_api)
    month_usage(live_api)
    bill_month(live_api)
    with live_api.client() as client:
        figures = client.get("/v1/metrics", params={"period": MONTH.label})
        missing = client.get("/v1/metrics")
        bad = client.get("/v1/metrics", params={"period": "0000-01"})
    assert figures.status_code == 200, figures.text
    assert figures.json()["has_more"] is False
    [row] = figures.json()["data"]
    assert tuple(row) == JSON_KEYS
    assert (row["period"], row["currency"], row["billed_revenue"], row["mrr_end"]) == (
        MONTH.label, "USD", "11.05", "10.00"
    )
    assert missing.status_code == 422 and error_of(missing)["field"] == "period"
    assert bad.status_code == 422 and error_of(bad)["field"] == "period"


# -- authentication and scoping ----------------------------------------------------------------------------


def test_requests_without_a_valid_key_get_401(live_api):
    old, revoked = create_api_key(live_api.engine, "old")
    revoke_api_key(live_api.engine, old.id)
    with httpx.Client(base_url=live_api.url, timeout=60) as client:
        responses = [
            client.get("/v1/customers"),
            client.get("/v1/customers", headers={"Authorization": "Basic dXNlcjpwYXNz"}),
            client.get("/v1/customers", headers={"Authorization": "Bearer bk_not-a-key"}),
            client.get("/v1/customers", headers={"Authorization": f"Bearer {revoked}"}),
            client.post("/v1/events", json={"events": []}),
        ]
        schema = client.get("/openapi.json")
    for response in responses:
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert error_of(response)["code"] == "unauthorized" and error_of(response)["field"] == "Authorization"
    assert schema.status_code == 200 and "/v1/events" in schema.json()["paths"]


def test_a_key_bound_to_a_customer_sees_only_that_customers_usage_and_invoices(live_api):
    for customer in ("acme", "globex"):
        add_customer(live_api, customer)
        subscribe(live_api, customer)
        month_usage(live_api, customer)
    acme_number, globex_number = bill_month(live_api)
    _, acme_key = create_api_key(live_api.engine, "acme portal", customer="acme")
    with live_api.client(acme_key) as client:
        own_usage = client.get("/v1/customers/acme/usage", params={"period": MONTH.label})
        own_invoices = client.get("/v1/invoices").json()["data"]
        own_invoice = client.get(f"/v1/invoices/{acme_number}")
        own_pdf = client.get(f"/v1/invoices/{acme_number}/pdf")
        hidden = [
            client.get(f"/v1/invoices/{globex_number}"),
            client.get(f"/v1/invoices/{globex_number}/pdf"),
            client.get("/v1/customers/globex/usage"),
            client.get("/v1/invoices", params={"customer": "globex"}),
            client.get("/v1/customers"),
            client.get("/v1/customers/acme"),
            client.post("/v1/customers", json={"external_id": "x", "name": "X", "currency": "USD"}),
            client.post("/v1/events", json={"events": [event("sneaky", "acme")]}),
            client.get("/v1/metrics", params={"period": MONTH.label}),
        ]
    assert own_usage.status_code == 200 and own_usage.json()["customer"] == "acme"
    assert [i["number"] for i in own_invoices] == [acme_number]
    assert own_invoice.status_code == 200 and own_pdf.content.startswith(b"%PDF")
    for response in hidden:
        assert response.status_code == 404, response.request.url
        assert error_of(response)["code"] == "not_found"
    with live_api.client() as client:  # the unbound key still sees both, and the sneaky event was not stored
        assert [i["number"] for i in client.get("/v1/invoices").json()["data"]] == [acme_number, globex_number]
        assert client.get("/v1/customers/acme/usage", params={"period": MONTH.label}).json()["meters"][0]["events"] == 6


def test_apikeys_commands_create_list_and_revoke(live_api):
    runner = CliRunner()
    created = runner.invoke(cli_app, ["apikeys", "create", "--name", "portal", "--customer", "acme"])
    assert created.exit_code == 1 and "unknown customer 'acme'" in created.stderr
    add_customer(live_api)
    created = runner.invoke(cli_app, ["apikeys", "create", "--name", "portal", "--customer", "acme"])
    assert created.exit_code == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("bk_") and len(key) > 40 and "not shown again" in created.stderr
    key_id = re.search(r"API key (\d+) \(portal, customer acme\)", created.stderr).group(1)
    listed = runner.invoke(cli_app, ["apikeys", "list"])
    assert listed.exit_code == 0 and "portal" in listed.stdout and key[:12] in listed.stdout
    assert key not in listed.stdout
    with live_api.client(key) as client:
        assert client.get("/v1/invoices").status_code == 200
        revoked = runner.invoke(cli_app, ["apikeys", "revoke", key_id])
        assert revoked.exit_code == 0, revoked.stderr
        assert client.get("/v1/invoices").status_code == 401
    assert runner.invoke(cli_app, ["apikeys", "revoke", "99"]).exit_code == 1
