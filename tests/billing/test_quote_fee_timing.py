"""``billing quote`` bills a quarterly or yearly fee once per fee period, in the billing period the run bills it for:
in advance with the fee period's first month (or the month the subscription starts in, prorated), in arrears with
its last month. A monthly plan's fee is in every month's quote, as before. The run's invoices of the same usage
hold the same lines (SQLite; PostgreSQL too when configured)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from billing import customers as service
from billing.cli import app
from billing.core.periods import month
from billing.db import session_scope
from billing.metering import meter_specs
from billing.run import run_billing
from invoices import store
from meters import ingest
from pricing_plans.loader import loads_catalog

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
unit = "call"

[plans.quarterly]
name = "Quarterly"
currency = "USD"
interval = "quarter"
subscription = { fee = 300.00, billing = "in_advance" }
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.10 }]

[plans.quarterly_arrears]
name = "Quarterly in arrears"
currency = "USD"
interval = "quarter"
subscription = { fee = 300.00, billing = "in_arrears" }
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.10 }]

[plans.yearly]
name = "Yearly"
currency = "USD"
interval = "year"
subscription = { fee = 1200.00, billing = "in_advance" }
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.10 }]

[plans.monthly]
name = "Monthly"
currency = "USD"
subscription = { fee = 30.00, billing = "in_advance" }
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.10 }]

[plans.monthly_arrears]
name = "Monthly in arrears"
currency = "USD"
subscription = { fee = 30.00, billing = "in_arrears" }
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.10 }]
"""

runner = CliRunner()


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    return path


