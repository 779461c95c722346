"""The finance console over plain HTTP: signing in with an API key, the session cookie's flags, CSRF refusals,
signing out, and each action of each page, checked against what the services then hold. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from billing import approval, coupons, credits, customers, invoicing, payments, portal_links
from billing.apikeys import create_api_key, list_api_keys, revoke_api_key
from billing.config import Settings
from billing.core.coupons import Coupon, Duration
from billing.notify import deliver_pending, get_notification, list_notifications
from billing.run import run_billing
from invoices.model import InvoiceStatus
from invoices.store import FinalizeSettings
from tests.web.console.conftest import OCTOBER, Console, csrf_of, nonce_of, sign_in

pytestmark = pytest.mark.db

PAGES = ("runs", "approvals", "invoices", "customers", "notifications", "metrics")


def _cookie_header(response) -> str:
    [header] = [v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith("billing_console=")]
    return header


# -- signing in and out --------------------------------------------------------------------------------------


def test_every_page_redirects_to_the_sign_in_page_without_a_session(client: TestClient):
    for page in PAGES:
        answer = client.get(f"/console/{page}", follow_redirects=False)
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/console/login?next=%2Fconsole%2F{page}"
    home = client.get("/console/", follow_redirects=False)
    assert (home.status_code, home.headers["location"]) == (303, "/console/login?next=%2Fconsole%2F")


def test_an_api_key_is_exchanged_for_a_strict_http_only_session_cookie(console: Console, client: TestClient):
    page = client.get("/console/login")
    assert page.status_code == 200 and 'type="password"' in page.text
    answer = client.post(
        "/console/login",
        data={"api_key": console.key, "csrf_token": csrf_of(page.text), "next": "/console/invoices"},
        follow_redirects=False,
    )
    assert (answer.status_code, answer.headers["location"]) == (303, "/console/invoices")
    cookie = _cookie_header(answer).lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert "secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    assert console.key not in answer.headers.get("set-cookie", "")  # the key itself is not the cookie
    assert client.get("/console/invoices").status_code == 200


def test_over_https_the_session_cookie_is_secure(console: Console):
    with TestClient(console.app, base_url="https://testserver") as client:
        page = client.get("/console/login")
        answer = client.post(
            "/console/login", data={"api_key": console.key, "csrf_token": csrf_of(page.text)}, follow_redirects=False
        )
        assert answer.status_code == 303
        assert "secure" in _cookie_header(answer).lower()


def test_a_wrong_revoked_or_customer_bound_key_is_refused(console: Console, client: TestClient):
    bound_key = create_api_key(console.engine, "acme's", customer="acme")[1]
    revoked, revoked_key = create_api_key(console.engine, "old")
    revoke_api_key(console.engine, revoked.id)
    for key in ("bk_not-a-key", bound_key, revoked_key):
        page = client.get("/console/login")
        answer = client.post("/console/login", data={"api_key": key, "csrf_token": csrf_of(page.text)})
        assert answer.status_code == 401
        assert "unknown, revoked, or bound to a customer" in answer.text
        assert "billing_console=" not in answer.headers.get("set-cookie", "")


def test_the_sign_in_form_without_its_token_is_refused(console: Console, client: TestClient):
    client.get("/console/login")
    answer = client.post("/console/login", data={"api_key": console.key}, follow_redirects=False)
    assert answer.status_code == 403
    assert "billing_console=" not in answer.headers.get("set-cookie", "")


def test_sign_in_goes_back_only_to_a_console_page(console: Console, client: TestClient):
    page = client.get("/console/login")
    answer = client.post(
        "/console/login",
        data={"api_key": console.key, "csrf_token": csrf_of(page.text), "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/console/runs"


def test_signing_out_ends_the_session_even_for_a_copied_cookie(console: Console, client: TestClient, staff: str):
    token = client.cookies.get("billing_console")
    refused = client.post("/console/logout", data={}, follow_redirects=False)
    assert refused.status_code == 403  # signing out is a form too
    answer = client.post("/console/logout", data={"csrf_token": staff}, follow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (303, "/console/login")
    with TestClient(console.app, base_url="http://testserver", cookies={"billing_console": token}) as copied:
        assert copied.get("/console/runs", follow_redirects=False).status_code == 303


def test_revoking_the_key_ends_its_sessions(console: Console, client: TestClient, staff: str):
    [key] = [k for k in list_api_keys(console.engine) if k.name == "Ada"]
    revoke_api_key(console.engine, key.id)
    assert client.get("/console/runs", follow_redirects=False).status_code == 303


# -- CSRF ----------------------------------------------------------------------------------------------------


def test_a_form_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
    console: Console, client: TestClient, staff: str
):
    for data in ({"period": "2026-10"}, {"period": "2026-10", "csrf_token": "0" * 64}):
        answer = client.post("/console/runs", data=data)
        assert answer.status_code == 403
        assert "security token" in answer.text
    other = TestClient(console.app, base_url="http://testserver")
    other_token = sign_in(other, create_api_key(console.engine, "Bob")[1])
    assert other_token != staff
    answer = client.post("/console/runs", data={"period": "2026-10", "csrf_token": other_token})
    assert answer.status_code == 403  # another session's token
    assert invoicing.list_invoices(console.engine) == []


def test_a_form_from_another_site_is_refused(console: Console, client: TestClient, staff: str):
    answer = client.post(
        "/console/runs", data={"period": "2026-10", "csrf_token": staff}, headers={"Origin": "https://evil.example"}
    )
    assert answer.status_code == 403
    assert invoicing.list_invoices(console.engine) == []


def test_a_form_without_a_session_is_refused(client: TestClient):
    assert client.post("/console/runs", data={"period": "2026-10", "csrf_token": "x"}).status_code == 403


# -- billing runs, approvals, invoices -----------------------------------------------------------------------


def _run_october(client: TestClient, staff: str, **extra: str):
    return client.post("/console/runs", data={"period": "2026-10", "csrf_token": staff, **extra})


def test_a_run_shows_its_report_and_the_period_its_invoices(console: Console, client: TestClient, staff: str):
    report = _run_october(client, staff)
    assert report.status_code == 200, report.text
    assert "<dt>Created</dt><dd>2</dd>" in report.text
    assert "22.50 USD" in report.text  # 12.00 + 10.50
    drafts = invoicing.list_invoices(console.engine, status="draft")
    assert sorted(str(i.total) for i in drafts) == ["10.50", "12.00"]
    page = client.get("/console/runs", params={"period": "2026-10", "account": "true"})
    assert page.status_code == 200 and "5 events accepted: 5 rated, 0 unbilled" in page.text


def test_a_run_shows_the_events_no_invoice_carries_and_the_skipped_customers(
    console: Console, client: TestClient, staff: str
):
    customers.create_customer(console.engine, "euro", "Euro GmbH", None, "EUR", "UTC")
    customers.create_customer(console.engine, "ghost-co", "Ghost", None, "USD", "UTC")
    from tests.web.console.conftest import calls

    calls(console.engine, console.catalog, "ghost-co", 3)  # a customer without a subscription
    report = _run_october(client, staff)
    assert report.status_code == 200
    assert "ghost-co" in report.text and "Usage no invoice carries" in report.text
    assert '<td class="num">3</td>' in report.text


def test_a_run_of_a_period_to_come_is_refused_with_the_reason(client: TestClient, staff: str):
    answer = client.post("/console/runs", data={"period": "2099-01", "csrf_token": staff})
    assert answer.status_code == 422
    assert "has not begun" in answer.text


def test_approve_then_finalize_then_record_a_payment(console: Console, client: TestClient, staff: str):
    _run_october(client, staff)
    acme = next(i for i in invoicing.list_invoices(console.engine) if i.customer_id == "acme")
    page = client.get("/console/approvals", params={"period": "2026-10"})
    assert "Drafts of 2026-10: 2, waiting for approval: 1" in page.text
    assert "above" in page.text  # the reason, in words

    refused = client.post(f"/console/invoices/{acme.id}/finalize", data={"csrf_token": staff})
    assert "Refused:" in refused.text and "waits for approval" in refused.text
    approved = client.post(f"/console/invoices/{acme.id}/approve", data={"csrf_token": staff, "note": "checked"})
    assert f"Draft {acme.id} approved." in approved.text
    [item] = [
        a for a in approval.awaiting_approval(console.engine, approval.ApprovalPolicy(limits={"USD": Decimal(11)}))
    ] or [None]
    assert item is None  # nothing waits now
    issued = client.post(f"/console/invoices/{acme.id}/finalize", data={"csrf_token": staff})
    assert "Invoice INV-2026-000001 issued." in issued.text

    paid = client.post(
        f"/console/invoices/{acme.id}/payments",
        data={
            "csrf_token": staff,
            "form_nonce": nonce_of(client, f"/console/invoices/{acme.id}"),
            "amount": "12.00",
            "method": "bank_transfer",
            "received_on": "",
            "reference": "TX-1",
        },
    )
    assert "Payment of 12.00 USD recorded against INV-2026-000001." in paid.text
    assert '<span class="status paid">paid</span>' in paid.text
    assert invoicing.get_invoice(console.engine, acme.id).status == InvoiceStatus.PAID
    [payment] = payments.list_payments(console.engine, invoice="INV-2026-000001")
    assert (str(payment.amount), payment.method, payment.reference) == ("12.00", "bank_transfer", "TX-1")


def test_finalize_every_draft_of_a_period_that_needs_no_approval(console: Console, client: TestClient, staff: str):
    _run_october(client, staff)
    answer = client.post("/console/approvals/finalize", data={"csrf_token": staff, "period": "2026-10"})
    assert "1 invoices of 2026-10 issued." in answer.text  # beta's; acme's waits
    statuses = {i.customer_id: str(i.status) for i in invoicing.list_invoices(console.engine)}
    assert statuses == {"acme": "draft", "beta": "finalized"}


def _issued(console: Console) -> list:
    run_billing(console.engine, console.catalog, OCTOBER)
    drafts = invoicing.list_invoices(console.engine, status="draft")
    return [invoicing.finalize_invoice(console.engine, d.id, FinalizeSettings(), dt.date(2026, 11, 2)) for d in drafts]


def test_invoices_search_and_filters(console: Console, client: TestClient, staff: str):
    acme, beta = _issued(console)
    found = client.get("/console/invoices", params={"q": acme.number}, follow_redirects=False)
    assert (found.status_code, found.headers["location"]) == (303, f"/console/invoices/{acme.id}")
    by_customer = client.get("/console/invoices", params={"q": "beta"})
    assert beta.number in by_customer.text and acme.number not in by_customer.text
    by_status = client.get("/console/invoices", params={"status": "draft"})
    assert "No invoice matches." in by_status.text
    by_period = client.get("/console/invoices", params={"period": "2026-10", "status": "finalized"})
    assert acme.number in by_period.text and beta.number in by_period.text
    assert client.get("/console/invoices", params={"period": "2026-09"}).text.count("No invoice matches.") == 1
    assert client.get("/console/invoices", params={"status": "lost"}).status_code == 400


def test_void_and_credit_note(console: Console, client: TestClient, staff: str):
    acme, beta = _issued(console)
    credited = client.post(
        f"/console/invoices/{acme.id}/credit-notes",
        data={
            "csrf_token": staff,
            "amount": "2.00",
            "reason": "outage",
            "form_nonce": nonce_of(client, "/console/runs"),
        },
    )
    assert "Credit note CN-2026-000001 of 2.00 USD issued against INV-2026-000001." in credited.text
    too_much = client.post(
        f"/console/invoices/{acme.id}/credit-notes",
        data={"csrf_token": staff, "amount": "50.00", "reason": "x", "form_nonce": nonce_of(client, "/console/runs")},
    )
    assert "Refused:" in too_much.text
    voided = client.post(f"/console/invoices/{beta.id}/void", data={"csrf_token": staff})
    assert f"Invoice {beta.number} voided." in voided.text
    assert invoicing.get_invoice(console.engine, beta.id).status == InvoiceStatus.VOID
    assert "Void invoice" not in client.get(f"/console/invoices/{beta.id}").text  # nothing more to do to it


def test_the_invoice_pdf_downloads(console: Console, client: TestClient, staff: str):
    acme, _ = _issued(console)
    answer = client.get(f"/console/invoices/{acme.id}/pdf")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/pdf"
    assert answer.content.startswith(b"%PDF")
    assert f'filename="{acme.number}.pdf"' in answer.headers["content-disposition"]


def test_an_unknown_invoice_is_a_404_page(client: TestClient, staff: str):
    answer = client.get("/console/invoices/999999")
    assert answer.status_code == 404 and "Not found" in answer.text


# -- customers -----------------------------------------------------------------------------------------------


def test_edit_a_customer(console: Console, client: TestClient, staff: str):
    page = client.get("/console/customers/acme")
    assert page.status_code == 200 and "Acme Inc." in page.text
    saved = client.post(
        "/console/customers/acme",
        data={"csrf_token": staff, "name": "Acme Corporation", "email": "ap@acme.example", "locale": "de_DE",
              "timezone": "Europe/Berlin", "tax_rate": "19", "address": "1 Main St\nSpringfield", "country": "",
              "region": "", "tax_id": "", "tax_exempt_reason": "", "webhook_url": ""},
    )  # fmt: skip
    assert "Customer acme saved." in saved.text
    acme = customers.get_customer(console.engine, "acme")
    assert (acme.name, acme.email, acme.locale, acme.timezone, str(acme.tax_rate), acme.address) == (
        "Acme Corporation",
        "ap@acme.example",
        "de_DE",
        "Europe/Berlin",
        "19",
        ("1 Main St", "Springfield"),
    )
    bad = client.post("/console/customers/acme", data={"csrf_token": staff, "timezone": "Mars/Olympus"})
    assert "Refused:" in bad.text and "timezone" in bad.text
    assert customers.get_customer(console.engine, "acme").timezone == "Europe/Berlin"


def test_customers_list_and_find(client: TestClient, staff: str):
    listed = client.get("/console/customers")
    assert "Acme Inc." in listed.text and "Beta Inc." in listed.text
    found = client.get("/console/customers", params={"q": "beta"}, follow_redirects=False)
    assert found.headers["location"] == "/console/customers/beta"
    assert "No customer nobody." in client.get("/console/customers", params={"q": "nobody"}).text


def test_subscribe_and_change_seats(console: Console, client: TestClient, staff: str):
    added = client.post(
        "/console/customers/beta/subscriptions",
        data={"csrf_token": staff, "plan": "team", "start": "2026-11-01", "quantity": "3"},
    )
    assert "to team from 2026-11-01 added." in added.text
    team = next(s for s in customers.list_subscriptions(console.engine, "beta") if s.plan_code == "team")
    assert team.quantity == 3
    seats = client.post(
        f"/console/subscriptions/{team.id}/quantity",
        data={"csrf_token": staff, "quantity": "5", "effective_from": "2026-11-15"},
    )
    assert f"Subscription {team.id}: 5 seats from 2026-11-15." in seats.text
    assert customers.get_subscription(console.engine, team.id).quantity_on(dt.date(2026, 11, 20)) == 5


def test_negotiated_prices(console: Console, client: TestClient, staff: str):
    [sub] = customers.list_subscriptions(console.engine, "acme")
    document = '[[charges]]\nmeter = "api_calls"\nmodel = "per_unit"\nunit_amount = 0.25\n'
    saved = client.post(
        f"/console/subscriptions/{sub.id}/overrides",
        data={"csrf_token": staff, "document": document, "effective_from": ""},
    )
    assert "Negotiated prices recorded, from 2026-10-01." in saved.text
    assert '"unit_amount": "0.25"' in saved.text
    bad = client.post(
        f"/console/subscriptions/{sub.id}/overrides", data={"csrf_token": staff, "document": "[[charges]\n"}
    )
    assert "Refused:" in bad.text


def test_review_flag_coupon_and_credit(console: Console, client: TestClient, staff: str):
    flagged = client.post("/console/customers/beta/review", data={"csrf_token": staff, "review": "on", "note": "audit"})
    assert "Customer beta flagged for review." in flagged.text
    review = approval.customer_review(console.engine, "beta")
    assert (review.flagged_by, review.note) == ("console: Ada", "audit")

    coupons.create_coupon(
        console.engine, console.catalog, Coupon(code="WELCOME", duration=Duration.ONCE, percent_off=Decimal(10))
    )
    applied = client.post("/console/customers/beta/coupons", data={"csrf_token": staff, "code": "WELCOME"})
    assert "Coupon WELCOME applied from" in applied.text

    granted = client.post(
        "/console/customers/beta/credits",
        data={
            "csrf_token": staff,
            "amount": "25.00",
            "currency": "USD",
            "reason": "goodwill",
            "expires": "",
            "form_nonce": nonce_of(client, "/console/customers/beta"),
        },
    )
    assert "Credit of 25.00 USD granted (free)." in granted.text
    [usd] = credits.balance(console.engine, "beta")
    assert str(usd.free) == "25.00"


def test_ending_a_customers_portal_links(console: Console, client: TestClient, staff: str):
    from billing.portal_links import PortalAccess, PortalLinkError, check_not_revoked

    assert "No link ended by hand" in client.get("/console/customers/beta").text
    sent = PortalAccess("beta", dt.datetime(2099, 1, 1, tzinfo=dt.UTC), dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    check_not_revoked(console.engine, sent)  # opens

    ended = client.post("/console/customers/beta/portal/revoke", data={"csrf_token": staff})

    assert "Every portal link made for beta before" in ended.text and "is refused from now on." in ended.text
    assert "Links made before" in ended.text  # the page says since when
    with pytest.raises(PortalLinkError, match="has been revoked"):
        check_not_revoked(console.engine, sent)
    other = PortalAccess("acme", sent.expires_at, sent.issued_at)
    check_not_revoked(console.engine, other)  # another customer's: untouched
    unknown = client.post("/console/customers/nobody/portal/revoke", data={"csrf_token": staff})
    assert unknown.status_code == 404  # back to the customer's page, which does not exist
    assert portal_links.revoked_at(console.engine, "nobody") is None


def test_an_unknown_customer_is_a_404_page(client: TestClient, staff: str):
    assert client.get("/console/customers/nobody").status_code == 404


# -- notifications and metrics -------------------------------------------------------------------------------


def test_dead_notifications_are_listed_and_retried(console: Console, client: TestClient, staff: str):
    _issued(console)  # two invoice.finalized notifications, pending
    pending = client.get("/console/notifications")
    assert pending.text.count("invoice.finalized") == 2
    down = Settings(
        notification_webhook_url="http://127.0.0.1:9/hooks", notification_max_attempts=1,
        notification_webhook_secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", notification_timeout_seconds=2,
    )  # fmt: skip
    deliver_pending(console.engine, down)
    [dead, _] = list_notifications(console.engine, status="dead")
    listed = client.get("/console/notifications", params={"status": "dead"})
    assert listed.text.count("Retry notification") == 2
    retried = client.post(f"/console/notifications/{dead.id}/retry", data={"csrf_token": staff})
    assert f"Notification {dead.id} is pending again, due now." in retried.text
    assert get_notification(console.engine, dead.id).status == "pending"
    again = client.post(f"/console/notifications/{dead.id}/retry", data={"csrf_token": staff})
    assert "only a dead one can be retried" in again.text


def test_the_metrics_page_draws_its_charts_as_svg(console: Console, client: TestClient, staff: str):
    _issued(console)
    page = client.get("/console/metrics", params={"period": "2026-10"})
    assert page.status_code == 200
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in page.text and 'role="img"' in page.text
    assert "MRR bridge 2026-10, USD" in page.text
    assert "Aged receivables" in page.text and "22.50 USD" in page.text  # both invoices still owed


def test_the_metrics_table_has_every_movement_of_the_bridge_so_its_rows_add_up(
    console: Console, client: TestClient, staff: str
):
    """It had no Reactivation column: a customer returning on a 100.00 plan read start 10.00, no movement, end
    110.00."""
    import re

    from billing.web.console.charts import BRIDGE

    _issued(console)
    page = client.get("/console/metrics", params={"period": "2026-10"}).text
    header = re.search(r"<th scope=\"col\">Month</th>(.*?)</tr>", page, re.S)
    assert header is not None
    columns = re.findall(r">([^<]+)</th>", header.group(1))
    movements = ["MRR start", *(label for label, _, kind in BRIDGE if kind != "total"), "MRR end"]
    assert columns[: len(movements)] == movements


def test_each_page_answers_with_headings_and_no_cache(client: TestClient, staff: str):
    for page in PAGES:
        answer = client.get(f"/console/{page}")
        assert answer.status_code == 200, (page, answer.text)
        assert "<h1>" in answer.text and answer.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


def test_the_mrr_bridge_writes_no_sign_before_a_movement_of_nothing():
    import datetime as dt
    from decimal import Decimal

    from billing.core.metrics import PeriodFigures
    from billing.core.periods import Period
    from billing.web.console.charts import bridge_chart

    figures = PeriodFigures(
        period=Period(dt.date(2026, 10, 1), dt.date(2026, 11, 1)),
        currency="USD",
        mrr_start=Decimal("20.00"),
        mrr_new=Decimal("5.00"),
        mrr_end=Decimal("25.00"),
    )
    svg = str(bridge_chart(figures, "bridge"))
    # start 20.00, new +5.00, nothing else moved: the other movements read 0.00, neither +0.00 nor −0.00
    assert ">+5.00<" in svg and svg.count(">0.00<") == 4, svg
    assert "−0.00" not in svg and "+0.00" not in svg, svg
