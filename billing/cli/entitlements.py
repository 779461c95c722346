"""``billing entitlements CUSTOMER [--json]``: what a customer may still use of each meter in its current billing
period, as ``GET /v1/customers/{id}/entitlements`` answers it."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from billing.cli import _json
from billing.cli._common import console, database, load_catalog_for_cli, print_table
from billing.entitlements import Entitlement, Entitlements, customer_entitlements


def register(app: typer.Typer) -> None:
    app.command("entitlements")(entitlements)


def entitlements(
    customer: Annotated[str, typer.Argument(metavar="CUSTOMER", help="The customer's id.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (the API's entitlements object) instead of a table.")
    ] = False,
) -> None:
    """A customer's entitlements: each meter's usage this period, its limit, what remains, whether it is blocked.

    For each meter of the customer's current subscriptions: the usage so far in the current billing period, the
    allowance, what remains, whether a hard limit blocks it, and when the period resets (the same figures as
    GET /v1/customers/{id}/entitlements)."""
    catalog = load_catalog_for_cli()
    with database() as engine:
        found = customer_entitlements(engine, catalog, customer)
    document = entitlements_json(found)
    if as_json:
        _json.emit(document)
        return
    console.print(
        f"[bold]{escape(document['customer'])}[/]: entitlements as of {document['as_of']}, timezone "
        f"{escape(document['timezone'])}",
        highlight=False,
        soft_wrap=True,
    )
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("Meter", "Used", "Limit", "Remaining", "Blocked", "Resets at"):
        table.add_column(column, justify="right" if column in ("Used", "Limit", "Remaining") else "left")
    for e in document["entitlements"]:
        limit = "—" if e["limit"] is None else e["limit"] + (" (hard)" if e["hard_limit"] else "")
        table.add_row(
            Text(e["meter"]), e["used"], limit, e["remaining"] or "—", "yes" if e["blocked"] else "no", e["resets_at"]
        )
    if not document["entitlements"]:
        table.add_row("(no current subscription)", "", "", "", "", "")
    print_table(table)


def entitlements_json(found: Entitlements) -> dict[str, Any]:
    """The entitlements as the API's ``EntitlementsOut``."""
    return {
        "customer": found.customer.external_id,
        "timezone": found.customer.timezone,
        "as_of": _json.timestamp(found.as_of),
        "entitlements": [entitlement_json(e) for e in found.meters],
    }


def entitlement_json(e: Entitlement) -> dict[str, Any]:
    """One meter's entitlement as the API's ``EntitlementOut``."""
    return {
        "meter": e.meter,
        "used": _json.plain(e.used),
        "limit": None if e.limit is None else _json.plain(e.limit),
        "remaining": None if e.remaining is None else _json.plain(e.remaining),
        "blocked": e.blocked,
        "hard_limit": e.hard_limit,
        "resets_at": _json.timestamp(e.resets_at),
        "period": _json.period_json(e.period),
        "subscription_id": e.subscription_id,
        "credit_balance": None if e.credit_balance is None else _json.plain(e.credit_balance),
    }
