"""Events at the same instant: which one comes first (the free part of a ``percentage`` charge, ``latest``)
is told by their ids, the same on SQLite and PostgreSQL whatever way a chunk is stored (an API batch of a few
events, a large one by ``COPY``, one holding an id already stored)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import Engine

from meters import MeterSpec, aggregate_usage, ingest
from meters.fees import walk
from tests.meters.test_aggregate import CUSTOMERS, MARCH, METERS, NOW
from tests.meters.test_fees import Terms

pytestmark = pytest.mark.db

FIRST_FREE = Terms(Decimal(10), free_events=1)


def _payment(event_id: str, value: str, customer: str = "acme", day: int = 5) -> dict[str, object]:
    timestamp = f"2024-03-{day:02d}T12:00:00Z"
    return {"id": event_id, "customer": customer, "meter": "payments", "timestamp": timestamp, "value": value}


def _acme(engine: Engine) -> tuple[list[Decimal], Decimal]:
    spec = MeterSpec("payments", "sum", keep_event_values=True, per_event_fees=(FIRST_FREE,))
    found = aggregate_usage(engine, {"acme": MARCH}, [spec])[("acme", "payments")]
    assert found.fees is not None
    assert found.fees[FIRST_FREE] == walk(FIRST_FREE, found.values or ())
    return list(found.values or ()), found.fees[FIRST_FREE].total


# (listed "tie-b" first: the order given is not the order kept)
TIED = [_payment("tie-b", "30"), _payment("tie-a", "5")]
# other customers' events: a batch of more than a hundred (PostgreSQL stores it by COPY)
OTHERS = [_payment(f"other-{n}", "1", "globex", 1 + n % 28) for n in range(150)]


@pytest.mark.parametrize(
    "batches",
    [[TIED], [TIED + OTHERS], [OTHERS[:1], OTHERS[:1] + TIED + OTHERS[1:]]],
    ids=["a-few", "copied", "one-already-stored"],
)
def test_events_at_one_instant_come_in_the_order_of_their_ids(engine: Engine, batches: list) -> None:
    for batch in batches:
        assert not ingest(engine, batch, METERS, CUSTOMERS, now=NOW).rejected
    values, total = _acme(engine)
    # tie-a (5) first: free; tie-b (30) paid: 30 × 10 % = 3
    assert values == [Decimal(5), Decimal(30)]
    assert total == Decimal("3.0")
