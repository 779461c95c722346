"""The finance console held to its promises: every form refused without its CSRF token (the routes enumerated, not
listed by hand), no page read that changes what is stored, no sign-in that leads to another site, a payment, a
credit note or a credit grant sent twice done once, amounts parsed as Decimals with errors that name the field,
parameters that do not parse answered with a page (never a server error), customer text escaped, the actions an
invoice offers decided by the services, and the metrics dashboard's figures equal to ``billing metrics``'.
SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from billing import credits, customers, invoicing, payments
from billing.apikeys import create_api_key
from billing.cli import app as cli
from billing.config import get_settings
from billing.db import session_scope
from billing.db.metadata import ALL_METADATA
from billing.notify import list_notifications
from billing.run import run_billing
from billing.web.console.base import templates
from invoices.model import InvoiceKind, InvoiceStatus
from invoices.store import FinalizeSettings
from pricing_plans.loader import load_catalog_or_raise
from tests.web.console.conftest import CATALOG, OCTOBER, Console, csrf_of, nonce_of, sign_in

pytestmark = pytest.mark.db

NOTICE = re.compile(r'<div class="notice (?:ok|error)"[^>]*>(.*?)</div>', re.S)


def _notice(text: str) -> str:
    found = NOTICE.search(text)
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).strip() if found else ""


def _issued(console: Console) -> list:
    """acme's invoice INV-2026-000001 (12.00 USD) and beta's INV-2026-000002 (10.50 USD), issued 2 November."""
    run_billing(console.engine, console.catalog, OCTOBER)
    drafts = invoicing.list_invoices(console.engine, status="draft")
    return [invoicing.finalize_invoice(console.engine, d.id, FinalizeSettings(), dt.date(2026, 11, 2)) for d in drafts]


def _stored(console: Console) -> dict[str, list[str]]:
    """Every row of every table, as text: what a request must leave alone."""
    found: dict[str, list[str]] = {}
    with session_scope(console.engine) as session:
        for metadata in ALL_METADATA:
            for table in metadata.sorted_tables:
                found[table.name] = sorted(repr(tuple(row)) for row in session.execute(select(table)))
    return found


def _routes(console: Console, method: str) -> list[str]:
    """The paths of the console's routes that answer ``method``, found in its application (included routers
    too), not listed by hand."""
    [mount] = [r for r in console.app.routes if getattr(r, "path", "") == "/console"]

    def walk(routes: list) -> list[APIRoute]:
        found = []
        for route in routes:
            inner = getattr(route, "original_router", None)
            found += walk(inner.routes) if inner is not None else [route] if isinstance(route, APIRoute) else []
        return found

    return sorted({"/console" + r.path for r in walk(mount.app.routes) if method in (r.methods or ())})


def _filled(console: Console, path: str, invoice_id: int) -> str:
    [sub] = customers.list_subscriptions(console.engine, "acme")
    notification = list_notifications(console.engine)[0]
    return (
        path.replace("{invoice_id}", str(invoice_id))
        .replace("{external_id}", "acme")
        .replace("{subscription_id}", str(sub.id))
        .replace("{notification_id}", str(notification.id))
    )


# a form that would change something on every route, but for its CSRF token
EVERYTHING = {
    "period": "2026-10", "finalize": "on", "amount": "1.00", "method": "cash", "reason": "x", "currency": "USD",
    "code": "WELCOME", "plan": "starter", "start": "2026-12-01", "quantity": "2", "effective_from": "2026-11-01",
    "name": "Changed", "review": "on", "note": "x", "form_nonce": "n-1",
    "document": '[[charges]]\nmeter = "api_calls"\nmodel = "per_unit"\nunit_amount = 0.25\n',
}  # fmt: skip


# -- CSRF, state-changing reads, sign-in -----------------------------------------------------------------------


def test_every_form_route_refuses_a_post_without_the_sessions_token_and_changes_nothing(
    console: Console, client: TestClient, staff: str
):
    acme, _ = _issued(console)
    posts = _routes(console, "POST")
    assert len(posts) >= 17 and "/console/invoices/{invoice_id}/payments" in posts  # found, not listed by hand
    other = sign_in(TestClient(console.app, base_url="http://testserver"), create_api_key(console.engine, "Bob")[1])
    before = _stored(console)
    for path in posts:
        url = _filled(console, path, acme.id)
        for token in (None, "", other, staff[:-1] + ("1" if staff[-1] == "0" else "0")):
            data = dict(EVERYTHING, api_key=console.key) | ({} if token is None else {"csrf_token": token})
            answer = client.post(url, data=data, follow_redirects=False)
            assert answer.status_code == 403, (path, token, answer.status_code)
    assert _stored(console) == before


def test_no_page_read_changes_what_is_stored(console: Console, client: TestClient, staff: str):
    acme, _ = _issued(console)
    gets = _routes(console, "GET")
    assert "/console/invoices/{invoice_id}/pdf" in gets and "/console/metrics" in gets
    before = _stored(console)
    for path in gets:
        answer = client.get(_filled(console, path, acme.id), params={"period": "2026-10", "account": "true"})
        assert answer.status_code < 500, path
    assert _stored(console) == before


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "\\\\evil.example",
        "/\\evil.example",
        "/console/\\evil.example",
        "/console\\..\\\\evil.example",
        "https://evil.example/console/runs",
        "/console@evil.example",
        "/\t/evil.example",
        "javascript:alert(1)",
    ],
)
def test_sign_in_never_leads_to_another_site(console: Console, client: TestClient, target: str):
    page = client.get("/console/login", params={"next": target})
    assert re.search(r'name="next" value="(/console/[^"]*)"', page.text)
    answer = client.post(
        "/console/login",
        data={"api_key": console.key, "csrf_token": csrf_of(page.text), "next": target},
        follow_redirects=False,
    )
    location = answer.headers["location"]
    assert answer.status_code == 303 and location.startswith("/console/") and "\\" not in location
    assert urlsplit(location).netloc == "" and urlsplit(location).scheme == ""


def test_signing_in_again_opens_a_new_session_whatever_cookie_came_with_it(console: Console, client: TestClient):
    client.cookies.set("billing_console", "bs_planted-by-someone-else", path="/console")
    page = client.get("/console/login")
    answer = client.post(
        "/console/login", data={"api_key": console.key, "csrf_token": csrf_of(page.text)}, follow_redirects=False
    )
    assert answer.status_code == 303
    assert "bs_planted-by-someone-else" not in answer.headers["set-cookie"]


# -- sent twice ------------------------------------------------------------------------------------------------


def test_a_payment_sent_twice_is_recorded_once(console: Console, client: TestClient, staff: str):
    acme, _ = _issued(console)
    page = f"/console/invoices/{acme.id}"
    form = {"csrf_token": staff, "form_nonce": nonce_of(client, page), "amount": "5.00", "method": "bank_transfer"}
    first = client.post(f"{page}/payments", data=form)
    assert _notice(first.text) == "Payment of 5.00 USD recorded against INV-2026-000001."
    again = client.post(f"{page}/payments", data=form)  # a double click, a resent request
    assert _notice(again.text) == (
        "Payment of 5.00 USD recorded against INV-2026-000001. (This form was sent twice; it was done once.)"
    )
    assert [str(p.amount) for p in payments.list_payments(console.engine, invoice=acme.number)] == ["5.00"]
    assert str(invoicing.get_invoice(console.engine, acme.id).amount_due) == "7.00"  # 12.00 − 5.00
    # the page shown again is a new form: a second payment of the same amount is a payment of its own
    client.post(f"{page}/payments", data=form | {"form_nonce": nonce_of(client, page)})
    assert [str(p.amount) for p in payments.list_payments(console.engine, invoice=acme.number)] == ["5.00", "5.00"]


def test_a_payment_without_its_form_nonce_is_refused(console: Console, client: TestClient, staff: str):
    acme, _ = _issued(console)
    answer = client.post(
        f"/console/invoices/{acme.id}/payments", data={"csrf_token": staff, "amount": "5.00", "method": "cash"}
    )
    assert _notice(answer.text) == "Refused: form_nonce: missing; reload the page and send the form again"
    assert payments.list_payments(console.engine, invoice=acme.number) == []


def test_a_refused_form_sent_again_is_checked_again(console: Console, client: TestClient, staff: str):
    acme, _ = _issued(console)
    page = f"/console/invoices/{acme.id}"
    form = {"csrf_token": staff, "form_nonce": nonce_of(client, page), "amount": "5.001", "method": "cash"}
    for _ in range(2):
        assert "in whole minor units of USD (got 5.001)" in _notice(client.post(f"{page}/payments", data=form).text)
    assert payments.list_payments(console.engine, invoice=acme.number) == []


def test_a_nonce_used_for_another_form_is_refused(console: Console, client: TestClient, staff: str):
    acme, beta = _issued(console)
    nonce = nonce_of(client, f"/console/invoices/{acme.id}")
    client.post(f"/console/invoices/{acme.id}/payments", data={"csrf_token": staff, "form_nonce": nonce, "amount": "1.00", "method": "cash"})  # fmt: skip
    other = client.post(
        f"/console/invoices/{beta.id}/payments",
        data={"csrf_token": staff, "form_nonce": nonce, "amount": "1.00", "method": "cash"},
    )
    assert (
        _notice(other.text) == "Refused: This page was used for another form already: reload it. Nothing was changed."
    )
    assert payments.list_payments(console.engine, invoice=beta.number) == []


def test_a_credit_note_and_a_credit_grant_sent_twice_are_done_once(console: Console, client: TestClient, staff: str):
    acme, _ = _issued(console)
    note = {"csrf_token": staff, "form_nonce": nonce_of(client, "/console/runs"), "amount": "2.00", "reason": "outage"}
    for _ in range(2):
        done = _notice(client.post(f"/console/invoices/{acme.id}/credit-notes", data=note).text)
        assert done.startswith("Credit note CN-2026-000001 of 2.00 USD issued against INV-2026-000001."), done
    listed = invoicing.invoices_page(console.engine, limit=100)[0]
    assert [i.number for i in listed if i.kind is InvoiceKind.CREDIT_NOTE] == ["CN-2026-000001"]
    grant = {"csrf_token": staff, "form_nonce": nonce_of(client, "/console/runs"), "amount": "25.00", "currency": "USD"}
    for _ in range(2):
        client.post("/console/customers/beta/credits", data=grant)
    [usd] = credits.balance(console.engine, "beta")
    assert str(usd.free) == "25.00"


def test_finalize_sent_twice_says_it_was_issued(console: Console, client: TestClient, staff: str):
    run_billing(console.engine, console.catalog, OCTOBER)
    beta = next(i for i in invoicing.list_invoices(console.engine) if i.customer_id == "beta")
    form = {"csrf_token": staff, "form_nonce": nonce_of(client, f"/console/invoices/{beta.id}")}
    client.post(f"/console/invoices/{beta.id}/finalize", data=form)
    again = client.post(f"/console/invoices/{beta.id}/finalize", data=form)
    assert _notice(again.text).startswith("Invoice INV-2026-000001 issued.")  # not "Refused: … is finalized"


# -- money and fields in forms -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "notice"),
    [
        ("12.5", "Payment of 12.50 USD recorded against INV-2026-000001."),  # 12.5 is 12.50
        (" 1.00 ", "Payment of 1.00 USD recorded against INV-2026-000001."),
        (
            "-1.00",
            "Refused: --amount: expected a positive amount below 1,000,000,000,000,000 in whole minor units of USD (got -1.00)",
        ),
        (
            "0.001",
            "Refused: --amount: expected a positive amount below 1,000,000,000,000,000 in whole minor units of USD (got 0.001)",
        ),
        ("12,50", "Refused: amount: expected a decimal amount such as 30.00, got '12,50'"),
        ("1,000.00", "Refused: amount: expected a decimal amount such as 30.00, got '1,000.00'"),
        ("1e3", "Refused: amount: expected a decimal amount such as 30.00, got '1e3'"),
        ("1_0", "Refused: amount: expected a decimal amount such as 30.00, got '1_0'"),
        ("١٢", "Refused: amount: expected a decimal amount such as 30.00, got '١٢'"),  # Arabic-Indic digits
        ("NaN", "Refused: amount: expected a decimal amount such as 30.00, got 'NaN'"),
        ("", "Refused: amount: expected a decimal amount such as 30.00, got ''"),
    ],
)
def test_payment_amounts_are_exact_decimals_or_refused_naming_the_field(
    console: Console, client: TestClient, staff: str, amount: str, notice: str
):
    acme, _ = _issued(console)
    page = f"/console/invoices/{acme.id}"
    form = {"csrf_token": staff, "form_nonce": nonce_of(client, page), "amount": amount, "method": "cash"}
    assert _notice(client.post(f"{page}/payments", data=form).text) == notice
    recorded = [p.amount for p in payments.list_payments(console.engine, invoice=acme.number)]
    assert all(isinstance(a, Decimal) for a in recorded) and len(recorded) == (0 if "Refused" in notice else 1)


def test_a_yen_amount_with_decimals_is_refused(console: Console, client: TestClient, staff: str):
    customers.create_customer(console.engine, "nihon", "Nihon KK", None, "JPY", "Asia/Tokyo")
    grant = {"csrf_token": staff, "form_nonce": nonce_of(client, "/console/runs"), "amount": "150.5", "currency": "JPY"}
    answer = client.post("/console/customers/nihon/credits", data=grant)
    assert "in whole minor units of JPY (got 150.5)" in _notice(answer.text)
    assert [b.grants for b in credits.balance(console.engine, "nihon")] == [()]


@pytest.mark.parametrize(
    ("path", "form", "notice"),
    [
        ("/invoices/{acme}/payments", {"amount": "1.00", "method": "cash", "received_on": "2026-13-01"},
         "Refused: received on: expected a date YYYY-MM-DD, got '2026-13-01'"),
        ("/customers/beta/subscriptions", {"plan": "team", "start": "", "quantity": "1"},
         "Refused: starting: required, a date YYYY-MM-DD"),
        ("/customers/beta/subscriptions", {"plan": "team", "start": "2026-11-01", "quantity": "three"},
         "Refused: seats: expected a whole number, got 'three'"),
        ("/subscriptions/{sub}/quantity", {"quantity": "x", "effective_from": "2026-11-01"},
         "Refused: seats: expected a whole number, got 'x'"),
        ("/subscriptions/{sub}/quantity", {"quantity": "2", "effective_from": "1.11.2026"},
         "Refused: from: expected a date YYYY-MM-DD, got '1.11.2026'"),
        ("/customers/beta/credits", {"amount": "1.00", "currency": "USD", "expires": "soon"},
         "Refused: expires: expected a date YYYY-MM-DD, got 'soon'"),
    ],
)  # fmt: skip
def test_dates_and_numbers_that_do_not_parse_are_refused_naming_the_field(
    console: Console, client: TestClient, staff: str, path: str, form: dict[str, str], notice: str
):
    acme, _ = _issued(console)
    [sub] = customers.list_subscriptions(console.engine, "acme")
    url = "/console" + path.format(acme=acme.id, sub=sub.id)
    before = _stored(console)
    answer = client.post(url, data=form | {"csrf_token": staff, "form_nonce": nonce_of(client, "/console/runs")})
    assert _notice(answer.text) == notice
    after = _stored(console)
    assert {k: v for k, v in after.items() if k != "staff_sessions"} == {
        k: v for k, v in before.items() if k != "staff_sessions"
    }


# -- parameters, pages -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("/console/invoices?after=abc", "after: expected a whole number"),
        ("/console/invoices?after=99999999999999999999", "after: expected a whole number"),
        ("/console/invoices?before=-5", "before: expected a whole number"),
        ("/console/invoices?period=2026-13", "period:"),
        ("/console/invoices/abc/pdf", "invoice_id: expected a whole number"),
        ("/console/subscriptions/99999999999999999999/overrides", "subscription_id: expected a whole number"),
        ("/console/runs?period=October", "period:"),
        ("/console/metrics?period=2026-1", "period:"),
    ],
)
def test_parameters_that_do_not_parse_are_a_page_that_says_why(
    console: Console, client: TestClient, staff: str, url: str, words: str
):
    answer = client.get(url)
    assert answer.status_code == 400 and answer.headers["content-type"].startswith("text/html")
    assert words in answer.text
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


def test_error_pages_carry_the_security_headers(client: TestClient, staff: str):
    for url, status in (("/console/invoices/999999", 404), ("/console/invoices?status=lost", 400)):
        answer = client.get(url)
        assert answer.status_code == status
        assert answer.headers["cache-control"] == "no-store" and answer.headers["x-frame-options"] == "DENY"
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert "base-uri 'none'" in answer.headers["content-security-policy"]  # no injected <base> moves a form
    refused = client.post("/console/runs", data={"period": "2026-10"})
    assert refused.status_code == 403 and "frame-ancestors 'none'" in refused.headers["content-security-policy"]


def test_a_form_of_too_many_fields_or_bytes_is_a_400_page_before_any_check(client: TestClient):
    """201 fields to the sign-in form was a plain-text 500 with a traceback in the log (the parser's limit)."""
    headers = {"content-type": "application/x-www-form-urlencoded"}
    many = client.post("/console/login", content="&".join(f"f{i}=x" for i in range(201)), headers=headers)
    large = client.post("/console/login", content="a=" + "x" * 300_000, headers=headers)
    for answer, words in ((many, "the form has more than 200 fields"), (large, "the form is too large")):
        assert (answer.status_code, answer.headers["content-type"].split(";")[0]) == (400, "text/html")
        assert words in answer.text


def test_finalizing_a_period_that_does_not_parse_goes_back_to_approvals(client: TestClient, staff: str):
    answer = client.post(
        "/console/approvals/finalize",
        data={"csrf_token": staff, "period": "2026-1x&status=void", "form_nonce": "n-2"},
        follow_redirects=False,
    )
    assert (answer.status_code, answer.headers["location"]) == (303, "/console/approvals")
    page = client.get("/console/approvals")
    assert page.status_code == 200 and "Refused: period:" in _notice(page.text)


def test_a_run_asked_to_finalize_an_open_period_is_refused_and_writes_nothing(
    console: Console, client: TestClient, staff: str
):
    today = dt.datetime.now(dt.UTC).date()
    answer = client.post("/console/runs", data={"csrf_token": staff, "period": f"{today:%Y-%m}", "finalize": "on"})
    assert answer.status_code == 422 and "has not ended" in answer.text
    assert invoicing.list_invoices(console.engine) == []


def test_customer_text_is_escaped_on_every_page(console: Console, client: TestClient, staff: str):
    customers.update_customer(console.engine, "acme", {"name": "<script>alert(1)</script>"})
    _issued(console)
    for url in (
        "/console/customers",
        "/console/customers/acme",
        "/console/invoices/1",
        "/console/metrics?period=2026-10",
    ):
        text = client.get(url).text
        assert "<script>alert(1)" not in text, url
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get("/console/customers/acme").text


# -- invoices: what can be done --------------------------------------------------------------------------------


def test_an_invoice_offers_what_the_services_allow(console: Console, client: TestClient, staff: str):
    acme, beta = _issued(console)
    invoicing.set_invoice_status(console.engine, acme.id, InvoiceStatus.UNCOLLECTIBLE)
    page = client.get(f"/console/invoices/{acme.id}").text  # a late payment recovers an uncollectible invoice
    assert "Record payment" in page and "Void invoice" in page and "Issue credit note" in page
    payments.record_payment(console.engine, beta.id, Decimal("10.50"), method="cash")
    page = client.get(f"/console/invoices/{beta.id}").text  # paid: voiding it is refused by the services
    assert "Record payment" not in page and "Void invoice" not in page and "Issue credit note" in page
    assert invoicing.invoice_actions(invoicing.get_invoice(console.engine, beta.id)) == {"credit_note"}
    paid = client.post(
        f"/console/invoices/{acme.id}/payments",
        data={
            "csrf_token": staff,
            "form_nonce": nonce_of(client, "/console/runs"),
            "amount": "12.00",
            "method": "cash",
        },
    )
    assert _notice(paid.text) == "Payment of 12.00 USD recorded against INV-2026-000001."
    assert invoicing.get_invoice(console.engine, acme.id).status is InvoiceStatus.PAID


# -- metrics ---------------------------------------------------------------------------------------------------


YEARLY = """
[plans.yearly]
name = "Yearly"
currency = "USD"
interval = "year"
effective_from = 2025-01-01
subscription = { fee = 12.30, billing = "in_advance" }
"""


def test_the_dashboards_figures_are_those_of_billing_metrics(
    console: Console, client: TestClient, staff: str, cli_env, monkeypatch: pytest.MonkeyPatch
):
    """A yearly fee of 12.30 is an MRR of 1.025 (12.30 / 12): ``billing metrics`` rounds it half up to 1.03."""
    Path(console.settings.catalog).write_text(CATALOG + YEARLY, encoding="utf-8")
    catalog = load_catalog_or_raise(console.settings.catalog)
    customers.create_customer(console.engine, "gamma", "Gamma", None, "USD", "UTC")
    customers.subscribe(console.engine, catalog, "gamma", "yearly", OCTOBER.start)
    _issued(console)
    monkeypatch.setenv("BILLING_CATALOG", str(console.settings.catalog))
    get_settings.cache_clear()
    result = CliRunner().invoke(cli, ["metrics", "--period", "2026-10", "--json"])
    assert result.exit_code == 0, result.output
    [usd] = json.loads(result.stdout)["data"]
    page = client.get("/console/metrics", params={"period": "2026-10"}).text
    row = re.search(r"<tr><td>2026-10</td>(.*?)</tr>", page).group(1)
    cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r'<td class="num">(.*?)</td>', row)]
    names = ("mrr_start", "mrr_new", "mrr_reactivation", "mrr_expansion", "mrr_contraction", "mrr_churned",
             "mrr_end", "customers_end", "customer_churn_rate", "nrr", "billed_revenue")  # fmt: skip
    expected = []
    for name in names:
        value = usd[name]
        if name.startswith(("mrr", "billed")):
            value += " USD"
        elif name in ("customer_churn_rate", "nrr"):
            value = "—" if value == "n/a" else value + " %"
        expected.append(value)
    assert cells == expected
    assert usd["mrr_end"] == "21.03"  # 10.00 + 10.00 + 1.025, half up


