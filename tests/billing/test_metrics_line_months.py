"""Billed revenue counts each line in the month of its own service (``billing.core.metrics.line_month``): a fee
billed in advance on January's invoice in February, January's usage billed late on February's invoice in January;
what an invoice takes off as a whole (its discount, the tax inside its prices, free credit, credit notes against
it) shared among those months in proportion to their lines. Pure, then end to end on SQLite and PostgreSQL, where
the database's sums and the invoices' own split must agree."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from billing import customers as service
from billing.core.domain import Customer, Subscription, SubscriptionStatus
from billing.core.metrics import (
    BilledAmounts,
    DatedLine,
    InvoiceSummary,
    billed_by_customer,
    billed_parts,
    compute_figures,
    figures_row,
    line_month,
    plan_mrr,
    share_by_month,
    with_line_months,
)
from billing.core.periods import month
from billing.core.tax import CountryRates, TaxRules
from billing.db import session_scope
from billing.invoicing import finalize_invoice
from billing.metering import meter_specs
from billing.metrics_store import billed_customer_months, figures_from_database, load_metric_inputs
from billing.run import finalize_period, run_billing
from invoices import store
from invoices.model import InvoiceKind, InvoiceScope, InvoiceStatus
from meters import ingest
from pricing_plans.loader import loads_catalog

D = dt.date
JAN, FEB, MAR = D(2026, 1, 1), D(2026, 2, 1), D(2026, 3, 1)


def _invoice(lines, **extra) -> InvoiceSummary:
    """January's period invoice (1 January – 1 February) of customer ada, from ``(kind, service start, service
    end, amount)`` lines."""
    fields = {
        "number": "INV-1", "kind": InvoiceKind.INVOICE, "status": InvoiceStatus.FINALIZED,
        "customer_external_id": "ada", "currency": "USD", "period_start": JAN, "period_end": FEB,
        "subtotal": sum((Decimal(amount) for kind, _, _, amount in lines if kind != "discount"), Decimal(0)),
    } | extra  # fmt: skip
    amounts: dict[str, Decimal] = {}
    for kind, _, _, amount in lines:
        amounts[kind] = amounts.get(kind, Decimal(0)) + Decimal(amount)
    summary = InvoiceSummary(line_amounts=tuple(sorted(amounts.items())), **fields)  # type: ignore[arg-type]
    return with_line_months(summary, (DatedLine(k, s, e, None, Decimal(a)) for k, s, e, a in lines))


def _totals(parts: dict[dt.date, BilledAmounts]) -> dict[str, str]:
    return {day.isoformat()[:7]: str(amounts.total) for day, amounts in parts.items()}


def test_a_line_counts_with_its_invoice_unless_it_bills_service_outside_the_invoices_period():
    january = _invoice([("usage", JAN, FEB, "5.00")])
    assert line_month(january, JAN, FEB) is None  # its own period: the invoice's month
    assert line_month(january, None, None) is None  # no service period: the invoice's month
    assert line_month(january, FEB, MAR) == FEB  # a fee in advance: the month its service begins
    assert line_month(january, FEB, D(2027, 2, 1)) == FEB  # a yearly fee in advance too, not the month it ends
    assert line_month(january, FEB, MAR, D(2026, 2, 10)) == FEB
    assert line_month(january, FEB, MAR, D(2026, 3, 10)) == MAR  # its subscription starts later: then
    assert line_month(january, D(2025, 12, 1), JAN) == D(2025, 12, 1)  # usage billed late: its period's month
    # an anniversary period (28 February – 31 March) counts in the month of its last day, as March's run bills it;
    # its usage billed late on April's invoice counts there too, not in February
    anniversary = _invoice([], period_start=D(2026, 3, 31), period_end=D(2026, 4, 30))
    assert line_month(anniversary, D(2026, 2, 28), D(2026, 3, 31)) == MAR
    assert line_month(anniversary, D(2026, 4, 30), D(2026, 5, 31)) is None  # (in advance, begins in April)


def test_a_fee_in_advance_counts_in_the_month_it_pays_for():
    # January's invoice: January's usage 5.00 and February's fee 10.00 in advance
    parts = billed_parts(_invoice([("usage", JAN, FEB, "5.00"), ("subscription", FEB, MAR, "10.00")]))
    assert parts == {JAN: BilledAmounts(usage=Decimal("5.00")), FEB: BilledAmounts(subscription=Decimal("10.00"))}
    # with every line in the invoice's own period, all of it in January (as before)
    assert _totals(billed_parts(_invoice([("usage", JAN, FEB, "5.00"), ("subscription", JAN, FEB, "10.00")]))) == {
        "2026-01": "15.00"
    }


def test_what_an_invoice_takes_off_is_shared_among_its_months_in_proportion():
    # a 10 % coupon: −1.50 of 15.00, 5.00 of it January's, 10.00 February's: −0.50 and −1.00
    lines = [("usage", JAN, FEB, "5.00"), ("subscription", FEB, MAR, "10.00"), ("discount", None, None, "-1.50")]
    parts = billed_parts(_invoice(lines, discount=Decimal("1.50")))
    assert parts == {
        JAN: BilledAmounts(usage=Decimal("5.00"), adjustments=Decimal("-0.50")),
        FEB: BilledAmounts(subscription=Decimal("10.00"), adjustments=Decimal("-1.00")),
    }
    # 19 % inside tax-inclusive prices of 11.90 (January) and 23.80 (February): 5.70 of tax, 1.90 and 3.80;
    # then 6.00 of free credit on the 30.00 left: 2.00 and 4.00
    lines = [("usage", JAN, FEB, "11.90"), ("subscription", FEB, MAR, "23.80")]
    parts = billed_parts(_invoice(lines, tax_included=Decimal("5.70"), free_credits=Decimal("6.00")))
    assert _totals(parts) == {"2026-01": "8.00", "2026-02": "16.00"}  # 11.90 − 1.90 − 2.00; 23.80 − 3.80 − 4.00
    # a credit note of 3.00 against an invoice of 1.00 (January) and 2.00 (February): −1.00 and −2.00
    invoice = _invoice([("usage", JAN, FEB, "1.00"), ("subscription", FEB, MAR, "2.00")])
    note = InvoiceSummary(
        number="CN-1", kind=InvoiceKind.CREDIT_NOTE, status=InvoiceStatus.FINALIZED, customer_external_id="ada",
        currency="USD", period_start=JAN, period_end=FEB, subtotal=Decimal("3.00"), refers_to="INV-1",
        scope=InvoiceScope.CREDIT,
    )  # fmt: skip
    billed = billed_by_customer([invoice, note])
    assert {day: str(customers["ada"].total) for (_, day), customers in billed.items()} == {
        JAN: "0.00",
        FEB: "0.00",
    }


def test_shares_are_rounded_on_the_running_sum_so_they_add_up():
    weights = {JAN: Decimal(1), FEB: Decimal(1), MAR: Decimal(1)}
    assert share_by_month(Decimal("10.00"), weights, JAN) == {
        JAN: Decimal("3.33"),
        FEB: Decimal("3.34"),
        MAR: Decimal("3.33"),
    }
    assert share_by_month(Decimal("-100"), {JAN: Decimal("1"), FEB: Decimal("2")}, JAN) == {
        JAN: Decimal("-33"),
        FEB: Decimal("-67"),
    }  # (no minor unit: yen)
    # a month whose lines net to a refund takes no share; none with a positive weight: all in the invoice's month
    assert share_by_month(Decimal("-1.00"), {JAN: Decimal("-5.00"), FEB: Decimal("4.00")}, JAN) == {
        FEB: Decimal("-1.00")
    }
    assert share_by_month(Decimal("-1.00"), {FEB: Decimal("-5.00")}, JAN) == {JAN: Decimal("-1.00")}
    assert share_by_month(Decimal("0.00"), weights, JAN) == {}


CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
unit = "call"

[plans.upfront]
name = "Upfront"
currency = "USD"
[plans.upfront.subscription]
fee = 10.00
billing = "in_advance"
[[plans.upfront.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.10
"""


