"""Coupons and discounts: a percentage or an amount off, once, for N billing periods or forever, restricted to
plans; never below zero, before tax; issued, applied and redeemed; the redemption rate. The amounts are worked
out by hand in the comments; the database tests run on SQLite and, when configured, PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from billing import coupons
from billing import customers as service
from billing.core.coupons import AppliedCoupon, Coupon, CouponIssue, Duration, coupon_counts, discount_lines
from billing.core.domain import Customer
from billing.core.metrics import compute_figures, figures_row
from billing.core.periods import Period, month
from billing.db import session_scope
from billing.errors import BillingInputError, ConflictError, NotFoundError
from billing.metrics_store import figures_from_database
from billing.preview import customer_usage
from billing.run import finalize_period, run_billing
from billing.stripe.sync import stripe_items
from invoices import store
from invoices.model import InvoiceLine, LineKind, compute_totals
from pricing_plans.loader import loads_catalog
from pricing_plans.models import Catalog
from pricing_plans.money import format_amount

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
unit = "call"

[plans.basic]                # a base plan: 30.00 a month in arrears and API calls at 0.01
name = "Basic"
currency = "USD"
subscription = { fee = 30.00, billing = "in_arrears" }
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.01 }]

[plans.support]              # an add-on: 20.00 a month in arrears
name = "Support"
currency = "USD"
subscription = { fee = 20.00, billing = "in_arrears" }
"""

D = dt.date
JAN, FEB, MAR, APR, MAY = (month(2026, m) for m in range(1, 6))
MONTHS = (JAN, FEB, MAR, APR, MAY)
SETTINGS = store.FinalizeSettings()
APPLIED = dt.datetime(2026, 1, 15, 12, tzinfo=dt.UTC)  # mid-January: the coupons reduce February on


@pytest.fixture
def catalog() -> Catalog:
    catalog, problems = loads_catalog(CATALOG, "coupons.toml")
    assert not problems and catalog is not None, problems
    return catalog


def _line(amount: str, plan: str = "basic", kind: LineKind = LineKind.SUBSCRIPTION) -> InvoiceLine:
    return InvoiceLine(kind=kind, description=f"{plan} {kind}", amount=Decimal(amount), plan_code=plan)


def _coupon(**fields) -> Coupon:
    fields.setdefault("duration", Duration.FOREVER)
    return Coupon(code=fields.pop("code", "C"), **fields)


def _applied(coupon: Coupon, used: int = 0) -> AppliedCoupon:
    return AppliedCoupon(coupon, D(2026, 1, 15), used)


LINES = [_line("30.00"), _line("3.00", kind=LineKind.USAGE), _line("20.00", "support")]  # 53.00


def _amounts(lines: list[InvoiceLine]) -> list[str]:
    return [str(line.amount) for line in lines]


# -- the pure computation --------------------------------------------------------------------------------------


def test_a_percentage_off_is_its_own_line_and_tax_is_computed_on_the_discounted_subtotal():
    discounts = discount_lines(LINES, [_applied(_coupon(percent_off=Decimal(20)))], FEB.start, "USD")
    # 20 % of (30.00 + 3.00 + 20.00 = 53.00) = 10.60
    assert _amounts(discounts) == ["-10.60"]
    line = discounts[0]
    assert (line.kind, line.section, line.description) == (
        LineKind.DISCOUNT,
        "Discounts",
        "Coupon C: 20 % off, forever",
    )
    assert line.details.explanation == "20 % of 53.00"
    totals = compute_totals([*LINES, *discounts], "USD", Decimal(10))
    # subtotal 53.00; discount 10.60; tax 10 % of (53.00 − 10.60 = 42.40) = 4.24; total 42.40 + 4.24 = 46.64
    assert (str(totals.subtotal), str(totals.discount), str(totals.tax), str(totals.total)) == (
        "53.00",
        "10.60",
        "4.24",
        "46.64",
    )


def test_a_percentage_is_rounded_once_to_the_cent():
    lines = [_line("33.33")]
    # 15 % of 33.33 = 4.9995 → 5.00 (half up)
    assert _amounts(discount_lines(lines, [_applied(_coupon(percent_off=Decimal(15)))], FEB.start, "USD")) == ["-5.00"]


