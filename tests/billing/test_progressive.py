"""Progressive billing: the catalog's ``[plans.X.progressive_billing]`` validated with located errors; then against
a real database (SQLite and PostgreSQL): invoices issued as the usage charges reach each amount, tier-correct, adding
up with the period's invoice to exactly what one invoice would have billed; two amounts reached by one batch give one
invoice; a re-run (after a crash) issues nothing twice; late usage after them is billed exactly."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from billing import customers as service
from billing.core.metrics import InvoiceSummary
from billing.core.periods import month
from billing.core.progressive import amounts_reached, level_of, progressive_key
from billing.ingestion import ingest_batch
from billing.invoicing import list_invoices
from billing.metering import meter_specs
from billing.preview import customer_usage
from billing.progressive import issue_progressive_invoices
from billing.reactions import react_to_usage
from billing.run import finalize_period, run_billing
from invoices.model import InvoiceKind, InvoiceScope, InvoiceStatus, LineKind
from invoices.render import render_html
from invoices.store import FinalizeSettings
from meters import ingest
from pricing_plans.loader import apply_override, loads_catalog

METERS = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
unit = "call"
"""

PLAN = """
[plans.{key}]
name = "{name}"
currency = "USD"
[plans.{key}.subscription]
fee = 20.00
billing = "in_arrears"
[plans.{key}.commitment]
minimum = 700.00
[[plans.{key}.charges]]
meter = "api_calls"
model = "graduated"
tiers = [{{ up_to = 1000, unit_amount = 0.50 }}, {{ up_to = "inf", unit_amount = 0.40 }}]
"""

CATALOG = (
    METERS
    + PLAN.format(key="metered", name="Metered")
    + """[plans.metered.progressive_billing]
amounts = [400.00, 600.00]
"""
    + PLAN.format(key="single", name="Single")
    + """
[plans.steps]
name = "Steps"
currency = "USD"
[[plans.steps.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.50
[plans.steps.progressive_billing]
amounts = [100.00, 200.00, 5000.00]
"""
)

MARCH = month(2026, 3)
SETTINGS = FinalizeSettings()


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "progressive.toml")
    assert not problems, problems
    return loaded


# -- the catalog ----------------------------------------------------------------------------------------------


def _problems(amounts: str) -> list[str]:
    text = CATALOG.replace("amounts = [100.00, 200.00, 5000.00]", amounts)
    loaded, problems = loads_catalog(text, "c.toml")
    assert loaded is None
    return [str(problem) for problem in problems]


def test_the_amounts_are_validated_with_located_errors():
    assert _problems("amounts = [600.00, 500.00]") == [
        "c.toml: plans.steps.progressive_billing.amounts: must increase without repeats (got 600.00, 500.00)"
    ]
    assert _problems("amounts = [500.00, 500.00]") == [
        "c.toml: plans.steps.progressive_billing.amounts: must increase without repeats (got 500.00, 500.00)"
    ]
    assert _problems("amounts = [100.00, 0]") == ["c.toml: plans.steps.progressive_billing.amounts[1]: must be > 0 (got 0)"]
    assert _problems("amounts = [-5]") == ["c.toml: plans.steps.progressive_billing.amounts[0]: must be > 0 (got -5)"]
    assert _problems("amounts = []") == [
        "c.toml: plans.steps.progressive_billing.amounts: give at least one amount (the usage charges at which an "
        "invoice is issued)"
    ]
    assert _problems('amounts = ["x"]') == ["c.toml: plans.steps.progressive_billing.amounts[0]: expected a number, got 'x'"]
    assert _problems("amount = [100.00]") == [
        "c.toml: plans.steps.progressive_billing.amounts: required key is missing",
        "c.toml: plans.steps.progressive_billing.amount: unknown key (allowed: amounts)",
    ]


