"""One event read and validated: every rejection reason, exact values, instants, and what "same content" means."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meters import EventError, MeterSpec, UsageEvent, from_epoch_us, from_scaled, parse_event, to_epoch_us
from meters.events import EventValidator, RepeatedKeys, keys_once, parse_json_line

NOW = dt.datetime(2024, 4, 1, 12, 0, tzinfo=dt.UTC)
METERS = [
    MeterSpec("api_calls", "count"),
    MeterSpec("payments", "sum"),
    MeterSpec("peak", "max"),
    MeterSpec("seats", "latest"),
    MeterSpec("storage_gb", "weighted_sum"),
    MeterSpec("active_users", "unique_count", unique_property="user_id"),
]
CUSTOMERS = {"acme", "globex"}


def event(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": "evt-1",
        "customer": "acme",
        "meter": "payments",
        "timestamp": "2024-03-10T12:00:00Z",
        "value": "12.5",
    }
    base.update(fields)
    return {key: value for key, value in base.items() if value is not None}


def valid(**fields: object) -> UsageEvent:
    return parse_event(event(**fields), METERS, CUSTOMERS, now=NOW)


def reason(**fields: object) -> str:
    with pytest.raises(EventError) as error:
        valid(**fields)
    return str(error.value)


# -- accepted events ---------------------------------------------------------------------------------------


def test_a_valid_event_becomes_the_stored_row() -> None:
    stored = valid(properties={"region": "eu", "card": "visa"})
    assert stored.event_id == "evt-1"
    assert stored.customer == "acme"
    assert stored.meter == "payments"
    assert stored.occurred_at == to_epoch_us(dt.datetime(2024, 3, 10, 12, tzinfo=dt.UTC))
    assert stored.value == 12_500_000  # × 10^6
    assert stored.decimal_value == Decimal("12.5")
    assert stored.properties == '{"card":"visa","region":"eu"}'  # canonical: sorted keys
    assert stored.unique_value is None
    assert stored.timestamp == dt.datetime(2024, 3, 10, 12, tzinfo=dt.UTC)


def test_a_validator_remembers_property_maps_only_as_valid_for_their_meter() -> None:
    """One validator, many events with the same property maps (a batch, a file): each map is read as the first
    time, whatever was read before: for another meter, in another order, repeating a key, or invalid."""
    validator = EventValidator(METERS, CUSTOMERS, NOW)

    def read(meter: str, properties: object) -> tuple[str | None, str | None] | str:
        record = event(meter=meter, value=None if meter in ("api_calls", "active_users") else "1")
        record["properties"] = properties
        try:
            stored = validator.validate(record)
        except EventError as error:
            return str(error)
        return stored.properties, stored.unique_value

    users = {"user_id": "u1", "region": "eu"}
    for _ in range(2):  # the second time, from what the validator remembered
        assert read("api_calls", users) == ('{"region":"eu","user_id":"u1"}', None)
        assert read("active_users", users) == ('{"region":"eu","user_id":"u1"}', "u1")
        assert read("active_users", {"region": "eu", "user_id": "u1"}) == ('{"region":"eu","user_id":"u1"}', "u1")
        missing = "missing property 'user_id' (meter 'active_users' counts its unique values)"
        assert read("active_users", {"region": "eu"}) == missing
        assert read("api_calls", {"n": 1}) == "property 'n' must be a string (got a number)"
        assert read("api_calls", {"n": ["a"]}) == "property 'n' must be a string (got a list)"
        assert read("api_calls", RepeatedKeys([("k", "a"), ("k", "a")])) == "duplicate key 'k' in 'properties'"
        assert read("api_calls", {"k": "a\ud800"}) == "'properties' hold an invalid unicode escape"
    first, again = (validator.validate(event(id=f"e{i}", properties={"region": "eu"})) for i in range(2))
    assert first.properties is again.properties  # one string object for a repeated map


@pytest.mark.parametrize(
    ("written", "scaled"),
    [
        ("0.1", 100_000),
        ("0.000001", 1),
        ("1.500000000", 1_500_000),  # trailing zeros beyond the scale are fine
        (Decimal("1E+3"), 1_000_000_000),  # a JSON number with an exponent: 1e3
        (Decimal("2.5E-3"), 2_500),
        (Decimal("2.25"), 2_250_000),  # a JSON number with a fraction
        (7, 7_000_000),
        ("999999999999.999999", 999_999_999_999_999_999),
        ("-0", 0),
        ("007", 7_000_000),
    ],
)
def test_values_are_exact_fixed_point_integers(written: object, scaled: int) -> None:
    assert valid(value=written).value == scaled


def test_count_and_unique_count_events_need_no_value() -> None:
    assert valid(meter="api_calls", value=None).value is None
    assert valid(meter="active_users", value=None, properties={"user_id": "u1"}).unique_value == "u1"


def test_weighted_sum_takes_negative_values_as_decrements() -> None:
    assert valid(meter="storage_gb", value="-2.5").value == -2_500_000


def test_a_timestamp_with_any_offset_is_the_same_instant() -> None:
    utc = valid(timestamp="2024-03-10T12:00:00Z").occurred_at
    assert valid(timestamp="2024-03-10T13:00:00+01:00").occurred_at == utc
    assert valid(timestamp="2024-03-10T07:00:00-05:00").occurred_at == utc
    assert valid(timestamp="2024-03-10T12:00:00.000001Z").occurred_at == utc + 1


def test_a_timestamp_up_to_a_day_ahead_is_accepted() -> None:
    assert valid(timestamp="2024-04-02T12:00:00Z").occurred_at == to_epoch_us(NOW + dt.timedelta(days=1))


def test_json_lines_never_give_floats() -> None:
    record = parse_json_line('{"value": 0.1, "n": 3}')
    assert record["value"] == Decimal("0.1") and isinstance(record["value"], Decimal)
    assert record["n"] == 3


def test_same_content_has_the_same_hash_whatever_its_spelling() -> None:
    one = valid(value="1.50", timestamp="2024-03-10T12:00:00Z", properties={"a": "1", "b": "2"})
    two = valid(value=Decimal("1.5"), timestamp="2024-03-10T14:00:00+02:00", properties={"b": "2", "a": "1"})
    assert one == two


@pytest.mark.parametrize(
    "change",
    [
        {"value": "1.500001"},
        {"customer": "globex"},
        {"timestamp": "2024-03-10T12:00:00.000001Z"},
        {"properties": {"a": "1"}},
        {"meter": "peak"},
    ],
)
def test_other_content_has_another_hash(change: dict[str, object]) -> None:
    assert valid(value="1.5").content_hash != valid(**{"value": "1.5", **change}).content_hash


def test_epoch_and_scale_helpers_round_trip() -> None:
    instant = dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=dt.UTC)
    assert from_epoch_us(to_epoch_us(instant)) == instant
    assert str(from_scaled(1_500_000)) == "1.5"
    assert str(from_scaled(-1)) == "-0.000001"
    assert str(from_scaled(100_000_000)) == "100"
    with pytest.raises(ValueError, match="naive"):
        to_epoch_us(dt.datetime(2024, 1, 1))


# -- every rejection reason --------------------------------------------------------------------------------


def test_unknown_meter() -> None:
    assert reason(meter="bandwidth") == (
        "unknown meter 'bandwidth' (known: active_users, api_calls, payments, peak, seats, storage_gb)"
    )


def test_unknown_customer() -> None:
    assert reason(customer="initech") == "unknown customer 'initech'"


@pytest.mark.parametrize("missing", ["id", "customer", "meter", "timestamp"])
def test_missing_fields(missing: str) -> None:
    assert f"missing field {missing!r}" in reason(**{missing: None})
    assert f"missing field {missing!r}" in reason(**{missing: ""})


def test_missing_value_where_the_meter_needs_one() -> None:
    assert reason(value=None) == "missing field 'value' (meter 'payments' aggregates by sum)"
    assert "aggregates by latest" in reason(meter="seats", value=None)


def test_fields_of_the_wrong_type() -> None:
    assert reason(id=17) == "'id' must be a string (got a number)"
    assert reason(customer=["acme"]) == "'customer' must be a string (got a list)"
    assert reason(timestamp=1710072000) == "'timestamp' must be an ISO-8601 string (got a number)"


def test_unknown_fields() -> None:
    assert reason(amount="3") == ("unknown field 'amount' (fields: id, customer, meter, timestamp, value, properties)")


def test_timestamp_without_an_offset() -> None:
    assert reason(timestamp="2024-03-10T12:00:00") == (
        "timestamp '2024-03-10T12:00:00' has no UTC offset (end it with Z or +hh:mm)"
    )
    assert "has no UTC offset" in reason(timestamp="2024-03-10")


def test_unparsable_timestamp() -> None:
    assert reason(timestamp="10/03/2024 12:00") == "timestamp '10/03/2024 12:00' is not an ISO-8601 date and time"


def test_timestamp_too_far_in_the_future() -> None:
    assert reason(timestamp="2024-04-02T12:00:00.000001Z") == (
        "timestamp '2024-04-02T12:00:00.000001Z' is more than 1 day in the future"
    )
    assert "in the future" in reason(timestamp="9999-12-31T00:00:00Z")


@pytest.mark.parametrize(
    "text",
    [
        '{"id": "a", "customer": "acme", "meter": "payments", "timestamp": "2024-03-10T12:00:00Z", "value": 1, "value": 2}',
        '{"id" : "a", "customer":"acme", "meter": "api_calls", "timestamp": "2024-03-10T12:00:00Z", "id" :"a"}',
        '{"id": "a", "customer": {"x": "y"}, "customer": "acme", "meter": "api_calls", "timestamp": "2024-03-10T12:00:00Z"}',
        '{"id": "a\\u0041", "id": "b", "customer": "acme", "meter": "api_calls", "timestamp": "2024-03-10T12:00:00Z"}',
        '{"id": "a", "customer": "acme", "meter": "api_calls", "timestamp": "2024-03-10T12:00:00Z", "properties": {"k": "1", "k": "1"}}',
    ],
)
def test_the_fast_reader_never_vouches_for_a_line_that_repeats_a_key(text: str) -> None:
    fast = parse_json_line(text, strict=False)
    assert type(fast) is dict  # the plain reader kept the last of each key, without a word
    assert not keys_once(text, fast)
    assert repeats_a_key(parse_json_line(text))


def repeats_a_key(record: dict[str, object]) -> bool:
    return type(record) is RepeatedKeys or type(record.get("properties")) is RepeatedKeys


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)


@settings(max_examples=300)
@given(
    extra=st.dictionaries(_TEXT, _TEXT, max_size=3),
    repeat=st.lists(st.sampled_from(["id", "customer", "meter", "timestamp", "value", "properties", "p"]), max_size=2),
    value=st.one_of(st.none(), st.integers(0, 99), st.sampled_from(["1.5", "2"])),
    spacing=st.sampled_from([(", ", ": "), (",", ":"), (" ,", " : ")]),
)
def test_keys_once_is_true_only_for_a_line_that_names_each_key_once(extra, repeat, value, spacing) -> None:
    """Whatever the spacing, escapes and strings in the properties, a line for which ``keys_once`` holds reads
    the same strictly (no key repeated); one that repeats a key is never vouched for."""
    comma, colon = spacing
    pairs = [("id", "e1"), ("customer", "acme"), ("meter", "payments"), ("timestamp", "2024-03-10T12:00:00Z")]
    pairs += [("value", value if value is not None else 1)]
    if extra:
        pairs.append(("properties", extra))
    for key in repeat:  # the same key again, with another value of its kind
        if key == "p" and extra:
            pairs[-1] = ("properties", {**extra, "__raw__": True})
        elif key != "p":
            pairs.append((key, dict(pairs)[key] if key != "properties" else {"a": "b"}))

    def dump(item: object) -> str:
        if isinstance(item, dict) and item.pop("__raw__", False):
            items = [*item.items(), next(iter(item.items()))]  # the first property again
            return "{" + comma.join(f"{json.dumps(k)}{colon}{json.dumps(v)}" for k, v in items) + "}"
        if isinstance(item, dict):
            return "{" + comma.join(f"{json.dumps(k)}{colon}{json.dumps(v)}" for k, v in item.items()) + "}"
        return json.dumps(item)

    text = "{" + comma.join(f"{json.dumps(k)}{colon}{dump(v)}" for k, v in pairs) + "}"
    strict = parse_json_line(text)
    fast = parse_json_line(text, strict=False)
    try:
        parse_event(fast, METERS, CUSTOMERS, now=NOW)
    except EventError:
        return  # keys_once speaks of valid events only
    if repeats_a_key(strict):
        assert not keys_once(text, fast)
    elif "\\" not in text:
        assert keys_once(text, fast)


def test_a_timestamp_before_1970_is_out_of_range() -> None:
    assert reason(timestamp="0001-01-01T00:00:00Z") == (
        "timestamp '0001-01-01T00:00:00Z' is out of range (before 1970-01-01T00:00:00+00:00)"
    )
    assert "out of range" in reason(timestamp="1969-12-31T23:59:59.999999Z")
    assert valid(timestamp="1970-01-01T00:00:00Z").occurred_at == 0


def test_a_timestamp_older_than_the_customers_late_usage_window_is_rejected() -> None:
    kiwi = dt.datetime(2023, 4, 1, tzinfo=dt.timezone(dt.timedelta(hours=13)))  # 2023-03-31T11:00:00Z
    earliest = {"acme": dt.datetime(2023, 4, 1, tzinfo=dt.UTC), "globex": kiwi}

    def check(customer: str, timestamp: str) -> UsageEvent:
        return parse_event(event(customer=customer, timestamp=timestamp), METERS, CUSTOMERS, now=NOW, earliest=earliest)

    assert check("acme", "2023-04-01T00:00:00Z").occurred_at == to_epoch_us(earliest["acme"])
    with pytest.raises(EventError) as error:
        check("acme", "2023-03-31T23:59:59.999999Z")
    assert str(error.value) == (
        "timestamp '2023-03-31T23:59:59.999999Z' is older than the late-usage window of customer 'acme', which "
        "begins at 2023-04-01T00:00:00+00:00: usage that old is never billed"
    )
    # each customer's own window, in its own timezone
    assert check("globex", "2023-03-31T11:00:00Z").customer == "globex"
    with pytest.raises(EventError, match="window of customer 'globex', which begins at 2023-04-01T00:00:00\\+13:00"):
        check("globex", "2023-03-31T10:59:59Z")
    # year 1: out of range, whatever the window
    with pytest.raises(EventError, match=r"^timestamp '0001-01-01T00:00:00Z' is out of range"):
        check("acme", "0001-01-01T00:00:00Z")


def test_non_numeric_values() -> None:
    assert reason(value="12,5") == "value '12,5' is not a number in plain decimal notation (like 1500 or -2.5)"
    assert reason(value=True) == "value must be a number (got a boolean)"
    assert reason(value={"amount": 1}) == "value must be a number (got an object)"
    assert reason(value=Decimal("NaN")) == "value NaN is not a finite number"
    assert reason(value=Decimal("Infinity")) == "value Infinity is not a finite number"


@pytest.mark.parametrize(
    "written",
    [
        "1_000",  # Decimal("1_000") is 1000
        "\u0665",  # an Arabic-Indic five: Decimal() reads it as 5
        "\uff15",  # a fullwidth five
        " 5 ",
        "5\n",
        "+5",
        "1e3",  # exponents are for JSON numbers, not for strings
        ".5",
        "5.",
        "NaN",
        "Infinity",
        "0x10",
        "",
    ],
)
def test_a_value_string_is_plain_ascii_decimal_notation(written: str) -> None:
    if written == "":
        assert reason(value=written) == "missing field 'value' (meter 'payments' aggregates by sum)"
        return
    assert reason(value=written) == f"value {written!r} is not a number in plain decimal notation (like 1500 or -2.5)"


def test_an_object_that_repeats_a_key_is_rejected_not_last_one_wins() -> None:
    line = '{"id": "a", "customer": "acme", "meter": "payments", "timestamp": "2024-03-10T12:00:00Z", "value": 1, "id": "b"}'
    record = parse_json_line(line)
    assert record["id"] == "b"  # what a plain dict would have kept, silently
    with pytest.raises(EventError, match=r"^duplicate key 'id'$") as error:
        parse_event(record, METERS, CUSTOMERS, now=NOW)
    assert error.value.event_id is None
    props = parse_json_line(
        '{"id": "a", "customer": "acme", "meter": "api_calls", "timestamp": "2024-03-10T12:00:00Z",'
        ' "properties": {"region": "eu", "region": "us", "tier": "1", "tier": "2"}}'
    )
    with pytest.raises(EventError) as error:
        parse_event(props, METERS, CUSTOMERS, now=NOW)
    assert str(error.value) == "duplicate key 'region' in 'properties'; duplicate key 'tier' in 'properties'"
    # the same keys once each: fine
    assert parse_event(parse_json_line(line.replace(', "id": "b"', "")), METERS, CUSTOMERS, now=NOW).event_id == "a"


def test_values_beyond_the_scale_or_the_range() -> None:
    assert reason(value="0.0000001") == "value 0.0000001 has more than 6 decimal places"
    assert reason(value="1." + "0" * 70 + "1") == f"value 1.{'0' * 70}1 has more than 6 decimal places"
    assert reason(value=Decimal("1E+12")) == "value 1E+12 is out of range (|value| < 10^12)"
    assert reason(value="1000000000000") == "value 1000000000000 is out of range (|value| < 10^12)"
    assert reason(value=10**12) == f"value {10**12} is out of range (|value| < 10^12)"


@pytest.mark.parametrize("meter", ["payments", "peak", "seats"])
def test_negative_values_where_the_aggregation_cannot_take_them(meter: str) -> None:
    assert reason(meter=meter, value="-1") == (
        f"negative value -1: meter {meter!r} aggregates by "
        f"{next(m.aggregation for m in METERS if m.code == meter)} "
        "(only weighted_sum meters take negative values, as decrements)"
    )


def test_unique_count_without_its_property() -> None:
    expected = "missing property 'user_id' (meter 'active_users' counts its unique values)"
    assert reason(meter="active_users", value=None) == expected
    assert reason(meter="active_users", value=None, properties={"user": "u1"}) == expected
    assert reason(meter="active_users", value=None, properties={"user_id": ""}) == expected


def test_properties_must_be_a_flat_map_of_strings() -> None:
    assert reason(properties=["eu"]) == "'properties' must be an object of strings (got a list)"
    assert reason(properties={"region": {"name": "eu"}}) == "property 'region' must be a string (got an object)"
    assert reason(properties={"size": 3}) == "property 'size' must be a string (got a number)"


def test_text_the_database_cannot_store() -> None:
    assert reason(id="a\x00b") == "'id' holds a NUL character or an invalid unicode escape"
    assert reason(id="\ud800") == "'id' holds a NUL character or an invalid unicode escape"
    assert reason(id="x" * 256) == "'id' is longer than 255 characters"
    assert reason(properties={"note": "\udfff"}) == "'properties' hold an invalid unicode escape"
    # were stored, and PostgreSQL then refused every plan's query that reads the properties as jsonb
    assert reason(properties={"country": "U\x00S"}) == "'properties' hold a NUL character"
    assert reason(properties={"no\x00te": "x"}) == "'properties' hold a NUL character"
    assert valid(properties={"note": "\\u0000"}).properties == '{"note":"\\\\u0000"}'  # a backslash and u0000: text


def test_every_problem_of_an_event_is_reported_at_once() -> None:
    assert reason(customer="initech", timestamp="2024-03-10", value="x") == (
        "unknown customer 'initech'; timestamp '2024-03-10' has no UTC offset (end it with Z or +hh:mm); "
        "value 'x' is not a number in plain decimal notation (like 1500 or -2.5)"
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "not JSON: Expecting property name enclosed in double quotes (column 2)"),
        ('{"id": "a"} trailing', "not JSON: Extra data (column 13)"),
        ("[1, 2]", "not a JSON object (got a list)"),
        ('"text"', "not a JSON object (got a string)"),
        ("", "not JSON: Expecting value (column 1)"),
    ],
)
def test_lines_that_are_not_json_objects(line: str, expected: str) -> None:
    with pytest.raises(EventError) as error:
        parse_json_line(line)
    assert str(error.value) == expected


def test_meter_specs_check_themselves() -> None:
    with pytest.raises(ValueError, match="unknown aggregation 'average'"):
        MeterSpec("x", "average")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unique_property"):
        MeterSpec("users", "unique_count")
    with pytest.raises(ValueError, match="unique_property"):
        MeterSpec("calls", "count", unique_property="user_id")


# -- a batch validated a column at a time ---------------------------------------------------------------------

_FIELD_VALUES = {
    "id": st.sampled_from(["e1", "e2", "e3", "é4", "", "x" * 256, "a\x00b", 7, None]),
    "customer": st.sampled_from(["acme", "globex", "initech", "", 3, None]),
    "meter": st.sampled_from(["api_calls", "payments", "peak", "storage_gb", "active_users", "nope", 1]),
    "timestamp": st.sampled_from([
        "2024-03-10T12:00:00Z", "2024-03-10T12:00:00.123456+05:30", "2024-03-10T12:00:00", "2024-04-03T12:00:00Z",
        "1969-12-31T23:59:59Z", "2023-03-31T23:59:59Z", "yesterday", "", 5,
    ]),
    "value": st.one_of(
        st.none(), st.integers(-3, 10**12 + 1), st.booleans(),
        st.sampled_from(["12.5", "-1", "1e3", "", "0.0000001", Decimal("2.50"), Decimal("NaN"), [1]]),
    ),
    "properties": st.one_of(
        st.none(), st.just({}), st.dictionaries(st.sampled_from(["user_id", "region", "é"]),
                                                st.one_of(st.sampled_from(["u1", "eu", "", "a\x00"]), st.integers()),
                                                max_size=2),
        st.sampled_from([[], "p"]),
    ),
    "extra": st.integers(),
}


@st.composite
def _records(draw: st.DrawFn) -> object:
    """Mostly valid events (the meters' usual values), now and then with a field of any kind, or no object."""
    if draw(st.integers(0, 30)) == 0:
        return draw(st.sampled_from([None, [], "event", RepeatedKeys([("id", "a"), ("id", "b")])]))
    meter = draw(st.sampled_from(["api_calls", "payments", "peak", "storage_gb", "active_users"]))
    record: dict[str, object] = {
        "id": f"u{draw(st.integers(0, 30))}",
        "customer": draw(st.sampled_from(["acme", "globex"])),
        "meter": meter,
        "timestamp": draw(st.sampled_from(["2024-03-10T12:00:00Z", "2024-03-31T23:30:00.25-02:00"])),
    }
    if meter != "api_calls" or draw(st.booleans()):
        record["value"] = draw(st.sampled_from([3, 0, "12.5", Decimal("0.000001"), 10**12 - 1]))
    if meter == "active_users" or draw(st.booleans()):
        record["properties"] = {"user_id": draw(st.sampled_from(["u1", "u2"]))}
    for name, values in _FIELD_VALUES.items():
        if draw(st.integers(0, 12)) == 0:
            record[name] = draw(values)
    if draw(st.integers(0, 12)) == 0:
        del record[draw(st.sampled_from(sorted(record)))]
    return record


@settings(max_examples=300, deadline=None)
@given(records=st.lists(_records(), min_size=1, max_size=6), window=st.booleans())
def test_a_batch_validated_a_column_at_a_time_is_validated_as_event_by_event(records: list[object], window: bool) -> None:
    """``validate_all`` gives exactly what ``validate`` gives each event, or None when one is not a valid event or
    an id is given twice."""
    earliest = {"acme": dt.datetime(2024, 3, 1, tzinfo=dt.UTC)} if window else None
    validator = EventValidator(METERS, CUSTOMERS, NOW, earliest)
    one_by_one: list[tuple[object, ...]] | None = []
    for record in records:
        try:
            assert isinstance(record, dict)
            one_by_one.append(tuple(validator.validate(record)))  # type: ignore[union-attr]
        except (EventError, AssertionError):
            one_by_one = None
            break
    if one_by_one is not None and len({event[0] for event in one_by_one}) < len(one_by_one):
        one_by_one = None
    together = EventValidator(METERS, CUSTOMERS, NOW, earliest).validate_all(records)
    if together is None:  # may decline a valid batch (another unique property, a window), never take a bad one
        return
    assert together == one_by_one


def test_a_usual_batch_is_validated_a_column_at_a_time() -> None:
    """The usual batches are taken by ``validate_all``: every meter, values as numbers and strings, properties."""
    records = [
        event(id="a", meter="api_calls", value=None, properties={"region": "eu"}),
        event(id="b", customer="globex", meter="payments", value="12.5"),
        event(id="c", meter="peak", value=Decimal("3.25"), timestamp="2024-03-10T13:00:00.5+01:00"),
        event(id="d", meter="storage_gb", value=-2),
        event(id="e", meter="payments", value=7, properties={}),
    ]
    validator = EventValidator(METERS, CUSTOMERS, NOW)
    assert validator.validate_all(records) == [tuple(validator.validate(record)) for record in records]
    stored = validator.validate_all(records)
    assert stored is not None
    assert stored[1][4] == 12_500_000 and stored[2][3] == to_epoch_us(dt.datetime(2024, 3, 10, 12, 0, 0, 500000,
                                                                                   tzinfo=dt.UTC))
    assert stored[0][6] == '{"region":"eu"}' and stored[3][4] == -2_000_000
    assert EventValidator(METERS, CUSTOMERS, NOW).validate_all([*records, event(id="a")]) is None  # an id twice
    assert EventValidator(METERS, CUSTOMERS, NOW).validate_all([*records, event(id="f", value="1,5")]) is None


_LINES = [
    '{"id": "{id}", "customer": "acme", "meter": "api_calls", "timestamp": "2024-03-10T12:00:00Z"}',
    '{"id":"{id}","customer":"globex","meter":"payments","timestamp":"2024-03-10T12:00:00+02:00","value":12.5}',
    '{"id": "{id}", "customer": "acme", "meter": "payments", "timestamp": "2024-03-10T12:00:00Z", "value": "7"}',
    '{"id": "{id}", "customer": "acme", "meter": "peak", "timestamp": "2024-03-10T12:00:00Z", "value": 1e3}',
    '{"id": "{id}", "customer": "acme", "meter": "api_calls", "timestamp": "2024-03-10T12:00:00Z", '
    '"properties": {"region": "eu"}}',
    '  {"id": "{id}", "customer": "acme", "meter": "storage_gb", "timestamp": "2024-03-10T12:00:00Z", "value": -2}  ',
    # repeated keys, a backslash, a bad number, NaN, not an object, blank, trailing garbage, a float property
    '{"id": "{id}", "id": "x{id}", "customer": "acme", "meter": "api_calls", "timestamp": "2024-03-10T12:00:00Z"}',
    '{"id": "{id}", "customer": "ac\\u006de", "meter": "api_calls", "timestamp": "2024-03-10T12:00:00Z"}',
    '{"id": "{id}", "customer": "acme", "meter": "payments", "timestamp": "2024-03-10T12:00:00Z", "value": 1.0000001}',
    '{"id": "{id}", "customer": "acme", "meter": "payments", "timestamp": "2024-03-10T12:00:00Z", "value": NaN}',
    '[1, 2]',
    '',
    '{"id": "{id}", "customer": "acme", "meter": "api_calls", "timestamp": "2024-03-10T12:00:00Z"} x',
    '{"id": "{id}", "customer": "acme", "meter": "api_calls", "timestamp": "2024-03-10T12:00:00Z", '
    '"properties": {"region": 1.5}}',
]
_USUAL = 6  # the first six are valid events
_LINE = st.sampled_from(_LINES[:_USUAL] * 25 + _LINES[_USUAL:])  # now and then an unusual line


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.tuples(_LINE, st.sampled_from([False] * 30 + [True])), min_size=16, max_size=24))
def test_a_usual_stretch_of_json_lines_is_read_as_line_by_line(lines: list[tuple[str, bool]]) -> None:
    """A stretch of JSON Lines read a column at a time (orjson, ``validate_all``) gives the events that reading
    and validating it line by line gives, or is left to that reading (anything unusual: a repeated key, an id
    twice, a blank line, a backslash, an invalid line)."""
    from meters.ingest.read import _usual_block

    # ids: one per line, but now and then the id of the line before
    texts = [template.replace("{id}", f"e{index - (again and index > 0)}") for index, (template, again) in enumerate(lines)]
    block = [f"{text}\n".encode() for text in texts]
    chunk = _usual_block(EventValidator(METERS, CUSTOMERS, NOW), 7, block, keep_raw=True)
    if chunk is None:
        return
    validator = EventValidator(METERS, CUSTOMERS, NOW)
    one_by_one = []
    for text in texts:
        record = parse_json_line(text)  # strictly: a repeated key is an error
        assert not isinstance(record, RepeatedKeys)
        one_by_one.append(tuple(validator.validate(record)))
    assert len({event[0] for event in one_by_one}) == len(one_by_one)
    assert chunk.events == one_by_one
    assert chunk.lines == list(range(7, 7 + len(texts))) and chunk.raws == texts and chunk.last_line == 6 + len(texts)