def test_a_fixed_amount_applies_once_per_invoice_and_what_it_cannot_use_is_lost():
    ten = _applied(_coupon(amount_off=Decimal("10.00"), currency="USD"))
    assert _amounts(discount_lines(LINES, [ten], FEB.start, "USD")) == ["-10.00"]  # 53.00 − 10.00 = 43.00
    eighty = discount_lines(LINES, [_applied(_coupon(amount_off=Decimal("80.00"), currency="USD"))], FEB.start, "USD")
    # 80.00 off 53.00: capped at 53.00, the other 27.00 are lost; the invoice is 0.00, not −27.00
    assert _amounts(eighty) == ["-53.00"]
    assert eighty[0].details.explanation == "80.00 off 53.00; 27.00 unused, lost"
    assert str(compute_totals([*LINES, *eighty], "USD", Decimal(10)).total) == "0.00"
    # an amount in another currency takes nothing off
    euros = _applied(_coupon(amount_off=Decimal("10.00"), currency="EUR"))
    assert discount_lines(LINES, [euros], FEB.start, "USD") == []


def test_a_plan_restricted_coupon_reduces_only_its_plans_sections():
    half_support = _applied(_coupon(percent_off=Decimal(50), plans=("support",)))
    # 50 % of the support section (20.00) = 10.00; the basic section (33.00) is untouched
    assert _amounts(discount_lines(LINES, [half_support], FEB.start, "USD")) == ["-10.00"]
    fixed_support = _applied(_coupon(amount_off=Decimal("25.00"), currency="USD", plans=("support",)))
    # 25.00 off a 20.00 section: 20.00, the other 5.00 lost (not taken off basic)
    assert _amounts(discount_lines(LINES, [fixed_support], FEB.start, "USD")) == ["-20.00"]


def test_a_coupon_takes_its_part_off_its_lines_in_proportion_whatever_their_order_or_split():
    """10 % off every plan (33.75: 3.375 → 3.38), then 50 % off ``api``: of what the first left of api's 23.52,
    23.52 × 30.37 / 33.75 = 21.1645… → 10.58, whichever line comes first and however a period's progressive
    invoices split the lines (taken line by line, it was 50 % of 20.14 or of 23.52, 10.07 or 11.76; rounded line
    by line, 10.59 on the split)."""
    coupons = [
        _applied(_coupon(code="ALL10", percent_off=Decimal(10))),
        _applied(_coupon(code="API50", percent_off=Decimal(50), plans=("api",))),
    ]
    api, support = _line("23.52", "api", LineKind.USAGE), _line("10.23", "support")
    for lines in ([api, support], [support, api]):
        assert _amounts(discount_lines(lines, coupons, FEB.start, "USD")) == ["-3.38", "-10.58"]
    early = [_line("16.72", "api", LineKind.USAGE), _line("2.87", "support")]
    first = discount_lines(early, coupons, FEB.start, "USD")
    late = [_line("6.80", "api", LineKind.USAGE), _line("7.36", "support")]
    then = discount_lines(late, coupons, FEB.start, "USD", earlier=[*early, *first])
    taken = {code: sum(-line.amount for line in [*first, *then] if line.details.extra["coupon"] == code)
             for code in ("ALL10", "API50")}  # fmt: skip
    assert {code: str(amount) for code, amount in taken.items()} == {"ALL10": "3.38", "API50": "10.58"}


def test_discounts_never_take_an_invoice_below_zero():
    refund = [_line("30.00"), _line("-40.00")]  # a fee adjustment larger than the fee: −10.00
    assert discount_lines(refund, [_applied(_coupon(percent_off=Decimal(50)))], FEB.start, "USD") == []
    two = [
        _applied(_coupon(code="HALF", percent_off=Decimal(50))),
        _applied(_coupon(amount_off=Decimal(30), currency="USD")),
    ]
    # HALF: 50 % of 53.00 = 26.50; then 30.00 off what is left (53.00 − 26.50 = 26.50): 26.50; total 0.00
    discounts = discount_lines(LINES, two, FEB.start, "USD")
    assert _amounts(discounts) == ["-26.50", "-26.50"]
    assert str(compute_totals([*LINES, *discounts], "USD").total) == "0.00"

    # 50 % off support only, on an invoice left at 5.00 by a refund of basic's fee: 50 % of support's 20.00 is
    # 10.00, at most the 5.00 left of the invoice (not 50 % of those 5.00)
    refunded = [_line("20.00", "support"), _line("-15.00")]
    half_support = _applied(_coupon(percent_off=Decimal(50), plans=("support",)))
    [capped] = discount_lines(refunded, [half_support], FEB.start, "USD")
    assert str(capped.amount) == "-5.00"
    assert capped.details.explanation == "50 % of 20.00; at most the 5.00 left of the invoice"
    assert str(compute_totals([*refunded, capped], "USD").total) == "0.00"

