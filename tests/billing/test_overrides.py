"""Negotiated prices against a real database (SQLite and PostgreSQL): an override taking effect on a period
boundary, the finalized invoice before it unchanged, the period after rated with the negotiated tiers, the fee
billed in advance adjusted, dates refused, versions kept, the opening invoice repriced."""

from __future__ import annotations

import datetime as dt

import pytest

from billing import customers as service
from billing import overrides
from billing.core.periods import month
from billing.db import session_scope
from billing.errors import BillingInputError
from billing.invoicing import finalize_opening_invoices
from billing.metering import meter_specs
from billing.preview import customer_usage
from billing.run import finalize_period, run_billing
from billing.thresholds import check_thresholds
from invoices import store
from invoices.render import render_pdf
from meters import ingest
from pricing_plans.loader import loads_catalog, loads_override
from tests.pdf import pdf_text

pytestmark = pytest.mark.db

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
unit = "call"

[meters.sms]
name = "SMS"
aggregation = "count"

[plans.growth]
name = "Growth"
currency = "USD"
subscription = { fee = 50.00, billing = "in_advance" }
[[plans.growth.charges]]
meter = "api_calls"
model = "graduated"
tiers = [{ up_to = 100, unit_amount = 0.10 }, { up_to = "inf", unit_amount = 0.05 }]

[plans.monthly_from_start]
name = "Monthly from the start day"
currency = "USD"
billing_anchor = "subscription_start"
subscription = { fee = 30.00, billing = "in_advance" }

[plans.free]
name = "Free"
currency = "USD"
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.01 }]

[plans.annual]
name = "Annual"
currency = "USD"
interval = "year"
subscription = { fee = 1200.00, billing = "in_advance" }
"""

DEAL = """
[subscription]
fee = 40.00
billing = "in_advance"

