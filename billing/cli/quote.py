"""``billing quote``: rate one customer-period from a catalog and some usage, with no database."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from rich.markup import escape
from rich.table import Table

from billing.cli._common import console, fail, load_catalog_for_cli
from billing.core.domain import SubscriptionTerms
from billing.core.fees import billed_in_advance, fee_period_for, schedule_of
from billing.core.overrides import NEGOTIATED
from billing.core.periods import Period, billing_period_named, parse_period
from billing.core.rating import RatedPeriod, quote_period
from billing.metering import AnyUsage, usage_from_event_file
from pricing_plans.charge_models import MeterUsage
from pricing_plans.errors import AmountOutOfRangeError, UnknownPlanError
from pricing_plans.loader import apply_override, loads_override
from pricing_plans.models import Catalog, Plan
from pricing_plans.money import D, format_amount


def register(app: typer.Typer) -> None:
    app.command("quote")(quote)


def quote(
    plan: str = typer.Option(..., "--plan", help="Plan code."),
    usage: list[str] = typer.Option([], "--usage", help="METER=QUANTITY, repeatable."),
    events: Path | None = typer.Option(None, "--events", help="Usage events (JSON Lines) to aggregate."),
    start: str | None = typer.Option(None, "--start", help="Subscription start date (prorates the fee)."),
    period: str | None = typer.Option(
        None,
        "--period",
        help="Billing period: YYYY-MM, an ISO week YYYY-Www or START..END (default: the period of --start). A month "
        "names an anniversary month ending in it.",
    ),
    catalog: Path | None = typer.Option(None, "--catalog", help="Catalog file (default from config.toml)."),
    version: int | None = typer.Option(None, "--version", help="Plan version (default: the one in effect)."),
    timezone: str = typer.Option("UTC", "--timezone", help="Timezone of the period's bounds for --events."),
    customer: str | None = typer.Option(None, "--customer", help="With --events: the customer whose events count."),
    quantity: int = typer.Option(1, "--quantity", min=1, help="Seats, on a plan priced per seat (default 1)."),
    override: Path | None = typer.Option(
        None, "--override", help="A negotiated price (the file of `billing subscriptions override`) on the plan."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the quote as JSON."),
) -> None:
    """Rate one customer-period: the fee, each charge with its breakdown, the commitment true-up, the total."""
    if bool(usage) == bool(events):
        fail("give the usage either as --usage METER=QUANTITY ... or as --events FILE.jsonl (one of the two)", code=2)
    try:
        ZoneInfo(timezone)
    except (ValueError, ZoneInfoNotFoundError):
        fail(f"--timezone: unknown timezone {timezone!r} (expected an IANA name such as Europe/Berlin or UTC)")
    cat = load_catalog_for_cli(catalog)
    start_day = _parse_date(start, "--start") if start else None
    try:
        named = parse_period(period) if period else None
    except ValueError as error:
        fail(f"--period: {error}")
    first_day = start_day or (named.start if named else dt.date.today())
    try:
        chosen = cat.plan(plan, version) if version else cat.plan_for_start(plan, first_day)
    except UnknownPlanError as error:
        fail(str(error))
    if override is not None:
        chosen = _negotiated(chosen, override, cat)
    billing_period = _billing_period(chosen, first_day, named)
    if start_day and start_day >= billing_period.end:
        fail(f"--start {start_day} is after the period {billing_period.label}")

    meter_usage = _usage_to_quote(cat, chosen, billing_period, usage, events, timezone, customer)
    if quantity != 1 and not (chosen.subscription is not None and chosen.subscription.seats):
        fail(f"--quantity: plan {chosen.code!r} is not priced per seat, so its quantity is 1")
    terms = SubscriptionTerms(start_date=first_day, quantity=quantity)
    try:
        rated = quote_period(terms, chosen, meter_usage, billing_period, meters=cat.meters, rounding=cat.rounding)
    except AmountOutOfRangeError as error:
        fail(str(error))
    if as_json:
        print(json.dumps(quote_json(rated), indent=2))
    else:
        _print_quote(rated, billing_period)
        _print_fee_elsewhere(rated, chosen, terms, billing_period)


def _usage_to_quote(
    cat: Catalog,
    plan: Plan,
    period: Period,
    usage: list[str],
    events: Path | None,
    timezone: str,
    customer: str | None,
) -> dict[str, AnyUsage]:
    """The usage quoted: ``--events`` aggregated as the billing run does, or the ``--usage`` quantities (each on a
    meter the plan charges)."""
    if events is not None:
        try:
            return usage_from_event_file(events, cat, period, timezone, customer, plan)
        except (OSError, ValueError) as error:
            fail(str(error))
    meter_usage: dict[str, AnyUsage] = dict(_parse_usage(usage, cat))
    for meter in meter_usage:
        if plan.charge_for(meter) is None:
            fail(f"--usage: plan {plan.code!r} has no charge on meter {meter!r}")
    return meter_usage


def _billing_period(plan: Plan, first_day: dt.date, named: Period | None) -> Period:
    """The period quoted: the one ``--period`` names (``billing_period_named``: a month names an anniversary
    month ending in it; a weekly plan wants a week), or the plan's billing period of the subscription's first
    day (its week, anniversary month or calendar month)."""
    schedule = schedule_of(SubscriptionTerms(start_date=first_day), plan)
    if named is None:
        return schedule.billing_period(first_day)
    try:
        return billing_period_named(schedule, named)
    except ValueError as error:
        fail(f"--period: plan {plan.code}: {error}")


def quote_json(rated: RatedPeriod) -> dict[str, Any]:
    """The quote's JSON contract: amounts as strings with exactly the currency's minor digits."""
    currency = rated.currency
    subtotal = format_amount(rated.subtotal, currency)
    return {
        "plan": rated.plan_code,
        "currency": currency,
        "lines": [
            {
                "kind": str(line.kind),
                "meter": line.meter,
                "model": line.model,
                "quantity": str(line.quantity),
                "amount": format_amount(line.amount, currency),
                "details": line.details.as_dict(),
                "description": line.description,
                "dimension": line.dimension,
            }
            for line in rated.lines
        ],
        "subtotal": subtotal,
        "total": subtotal,
        # usage matching no filter of a charge without default: left off the lines, as the billing run does
        "unpriced": [
            {"meter": u.meter, "events": u.events, "quantity": str(u.quantity), "dimension": u.dimension}
            for u in rated.unpriced
        ],
    }


def _negotiated(plan: Plan, path: Path, cat: Catalog) -> Plan:
    """``plan`` with the override file at ``path`` applied; every problem printed, located in the file, exit 1."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        fail(f"--override: cannot read {path}: {error}")
    document, problems = loads_override(text, str(path))
    effective = None
    if document is not None:
        effective, problems = apply_override(plan, document, cat, str(path))
    if effective is None:
        fail("\n".join(str(problem) for problem in problems))
    return effective.model_copy(update={"name": f"{plan.name} ({NEGOTIATED})"})