@pytest.fixture(scope="module")
def catalog():
    loaded, problems = loads_catalog(CATALOG, "upfront.toml")
    assert not problems
    return loaded


def _calls(n: int, day: str, prefix: str) -> list[dict]:
    return [
        {"id": f"{prefix}-{i}", "customer": "ada", "meter": "api_calls", "timestamp": f"{day}T12:00:00Z"}
        for i in range(n)
    ]


@pytest.mark.db
def test_billed_revenue_of_a_plan_billed_in_advance_with_usage_billed_late(engine, catalog):
    service.create_customer(engine, "ada", "Ada", "ada@example.test", "USD")
    service.subscribe(engine, catalog, "ada", "upfront", JAN)  # the opening invoice: January's fee, 10.00
    specs = meter_specs(catalog)
    assert not ingest(engine, _calls(50, "2026-01-10", "a"), specs, {"ada"}).rejected  # January: 5.00
    run_billing(engine, catalog, month(2026, 1))  # January's usage and February's fee in advance
    finalize_period(engine, month(2026, 1), store.FinalizeSettings(), D(2026, 2, 2))
    assert not ingest(engine, _calls(20, "2026-01-20", "late"), specs, {"ada"}).rejected  # 2.00 late
    assert not ingest(engine, _calls(30, "2026-02-05", "b"), specs, {"ada"}).rejected  # February: 3.00
    run_billing(engine, catalog, month(2026, 2))  # February's usage, January's late, March's fee in advance
    finalize_period(engine, month(2026, 2), store.FinalizeSettings(), D(2026, 3, 2))
    with session_scope(engine) as session:
        january = store.get_invoice(session, "period:ada:2026-01")
        february = store.get_invoice(session, "period:ada:2026-02")
        assert sorted((line.kind, str(line.amount)) for line in january.lines) == [
            ("subscription", "10.00"), ("usage", "5.00")
        ]  # fmt: skip
        assert sorted((line.kind, str(line.amount)) for line in february.lines) == [
            ("late_usage", "2.00"), ("subscription", "10.00"), ("usage", "3.00")
        ]  # fmt: skip
        rows = list(billed_customer_months(session, D(2025, 12, 1), D(2026, 3, 1)))
        whole = load_metric_inputs(session, [month(2026, 1), month(2026, 2), month(2026, 3)])
    # January: its fee on the opening invoice, its usage and its late usage (10.00 + 5.00 + 2.00); February: its fee
    # billed in advance in January and its usage (10.00 + 3.00); March: its fee billed in February. Counting each
    # invoice in its own month gave 25.00, 15.00 and 0.00, and a February NRR of 60 %.
    assert {r.month.isoformat()[:7]: str(r.total) for r in rows} == {
        "2026-01": "17.00",
        "2026-02": "13.00",
        "2026-03": "10.00",
    }
    periods = [month(2026, 1), month(2026, 2), month(2026, 3)]
    figures = figures_from_database(engine, catalog, periods)
    assert [str(f.billed_revenue) for f in figures] == ["17.00", "13.00", "10.00"]
    assert [(str(f.billed.subscription), str(f.billed.usage)) for f in figures] == [
        ("10.00", "7.00"),
        ("10.00", "3.00"),
        ("10.00", "0"),
    ]
    assert str(figures[1].nrr_billed) == str(Decimal("13.00") / Decimal("17.00"))
    at_once = compute_figures(whole.customers, whole.subscriptions, catalog, whole.invoices, periods)
    assert [figures_row(f) for f in at_once] == [figures_row(f) for f in figures]


