"""``billing quote``: the JSON contract, exact amounts, proration with --start, JPY, --events and bad input."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from billing.cli import app

ROOT = Path(__file__).resolve().parents[2]
CATALOG = str(ROOT / "catalog.toml")
runner = CliRunner()


def quote(*args: str):
    return runner.invoke(app, ["quote", "--catalog", CATALOG, *args])


def test_json_contract_and_graduated_amounts():
    result = quote("--plan", "api_growth", "--usage", "api_calls=300000", "--usage", "storage_gb=12.5",
                   "--period", "2026-03", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data) == ["plan", "currency", "lines", "subtotal", "total", "unpriced"]
    assert all(
        list(line) == ["kind", "meter", "model", "quantity", "amount", "details", "description", "dimension"]
        for line in data["lines"]
    )
    lines = [(line["kind"], line["meter"], line["model"], line["quantity"], line["amount"]) for line in data["lines"]]
    # calls: 10,000 free + 240,000 × 0.002 = 480 + 50,000 × 0.0015 = 75 → 555.00;
    # storage 12.5 × 0.25 = 3.125 → 3.13 (half up); compute 0 → 0.00; fee 49.00 for the whole month
    assert lines == [
        ("subscription", None, None, "1", "49.00"),
        ("usage", "api_calls", "graduated", "300000", "555.00"),
        ("usage", "storage_gb", "per_unit", "12.5", "3.13"),
        ("usage", "compute_minutes", "per_unit", "0", "0.00"),
    ]
    assert (data["plan"], data["currency"], data["subtotal"], data["total"]) == ("api_growth", "USD", "607.13", "607.13")
    tiers = data["lines"][1]["details"]["breakdown"]
    assert [(row["units"], row["amount"]) for row in tiers] == [("10000", "0"), ("240000", "480.000"), ("50000", "75.0000")]


def test_start_prorates_the_fee_and_jpy_has_no_minor_digits():
    result = quote("--plan", "starter_jp", "--usage", "api_calls=12345", "--start", "2026-03-17", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # fee ¥5,000 × 15/31 = 2,419.35… → ¥2,419; calls ceil((12,345 − 5,000) / 1,000) = 8 × ¥300 = ¥2,400
    assert [line["amount"] for line in data["lines"]] == ["2419", "2400", "0"]
    assert data["total"] == "4819"


def test_events_are_aggregated_for_the_percentage_model(tmp_path):
    events = tmp_path / "payments.jsonl"
    values = ["100.00", "10.00", "1000.00"] + ["50.00"] * 10
    events.write_text("".join(
        json.dumps({"id": f"p{i}", "customer": "shop", "meter": "payment_volume",
                    "timestamp": f"2026-03-{i + 1:02d}T10:00:00Z", "value": v}) + "\n"
        for i, v in enumerate(values)
    ))
    result = quote("--plan", "payments", "--events", str(events), "--period", "2026-03", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # volume 100 + 10 + 1,000 + 10 × 50 = 1,610; the first 10 payments are free (1,460.00 of value); the
    # last three are 50.00 each: 2.9 % × 50 + 0.30 = 1.75 (between the 0.50 minimum and 25.00 maximum) → 5.25
    assert [(line["meter"], line["quantity"], line["amount"]) for line in data["lines"]] == [
        ("payment_volume", "1610", "5.25"),
    ]


def test_customer_picks_its_events_from_a_file_of_several_customers(tmp_path):
    """--customer quotes that customer's events of a file that holds other customers' too (their events were
    refused as of an unknown customer, and no quote was possible); without it, such a file asks for it."""
    events = tmp_path / "events.jsonl"
    events.write_text("".join(
        json.dumps({"id": f"e{i}", "customer": who, "meter": "api_calls", "timestamp": "2026-03-10T10:00:00Z",
                    "value": 1}) + "\n"
        for i, who in enumerate(["acme", "globex", "globex", "acme", "acme"])
    ))
    result = quote("--plan", "api_growth", "--events", str(events), "--customer", "acme", "--period", "2026-03", "--json")
    assert result.exit_code == 0, result.output
    calls = [line for line in json.loads(result.stdout)["lines"] if line["meter"] == "api_calls"]
    assert [line["quantity"] for line in calls] == ["3"]  # acme's three, not globex's two
    refused = quote("--plan", "api_growth", "--events", str(events), "--period", "2026-03", "--json")
    assert refused.exit_code == 1
    assert "events of several customers (acme, globex): add --customer" in " ".join(refused.output.split())


def test_bad_input_names_what_is_wrong():
    result = quote("--plan", "nope", "--usage", "api_calls=1")
    assert result.exit_code == 1 and "unknown plan 'nope'" in result.output
    result = quote("--plan", "api_growth", "--usage", "api_calls=-5")
    assert result.exit_code == 2 and "must be ≥ 0" in result.output  # a bad option value: a usage error
    result = quote("--plan", "api_growth", "--usage", "bogus=5")
    assert result.exit_code == 2 and "unknown meter 'bogus'" in result.output
    result = quote("--plan", "api_growth", "--period", "2026-13", "--usage", "api_calls=1")
    assert result.exit_code == 2 and "YYYY-MM" in result.output


def test_an_unknown_timezone_is_a_usage_error_with_usage_and_with_events(tmp_path):
    """``--timezone Mars/X`` was a ZoneInfoNotFoundError traceback with --events and silently accepted with
    --usage."""
    events = tmp_path / "e.jsonl"
    events.write_text("", encoding="utf-8")
    for given in (["--usage", "api_calls=5"], ["--events", str(events)]):
        result = CliRunner().invoke(
            app, ["quote", "--plan", "api_growth", *given, "--period", "2026-11", "--timezone", "Mars/X"]
        )
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == (
            "error: --timezone: unknown timezone 'Mars/X' (expected an IANA name such as Europe/Berlin or UTC)"
        )
