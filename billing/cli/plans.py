"""``billing plans``: check the price catalog and look at one plan.

``billing plans validate [CATALOG]`` loads the catalog and prints a table of its plans (exit 0) or every
problem, one per line as ``FILE: KEY.PATH: message``, on standard error (exit 1).

``billing plans show PLAN [--catalog FILE] [--version N]`` prints one plan version: its fee, commitment,
thresholds, each charge with its tiers, and what 1, 1,000 and 1,000,000 units of each charge would cost
(each amount rounded once to the currency's minor units). For the percentage models N is one payment of
value N. A charge priced by event dimension shows its group_by, its default price (or that it has none) and
each filter with its properties, group_by and prices.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from billing.cli import _json
from billing.cli._common import console, err_console, fail
from billing.config import get_settings
from pricing_plans import (
    Catalog,
    CatalogProblem,
    D,
    GraduatedCharge,
    GraduatedPercentageCharge,
    MeterUsage,
    PackageCharge,
    PercentageCharge,
    PercentTier,
    PerUnitCharge,
    Plan,
    Tier,
    UnknownPlanError,
    VolumeCharge,
    format_amount,
    load_catalog,
    rate_charge,
    round_money,
)
from pricing_plans.errors import AmountOutOfRangeError
from pricing_plans.models import Charge
from pricing_plans.money import MAX_AMOUNT

__all__ = ["register"]

AnyTier = TypeVar("AnyTier", Tier, PercentTier)

EXAMPLE_QUANTITIES = (D(1), D(1_000), D(1_000_000))
_PER_VALUE_MODELS = ("percentage", "graduated_percentage")

plans_app = typer.Typer(
    name="plans",
    help="Check the price catalog and look at its plans.",
    no_args_is_help=True,
)

CatalogArgument = typer.Argument(
    None, help="The catalog file (default: `catalog` from config.toml or BILLING_CATALOG).", show_default=False
)
JsonOption = typer.Option(False, "--json", help="Print JSON (the API's fields) instead of text.")
CatalogOption = typer.Option(
    None, "--catalog", help="The catalog file (default: `catalog` from config.toml).", show_default=False
)


def register(app: typer.Typer) -> None:
    """Add the ``plans`` commands to the ``billing`` command."""
    app.add_typer(plans_app, name="plans")


@plans_app.command("validate")
def validate(catalog: Path | None = CatalogArgument, as_json: bool = JsonOption) -> None:
    """Validate the catalog: a table of its plans, or every problem (one per line) and exit 1."""
    path = catalog or Path(get_settings().catalog)
    loaded = _load_or_exit(path)
    if as_json:  # every plan version, as the API shows a plan
        _json.emit(_json.listing(_json.plan_json(loaded, plan) for plan in loaded.all_plans()))
        return
    console.print(_plans_table(loaded))
    versions = sum(len(v) for v in loaded.plans.values())
    console.print(
        f"{escape(str(path))}: OK — {len(loaded.meters)} meters, {len(loaded.plans)} plans "
        f"({versions} plan versions), rounding {loaded.rounding.value}",
        highlight=False,
        soft_wrap=True,
    )


@plans_app.command("show")
def show(
    plan: str = typer.Argument(..., help="The plan code."),
    catalog: Path | None = CatalogOption,
    version: int | None = typer.Option(None, "--version", help="The plan version (default: the latest)."),
    as_json: bool = JsonOption,
) -> None:
    """Show one plan: fee, charges with their tiers, and what 1, 1,000 and 1,000,000 units would cost."""
    path = catalog or Path(get_settings().catalog)
    loaded = _load_or_exit(path)
    try:
        chosen = loaded.plan(plan, version)
    except UnknownPlanError as exc:
        fail(str(exc))
    if as_json:
        _json.emit(_json.plan_json(loaded, chosen))
        return
    _print_plan(loaded, chosen)


# -- validate ---------------------------------------------------------------------------------------------


def _load_or_exit(path: Path) -> Catalog:
    """The catalog, or every problem printed on standard error and exit 1."""
    catalog, problems = load_catalog(path)
    if problems or catalog is None:
        _print_problems(path, problems)
        raise typer.Exit(1)
    return catalog


def _print_problems(path: Path, problems: list[CatalogProblem]) -> None:
    for problem in problems:
        err_console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    count = f"{len(problems)} problem" + ("" if len(problems) == 1 else "s")
    err_console.print(f"{count} in {path}", markup=False, highlight=False, soft_wrap=True)


def _plans_table(catalog: Catalog) -> Table:
    """One row per plan version: code and version, name, currency and interval; fee; charges; minimum."""
    table = Table(
        title=f"Plans in {escape(catalog.source)}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        show_edge=False,
    )
    table.add_column("Plan", no_wrap=True)
    table.add_column("Fee", justify="right", no_wrap=True)
    table.add_column("Charges (meter: model)", ratio=1, overflow="fold")
    table.add_column("Minimum", justify="right", no_wrap=True)
    for plan in catalog.all_plans():
        about = [
            f"[bold]{escape(plan.code)}[/] v{plan.version}",
            escape(plan.name),
            f"{plan.currency} per {plan.interval.value}",
        ]
        if plan.effective_from is not None:
            about.append(f"from {plan.effective_from.isoformat()}")
        charges = "\n".join(f"{c.meter}: {c.model}{_dimensions_note(c)}" for c in plan.charges) or "—"
        minimum = _as_written(plan.commitment.minimum, plan.currency) if plan.commitment else "—"
        table.add_row(
            "\n".join(about),
            _fee(plan).replace(" ", "\n", 1).replace(", ", "\n").replace("per seat ", "per seat\n"),
            escape(charges),
            minimum,
            end_section=True,
        )
    return table


def _as_written(amount: Decimal, currency: str) -> str:
    """A catalog amount as the catalog gives it, with at least the currency's minor digits: 49 USD is "49.00",
    and a fee of 100000.50 COP stays "100000.50" (never rounded here to what one invoice of it bills: proration
    and the catalog's rounding make that)."""
    return format_amount(amount, currency) if round_money(amount, currency) == amount else f"{amount.normalize():f}"


def _dimensions_note(charge: Charge) -> str:
    """`` (2 filters, by region)`` for a charge priced by event dimension, else nothing."""
    notes = []
    if charge.filters:
        notes.append(f"{len(charge.filters)} filter{'' if len(charge.filters) == 1 else 's'}")
    if charge.group_by:
        notes.append("by " + ", ".join(charge.group_by))
    return f" ({', '.join(notes)})" if notes else ""


def _fee(plan: Plan, per: str = "") -> str:
    """``49.00 in advance`` (``49.00 per month, in advance``), with the trial if any; ``—`` without a fee."""
    if plan.subscription is None:
        return "—" if not per else "none"
    fee = plan.subscription
    seat = " per seat" if fee.seats else ""
    amount = _as_written(fee.fee, plan.currency) + seat + (f" per {per}," if per else "")
    text = f"{amount} {fee.billing.value.replace('_', ' ')}"
    return f"{text}, {fee.trial_days}-day trial" if fee.trial_days else text


# -- show -------------------------------------------------------------------------------------------------


def _print_plan(catalog: Catalog, plan: Plan) -> None:
    versions = catalog.plans[plan.code]
    console.print(
        f"[bold]{escape(plan.name)}[/] — "
        + escape(f"{plan.code} version {plan.version} of {len(versions)}, [plans.{plan.key}]"),
        highlight=False,
    )
    if plan.description:
        console.print(escape(plan.description), highlight=False)
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    facts.add_row("currency", plan.currency)
    facts.add_row("interval", plan.interval.value)
    facts.add_row("billing anchor", plan.billing_anchor.value)
    facts.add_row("effective from", plan.effective_from.isoformat() if plan.effective_from else "always")
    facts.add_row("subscription fee", _fee(plan, per=plan.interval.value))
    if plan.commitment is not None:
        facts.add_row(
            "commitment",
            f"usage charges trued up to {_as_written(plan.commitment.minimum, plan.currency)} "
            f"per {plan.interval.value}",
        )
    for threshold in plan.thresholds:
        levels = ", ".join(f"{level} %" for level in threshold.levels)
        if threshold.allowance is not None:
            what = f"allowance {_number(threshold.allowance)} {threshold.meter}"
        else:
            what = f"spend cap {_as_written(threshold.spend_cap or D(0), plan.currency)}"
        hard = " (hard limit)" if threshold.hard_limit else ""
        facts.add_row("threshold", f"{escape(what)} at {levels}{hard}")
    if plan.progressive_billing is not None:
        amounts = ", ".join(_as_written(amount, plan.currency) for amount in plan.progressive_billing.amounts)
        reach = f"usage invoiced when the period's usage charges reach {amounts} {plan.currency}"
        facts.add_row("progressive billing", reach)
    console.print(facts)
    for index, charge in enumerate(plan.charges):
        meter = catalog.meters[charge.meter]
        what = meter.name if charge.model in _PER_VALUE_MODELS else f"{meter.name}, per {meter.unit}"
        console.print()
        console.print(
            "[bold]" + escape(f"charges[{index}]") + "[/]: " + escape(f"{charge.meter} ({what}) — {charge.model}"),
            highlight=False,
        )
        if charge.description:
            console.print(escape(charge.description), highlight=False)
        _print_charge_prices(catalog, plan, charge, meter.unit)


def _print_charge_prices(catalog: Catalog, plan: Plan, charge: Charge, unit: str) -> None:
    """A charge's prices: its own (the default of a filtered charge) with examples, then each filter's."""
    if charge.group_by:
        console.print(escape(f"group_by: {', '.join(charge.group_by)} (one line per distinct value)"), highlight=False)
    if charge.filters:
        heading = "default (events matching no filter)"
        if not charge.has_default:
            heading += ": none, such events are not billed (the billing run reports them)"
        console.print(escape(heading), highlight=False)
    if charge.has_default:
        console.print(_terms_table(charge, plan.currency))
        console.print(_examples_table(catalog, plan, charge, unit))
    for number in range(len(charge.filters)):
        console.print(escape(_filter_heading(charge, number)), highlight=False)
        console.print(_terms_table(charge.filters[number].price, plan.currency))


def _filter_heading(charge: Charge, number: int) -> str:
    """``filters[0] "US & Canada": country in US, CA; group_by region``."""
    found = charge.filters[number]
    where = "; ".join(f"{name} in {', '.join(values)}" for name, values in found.properties.items())
    text = f"filters[{number}]" + (f' "{found.name}"' if found.name else "") + f": {where}"
    group_by = charge.group_by_of(number)
    if group_by != charge.group_by or found.group_by is not None:
        text += f"; group_by {', '.join(group_by) or 'none'}"
    return text


def _terms_table(charge: Charge, currency: str) -> Table:
    """The charge's prices: its tiers, or its parameters (of a charge that has them: see ``has_default``)."""
    if isinstance(charge, GraduatedCharge | VolumeCharge):
        table = Table("Tier", "From", "Up to", f"Unit amount ({currency})", f"Flat amount ({currency})")
        for number, (low, tier) in enumerate(_lower_bounds(charge.tiers or ()), start=1):
            table.add_row(str(number), low, _bound(tier.up_to), _number(tier.unit_amount), _number(tier.flat_amount))
        return table
    if isinstance(charge, GraduatedPercentageCharge):
        table = Table("Tier", "From", "Up to", "Rate", f"Flat amount ({currency})")
        for number, (low, tier) in enumerate(_lower_bounds(charge.tiers or ()), start=1):
            table.add_row(str(number), low, _bound(tier.up_to), f"{tier.rate} %", _number(tier.flat_amount))
        return table
    table = Table("Key", "Value")
    if isinstance(charge, PerUnitCharge):
        table.add_row("unit_amount", f"{_number(charge.unit_amount or D(0))} {currency}")
    elif isinstance(charge, PackageCharge):
        table.add_row("package_size", _number(charge.package_size or D(0)))
        table.add_row("package_amount", f"{_number(charge.package_amount or D(0))} {currency}")
        table.add_row("free_units", _number(charge.free_units))
    elif isinstance(charge, PercentageCharge):
        table.add_row("rate", f"{charge.rate} %")
        table.add_row("fixed_amount", f"{_number(charge.fixed_amount)} {currency}")
        table.add_row("free_events", str(charge.free_events))
        table.add_row("free_amount", f"{_number(charge.free_amount)} {currency}")
        for key in ("per_transaction_min", "per_transaction_max"):
            value = getattr(charge, key)
            table.add_row(key, "—" if value is None else f"{_number(value)} {currency}")
    return table


def _examples_table(catalog: Catalog, plan: Plan, charge: Charge, unit: str) -> Table:
    """What 1, 1,000 and 1,000,000 units cost, each line rounded once to the currency's minor units."""
    per_value = charge.model in _PER_VALUE_MODELS
    heading = f"One payment ({plan.currency})" if per_value else f"Quantity ({unit})"
    table = Table(heading, f"Amount ({plan.currency})", "How", title="Examples", title_justify="left")
    table.columns[1].justify = "right"
    for quantity in EXAMPLE_QUANTITIES:
        if per_value:
            usage = MeterUsage(quantity=quantity, events=1, values=(quantity,))
        else:
            usage = MeterUsage(quantity=quantity, events=int(quantity))
        rated = rate_charge(charge, usage)
        try:
            amount = format_amount(round_money(rated.amount, plan.currency, catalog.rounding), plan.currency)
        except AmountOutOfRangeError:
            amount = f"too large (≥ {MAX_AMOUNT:,})"  # a line the billing run would refuse to bill
        table.add_row(_number(quantity), amount, escape(rated.explanation))
    return table


def _lower_bounds(tiers: Sequence[AnyTier]) -> list[tuple[str, AnyTier]]:
    """Each tier with the bound it starts after (0 for the first)."""
    result: list[tuple[str, AnyTier]] = []
    previous: Decimal | None = D(0)
    for tier in tiers:
        result.append((_bound(previous), tier))
        previous = tier.up_to
    return result


def _bound(value: Decimal | None) -> str:
    return "∞" if value is None else _number(value)


def _number(value: Decimal) -> str:
    """A number with thousands separators and its own digits: 1000000 → 1,000,000; 0.0015 stays 0.0015."""
    return f"{value:,}"
