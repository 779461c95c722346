"""The right base for the figures of a usage-based business: paying customers as S/E/N/C, free customers beside
them with the free → paid conversion rate, usage-inclusive trailing NRR and GRR on billed revenue (net of free
credits; a top-up is no revenue), and an open period that is n/a everywhere. Pure: no database.

Every expected number is worked out by hand in a comment next to it.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from billing.core.metrics import (
    InvoiceSummary,
    compute_figures,
    figures_row,
    has_ended_everywhere,
)
from billing.core.periods import month
from invoices.model import InvoiceKind, InvoiceScope, InvoiceStatus
from pricing_plans.loader import loads_catalog
from pricing_plans.models import Catalog
from tests.billing.test_metrics import History

CATALOG_TOML = """
[meters.calls]
name = "Calls"
aggregation = "count"

[plans.free]
name = "Free"
currency = "USD"

[plans.payg]                        # pay as you go: MRR 0, billed for usage only
name = "Pay as you go"
currency = "USD"
charges = [{ meter = "calls", model = "per_unit", unit_amount = 0.01 }]

[plans.basic]
name = "Basic"
currency = "USD"
subscription = { fee = 10 }
"""


def _catalog() -> Catalog:
    catalog, problems = loads_catalog(CATALOG_TOML, "retention.toml")
    assert not problems and catalog is not None
    return catalog


CATALOG = _catalog()
D = dt.date
JUNE, JULY = month(2026, 6), month(2026, 7)


def billed(
    customer: str,
    year_month: tuple[int, int],
    amount: str,
    *,
    free_credits: str = "0",
    scope: InvoiceScope = InvoiceScope.PERIOD,
) -> InvoiceSummary:
    period = D(*year_month, 1)
    return InvoiceSummary(
        number=f"INV-{customer}-{period}-{scope.value}",
        kind=InvoiceKind.INVOICE,
        status=InvoiceStatus.FINALIZED,
        customer_external_id=customer,
        currency="USD",
        period_start=period,
        subtotal=Decimal(amount),
        line_amounts=(("usage", Decimal(amount)),),
        scope=scope,
        free_credits=Decimal(free_credits),
    )


def scenario() -> tuple[History, list[InvoiceSummary]]:
    """January to June 2026, USD. Paying on a month's first day = active and (MRR > 0 or billed > 0 in the month
    that just ended).

         plan                                      billed (Jan Feb Mar | Apr May Jun)     Jun 1      Jul 1
      p  payg from 2025-12-01                      10 10 10 | 20 20 20 (+ a 50 top-up)   paying     paying
      q  basic 01-01 → 05-01                       10 10 10 | 10  –  –                   gone       gone
      r  payg from 03-01                            –  – 40 |  5  5  7 − 2 free credit   paying     paying
      s  basic from 04-01                           –  –  – | 100 (119 free: 0) 100 100  paying     paying
      f  free from 01-01                            never billed                         free       free
      g  free from 02-01 → basic on 06-10           Jun 7                                free       paying
      h  payg from 05-01, no usage in May           Jun 8                                free       paying
      k  basic 04-01 → 06-20 cancelled              (no invoice needed: MRR 10)          paying     gone
      m  payg from 01-01, no usage in June          May 3                                paying     free
    """
    h = History()
    for name in "pqrsfghkm":
        h.customer(name)
    h.sub("p", "payg", D(2025, 12, 1))
    h.sub("q", "basic", D(2026, 1, 1), D(2026, 5, 1))
    h.sub("r", "payg", D(2026, 3, 1))
    h.sub("s", "basic", D(2026, 4, 1))
    h.sub("f", "free", D(2026, 1, 1))
    h.change("g", "free", "basic", D(2026, 2, 1), D(2026, 6, 10))
    h.sub("h", "payg", D(2026, 5, 1))
    h.sub("k", "basic", D(2026, 4, 1), D(2026, 6, 20))
    h.sub("m", "payg", D(2026, 1, 1))
    invoices = [
        *(billed("p", (2026, m), "10.00") for m in (1, 2, 3)),
        *(billed("p", (2026, m), "20.00") for m in (4, 5, 6)),
        billed("p", (2026, 6), "50.00", scope=InvoiceScope.CREDIT),  # a top-up: a liability, not revenue
        *(billed("q", (2026, m), "10.00") for m in (1, 2, 3, 4)),
        billed("r", (2026, 3), "40.00"),
        billed("r", (2026, 4), "5.00"),
        billed("r", (2026, 5), "5.00"),
        billed("r", (2026, 6), "7.00", free_credits="2.00"),  # 7 − 2 free = 5
        billed("s", (2026, 4), "100.00", free_credits="119.00"),  # free credit paid it all, tax too: 0, never −19
        billed("s", (2026, 5), "100.00"),
        billed("s", (2026, 6), "100.00"),
        billed("g", (2026, 6), "7.00"),
        billed("h", (2026, 6), "8.00"),
        billed("m", (2026, 5), "3.00"),
    ]
    return h, invoices


def test_paying_customers_are_the_base_and_free_customers_are_counted_beside_them():
    h, invoices = scenario()
    (june,) = compute_figures(h.customers, h.subscriptions, CATALOG, invoices, [JUNE])
    row = figures_row(june)
    assert {k: row[k] for k in row if k.startswith(("customers_", "free_", "customer_", "crr"))} == {
        "customers_start": "5",  # p r s k m
        "customers_end": "5",  # p r s g h
        "customers_new": "2",  # g h
        "customers_churned": "2",  # k (left), m (pay as you go, billed nothing in June)
        "customers_churned_voluntary": "2",
        "customers_churned_involuntary": "0",
        "customer_churn_rate": "40.0",  # 2 / 5
        "crr": "60.0",  # (5 − 2) / 5
        "free_customers_start": "3",  # f g h
        "free_customers_end": "2",  # f m
        "free_to_paid_conversions": "2",  # g (moved to basic), h (first usage billed)
        "free_to_paid_conversion_rate": "66.7",  # 2 / 3
    }
    assert june.customers_end == june.customers_start - june.customers_churned + june.customers_new
    # f, a free customer, never counts in S, E, N or C: a free user leaving is not customer churn


def test_trailing_revenue_retention_is_cohort_based_on_billed_revenue():
    h, invoices = scenario()
    (june,) = compute_figures(h.customers, h.subscriptions, CATALOG, invoices, [JUNE])
    row = figures_row(june)
    # billed revenue of June: p 20 + r 5 + s 100 + g 7 + h 8 = 140 (p's top-up is not revenue)
    assert row["billed_revenue"] == "140.00"
    # Trailing 3 months: the cohort billed in January–March is p 30, q 30, r 40 = 100 (s and m came later);
    # in April–June they are billed p 60, q 10, r 5 + 5 + 5 = 15: 85 → NRR 85 / 100 = 85 %;
    # GRR caps each at its base: p min(60, 30) = 30, q 10, r 15: 55 → 55 %
    assert (june.trailing_3.customers, june.trailing_3.previous, june.trailing_3.current) == (
        3,
        Decimal("100.00"),
        Decimal("85.00"),
    )
    assert (row["nrr_billed_3m"], row["grr_billed_3m"]) == ("85.0", "55.0")
    # Month on month: base = billed in May: p 20, r 5, s 100, m 3 = 128; in June p 20, r 5, s 100, m 0 = 125
    assert (row["nrr_billed"], row["grr_billed"]) == ("97.7", "97.7")  # 125 / 128 = 97.66 %
    # 12 months: the base (July 2024 – June 2025) lies before the first billing run (January 2026): n/a, not 0 %
    assert (row["nrr_billed_12m"], row["grr_billed_12m"]) == ("n/a", "n/a")


def test_a_free_credit_is_no_revenue_and_never_makes_revenue_negative():
    h, invoices = scenario()
    (april,) = compute_figures(h.customers, h.subscriptions, CATALOG, invoices, [month(2026, 4)])
    # April: p 20 + q 10 + r 5 + s (100 − min(119, 100)) = 35; s is not a billed customer
    assert (figures_row(april)["billed_revenue"], april.billed_customers) == ("35.00", 3)
    assert april.billed.adjustments == Decimal("-100.00")  # the free credit, among credits & discounts


def test_the_base_months_before_the_first_billing_run_give_no_cohort():
    h, invoices = scenario()
    periods = [month(2026, m) for m in (3, 4, 5, 6)]
    figures = compute_figures(h.customers, h.subscriptions, CATALOG, invoices, periods)
    # the 3-month bases of March, April and May (October–December … December–February) reach before January,
    # the first billing run: incomplete, so n/a rather than a ratio over a partial base; June's is January–March
    assert [figures_row(f)["nrr_billed_3m"] for f in figures] == ["n/a", "n/a", "n/a", "85.0"]
    # month on month, March's base is February (complete): p 10 + q 10 = 20 → March p 10 + q 10 = 20: 100 %
    assert figures_row(figures[0])["nrr_billed"] == "100.0"


def test_an_open_period_is_n_a_everywhere():
    h, invoices = scenario()
    mid_july = dt.datetime(2026, 7, 15, tzinfo=dt.UTC)
    (july,) = compute_figures(h.customers, h.subscriptions, CATALOG, invoices, [JULY], as_of=mid_july)
    row = figures_row(july)
    rates = [k for k in row if k.endswith(("_rate", "crr", "nrr", "grr")) or "nrr_" in k or "grr_" in k]
    assert len(rates) == 13  # churn, CRR, conversion, revenue churn, NRR, GRR, 2 billed, 4 trailing, coupons
    assert {row[k] for k in rates} == {"n/a"}  # never "0.0"
    assert (row["period_open"], row["arpa"], row["clv"]) == ("true", "n/a", "n/a")
    (june,) = compute_figures(h.customers, h.subscriptions, CATALOG, invoices, [JUNE], as_of=mid_july)
    assert (figures_row(june)["period_open"], figures_row(june)["crr"]) == ("false", "60.0")


def test_a_period_is_closed_once_it_has_ended_in_every_timezone():
    # June ends on 07-01 at 00:00 local time; the last place to get there is UTC−12, at 07-01 12:00 UTC
    assert not has_ended_everywhere(JUNE, dt.datetime(2026, 7, 1, 11, 59, 59, tzinfo=dt.UTC))
    assert has_ended_everywhere(JUNE, dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC))