def test_a_coupon_covers_the_periods_after_the_day_applied_and_its_duration():
    once, three = (
        _coupon(percent_off=Decimal(10), duration=Duration.ONCE),
        _coupon(percent_off=Decimal(10), duration=Duration.REPEATING, months=3),
    )
    assert not _applied(once).covers(JAN.start)  # applied 15 January: January is not reduced
    assert _applied(once).covers(FEB.start) and not _applied(once, used=1).covers(MAR.start)
    assert _applied(three, used=2).covers(APR.start) and not _applied(three, used=3).covers(MAY.start)
    assert _applied(_coupon(percent_off=Decimal(10)), used=120).covers(MAY.start)  # forever
    line = discount_lines(LINES, [_applied(three, used=2)], APR.start, "USD")[0]
    assert line.details.extra["billing_period"] == "3 of 3"
    # its terms, for the invoice to word in the customer's language
    assert line.details.extra["terms"] == {"percent_off": "10", "duration": "repeating", "months": 3}
    [fixed] = discount_lines(LINES, [_applied(_coupon(amount_off=Decimal("5.00"), currency="USD"))], FEB.start, "USD")
    assert fixed.details.extra["terms"] == {"amount_off": "5.00", "currency": "USD", "duration": "forever"}


def test_the_redemption_rate_counts_the_coupons_issued_in_each_period_redeemed_by_the_report_date():
    at = lambda m, d: dt.datetime(2026, m, d, 12, tzinfo=dt.UTC)  # noqa: E731
    issues = [
        CouponIssue("A", "acme", "USD", at(1, 10), redeemed_at=at(3, 1)),
        CouponIssue("A", "beta", "USD", at(1, 12), redeemed_at=at(5, 1)),  # after the report's date below
        CouponIssue("A", "gamma", "USD", at(1, 20)),
        CouponIssue("B", "acme", "USD", at(2, 3), redeemed_at=at(3, 1)),
    ]
    counts = coupon_counts(issues, [JAN, FEB], as_of=at(4, 1))
    # January: 3 issued, 1 redeemed by 1 April (beta's redemption comes later); February: 1 issued, 1 redeemed
    assert counts == {(JAN.start, "USD"): (3, 1), (FEB.start, "USD"): (1, 1)}
    figures = compute_figures([], [], [], [], [JAN, FEB], coupons=issues, as_of=at(4, 1))
    assert [figures_row(f)["coupon_redemption_rate"] for f in figures] == []  # no customer, no currency: no rows
    acme = Customer(1, "acme", "Acme", None, "USD", "UTC", "en_US", (), None, Decimal(0))
    rows = [figures_row(f) for f in compute_figures([acme], [], [], [], [JAN, FEB], coupons=issues, as_of=at(4, 1))]
    # 1 / 3 = 33.3 %; 1 / 1 = 100 %
    assert [(r["coupons_issued"], r["coupons_redeemed"], r["coupon_redemption_rate"]) for r in rows] == [
        ("3", "1", "33.3"),
        ("1", "1", "100.0"),
    ]


