"""Seats and add-ons: a fee per seat, a quantity changed mid-period (in advance and in arrears), MRR per seat, and
several subscriptions of one customer billed on one invoice, each in its own section. The amounts are worked out
by hand in the comments; the database tests run on SQLite and, when configured, PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from billing import customers as service
from billing.core.domain import (
    Customer,
    QuantityChange,
    Subscription,
    SubscriptionStatus,
    SubscriptionTerms,
)
from billing.core.fees import advance_fee, fee_adjustment, fee_period_for, fee_period_to_adjust, opening_fee, rate_fee
from billing.core.metrics import compute_figures, plan_mrr
from billing.core.periods import Period, month
from billing.db import session_scope
from billing.errors import BillingInputError, ConflictError
from billing.preview import customer_usage
from billing.run import finalize_period, run_billing
from invoices import store
from invoices.render import render_html
from pricing_plans.loader import loads_catalog
from pricing_plans.models import Catalog

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
unit = "call"

[plans.team]                 # 10.00 per seat a month, billed at the start of the month
name = "Team"
currency = "USD"
subscription = { fee = 10.00, billing = "in_advance", seats = true }

[plans.team_arrears]         # 10.00 per seat a month, billed after the month
name = "Team (in arrears)"
currency = "USD"
subscription = { fee = 10.00, billing = "in_arrears", seats = true }

[plans.team_annual]          # 120.00 per seat a year: 10.00 per seat a month in MRR
name = "Team annual"
currency = "USD"
interval = "year"
subscription = { fee = 120.00, billing = "in_advance", seats = true }

[plans.team_quarterly]       # 30.00 per seat a quarter, in advance
name = "Team quarterly"
currency = "USD"
interval = "quarter"
subscription = { fee = 30.00, billing = "in_advance", seats = true }

[plans.team_anniversary]     # 10.00 per seat a month from the subscription's start day, in arrears
name = "Team anniversary"
currency = "USD"
billing_anchor = "subscription_start"
subscription = { fee = 10.00, billing = "in_arrears", seats = true }

[plans.basic]                # a base plan: 30.00 a month in arrears and API calls at 0.01
name = "Basic"
currency = "USD"
subscription = { fee = 30.00, billing = "in_arrears" }
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.01 }]

[plans.pro]
name = "Pro"
currency = "USD"
subscription = { fee = 62.00, billing = "in_arrears" }
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.005 }]

[plans.storage]              # an add-on: extra storage, 5.00 a month in advance
name = "Extra storage"
currency = "USD"
subscription = { fee = 5.00, billing = "in_advance" }
commitment = { minimum = 1.00 }
"""

MARCH, APRIL, MAY, JUNE = month(2026, 3), month(2026, 4), month(2026, 5), month(2026, 6)
SETTINGS = store.FinalizeSettings()
D = dt.date


def _catalog() -> Catalog:
    catalog, problems = loads_catalog(CATALOG, "seats.toml")
    assert not problems and catalog is not None, problems
    return catalog


@pytest.fixture
def catalog() -> Catalog:
    return _catalog()


def invoice_of(engine, key):
    with session_scope(engine) as session:
        return store.get_invoice(session, key)


def lines_of(invoice):
    return [(line.kind, line.plan_code, str(line.amount)) for line in invoice.lines]


# -- the catalog -------------------------------------------------------------------------------------------------


def test_seats_need_a_fee_and_a_boolean_and_the_errors_are_located():
    _, problems = loads_catalog(
        """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.free_seats]
name = "Free seats"
currency = "USD"
subscription = { fee = 0, seats = true }

[plans.vague]
name = "Vague"
currency = "USD"
subscription = { fee = 3.00, seats = "yes" }
""",
        "bad.toml",
    )
    assert [str(problem) for problem in problems] == [
        "bad.toml: plans.free_seats.subscription.seats: a per-seat price needs a fee above 0 (fee is 0)",
        "bad.toml: plans.vague.subscription.seats: expected true or false, got 'yes'",
    ]


# -- the fee per seat, pure -------------------------------------------------------------------------------------