def test_an_override_may_set_progressive_billing(catalog):
    plan, problems = apply_override(catalog.plan("single"), {"progressive_billing": {"amounts": [Decimal("50")]}}, catalog)
    assert not problems
    assert plan is not None and plan.progressive_billing is not None
    assert plan.progressive_billing.amounts == (Decimal("50"),)
    _, problems = apply_override(catalog.plan("single"), {"progressive_billing": {"amounts": [Decimal("0")]}}, catalog)
    assert [str(p) for p in problems] == ["override.toml: progressive_billing.amounts[0]: must be > 0 (got 0)"]


def test_amounts_reached_above_the_highest_invoiced():
    amounts = (Decimal("100.00"), Decimal("200.00"), Decimal("5000.00"))
    assert amounts_reached(amounts, Decimal("99.99"), None) == ()
    assert amounts_reached(amounts, Decimal("100.00"), None) == (Decimal("100.00"),)
    assert amounts_reached(amounts, Decimal("250.00"), None) == (Decimal("100.00"), Decimal("200.00"))
    assert amounts_reached(amounts, Decimal("250.00"), Decimal("100.00")) == (Decimal("200.00"),)
    assert amounts_reached(amounts, Decimal("250.00"), Decimal("200.00")) == ()
    key = progressive_key(7, MARCH, Decimal("200.00"))
    assert key == "progressive:7:2026-03:200.00"
    assert level_of(key) == Decimal("200.00")


def test_a_progressive_invoice_counts_in_the_billed_month_of_its_period():
    """A week from Monday 28 September to Sunday 4 October is billed in October (its last day's month): its
    progressive invoices too, so the week's revenue is not split across two months."""
    summary = InvoiceSummary(
        number="INV-2026-000001", kind=InvoiceKind.INVOICE, status=InvoiceStatus.FINALIZED,
        customer_external_id="acme", currency="USD", period_start=dt.date(2026, 9, 28),
        subtotal=Decimal("450.00"), period_end=dt.date(2026, 10, 5), scope=InvoiceScope.PROGRESSIVE,
    )
    assert summary.billed_month == dt.date(2026, 10, 1)


# -- against the database -------------------------------------------------------------------------------------


def _customer(engine, catalog, who, plan):
    service.create_customer(engine, who, who.title(), f"{who}@example.test", "USD")
    return service.subscribe(engine, catalog, who, plan, dt.date(2026, 1, 1))


def _calls(engine, catalog, who, n, when, prefix, now):
    events = [{"id": f"{prefix}-{i}", "customer": who, "meter": "api_calls", "timestamp": when} for i in range(n)]
    report = ingest(engine, events, meter_specs(catalog), {who}, now=now)
    assert not report.rejected, report.rejected[:3]


def _at(day: int, hour: int = 12, month_number: int = 3) -> dt.datetime:
    return dt.datetime(2026, month_number, day, hour, tzinfo=dt.UTC)


def _invoices(engine, who):
    return [i for i in list_invoices(engine, customer=who, with_lines=True) if i.number is not None]


def _progressive(engine, catalog, now):
    return issue_progressive_invoices(engine, catalog, SETTINGS, now=now).issued


