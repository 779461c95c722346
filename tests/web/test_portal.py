"""The customer portal in a real browser (Debian's Chromium through Playwright) and over plain HTTP, on SQLite and
PostgreSQL: a customer opens the link finance sent, sees this month's usage past 80 % of its allowance, the
invoice the month will bring, its credit and invoices, and downloads a PDF; the link reaches no other customer's
pages and no console page; an expired or forged link is refused. Each page is written to build/screenshots/ and
checked by axe-core (no serious or critical violation), on a desktop and on a phone.

The data, worked by hand (catalog below, customer acme in Germany: de_DE, EUR, 19 % tax, and the coupon TEN,
10 % off 3 billing periods, applied before the first):

- two months back (billed and finalized): fee 20.00 + 3 calls (the first 5 are free) = 20.00, less 10 % = 18.00,
  tax 3.42, total 21.42; a free credit of 5.00 pays part of it at finalization: 16.42 due, paid by bank transfer.
- last month: the same 21.42, unpaid.
- this month so far: 9 calls of an allowance of 10 (90 %: the 80 % level reached), 12.5 GB of storage;
  projected: fee 20.00 + 4 calls × 0.10 = 0.40 + 12.5 GB × 0.50 = 6.25 → 26.65, less 10 % = 2.665 → 2.67
  (half up), 23.98, tax 19 % 4.5562 → 4.56, total 28.54; the coupon's third and last period.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from billing.config import get_settings
from billing.coupons import apply_coupon, create_coupon, parse_coupon
from billing.credits import grant_credit
from billing.customers import create_customer, subscribe
from billing.db import make_engine
from billing.ingestion import ingest_batch
from billing.invoicing import list_invoices
from billing.payments import record_payment
from billing.portal_links import create_portal_link, portal_token
from billing.run import finalize_period, run_billing
from invoices.store import FinalizeSettings
from pricing_plans.loader import load_catalog_or_raise
from tests.dates import ended_month

pytestmark = [pytest.mark.db, pytest.mark.browser]

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
unit = "call"

[meters.storage_gb]
name = "Storage"
aggregation = "max"
unit = "GB"

[plans.growth]
name = "Growth"
currency = "EUR"
effective_from = 2025-01-01
subscription = { fee = 20.00, billing = "in_arrears" }
charges = [
  { meter = "api_calls", model = "graduated", tiers = [{ up_to = 5, unit_amount = 0 }, { up_to = "inf", unit_amount = 0.10 }] },
  { meter = "storage_gb", model = "per_unit", unit_amount = 0.50 },
]
thresholds = [
  { meter = "api_calls", allowance = 10, levels = [80, 100], hard_limit = true },
  { spend_cap = 100.00, levels = [50, 80, 100] },
]
"""

FIRST = ended_month(2)
LAST = ended_month(1)
SCREENSHOTS = ("usage", "upcoming", "credits", "invoices", "account")