def quote(catalog_path: Path, plan: str, *args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["quote", "--catalog", str(catalog_path), "--plan", plan, *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def lines(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(line["kind"], line["description"], line["amount"]) for line in data["lines"]]


USAGE = ("--usage", "api_calls=250")  # 250 × 0.10 = 25.00 in every quote below
CALLS = ("usage", "API calls", "25.00")


def test_a_quarterly_fee_in_advance_is_quoted_with_the_quarters_first_month(catalog_path: Path) -> None:
    months = {
        label: quote(catalog_path, "quarterly", *USAGE, "--start", "2026-01-01", "--period", label)
        for label in ("2026-01", "2026-02", "2026-03", "2026-04")
    }
    fee_q1 = ("subscription", "Quarterly subscription, 2026-Q1 (in advance)", "300.00")
    fee_q2 = ("subscription", "Quarterly subscription, 2026-Q2 (in advance)", "300.00")
    # 300.00 once a quarter, with its first month; February and March: the usage alone (each was 325.00)
    assert [lines(months[label]) for label in months] == [[fee_q1, CALLS], [CALLS], [CALLS], [fee_q2, CALLS]]
    assert [months[label]["total"] for label in months] == ["325.00", "25.00", "25.00", "325.00"]


def test_a_quarterly_fee_in_arrears_is_quoted_with_the_quarters_last_month(catalog_path: Path) -> None:
    months = {
        label: quote(catalog_path, "quarterly_arrears", *USAGE, "--start", "2026-01-01", "--period", label)
        for label in ("2026-01", "2026-02", "2026-03")
    }
    fee_q1 = ("subscription", "Quarterly in arrears subscription, 2026-Q1 (in arrears)", "300.00")
    assert [lines(months[label]) for label in months] == [[CALLS], [CALLS], [fee_q1, CALLS]]
    assert [months[label]["total"] for label in months] == ["25.00", "25.00", "325.00"]


def test_a_yearly_fee_in_advance_is_quoted_with_the_years_first_month(catalog_path: Path) -> None:
    totals = {
        label: quote(catalog_path, "yearly", *USAGE, "--start", "2026-01-01", "--period", label)["total"]
        for label in ("2026-01", "2026-02", "2026-06", "2026-12", "2027-01")
    }
    # 1,200.00 in January of each year (the run bills 2027's on December's invoice, as 2027 begins); the other
    # months: 25.00 of usage (each was 1,225.00)
    assert totals == {
        "2026-01": "1225.00", "2026-02": "25.00", "2026-06": "25.00", "2026-12": "25.00", "2027-01": "1225.00",
    }
    january = quote(catalog_path, "yearly", *USAGE, "--start", "2026-01-01", "--period", "2027-01")
    assert lines(january)[0] == ("subscription", "Yearly subscription, 2027 (in advance)", "1200.00")


def test_a_monthly_fee_is_quoted_every_month_as_before(catalog_path: Path) -> None:
    for plan, timing in (("monthly", "in advance"), ("monthly_arrears", "in arrears")):
        for start in ("2026-01-01", "2026-03-01"):
            data = quote(catalog_path, plan, *USAGE, "--start", start, "--period", "2026-03")
            name = "Monthly" if plan == "monthly" else "Monthly in arrears"
            assert lines(data) == [("subscription", f"{name} subscription, 2026-03 ({timing})", "30.00"), CALLS]
            assert data["total"] == "55.00"
            assert data["lines"][0]["details"]["service_period"] == {"start": "2026-03-01", "end": "2026-04-01"}


def test_a_start_mid_quarter_prorates_the_quarter_in_the_month_the_run_bills_it(catalog_path: Path) -> None:
    # 10 February – 31 March: 19 + 31 = 50 days of Q1's 90 (31 + 28 + 31); 300.00 × 50/90 = 166.666… → 166.67
    prorated_q1 = "166.67"
    advance = {
        label: lines(quote(catalog_path, "quarterly", *USAGE, "--start", "2026-02-10", "--period", label))
        for label in ("2026-02", "2026-03", "2026-04")
    }
    assert advance == {
        "2026-02": [("subscription", "Quarterly subscription, 2026-Q1 (in advance)", prorated_q1), CALLS],
        "2026-03": [CALLS],  # was 166.67 again
        "2026-04": [("subscription", "Quarterly subscription, 2026-Q2 (in advance)", "300.00"), CALLS],
    }
    # without --period: the month of --start
    assert lines(quote(catalog_path, "quarterly", *USAGE, "--start", "2026-02-10")) == advance["2026-02"]
    arrears = {
        label: lines(quote(catalog_path, "quarterly_arrears", *USAGE, "--start", "2026-02-10", "--period", label))
        for label in ("2026-02", "2026-03")
    }
    assert arrears == {
        "2026-02": [CALLS],  # was 166.67
        "2026-03": [("subscription", "Quarterly in arrears subscription, 2026-Q1 (in arrears)", prorated_q1), CALLS],
    }
    # a year from 15 March: 292 days of 2026's 365 (365 − 31 − 28 − 14); 1,200.00 × 292/365 = 960.00
    yearly = quote(catalog_path, "yearly", *USAGE, "--start", "2026-03-15")
    assert lines(yearly) == [("subscription", "Yearly subscription, 2026 (in advance)", "960.00"), CALLS]
    assert lines(quote(catalog_path, "yearly", *USAGE, "--start", "2026-03-15", "--period", "2026-04")) == [CALLS]


def test_a_quote_says_why_a_month_has_no_fee(catalog_path: Path) -> None:
    result = runner.invoke(app, ["quote", "--catalog", str(catalog_path), "--plan", "quarterly", *USAGE,
                                 "--start", "2026-01-01", "--period", "2026-02"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "no subscription fee in 2026-02: the fee of 2026-Q1 is billed once, in advance" in " ".join(
        result.stdout.split()
    )


# -- the quote against the run's invoices ---------------------------------------------------------------------


def calls(customer: str, n: int, day: str) -> list[dict[str, Any]]:
    return [
        {"id": f"{customer}-{day}-{i}", "customer": customer, "meter": "api_calls", "timestamp": f"{day}T12:00:00Z"}
        for i in range(n)
    ]


EVENTS = [
    *calls("arrears", 3, "2026-02-05"),
    *calls("arrears", 4, "2026-03-10"),
    *calls("advance", 5, "2026-02-20"),
    *calls("advance", 6, "2026-03-03"),
    *calls("advance", 7, "2026-04-08"),
]


def as_quoted(invoice_lines: Any) -> list[tuple[str, str, Decimal, str, Any]]:
    """An invoice's lines as a quote's: kind, description, quantity, amount and details."""
    return [
        (line.kind, line.description, line.quantity, f"{line.amount:.2f}", line.details.as_dict())
        for line in invoice_lines
    ]


def quoted(data: dict[str, Any]) -> list[tuple[str, str, Decimal, str, Any]]:
    return [
        (line["kind"], line["description"], Decimal(line["quantity"]), line["amount"], line["details"])
        for line in data["lines"]
    ]


@pytest.mark.db
def test_a_quote_of_a_month_bills_what_the_run_bills_for_it(engine, catalog_path: Path, tmp_path: Path) -> None:
    catalog, problems = loads_catalog(CATALOG, "catalog.toml")
    assert catalog is not None and not problems
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(event) + "\n" for event in EVENTS), encoding="utf-8")
    for external_id in ("arrears", "advance"):
        service.create_customer(engine, external_id, external_id.title(), f"{external_id}@example.test", "USD")
    service.subscribe(engine, catalog, "arrears", "quarterly_arrears", dt.date(2026, 1, 1))
    advance = service.subscribe(engine, catalog, "advance", "quarterly", dt.date(2026, 2, 10))
    assert not ingest(engine, EVENTS, meter_specs(catalog), {"arrears", "advance"}).rejected
    now = dt.datetime(2026, 5, 2, tzinfo=dt.UTC)
    for number in (2, 3, 4):
        run_billing(engine, catalog, month(2026, number), now=now)
    with session_scope(engine) as session:
        invoice = {key: as_quoted(store.get_invoice(session, key).lines) for key in (
            "period:arrears:2026-02", "period:arrears:2026-03", f"start:{advance.id}",
            "period:advance:2026-02", "period:advance:2026-03", "period:advance:2026-04",
        )}  # fmt: skip

    def quote_of(customer: str, plan: str, start: str, period: str) -> list[tuple[str, str, Decimal, str, Any]]:
        args = ("--events", str(events), "--customer", customer, "--start", start, "--period", period)
        return quoted(quote(catalog_path, plan, *args))

    # in arrears from 1 January: February bills 3 calls (0.30); March the whole Q1 fee (300.00) and 4 calls (0.40)
    assert [line[3] for line in invoice["period:arrears:2026-03"]] == ["300.00", "0.40"]
    for label in ("2026-02", "2026-03"):
        assert quote_of("arrears", "quarterly_arrears", "2026-01-01", label) == invoice[f"period:arrears:{label}"]
    # in advance from 10 February: the opening invoice bills Q1 from 10 February (166.67), February's 5 calls (0.50),
    # March's 6 calls (0.60) and Q2's fee (300.00, billed as Q2 begins), April's 7 calls (0.70)
    opening, february = invoice[f"start:{advance.id}"], invoice["period:advance:2026-02"]
    march, april = invoice["period:advance:2026-03"], invoice["period:advance:2026-04"]
    assert [line[3] for line in opening + february + march + april] == ["166.67", "0.50", "0.60", "300.00", "0.70"]
    assert quote_of("advance", "quarterly", "2026-02-10", "2026-02") == opening + february
    assert quote_of("advance", "quarterly", "2026-02-10", "2026-03") == march[:1]
    assert quote_of("advance", "quarterly", "2026-02-10", "2026-04") == march[1:] + april