@pytest.mark.db
def test_progressive_invoices_at_a_graduated_tier_boundary_add_up_to_the_single_invoice(engine, catalog):
    """Graduated: the first 1000 calls at 0.50, the rest at 0.40; fee 20.00 in arrears; commitment 700.00;
    progressive at 400.00 and 600.00. "single" has the same prices and usage, without progressive billing."""
    _customer(engine, catalog, "acme", "metered")
    _customer(engine, catalog, "solo", "single")
    for who in ("acme", "solo"):
        _calls(engine, catalog, who, 900, "2026-03-05T10:00:00Z", f"{who}-a", _at(10))
    # 900 × 0.50 = 450.00 ≥ 400.00: an invoice of the usage so far, 450.00, issued on 10 March
    assert _progressive(engine, catalog, _at(10)) == ["INV-2026-000001"]
    for who in ("acme", "solo"):
        _calls(engine, catalog, who, 350, "2026-03-15T10:00:00Z", f"{who}-b", _at(20))
    # 1250 calls: 1000 × 0.50 + 250 × 0.40 = 500.00 + 100.00 = 600.00 ≥ 600.00: 600.00 − 450.00 = 150.00 (the 350
    # calls cross the tier boundary: 100 × 0.50 + 250 × 0.40, not 350 × 0.50 = 175.00)
    assert _progressive(engine, catalog, _at(20)) == ["INV-2026-000002"]
    first, second = _invoices(engine, "acme")
    assert (first.scope, first.billing_key, str(first.total)) == (
        InvoiceScope.PROGRESSIVE, "progressive:1:2026-03:400.00", "450.00"
    )
    assert first.lines[0].section == "Metered"  # the plan's name: no subscription id on the document
    assert [(line.kind, str(line.quantity), str(line.amount)) for line in second.lines] == [
        (LineKind.USAGE, "1250", "150.00")
    ]
    assert second.lines[0].details.extra["billed_to_date"]["billed_before"] == "450.00"
    assert "usage to date, March 1, 2026 – March 20, 2026, reached $600.00" in render_html(second)
    for who in ("acme", "solo"):
        _calls(engine, catalog, who, 50, "2026-03-25T10:00:00Z", f"{who}-c", _at(26))
    assert _progressive(engine, catalog, _at(26)) == []  # 620.00: no amount left to reach
    # the upcoming invoice bills the rest: 620.00 − 600.00 = 20.00 of usage
    preview = customer_usage(engine, catalog, "acme", now=_at(26)).preview
    assert [(line.kind, str(line.amount)) for line in preview.lines if line.kind is LineKind.USAGE] == [
        (LineKind.USAGE, "20.00")
    ]
    run_billing(engine, catalog, MARCH, now=_at(2, month_number=4))
    finalize_period(engine, MARCH, SETTINGS, dt.date(2026, 4, 2))
    acme = _invoices(engine, "acme")[-1]
    solo = _invoices(engine, "solo")[-1]
    # the period's invoice: fee 20.00, usage 620.00 − 600.00 = 20.00, true-up 700.00 − 620.00 = 80.00 → 120.00
    assert [(line.kind, str(line.amount)) for line in acme.lines] == [
        (LineKind.SUBSCRIPTION, "20.00"), (LineKind.USAGE, "20.00"), (LineKind.COMMITMENT, "80.00")
    ]
    # one invoice: 20.00 + 620.00 + 80.00 = 720.00 = 450.00 + 150.00 + 120.00
    assert str(solo.total) == "720.00"
    assert str(sum((i.total for i in _invoices(engine, "acme")), Decimal(0))) == "720.00"


@pytest.mark.db
def test_two_amounts_reached_by_one_batch_give_one_invoice(engine, catalog):
    _customer(engine, catalog, "acme", "steps")
    _calls(engine, catalog, "acme", 500, "2026-03-05T10:00:00Z", "a", _at(10))
    # 500 × 0.50 = 250.00: reaches 100.00 and 200.00 at once → one invoice, at 200.00, of 250.00
    assert _progressive(engine, catalog, _at(10)) == ["INV-2026-000001"]
    (issued,) = _invoices(engine, "acme")
    assert (issued.billing_key, str(issued.total)) == ("progressive:1:2026-03:200.00", "250.00")
    _calls(engine, catalog, "acme", 10, "2026-03-06T10:00:00Z", "b", _at(11))
    assert _progressive(engine, catalog, _at(11)) == []  # 255.00: 100.00 and 200.00 are invoiced already