def test_percentages_and_amounts_round_half_up_as_the_command_does():
    money, percent = templates.filters["money"], templates.filters["percent"]
    assert percent(Decimal("0.0625")) == "6.3 %"  # 6.25 % half up (half even would say 6.2)
    assert percent(Decimal("-0.0001")) == "0.0 %"  # never "-0.0"
    assert money(Decimal("1.025"), "USD") == "1.03 USD"  # half even would say 1.02
    assert money(Decimal("1500"), "JPY") == "1500 JPY" and money(None, "USD") == "—"


def test_a_payment_sent_twice_at_once_is_recorded_once(console: Console, console_url: str):
    """Two requests with one form at the same moment (a double click on a real server): one records the payment,
    the other finds the form taken and changes nothing."""
    import threading

    import httpx

    acme, _ = _issued(console)
    with httpx.Client(base_url=console_url, timeout=60) as browser:
        login = browser.get("/console/login")
        browser.post("/console/login", data={"api_key": console.key, "csrf_token": csrf_of(login.text)})
        page = browser.get(f"/console/invoices/{acme.id}").text
        form = {"csrf_token": csrf_of(page), "form_nonce": re.search(r'name="form_nonce" value="([^"]+)"', page).group(1),
                "amount": "12.00", "method": "bank_transfer"}  # fmt: skip
        cookies = dict(browser.cookies)
    start = threading.Barrier(2)
    answers: list[int] = []

    def click() -> None:
        with httpx.Client(base_url=console_url, cookies=cookies, timeout=60) as tab:
            start.wait()
            answers.append(tab.post(f"/console/invoices/{acme.id}/payments", data=form).status_code)

    clicks = [threading.Thread(target=click) for _ in range(2)]
    for thread in clicks:
        thread.start()
    for thread in clicks:
        thread.join()
    assert sorted(answers) == [303, 303]
    assert [str(p.amount) for p in payments.list_payments(console.engine, invoice=acme.number)] == ["12.00"]


