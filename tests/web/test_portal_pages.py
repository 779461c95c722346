"""The customer portal's pages and links over plain HTTP and through its views, at their edges: links that are not
ours however they are malformed (too long, characters beyond ASCII, a customer billing does not know) answered
with the refusal page, never an error; a page or invoice that is not the customer's answered with a 404 page in
the customer's language; the cookie ``Secure`` behind HTTPS; each meter's state as the entitlements decide it (not
from the rounded percentage); invoices' payment states by the customer's own calendar; the credit page issuing an
automatic top-up with the configured invoice settings."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from billing.api import create_app
from billing.config import Settings, get_settings
from billing.credits import configure, grant_credit
from billing.customers import create_customer, subscribe
from billing.entitlements import customer_entitlements
from billing.ingestion import ingest_batch
from billing.invoicing import list_invoices, set_invoice_status
from billing.payments import record_payment
from billing.portal_links import create_portal_link, portal_token
from billing.web.portal import views
from invoices.model import InvoiceStatus, Party
from invoices.store import FinalizeSettings
from pricing_plans.loader import load_catalog_or_raise

pytestmark = pytest.mark.db

CATALOG = """
[meters.transfer_gb]
name = "Transfer"
aggregation = "sum"
unit = "GB"

[plans.metered]
name = "Metered"
currency = "EUR"
effective_from = 2025-01-01
charges = [{ meter = "transfer_gb", model = "per_unit", unit_amount = 0.01 }]
thresholds = [{ meter = "transfer_gb", allowance = 10000, levels = [80, 100], hard_limit = true }]

[plans.gross]
name = "Gross"
currency = "EUR"
effective_from = 2025-01-01
tax_inclusive = true
subscription = { fee = 119.00, billing = "in_arrears" }
"""


@pytest.fixture
def live_catalog_path(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    return path


@pytest.fixture
def acme(live_server, engine_of_live):
    """acme (de_DE, EUR), globex (en_US) with an issued top-up invoice; acme's link."""
    create_customer(engine_of_live, "acme", "Acme GmbH", None, "EUR", "UTC", "de_DE")
    create_customer(engine_of_live, "globex", "Globex Inc.", None, "EUR", "UTC", "en_US")
    grant_credit(engine_of_live, "globex", Decimal("20.00"), "EUR", paid=True)
    return create_portal_link(engine_of_live, get_settings(), "acme")


@pytest.fixture
def engine_of_live(live_server):
    from billing.db import make_engine

    engine = make_engine(live_server.database_url)
    yield engine
    engine.dispose()


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "Content-Security-Policy" in response.headers


