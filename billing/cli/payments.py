"""``billing payments record|list|reverse``: payments received against invoices, thin wrappers over
``billing.payments``."""

from __future__ import annotations

import datetime as dt

import typer
from rich.table import Table

from billing import payments as service
from billing.cli import _json
from billing.cli._common import console, database, fail, print_table
from billing.errors import BillingError
from pricing_plans.money import ZERO, format_amount

payments_app = typer.Typer(help="Payments received against invoices: record, list, reverse.", no_args_is_help=True)

JsonOption = typer.Option(False, "--json", help="Print JSON (the API's fields) instead of text.")


def register(app: typer.Typer) -> None:
    app.add_typer(payments_app, name="payments")


def _day(text: str | None, option: str = "--date") -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        fail(f"{option}: expected a date YYYY-MM-DD, got {text!r}")


@payments_app.command("record")
def record(
    invoice: str = typer.Argument(..., metavar="INVOICE", help="The invoice's number (INV-2026-000001) or id."),
    amount: str = typer.Option(..., "--amount", help="What was received, in the invoice's currency (30.00)."),
    day: str | None = typer.Option(None, "--date", metavar="DATE", help="Day received (YYYY-MM-DD; default today)."),
    method: str = typer.Option(..., "--method", help="bank_transfer, card, cash or other."),
    reference: str | None = typer.Option(None, "--reference", help="The bank's or processor's reference."),
    currency: str | None = typer.Option(None, "--currency", help="If given, must be the invoice's (a check)."),
    as_json: bool = JsonOption,
) -> None:
    """Record a payment received against an issued invoice. The invoice takes what it is owed (it stays finalized
    until nothing is due, then it is paid); anything beyond goes to the customer's balance."""
    with database() as engine:
        try:
            value = service.parse_amount(amount)
            payment = service.record_payment(
                engine, invoice, value, method=method, received_on=_day(day), reference=reference, currency=currency
            )
        except BillingError as error:
            fail(str(error))
    if as_json:
        _json.emit(service.payment_json(payment))
        return
    money = f"{format_amount(payment.amount, payment.currency)} {payment.currency}"
    line = f"payment {payment.id}: {money} received on {payment.received_on} against {payment.invoice_number}"
    if payment.excess:
        excess = format_amount(payment.excess, payment.currency)
        line += f"; {excess} beyond what was due went to {payment.customer}'s balance"
    console.print(line)


@payments_app.command("list")
def list_command(
    invoice: str | None = typer.Option(None, "--invoice", metavar="N", help="Only this invoice's (number or id)."),
    customer: str | None = typer.Option(None, "--customer", help="Only this customer's."),
    as_json: bool = JsonOption,
) -> None:
    """Payments received, oldest first, with their reversals."""
    with database() as engine:
        try:
            found = service.list_payments(engine, invoice=invoice, customer=customer)
        except BillingError as error:
            fail(str(error))
    if as_json:
        _json.emit(_json.listing(service.payment_json(p) for p in found))
        return
    table = Table(title=f"{len(found)} payment(s)")
    for column in ("Id", "Invoice", "Customer", "Received", "Method", "Reference", "Amount", "To balance", "Status"):
        table.add_column(column, justify="right" if column in ("Id", "Amount", "To balance") else "left")
    for p in found:
        status = f"reversed {p.reversed_on}" if p.reversed else "succeeded"
        table.add_row(
            str(p.id), p.invoice_number, p.customer, p.received_on.isoformat(), p.method, p.reference or "",
            f"{format_amount(p.amount, p.currency)} {p.currency}", format_amount(p.excess, p.currency), status,
        )
    print_table(table)


@payments_app.command("reverse")
def reverse(
    payment_id: int = typer.Argument(
        ..., metavar="PAYMENT_ID", min=1, max=2**63 - 1, help="The payment's id (billing payments list)."
    ),
    reason: str | None = typer.Option(None, "--reason", help="Why (a bounced transfer, a charge-back)."),
    day: str | None = typer.Option(None, "--date", metavar="DATE", help="Day reversed (YYYY-MM-DD; default today)."),
    as_json: bool = JsonOption,
) -> None:
    """Reverse a payment (a bounced transfer): the invoice is owed again what it took (a paid invoice goes back to
    finalized); its excess is taken back from the customer's balance as far as it was not spent."""
    with database() as engine:
        try:
            payment = service.reverse_payment(engine, payment_id, reason=reason, on=_day(day))
        except BillingError as error:
            fail(str(error))
    if as_json:
        _json.emit(service.payment_json(payment))
        return
    console.print(
        f"payment {payment.id} reversed: {format_amount(payment.applied, payment.currency)} {payment.currency} "
        f"owed again on {payment.invoice_number}"
    )
    if payment.excess:
        console.print(
            f"{format_amount(payment.recovered or ZERO, payment.currency)} taken back from the balance; "
            f"{format_amount(payment.unrecovered, payment.currency)} already spent (owed outside any invoice)"
        )
