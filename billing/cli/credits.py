"""``billing credits grant|balance|ledger``: prepaid credits and the customer's balance, thin wrappers over
``billing.credits``."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation

import typer
from rich.table import Table

from billing import credits as service
from billing.cli import _json
from billing.cli._common import console, database, fail, finalize_settings, print_table
from billing.errors import BillingError
from pricing_plans.money import format_amount

credits_app = typer.Typer(
    help="Prepaid credits and the customer's balance: grant, balance, ledger.", no_args_is_help=True
)

JsonOption = typer.Option(False, "--json", help="Print JSON (the API's fields) instead of text.")


def register(app: typer.Typer) -> None:
    app.add_typer(credits_app, name="credits")


@credits_app.command("grant")
def grant(
    customer: str = typer.Argument(..., metavar="CUSTOMER", help="The customer's external id."),
    amount: str = typer.Argument(..., metavar="AMOUNT", help="The credit, in the currency's minor units (50.00)."),
    currency: str = typer.Option(..., "--currency", help="ISO 4217 code (USD)."),
    paid: bool = typer.Option(False, "--paid", help="Sell it on a top-up invoice; usable once that is paid."),
    expires: str | None = typer.Option(None, "--expires", metavar="DATE", help="Expiry day (YYYY-MM-DD)."),
    priority: int = typer.Option(0, "--priority", metavar="N", help="Lower numbers are used first (default 0)."),
    reason: str | None = typer.Option(None, "--reason", help="Why it was granted (shown on invoices)."),
    as_json: bool = JsonOption,
) -> None:
    """Grant prepaid credit to a customer: free (usable now) or --paid (sold on a top-up invoice, issued now and
    usable once it is paid). It expires at the start of --expires in the customer's timezone."""
    value = _decimal(amount)
    day = None if expires is None else _day(expires)
    with database() as engine:
        try:
            found = service.grant_credit(
                engine,
                customer,
                value,
                currency,
                paid=paid,
                expires=day,
                priority=priority,
                reason=reason,
                settings=finalize_settings(),
            )
        except BillingError as error:
            fail(str(error))
    if as_json:
        _json.emit(service.grant_json(found))
        return
    amount_text = f"{format_amount(found.amount, found.currency)} {found.currency}"
    if found.usable:
        console.print(f"granted {amount_text} of {found.kind} credit to {customer} (grant {found.id})")
    else:
        console.print(
            f"granted {amount_text} of paid credit to {customer} (grant {found.id}), usable once its top-up invoice "
            f"{found.invoice_number or ''} is paid".replace("  ", " ")
        )


@credits_app.command("balance")
def balance(
    customer: str = typer.Argument(..., metavar="CUSTOMER", help="The customer's external id."),
    as_json: bool = JsonOption,
) -> None:
    """A customer's credit per currency: free, paid, the cash balance, and paid credit awaiting its payment."""
    with database() as engine:
        try:
            found = service.balance(engine, customer)
        except BillingError as error:
            fail(str(error))
    if as_json:
        _json.emit(service.balance_json(customer, found))
        return
    table = Table(title=f"credit of {customer}")
    for column in ("Currency", "Free", "Paid", "Balance", "Total", "Pending"):
        table.add_column(column, justify="left" if column == "Currency" else "right")
    for b in found:
        cells = (b.free, b.paid, b.balance, b.total, b.pending)
        table.add_row(b.currency, *(format_amount(c, b.currency) for c in cells))
    print_table(table)


@credits_app.command("ledger")
def ledger(
    customer: str = typer.Argument(..., metavar="CUSTOMER", help="The customer's external id."),
    as_json: bool = JsonOption,
) -> None:
    """Every movement of a customer's credit, leg by leg (each movement's legs sum to zero)."""
    with database() as engine:
        try:
            entries = service.ledger(engine, customer)
        except BillingError as error:
            fail(str(error))
    if as_json:
        _json.emit(_json.listing(service.entry_json(e) for e in entries))
        return
    table = Table(title=f"credit ledger of {customer}")
    for column in ("Entry", "Movement", "Kind", "Account", "Grant", "Invoice", "Amount", "Effective"):
        table.add_column(column, justify="right" if column == "Amount" else "left")
    for e in entries:
        table.add_row(
            str(e.id),
            e.movement,
            e.kind,
            e.account,
            str(e.grant_id),
            str(e.invoice_id or ""),
            str(e.amount),
            e.effective_at.isoformat(timespec="seconds"),
        )
    print_table(table)


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        fail(f"AMOUNT: expected a decimal amount such as 50.00, got {text!r}")


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        fail(f"--expires: expected a date (YYYY-MM-DD), got {text!r}")