def test_a_link_too_long_or_beyond_ascii_or_for_an_unknown_customer_is_refused_with_the_page(live_server, acme):
    ghost = portal_token(get_settings(), "ghost", dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        _refused(client.get("/portal/link/v1." + "A" * 3000 + ".B"))  # was a 422 problem+json
        _refused(client.get("/portal/link/v1.eyJjIjoiYWNtZSJ9.%C3%A9"))  # was a 500
        _refused(client.get(f"/portal/link/{ghost}"))
        for cookie in (b"billing_portal=v1.e30.\xc3\xa9", f"billing_portal={ghost}".encode("ascii")):
            for path in ("/portal/", "/portal/invoices", "/portal/invoices/INV-2026-000001.pdf"):
                _refused(client.get(path, headers={"Cookie": cookie}))  # were a 500, a 404 problem+json


def test_a_page_or_invoice_that_is_not_the_customers_is_a_404_page_in_its_language(live_server, acme, engine_of_live):
    [theirs] = [i.number for i in list_invoices(engine_of_live, customer="globex")]
    assert theirs
    with httpx.Client(base_url=live_server.url, timeout=60, follow_redirects=True) as client:
        assert client.get(acme.url).status_code == 200
        for path in (
            "/portal/no-such-page",
            "/portal/invoices/a/b.pdf",
            f"/portal/invoices/{theirs}.pdf",
            f"/portal/invoices/{'9' * 300}.pdf",  # was a 422 problem+json
        ):
            response = client.get(path)
            assert response.status_code == 404, path
            assert response.headers["content-type"].startswith("text/html")
            assert "Content-Security-Policy" in response.headers
            assert '<html lang="de-DE">' in response.text and "Seite nicht gefunden" in response.text
            assert theirs not in response.text and "Globex" not in response.text
    with httpx.Client(base_url=live_server.url, timeout=60) as client:  # no link: refused, not a 404
        _refused(client.get("/portal/no-such-page"))


def test_the_cookie_is_secure_behind_https(live_server, acme, db_url, live_catalog_path):
    # uvicorn (as billing serve runs it) trusts X-Forwarded-Proto from 127.0.0.1, a proxy on the same machine
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        opened = client.get(acme.url, headers={"X-Forwarded-Proto": "https"}, follow_redirects=False)
        assert opened.status_code == 303 and "; Secure" in opened.headers["set-cookie"]
        plain = client.get(acme.url, follow_redirects=False)
        assert "Secure" not in plain.headers["set-cookie"]
    # links made for an HTTPS public_url: the cookie is Secure whatever the proxy tells (or does not)
    settings = Settings(
        database_url=db_url,
        catalog=str(live_catalog_path),
        portal_secret=get_settings().portal_secret,
        public_url="https://billing.example.com",
    )
    with TestClient(create_app(settings), base_url="http://billing.example.com") as client:
        opened = client.get(f"/portal/link/{acme.token}", follow_redirects=False)
        assert opened.status_code == 303 and "; Secure" in opened.headers["set-cookie"]


def test_a_meter_short_of_its_hard_limit_is_not_shown_blocked_though_its_percentage_rounds_to_100(
    engine, live_catalog_path
):
    catalog = load_catalog_or_raise(str(live_catalog_path))
    now = dt.datetime(2026, 3, 15, 12, tzinfo=dt.UTC)
    create_customer(engine, "acme", "Acme GmbH", None, "EUR", "UTC", "en_US")
    subscribe(engine, catalog, "acme", "metered", dt.date(2026, 3, 1))
    # 9,999.96 GB of 10,000: 99.9996 %, given as 100.0 % (one decimal); usage is not blocked
    event = {"id": "t1", "customer": "acme", "meter": "transfer_gb", "timestamp": now.isoformat(), "value": "9999.96"}
    assert ingest_batch(engine, catalog, [event]).accepted == 1
    [entitlement] = customer_entitlements(engine, catalog, "acme", now=now).meters
    assert entitlement.blocked is False
    [bar] = views.usage_view(engine, catalog, views.portal_of(engine, "acme"), now=now)["bars"]
    assert (bar.state, bar.status) == ("warning", "Alert level reached")  # was blocked: "Hard limit reached"
    # and at 10,000 it is
    event = {"id": "t2", "customer": "acme", "meter": "transfer_gb", "timestamp": now.isoformat(), "value": "0.04"}
    assert ingest_batch(engine, catalog, [event]).accepted == 1
    assert customer_entitlements(engine, catalog, "acme", now=now).meters[0].blocked is True
    [bar] = views.usage_view(engine, catalog, views.portal_of(engine, "acme"), now=now)["bars"]
    assert bar.state == "blocked"


def test_payment_states_by_the_customers_calendar(engine):
    # Kiritimati is UTC+14: at noon UTC on an invoice's due date, it is already the next day there
    create_customer(engine, "kiri", "Kiri Ltd", None, "EUR", "Pacific/Kiritimati", "en_US")
    t0 = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)
    for amount in ("20.00", "30.00", "40.00", "50.00", "60.00"):
        grant_credit(engine, "kiri", Decimal(amount), "EUR", paid=True, now=t0)  # a finalized top-up invoice each
    open_, partly, paid, void, uncollectible = sorted(list_invoices(engine, customer="kiri"), key=lambda i: i.total)
    record_payment(engine, partly.id, Decimal("10.00"), method="bank_transfer", now=t0)
    record_payment(engine, paid.id, Decimal("40.00"), method="bank_transfer", now=t0)
    set_invoice_status(engine, void.id, InvoiceStatus.VOID)
    set_invoice_status(engine, uncollectible.id, InvoiceStatus.UNCOLLECTIBLE)
    portal = views.portal_of(engine, "kiri")

    def states(now: dt.datetime) -> dict[str, str]:
        return {row["total"]: row["state"] for row in views.invoices_view(engine, portal, now=now)["invoices"]}

    assert states(t0) == {
        "€20.00": "Open",
        "€30.00": "Partly paid",
        "€40.00": "Paid",
        "€50.00": "Void",
        "€60.00": "Uncollectible",
    }
    assert open_.due_date is not None
    on_due_date_utc = dt.datetime.combine(open_.due_date, dt.time(12), dt.UTC)
    assert states(on_due_date_utc)["€20.00"] == "Overdue"  # was Open: the day was read in UTC
    assert states(on_due_date_utc - dt.timedelta(hours=14))["€20.00"] == "Open"  # midnight there: still due today