def test_a_coupon_is_checked_as_it_is_created():
    with pytest.raises(BillingInputError) as error:
        coupons.parse_coupon("X", percent="150", amount="5", currency=None, duration="repeating")
    assert error.value.problems == (
        "amount_off: give a percentage off or an amount off, not both",
        "percent_off: expected a number above 0 and at most 100, got 150",
        "currency: an amount off needs its ISO 4217 currency code, got None",
        "months: a repeating coupon needs the number of billing periods it reduces (1 to 1200)",
    )
    # whole numbers the database could not hold, a coupon expired before it exists: refused, naming the field
    with pytest.raises(BillingInputError) as error:
        coupons.parse_coupon("X", percent="5", amount=None, currency=None, duration="repeating", months=2**31,
                             max_redemptions=2**31, expires_on=D(2026, 3, 1), today=D(2026, 3, 1))
    assert error.value.problems == (
        "months: a repeating coupon needs the number of billing periods it reduces (1 to 1200)",
        "max_redemptions: expected a whole number from 1 to 1,000,000,000, got 2147483648",
        "expires_on: 2026-03-01 has passed: the coupon could never be issued",
    )
    # a currency in any case, as credits take it
    euros = coupons.parse_coupon("X", percent=None, amount="5", currency="eur", duration="once")
    assert (euros.currency, euros.terms) == ("EUR", "5.00 EUR off, once")
    with pytest.raises(BillingInputError, match=r"amount_off: expected a positive amount in whole minor units of USD"):
        coupons.parse_coupon("X", percent=None, amount="1.005", currency="USD", duration="once")
    with pytest.raises(BillingInputError, match=r"amount_off: .* below 1,000,000,000,000,000, got 1E\+20"):
        coupons.parse_coupon("X", percent=None, amount="1E+20", currency="USD", duration="once")
    with pytest.raises(BillingInputError, match="months: only a repeating coupon"):
        coupons.parse_coupon("X", percent="5", amount=None, currency=None, duration="forever", months=2)
    with pytest.raises(BillingInputError, match="duration: expected once, repeating or forever, got 'weekly'"):
        coupons.parse_coupon("X", percent="5", amount=None, currency=None, duration="weekly")
    coupon = coupons.parse_coupon(
        "SPRING-26", percent="12.5", amount=None, currency=None, duration="repeating", months=3
    )
    assert coupon.terms == "12.5 % off for 3 billing periods"


# -- in the database ---------------------------------------------------------------------------------------------


def _customer(engine, name: str = "acme", tax_rate: str = "0") -> None:
    service.create_customer(engine, name, name.title(), f"ap@{name}.test", "USD", timezone="UTC", tax_rate=tax_rate)


def _create(engine, catalog, code: str, **fields) -> Coupon:
    fields.setdefault("percent", None)
    fields.setdefault("amount", None)
    fields.setdefault("currency", None)
    return coupons.create_coupon(engine, catalog, coupons.parse_coupon(code, **fields))


def _invoice(engine, key: str):
    with session_scope(engine) as session:
        return store.get_invoice(session, key)


def _bill(engine, catalog, *periods: Period, finalize: bool = True) -> None:
    for period in periods:
        run_billing(engine, catalog, period)
        if finalize:
            finalize_period(engine, period, SETTINGS, period.end)


def _discounts(engine, customer: str = "acme") -> list[tuple[str, str, str]]:
    """(month, discount, total) of each invoice, January to May."""
    found = []
    for period in MONTHS:
        invoice = _invoice(engine, f"period:{customer}:{period.label}")
        found.append((period.label, format_amount(invoice.discount, "USD"), str(invoice.total)))
    return found



@pytest.mark.db
@pytest.mark.parametrize("duration", ["once", "forever"])
def test_a_fee_paid_with_a_discount_that_stops_early_gives_back_its_share_of_what_was_paid(engine, duration):
    ahead, problems = loads_catalog(CATALOG + """
[plans.ahead]                # 28.00 a month in advance
name = "Ahead"
currency = "USD"
subscription = { fee = 28.00, billing = "in_advance" }
""", "coupons.toml")
    assert ahead is not None, problems
    _customer(engine)
    subscription = service.subscribe(engine, ahead, "acme", "ahead", D(2026, 1, 1))
    _create(engine, ahead, "HALF", percent="50", duration=duration)
    coupons.apply_coupon(engine, "HALF", "acme", now=dt.datetime(2025, 12, 20, 12, tzinfo=dt.UTC))
    _bill(engine, ahead, JAN)
    # January's invoice bills February's fee in advance with 50 % off: 28.00 − 14.00 = 14.00 paid for February
    january = _invoice(engine, "period:acme:2026-01")
    assert (str(january.discount), str(january.total)) == ("14.00", "14.00")
    service.cancel_subscription(engine, subscription.id, D(2026, 2, 15), catalog=ahead)
    _bill(engine, ahead, FEB)
    # it ran 14 of February's 28 days: the fee due is 14.00 of the 28.00 billed, −14.00 at the price; of what was
    # paid, 14.00, half comes back: −7.00 (whether the coupon still runs or not: the refund is already net of it)
    february = _invoice(engine, "period:acme:2026-02")
    [adjustment] = february.lines
    assert (str(adjustment.amount), format_amount(february.discount, "USD"), str(february.total)) == (
        "-7.00", "0.00", "-7.00"
    )
    assert adjustment.details.extra["adjustment"]["paid_after_discounts"] == "14.00"
    preview = customer_usage(engine, ahead, "acme", FEB, now=dt.datetime(2026, 2, 20, tzinfo=dt.UTC))
    assert [str(line.amount) for line in preview.preview.lines] == ["-7.00"]  # the upcoming invoice, as the run wrote it

