"""A billing run of a customer on a plan priced by event dimension (filters and group_by), on SQLite and
PostgreSQL: one line per filter and group with its own tiers, events matching no filter (with a default price,
and without one: reported unbilled), late usage re-rated per filter, and ``billing quote --events`` pricing the
same events exactly as the run. Every amount is worked out by hand in the comment beside it."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from billing import customers as service
from billing.cli import app
from billing.core.periods import month
from billing.db import session_scope
from billing.db.notification_tables import ThresholdEvaluationRow
from billing.metering import aggregate_windows, meter_specs
from billing.run import finalize_period, run_billing
from billing.thresholds import check_thresholds
from billing.unbilled import unbilled_usage
from invoices import store
from meters import ingest
from pricing_plans.dimensions import DimensionedUsage, Part
from pricing_plans.loader import loads_catalog

pytestmark = pytest.mark.db

CATALOG = """
[meters.sms]
name = "SMS"
aggregation = "count"
unit = "message"

[meters.users]
name = "Active users"
aggregation = "unique_count"
unique_property = "user"
unit = "user"

[plans.sms]
name = "SMS"
currency = "USD"
[plans.sms.subscription]
fee = 10.00
billing = "in_arrears"

[[plans.sms.charges]]
meter = "sms"
model = "graduated"
tiers = [{ up_to = 2, unit_amount = 1.00 }, { up_to = "inf", unit_amount = 0.50 }]

[[plans.sms.charges.filters]]
name = "US & Canada"
properties = { country = ["US", "CA"] }
tiers = [{ up_to = 3, unit_amount = 0.10 }, { up_to = "inf", unit_amount = 0.05 }]

[[plans.sms.charges.filters]]
properties = { country = ["DE"] }
group_by = ["direction"]
tiers = [{ up_to = 1, unit_amount = 2.00 }, { up_to = "inf", unit_amount = 1.00 }]

[[plans.sms.charges]]
meter = "users"
model = "per_unit"

[[plans.sms.charges.filters]]
name = "Pro users"
properties = { plan = ["pro"] }
unit_amount = 3.00

