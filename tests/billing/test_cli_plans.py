"""``billing plans validate`` and ``billing plans show`` through the real ``billing`` command."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing.cli import app
from billing.config import get_settings

SAMPLE = Path(__file__).resolve().parents[2] / "catalog.toml"

BROKEN = """\
[meters.api_calls]
name = "API calls"
aggregation = "count"

[meters.users]
name = "Users"
aggregation = "unique_count"

[plans.growth]
name = "Growth"
currency = "USD"

[[plans.growth.charges]]
meter = "api_calls"
model = "graduated"
tiers = [{ up_to = 1000, unit_amount = 0 }, { up_to = 500, unit_amount = 0.002 }, { up_to = "inf", unit_amount = 1 }]

[plans.seats]
name = "Seats"
currency = "EURO"

[[plans.seats.charges]]
meter = "users"
model = "volume"
tiers = [{ up_to = 10, unit_amount = -1 }, { up_to = "inf", unit_amount = 5 }]

[[plans.seats.charges]]
meter = "storage"
model = "per_unit"
unit_amount = 0.25
"""

PAYMENTS = """\
[meters.payment_volume]
name = "Payment volume"
aggregation = "sum"

[plans.cards]
name = "Cards"
currency = "USD"

[[plans.cards.charges]]
meter = "payment_volume"
model = "percentage"
rate = 2.9
fixed_amount = 0.30
per_transaction_min = 0.50
per_transaction_max = 25.00
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def row(output: str, first_cell: str) -> list[str]:
    """The cells of the first table row whose first cell is ``first_cell``."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row starting with {first_cell!r} in:\n{output}")


def test_validate_the_sample_catalog(runner: CliRunner) -> None:
    result = runner.invoke(app, ["plans", "validate", str(SAMPLE)])
    assert result.exit_code == 0, result.output
    for plan in ("api_growth v1", "api_growth v2", "seats v1", "payments v1", "enterprise v1", "starter_jp v1"):
        assert plan in result.output
    assert "api_calls: graduated" in result.output
    assert "payment_volume: percentage" in result.output
    assert result.output.splitlines()[-1] == f"{SAMPLE}: OK — 13 meters, 13 plans (14 plan versions), rounding half_up"


def test_validate_uses_the_configured_catalog(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BILLING_CATALOG", str(SAMPLE))
    result = runner.invoke(app, ["plans", "validate"])
    assert result.exit_code == 0, result.output
    assert f"{SAMPLE}: OK" in result.output


def test_validate_a_broken_catalog_prints_every_problem_and_exits_1(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(BROKEN, encoding="utf-8")
    result = runner.invoke(app, ["plans", "validate", str(path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}: meters.users.unique_property: required when aggregation is unique_count "
        "(the event property whose values are counted)",
        f"{path}: plans.growth.charges[0].tiers[1].up_to: tiers must increase (got 500 after 1000)",
        f"{path}: plans.seats.currency: unknown currency 'EURO' (expected an ISO 4217 code such as USD, EUR, JPY)",
        f"{path}: plans.seats.charges[0].tiers[0].unit_amount: must be ≥ 0 (got -1)",
        f"{path}: plans.seats.charges[1].meter: unknown meter 'storage' (known: api_calls, users)",
        f"5 problems in {path}",
    ]


def test_validate_a_toml_syntax_error(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text('[plans.growth]\nname = "Growth"\ncurrency = USD\n', encoding="utf-8")
    result = runner.invoke(app, ["plans", "validate", str(path)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{path}:3: invalid TOML: Invalid value (column 12)",
        f"1 problem in {path}",
    ]


def test_validate_a_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    result = runner.invoke(app, ["plans", "validate", str(path)])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == f"{path}: cannot read the catalog: No such file or directory"


def test_show_prices_a_graduated_plan_at_1_1000_and_1000000_units(runner: CliRunner) -> None:
    result = runner.invoke(app, ["plans", "show", "api_growth", "--catalog", str(SAMPLE), "--version", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "API Growth — api_growth version 1 of 2, [plans.api_growth]"
    assert row(result.output, "2")[:5] == ["2", "10,000", "250,000", "0.002", "0"]
    assert row(result.output, "4")[:5] == ["4", "2,000,000", "∞", "0.001", "0"]
    # 10,000 × 0 + 240,000 × 0.002 + 750,000 × 0.0015 = 480 + 1,125
    assert row(result.output, "1,000,000")[:2] == ["1,000,000", "1605.00"]
    assert row(result.output, "1,000")[:2] == ["1,000", "0.00"]


def test_show_the_latest_version_by_default(runner: CliRunner) -> None:
    result = runner.invoke(app, ["plans", "show", "api_growth", "--catalog", str(SAMPLE)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "API Growth — api_growth version 2 of 2, [plans.api_growth_2027]"


def test_show_names_the_amounts_of_progressive_billing(runner: CliRunner) -> None:
    result = runner.invoke(app, ["plans", "show", "ai_tokens", "--catalog", str(SAMPLE)])
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())  # (the row wraps at the terminal's width)
    assert "progressive billing usage invoiced when the period's usage charges reach 5.00, 15.00 USD" in words


def test_show_rounds_to_the_currencys_minor_units(runner: CliRunner) -> None:
    result = runner.invoke(app, ["plans", "show", "starter_jp", "--catalog", str(SAMPLE)])
    assert result.exit_code == 0, result.output
    # package: ceil((1,000,000 − 5,000) / 1,000) = 995 packages × ¥300
    assert row(result.output, "1,000,000")[:2] == ["1,000,000", "298500"]
    assert row(result.output, "1")[:2] == ["1", "0"]


def test_show_gives_catalog_amounts_as_written_not_rounded_half_even(runner: CliRunner, tmp_path: Path) -> None:
    """A fee of 10.125 USD and a minimum of 20.0005 KWD are shown as written (before: 10.12 and 20.000, rounded
    half to even, where one whole month bills 10.13 and trues up to 20.001 with the catalog's half_up); whole
    amounts keep the currency's digits (5.00)."""
    path = tmp_path / "catalog.toml"
    path.write_text(
        '[meters.calls]\nname = "Calls"\naggregation = "count"\n'
        '[plans.us]\nname = "US"\ncurrency = "USD"\nsubscription = { fee = "10.125" }\n'
        'charges = [{ meter = "calls", model = "per_unit", unit_amount = "1" }]\n'
        '[plans.us.progressive_billing]\namounts = ["5"]\n'
        '[plans.kw]\nname = "KW"\ncurrency = "KWD"\ncommitment = { minimum = "20.0005" }\n'
        'charges = [{ meter = "calls", model = "per_unit", unit_amount = "1" }]\n',
        encoding="utf-8",
    )
    shown = {}
    for plan in ("us", "kw"):
        result = runner.invoke(app, ["plans", "show", plan, "--catalog", str(path)])
        assert result.exit_code == 0, result.output
        shown[plan] = " ".join(result.output.split())
    assert "subscription fee 10.125 per month, in advance" in shown["us"]
    assert "usage invoiced when the period's usage charges reach 5.00 USD" in shown["us"]
    assert "usage charges trued up to 20.0005 per month" in shown["kw"]


def test_show_a_percentage_charge_treats_n_as_one_payment(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(PAYMENTS, encoding="utf-8")
    result = runner.invoke(app, ["plans", "show", "cards", "--catalog", str(path)])
    assert result.exit_code == 0, result.output
    assert row(result.output, "1")[:2] == ["1", "0.50"]  # 0.029 + 0.30 → the 0.50 minimum
    assert row(result.output, "1,000")[:2] == ["1,000", "25.00"]  # 29.00 + 0.30 → the 25.00 maximum
    assert row(result.output, "1,000,000")[:2] == ["1,000,000", "25.00"]


def test_show_an_unknown_plan_or_version(runner: CliRunner) -> None:
    result = runner.invoke(app, ["plans", "show", "growth", "--catalog", str(SAMPLE)])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: unknown plan 'growth' (known plans: ai_tokens, api_growth, call_analytics, cloud, enterprise, "
        "enterprise_annual, meetings, meetings_storage, payments, seats, sms, starter_jp, warehouse)"
    )
    result = runner.invoke(app, ["plans", "show", "seats", "--catalog", str(SAMPLE), "--version", "3"])
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: plan 'seats' has no version 3 (versions: 1)"


def test_show_with_a_broken_catalog_prints_its_problems(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(BROKEN, encoding="utf-8")
    result = runner.invoke(app, ["plans", "show", "growth", "--catalog", str(path)])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == f"5 problems in {path}"
