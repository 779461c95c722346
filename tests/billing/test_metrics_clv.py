"""Customer lifetime value on gross margin when the catalog declares costs: hand-worked (pure), and the cost of
goods summed by the database (SQLite and PostgreSQL).

Every expected number is worked out by hand in a comment next to it.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from billing.core.margin import costs_of_goods
from billing.core.metrics import compute_figures, figures_row
from billing.core.periods import month
from billing.db import session_scope
from billing.metrics_store import costs_from_database, figures_from_database
from tests.billing.test_margin import _catalog, billed  # noqa: F401 (the fixture)
from tests.billing.test_metrics import CATALOG, MARCH, History, invoice

D = dt.date


def _ten_customers() -> tuple[History, list]:
    """Ten customers on basic (10.00 a month) since January; one leaves on 20 March. Each is billed 30.00 for March
    (fee 10.00 + usage 20.00)."""
    h = History()
    for i in range(10):
        h.sub(h.customer(f"c{i}"), "basic", D(2026, 1, 1), D(2026, 3, 20) if i == 0 else None)
    invoices = [invoice(f"c{i}", MARCH.start, {"subscription": "10.00", "usage": "20.00"}) for i in range(10)]
    return h, invoices


def test_clv_is_on_billed_revenue_without_costs_and_on_gross_margin_with_them():
    h, invoices = _ten_customers()
    (plain,) = compute_figures(h.customers, h.subscriptions, CATALOG, invoices, [MARCH])
    # billed 10 × 30.00 = 300.00 from 10 billed customers: ARPA 30.00; churn of paying customers 1 / 10 = 10 %
    # CLV = 30.00 / 0.10 = 300.00; no cost declared: no gross margin rate
    row = figures_row(plain)
    assert (row["billed_revenue"], row["arpa"], row["customer_churn_rate"], row["clv"]) == (
        "300.00",
        "30.00",
        "10.0",
        "300.00",
    )
    assert plain.gross_margin_rate is None
    costs = {(MARCH.start, "USD"): Decimal("120.00")}
    (margin,) = compute_figures(h.customers, h.subscriptions, CATALOG, invoices, [MARCH], costs=costs)
    # cost of goods 120.00: gross margin 300 − 120 = 180.00, rate 180 / 300 = 60 %
    # CLV = 180.00 / 10 billed customers / 0.10 = 180.00; ARPA stays on revenue (30.00)
    assert margin.gross_margin_rate == Decimal("0.6")
    assert (figures_row(margin)["clv"], figures_row(margin)["arpa"]) == ("180.00", "30.00")


def test_cost_of_goods_adds_the_meters_unit_costs_and_the_declared_subscription_costs():
    catalog = _catalog()  # calls cost 0.002 a unit in USD; gb has no cost; pro costs 4 a subscription, lite none
    oct_ = D(2026, 10, 1)
    usage = [(oct_, "USD", "calls", Decimal("3500")), (oct_, "USD", "gb", Decimal("40"))]
    subscriptions = [(oct_, "USD", "pro", 1, 2), (oct_, "USD", "lite", 1, 5)]
    # 3,500 × 0.002 = 7.00 + 2 × 4 = 8.00 → 15.00 (gb and lite declare nothing)
    assert costs_of_goods(usage, subscriptions, catalog) == {(oct_, "USD"): Decimal("15.000")}
    assert costs_of_goods([(oct_, "USD", "gb", Decimal("40"))], [], catalog) == {}


def test_the_database_sums_the_cost_of_goods_and_the_figures_carry_it(billed, engine):  # noqa: F811
    catalog = _catalog()
    october = month(2026, 10)
    with session_scope(engine) as session:
        costs = costs_from_database(session, catalog, [october])
    # a: 3,000 calls, b: 500 calls → 3,500 × 0.002 = 7.00; two pro subscriptions billed a fee × 4 = 8.00
    assert costs == {(october.start, "USD"): Decimal("15.000")}
    (usd,) = figures_from_database(engine, catalog, [october])
    # billed a 30 + 20 + 20 = 70.00, b 30.00 → 100.00; margin (100 − 15) / 100 = 85 %
    assert (usd.billed_revenue, usd.cost, usd.gross_margin_rate) == (
        Decimal("100.00"),
        Decimal("15.000"),
        Decimal("0.85"),
    )


def test_without_churn_clv_is_n_a_and_a_negative_margin_gives_a_negative_clv():
    h = History()
    for i in range(4):
        h.sub(h.customer(f"c{i}"), "basic", D(2026, 1, 1))
    invoices = [invoice(f"c{i}", MARCH.start, {"subscription": "10.00"}) for i in range(4)]
    costs = {(MARCH.start, "USD"): Decimal("50.00")}
    (kept,) = compute_figures(h.customers, h.subscriptions, CATALOG, invoices, [MARCH], costs=costs)
    # nobody leaves: churn 0 / 4, CLV would divide by zero: n/a; gross margin (40 − 50) / 40 = −25 %
    assert (figures_row(kept)["customer_churn_rate"], figures_row(kept)["clv"]) == ("0.0", "n/a")
    assert kept.gross_margin_rate == Decimal("-0.25")
    h.sub(h.customer("gone"), "basic", D(2026, 1, 1), D(2026, 3, 20))
    invoices.append(invoice("gone", MARCH.start, {"subscription": "10.00"}))
    (lost,) = compute_figures(h.customers, h.subscriptions, CATALOG, invoices, [MARCH], costs=costs)
    # margin 50 − 50 = 0 over 5 billed customers / churn 1 / 5: CLV 0.00; with a cost of 75.00: −25.00 / 5 = −5.00
    # a billed customer, / 0.2 = −25.00
    assert figures_row(lost)["clv"] == "0.00"
    costs = {(MARCH.start, "USD"): Decimal("75.00")}
    (losing,) = compute_figures(h.customers, h.subscriptions, CATALOG, invoices, [MARCH], costs=costs)
    assert figures_row(losing)["clv"] == "-25.00"