@pytest.mark.db
def test_a_once_coupon_reduces_the_next_billing_period_only(engine, catalog):
    _customer(engine)
    service.subscribe(engine, catalog, "acme", "basic", D(2026, 1, 1))
    _create(engine, catalog, "WELCOME", percent="20", duration="once")
    coupons.apply_coupon(engine, "WELCOME", "acme", now=APPLIED)
    _bill(engine, catalog, *MONTHS)
    # 30.00 a month; February: 20 % of 30.00 = 6.00 off → 24.00; every other month 30.00
    assert _discounts(engine) == [
        ("2026-01", "0.00", "30.00"),
        ("2026-02", "6.00", "24.00"),
        ("2026-03", "0.00", "30.00"),
        ("2026-04", "0.00", "30.00"),
        ("2026-05", "0.00", "30.00"),
    ]
    february = _invoice(engine, "period:acme:2026-02")
    assert [(line.kind, line.section, str(line.amount)) for line in february.lines][-1] == (
        LineKind.DISCOUNT,
        "Discounts",
        "-6.00",
    )
    assert str(february.subtotal) == "30.00"
    # Stripe gets the fee and one discount item, not the discount twice: 3000 − 600 = 2400 cents
    assert [(item.key, item.amount) for item in stripe_items(february)] == [
        ("item:1", 3000),
        ("item:2", 0),
        ("discount", -600),
    ]


@pytest.mark.db
def test_a_repeating_coupon_reduces_three_billing_periods_and_a_re_run_counts_none_twice(engine, catalog):
    _customer(engine)
    service.subscribe(engine, catalog, "acme", "basic", D(2026, 1, 1))
    _create(engine, catalog, "THREE", percent="20", duration="repeating", months=3)
    coupons.apply_coupon(engine, "THREE", "acme", now=APPLIED)
    _bill(engine, catalog, JAN, FEB)
    _bill(engine, catalog, MAR, finalize=False)
    _bill(engine, catalog, MAR, finalize=False)  # a re-run of the draft: still March, still the 2nd period
    _bill(engine, catalog, MAR, APR)
    _bill(engine, catalog, APR, finalize=False)  # issued: left as it is
    _bill(engine, catalog, MAY)
    # February, March, April: 30.00 − 6.00 = 24.00; May (a 4th period) 30.00
    assert _discounts(engine) == [
        ("2026-01", "0.00", "30.00"),
        ("2026-02", "6.00", "24.00"),
        ("2026-03", "6.00", "24.00"),
        ("2026-04", "6.00", "24.00"),
        ("2026-05", "0.00", "30.00"),
    ]
    marks = [
        line.details.extra["billing_period"]
        for period in (FEB, MAR, APR)
        for line in _invoice(engine, f"period:acme:{period.label}").lines
        if line.kind is LineKind.DISCOUNT
    ]
    assert marks == ["1 of 3", "2 of 3", "3 of 3"]


@pytest.mark.db
def test_the_usage_preview_counts_the_periods_a_repeating_coupon_reduced_on_issued_invoices(engine, catalog):
    """The preview of March, after February's invoice was issued with the coupon's line: March is its 2nd
    period (30.00 − 20 % = 24.00); reading February's discount line once failed the preview."""
    _customer(engine)
    service.subscribe(engine, catalog, "acme", "basic", D(2026, 1, 1))
    _create(engine, catalog, "THREE", percent="20", duration="repeating", months=3)
    coupons.apply_coupon(engine, "THREE", "acme", now=APPLIED)
    _bill(engine, catalog, JAN, FEB)
    preview = customer_usage(engine, catalog, "acme", now=dt.datetime(2026, 3, 20, tzinfo=dt.UTC)).preview
    [discount] = [line for line in preview.lines if line.kind is LineKind.DISCOUNT]
    assert (str(discount.amount), discount.details.extra["billing_period"]) == ("-6.00", "2 of 3")
    assert str(preview.totals.subtotal - preview.totals.discount) == "24.00"


