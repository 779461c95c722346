"""Invoices are issued in the order of their periods (SQLite and PostgreSQL): a later period's invoice adjusts
against what earlier ones bill (an in-advance fee given back when a subscription stops early, a ``once`` coupon
used up), so a period draft waits while its customer has an earlier draft unissued — by period (left a draft and
said why, by the run, the command and the scheduler), by id (refused) — and a finalization split into batches
still issues a draft whose earlier one a later batch issued."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing import coupons
from billing import customers as service
from billing.approval import ApprovalPolicy
from billing.cli import app
from billing.core.periods import Period, month
from billing.db import make_engine, session_scope
from billing.errors import ConflictError
from billing.invoicing import finalize_invoice
from billing.metering import meter_specs
from billing.run import finalize_draft_fresh, finalize_period, finalize_period_fresh, run_billing
from billing.scheduler import bill_closed_periods
from invoices import store
from meters import ingest
from pricing_plans.loader import loads_catalog
from tests.billing.test_subscription_edges import CATALOG, SETTINGS, D, at, bill

pytestmark = pytest.mark.db

WAITS = (
    "invoice 5 (2026-04-01 to 2026-04-30) waits for the customer's earlier draft, invoice 4 (2026-03-01 to "
    "2026-03-31): a later invoice adjusts against what earlier ones bill, so they are issued in the order of their "
    "periods; finalize invoice 4 first"
)


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "order.toml")
    assert not problems, problems
    return loaded


def invoices(engine) -> list[tuple[str, str, str]]:
    """(billing key, status, total) of every invoice."""
    with session_scope(engine) as session:
        return [(i.billing_key, i.status.value, str(i.total)) for i in store.list_invoices(session)]


def march_draft_then_cancelled(engine, catalog) -> None:
    """31.00 a month in advance since January: January and February issued; March's draft (April's fee, 31.00)
    written; then the subscription is cancelled from 16 April and April's draft gives back 16 days of the 31.00
    it finds on March's draft (−15.50). Issued now, March bills 15 days of April (15.50): April's −15.50 would
    give back money never billed."""
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    sub = service.subscribe(engine, catalog, "acme", "adv", D(2026, 1, 1))
    bill(engine, catalog, 2026, 1)
    bill(engine, catalog, 2026, 2)
    run_billing(engine, catalog, month(2026, 3), now=at(D(2026, 4, 1)))
    service.cancel_subscription(engine, sub.id, D(2026, 4, 16))
    run_billing(engine, catalog, month(2026, 4), now=at(D(2026, 5, 1)))
    assert invoices(engine)[-2:] == [("period:acme:2026-03", "draft", "31.00"), ("period:acme:2026-04", "draft", "-15.50")]


def test_a_later_period_waits_for_an_earlier_draft_and_then_adjusts_against_it_as_issued(engine, catalog):
    march_draft_then_cancelled(engine, catalog)
    report, numbers = finalize_period_fresh(engine, catalog, month(2026, 4), SETTINGS, D(2026, 5, 2), now=at(D(2026, 5, 2)))
    assert numbers == [] and report.waiting == [("acme", WAITS)] and ("acme", WAITS) in report.skipped
    assert invoices(engine)[-1] == ("period:acme:2026-04", "draft", "-15.50")
    _, numbers = finalize_period_fresh(engine, catalog, month(2026, 3), SETTINGS, D(2026, 5, 2), now=at(D(2026, 5, 2)))
    assert numbers == ["INV-2026-000004"]
    report, numbers = finalize_period_fresh(engine, catalog, month(2026, 4), SETTINGS, D(2026, 5, 2), now=at(D(2026, 5, 2)))
    # April adjusts against March as issued: 15 days of April billed, 15 days due, nothing to give back
    assert numbers == ["INV-2026-000005"] and report.waiting == []
    assert invoices(engine)[-2:] == [
        ("period:acme:2026-03", "finalized", "15.50"),
        ("period:acme:2026-04", "finalized", "0.00"),
    ]


def test_a_draft_finalized_by_id_is_refused_while_an_earlier_one_is_a_draft(engine, catalog):
    march_draft_then_cancelled(engine, catalog)
    with pytest.raises(ConflictError, match="waits for the customer's earlier draft, invoice 4 ") as refused:
        finalize_draft_fresh(engine, catalog, 5, SETTINGS, D(2026, 5, 2), now=at(D(2026, 5, 2)))
    assert str(refused.value) == f"{WAITS}; nothing was finalized"
    with pytest.raises(ConflictError, match="finalize invoice 4 first; nothing was finalized"):
        finalize_invoice(engine, "period:acme:2026-04", SETTINGS, D(2026, 5, 2), now=at(D(2026, 5, 2)))
    assert [status for _, status, _ in invoices(engine)[-2:]] == ["draft", "draft"]
    # once March is issued, April is (rated again first: nothing left to give back)
    assert finalize_draft_fresh(engine, catalog, 4, SETTINGS, D(2026, 5, 2), now=at(D(2026, 5, 2))).total == 15.50
    assert str(finalize_draft_fresh(engine, catalog, 5, SETTINGS, D(2026, 5, 2), now=at(D(2026, 5, 2))).total) == "0.00"


def test_the_command_leaves_the_later_draft_and_says_why(cli_env, catalog, tmp_path: Path, monkeypatch):
    path = tmp_path / "order.toml"
    path.write_text(CATALOG, encoding="utf-8")
    monkeypatch.setenv("BILLING_CATALOG", str(path))
    engine = make_engine(cli_env["BILLING_DATABASE_URL"])
    try:
        march_draft_then_cancelled(engine, catalog)
        held = CliRunner().invoke(app, ["invoices", "finalize", "--period", "2026-04", "--json"])
        assert held.exit_code == 0, held.output
        assert json.loads(held.output) == {
            "finalized": [], "awaiting_approval": [], "left_as_drafts": [{"customer": "acme", "reason": WAITS}]
        }
        as_written = CliRunner().invoke(app, ["invoices", "finalize", "--period", "2026-04", "--as-written"])
        assert as_written.exit_code == 0, as_written.output
        assert "finalized 0 invoice(s)" in as_written.output
        assert f"left a draft: acme: {WAITS}" in " ".join(as_written.output.split())
        by_id = CliRunner().invoke(app, ["invoices", "finalize", "5"])
        assert by_id.exit_code == 1 and "finalize invoice 4 first; nothing was finalized" in " ".join(
            by_id.output.split()
        )
        assert [status for _, status, _ in invoices(engine)[-2:]] == ["draft", "draft"]
    finally:
        engine.dispose()


def test_the_scheduler_says_which_draft_waits(engine, catalog):
    """March's draft stays a draft (its customer's first cycle after April has nothing to issue for March: it is
    only looked back at within the lookback), April's waits for it, and the cycle says so."""
    march_draft_then_cancelled(engine, catalog)
    report = bill_closed_periods(engine, catalog, SETTINGS, 0, now=at(D(2026, 5, 3)), lookback=1)
    assert report.finalized == [] and ("acme", WAITS) in report.skipped
    report = bill_closed_periods(engine, catalog, SETTINGS, 0, now=at(D(2026, 5, 3)), lookback=2)
    assert report.finalized == ["INV-2026-000004", "INV-2026-000005"]
    assert [(status, total) for _, status, total in invoices(engine)[-2:]] == [("finalized", "15.50"), ("finalized", "0.00")]


