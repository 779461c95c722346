"""Hand-checked invoices from the pure composition: fees (in advance, in arrears, prorated, trial), usage for
each charge model, the minimum true-up, a mid-month upgrade and late usage. No database."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from billing.core.compose import (
    LateUsage,
    Section,
    compose_opening_invoice,
    compose_period_invoice,
)
from billing.core.domain import Customer, Subscription, SubscriptionStatus
from billing.core.periods import month
from invoices.store import draft_row
from pricing_plans.charge_models import MeterUsage
from pricing_plans.loader import loads_catalog

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
unit = "call"

[meters.storage_gb]
name = "Storage"
aggregation = "weighted_sum"
unit = "GB-month"

[meters.payments]
name = "Payments"
aggregation = "sum"

[meters.seats]
name = "Seats"
aggregation = "unique_count"
unique_property = "user_id"

[plans.arrears]
name = "Arrears"
currency = "USD"
[plans.arrears.subscription]
fee = 30.00
billing = "in_arrears"
[[plans.arrears.charges]]
meter = "api_calls"
model = "graduated"
tiers = [{ up_to = 100, unit_amount = 0.50 }, { up_to = 1000, unit_amount = 0.40 }, { up_to = "inf", unit_amount = 0.30 }]

[plans.advance]
name = "Advance"
currency = "USD"
[plans.advance.subscription]
fee = 49.00
billing = "in_advance"
[[plans.advance.charges]]
meter = "api_calls"
model = "volume"
tiers = [{ up_to = 100, unit_amount = 0.50 }, { up_to = 1000, unit_amount = 0.40 }, { up_to = "inf", unit_amount = 0.30 }]

[plans.trial]
name = "Trial"
currency = "USD"
[plans.trial.subscription]
fee = 31.00
billing = "in_arrears"
trial_days = 10

[plans.committed]
name = "Committed"
currency = "USD"
[[plans.committed.charges]]
meter = "storage_gb"
model = "per_unit"
unit_amount = 0.10
[[plans.committed.charges]]
meter = "api_calls"
model = "package"
package_size = 1000
package_amount = 2.00
free_units = 500
[[plans.committed.charges]]
meter = "payments"
model = "percentage"
rate = 2.9
fixed_amount = 0.30
[plans.committed.commitment]
minimum = 300.00

[plans.seats]
name = "Seats"
currency = "USD"
[[plans.seats.charges]]
meter = "seats"
model = "per_unit"
unit_amount = 8.00
"""


@pytest.fixture(scope="module")
def catalog():
    loaded, problems = loads_catalog(CATALOG, "test.toml")
    assert problems == []
    return loaded


CUSTOMER = Customer(
    id=1, external_id="acme", name="Acme", email="ap@acme.test", currency="USD", timezone="UTC",
    locale="en_US", address=("1 Main St",), webhook_url=None, tax_rate=Decimal("10"),
)
MARCH = month(2026, 3)


def subscription(id_: int, plan: str, start: dt.date, end: dt.date | None = None) -> Subscription:
    return Subscription(
        id=id_, customer_id=1, customer_external_id="acme", plan_code=plan, plan_version=1, start_date=start,
        end_date=end, status=SubscriptionStatus.ACTIVE, cancel_reason=None, previous_subscription_id=None,
    )


def count(n: int) -> MeterUsage:
    return MeterUsage(quantity=Decimal(n), events=n)


def amounts(draft):
    return [(line.kind, str(line.amount)) for line in draft.lines]


def test_in_arrears_fee_prorated_from_a_mid_month_start_with_graduated_usage(catalog):
    sub = subscription(1, "arrears", dt.date(2026, 3, 17))
    draft = compose_period_invoice(
        CUSTOMER, MARCH, [Section(sub, catalog.plan("arrears"), {"api_calls": count(1500)})], [], catalog
    )
    # fee 30.00 × 15/31 days (17–31 March) = 14.516… → 14.52
    # usage 100 × 0.50 + 900 × 0.40 + 500 × 0.30 = 50 + 360 + 150 = 560.00
    assert amounts(draft) == [("subscription", "14.52"), ("usage", "560.00")]
    totals = draft.totals
    assert str(totals.subtotal) == "574.52"
    # tax 10 % of 574.52 = 57.452 → 57.45; total 631.97
    assert (str(totals.tax), str(totals.total)) == ("57.45", "631.97")
    assert draft.billing_key == "period:acme:2026-03"


