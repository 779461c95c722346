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
from billing.core.metrics import (
    BilledAmounts,
    InvoiceSummary,
    billed_by_customer,
    billed_parts,
    compute_figures,
    figures_row,
    line_month,
    share_by_month,
    with_line_months,
)
from billing.core.periods import month
from billing.db import session_scope
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
    return with_line_months(summary, ((k, s, e, None, Decimal(a)) for k, s, e, a in lines))


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
