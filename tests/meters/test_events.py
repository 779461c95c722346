"""One event read and validated: every rejection reason, exact values, instants, and what "same content" means."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from meters import EventError, MeterSpec, UsageEvent, from_epoch_us, from_scaled, parse_event, to_epoch_us
from meters.events import parse_json_line

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


@pytest.mark.parametrize(
    ("written", "scaled"),
    [
        ("0.1", 100_000),
        ("0.000001", 1),
        ("1.500000000", 1_500_000),  # trailing zeros beyond the scale are fine
        ("1e3", 1_000_000_000),
        (Decimal("2.25"), 2_250_000),  # a JSON number with a fraction
        (7, 7_000_000),
        ("999999999999.999999", 999_999_999_999_999_999),
        ("-0", 0),
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


def test_non_numeric_values() -> None:
    assert reason(value="12,5") == "value '12,5' is not a number"
    assert reason(value=True) == "value must be a number (got a boolean)"
    assert reason(value={"amount": 1}) == "value must be a number (got an object)"
    assert reason(value="NaN") == "value NaN is not a finite number"
    assert reason(value=Decimal("Infinity")) == "value Infinity is not a finite number"


def test_values_beyond_the_scale_or_the_range() -> None:
    assert reason(value="0.0000001") == "value 0.0000001 has more than 6 decimal places"
    assert reason(value="1." + "0" * 70 + "1") == f"value 1.{'0' * 70}1 has more than 6 decimal places"
    assert reason(value="1e12") == "value 1e12 is out of range (|value| < 10^12)"
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


def test_every_problem_of_an_event_is_reported_at_once() -> None:
    assert reason(customer="initech", timestamp="2024-03-10", value="x") == (
        "unknown customer 'initech'; timestamp '2024-03-10' has no UTC offset (end it with Z or +hh:mm); "
        "value 'x' is not a number"
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
