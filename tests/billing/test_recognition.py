"""Recognized revenue: a fee over the days it covers, cumulatively rounded, and the deferred revenue's movement,
worked by hand (pure), and `billing metrics revenue --json` through the database (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from itertools import pairwise

from typer.testing import CliRunner

from billing.cli import app
from billing.cli.metrics import recognition_row
from billing.core.periods import month
from billing.core.recognition import RecognizedLine, recognize

D = dt.date
runner = CliRunner()

# A yearly fee of 365.00 opened on 2026-03-10 for the rest of its calendar year: [03-10, 2027-01-01), 297 days.
# April: usage 50.00 of [04-01, 05-01) and a discount of −5.00 (no service period; its invoice's period is April).
LINES = [
    RecognizedLine("USD", Decimal("365.00"), D(2026, 3, 10), D(2027, 1, 1), D(2026, 1, 1)),
    RecognizedLine("USD", Decimal("50.00"), D(2026, 4, 1), D(2026, 5, 1), D(2026, 4, 1)),
    RecognizedLine("USD", Decimal("-5.00"), None, None, D(2026, 4, 1)),
]


def test_a_fee_is_revenue_of_the_days_it_covers_and_deferred_revenue_adds_up():
    march, april, december = recognize(LINES, [month(2026, 3), month(2026, 4), month(2026, 12)])
    # March: billed 365.00 (its service begins 03-10); recognized 365 × 22 / 297 = 27.037… → 27.04;
    # deferred 0 + 365 − 27.04 = 337.96
    assert recognition_row(march) | {} == {
        "period": "2026-03", "currency": "USD", "billed": "365.00", "recognized": "27.04",
        "deferred_opening": "0.00", "deferred_added": "365.00", "deferred_closing": "337.96",
    }  # fmt: skip
    # April: to date 365 × 52 / 297 = 63.905… → 63.91, April's part 63.91 − 27.04 = 36.87; + usage 50 − discount 5:
    # recognized 81.87, billed 45.00; deferred 337.96 + 45 − 81.87 = 301.09
    assert recognition_row(april) == {
        "period": "2026-04", "currency": "USD", "billed": "45.00", "recognized": "81.87",
        "deferred_opening": "337.96", "deferred_added": "45.00", "deferred_closing": "301.09",
    }  # fmt: skip
    # December, the fee's last month: to date 365.00 exactly; December's part 365 − 365 × 266 / 297 (= 326.90)
    # = 38.10; deferred at its end: 0
    assert (december.recognized, december.deferred_closing) == (Decimal("38.10"), Decimal("0.00"))


def test_every_month_adds_up_and_the_fee_is_recognized_whole():
    months = [month(2026, m) for m in range(3, 13)]
    found = recognize(LINES, months)
    for before, after in pairwise(found):
        assert after.deferred_opening == before.deferred_closing
    for r in found:
        assert r.deferred_opening + r.deferred_added - r.recognized == r.deferred_closing
    assert sum((r.recognized for r in found), Decimal(0)) == Decimal("410.00")  # 365 + 50 − 5, to the cent


def test_revenue_command_through_the_database(cli_env, engine, catalog_for_revenue=None):
    from billing import customers as service
    from tests.billing.test_metrics_db import _invoice

    service.create_customer(engine, "a", name="A", email=None, currency="USD", timezone="UTC")
    _invoice(engine, "a", "USD", D(2026, 3, 1), {"subscription": "31.00"})
    result = runner.invoke(app, ["metrics", "revenue", "--period", "2026-03", "--json"], env=cli_env)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["data"]
    # a line without a service period, billed and recognized in its invoice's month
    assert (row["billed"], row["recognized"], row["deferred_closing"]) == ("31.00", "31.00", "0.00")
