"""Where prices by dimension, negotiated prices, seats and billing periods meet, on SQLite and PostgreSQL: an
override adding filters to a charge (the run, the preview, the threshold check and the unbilled account split
usage by the negotiated filters), negotiated prices on weekly and anniversary plans, seats with a negotiated fee,
late usage per filter of an anniversary month, MRR at the negotiated fee. Every amount is worked out by hand."""

from __future__ import annotations

import datetime as dt

import pytest

from billing import customers as service
from billing import overrides
from billing.core.periods import Period, month
from billing.db import session_scope
from billing.db.notification_tables import ThresholdEvaluationRow
from billing.errors import BillingInputError, ConflictError
from billing.metering import meter_specs
from billing.preview import customer_usage
from billing.run import finalize_period, run_billing
from billing.thresholds import check_thresholds
from billing.unbilled import unbilled_usage
from invoices import store
from meters import ingest
from pricing_plans.loader import loads_catalog, loads_override

pytestmark = pytest.mark.db

CATALOG = """
[meters.sms]
name = "SMS"
aggregation = "count"
unit = "message"

[plans.sms]
name = "SMS"
currency = "USD"
subscription = { fee = 10.00, billing = "in_advance" }
charges = [{ meter = "sms", model = "per_unit", unit_amount = 0.10 }]
thresholds = [{ spend_cap = 1.00, levels = [100] }]

[plans.weekly]
name = "Weekly"
currency = "USD"
interval = "week"
subscription = { fee = 7.00, billing = "in_advance" }
charges = [{ meter = "sms", model = "per_unit", unit_amount = 0.10 }]

[plans.anniversary]
name = "Anniversary"
currency = "USD"
billing_anchor = "subscription_start"
subscription = { fee = 31.00, billing = "in_advance" }
charges = [{ meter = "sms", model = "per_unit", unit_amount = 0.10 }]

[plans.team]
name = "Team"
currency = "USD"
subscription = { fee = 10.00, billing = "in_advance", seats = true }
"""

# No default: SMS to countries other than the US are left unpriced; US SMS cost 0.50.
US_ONLY = """
[[charges]]
meter = "sms"
model = "per_unit"
[[charges.filters]]
name = "US"
properties = { country = ["US"] }
unit_amount = 0.50
"""

SETTINGS = store.FinalizeSettings()


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "catalog.toml")
    assert not problems, problems
    return loaded


def document(text: str) -> dict:
    found, problems = loads_override(text)
    assert not problems
    assert found is not None
    return found


def sms(n: int, day: str, country: str, prefix: str) -> list[dict]:
    return [
        {
            "id": f"{prefix}-{i}",
            "customer": "acme",
            "meter": "sms",
            "timestamp": f"{day}T12:00:00Z",
            "properties": {"country": country},
        }
        for i in range(n)
    ]


def put(engine, catalog, events) -> None:
    report = ingest(engine, events, meter_specs(catalog), {"acme"})
    assert not report.rejected, report.rejected


def invoice_of(engine, key):
    with session_scope(engine) as session:
        return store.get_invoice(session, key)


def lines_of(invoice) -> list[tuple[str, str | None, str, str]]:
    return [(str(line.kind), line.meter, str(line.quantity), str(line.amount)) for line in invoice.lines]


def acme(engine) -> None:
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")


