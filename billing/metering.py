"""Metering as the billing run, alerts and quotes need it: the catalog's meters handed to ``meters``, usage
windows aggregated in one batch, late events found, a file of events aggregated for a quote.

``meters`` knows nothing of plans; this module tells it which meters exist and which ones must hand back each
event's value (those priced by the ``percentage`` model, which prices every transaction on its own).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from billing.core.periods import LATE_USAGE_MONTHS, Period
from billing.event_store import event_store
from invoices import store
from meters import (
    CountedWindow,
    MeterSpec,
    Split,
    ingest_file,
    windows_with_late_events,
)
from meters.store.sql import SqlEventStore
from pricing_plans.charge_models import MeterUsage
from pricing_plans.charge_models.base import PerEventFees, PerEventFeeTerms
from pricing_plans.charge_models.percentage import terms_of
from pricing_plans.dimensions import DimensionedUsage, Part
from pricing_plans.models import Catalog, Charge, PercentageCharge, Plan

__all__ = [
    "AnyUsage",
    "UsageWindow",
    "aggregate_periods",
    "aggregate_windows",
    "charge_split",
    "events_of",
    "late_event_periods",
    "meter_specs",
    "total_of",
    "usage_from_event_file",
]


def meter_specs(catalog: Catalog) -> dict[str, MeterSpec]:
    """The catalog's meters as ``meters`` needs them (worked out once per catalog: every ingested batch asks)."""
    known = _SPECS.get(id(catalog))
    if known is not None and known[0] is catalog:
        return known[1]
    specs = _meter_specs(catalog)
    if len(_SPECS) >= 8:
        _SPECS.clear()
    _SPECS[id(catalog)] = (catalog, specs)
    return specs


_SPECS: dict[int, tuple[Catalog, dict[str, MeterSpec]]] = {}  # the last catalogs' (kept alive while here)


def _meter_specs(catalog: Catalog, plans: Iterable[Plan] = ()) -> dict[str, MeterSpec]:
    """The meters of the catalog; the ``percentage`` charges of its plans and of ``plans`` (negotiated prices)
    sum their fees per event in the database (their terms), those priced by dimension read each event's value."""
    fees: dict[str, dict[PerEventFeeTerms, None]] = {}
    per_event: set[str] = set()
    for plan in (*catalog.all_plans(), *plans):
        for charge in plan.charges:
            if not isinstance(charge, PercentageCharge):
                continue
            if charge.is_dimensioned:
                per_event.add(charge.meter)
            if charge.rate is not None:  # (a charge with filters may price only the events they match)
                fees.setdefault(charge.meter, {})[terms_of(charge)] = None
    return {
        code: MeterSpec(
            code=code,
            aggregation=meter.aggregation.value,
            unique_property=meter.unique_property,
            keep_event_values=code in per_event,
            per_event_fees=tuple(fees.get(code, ())),
        )
        for code, meter in catalog.meters.items()
    }


Windows = Mapping[Any, tuple[str, dt.datetime, dt.datetime]]
# A meter's usage in a window: a plain aggregate, or, for a charge priced by dimension, its parts and total.
AnyUsage = MeterUsage | DimensionedUsage


def total_of(usage: AnyUsage) -> MeterUsage:
    """The meter's own aggregate over all of the window's events (what a threshold on the meter measures)."""
    return usage.total if isinstance(usage, DimensionedUsage) else usage


def charge_split(charge: Charge) -> Split:
    """How ``meters`` splits a dimensioned charge's events: its filters in match order (most properties first),
    each with the group_by that applies to it, then the group_by of the events matching none."""
    order = charge.match_order
    return Split.of(
        [charge.filters[index].properties for index in order],
        [*(charge.group_by_of(index) for index in order), charge.group_by_of(None)],
    )


