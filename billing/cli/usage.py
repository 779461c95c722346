"""``billing usage …``: a customer's usage and upcoming invoice, and the usage events no invoice will carry.

``billing usage CUSTOMER [--period P]`` is ``billing usage show CUSTOMER [--period P]``: a first word that names
none of the group's commands is taken for a customer. A customer whose id is the name of one of them
(``unbilled``, ``show``) is shown with ``billing usage show ID``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from billing.cli import _json
from billing.cli._common import (
    console,
    database,
    engine_for_cli,
    fail,
    load_catalog_for_cli,
    print_table,
    tax_rows,
)
from billing.core.periods import Period, parse_month, parse_period
from billing.preview import customer_usage
from billing.run import usage_account

DEFAULT_COMMAND = "show"


class _CustomerOrCommand(TyperGroup):
    """The ``usage`` group: ``billing usage CUSTOMER …`` runs ``billing usage show CUSTOMER …``."""

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            return DEFAULT_COMMAND, self.commands[DEFAULT_COMMAND], args
        return super().resolve_command(ctx, args)


usage_app = typer.Typer(
    cls=_CustomerOrCommand,
    help="Usage: a customer's usage and upcoming invoice, and the usage events no invoice will carry.",
    no_args_is_help=True,
    subcommand_metavar="CUSTOMER [--period P] [--json] | COMMAND [ARGS]...",
)


def register(app: typer.Typer) -> None:
    app.add_typer(usage_app, name="usage")


def _period(text: str | None, *, labels: bool = False) -> Period | None:
    """``--period``: a month, or (``labels``) any billing period's label: ``2026-W09``, ``START..END``."""
    if text is None:
        return None
    try:
        return parse_period(text) if labels else parse_month(text)
    except ValueError as error:
        fail(f"--period: {error}")


@usage_app.command(DEFAULT_COMMAND)
def show(
    customer: Annotated[str, typer.Argument(metavar="CUSTOMER", help="The customer's id.")],
    period: Annotated[
        str | None,
        typer.Option(
            "--period",
            help="The billing period: YYYY-MM, an ISO week YYYY-Www or START..END (default: the current one in the "
            "customer's timezone). A month names a subscription's anniversary month ending in it.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (the API's usage object) instead of text.")
    ] = False,
) -> None:
    """A customer's usage in a period so far (also `billing usage CUSTOMER`): each meter's quantity, the
    thresholds, and the upcoming invoice as the usage stands, rated as the billing run will rate it.

    The same figures as GET /v1/customers/{id}/usage. The upcoming invoice leaves out late usage of earlier
    periods and a new subscription's opening invoice, which the run bills on their own."""
    billing_period = _period(period, labels=True)
    catalog = load_catalog_for_cli()
    with database() as engine:
        found = customer_usage(engine, catalog, customer, billing_period)
    if as_json:
        _json.emit(_json.usage_json(found))
        return
    _print_usage(_json.usage_json(found))


def _print_usage(usage: dict[str, Any]) -> None:
    """The usage object as three tables: meters, thresholds (if any), and the upcoming invoice."""
    currency = usage["currency"]
    as_of = usage["as_of"].replace("T", " ")[:16] + " UTC"
    console.print(
        f"[bold]{escape(usage['customer'])}[/]: usage of {usage['label']} so far (as of {as_of}), {currency}, "
        f"timezone {escape(usage['timezone'])}",
        highlight=False,
        soft_wrap=True,
    )
    meters = Table(title="Usage by meter", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("Meter", "Quantity", "Unit", "Events"):
        meters.add_column(column, justify="right" if column in ("Quantity", "Events") else "left")
    for meter in usage["meters"]:
        meters.add_row(Text(meter["name"]), meter["quantity"], Text(meter["unit"]), f"{meter['events']:,}")
    if not usage["meters"]:
        meters.add_row("(no usage, no metered charge)", "", "", "")
    print_table(meters)
    if usage["thresholds"]:
        thresholds = Table(title="Thresholds", title_justify="left", box=box.SIMPLE_HEAD)
        for column in ("Threshold", "Value", "Limit", "%", "Reached", "Notified"):
            thresholds.add_column(column, justify="right" if column in ("Value", "Limit", "%") else "left")
        for t in usage["thresholds"]:
            thresholds.add_row(
                Text(t["key"]),
                t["value"],
                t["limit"],
                t["percent"] or "—",
                ", ".join(f"{level} %" for level in t["reached"]) or "—",
                ", ".join(f"{level} %" for level in t["notified"]) or "—",
            )
        print_table(thresholds)
    preview = usage["preview"]
    invoice = Table(title=f"Upcoming invoice ({currency})", title_justify="left", box=box.SIMPLE_HEAD)
    invoice.add_column("Line")
    invoice.add_column("Quantity", justify="right")
    invoice.add_column("Amount", justify="right")
    section = None
    for line in preview["lines"]:
        if line["section"] and line["section"] != section:
            section = line["section"]
            invoice.add_row(Text(section, style="bold"), "", "")
        quantity = f"{line['quantity']} {line['unit'] or ''}".strip()
        invoice.add_row(Text(f"  {line['description']}"), Text(quantity), line["amount"])
    invoice.add_section()
    invoice.add_row("Subtotal", "", preview["subtotal"])
    if Decimal(preview["discount"]):
        invoice.add_row("Discounts", "", f"-{preview['discount']}")
    added, inside = tax_rows(preview["taxes"])
    for label, amount, note in added:
        invoice.add_row(Text(label), "", amount)
        if note:
            invoice.add_row(Text(f"  {note}", style="italic"), "", "")
    invoice.add_row(Text("Total", style="bold"), "", Text(preview["total"], style="bold"))
    for label, amount in inside:
        invoice.add_row(Text(label, style="italic"), "", Text(amount, style="italic"))
    print_table(invoice)


@usage_app.command("unbilled")
def unbilled(
    period: str = typer.Option(..., "--period", help="The billing period, YYYY-MM."),
    customer: str | None = typer.Option(None, "--customer", help="Only this customer's events."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object: the counts and each group."),
) -> None:
    """The period's accepted usage events that a billing run does not bill, by customer, meter and reason (no
    subscription covering them, a meter the plan does not charge, a customer unknown to billing, …), with the
    count of those it rates: rated + unbilled = every event of the period. The events of a week or an anniversary
    month count in the month it ends in, as its run bills them."""
    billing_period = _period(period)
    assert billing_period is not None
    account = usage_account(engine_for_cli(), load_catalog_for_cli(), billing_period, customer=customer)
    if as_json:
        _json.emit(account.as_dict())
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
