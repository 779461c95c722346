"""``billing usage …``: the usage events no invoice will carry."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from billing.cli._common import engine_for_cli, fail, load_catalog_for_cli, print_table
from billing.core.periods import parse_month
from billing.unbilled import unbilled_usage

usage_app = typer.Typer(help="Usage events: what billing does with them.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(usage_app, name="usage")


@usage_app.command("unbilled")
def unbilled(
    period: str = typer.Option(..., "--period", help="The billing period, YYYY-MM."),
    customer: str | None = typer.Option(None, "--customer", help="Only this customer's events."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object: the counts and each group."),
) -> None:
    """The period's accepted usage events that a billing run does not bill, by customer, meter and reason (no
    subscription covering them, a meter the plan does not charge, a customer unknown to billing, …), with the
    count of those it rates: rated + unbilled = every event of the period."""
    try:
        billing_period = parse_month(period)
    except ValueError as error:
        fail(f"--period: {error}")
    account = unbilled_usage(engine_for_cli(), load_catalog_for_cli(), billing_period, customer=customer)
    if as_json:
        typer.echo(json.dumps(account.as_dict(), indent=2))
        return
    table = Table(
        title=f"Usage events of {billing_period.label} no invoice will carry",
        caption=f"{account.accepted:,} events in the period: {account.rated:,} rated, "
        f"{account.unbilled_events:,} unbilled",
    )
    for column in ("Customer", "Meter", "Reason", "Events", "Why"):
        table.add_column(column, justify="right" if column == "Events" else "left")
    for group in account.unbilled:
        table.add_row(group.customer, group.meter, group.reason.value, f"{group.events:,}", group.detail)
    print_table(table)
