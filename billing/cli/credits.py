"""``billing credits grant|balance|ledger|low-balance|auto-topup``: prepaid credits and the customer's balance,
thin wrappers over ``billing.credits``."""

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
    help="Prepaid credits and the customer's balance: grant, balance, ledger, low-balance alert, auto top-up.",
    no_args_is_help=True,
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
            found = service.balance(engine, customer, settings=finalize_settings())
        except BillingError as error:
            fail(str(error))
    if as_json:
        _json.emit(service.balance_json(customer, found))
        return
    _balance_table(customer, found)


def _balance_table(customer: str, found: list[service.Balance]) -> None:
    table = Table(title=f"credit of {customer}")
    for column in ("Currency", "Free", "Paid", "Balance", "Total", "Pending", "Low balance", "Auto top-up"):
        table.add_column(column, justify="left" if column in ("Currency", "Auto top-up") else "right")
    for b in found:
        cells = (b.free, b.paid, b.balance, b.total, b.pending)
        low = "" if b.low_balance is None else format_amount(b.low_balance, b.currency)
        topup = ""
        if b.topup_below is not None and b.topup_amount is not None:
            topup = f"{format_amount(b.topup_amount, b.currency)} below {format_amount(b.topup_below, b.currency)}"
        table.add_row(b.currency, *(format_amount(c, b.currency) for c in cells), low, topup)
    print_table(table)


@credits_app.command("low-balance")
def low_balance(
    customer: str = typer.Argument(..., metavar="CUSTOMER", help="The customer's external id."),
    currency: str = typer.Option(..., "--currency", help="ISO 4217 code (USD)."),
    below: str | None = typer.Option(None, "--below", metavar="LEVEL", help="Alert when the total falls below."),
    off: bool = typer.Option(False, "--off", help="No low-balance alert any more."),
    as_json: bool = JsonOption,
) -> None:
    """Alert (a credit.balance_low notification) each time the customer's credit in --currency falls below
    --below. Setting the level sends nothing; the next fall below it does. (Reaching 0.00 always sends a
    credit.balance_depleted notification.)"""
    if (below is None) == (not off):
        fail("--below: give a level, or --off (not both)", 2)
    level = None if below is None else _decimal(below, "--below")
    _configure(customer, currency, as_json, low_balance=level)


@credits_app.command("auto-topup")
def auto_topup(
    customer: str = typer.Argument(..., metavar="CUSTOMER", help="The customer's external id."),
    currency: str = typer.Option(..., "--currency", help="ISO 4217 code (USD)."),
    below: str | None = typer.Option(None, "--below", metavar="LEVEL", help="Top up when paid credit is below."),
    amount: str | None = typer.Option(None, "--amount", metavar="AMOUNT", help="The paid credit each top-up buys."),
    off: bool = typer.Option(False, "--off", help="No automatic top-up any more."),
    as_json: bool = JsonOption,
) -> None:
    """Issue a top-up invoice of --amount (paid credit, usable once that invoice is paid) whenever the customer's
    paid credit in --currency is below --below and no top-up invoice is unpaid; at once if that is so now."""
    if off and (below is not None or amount is not None):
        fail("--off: give --below and --amount, or --off alone", 2)
    if not off and (below is None or amount is None):
        fail("--below: give --below and --amount (or --off)", 2)
    topup = None if off else (_decimal(below or "", "--below"), _decimal(amount or "", "--amount"))
    _configure(customer, currency, as_json, auto_topup=topup)


def _configure(customer: str, currency: str, as_json: bool, **changes: object) -> None:
    names = {"currency": "--currency", "low_balance": "--below", "auto_topup.below": "--below",
             "auto_topup.amount": "--amount"}
    with database() as engine:
        try:
            found, issued = service.configure(engine, customer, currency, settings=finalize_settings(), **changes)
        except BillingError as error:
            message = str(error)
            name = message.partition(":")[0]
            fail(names[name] + message[len(name):] if name in names else message)
    if as_json:
        _json.emit(service.balance_json(customer, [found])["balances"][0])
        return
    _balance_table(customer, [found])
    for grant in issued:
        console.print(
            f"issued top-up invoice {grant.invoice_number} for {format_amount(grant.amount, grant.currency)} "
            f"{grant.currency}: the paid credit is below {format_amount(found.topup_below or 0, found.currency)}"
        )


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


def _decimal(text: str, name: str = "AMOUNT") -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        fail(f"{name}: expected a decimal amount such as 50.00, got {text!r}")


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        fail(f"--expires: expected a date (YYYY-MM-DD), got {text!r}")
