"""What a progressive invoice billed is given back by the period's invoice when no line of the period rates that
usage any more (SQLite and PostgreSQL): the subscription was cancelled or changed from a day before it (from the
period's first day too), or an override splits the charge otherwise (a ``group_by`` added). The period's invoices
then add up to what one invoice would have billed; before, the amount was kept (usage no subscription covers) or
billed twice."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from billing import customers as service
from billing.core.periods import month
from billing.invoicing import list_invoices
from billing.metering import meter_specs
from billing.overrides import set_override
from billing.progressive import issue_progressive_invoices
from billing.run import finalize_period, run_billing
from invoices.store import FinalizeSettings
from meters import ingest
from pricing_plans.loader import loads_catalog

pytestmark = pytest.mark.db

MARCH = month(2026, 3)
SETTINGS = FinalizeSettings()


def catalog(grouped: bool):
    group = 'group_by = ["region"]' if grouped else ""
    charge = f'[[plans.{{code}}.charges]]\nmeter = "transfer"\nmodel = "per_unit"\nunit_amount = 1.00\n{group}\n'
    loaded, problems = loads_catalog(
        '[meters.transfer]\nname = "Transfer"\naggregation = "count"\nunit = "GB"\n'
        '[plans.steps]\nname = "Steps"\ncurrency = "USD"\n' + charge.format(code="steps")
        + "[plans.steps.progressive_billing]\namounts = [50.00]\n"
        '[plans.other]\nname = "Other"\ncurrency = "USD"\n' + charge.format(code="other"),
        "given_back.toml",
    )
    assert not problems, problems
    return loaded


def at(day: int) -> dt.datetime:
    return dt.datetime(2026, 3, day, 12, tzinfo=dt.UTC) if day <= 31 else dt.datetime(2026, 4, day - 31, 12, tzinfo=dt.UTC)


def transfer(engine, cat, n: int, day: int, prefix: str) -> None:
    events = [
        {"id": f"{prefix}-{i}", "customer": "acme", "meter": "transfer", "timestamp": f"2026-03-{day:02d}T10:00:00Z",
         "properties": {"region": "eu"}}
        for i in range(n)
    ]  # fmt: skip
    assert not ingest(engine, events, meter_specs(cat), {"acme"}, now=at(day + 1)).rejected


def progressive_then(engine, cat, action: str | None, day: int):
    """60 GB in eu on 8 March at 1.00: a progressive invoice of 60.00 on 10 March; then ``action`` from ``day``."""
    service.create_customer(engine, "acme", "Acme", "acme@example.test", "USD")
    sub = service.subscribe(engine, cat, "acme", "steps", dt.date(2026, 1, 1))
    transfer(engine, cat, 60, 8, "a")
    assert len(issue_progressive_invoices(engine, cat, SETTINGS, now=at(10)).issued) == 1
    if action == "cancel":
        service.cancel_subscription(engine, sub.id, dt.date(2026, 3, day), catalog=cat)
    elif action == "change":
        service.change_plan(engine, cat, sub.id, "other", dt.date(2026, 3, day))
    return sub


def march(engine, cat) -> list[tuple[str, list[tuple[str, str]]]]:
    run_billing(engine, cat, MARCH, now=at(33))
    finalize_period(engine, MARCH, SETTINGS, dt.date(2026, 4, 2), now=at(33))
    return [
        (str(i.total), [(line.description, str(line.amount)) for line in i.lines])
        for i in list_invoices(engine, customer="acme", with_lines=True)
        if i.number is not None
    ]


@pytest.mark.parametrize("day", [5, 1])
def test_a_grouped_charge_billed_progressively_is_given_back_when_the_subscription_is_cancelled_before(engine, day):
    cat = catalog(grouped=True)
    progressive_then(engine, cat, "cancel", day)
    issued = march(engine, cat)
    # the subscription covers 1–4 March (or nothing), which has no usage: one invoice would bill 0.00
    assert issued[0] == ("60.00", [("Transfer — eu", "60.00")])
    assert issued[1][0] == "-60.00" and ("Transfer — eu (rest of the period)", "-60.00") in issued[1][1]
    assert sum(Decimal(total) for total, _ in issued) == 0


@pytest.mark.parametrize(("grouped", "day"), [(True, 5), (True, 1), (False, 1)])
def test_usage_billed_progressively_is_billed_once_when_the_plan_changes_before_it(engine, grouped, day):
    cat = catalog(grouped=grouped)
    progressive_then(engine, cat, "change", day)
    issued = march(engine, cat)
    name = "Transfer — eu" if grouped else "Transfer"
    # the new subscription bills the 60 GB (60.00); the old one gives back what its progressive invoice billed
    assert issued[1][0] == "0.00"
    assert (name, "60.00") in issued[1][1] and (f"{name} (rest of the period)", "-60.00") in issued[1][1]
    assert sum(Decimal(total) for total, _ in issued) == Decimal("60.00")


def test_an_override_that_adds_a_group_by_bills_only_the_rest(engine):
    cat = catalog(grouped=False)
    sub = progressive_then(engine, cat, None, 0)
    document = {"charges": [{"meter": "transfer", "model": "per_unit", "unit_amount": Decimal("1.00"),
                             "group_by": ["region"]}]}  # fmt: skip
    set_override(engine, cat, sub.id, document, dt.date(2026, 3, 1))
    transfer(engine, cat, 10, 20, "b")
    issued = march(engine, cat)
    # one invoice of March: 70 GB in eu × 1.00 = 70.00; the progressive invoice billed 60.00 of it (ungrouped)
    assert issued[1] == ("10.00", [("Transfer — eu", "70.00"), ("Transfer (rest of the period)", "-60.00")])


@pytest.mark.parametrize(("grouped", "terms", "off"), [(True, ("10", None), "-6.00"), (False, (None, "10.00"), "-10.00")])
def test_a_coupons_discount_on_usage_given_back_is_given_back_too(engine, grouped, terms, off):
    """With a coupon (10 % off, or 10.00 off), the progressive invoice bills 60.00 less its discount; the
    subscription is cancelled from 5 March, which has no usage: one invoice of March bills 0.00 and a coupon takes
    nothing off it, so the period's invoice gives back the discount too (it kept it: −6.00 or −10.00 in all)."""
    from billing import coupons

    cat = catalog(grouped=grouped)
    service.create_customer(engine, "acme", "Acme", "acme@example.test", "USD")
    sub = service.subscribe(engine, cat, "acme", "steps", dt.date(2026, 1, 1))
    percent, amount = terms
    coupon = coupons.parse_coupon(
        "C", percent=percent, amount=amount, currency=None if amount is None else "USD", duration="forever"
    )
    coupons.create_coupon(engine, cat, coupon)
    coupons.apply_coupon(engine, "C", "acme", now=dt.datetime(2026, 2, 20, 12, tzinfo=dt.UTC))
    transfer(engine, cat, 60, 8, "a")
    assert len(issue_progressive_invoices(engine, cat, SETTINGS, now=at(10)).issued) == 1
    service.cancel_subscription(engine, sub.id, dt.date(2026, 3, 5), catalog=cat)
    issued = march(engine, cat)
    assert (issued[0][1][1][1], issued[1][1][-1][1]) == (off, off.removeprefix("-"))
    assert sum(Decimal(total) for total, _ in issued) == 0