def test_in_arrears_each_seat_is_billed_for_the_days_it_was_held():
    plan = _catalog().plan("team_arrears")
    terms = SubscriptionTerms(D(2026, 3, 1), quantity=5, quantity_changes=(QuantityChange(D(2026, 4, 11), 8),))
    fee = rate_fee(terms, plan, APRIL)
    # April has 30 days: 5 seats for 1–10 April, 8 seats for 11–30 April:
    # 10.00 × 5 × 10/30 + 10.00 × 8 × 20/30 = 16.666… + 53.333… = 70.00
    assert fee is not None and str(fee.amount) == "70.00"
    assert fee.details.explanation == "10.00 × 5 seats × 10/30 days + 10.00 × 8 seats × 20/30 days"
    # March: 5 seats the whole month: 10.00 × 5 = 50.00
    march = rate_fee(terms, plan, MARCH)
    assert march is not None and (str(march.amount), str(march.quantity)) == ("50.00", "5")


def test_in_advance_added_seats_are_charged_for_the_rest_of_the_period():
    plan = _catalog().plan("team")
    terms = SubscriptionTerms(D(2026, 3, 1), quantity=5, quantity_changes=(QuantityChange(D(2026, 4, 11), 8),))
    # April's fee, billed in advance on March's invoice, with the seats of 1 April: 10.00 × 5 = 50.00
    in_advance = advance_fee(terms, plan, APRIL)
    assert in_advance is not None and str(in_advance.amount) == "50.00"
    # 5 → 8 on 11 April: 3 × 10.00 × 20/30 = 20.00 on April's invoice (the next one)
    assert fee_period_to_adjust(terms, plan, APRIL) == APRIL
    adjustment = fee_adjustment(terms, plan, APRIL, Decimal("50.00"))
    assert adjustment is not None and str(adjustment.amount) == "20.00"
    assert adjustment.description == "Team seats, 2026-04: 5 → 8 from 2026-04-11"
    assert adjustment.details.explanation is not None
    assert adjustment.details.explanation.startswith("3 seats added × 10.00 × 20/30 days = 20.00; due ")
    assert str(adjustment.quantity) == "3"
    # May's fee in advance: 8 seats × 10.00 = 80.00; nothing to adjust in May
    may = advance_fee(terms, plan, MAY)
    assert may is not None and str(may.amount) == "80.00"
    assert fee_period_to_adjust(terms, plan, MAY) is None


def test_in_advance_removed_seats_are_credited():
    plan = _catalog().plan("team")
    terms = SubscriptionTerms(D(2026, 3, 1), quantity=8, quantity_changes=(QuantityChange(D(2026, 5, 21), 6),))
    # May has 31 days; 21–31 May is 11 days. Billed in advance: 8 × 10.00 = 80.00.
    # due: 10.00 × 8 × 20/31 + 10.00 × 6 × 11/31 = 2260/31 = 72.903… → 72.90; 72.90 − 80.00 = −7.10
    # (−2 × 10.00 × 11/31 = −7.096… → −7.10)
    adjustment = fee_adjustment(terms, plan, MAY, Decimal("80.00"))
    assert adjustment is not None and str(adjustment.amount) == "-7.10"
    assert adjustment.description == "Team seats, 2026-05: 8 → 6 from 2026-05-21"
    assert adjustment.details.explanation is not None
    assert adjustment.details.explanation.startswith("2 seats removed × 10.00 × 11/31 days = -7.10")


def test_seats_added_to_a_yearly_plan_are_charged_for_the_rest_of_the_year_on_the_months_invoice():
    plan = _catalog().plan("team_annual")
    terms = SubscriptionTerms(D(2026, 1, 1), quantity=3, quantity_changes=(QuantityChange(D(2026, 7, 2), 5),))
    july = month(2026, 7)
    year = fee_period_to_adjust(terms, plan, july)
    assert year is not None and (year.start, year.end) == (D(2026, 1, 1), D(2027, 1, 1))
    # billed in advance: 3 × 120.00 = 360.00; 2 seats added on 2 July, 183 of 365 days left (30 in July + 31 + 30
    # + 31 + 30 + 31): 2 × 120.00 × 183/365 = 120.328… → 120.33
    adjustment = fee_adjustment(terms, plan, july, Decimal("360.00"))
    assert adjustment is not None and str(adjustment.amount) == "120.33"
    assert fee_period_to_adjust(terms, plan, month(2026, 8)) is None