def test_the_credit_page_issues_a_due_automatic_top_up_with_the_configured_invoice_settings(engine):
    configured = FinalizeSettings(invoice_number_format="TOPUP-{year}-{seq:04d}", seller=Party(name="Northwind"))
    create_customer(engine, "acme", "Acme GmbH", None, "EUR", "UTC", "en_US")
    t0 = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)
    grant = grant_credit(
        engine, "acme", Decimal("20.00"), "EUR", paid=True, expires=dt.date(2026, 3, 10), settings=configured, now=t0
    )
    record_payment(engine, grant.invoice_id, Decimal("20.00"), method="bank_transfer", now=t0)
    configure(engine, "acme", "EUR", auto_topup=(Decimal("10.00"), Decimal("50.00")), settings=configured, now=t0)
    assert len(list_invoices(engine, customer="acme")) == 1  # 20.00 of paid credit: no top-up due yet
    # the paid credit expires on 10 March: opening the credit page on the 11th issues the top-up
    portal = views.portal_of(engine, "acme")
    views.credits_view(engine, portal, configured, now=dt.datetime(2026, 3, 11, 12, tzinfo=dt.UTC))
    topup = max(list_invoices(engine, customer="acme"), key=lambda i: i.id)
    assert topup.total == Decimal("50.00")
    assert topup.number == "TOPUP-2026-0002" and topup.seller.name == "Northwind"  # were INV-…, no seller


def test_the_upcoming_invoice_adds_up_with_tax_inside_tax_inclusive_prices(engine, live_catalog_path):
    catalog = load_catalog_or_raise(str(live_catalog_path))
    create_customer(engine, "acme", "Acme GmbH", None, "EUR", "UTC", "de_DE", tax_rate=19, country="DE")
    subscribe(engine, catalog, "acme", "gross", dt.date(2026, 3, 1))
    shown = views.upcoming_view(
        engine, catalog, views.portal_of(engine, "acme"), now=dt.datetime(2026, 3, 15, tzinfo=dt.UTC)
    )
    # 119.00 with the tax inside: 119 × 19 / 119 = 19.00 of it is tax, nothing is added to the total; as the
    # invoice prints it, the tax is a row under the total ("of which … (19 %)"), not one added above it
    assert shown["rows"] == [("Zwischensumme", "119,00\xa0€")]  # was also ("Steuer", "19,00 €") above 119,00 €
    assert shown["total"] == "119,00\xa0€"
    [(label, amount)] = shown["included"]
    assert label.startswith("davon ") and "19\xa0%" in label and amount == "19,00\xa0€"


def test_this_period_is_the_customers_month_in_its_timezone_and_a_customer_without_subscription_sees_none(
    engine, live_catalog_path
):
    catalog = load_catalog_or_raise(str(live_catalog_path))
    create_customer(engine, "tokyo", "Tokyo KK", None, "EUR", "Asia/Tokyo", "en_US")
    create_customer(engine, "idle", "Idle Ltd", None, "EUR", "UTC", "en_US")
    subscribe(engine, catalog, "tokyo", "metered", dt.date(2026, 1, 1))
    # 31 March 15:30 UTC is 1 April 00:30 in Tokyo: April's usage there
    when = dt.datetime(2026, 3, 31, 15, 30, tzinfo=dt.UTC)
    event = {"id": "t1", "customer": "tokyo", "meter": "transfer_gb", "timestamp": when.isoformat(), "value": "8000"}
    assert ingest_batch(engine, catalog, [event]).accepted == 1
    now = dt.datetime(2026, 3, 31, 16, tzinfo=dt.UTC)
    shown = views.usage_view(engine, catalog, views.portal_of(engine, "tokyo"), now=now)
    assert shown["period"] == "April 2026" and shown["as_of"] == "Apr 1, 2026, 1:00:00\u202fAM"
    [bar] = shown["bars"]
    assert (bar.state, bar.description) == ("warning", "8,000\xa0GB of 10,000\xa0GB used (80%) · hard limit")
    assert shown["total"] == "€80.00"  # 8,000 GB × 0.01
    idle = views.portal_of(engine, "idle")
    assert views.usage_view(engine, catalog, idle, now=now)["bars"] == []
    upcoming = views.upcoming_view(engine, catalog, idle, now=now)
    assert (upcoming["lines"], upcoming["total"], upcoming["coupons"]) == ([], "€0.00", [])
    assert views.account_view(engine, catalog, idle, now=now)["subscriptions"] == []