[[charges]]
meter = "api_calls"
model = "graduated"
tiers = [{ up_to = 200, unit_amount = 0 }, { up_to = "inf", unit_amount = 0.04 }]
"""

JANUARY, FEBRUARY, MARCH = month(2026, 1), month(2026, 2), month(2026, 3)
SETTINGS = store.FinalizeSettings()


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "catalog.toml")
    assert not problems
    return loaded


def deal(text: str = DEAL) -> dict:
    document, problems = loads_override(text)
    assert not problems
    return document


def calls(n: int, day: str, prefix: str) -> list[dict]:
    return [
        {"id": f"{prefix}-{i}", "customer": "acme", "meter": "api_calls", "timestamp": f"{day}T12:00:00Z"}
        for i in range(n)
    ]


def put(engine, catalog, events) -> None:
    report = ingest(engine, events, meter_specs(catalog), {"acme"})
    assert not report.rejected, report.rejected


def invoice_of(engine, key):
    with session_scope(engine) as session:
        return store.get_invoice(session, key)


def amounts(invoice) -> list[tuple[str, str | None, str]]:
    return [(line.kind, line.meter, str(line.amount)) for line in invoice.lines]


def january_invoiced(engine, catalog):
    """acme on Growth from 1 January, 150 calls in January, January finalized."""
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    subscription = service.subscribe(engine, catalog, "acme", "growth", dt.date(2026, 1, 1))
    put(engine, catalog, calls(150, "2026-01-20", "jan"))
    run_billing(engine, catalog, JANUARY)
    finalize_period(engine, JANUARY, SETTINGS, dt.date(2026, 2, 2))
    january = invoice_of(engine, "period:acme:2026-01")
    # 150 calls: 100 × 0.10 + 50 × 0.05 = 12.50; February's fee in advance 50.00 → 62.50
    assert amounts(january) == [("usage", "api_calls", "12.50"), ("subscription", None, "50.00")]
    assert str(january.total) == "62.50"
    return subscription


def test_an_override_from_a_period_boundary_prices_the_period_after_and_leaves_the_finalized_one(engine, catalog):
    subscription = january_invoiced(engine, catalog)
    recorded = overrides.set_override(engine, catalog, subscription.id, deal(), source="deal.toml")
    assert recorded.effective_from == dt.date(2026, 2, 1)  # default: the first period not yet invoiced

    put(engine, catalog, calls(300, "2026-02-10", "feb") + calls(10, "2026-01-31", "late"))
    again = run_billing(engine, catalog, JANUARY)
    assert again.issued_untouched == 2  # the opening invoice (January's fee) and January's
    january = invoice_of(engine, "period:acme:2026-01")
    assert amounts(january) == [("usage", "api_calls", "12.50"), ("subscription", None, "50.00")]
    assert str(january.total) == "62.50"

    run_billing(engine, catalog, FEBRUARY)
    february = invoice_of(engine, "period:acme:2026-02")
    # February, negotiated: 300 calls → 200 × 0 + 100 × 0.04 = 4.00;
    # February's fee: 40.00 now due, 50.00 billed in advance on January's invoice → -10.00;
    # March's fee in advance at the negotiated 40.00;
    # January's 10 late calls rate with January's (the plan's) tiers: 160 calls → 100 × 0.10 + 60 × 0.05 = 13.00,
    # 12.50 billed → 0.50
    assert amounts(february) == [
        ("usage", "api_calls", "4.00"),
        ("subscription", None, "-10.00"),
        ("subscription", None, "40.00"),
        ("late_usage", "api_calls", "0.50"),
    ]
    assert str(february.total) == "34.50"  # 4.00 − 10.00 + 40.00 + 0.50
    negotiated = [line for line in february.lines if line.kind != "late_usage"]
    assert {line.section for line in negotiated} == {"Growth (negotiated price)"}  # no internal id
    assert (
        negotiated[1].description == "Growth (negotiated price) subscription, 2026-02: adjusted to the fee now in force"
    )
    assert negotiated[1].details.extra["adjustment"]["billed_in_advance"] == "50.00"
    assert february.lines[3].section == "Late usage of 2026-01: Growth"
    assert february.lines[3].subscription_id == subscription.id  # the id stays with the line, off the page
    # the document, read as the customer reads it: the plan, the negotiated price, late usage explaining itself
    text = pdf_text(render_pdf(february))
    assert f"subscription {subscription.id}" not in text and "plan growth" not in text and " v1" not in text
    assert "Growth (negotiated price)" in text
    assert "API calls — late usage of January 2026" in text
    assert "re-rated January 2026: $13.00; billed before: $12.50; difference $0.50" in text

    # run again: nothing changes; March has no adjustment (its fee was billed at 40.00)
    assert run_billing(engine, catalog, FEBRUARY).unchanged == 1
    finalize_period(engine, FEBRUARY, SETTINGS, dt.date(2026, 3, 2))
    put(engine, catalog, calls(250, "2026-03-05", "mar"))
    run_billing(engine, catalog, MARCH)
    # 250 calls: 200 × 0 + 50 × 0.04 = 2.00; April's fee in advance 40.00
    assert amounts(invoice_of(engine, "period:acme:2026-03")) == [
        ("usage", "api_calls", "2.00"),
        ("subscription", None, "40.00"),
    ]


def test_an_override_recorded_before_the_invoice_that_bills_its_first_fee_needs_no_adjustment(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    subscription = service.subscribe(engine, catalog, "acme", "growth", dt.date(2026, 1, 1))
    overrides.set_override(engine, catalog, subscription.id, deal(), dt.date(2026, 2, 1))
    put(engine, catalog, calls(150, "2026-01-20", "jan") + calls(300, "2026-02-10", "feb"))
    run_billing(engine, catalog, JANUARY)
    # January at the plan's prices (100 × 0.10 + 50 × 0.05 = 12.50), February's fee at the negotiated 40.00
    assert amounts(invoice_of(engine, "period:acme:2026-01")) == [
        ("usage", "api_calls", "12.50"),
        ("subscription", None, "40.00"),
    ]
    run_billing(engine, catalog, FEBRUARY)
    # 4.00 of calls as above, March's fee 40.00, and no adjustment: 40.00 billed is 40.00 due
    assert amounts(invoice_of(engine, "period:acme:2026-02")) == [
        ("usage", "api_calls", "4.00"),
        ("subscription", None, "40.00"),
    ]


def test_a_date_inside_a_finalized_period_or_off_a_boundary_is_refused(engine, catalog):
    subscription = january_invoiced(engine, catalog)
    with pytest.raises(BillingInputError) as inside:
        overrides.set_override(engine, catalog, subscription.id, deal(), dt.date(2026, 1, 1))
    assert str(inside.value) == (
        "effective_from: 2026-01-01 lies in a finalized period (invoiced through 2026-01-31); the first period not "
        "yet invoiced begins 2026-02-01"
    )
    with pytest.raises(BillingInputError) as off:
        overrides.set_override(engine, catalog, subscription.id, deal(), dt.date(2026, 2, 15))
    assert str(off.value) == (
        "effective_from: 2026-02-15 is not a billing-period boundary (its billing period runs from 2026-02-01 to "
        "2026-02-28: 2026-02-01 or 2026-03-01)"
    )
    assert overrides.list_overrides(engine, subscription.id) == []


def test_override_errors_are_located_in_the_file(engine, catalog):
    subscription = january_invoiced(engine, catalog)
    bad = deal(
        """
        [[charges]]
        meter = "api_calls"
        model = "graduated"
        tiers = [{ up_to = 200, unit_amount = 0 }, { up_to = 100, unit_amount = 0.04 }, { up_to = "inf" }]
        [[charges]]
        meter = "mms"
        model = "per_unit"
        unit_amount = 0.01
        """
    )
    with pytest.raises(BillingInputError) as located:
        overrides.set_override(engine, catalog, subscription.id, bad, source="deal.toml")
    assert located.value.problems == (
        "deal.toml: charges[0].tiers[1].up_to: tiers must increase (got 100 after 200)",
        "deal.toml: charges[1].meter: unknown meter 'mms' (known: api_calls, sms)",
    )
    with pytest.raises(BillingInputError) as for_the_api:
        overrides.set_override(engine, catalog, subscription.id, bad)
    assert for_the_api.value.problems[0] == "charges[0].tiers[1].up_to: tiers must increase (got 100 after 200)"


def test_versions_are_kept_and_each_period_is_rated_with_the_one_in_force(engine, catalog):
    subscription = january_invoiced(engine, catalog)
    first = overrides.set_override(engine, catalog, subscription.id, deal())
    per_unit = deal(
        """
        [[charges]]
        meter = "api_calls"
        model = "per_unit"
        unit_amount = 0.02
        """
    )
    second = overrides.set_override(engine, catalog, subscription.id, per_unit, dt.date(2026, 3, 1))
    # the same tables from the same date again: recorded once
    assert overrides.set_override(engine, catalog, subscription.id, per_unit, dt.date(2026, 3, 1)) == second
    assert [o.id for o in overrides.list_overrides(engine, subscription.id)] == [first.id, second.id]
    put(engine, catalog, calls(300, "2026-02-10", "feb") + calls(300, "2026-03-10", "mar"))
    run_billing(engine, catalog, FEBRUARY)
    finalize_period(engine, FEBRUARY, SETTINGS, dt.date(2026, 3, 2))
    run_billing(engine, catalog, MARCH)
    february = invoice_of(engine, "period:acme:2026-02")
    # February with the first version: 300 calls → 200 × 0 + 100 × 0.04 = 4.00; its fee 40.00 due, 50.00 billed
    # → -10.00; March's fee in advance with the second version, which keeps the plan's fee (no [subscription]):
    # 50.00 → 4.00 − 10.00 + 50.00 = 44.00
    assert amounts(february) == [
        ("usage", "api_calls", "4.00"),
        ("subscription", None, "-10.00"),
        ("subscription", None, "50.00"),
    ]
    assert str(february.total) == "44.00"
    # March with the second version: 300 calls × 0.02 = 6.00; no adjustment (50.00 billed, 50.00 due); April's fee
    assert amounts(invoice_of(engine, "period:acme:2026-03")) == [
        ("usage", "api_calls", "6.00"),
        ("subscription", None, "50.00"),
    ]
    # 50 late February calls: February re-rated with February's version, 350 calls → 200 × 0 + 150 × 0.04 = 6.00,
    # 4.00 billed → 2.00 (with March's version it would be 350 × 0.02 − 4.00 = 3.00)
    put(engine, catalog, calls(50, "2026-02-27", "late-feb"))
    run_billing(engine, catalog, MARCH)
    late = invoice_of(engine, "period:acme:2026-03").lines[-1]
    assert (late.kind, str(late.amount)) == ("late_usage", "2.00")
    assert late.section == "Late usage of 2026-02: Growth (negotiated price)"


def test_a_subscriptions_opening_draft_is_repriced_and_the_preview_uses_the_negotiated_price(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    subscription = service.subscribe(engine, catalog, "acme", "growth", dt.date(2026, 3, 17))
    # 50.00 × 15/31 = 24.193… → 24.19
    assert amounts(invoice_of(engine, f"start:{subscription.id}")) == [("subscription", None, "24.19")]
    recorded = overrides.set_override(engine, catalog, subscription.id, deal("[subscription]\nfee = 31.00\n"))
    assert recorded.effective_from == dt.date(2026, 3, 1)  # the subscription's first period
    # 31.00 × 15/31 = 15.00
    assert amounts(invoice_of(engine, f"start:{subscription.id}")) == [("subscription", None, "15.00")]
    put(engine, catalog, calls(120, "2026-03-20", "mar"))
    usage = customer_usage(engine, catalog, "acme", MARCH, now=dt.datetime(2026, 3, 25, tzinfo=dt.UTC))
    # the plan's calls (the override has no charge): 100 × 0.10 + 20 × 0.05 = 11.00; April's fee at 31.00
    assert amounts(usage.preview) == [("usage", "api_calls", "11.00"), ("subscription", None, "31.00")]
    assert usage.preview.lines[0].section == "Growth (negotiated price), 2026-03-17 – 2026-03-31"


def test_a_new_fee_inside_a_yearly_fee_period_is_refused(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    subscription = service.subscribe(engine, catalog, "acme", "annual", dt.date(2026, 1, 1))
    with pytest.raises(BillingInputError) as refused:
        overrides.set_override(
            engine, catalog, subscription.id, deal("[subscription]\nfee = 1000\n"), month(2026, 6).start
        )
    assert str(refused.value) == (
        "subscription: the fee cannot change inside a fee period (2026); give the override's [subscription] from "
        "2027-01-01, or keep the fee of 1200.00 USD until then"
    )
    # from the next fee period it is taken
    taken = overrides.set_override(
        engine, catalog, subscription.id, deal("[subscription]\nfee = 1000\n"), dt.date(2027, 1, 1)
    )
    assert taken.effective_from == dt.date(2027, 1, 1)


def test_thresholds_follow_the_negotiated_price_of_each_period(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    subscription = service.subscribe(engine, catalog, "acme", "growth", dt.date(2026, 1, 1))
    allowance = deal('[[thresholds]]\nmeter = "api_calls"\nallowance = 200\nlevels = [50, 100]\n')
    overrides.set_override(engine, catalog, subscription.id, allowance, dt.date(2026, 2, 1))
    put(engine, catalog, calls(150, "2026-01-20", "jan") + calls(150, "2026-02-10", "feb"))
    # January: the plan has no thresholds, nothing to evaluate
    january = check_thresholds(engine, catalog, period=JANUARY, now=dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC))
    assert january.created == []
    # February: 150 of the negotiated 200 calls = 75 %: the 50 % level is reached, not the 100 % one
    february = check_thresholds(engine, catalog, period=FEBRUARY, now=dt.datetime(2026, 2, 28, 12, tzinfo=dt.UTC))
    assert [(c.level, str(c.value), str(c.limit)) for c in february.created] == [(50, "150", "200")], february


def test_a_finalized_opening_invoice_is_adjusted_on_the_first_periods_invoice(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    subscription = service.subscribe(engine, catalog, "acme", "growth", dt.date(2026, 3, 17))
    finalize_opening_invoices(engine, catalog, SETTINGS, now=dt.datetime(2026, 3, 17, 9, tzinfo=dt.UTC))
    opening = invoice_of(engine, f"start:{subscription.id}")
    assert opening.number is not None and amounts(opening) == [("subscription", None, "24.19")]  # 50 × 15/31
    overrides.set_override(engine, catalog, subscription.id, deal("[subscription]\nfee = 31.00\n"))
    assert amounts(invoice_of(engine, f"start:{subscription.id}")) == [("subscription", None, "24.19")]  # issued
    run_billing(engine, catalog, MARCH)
    # March's fee now due: 31.00 × 15/31 = 15.00; 24.19 billed on the opening invoice → -9.19; April's fee 31.00
    assert amounts(invoice_of(engine, "period:acme:2026-03")) == [
        ("usage", "api_calls", "0.00"),
        ("subscription", None, "-9.19"),
        ("subscription", None, "31.00"),
    ]


def test_on_anniversary_billing_the_boundaries_are_the_subscriptions_own(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    subscription = service.subscribe(engine, catalog, "acme", "monthly_from_start", dt.date(2026, 1, 15))
    with pytest.raises(BillingInputError) as refused:
        overrides.set_override(
            engine, catalog, subscription.id, deal("[commitment]\nminimum = 5\n"), dt.date(2026, 3, 1)
        )
    assert str(refused.value) == (
        "effective_from: 2026-03-01 is not a billing-period boundary (its billing period runs from 2026-02-15 to "
        "2026-03-14: 2026-02-15 or 2026-03-15)"
    )
    # the default: the subscription's first period, which begins on its start day
    recorded = overrides.set_override(engine, catalog, subscription.id, deal("[commitment]\nminimum = 5\n"))
    assert recorded.effective_from == dt.date(2026, 1, 15)
    later = overrides.set_override(
        engine, catalog, subscription.id, deal("[subscription]\nfee = 20\n"), dt.date(2026, 3, 15)
    )
    assert later.effective_from == dt.date(2026, 3, 15)  # a new fee on a fee-period boundary: the 15th


def test_an_empty_override_returns_the_subscription_to_the_plans_prices(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    subscription = service.subscribe(engine, catalog, "acme", "growth", dt.date(2026, 1, 1))
    overrides.set_override(engine, catalog, subscription.id, deal(), dt.date(2026, 2, 1))
    overrides.set_override(engine, catalog, subscription.id, {}, dt.date(2026, 3, 1))
    put(engine, catalog, calls(300, "2026-02-10", "feb") + calls(300, "2026-03-10", "mar"))
    for period in (JANUARY, FEBRUARY, MARCH):
        run_billing(engine, catalog, period)
    february, march = invoice_of(engine, "period:acme:2026-02"), invoice_of(engine, "period:acme:2026-03")
    # January billed February's fee at the negotiated 40.00; February: 300 calls negotiated, 200 × 0 + 100 × 0.04
    # = 4.00, and March's fee at the plan's 50.00 again
    assert amounts(february) == [("usage", "api_calls", "4.00"), ("subscription", None, "50.00")]
    # March at the plan's tiers: 100 × 0.10 + 200 × 0.05 = 20.00; April's fee 50.00
    assert amounts(march) == [("usage", "api_calls", "20.00"), ("subscription", None, "50.00")]
    assert march.lines[0].section == "Growth"
    assert march.lines[0].subscription_id == subscription.id


def test_a_negotiated_fee_keeps_the_plans_timing(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    subscription = service.subscribe(engine, catalog, "acme", "growth", dt.date(2026, 1, 1))
    arrears = deal('[subscription]\nfee = 40.00\nbilling = "in_arrears"\n')
    with pytest.raises(BillingInputError) as refused:
        overrides.set_override(engine, catalog, subscription.id, arrears, dt.date(2026, 2, 1))
    assert str(refused.value) == (
        "subscription.billing: a negotiated fee is billed as the plan bills it (in_advance), got in_arrears"
    )


def test_a_fee_given_to_a_plan_without_one_is_billed_from_the_period_it_starts(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    subscription = service.subscribe(engine, catalog, "acme", "free", dt.date(2026, 1, 1))
    overrides.set_override(engine, catalog, subscription.id, deal("[subscription]\nfee = 25.00\n"), FEBRUARY.start)
    put(engine, catalog, calls(10, "2026-01-10", "jan") + calls(10, "2026-02-10", "feb"))
    for period in (JANUARY, FEBRUARY):
        run_billing(engine, catalog, period)
    # January: 10 calls × 0.01 = 0.10, and February's fee in advance at the negotiated 25.00
    assert amounts(invoice_of(engine, "period:acme:2026-01")) == [
        ("usage", "api_calls", "0.10"),
        ("subscription", None, "25.00"),
    ]
    # February: 0.10 of calls, no adjustment (25.00 billed, 25.00 due), March's fee 25.00
    assert amounts(invoice_of(engine, "period:acme:2026-02")) == [
        ("usage", "api_calls", "0.10"),
        ("subscription", None, "25.00"),
    ]


QUARTERLY = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.quarterly]
name = "Quarterly"
currency = "USD"
interval = "quarter"
subscription = { fee = 300.00, billing = "in_advance" }
"""