def test_an_override_adding_filters_splits_the_usage_by_them_everywhere(engine, catalog):
    acme(engine)
    subscription = service.subscribe(engine, catalog, "acme", "sms", dt.date(2026, 1, 1))
    overrides.set_override(engine, catalog, subscription.id, document(US_ONLY), dt.date(2026, 2, 1))
    put(engine, catalog, sms(3, "2026-02-10", "US", "us") + sms(2, "2026-02-11", "FR", "fr"))
    february = month(2026, 2)
    run_billing(engine, catalog, month(2026, 1))  # February's fee in advance: 10.00

    report = run_billing(engine, catalog, february)
    # 3 US SMS × 0.50 = 1.50 on the US filter; the 2 FR SMS match no filter of a charge without default:
    # unbilled, named; March's fee 10.00 in advance
    assert lines_of(invoice_of(engine, "period:acme:2026-02")) == [
        ("usage", "sms", "3", "1.50"),
        ("subscription", None, "1", "10.00"),
    ]
    assert (report.events, report.unbilled_events) == (3, 2)
    assert [(g.meter, g.reason.value, g.events) for g in report.unbilled] == [("sms", "unpriced", 2)]
    account = unbilled_usage(engine, catalog, february)
    assert (account.rated, account.unbilled) == (3, report.unbilled)

    # the preview prices the same lines
    preview = customer_usage(engine, catalog, "acme", february, now=dt.datetime(2026, 2, 20, tzinfo=dt.UTC))
    assert [(line.meter, str(line.quantity), str(line.amount)) for line in preview.preview.lines] == [
        ("sms", "3", "1.50"),
        (None, "1", "10.00"),
    ]
    # the spend cap of 1.00 is measured on the negotiated lines: 1.50
    check_thresholds(engine, catalog, period=february, now=dt.datetime(2026, 2, 20, tzinfo=dt.UTC))
    with session_scope(engine) as session:
        assert [str(row.value) for row in session.query(ThresholdEvaluationRow)] == ["1.50"]


def test_late_usage_of_a_negotiated_period_is_split_by_its_filters(engine, catalog):
    acme(engine)
    subscription = service.subscribe(engine, catalog, "acme", "sms", dt.date(2026, 1, 1))
    overrides.set_override(engine, catalog, subscription.id, document(US_ONLY), dt.date(2026, 2, 1))
    put(engine, catalog, sms(3, "2026-02-10", "US", "us"))
    run_billing(engine, catalog, month(2026, 1))
    finalize_period(engine, month(2026, 1), SETTINGS, dt.date(2026, 2, 1))
    run_billing(engine, catalog, month(2026, 2))
    finalize_period(engine, month(2026, 2), SETTINGS, dt.date(2026, 3, 1))
    put(engine, catalog, sms(1, "2026-02-27", "US", "late-us") + sms(1, "2026-02-27", "FR", "late-fr"))
    report = run_billing(engine, catalog, month(2026, 3))
    # February, negotiated: 4 US SMS × 0.50 = 2.00, 1.50 billed → 0.50; the FR one is unpriced (no line)
    march = invoice_of(engine, "period:acme:2026-03")
    assert lines_of(march)[-1] == ("late_usage", "sms", "4", "0.50")
    assert march.lines[-1].dimension == '{"filter":{"country":["US"]},"group":{}}'
    assert report.late_lines == 1


WEEKLY_DEAL = """
[subscription]
fee = 5.00
billing = "in_advance"
"""


def test_a_negotiated_fee_on_a_weekly_plan_from_a_week_boundary(engine, catalog):
    acme(engine)
    # Monday 2 March 2026: weeks run Monday to Sunday
    subscription = service.subscribe(engine, catalog, "acme", "weekly", dt.date(2026, 3, 2))
    with pytest.raises(Exception, match="not a billing-period boundary"):
        overrides.set_override(engine, catalog, subscription.id, document(WEEKLY_DEAL), dt.date(2026, 3, 10))
    overrides.set_override(engine, catalog, subscription.id, document(WEEKLY_DEAL), dt.date(2026, 3, 16))
    run_billing(engine, catalog, month(2026, 3))
    # week of 2 March: next week's fee (9 March) at the plan's 7.00; week of 9 March: the week of 16 March's
    # fee at the negotiated 5.00
    assert lines_of(invoice_of(engine, "period:acme:2026-W10")) == [
        ("usage", "sms", "0", "0.00"),
        ("subscription", None, "1", "7.00"),
    ]
    assert lines_of(invoice_of(engine, "period:acme:2026-W11")) == [
        ("usage", "sms", "0", "0.00"),
        ("subscription", None, "1", "5.00"),
    ]