def test_the_access_log_hides_the_token_of_a_portal_link(live_server, acme):
    import logging

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    access = logging.getLogger("uvicorn.access")
    keep, level = Keep(), access.level
    access.addHandler(keep)
    access.setLevel(logging.INFO)
    try:
        with httpx.Client(base_url=live_server.url, timeout=60) as client:
            assert client.get(acme.url, follow_redirects=True).status_code == 200
    finally:
        access.removeHandler(keep)
        access.setLevel(level)
    lines = [record.getMessage() for record in records]
    assert any('"GET /portal/link/… HTTP/1.1" 303' in line for line in lines), lines
    assert any('"GET /portal/ HTTP/1.1" 200' in line for line in lines), lines
    assert not any(acme.token in line for line in lines)  # was written in full


def test_revoking_a_customers_links_ends_its_open_portal_and_every_link_made_before_but_no_later_one(
    live_server, acme, engine_of_live
):
    from billing.apikeys import create_api_key

    _, admin = create_api_key(engine_of_live, "finance")
    _, globex_key = create_api_key(engine_of_live, "globex's system", "globex")
    theirs = create_portal_link(engine_of_live, get_settings(), "globex")
    finance = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=live_server.url, timeout=60, follow_redirects=True) as browser:
        assert browser.get(acme.url).status_code == 200  # the portal open, its cookie held
        with httpx.Client(base_url=live_server.url, timeout=60) as api:
            assert api.post(
                "/v1/customers/acme/portal_links/revoke", headers={"Authorization": f"Bearer {globex_key}"}
            ).status_code == 404  # a key bound to another customer
            assert api.post("/v1/customers/nobody/portal_links/revoke", headers=finance).status_code == 404
            revoked = api.post("/v1/customers/acme/portal_links/revoke", headers=finance)
            assert revoked.status_code == 200, revoked.text
            body = revoked.json()
            assert (body["object"], body["customer"]) == ("portal_link_revocation", "acme")
            at = dt.datetime.fromisoformat(body["revoked_at"].replace("Z", "+00:00"))
            assert dt.timedelta(0) <= dt.datetime.now(dt.UTC) - at < dt.timedelta(minutes=5)
            made = api.post("/v1/customers/acme/portal_links", headers=finance)
            assert made.status_code == 201
        # the open portal is refused on its next page, told in its language that the link has ended
        ended = browser.get("/portal/invoices")
        _refused(ended)
        assert "Dieser Link ist abgelaufen" in ended.text
    with httpx.Client(base_url=live_server.url, timeout=60, follow_redirects=True) as client:
        _refused(client.get(acme.url))  # the link itself, opened again
    for url in (made.json()["url"], theirs.url):  # made after it; another customer's
        with httpx.Client(base_url=live_server.url, timeout=60, follow_redirects=True) as client:
            assert client.get(url).status_code == 200, url


def test_an_invoice_whose_number_holds_a_slash_is_listed_and_downloaded(engine, db_url, live_catalog_path):
    settings = Settings(
        database_url=db_url,
        catalog=str(live_catalog_path),
        portal_secret="a-portal-secret-of-at-least-32-characters",
        invoice_number_format="RE/{year}/{seq:04d}",
    )
    create_customer(engine, "acme", "Acme GmbH", None, "EUR", "UTC", "en_US")
    configured = FinalizeSettings(invoice_number_format=settings.invoice_number_format, seller=Party(name="Northwind"))
    grant_credit(engine, "acme", Decimal("20.00"), "EUR", paid=True, settings=configured)
    [number] = [i.number for i in list_invoices(engine, customer="acme")]
    year = number.split("/")[1]
    assert number == f"RE/{year}/0001" and year.isdigit()
    link = create_portal_link(engine, settings, "acme")
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as client:
        assert client.get(f"/portal/link/{link.token}").status_code == 200
        assert f'href="/portal/invoices/{number}.pdf"' in client.get("/portal/invoices").text
        pdf = client.get(f"/portal/invoices/{number}.pdf")  # was the 404 page: the route took no "/"
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
        assert pdf.headers["content-disposition"] == f'attachment; filename="RE-{year}-0001.pdf"'
        assert client.get(f"/portal/invoices/RE/{year}/0002.pdf").status_code == 404
