"""Fee timing, rule by rule: which fee period a billing period's fee covers, which invoice carries an in-arrears
or an in-advance fee, the opening invoice's fee, and the adjustment of a fee paid in advance for a fee period a
subscription left early. Pure: no database."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from billing.core import fees
from billing.core.domain import SubscriptionTerms
from billing.core.periods import Period, month
from invoices.model import LineKind
from pricing_plans.loader import loads_catalog

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.arrears]
name = "Arrears"
currency = "USD"
[plans.arrears.subscription]
fee = 31.00
billing = "in_arrears"

[plans.advance]
name = "Advance"
currency = "USD"
[plans.advance.subscription]
fee = 31.00
billing = "in_advance"

[plans.yearly]
name = "Yearly"
currency = "USD"
interval = "year"
[plans.yearly.subscription]
fee = 365.00
billing = "in_advance"

[plans.free]
name = "Free"
currency = "USD"
[[plans.free.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.01
"""

MARCH, APRIL = month(2026, 3), month(2026, 4)
YEAR_2026 = Period(dt.date(2026, 1, 1), dt.date(2027, 1, 1))


@pytest.fixture(scope="module")
def catalog():
    loaded, problems = loads_catalog(CATALOG, "fees.toml")
    assert problems == []
    return loaded


def terms(start: dt.date, end: dt.date | None = None) -> SubscriptionTerms:
    return SubscriptionTerms(start, end)


def test_billing_kind_and_fee_period(catalog):
    assert fees.billed_in_arrears(catalog.plan("arrears")) and not fees.billed_in_advance(catalog.plan("arrears"))
    assert fees.billed_in_advance(catalog.plan("advance")) and not fees.billed_in_arrears(catalog.plan("advance"))
    assert not fees.billed_in_advance(catalog.plan("free")) and not fees.billed_in_arrears(catalog.plan("free"))
    assert fees.fee_period_for(SubscriptionTerms(dt.date(2026, 1, 1)), catalog.plan("advance"), MARCH) == MARCH
    assert fees.fee_period_for(SubscriptionTerms(dt.date(2026, 1, 1)), catalog.plan("yearly"), MARCH) == YEAR_2026


def test_rate_fee_prorates_by_active_days(catalog):
    # 31.00 × 15/31 (17–31 March) = 15.00
    fee = fees.rate_fee(terms(dt.date(2026, 3, 17)), catalog.plan("advance"), MARCH)
    assert fee is not None
    assert (fee.kind, fee.amount, fee.service_start, fee.service_end) == (
        LineKind.SUBSCRIPTION, Decimal("15.00"), MARCH.start, MARCH.end,
    )  # fmt: skip
    assert fee.description == "Advance subscription, 2026-03 (in advance)"
    assert fee.details.extra == {"service_period": {"start": "2026-03-01", "end": "2026-04-01"}, "billing": "in_advance"}
    assert fees.rate_fee(terms(dt.date(2026, 3, 1)), catalog.plan("free"), MARCH) is None


def test_an_arrears_fee_is_on_the_invoice_of_the_period_it_ends_in_or_the_subscription_does(catalog):
    plan = catalog.plan("arrears")
    assert fees.arrears_fee_due(terms(dt.date(2026, 1, 1)), plan, MARCH)
    assert fees.arrears_fee_due(terms(dt.date(2026, 1, 1), end=dt.date(2026, 3, 10)), plan, MARCH)
    assert not fees.arrears_fee_due(terms(dt.date(2026, 1, 1)), catalog.plan("advance"), MARCH)


def test_an_advance_fee_is_on_the_invoice_of_the_period_before(catalog):
    plan = catalog.plan("advance")
    assert fees.advance_fee_period(terms(dt.date(2026, 1, 1)), plan, MARCH) == APRIL
    # ends with March: nothing for April
    assert fees.advance_fee_period(terms(dt.date(2026, 1, 1), end=APRIL.start), plan, MARCH) is None
    # starts on 1 April: April's fee is on its opening invoice
    assert fees.advance_fee_period(terms(APRIL.start), plan, MARCH) is None
    assert fees.advance_fee_period(terms(dt.date(2026, 1, 1)), catalog.plan("arrears"), MARCH) is None
    # a yearly fee: on December's invoice only
    yearly = catalog.plan("yearly")
    assert fees.advance_fee_period(terms(dt.date(2025, 6, 1)), yearly, MARCH) is None
    assert fees.advance_fee_period(terms(dt.date(2025, 6, 1)), yearly, month(2025, 12)) == YEAR_2026


def test_the_opening_fee_is_the_first_fee_period_prorated_from_the_start(catalog):
    start = terms(dt.date(2026, 3, 17))
    assert fees.opening_fee_period(start, catalog.plan("advance")) == MARCH
    assert fees.opening_fee_period(start, catalog.plan("yearly")) == YEAR_2026
    fee = fees.opening_fee(start, catalog.plan("advance"))
    assert fee is not None and fee.amount == Decimal("15.00")
    # 365.00 × 290/365 days (17 March to 31 December) = 290.00
    yearly = fees.opening_fee(start, catalog.plan("yearly"))
    assert yearly is not None and yearly.amount == Decimal("290.00")
    assert fees.opening_fee(start, catalog.plan("arrears")) is None


