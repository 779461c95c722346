"""The price catalog as frozen, validated records.

Every record is immutable (``frozen=True``) and refuses unknown keys (``extra="forbid"``). Numbers are
``Decimal``; a float never gets in (TOML is read with ``parse_float=Decimal`` and the ``Money`` type refuses
floats). A tier bound ``up_to = "inf"`` is stored as ``None``.

A charge may price its events by dimension: ``filters`` (each a :class:`ChargeFilter` with its own price keys of
the charge's model) and ``group_by``. The charge's own price keys are then the default for the events that
match no filter, and may be left out (the charge then has no default).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, NoReturn

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from pricing_plans.money import HUNDRED, MAX_AMOUNT, ZERO, Rounding, is_known_currency, number_problem

__all__ = [
    "CHARGE_MODELS",
    "Aggregation",
    "BillingAnchor",
    "Catalog",
    "Charge",
    "ChargeFilter",
    "Commitment",
    "FeeBilling",
    "GraduatedCharge",
    "GraduatedPercentageCharge",
    "Interval",
    "LocatedValueError",
    "Meter",
    "PackageCharge",
    "PerUnitCharge",
    "PercentTier",
    "PercentageCharge",
    "Plan",
    "ProgressiveBilling",
    "SubscriptionFee",
    "Threshold",
    "Tier",
    "VolumeCharge",
    "per_month",
]


class LocatedValueError(ValueError):
    """A validator's problems, each at a key path below the field (or record) being validated.

    Pydantic reports a validator's error at the field it validates (``tiers``); the catalog loader appends each
    item's ``path`` to that location so that the problem reads ``...tiers[2].up_to: tiers must increase``. One
    validator may report several problems at once.

    Attributes:
      items: ``(path, message)`` pairs; ``path`` is a tuple of keys and indexes, ``()`` for the field itself.
    """

    def __init__(self, items: list[tuple[tuple[str | int, ...], str]]):
        self.items = tuple(items)
        super().__init__("; ".join(_join(path, message) for path, message in self.items))


def _join(path: tuple[str | int, ...], message: str) -> str:
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")
    return f"{text}: {message}" if text else message


def _located(*path: str | int, message: str) -> LocatedValueError:
    return LocatedValueError([(path, message)])


def _number(value: Any) -> Any:
    """Numbers are Decimal: an int becomes a Decimal, a float or a boolean is refused."""
    if isinstance(value, float):
        raise ValueError("floats are not accepted; read the TOML with parse_float=Decimal")
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    if isinstance(value, int):
        return Decimal(value)
    return value


def _bound(value: Any) -> Any:
    """A tier's upper bound: a number, or "inf" for the open last tier (stored as None).

    ``None`` (from Python or JSON) and a bare TOML ``inf`` also mean the open bound. Like the other numbers, a
    numeric string is read as a Decimal (so a record dumped to JSON loads back).
    """
    if value is None or value == "inf":
        return None
    if isinstance(value, Decimal) and value.is_infinite() and value > 0:
        return None
    number = value
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except ArithmeticError:
            number = None
    if isinstance(value, str | Decimal) and (number is None or not number.is_finite()):
        raise ValueError(f'expected a number or "inf", got {value if isinstance(value, Decimal) else repr(value)}')
    return _number(number)


_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")


def _code(value: str) -> str:
    """A meter's or plan's code: what events, commands and addresses (``/v1/plans/{code}``) name it by."""
    if not _CODE.fullmatch(value):
        raise ValueError(
            f"expected 1 to 100 letters, digits and _ - . : beginning with a letter or digit, got {value!r}"
        )
    return value


def _name(value: str) -> str:
    if not value.strip():
        raise ValueError(f"expected the name people read on invoices and pages, got {value!r}")
    return value


Code = Annotated[str, AfterValidator(_code)]
Name = Annotated[str, AfterValidator(_name)]

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _day(value: Any) -> Any:
    """A day: a TOML date (``2026-01-01``, unquoted), or the same written ``"YYYY-MM-DD"`` (a record dumped to
    JSON loads back); never a number (``0`` was read as 1970-01-01, seconds since the epoch)."""
    if value is None or isinstance(value, dt.date):  # (a datetime: the model takes one at midnight)
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value) if _DAY.fullmatch(value) else _not_a_day(value)
        except ValueError:
            _not_a_day(value)
    return _not_a_day(value)


def _not_a_day(value: Any) -> NoReturn:
    raise ValueError(f"expected a date (YYYY-MM-DD), got {value!r}")


def _in_range(value: Decimal | None) -> Decimal | None:
    """Every number of the catalog is one the engine keeps exactly: below 10^15, at most 12 decimal places
    (``pricing_plans.money.MAX_AMOUNT``), so no amount computed from it is ever rounded away or overflows."""
    if value is not None and (problem := number_problem(value)) is not None:
        raise ValueError(problem)
    if value is not None and value.is_zero() and value.is_signed():
        return abs(value)  # (-0.0 is zero: never printed as -0.00)
    return value


Number = Annotated[Decimal, BeforeValidator(_number), Field(allow_inf_nan=False), AfterValidator(_in_range)]
NonNegative = Annotated[
    Decimal, BeforeValidator(_number), Field(ge=0, allow_inf_nan=False), AfterValidator(_in_range)
]
Percent = Annotated[
    Decimal, BeforeValidator(_number), Field(ge=0, le=100, allow_inf_nan=False), AfterValidator(_in_range)
]
Bound = Annotated[Decimal | None, BeforeValidator(_bound), AfterValidator(_in_range)]
# Whole numbers: a count of events below 10^15 like every quantity; a version that the subscriptions' column (a
# 32-bit integer) holds; trial days within ten years, so that a trial's end is always a date.
Count = Annotated[int, Field(ge=0, lt=int(MAX_AMOUNT), strict=True)]
VersionNumber = Annotated[int, Field(ge=1, le=2**31 - 1, strict=True)]
TrialDays = Annotated[int, Field(ge=0, le=3660, strict=True)]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class Aggregation(StrEnum):
    COUNT = "count"
    SUM = "sum"
    MAX = "max"
    UNIQUE_COUNT = "unique_count"
    LATEST = "latest"
    WEIGHTED_SUM = "weighted_sum"


class Interval(StrEnum):
    """How often a plan's fee is billed (its fee period). Usage is billed weekly on weekly plans and monthly on
    the others."""

    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


class BillingAnchor(StrEnum):
    """Where a plan's periods begin: on calendar boundaries (ISO weeks from Monday, months from the 1st, quarters
    from January, April, July and October 1st, years from January 1st), or on the subscription's start day each
    interval (``subscription_start``: anniversary billing)."""

    CALENDAR = "calendar"
    SUBSCRIPTION_START = "subscription_start"


class FeeBilling(StrEnum):
    IN_ADVANCE = "in_advance"
    IN_ARREARS = "in_arrears"


class Meter(_Record):
    """A named measure of usage.

    Attributes:
      code: the meter's key in the catalog (``api_calls``); events name it.
      name: what people read on an invoice.
      aggregation: how the period's events become one quantity.
      unit: the unit's name, singular ("call", "GB-month").
      unit_plural: the unit's English plural, for a unit the invoice documents' catalogs do not know ("calls");
        None: the documents print the unit as written, or its translation when they know it.
      unique_property: for ``unique_count``, the event property whose distinct values are counted.
      unit_cost: what one unit costs the seller, per currency (``{ USD = 0.0002 }``): the cost side of the margin
        and markup figures (every unit costs, free ones included); a currency without one has no cost figures.
    """

    code: Code
    name: Name
    aggregation: Aggregation
    unit: str = "unit"
    unit_plural: str | None = None
    unique_property: str | None = None
    unit_cost: dict[str, NonNegative] = {}

    @field_validator("unit_cost")
    @classmethod
    def _cost_currencies(cls, costs: dict[str, Decimal]) -> dict[str, Decimal]:
        unknown = sorted(code for code in costs if not is_known_currency(code))
        if unknown:
            raise ValueError(f"unknown currency code(s) {', '.join(unknown)}: give ISO 4217 codes (USD = 0.0002)")
        return costs

    @model_validator(mode="after")
    def _unique_property_for_unique_count(self) -> Meter:
        if self.aggregation is Aggregation.UNIQUE_COUNT and not self.unique_property:
            raise _located(
                "unique_property",
                message="required when aggregation is unique_count (the event property whose values are counted)",
            )
        if self.aggregation is not Aggregation.UNIQUE_COUNT and self.unique_property:
            raise _located(
                "unique_property",
                message=f"only allowed when aggregation is unique_count (got aggregation {self.aggregation.value!r})",
            )
        return self


class Tier(_Record):
    """A price tier: the units up to ``up_to`` (inclusive; None, written "inf", is the open last tier)."""

    up_to: Bound
    unit_amount: NonNegative = ZERO
    flat_amount: NonNegative = ZERO


class PercentTier(_Record):
    """A tier of a graduated percentage: ``rate`` percent of the value that falls in it, plus a flat amount."""

    up_to: Bound
    rate: Percent
    flat_amount: NonNegative = ZERO


def _check_tiers(tiers: Sequence[Tier | PercentTier]) -> None:
    """Tier bounds are positive and strictly increasing; only the last tier, and always the last, is "inf".

    Every problem of the list is reported, each at ``[index].up_to``.
    """
    if not tiers:
        raise ValueError("at least one tier is required")
    problems: list[tuple[tuple[str | int, ...], str]] = []
    previous: Decimal | None = None
    for index, tier in enumerate(tiers):
        last = index == len(tiers) - 1
        where = (index, "up_to")
        if tier.up_to is None:
            if not last:
                problems.append((where, 'only the last tier may be up_to = "inf"'))
            continue
        if last:
            problems.append((where, f'the last tier must be up_to = "inf" (got {tier.up_to})'))
        if tier.up_to <= 0:
            problems.append((where, f"must be > 0 (got {tier.up_to})"))
        elif previous is not None and tier.up_to <= previous:
            problems.append((where, f"tiers must increase (got {tier.up_to} after {previous})"))
        previous = tier.up_to if previous is None else max(previous, tier.up_to)
    if problems:
        raise LocatedValueError(problems)


def _price_key(value: Any, info: ValidationInfo) -> Any:
    """A charge's own price key: required unless the charge has filters (then the charge may have no default).

    Checked field by field (not once the record is built) so that a missing price key is reported together with
    the charge's other problems. When the filters themselves are invalid, they are what is reported.
    """
    if value is None and "filters" in info.data and not info.data["filters"]:
        raise ValueError("required key is missing")
    return value


def _distinct_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    """Property names (of ``group_by``): non-empty, each named once."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for index, key in enumerate(keys):
        if not key:
            problems.append(((index,), "must not be empty (an event property's name)"))
        elif key in keys[:index]:
            problems.append(((index,), f"{key!r} is listed twice"))
    if problems:
        raise LocatedValueError(problems)
    return keys