def aggregate_windows(
    engine: Engine,
    catalog: Catalog,
    windows: Windows,
    plans: Mapping[Any, Plan] | None = None,
    *,
    meters: Iterable[str] | None = None,
    **filters: Any,
) -> dict[Any, dict[str, AnyUsage]]:
    """Every window's usage per meter, in one batch: ``{key: {meter: MeterUsage}}``; for a window whose plan (in
    ``plans``, by key) has a charge priced by dimension, that meter's usage is a ``DimensionedUsage``: its parts
    as the database splits them, and the plain aggregate as its total. ``meters``: only those of the catalog's
    meters (default: all of them)."""
    if not windows:
        return {}
    specs = meter_specs(catalog)
    negotiated = _negotiated_percentages(catalog, plans or {})
    if negotiated:
        specs = _meter_specs(catalog, negotiated)
    if meters is not None:
        wanted = set(meters)
        specs = {code: spec for code, spec in specs.items() if code in wanted}
    store = event_store(engine)
    found = store.aggregate(windows, specs, **filters)
    usage: dict[Any, dict[str, AnyUsage]] = {key: {} for key in windows}
    for (key, meter), aggregate in found.items():
        fees = (
            None
            if aggregate.fees is None
            else {cast(PerEventFeeTerms, t): PerEventFees(*f) for t, f in aggregate.fees.items()}
        )
        usage[key][meter] = MeterUsage(aggregate.quantity, aggregate.events, aggregate.values, fees)
    # windows whose plans split the meters alike share one query; few distinct splits however many windows
    charges = _dimensioned(windows, plans or {}, specs)
    by_split: dict[tuple[tuple[str, Split], ...], list[Any]] = {}
    known: dict[int, tuple[Split, tuple[int, ...]]] = {}  # by charge (the windows of one plan share its charges)
    orders: dict[Any, dict[str, tuple[int, ...]]] = {}
    for key, by_meter in charges.items():
        for charge in by_meter.values():
            if id(charge) not in known:
                known[id(charge)] = (charge_split(charge), charge.match_order)
        signature = tuple(sorted((meter, known[id(charge)][0]) for meter, charge in by_meter.items()))
        by_split.setdefault(signature, []).append(key)
        orders[key] = {meter: known[id(charge)][1] for meter, charge in by_meter.items()}
    for signature, keys in by_split.items():
        parts = store.aggregate_split({key: windows[key] for key in keys}, specs, dict(signature), **filters)
        split: dict[tuple[Any, str], dict[Part, MeterUsage]] = {(key, m): {} for key in keys for m, _ in signature}
        for (key, meter, position, group), aggregate in parts.items():
            index = None if position is None else orders[key][meter][position]
            # (a Part built as a tuple: a window may have many parts, and a NamedTuple's constructor is slow)
            split[(key, meter)][_new_tuple(Part, (index, group))] = MeterUsage(
                aggregate.quantity, aggregate.events, aggregate.values
            )
        for (key, meter), by_part in split.items():
            usage[key][meter] = DimensionedUsage(parts=by_part, total=total_of(usage[key][meter]))
    return usage


_new_tuple = tuple.__new__


def _negotiated_percentages(catalog: Catalog, plans: Mapping[Any, Plan]) -> list[Plan]:
    """The plans of ``plans`` with a percentage charge the catalog's plans do not have (negotiated terms): their
    terms are summed too."""
    known = {id(plan) for plan in catalog.all_plans()}
    found = {id(plan): plan for plan in plans.values() if id(plan) not in known}
    catalog_terms = {
        (c.meter, terms_of(c), c.is_dimensioned)
        for plan in catalog.all_plans()
        for c in plan.charges
        if isinstance(c, PercentageCharge) and c.rate is not None
    }
    return [
        plan
        for plan in found.values()
        if any(
            isinstance(c, PercentageCharge)
            and (c.rate is None or (c.meter, terms_of(c), c.is_dimensioned) not in catalog_terms)
            for c in plan.charges
        )
    ]


def _dimensioned(
    windows: Windows, plans: Mapping[Any, Plan], specs: Mapping[str, MeterSpec]
) -> dict[Any, dict[str, Charge]]:
    """The charges priced by dimension of each window's plan, by meter."""
    found: dict[Any, dict[str, Charge]] = {}
    for key in windows:
        plan = plans.get(key)
        if plan is not None:
            by_meter = {c.meter: c for c in plan.charges if c.is_dimensioned and c.meter in specs}
            if by_meter:
                found[key] = by_meter
    return found


@dataclass(frozen=True, slots=True)
class UsageWindow:
    """Whose usage, over which billing period, and over which part of it (a subscription's; None: all of it)."""

    customer: str
    timezone: str
    period: Period
    part: Period | None = None


_MICROSECOND = dt.timedelta(microseconds=1)
_QUANTITY = Decimal("0.000001")