@pytest.fixture
def live_catalog_path(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    return path


def _events(engine: Engine, catalog, customer: str, prefix: str, when: dt.datetime, calls: int, gb: str | None):
    records = [
        {
            "id": f"{customer}-{prefix}-call-{i}",
            "customer": customer,
            "meter": "api_calls",
            "timestamp": when.isoformat(),
        }
        for i in range(calls)
    ]
    if gb is not None:
        records.append(
            {
                "id": f"{customer}-{prefix}-gb",
                "customer": customer,
                "meter": "storage_gb",
                "timestamp": when.isoformat(),
                "value": gb,
            }
        )
    assert ingest_batch(engine, catalog, records).accepted == len(records)


@pytest.fixture
def portal(live_server, live_catalog_path):
    """acme (de_DE) and globex (en_US), their invoices, acme's credit and this month's usage; acme's link."""
    engine = make_engine(live_server.database_url)
    catalog = load_catalog_or_raise(str(live_catalog_path))
    create_customer(
        engine,
        "acme",
        "Acme GmbH",
        "ap@acme.example",
        "EUR",
        "UTC",
        "de_DE",
        ["Hauptstraße 1", "10115 Berlin"],
        tax_rate=19,
        country="DE",
    )
    create_customer(engine, "globex", "Globex Inc.", "ap@globex.example", "EUR", "UTC", "en_US", tax_rate=19)
    for who in ("acme", "globex"):
        subscribe(engine, catalog, who, "growth", FIRST.start)
    before = FIRST.start - dt.timedelta(days=2)
    ten = parse_coupon("TEN", percent="10", amount=None, currency=None, duration="repeating", months=3, today=before)
    create_coupon(engine, catalog, ten)
    apply_coupon(engine, "TEN", "acme", now=dt.datetime.combine(before, dt.time(12), dt.UTC))
    noon = dt.datetime.combine(FIRST.start + dt.timedelta(days=4), dt.time(12), dt.UTC)
    _events(engine, catalog, "acme", "first", noon, 3, None)
    grant_credit(engine, "acme", Decimal("5.00"), "EUR", reason="Welcome offer")
    for period in (FIRST, LAST):
        run_billing(engine, catalog, period)
        finalize_period(engine, period, FinalizeSettings(), period.end + dt.timedelta(days=2))
    [first] = [i for i in list_invoices(engine, customer="acme") if i.period_start == FIRST.start]
    record_payment(engine, first.id, Decimal("16.42"), method="bank_transfer")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    _events(engine, catalog, "acme", "now", now, 9, "12.5")
    _events(engine, catalog, "globex", "now", now, 2, None)
    link = create_portal_link(engine, get_settings(), "acme", days=7)
    yield link
    engine.dispose()


def _numbers(engine_url: str, customer: str) -> list[str]:
    engine = make_engine(engine_url)
    try:
        return [i.number for i in list_invoices(engine, customer=customer) if i.number]
    finally:
        engine.dispose()


def test_a_customer_opens_the_link_sees_usage_past_80_percent_and_downloads_a_pdf(
    live_server, portal, page, axe_check, screenshot
):
    assert portal.url.startswith(live_server.url + "/portal/link/v1.")
    page.goto(portal.url)
    assert page.url == live_server("/portal/")
    assert page.locator("html").get_attribute("lang") == "de-DE"
    assert page.locator("h1").inner_text() == "Nutzung"
    calls = page.locator("li.meter", has_text="API calls")
    assert "state-warning" in calls.get_attribute("class")
    # 9 of 10 calls: 90 %, the 80 % alert level reached, German numbers and words
    assert (
        calls.locator(".figures").inner_text() == "9\xa0Aufrufe von 10\xa0Aufrufe verbraucht (90\xa0%) · harte Grenze"
    )
    assert calls.locator(".chip").inner_text() == "Warnstufe erreicht"
    assert calls.locator("svg.bar .fill").get_attribute("width") == "90.0"
    assert page.locator("li.meter", has_text="Storage").locator(".chip").inner_text().startswith("Kein Kontingent")
    assert "28,54\xa0€" in page.locator(".summary").inner_text()
    axe_check(page)
    screenshot(page, "portal-usage")

    page.get_by_role("link", name="Rechnungen").click()
    rows = page.locator("table.invoices tbody tr")
    assert rows.count() == 2
    newest, oldest = rows.nth(0), rows.nth(1)
    assert "Offen" in newest.inner_text() or "Überfällig" in newest.inner_text()
    assert "Bezahlt" in oldest.inner_text() and "21,42\xa0€" in oldest.inner_text()
    number = oldest.locator("th").inner_text()
    with page.expect_download() as download:
        oldest.get_by_role("link", name=re.compile("PDF")).click()
    path = download.value.path()
    assert download.value.suggested_filename == f"{number}.pdf"
    assert Path(path).read_bytes()[:5] == b"%PDF-"


def test_every_portal_page_in_the_customers_language_is_accessible_and_screenshotted(
    live_server, portal, page, phone_page, axe_check, screenshot
):
    page.goto(portal.url)
    texts = {}
    for name, path in zip(
        SCREENSHOTS,
        ("/portal/", "/portal/upcoming", "/portal/credits", "/portal/invoices", "/portal/account"),
        strict=True,
    ):
        page.goto(live_server(path))
        assert page.url == live_server(path)
        axe_check(page)
        texts[name] = page.locator("main").inner_text()
        screenshot(page, f"portal-{name}")
    # the projected invoice (see the module's docstring), and the coupon in force for its last period
    upcoming = texts["upcoming"]
    assert all(amount in upcoming for amount in ("26,65\xa0€", "-2,67\xa0€", "4,56\xa0€", "28,54\xa0€")), upcoming
    assert "TEN — 10\xa0% Rabatt auf 3 Abrechnungszeiträume" in upcoming and "Dieser Zeitraum" in upcoming
    # the credit: 5.00 granted, all of it applied to the first invoice
    assert (
        "Gratisguthaben" in texts["credits"]
        and "Guthaben gewährt" in texts["credits"]
        and "−5,00\xa0€" in texts["credits"].replace("-", "−")
    )
    assert "Acme GmbH" in texts["account"] and "Hauptstraße 1, 10115 Berlin" in texts["account"]
    # on a phone: the viewport is the phone's, nothing wider than the screen
    phone_page.goto(portal.url)
    for name, path in (("usage", "/portal/"), ("invoices", "/portal/invoices")):
        phone_page.goto(live_server(path))
        screenshot(phone_page, f"portal-{name}-phone")
        assert phone_page.evaluate("document.documentElement.scrollWidth") <= 390
        axe_check(phone_page)


def test_the_link_reaches_no_other_customers_pages_nor_the_console(live_server, portal, page):
    page.goto(portal.url)
    theirs = _numbers(live_server.database_url, "globex")
    assert theirs
    # through the browser: another customer's invoice, a console page
    response = page.goto(live_server(f"/portal/invoices/{theirs[0]}.pdf"))
    assert response.status == 404
    response = page.goto(live_server("/console/"))
    assert response.status in (401, 403, 404) or "/login" in page.url
    # over plain HTTP with acme's cookie: the same, and the API (which takes no cookie) answers 401
    cookie = {"billing_portal": portal.token}
    with httpx.Client(base_url=live_server.url, timeout=60, cookies=cookie) as client:
        for number in theirs:
            assert client.get(f"/portal/invoices/{number}.pdf").status_code == 404
        assert client.get("/portal/invoices/INV-9999-999999.pdf").status_code == 404
        assert client.get("/v1/customers/globex").status_code == 401
        assert client.get("/v1/invoices").status_code == 401
        console = client.get("/console/", follow_redirects=False)
        assert console.status_code in (401, 403, 404) or "/login" in console.headers.get("location", "")
        # no page takes a customer: acme's pages show acme only
        invoices = client.get("/portal/invoices").text
        assert "Globex" not in invoices and all(number not in invoices for number in theirs)
        # a query naming another customer is refused, not obeyed
        assert client.get("/portal/", params={"customer": "globex"}).status_code == 400


def test_an_expired_or_forged_link_is_refused(live_server, portal, page, axe_check, screenshot):
    settings = get_settings()
    expired = portal_token(settings, "acme", dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    response = page.goto(live_server(f"/portal/link/{expired}"))
    assert response.status == 403
    assert page.locator("h1").inner_text() == "Dieser Link ist abgelaufen"  # in acme's language
    axe_check(page)
    screenshot(page, "portal-expired")
    assert page.context.cookies() == []
    # a token for globex signed with another secret; acme's token with its customer changed
    payload, signature = portal.token.split(".")[1:]
    forged = f"v1.{payload[:-2]}xx.{signature}"
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        assert client.get(f"/portal/link/{forged}").status_code == 403
        assert client.get("/portal/").status_code == 403  # no cookie
    for token, status in ((expired, 403), (forged, 403), (portal.token, 200)):
        with httpx.Client(base_url=live_server.url, timeout=60, cookies={"billing_portal": token}) as client:
            assert client.get("/portal/").status_code == status


def test_the_api_makes_links_for_a_customer_and_a_bound_key_only_for_its_own(live_server, portal):
    from billing.apikeys import create_api_key

    engine = make_engine(live_server.database_url)
    try:
        _, admin = create_api_key(engine, "finance")
        _, own = create_api_key(engine, "acme's system", "acme")
    finally:
        engine.dispose()
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        made = client.post(
            "/v1/customers/acme/portal_links",
            json={"days": 3},
            headers={"Authorization": f"Bearer {admin}", "Idempotency-Key": "link-1"},
        )
        assert made.status_code == 201, made.text
        body = made.json()
        assert made.headers["location"] == body["url"] and body["customer"] == "acme"
        assert body["object"] == "portal_link" and body["url"].startswith(live_server.url + "/portal/link/v1.")
        expires = dt.datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
        assert dt.timedelta(days=2, hours=23) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=3)
        bound = {"Authorization": f"Bearer {own}"}
        assert client.post("/v1/customers/acme/portal_links", headers=bound).status_code == 201
        assert client.post("/v1/customers/globex/portal_links", headers=bound).status_code == 404
        too_long = client.post("/v1/customers/acme/portal_links", json={"days": 91}, headers=bound)
        assert too_long.status_code == 422 and too_long.json()["errors"][0]["field"] == "days"
        opened = client.get(body["url"], follow_redirects=False)
        assert opened.status_code == 303 and opened.headers["location"] == "/portal/"
        cookie = opened.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/portal" in cookie
