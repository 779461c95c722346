"""Gross margin and markup per meter and per plan, and the repeat purchase rate: hand-worked (pure), and
`billing metrics margin --json` through the database (SQLite and PostgreSQL).

Every expected number is worked out by hand in a comment next to it.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from billing.cli import app
from billing.cli.metrics import margin_row
from billing.core.margin import LineRecord, Purchase, margins, repeat_purchases
from billing.core.periods import month
from pricing_plans.loader import loads_catalog

runner = CliRunner()
OCT = dt.date(2026, 10, 1)

CATALOG = """
[meters.calls]
name = "Calls"
aggregation = "count"
unit_cost = { USD = 0.002 }

[meters.gb]
name = "Storage"
aggregation = "max"

[plans.pro]
name = "Pro"
currency = "USD"
subscription = { fee = 30 }
subscription_cost = 4
charges = [
  { meter = "calls", model = "graduated", tiers = [{ up_to = 1000, unit_amount = 0 }, { up_to = "inf", unit_amount = 0.01 }] },
  { meter = "gb", model = "per_unit", unit_amount = 0.5 },
]

[plans.lite]
name = "Lite"
currency = "USD"
subscription = { fee = 10 }
charges = [{ meter = "calls", model = "per_unit", unit_amount = 0.005 }]
"""


def _catalog():
    catalog, problems = loads_catalog(CATALOG, "margin.toml")
    assert not problems and catalog is not None
    return catalog


def line(kind: str, plan: str, sub: int, amount: str, meter: str | None = None, quantity: str = "1") -> LineRecord:
    return LineRecord(OCT, "USD", kind, meter, plan, 1, sub, Decimal(quantity), Decimal(amount))


# October, USD:
#   subscription 1 (pro): fee 30; calls 3,000 → (3,000 − 1,000 free) × 0.01 = 20.00; gb 40 → 20.00
#   subscription 2 (pro): fee 30; calls 500 (all free) → 0.00
#   subscription 3 (lite): fee 10; calls 2,000 × 0.005 = 10.00
LINES = [
    line("subscription", "pro", 1, "30.00"),
    line("usage", "pro", 1, "20.00", "calls", "3000"),
    line("usage", "pro", 1, "20.00", "gb", "40"),
    line("subscription", "pro", 2, "30.00"),
    line("usage", "pro", 2, "0.00", "calls", "500"),
    line("subscription", "lite", 3, "10.00"),
    line("usage", "lite", 3, "10.00", "calls", "2000"),
]


def test_margin_per_meter_and_per_plan_worked_by_hand():
    rows = {(m.scope, m.key): margin_row(m) for m in margins(LINES, _catalog())}
    pick = ("units", "revenue", "cost", "gross_margin", "gross_margin_rate", "markup")
    # calls: units 3,000 + 500 + 2,000 = 5,500 (free ones cost too) × 0.002 = 11.00; revenue 20 + 0 + 10 = 30.00;
    # margin 19.00, rate 19 / 30 = 63.3 %, markup 19 / 11 = 172.7 %
    assert tuple(rows[("meter", "calls")][k] for k in pick) == ("5500", "30.00", "11.00", "19.00", "63.3", "172.7")
    # gb declares no unit cost: revenue only
    assert tuple(rows[("meter", "gb")][k] for k in pick) == ("40", "20.00", "n/a", "n/a", "n/a", "n/a")
    # pro: revenue 30 + 20 + 20 + 30 + 0 = 100.00; cost: calls 3,500 × 0.002 = 7.00 + 2 subscriptions × 4 = 15.00;
    # margin 85.00, rate 85.0 %, markup 85 / 15 = 566.7 %
    assert tuple(rows[("plan", "pro")][k] for k in pick[1:]) == ("100.00", "15.00", "85.00", "85.0", "566.7")
    # lite declares no subscription_cost: no cost figures (its calls' 4.00 alone would read as its whole cost)
    assert tuple(rows[("plan", "lite")][k] for k in pick[1:]) == ("20.00", "n/a", "n/a", "n/a", "n/a")


def test_the_design_notes_markup_example():
    # cost 300, price 450 → markup (450 − 300) / 300 = 50 %, margin rate 150 / 450 = 33.3 %
    catalog, _ = loads_catalog(CATALOG.replace("USD = 0.002", "USD = 3"), "x.toml")
    assert catalog is not None
    (calls,) = [m for m in margins([line("usage", "lite", 3, "450.00", "calls", "100")], catalog) if m.scope == "meter"]
    assert (margin_row(calls)["markup"], margin_row(calls)["gross_margin_rate"]) == ("50.0", "33.3")


def test_repeat_purchase_rate_worked_by_hand():
    d = dt.date
    purchases = [
        Purchase("a", "USD", d(2026, 9, 3)),
        Purchase("a", "USD", d(2026, 10, 2)),  # a bought in September: returning
        Purchase("b", "USD", d(2026, 10, 5)),
        Purchase("b", "USD", d(2026, 10, 20)),  # twice in October, never before: not returning
        Purchase("c", "USD", d(2026, 10, 9)),
        Purchase("e", "EUR", d(2026, 10, 9)),
    ]
    eur, usd = repeat_purchases(purchases, [month(2026, 10)])
    assert (usd.buyers, usd.returning, usd.rate) == (3, 1, Decimal(1) / 3)  # a / (a, b, c) = 33.3 %
    assert (eur.currency, eur.buyers, eur.returning, eur.rate) == ("EUR", 1, 0, Decimal(0))


@pytest.fixture
def billed(cli_env, engine, tmp_path, monkeypatch):
    """Two pro subscriptions billed in October (as above, subscriptions 1 and 2), and top-ups by a (September and
    October) and b (October)."""
    from billing import credits
    from billing import customers as service
    from billing.config import get_settings
    from billing.db import session_scope
    from invoices import store
    from invoices.model import DraftInvoice, InvoiceLine, Party
    from tests.billing.test_metrics_db import SETTINGS

    path = tmp_path / "margin.toml"
    path.write_text(CATALOG, encoding="utf-8")
    monkeypatch.setenv("BILLING_CATALOG", str(path))
    get_settings.cache_clear()
    for name in ("a", "b"):
        service.create_customer(engine, name, name=name.upper(), email=None, currency="USD", timezone="UTC")
    amounts = {"a": [("subscription", None, "1", "30.00"), ("usage", "calls", "3000", "20.00"), ("usage", "gb", "40", "20.00")],
               "b": [("subscription", None, "1", "30.00"), ("usage", "calls", "500", "0.00")]}  # fmt: skip
    for sub_id, (name, rows) in enumerate(amounts.items(), start=1):
        lines = tuple(
            InvoiceLine(kind=kind, description=kind, amount=Decimal(a), quantity=Decimal(q), meter=meter,
                        plan_code="pro", plan_version=1, subscription_id=sub_id)
            for kind, meter, q, a in rows
        )
        draft = DraftInvoice(
            billing_key=f"period:{name}:2026-10", customer=Party(name=name, external_id=name), currency="USD",
            locale="en_US", period_start=OCT, period_end=dt.date(2026, 11, 1), lines=lines, tax_rate=Decimal(0),
        )  # fmt: skip
        with session_scope(engine) as session:
            invoice_id = store.upsert_draft(session, draft).invoice_id
            store.finalize_many(session, [invoice_id], SETTINGS, dt.date(2026, 11, 1))
    for name, day in (("a", dt.datetime(2026, 9, 3, tzinfo=dt.UTC)), ("a", dt.datetime(2026, 10, 2, tzinfo=dt.UTC)),
                      ("b", dt.datetime(2026, 10, 5, tzinfo=dt.UTC))):  # fmt: skip
        credits.grant_credit(engine, name, Decimal("20.00"), "USD", paid=True, settings=SETTINGS, now=day)
    return {**cli_env, "BILLING_CATALOG": str(path)}


def test_margin_command_through_the_database(billed):
    result = runner.invoke(app, ["metrics", "margin", "--period", "2026-10", "--json"], env=billed)
    assert result.exit_code == 0, result.output
    rows = {(r["scope"], r.get("key", "")): r for r in json.loads(result.stdout)["data"]}
    # calls: 3,000 + 500 units × 0.002 = 7.00 for 20.00: margin 13.00, markup 13 / 7 = 185.7 %
    calls = rows[("meter", "calls")]
    assert (calls["units"], calls["revenue"], calls["cost"], calls["markup"]) == ("3500", "20.00", "7.00", "185.7")
    # pro: 30 + 20 + 20 + 30 + 0 = 100.00; cost 7.00 + 2 × 4 = 15.00: markup 566.7 % (the top-ups are no plan's)
    pro = rows[("plan", "pro")]
    assert (pro["revenue"], pro["cost"], pro["gross_margin_rate"], pro["markup"]) == ("100.00", "15.00", "85.0", "566.7")
    # top-ups in October: a (bought in September too) and b: 1 / 2 = 50 %
    repeat = rows[("repeat_purchases", "")]
    assert (repeat["buyers"], repeat["returning_buyers"], repeat["repeat_purchase_rate"]) == ("2", "1", "50.0")


def test_the_tax_inside_a_tax_inclusive_price_is_no_revenue():
    from billing.core.margin import net_of_tax
    from invoices.model import TaxLine

    lines = [line("subscription", "gross", 1, "119.00"), line("usage", "gross", 1, "29.99", "calls", "100"),
             line("subscription", "net", 2, "50.00")]
    # one rate, 19 %, with tax inside: 119.00 × 19 / 119 = 19.00 → 100.00; 29.99 × 19 / 119 = 4.788… → 4.79 → 25.20
    taxes = [TaxLine(rate=Decimal(19), taxable=Decimal("175.20"), amount=Decimal("33.29"), included=Decimal("23.79"))]
    fee, calls, other = net_of_tax(lines, [0, 1], taxes)
    assert (str(fee.amount), str(calls.amount), str(other.amount)) == ("100.00", "25.20", "50.00")
    # a 50 % coupon halves the tax inside the invoice, not the price before discounts: still 100.00 and 25.20
    halved = [TaxLine(rate=Decimal(19), taxable=Decimal("112.60"), amount=Decimal("21.40"), included=Decimal("11.90"))]
    assert [str(r.amount) for r in net_of_tax(lines, [0, 1], halved)] == ["100.00", "25.20", "50.00"]
    # nothing inside (an exempt buyer): the lines as they are
    assert net_of_tax(lines, [0, 1], [TaxLine(rate=Decimal(0), taxable=Decimal("198.99"), amount=Decimal(0))]) == lines
    # two rates inside: 19.00 + 7.00 = 26.00 shared by amount over 119.00 and 107.00 (226.00):
    # 26 × 119 / 226 = 13.690… → 13.69; 26 × 107 / 226 = 12.309… → 12.31; the sum is exact
    two = [line("subscription", "gross", 1, "119.00"), line("subscription", "books", 2, "107.00")]
    rates = [TaxLine(rate=Decimal(19), taxable=Decimal("100.00"), amount=Decimal("19.00"), included=Decimal("19.00")),
             TaxLine(rate=Decimal(7), taxable=Decimal("100.00"), amount=Decimal("7.00"), included=Decimal("7.00"))]
    assert [str(r.amount) for r in net_of_tax(two, [0, 1], rates)] == ["105.31", "94.69"]
    # the rounding left over goes to the largest line, not the last: 3 × 0.10 then 90.00, 1.00 of tax inside at
    # two rates: 1 × 0.10 / 90.30 = 0.0011… → 0.00 each; 90.00 takes the 1.00
    small = [line("usage", "gross", 1, "0.10", "calls", "1")] * 3 + [line("subscription", "gross", 1, "90.00")]
    split = [TaxLine(rate=Decimal(19), taxable=Decimal("1"), amount=Decimal("0.50"), included=Decimal("0.50")),
             TaxLine(rate=Decimal(7), taxable=Decimal("1"), amount=Decimal("0.50"), included=Decimal("0.50"))]
    assert [str(r.amount) for r in net_of_tax(small, [0, 1, 2, 3], split)] == ["0.10", "0.10", "0.10", "89.00"]


INCLUSIVE_CATALOG = """
[meters.calls]
name = "Calls"
aggregation = "count"
unit_cost = { EUR = 0.01 }

