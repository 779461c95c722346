"""Load a TOML price catalog into frozen, validated records, collecting every problem.

The pipeline is one straight line (:func:`_load`), each stage returning ``(result, problems)``:

    read → parse TOML (``parse_float=Decimal``) → check the top level → validate each meter on its own →
    validate each plan on its own → cross-check (meters, thresholds, versions) → build the Catalog

Each meter and each plan is validated separately, so one bad plan never hides another's problems. A problem
prints as ``FILE: KEY.PATH: message`` (``catalog.toml: plans.growth.charges[0].tiers[2].up_to: tiers must
increase (got 500 after 1000)``), a TOML syntax error as ``FILE:LINE: message``.

Plans are ``[plans.<key>]`` tables. A plan's ``code`` defaults to its key and its ``version`` to 1, so
``[plans.growth_v2]`` with ``code = "growth"``, ``version = 2`` is the second version of ``growth``. Versions
of one code must have distinct numbers, increasing ``effective_from`` dates (every version after the first
needs one), and the same currency and interval. A meter's ``code`` is its key.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from itertools import pairwise
from os import PathLike
from typing import Any

from pydantic import BaseModel, ValidationError

from pricing_plans.errors import CatalogError, CatalogProblem
from pricing_plans.models import (
    CHARGE_MODELS,
    Aggregation,
    Catalog,
    ChargeFilter,
    Interval,
    LocatedValueError,
    Meter,
    Plan,
)
from pricing_plans.money import Rounding, is_known_currency

__all__ = [
    "OVERRIDE_KEYS",
    "apply_override",
    "load_catalog",
    "load_catalog_or_raise",
    "loads_catalog",
    "loads_override",
]

Loc = tuple[str | int, ...]
Problems = list[CatalogProblem]
Tables = list[tuple[str, dict[str, Any]]]

TOP_LEVEL_KEYS = ("catalog", "meters", "plans")
CATALOG_KEYS = ("rounding",)
# Keys the loader fills from the table names; a catalog must not write them.
_FILLED_KEYS: dict[type[BaseModel], str] = {Plan: "key", Meter: "code"}
# Models whose charges read event values, so their meter must add values up.
_VALUE_MODELS = ("percentage", "graduated_percentage")
# A charge's keys that price its events by dimension.
_DIMENSION_KEYS = ("filters", "group_by")


def load_catalog(path: str | PathLike[str]) -> tuple[Catalog | None, list[CatalogProblem]]:
    """Load the catalog file at ``path``: the Catalog and no problems, or None and every problem found.

    Problems name the file as ``path`` was given.
    """
    filename = str(path)
    try:
        with open(path, "rb") as f:
            try:
                document = tomllib.load(f, parse_float=Decimal)
            except UnicodeDecodeError:
                raise  # (below)
            except ValueError as exc:  # a TOMLDecodeError, or an integer too long for Python to read
                f.seek(0)
                return None, [_syntax_problem(filename, exc, f.read().decode("utf-8", errors="replace"))]
    except OSError as exc:
        return None, [CatalogProblem(filename, "", f"cannot read the catalog: {exc.strerror or exc}")]
    except UnicodeDecodeError as exc:
        return None, [CatalogProblem(filename, "", f"not UTF-8 text (byte {exc.start}): TOML files are UTF-8")]
    return _load(document, filename)


def loads_catalog(text: str, filename: str = "<string>") -> tuple[Catalog | None, list[CatalogProblem]]:
    """Like :func:`load_catalog`, from TOML text; ``filename`` is what the problems name."""
    try:
        document = tomllib.loads(text, parse_float=Decimal)
    except ValueError as exc:  # a TOMLDecodeError, or an integer too long for Python to read
        return None, [_syntax_problem(filename, exc, text)]
    return _load(document, filename)


def load_catalog_or_raise(path: str | PathLike[str]) -> Catalog:
    """Load the catalog file at ``path``; raise :class:`CatalogError` holding every problem if there is any."""
    catalog, problems = load_catalog(path)
    if problems or catalog is None:
        raise CatalogError(problems)
    return catalog


# -- the pipeline ----------------------------------------------------------------------------------------


def _load(document: dict[str, Any], filename: str) -> tuple[Catalog | None, Problems]:
    """Validate a parsed TOML document: every stage runs, every problem is kept."""
    rounding, problems = _check_top_level(document, filename)
    meter_tables, meter_table_problems = _tables(document.get("meters"), "meters", filename)
    plan_tables, plan_table_problems = _tables(document.get("plans"), "plans", filename)
    meters, meter_problems = _validate_meters(meter_tables, filename)
    plans, plan_problems = _validate_plans(plan_tables, filename)
    cross_problems = _cross_check(meter_tables, meters, plan_tables, filename)
    problems += meter_table_problems + plan_table_problems + meter_problems + plan_problems + cross_problems
    if problems:
        return None, problems
    catalog = Catalog(source=filename, rounding=rounding, meters=meters, plans=_by_code(plans))
    return catalog, []


def _check_top_level(document: dict[str, Any], filename: str) -> tuple[Rounding, Problems]:
    """Only ``catalog``, ``meters`` and ``plans`` at the top; ``[catalog]`` holds ``rounding``."""
    problems: Problems = []
    for key in document:
        if key not in TOP_LEVEL_KEYS:
            problems.append(
                CatalogProblem(filename, _path((key,)), f"unknown key (allowed: {', '.join(TOP_LEVEL_KEYS)})")
            )
    for key in ("meters", "plans"):
        if key not in document:
            problems.append(CatalogProblem(filename, key, f"required key is missing (a [{key}.<code>] table)"))
    rounding = Rounding.HALF_UP
    settings = document.get("catalog", {})
    if not isinstance(settings, dict):
        return rounding, [*problems, CatalogProblem(filename, "catalog", _expected("a table", settings))]
    for key, value in settings.items():
        where = _path(("catalog", key))
        if key not in CATALOG_KEYS:
            problems.append(CatalogProblem(filename, where, f"unknown key (allowed: {', '.join(CATALOG_KEYS)})"))
        elif not isinstance(value, str) or value not in {r.value for r in Rounding}:
            problems.append(CatalogProblem(filename, where, _unknown_value("rounding", value, Rounding)))
        else:
            rounding = Rounding(value)
    return rounding, problems


def _validate_meters(tables: Tables, filename: str) -> tuple[dict[str, Meter], Problems]:
    """Each ``[meters.<code>]`` table on its own; the code is the table's key."""
    meters: dict[str, Meter] = {}
    problems: Problems = []
    for key, table in tables:
        meter, meter_problems = _validate(Meter, table, ("meters", key), filename, fill={"code": key})
        problems += meter_problems
        if meter is not None:
            meters[key] = meter
    return meters, problems


