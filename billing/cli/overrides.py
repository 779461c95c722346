"""``billing subscriptions override`` and ``billing subscriptions overrides``: a subscription's negotiated prices,
thin wrappers over ``billing.overrides``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from billing import overrides as service
from billing.cli import _json
from billing.cli._common import console, database, err_console, print_table
from billing.cli.customers import JsonOption, _catalog, _date, _subscription_id, _table, subscriptions_app
from billing.errors import BillingInputError
from pricing_plans.loader import OVERRIDE_KEYS


def register(app: typer.Typer) -> None:
    # `subscriptions` belongs to billing.cli.customers; its negotiated prices live here.
    subscriptions_app.command("override")(subscriptions_override)
    subscriptions_app.command("overrides")(subscriptions_overrides)


def subscriptions_override(
    subscription_id: Annotated[str, typer.Argument(metavar="SUBSCRIPTION", help="The subscription id.")],
    file: Annotated[str, typer.Argument(metavar="FILE.toml", help="The override: tables of a plan.")],
    start: Annotated[
        str | None,
        typer.Option(
            "--from", metavar="DATE", help="A billing-period boundary (default: the first period not yet invoiced)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Negotiate a subscription's prices from a period on.

    FILE.toml holds some of a plan's tables: [subscription], [[charges]] (each with its meter), [commitment],
    [[thresholds]]. Each table present replaces the plan's (a charge replaces the plan's charge on its meter, or
    adds one) for this subscription from DATE. Every version is kept.
    """
    sid = _subscription_id(subscription_id)
    effective_from = None if start is None else _date("--from", start)
    catalog = _catalog()
    with database() as engine:
        try:
            document = service.read_override_file(file)
            override = service.set_override(engine, catalog, sid, document, effective_from, source=file)
        except BillingInputError as exc:
            for problem in exc.problems:
                err_console.print(problem, highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(1) from None
    if as_json:
        _json.emit(service.override_json(override))
        return
    tables = ", ".join(key for key in OVERRIDE_KEYS if key in override.document) or "none (the plan's own prices)"
    console.print(
        f"subscription {sid}: negotiated prices from {override.effective_from.isoformat()} (version {override.id}; "
        f"replaces: {tables})",
        highlight=False,
        markup=False,
    )


def subscriptions_overrides(
    subscription_id: Annotated[str, typer.Argument(metavar="SUBSCRIPTION", help="The subscription id.")],
    as_json: JsonOption = False,
) -> None:
    """List a subscription's negotiated prices, version by version."""
    sid = _subscription_id(subscription_id)
    with database() as engine:
        versions = service.list_overrides(engine, sid)
    if as_json:
        _json.emit(_json.listing(service.override_json(o) for o in versions))
        return
    if not versions:
        console.print(f"subscription {sid} has no negotiated prices")
        return
    table = _table("Version", "From", "Replaces", "Recorded")
    for o in versions:
        replaces = ", ".join(key for key in OVERRIDE_KEYS if key in o.document) or "none"
        cells = (str(o.id), o.effective_from.isoformat(), replaces, o.created_at.isoformat(timespec="seconds"))
        table.add_row(*map(Text, cells))
    print_table(table)