def test_seats_added_in_a_quarter_paid_in_advance_are_settled_on_the_months_invoice():
    plan = _catalog().plan("team_quarterly")
    terms = SubscriptionTerms(D(2026, 1, 1), quantity=5, quantity_changes=(QuantityChange(D(2026, 5, 11), 8),))
    quarter = fee_period_to_adjust(terms, plan, MAY)
    assert quarter is not None and (quarter.start, quarter.end) == (D(2026, 4, 1), D(2026, 7, 1))
    # billed in advance for April–June (91 days): 5 × 30.00 = 150.00; 3 seats added on 11 May, 51 days left
    # (21 in May + 30 in June): 3 × 30.00 × 51/91 = 4590/91 = 50.439… → 50.44, on May's invoice
    adjustment = fee_adjustment(terms, plan, MAY, Decimal("150.00"))
    assert adjustment is not None and str(adjustment.amount) == "50.44"
    assert fee_period_to_adjust(terms, plan, APRIL) is None and fee_period_to_adjust(terms, plan, JUNE) is None


def test_seats_on_anniversary_periods_are_billed_for_the_days_each_was_held():
    plan = _catalog().plan("team_anniversary")
    terms = SubscriptionTerms(D(2026, 1, 15), quantity=5, quantity_changes=(QuantityChange(D(2026, 4, 1), 8),))
    period = fee_period_for(terms, plan, Period(D(2026, 3, 15), D(2026, 4, 15)))
    assert (period.start, period.end) == (D(2026, 3, 15), D(2026, 4, 15))
    fee = rate_fee(terms, plan, period)
    # 15 March to 14 April, 31 days: 5 seats for 17 days (15–31 March), 8 seats for 14 days (1–14 April):
    # 10.00 × 5 × 17/31 + 10.00 × 8 × 14/31 = (850 + 1120)/31 = 1970/31 = 63.548… → 63.55
    assert fee is not None and str(fee.amount) == "63.55"


def test_a_change_dated_later_waits_for_the_invoice_of_its_period():
    plan = _catalog().plan("team")
    terms = SubscriptionTerms(D(2026, 3, 1), quantity=5, quantity_changes=(QuantityChange(D(2026, 5, 11), 8),))
    assert fee_period_to_adjust(terms, plan, APRIL) is None  # April's invoice: the May change is not yet due
    opening = opening_fee(terms, plan)
    assert opening is not None and str(opening.amount) == "50.00"  # March: 5 seats × 10.00


def test_mrr_counts_the_fee_times_the_seats():
    catalog = _catalog()
    # team: 10.00 × 8 seats = 80.00; team_annual: 120.00 / 12 × 3 seats = 30.00; a plan without seats ignores it
    assert str(plan_mrr(catalog.plan("team"), 8)) == "80.000000000000"
    assert str(plan_mrr(catalog.plan("team_annual"), 3)) == "30.000000000000"
    # storage: fee 5.00 + commitment 1.00 = 6.00, whatever the quantity
    assert str(plan_mrr(catalog.plan("storage"), 4)) == "6.000000000000"


def test_mrr_movements_follow_the_seats():
    catalog = _catalog()
    acme = Customer(1, "acme", "Acme", None, "USD", "UTC", "en_US", (), None, Decimal(0))
    team = Subscription(
        id=1,
        customer_id=1,
        customer_external_id="acme",
        plan_code="team",
        plan_version=1,
        start_date=D(2026, 3, 1),
        end_date=None,
        status=SubscriptionStatus.ACTIVE,
        cancel_reason=None,
        previous_subscription_id=None,
        quantity=5,
        quantity_changes=(QuantityChange(D(2026, 4, 11), 8),),
    )
    march, april = compute_figures([acme], [team], catalog, [], [MARCH, APRIL])
    # 1 March and 1 April: 5 seats × 10.00 = 50.00; 1 May: 8 × 10.00 = 80.00, an expansion of 30.00
    assert (str(march.mrr_start), str(march.mrr_end)) == ("50.000000000000", "50.000000000000")
    assert (str(april.mrr_start), str(april.mrr_end)) == ("50.000000000000", "80.000000000000")
    assert str(april.mrr_expansion) == "30.000000000000"


# -- the service and the billing run (SQLite and PostgreSQL) -----------------------------------------------------


def _acme(engine) -> None:
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")


