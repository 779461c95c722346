"""The price catalog as frozen, validated records.

Every record is immutable (``frozen=True``) and refuses unknown keys (``extra="forbid"``). Numbers are
``Decimal``; a float never gets in (TOML is read with ``parse_float=Decimal`` and the ``Money`` type refuses
floats). A tier bound ``up_to = "inf"`` is stored as ``None``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from pricing_plans.money import HUNDRED, MAX_AMOUNT, ZERO, Rounding, is_known_currency, number_problem

__all__ = [
    "CHARGE_MODELS",
    "Aggregation",
    "BillingAnchor",
    "Catalog",
    "Charge",
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


def _in_range(value: Decimal | None) -> Decimal | None:
    """Every number of the catalog is one the engine keeps exactly: below 10^15, at most 12 decimal places
    (``pricing_plans.money.MAX_AMOUNT``), so no amount computed from it is ever rounded away or overflows."""
    if value is not None and (problem := number_problem(value)) is not None:
        raise ValueError(problem)
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
      unit: the unit's name ("call", "GB-month").
      unique_property: for ``unique_count``, the event property whose distinct values are counted.
    """

    code: str
    name: str
    aggregation: Aggregation
    unit: str = "unit"
    unique_property: str | None = None

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


class _ChargeBase(_Record):
    meter: str
    description: str | None = None


class PerUnitCharge(_ChargeBase):
    """Quantity × unit_amount."""

    model: Literal["per_unit"]
    unit_amount: NonNegative


class GraduatedCharge(_ChargeBase):
    """Each tier prices the units that fall in it; each touched tier adds its flat amount once."""

    model: Literal["graduated"]
    tiers: tuple[Tier, ...]

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, tiers: tuple[Tier, ...]) -> tuple[Tier, ...]:
        _check_tiers(tiers)
        return tiers


class VolumeCharge(_ChargeBase):
    """The whole quantity is priced at the one tier it falls in, plus that tier's flat amount."""

    model: Literal["volume"]
    tiers: tuple[Tier, ...]

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, tiers: tuple[Tier, ...]) -> tuple[Tier, ...]:
        _check_tiers(tiers)
        return tiers


class PackageCharge(_ChargeBase):
    """ceil(max(0, q − free_units) / package_size) × package_amount."""

    model: Literal["package"]
    package_size: Number
    package_amount: NonNegative
    free_units: NonNegative = ZERO

    @field_validator("package_size")
    @classmethod
    def _positive_size(cls, size: Decimal) -> Decimal:
        if size <= 0:
            raise ValueError(f"must be > 0 (got {size})")
        return size


class PercentageCharge(_ChargeBase):
    """Per event: rate % × value + fixed_amount, clamped to the per-transaction min/max, after the free part."""

    model: Literal["percentage"]
    rate: Percent
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

    model: Literal["graduated_percentage"]
    tiers: tuple[PercentTier, ...]

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, tiers: tuple[PercentTier, ...]) -> tuple[PercentTier, ...]:
        _check_tiers(tiers)
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

CHARGE_MODELS = ("per_unit", "graduated", "volume", "package", "percentage", "graduated_percentage")


class SubscriptionFee(_Record):
    """The recurring fixed fee of a plan, billed in advance or in arrears, prorated by days."""

    fee: NonNegative
    billing: FeeBilling = FeeBilling.IN_ADVANCE
    trial_days: TrialDays = 0


class Commitment(_Record):
    """Committed use: usage charges below ``minimum`` in a period are trued up to it."""

    minimum: NonNegative


class Threshold(_Record):
    """An alert level set: ``allowance`` units of ``meter``, or a ``spend_cap`` on the period's usage charges."""

    meter: str | None = None
    allowance: NonNegative | None = None
    spend_cap: NonNegative | None = None
    levels: tuple[Annotated[int, Field(gt=0, le=1000, strict=True)], ...] = (80, 100)

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
        return self

    @property
    def kind(self) -> Literal["usage", "spend"]:
        return "usage" if self.allowance is not None else "spend"


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
    """

    key: str
    code: str
    version: VersionNumber = 1
    effective_from: dt.date | None = None
    name: str
    description: str | None = None
    currency: str
    interval: Interval = Interval.MONTH
    billing_anchor: BillingAnchor = BillingAnchor.CALENDAR
    subscription: SubscriptionFee | None = None
    charges: tuple[Charge, ...] = ()
    commitment: Commitment | None = None
    thresholds: tuple[Threshold, ...] = ()

    @field_validator("currency")
    @classmethod
    def _currency(cls, currency: str) -> str:
        if not is_known_currency(currency):
            raise ValueError(f"unknown currency {currency!r} (expected an ISO 4217 code such as USD, EUR, JPY)")
        return currency

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