INCLUSIVE = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.gross]
name = "Gross"
currency = "EUR"
tax_inclusive = true
[plans.gross.subscription]
fee = 119.00
billing = "in_arrears"
[plans.gross.commitment]
minimum = 357.00
"""


def _customer(external_id: str, **tax) -> Customer:
    return Customer(
        id=len(external_id), external_id=external_id, name=external_id, email=None, currency="EUR", timezone="UTC",
        locale="en_US", address=(), webhook_url=None, tax_rate=tax.pop("tax_rate", Decimal(0)), **tax,
    )  # fmt: skip


def test_mrr_leaves_out_the_tax_inside_a_tax_inclusive_plans_prices():
    """119.00 a month with a minimum of 357.00 a month, tax included: at 19 % (Germany) 100.00 + 300.00 of MRR; at
    20 % (France) 99.166666666667 + 297.50; a business in Austria (reverse charge from a German seller) and an
    exempt buyer pay the same prices with no tax in them: 119.00 + 357.00; a flat 10 % of the customer's own:
    108.181818181818 + 324.545454545455."""
    catalog, problems = loads_catalog(INCLUSIVE, "gross.toml")
    assert not problems, problems
    rules = TaxRules(seller_country="DE", rates={"DE": CountryRates(Decimal(19)), "FR": CountryRates(Decimal(20))})
    customers = [
        _customer("de", country="DE"),
        _customer("fr", country="FR"),
        _customer("at", country="AT", tax_id="ATU13585627"),
        _customer("ex", country="DE", tax_exempt_reason="charity"),
        _customer("own", tax_rate=Decimal(10)),
    ]
    subscriptions = [
        Subscription(
            id=i, customer_id=c.id, customer_external_id=c.external_id, plan_code="gross", plan_version=1,
            start_date=JAN, end_date=None, status=SubscriptionStatus.ACTIVE, cancel_reason=None,
            previous_subscription_id=None,
        )
        for i, c in enumerate(customers, 1)
    ]  # fmt: skip
    (figures,) = compute_figures(customers, subscriptions, catalog, [], [month(2026, 2)], tax_rules=rules)
    # 400.00 + 396.666666666667 + 476.00 + 476.00 + 432.727272727273
    assert str(figures.mrr_start) == "2181.393939393940"
    assert str(plan_mrr(catalog.plan("gross"), tax_rate=Decimal(20))) == "396.666666666667"
    assert str(plan_mrr(catalog.plan("gross"), tax_rate=Decimal(10))) == "432.727272727273"
    # without the rules (none configured), only the customer's own rate is known
    (untaxed,) = compute_figures(customers, subscriptions, catalog, [], [month(2026, 2)])
    assert str(untaxed.mrr_start) == "2336.727272727273"  # 4 × 476.00 + 432.727272727273


LONGER = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.annual]
name = "Annual in arrears"
currency = "USD"
interval = "year"
[plans.annual.subscription]
fee = 1200.00
billing = "in_arrears"

[plans.quarterly]
name = "Quarterly in advance"
currency = "USD"
interval = "quarter"
[plans.quarterly.subscription]
fee = 300.00
billing = "in_advance"

[plans.quarterly_arrears]
name = "Quarterly in arrears"
currency = "USD"
interval = "quarter"
[plans.quarterly_arrears.subscription]
fee = 300.00
billing = "in_arrears"
"""