@pytest.mark.db
def test_a_seat_increase_in_advance_is_charged_on_the_next_invoice(engine, catalog):
    _acme(engine)
    team = service.subscribe(engine, catalog, "acme", "team", D(2026, 3, 1), quantity=5)
    assert (team.quantity, team.quantity_changes) == (5, ())
    assert lines_of(invoice_of(engine, f"start:{team.id}")) == [("subscription", "team", "50.00")]  # 5 × 10.00
    run_billing(engine, catalog, MARCH)
    # March's invoice carries April's fee in advance: 5 seats × 10.00 = 50.00
    assert lines_of(invoice_of(engine, "period:acme:2026-03")) == [("subscription", "team", "50.00")]
    finalize_period(engine, MARCH, SETTINGS, D(2026, 4, 1))
    with pytest.raises(BillingInputError, match="invoiced through 2026-03-31; change it from 2026-04-01 or later"):
        service.change_quantity(engine, catalog, team.id, 8, D(2026, 3, 20))

    changed = service.change_quantity(engine, catalog, team.id, 8, D(2026, 4, 11))
    assert (changed.quantity, changed.quantity_changes) == (5, (QuantityChange(D(2026, 4, 11), 8),))
    run_billing(engine, catalog, APRIL)
    april = invoice_of(engine, "period:acme:2026-04")
    # 5 → 8 on 11 April: 3 × 10.00 × 20/30 = 20.00; then May's fee in advance: 8 × 10.00 = 80.00
    assert lines_of(april) == [("subscription", "team", "20.00"), ("subscription", "team", "80.00")]
    # the usage preview settles the seats as the run does
    preview = customer_usage(engine, catalog, "acme", APRIL).preview
    assert [(line.description, str(line.amount)) for line in preview.lines] == [
        (line.description, str(line.amount)) for line in april.lines
    ]
    assert april.lines[0].description == "Team seats, 2026-04: 5 → 8 from 2026-04-11"
    assert str(april.total) == "100.00"
    finalize_period(engine, APRIL, SETTINGS, D(2026, 5, 1))

    # a decrease: 8 → 6 from 21 May (11 of May's 31 days): due 10.00 × (8 × 20 + 6 × 11)/31 = 2260/31 = 72.90,
    # billed 80.00 → −7.10; June's fee in advance: 6 × 10.00 = 60.00
    service.change_quantity(engine, catalog, team.id, 6, D(2026, 5, 21))
    run_billing(engine, catalog, MAY)
    may = invoice_of(engine, "period:acme:2026-05")
    assert lines_of(may) == [("subscription", "team", "-7.10"), ("subscription", "team", "60.00")]
    finalize_period(engine, MAY, SETTINGS, D(2026, 6, 1))
    # June: nothing changes, nothing to settle; July's fee 60.00
    run_billing(engine, catalog, JUNE)
    assert lines_of(invoice_of(engine, "period:acme:2026-06")) == [("subscription", "team", "60.00")]


@pytest.mark.db
def test_seats_in_arrears_are_billed_for_the_days_each_was_held(engine, catalog):
    _acme(engine)
    team = service.subscribe(engine, catalog, "acme", "team_arrears", D(2026, 3, 1), quantity=5)
    service.change_quantity(engine, catalog, team.id, 8, D(2026, 4, 11))
    run_billing(engine, catalog, MARCH)
    run_billing(engine, catalog, APRIL)
    # March: 5 × 10.00 = 50.00; April: 10.00 × 5 × 10/30 + 10.00 × 8 × 20/30 = 16.666… + 53.333… = 70.00
    assert lines_of(invoice_of(engine, "period:acme:2026-03")) == [("subscription", "team_arrears", "50.00")]
    april = invoice_of(engine, "period:acme:2026-04")
    assert lines_of(april) == [("subscription", "team_arrears", "70.00")]
    assert april.lines[0].details.explanation == "10.00 × 5 seats × 10/30 days + 10.00 × 8 seats × 20/30 days"