def _filter_properties(properties: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """At least one property; each a non-empty list of distinct values."""
    if not properties:
        raise ValueError('at least one property is required (properties = { country = ["US"] })')
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for name, values in properties.items():
        if not name:
            problems.append(((name,), "a property's name must not be empty"))
        if not values:
            problems.append(((name,), "at least one value is required (an empty list matches no event)"))
        for index, value in enumerate(values):
            if value in values[:index]:
                problems.append(((name, index), f"{value!r} is listed twice"))
    if problems:
        raise LocatedValueError(problems)
    return properties


PriceNumber = Annotated[NonNegative | None, AfterValidator(_price_key), Field(validate_default=True)]
GroupBy = Annotated[tuple[str, ...], AfterValidator(_distinct_keys)]
Properties = Annotated[dict[str, tuple[str, ...]], AfterValidator(_filter_properties)]


class ChargeFilter(_Record):
    """Events priced apart within a charge: those whose properties hold one of the listed values.

    In the catalog a filter is a ``[[plans.X.charges.filters]]`` table holding ``name``, ``properties``,
    ``group_by`` and the price keys of its charge's model, which the charge reads into ``price``.

    Attributes:
      name: printed on the invoice; None to print the values (see ``label``).
      properties: for each property the filter names, the values an event's property must be one of.
      group_by: the properties whose distinct values the filter's usage is rated separately by (one invoice line
        each); None: the charge's ``group_by`` applies; ``()``: not grouped.
      price: the filter's price keys, as a charge record of its charge's model and meter (without filters).
    """

    name: Annotated[str, Field(min_length=1)] | None = None
    properties: Properties
    group_by: GroupBy | None = None
    price: Charge

    @model_serializer(mode="wrap")
    def _as_table(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Dumped as the catalog writes it: the price keys in the filter's own table (which loads back)."""
        fields: dict[str, Any] = handler(self)
        price = fields.pop("price", None) or {}
        shared = ("meter", "model", "description", "filters", "group_by")
        return fields | {key: value for key, value in price.items() if key not in shared}

    @property
    def label(self) -> str:
        """The filter's name, or its property values joined ("US, CA")."""
        if self.name is not None:
            return self.name
        return ", ".join(value for values in self.properties.values() for value in values)


class _ChargeBase(_Record):
    """What every charge has besides its model's price keys.

    Attributes:
      meter: the meter whose usage the charge prices.
      description: what the invoice line says (default: the meter's name).
      filters: prices by event dimension; an event is priced by the matching filter naming the most properties.
      group_by: the properties whose distinct values the charge is rated separately by (one line each).
      PRICE_KEYS: the model's required price keys (all present, or, on a charge with filters, all absent).
    """

    meter: str
    description: str | None = None
    filters: tuple[ChargeFilter, ...] = ()
    group_by: GroupBy = ()

    PRICE_KEYS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def price_fields(cls) -> tuple[str, ...]:
        """Every price key of the model (required and optional), in catalog order."""
        return tuple(name for name in cls.model_fields if name not in _ChargeBase.model_fields and name != "model")

    @model_validator(mode="before")
    @classmethod
    def _filter_tables(cls, data: Any) -> Any:
        """A filter's table holds its price keys beside its own; they become its ``price``, a record of this
        charge's model and meter (a table that already has ``price``, as a dumped record does, is kept)."""
        if not isinstance(data, dict) or not isinstance(data.get("filters"), list | tuple):
            return data
        prices = cls.price_fields()
        meter = data.get("meter")
        filters = []
        for table in data["filters"]:
            if isinstance(table, dict) and "price" not in table:
                own = {key: value for key, value in table.items() if key not in prices}
                price = {key: value for key, value in table.items() if key in prices}
                meter_code = meter if isinstance(meter, str) else ""
                table = {**own, "price": {"meter": meter_code, "model": data.get("model"), **price}}
            filters.append(table)
        return {**data, "filters": filters}

    @model_serializer(mode="wrap")
    def _without_empty_dimensions(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Dumped without ``filters`` and ``group_by`` when it has none, as a charge priced as a whole always was."""
        fields: dict[str, Any] = handler(self)
        return {key: value for key, value in fields.items() if key not in ("filters", "group_by") or value}

    @model_validator(mode="after")
    def _dimensions(self) -> _ChargeBase:
        problems = self._default_problems() + self._price_problems() + _overlap_problems(self.filters)
        if problems:
            raise LocatedValueError(problems)
        return self

    def _default_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """A charge's own price keys come all together or (with filters) not at all."""
        given = [key for key in self.PRICE_KEYS if getattr(self, key) is not None]
        if not given:
            keys = ", ".join(self.PRICE_KEYS)
            return [
                ((key,), f"only allowed with the charge's own price keys ({keys}); this charge has no default")
                for key in self.price_fields()
                if key in self.model_fields_set and key not in self.PRICE_KEYS
            ]
        return [
            ((key,), f"required key is missing (the charge's own price keys come together: {', '.join(given)} given)")
            for key in self.PRICE_KEYS
            if getattr(self, key) is None
        ]

    def _price_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """A filter's price is of its charge's model and meter (the catalog makes it so; a record built in code
        might not)."""
        model = getattr(self, "model", None)
        return [
            (("filters", index), f"the filter's price must be a {model} charge on meter {self.meter!r}")
            for index, found in enumerate(self.filters)
            if (found.price.model, found.price.meter) != (model, self.meter) or found.price.filters
        ]

    @property
    def has_default(self) -> bool:
        """Whether the charge has price keys of its own (the price of events matching no filter)."""
        return all(getattr(self, key) is not None for key in self.PRICE_KEYS)

    @property
    def is_dimensioned(self) -> bool:
        """Whether the charge prices its events by dimension (filters or group_by)."""
        return bool(self.filters or self.group_by)

    @property
    def match_order(self) -> tuple[int, ...]:
        """Filter indexes in the order an event is tried against them: most properties first, catalog order on
        ties (which validation makes harmless: two filters of one size never both match an event)."""
        return tuple(sorted(range(len(self.filters)), key=lambda index: -len(self.filters[index].properties)))

    def group_by_of(self, filter_index: int | None) -> tuple[str, ...]:
        """The group_by that applies to a filter's events (None: events matching no filter)."""
        if filter_index is None:
            return self.group_by
        own = self.filters[filter_index].group_by
        return self.group_by if own is None else own


# A filter's events, as a box: for each property the filter names, the values it allows (others: any value).
_Box = dict[str, frozenset[str]]


def _box(charge_filter: ChargeFilter) -> _Box:
    return {name: frozenset(values) for name, values in charge_filter.properties.items()}


def _intersection(a: _Box, b: _Box) -> _Box | None:
    """The events both boxes hold, or None when no event is in both."""
    both = dict(a)
    for name, values in b.items():
        common = both[name] & values if name in both else values
        if not common:
            return None
        both[name] = common
    return both


def _uncovered(box: _Box, covers: list[_Box]) -> _Box | None:
    """A part of ``box`` that no box of ``covers`` holds, or None when their union holds all of it.

    Every cover names only properties of ``box``. ``box`` minus the first cover is cut into disjoint boxes (the
    values outside the cover on its first property, then within it and outside on its second, ...), and each is
    checked against the other covers.
    """
    if not covers:
        return box
    first, rest = covers[0], covers[1:]
    if _intersection(box, first) is None:
        return _uncovered(box, rest)
    inside = dict(box)
    for name, values in first.items():
        outside = inside[name] - values
        if outside and (found := _uncovered({**inside, name: outside}, rest)) is not None:
            return found
        inside[name] = inside[name] & values
    return None


def _overlap_problems(filters: tuple[ChargeFilter, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    """Two filters naming as many properties conflict when some event matches both and no filter naming more
    properties matches it.

    The events matching both filters are the intersection of their boxes. A filter naming a property that the
    intersection leaves free (any value, or none) never holds all of it (an event may lack that property), so
    the union of the more specific filters naming only the intersection's properties must hold the whole of
    it; this is exact, not a conservative approximation.
    """
    problems: list[tuple[tuple[str | int, ...], str]] = []
    boxes = [_box(f) for f in filters]
    for later, b in enumerate(boxes):
        for earlier, a in enumerate(boxes[:later]):
            if len(a) != len(b) or (both := _intersection(a, b)) is None:
                continue
            covers = [c for c in boxes if len(c) > len(a) and set(c) <= set(both)]
            if (part := _uncovered(both, covers)) is None:
                continue
            event = ", ".join(f"{name} = {json.dumps(min(values))}" for name, values in sorted(part.items()))
            count = f"{len(a)} propert{'y' if len(a) == 1 else 'ies'}"
            problems.append(
                (
                    ("filters", later, "properties"),
                    f"overlaps filters[{earlier}]: both name {count} and both match an event with {event}, which "
                    "no filter naming more properties matches (make the lists disjoint, or add a more specific "
                    "filter for such events)",
                )
            )
    return problems


class PerUnitCharge(_ChargeBase):
    """Quantity × unit_amount."""

    PRICE_KEYS = ("unit_amount",)

    model: Literal["per_unit"]
    unit_amount: PriceNumber = None


def _check_tiers_given(tiers: Sequence[Tier | PercentTier] | None) -> None:
    if tiers is not None:
        _check_tiers(tiers)


class GraduatedCharge(_ChargeBase):
    """Each tier prices the units that fall in it; each touched tier adds its flat amount once."""

    PRICE_KEYS = ("tiers",)

    model: Literal["graduated"]
    tiers: Annotated[tuple[Tier, ...] | None, AfterValidator(_price_key), Field(validate_default=True)] = None

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, tiers: tuple[Tier, ...] | None) -> tuple[Tier, ...] | None:
        _check_tiers_given(tiers)
        return tiers


class VolumeCharge(_ChargeBase):
    """The whole quantity is priced at the one tier it falls in, plus that tier's flat amount."""

    PRICE_KEYS = ("tiers",)

    model: Literal["volume"]
    tiers: Annotated[tuple[Tier, ...] | None, AfterValidator(_price_key), Field(validate_default=True)] = None

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, tiers: tuple[Tier, ...] | None) -> tuple[Tier, ...] | None:
        _check_tiers_given(tiers)
        return tiers


class PackageCharge(_ChargeBase):
    """ceil(max(0, q − free_units) / package_size) × package_amount."""

    PRICE_KEYS = ("package_size", "package_amount")

    model: Literal["package"]
    package_size: Annotated[Number | None, AfterValidator(_price_key), Field(validate_default=True)] = None
    package_amount: PriceNumber = None
    free_units: NonNegative = ZERO

    @field_validator("package_size")
    @classmethod
    def _positive_size(cls, size: Decimal | None) -> Decimal | None:
        if size is not None and size <= 0:
            raise ValueError(f"must be > 0 (got {size})")
        return size


class PercentageCharge(_ChargeBase):
    """Per event: rate % × value + fixed_amount, clamped to the per-transaction min/max, after the free part."""

    PRICE_KEYS = ("rate",)

    model: Literal["percentage"]
    rate: Annotated[Percent | None, AfterValidator(_price_key), Field(validate_default=True)] = None
    fixed_amount: NonNegative = ZERO
    free_events: Count = 0
    free_amount: NonNegative = ZERO
    per_transaction_min: NonNegative | None = None
    per_transaction_max: NonNegative | None = None

    @model_validator(mode="after")
    def _min_below_max(self) -> PercentageCharge:
        low, high = self.per_transaction_min, self.per_transaction_max
        if low is not None and high is not None and low > high:
            raise _located(
                "per_transaction_min",
                message=f"must not exceed per_transaction_max (got {low} > {high})",
            )
        return self


class GraduatedPercentageCharge(_ChargeBase):
    """Graduated tiers over the value volume, each priced at a rate % with a flat amount."""

    PRICE_KEYS = ("tiers",)

    model: Literal["graduated_percentage"]
    tiers: Annotated[tuple[PercentTier, ...] | None, AfterValidator(_price_key), Field(validate_default=True)] = None

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, tiers: tuple[PercentTier, ...] | None) -> tuple[PercentTier, ...] | None:
        _check_tiers_given(tiers)
        return tiers


Charge = Annotated[
    PerUnitCharge
    | GraduatedCharge
    | VolumeCharge
    | PackageCharge
    | PercentageCharge
    | GraduatedPercentageCharge,
    Field(discriminator="model"),
]

ChargeFilter.model_rebuild()
for _charge_class in (
    PerUnitCharge,
    GraduatedCharge,
    VolumeCharge,
    PackageCharge,
    PercentageCharge,
    GraduatedPercentageCharge,
):
    _charge_class.model_rebuild()


CHARGE_MODELS = ("per_unit", "graduated", "volume", "package", "percentage", "graduated_percentage")


class SubscriptionFee(_Record):
    """The recurring fixed fee of a plan, billed in advance or in arrears, prorated by days.

    ``seats``: the fee is per seat, times the subscription's quantity on each day (a fee of 0 is refused then).
    """

    fee: NonNegative
    billing: FeeBilling = FeeBilling.IN_ADVANCE
    trial_days: TrialDays = 0
    seats: Annotated[bool, Field(strict=True)] = False

    @model_validator(mode="after")
    def _seats_need_a_fee(self) -> SubscriptionFee:
        if self.seats and self.fee == 0:
            raise _located("seats", message="a per-seat price needs a fee above 0 (fee is 0)")
        return self


class Commitment(_Record):
    """Committed use: usage charges below ``minimum`` in a period are trued up to it."""

    minimum: NonNegative


class Threshold(_Record):
    """An alert level set: ``allowance`` units of ``meter``, or a ``spend_cap`` on the period's usage charges.

    ``hard_limit``: the allowance is a limit the product enforces: once the period's usage reaches it, the
    customer's entitlement to the meter is ``blocked`` until the period ends. Only an allowance can be one (a meter
    counted per request; a spend cap is rated money, alerted on but not enforced), and a plan has at most one per
    meter.
    """

    meter: str | None = None
    allowance: NonNegative | None = None
    spend_cap: NonNegative | None = None
    levels: tuple[Annotated[int, Field(gt=0, le=1000, strict=True)], ...] = (80, 100)
    hard_limit: Annotated[bool, Field(strict=True)] = False

    @model_validator(mode="after")
    def _one_limit(self) -> Threshold:
        if self.allowance is None and self.spend_cap is None:
            raise ValueError("give allowance (units of a meter, with meter) or spend_cap (money)")
        if self.allowance is not None and self.spend_cap is not None:
            raise _located("spend_cap", message="give either allowance or spend_cap, not both")
        if self.allowance is not None and not self.meter:
            raise _located("meter", message="required with allowance: the meter whose units are counted")
        if self.spend_cap is not None and self.meter:
            raise _located("meter", message="not allowed with spend_cap (a spend cap is on money, not a meter)")
        if list(self.levels) != sorted(set(self.levels)):
            raise _located("levels", message=f"must increase without repeats (got {list(self.levels)})")
        if self.hard_limit and self.allowance is None:
            raise _located(
                "hard_limit",
                message="only an allowance (meter + allowance) can be a hard limit; a spend cap alerts but is not "
                "enforced",
            )
        return self

    @property
    def kind(self) -> Literal["usage", "spend"]:
        return "usage" if self.allowance is not None else "spend"


class ProgressiveBilling(_Record):
    """Invoices issued during a period: when the period's usage charges first reach one of ``amounts`` (in the
    plan's currency, increasing, above 0), the usage so far is invoiced at once; the period's invoice bills the
    rest."""

    amounts: tuple[Annotated[Number, Field(gt=0)], ...]

    @field_validator("amounts")
    @classmethod
    def _increasing(cls, amounts: tuple[Decimal, ...]) -> tuple[Decimal, ...]:
        if not amounts:
            raise ValueError("give at least one amount (the usage charges at which an invoice is issued)")
        if list(amounts) != sorted(set(amounts)):
            raise ValueError(f"must increase without repeats (got {', '.join(map(str, amounts))})")
        return amounts


class Plan(_Record):
    """One version of a price plan.

    Attributes:
      key: the plan's table name in the catalog (``plans.<key>``).
      code: the plan's code; defaults to ``key``. Several versions share a code.
      version: the version number; a subscription stays on the version it started with.
      effective_from: the first day new subscriptions get this version (None: always).
      name, currency, interval, billing_anchor: as in the catalog.
      subscription: the recurring fee, if any.
      charges: the usage charges, at most one per meter.
      commitment: the minimum commitment, if any.
      thresholds: alert levels for allowances and spend caps.
      progressive_billing: the usage charges at which an invoice is issued before the period ends, if any.
      tax_inclusive: whether the plan's prices include tax (the tax is taken out of them: gross × rate / (100 +
        rate)); default false: tax is added on top.
      tax_category: which of a country's rates taxes the plan (``standard``, or a category the configuration's
        rates name, such as ``reduced``; a country without it uses its standard rate).
      subscription_cost: what serving one subscription costs the seller per billing period, in the plan's
        currency (the cost side of the plan's margin), if declared.
    """

    key: Code
    code: Code
    version: VersionNumber = 1
    effective_from: Annotated[dt.date | None, BeforeValidator(_day)] = None
    name: Name
    description: str | None = None
    currency: str
    interval: Interval = Interval.MONTH
    billing_anchor: BillingAnchor = BillingAnchor.CALENDAR
    subscription: SubscriptionFee | None = None
    charges: tuple[Charge, ...] = ()
    commitment: Commitment | None = None
    thresholds: tuple[Threshold, ...] = ()
    progressive_billing: ProgressiveBilling | None = None
    tax_inclusive: StrictBool = False
    tax_category: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")] = "standard"
    subscription_cost: NonNegative | None = None

    @field_validator("currency")
    @classmethod
    def _currency(cls, currency: str) -> str:
        if not is_known_currency(currency):
            raise ValueError(f"unknown currency {currency!r} (expected an ISO 4217 code such as USD, EUR, JPY)")
        return currency

    @model_validator(mode="after")
    def _one_hard_limit_per_meter(self) -> Plan:
        first: dict[str, int] = {}
        for index, threshold in enumerate(self.thresholds):
            if threshold.hard_limit and threshold.meter is not None:
                if threshold.meter in first:
                    raise _located(
                        "thresholds",
                        index,
                        "hard_limit",
                        message=f"a plan has one hard limit per meter (thresholds[{first[threshold.meter]}] is "
                        f"already the hard limit of {threshold.meter!r})",
                    )
                first[threshold.meter] = index
        return self

    def charge_for(self, meter: str) -> Charge | None:
        return next((c for c in self.charges if c.meter == meter), None)

    @property
    def monthly_fee(self) -> Decimal:
        """The subscription fee normalized to one month, at full precision (``per_month``)."""
        if self.subscription is None:
            return ZERO
        return per_month(self.subscription.fee, self.interval)


def per_month(amount: Decimal, interval: Interval) -> Decimal:
    """An amount billed once per ``interval`` normalized to one month, at full precision: a week's × 52 / 12
    (52 weeks in a year of 12 months), a quarter's / 3, a year's / 12, a month's as it is."""
    if interval is Interval.WEEK:
        return amount * 52 / 12
    if interval is Interval.QUARTER:
        return amount / 3
    if interval is Interval.YEAR:
        return amount / 12
    return amount


class Catalog(_Record):
    """A validated catalog: its meters and every version of every plan.

    Attributes:
      source: the catalog file's name.
      rounding: how line amounts are rounded to minor units.
      meters: by meter code.
      plans: by plan code, each a tuple of versions in increasing version order.
    """

    source: str
    rounding: Rounding = Rounding.HALF_UP
    meters: dict[str, Meter]
    plans: dict[str, tuple[Plan, ...]]

    def plan(self, code: str, version: int | None = None) -> Plan:
        """A plan version; the latest version when ``version`` is None."""
        from pricing_plans.errors import UnknownPlanError

        versions = self.plans.get(code)
        if not versions:
            known = ", ".join(sorted(self.plans)) or "none"
            raise UnknownPlanError(f"unknown plan {code!r} (known plans: {known})")
        if version is None:
            return versions[-1]
        for plan in versions:
            if plan.version == version:
                return plan
        raise UnknownPlanError(
            f"plan {code!r} has no version {version} (versions: {', '.join(str(p.version) for p in versions)})"
        )

    def plan_for_start(self, code: str, start: dt.date) -> Plan:
        """The version a new subscription starting on ``start`` gets: the newest one already in effect."""
        from pricing_plans.errors import UnknownPlanError

        versions = self.plans.get(code)
        if not versions:
            self.plan(code)  # raises with the known plans
        in_effect = [p for p in versions or () if p.effective_from is None or p.effective_from <= start]
        if not in_effect:
            raise UnknownPlanError(f"no version of plan {code!r} is in effect on {start.isoformat()}")
        return in_effect[-1]

    def all_plans(self) -> list[Plan]:
        return [plan for code in sorted(self.plans) for plan in self.plans[code]]


def percent(value: Decimal) -> Decimal:
    """A percentage as a fraction (12.5 → 0.125)."""
    return value / HUNDRED
