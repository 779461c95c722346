"""``billing customers ...``, ``billing subscribe`` and ``billing subscriptions ...``: thin wrappers over
``billing.customers`` that parse arguments, print with rich and turn every error into one message and exit 1."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from billing import customers as service
from billing.cli import _json
from billing.cli._common import (
    console,
    database,
    err_console,
    fail,
    load_catalog_for_cli,
    print_table,
    progress_bar,
)
from billing.core.domain import Customer, Subscription
from pricing_plans.models import Catalog

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (the API's fields) instead of text.")]

customers_app = typer.Typer(
    help="Customers: add, update, archive, list, import from CSV, rotate a webhook secret.", no_args_is_help=True
)
subscriptions_app = typer.Typer(
    help="Subscriptions: list, cancel, change plan, change seats, negotiate prices.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(customers_app, name="customers")
    app.command("subscribe")(subscribe)
    app.add_typer(subscriptions_app, name="subscriptions")




def _catalog() -> Catalog:
    catalog: Catalog = load_catalog_for_cli()
    return catalog


def _date(option: str, text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        fail(f"{option}: expected a date YYYY-MM-DD, got {text!r}")


def _subscription_id(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) >= 2**63:
        fail(f"ID: expected a subscription id (a number), got {text!r}", code=2)
    return int(text)


def _table(*headers: str) -> Table:
    """A table that never hides part of a value: long cells wrap instead of ending in an ellipsis."""
    table = Table(box=box.SIMPLE_HEAD)
    for header in headers:
        table.add_column(header, overflow="fold", min_width=10 if header in ("Start", "End") else len(header))
    return table




def _print_secret(customer: Customer, heading: str) -> None:
    """A webhook secret, printed this once: it is not shown again (``rotate-webhook-secret`` makes a new one)."""
    console.print(f"{heading}: {customer.webhook_secret}", highlight=False, markup=False, soft_wrap=True)
    console.print(
        f"Shown once: store it now. The receiver at {customer.webhook_url} verifies the webhook-signature header "
        f"with it; `billing customers rotate-webhook-secret {customer.external_id}` replaces it.",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def _describe(subscription: Subscription) -> str:
    s = subscription
    return f"subscription {s.id}: {s.customer_external_id} on {s.plan_code} v{s.plan_version} from {s.start_date}"


# -- customers -------------------------------------------------------------------------------------------


@customers_app.command("add")
def customers_add(
    external_id: Annotated[str, typer.Argument(metavar="ID", help="The id usage events use for this customer.")],
    name: Annotated[str, typer.Option("--name", help="Name on invoices.")],
    email: Annotated[str, typer.Option("--email", help="Billing email address.")],
    currency: Annotated[str, typer.Option("--currency", help="ISO 4217 code, e.g. EUR.")],
    timezone: Annotated[
        str | None, typer.Option("--timezone", help="IANA timezone, e.g. Europe/Berlin (default from config).")
    ] = None,
    locale: Annotated[str, typer.Option("--locale", help="Locale of invoices, e.g. de_DE.")] = "en_US",
    address: Annotated[list[str] | None, typer.Option("--address", help="An address line; repeat for more.")] = None,
    webhook_url: Annotated[str | None, typer.Option("--webhook-url", help="Where notifications are posted.")] = None,
    tax_rate: Annotated[str, typer.Option("--tax-rate", help="Tax rate in percent, e.g. 19.")] = "0",
    country: Annotated[str | None, typer.Option("--country", help="ISO 3166 country code, e.g. DE.")] = None,
    region: Annotated[str | None, typer.Option("--region", help="Region of the country, e.g. NY.")] = None,
    tax_id: Annotated[str | None, typer.Option("--tax-id", help="Tax id (VAT number), e.g. DE136695976.")] = None,
    tax_exempt: Annotated[
        str | None, typer.Option("--tax-exempt", metavar="REASON", help="Exempt from tax, for this reason.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Add a customer."""
    with database() as engine:
        customer = service.create_customer(
            engine,
            external_id,
            name=name,
            email=email,
            currency=currency,
            timezone=timezone,
            locale=locale,
            address=tuple(address or ()),
            webhook_url=webhook_url,
            tax_rate=tax_rate,
            country=country,
            region=region,
            tax_id=tax_id,
            tax_exempt_reason=tax_exempt,
        )
    if as_json:
        _json.emit(_json.customer_json(customer, with_secret=True))
        return
    console.print(
        f"created customer {customer.external_id} ({customer.currency}, {customer.timezone})",
        highlight=False,
        markup=False,
    )
    if customer.webhook_secret:
        _print_secret(customer, "webhook secret")