def aggregate_periods(
    engine: Engine,
    catalog: Catalog,
    windows: Mapping[Any, UsageWindow],
    plans: Mapping[Any, Plan] | None = None,
    *,
    meters: Iterable[str] | None = None,
) -> dict[Any, dict[str, AnyUsage]]:
    """The usage of every window, in one batch, as the billing run, alerts and previews all count it (split by
    dimension for the charges of ``plans`` priced so, see :func:`aggregate_windows`).

    The part of a period a subscription covers is a window of local midnights in the customer's timezone. A
    weighted sum is the time-weighted average level over its window; a subscription covering part of the period
    holds its level for that part only, so its GB-months are ∫ level dt over the part divided by the whole
    period (rounded half-even to the meters' 6 decimals, like the aggregation itself; each part alike).
    ``meters``: only those of the catalog's meters (default: all of them).
    """
    utc = {
        key: (window.customer, *(window.part or window.period).utc_window(window.timezone))
        for key, window in windows.items()
    }
    usage = aggregate_windows(engine, catalog, utc, plans, meters=meters)
    weighted = [code for code, meter in catalog.meters.items() if meter.aggregation.value == "weighted_sum"]
    for key, window in windows.items():
        if not weighted or window.part is None or window.part == window.period:
            continue
        _, start, end = utc[key]
        period_start, period_end = window.period.utc_window(window.timezone)
        share = Decimal((end - start) // _MICROSECOND) / Decimal((period_end - period_start) // _MICROSECOND)
        for code in weighted:
            found = usage[key].get(code)
            if isinstance(found, DimensionedUsage):
                parts = {part: _shared(used, share) for part, used in found.parts.items()}
                usage[key][code] = DimensionedUsage(parts=parts, total=_shared(found.total, share))
            elif found is not None:
                usage[key][code] = _shared(found, share)
    return usage


def _shared(usage: MeterUsage, share: Decimal) -> MeterUsage:
    return replace(usage, quantity=(usage.quantity * share).quantize(_QUANTITY, rounding=ROUND_HALF_EVEN))


def events_of(usage: Iterable[AnyUsage]) -> int:
    """How many events the usages counted (each event once: a dimensioned usage's total)."""
    return sum(total_of(found).events for found in usage)


def late_event_periods(
    session: Session, period: Period, customer: str | None = None, *, lookback: int = LATE_USAGE_MONTHS
) -> list[tuple[str, Period]]:
    """The (customer, earlier period) pairs whose issued invoice may lack events received after its usage was
    aggregated: those periods are rated again and the difference billed as late usage. Periods are looked for
    ``lookback`` months back: the late-usage window, which ingestion enforces too."""
    earliest = _months_back(period.start, lookback)
    counted: dict[tuple[str, Period], CountedWindow] = {}
    for invoice in store.issued_period_invoices(session, since=earliest, before=period.start, customer=customer):
        # the usage cutoff is the run's ingestion cutoff: every event received up to it was counted (meters)
        issued_period = Period(invoice.period_start, invoice.period_end)
        start, end = issued_period.utc_window(invoice.timezone)
        counted[(invoice.customer_external_id, issued_period)] = CountedWindow(
            invoice.customer_external_id, start, end, invoice.usage_cutoff
        )
    events = event_store(session.get_bind().engine)
    if isinstance(events, SqlEventStore) and events.engine is session.get_bind().engine:
        late = windows_with_late_events(session, counted)  # in the session's own transaction
    else:
        late = events.late_windows(counted)
    return sorted(late, key=lambda pair: (pair[0], pair[1].start))


def _months_back(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 - months
    return dt.date(index // 12, index % 12 + 1, 1)


def usage_from_event_file(
    path: str | os.PathLike[str],
    catalog: Catalog,
    period: Period,
    timezone: str,
    customer: str | None = None,
    plan: Plan | None = None,
) -> dict[str, AnyUsage]:
    """Aggregate a file of usage events for a quote, with no database of the user's: the events go through the
    same validation and the same aggregation as ingestion and the billing run (split by dimension for ``plan``'s
    charges priced so), in a scratch database."""
    from billing.db import make_engine, upgrade
    from meters.events import parse_json_line

    customers: set[str] = set()
    with Path(path).open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                try:
                    record = parse_json_line(line)
                except ValueError:
                    continue  # ingestion below reports it with its line number
                if isinstance(record.get("customer"), str):
                    customers.add(record["customer"])
    if customer is None:
        if len(customers) > 1:
            raise ValueError(f"{path}: events of several customers ({', '.join(sorted(customers))}): add --customer")
        customer = next(iter(customers), "quote")
    scratch = tempfile.TemporaryDirectory(prefix="billing-quote-")
    engine = make_engine(f"sqlite:///{Path(scratch.name) / 'quote.db'}")
    try:
        upgrade(engine)
        # every customer of the file is known (another's event is checked like the rest, then left out of the
        # customer's usage by the aggregation)
        report = ingest_file(engine, path, meter_specs(catalog), customers | {customer})
        if report.rejected:
            first = report.rejected[0]
            raise ValueError(f"{path}:{first.line}: {first.reason} ({len(report.rejected)} event(s) rejected in all)")
        start, end = period.utc_window(timezone)
        plans = {"quote": plan} if plan is not None else None
        return aggregate_windows(engine, catalog, {"quote": (customer, start, end)}, plans)["quote"]
    finally:
        engine.dispose()
        scratch.cleanup()