def test_a_negotiated_fee_on_an_anniversary_plan_and_late_usage_per_filter(engine, catalog):
    acme(engine)
    subscription = service.subscribe(engine, catalog, "acme", "anniversary", dt.date(2026, 1, 15))
    overrides.set_override(engine, catalog, subscription.id, document(US_ONLY), dt.date(2026, 2, 15))
    put(engine, catalog, sms(2, "2026-02-20", "US", "us"))
    run_billing(engine, catalog, month(2026, 2))
    finalize_period(engine, month(2026, 2), SETTINGS, dt.date(2026, 3, 1))
    run_billing(engine, catalog, month(2026, 3))
    # anniversary month 15 February to 14 March: 2 US SMS × 0.50 = 1.00; 15 March's fee 31.00
    first = invoice_of(engine, "period:acme:2026-02-15..2026-03-15")
    assert lines_of(first) == [("usage", "sms", "2", "1.00"), ("subscription", None, "1", "31.00")]
    finalize_period(engine, month(2026, 3), SETTINGS, dt.date(2026, 3, 16))
    put(engine, catalog, sms(1, "2026-03-01", "US", "late"))
    run_billing(engine, catalog, month(2026, 4))
    # the late SMS of 1 March belongs to 15 February..14 March: 3 × 0.50 = 1.50, 1.00 billed → 0.50
    april = invoice_of(engine, "period:acme:2026-03-15..2026-04-15")
    assert lines_of(april)[-1] == ("late_usage", "sms", "3", "0.50")


TEAM_DEAL = """
[subscription]
fee = 8.00
billing = "in_advance"
seats = true
"""


def test_seats_added_as_a_negotiated_fee_starts(engine, catalog):
    acme(engine)
    subscription = service.subscribe(engine, catalog, "acme", "team", dt.date(2026, 1, 1), quantity=2)
    run_billing(engine, catalog, month(2026, 1))
    finalize_period(engine, month(2026, 1), SETTINGS, dt.date(2026, 2, 1))
    # January's invoice billed February's fee in advance: 2 seats × 10.00 = 20.00
    overrides.set_override(engine, catalog, subscription.id, document(TEAM_DEAL), dt.date(2026, 2, 1))
    service.change_quantity(engine, catalog, subscription.id, 3, dt.date(2026, 2, 15))
    run_billing(engine, catalog, month(2026, 2))
    february = invoice_of(engine, "period:acme:2026-02")
    # February's fee is now 8.00 per seat: 2 seats for 14 days and 3 seats for 14 days of 28:
    # 8.00 × 2 × 14/28 + 8.00 × 3 × 14/28 = 8.00 + 12.00 = 20.00, 20.00 billed → no difference... so the
    # adjustment is 0 and March's fee is 3 × 8.00 = 24.00
    assert lines_of(february) == [("subscription", None, "3", "24.00")]


def test_mrr_counts_the_negotiated_fee(engine, catalog):
    from billing.metrics_store import figures_from_database

    acme(engine)
    subscription = service.subscribe(engine, catalog, "acme", "sms", dt.date(2026, 1, 1))
    overrides.set_override(
        engine, catalog, subscription.id, document('[subscription]\nfee = 6.00\nbilling = "in_advance"\n'),
        dt.date(2026, 2, 1),
    )  # fmt: skip
    figures = figures_from_database(engine, catalog, [month(2026, 1), month(2026, 2)])
    by_period = {(f.period.label, f.currency): f for f in figures}
    # MRR on 1 January 10.00 (nothing before: new), on 1 February 6.00 (the negotiated fee); on 1 March 6.00
    january, february = by_period[("2026-01", "USD")], by_period[("2026-02", "USD")]
    assert (str(january.mrr_start), str(january.mrr_end)) == ("10.000000000000", "6.000000000000")
    assert str(january.mrr_contraction) == "4.000000000000"
    assert (str(february.mrr_start), str(february.mrr_end)) == ("6.000000000000", "6.000000000000")