def _bill_months(engine, catalog, months) -> None:
    for year, number in months:
        period = month(year, number)
        run_billing(engine, catalog, period)
        finalize_period(engine, period, store.FinalizeSettings(), period.end + dt.timedelta(days=1))


def _months_of(engine, customer: str, first: dt.date, last: dt.date) -> dict[str, str]:
    with session_scope(engine) as session:
        rows = list(billed_customer_months(session, first, last))
        whole = load_metric_inputs(session, [month(last.year, last.month)])
    pure = {
        day.isoformat()[:7]: str(customers[customer].total)
        for (_, day), customers in billed_by_customer(whole.invoices).items()
        if customer in customers and first <= day <= last and customers[customer].total
    }
    found = {r.month.isoformat()[:7]: str(r.total) for r in rows if r.customer == customer and r.total}
    assert found == pure
    return found


@pytest.mark.db
def test_a_fee_longer_than_the_billing_period_counts_with_the_invoice_that_bills_it(engine):
    """A fee (or its refund) whose service overlaps the invoice's month is the invoice's own, not late: a yearly
    fee in arrears cancelled from 15 June (1 January – 14 June, 165 of 365 days: 542.47) counts in June, not in
    December, the month its fee year ends; a quarterly fee in advance of 300.00 from 1 April counts in April (its
    opening invoice) and its refund for 15 May – 30 June (47 of 91 days: −154.95) in May, not in June."""
    catalog, problems = loads_catalog(LONGER, "longer.toml")
    assert not problems, problems
    for name in ("ann", "quinn"):
        service.create_customer(engine, name, name.title(), None, "USD")
    annual = service.subscribe(engine, catalog, "ann", "annual", JAN)
    service.cancel_subscription(engine, annual.id, D(2026, 6, 15), catalog=catalog)
    quarterly = service.subscribe(engine, catalog, "quinn", "quarterly", D(2026, 4, 1))  # its opening invoice
    finalize_invoice(engine, f"start:{quarterly.id}", store.FinalizeSettings(), D(2026, 4, 1))
    service.cancel_subscription(engine, quarterly.id, D(2026, 5, 15), catalog=catalog)
    _bill_months(engine, catalog, [(2026, number) for number in range(4, 8)])
    assert _months_of(engine, "ann", JAN, D(2026, 12, 1)) == {"2026-06": "542.47"}
    assert _months_of(engine, "quinn", JAN, D(2026, 12, 1)) == {"2026-04": "300.00", "2026-05": "-154.95"}