def test_a_usual_stretch_is_read_a_column_at_a_time() -> None:
    """The usual stretch is taken (a fraction read again as a Decimal), and one repeated key leaves it to the
    line-by-line reading, which rejects that line."""
    from meters.ingest.read import _usual_block, jsonl_block

    texts = [
        f'{{"id": "e{n}", "customer": "acme", "meter": "payments", "timestamp": "2024-03-10T12:00:00Z", '
        f'"value": {n}.25}}'
        for n in range(20)
    ]
    chunk = _usual_block(EventValidator(METERS, CUSTOMERS, NOW), 1, [t.encode() for t in texts], keep_raw=False)
    assert chunk is not None and chunk.raws is None
    assert [event[4] for event in chunk.events[:3]] == [250_000, 1_250_000, 2_250_000]
    texts[5] = texts[5].replace('"customer": "acme"', '"customer": "acme", "customer": "globex"')
    block = [t.encode() for t in texts]
    assert _usual_block(EventValidator(METERS, CUSTOMERS, NOW), 1, block, keep_raw=False) is None
    read = jsonl_block(EventValidator(METERS, CUSTOMERS, NOW), 1, block, keep_raw=False)
    assert len(read.events) == 19 and [r.line for r in read.rejections] == [6]
    assert "duplicate key 'customer'" in read.rejections[0].reason


