"""Reading a ``POST /v1/events`` body: the usual body is read by orjson, anything else by the events' strict reader,
and both give the same events: numbers with a fraction as Decimal, an event (or its properties) that repeats a key
as a ``RepeatedKeys`` naming it, every other value as JSON says."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.api.events import BatchError, _plain_batch, _read_strictly, parse_batch
from meters.events import RepeatedKeys

_USUAL = (
    b'{"events": [{"id": "e1", "customer": "acme", "meter": "api_calls", "timestamp": "2024-03-01T00:00:00Z", '
    b'"properties": {"region": "eu-west-1", "tier": ""}}, {"id": "e2", "customer": "acme", "meter": "storage", '
    b'"timestamp": "2024-03-01T00:00:00Z", "value": -12, "flag": true, "nothing": null, "list": ["a", 1, []]}]}'
)


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (a Decimal is not an int, a RepeatedKeys not a dict)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        repeated = getattr(a, "repeated", None) == getattr(b, "repeated", None)
        return repeated and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) or (isinstance(a, Decimal) and a.is_nan() and b.is_nan())


def test_the_usual_body_is_read_by_orjson_as_the_strict_reader_reads_it() -> None:
    fast = _plain_batch(_USUAL)
    assert fast is not None  # the fast way was taken
    assert _same(fast, _read_strictly(_USUAL))
    assert fast[1]["value"] == -12 and type(fast[1]["value"]) is int


@pytest.mark.parametrize(
    ("body", "event"),
    [
        # a repeated key, of a string, of a number, inside properties, and "events" itself: one string more in the
        # text than orjson keeps
        (b'{"events": [{"id": "a", "meter": "m", "id": "b"}]}', RepeatedKeys([("id", "a"), ("meter", "m"), ("id", "b")])),
        (b'{"events": [{"id": "a", "value": 1, "value": 2}]}', RepeatedKeys([("id", "a"), ("value", 1), ("value", 2)])),
        (
            b'{"events": [{"id": "a", "properties": {"k": "1", "k": "2"}}]}',
            {"id": "a", "properties": RepeatedKeys([("k", "1"), ("k", "2")])},
        ),
        # a fraction or an exponent: Decimal, exactly as written
        (b'{"events": [{"id": "a", "value": 0.1}]}', {"id": "a", "value": Decimal("0.1")}),
        (b'{"events": [{"id": "a", "value": 1.5e3}]}', {"id": "a", "value": Decimal("1.5E+3")}),
        (b'{"events": [{"id": "a", "properties": {"n": [2.50]}}]}', {"id": "a", "properties": {"n": [Decimal("2.50")]}}),
        # beyond 64 bits (orjson makes it a float), NaN (orjson refuses it), an escaped quote (no count vouches):
        # the strict reader reads them
        (b'{"events": [{"id": "a", "value": 123456789012345678901234567890}]}',
         {"id": "a", "value": 123456789012345678901234567890}),
        (b'{"events": [{"id": "a", "value": NaN}]}', {"id": "a", "value": Decimal("NaN")}),
        (b'{"events": [{"id": "a\\"b"}]}', {"id": 'a"b'}),
    ],
)  # fmt: skip
def test_anything_else_is_read_by_the_strict_reader(body: bytes, event: dict[str, Any]) -> None:
    assert _plain_batch(body) is None
    assert _same(parse_batch(body, 10), [event])


def test_a_repeated_events_key_and_too_many_events_are_refused_either_way() -> None:
    with pytest.raises(BatchError, match="duplicate key") as repeated:
        parse_batch(b'{"events": [], "events": [{"id": "a"}]}', 10)
    assert repeated.value.field == "events"
    with pytest.raises(BatchError, match="at most 1 events per batch, got 2"):
        parse_batch(b'{"events": [{"id": "a"}, {"id": "b"}]}', 1)


_KEYS = st.sampled_from(["id", "customer", "meter", "timestamp", "value", "properties", "k", ""])
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6),
)
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.lists(st.tuples(_KEYS, inner), max_size=3).map(
    lambda pairs: ("object", pairs)), max_leaves=8)  # fmt: skip


def _written(value: Any) -> str:
    """JSON text of ``value``, where ("object", pairs) is an object written pair by pair (keys may repeat)."""
    if isinstance(value, tuple):
        return "{" + ", ".join(f"{json.dumps(k)}: {_written(v)}" for k, v in value[1]) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_written(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.tuples(_KEYS, _VALUES), max_size=6), max_size=4))
def test_any_body_reads_the_same_as_with_the_strict_reader(events: list[list[tuple[str, Any]]]) -> None:
    body = ('{"events": [' + ", ".join(_written(("object", pairs)) for pairs in events) + "]}").encode()
    assert _same(parse_batch(body, 100), _read_strictly(body))


@pytest.mark.parametrize("depth", [14, 15, 16, 17, 100, 981, 982, 983, 1000, 1022, 1030])
def test_a_deeply_nested_body_is_the_strict_readers_to_read_or_refuse(depth: int) -> None:
    """orjson reads up to 1,024 levels, the strict reader fewer (the interpreter's recursion limit): a deep body
    is read, or refused with a BatchError (the API's 422), exactly as the strict reader does; never an error of
    another kind (the API's 500)."""
    body = b'{"events": [' + b"[" * depth + b"]" * depth + b"]}"

    def outcome(read: Any) -> tuple[object, ...]:
        """Refused (and for which field), or read: how deep its lists go (walked without recursion: Python 3.12's
        reader reads deeper than the interpreter recurses)."""
        try:
            node = read(body)
        except BatchError as error:
            return ("refused", error.field)
        levels = 0
        while type(node) is list and node:
            levels, node = levels + 1, node[0]
        return ("read", levels, node)

    assert outcome(lambda b: parse_batch(b, 10)) == outcome(_read_strictly)
    assert (_plain_batch(body) is None) == (depth >= 15)  # 16 levels read: the object, "events", 14 lists