def test_drafts_split_across_batches_are_each_issued_after_the_earlier_one(engine, catalog):
    """A weekly subscription from Monday 2 March, 7.00 a week in advance, with a coupon (which counts the periods
    it reduced: each week's invoice depends on the earlier ones): its opening invoice (2–8 March), then a period
    invoice for each week ending in March. The week of 16–22 March is written first (the lowest id of the period
    drafts), then the month's run writes the others. Issued one per batch in id order, 16–22 March waits for 2–8
    and 9–15 March, and 23–29 March for it: both are issued at the end, in the order of their weeks."""
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "wk", D(2026, 3, 2))
    coupon = coupons.parse_coupon("TEN", percent="10", amount=None, currency=None, duration="forever")
    coupons.create_coupon(engine, catalog, coupon)
    coupons.apply_coupon(engine, "TEN", "acme", now=at(D(2026, 2, 20)))
    third = Period(D(2026, 3, 16), D(2026, 3, 23))
    run_billing(engine, catalog, month(2026, 3), only=[third], now=at(D(2026, 4, 1)))
    run_billing(engine, catalog, month(2026, 3), now=at(D(2026, 4, 1)))
    with session_scope(engine) as session:
        ids = {i.period_start.isoformat(): i.id for i in store.list_invoices(session) if i.scope == "period"}
    assert ids["2026-03-16"] < ids["2026-03-02"] < ids["2026-03-09"] < ids["2026-03-23"]
    numbers = finalize_period(engine, month(2026, 3), SETTINGS, D(2026, 4, 1), batch=1, now=at(D(2026, 4, 1)))
    with session_scope(engine) as session:
        issued = sorted((i.number, i.billing_key) for i in store.list_invoices(session))
    assert numbers == [f"INV-2026-00000{n}" for n in range(1, 6)]
    assert issued == [
        ("INV-2026-000001", "start:1"),
        ("INV-2026-000002", "period:acme:2026-W10"),
        ("INV-2026-000003", "period:acme:2026-W11"),
        ("INV-2026-000004", "period:acme:2026-W12"),
        ("INV-2026-000005", "period:acme:2026-W13"),
    ]