_CLEAR = "Give an empty value to clear it."


@customers_app.command("update")
def customers_update(
    external_id: Annotated[str, typer.Argument(metavar="ID", help="The customer's id.")],
    name: Annotated[str | None, typer.Option("--name", help="Name on invoices.")] = None,
    email: Annotated[str | None, typer.Option("--email", help=f"Billing email address. {_CLEAR}")] = None,
    address: Annotated[
        list[str] | None, typer.Option("--address", help="An address line; repeat for more (replaces the address).")
    ] = None,
    country: Annotated[str | None, typer.Option("--country", help=f"ISO 3166 country code. {_CLEAR}")] = None,
    region: Annotated[str | None, typer.Option("--region", help=f"Region of the country. {_CLEAR}")] = None,
    tax_id: Annotated[str | None, typer.Option("--tax-id", help=f"Tax id (VAT number). {_CLEAR}")] = None,
    tax_exempt: Annotated[
        str | None, typer.Option("--tax-exempt", metavar="REASON", help=f"Exempt from tax, for this reason. {_CLEAR}")
    ] = None,
    tax_rate: Annotated[str | None, typer.Option("--tax-rate", help="The customer's own tax rate in percent.")] = None,
    locale: Annotated[str | None, typer.Option("--locale", help="Locale of invoices, e.g. de_DE.")] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", help="IANA timezone, e.g. Europe/Berlin.")] = None,
    webhook_url: Annotated[
        str | None, typer.Option("--webhook-url", help=f"Where notifications are posted. {_CLEAR}")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Change a customer's details; issued invoices keep the buyer as they printed it."""
    given = {
        "name": name, "email": email, "address": address, "country": country, "region": region, "tax_id": tax_id,
        "tax_exempt_reason": tax_exempt, "tax_rate": tax_rate, "locale": locale, "timezone": timezone,
        "webhook_url": webhook_url,
    }  # fmt: skip
    changes = {field: _cleared(value) for field, value in given.items() if value is not None}
    if not changes:
        fail("nothing to change: give at least one option (see --help)", code=2)
    with database() as engine:
        customer = service.update_customer(engine, external_id, changes)
    if as_json:  # (as the API answers: the secret only when a new webhook URL made one)
        shown = _json.customer_json(customer, with_secret=True)
        if "webhook_url" not in changes:
            shown["webhook_secret"] = None
        _json.emit(shown)
        return
    console.print(f"updated customer {customer.external_id}: {', '.join(changes)}", highlight=False, markup=False)
    if "webhook_url" in changes and customer.webhook_secret:
        _print_secret(customer, "new webhook secret")


def _cleared(value: str | list[str]) -> str | list[str] | None:
    """An option's value; an empty one clears the field (an address of empty lines too)."""
    if isinstance(value, list):
        return [line for line in value if line.strip()]
    return value if value.strip() else None


@customers_app.command("archive")
def customers_archive(
    external_id: Annotated[str, typer.Argument(metavar="ID", help="The customer's id.")],
    as_json: JsonOption = False,
) -> None:
    """Archive a customer: no new subscriptions; its invoices, subscriptions and usage are kept."""
    with database() as engine:
        customer = service.archive_customer(engine, external_id)
    if as_json:
        _json.emit(_json.customer_json(customer))
        return
    console.print(f"archived customer {customer.external_id}", highlight=False, markup=False)


@customers_app.command("unarchive")
def customers_unarchive(
    external_id: Annotated[str, typer.Argument(metavar="ID", help="The customer's id.")],
    as_json: JsonOption = False,
) -> None:
    """Make an archived customer active again."""
    with database() as engine:
        customer = service.unarchive_customer(engine, external_id)
    if as_json:
        _json.emit(_json.customer_json(customer))
        return
    console.print(f"unarchived customer {customer.external_id}", highlight=False, markup=False)


@customers_app.command("rotate-webhook-secret")
def customers_rotate_webhook_secret(
    external_id: Annotated[str, typer.Argument(metavar="ID", help="The customer's id.")],
    as_json: JsonOption = False,
) -> None:
    """Give a customer's webhook endpoint a new secret (printed once); the old one stops signing at once."""
    with database() as engine:
        customer = service.rotate_webhook_secret(engine, external_id)
    if as_json:
        _json.emit(_json.customer_json(customer, with_secret=True))
        return
    _print_secret(customer, f"new webhook secret for {customer.external_id}")


@customers_app.command("list")
def customers_list(as_json: JsonOption = False) -> None:
    """List the customers."""
    with database() as engine:
        customers = service.list_customers(engine)
    if as_json:
        _json.emit(_json.listing(_json.customer_json(c) for c in customers))
        return
    if not customers:
        console.print("no customers")
        return
    table = _table("ID", "Name", "Email", "Currency", "Timezone", "Locale", "Tax %", "Country", "Tax ID", "Webhook")
    for c in customers:
        cells = (c.external_id, c.name, c.email or "", c.currency, c.timezone, c.locale, str(c.tax_rate))
        tax = (c.country or "", c.tax_id or "")
        name = c.name + (" (archived)" if c.archived_at is not None else "")
        table.add_row(*map(Text, (c.external_id, name, *cells[2:], *tax, c.webhook_url or "")))
    print_table(table)


@customers_app.command("import")
def customers_import(
    file: Annotated[str, typer.Argument(metavar="FILE.csv", help="CSV with a header row (see the README).")],
    as_json: JsonOption = False,
) -> None:
    """Import customers from CSV: good rows are created, each bad row is reported as FILE:LINE: reason."""
    with (
        database() as engine,
        progress_bar("importing") as progress,
    ):
        task = progress.add_task("import", total=None)
        report = service.import_customers(
            engine, file, progress=lambda done, total: progress.update(task, completed=done, total=total)
        )
    for problem in report.problems:
        err_console.print(str(problem), highlight=False, soft_wrap=True, markup=False)
    if as_json:
        _json.emit(
            {
                "accepted": report.accepted,
                "rejected": report.rejected,
                "created": [_json.customer_json(c, with_secret=True) for c in report.created],
                "problems": [{"line": p.line, "message": p.message} for p in report.problems],
            }
        )
        if not report.ok:
            raise typer.Exit(1)
        return
    console.print(f"imported {report.accepted}, rejected {report.rejected}", highlight=False)
    with_secrets = [c for c in report.created if c.webhook_secret]
    if with_secrets:
        console.print(
            "webhook secrets (shown once: store them now; each customer's receiver verifies the webhook-signature "
            "header with its own):",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        for c in with_secrets:
            console.print(f"{c.external_id} {c.webhook_secret}", highlight=False, markup=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


# -- subscriptions ---------------------------------------------------------------------------------------


def subscribe(
    customer: Annotated[str, typer.Argument(metavar="CUSTOMER", help="The customer's id.")],
    plan: Annotated[str, typer.Argument(metavar="PLAN", help="The plan code.")],
    start: Annotated[str, typer.Option("--start", metavar="DATE", help="First day, YYYY-MM-DD.")],
    quantity: Annotated[
        int, typer.Option("--quantity", metavar="N", help="Seats (a plan priced per seat; default 1).")
    ] = 1,
    as_json: JsonOption = False,
) -> None:
    """Subscribe a customer to the plan version in effect on the start date."""
    start_date = _date("--start", start)
    catalog = _catalog()
    with database() as engine:
        subscription = service.subscribe(engine, catalog, customer, plan, start_date, quantity)
    if as_json:
        _json.emit(_json.subscription_json(subscription))
        return
    console.print(f"created {_describe(subscription)}", highlight=False, markup=False)


@subscriptions_app.command("cancel")
def subscriptions_cancel(
    subscription_id: Annotated[str, typer.Argument(metavar="ID", help="The subscription id.")],
    date: Annotated[str, typer.Option("--date", metavar="DATE", help="End date (exclusive), YYYY-MM-DD.")],
    reason: Annotated[str, typer.Option("--reason", help="voluntary or involuntary.")] = "voluntary",
    as_json: JsonOption = False,
) -> None:
    """Cancel a subscription: it covers days up to, not including, DATE."""
    sid, end = _subscription_id(subscription_id), _date("--date", date)
    catalog = _catalog()  # (an opening invoice still in draft is written again for the days covered)
    with database() as engine:
        subscription = service.cancel_subscription(engine, sid, end, reason, catalog=catalog)
    if as_json:
        _json.emit(_json.subscription_json(subscription))
        return
    console.print(
        f"cancelled subscription {subscription.id} ({subscription.cancel_reason}), ends {subscription.end_date}",
        highlight=False,
    )


@subscriptions_app.command("change")
def subscriptions_change(
    subscription_id: Annotated[str, typer.Argument(metavar="ID", help="The subscription id.")],
    plan: Annotated[str, typer.Argument(metavar="PLAN", help="The new plan code.")],
    date: Annotated[str, typer.Option("--date", metavar="DATE", help="Day of the change, YYYY-MM-DD.")],
    as_json: JsonOption = False,
) -> None:
    """Change a subscription's plan: the old one ends and the new one starts on DATE (--json: the new one)."""
    sid, on = _subscription_id(subscription_id), _date("--date", date)
    catalog = _catalog()
    with database() as engine:
        subscription = service.change_plan(engine, catalog, sid, plan, on)
    if as_json:
        _json.emit(_json.subscription_json(subscription))
        return
    console.print(f"ended subscription {sid}; created {_describe(subscription)}", highlight=False, markup=False)


@subscriptions_app.command("quantity")
def subscriptions_quantity(
    subscription_id: Annotated[str, typer.Argument(metavar="ID", help="The subscription id.")],
    quantity: Annotated[int, typer.Argument(metavar="N", help="The number of seats.")],
    effective_from: Annotated[str, typer.Option("--from", metavar="DATE", help="First day with N seats.")],
    as_json: JsonOption = False,
) -> None:
    """Give a subscription N seats from DATE on (a plan priced per seat); the next invoice settles the change."""
    sid, on = _subscription_id(subscription_id), _date("--from", effective_from)
    catalog = _catalog()
    with database() as engine:
        subscription = service.change_quantity(engine, catalog, sid, quantity, on)
    if as_json:
        _json.emit(_json.subscription_json(subscription))
        return
    console.print(f"subscription {sid}: {quantity} seats from {on.isoformat()}", highlight=False, markup=False)


@subscriptions_app.command("list")
def subscriptions_list(
    customer: Annotated[str | None, typer.Option("--customer", metavar="ID", help="Only this customer's.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="active or cancelled.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List subscriptions."""
    with database() as engine:
        subscriptions = service.list_subscriptions(engine, customer=customer, status=status)
    if as_json:
        _json.emit(_json.listing(_json.subscription_json(s) for s in subscriptions))
        return
    if not subscriptions:
        console.print("no subscriptions")
        return
    table = _table("ID", "Customer", "Plan", "Start", "End", "Status", "Seats", "Replaces")
    for s in subscriptions:
        status = f"{s.status.value} ({s.cancel_reason.value})" if s.cancel_reason else s.status.value
        cells = (
            str(s.id),
            s.customer_external_id,
            f"{s.plan_code} v{s.plan_version}",
            s.start_date.isoformat(),
            s.end_date.isoformat() if s.end_date else "",
            status,
            str(s.latest_quantity),
            str(s.previous_subscription_id or ""),
        )
        table.add_row(*map(Text, cells))
    print_table(table)
