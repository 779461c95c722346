"""Usage events: what the meters need to know, and how one event is read and validated.

An event is ``{"id", "customer", "meter", "timestamp", "value", "properties"}``:

- ``id``: the idempotency key, a non-empty string (at most 255 characters), unique across the installation;
- ``customer``: a known customer's external id; ``meter``: a known meter's code;
- ``timestamp``: ISO-8601 with a UTC offset (``2024-03-01T12:00:00Z``, ``...+01:00``), not before 1970, not
  more than a day ahead of the time of ingestion and, when the caller gives each customer's late-usage window
  (``earliest``), not before the start of that window: usage older than it would never be billed;
- ``value``: a decimal number with at most 6 fractional digits and a magnitude below 10^12: a JSON number
  (exponents allowed: ``1.5e3``) or a string of plain ASCII decimal notation (``"1500"``, ``"-2.5"``; no
  exponent, sign ``+``, digit separator, surrounding space or non-ASCII digit); optional (and ignored by the
  aggregation) for ``count`` and ``unique_count`` meters, required otherwise; negative only for
  ``weighted_sum`` meters, where it is a decrement;
- ``properties``: optional, a flat map of strings; a ``unique_count`` meter needs its ``unique_property`` there.

A JSON object that names a key twice (``{"id": "a", "id": "b"}``) is an error, not "the last one wins": the
JSON reader here (:data:`JSON_DECODER`) makes it a :class:`RepeatedKeys`, which validation rejects.

A valid event becomes a :class:`UsageEvent`, the row that is stored. A bad one raises :class:`EventError`,
whose message is the reason given back to the caller (every problem of the event, joined by ``"; "``).

Two events with the same id have the same *content* when their customer, meter, instant (whatever the offset it
was written with), value (``1.50`` is ``1.5``) and properties (in any key order) are equal; the content hash
tells the two cases of a repeated id apart: a duplicate (same content) or a conflict (different content).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import struct
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from decimal import Context, Decimal, Inexact, InvalidOperation
from functools import partial
from itertools import chain, repeat
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

import orjson

from meters.errors import EventError

if TYPE_CHECKING:
    from meters.fees import FeeTerms

__all__ = [
    "AGGREGATIONS",
    "EVENT_FIELDS",
    "JSON_DECODER",
    "MAX_FUTURE",
    "MIN_TIMESTAMP",
    "VALUE_DIGITS",
    "VALUE_SCALE",
    "Aggregation",
    "EventValidator",
    "MeterSpec",
    "RepeatedKeys",
    "UsageEvent",
    "from_epoch_us",
    "from_scaled",
    "keys_once",
    "meters_by_code",
    "parse_event",
    "parse_json_line",
    "to_epoch_us",
]

Aggregation = Literal["count", "sum", "max", "unique_count", "latest", "weighted_sum"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)

VALUE_DIGITS = 6
"""Fractional digits a value may carry; values are stored as integers × ``VALUE_SCALE``."""
VALUE_SCALE: int = 10**VALUE_DIGITS
MAX_VALUE_DIGITS = 12
"""A value's magnitude is below 10^12, so a scaled value stays below 10^18 (int64 holds 9.2 × 10^18)."""
MAX_FUTURE = dt.timedelta(days=1)
"""How far ahead of the time of ingestion a timestamp may be."""
MAX_TEXT = 255
_VALUE_OPTIONAL = ("count", "unique_count")
EVENT_FIELDS = ("id", "customer", "meter", "timestamp", "value", "properties")
_FIELDS = frozenset(EVENT_FIELDS)
_TEXTS_CACHED = 4096
_MAX_INT_VALUE = 10**MAX_VALUE_DIGITS

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MIN_TIMESTAMP = EPOCH
"""The earliest timestamp an event may have, whatever window the caller gives (year 1 is a bug, not usage)."""
_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
"""A value given as a string: ASCII digits, an optional minus sign and decimal point, nothing else."""
_MICROSECOND = dt.timedelta(microseconds=1)
_EXACT = Context(prec=60, traps=[Inexact, InvalidOperation])