[plans.gross]
name = "Gross"
currency = "EUR"
tax_inclusive = true
subscription = { fee = 119, billing = "in_arrears" }
subscription_cost = 10
charges = [{ meter = "calls", model = "per_unit", unit_amount = 0.0595 }]

[plans.net]
name = "Net"
currency = "EUR"
subscription = { fee = 50, billing = "in_arrears" }
"""


def test_margin_of_a_tax_inclusive_plan_is_its_prices_less_the_tax_inside(cli_env, engine, tmp_path, monkeypatch):
    from billing.config import Settings, get_settings
    from billing.core.compose import Section, compose_period_invoice
    from billing.core.domain import Customer, Subscription, SubscriptionStatus
    from billing.db import session_scope
    from invoices import store
    from pricing_plans.charge_models.base import MeterUsage
    from tests.billing.test_metrics_db import SETTINGS

    path = tmp_path / "inclusive.toml"
    path.write_text(INCLUSIVE_CATALOG, encoding="utf-8")
    catalog, problems = loads_catalog(INCLUSIVE_CATALOG, str(path))
    assert not problems and catalog is not None
    rules = Settings(seller={"name": "Verkäufer GmbH", "country": "DE"}, tax={"rates": {"DE": 19}}).tax_rules()
    buyer = Customer(id=1, external_id="kunde", name="Kunde", email=None, currency="EUR", timezone="UTC",
                     locale="de_DE", address=(), webhook_url=None, tax_rate=Decimal(0), country="DE")
    subs = [Subscription(id=i, customer_id=1, customer_external_id="kunde", plan_code=code, plan_version=1,
                         start_date=dt.date(2026, 1, 1), end_date=None, status=SubscriptionStatus.ACTIVE,
                         cancel_reason=None, previous_subscription_id=None) for i, code in ((1, "gross"), (2, "net"))]
    usage = {"calls": MeterUsage(Decimal(1000))}
    sections = [Section(subs[0], catalog.plan("gross"), usage), Section(subs[1], catalog.plan("net"), {})]
    draft = compose_period_invoice(buyer, month(2026, 10), sections, [], catalog, tax_rules=rules)
    # gross: fee 119.00 + calls 1,000 × 0.0595 = 59.50: 178.50 with 19 % inside (28.50): 150.00 taxed;
    # net: 50.00 + 19 % = 9.50 on top. Total 178.50 + 50.00 + 9.50 = 238.00
    assert [(str(t.taxable), str(t.amount), str(t.included)) for t in draft.taxes] == [("200.00", "38.00", "28.50")]
    assert str(draft.totals.total) == "238.00"
    with session_scope(engine) as session:
        invoice_id = store.upsert_draft(session, draft).invoice_id
        store.finalize_many(session, [invoice_id], SETTINGS, dt.date(2026, 11, 1))
    monkeypatch.setenv("BILLING_CATALOG", str(path))
    get_settings.cache_clear()
    result = runner.invoke(app, ["metrics", "margin", "--period", "2026-10", "--json"],
                           env={**cli_env, "BILLING_CATALOG": str(path)})
    assert result.exit_code == 0, result.output
    rows = {(r["scope"], r.get("key", "")): r for r in json.loads(result.stdout)["data"]}
    # share 28.50 / 178.50: the fee 119.00 − 19.00 = 100.00, the calls 59.50 − 9.50 = 50.00
    # calls: revenue 50.00, cost 1,000 × 0.01 = 10.00, markup 40 / 10 = 400 %
    assert (rows[("meter", "calls")]["revenue"], rows[("meter", "calls")]["markup"]) == ("50.00", "400.0")
    # gross: revenue 150.00 (not 178.50), cost 10.00 + 10 = 20.00, margin 130.00
    gross = rows[("plan", "gross")]
    assert (gross["revenue"], gross["cost"], gross["gross_margin"]) == ("150.00", "20.00", "130.00")
    # net's prices hold no tax: its revenue is its fee
    assert rows[("plan", "net")]["revenue"] == "50.00"