@pytest.mark.db
def test_the_billing_history_starts_where_both_paths_say_at_the_lookback_edge(engine):
    """A quarterly fee in arrears since July 2024: the third quarter's invoice ends on 1 October 2024, the first
    day read for September–October 2026 (23 months before): its history starts in September 2024 for the
    database's sums as for the invoices, so the 12-month retention is defined on both (it was n/a on one)."""
    catalog, problems = loads_catalog(LONGER, "longer.toml")
    assert not problems, problems
    service.create_customer(engine, "cy", "Cy", None, "USD")
    service.subscribe(engine, catalog, "cy", "quarterly_arrears", D(2024, 7, 1))
    quarters = [(2024, 9), (2024, 12), (2025, 3), (2025, 6), (2025, 9), (2025, 12), (2026, 3), (2026, 6), (2026, 9)]
    _bill_months(engine, catalog, quarters)
    periods = [month(2026, 9), month(2026, 10)]
    summed = figures_from_database(engine, catalog, periods)
    with session_scope(engine) as session:
        whole = load_metric_inputs(session, periods)
    at_once = compute_figures(whole.customers, whole.subscriptions, catalog, whole.invoices, periods)
    assert [figures_row(f) for f in summed] == [figures_row(f) for f in at_once]
    # September 2026 against September 2025's trailing year: 4 × 300.00 both
    assert str(summed[0].trailing_12.previous) == "1200.00" and summed[0].nrr_trailing(12) == 1


