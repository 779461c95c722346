"""Revenue cohorts: the pure computation on a small hand-worked set, and `billing metrics cohorts` on the database
(SQLite and PostgreSQL): JSON, CSV and the heatmap PNG.

Every expected number is worked out by hand in a comment next to it.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing.cli import app
from billing.core.cohorts import Grain, cohort_rows, compute_cohorts
from billing.core.metrics import BilledAmounts

runner = CliRunner()
D = dt.date


def _billed(amounts: dict[tuple[str, str, dt.date], str]) -> dict[tuple[str, dt.date], dict[str, BilledAmounts]]:
    billed: dict[tuple[str, dt.date], dict[str, BilledAmounts]] = {}
    for (currency, customer, month_start), amount in amounts.items():
        billed.setdefault((currency, month_start), {})[customer] = BilledAmounts(usage=Decimal(amount))
    return billed


# Billed revenue per month (USD):     Jan   Feb   Mar   Apr
#   a                                 10    10    10    10
#   b (a gap in February)             30     –    45     –
#   c                                  –    20    10     –
#   d (billed 0 in January)            0    40     –     –
#   e                                  –     –     –   100
# EUR k: January 50.
BILLED = _billed(
    {
        ("USD", "a", D(2026, 1, 1)): "10",
        ("USD", "a", D(2026, 2, 1)): "10",
        ("USD", "a", D(2026, 3, 1)): "10",
        ("USD", "a", D(2026, 4, 1)): "10",
        ("USD", "b", D(2026, 1, 1)): "30",
        ("USD", "b", D(2026, 3, 1)): "45",
        ("USD", "c", D(2026, 2, 1)): "20",
        ("USD", "c", D(2026, 3, 1)): "10",
        ("USD", "d", D(2026, 1, 1)): "0",
        ("USD", "d", D(2026, 2, 1)): "40",
        ("USD", "e", D(2026, 4, 1)): "100",
        ("EUR", "k", D(2026, 1, 1)): "50",
    }
)
MID_APRIL = dt.datetime(2026, 4, 15, tzinfo=dt.UTC)


def _table(cohorts: list) -> list[tuple[str, int, str, list[tuple[str, str]]]]:
    return [
        (
            row["cohort"],
            int(row["customers"]),
            row["revenue"],
            [(cell["logo_retention"], cell["revenue_retention"]) for cell in row["periods"]],
        )
        for row in cohort_rows(cohorts)
    ]


def test_monthly_cohorts_worked_by_hand():
    cohorts = compute_cohorts(BILLED, Grain.MONTH, as_of=MID_APRIL, currency="USD")
    # April is open on 04-15: left out (e has no cohort yet, a's April counts nowhere).
    # January: a, b (d billed 0 then: not yet a customer of any cohort); first revenue 10 + 30 = 40.
    #   +1 February: a only: logo 1 / 2 = 50 %, revenue 10 / 40 = 25 %.
    #   +2 March: a and b (b is back after a gap: retained): 2 / 2 = 100 %, (10 + 45) / 40 = 137.5 %.
    # February: c, d; first revenue 20 + 40 = 60. +1 March: c only: 50 %, 10 / 60 = 16.7 %.
    # March: nobody is first billed in March: no row.
    assert _table(cohorts) == [
        ("2026-01", 2, "40.00", [("100.0", "100.0"), ("50.0", "25.0"), ("100.0", "137.5")]),
        ("2026-02", 2, "60.00", [("100.0", "100.0"), ("50.0", "16.7")]),
    ]


def test_quarterly_cohorts_and_the_open_quarter():
    (q1,) = compute_cohorts(BILLED, Grain.QUARTER, as_of=MID_APRIL, currency="USD")
    # Q1: a 30, b 75, c 30, d 40 = 175, all four first billed in Q1; Q2 is open: no cell
    assert _table([q1]) == [("2026-Q1", 4, "175.00", [("100.0", "100.0")])]
    july = dt.datetime(2026, 7, 2, tzinfo=dt.UTC)
    q1, q2 = compute_cohorts(BILLED, Grain.QUARTER, as_of=july, currency="USD")
    # Q2 closed: Q1's +1 is a's April 10: logo 1 / 4 = 25 %, revenue 10 / 175 = 5.7 %; e is Q2's cohort (100)
    assert _table([q1, q2]) == [
        ("2026-Q1", 4, "175.00", [("100.0", "100.0"), ("25.0", "5.7")]),
        ("2026-Q2", 1, "100.00", [("100.0", "100.0")]),
    ]


def test_every_currency_by_default():
    cohorts = compute_cohorts(BILLED, Grain.MONTH, as_of=MID_APRIL)
    assert [(c.currency, c.period.label, c.customers) for c in cohorts] == [
        ("EUR", "2026-01", 1),  # k; February and March: k billed nothing, 0 %
        ("USD", "2026-01", 2),
        ("USD", "2026-02", 2),
    ]
    assert [(cell.logo_retention, cell.revenue_retention) for cell in cohorts[0].cells] == [
        (Decimal(1), Decimal(1)),
    ]  # EUR's history is January only: one cell


# -- through the database and the command --------------------------------------------------------------------


@pytest.fixture
def billed_db(cli_env, engine):
    """a: basic, invoices of 10.00 in January, February and March 2026; b: 30.00 in January, nothing in February,
    45.00 in March."""
    from billing import customers as service
    from tests.billing.test_metrics_db import _invoice

    for name in ("a", "b"):
        service.create_customer(engine, name, name=name.upper(), email=None, currency="USD", timezone="UTC")
    for m in (1, 2, 3):
        _invoice(engine, "a", "USD", D(2026, m, 1), {"usage": "10.00"})
    _invoice(engine, "b", "USD", D(2026, 1, 1), {"usage": "30.00"})
    _invoice(engine, "b", "USD", D(2026, 3, 1), {"usage": "45.00"})
    return cli_env


def test_cohorts_command_json_csv_and_plot(billed_db, tmp_path: Path):
    out_csv, out_png = tmp_path / "cohorts.csv", tmp_path / "cohorts.png"
    result = runner.invoke(
        app, ["metrics", "cohorts", "--json", "--csv", str(out_csv), "--plot", str(out_png)], env=billed_db
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    (january,) = body["data"]
    # January: a 10 + b 30 = 40; February a 10: 50 % / 25 %; March a 10 + b 45: 100 % / 137.5 %
    assert (january["cohort"], january["customers"], january["revenue"]) == ("2026-01", "2", "40.00")
    assert [(p["period"], p["customers_retained"], p["revenue"], p["revenue_retention"]) for p in january["periods"]] == [
        ("2026-01", "2", "40.00", "100.0"),
        ("2026-02", "1", "10.00", "25.0"),
        ("2026-03", "2", "55.00", "137.5"),
    ]
    with out_csv.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["cohort"], r["period"], r["logo_retention"], r["revenue_retention"]) for r in rows] == [
        ("2026-01", "2026-01", "100.0", "100.0"),
        ("2026-01", "2026-02", "50.0", "25.0"),
        ("2026-01", "2026-03", "100.0", "137.5"),
    ]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cohorts_command_by_quarter_and_an_unknown_grain(billed_db):
    result = runner.invoke(app, ["metrics", "cohorts", "--by", "quarter", "--currency", "usd"], env=billed_db)
    assert result.exit_code == 0, result.output
    # Q1: a 30 + b 75 = 105, one cell
    assert "2026-Q1" in result.stdout and "105.00" in result.stdout and "100.0 / 100.0" in result.stdout
    bad = runner.invoke(app, ["metrics", "cohorts", "--by", "week"], env=billed_db)
    assert bad.exit_code == 2


def test_metrics_without_a_period_or_a_sub_command_is_a_usage_error(billed_db):
    result = runner.invoke(app, ["metrics"], env=billed_db)
    assert result.exit_code == 2
    assert "--period" in result.output


def test_cohorts_start_with_the_billing_history():
    """The billing history of USD starts in August (its first period invoice); x was billed an opening fee in May,
    before it: its first period is unknown, so it is in no cohort, and no cell lies before August.

    Billed revenue (USD):   May   Jun   Jul   Aug   Sep
      x (an opening fee)     30     –     –    40    40
      y                       –     –     –    50     –
      z                       –     –     –     –    20
    """
    billed = _billed(
        {
            ("USD", "x", D(2026, 5, 1)): "30",
            ("USD", "x", D(2026, 8, 1)): "40",
            ("USD", "x", D(2026, 9, 1)): "40",
            ("USD", "y", D(2026, 8, 1)): "50",
            ("USD", "z", D(2026, 9, 1)): "20",
        }
    )
    as_of = dt.datetime(2026, 10, 15, tzinfo=dt.UTC)
    found = compute_cohorts(billed, Grain.MONTH, as_of=as_of, history_start={"USD": D(2026, 8, 1)})
    assert _table(found) == [
        # August: y alone (50.00); September: y billed nothing → 0 / 1 = 0 %, 0 / 50 = 0 %
        ("2026-08", 1, "50.00", [("100.0", "100.0"), ("0.0", "0.0")]),
        # September: z (20.00)
        ("2026-09", 1, "20.00", [("100.0", "100.0")]),
    ]
    # without the history's start, x makes a May cohort with 0 % in June and July, when nothing was billed yet
    assert compute_cohorts(billed, Grain.MONTH, as_of=as_of)[0].period.label == "2026-05"