WEEKLY_TWO = """
[plans.wk2]
name = "Weekly 2"
currency = "USD"
interval = "week"
subscription = { fee = 7.00, billing = "in_advance" }
"""


def test_a_draft_waits_for_an_earlier_one_that_itself_waits(engine):
    """Two weekly subscriptions (X, Y), 7.00 a week each in advance, from Monday 2 March; everything of March issued
    but week 13 (23–29 March, A). X cancelled from 2 April, then week 14 (B) is written: it bills Y's week 15 in
    advance (7.00). Y cancelled from 9 April, then week 15 (C) is written: it adjusts Y's week 15 (−4.00), a fee
    B bills, not A. B waits for A (both bill X's week 14); C must wait for B, held with it: issued first, C gave
    back 4.00 of a 7.00 that B, rated again, bills as 3.00 (Y's 6–8 April), so the customer paid −1.00 for them."""
    catalog, problems = loads_catalog(CATALOG + WEEKLY_TWO, "order.toml")
    assert not problems, problems
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    x = service.subscribe(engine, catalog, "acme", "wk", D(2026, 3, 2))
    y = service.subscribe(engine, catalog, "acme", "wk2", D(2026, 3, 2))
    run_billing(engine, catalog, month(2026, 3), now=at(D(2026, 4, 1)))
    for key, status, _ in invoices(engine):
        if status == "draft" and key != "period:acme:2026-W13":
            finalize_invoice(engine, key, SETTINGS, D(2026, 4, 1), now=at(D(2026, 4, 1)))
    service.cancel_subscription(engine, x.id, D(2026, 4, 2), catalog=catalog)
    run_billing(engine, catalog, month(2026, 4), only=[Period(D(2026, 3, 30), D(2026, 4, 6))], now=at(D(2026, 4, 13)))
    service.cancel_subscription(engine, y.id, D(2026, 4, 9), catalog=catalog)
    run_billing(engine, catalog, month(2026, 4), only=[Period(D(2026, 4, 6), D(2026, 4, 13))], now=at(D(2026, 4, 13)))
    numbers = finalize_period(
        engine, month(2026, 4), SETTINGS, D(2026, 4, 13), now=at(D(2026, 4, 13)), allow_open_period=True
    )
    assert numbers == []
    assert [(key, status) for key, status, _ in invoices(engine)[-3:]] == [
        ("period:acme:2026-W13", "draft"), ("period:acme:2026-W14", "draft"), ("period:acme:2026-W15", "draft")
    ]


