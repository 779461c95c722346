"""Fees per event summed by the database against the walk on ``Decimal`` over the same events, on SQLite and
(when configured) PostgreSQL, for generated events and terms: free parts ending exactly on an event, ties in
time, values of one millionth and near the largest a value may be (either side of SQLite's 64 bits), clamps
and negative values. The walk over the values the database hands back in time order is the reference; the
sums must be written with the same decimal places (an invoice prints them)."""

from __future__ import annotations

from dataclasses import astuple
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from meters import MeterSpec, aggregate_usage
from meters import aggregate as aggregate_module
from meters.fees import walk
from pricing_plans.charge_models.base import PerEventFeeTerms
from pricing_plans.charge_models.percentage import fees_of
from tests.meters.test_aggregate import MARCH, store

pytestmark = pytest.mark.db

_LARGEST = Decimal("999999999999.999999")
values = st.one_of(
    st.sampled_from([Decimal(0), Decimal("0.000001"), _LARGEST, Decimal("500000000000"), Decimal("0.5")]),
    st.integers(0, 10**9).map(lambda n: Decimal(n).scaleb(-6)),
    st.integers(0, 10**4).map(Decimal),
)
# every event at one of a few instants (ties in time; the window's first instant, its last and the next
# window's first, not in it) for one of two customers
INSTANTS = [
    "2024-03-01T00:00:00Z",
    "2024-03-02T00:00:00Z",
    "2024-03-03T00:00:00Z",
    "2024-03-31T23:59:59.999999Z",
    "2024-04-01T00:00:00Z",
]
events = st.lists(st.tuples(st.sampled_from(["acme", "globex"]), st.integers(0, 4), values), max_size=8)
amounts = st.sampled_from(
    [None, Decimal(0), Decimal("0.30"), Decimal("0.000001"), Decimal("0.0000001"), Decimal(5), Decimal(10**15)]
)


@st.composite
def terms_and_events(draw: st.DrawFn) -> tuple[PerEventFeeTerms, list[tuple[str, int, Decimal]]]:
    found = draw(events)
    if draw(st.booleans()):  # a weighted_sum meter: its events may be negative (the model refuses them)
        found = [(c, at, -v if draw(st.booleans()) else v) for c, at, v in found]
    prefix = [sum((abs(v) for *_, v in found[: n + 1]), Decimal(0)) for n in range(len(found))]
    # the free amount: none, the sum of the first events (the free part ends exactly on one), a millionth
    # either side of it, or finer than the values
    free_amount = draw(
        st.one_of(
            st.just(Decimal(0)),
            st.sampled_from(prefix or [Decimal(1)]).flatmap(
                lambda p: st.sampled_from([p, p + Decimal("0.000001"), max(p - Decimal("0.000001"), Decimal(0))])
            ),
            st.sampled_from([Decimal("0.0000005"), Decimal("1.5"), Decimal(100)]),
        )
    )
    rate = draw(st.sampled_from([Decimal(0), Decimal("2.5"), Decimal("0.123456789"), Decimal(100), Decimal(150)]))
    fixed = draw(st.sampled_from([Decimal(0), Decimal("0.30"), Decimal("0.0000001")]))
    minimum, maximum = draw(amounts), draw(amounts)
    if minimum is not None and maximum is not None and minimum > maximum:  # (the catalog refuses it)
        minimum, maximum = maximum, minimum
    free_events = draw(st.integers(0, 3))
    return PerEventFeeTerms(rate, fixed, free_events, free_amount, minimum, maximum), found


def _clear(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM usage_events"))


def _check(engine: Engine, terms: PerEventFeeTerms, found: list[tuple[str, int, Decimal]]) -> None:
    _clear(engine)
    levels = any(v < 0 for *_, v in found)
    meter = "storage_gb" if levels else "payments"
    if found:
        store(engine, *((c, meter, INSTANTS[at], str(v)) for c, at, v in found))
    kind = "weighted_sum" if levels else "sum"
    spec = MeterSpec(meter, kind, keep_event_values=True, per_event_fees=(terms,))
    aggregated = aggregate_usage(engine, {"acme": MARCH, "globex": MARCH, "initech": MARCH}, [spec])
    for aggregate in aggregated.values():
        assert aggregate.fees is not None
        expected = walk(terms, aggregate.values or ())
        assert astuple(fees_of(terms, aggregate.values or ())) == tuple(expected)  # (the model's own walk)
        assert repr(aggregate.fees[terms]) == repr(expected)
        if expected.negative is None:  # every event in the window free or paid (the straddling one paid)
            assert expected.free_events + expected.paid_events == aggregate.events


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(terms_and_events())
def test_summed_fees_are_the_walk(engine: Engine, case: tuple[PerEventFeeTerms, list]) -> None:
    _check(engine, *case)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(terms_and_events())
def test_streamed_walk_is_the_walk(engine: Engine, case: tuple[PerEventFeeTerms, list]) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(aggregate_module, "_summed_fees", lambda *_: None)
        _check(engine, *case)


@pytest.mark.parametrize(
    "found",
    [
        [("acme", 0, _LARGEST), ("acme", 1, _LARGEST), ("acme", 2, Decimal("0.000001"))],
        [("acme", 0, Decimal("987654321098.765432")), ("acme", 1, Decimal("123456789012.345678"))],
    ],
)
def test_more_digits_than_a_decimal_context_holds(engine: Engine, found: list[tuple[str, int, Decimal]]) -> None:
    # 999,999,999,999.999999 × 0.00123456789 has 29 significant digits: more than Decimal's default 28
    _check(engine, PerEventFeeTerms(Decimal("0.123456789"), Decimal("0.0000001")), found)