def test_mrr_counts_the_negotiated_fee_per_seat(engine, catalog):
    from billing.metrics_store import figures_from_database

    acme(engine)
    subscription = service.subscribe(engine, catalog, "acme", "team", dt.date(2026, 1, 1), quantity=2)
    overrides.set_override(engine, catalog, subscription.id, document(TEAM_DEAL), dt.date(2026, 2, 1))
    service.change_quantity(engine, catalog, subscription.id, 3, dt.date(2026, 2, 15))
    (january, february) = figures_from_database(engine, catalog, [month(2026, 1), month(2026, 2)])
    # 1 January: 2 seats × 10.00 = 20.00; 1 February: 2 seats × 8.00 = 16.00; 1 March: 3 seats × 8.00 = 24.00
    assert (str(january.mrr_start), str(january.mrr_end)) == ("20.000000000000", "16.000000000000")
    assert (str(february.mrr_end), str(february.mrr_expansion)) == ("24.000000000000", "8.000000000000")


CHANGE = """
[plans.sms_a]
name = "SMS A"
currency = "USD"
[[plans.sms_a.charges]]
meter = "sms"
model = "per_unit"
unit_amount = 0.10
[[plans.sms_a.charges.filters]]
properties = { country = ["US"] }
unit_amount = 0.50

[plans.sms_b]
name = "SMS B"
currency = "USD"
[[plans.sms_b.charges]]
meter = "sms"
model = "per_unit"
[[plans.sms_b.charges.filters]]
properties = { country = ["US"] }
unit_amount = 0.40
"""


def test_a_plan_change_splits_each_subscriptions_usage_by_its_own_filters(engine):
    catalog, problems = loads_catalog(CATALOG + CHANGE, "catalog.toml")
    assert catalog is not None, problems
    acme(engine)
    old = service.subscribe(engine, catalog, "acme", "sms_a", dt.date(2026, 1, 1))
    service.change_plan(engine, catalog, old.id, "sms_b", dt.date(2026, 3, 16))
    put(engine, catalog, sms(2, "2026-03-10", "US", "a-us") + sms(1, "2026-03-10", "FR", "a-fr"))
    put(engine, catalog, sms(3, "2026-03-20", "US", "b-us") + sms(1, "2026-03-20", "FR", "b-fr"))
    report = run_billing(engine, catalog, month(2026, 3))
    # SMS A to 15 March: US 2 × 0.50 = 1.00, the rest 1 × 0.10 = 0.10; SMS B from 16 March: US 3 × 0.40 = 1.20,
    # the FR one unpriced (no default)
    assert lines_of(invoice_of(engine, "period:acme:2026-03")) == [
        ("usage", "sms", "2", "1.00"),
        ("usage", "sms", "1", "0.10"),
        ("usage", "sms", "3", "1.20"),
    ]
    assert (report.events, report.unbilled_events) == (6, 1)
    finalize_period(engine, month(2026, 3), SETTINGS, dt.date(2026, 4, 1))
    put(engine, catalog, sms(1, "2026-03-12", "US", "late-a") + sms(1, "2026-03-25", "US", "late-b"))
    run_billing(engine, catalog, month(2026, 4))
    # late: SMS A US now 3 × 0.50 = 1.50, 1.00 billed → 0.50; SMS B US now 4 × 0.40 = 1.60, 1.20 billed → 0.40
    april = invoice_of(engine, "period:acme:2026-04")
    assert [line for line in lines_of(april) if line[0] == "late_usage"] == [
        ("late_usage", "sms", "3", "0.50"),
        ("late_usage", "sms", "4", "0.40"),
    ]


ANNIVERSARY_DEAL = """
[subscription]
fee = 25.00
billing = "in_advance"
"""


