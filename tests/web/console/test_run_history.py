"""The history of billing runs, in the console and the API: two customers billed in October 2026 (the console's
fixture) — acme 12.00 (above the 11.00 approval limit: it waits), beta 10.50."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from billing import invoicing
from tests.web.console.conftest import Console

pytestmark = pytest.mark.db


def _run_october(client: TestClient, staff: str, **extra: str):
    return client.post("/console/runs", data={"period": "2026-10", "csrf_token": staff, **extra})


def test_each_console_run_is_recorded_with_who_ran_it_and_what_it_did(
    console: Console, client: TestClient, staff: str
):
    first = _run_october(client, staff)
    assert 'Recorded as <a href="/console/runs/1">run 1</a>' in first.text
    second = _run_october(client, staff, finalize="on")
    assert 'Recorded as <a href="/console/runs/2">run 2</a>' in second.text
    acme = next(i for i in invoicing.list_invoices(console.engine) if i.customer_id == "acme")
    beta = next(i for i in invoicing.list_invoices(console.engine) if i.customer_id == "beta")
    assert (str(acme.status), str(beta.status), beta.number) == ("draft", "finalized", "INV-2026-000001")

    page = client.get("/console/runs", params={"period": "2026-10"}).text
    history = page[page.index('id="run-history"'):]
    # the latest first: run 2 issued beta's invoice, found both drafts right; run 1 wrote them
    assert history.index('href="/console/runs/2"') < history.index('href="/console/runs/1"')
    assert history.count("console: Ada") == 2 and history.count("completed") == 2
    row_2 = history[history.index('href="/console/runs/2"'):history.index('href="/console/runs/1"')]
    assert "every customer, then finalize" in row_2
    assert '<td class="num">0</td><td class="num">0</td><td class="num">1</td><td class="num">0</td>' in row_2
    row_1 = history[history.index('href="/console/runs/1"'):]
    assert '<td class="num">2</td><td class="num">0</td><td class="num">0</td><td class="num">0</td>' in row_1
    assert "No run of 2026-09 recorded." in client.get("/console/runs", params={"period": "2026-09"}).text

    shown = client.get("/console/runs/2").text
    assert "Billing run 2: 2026-10" in shown and "console: Ada" in shown
    assert "<dt>Unchanged</dt><dd>2</dd>" in shown and "<dd>22.50 USD</dd>" in shown  # 12.00 + 10.50
    assert 'href="/console/invoices/INV-2026-000001">INV-2026-000001</a>' in shown
    assert "1 draft(s) were left waiting for approval." in shown  # acme's
    assert client.get("/console/runs/99").status_code == 404


def test_a_run_that_fails_is_recorded_with_why(client: TestClient, staff: str):
    refused = client.post("/console/runs", data={"period": "2099-01", "csrf_token": staff})
    assert refused.status_code == 422
    shown = client.get("/console/runs/1").text
    assert "<strong>failed</strong>: " in shown and "has not begun" in shown
    assert "2099-01" in client.get("/console/runs", params={"period": "2099-01"}).text
    # finalizing a period that has not ended is refused before it starts: no record
    finalizing = client.post("/console/approvals/finalize", data={"period": "2099-01", "csrf_token": staff})
    assert "Refused:" in finalizing.text and "has not begun" in finalizing.text
    assert client.get("/console/runs/2").status_code == 404
    assert client.get("/console/runs", params={"period": "0001-01"}).status_code == 400  # (was a 500)


def _api(client: TestClient, console: Console, method: str, url: str, **kwargs):
    return client.request(method, url, headers={"Authorization": f"Bearer {console.key}"}, **kwargs)


def test_the_api_records_its_runs_and_lists_every_run_a_page_at_a_time(console: Console, client: TestClient):
    made = _api(client, console, "POST", "/v1/billing-runs", json={"period": "2026-10"})
    assert made.status_code == 201, made.text
    assert made.headers["Location"] == "/v1/billing-runs/1"
    assert (made.json()["id"], made.json()["created"], made.json()["totals"]) == (1, 2, {"USD": "22.50"})
    beta = _api(client, console, "POST", "/v1/billing-runs", json={"period": "2026-10", "customer": "beta"}).json()
    assert (beta["id"], beta["unchanged"]) == (2, 1)

    first = _api(client, console, "GET", "/v1/billing-runs", params={"limit": 1}).json()
    assert first["has_more"] is True
    [run] = first["data"]
    assert (run["id"], run["source"], run["actor"], run["customer"], run["finalize"]) == (1, "api", "Ada", None, False)
    assert (run["outcome"], run["error"], run["label"]) == ("completed", None, "2026-10")
    assert run["report"]["created"] == 2 and run["report"]["totals"] == {"USD": "22.50"}
    assert run["started_at"].endswith("Z") and run["finished_at"] >= run["started_at"]

    after = _api(client, console, "GET", "/v1/billing-runs", params={"starting_after": 1}).json()
    assert ([r["id"] for r in after["data"]], after["has_more"]) == ([2], False)
    assert after["data"][0]["customer"] == "beta"
    before = _api(client, console, "GET", "/v1/billing-runs", params={"ending_before": 2}).json()
    assert ([r["id"] for r in before["data"]], before["has_more"]) == ([1], False)
    september = _api(client, console, "GET", "/v1/billing-runs", params={"period": "2026-09"}).json()
    assert september == {"data": [], "has_more": False}

    assert _api(client, console, "GET", "/v1/billing-runs/2").json() == after["data"][0]
    missing = _api(client, console, "GET", "/v1/billing-runs/3")
    assert (missing.status_code, missing.headers["content-type"]) == (404, "application/problem+json")
    unknown = _api(client, console, "GET", "/v1/billing-runs", params={"month": "2026-10"})
    assert unknown.status_code == 400 and "month" in unknown.text
    bad = _api(client, console, "GET", "/v1/billing-runs", params={"period": "October"})
    assert bad.status_code in (400, 422) and "period" in bad.text