def test_a_fee_billed_to_a_known_end_is_adjusted_to_a_new_price_up_to_that_end(engine):
    """300.00 a quarter in advance from 1 January, its end on 15 May recorded before March's run: March bills the
    second quarter up to the end, 44 of 91 days, 145.05. 240.00 negotiated from 1 April: April adjusts it to the
    new price for the same days, 116.04 − 145.05 = −29.01, and May has nothing left to give back. (Adjusting as if
    the quarter ran to its end charged +94.95 in April and gave back −123.96 in May.)"""
    quarterly, problems = loads_catalog(QUARTERLY, "quarterly.toml")
    assert not problems, problems
    service.create_customer(engine, "acme", "Acme", None, "USD")
    subscription = service.subscribe(engine, quarterly, "acme", "quarterly", dt.date(2026, 1, 1))
    finalize_opening_invoices(engine, quarterly, SETTINGS, now=dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC))

    def bill(*numbers: int) -> None:
        for number in numbers:
            run_billing(engine, quarterly, month(2026, number))
            finalize_period(engine, month(2026, number), SETTINGS, month(2026, number).end)

    bill(1, 2)
    service.cancel_subscription(engine, subscription.id, dt.date(2026, 5, 15), catalog=quarterly)
    bill(3)
    negotiated = deal("[subscription]\nfee = 240.00\n")
    overrides.set_override(engine, quarterly, subscription.id, negotiated, dt.date(2026, 4, 1))
    bill(4, 5, 6)
    with session_scope(engine) as session:
        fees = {
            listed.billing_key: [str(line.amount) for line in store.get_invoice(session, listed.billing_key).lines]
            for listed in store.list_invoices(session)
        }
    assert {key: amounts for key, amounts in fees.items() if amounts} == {
        f"start:{subscription.id}": ["300.00"],
        "period:acme:2026-03": ["145.05"],
        "period:acme:2026-04": ["-29.01"],
    }