def to_epoch_us(instant: dt.datetime) -> int:
    """Microseconds since 1970-01-01T00:00:00Z of an aware datetime (the unit of ``occurred_at``)."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"naive datetime {instant.isoformat()}: give a timezone-aware instant")
    return (instant - EPOCH) // _MICROSECOND


def from_epoch_us(microseconds: int) -> dt.datetime:
    """The UTC datetime of microseconds since the epoch."""
    return EPOCH + dt.timedelta(microseconds=microseconds)


def from_scaled(scaled: int) -> Decimal:
    """The Decimal of a fixed-point integer (× ``VALUE_SCALE``), without trailing zeros: 1500000 → 1.5."""
    if scaled % VALUE_SCALE == 0:
        return Decimal(scaled // VALUE_SCALE)
    return Decimal(scaled).scaleb(-VALUE_DIGITS).normalize()


@dataclass(frozen=True, slots=True)
class MeterSpec:
    """What the meters package must know about one meter (the catalog's meters, handed in by the orchestrator).

    Attributes:
      code: the meter's code; events name it.
      aggregation: how a period's events become one quantity (one of ``AGGREGATIONS``).
      unique_property: for ``unique_count``, the event property whose distinct values are counted.
      keep_event_values: also hand back each event's value in time order (the ``percentage`` charge model
        prices every transaction on its own).
      per_event_fees: the terms of the fees per event to sum for each window in the database (the
        ``percentage`` charges of the meter): ``MeterAggregate.fees``, without handing back each event's value.
    """

    code: str
    aggregation: Aggregation
    unique_property: str | None = None
    keep_event_values: bool = False
    per_event_fees: tuple[FeeTerms, ...] = ()

    def __post_init__(self) -> None:
        aggregation = str(getattr(self.aggregation, "value", self.aggregation))
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"meter {self.code!r}: unknown aggregation {aggregation!r} ({', '.join(AGGREGATIONS)})")
        object.__setattr__(self, "aggregation", aggregation)
        if (aggregation == "unique_count") != bool(self.unique_property):
            raise ValueError(f"meter {self.code!r}: unique_property is required by, and only by, unique_count")


def meters_by_code(meters: Iterable[MeterSpec] | Mapping[str, MeterSpec]) -> dict[str, MeterSpec]:
    """Meters given as specs or as a mapping code → spec, as a mapping code → spec."""
    specs = meters.values() if isinstance(meters, Mapping) else meters
    return {spec.code: spec for spec in specs}


class UsageEvent(NamedTuple):
    """One valid usage event, in the order of the stored columns (see ``meters.tables``).

    Attributes:
      event_id: the idempotency key.
      customer: the customer's external id.
      meter: the meter's code.
      occurred_at: when it happened, microseconds since the epoch (UTC).
      value: the value × ``VALUE_SCALE``, or None when the event has none.
      unique_value: the value of the meter's unique property (``unique_count`` meters), else None.
      properties: the property map as canonical JSON (sorted keys), None when empty.
      content_hash: a signed 64-bit digest of the content; tells a duplicate from a conflict.
    """

    event_id: str
    customer: str
    meter: str
    occurred_at: int
    value: int | None
    unique_value: str | None
    properties: str | None
    content_hash: int

    @property
    def timestamp(self) -> dt.datetime:
        return from_epoch_us(self.occurred_at)

    @property
    def decimal_value(self) -> Decimal | None:
        return None if self.value is None else from_scaled(self.value)


def content_hash(customer: str, meter: str, occurred_at: int, value: int | None, properties: str | None) -> int:
    """The signed 64-bit BLAKE2b digest of an event's content."""
    text = f"{customer}\x1f{meter}\x1f{occurred_at}\x1f{value}\x1f{properties or ''}"
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class RepeatedKeys(dict[str, Any]):
    """A JSON object that names one or more keys more than once, as :data:`JSON_DECODER` reads it.

    It holds the last value of each key (what a plain dict would silently keep) and ``repeated`` names the keys
    given more than once, in order; validation rejects an event, or a ``properties`` object, of this type.
    """

    __slots__ = ("repeated",)

    def __init__(self, pairs: list[tuple[str, Any]]):
        super().__init__(pairs)
        seen: set[str] = set()
        repeated: list[str] = []
        for key, _ in pairs:
            if key in seen and key not in repeated:
                repeated.append(key)
            seen.add(key)
        self.repeated = tuple(repeated)


