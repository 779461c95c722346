"""User mistakes the CLI answers with one line and an exit status, never a traceback (SQLite and PostgreSQL where
a database is read): a customer id that names no one, a period outside the calendar's reach, a file that is not
a database. Each was a completed run of no one or a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing.cli import app
from billing.config import get_settings


def test_a_run_for_a_customer_that_does_not_exist_is_refused_and_records_nothing(cli_env):
    runner = CliRunner()
    refused = runner.invoke(app, ["run", "--period", "2026-10", "--customer", "TYPO"])
    assert (refused.exit_code, refused.stderr.strip()) == (2, "error: --customer: unknown customer 'TYPO'")
    listed = runner.invoke(app, ["runs", "list", "--json"])
    assert listed.exit_code == 0 and '"data": []' in listed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--period", "0001-01"], "--period: expected a period from 1971 to 9998, got '0001-01'"),
        (["invoices", "list", "--period", "0001-01"], "--period: expected a period from 1971 to 9998, got '0001-01'"),
        (["invoices", "aging", "--as-of", "0001-01-01"],
         "--as-of: expected a date from 1971-01-01 to 9998-12-31, got '0001-01-01'"),
        (["usage", "unbilled", "--period", "0001-01"], "--period: expected a period from 1971 to 9998, got '0001-01'"),
    ],
)  # fmt: skip
def test_a_period_outside_the_calendars_reach_is_a_usage_error(cli_env, args, message):
    """Year 1 overflowed a month back or a timezone's day either side: OverflowError tracebacks, and a failed run
    recorded as period '1-01'."""
    result = CliRunner().invoke(app, args)
    assert (result.exit_code, " ".join(result.stderr.split())) == (2, f"error: {message}")


def test_a_file_that_is_not_a_database_is_named_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``invoices list``, ``run``, ``metrics revenue`` on such a file printed a DatabaseError traceback."""
    garbage = tmp_path / "billing.db"
    garbage.write_text("not a database\n" * 200)
    monkeypatch.setenv("BILLING_DATABASE_URL", f"sqlite:///{garbage}")
    monkeypatch.setenv("BILLING_CATALOG", str(Path(__file__).resolve().parents[2] / "catalog.toml"))
    get_settings.cache_clear()
    try:
        for args in (["invoices", "list"], ["run", "--period", "2026-10"], ["metrics", "revenue", "--period", "2026-10"]):
            result = CliRunner().invoke(app, args)
            assert (result.exit_code, result.stderr.strip()) == (1, "error: database: file is not a database"), args
    finally:
        get_settings.cache_clear()


def test_a_subscription_day_outside_the_calendars_reach_is_refused_in_one_line(cli_env):
    """``subscribe --start 9999-12-31`` and ``subscriptions change … --date 9999-12-31`` ended in a traceback (year
    10000 is out of range, computing the period after); ``--start 0001-01-01`` was accepted."""
    runner = CliRunner()
    added = runner.invoke(
        app, ["customers", "add", "acme", "--name", "Acme", "--email", "ap@acme.example", "--currency", "USD"]
    )
    assert added.exit_code == 0, added.output
    for day in ("9999-12-31", "0001-01-01"):
        refused = runner.invoke(app, ["subscribe", "acme", "api_growth", "--start", day])
        assert (refused.exit_code, refused.stderr.strip()) == (
            2,
            f"error: --start: expected a date from 1971-01-01 to 9998-12-31, got {day}",
        )
    assert runner.invoke(app, ["subscribe", "acme", "api_growth", "--start", "2026-03-01"]).exit_code == 0
    changed = runner.invoke(app, ["subscriptions", "change", "1", "enterprise_annual", "--date", "9999-12-31"])
    assert (changed.exit_code, changed.stderr.strip()) == (
        2,
        "error: --date: expected a date from 1971-01-01 to 9998-12-31, got 9999-12-31",
    )


@pytest.mark.parametrize("typed", ["1e3", "1_000", "NaN", "١٠"])
def test_a_credit_notes_amount_is_plain_decimal_notation_as_a_payments_is(cli_env, typed):
    """``invoices credit --amount 1e3`` issued a credit note of 1000.00 where ``payments record --amount 1e3`` and
    the console refuse it; now refused the same way, before the invoice is looked at."""
    refused = CliRunner().invoke(app, ["invoices", "credit", "INV-1", "--amount", typed, "--reason", "x"])
    assert (refused.exit_code, refused.stderr.strip()) == (
        2, f"error: --amount: expected a decimal amount such as 30.00, got {typed!r}"
    )
