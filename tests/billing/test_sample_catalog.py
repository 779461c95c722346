"""The sample catalog's plans of usage-based shapes, quoted from events as the README's worked examples price them.

Every quote goes through ``billing quote --events``: the events are validated and aggregated as the billing run
does (by filter and group in the database), then rated. The amounts are the README's ("The sample catalog").
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from typer.testing import CliRunner

from billing.cli import app

ROOT = Path(__file__).resolve().parents[2]
CATALOG = str(ROOT / "catalog.toml")
START = "2026-03-01T00:00:00Z"  # the period's first instant: a weighted sum held from here counts the whole month


def _write(path: Path, events: Iterable[tuple[str, str | None, dict[str, str]]]) -> Path:
    """One event per (meter, value, properties), each at its own minute of 2 March (the first of the month for
    weighted sums, so that they count for the whole month)."""
    with path.open("w", encoding="utf-8") as out:
        for i, (meter, value, properties) in enumerate(events):
            minute = f"2026-03-02T{i // 60 % 24:02d}:{i % 60:02d}:00Z"
            event: dict[str, object] = {"id": f"e{i}", "customer": "acme", "meter": meter, "timestamp": minute}
            if meter in ("warehouse_storage", "object_storage", "cloud_recordings"):
                event["timestamp"] = START
            if value is not None:
                event["value"] = value
            if properties:
                event["properties"] = properties
            out.write(json.dumps(event) + "\n")
    return path


def _quote(plan: str, events: Path, *extra: str) -> dict[str, object]:
    result = CliRunner().invoke(
        app, ["quote", "--catalog", CATALOG, "--plan", plan, "--events", str(events), "--period", "2026-03",
              "--start", "2026-01-01", "--json", *extra],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _lines(quote: dict[str, object]) -> list[tuple[str, str, str]]:
    return [(line["description"], line["quantity"], line["amount"]) for line in quote["lines"]]  # type: ignore[attr-defined]


def test_sms_by_destination_country_with_volume_tiers_and_a_minimum(tmp_path: Path) -> None:
    sms = (
        [("sms", None, {"country": "US", "direction": "outbound"})] * 8_000
        + [("sms", None, {"country": "CA", "direction": "outbound"})] * 4_000
        + [("sms", None, {"country": "DE", "direction": "outbound"})] * 1_500
        + [("sms", None, {"country": "DE", "direction": "inbound"})] * 300
        + [("sms", None, {"country": "FR", "direction": "outbound"})] * 200
    )
    quote = _quote("sms", _write(tmp_path / "sms.jsonl", sms))
    # US & Canada 12,000 in the 10,001–100,000 volume tier: × 0.0069 = 82.80; Germany 1,500 × 0.0750 = 112.50;
    # inbound to Germany (the more specific filter) free; 200 to France at the default 0.0500 = 10.00
    assert _lines(quote) == [
        ("SMS — US & Canada", "12000", "82.80"),
        ("SMS — Germany", "1500", "112.50"),
        ("SMS — Germany, inbound", "300", "0.00"),
        ("SMS", "200", "10.00"),
    ]
    assert quote["total"] == "205.30"  # above the 100.00 minimum: no true-up
    quiet = _quote("sms", _write(tmp_path / "quiet.jsonl", [("sms", None, {"country": "US"})] * 5_000))
    # 5,000 × 0.0079 = 39.50, trued up by 100.00 − 39.50 = 60.50
    assert [line["amount"] for line in quiet["lines"]] == ["39.50", "60.50"]  # type: ignore[index]
    assert quiet["total"] == "100.00"


def test_cloud_priced_by_region_with_a_line_per_platform(tmp_path: Path) -> None:
    events = [
        ("vm_hours", "1000", {"region": "eu-central-1", "platform": "standard-v3"}),
        ("vm_hours", "120", {"region": "eu-central-1", "platform": "gpu-a100"}),
        ("vm_hours", "2000", {"region": "eu-north-1", "platform": "standard-v3"}),
        ("vm_hours", "500", {"region": "us-east-1", "platform": "standard-v3"}),
        ("object_storage", "80", {"region": "eu-central-1"}),
        ("object_storage", "40", {"region": "eu-north-1"}),
        ("object_storage", "7", {"region": "us-east-1"}),  # no price in that region: unpriced
    ]
    quote = _quote("cloud", _write(tmp_path / "cloud.jsonl", events))
    assert _lines(quote) == [
        ("Virtual machine hours — Frankfurt — gpu-a100", "120", "3.48"),  # 120 × 0.0290
        ("Virtual machine hours — Frankfurt — standard-v3", "1000", "29.00"),  # 1,000 × 0.0290
        ("Virtual machine hours — Stockholm — standard-v3", "2000", "52.00"),  # 2,000 × 0.0260
        ("Virtual machine hours — standard-v3", "500", "16.00"),  # the default: 500 × 0.0320
        ("Object storage — Frankfurt", "80", "0.69"),  # (80 − 50) × 0.0230 = 0.69
        ("Object storage — Stockholm", "40", "0.00"),  # inside the 50 free GB-months
    ]
    assert quote["total"] == "101.17"
    assert [(u["meter"], u["quantity"]) for u in quote["unpriced"]] == [("object_storage", "7")]  # type: ignore[attr-defined]


def test_warehouse_storage_by_the_byte_month_and_credits_by_edition(tmp_path: Path) -> None:
    events = [("warehouse_storage", str(5 * 10**11), {})] * 4  # 2 TB loaded in four parts (a value is < 10^12)
    events += [("compute_credits", "10", {"edition": "standard"})] * 10
    events += [("compute_credits", "20", {"edition": "enterprise"})] * 2
    quote = _quote("warehouse", _write(tmp_path / "warehouse.jsonl", events))
    # 2 × 10^12 byte-months × 0.000000000023 = 46.00; 100 × 2.00 = 200.00; 40 × 3.00 = 120.00
    assert [line[2] for line in _lines(quote)] == ["46.00", "200.00", "120.00"]
    assert quote["total"] == "366.00"


def test_meetings_per_licence_and_the_storage_add_on(tmp_path: Path) -> None:
    empty = _write(tmp_path / "none.jsonl", [])
    licences = _quote("meetings", empty, "--quantity", "12")
    assert licences["total"] == "159.96"  # 12 × 13.33
    storage = _quote("meetings_storage", _write(tmp_path / "rec.jsonl", [("cloud_recordings", "250", {})]))
    # fee 10.00; 250 GB-months, 100 included: 150 × 0.10 = 15.00
    assert [line["amount"] for line in storage["lines"]] == ["10.00", "15.00"]  # type: ignore[index]
    assert storage["total"] == "25.00"  # on one invoice with the licences: 159.96 + 25.00 = 184.96


def test_call_analytics_in_roubles(tmp_path: Path) -> None:
    minutes = [("analysed_minutes", "12000", {}), ("analysed_minutes", "345.5", {})]
    quote = _quote("call_analytics", _write(tmp_path / "calls.jsonl", minutes))
    assert (quote["currency"], quote["total"]) == ("RUB", "30863.75")  # 12,345.5 × 2.50


def test_ai_tokens_by_model_with_tiers_per_model(tmp_path: Path) -> None:
    events = [
        ("ai_tokens", "1500000", {"model": "large"}),
        ("ai_tokens", "9000000", {"model": "small"}),
        ("ai_tokens", "3000000", {"model": "small-2"}),
        ("ai_tokens", "50000", {"model": "experimental"}),
    ]
    quote = _quote("ai_tokens", _write(tmp_path / "tokens.jsonl", events))
    # large: 1,000,000 × 0.000010 = 10.00 + 500,000 × 0.000008 = 4.00 → 14.00;
    # small and small-2 together: 10,000,000 × 0.0000005 = 5.00 + 2,000,000 × 0.0000004 = 0.80 → 5.80
    assert _lines(quote) == [("AI tokens — Large model", "1500000", "14.00"), ("AI tokens — Small model", "12000000", "5.80")]
    assert quote["total"] == "19.80"
    assert [(u["meter"], u["events"], u["quantity"]) for u in quote["unpriced"]] == [("ai_tokens", 1, "50000")]  # type: ignore[attr-defined]