ANNIVERSARY = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.anniv]
name = "Anniversary in advance"
currency = "USD"
billing_anchor = "subscription_start"
[plans.anniv.subscription]
fee = 31.00
billing = "in_advance"
"""


@pytest.mark.db
def test_the_adjustment_of_a_fee_paid_in_advance_counts_where_the_fee_did(engine):
    """An anniversary month in advance from 15 January (31.00 for 15 January – 14 February, on its opening
    invoice: January), cancelled from 25 January: 10 of 31 days due, 10.00, so −21.00 on the invoice of 15 January
    – 14 February, which February's run bills. The adjustment belongs to the fee it adjusts: January 10.00 and
    nothing in February (it was January 31.00 and February −21.00, a month of negative revenue). A second customer
    adds a month in advance from 15 February (billed on the same invoice, in February) and stops on 20 February:
    its 31.00 of 15 February – 14 March counts in February, its −24.00 there too (5 of 28 days due, 5.54; −25.46)."""
    catalog, problems = loads_catalog(ANNIVERSARY, "anniversary.toml")
    assert not problems, problems
    for name in ("ann", "bo"):
        service.create_customer(engine, name, name.title(), None, "USD")
    ann = service.subscribe(engine, catalog, "ann", "anniv", D(2026, 1, 15))
    bo = service.subscribe(engine, catalog, "bo", "anniv", D(2026, 1, 15))
    for sub in (ann, bo):
        finalize_invoice(engine, f"start:{sub.id}", store.FinalizeSettings(), D(2026, 1, 15))
    service.cancel_subscription(engine, ann.id, D(2026, 1, 25), catalog=catalog)
    _bill_months(engine, catalog, [(2026, 1), (2026, 2)])
    service.cancel_subscription(engine, bo.id, D(2026, 2, 20), catalog=catalog)
    _bill_months(engine, catalog, [(2026, 3)])
    with session_scope(engine) as session:
        lines = [
            (invoice.customer.external_id, line.service_start.isoformat(), str(line.amount))
            for listed in store.list_invoices(session)
            for invoice in [store.get_invoice(session, listed.billing_key)]
            for line in invoice.lines
        ]
    assert sorted(lines) == [
        ("ann", "2026-01-15", "-21.00"), ("ann", "2026-01-15", "31.00"),
        ("bo", "2026-01-15", "31.00"), ("bo", "2026-02-15", "-25.46"), ("bo", "2026-02-15", "31.00"),
    ]  # fmt: skip
    assert _months_of(engine, "ann", JAN, D(2026, 4, 1)) == {"2026-01": "10.00"}
    assert _months_of(engine, "bo", JAN, D(2026, 4, 1)) == {"2026-01": "31.00", "2026-02": "5.54"}


def _with_plans_fields(lines) -> dict:
    """January's invoice of ada's fields, but for its dated lines, from ``(kind, start, end, amount, plans)``."""
    amounts: dict[str, Decimal] = {}
    for kind, _, _, amount, _ in lines:
        amounts[kind] = amounts.get(kind, Decimal(0)) + Decimal(amount)
    return {
        "number": "INV-1", "kind": InvoiceKind.INVOICE, "status": InvoiceStatus.FINALIZED,
        "customer_external_id": "ada", "currency": "USD", "period_start": JAN, "period_end": FEB,
        "subtotal": amounts["usage"] + amounts["subscription"], "discount": -amounts["discount"],
        "line_amounts": tuple(sorted(amounts.items())),
    }  # fmt: skip


def test_a_discount_for_some_plans_is_shared_among_the_months_of_their_lines():
    """January's invoice: 20.00 of the base plan's January usage and the add-on's 30.00 for February in advance; a
    coupon of 50 % on the add-on only takes 15.00, all of it off February (shared among all lines it was 6.00 off
    January and 9.00 off February). A 10 % coupon on every plan after it takes 10 % of the 35.00 left, 3.50: 2.00
    off January's 20.00 and 1.50 off the 15.00 left of February's (shared by the lines before any discount it was
    1.40 and 2.10). A coupon for a plan with no line here is shared by all too."""
    lines = [
        ("usage", JAN, FEB, "20.00", ("base",)), ("subscription", FEB, MAR, "30.00", ("addon",)),
        ("discount", None, None, "-15.00", ("addon",)), ("discount", None, None, "-3.50", ()),
    ]  # fmt: skip
    fields = _with_plans_fields(lines)
    dated = [DatedLine(k, s, e, None, Decimal(a), plans=p) for k, s, e, a, p in lines]
    parts = billed_parts(with_line_months(InvoiceSummary(**fields), dated))  # type: ignore[arg-type]
    assert parts == {
        JAN: BilledAmounts(usage=Decimal("20.00"), adjustments=Decimal("-2.00")),
        FEB: BilledAmounts(subscription=Decimal("30.00"), adjustments=Decimal("-16.50")),
    }
    # in the other order, 10 % of the whole 50.00 first (2.00 and 3.00 off), then 50 % of the add-on's 27.00 left
    fields |= {"discount": Decimal("18.50")}
    dated[2:] = [dated[3]._replace(amount=Decimal("-5.00")), dated[2]._replace(amount=Decimal("-13.50"))]
    parts = billed_parts(with_line_months(InvoiceSummary(**fields), dated))  # type: ignore[arg-type]
    assert _totals(parts) == {"2026-01": "18.00", "2026-02": "13.50"}
    dated[3] = dated[3]._replace(plans=("other",))  # 13.50 of a plan with no line: off the 45.00 left, 2 : 3
    parts = billed_parts(with_line_months(InvoiceSummary(**fields), dated))  # type: ignore[arg-type]
    assert _totals(parts) == {"2026-01": "12.60", "2026-02": "18.90"}


def test_discounts_for_the_same_plans_stay_apart_in_their_order():
    """100.00 of January's usage, an add-on's 100.00 for February; 10 % off every plan (−20.00: 10.00 off each),
    50 % off the add-on (−45.00 of its 90.00 left), 10 % off every plan again (−13.50 of the 135.00 left: 9.00 and
    4.50). January 81.00, February 40.50; the two coupons for every plan summed into one before the add-on's made
    them 83.25 and 38.25."""
    lines = [
        ("usage", JAN, FEB, "100.00", ("base",)), ("subscription", FEB, MAR, "100.00", ("addon",)),
        ("discount", None, None, "-20.00", ()), ("discount", None, None, "-45.00", ("addon",)),
        ("discount", None, None, "-13.50", ()),
    ]  # fmt: skip
    dated = [DatedLine(k, s, e, None, Decimal(a), plans=p) for k, s, e, a, p in lines]
    parts = billed_parts(with_line_months(InvoiceSummary(**_with_plans_fields(lines)), dated))  # type: ignore[arg-type]
    assert _totals(parts) == {"2026-01": "81.00", "2026-02": "40.50"}
    # 1.00 off 10.00 and 20.00 leaves 9.666… and 19.333…: no exact amounts, weights (the report sums exactly)
    lines = [
        ("usage", JAN, FEB, "10.00", ("base",)), ("subscription", FEB, MAR, "20.00", ("addon",)),
        ("discount", None, None, "-1.00", ()), ("discount", None, None, "-2.00", ()),
    ]  # fmt: skip
    dated = [DatedLine(k, s, e, None, Decimal(a), plans=p) for k, s, e, a, p in lines]
    summary = with_line_months(InvoiceSummary(**_with_plans_fields(lines)), dated)  # type: ignore[arg-type]
    billed = billed_by_customer([summary])
    assert {day.isoformat()[:7]: str(c["ada"].total) for (_, day), c in billed.items()} == {
        "2026-01": "9.00", "2026-02": "18.00"
    }


ADD_ON = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.base]
name = "Base"
currency = "USD"
[[plans.base.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.10

[plans.addon]
name = "Add-on"
currency = "USD"
[plans.addon.subscription]
fee = 30.00
billing = "in_advance"
"""