@pytest.mark.db
def test_a_rerun_after_a_crash_issues_nothing_twice(engine, catalog):
    """The reaction issues progressive invoices before it moves its cursor: a pass that issued one and died before
    moving the cursor is followed by a pass that evaluates the same events again, and finds the amount invoiced."""
    _customer(engine, catalog, "acme", "steps")
    _calls(engine, catalog, "acme", 300, "2026-03-05T10:00:00Z", "a", _at(10))  # 150.00
    assert _progressive(engine, catalog, _at(10)) == ["INV-2026-000001"]  # the pass that "crashed" after this
    assert issue_progressive_invoices(engine, catalog, SETTINGS, now=_at(10)).issued == []
    assert react_to_usage(engine, catalog, now=_at(10)).progressive == []
    assert len(_invoices(engine, "acme")) == 1
    # through ingestion and the reaction to it: 100 more calls → 200.00 → the invoice at 200.00, of 50.00, once
    ingest_batch(engine, catalog, [
        {"id": f"b-{i}", "customer": "acme", "meter": "api_calls", "timestamp": "2026-03-11T10:00:00Z"}
        for i in range(100)
    ], now=_at(11))
    assert react_to_usage(engine, catalog, now=_at(11)).progressive == ["INV-2026-000002"]
    assert react_to_usage(engine, catalog, now=_at(11)).progressive == []
    assert issue_progressive_invoices(engine, catalog, SETTINGS, now=_at(11)).issued == []
    assert [(i.billing_key, str(i.total)) for i in _invoices(engine, "acme")] == [
        ("progressive:1:2026-03:100.00", "150.00"),
        ("progressive:1:2026-03:200.00", "50.00"),
    ]


@pytest.mark.db
def test_late_usage_after_a_progressive_invoice_is_billed_exactly(engine, catalog):
    _customer(engine, catalog, "acme", "metered")
    _calls(engine, catalog, "acme", 1250, "2026-03-05T10:00:00Z", "a", _at(10))
    # 1000 × 0.50 + 250 × 0.40 = 600.00: reaches 400.00 and 600.00 → one invoice of 600.00
    assert _progressive(engine, catalog, _at(10)) == ["INV-2026-000001"]
    run_billing(engine, catalog, MARCH, now=_at(2, month_number=4))
    finalize_period(engine, MARCH, SETTINGS, dt.date(2026, 4, 2))
    # March's invoice: fee 20.00, no usage left to bill (600.00 − 600.00), true-up 700.00 − 600.00 = 100.00
    assert str(_invoices(engine, "acme")[-1].total) == "120.00"
    # 300 calls of March arrive on 10 April: March now rates to 1000 × 0.50 + 550 × 0.40 = 720.00; billed: 600.00
    # (progressive) + 0 (period invoice) → 120.00 late usage; the true-up 100.00 is given back (720.00 ≥ 700.00)
    _calls(engine, catalog, "acme", 300, "2026-03-28T10:00:00Z", "late", _at(10, month_number=4))
    april = month(2026, 4)
    run_billing(engine, catalog, april, now=_at(2, month_number=5))
    finalize_period(engine, april, SETTINGS, dt.date(2026, 5, 2))
    late = [line for line in _invoices(engine, "acme")[-1].lines if line.kind is LineKind.LATE_USAGE]
    assert [str(line.amount) for line in late] == ["120.00", "-100.00"]
    # March in all: 600.00 + 120.00 + 120.00 − 100.00 = 740.00 = one invoice of 1550 calls: 20.00 + 720.00


@pytest.mark.db
def test_concurrent_evaluations_issue_one_invoice(engine, catalog):
    """Four threads evaluate the same crossing at once: the subscription's row lock (PostgreSQL) or the write lock
    (SQLite) lets one issue it; the others re-read the amounts invoiced and issue nothing."""
    _customer(engine, catalog, "acme", "steps")
    _calls(engine, catalog, "acme", 300, "2026-03-05T10:00:00Z", "a", _at(10))  # 150.00 ≥ 100.00
    with ThreadPoolExecutor(4) as pool:
        issued = list(pool.map(lambda _: _progressive(engine, catalog, _at(10)), range(4)))
    assert sorted(number for numbers in issued for number in numbers) == ["INV-2026-000001"]
    assert [(i.billing_key, str(i.total)) for i in _invoices(engine, "acme")] == [
        ("progressive:1:2026-03:100.00", "150.00")
    ]


