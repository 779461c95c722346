"""Subscriptions at the edges of what is issued (SQLite and PostgreSQL): one cancelled or changed on its start day
after its opening invoice was issued gets that fee back; one cancelled the next day pays that day; a start inside
a period the customer is already invoiced for is refused (its days there would never be billed); a quarterly
subscription cancelled while its opening invoice is still a draft is adjusted against that invoice as it will be
issued."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from billing import customers as service
from billing.core.periods import month
from billing.db import session_scope
from billing.errors import BillingInputError
from billing.invoicing import finalize_opening_invoices
from billing.run import finalize_period, run_billing
from invoices import store
from pricing_plans.loader import loads_catalog

pytestmark = pytest.mark.db

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.adv]
name = "Adv"
currency = "USD"
subscription = { fee = 31.00, billing = "in_advance" }

[plans.arr]
name = "Arr"
currency = "USD"
subscription = { fee = 31.00, billing = "in_arrears" }

[plans.addon]
name = "Addon"
currency = "USD"
subscription = { fee = 30.00, billing = "in_advance" }

[plans.wk]
name = "Weekly"
currency = "USD"
interval = "week"
subscription = { fee = 7.00, billing = "in_advance" }

[plans.anniv]
name = "Anniversary"
currency = "USD"
billing_anchor = "subscription_start"
subscription = { fee = 31.00, billing = "in_advance" }

[plans.qadv]
name = "QAdv"
currency = "USD"
interval = "quarter"
subscription = { fee = 300.00, billing = "in_advance" }
"""

D = dt.date
SETTINGS = store.FinalizeSettings()


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "edges.toml")
    assert not problems, problems
    return loaded


def at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), dt.UTC)


def fee_lines(engine, sub_id: int) -> list[tuple[str, str]]:
    """(billing key, amount) of the subscription's fee lines, on every invoice."""
    with session_scope(engine) as session:
        return [
            (invoice.billing_key, str(line.amount))
            for listed in store.list_invoices(session)
            for invoice in [store.get_invoice(session, listed.billing_key)]
            for line in invoice.lines
            if line.subscription_id == sub_id and line.kind == "subscription"
        ]


def bill(engine, catalog, year: int, month_: int) -> None:
    period = month(year, month_)
    day = period.end + dt.timedelta(days=1)
    run_billing(engine, catalog, period, now=at(day))
    finalize_period(engine, period, SETTINGS, day, now=at(day))


def test_a_subscription_cancelled_on_its_start_day_gets_its_issued_opening_fee_back(engine, catalog):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", "adv", D(2026, 3, 17))
    # issued once it has started: 31.00 × 15 / 31 days (17–31 March) = 15.00
    finalize_opening_invoices(engine, catalog, SETTINGS, now=at(D(2026, 3, 17), 9))
    service.cancel_subscription(engine, sub.id, D(2026, 3, 17))  # later that day: it covers no day
    bill(engine, catalog, 2026, 3)
    bill(engine, catalog, 2026, 4)
    # March's invoice gives the 15.00 back (0 days due − 15.00 billed in advance); April bills nothing
    assert fee_lines(engine, sub.id) == [(f"start:{sub.id}", "15.00"), ("period:acme:2026-03", "-15.00")]


def test_a_plan_changed_on_its_start_day_bills_the_new_plan_only(engine, catalog):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", "adv", D(2026, 3, 17))
    finalize_opening_invoices(engine, catalog, SETTINGS, now=at(D(2026, 3, 17), 1))  # 15.00 issued
    new = service.change_plan(engine, catalog, sub.id, "addon", D(2026, 3, 17))
    finalize_opening_invoices(engine, catalog, SETTINGS, now=at(D(2026, 3, 17), 2))  # 30.00 × 15 / 31 = 14.52
    bill(engine, catalog, 2026, 3)
    bill(engine, catalog, 2026, 4)
    assert fee_lines(engine, sub.id) == [(f"start:{sub.id}", "15.00"), ("period:acme:2026-03", "-15.00")]
    # 14.52 for 17–31 March, April's 30.00 in advance on March's invoice, May's on April's: 74.52
    assert sum(Decimal(amount) for _, amount in fee_lines(engine, new.id)) == Decimal("74.52")


