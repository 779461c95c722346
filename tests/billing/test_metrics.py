"""Revenue and churn figures as pure functions: hand-worked scenarios, boundaries and properties, no database.

Each scenario states its plans as a TOML string and its history as a few subscriptions; every expected number is
worked out by hand in a comment next to it.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from itertools import count, pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.core.domain import CancelReason, Customer, Subscription, SubscriptionStatus
from billing.core.metrics import (
    JSON_KEYS,
    InvoiceSummary,
    MetricsError,
    compute_figures,
    figures_row,
    format_rate,
    plan_mrr,
    ratio,
)
from billing.core.periods import month
from invoices.model import InvoiceKind, InvoiceStatus
from pricing_plans.loader import loads_catalog
from pricing_plans.models import Catalog

CATALOG_TOML = """
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

[plans.scale]                       # MRR 100 fee + 200 commitment minimum = 300
name = "Scale"
currency = "USD"
subscription = { fee = 100 }
commitment = { minimum = 200 }
charges = [{ meter = "calls", model = "per_unit", unit_amount = 0.01 }]

[plans.annual]                      # MRR 1000 / 12 = 83.333…
name = "Annual"
currency = "USD"
interval = "year"
subscription = { fee = 1000 }

[plans.annual_commit]               # MRR (1000 + 600) / 12 = 133.333…
name = "Annual with commitment"
currency = "USD"
interval = "year"
subscription = { fee = 1000 }
commitment = { minimum = 600 }
charges = [{ meter = "calls", model = "per_unit", unit_amount = 0.01 }]