def _object_from_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    return record if len(record) == len(pairs) else RepeatedKeys(pairs)


JSON_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=Decimal, object_pairs_hook=_object_from_pairs)
"""The JSON reader of events (files and API bodies): numbers with a fraction or an exponent as Decimal (never
float), and an object that repeats a key as a :class:`RepeatedKeys`."""
_FAST_JSON = json.JSONDecoder(parse_float=Decimal, parse_constant=Decimal)  # repeated keys: the last one wins
_quote = json.encoder.encode_basestring  # JSON string literal, as json.dumps writes it


def parse_json_line(text: str, *, strict: bool = True) -> dict[str, Any]:
    """One JSON Lines line as a mapping (numbers with a fraction as Decimal, never float; an object that
    repeats a key as a :class:`RepeatedKeys`).

    ``strict=False`` reads faster (a plain dict, built by the JSON module's C code) but keeps the last of
    repeated keys without a word: trust the record only once it is a valid event and :func:`keys_once` says so.
    """
    if text[:1].isspace():
        text = text.lstrip()
    try:
        record, end = (JSON_DECODER if strict else _FAST_JSON).raw_decode(text)
        if end != len(text) and not text[end:].isspace():
            rest = text[end:]
            raise json.JSONDecodeError("Extra data", text, end + len(rest) - len(rest.lstrip()))
    except json.JSONDecodeError as exc:
        raise EventError(f"not JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise EventError("not JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal of more than 4300 digits
        raise EventError(f"not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise EventError(f"not a JSON object (got {_kind(record)})")
    return record


def keys_once(text: str, record: Mapping[str, Any]) -> bool:
    """Whether ``text``, read (not strictly) as ``record``, a valid event, certainly names no key twice.

    In JSON without a backslash, every string is written between two quote characters and no other quote
    character occurs. A valid event's strings are its keys, the id, customer, meter and timestamp, its value if
    written as a string, and its properties' keys and values; a repeated key would be one string more in the
    text than in the record. A line with a backslash is not looked at (False): read it strictly.
    """
    if "\\" in text:
        return False
    properties = record.get("properties")
    strings = len(record) + 4 + (type(record.get("value")) is str) + (2 * len(properties) if properties else 0)
    return text.count('"') == 2 * strings


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _valid_text(text: str) -> bool:
    """Storable text: no NUL character (PostgreSQL refuses it) and no lone surrogate (not UTF-8)."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class EventValidator:
    """Validates events against the known meters and customers, with one clock for the whole batch.

    Made once per batch or file; :meth:`validate` is called once per event and is the hot path of ingestion.
    """

    __slots__ = ("customers", "earliest", "max_occurred_at", "meters", "recent", "texts")

    def __init__(
        self,
        meters: Iterable[MeterSpec] | Mapping[str, MeterSpec],
        known_customers: Collection[str],
        now: dt.datetime,
        earliest: Mapping[str, dt.datetime] | None = None,
    ):
        """``earliest``: the start of each customer's late-usage window (an aware instant; its offset is how a
        rejection shows it); an older event is rejected, since no billing run would ever bill it. None, or a
        customer it does not name: only the fixed bounds apply (1970, a day ahead of ``now``)."""
        self.meters = meters_by_code(meters)
        # customer id → the same string: every event of a customer then holds one string object, which keeps
        # memory down and lets pickle (worker processes) send it once per chunk.
        self.customers = {customer: customer for customer in known_customers}
        # (unique property, *pairs) of a valid property map → its stored text and unique value (_known_properties)
        self.texts: dict[tuple[Any, ...], tuple[str | None, str | None]] = {}
        self.max_occurred_at = to_epoch_us(now + MAX_FUTURE)
        # customer → (window start in µs, the start); an event at or after ``recent`` is inside every window,
        # so the hot path compares one integer and looks nothing up. (Customers of one timezone share a start.)
        in_us: dict[dt.datetime, int] = {}
        self.earliest: dict[str, tuple[int, dt.datetime]] = {}
        for customer, start in (earliest or {}).items():
            start_us = in_us.get(start)
            if start_us is None:
                start_us = in_us[start] = to_epoch_us(start)
            self.earliest[customer] = (start_us, start)
        self.recent = max((start for start, _ in self.earliest.values()), default=0)

    def validate(self, record: Mapping[str, Any]) -> UsageEvent:
        """The stored form of ``record``, or :class:`EventError` with every problem found."""
        problems: list[str] = []
        if type(record) is RepeatedKeys:
            problems += [f"duplicate key {key!r}" for key in record.repeated]
        if not _FIELDS.issuperset(record):
            problems += [
                f"unknown field {key!r} (fields: {', '.join(EVENT_FIELDS)})" for key in record if key not in _FIELDS
            ]
        event_id = record.get("id")
        if type(event_id) is not str or not 0 < len(event_id) <= MAX_TEXT or not _valid_text(event_id):
            problems.append(_text_problem("id", event_id))
            event_id = None
        # A known customer or meter is valid text: only an unknown one needs a closer look.
        given = record.get("customer")
        customer = self.customers.get(given) if type(given) is str else None
        if customer is None:
            problems.append(_text_problem("customer", given) or f"unknown customer {given!r}")
        meter_code = record.get("meter")
        meter = self.meters.get(meter_code) if type(meter_code) is str else None
        if meter is None:
            known = ", ".join(sorted(self.meters)) or "none"
            problems.append(_text_problem("meter", meter_code) or f"unknown meter {meter_code!r} (known: {known})")
        else:
            meter_code = meter.code

        occurred_at = self._timestamp(record.get("timestamp"), problems)
        if occurred_at is not None and occurred_at < self.recent and customer is not None:
            self._window(occurred_at, customer, record.get("timestamp"), problems)
        value = record.get("value")
        if type(value) is int and 0 <= value < _MAX_INT_VALUE:
            value *= VALUE_SCALE
        else:
            value = self._value(value, meter, problems)
        properties = record.get("properties")
        if (properties is None or properties == {}) and (meter is None or not meter.unique_property):
            properties = unique_value = None
        elif type(properties) is dict and meter is not None:
            properties, unique_value = self._known_properties(properties, meter, problems)
        else:
            properties, unique_value = self._properties(properties, meter, problems)

        if problems:
            raise EventError("; ".join(problems))
        return UsageEvent(
            event_id,  # type: ignore[arg-type]
            customer,  # type: ignore[arg-type]
            meter_code,  # type: ignore[arg-type]
            occurred_at,  # type: ignore[arg-type]
            value,
            unique_value,
            properties,
            content_hash(customer, meter_code, occurred_at, value, properties),  # type: ignore[arg-type]
        )

    def validate_all(self, records: list[Any]) -> list[tuple[Any, ...]] | None:
        """The stored forms of ``records`` (as plain tuples, in their order), when each one is a valid event and
        no id is given twice; else None, and :meth:`validate`, event by event, tells each one's fate.

        The usual batch, validated a field at a time across all its events (each check one pass in C over a
        column) instead of an event at a time: the same rules, the same tuples as ``tuple(validate(record))``.
        """
        count = len(records)
        if not count or set(map(type, records)) != {dict}:  # (a RepeatedKeys is no dict here: never taken)
            return None
        if not _FIELDS.issuperset(chain.from_iterable(records)):
            return None
        try:
            ids, given, codes, stamps = zip(*map(_REQUIRED_OF, records), strict=True)
        except KeyError:
            return None
        if not _texts(ids) or len(set(ids)) != count:
            return None
        if set(map(type, given)) != {str} or set(map(type, codes)) != {str}:
            return None
        customers = self.customers
        if not customers.keys() >= set(given):
            return None
        specs = {code: self.meters.get(code) for code in set(codes)}
        if None in specs.values():
            return None
        occurred = self._instants(stamps)
        values = _scaled_all(list(map(dict.get, records, repeat("value"))), codes, specs)  # type: ignore[arg-type]
        described = self._texts_of(list(map(dict.get, records, repeat("properties"))), codes, specs)  # type: ignore[arg-type]
        if occurred is None or values is None or described is None:
            return None
        stored_customers = list(map(customers.__getitem__, given))
        try:
            hashes = _hashes(stored_customers, codes, occurred, values, described[0])
        except UnicodeEncodeError:
            return None
        texts, uniques = described
        return list(zip(ids, stored_customers, codes, occurred, values, uniques, texts, hashes, strict=True))

    def _instants(self, stamps: tuple[Any, ...]) -> list[int] | None:
        """Microseconds since the epoch of every timestamp, when each is valid and inside every window."""
        if set(map(type, stamps)) != {str}:
            return None
        try:
            instants = list(map(_from_iso, stamps))
            if None in set(map(_tzinfo, instants)):
                return None
            occurred = [(instant - EPOCH) // _MICROSECOND for instant in instants]
        except (ValueError, OverflowError):
            return None
        if min(occurred) < max(0, self.recent) or max(occurred) > self.max_occurred_at:
            return None
        return occurred

    def _texts_of(
        self, maps: list[Any], codes: tuple[str, ...], specs: Mapping[str, MeterSpec]
    ) -> tuple[list[str | None], list[str | None]] | None:
        """Every property map's stored text and unique value (as :meth:`validate` makes them), or None if one is
        invalid. Each distinct map is looked at once for each unique property its events' meters count (an event
        without properties is one with ``{}``: the same to :meth:`validate`). A map of text is told by its JSON
        text (orjson's, in C: a bytes object keeps its hash, where a tuple of pairs is hashed again at every
        lookup)."""
        kinds = set(map(type, maps))
        if not kinds <= {dict, type(None)}:
            return None
        if type(None) in kinds:
            maps = [_NO_PROPERTIES if value is None else value for value in maps]
        by_unique = {meter.unique_property: meter for meter in specs.values()}
        # Plain text values only (any other value is never valid; orjson would write a date, a UUID or an enum
        # member as a string too, and tell its map apart from a valid one no more)
        if not set(map(type, chain.from_iterable(map(dict.values, maps)))) <= _PLAIN_TEXT:
            return None
        try:
            dumped = list(map(orjson.dumps, maps))
        except TypeError:  # (a key that is no text)
            return None
        if len(by_unique) > 1:
            unique_of = {code: meter.unique_property for code, meter in specs.items()}
            keys: list[Any] = list(zip(map(unique_of.__getitem__, codes), dumped, strict=True))
        else:
            keys = dumped
        distinct: dict[Any, Any] = dict(zip(keys, maps, strict=True))  # each map's text → that map
        only = next(iter(by_unique.values())) if len(by_unique) == 1 else None
        problems: list[str] = []
        for key, value in distinct.items():
            meter = only if only is not None else by_unique[key[0]]
            distinct[key] = self._known_properties(value, meter, problems)
            if problems:
                return None
        found = list(map(distinct.__getitem__, keys))
        return list(map(_FIRST, found)), list(map(_SECOND, found))

    def _known_properties(
        self, value: dict[str, Any], meter: MeterSpec, problems: list[str]
    ) -> tuple[str | None, str | None]:
        """:meth:`_properties` of a plain object, remembered (up to ``_TEXTS_CACHED`` of them) by its pairs and the
        meter's unique property when valid: a batch or file repeats the same few property maps, and each of them
        is then one string object."""
        try:
            key = (meter.unique_property, *value.items())
            known = self.texts.get(key)
        except TypeError:  # a value that is no string (a list, an object): never valid
            return self._properties(value, meter, problems)
        if known is not None:
            return known
        before = len(problems)
        found = self._properties(value, meter, problems)
        if len(problems) == before and len(self.texts) < _TEXTS_CACHED:
            self.texts[key] = found
        return found

    def _timestamp(self, value: Any, problems: list[str]) -> int | None:
        if value is None or value == "":
            problems.append("missing field 'timestamp'")
            return None
        if not isinstance(value, str):
            problems.append(f"'timestamp' must be an ISO-8601 string (got {_kind(value)})")
            return None
        try:
            instant = dt.datetime.fromisoformat(value)
        except ValueError:
            problems.append(f"timestamp {value!r} is not an ISO-8601 date and time")
            return None
        if instant.tzinfo is None:
            problems.append(f"timestamp {value!r} has no UTC offset (end it with Z or +hh:mm)")
            return None
        try:
            occurred_at = (instant - EPOCH) // _MICROSECOND
        except OverflowError:  # an offset that pushes year 1 or 9999 out of range
            problems.append(f"timestamp {value!r} is out of range")
            return None
        if occurred_at > self.max_occurred_at:
            problems.append(f"timestamp {value!r} is more than 1 day in the future")
            return None
        if occurred_at < 0:
            problems.append(f"timestamp {value!r} is out of range (before {MIN_TIMESTAMP.isoformat()})")
            return None
        return occurred_at

    def _window(self, occurred_at: int, customer: str, value: Any, problems: list[str]) -> None:
        window = self.earliest.get(customer)
        if window is not None and occurred_at < window[0]:
            problems.append(
                f"timestamp {value!r} is older than the late-usage window of customer {customer!r}, which begins "
                f"at {window[1].isoformat()}: usage that old is never billed"
            )

    @staticmethod
    def _value(value: Any, meter: MeterSpec | None, problems: list[str]) -> int | None:
        if value is None or value == "":
            if meter is not None and meter.aggregation not in _VALUE_OPTIONAL:
                problems.append(f"missing field 'value' (meter {meter.code!r} aggregates by {meter.aggregation})")
            return None
        scaled = _scaled(value, problems)
        if scaled is None:
            return None
        if scaled < 0 and meter is not None and meter.aggregation != "weighted_sum":
            problems.append(
                f"negative value {value}: meter {meter.code!r} aggregates by {meter.aggregation} "
                "(only weighted_sum meters take negative values, as decrements)"
            )
            return None
        return scaled

    @staticmethod
    def _properties(value: Any, meter: MeterSpec | None, problems: list[str]) -> tuple[str | None, str | None]:
        unique_property = meter.unique_property if meter is not None else None
        if value is None or value == {}:
            if unique_property:
                problems.append(_missing_property(meter))
            return None, None
        if not isinstance(value, dict):
            problems.append(f"'properties' must be an object of strings (got {_kind(value)})")
            return None, None
        if isinstance(value, RepeatedKeys):
            problems.extend(f"duplicate key {key!r} in 'properties'" for key in value.repeated)
            return None, None
        bad = [key for key, item in value.items() if not isinstance(item, str)]
        if bad:
            problems.extend(f"property {key!r} must be a string (got {_kind(value[key])})" for key in bad)
            return None, None
        if any("\x00" in key or "\x00" in item for key, item in value.items()):  # (_quote writes it as \u0000)
            problems.append("'properties' hold a NUL character")
            return None, None
        text = "{" + ",".join([f"{_quote(key)}:{_quote(item)}" for key, item in sorted(value.items())]) + "}"
        if not _valid_text(text):
            problems.append("'properties' hold an invalid unicode escape")
            return None, None
        unique_value = None
        if unique_property:
            unique_value = value.get(unique_property)
            if not unique_value:
                problems.append(_missing_property(meter))
                return None, None
            if len(unique_value) > MAX_TEXT or "\x00" in unique_value:
                problems.append(f"property {unique_property!r} is longer than {MAX_TEXT} characters or holds a NUL")
                return None, None
        return text, unique_value


_REQUIRED = frozenset(("id", "customer", "meter", "timestamp"))
_REQUIRED_OF = itemgetter("id", "customer", "meter", "timestamp")
_from_iso = dt.datetime.fromisoformat
_tzinfo = attrgetter("tzinfo")
_blake2b_64 = partial(hashlib.blake2b, digest_size=8)
_digest = hashlib.blake2b.digest
_NO_PROPERTIES: dict[str, Any] = {}
_PLAIN_TEXT = frozenset({str})
_FIRST = itemgetter(0)
_SECOND = itemgetter(1)


def _texts(values: tuple[Any, ...]) -> bool:
    """Whether every one of ``values`` is valid text of 1 to ``MAX_TEXT`` characters (as ``_text_problem`` says)."""
    if set(map(type, values)) != {str}:
        return False
    lengths = list(map(len, values))
    return min(lengths) > 0 and max(lengths) <= MAX_TEXT and _valid_text("".join(values))


def _scaled_all(values: list[Any], codes: tuple[str, ...], specs: Mapping[str, MeterSpec]) -> list[int | None] | None:
    """Every value scaled (as :meth:`EventValidator.validate` scales it), or None if one is invalid."""
    kinds = set(map(type, values))
    if kinds == {int} and min(values) >= 0 and max(values) < _MAX_INT_VALUE:
        return [value * VALUE_SCALE for value in values]
    if kinds == {type(None)} and all(spec.aggregation in _VALUE_OPTIONAL for spec in specs.values()):
        return values
    problems: list[str] = []
    scaled: list[int | None] = []
    for value, code in zip(values, codes, strict=True):
        if type(value) is int and 0 <= value < _MAX_INT_VALUE:
            scaled.append(value * VALUE_SCALE)
            continue
        scaled.append(EventValidator._value(value, specs[code], problems))
        if problems:
            return None
    return scaled


def _hashes(
    customers: list[str],
    meters: tuple[str, ...],
    occurred: list[int],
    values: list[int | None],
    properties: list[str | None],
) -> tuple[int, ...]:
    """:func:`content_hash` of every event, from its columns (the digests made in C, one pass each)."""
    texts = [
        f"{customer}\x1f{meter}\x1f{at}\x1f{value}\x1f{text or ''}"
        for customer, meter, at, value, text in zip(customers, meters, occurred, values, properties, strict=True)
    ]
    # valid text (checked) holds no lone surrogate: plain UTF-8 is content_hash's "surrogatepass" encoding
    digests = b"".join(map(_digest, map(_blake2b_64, map(str.encode, texts))))
    return struct.unpack(f">{len(texts)}q", digests)


def _text_problem(key: str, value: Any) -> str:
    """What is wrong with a text field, or "" when it is a valid string."""
    if value is None or value == "":
        return f"missing field {key!r}"
    if not isinstance(value, str):
        return f"{key!r} must be a string (got {_kind(value)})"
    if len(value) > MAX_TEXT:
        return f"{key!r} is longer than {MAX_TEXT} characters"
    if not _valid_text(value):
        return f"{key!r} holds a NUL character or an invalid unicode escape"
    return ""


def _missing_property(meter: MeterSpec | None) -> str:
    assert meter is not None
    return f"missing property {meter.unique_property!r} (meter {meter.code!r} counts its unique values)"


def _scaled(value: Any, problems: list[str]) -> int | None:
    """A value as a fixed-point integer × ``VALUE_SCALE``, exactly, or None and a problem."""
    if isinstance(value, bool):
        problems.append(f"value must be a number (got {_kind(value)})")
        return None
    if isinstance(value, int):
        if abs(value) >= 10**MAX_VALUE_DIGITS:
            problems.append(f"value {value} is out of range (|value| < 10^{MAX_VALUE_DIGITS})")
            return None
        return value * VALUE_SCALE
    if isinstance(value, str):
        # Decimal() alone would take "1_000", " 5 ", "٥" (an Arabic-Indic five), "1e3" and "Infinity"
        if _PLAIN_DECIMAL.fullmatch(value) is None:
            problems.append(f"value {value!r} is not a number in plain decimal notation (like 1500 or -2.5)")
            return None
        text = value
        number = Decimal(value)
    elif isinstance(value, Decimal):
        text, number = str(value), value
    else:  # a float never comes out of the JSON reader; lists, objects
        problems.append(f"value must be a number (got {_kind(value)})")
        return None
    if not number.is_finite():
        problems.append(f"value {text} is not a finite number")
        return None
    if number and number.adjusted() >= MAX_VALUE_DIGITS:
        problems.append(f"value {text} is out of range (|value| < 10^{MAX_VALUE_DIGITS})")
        return None
    try:
        scaled = _EXACT.scaleb(number, VALUE_DIGITS)
        integral = scaled.to_integral_value(context=_EXACT)
    except (Inexact, InvalidOperation):
        integral = None
    if integral is None or integral != scaled:
        problems.append(f"value {text} has more than {VALUE_DIGITS} decimal places")
        return None
    return int(integral)


def parse_event(
    record: Mapping[str, Any],
    meters: Iterable[MeterSpec] | Mapping[str, MeterSpec],
    known_customers: Collection[str],
    *,
    now: dt.datetime | None = None,
    earliest: Mapping[str, dt.datetime] | None = None,
) -> UsageEvent:
    """Validate one event (a mapping, e.g. a parsed JSON object); raise :class:`EventError` with the reason.

    For many events make one :class:`EventValidator` and call its ``validate``.
    """
    return EventValidator(meters, known_customers, now or dt.datetime.now(dt.UTC), earliest).validate(record)