def test_in_advance_fee_for_the_next_period_and_the_opening_invoice(catalog):
    sub = subscription(2, "advance", dt.date(2026, 3, 17))
    plan = catalog.plan("advance")
    draft = compose_period_invoice(CUSTOMER, MARCH, [Section(sub, plan, {"api_calls": count(1000)})], [], catalog)
    # volume: 1,000 falls in the second tier (bounds inclusive): 1,000 × 0.40 = 400.00; April's fee in advance
    assert amounts(draft) == [("usage", "400.00"), ("subscription", "49.00")]
    assert draft.lines[1].service_start == dt.date(2026, 4, 1)
    opening = compose_opening_invoice(CUSTOMER, sub, plan, catalog)
    # the first invoice, at the start: 49.00 × 15/31 = 23.709… → 23.71
    assert opening is not None and amounts(opening) == [("subscription", "23.71")]
    assert opening.billing_key == "start:2"


def test_in_advance_subscription_ending_in_the_period_gets_no_fee_for_the_next(catalog):
    sub = subscription(3, "advance", dt.date(2026, 1, 1), end=dt.date(2026, 4, 1))
    draft = compose_period_invoice(CUSTOMER, MARCH, [Section(sub, catalog.plan("advance"), {})], [], catalog)
    assert amounts(draft) == [("usage", "0.00")]


def test_trial_days_are_free(catalog):
    sub = subscription(4, "trial", dt.date(2026, 3, 1))
    draft = compose_period_invoice(CUSTOMER, MARCH, [Section(sub, catalog.plan("trial"), {})], [], catalog)
    # 10 trial days (1–10 March) free: 31.00 × 21/31 = 21.00
    assert amounts(draft) == [("subscription", "21.00")]


def test_minimum_commitment_true_up_with_package_percentage_and_per_unit(catalog):
    sub = subscription(5, "committed", dt.date(2026, 1, 1))
    usage = {
        "storage_gb": MeterUsage(quantity=Decimal("1234.5"), events=3),
        "api_calls": count(2600),
        "payments": MeterUsage(quantity=Decimal("1100"), events=2, values=(Decimal("100"), Decimal("1000"))),
    }
    draft = compose_period_invoice(CUSTOMER, MARCH, [Section(sub, catalog.plan("committed"), usage)], [], catalog)
    # storage 1,234.5 × 0.10 = 123.45; calls ceil((2,600 − 500) / 1,000) = 3 packages × 2.00 = 6.00;
    # payments (2.9 % × 100 + 0.30) + (2.9 % × 1,000 + 0.30) = 3.20 + 29.30 = 32.50;
    # usage 161.95 < 300.00 → true-up 138.05
    assert amounts(draft) == [
        ("usage", "123.45"), ("usage", "6.00"), ("usage", "32.50"), ("commitment", "138.05"),
    ]
    assert str(draft.totals.subtotal) == "300.00"


def test_mid_month_upgrade_gives_two_sections(catalog):
    old = subscription(6, "seats", dt.date(2026, 1, 1), end=dt.date(2026, 3, 16))
    new = subscription(7, "arrears", dt.date(2026, 3, 16))
    draft = compose_period_invoice(
        CUSTOMER,
        MARCH,
        [
            Section(old, catalog.plan("seats"), {"seats": MeterUsage(quantity=Decimal(3), events=9)}),
            Section(new, catalog.plan("arrears"), {"api_calls": count(100)}),
        ],
        [],
        catalog,
    )
    # seats 3 × 8.00 = 24.00; arrears fee 30.00 × 16/31 (16–31 March) = 15.483… → 15.48; calls 100 × 0.50 = 50.00
    assert amounts(draft) == [("usage", "24.00"), ("subscription", "15.48"), ("usage", "50.00")]
    sections = [line.section for line in draft.lines]
    assert sections[0] != sections[1] == sections[2]
    assert sections[0] == "Seats, 2026-03-01 – 2026-03-15"  # the plan and the days it covers, no internal id