@pytest.mark.db
def test_a_forever_coupon_with_a_fixed_amount_larger_than_the_invoice(engine, catalog):
    _customer(engine, tax_rate="10")
    service.subscribe(engine, catalog, "acme", "basic", D(2026, 1, 1))
    _create(engine, catalog, "BIG", amount="50", currency="USD", duration="forever")
    coupons.apply_coupon(engine, "BIG", "acme", now=APPLIED)
    _bill(engine, catalog, *MONTHS)
    # January: 30.00 + 10 % tax = 33.00; from February 50.00 off 30.00: 30.00 taken, 20.00 lost → 0.00, tax 0.00
    assert _discounts(engine) == [
        ("2026-01", "0.00", "33.00"),
        ("2026-02", "30.00", "0.00"),
        ("2026-03", "30.00", "0.00"),
        ("2026-04", "30.00", "0.00"),
        ("2026-05", "30.00", "0.00"),
    ]


@pytest.mark.db
def test_a_plan_restricted_coupon_on_a_base_plan_and_an_add_on_with_tax(engine, catalog):
    from billing.ingestion import ingest_batch

    _customer(engine, tax_rate="10")
    service.subscribe(engine, catalog, "acme", "basic", D(2026, 1, 1))
    service.subscribe(engine, catalog, "acme", "support", D(2026, 1, 1))
    _create(engine, catalog, "SUPPORT50", percent="50", duration="forever", plans=["support"])
    coupons.apply_coupon(engine, "SUPPORT50", "acme", now=APPLIED)
    events = [
        {"id": f"c{i}", "customer": "acme", "meter": "api_calls", "timestamp": "2026-02-10T12:00:00Z"}
        for i in range(300)
    ]
    ingest_batch(engine, catalog, events, now=dt.datetime(2026, 2, 20, tzinfo=dt.UTC))
    _bill(engine, catalog, JAN)
    # the upcoming invoice's preview (`billing usage`) on 20 February carries the discount as the invoice will
    preview = customer_usage(engine, catalog, "acme", now=dt.datetime(2026, 2, 20, tzinfo=dt.UTC)).preview
    assert [(line.kind.value, str(line.amount)) for line in preview.lines][-1] == ("discount", "-10.00")
    assert str(compute_totals(preview.lines, "USD", Decimal(10)).total) == "47.30"
    _bill(engine, catalog, FEB)
    february = _invoice(engine, "period:acme:2026-02")
    # basic 30.00 + 300 calls × 0.01 = 3.00; support 20.00: subtotal 53.00; 50 % of support's 20.00 = 10.00 off;
    # tax 10 % of (53.00 − 10.00 = 43.00) = 4.30; total 43.00 + 4.30 = 47.30
    assert [(line.kind.value, line.plan_code, str(line.amount)) for line in february.lines] == [
        ("subscription", "basic", "30.00"),
        ("usage", "basic", "3.00"),
        ("subscription", "support", "20.00"),
        ("discount", None, "-10.00"),
    ]
    assert (str(february.subtotal), str(february.discount), str(february.tax), str(february.total)) == (
        "53.00",
        "10.00",
        "4.30",
        "47.30",
    )


