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


def test_a_quarterly_fee_is_adjusted_against_its_opening_draft_as_it_will_be_issued(engine, catalog):
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", "qadv", D(2026, 2, 10))  # drafted: 300 × 50 / 90 = 166.67
    service.cancel_subscription(engine, sub.id, D(2026, 3, 15))
    bill(engine, catalog, 2026, 3)  # February was never run: the opening is still a draft
    finalize_opening_invoices(engine, catalog, SETTINGS, now=at(D(2026, 4, 2)))
    bill(engine, catalog, 2026, 4)
    # 10 February – 14 March: 19 + 14 = 33 of Q1's 90 days: 300 × 33 / 90 = 110.00, all on the opening invoice
    # (not 110.00 − 56.67 against the 166.67 drafted before the cancellation)
    assert fee_lines(engine, sub.id) == [(f"start:{sub.id}", "110.00")]