ANNIVERSARY = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.anni]
name = "Anniversary"
currency = "USD"
billing_anchor = "subscription_start"
[plans.anni.subscription]
fee = 20.00
billing = "in_advance"
[[plans.anni.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 1.00
"""


def test_the_scheduler_says_which_anniversary_draft_waits(engine):
    """The same for an anniversary month ending in the month still open. 20.00 in advance from 15 January and 1.00
    a call, 10 % off with a coupon: the anniversary month of 15 March – 14 April (10 calls, and the fee of 15 April
    – 14 May: 27.00) waits for approval above 25.00; the cycle of 16 May finalizes the one that ended on 14 May
    (no call, the next fee: 18.00), which waits for it (the coupon counts the periods it reduced), and says so."""
    loaded, problems = loads_catalog(ANNIVERSARY, "anniversary.toml")
    assert not problems, problems
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    sub = service.subscribe(engine, loaded, "acme", "anni", D(2026, 1, 15))
    coupons.create_coupon(
        engine, loaded, coupons.parse_coupon("TEN", percent="10", amount=None, currency=None, duration="forever")
    )
    coupons.apply_coupon(engine, "TEN", "acme", now=at(D(2026, 1, 15)))
    with session_scope(engine) as session:
        opening = store.get_invoice(session, f"start:{sub.id}").id
    finalize_draft_fresh(engine, loaded, opening, SETTINGS, D(2026, 1, 15), now=at(D(2026, 1, 15)))
    bill(engine, loaded, 2026, 2)
    bill(engine, loaded, 2026, 3)
    calls = [
        {"id": f"c{i}", "customer": "acme", "meter": "api_calls", "timestamp": "2026-04-01T12:00:00Z"}
        for i in range(10)
    ]
    assert not ingest(engine, calls, meter_specs(loaded), {"acme"}).rejected
    held = ApprovalPolicy(limits={"USD": Decimal("25.00")})
    report = bill_closed_periods(engine, loaded, SETTINGS, 0, now=at(D(2026, 5, 16)), lookback=1, approval=held)
    assert report.finalized == []
    drafts = [(key, total) for key, status, total in invoices(engine) if status == "draft"]
    assert drafts == [
        ("period:acme:2026-03-15..2026-04-15", "27.00"),
        ("period:acme:2026-04-15..2026-05-15", "18.00"),
    ]
    ((customer, why),) = [item for item in report.skipped if "waits for" in item[1]]
    assert customer == "acme" and why.startswith("invoice 5 (2026-04-15 to 2026-05-14) waits for the customer's ")
    assert why.endswith("invoice 4 (2026-03-15 to 2026-04-14): a later invoice adjusts against what earlier ones "
                        "bill, so they are issued in the order of their periods; finalize invoice 4 first")  # fmt: skip


WEEKLY_HELD = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.wk]
name = "Weekly"
currency = "USD"
interval = "week"
[plans.wk.subscription]
fee = 7.00
billing = "in_arrears"
[[plans.wk.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 1.00
"""


def test_the_scheduler_says_only_the_weeks_it_tried_wait(engine):
    """7.00 a week and 1.00 a call, 10 % off with a coupon: week 8 (30 calls: 33.30) waits for approval above
    25.00. The cycle of 17 March, 3 days' grace, tries weeks 9 and 10, which wait for it, and says so; week 11
    (9–15 March) is due only on the 19th, is not tried, and is not said to wait."""
    loaded, problems = loads_catalog(WEEKLY_HELD, "weekly.toml")
    assert not problems, problems
    service.create_customer(engine, "acme", "Acme", None, "USD", timezone="UTC")
    service.subscribe(engine, loaded, "acme", "wk", D(2026, 2, 2))
    coupons.create_coupon(
        engine, loaded, coupons.parse_coupon("TEN", percent="10", amount=None, currency=None, duration="forever")
    )
    coupons.apply_coupon(engine, "TEN", "acme", now=at(D(2026, 2, 2)))
    calls = [
        {"id": f"c{i}", "customer": "acme", "meter": "api_calls", "timestamp": "2026-02-18T12:00:00Z"}
        for i in range(30)
    ]
    assert not ingest(engine, calls, meter_specs(loaded), {"acme"}).rejected
    held = ApprovalPolicy(limits={"USD": Decimal("25.00")})
    report = bill_closed_periods(engine, loaded, SETTINGS, 3, now=at(D(2026, 3, 17)), lookback=1, approval=held)
    assert [(key, status, total) for key, status, total in invoices(engine) if status == "draft"] == [
        ("period:acme:2026-W08", "draft", "33.30"),
        ("period:acme:2026-W09", "draft", "6.30"),
        ("period:acme:2026-W10", "draft", "6.30"),
        ("period:acme:2026-W11", "draft", "6.30"),
    ]
    waiting = [why.partition(" waits for")[0] for _, why in report.skipped if "waits for" in why]
    assert waiting == ["invoice 4 (2026-02-23 to 2026-03-01)", "invoice 5 (2026-03-02 to 2026-03-08)"]