[plans.euro]
name = "Euro"
currency = "EUR"
subscription = { fee = 50 }
"""


def _catalog() -> Catalog:
    catalog, problems = loads_catalog(CATALOG_TOML, "test.toml")
    assert not problems and catalog is not None
    return catalog


CATALOG = _catalog()
MARCH = month(2026, 3)  # [2026-03-01, 2026-04-01)
FEBRUARY = month(2026, 2)
D = dt.date


class History:
    """A small builder: customers and subscriptions with ids handed out in order."""

    def __init__(self) -> None:
        self.customers: list[Customer] = []
        self.subscriptions: list[Subscription] = []
        self._ids = count(1)

    def customer(self, external_id: str, currency: str = "USD") -> str:
        self.customers.append(
            Customer(
                id=len(self.customers) + 1,
                external_id=external_id,
                name=external_id,
                email=None,
                currency=currency,
                timezone="UTC",
                locale="en_US",
                address=(),
                webhook_url=None,
                tax_rate=Decimal(0),
            )
        )
        return external_id

    def sub(
        self,
        customer: str,
        plan: str,
        start: dt.date,
        end: dt.date | None = None,
        reason: str | None = "voluntary",
        version: int = 1,
    ) -> None:
        owner = next(c for c in self.customers if c.external_id == customer)
        self.subscriptions.append(
            Subscription(
                id=next(self._ids),
                customer_id=owner.id,
                customer_external_id=customer,
                plan_code=plan,
                plan_version=version,
                start_date=start,
                end_date=end,
                status=SubscriptionStatus.ACTIVE if end is None else SubscriptionStatus.CANCELLED,
                cancel_reason=None if end is None or reason is None else CancelReason(reason),
                previous_subscription_id=None,
            )
        )

    def change(self, customer: str, old_plan: str, new_plan: str, since: dt.date, on: dt.date) -> None:
        """A plan change: the old subscription ends on ``on`` with no reason, the new one starts on ``on``."""
        self.sub(customer, old_plan, since, on, reason=None)
        self.sub(customer, new_plan, on)


def invoice(
    customer: str,
    period: dt.date,
    lines: dict[str, str],
    *,
    status: InvoiceStatus = InvoiceStatus.FINALIZED,
    discount: str = "0",
    currency: str = "USD",
) -> InvoiceSummary:
    amounts = {kind: Decimal(amount) for kind, amount in lines.items()}
    return InvoiceSummary(
        number=None if status is InvoiceStatus.DRAFT else f"INV-{customer}-{period}",
        kind=InvoiceKind.INVOICE,
        status=status,
        customer_external_id=customer,
        currency=currency,
        period_start=period,
        subtotal=sum(amounts.values(), Decimal(0)),
        discount=Decimal(discount),
        line_amounts=tuple(sorted(amounts.items())),
    )


def credit_note(customer: str, refers_to: str, period: dt.date, net: str) -> InvoiceSummary:
    return InvoiceSummary(
        number=f"CN-{refers_to}",
        kind=InvoiceKind.CREDIT_NOTE,
        status=InvoiceStatus.FINALIZED,
        customer_external_id=customer,
        currency="USD",
        period_start=period,
        subtotal=Decimal(net),
        refers_to=refers_to,
        line_amounts=(("credit", Decimal(net)),),
    )


# -- the whole scenario ------------------------------------------------------------------------------------


def scenario() -> tuple[History, list[InvoiceSummary]]:
    """March 2026, every movement, two currencies. MRR on 03-01 (m0) and on 04-01 (m1) per customer:

    USD  a  basic since 01-10, open                                      m0 10   m1 10   no movement
         b  basic → pro on 03-15 (upgrade mid-month)                     m0 10   m1 30   expansion 20
         c  pro → basic on 03-20 (downgrade mid-month)                   m0 30   m1 10   contraction 20
         d  basic, cancelled voluntary, ends 03-10                       m0 10   m1 0    churned 10, voluntary
         e  pro ends 04-01 involuntary + basic ends 03-25 voluntary      m0 40   m1 0    churned 40, involuntary
         f  scale (100 fee + 200 commitment) from 03-05                  m0 0    m1 300  new 300
         g  basic 2025-11-01 → 2026-01-01, back on annual from 03-12     m0 0    m1 83.33…  reactivation
         h  basic → pro on 04-01 (a plan change on P.end: not churn)     m0 10   m1 30   expansion 20
         i  left on 02-01                                                not counted
         j  basic 03-05 → 03-25 (came and went within the month)        not counted
    EUR  k  euro since 01-01                                             m0 50   m1 50
         l  euro from 03-01 (starting on P.start counts at the start)    m0 50   m1 50
    """
    h = History()
    for name in "abcdefghij":
        h.customer(name)
    h.customer("k", "EUR")
    h.customer("l", "EUR")
    h.sub("a", "basic", D(2026, 1, 10))
    h.change("b", "basic", "pro", D(2026, 1, 1), D(2026, 3, 15))
    h.change("c", "pro", "basic", D(2026, 2, 1), D(2026, 3, 20))
    h.sub("d", "basic", D(2026, 2, 1), D(2026, 3, 10), "voluntary")
    h.sub("e", "pro", D(2026, 1, 1), D(2026, 4, 1), "involuntary")
    h.sub("e", "basic", D(2026, 1, 1), D(2026, 3, 25), "voluntary")
    h.sub("f", "scale", D(2026, 3, 5))
    h.sub("g", "basic", D(2025, 11, 1), D(2026, 1, 1), "voluntary")
    h.sub("g", "annual", D(2026, 3, 12))
    h.change("h", "basic", "pro", D(2026, 2, 15), D(2026, 4, 1))
    h.sub("i", "basic", D(2025, 12, 1), D(2026, 2, 1), "voluntary")
    h.sub("j", "basic", D(2026, 3, 5), D(2026, 3, 25), "voluntary")
    h.sub("k", "euro", D(2026, 1, 1))
    h.sub("l", "euro", D(2026, 3, 1))

    feb, mar = FEBRUARY.start, MARCH.start
    invoices = [
        # February (P − 1), USD: a 10, b 25, c 30 − 5 discount − 5 credit note = 20, d void (0), e 40 uncollectible.
        invoice("a", feb, {"subscription": "10.00"}),
        invoice("b", feb, {"subscription": "10.00", "usage": "15.00"}, status=InvoiceStatus.PAID),
        invoice("c", feb, {"subscription": "30.00"}, discount="5.00"),
        credit_note("c", f"INV-c-{feb}", feb, "5.00"),
        invoice("d", feb, {"subscription": "10.00"}, status=InvoiceStatus.VOID),
        invoice("e", feb, {"subscription": "40.00"}, status=InvoiceStatus.UNCOLLECTIBLE),
        # March (P), USD: a 10 + 2 late usage = 12, b 20 + 10 usage = 30, c 16, e draft (0),
        # f 100 + 150 commitment true-up + 50 usage = 300, g 83.33 − 3.33 credit line = 80.
        invoice("a", mar, {"subscription": "10.00", "late_usage": "2.00"}),
        invoice("b", mar, {"subscription": "20.00", "usage": "10.00"}),
        invoice("c", mar, {"subscription": "16.00"}),
        invoice("e", mar, {"subscription": "40.00"}, status=InvoiceStatus.DRAFT),
        invoice("f", mar, {"subscription": "100.00", "commitment": "150.00", "usage": "50.00"}),
        invoice("g", mar, {"subscription": "83.33", "credit": "-3.33"}),
        # EUR: k 50 in February and March; l 50 in March.
        invoice("k", feb, {"subscription": "50.00"}, currency="EUR"),
        invoice("k", mar, {"subscription": "50.00"}, currency="EUR"),
        invoice("l", mar, {"subscription": "50.00"}, currency="EUR"),
    ]
    return h, invoices


def test_the_scenario_gives_every_figure_worked_out_by_hand():
    h, invoices = scenario()
    eur, usd = compute_figures(h.customers, h.subscriptions, CATALOG, invoices, [MARCH])  # currencies sorted
    assert (eur.currency, usd.currency) == ("EUR", "USD")
    assert figures_row(usd) == {
        "period": "2026-03",
        "currency": "USD",
        "period_open": "false",
        "customers_start": "6",  # a b c d e h
        "customers_end": "6",  # a b c f g h
        "customers_new": "2",  # f, g
        "customers_churned": "2",  # d, e
        "customers_churned_voluntary": "1",  # d
        "customers_churned_involuntary": "1",  # e: one of its two subscriptions ended involuntary
        "customer_churn_rate": "33.3",  # 2 / 6
        "crr": "66.7",  # (6 − 2) / 6
        "free_customers_start": "0",  # every plan has a fee
        "free_customers_end": "0",
        "free_to_paid_conversions": "0",
        "free_to_paid_conversion_rate": "n/a",  # no free customer at the start
        "mrr_start": "110.00",  # 10 + 10 + 30 + 10 + 40 + 10
        "mrr_end": "463.33",  # 10 + 30 + 10 + 300 + 83.33… + 30
        "mrr_new": "300.00",  # f: 100 fee + 200 commitment minimum
        "mrr_expansion": "40.00",  # b 20 + h 20
        "mrr_contraction": "20.00",  # c
        "mrr_churned": "50.00",  # d 10 + e 40
        "mrr_reactivation": "83.33",  # g: 1000 / 12
        "revenue_churn_rate": "27.3",  # (50 + 20 − 40) / 110 = 27.27 %
        "nrr": "72.7",  # (110 + 40 − 20 − 50) / 110 = 80 / 110
        "grr": "36.4",  # (110 − 20 − 50) / 110 = 40 / 110
        "billed_revenue": "438.00",  # 12 + 30 + 16 + 300 + 80
        "nrr_billed": "61.1",  # base a b c e (d void): (12 + 30 + 16 + 0) / (10 + 25 + 20 + 40) = 58 / 95
        "grr_billed": "53.7",  # (10 + 25 + 16 + 0) / 95 = 51 / 95
        "nrr_billed_3m": "n/a",  # nobody billed from December back to October: no cohort
        "grr_billed_3m": "n/a",
        "nrr_billed_12m": "n/a",
        "grr_billed_12m": "n/a",
        "arpa": "87.60",  # 438 / 5 billed customers (a b c f g)
        "clv": "262.80",  # 87.60 / (2 / 6)
        "coupons_issued": "0",
        "coupons_redeemed": "0",
        "coupon_redemption_rate": "n/a",  # no coupon issued
    }
    assert usd.customers_reactivated == 1  # g
    # 110 + 300 + 83.333333333333 + 40 − 20 − 50 = 463.333333333333, exactly at full precision
    assert (usd.mrr_reactivation, usd.mrr_end) == (Decimal("83.333333333333"), Decimal("463.333333333333"))
    assert (
        usd.mrr_start + usd.mrr_new + usd.mrr_reactivation + usd.mrr_expansion - usd.mrr_contraction - usd.mrr_churned
        == usd.mrr_end
    )
    # billed split: subscription 10 + 20 + 16 + 100 + 83.33 = 229.33; usage 2 (late) + 10 + 50 = 62;
    # commitment 150; credits −3.33; 229.33 + 62 + 150 − 3.33 = 438
    assert (usd.billed.subscription, usd.billed.usage, usd.billed.commitment, usd.billed.adjustments) == (
        Decimal("229.33"),
        Decimal("62.00"),
        Decimal("150.00"),
        Decimal("-3.33"),
    )
    assert (usd.billed_customers, usd.billed_base.customers) == (5, 4)

    row = figures_row(eur)
    # k and l at start and end, nothing moves: churn 0 / 2, CRR 2 / 2, MRR 100 → 100
    assert [row[k] for k in ("customers_start", "customers_end", "customers_new", "customers_churned")] == [
        "2",
        "2",
        "0",
        "0",
    ]
    assert [row[k] for k in ("customer_churn_rate", "crr", "mrr_start", "mrr_end", "nrr", "grr")] == [
        "0.0",
        "100.0",
        "100.00",
        "100.00",
        "100.0",
        "100.0",
    ]
    assert row["revenue_churn_rate"] == "0.0"
    # billed 50 + 50; ARPA 100 / 2 = 50; base k: 50 / 50; CLV: churn is zero → n/a
    assert [row[k] for k in ("billed_revenue", "arpa", "nrr_billed", "grr_billed", "clv")] == [
        "100.00",
        "50.00",
        "100.0",
        "100.0",
        "n/a",
    ]


def test_the_end_of_a_period_is_the_start_of_the_next():
    h, invoices = scenario()
    figures = compute_figures(h.customers, h.subscriptions, CATALOG, invoices, [FEBRUARY, MARCH, month(2026, 4)])
    usd = [f for f in figures if f.currency == "USD"]
    for before, after in pairwise(usd):
        assert (before.customers_end, before.mrr_end) == (after.customers_start, after.mrr_start)
    # February: on 02-01 a, b, c and d (both starting that very day) and e are active: S = 5. i ends on 02-01, so
    # it is not active on February's start: it churned in January, not in February. h starts 02-15: N = 1.
    february = usd[0]
    assert (february.customers_start, february.customers_churned, february.customers_new) == (5, 0, 1)


def test_the_domain_example_s_100_e_100_n_10():
    """domain.md: S = 100, E = 100, N = 10 → CRR = (100 − 10) / 100 = 90 %, churn = C / S = 10 / 100 = 10 %."""
    h = History()
    for i in range(100):
        h.sub(h.customer(f"old{i:03}"), "basic", D(2026, 1, 1), D(2026, 3, 20) if i < 10 else None)
    for i in range(10):
        h.sub(h.customer(f"new{i:03}"), "basic", D(2026, 3, 10))
    (usd,) = compute_figures(h.customers, h.subscriptions, CATALOG, [], [MARCH])
    row = figures_row(usd)
    assert (row["customers_start"], row["customers_end"], row["customers_new"]) == ("100", "100", "10")
    assert (row["customers_churned"], row["crr"], row["customer_churn_rate"]) == ("10", "90.0", "10.0")
    # MRR 1000 → 1000: 10 churned × 10, 10 new × 10; revenue churn 100 / 1000 = 10 %, NRR 90 %, GRR 90 %
    assert (row["mrr_churned"], row["mrr_new"], row["revenue_churn_rate"], row["nrr"], row["grr"]) == (
        "100.00",
        "100.00",
        "10.0",
        "90.0",
        "90.0",
    )


def test_an_empty_period_is_all_zeros_and_undefined_ratios():
    h, invoices = scenario()
    empty = month(2024, 6)  # before anyone subscribed or was invoiced
    eur, usd = compute_figures(h.customers, h.subscriptions, CATALOG, invoices, [empty])
    row = figures_row(usd)
    assert {k: v for k, v in row.items() if k not in ("period", "currency")} == {
        "period_open": "false",
        "customers_start": "0",
        "customers_end": "0",
        "customers_new": "0",
        "customers_churned": "0",
        "customers_churned_voluntary": "0",
        "customers_churned_involuntary": "0",
        "customer_churn_rate": "n/a",
        "crr": "n/a",
        "free_customers_start": "0",
        "free_customers_end": "0",
        "free_to_paid_conversions": "0",
        "free_to_paid_conversion_rate": "n/a",
        "mrr_start": "0.00",
        "mrr_end": "0.00",
        "mrr_new": "0.00",
        "mrr_expansion": "0.00",
        "mrr_contraction": "0.00",
        "mrr_churned": "0.00",
        "mrr_reactivation": "0.00",
        "revenue_churn_rate": "n/a",
        "nrr": "n/a",
        "grr": "n/a",
        "billed_revenue": "0.00",
        "nrr_billed": "n/a",
        "grr_billed": "n/a",
        "nrr_billed_3m": "n/a",
        "grr_billed_3m": "n/a",
        "nrr_billed_12m": "n/a",
        "grr_billed_12m": "n/a",
        "arpa": "n/a",
        "clv": "n/a",
        "coupons_issued": "0",
        "coupons_redeemed": "0",
        "coupon_redemption_rate": "n/a",  # no coupon issued
    }
    assert figures_row(eur)["mrr_start"] == "0.00"
    assert compute_figures([], [], CATALOG, [], [empty]) == []  # no customer, no invoice: no currency at all


def test_a_period_with_no_customers_at_start_has_undefined_rates_but_counts_the_new_ones():
    h = History()
    h.sub(h.customer("first"), "pro", D(2026, 3, 10))
    h.sub(h.customer("yearly"), "annual_commit", D(2026, 3, 20))
    (usd,) = compute_figures(h.customers, h.subscriptions, CATALOG, [], [MARCH])
    row = figures_row(usd)
    # S = 0, N = E = 2; MRR 0 → 30 + 133.33… (1000 / 12 + 600 / 12)
    assert (row["customers_start"], row["customers_new"], row["customers_end"]) == ("0", "2", "2")
    assert (row["mrr_new"], row["mrr_end"]) == ("163.33", "163.33")
    for key in ("customer_churn_rate", "crr", "revenue_churn_rate", "nrr", "grr", "nrr_billed", "grr_billed", "clv"):
        assert row[key] == "n/a", key


def test_net_expansion_gives_negative_revenue_churn_and_nrr_above_100():
    h = History()
    h.change(h.customer("up"), "basic", "scale", D(2026, 1, 1), D(2026, 3, 15))  # 10 → 300: expansion 290
    h.sub(h.customer("gone"), "pro", D(2026, 1, 1), D(2026, 3, 31), "voluntary")  # 30 → 0: churned 30
    (usd,) = compute_figures(h.customers, h.subscriptions, CATALOG, [], [MARCH])
    row = figures_row(usd)
    # start 40; revenue churn (30 + 0 − 290) / 40 = −650 %; NRR (40 + 290 − 30) / 40 = 750 %; GRR 10 / 40 = 25 %
    assert (row["revenue_churn_rate"], row["nrr"], row["grr"]) == ("-650.0", "750.0", "25.0")


def test_mrr_of_a_plan_normalizes_yearly_fees_and_commitments_to_a_month():
    assert plan_mrr(CATALOG.plan("basic")) == Decimal(10)
    assert plan_mrr(CATALOG.plan("scale")) == Decimal(300)  # 100 + 200
    assert str(plan_mrr(CATALOG.plan("annual"))) == "83.333333333333"  # 1000 / 12, to 12 decimal places
    assert str(plan_mrr(CATALOG.plan("annual_commit"))) == "133.333333333333"  # 1000 / 12 + 600 / 12


def test_rates_are_percent_with_one_decimal_and_zero_denominators_are_na():
    assert ratio(1, 0) is None and format_rate(None) == "n/a"
    assert format_rate(ratio(9, 10)) == "90.0"
    assert format_rate(ratio(1, 3)) == "33.3"
    assert format_rate(ratio(2, 3)) == "66.7"
    assert format_rate(Decimal("0.0005")) == "0.1"  # 0.05 % rounds half up
    assert format_rate(Decimal("-0.0001")) == "0.0"  # never "-0.0"
    assert format_rate(ratio(-13, 2)) == "-650.0"


def test_the_json_row_has_exactly_the_contract_keys():
    h, invoices = scenario()
    for figures in compute_figures(h.customers, h.subscriptions, CATALOG, invoices, [FEBRUARY, MARCH]):
        row = figures_row(figures)
        assert tuple(row) == JSON_KEYS
        assert all(isinstance(value, str) for value in row.values())


def test_figures_refuse_a_plan_missing_from_the_catalog_or_in_another_currency():
    h = History()
    h.sub(h.customer("x"), "basic", D(2026, 1, 1), version=7)
    with pytest.raises(MetricsError, match="version 7"):
        compute_figures(h.customers, h.subscriptions, CATALOG, [], [MARCH])
    h = History()
    h.sub(h.customer("y", "EUR"), "basic", D(2026, 1, 1))
    with pytest.raises(MetricsError, match="never mix currencies"):
        compute_figures(h.customers, h.subscriptions, CATALOG, [], [MARCH])


def test_a_credit_note_counts_against_the_period_of_the_invoice_it_credits():
    h = History()
    h.sub(h.customer("a"), "pro", D(2026, 1, 1))
    invoices = [
        invoice("a", FEBRUARY.start, {"subscription": "30.00"}),
        credit_note("a", f"INV-a-{FEBRUARY.start}", MARCH.start, "12.50"),  # dated March, credits February
        invoice("a", MARCH.start, {"subscription": "30.00"}),
    ]
    feb, mar = compute_figures(h.customers, h.subscriptions, CATALOG, invoices, [FEBRUARY, MARCH])
    # February 30 − 12.50 = 17.50; March 30; NRR billed 30 / 17.50 = 171.4 %, GRR billed min(30, 17.5) / 17.5
    assert (figures_row(feb)["billed_revenue"], figures_row(mar)["billed_revenue"]) == ("17.50", "30.00")
    assert (figures_row(mar)["nrr_billed"], figures_row(mar)["grr_billed"]) == ("171.4", "100.0")


# -- properties --------------------------------------------------------------------------------------------

PLANS = ("basic", "pro", "scale", "annual", "annual_commit")
DAY0 = D(2026, 1, 1)

subscription_spec = st.tuples(
    st.integers(0, 5),  # customer
    st.sampled_from(PLANS),
    st.integers(0, 120),  # start, days after DAY0
    st.one_of(st.none(), st.integers(0, 90)),  # length in days (0: covers no day); None: open
    st.sampled_from([None, "voluntary", "involuntary"]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(subscription_spec, max_size=14))
def test_mrr_movements_add_up_and_customers_balance_for_any_history(specs):
    h = History()
    for i in range(6):
        h.customer(f"c{i}")
    for customer, plan, start, length, reason in specs:
        begin = DAY0 + dt.timedelta(days=start)
        end = None if length is None else begin + dt.timedelta(days=length)
        h.sub(f"c{customer}", plan, begin, end, reason if end is not None else None)
    periods = [month(2026, m) for m in range(1, 6)]
    figures = compute_figures(h.customers, h.subscriptions, CATALOG, [], periods)
    assert len(figures) == len(periods)
    for f in figures:
        assert (
            f.mrr_start + f.mrr_new + f.mrr_reactivation + f.mrr_expansion - f.mrr_contraction - f.mrr_churned
            == f.mrr_end
        )
        assert f.customers_end == f.customers_start - f.customers_churned + f.customers_new
        assert f.customers_churned == f.customers_churned_voluntary + f.customers_churned_involuntary
        assert 0 <= f.customers_reactivated <= f.customers_new
        assert tuple(figures_row(f)) == JSON_KEYS  # no ratio raises, whatever the zeros
    for before, after in pairwise(figures):
        assert (before.customers_end, before.mrr_end) == (after.customers_start, after.mrr_start)
