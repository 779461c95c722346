"""``GET`` and ``PUT /v1/subscriptions/{id}/overrides`` over HTTP (SQLite and PostgreSQL): the versions as a page,
numbers read exactly, every invalid field named, a finalized period refused, Idempotency-Key honoured; and
``billing subscriptions override`` with ``--json``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing.cli import app as cli_app
from billing.run import run_billing
from tests.billing.test_api import (
    MONTH,
    add_customer,
    bill_month,
    error_of,
    event,
    live_api,
    month_usage,
    post_events,
    subscribe,
)

__all__ = ["live_api"]

pytestmark = pytest.mark.db

NEXT = MONTH.next()
DEAL = {
    "charges": [
        {
            "meter": "api_calls",
            "model": "graduated",
            "tiers": [{"up_to": 10, "unit_amount": 0}, {"up_to": "inf", "unit_amount": 0.1}],
        },
    ],
    "commitment": {"minimum": "5.00"},
}


def cli(*args: str):
    return CliRunner().invoke(cli_app, list(args))


def path(subscription: dict) -> str:
    return f"/v1/subscriptions/{subscription['id']}/overrides"


def test_a_negotiated_price_is_put_listed_and_prices_the_next_period(live_api):
    add_customer(live_api)
    subscription = subscribe(live_api)
    month_usage(live_api)
    bill_month(live_api)
    with live_api.client() as client:
        assert client.get(path(subscription)).json() == {"data": [], "has_more": False}
        created = client.put(path(subscription), json=DEAL)
        assert created.status_code == 201, created.text
        version = created.json()
        assert created.headers["Location"] == f"{path(subscription)}/{version['id']}"
        assert client.get(created.headers["Location"]).json() == version
        # the same tables from the same date again: nothing new, the version recorded, 200
        same = client.put(path(subscription), json=DEAL)
        assert (same.status_code, same.json(), same.headers["Location"]) == (200, version, created.headers["Location"])
        assert client.get(f"{path(subscription)}/{version['id'] + 100}").status_code == 404
        assert client.get(f"/v1/subscriptions/999/overrides/{version['id']}").status_code == 404
        # the default date: the first period not yet invoiced; numbers as decimal strings, exactly as sent
        assert version["effective_from"] == NEXT.start.isoformat()
        assert version["charges"][0]["tiers"][1] == {"up_to": "inf", "unit_amount": "0.1"}
        assert version["commitment"] == {"minimum": "5.00"}
        assert (version["subscription"], version["thresholds"]) == (None, None)
        later = client.put(path(subscription), json={"effective_from": NEXT.end.isoformat()})
        assert later.status_code == 201, later.text
        listed = client.get(path(subscription), params={"limit": 1}).json()
        rest = client.get(path(subscription), params={"starting_after": str(version["id"])}).json()
    assert listed == {"data": [version], "has_more": True}
    assert [v["effective_from"] for v in rest["data"]] == [NEXT.end.isoformat()] and not rest["has_more"]

    calls = [event(f"next-{i}", day=2) for i in range(14)]
    for item in calls:
        item["timestamp"] = f"{NEXT.start:%Y-%m}-02T12:00:00Z"
    assert post_events(live_api, calls).status_code == 200
    run_billing(live_api.engine, live_api.catalog, NEXT)
    with live_api.client() as client:
        invoices = client.get("/v1/invoices", params={"period": NEXT.label}).json()["data"]
        lines = client.get(f"/v1/invoices/{invoices[0]['id']}").json()["lines"]
    # the starter fee 10.00 in arrears; 14 calls negotiated: 10 × 0 + 4 × 0.1 = 0.40; commitment 5.00 − 0.40 = 4.60
    assert [(line["kind"], line["amount"]) for line in lines] == [
        ("subscription", "10.00"),
        ("usage", "0.40"),
        ("usage", "0.00"),
        ("commitment", "4.60"),
    ]
    assert lines[0]["section"] == "Starter (negotiated price)"  # the plan, marked; no internal id


def test_every_invalid_field_is_named_and_a_finalized_period_is_refused(live_api):
    add_customer(live_api)
    subscription = subscribe(live_api)
    bill_month(live_api)
    bad = {
        "charges": [
            {
                "meter": "api_calls",
                "model": "graduated",
                "tiers": [{"up_to": 10, "unit_amount": 0}, {"up_to": 5, "unit_amount": 1}, {"up_to": "inf"}],
            },
            {"meter": "sms", "model": "per_unit", "unit_amount": 1},
        ],
        "currency": "EUR",
    }
    with live_api.client() as client:
        invalid = client.put(path(subscription), json=bad)
        inside = client.put(path(subscription), json={"effective_from": MONTH.start.isoformat()})
        not_a_date = client.put(path(subscription), json={"effective_from": "soon"})
        unknown = client.put("/v1/subscriptions/999/overrides", json={})
    assert invalid.status_code == 422
    assert sorted(e["field"] for e in invalid.json()["errors"]) == [
        "charges[0].tiers[1].up_to",
        "charges[1].meter",
        "currency",
    ]
    assert error_of(inside) == {
        "code": "invalid_input",
        "message": f"effective_from: {MONTH.start.isoformat()} lies in a finalized period (invoiced through "
        f"{(MONTH.end - dt.timedelta(days=1)).isoformat()}); "
        f"the first period not yet invoiced begins {MONTH.end.isoformat()}",
        "field": "effective_from",
    }
    assert error_of(not_a_date)["field"] == "effective_from"
    assert unknown.status_code == 404


def test_a_put_with_an_idempotency_key_is_recorded_once(live_api):
    add_customer(live_api)
    subscription = subscribe(live_api)
    with live_api.client() as client:
        headers = {"Idempotency-Key": "deal-1"}
        first = client.put(path(subscription), json=DEAL, headers=headers)
        again = client.put(path(subscription), json=DEAL, headers=headers)
        listed = client.get(path(subscription)).json()
    assert first.status_code == again.status_code == 201
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json() == first.json()
    assert len(listed["data"]) == 1


def test_the_cli_records_an_override_file_and_prints_json(live_api, tmp_path: Path):
    add_customer(live_api)
    subscription = subscribe(live_api)
    bill_month(live_api)
    deal = tmp_path / "deal.toml"
    deal.write_text('[[charges]]\nmeter = "api_calls"\nmodel = "per_unit"\nunit_amount = 0.0079\n', encoding="utf-8")
    result = cli("subscriptions", "override", str(subscription["id"]), str(deal), "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["effective_from"] == NEXT.start.isoformat()
    assert shown["charges"] == [{"meter": "api_calls", "model": "per_unit", "unit_amount": "0.0079"}]
    deal.write_text('[[charges]]\nmeter = "api_calls"\nmodel = "per_unit"\nunit_amount = -1\n', encoding="utf-8")
    refused = cli("subscriptions", "override", str(subscription["id"]), str(deal), "--from", MONTH.start.isoformat())
    assert refused.exit_code == 1
    assert f"{deal}: charges[0].unit_amount: must be ≥ 0 (got -1)" in refused.stderr
    listed = cli("subscriptions", "overrides", str(subscription["id"]), "--json")
    assert [v["id"] for v in json.loads(listed.stdout)["data"]] == [shown["id"]]