def test_an_advance_fee_of_a_fee_period_left_early_is_adjusted(catalog):
    plan = catalog.plan("advance")
    leaving = terms(dt.date(2026, 1, 1), end=dt.date(2026, 3, 11))
    assert fees.fee_period_to_adjust(leaving, plan, MARCH) == MARCH
    assert fees.fee_period_to_adjust(terms(dt.date(2026, 1, 1), end=MARCH.start), plan, MARCH) == MARCH
    assert fees.fee_period_to_adjust(terms(dt.date(2026, 1, 1), end=APRIL.start), plan, MARCH) is None
    assert fees.fee_period_to_adjust(terms(dt.date(2026, 1, 1)), plan, MARCH) is None
    assert fees.fee_period_to_adjust(leaving, catalog.plan("arrears"), MARCH) is None
    # 10 days of 31 ran: 10.00 due, 31.00 billed: a credit of 21.00
    adjustment = fees.fee_adjustment(leaving, plan, MARCH, Decimal("31.00"))
    assert adjustment is not None and adjustment.amount == Decimal("-21.00")
    assert adjustment.description == "Advance subscription, 2026-03: adjusted to the end on 2026-03-11"
    assert adjustment.details.extra["adjustment"] == {
        "due": "10.00",
        "billed_in_advance": "31.00",
        "explanation": "31.00 × 10/31 days; 31.00 billed in advance; difference -21.00",
    }
    assert fees.fee_adjustment(leaving, plan, MARCH, Decimal("10.00")) is None  # nothing to settle
    assert fees.fee_adjustment(leaving, plan, MARCH, None) is None  # nothing was billed in advance


def test_a_fee_paid_with_a_discount_gives_back_its_share_of_what_was_paid_adjustment_after_adjustment(catalog):
    from dataclasses import replace

    from invoices.model import InvoiceLine

    plan = catalog.plan("yearly")  # 365.00 a year in advance
    start = dt.date(2026, 1, 1)
    # the year billed with 50 % off: 365.00 at the price, 182.50 paid
    billed_on = [
        InvoiceLine(kind=LineKind.SUBSCRIPTION, description="fee", amount=Decimal("365.00"), subscription_id=1,
                    service_start=start, plan_code="yearly"),
        InvoiceLine(kind=LineKind.DISCOUNT, description="Coupon HALF", amount=Decimal("-182.50")),
    ]
    billed, paid = fees.billed_and_paid([billed_on], {(1, start)})
    assert (billed[(1, start)], paid[(1, start)]) == (Decimal("365.00"), Decimal("182.50"))
    # ended after 182 days: 182.00 due at the price, −183.00; of what was paid, 183/365 comes back: −91.50
    first = fees.fee_adjustment(terms(start, dt.date(2026, 7, 2)), plan, month(2026, 7), billed[(1, start)],
                                paid=paid[(1, start)])
    assert first is not None and str(first.amount) == "-91.50" and fees.refund_of_paid(first)
    assert first.details.extra["adjustment"]["paid_after_discounts"] == "182.50"
    # a second adjustment of the same year starts from 182.00 at the price (the refund counts as the −183.00 it
    # stood for) and 91.00 paid: ended after 100 days instead, 100.00 due, −82.00, of which 91/182 comes back,
    # −41.00; paid in all 182.50 − 91.50 − 41.00 = 50.00, half of the 100 days' price
    refunded = replace(first, subscription_id=1, service_start=start)
    billed, paid = fees.billed_and_paid([billed_on, [refunded]], {(1, start)})
    assert (billed[(1, start)], paid[(1, start)]) == (Decimal("182.00"), Decimal("91.00"))
    second = fees.fee_adjustment(terms(start, dt.date(2026, 4, 11)), plan, month(2026, 4), billed[(1, start)],
                                 paid=paid[(1, start)])
    assert second is not None and str(second.amount) == "-41.00"
    # a fee that grows again is billed at the price, as before (the coupon in force, if any, reduces it there)
    grown = fees.fee_adjustment(terms(start), plan, month(2026, 4), Decimal("182.00"), paid=Decimal("91.00"))
    assert grown is not None and str(grown.amount) == "183.00" and not fees.refund_of_paid(grown)


def test_period_fees_put_together(catalog):
    advance, arrears = catalog.plan("advance"), catalog.plan("arrears")
    leaving = terms(dt.date(2026, 1, 1), end=dt.date(2026, 3, 11))
    covering = fees.rate_fee(leaving, arrears, MARCH)
    due = fees.period_fees(leaving, arrears, MARCH, covering_fee=covering, billed_in_advance_fee=None)
    assert (due.in_arrears, due.adjustment, due.in_advance) == (covering, None, None)
    due = fees.period_fees(leaving, advance, MARCH, covering_fee=None, billed_in_advance_fee=Decimal("31.00"))
    assert due.in_arrears is None and due.in_advance is None
    assert due.adjustment is not None and due.adjustment.amount == Decimal("-21.00")
    staying = terms(dt.date(2026, 1, 1))
    due = fees.period_fees(staying, advance, MARCH, covering_fee=None, billed_in_advance_fee=None)
    assert due.in_advance is not None and (due.in_advance.service_start, due.in_advance.amount) == (
        APRIL.start, Decimal("31.00"),
    )  # fmt: skip
    assert fees.period_fees(staying, catalog.plan("free"), MARCH, covering_fee=None, billed_in_advance_fee=None) == (
        fees.PeriodFees()
    )