def test_late_usage_is_priced_against_what_was_billed(catalog):
    sub = subscription(8, "arrears", dt.date(2026, 1, 1))
    february = month(2026, 2)
    # February was billed for 100 calls (100 × 0.50 = 50.00); 50 more arrived late: 150 calls now rate to
    # 100 × 0.50 + 50 × 0.40 = 70.00, so the late line is 70.00 − 50.00 = 20.00 (the second tier's price).
    late = LateUsage(sub, catalog.plan("arrears"), february, {"api_calls": count(150)}, {("api_calls", None): Decimal("50.00")})
    draft = compose_period_invoice(CUSTOMER, MARCH, [Section(sub, catalog.plan("arrears"), {})], [late], catalog)
    assert amounts(draft) == [("subscription", "30.00"), ("usage", "0.00"), ("late_usage", "20.00")]
    late_line = draft.lines[-1]
    assert late_line.service_start == dt.date(2026, 2, 1)
    assert "2026-02" in late_line.description


def test_late_usage_that_fills_the_commitment_gives_the_true_up_back(catalog):
    sub = subscription(9, "committed", dt.date(2026, 1, 1))
    february = month(2026, 2)
    # Billed for February: 100 GB-month × 0.10 = 10.00 usage + 290.00 true-up. Late storage makes it
    # 3,100 GB-month = 310.00: the late lines are +300.00 storage and −290.00 true-up.
    late = LateUsage(
        sub, catalog.plan("committed"), february,
        {"storage_gb": MeterUsage(quantity=Decimal(3100), events=2)},
        {("storage_gb", None): Decimal("10.00"), None: Decimal("290.00")},
    )
    draft = compose_period_invoice(CUSTOMER, MARCH, [], [late], catalog)
    assert amounts(draft) == [("late_usage", "300.00"), ("late_usage", "-290.00")]


def test_a_composed_invoice_is_stored_and_hashed_as_before(catalog):
    """Every kind of line — usage of four models, a true-up, an in-arrears fee, an in-advance fee's adjustment,
    late usage and a late true-up given back — stored as the same values, so drafts keep their content hash."""
    usage = {
        "storage_gb": MeterUsage(quantity=Decimal("1234.5"), events=3),
        "api_calls": count(2600),
        "payments": MeterUsage(quantity=Decimal("1100"), events=2, values=(Decimal("100"), Decimal("1000"))),
    }
    committed = subscription(5, "committed", dt.date(2026, 1, 1))
    sections = [
        Section(committed, catalog.plan("committed"), usage),
        Section(subscription(1, "arrears", dt.date(2026, 3, 17)), catalog.plan("arrears"), {"api_calls": count(1500)}),
        Section(
            subscription(2, "advance", dt.date(2026, 1, 1), end=dt.date(2026, 3, 20)),
            catalog.plan("advance"),
            {"api_calls": count(10)},
            billed_fee=Decimal("49.00"),
        ),
    ]
    late = [
        LateUsage(
            committed,
            catalog.plan("committed"),
            month(2026, 2),
            {"payments": MeterUsage(quantity=Decimal("50000"), events=1, values=(Decimal("50000"),))},
            {None: Decimal("138.05"), ("payments", None): Decimal("3.20")},
        )
    ]
    draft = compose_period_invoice(CUSTOMER, MARCH, sections, late, catalog)
    values, lines = draft_row(draft)
    assert [line[2] for line in lines] == [
        "usage", "usage", "usage", "commitment", "subscription", "usage", "usage", "subscription", "late_usage",
        "late_usage",
    ]  # fmt: skip
    assert all(type(line[2]) is str for line in lines)
    # (the hash changed once, when sections stopped naming plan versions and subscription ids and late usage's
    # account gained its charge and plan, for the printed document)
    assert values["content_hash"] == "c146a6db197463617708414300ac5af134e5c2d585913772e9d7ab5a78231fb4"
    opening = compose_opening_invoice(CUSTOMER, subscription(9, "advance", dt.date(2026, 3, 17)), catalog.plan("advance"), catalog)
    assert opening is not None
    assert draft_row(opening)[0]["content_hash"] == "9ee4b1315b221f91dbdc1876fb8e8526f95eb1b8867bced21c18f15f902dfe9f"
