"""Invoice lines as records: their kinds, and their details typed until stored as JSON and typed again when read
back (a breakdown row knows whether its unit amount is a price or a percent)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from invoices.model import LineDetails, LineKind
from pricing_plans.charge_models import BreakdownRow, UnitAmountKind

# Details as invoices store them: compact JSON, explanation and breakdown first, the rest in order.
STORED = (
    '{"explanation":"2 events: 2.9% \\u00d7 1100 + 2 \\u00d7 0.30; total 32.50","breakdown":[{"tier":1,"from":"0",'
    '"to":null,"units":"1100","unit_amount":"2.9","flat_amount":"0.60","amount":"32.500","note":"2 events"}],'
    '"service_period":{"start":"2026-03-01","end":"2026-04-01"},"events":2}'
)
ROW = BreakdownRow(
    1, Decimal(0), None, Decimal("1100"), Decimal("2.9"), Decimal("0.60"), Decimal("32.500"), "2 events",
    UnitAmountKind.PERCENT,
)  # fmt: skip


def test_line_kinds_are_their_plain_strings() -> None:
    assert [kind.value for kind in LineKind] == ["subscription", "usage", "commitment", "late_usage", "credit", "discount"]
    assert str(LineKind.LATE_USAGE) == "late_usage" and LineKind("late_usage") is LineKind.LATE_USAGE
    assert repr(str(LineKind.USAGE)) == "'usage'"


def test_details_are_stored_as_compact_json_in_their_order() -> None:
    details = LineDetails(
        "2 events: 2.9% × 1100 + 2 × 0.30; total 32.50",
        (ROW,),
        {"service_period": {"start": "2026-03-01", "end": "2026-04-01"}, "events": 2},
    )
    assert details.to_json() == STORED
    assert LineDetails().to_json() == "{}"
    assert LineDetails(explanation="now 0 − billed 5.00").as_dict() == {"explanation": "now 0 − billed 5.00"}
    assert LineDetails("fee", ()).as_dict() == {"explanation": "fee", "breakdown": []}


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        ("percentage", UnitAmountKind.PERCENT),
        ("graduated_percentage", UnitAmountKind.PERCENT),
        ("graduated", UnitAmountKind.PRICE),
        (None, UnitAmountKind.PRICE),
    ],
)
def test_details_read_back_typed_by_the_lines_model(model: str | None, kind: UnitAmountKind) -> None:
    details = LineDetails.from_json(STORED, model)
    assert details.explanation == "2 events: 2.9% × 1100 + 2 × 0.30; total 32.50"
    assert details.breakdown is not None
    (row,) = details.breakdown
    assert row.unit_amount_kind is kind and row.in_percent is (kind is UnitAmountKind.PERCENT)
    assert (row.units, row.unit_amount, row.amount, row.to_units) == (
        Decimal("1100"), Decimal("2.9"), Decimal("32.500"), None,
    )  # fmt: skip
    assert details.extra == {"service_period": {"start": "2026-03-01", "end": "2026-04-01"}, "events": 2}
    assert details.to_json() == STORED  # byte for byte


def test_details_without_a_breakdown_stay_without_one() -> None:
    details = LineDetails.from_json('{"explanation":"x","late":{"period":"2026-02"}}', "graduated")
    assert (details.explanation, details.breakdown) == ("x", None)
    assert json.loads(details.to_json()) == {"explanation": "x", "late": {"period": "2026-02"}}
    assert LineDetails.from_json("{}", None) == LineDetails()