@pytest.mark.db
def test_quantities_are_checked(engine, catalog):
    _acme(engine)
    with pytest.raises(BillingInputError, match=r"^quantity: plan 'basic' is not priced per seat"):
        service.subscribe(engine, catalog, "acme", "basic", D(2026, 3, 1), quantity=2)
    with pytest.raises(BillingInputError, match=r"^quantity: expected a whole number of seats from 1 to 1,000,000"):
        service.subscribe(engine, catalog, "acme", "team", D(2026, 3, 1), quantity=0)
    team = service.subscribe(engine, catalog, "acme", "team", D(2026, 3, 1), quantity=2)
    with pytest.raises(BillingInputError, match=r"^date: 2026-02-28 is outside subscription"):
        service.change_quantity(engine, catalog, team.id, 3, D(2026, 2, 28))
    # the same plan twice at once is refused: more of it is more seats on the one subscription
    with pytest.raises(ConflictError, match="overlaps"):
        service.subscribe(engine, catalog, "acme", "team", D(2026, 4, 1))
    # on the start day, while the opening invoice is a draft: it is the quantity at the start, and the opening
    # invoice is written again: 4 × 10.00 = 40.00
    again = service.change_quantity(engine, catalog, team.id, 4, D(2026, 3, 1))
    assert (again.quantity, again.quantity_changes) == (4, ())
    assert lines_of(invoice_of(engine, f"start:{team.id}")) == [("subscription", "team", "40.00")]


@pytest.mark.db
def test_a_plan_change_keeps_the_seats_when_the_new_plan_is_per_seat(engine, catalog):
    _acme(engine)
    team = service.subscribe(engine, catalog, "acme", "team", D(2026, 3, 1), quantity=5)
    service.change_quantity(engine, catalog, team.id, 7, D(2026, 3, 10))
    moved = service.change_plan(engine, catalog, team.id, "team_arrears", D(2026, 3, 16))
    assert (moved.plan_code, moved.quantity) == ("team_arrears", 7)
    basic = service.change_plan(engine, catalog, moved.id, "basic", D(2026, 3, 20))
    assert basic.quantity == 1


# -- add-ons: several subscriptions, one invoice ---------------------------------------------------------------


def _calls(n: int, day: str) -> list[dict]:
    return [
        {"id": f"{day}-{i}", "customer": "acme", "meter": "api_calls", "timestamp": f"{day}T12:00:00Z"}
        for i in range(n)
    ]


@pytest.mark.db
def test_an_add_on_is_billed_on_the_same_invoice_as_its_base_plan_in_its_own_section(engine, catalog):
    from billing.ingestion import ingest_batch

    _acme(engine)
    base = service.subscribe(engine, catalog, "acme", "basic", D(2026, 3, 1))
    addon = service.subscribe(engine, catalog, "acme", "storage", D(2026, 3, 1))
    report = ingest_batch(engine, catalog, _calls(300, "2026-03-10"), now=dt.datetime(2026, 3, 20, tzinfo=dt.UTC))
    assert report.accepted == 300
    result = run_billing(engine, catalog, MARCH)
    assert result.invoices == 2  # the add-on's opening invoice (March's storage fee) and the one period invoice
    invoice = invoice_of(engine, "period:acme:2026-03")
    # basic: fee 30.00 in arrears, 300 calls × 0.01 = 3.00; storage: no usage, so the commitment's true-up
    # 1.00 − 0 = 1.00, then April's fee in advance 5.00. Total 30.00 + 3.00 + 1.00 + 5.00 = 39.00
    assert lines_of(invoice) == [
        ("subscription", "basic", "30.00"),
        ("usage", "basic", "3.00"),
        ("commitment", "storage", "1.00"),
        ("subscription", "storage", "5.00"),
    ]
    assert str(invoice.total) == "39.00"
    sections = list(dict.fromkeys(line.section for line in invoice.lines))
    assert sections == ["Basic", "Extra storage"]  # the plans' names, no internal id
    assert [line.subscription_id for line in invoice.lines] == [base.id, base.id, addon.id, addon.id]
    assert lines_of(invoice_of(engine, f"start:{addon.id}")) == [("subscription", "storage", "5.00")]
    # the rendered invoice prints each section's heading once, above its own lines
    html = render_html(invoice)
    assert [html.count(f'<tr class="section"><td colspan="3">{name}</td></tr>') for name in sections] == [1, 1]
    assert html.index(sections[0]) < html.index("3.00") < html.index(sections[1])


