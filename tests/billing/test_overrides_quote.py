"""``billing quote --override FILE.toml``: a negotiated price quoted with no database, its problems located."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from billing.cli import app

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.growth]
name = "Growth"
currency = "USD"
subscription = { fee = 50.00, billing = "in_advance" }
[[plans.growth.charges]]
meter = "api_calls"
model = "graduated"
tiers = [{ up_to = 100, unit_amount = 0.10 }, { up_to = "inf", unit_amount = 0.05 }]
"""


def quote(tmp_path: Path, override: str, *args: str):
    catalog, deal = tmp_path / "catalog.toml", tmp_path / "deal.toml"
    catalog.write_text(CATALOG, encoding="utf-8")
    deal.write_text(override, encoding="utf-8")
    return CliRunner().invoke(
        app, ["quote", "--catalog", str(catalog), "--plan", "growth", "--override", str(deal), *args]
    )


def test_a_quote_with_a_negotiated_price(tmp_path):
    deal = """
    [subscription]
    fee = 40.00
    [[charges]]
    meter = "api_calls"
    model = "graduated"
    tiers = [{ up_to = 200, unit_amount = 0 }, { up_to = "inf", unit_amount = 0.04 }]
    """
    result = quote(tmp_path, deal, "--usage", "api_calls=300", "--period", "2026-02", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # fee 40.00 for the whole month; 300 calls: 200 × 0 + 100 × 0.04 = 4.00 (the plan's: 20.00)
    assert [(line["kind"], line["amount"]) for line in data["lines"]] == [("subscription", "40.00"), ("usage", "4.00")]
    assert data["total"] == "44.00"


def test_a_bad_override_is_refused_with_each_problem_located(tmp_path):
    deal = '[[charges]]\nmeter = "api_calls"\nmodel = "per_unit"\nunit_amount = -1\n[commitment]\nfloor = 3\n'
    result = quote(tmp_path, deal, "--usage", "api_calls=300", "--period", "2026-02")
    assert result.exit_code == 1
    assert "deal.toml: charges[0].unit_amount: must be ≥ 0 (got -1)" in result.stderr
    assert "deal.toml: commitment.floor: unknown key (allowed: minimum)" in result.stderr