[[plans.sms.thresholds]]
meter = "users"
allowance = 3
"""
MARCH, APRIL = month(2026, 3), month(2026, 4)
SETTINGS = store.FinalizeSettings()


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "dimensions.toml")
    assert not problems, problems
    return loaded


def march_events() -> list[dict[str, object]]:
    events: list[dict[str, object]] = []

    def add(meter: str, n: int, properties: dict[str, str] | None, day: int = 10) -> None:
        for _ in range(n):
            event: dict[str, object] = {
                "id": f"e{len(events)}", "customer": "acme", "meter": meter,
                "timestamp": f"2026-03-{day:02d}T12:00:00Z",
            }  # fmt: skip
            if properties is not None:
                event["properties"] = properties
            events.append(event)

    add("sms", 4, {"country": "US"})
    add("sms", 1, {"country": "CA"})
    add("sms", 2, {"country": "DE", "direction": "inbound"})
    add("sms", 1, {"country": "DE", "direction": "outbound"})
    add("sms", 1, {"country": "DE"})  # no direction: the "(none)" group
    add("sms", 3, {"country": "FR"})  # no filter: the charge's own tiers
    add("sms", 1, None)  # no properties at all: no filter either
    add("users", 2, {"user": "ann", "plan": "pro"})
    add("users", 1, {"user": "bob", "plan": "pro"})
    add("users", 1, {"user": "ann", "plan": "free"})  # no filter, and the charge has no default: unpriced
    add("users", 1, {"user": "cy", "plan": "free"})
    return events


def put(engine, catalog, events):
    report = ingest(engine, events, meter_specs(catalog), {"acme"})
    assert not report.rejected, report.rejected


# The March invoice, line by line: (kind, meter, description, quantity, amount).
MARCH_LINES = [
    ("subscription", None, "1", "10.00"),
    ("usage", "sms", "5", "0.40"),  # US & Canada: 5 messages, 3 × 0.10 + 2 × 0.05 = 0.40 (its own tiers)
    ("usage", "sms", "2", "3.00"),  # DE inbound: 1 × 2.00 + 1 × 1.00 = 3.00
    ("usage", "sms", "1", "2.00"),  # DE outbound: 1 × 2.00 (the group's own first tier)
    ("usage", "sms", "1", "2.00"),  # DE without a direction: 1 × 2.00
    ("usage", "sms", "4", "3.00"),  # no filter (FR ×3, none ×1): 2 × 1.00 + 2 × 0.50 = 3.00
    ("usage", "users", "2", "6.00"),  # Pro users: ann, bob = 2 distinct × 3.00
]


def lines_of(invoice):
    return [(str(line.kind), line.meter, str(line.quantity), str(line.amount)) for line in invoice.lines]


def test_a_run_bills_each_filter_and_group_on_its_own_tiers(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "sms", dt.date(2026, 1, 1))
    put(engine, catalog, march_events())
    report = run_billing(engine, catalog, MARCH)
    with session_scope(engine) as session:
        invoice = store.get_invoice(session, "period:acme:2026-03")
    assert lines_of(invoice) == MARCH_LINES
    assert [line.description for line in invoice.lines[1:]] == [
        "SMS — US & Canada", "SMS — DE — inbound", "SMS — DE — outbound", "SMS — DE — (none)", "SMS",
        "Active users — Pro users",
    ]  # fmt: skip
    assert [line.dimension for line in invoice.lines[1:3]] == [
        '{"filter":{"country":["CA","US"]},"group":{}}',
        '{"filter":{"country":["DE"]},"group":{"direction":"inbound"}}',
    ]
    assert str(invoice.total) == "26.40"  # 10.00 + 0.40 + 3.00 + 2.00 + 2.00 + 3.00 + 6.00
    # 13 SMS and 3 of the 5 user events are rated; the 2 free-plan events match no filter of a charge without
    # default: the run names them, and rated + unbilled is every event of March
    assert (report.events, report.unbilled_events, report.accepted) == (16, 2, 18)
    assert [(g.customer, g.meter, g.reason.value, g.events) for g in report.unbilled] == [
        ("acme", "users", "unpriced", 2)
    ]
    # ``billing usage unbilled`` tells the same, without a run
    account = unbilled_usage(engine, catalog, MARCH)
    assert (account.rated, account.unbilled) == (16, report.unbilled)


def test_the_total_of_a_split_meter_is_the_meter_overall(engine, catalog):
    """A threshold on the meter measures it across every filter: 3 distinct users (ann, bob, cy), not the pro
    filter's 2 + the unmatched part's 2 (ann counted in both)."""
    put(engine, catalog, march_events())
    utc = (dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
    usage = aggregate_windows(engine, catalog, {"w": ("acme", *utc)}, {"w": catalog.plan("sms")})["w"]
    users = usage["users"]
    assert isinstance(users, DimensionedUsage)
    assert users.total.quantity == 3 and users.total.events == 5
    assert {part: (used.quantity, used.events) for part, used in users.parts.items()} == {
        Part(0, ()): (Decimal(2), 3),
        Part(None, ()): (Decimal(2), 2),
    }
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "sms", dt.date(2026, 1, 1))
    checked = check_thresholds(engine, catalog, period=MARCH, now=dt.datetime(2026, 3, 20, tzinfo=dt.UTC))
    assert checked.evaluations == 1
    with session_scope(engine) as session:
        values = [str(row.value) for row in session.query(ThresholdEvaluationRow)]
    assert values == ["3"]  # 3 of an allowance of 3


def test_late_usage_is_re_rated_per_filter(engine, catalog):
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "sms", dt.date(2026, 1, 1))
    put(engine, catalog, march_events())
    run_billing(engine, catalog, MARCH)
    assert finalize_period(engine, MARCH, SETTINGS, dt.date(2026, 4, 2)) == ["INV-2026-000001"]
    # one more US message arrives after March was invoiced
    put(engine, catalog, [{"id": "late-us", "customer": "acme", "meter": "sms", "timestamp": "2026-03-31T08:00:00Z",
                           "properties": {"country": "US"}}])  # fmt: skip
    april = run_billing(engine, catalog, APRIL)
    assert april.late_lines == 1
    with session_scope(engine) as session:
        invoice = store.get_invoice(session, "period:acme:2026-04")
    # April has no usage: the fee and one zero line per charge. Late March: US & Canada now 6 messages,
    # 3 × 0.10 + 3 × 0.05 = 0.45, 0.40 billed → 0.05 (the second tier's price: the filter's boundary at 3
    # holds); every other part re-rates to what was billed, so it has no late line
    assert lines_of(invoice) == [
        ("subscription", None, "1", "10.00"),
        ("usage", "sms", "0", "0.00"),
        ("usage", "users", "0", "0.00"),
        ("late_usage", "sms", "6", "0.05"),
    ]
    late = invoice.lines[-1]
    assert late.dimension == '{"filter":{"country":["CA","US"]},"group":{}}'
    assert late.description.startswith("SMS — US & Canada — late usage of 2026-03")
    # a late DE outbound message after April is invoiced too: its group alone, on its own tiers
    finalize_period(engine, APRIL, SETTINGS, dt.date(2026, 5, 2))
    put(engine, catalog, [{"id": "late-de", "customer": "acme", "meter": "sms", "timestamp": "2026-03-30T08:00:00Z",
                           "properties": {"country": "DE", "direction": "outbound"}}])  # fmt: skip
    may = run_billing(engine, catalog, month(2026, 5))
    assert may.late_lines == 1
    with session_scope(engine) as session:
        may_invoice = store.get_invoice(session, "period:acme:2026-05")
    # DE outbound now 2: 1 × 2.00 + 1 × 1.00 = 3.00, 2.00 billed → 1.00; US & Canada: 0.45 rated, 0.40 + 0.05
    # billed → nothing
    assert lines_of(may_invoice)[-1] == ("late_usage", "sms", "2", "1.00")
    assert may_invoice.lines[-1].dimension == '{"filter":{"country":["DE"]},"group":{"direction":"outbound"}}'
    assert [line.kind.value for line in may_invoice.lines].count("late_usage") == 1


def test_quote_of_the_events_gives_the_runs_lines(engine, catalog, cli_env, tmp_path, monkeypatch):
    from billing.config import get_settings

    path = tmp_path / "dimensions.toml"
    path.write_text(CATALOG, encoding="utf-8")
    monkeypatch.setenv("BILLING_CATALOG", str(path))
    get_settings.cache_clear()
    events = march_events()
    events_file = tmp_path / "march.jsonl"
    events_file.write_text("".join(json.dumps(event) + "\n" for event in events), encoding="utf-8")
    runner = CliRunner()
    quoted = runner.invoke(
        app, ["quote", "--plan", "sms", "--events", str(events_file), "--period", "2026-03", "--json"]
    )
    assert quoted.exit_code == 0, quoted.output
    quote = json.loads(quoted.stdout)
    assert [(line["kind"], line["meter"], line["quantity"], line["amount"]) for line in quote["lines"]] == MARCH_LINES
    assert quote["total"] == "26.40"
    assert quote["unpriced"] == [
        {"meter": "users", "events": 2, "quantity": "2", "dimension": '{"filter":null,"group":{}}'}
    ]

    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "sms", dt.date(2026, 1, 1))
    put(engine, catalog, events)
    ran = runner.invoke(app, ["run", "--period", "2026-03", "--json"])
    assert ran.exit_code == 0, ran.output
    run = json.loads(ran.stdout)
    assert run["events"] == {"accepted": 18, "rated": 16, "unbilled": 2}
    assert [(u["meter"], u["reason"], u["events"]) for u in run["unbilled"]] == [("users", "unpriced", 2)]
    with session_scope(engine) as session:
        invoice = store.get_invoice(session, "period:acme:2026-03")
    assert [(line["description"], line["dimension"], line["details"]) for line in quote["lines"]] == [
        (line.description, line.dimension, line.details.as_dict()) for line in invoice.lines
    ]
    text = runner.invoke(app, ["run", "--period", "2026-03"])
    assert "2 events of customer acme (users) matching no filter of its charge" in text.output


def test_a_window_without_dimensioned_charges_keeps_plain_usage(engine, catalog):
    put(engine, catalog, march_events())
    utc = (dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
    usage = aggregate_windows(engine, catalog, {"w": ("acme", *utc)})["w"]
    assert {meter: (str(u.quantity), u.events) for meter, u in usage.items()} == {  # type: ignore[union-attr]
        "sms": ("13", 13),
        "users": ("3", 5),
    }


WEEKLY = """
[plans.weekly_sms]
name = "Weekly SMS"
currency = "USD"
interval = "week"
[plans.weekly_sms.subscription]
fee = 7.00
billing = "in_arrears"
[[plans.weekly_sms.charges]]
meter = "sms"
model = "per_unit"
[[plans.weekly_sms.charges.filters]]
properties = { country = ["US"] }
unit_amount = 0.10
"""


def test_a_weekly_period_names_its_unpriced_events_too(engine):
    catalog, problems = loads_catalog(CATALOG + WEEKLY, "weekly.toml")
    assert catalog is not None, problems
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
    service.subscribe(engine, catalog, "acme", "weekly_sms", dt.date(2026, 3, 2))  # a Monday
    events = [
        {"id": f"w{n}", "customer": "acme", "meter": "sms", "timestamp": "2026-03-03T12:00:00Z",
         "properties": {"country": country}}
        for n, country in enumerate(["US", "US", "FR"])
    ]  # fmt: skip
    put(engine, catalog, events)
    report = run_billing(engine, catalog, MARCH)
    # the weeks ending in March: 2–8 (fee 7.00 + 2 US messages × 0.10 = 7.20), 9–15, 16–22, 23–29 (7.00 each):
    # 7.20 + 3 × 7.00 = 28.20; the French message matches no filter of a charge without default: unbilled, named
    assert report.totals == {"USD": Decimal("28.20")}
    assert (report.events, report.unbilled_events) == (2, 1)
    assert [(g.meter, g.reason.value, g.events) for g in report.unbilled] == [("sms", "unpriced", 1)]