@pytest.mark.db
def test_an_add_on_cancelled_while_the_base_continues(engine, catalog):
    _acme(engine)
    base = service.subscribe(engine, catalog, "acme", "basic", D(2026, 3, 1))
    addon = service.subscribe(engine, catalog, "acme", "storage", D(2026, 3, 1))
    run_billing(engine, catalog, MARCH)
    finalize_period(engine, MARCH, SETTINGS, D(2026, 4, 1))  # April's storage fee 5.00 billed in advance
    service.cancel_subscription(engine, addon.id, D(2026, 4, 16))
    assert service.get_subscription(engine, base.id).status is SubscriptionStatus.ACTIVE
    run_billing(engine, catalog, APRIL)
    april = invoice_of(engine, "period:acme:2026-04")
    # basic: 30.00 and 0 calls; storage ran 1–15 April: 5.00 × 15/30 = 2.50 due, 5.00 billed → −2.50; its
    # commitment prorated: 1.00 × 15/30 = 0.50 true-up. Total 30.00 + 0.50 − 2.50 = 28.00
    assert lines_of(april) == [
        ("subscription", "basic", "30.00"),
        ("usage", "basic", "0.00"),
        ("commitment", "storage", "0.50"),
        ("subscription", "storage", "-2.50"),
    ]
    assert str(april.total) == "28.00"
    run_billing(engine, catalog, MAY)
    assert {line.plan_code for line in invoice_of(engine, "period:acme:2026-05").lines} == {"basic"}


@pytest.mark.db
def test_a_plan_change_of_the_base_leaves_the_add_on_running(engine, catalog):
    _acme(engine)
    base = service.subscribe(engine, catalog, "acme", "basic", D(2026, 3, 1))
    addon = service.subscribe(engine, catalog, "acme", "storage", D(2026, 3, 1))
    pro = service.change_plan(engine, catalog, base.id, "pro", D(2026, 3, 16))
    assert service.get_subscription(engine, addon.id).status is SubscriptionStatus.ACTIVE
    run_billing(engine, catalog, MARCH)
    invoice = invoice_of(engine, "period:acme:2026-03")
    # basic 1–15 March: 30.00 × 15/31 = 14.516… → 14.52; pro 16–31 March: 62.00 × 16/31 = 32.00; storage:
    # true-up 1.00 and April's 5.00 in advance — three sections on one invoice
    assert lines_of(invoice) == [
        ("subscription", "basic", "14.52"),
        ("usage", "basic", "0.00"),
        ("commitment", "storage", "1.00"),
        ("subscription", "storage", "5.00"),
        ("subscription", "pro", "32.00"),
        ("usage", "pro", "0.00"),
    ]
    assert {line.subscription_id for line in invoice.lines} == {base.id, addon.id, pro.id}


# -- the CLI's quote ------------------------------------------------------------------------------------------


QUOTED = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.team]
name = "Team"
currency = "USD"
subscription = { fee = 10.00, billing = "in_advance", seats = true }
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.01 }]

[plans.basic]
name = "Basic"
currency = "USD"
subscription = { fee = 30.00, billing = "in_arrears" }
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.01 }]
"""


def test_a_quote_prices_a_number_of_seats(tmp_path):
    import json

    from typer.testing import CliRunner

    from billing.cli import app

    path = tmp_path / "seats.toml"
    path.write_text(QUOTED, encoding="utf-8")
    runner = CliRunner()
    base = ["quote", "--catalog", str(path), "--period", "2026-04", "--usage", "api_calls=300"]
    result = runner.invoke(app, [*base, "--plan", "basic", "--quantity", "2", "--json"])
    assert result.exit_code != 0 and "--quantity: plan 'basic' is not priced per seat" in result.stderr
    result = runner.invoke(app, [*base, "--plan", "team", "--quantity", "5", "--start", "2026-04-11", "--json"])
    assert result.exit_code == 0, result.stderr
    # 5 seats from 11 April: 10.00 × 5 × 20/30 = 33.333… → 33.33; 300 calls × 0.01 = 3.00
    assert [(line["kind"], line["amount"]) for line in json.loads(result.stdout)["lines"]] == [
        ("subscription", "33.33"),
        ("usage", "3.00"),
    ]


def test_an_error_prints_its_bracketed_words(capsys):
    """The CLI's errors were read as rich markup: "its [subscription] has no seats = true" printed "its  has no
    seats = true"."""
    import typer

    from billing.cli._common import fail

    with pytest.raises(typer.Exit) as exited:
        fail("quantity: plan 'basic' is not priced per seat (its [subscription] has no seats = true)")
    assert exited.value.exit_code == 1
    assert "error: quantity: plan 'basic' is not priced per seat (its [subscription] has no seats = true)" in " ".join(
        capsys.readouterr().err.split())  # fmt: skip
