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
    billed, paid = fees.billed_and_paid([(billed_on, Decimal(0))], {(1, start)})
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
    billed, paid = fees.billed_and_paid([(billed_on, Decimal(0)), ([refunded], Decimal(0))], {(1, start)})
    assert (billed[(1, start)], paid[(1, start)]) == (Decimal("182.00"), Decimal("91.00"))
    second = fees.fee_adjustment(terms(start, dt.date(2026, 4, 11)), plan, month(2026, 4), billed[(1, start)],
                                 paid=paid[(1, start)])
    assert second is not None and str(second.amount) == "-41.00"
    # a fee that grows again is billed at the price, as before (the coupon in force, if any, reduces it there)
    grown = fees.fee_adjustment(terms(start), plan, month(2026, 4), Decimal("182.00"), paid=Decimal("91.00"))
    assert grown is not None and str(grown.amount) == "183.00" and not fees.refund_of_paid(grown)


@pytest.mark.parametrize(("credited", "paid"), [("0", "28.00"), ("72.00", "28.00"), ("86.00", "14.00"),
                                              ("100.00", "0.00")])
def test_a_credit_note_is_taken_from_the_invoices_other_charges_before_its_fees(credited, paid):
    from invoices.model import InvoiceLine

    start = dt.date(2026, 2, 1)
    lines = [
        InvoiceLine(kind=LineKind.SUBSCRIPTION, description="fee", amount=Decimal("28.00"), subscription_id=1,
                    service_start=start, plan_code="ahead"),
        InvoiceLine(kind=LineKind.USAGE, description="calls", amount=Decimal("72.00"), subscription_id=1,
                    service_start=dt.date(2026, 1, 1), plan_code="ahead"),
    ]
    # a note up to the usage's 72.00 leaves the fee paid in full; 86.00 takes 14.00 of it too; 100.00 all of it
    billed, left = fees.billed_and_paid([(lines, Decimal(credited))], {(1, start)})
    assert (str(billed[(1, start)]), f"{left[(1, start)]:.2f}") == ("28.00", paid)


def test_a_credit_note_beyond_the_other_charges_is_taken_from_each_fee_in_proportion():
    from invoices.model import InvoiceLine

    start = dt.date(2026, 2, 1)
    lines = [
        InvoiceLine(kind=LineKind.SUBSCRIPTION, description="fee", amount=Decimal(amount), subscription_id=sub,
                    service_start=start, plan_code=plan)
        for sub, plan, amount in [(1, "a", "30.00"), (2, "b", "10.00")]
    ] + [InvoiceLine(kind=LineKind.USAGE, description="calls", amount=Decimal("5.00"), plan_code="a")]
    # 25.00 back: 5.00 from the usage, the other 20.00 from the 40.00 of fees, half of each
    _, left = fees.billed_and_paid([(lines, Decimal("25.00"))], {(1, start), (2, start)})
    assert (f"{left[(1, start)]:.2f}", f"{left[(2, start)]:.2f}") == ("15.00", "5.00")


def _invoice(lines: list, rate: str = "0"):
    from invoices.model import Invoice, InvoiceKind, InvoiceStatus, Party, compute_totals

    totals = compute_totals(lines, "USD", Decimal(rate))
    return Invoice(
        id=1, number="INV-1", kind=InvoiceKind.INVOICE, status=InvoiceStatus.FINALIZED, billing_key="k",
        customer=Party(name="Acme"), seller=Party(name="Seller"), currency="USD", locale="en_US",
        period_start=dt.date(2026, 3, 1), period_end=dt.date(2026, 4, 1), lines=tuple(lines), subtotal=totals.subtotal,
        discount=totals.discount, tax_rate=Decimal(rate), tax=totals.tax, total=totals.total,
    )


def test_what_later_invoices_gave_back_of_a_fee_counts_in_the_share_the_invoice_billed_of_it_with_their_tax():
    from invoices.model import InvoiceLine

    start = dt.date(2026, 3, 1)

    def fee(amount: str, sub: int = 1) -> InvoiceLine:
        return InvoiceLine(kind=LineKind.SUBSCRIPTION, description="fee", amount=Decimal(amount), subscription_id=sub,
                           service_start=start, plan_code="seats")

    billing = _invoice([fee("30.00"), fee("12.00", sub=2), InvoiceLine(
        kind=LineKind.USAGE, description="calls", amount=Decimal("-5.00"), subscription_id=1)])
    # subscription 1's fee: 30.00 here, 10.00 more for a seat added on another invoice, 20.00 + 10 % given back on a
    # third: this invoice billed 3/4 of it, so 16.50 of the 22.00 refund is its; subscription 2's 12.00 + 10 % given
    # back in full, 13.20: 29.70 (a fee it did not bill counts nothing)
    others = [_invoice([fee("10.00")]), _invoice([fee("-20.00"), fee("-12.00", sub=2)], rate="10"),
              _invoice([fee("-99.00", sub=3)])]
    assert f"{fees.given_back_elsewhere(billing, others):.2f}" == "29.70"
    assert str(fees.given_back_elsewhere(billing, [])) == "0"


def test_a_credit_note_counts_in_the_terms_of_the_lines_it_credits():
    from invoices.model import TaxLine

    # 15.50 credited of 31.00 + 10 % (14.09 + 1.41): the lines hold the net, 14.09 of them credited
    exclusive = [TaxLine(rate=Decimal(10), taxable=Decimal("31.00"), amount=Decimal("3.10"))]
    note = [TaxLine(rate=Decimal(10), taxable=Decimal("14.09"), amount=Decimal("1.41"))]
    assert f"{fees.credited_as_billed(exclusive, note):.2f}" == "14.09"
    # of 31.00 with the 10 % inside (28.18 + 2.82): the lines hold the tax too, 15.50 of them credited
    inclusive = [TaxLine(rate=Decimal(10), taxable=Decimal("28.18"), amount=Decimal("2.82"), included=Decimal("2.82"))]
    assert f"{fees.credited_as_billed(inclusive, note):.2f}" == "15.50"
    assert str(fees.credited_as_billed(inclusive, [])) == "0"


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