FILTERED = """
[meters.transfer]
name = "Transfer"
aggregation = "count"
unit = "GB"

[plans.steps]
name = "Steps"
currency = "USD"
[[plans.steps.charges]]
meter = "transfer"
model = "per_unit"
unit_amount = 1.00
[[plans.steps.charges.filters]]
name = "Europe"
properties = { region = ["eu", "fr"] }
group_by = ["region"]
unit_amount = 1.00
[plans.steps.progressive_billing]
amounts = [50.00]
"""


def test_a_filtered_part_given_back_is_named_by_its_filter_as_its_lines_are(engine):
    """The 60 GB in eu match the filter "Europe" (eu, fr), grouped by region: billed on a progressive invoice as
    "Transfer — Europe — eu", then given back under the same name (before: "Transfer — eu, fr — eu", the
    filter's values) when the subscription is cancelled from 5 March, before any usage of the period."""
    cat, problems = loads_catalog(FILTERED, "filtered.toml")
    assert not problems, problems
    progressive_then(engine, cat, "cancel", 5)
    issued = march(engine, cat)
    assert issued[0] == ("60.00", [("Transfer — Europe — eu", "60.00")])
    assert issued[1] == ("-60.00", [("Transfer", "0.00"), ("Transfer — Europe — eu (rest of the period)", "-60.00")])