@pytest.mark.db
def test_issue_apply_expiry_and_max_redemptions_are_enforced_with_clear_errors(engine, catalog):
    for name in ("acme", "beta", "gamma"):
        _customer(engine, name)
    service.create_customer(engine, "euro", "Euro", None, "EUR", timezone="UTC")
    _create(engine, catalog, "ONE", percent="10", duration="once", max_redemptions=1, expires_on=D(2026, 2, 1),
            today=D(2026, 1, 10))
    _create(engine, catalog, "EUROS", amount="5", currency="EUR", duration="once")
    with pytest.raises(ConflictError, match="a coupon 'ONE' exists already"):
        _create(engine, catalog, "ONE", percent="10", duration="once")
    with pytest.raises(BillingInputError, match=r"plans: unknown plan 'gold' \(known plans: basic, support\)"):
        _create(engine, catalog, "GOLD", percent="10", duration="once", plans=["gold"])
    held = coupons.issue_coupon(engine, "ONE", "beta", now=APPLIED)
    assert (held.applied_on, held.issued_at) == (None, APPLIED)
    with pytest.raises(ConflictError, match="customer 'beta' holds coupon 'ONE' already"):
        coupons.issue_coupon(engine, "ONE", "beta", now=APPLIED)
    applied = coupons.apply_coupon(engine, "ONE", "acme", now=APPLIED)  # issued and applied at once
    assert (applied.issued_at, applied.applied_on) == (APPLIED, D(2026, 1, 15))
    with pytest.raises(ConflictError, match="coupon 'ONE' is applied to customer 'acme' already"):
        coupons.apply_coupon(engine, "ONE", "acme", now=APPLIED)
    with pytest.raises(ConflictError, match="coupon 'ONE' has reached its maximum of 1 redemptions"):
        coupons.apply_coupon(engine, "ONE", "beta", now=APPLIED)
    with pytest.raises(BillingInputError, match=r"coupon 'ONE' expired on 2026-02-01 \(in the customer's timezone"):
        coupons.issue_coupon(engine, "ONE", "gamma", now=dt.datetime(2026, 2, 1, tzinfo=dt.UTC))
    coupons.issue_coupon(engine, "ONE", "gamma", now=dt.datetime(2026, 1, 31, 23, 59, tzinfo=dt.UTC))  # the day before
    with pytest.raises(
        BillingInputError, match="currency: coupon 'EUROS' takes EUR off; customer 'acme' is billed in USD"
    ):
        coupons.apply_coupon(engine, "EUROS", "acme", now=APPLIED)
    coupons.apply_coupon(engine, "EUROS", "euro", now=APPLIED)
    with pytest.raises(NotFoundError, match="unknown coupon 'NOPE'"):
        coupons.issue_coupon(engine, "NOPE", "acme")
    with pytest.raises(NotFoundError, match="unknown customer 'zed'"):
        coupons.issue_coupon(engine, "ONE", "zed")


@pytest.mark.db
def test_a_coupon_is_redeemed_when_it_first_reduces_a_finalized_invoice(engine, catalog):
    for name in ("acme", "beta", "gamma"):
        _customer(engine, name)
        service.subscribe(engine, catalog, name, "basic", D(2026, 1, 1))
    _create(engine, catalog, "SPRING", percent="10", duration="forever")
    coupons.apply_coupon(engine, "SPRING", "acme", now=APPLIED)
    coupons.apply_coupon(engine, "SPRING", "beta", now=APPLIED)
    coupons.issue_coupon(engine, "SPRING", "gamma", now=APPLIED)  # issued, never applied
    _bill(engine, catalog, JAN)
    run_billing(engine, catalog, FEB)  # February's drafts carry the discount: not yet a redemption
    assert (coupons.get_coupon(engine, "SPRING").issued, coupons.get_coupon(engine, "SPRING").redeemed) == (3, 0)
    issued_at = dt.datetime(2026, 3, 1, 6, 30, tzinfo=dt.UTC)
    finalize_period(engine, FEB, SETTINGS, D(2026, 3, 1), customer="acme", now=issued_at)
    stats = coupons.get_coupon(engine, "SPRING")
    # issued to 3, redeemed by acme only: 1 / 3
    assert (stats.issued, stats.applied, stats.redeemed) == (3, 2, 1)
    assert coupons.coupon_json(stats.coupon, stats)["redemption_rate"] == "0.3333"
    # redeemed when the invoice was issued, the run's instant (not the clock's when the test runs)
    assert [(h.customer, h.redeemed_at) for h in stats.holders if h.redeemed_at is not None] == [("acme", issued_at)]
    rows = [figures_row(f) for f in figures_from_database(engine, catalog, [JAN, FEB])]
    # the three were issued on 15 January: January 1 / 3 = 33.3 %; none issued in February
    assert [(r["period"], r["coupons_issued"], r["coupons_redeemed"], r["coupon_redemption_rate"]) for r in rows] == [
        ("2026-01", "3", "1", "33.3"),
        ("2026-02", "0", "0", "n/a"),
    ]
    # February's billed revenue: acme 30.00 − 3.00 = 27.00, the discount in "credits & discounts"
    february = next(f for f in figures_from_database(engine, catalog, [FEB]))
    assert (str(february.billed.subscription), str(february.billed.adjustments)) == ("30.00", "-3.00")