def test_a_subscription_cancelled_the_day_after_its_start_pays_that_day(engine, catalog):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", "adv", D(2026, 3, 17))
    finalize_opening_invoices(engine, catalog, SETTINGS, now=at(D(2026, 3, 17), 9))
    service.cancel_subscription(engine, sub.id, D(2026, 3, 18))
    bill(engine, catalog, 2026, 3)
    # 31.00 × 1 / 31 = 1.00 due: 15.00 billed, 14.00 back
    assert fee_lines(engine, sub.id) == [(f"start:{sub.id}", "15.00"), ("period:acme:2026-03", "-14.00")]


def test_a_start_inside_an_invoiced_period_is_refused(engine, catalog):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "arr", D(2026, 3, 1))
    bill(engine, catalog, 2026, 3)  # March issued
    with pytest.raises(BillingInputError, match=r"start: cannot start a subscription of customer 'acme' on "
                       r"2026-03-17: it is invoiced through 2026-03-31; start it on 2026-04-01 or later"):
        service.subscribe(engine, catalog, "acme", "addon", D(2026, 3, 17))
    assert service.subscribe(engine, catalog, "acme", "addon", D(2026, 4, 1)).start_date == D(2026, 4, 1)


@pytest.mark.parametrize("issue", ["scheduler", "finalize"])
def test_a_cancellation_writes_the_opening_draft_again_for_the_days_covered(engine, catalog, issue):
    from billing import invoicing

    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", "qadv", D(2026, 2, 10))  # drafted: 300 × 50 / 90 = 166.67
    service.cancel_subscription(engine, sub.id, D(2026, 3, 15), catalog=catalog)
    bill(engine, catalog, 2026, 3)  # February was never run: the opening is still a draft
    if issue == "scheduler":
        finalize_opening_invoices(engine, catalog, SETTINGS, now=at(D(2026, 4, 2)))
    else:  # billing invoices finalize: the draft as it is stored
        invoicing.finalize_invoice(engine, f"start:{sub.id}", SETTINGS, D(2026, 4, 2), now=at(D(2026, 4, 2)))
    bill(engine, catalog, 2026, 4)
    # 10 February – 14 March: 19 + 14 = 33 of Q1's 90 days: 300 × 33 / 90 = 110.00, all on the opening invoice
    # however it is issued (not 110.00 − 56.67 against the 166.67 drafted before the cancellation)
    assert fee_lines(engine, sub.id) == [(f"start:{sub.id}", "110.00")]


def test_a_start_inside_a_week_already_invoiced_is_taken_for_a_plan_billed_on_months(engine, catalog):
    from billing.core.periods import Period

    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "wk", D(2026, 3, 2))
    week = Period(D(2026, 3, 16), D(2026, 3, 23))
    run_billing(engine, catalog, month(2026, 3), now=at(D(2026, 3, 23)), only=[week])
    finalize_period(engine, week, SETTINGS, D(2026, 3, 23), now=at(D(2026, 3, 23)))
    # the week of 16–22 March is issued, March's calendar invoice is not: a monthly plan from 20 March is billed
    # on it in full
    assert service.subscribe(engine, catalog, "acme", "adv", D(2026, 3, 20)).start_date == D(2026, 3, 20)


@pytest.mark.parametrize(("plan", "opening", "period_key"), [("wk", "6.00", "period:acme:2026-W12"),
                                                            ("anniv", "31.00", "period:acme:2026-03-17..2026-04-17")])
def test_a_weekly_or_anniversary_subscription_cancelled_on_its_start_day_gets_its_fee_back(
    engine, catalog, plan, opening, period_key
):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", plan, D(2026, 3, 17))
    # weekly: 7.00 × 6 / 7 days (Tuesday 17 – Sunday 22 March) = 6.00; anniversary: a whole month from the 17th
    finalize_opening_invoices(engine, catalog, SETTINGS, now=at(D(2026, 3, 17), 9))
    service.cancel_subscription(engine, sub.id, D(2026, 3, 17), catalog=catalog)
    bill(engine, catalog, 2026, 3)
    bill(engine, catalog, 2026, 4)
    # the invoice of its first billing period gives the fee back
    assert fee_lines(engine, sub.id) == [(f"start:{sub.id}", opening), (period_key, f"-{opening}")]
