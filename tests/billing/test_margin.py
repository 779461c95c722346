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