def _validate_plans(tables: Tables, filename: str) -> tuple[list[Plan], Problems]:
    """Each ``[plans.<key>]`` table on its own; ``code`` defaults to the key, ``version`` to 1."""
    plans: list[Plan] = []
    problems: Problems = []
    for key, table in tables:
        plan, plan_problems = _validate(
            Plan, table, ("plans", key), filename, fill={"key": key}, defaults={"code": key}
        )
        problems += plan_problems
        if plan is not None:
            plans.append(plan)
    return plans, problems


@dataclass(frozen=True, slots=True)
class _Outline:
    """What the cross-checks need of one plan table, read leniently from the raw TOML.

    Cross-checks run on every plan, even one whose own validation failed, so that all problems show at once.
    A value of the wrong type is None here and skipped: the plan's validation already reports it.
    """

    key: str
    code: str | None
    version: int | None
    effective_from: dt.date | None
    dated: bool  # whether the table writes effective_from at all
    currency: str | None
    interval: str | None
    charges: tuple[tuple[str | None, str | None], ...]  # (meter, model) of each charge
    threshold_meters: tuple[str | None, ...]

    @classmethod
    def of(cls, key: str, table: dict[str, Any]) -> _Outline:
        def text(value: Any) -> str | None:
            return value if isinstance(value, str) else None

        def tables(value: Any) -> list[dict[str, Any]]:
            return [t if isinstance(t, dict) else {} for t in value] if isinstance(value, list) else []

        version = table.get("version", 1)
        effective = table.get("effective_from")
        if isinstance(effective, dt.datetime):
            effective = effective.date()
        elif isinstance(effective, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", effective):  # (as the model reads it)
            try:
                effective = dt.date.fromisoformat(effective)
            except ValueError:
                effective = None
        currency = text(table.get("currency"))
        interval = text(table.get("interval", Interval.MONTH.value))
        return cls(
            key=key,
            code=text(table.get("code", key)),
            version=version if isinstance(version, int) and not isinstance(version, bool) else None,
            effective_from=effective if isinstance(effective, dt.date) else None,
            dated="effective_from" in table,
            currency=currency if currency and is_known_currency(currency) else None,
            interval=interval if interval in {i.value for i in Interval} else None,
            charges=tuple((text(c.get("meter")), text(c.get("model"))) for c in tables(table.get("charges"))),
            threshold_meters=tuple(text(t.get("meter")) for t in tables(table.get("thresholds"))),
        )


def _cross_check(meter_tables: Tables, meters: dict[str, Meter], plan_tables: Tables, filename: str) -> Problems:
    """What no single record can check: charged meters exist, one charge per meter, thresholds on charged
    meters, percentage models on summed meters, coherent plan versions."""
    outlines = [_Outline.of(key, table) for key, table in plan_tables]
    defined = {key for key, _ in meter_tables}
    known = ", ".join(key for key, _ in meter_tables) or "none"
    problems: Problems = []

    def report(plan: _Outline, loc: Loc, message: str) -> None:
        problems.append(CatalogProblem(filename, _path(("plans", plan.key, *loc)), message))

    for plan in outlines:
        charged: dict[str, int] = {}
        for index, (meter_code, model) in enumerate(plan.charges):
            if meter_code is None:
                continue
            where = ("charges", index, "meter")
            if meter_code in charged:
                report(
                    plan,
                    where,
                    f"meter {meter_code!r} already has a charge in this plan (charges[{charged[meter_code]}]); "
                    "a plan has at most one charge per meter",
                )
                continue
            charged[meter_code] = index
            meter = meters.get(meter_code)
            if meter_code not in defined:
                report(plan, where, f"unknown meter {meter_code!r} (known: {known})")
            elif model in _VALUE_MODELS and meter is not None and meter.aggregation is not Aggregation.SUM:
                report(
                    plan,
                    ("charges", index, "model"),
                    f"{model} needs a meter aggregated by sum (meter {meter_code!r} is {meter.aggregation.value})",
                )
        for index, meter_code in enumerate(plan.threshold_meters):
            where = ("thresholds", index, "meter")
            if meter_code is None:
                continue
            if meter_code not in defined:
                report(plan, where, f"unknown meter {meter_code!r} (known: {known})")
            elif meter_code not in charged:
                report(plan, where, f"meter {meter_code!r} has no charge in this plan")
    return problems + _check_versions(outlines, filename)


def _check_versions(outlines: list[_Outline], filename: str) -> Problems:
    """Versions of one code: distinct numbers; every version after the first has an effective_from later than
    the one before; all share the first version's currency and interval."""
    problems: Problems = []

    def report(plan: _Outline, key: str, message: str) -> None:
        problems.append(CatalogProblem(filename, _path(("plans", plan.key, key)), message))

    groups: dict[str, list[_Outline]] = {}
    for outline in outlines:
        if outline.code is not None and outline.version is not None:
            groups.setdefault(outline.code, []).append(outline)
    for code, group in groups.items():
        seen: dict[int, _Outline] = {}
        versions: list[_Outline] = []
        for plan in sorted(group, key=lambda o: o.version or 0):
            assert plan.version is not None
            if plan.version in seen:
                other = _path(("plans", seen[plan.version].key))
                report(plan, "version", f"plan {code!r} version {plan.version} is already defined by {other}")
            else:
                seen[plan.version] = plan
                versions.append(plan)
        first = versions[0]
        for previous, plan in pairwise(versions):
            if not plan.dated:
                report(
                    plan,
                    "effective_from",
                    f"required for version {plan.version} of {code!r}: the date from which new subscriptions get it",
                )
            elif (
                plan.effective_from is not None
                and previous.effective_from is not None
                and plan.effective_from <= previous.effective_from
            ):
                report(
                    plan,
                    "effective_from",
                    f"must be after version {previous.version}'s effective_from "
                    f"(got {plan.effective_from.isoformat()}, not after {previous.effective_from.isoformat()})",
                )
            if plan.currency and first.currency and plan.currency != first.currency:
                report(
                    plan,
                    "currency",
                    f"must be the same in every version of {code!r} (got {plan.currency}, version "
                    f"{first.version} has {first.currency}); another currency is another plan code",
                )
            if plan.interval and first.interval and plan.interval != first.interval:
                report(
                    plan,
                    "interval",
                    f"must be the same in every version of {code!r} (got {plan.interval}, version "
                    f"{first.version} has {first.interval}); another interval is another plan code",
                )
    return problems


def _by_code(plans: list[Plan]) -> dict[str, tuple[Plan, ...]]:
    """Plans grouped by code, each group in increasing version order."""
    grouped: dict[str, list[Plan]] = {}
    for plan in plans:
        grouped.setdefault(plan.code, []).append(plan)
    return {code: tuple(sorted(grouped[code], key=lambda p: p.version)) for code in sorted(grouped)}


# -- a subscription's negotiated prices ------------------------------------------------------------------

# The tables an override may hold: each one present replaces the plan's (charges one meter at a time).
OVERRIDE_KEYS = ("subscription", "charges", "commitment", "thresholds", "progressive_billing")


def loads_override(text: str, filename: str = "override.toml") -> tuple[dict[str, Any] | None, Problems]:
    """An override file's TOML text as a table (numbers as Decimal), or None and the syntax problem."""
    try:
        return tomllib.loads(text, parse_float=Decimal), []
    except ValueError as exc:  # a TOMLDecodeError, or an integer too long for Python to read
        return None, [_syntax_problem(filename, exc, text)]


def apply_override(
    plan: Plan, override: Mapping[str, Any], catalog: Catalog, filename: str = "override.toml"
) -> tuple[Plan | None, Problems]:
    """The plan a subscription is priced with under ``override``: each of ``[subscription]``, ``[commitment]``,
    ``[[thresholds]]`` present replaces the plan's; each ``[[charges]]`` entry replaces the plan's charge on its
    ``meter``, or adds one for a meter of the catalog the plan does not charge.

    The override's tables are validated by the same records as a plan's (so every key and rule of a plan's
    charge holds in an override), with problems located in the override's own terms
    (``override.toml: charges[0].tiers[1].up_to: …``); then the effective plan is cross-checked as a plan is
    (known meters, one charge per meter, thresholds on charged meters). None and every problem, or the plan.
    """
    problems: Problems = []
    for key in override:
        if key not in OVERRIDE_KEYS:
            problems.append(
                CatalogProblem(filename, _path((key,)), f"unknown key (allowed: {', '.join(OVERRIDE_KEYS)})")
            )
    tables = {key: override[key] for key in OVERRIDE_KEYS if key in override}
    own = {name: getattr(plan, name) for name in ("key", "code", "version", "name", "currency", "interval")}
    # Validated as a plan holding only the override's tables: a problem's path is the override's own.
    record, validation_problems = _validate(Plan, tables, (), filename, fill={}, defaults=own)
    problems += validation_problems
    outline = _Outline.of(plan.key, {**tables, "currency": plan.currency})
    charged = {charge.meter for charge in plan.charges} | {meter for meter, _ in outline.charges if meter}
    problems += _cross_check_override(outline, catalog, charged, filename)
    if problems or record is None:
        return None, problems
    return _overridden(plan, record, tables), []


def _overridden(plan: Plan, record: Plan, tables: Mapping[str, Any]) -> Plan:
    """``plan`` with the tables of a validated override (``record``) in place of its own."""
    replaced = {charge.meter: charge for charge in record.charges}
    charges = [replaced.pop(charge.meter, charge) for charge in plan.charges]
    charges += [charge for charge in record.charges if charge.meter in replaced]
    update: dict[str, Any] = {"charges": tuple(charges)}
    for key in ("subscription", "commitment", "thresholds", "progressive_billing"):
        if key in tables:
            update[key] = getattr(record, key)
    return plan.model_copy(update=update)


def _cross_check_override(outline: _Outline, catalog: Catalog, charged: set[str], filename: str) -> Problems:
    """An override's charges on known meters, one each, value models on summed meters; its thresholds on meters
    the effective plan charges."""
    problems: Problems = []
    known = ", ".join(catalog.meters) or "none"
    seen: dict[str, int] = {}
    for index, (meter_code, model) in enumerate(outline.charges):
        where = _path(("charges", index, "meter"))
        if meter_code is None:
            continue
        meter = catalog.meters.get(meter_code)
        if meter_code in seen:
            message = f"meter {meter_code!r} already has a charge in this override (charges[{seen[meter_code]}])"
            problems.append(CatalogProblem(filename, where, message))
        elif meter is None:
            problems.append(CatalogProblem(filename, where, f"unknown meter {meter_code!r} (known: {known})"))
        elif model in _VALUE_MODELS and meter.aggregation is not Aggregation.SUM:
            message = f"{model} needs a meter aggregated by sum (meter {meter_code!r} is {meter.aggregation.value})"
            problems.append(CatalogProblem(filename, _path(("charges", index, "model")), message))
        seen.setdefault(meter_code, index)
    for index, meter_code in enumerate(outline.threshold_meters):
        where = _path(("thresholds", index, "meter"))
        if meter_code is None:
            continue
        if meter_code not in catalog.meters:
            problems.append(CatalogProblem(filename, where, f"unknown meter {meter_code!r} (known: {known})"))
        elif meter_code not in charged:
            problems.append(CatalogProblem(filename, where, f"meter {meter_code!r} has no charge in this plan"))
    return problems


# -- from raw tables to records --------------------------------------------------------------------------


def _tables(section: Any, name: str, filename: str) -> tuple[Tables, Problems]:
    """The ``[name.<key>]`` tables of a section; anything that is not a table is a problem and skipped."""
    if section is None:
        return [], []
    if not isinstance(section, dict):
        return [], [CatalogProblem(filename, name, _expected(f"a table of [{name}.<code>] tables", section))]
    tables: Tables = []
    problems: Problems = []
    for key, table in section.items():
        if isinstance(table, dict):
            tables.append((key, table))
        else:
            problems.append(CatalogProblem(filename, _path((name, key)), _expected("a table", table)))
    return tables, problems


def _validate(
    model: type[BaseModel],
    table: dict[str, Any],
    prefix: Loc,
    filename: str,
    *,
    fill: dict[str, Any],
    defaults: dict[str, Any] | None = None,
) -> tuple[Any, Problems]:
    """Validate one record from its table, the keys the loader fills (``fill``) and ``defaults``.

    A filled key written in the table is an unknown key. On failure every problem is returned, each at its
    full key path, and no record.
    """
    problems: Problems = []
    for key in fill:
        if key in table:
            problems.append(CatalogProblem(filename, _path((*prefix, key)), _unknown_key(model)))
    try:
        record = model.model_validate({**(defaults or {}), **table, **fill})
    except ValidationError as exc:
        for error in exc.errors():
            for loc, message in _translate(model, error):
                problems.append(CatalogProblem(filename, _path((*prefix, *loc)), message))
        return None, problems
    return (None if problems else record), problems


# -- pydantic's errors in the catalog's words ------------------------------------------------------------

_EXPECTED_TYPES = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "decimal_type": "a number",
    "decimal_parsing": "a number",
    "date_type": "a date (YYYY-MM-DD)",
    "date_parsing": "a date (YYYY-MM-DD)",
    "date_from_datetime_parsing": "a date (YYYY-MM-DD)",
    "date_from_datetime_inexact": "a date (YYYY-MM-DD) without a time",
    "tuple_type": "an array",
    "list_type": "an array",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "dict_type": "a table",
    "bool_type": "true or false",
}
_COMPARISONS = {
    "greater_than_equal": ("≥", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("≤", "le"),
    "less_than": ("<", "lt"),
}


def _translate(model: type[BaseModel], error: Any) -> list[tuple[Loc, str]]:
    """One pydantic error as ``(key path, message)`` pairs: union tags dropped, the message in plain words."""
    kind: str = error["type"]
    loc, annotation, holder, charge = _walk(model, error["loc"])
    value = error.get("input")
    ctx = error.get("ctx") or {}
    field = loc[-1] if loc and isinstance(loc[-1], str) else "value"
    if kind == "value_error":
        exc = ctx.get("error")
        if isinstance(exc, LocatedValueError):
            return [((*loc, *path), message) for path, message in exc.items]
        return [(loc, str(exc))]
    if kind == "extra_forbidden":
        return [(loc, _unknown_key(holder, charge))]
    if kind == "missing":
        return [(loc, "required key is missing")]
    if kind == "union_tag_invalid":
        return [((*loc, "model"), _unknown_value("model", ctx.get("tag"), CHARGE_MODELS))]
    if kind == "union_tag_not_found":
        return [((*loc, "model"), f"required key is missing (one of: {', '.join(CHARGE_MODELS)})")]
    if kind == "enum" and isinstance(annotation, type) and issubclass(annotation, Enum):
        return [(loc, _unknown_value(str(field), value, annotation))]
    if kind in _COMPARISONS:
        if field == "rate":
            return [(loc, f"must be a percent between 0 and 100 (got {_show(value)})")]
        sign, bound = _COMPARISONS[kind]
        return [(loc, f"must be {sign} {ctx.get(bound)} (got {_show(value)})")]
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return [(loc, "must not be empty")]
    if kind == "finite_number":
        return [(loc, "must be a finite number")]
    if kind in _EXPECTED_TYPES:
        return [(loc, _expected(_EXPECTED_TYPES[kind], value))]
    return [(loc, str(error["msg"]))]


def _walk(model: type[BaseModel], raw_loc: Loc) -> tuple[Loc, Any, type[BaseModel] | None, type[BaseModel] | None]:
    """Follow pydantic's error location through the records.

    Returns the key path without the discriminator tags pydantic inserts for charges (``charges, 0,
    graduated, tiers`` → ``charges[0].tiers``) and without a filter's ``price`` (its price keys sit in the
    filter's own table: ``filters[1].price.unit_amount`` → ``filters[1].unit_amount``), the annotation found
    there, the record class that holds the last key (for listing the allowed keys), and the charge class last
    passed through (whose price keys a filter allows).
    """
    loc: list[str | int] = []
    annotation: Any = model
    holder: type[BaseModel] | None = None
    charge: type[BaseModel] | None = None
    for segment in raw_loc:
        annotation = _unwrap(annotation)
        if isinstance(segment, int) and typing.get_origin(annotation) in (tuple, list):
            loc.append(segment)
            annotation = typing.get_args(annotation)[0]
            continue
        records = _records_in(annotation)
        tagged = [r for r in records if _tag_of(r) == segment] if len(records) > 1 else []
        if tagged:
            annotation = charge = tagged[0]
            continue
        if records == [ChargeFilter] and segment == "price":
            annotation = ChargeFilter.model_fields["price"].annotation
            continue
        loc.append(segment)
        holder = records[0] if len(records) == 1 else None
        field = holder.model_fields.get(str(segment)) if holder is not None else None
        annotation = field.annotation if field is not None else None
    return tuple(loc), _unwrap(annotation), holder, charge


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``| None``."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return annotation


def _records_in(annotation: Any) -> list[type[BaseModel]]:
    """The record classes an annotation allows (one, or the members of a union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [r for member in typing.get_args(annotation) for r in _records_in(_unwrap(member))]
    return []


def _tag_of(record: type[BaseModel]) -> str | None:
    field = record.model_fields.get("model")
    if field is None or typing.get_origin(field.annotation) is not typing.Literal:
        return None
    return str(typing.get_args(field.annotation)[0])


def _unknown_key(record: type[BaseModel] | None, charge: type[BaseModel] | None = None) -> str:
    """``unknown key (allowed: ...)``, the allowed keys in the record's field order; a filter's are its own keys
    and the price keys of its charge's model."""
    if record is None:
        return "unknown key"
    allowed = [name for name in record.model_fields if name != _FILLED_KEYS.get(record)]
    if record is ChargeFilter:
        prices = getattr(charge, "price_fields", None)
        allowed = [name for name in allowed if name != "price"] + (list(prices()) if callable(prices) else [])
    elif "filters" in allowed:  # a charge: its price keys first, then the keys that price by dimension
        allowed = [name for name in allowed if name not in _DIMENSION_KEYS] + list(_DIMENSION_KEYS)
    return f"unknown key (allowed: {', '.join(allowed)})"


def _unknown_value(name: str, value: Any, allowed: Any) -> str:
    values = [m.value for m in allowed] if isinstance(allowed, type) and issubclass(allowed, Enum) else allowed
    return f"unknown {name} {_show(value)} (expected one of: {', '.join(values)})"


def _expected(what: str, value: Any) -> str:
    return f"expected {what}, got {_show(value)}"


def _show(value: Any) -> str:
    """A value as the catalog wrote it: strings quoted, numbers and dates bare, tables and arrays named."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _path(loc: Loc) -> str:
    """A key path as TOML writes it: ``plans.growth.charges[0].tiers[2].up_to`` (odd keys quoted)."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
            text += f".{key}" if text else key
    return text


_AT_LINE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_AT_END = re.compile(r"\s*\(at end of document\)$")


_LONG_DIGITS = re.compile(r"[0-9_]{4000,}")


def _syntax_problem(filename: str, exc: ValueError, text: str) -> CatalogProblem:
    """A TOML syntax error as ``FILE:LINE: invalid TOML: message (column N)``.

    Python 3.14 gives ``msg``, ``lineno`` and ``colno``; earlier versions only put them in the message. An
    error at the end of the document (an unclosed array or string) is reported on the file's last line. An
    integer of thousands of digits, which Python refuses to read, is reported on its line.
    """
    if not isinstance(exc, tomllib.TOMLDecodeError):
        found = _LONG_DIGITS.search(text)
        if found is None:
            return CatalogProblem(filename, "", f"invalid TOML: {exc}")
        message = "a number with thousands of digits (numbers must be below 10^15)"
        return CatalogProblem(filename, "", message, line=text.count("\n", 0, found.start()) + 1)
    message = str(exc.args[0]) if exc.args else str(exc)
    line: int | None = getattr(exc, "lineno", None)
    column: int | None = getattr(exc, "colno", None)
    bare_message: object = getattr(exc, "msg", None)
    if line is not None and isinstance(bare_message, str):
        message = bare_message
    elif found := _AT_LINE.search(message):
        line, column = int(found.group(1)), int(found.group(2))
        message = message[: found.start()]
    elif found := _AT_END.search(message):
        line = max(len(text.splitlines()), 1)
        message = message[: found.start()] + " at the end of the file"
    suffix = f" (column {column})" if column is not None else ""
    if text.startswith("\ufeff") and line == 1 and column == 1:  # what Windows editors write first, unseen
        suffix += ": the file begins with a byte order mark; save it as UTF-8 without BOM"
    return CatalogProblem(filename, "", f"invalid TOML: {message}{suffix}", line=line)