def test_a_customer_id_with_a_question_mark_lands_on_its_own_page(console: Console, client: TestClient, staff: str):
    """``a?b`` is a customer id; the search and every form went back to ``/console/customers/a?b``, the page of
    customer ``a`` (the flag was set on ``a?b``, the notice shown over ``a``'s page)."""
    customers.create_customer(console.engine, "a?b", "Question Inc.", None, "USD", "UTC")
    customers.create_customer(console.engine, "a", "Plain Inc.", None, "USD", "UTC")
    found = client.get("/console/customers", params={"q": "a?b"}, follow_redirects=False)
    assert found.headers["location"] == "/console/customers/a%3Fb"
    form = {"csrf_token": staff, "form_nonce": nonce_of(client, "/console/customers/a%3Fb"), "review": "on"}
    flagged = client.post("/console/customers/a%3Fb/review", data=form, follow_redirects=False)
    assert flagged.headers["location"] == "/console/customers/a%3Fb"
    page = client.get(flagged.headers["location"]).text
    assert "Question Inc." in page and "Plain Inc." not in page


def test_a_new_webhook_url_saved_in_the_console_shows_its_new_secret_once(
    console: Console, client: TestClient, staff: str
):
    """The console made a new secret for a new URL and never showed it: the receiver could verify nothing."""
    form = {"csrf_token": staff, "name": "Acme Inc.", "webhook_url": "https://hooks.acme.example/billing"}
    saved = client.post("/console/customers/acme", data=form)
    secret = customers.get_customer(console.engine, "acme").webhook_secret
    assert secret and secret.startswith("whsec_")
    assert _notice(saved.text) == (
        "Customer acme saved. Its new webhook secret, shown this once (webhooks to the new URL are signed with it): "
        f"{secret}"
    )
    again = client.post("/console/customers/acme", data={**form, "name": "Acme Inc. (EU)"})
    assert _notice(again.text) == "Customer acme saved."
    assert customers.get_customer(console.engine, "acme").webhook_secret == secret