def _parse_date(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        fail(f"{option}: expected a date as YYYY-MM-DD, got {text!r}")


def _parse_usage(pairs: list[str], cat: Any) -> dict[str, MeterUsage]:
    result: dict[str, MeterUsage] = {}
    for pair in pairs:
        meter, sep, quantity = pair.partition("=")
        meter = meter.strip()
        if not sep:
            fail(f"--usage {pair!r}: expected METER=QUANTITY")
        if meter not in cat.meters:
            fail(f"--usage {pair!r}: unknown meter {meter!r} (known: {', '.join(sorted(cat.meters))})")
        try:
            value = D(quantity)
        except ValueError:
            fail(f"--usage {pair!r}: the quantity is not a number")
        if value < 0:
            fail(f"--usage {pair!r}: the quantity must be ≥ 0")
        # Without events a percentage charge sees the quantity as one transaction.
        result[meter] = MeterUsage(quantity=value, events=1 if value else 0, values=(value,) if value else ())
    return result


def _print_quote(rated: RatedPeriod, period: Period) -> None:
    currency = rated.currency
    table = Table(title=f"Quote: {rated.plan_code} v{rated.plan_version}, {period.label} ({currency})")
    table.add_column("Line")
    table.add_column("Model")
    table.add_column("Quantity", justify="right")
    table.add_column("Amount", justify="right")
    table.add_column("How", overflow="fold")
    for line in rated.lines:
        table.add_row(
            line.description,
            line.model or line.kind,
            _plain(line.quantity),
            format_amount(line.amount, currency),
            line.details.explanation or "",
        )
    table.add_section()
    table.add_row("[bold]Total[/]", "", "", f"[bold]{format_amount(rated.subtotal, currency)}[/]", "")
    console.print(table)
    for unpriced in rated.unpriced:
        noun = "event" if unpriced.events == 1 else "events"
        console.print(
            f"[yellow]unpriced:[/] {unpriced.events:,} {noun} of {escape(unpriced.meter)} "
            f"({escape(unpriced.dimension)}) match no filter of a charge without default price: not billed",
            highlight=False,
            soft_wrap=True,
        )


def _print_fee_elsewhere(rated: RatedPeriod, plan: Plan, terms: SubscriptionTerms, period: Period) -> None:
    """Why a plan with a fee has none in this quote: its fee period is longer than the billing period, and the
    fee is billed once, as that fee period begins (in advance) or ends (in arrears)."""
    if rated.fee_line is not None or plan.subscription is None:
        return
    fee_period = fee_period_for(terms, plan, period)
    when = "in advance (as it begins, or as the subscription starts)" if billed_in_advance(plan) else (
        "in arrears, as it ends"
    )
    console.print(
        f"no subscription fee in {period.label}: the fee of {fee_period.label} is billed once, {when}",
        highlight=False,
        soft_wrap=True,
    )


def _plain(number: Decimal) -> str:
    return f"{number:,f}" if number == number.to_integral_value() else str(number)