@pytest.mark.db
def test_the_cli_names_each_problem_on_its_own_line_and_lists_the_redemption_rate(cli_env):
    from typer.testing import CliRunner

    from billing.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["coupons", "create", "BAD", "--percent", "120", "--duration", "repeating"])
    assert bad.exit_code == 1
    assert bad.stderr.splitlines() == [
        "error: percent_off: expected a number above 0 and at most 100, got 120",
        "error: months: a repeating coupon needs the number of billing periods it reduces (1 to 1200)",
    ]
    made = runner.invoke(app, ["coupons", "create", "TEN", "--amount", "10", "--currency", "USD", "--duration", "once"])
    assert made.exit_code == 0 and made.stdout == "coupon TEN: 10.00 USD off, once\n"
    runner.invoke(app, ["customers", "add", "acme", "--name", "Acme", "--email", "a@acme.test", "--currency", "USD"])
    assert runner.invoke(app, ["coupons", "issue", "TEN", "--customer", "acme"]).stdout == "coupon TEN issued to acme\n"
    listed = runner.invoke(app, ["coupons", "list"])
    assert listed.exit_code == 0 and "0.0 %" in listed.stdout  # issued to 1, redeemed by none
    twice = runner.invoke(app, ["coupons", "issue", "TEN", "--customer", "acme"])
    assert twice.exit_code == 1 and "customer 'acme' holds coupon 'TEN' already" in twice.stderr


def test_stacked_plan_restricted_coupons_never_take_more_than_their_plans_lines():
    half_support = _applied(_coupon(code="HALF_SUPPORT", percent_off=Decimal(50), plans=("support",)))
    fixed_support = _applied(_coupon(code="SUPPORT15", amount_off=Decimal("15.00"), currency="USD", plans=("support",)))
    found = discount_lines(LINES, [half_support, fixed_support], FEB.start, "USD")
    # support's section is 20.00: 50 % = 10.00; then 15.00 off the 10.00 left of it: 10.00, 5.00 lost; 20.00 in all
    assert _amounts(found) == ["-10.00", "-10.00"]
    assert found[1].details.explanation == "15.00 off 10.00; 5.00 unused, lost"
    # a coupon for every plan after them takes from what is left: 53.00 − 20.00 = 33.00, 10 % = 3.30
    tenth = _applied(_coupon(code="TENTH", percent_off=Decimal(10)))
    assert _amounts(discount_lines(LINES, [half_support, fixed_support, tenth], FEB.start, "USD")) == [
        "-10.00", "-10.00", "-3.30"
    ]


WEEKLY = """
[plans.weekly]
name = "Weekly"
currency = "USD"
interval = "week"
subscription = { fee = 7.00, billing = "in_arrears" }
"""


@pytest.mark.db
def test_a_once_coupon_reduces_one_billing_period_of_a_customer_billed_weekly_and_monthly(engine):
    mixed, problems = loads_catalog(CATALOG + WEEKLY, "coupons.toml")
    assert not problems and mixed is not None
    _customer(engine)
    service.subscribe(engine, mixed, "acme", "basic", D(2026, 1, 1))
    service.subscribe(engine, mixed, "acme", "weekly", D(2026, 1, 5))  # weeks from Mondays
    _create(engine, mixed, "ONCE", percent="50", duration="once")
    coupons.apply_coupon(engine, "ONCE", "acme", now=dt.datetime(2026, 2, 25, 12, tzinfo=dt.UTC))
    run_billing(engine, mixed, MAR, now=dt.datetime(2026, 4, 2, tzinfo=dt.UTC))
    run_billing(engine, mixed, MAR, now=dt.datetime(2026, 4, 2, tzinfo=dt.UTC))  # a re-run moves nothing
    with session_scope(engine) as session:
        invoices = store.list_invoices(session, customer="acme", with_lines=True)
    reduced = [
        (i.period_start.isoformat(), i.period_end.isoformat(), str(line.amount))
        for i in invoices
        for line in i.lines
        if line.kind is LineKind.DISCOUNT
    ]
    # the periods after 25 February, in the order a run writes them (by their ends): the week from 2 March (ends
    # 9 March) comes before March (ends 1 April): 50 % of its 7.00 fee; March's 30.00 is not reduced
    assert reduced == [("2026-03-02", "2026-03-09", "-3.50")]
