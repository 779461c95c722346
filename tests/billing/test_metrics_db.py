"""Revenue and churn figures through the database and the ``billing metrics`` command, on SQLite and PostgreSQL.

Customers and subscriptions are made through ``billing.customers``, invoices through ``invoices.store``; every
expected figure is worked out by hand next to it.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from billing import customers as service
from billing.cli import app
from billing.config import get_settings
from billing.core.metrics import JSON_KEYS, billed_by_customer, figures_row
from billing.core.periods import month
from billing.db import session_scope
from billing.metrics_store import figures_from_database, load_metric_inputs
from invoices import store
from invoices.model import DraftInvoice, InvoiceLine, InvoiceStatus, Party
from pricing_plans.loader import loads_catalog
from pricing_plans.models import Catalog

CATALOG = """
[meters.calls]
name = "Calls"
aggregation = "count"

[plans.basic]
name = "Basic"
currency = "USD"
subscription = { fee = 10 }

[plans.pro]
name = "Pro"
currency = "USD"
subscription = { fee = 30 }

[plans.annual]                      # MRR 1200 / 12 = 100
name = "Annual"
currency = "USD"
interval = "year"
subscription = { fee = 1200 }

[plans.euro]                        # MRR 20 fee + 30 commitment minimum = 50
name = "Euro"
currency = "EUR"
subscription = { fee = 20 }
commitment = { minimum = 30 }
charges = [{ meter = "calls", model = "per_unit", unit_amount = 0.01 }]
"""

FEBRUARY, MARCH = month(2026, 2), month(2026, 3)
SETTINGS = store.FinalizeSettings(seller=Party(name="Seller Ltd."))
runner = CliRunner()


@pytest.fixture
def catalog() -> Catalog:
    loaded, problems = loads_catalog(CATALOG, "metrics.toml")
    assert not problems and loaded is not None
    return loaded


def _invoice(
    engine: Engine, customer: str, currency: str, period: dt.date, lines: dict[str, str], tax: str = "0"
) -> str:
    """Write and finalize one invoice; returns its number."""
    end = month(period.year, period.month).end
    draft = DraftInvoice(
        billing_key=f"period:{customer}:{period:%Y-%m}",
        customer=Party(name=customer.upper(), external_id=customer),
        currency=currency,
        locale="en_US",
        period_start=period,
        period_end=end,
        lines=tuple(InvoiceLine(kind=kind, description=kind, amount=Decimal(a)) for kind, a in lines.items()),
        tax_rate=Decimal(tax),
    )
    with session_scope(engine) as session:
        invoice_id = store.upsert_draft(session, draft).invoice_id
        (number,) = store.finalize_many(session, [invoice_id], SETTINGS, end)
    return number


def populate(engine: Engine, catalog: Catalog) -> None:
    """USD: a basic open; b basic → pro on 03-15; c pro, cancelled involuntary on 03-20; d annual from 03-10.
    EUR: e euro from 02-01, cancelled voluntary on 04-01 (March's end: churn in March).

    Invoices (net of tax): February a 10 (19 % tax on top), b 10, c 30, e 50.
    March a 10 + 5.50 usage, b 25 less a 5.00 credit note, c 30 then void, d 100; e 50, paid.
    """
    for external_id, currency in (("a", "USD"), ("b", "USD"), ("c", "USD"), ("d", "USD"), ("e", "EUR")):
        service.create_customer(
            engine, external_id, name=external_id.upper(), email=None, currency=currency, timezone="UTC"
        )
    service.subscribe(engine, catalog, "a", "basic", dt.date(2026, 1, 1))
    b = service.subscribe(engine, catalog, "b", "basic", dt.date(2026, 1, 1))
    service.change_plan(engine, catalog, b.id, "pro", dt.date(2026, 3, 15))
    c = service.subscribe(engine, catalog, "c", "pro", dt.date(2026, 1, 1))
    service.cancel_subscription(engine, c.id, dt.date(2026, 3, 20), "involuntary")
    service.subscribe(engine, catalog, "d", "annual", dt.date(2026, 3, 10))
    e = service.subscribe(engine, catalog, "e", "euro", dt.date(2026, 2, 1))
    service.cancel_subscription(engine, e.id, dt.date(2026, 4, 1), "voluntary")

    feb, mar = FEBRUARY.start, MARCH.start
    _invoice(engine, "a", "USD", feb, {"subscription": "10.00"}, tax="19")
    _invoice(engine, "b", "USD", feb, {"subscription": "10.00"})
    _invoice(engine, "c", "USD", feb, {"subscription": "30.00"})
    _invoice(engine, "e", "EUR", feb, {"subscription": "50.00"})
    _invoice(engine, "a", "USD", mar, {"subscription": "10.00", "usage": "5.50"}, tax="19")
    b_march = _invoice(engine, "b", "USD", mar, {"subscription": "25.00"})
    c_march = _invoice(engine, "c", "USD", mar, {"subscription": "30.00"})
    _invoice(engine, "d", "USD", mar, {"subscription": "100.00"})
    e_march = _invoice(engine, "e", "EUR", mar, {"subscription": "50.00"})
    with session_scope(engine) as session:
        store.create_credit_note(session, b_march, Decimal("5.00"), "goodwill", SETTINGS, dt.date(2026, 4, 10))
        store.set_status(session, store.get_invoice(session, c_march).id, InvoiceStatus.VOID)
        store.set_status(session, store.get_invoice(session, e_march).id, InvoiceStatus.PAID)
    # a draft never counts
    with session_scope(engine) as session:
        store.upsert_draft(
            session,
            DraftInvoice(
                billing_key="period:d:2026-03-extra",
                customer=Party(name="D", external_id="d"),
                currency="USD",
                locale="en_US",
                period_start=mar,
                period_end=MARCH.end,
                lines=(InvoiceLine(kind="subscription", description="x", amount=Decimal("999.00")),),
            ),
        )


EXPECTED_USD_MARCH = {
    "period": "2026-03",
    "currency": "USD",
    "period_open": "false",
    "customers_start": "3",  # a b c
    "customers_end": "3",  # a b d
    "customers_new": "1",  # d
    "customers_churned": "1",  # c
    "customers_churned_voluntary": "0",
    "customers_churned_involuntary": "1",
    "customer_churn_rate": "33.3",  # 1 / 3
    "crr": "66.7",  # (3 − 1) / 3
    "free_customers_start": "0",
    "free_customers_end": "0",
    "free_to_paid_conversions": "0",
    "free_to_paid_conversion_rate": "n/a",
    "mrr_start": "50.00",  # 10 + 10 + 30
    "mrr_end": "140.00",  # 10 + 30 + 1200 / 12
    "mrr_new": "100.00",  # d
    "mrr_expansion": "20.00",  # b: 10 → 30 (a plan change, not churn)
    "mrr_contraction": "0.00",
    "mrr_churned": "30.00",  # c
    "mrr_reactivation": "0.00",
    "revenue_churn_rate": "20.0",  # (30 + 0 − 20) / 50
    "nrr": "80.0",  # (50 + 20 − 0 − 30) / 50
    "grr": "40.0",  # (50 − 0 − 30) / 50
    "billed_revenue": "135.50",  # a 15.50 (tax excluded) + b 25 − 5 credit note + d 100; c void, d's draft not
    "nrr_billed": "71.0",  # base a b c (billed in February): (15.50 + 20 + 0) / (10 + 10 + 30) = 35.50 / 50
    "grr_billed": "40.0",  # (10 + 10 + 0) / 50
    "nrr_billed_3m": "n/a",  # nobody billed from October to December
    "grr_billed_3m": "n/a",
    "nrr_billed_12m": "n/a",
    "grr_billed_12m": "n/a",
    "arpa": "45.17",  # 135.50 / 3 (a b d)
    "clv": "135.50",  # 45.1666… / (1 / 3)
    "coupons_issued": "0",
    "coupons_redeemed": "0",
    "coupon_redemption_rate": "n/a",  # no coupon issued
}

EXPECTED_EUR_MARCH = {
    "period": "2026-03",
    "currency": "EUR",
    "period_open": "false",
    "customers_start": "1",
    "customers_end": "0",  # e's subscription ends on 04-01, March's end
    "customers_new": "0",
    "customers_churned": "1",
    "customers_churned_voluntary": "1",
    "customers_churned_involuntary": "0",
    "customer_churn_rate": "100.0",
    "crr": "0.0",
    "free_customers_start": "0",
    "free_customers_end": "0",
    "free_to_paid_conversions": "0",
    "free_to_paid_conversion_rate": "n/a",
    "mrr_start": "50.00",  # 20 fee + 30 commitment minimum
    "mrr_end": "0.00",
    "mrr_new": "0.00",
    "mrr_expansion": "0.00",
    "mrr_contraction": "0.00",
    "mrr_churned": "50.00",
    "mrr_reactivation": "0.00",
    "revenue_churn_rate": "100.0",
    "nrr": "0.0",
    "grr": "0.0",
    "billed_revenue": "50.00",  # paid counts
    "nrr_billed": "100.0",  # 50 / 50
    "grr_billed": "100.0",
    "nrr_billed_3m": "n/a",  # nobody billed from October to December
    "grr_billed_3m": "n/a",
    "nrr_billed_12m": "n/a",
    "grr_billed_12m": "n/a",
    "arpa": "50.00",
    "clv": "50.00",  # 50 / 100 %
    "coupons_issued": "0",
    "coupons_redeemed": "0",
    "coupon_redemption_rate": "n/a",  # no coupon issued
}


def test_figures_from_the_database(engine, catalog):
    populate(engine, catalog)
    eur, usd = figures_from_database(engine, catalog, [MARCH])
    assert figures_row(usd) == EXPECTED_USD_MARCH
    assert figures_row(eur) == EXPECTED_EUR_MARCH
    # billed split: subscription 10 + 25 + 100 = 135, usage 5.50, credits −5 → 135.50
    assert (usd.billed.subscription, usd.billed.usage, usd.billed.adjustments) == (
        Decimal("135.00"),
        Decimal("5.50"),
        Decimal("-5.00"),
    )


def test_loading_reads_the_invoices_that_may_bill_the_range_and_the_23_months_before(engine, catalog):
    populate(engine, catalog)
    with session_scope(engine) as session:
        inputs = load_metric_inputs(session, [MARCH])
        later = load_metric_inputs(session, [month(2028, 3)])
    assert len(inputs.customers) == 5 and len(inputs.subscriptions) == 6  # b's plan change made two
    # April 2024 to March 2026: February's 4 and March's 5 invoices, the draft, the credit note against b's March
    # invoice, and the opening drafts that subscribing wrote: a, b, c (01-01), d (its annual fee's year starts on
    # 01-01), e (02-01), b's pro (03-15); drafts never count in the figures
    assert len(inputs.invoices) == 17
    (note,) = [i for i in inputs.invoices if i.refers_to is not None]
    assert (note.subtotal, note.refers_to) == (Decimal("5.00"), "INV-2026-000006")  # b's March invoice
    (opening_d,) = [i for i in inputs.invoices if i.customer_external_id == "d" and i.scope.value == "opening"]
    # d's yearly fee is for 2026 but its service starts on 03-10: it counts in March
    assert (opening_d.period_start, opening_d.service_start, opening_d.billed_month) == (
        dt.date(2026, 1, 1),
        dt.date(2026, 3, 10),
        dt.date(2026, 3, 1),
    )
    # April 2026 to March 2028: the invoices whose period ends from 1 April 2026 on are read (a fee billed in
    # advance on March's invoice would count in April): March's five and its draft, but none of their lines counts
    # in that time
    assert sorted(i.period_end for i in later.invoices if i.scope.value == "period") == [dt.date(2026, 4, 1)] * 6
    assert all(month < dt.date(2026, 4, 1) for _, month in billed_by_customer(later.invoices))


@pytest.fixture
def env(cli_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine, catalog):
    """The test database, populated, and a catalog file of our own."""
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    monkeypatch.setenv("BILLING_CATALOG", str(path))
    get_settings.cache_clear()
    populate(engine, catalog)
    return cli_env


def billing(*args: str):
    return runner.invoke(app, list(args))


def test_the_command_prints_json_with_exactly_the_contract_keys(env):
    result = billing("metrics", "--period", "2026-02", "--to", "2026-03", "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    rows = json.loads(result.stdout)["data"]
    assert [(r["period"], r["currency"]) for r in rows] == [
        ("2026-02", "EUR"),
        ("2026-02", "USD"),
        ("2026-03", "EUR"),
        ("2026-03", "USD"),
    ]
    for row in rows:
        assert list(row) == list(JSON_KEYS)
        assert all(isinstance(value, str) for value in row.values())
    assert rows[3] == EXPECTED_USD_MARCH
    assert rows[2] == EXPECTED_EUR_MARCH
    # February, EUR: e starts on 02-01 (active at the start), so S = E = 1; no invoices in January → n/a
    assert (rows[0]["customers_start"], rows[0]["customers_end"], rows[0]["nrr_billed"]) == ("1", "1", "n/a")
    # February's end is March's start
    assert rows[1]["mrr_end"] == rows[3]["mrr_start"] == "50.00"


def test_the_command_prints_a_table_per_currency_and_writes_csv_and_png(env, tmp_path: Path):
    csv_path, png_path = tmp_path / "figures.csv", tmp_path / "figures.png"
    result = billing(
        "metrics", "--period", "2026-02", "--to", "2026-03", "--csv", str(csv_path), "--plot", str(png_path)
    )
    assert result.exit_code == 0, (result.stdout, result.stderr)
    out = result.stdout
    assert "Revenue and churn figures, EUR" in out and "Revenue and churn figures, USD" in out
    assert "Existing customers' billed revenue, P−1 → P" in out
    assert "CRR  (E − N) / S" in out and "66.7 %" in out and "135.50" in out
    assert f"wrote {csv_path}" in out and f"wrote {png_path}" in out
    with csv_path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [list(r) for r in rows] == [list(JSON_KEYS)] * 4
    assert rows[3] == EXPECTED_USD_MARCH
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--period", "2026-13"), "--period: expected a month as YYYY-MM"),
        (("--period", "2026-03", "--to", "March"), "--to: expected a month as YYYY-MM"),
        (("--period", "2026-03", "--to", "2026-01"), "--to 2026-01 is before --period 2026-03"),
    ],
)
def test_bad_periods_are_one_clear_error(cli_env, args, message):
    result = billing("metrics", *args)
    assert result.exit_code == 2  # a bad option value: a usage error
    assert message in result.stderr


def test_free_credit_is_no_revenue_and_a_top_up_is_none_until_used(engine, catalog):
    """a (basic, 10 a month) gets 4.00 of free credit and buys 20.00 of prepaid credit on 03-02 (a top-up invoice,
    unpaid, so the paid credit is not usable yet); its March invoice of 10.00 is paid 4.00 by the free credit.
    March's billed revenue: 10 − 4 = 6.00; the top-up's 20.00 is a liability, not revenue."""
    from billing import credits

    service.create_customer(engine, "a", name="A", email=None, currency="USD", timezone="UTC")
    service.subscribe(engine, catalog, "a", "basic", dt.date(2026, 1, 1))
    granted = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    credits.grant_credit(engine, "a", Decimal("4.00"), "USD", now=granted)
    credits.grant_credit(engine, "a", Decimal("20.00"), "USD", paid=True, settings=SETTINGS, now=granted)
    draft = DraftInvoice(
        billing_key="period:a:2026-03",
        customer=Party(name="A", external_id="a"),
        currency="USD",
        locale="en_US",
        period_start=MARCH.start,
        period_end=MARCH.end,
        lines=(InvoiceLine(kind="subscription", description="fee", amount=Decimal("10.00")),),
        tax_rate=Decimal(0),
    )
    with session_scope(engine) as session:
        invoice_id = store.upsert_draft(session, draft).invoice_id
        credits.finalize_with_credits(session, [invoice_id], SETTINGS, MARCH.end, now=dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
    (usd,) = figures_from_database(engine, catalog, [MARCH])
    assert (figures_row(usd)["billed_revenue"], usd.billed.subscription, usd.billed.adjustments) == (
        "6.00",
        Decimal("10.00"),
        Decimal("-4.00"),
    )


def test_the_figures_read_in_chunks_equal_those_read_at_once(engine, catalog):
    """The figures keep only the invoices' sums, read three months at a time (memory grows with customers ×
    months, not with invoices): the same figures as from every invoice at once."""
    from billing.core.metrics import compute_figures

    populate(engine, catalog)
    periods = [FEBRUARY, MARCH, month(2026, 4)]
    with session_scope(engine) as session:
        whole = load_metric_inputs(session, periods)
        summed = load_metric_inputs(session, periods, summed=True)
    assert summed.invoices == () and summed.billed is not None
    at_once = compute_figures(whole.customers, whole.subscriptions, catalog, whole.invoices, periods)
    chunked = compute_figures(summed.customers, summed.subscriptions, catalog, summed.billed, periods)
    assert [figures_row(f) for f in chunked] == [figures_row(f) for f in at_once]
    rows = {(f.period.label, f.currency): figures_row(f) for f in chunked}
    assert len(rows) == 6  # February to April, EUR and USD
    assert rows[("2026-03", "USD")] == EXPECTED_USD_MARCH
    assert rows[("2026-04", "USD")]["billed_revenue"] == "0.00"  # April: nothing invoiced