@pytest.mark.db
def test_prepaid_credit_pays_a_progressive_invoice_as_it_is_finalized(engine, catalog):
    from billing import credits

    _customer(engine, catalog, "acme", "steps")
    credits.grant_credit(engine, "acme", Decimal("30.00"), "USD", reason="welcome", now=_at(1))
    _calls(engine, catalog, "acme", 220, "2026-03-05T10:00:00Z", "a", _at(10))
    # 220 × 0.50 = 110.00 ≥ 100.00: the progressive invoice of 110.00 takes the 30.00 of credit → 80.00 due
    assert _progressive(engine, catalog, _at(10)) == ["INV-2026-000001"]
    [invoice] = _invoices(engine, "acme")
    assert (str(invoice.total), str(invoice.amount_due)) == ("110.00", "80.00")
    assert [(c.kind, str(c.amount)) for c in invoice.credits_applied] == [("free", "30.00")]


def _coupon(engine, catalog, code, who, **terms):
    from billing import coupons

    terms.setdefault("percent", None)
    terms.setdefault("amount", None)
    terms.setdefault("currency", None)
    if code not in {c.coupon.code for c in coupons.list_coupons(engine)}:
        coupons.create_coupon(engine, catalog, coupons.parse_coupon(code, **terms))
    coupons.apply_coupon(engine, code, who, now=_at(15, month_number=2))  # reduces March on


def _billed(invoice):
    return [(line.kind.value, str(line.amount)) for line in invoice.lines]


@pytest.mark.db
def test_coupons_reduce_the_progressive_invoices_and_the_period_adds_up_to_one_invoice(engine, catalog):
    """steps: 0.50 a call, progressive at 100.00, 200.00 and 5000.00. acme holds 50 % off forever and 10.00 off
    forever; bob a 20 % off once. Each: 500 calls on 5 March, 100 more on 20 March."""
    for who in ("acme", "bob"):
        _customer(engine, catalog, who, "steps")
    _coupon(engine, catalog, "HALF", "acme", percent="50", duration="forever")
    _coupon(engine, catalog, "FLAT10", "acme", amount="10.00", currency="USD", duration="forever")
    _coupon(engine, catalog, "ONCE20", "bob", percent="20", duration="once")
    for who in ("acme", "bob"):
        _calls(engine, catalog, who, 500, "2026-03-05T10:00:00Z", f"{who}-a", _at(10))
    assert _progressive(engine, catalog, _at(10)) == ["INV-2026-000001", "INV-2026-000002"]
    [acme_first] = _invoices(engine, "acme")
    # (applied the same day: in code order) 500 × 0.50 = 250.00; FLAT10 10.00; HALF 50 % of the 240.00 left =
    # 120.00 → 120.00
    assert _billed(acme_first) == [("usage", "250.00"), ("discount", "-10.00"), ("discount", "-120.00")]
    assert str(acme_first.total) == "120.00"
    [bob_first] = _invoices(engine, "bob")
    assert _billed(bob_first) == [("usage", "250.00"), ("discount", "-50.00")]  # 20 % of 250.00
    for who in ("acme", "bob"):
        _calls(engine, catalog, who, 100, "2026-03-20T10:00:00Z", f"{who}-b", _at(20))
    run_billing(engine, catalog, MARCH, now=_at(2, month_number=4))
    finalize_period(engine, MARCH, SETTINGS, dt.date(2026, 4, 2))
    acme_rest = _invoices(engine, "acme")[-1]
    # the period: 600 × 0.50 = 300.00; FLAT10 10.00 − 10.00 taken = nothing more; HALF 50 % of 290.00 = 145.00 −
    # 120.00 taken = 25.00
    assert _billed(acme_rest) == [("usage", "50.00"), ("discount", "-25.00")]
    assert acme_rest.lines[-1].details.explanation == (
        "50 % of 290.00; less 120.00 taken off by earlier invoices of the period"
    )
    # one invoice: 300.00 − 10.00 − 145.00 = 145.00 = 120.00 + 25.00
    assert str(sum((i.total for i in _invoices(engine, "acme")), Decimal(0))) == "145.00"
    bob_rest = _invoices(engine, "bob")[-1]
    # once: March is one billing period: 20 % of 300.00 = 60.00 − 50.00 = 10.00; 50.00 − 10.00 = 40.00
    assert _billed(bob_rest) == [("usage", "50.00"), ("discount", "-10.00")]
    assert str(sum((i.total for i in _invoices(engine, "bob")), Decimal(0))) == "240.00"
    # April: the once coupon has reduced its billing period (March, on two invoices): 100 calls = 50.00, no discount
    _calls(engine, catalog, "bob", 100, "2026-04-10T10:00:00Z", "bob-c", _at(10, month_number=4))
    run_billing(engine, catalog, month(2026, 4), now=_at(2, month_number=5))
    april = [i for i in list_invoices(engine, customer="bob", with_lines=True) if i.period_start == dt.date(2026, 4, 1)]
    assert [_billed(i) for i in april] == [[("usage", "50.00")]]


