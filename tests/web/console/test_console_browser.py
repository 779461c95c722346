"""The finance console in Debian's Chromium (Playwright): a finance user signs in, runs October, approves and
finalizes its drafts, records a payment and sees the invoice paid; a form stripped of its CSRF token is refused;
every main page is photographed (``build/screenshots/console-*.png``) and checked by axe-core (no serious or
critical violation)."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from billing import invoicing
from billing.run import run_billing
from invoices.model import InvoiceStatus
from invoices.store import FinalizeSettings
from tests.web.console.conftest import OCTOBER, Console

pytestmark = [pytest.mark.browser, pytest.mark.db]


def _sign_in(page, url: str, key: str) -> None:
    page.goto(f"{url}/console/runs")
    assert "/console/login" in page.url  # no session yet: the sign-in page
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/console/runs")


def _check(page, axe_check, screenshot, name: str) -> None:
    axe_check(page)
    screenshot(page, f"console-{name}")


def test_a_finance_user_runs_a_period_approves_finalizes_and_records_a_payment(
    console: Console, console_url: str, page, axe_check, screenshot
):
    page.goto(f"{console_url}/console/login")
    _check(page, axe_check, screenshot, "login")
    _sign_in(page, console_url, console.key)
    _check(page, axe_check, screenshot, "runs")

    page.get_by_label("Period (YYYY-MM)").first.fill("2026-10")
    page.get_by_role("button", name="Run billing").click()
    page.get_by_role("heading", name="Billing run of 2026-10").wait_for()
    assert page.locator("dl.facts dd").first.inner_text() == "2"  # created: acme's and beta's drafts
    _check(page, axe_check, screenshot, "run-report")

    page.get_by_role("link", name="Review the drafts of 2026-10").click()
    page.get_by_text("Drafts of 2026-10: 2, waiting for approval: 1").wait_for()
    _check(page, axe_check, screenshot, "approvals")
    acme, beta = sorted(invoicing.list_invoices(console.engine, status="draft"), key=lambda i: i.customer_id or "")
    page.get_by_role("button", name=f"Approve draft {acme.id}").click()
    page.get_by_role("status").filter(has_text=f"Draft {acme.id} approved.").wait_for()
    page.get_by_role("button", name=f"Finalize draft {acme.id}").click()
    page.get_by_role("status").filter(has_text="Invoice INV-2026-000001 issued.").wait_for()
    page.get_by_role("button", name=f"Finalize draft {beta.id}").click()
    page.get_by_role("status").filter(has_text="Invoice INV-2026-000002 issued.").wait_for()

    page.get_by_role("link", name="Invoices", exact=True).click()
    page.get_by_label("Invoice number, id or customer id").fill("INV-2026-000001")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("heading", name=re.compile("Invoice INV-2026-000001")).wait_for()
    assert page.locator("#amount-due").inner_text() == "12.00 USD"  # 10.00 + 4 × 0.50
    page.get_by_label("Amount (USD)").fill("12.00")
    page.get_by_label("Method").select_option("bank_transfer")
    page.get_by_label("Reference (optional)").fill("TX-2026-11-03")
    page.get_by_role("button", name="Record payment").click()
    page.get_by_role("status").filter(has_text="Payment of 12.00 USD recorded against INV-2026-000001.").wait_for()
    assert page.locator("h1 .status").inner_text() == "paid"
    assert page.locator("#amount-due").inner_text() == "0.00 USD"
    _check(page, axe_check, screenshot, "invoice-paid")
    assert invoicing.get_invoice(console.engine, acme.id).status == InvoiceStatus.PAID

    with page.expect_download() as download:
        page.get_by_role("link", name="Download PDF").click()
    assert download.value.suggested_filename == "INV-2026-000001.pdf"
    with open(download.value.path(), "rb") as pdf:
        assert pdf.read(4) == b"%PDF"

    page.get_by_role("link", name="Invoices", exact=True).click()
    page.get_by_label("Period (YYYY-MM)").fill("2026-10")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("cell", name="INV-2026-000002").wait_for()
    _check(page, axe_check, screenshot, "invoices")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{console_url}/console/login")
    page.goto(f"{console_url}/console/invoices")
    assert "/console/login" in page.url


def test_a_form_posted_without_its_csrf_token_is_refused(console: Console, console_url: str, page, axe_check):
    _sign_in(page, console_url, console.key)
    page.locator('form[action="/console/runs"] input[name="csrf_token"]').evaluate("input => input.remove()")
    page.get_by_label("Period (YYYY-MM)").first.fill("2026-10")
    with page.expect_response(f"{console_url}/console/runs") as answer:
        page.get_by_role("button", name="Run billing").click()
    assert answer.value.status == 403
    page.get_by_role("heading", name="Form refused").wait_for()
    axe_check(page)
    assert invoicing.list_invoices(console.engine) == []  # nothing was run


def test_every_main_page_passes_axe_and_is_photographed(
    console: Console, console_url: str, page, axe_check, screenshot
):
    run_billing(console.engine, console.catalog, OCTOBER)
    acme, beta = sorted(invoicing.list_invoices(console.engine, status="draft"), key=lambda i: i.customer_id or "")
    invoicing.finalize_invoice(console.engine, beta.id, FinalizeSettings(), dt.date(2026, 11, 2))  # acme's waits
    _sign_in(page, console_url, console.key)
    for path, name in (
        ("/console/runs?period=2026-10&account=true", "runs-unbilled"),
        ("/console/approvals?period=2026-10", "approvals-waiting"),
        (f"/console/invoices/{acme.id}", "draft"),
        ("/console/customers", "customers"),
        ("/console/customers/acme", "customer"),
        ("/console/notifications", "notifications"),
        ("/console/notifications?status=dead", "dead-letters"),
        ("/console/metrics?period=2026-10", "metrics"),
        ("/console/subscriptions/1/overrides", "overrides"),
    ):
        page.goto(console_url + path)
        assert page.locator("h1").count() == 1, path
        _check(page, axe_check, screenshot, name)


def test_the_runs_of_a_month_are_listed_and_each_opens_its_record(
    console: Console, console_url: str, page, axe_check, screenshot
):
    _sign_in(page, console_url, console.key)
    for finalize in (False, True):
        page.get_by_label("Period (YYYY-MM)").first.fill("2026-10")
        if finalize:
            page.get_by_label("Also finalize the drafts that need no approval").check()
        page.get_by_role("button", name="Run billing").click()
        page.get_by_role("heading", name="Billing run of 2026-10").wait_for()
        page.goto(f"{console_url}/console/runs?period=2026-10")
    history = page.get_by_role("table").filter(has=page.get_by_role("columnheader", name="Outcome"))
    rows = history.locator("tbody tr")
    assert rows.count() == 2
    assert rows.first.locator("td").first.inner_text() == "2"  # the latest first
    assert "then finalize" in rows.first.inner_text() and "console: Ada" in rows.first.inner_text()
    _check(page, axe_check, screenshot, "runs-history")
    page.get_by_role("link", name="2", exact=True).click()
    page.get_by_role("heading", name="Billing run 2: 2026-10").wait_for()
    assert page.get_by_role("link", name="INV-2026-000001").count() == 1  # beta's; acme's waits for approval
    _check(page, axe_check, screenshot, "run-record")