@pytest.mark.db
def test_a_coupon_for_an_add_on_billed_in_advance_comes_off_the_add_ons_month(engine):
    """The base plan's usage in arrears (200 calls in January: 20.00) and an add-on of 30.00 a month in advance
    from 1 January, with a coupon of 50 % on the add-on applied on 31 December (from the next billing period,
    January's): January's invoice bills 20.00 of
    January's usage and February's 30.00 less 15.00. January 20.00 (January's fee came on its opening invoice,
    before the coupon: 30.00 more), February 15.00."""
    from billing import coupons

    catalog, problems = loads_catalog(ADD_ON, "add_on.toml")
    assert not problems, problems
    service.create_customer(engine, "ada", "Ada", None, "USD")
    service.subscribe(engine, catalog, "ada", "base", JAN)
    addon = service.subscribe(engine, catalog, "ada", "addon", JAN)
    finalize_invoice(engine, f"start:{addon.id}", store.FinalizeSettings(), JAN)
    coupon = coupons.parse_coupon(
        "ADDON50", percent="50", amount=None, currency=None, duration="forever", plans=["addon"], today=D(2025, 12, 1)
    )
    coupons.create_coupon(engine, catalog, coupon)
    coupons.apply_coupon(engine, "ADDON50", "ada", now=dt.datetime(2025, 12, 31, tzinfo=dt.UTC))
    assert not ingest(engine, _calls(200, "2026-01-10", "a"), meter_specs(catalog), {"ada"}).rejected
    _bill_months(engine, catalog, [(2026, 1)])
    with session_scope(engine) as session:
        january = store.get_invoice(session, "period:ada:2026-01")
    assert sorted((line.kind, str(line.amount)) for line in january.lines) == [
        ("discount", "-15.00"), ("subscription", "30.00"), ("usage", "20.00")
    ]  # fmt: skip
    assert _months_of(engine, "ada", JAN, MAR) == {"2026-01": "50.00", "2026-02": "15.00"}


@pytest.mark.db
def test_coupons_come_off_the_months_in_the_order_they_were_taken(engine):
    """As above, ada's 50 % off the add-on (−15.00) then 10 % off every plan, of the 35.00 left (−3.50: 2.00 off
    January's usage, 1.50 off February's fee); bob's 10 % first, of 50.00 (−5.00: 2.00 and 3.00 off), then 50 % of
    the add-on's 27.00 left (−13.50). Both January 48.00 (the opening fee's 30.00 with it), February 13.50: a
    discount shared by the lines before any discount, or in another order, makes ada's January 48.60."""
    from billing import coupons

    catalog, problems = loads_catalog(ADD_ON, "add_on.toml")
    assert not problems, problems
    for name in ("ada", "bob"):
        service.create_customer(engine, name, name.title(), None, "USD")
        service.subscribe(engine, catalog, name, "base", JAN)
        addon = service.subscribe(engine, catalog, name, "addon", JAN)
        finalize_invoice(engine, f"start:{addon.id}", store.FinalizeSettings(), JAN)
        events = [event | {"customer": name} for event in _calls(200, "2026-01-10", name)]
        assert not ingest(engine, events, meter_specs(catalog), {name}).rejected
    for code, percent, plans in (("ADDON50", "50", ["addon"]), ("LOYAL10", "10", [])):
        coupon = coupons.parse_coupon(
            code, percent=percent, amount=None, currency=None, duration="forever", plans=plans, today=D(2025, 12, 1)
        )
        coupons.create_coupon(engine, catalog, coupon)
    for name, first, then in (("ada", "ADDON50", "LOYAL10"), ("bob", "LOYAL10", "ADDON50")):
        coupons.apply_coupon(engine, first, name, now=dt.datetime(2025, 12, 30, tzinfo=dt.UTC))
        coupons.apply_coupon(engine, then, name, now=dt.datetime(2025, 12, 31, tzinfo=dt.UTC))
    _bill_months(engine, catalog, [(2026, 1)])
    with session_scope(engine) as session:
        discounts = {
            name: [str(line.amount) for line in store.get_invoice(session, f"period:{name}:2026-01").lines
                   if line.kind == "discount"]
            for name in ("ada", "bob")
        }  # fmt: skip
    assert discounts == {"ada": ["-15.00", "-3.50"], "bob": ["-5.00", "-13.50"]}
    for name in ("ada", "bob"):
        assert _months_of(engine, name, JAN, MAR) == {"2026-01": "48.00", "2026-02": "13.50"}


