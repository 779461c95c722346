"""``billing plans validate`` and ``billing plans show`` on charges priced by event dimension: each filter with its
properties and prices, a charge without a default, and the located problems of a broken filter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing.cli import app
from billing.config import get_settings

CATALOG = """\
[meters.sms]
name = "SMS"
aggregation = "count"
unit = "message"

[plans.sms]
name = "SMS"
currency = "USD"

[[plans.sms.charges]]
meter = "sms"
model = "volume"
group_by = ["region"]

[[plans.sms.charges.filters]]
name = "US & Canada"
properties = { country = ["US", "CA"] }
tiers = [{ up_to = 1000, unit_amount = 0.0079 }, { up_to = "inf", unit_amount = 0.0050 }]

[[plans.sms.charges.filters]]
properties = { country = ["DE"], direction = ["inbound"] }
tiers = [{ up_to = "inf", unit_amount = 0 }]
group_by = []
"""


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_show_prints_each_filter_and_a_charge_without_default(tmp_path: Path) -> None:
    path = write(tmp_path, CATALOG)
    result = CliRunner().invoke(app, ["plans", "show", "sms", "--catalog", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "group_by: region (one line per distinct value)" in out
    assert "default (events matching no filter): none, such events are not billed (the billing run reports them)" in out
    assert 'filters[0] "US & Canada": country in US, CA' in out
    assert "filters[1]: country in DE; direction in inbound; group_by none" in out
    assert "0.0079" in out and "0.0050" in out
    assert "Examples" not in out  # no default price to give examples of


def test_show_a_filtered_charge_with_a_default_keeps_its_examples(tmp_path: Path) -> None:
    text = CATALOG.replace('group_by = ["region"]\n', 'tiers = [{ up_to = "inf", unit_amount = 0.01 }]\n', 1)
    path = write(tmp_path, text)
    result = CliRunner().invoke(app, ["plans", "show", "sms", "--catalog", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "default (events matching no filter)\n" in result.output
    assert "1000 × 0.01 = 10.00" in result.output  # the default's example: 1000 × 0.01


def test_validate_lists_the_filtered_charge(tmp_path: Path) -> None:
    path = write(tmp_path, CATALOG)
    result = CliRunner().invoke(app, ["plans", "validate", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "sms: volume (2 filters, by region)" in result.output


def test_show_json_gives_filters_as_the_catalog_writes_them(tmp_path: Path) -> None:
    path = write(tmp_path, CATALOG)
    result = CliRunner().invoke(app, ["plans", "show", "sms", "--catalog", str(path), "--json"])
    assert result.exit_code == 0, result.output
    charge = json.loads(result.stdout)["charges"][0]
    assert charge["tiers"] is None and charge["group_by"] == ["region"]
    assert charge["filters"][1] == {
        "name": None,
        "properties": {"country": ["DE"], "direction": ["inbound"]},
        "group_by": [],
        "tiers": [{"up_to": None, "unit_amount": "0", "flat_amount": "0"}],
    }


def test_validate_locates_a_broken_filter(tmp_path: Path) -> None:
    broken = CATALOG.replace(
        'properties = { country = ["DE"], direction = ["inbound"] }', 'properties = { country = ["CA"] }'
    )
    path = write(tmp_path, broken)
    result = CliRunner().invoke(app, ["plans", "validate", str(path)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{path}: plans.sms.charges[0].filters[1].properties: overlaps filters[0]: both name 1 property and both "
        'match an event with country = "CA", which no filter naming more properties matches (make the lists '
        "disjoint, or add a more specific filter for such events)",
        f"1 problem in {path}",
    ]
