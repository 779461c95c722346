"""A plan change gives no new trial (SQLite and PostgreSQL): the new plan's trial days count from the start of the
first subscription of the chain of plan changes, as Lago counts them from the subscription's initial start. A
change during the trial continues it to its end; a change after it is paid from its first day."""

from __future__ import annotations

import datetime as dt

import pytest

from billing import customers as service
from billing.core.periods import month
from billing.db import repository, session_scope
from billing.run import run_billing
from invoices import store
from pricing_plans.loader import loads_catalog

pytestmark = pytest.mark.db

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.basic]
name = "Basic"
currency = "USD"
subscription = { fee = 31.00, billing = "in_arrears", trial_days = 14 }

[plans.pro]
name = "Pro"
currency = "USD"
subscription = { fee = 62.00, billing = "in_arrears", trial_days = 14 }
"""

D = dt.date
MARCH = month(2026, 3)


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "trials.toml")
    assert not problems, problems
    return loaded


def march_fees(engine, catalog) -> list[tuple[str, str]]:
    """(plan, amount) of the fee lines on March's invoice."""
    run_billing(engine, catalog, MARCH, now=dt.datetime(2026, 4, 1, 12, tzinfo=dt.UTC))
    with session_scope(engine) as session:
        invoice = store.get_invoice(session, "period:acme:2026-03")
        return [(line.plan_code or "", str(line.amount)) for line in invoice.lines if line.kind == "subscription"]


def test_a_change_during_the_trial_continues_it(engine, catalog):
    """Basic from 1 March, Pro from 10 March: the trial runs 1–14 March whatever the plan. Basic 1–9 March is all
    trial: 0.00; Pro pays 15–31 March, 17 days: 62.00 × 17 / 31 = 34.00 (a new trial would have made it 8 days,
    16.00)."""
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", "basic", D(2026, 3, 1))
    new = service.change_plan(engine, catalog, sub.id, "pro", D(2026, 3, 10))
    assert new.trial_from == D(2026, 3, 1)
    assert march_fees(engine, catalog) == [("basic", "0.00"), ("pro", "34.00")]


def test_a_change_after_the_trial_is_paid_from_its_first_day(engine, catalog):
    """Basic from 1 March, Pro from 20 March: Basic pays 15–19 March, 5 days: 31.00 × 5 / 31 = 5.00; Pro pays
    20–31 March, 12 days: 62.00 × 12 / 31 = 24.00 (a new trial would have made it 0.00)."""
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", "basic", D(2026, 3, 1))
    service.change_plan(engine, catalog, sub.id, "pro", D(2026, 3, 20))
    assert march_fees(engine, catalog) == [("basic", "5.00"), ("pro", "24.00")]


def test_the_trial_counts_from_the_first_of_a_chain_of_changes(engine, catalog):
    """Basic from 1 March, Pro from 5 March, Basic again from 10 March: the third subscription's trial still ends
    on 14 March. Basic pays 15–31 March, 17 days: 31.00 × 17 / 31 = 17.00; the first two are all trial."""
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    first = service.subscribe(engine, catalog, "acme", "basic", D(2026, 3, 1))
    second = service.change_plan(engine, catalog, first.id, "pro", D(2026, 3, 5))
    third = service.change_plan(engine, catalog, second.id, "basic", D(2026, 3, 10))
    with session_scope(engine) as session:
        stored = repository.get_subscription(session, third.id)
    assert stored is not None and (stored.chain_start, stored.trial_from) == (D(2026, 3, 1), D(2026, 3, 1))
    assert march_fees(engine, catalog) == [("basic", "0.00"), ("pro", "0.00"), ("basic", "17.00")]