def test_a_negotiated_fee_on_an_anniversary_plan_adjusts_the_fee_billed_in_advance(engine, catalog):
    acme(engine)
    subscription = service.subscribe(engine, catalog, "acme", "anniversary", dt.date(2026, 1, 15))
    run_billing(engine, catalog, month(2026, 2))  # 15 January to 14 February: 15 February's fee, 31.00
    finalize_period(engine, month(2026, 2), SETTINGS, dt.date(2026, 2, 16))
    recorded = overrides.set_override(engine, catalog, subscription.id, document(ANNIVERSARY_DEAL))
    assert recorded.effective_from == dt.date(2026, 2, 15)  # the first anniversary month not invoiced
    run_billing(engine, catalog, month(2026, 3))
    # 15 February to 14 March: its fee now 25.00, 31.00 billed → -6.00; 15 March's fee at 25.00
    assert lines_of(invoice_of(engine, "period:acme:2026-02-15..2026-03-15")) == [
        ("usage", "sms", "0", "0.00"),
        ("subscription", None, "1", "-6.00"),
        ("subscription", None, "1", "25.00"),
    ]


def test_a_negotiated_fee_on_a_weekly_plan_after_a_week_is_issued(engine, catalog):
    acme(engine)
    subscription = service.subscribe(engine, catalog, "acme", "weekly", dt.date(2026, 3, 2))
    run_billing(engine, catalog, month(2026, 3), now=dt.datetime(2026, 3, 31, tzinfo=dt.UTC))
    week10 = Period(dt.date(2026, 3, 2), dt.date(2026, 3, 9))
    finalize_period(engine, month(2026, 3), SETTINGS, dt.date(2026, 4, 1), now=dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
    assert lines_of(invoice_of(engine, "period:acme:2026-W10"))[-1] == ("subscription", None, "1", "7.00")
    recorded = overrides.set_override(engine, catalog, subscription.id, document(WEEKLY_DEAL))
    # March's weeks are all issued (the last, 23 to 29 March, billed the week of 30 March in advance)
    assert recorded.effective_from == dt.date(2026, 3, 30)
    run_billing(engine, catalog, month(2026, 4), now=dt.datetime(2026, 4, 30, tzinfo=dt.UTC))
    # week of 30 March: its fee now 5.00, 7.00 billed → -2.00; the week of 6 April at 5.00
    assert lines_of(invoice_of(engine, "period:acme:2026-W14")) == [
        ("usage", "sms", "0", "0.00"),
        ("subscription", None, "1", "-2.00"),
        ("subscription", None, "1", "5.00"),
    ]
    assert week10.label == "2026-W10"


FREE = """
[plans.free]
name = "Free"
currency = "USD"
charges = [{ meter = "sms", model = "per_unit", unit_amount = 0.10 }]
"""


def test_a_negotiated_fee_per_seat_on_a_plan_without_a_fee_is_refused(engine):
    """The subscription's seats follow its plan: on a plan without a fee it holds 1 seat and cannot be given
    more, so a negotiated fee per seat there would bill one seat forever."""
    catalog, problems = loads_catalog(CATALOG + FREE, "catalog.toml")
    assert catalog is not None, problems
    acme(engine)
    subscription = service.subscribe(engine, catalog, "acme", "free", dt.date(2026, 1, 1))
    with pytest.raises(BillingInputError) as refused:
        overrides.set_override(engine, catalog, subscription.id, document(TEAM_DEAL), dt.date(2026, 2, 1))
    assert str(refused.value) == (
        "subscription.seats: plan 'free' has no fee, so its subscriptions hold one seat; a negotiated fee on it "
        "cannot be per seat (seats = true)"
    )
    assert overrides.list_overrides(engine, subscription.id) == []
    # a fee that is not per seat is given as before: 8.00 a month in advance from February
    per_month = TEAM_DEAL.replace("seats = true\n", "")
    assert overrides.set_override(engine, catalog, subscription.id, document(per_month), dt.date(2026, 2, 1))


def test_the_invoice_and_usage_json_name_each_lines_dimension(engine, catalog, cli_env):
    import json

    from typer.testing import CliRunner

    from billing.api.schemas import InvoiceOut, UsageOut
    from billing.cli import app
    from billing.cli._json import usage_json

    acme(engine)
    subscription = service.subscribe(engine, catalog, "acme", "sms", dt.date(2026, 1, 1))
    overrides.set_override(engine, catalog, subscription.id, document(US_ONLY), dt.date(2026, 2, 1))
    put(engine, catalog, sms(3, "2026-02-10", "US", "us"))
    run_billing(engine, catalog, month(2026, 1))  # February's fee in advance: 10.00
    run_billing(engine, catalog, month(2026, 2))
    invoice = invoice_of(engine, "period:acme:2026-02")
    shown = CliRunner().invoke(app, ["invoices", "show", str(invoice.id), "--json"])
    assert shown.exit_code == 0, shown.output
    lines = json.loads(shown.stdout)["lines"]
    us = '{"filter":{"country":["US"]},"group":{}}'
    # the US filter's line (3 × 0.50 = 1.50), then March's fee in advance
    assert [(line["kind"], line["amount"], line["dimension"]) for line in lines] == [
        ("usage", "1.50", us),
        ("subscription", "10.00", None),
    ]
    assert InvoiceOut.model_validate(json.loads(shown.stdout)).lines[0].dimension == us
    found = customer_usage(engine, catalog, "acme", month(2026, 2), now=dt.datetime(2026, 2, 20, tzinfo=dt.UTC))
    preview = UsageOut.model_validate(usage_json(found)).preview
    assert [(line.amount, line.dimension) for line in preview.lines] == [("1.50", us), ("10.00", None)]


TEAM_FROM_START = """
[plans.team_from_start]
name = "Team from the start day"
currency = "USD"
billing_anchor = "subscription_start"
subscription = { fee = 31.00, billing = "in_advance", seats = true }
"""


def test_a_seat_added_in_an_anniversary_month_from_the_31st(engine):
    catalog, problems = loads_catalog(CATALOG + TEAM_FROM_START, "catalog.toml")
    assert catalog is not None, problems
    acme(engine)
    subscription = service.subscribe(engine, catalog, "acme", "team_from_start", dt.date(2026, 1, 31))
    run_billing(engine, catalog, month(2026, 2))  # 31 January to 27 February: the next month's fee, 31.00
    finalize_period(engine, month(2026, 2), SETTINGS, dt.date(2026, 3, 1))
    service.change_quantity(engine, catalog, subscription.id, 2, dt.date(2026, 3, 10))
    run_billing(engine, catalog, month(2026, 3))
    # 28 February to 30 March (31 days): one seat added on 10 March for its last 21 days, 31.00 × 21/31 = 21.00;
    # then the month from 31 March at 2 seats × 31.00 = 62.00
    assert lines_of(invoice_of(engine, "period:acme:2026-02-28..2026-03-31")) == [
        ("subscription", None, "1", "21.00"),
        ("subscription", None, "2", "62.00"),
    ]


def test_events_left_unpriced_are_reported_beside_an_add_on(engine):
    """A customer on a plan whose SMS charge has no default, with an add-on covering the same days: the SMS
    matching no filter are still named unbilled, not counted as rated."""
    catalog, problems = loads_catalog(CATALOG + CHANGE, "catalog.toml")
    assert catalog is not None, problems
    acme(engine)
    service.subscribe(engine, catalog, "acme", "sms_b", dt.date(2026, 1, 1))
    service.subscribe(engine, catalog, "acme", "team", dt.date(2026, 1, 1))
    put(engine, catalog, sms(3, "2026-03-10", "US", "us") + sms(2, "2026-03-10", "FR", "fr"))
    report = run_billing(engine, catalog, month(2026, 3))
    # SMS B: 3 US × 0.40 = 1.20; the 2 FR SMS match no filter of its charge (no default): unbilled
    assert [line for line in lines_of(invoice_of(engine, "period:acme:2026-03")) if line[0] == "usage"] == [
        ("usage", "sms", "3", "1.20")
    ]
    assert (report.events, report.unbilled_events) == (3, 2)
    assert [(g.meter, g.reason.value, g.events) for g in report.unbilled] == [("sms", "unpriced", 2)]
    account = unbilled_usage(engine, catalog, month(2026, 3))
    assert (account.rated, account.unbilled) == (3, report.unbilled)


ADD_ON = """
[plans.sms_add_on]
name = "SMS add-on"
currency = "USD"
charges = [{ meter = "sms", model = "per_unit", unit_amount = 0.05 }]

[meters.mms]
name = "MMS"
aggregation = "count"
"""


def test_two_subscriptions_never_charge_one_meter_on_the_same_days(engine):
    """Every event of a meter is billed by each subscription whose plan charges it: an add-on charging the base
    plan's meter would bill each SMS twice (0.10 on the base and 0.05 on the add-on), so it is refused, as is an
    override giving one a charge on the other's meter."""
    catalog, problems = loads_catalog(CATALOG + ADD_ON, "catalog.toml")
    assert catalog is not None, problems
    acme(engine)
    base = service.subscribe(engine, catalog, "acme", "sms", dt.date(2026, 1, 1))
    with pytest.raises(ConflictError) as twice:
        service.subscribe(engine, catalog, "acme", "sms_add_on", dt.date(2026, 2, 1))
    assert str(twice.value) == (
        f"meter: subscription {base.id} of customer 'acme' (plan 'sms', from 2026-01-01, open-ended) charges sms on "
        "the same days: each event would be billed twice (a meter is charged by one subscription at a time)"
    )
    team = service.subscribe(engine, catalog, "acme", "team", dt.date(2026, 1, 1))  # no usage charge: fine
    with pytest.raises(ConflictError, match="charges sms on the same days"):
        overrides.set_override(
            engine, catalog, team.id, document('[[charges]]\nmeter = "sms"\nmodel = "per_unit"\nunit_amount = 0.01\n')
        )
    mms = '[[charges]]\nmeter = "mms"\nmodel = "per_unit"\nunit_amount = 0.20\n'
    assert overrides.set_override(engine, catalog, team.id, document(mms), dt.date(2026, 2, 1))
    # a plan change ends the old subscription as the new one starts: no day shared
    service.cancel_subscription(engine, team.id, dt.date(2026, 3, 1))
    moved = service.change_plan(engine, catalog, base.id, "sms_add_on", dt.date(2026, 3, 1))
    assert moved.plan_code == "sms_add_on"
    put(engine, catalog, sms(10, "2026-03-10", "US", "x"))
    run_billing(engine, catalog, month(2026, 3))
    # 10 SMS × 0.05 = 0.50, once
    assert [line for line in lines_of(invoice_of(engine, "period:acme:2026-03")) if line[0] == "usage"] == [
        ("usage", "sms", "10", "0.50")
    ]


def test_a_customer_with_the_longest_external_id_is_billed(engine, catalog):
    """A customer id may take all 255 characters of its column; its period invoice's key, ``period:<id>:<label>``,
    is longer and must still be stored (PostgreSQL enforces the column's length)."""
    longest = "c" * 255
    service.create_customer(engine, longest, "Long", None, "USD", timezone="UTC")
    service.subscribe(engine, catalog, longest, "sms", dt.date(2026, 3, 1))
    events = [{**event, "customer": longest} for event in sms(3, "2026-03-05", "US", "long")]
    report = ingest(engine, events, meter_specs(catalog), {longest})
    assert report.accepted == 3
    run_billing(engine, catalog, month(2026, 3))
    invoice = invoice_of(engine, f"period:{longest}:2026-03")
    # usage 3 × 0.10 = 0.30; April's fee in advance 10.00
    assert invoice is not None and str(invoice.subtotal) == "10.30"