@pytest.mark.db
def test_a_draft_of_the_period_written_before_a_progressive_invoice_is_not_issued(engine, catalog):
    _customer(engine, catalog, "acme", "steps")
    _calls(engine, catalog, "acme", 150, "2026-03-05T10:00:00Z", "a", _at(10))  # 75.00: below 100.00
    run_billing(engine, catalog, MARCH, now=_at(15))  # a preview: the period's draft bills 75.00
    assert [str(i.total) for i in list_invoices(engine, customer="acme")] == ["75.00"]
    _calls(engine, catalog, "acme", 100, "2026-03-16T10:00:00Z", "b", _at(16))  # 250 calls: 125.00
    assert _progressive(engine, catalog, _at(16)) == ["INV-2026-000001"]
    # the draft billed the 150 calls the progressive invoice bills now: it is gone, nothing is left to finalize
    assert [(i.scope, str(i.total)) for i in list_invoices(engine, customer="acme")] == [
        (InvoiceScope.PROGRESSIVE, "125.00")
    ]
    assert finalize_period(engine, MARCH, SETTINGS, dt.date(2026, 4, 2), now=_at(2, month_number=4)) == []
    _calls(engine, catalog, "acme", 10, "2026-03-30T10:00:00Z", "c", _at(30))  # 260 calls: 130.00
    run_billing(engine, catalog, MARCH, now=_at(2, month_number=4))
    finalize_period(engine, MARCH, SETTINGS, dt.date(2026, 4, 2), now=_at(2, month_number=4))
    # the period's invoice bills the rest: 130.00 − 125.00 = 5.00; one invoice would have billed 130.00
    assert [str(i.total) for i in _invoices(engine, "acme")] == ["125.00", "5.00"]


@pytest.mark.db
def test_the_upcoming_invoice_counts_what_the_periods_progressive_invoices_took_off(engine, catalog):
    """10.00 off every period, applied in February. 300 calls × 0.50 = 150.00 reach 100.00: the progressive
    invoice takes the 10.00 (140.00). 20 more calls (10.00) are the upcoming invoice's: the period's coupon is spent,
    so it bills 10.00; the preview took the 10.00 off again (0.00) where the run's draft does not."""
    from billing.core.coupons import Coupon, Duration
    from billing.coupons import apply_coupon, create_coupon

    _customer(engine, catalog, "acme", "steps")
    create_coupon(engine, catalog, Coupon(code="F10", amount_off=Decimal("10.00"), currency="USD",
                                          duration=Duration.FOREVER))  # fmt: skip
    apply_coupon(engine, "F10", "acme", now=dt.datetime(2026, 2, 15, tzinfo=dt.UTC))
    _calls(engine, catalog, "acme", 300, "2026-03-05T10:00:00Z", "a", _at(10))
    assert _progressive(engine, catalog, _at(10)) == ["INV-2026-000001"]
    assert str(_invoices(engine, "acme")[0].total) == "140.00"
    _calls(engine, catalog, "acme", 20, "2026-03-12T10:00:00Z", "b", _at(20))
    preview = customer_usage(engine, catalog, "acme", now=_at(20)).preview
    assert ([(line.kind, str(line.amount)) for line in preview.lines], str(preview.totals.total)) == (
        [(LineKind.USAGE, "10.00")], "10.00")  # fmt: skip
    run_billing(engine, catalog, MARCH, now=_at(20))
    (draft,) = [i for i in list_invoices(engine, customer="acme", with_lines=True) if i.number is None]
    assert str(draft.total) == "10.00"
