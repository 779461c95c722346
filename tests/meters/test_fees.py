"""Fees per event summed by the database (``MeterSpec.per_event_fees``), on SQLite and (when configured)
PostgreSQL: hand-worked, against the walk on ``Decimal`` over random events and terms, and beyond 64 bits.

Every number below is worked out by hand in the comment beside it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from meters import MeterSpec, aggregate_usage
from meters import aggregate as aggregate_module
from meters.fees import EventFees, walk
from tests.meters.test_aggregate import MARCH, store

pytestmark = pytest.mark.db


@dataclass(frozen=True)
class Terms:
    rate: Decimal
    fixed_amount: Decimal = Decimal(0)
    free_events: int = 0
    free_amount: Decimal = Decimal(0)
    minimum: Decimal | None = None
    maximum: Decimal | None = None


CARD = Terms(Decimal("2.5"), Decimal("0.30"), 3, Decimal(60), Decimal("0.50"), Decimal("4.00"))


def fees(
    engine: Engine, *terms: Terms, customers: tuple[str, ...] = ("acme",), meter: str = "payments"
) -> dict[tuple[str, Terms], EventFees]:
    kind = "weighted_sum" if meter == "storage_gb" else "sum"
    spec = MeterSpec(meter, kind, keep_event_values=True, per_event_fees=terms)
    found = aggregate_usage(engine, dict.fromkeys(customers, MARCH), [spec])
    for aggregate in found.values():  # the database's sums are the walk over the values handed back
        assert aggregate.fees is not None
        # (as written: the same decimal places, so that an invoice prints the same either way)
        assert [repr(aggregate.fees[t]) for t in terms] == [repr(walk(t, aggregate.values or ())) for t in terms]
    return {(customer, t): aggregate.fees[t] for (customer, _), aggregate in found.items() for t in terms}


def test_free_part_straddle_and_clamps_hand_worked(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    store(
        engine,
        ("acme", "payments", "2024-03-02T00:00:00Z", "40"),  # free (room 60)
        ("acme", "payments", "2024-03-03T00:00:00Z", "30"),  # straddles 60: 10 paid, 10 × 2.5 % + 0.30 = 0.55
        ("acme", "payments", "2024-03-04T00:00:00Z", "50"),  # 1.25 + 0.30 = 1.55
        ("acme", "payments", "2024-03-04T00:00:00Z", "5"),  # same instant, stored after: 0.425 raised to 0.50
        ("acme", "payments", "2024-03-20T00:00:00Z", "200"),  # 5.00 + 0.30 = 5.30 cut to 4.00
        ("globex", "payments", "2024-03-05T00:00:00Z", "1"),  # globex: three events, all free
        ("globex", "payments", "2024-03-06T00:00:00Z", "1"),
        ("globex", "payments", "2024-03-07T00:00:00Z", "1"),
        ("acme", "payments", "2024-04-01T00:00:00Z", "70"),  # April: not in the window
    )

    def not_walked(*_: object) -> None:
        raise AssertionError("summed by the database")

    monkeypatch.setattr(aggregate_module, "_walked_fees", not_walked)
    found = fees(engine, CARD, customers=("acme", "globex", "initech"))
    # acme: 1 free event, 60 of value covered (40 + 20 of the straddling 30); 4 paid on 10 + 50 + 5 + 200 = 265;
    # 0.55 + 1.55 + 0.50 + 4.00 = 6.60
    assert found[("acme", CARD)] == EventFees(1, Decimal(60), True, 4, Decimal(265), 1, 1, Decimal("6.60"))
    assert found[("globex", CARD)] == EventFees(3, Decimal(3), False, 0, Decimal(0), 0, 0, Decimal(0))
    assert found[("initech", CARD)] == EventFees()  # no events


def test_random_events_and_terms_as_the_walk_on_decimal(engine: Engine) -> None:
    rng = random.Random(19)
    events = [
        (
            rng.choice(["acme", "globex", "initech"]),
            "payments",
            f"2024-03-{rng.randint(1, 31):02d}T{rng.randint(0, 23):02d}:00:00Z",
            str(Decimal(rng.randint(0, 10**9)).scaleb(-rng.choice([0, 2, 6]))),
        )
        for _ in range(300)
    ]
    store(engine, *events)
    terms = [
        Terms(Decimal("2.9"), Decimal("0.30")),
        Terms(Decimal("1.25"), Decimal(0), 5, Decimal(0), None, Decimal("7.5")),
        Terms(Decimal("0.125"), Decimal("0.05"), 0, Decimal("1500.5"), Decimal(1), None),
        Terms(Decimal(10), Decimal("0.000001"), 2, Decimal("99.123456"), Decimal("0.2"), Decimal(900)),
        Terms(Decimal(3), Decimal(0), 0, Decimal(0), Decimal("50000.00"), None),  # every fee raised
        Terms(Decimal("0.5"), Decimal("1.0"), 1, Decimal("2500"), None, Decimal("0.75")),  # nearly every fee cut
    ]
    found = fees(engine, *terms, customers=("acme", "globex", "initech"))  # (each compared with the walk)
    assert all(found[("acme", t)].paid_events for t in terms)


def test_beyond_64_bits_and_a_free_amount_finer_than_the_values_walked_exactly(engine: Engine) -> None:
    big = "999999999999.999999"
    store(engine, *(("acme", "payments", f"2024-03-0{day}T00:00:00Z", big) for day in (1, 2, 3)))
    large = Terms(Decimal(150))  # big × 10^6 × 150 does not fit 64 bits: SQLite's product turns into a float
    fine = Terms(Decimal(1), Decimal(0), 0, Decimal("0.0000005"))
    found = fees(engine, large, fine)
    # 3 × 999,999,999,999.999999 × 1.5 = 3 × 1,499,999,999,999.9999985
    assert found[("acme", large)].total == Decimal("4499999999999.9999955")
    # the free part covers 0.0000005 of the first event: 3 × big = 2,999,999,999,999.999997, less 0.0000005
    assert found[("acme", fine)].chargeable == Decimal("2999999999999.9999965")


def test_a_negative_value_is_reported_with_its_index(engine: Engine) -> None:
    store(  # (a weighted_sum meter's events may be negative)
        engine,
        ("acme", "storage_gb", "2024-03-02T00:00:00Z", "10"),
        ("acme", "storage_gb", "2024-03-03T00:00:00Z", "-4"),
        ("acme", "storage_gb", "2024-03-04T00:00:00Z", "-6"),
    )
    assert fees(engine, CARD, meter="storage_gb")[("acme", CARD)].negative == (1, Decimal(-4))
