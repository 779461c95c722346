"""The ``percentage`` model prices the fees the database summed exactly as it prices the walk over each event's
value (the amount, its breakdown and its explanation written alike), on SQLite and PostgreSQL: terms that are
equal but written differently in two plans, negotiated terms, and a charge split by its filters."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from billing.metering import aggregate_windows, meter_specs
from meters import ingest
from meters.events import from_scaled
from pricing_plans.charge_models import MeterUsage
from pricing_plans.charge_models.percentage import rate
from pricing_plans.loader import loads_catalog

pytestmark = pytest.mark.db

TWO_PLANS = """
[meters.payment_volume]
name = "Payments"
aggregation = "sum"

[plans.card]
name = "Card"
currency = "USD"
[[plans.card.charges]]
meter = "payment_volume"
model = "percentage"
rate = 2.9
fixed_amount = 0.3
per_transaction_min = 0.5
free_amount = 60

[plans.card_plus]
name = "Card plus"
currency = "USD"
[[plans.card_plus.charges]]
meter = "payment_volume"
model = "percentage"
rate = 2.90
fixed_amount = 0.30
per_transaction_min = 0.50
free_amount = 60.00
"""

VALUES = ["40", "30", "100", "0.10", "12.5"]  # in time order


def _store(engine, catalog, values=VALUES):
    events = [
        {
            "id": f"p{n}",
            "customer": "acme",
            "meter": "payment_volume",
            "timestamp": f"2026-03-0{n + 1}T00:00:00Z",
            "value": value,
        }
        for n, value in enumerate(values)
    ]
    report = ingest(engine, events, meter_specs(catalog), {"acme"}, now=dt.datetime(2026, 3, 25, tzinfo=dt.UTC))
    assert not report.rejected


def _as_stored(values):
    """The values as the database hands them back (without trailing zeros)."""
    return tuple(from_scaled(int(Decimal(v) * 10**6)) for v in values)


def _written(found):
    """What an invoice keeps of a charge's amount: every number as written."""
    return (repr(found.amount), [repr(row) for row in found.breakdown], found.explanation)


WINDOW = ("acme", dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 4, 1, tzinfo=dt.UTC))


def test_equal_terms_written_differently_in_two_plans_price_as_the_walk(engine):
    catalog, problems = loads_catalog(TWO_PLANS, "payments.toml")
    assert catalog is not None, problems
    _store(engine, catalog)
    plans = {"card": catalog.plan("card"), "card_plus": catalog.plan("card_plus")}
    usage = aggregate_windows(engine, catalog, dict.fromkeys(plans, WINDOW), plans)
    walked = MeterUsage(Decimal("182.6"), 5, _as_stored(VALUES))
    for key, plan in plans.items():
        charge = plan.charges[0]
        # 40 free, 30 straddles 60: 10 × 2.9 % + 0.30 = 0.59; 100: 2.90 + 0.30 = 3.20;
        # 0.10: 0.0029 + 0.30 raised to 0.50; 12.5: 0.3625 + 0.30 = 0.6625; 0.59 + 3.20 + 0.50 + 0.6625 = 4.9525
        assert rate(charge, usage[key]["payment_volume"]).amount == Decimal("4.9525")
        assert _written(rate(charge, usage[key]["payment_volume"])) == _written(rate(charge, walked)), key


def test_negotiated_terms_equal_to_the_plans_but_written_differently_price_as_the_walk(engine):
    catalog, problems = loads_catalog(TWO_PLANS, "payments.toml")
    assert catalog is not None, problems
    _store(engine, catalog)
    card = catalog.plan("card")
    charge = card.charges[0]
    deal = card.model_copy(
        update={
            "charges": [charge.model_copy(update={"fixed_amount": Decimal("0.30"), "free_amount": Decimal("60.0")})]
        }
    )
    usage = aggregate_windows(engine, catalog, {"list": WINDOW, "deal": WINDOW}, {"list": card, "deal": deal})
    walked = MeterUsage(Decimal("182.6"), 5, _as_stored(VALUES))
    # 10 × 2.9 % + 0.3 = 0.59; 3.2; 0.5 (raised); 0.6625: 4.9525
    assert rate(deal.charges[0], usage["deal"]["payment_volume"]).amount == Decimal("4.9525")
    for key, priced in (("list", charge), ("deal", deal.charges[0])):
        assert _written(rate(priced, usage[key]["payment_volume"])) == _written(rate(priced, walked)), key


def test_a_customer_without_events_prices_as_the_walk(engine):
    catalog, problems = loads_catalog(TWO_PLANS, "payments.toml")
    assert catalog is not None, problems
    card = catalog.plan("card")
    usage = aggregate_windows(engine, catalog, {"list": WINDOW}, {"list": card})["list"]["payment_volume"]
    assert usage.events == 0
    assert _written(rate(card.charges[0], usage)) == _written(rate(card.charges[0], MeterUsage()))