def test_a_stretch_with_a_line_nested_deeper_than_the_exact_reader_reads_is_read_line_by_line() -> None:
    """orjson reads 1,024 levels of nesting, the reader of exact decimals fewer: a line with a fraction, read again
    by that reader, that nests deeper leaves the stretch to the line-by-line reading, which rejects that line."""
    from meters.ingest.read import _usual_block, jsonl_block

    texts = [
        f'{{"id": "e{n}", "customer": "acme", "meter": "api_calls", "timestamp": "2024-03-10T12:00:00Z"}}'
        for n in range(20)
    ]
    deep = "[" * 1010 + "]" * 1010
    texts[3] = (
        '{"id": "deep", "customer": "acme", "meter": "payments", "timestamp": "2024-03-10T12:00:00Z", '
        f'"value": 1.5, "properties": {{"a": {deep}}}}}'
    )
    block = [t.encode() for t in texts]
    assert _usual_block(EventValidator(METERS, CUSTOMERS, NOW), 1, block, keep_raw=False) is None
    read = jsonl_block(EventValidator(METERS, CUSTOMERS, NOW), 1, block, keep_raw=False)
    assert len(read.events) == 19 and [r.line for r in read.rejections] == [4]


def test_a_map_whose_value_orjson_writes_as_text_is_not_taken_for_the_text() -> None:
    """A Python caller's property that is a date (orjson writes it as a string) is invalid, whatever valid map of
    the same text follows it in the batch."""
    validator = EventValidator(METERS, CUSTOMERS, NOW)
    dated = event(id="d0", properties={"region": dt.datetime(2024, 1, 1)})
    records = [dated] + [event(id=f"d{i}", properties={"region": "2024-01-01T00:00:00"}) for i in range(1, 20)]
    with pytest.raises(EventError, match="property 'region' must be a string"):
        validator.validate(dated)
    assert validator.validate_all(records) is None