def test_the_tax_inside_the_prices_of_refunds_only_is_shared_among_their_months():
    """January's invoice gives back 35.70 for December and 11.90 for November, tax at 19 % inside (5.70 and 1.90,
    7.60 in all): December −30.00, November −10.00, and nothing in January (shared among positive lines only,
    none, all 7.60 was January's revenue). Where some lines are positive, they take it, as before: weights of both
    signs can add up to nearly nothing, and parts in proportion to them be far beyond the lines (0.16 over
    +100.00 and −99.99 would be +1600.00 and −1599.84)."""
    nov = D(2025, 11, 1)
    lines = [("subscription", D(2025, 12, 1), JAN, "-35.70"), ("subscription", nov, D(2025, 12, 1), "-11.90")]
    parts = billed_parts(_invoice(lines, tax_included=Decimal("-7.60")))
    assert _totals(parts) == {"2025-11": "-10.00", "2025-12": "-30.00", "2026-01": "0"}
    weights = {JAN: Decimal("100.00"), FEB: Decimal("-99.99")}
    assert share_by_month(Decimal("0.16"), weights, MAR, signed=True) == {JAN: Decimal("0.16")}
    assert share_by_month(Decimal("0.01"), {FEB: Decimal("0")}, MAR, signed=True) == {MAR: Decimal("0.01")}


ANNIVERSARY_GROSS = ANNIVERSARY.replace('currency = "USD"\n', 'currency = "USD"\ntax_inclusive = true\n')


@pytest.mark.db
def test_a_refund_counting_with_its_fee_takes_its_tax_with_it(engine):
    """The anniversary month in advance from 15 January, tax included at 19 %, cancelled from 25 January: 31.00 on
    the opening invoice (4.95 of tax inside: 26.05), −21.00 on the invoice of 15 January – 14 February (−3.35
    inside: −17.65), both January's: 8.40, and nothing in February (the refund's tax stayed there: 5.05 and 3.35)."""
    catalog, problems = loads_catalog(ANNIVERSARY_GROSS, "anniversary.toml")
    assert not problems, problems
    assert next(iter(catalog.plans["anniv"])).tax_inclusive
    service.create_customer(engine, "ann", "Ann", None, "USD", tax_rate=Decimal(19))
    ann = service.subscribe(engine, catalog, "ann", "anniv", D(2026, 1, 15))
    finalize_invoice(engine, f"start:{ann.id}", store.FinalizeSettings(), D(2026, 1, 15))
    service.cancel_subscription(engine, ann.id, D(2026, 1, 25), catalog=catalog)
    _bill_months(engine, catalog, [(2026, 1), (2026, 2), (2026, 3)])
    with session_scope(engine) as session:
        taxed = sorted(
            (str(invoice.subtotal), str(invoice.tax_included))
            for listed in store.list_invoices(session)
            for invoice in [store.get_invoice(session, listed.billing_key)]
        )
    assert taxed == [("-21.00", "-3.35"), ("31.00", "4.95")]
    assert _months_of(engine, "ann", JAN, D(2026, 4, 1)) == {"2026-01": "8.40"}
