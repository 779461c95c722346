"""The price catalog as frozen, validated records.

Every record is immutable (``frozen=True``) and refuses unknown keys (``extra="forbid"``). Numbers are
``Decimal``; a float never gets in (TOML is read with ``parse_float=Decimal`` and the ``Money`` type refuses
floats). A tier bound ``up_to = "inf"`` is stored as ``None``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from pricing_plans.money import HUNDRED, ZERO, Rounding, is_known_currency

__all__ = [
    "Aggregation",
    "Catalog",
    "Charge",
    "Commitment",
    "FeeBilling",
    "GraduatedCharge",
    "GraduatedPercentageCharge",
    "Interval",
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
]


def _number(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError("floats are not accepted; read the TOML with parse_float=Decimal")
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, int):
        return Decimal(value)
    return value


def _bound(value: Any) -> Any:
    """A tier's upper bound: a number, or "inf" for the open last tier (stored as None)."""
    if value == "inf":
        return None
    if value is None:
        raise ValueError('expected a number or "inf"')
    if isinstance(value, str):
        raise ValueError(f'expected a number or "inf", got {value!r}')
    return _number(value)


Number = Annotated[Decimal, BeforeValidator(_number), Field(allow_inf_nan=False)]
NonNegative = Annotated[Decimal, BeforeValidator(_number), Field(ge=0, allow_inf_nan=False)]
Percent = Annotated[Decimal, BeforeValidator(_number), Field(ge=0, le=100, allow_inf_nan=False)]
Bound = Annotated[Decimal | None, BeforeValidator(_bound), Field(default=None)]


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
    MONTH = "month"
    YEAR = "year"


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
            raise ValueError("unique_property is required when aggregation is unique_count")
        if self.aggregation is not Aggregation.UNIQUE_COUNT and self.unique_property:
            raise ValueError("unique_property is only meaningful when aggregation is unique_count")
        return self


class Tier(_Record):
    """A price tier: units up to ``up_to`` (inclusive; None is the open last tier)."""

    up_to: Bound
    unit_amount: NonNegative = ZERO
    flat_amount: NonNegative = ZERO


class PercentTier(_Record):
    """A tier of a graduated percentage: ``rate`` percent of the value that falls in it, plus a flat amount."""

    up_to: Bound
    rate: Percent
    flat_amount: NonNegative = ZERO


def _check_tiers(tiers: tuple[Tier, ...] | tuple[PercentTier, ...]) -> None:
    if not tiers:
        raise ValueError("at least one tier is required")
    previous: Decimal | None = None
    for index, tier in enumerate(tiers):
        last = index == len(tiers) - 1
        if tier.up_to is None and not last:
            raise ValueError(f'tiers[{index}].up_to: only the last tier may be "inf"')
        if tier.up_to is not None and last:
            raise ValueError(f'tiers[{index}].up_to: the last tier must be up_to = "inf" (got {tier.up_to})')
        if tier.up_to is not None:
            if tier.up_to <= 0:
                raise ValueError(f"tiers[{index}].up_to: must be positive (got {tier.up_to})")
            if previous is not None and tier.up_to <= previous:
                raise ValueError(
                    f"tiers[{index}].up_to: tiers must increase (got {tier.up_to} after {previous})"
                )
            previous = tier.up_to


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
            raise ValueError(f"package_size must be greater than 0 (got {size})")
        return size


class PercentageCharge(_ChargeBase):
    """Per event: rate % × value + fixed_amount, clamped to the per-transaction min/max, after the free part."""

    model: Literal["percentage"]
    rate: Percent
    fixed_amount: NonNegative = ZERO
    free_events: Annotated[int, Field(ge=0, strict=True)] = 0
    free_amount: NonNegative = ZERO
    per_transaction_min: NonNegative | None = None
    per_transaction_max: NonNegative | None = None

    @model_validator(mode="after")
    def _min_below_max(self) -> PercentageCharge:
        low, high = self.per_transaction_min, self.per_transaction_max
        if low is not None and high is not None and low > high:
            raise ValueError(f"per_transaction_min ({low}) must not exceed per_transaction_max ({high})")
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
    trial_days: Annotated[int, Field(ge=0, strict=True)] = 0


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
        if (self.allowance is None) == (self.spend_cap is None):
            raise ValueError("give exactly one of allowance (with meter) or spend_cap")
        if self.allowance is not None and not self.meter:
            raise ValueError("an allowance needs the meter it counts")
        if self.spend_cap is not None and self.meter:
            raise ValueError("a spend_cap is on money, not on a meter: remove meter")
        if list(self.levels) != sorted(set(self.levels)):
            raise ValueError(f"levels must increase without repeats (got {list(self.levels)})")
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
      name, currency, interval: as in the catalog.
      subscription: the recurring fee, if any.
      charges: the usage charges, at most one per meter.
      commitment: the minimum commitment, if any.
      thresholds: alert levels for allowances and spend caps.
    """

    key: str
    code: str
    version: Annotated[int, Field(ge=1, strict=True)] = 1
    effective_from: dt.date | None = None
    name: str
    description: str | None = None
    currency: str
    interval: Interval = Interval.MONTH
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
        """The subscription fee normalized to one month (a yearly fee / 12), at full precision."""
        if self.subscription is None:
            return ZERO
        fee = self.subscription.fee
        return fee / 12 if self.interval is Interval.YEAR else fee


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
