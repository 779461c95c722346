"""``billing invoices …``: list, aging, show, finalize, pending-approval, approve, void, credit, render."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Engine

from billing import approval, invoicing, payments, run_history
from billing.approval import ApprovalPolicy, DraftApproval, awaiting_approval, draft_approval_json
from billing.cli import _json
from billing.cli._common import (
    console,
    engine_for_cli,
    err_console,
    fail,
    finalize_settings,
    load_catalog_for_cli,
    open_period_message,
    print_table,
    tax_rows,
)
from billing.core.aging import BUCKETS
from billing.core.periods import FIRST_YEAR, LAST_YEAR, parse_month
from billing.errors import BillingError
from billing.run import (
    RunReport,
    finalize_draft_fresh,
    finalize_period,
    finalize_period_fresh,
    held_customers,
    waiting_for_earlier,
)
from invoices.model import Invoice, InvoiceStatus
from pricing_plans.models import Catalog
from pricing_plans.money import format_amount, format_sum

invoices_app = typer.Typer(help="Invoices and credit notes.", no_args_is_help=True)

JsonOption = typer.Option(False, "--json", help="Print JSON (the API's fields) instead of text.")


def register(app: typer.Typer) -> None:
    app.add_typer(invoices_app, name="invoices")


def _period_start(period: str | None) -> dt.date | None:
    if period is None:
        return None
    try:
        return parse_month(period).start
    except ValueError as error:
        fail(f"--period: {error}")


@invoices_app.command("list")
def list_command(
    period: str | None = typer.Option(None, "--period", help="YYYY-MM"),
    status: InvoiceStatus | None = typer.Option(None, "--status"),
    customer: str | None = typer.Option(None, "--customer"),
    unpaid: bool = typer.Option(False, "--unpaid", help="Only finalized invoices with an amount due."),
    as_json: bool = JsonOption,
) -> None:
    """Invoices and credit notes, filtered by period, status and customer; --unpaid: what is still owed."""
    found = invoicing.list_invoices(
        engine_for_cli(), period_start=_period_start(period), status=status, customer=customer, unpaid=unpaid
    )
    if as_json:
        _json.emit(_json.listing(_json.invoice_summary_json(invoice) for invoice in found))
        return
    table = Table(title=f"{len(found)} invoice(s)")
    columns = ("Id", "Number", "Kind", "Status", "Customer", "Period", "Due date", "Total", "Paid", "Amount due")
    for column in columns:
        right = column in ("Id", "Total", "Paid", "Amount due")
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    for invoice in found:
        table.add_row(
            str(invoice.id),
            invoice.number or "—",
            invoice.kind.value,
            invoice.status.value,
            invoice.customer.external_id or "",
            invoice.period_label,
            "" if invoice.due_date is None else invoice.due_date.isoformat(),
            f"{format_amount(invoice.total, invoice.currency)} {invoice.currency}",
            format_amount(invoice.amount_paid, invoice.currency),
            format_amount(invoice.amount_due, invoice.currency),
        )
    print_table(table)


@invoices_app.command("aging")
def aging(
    as_of: str | None = typer.Option(None, "--as-of", metavar="DATE", help="The day to age on (default today)."),
    customer: str | None = typer.Option(None, "--customer"),
    as_json: bool = JsonOption,
) -> None:
    """Aged receivables: what each customer owes per currency, by days overdue (current, 1-30, 31-60, 61-90,
    90+), as of the end of --as-of, with totals per currency."""
    day = None
    if as_of is not None:
        try:
            day = dt.date.fromisoformat(as_of)
        except ValueError:
            fail(f"--as-of: expected a date YYYY-MM-DD, got {as_of!r}")
        if not FIRST_YEAR <= day.year <= LAST_YEAR:
            fail(f"--as-of: expected a date from {FIRST_YEAR}-01-01 to {LAST_YEAR}-12-31, got {as_of!r}")
    report = payments.aged_receivables(engine_for_cli(), day, customer=customer)
    if as_json:
        _json.emit(payments.aging_json(report))
        return
    print_table(aging_table(report))


def aging_table(report: payments.Aging) -> Table:
    """The aged receivables as a table: a row per customer and currency, then the totals per currency."""
    table = Table(title=f"aged receivables as of {report.as_of.isoformat()} (days overdue)")
    for column in ("Customer", "Currency", "Invoices", *BUCKETS, "Total"):
        table.add_column(column, justify="left" if column in ("Customer", "Currency") else "right", no_wrap=True)
    for row in report.rows:
        cells = [format_sum(amount, row.currency) for amount in (*row.buckets, row.total)]
        table.add_row(row.customer or "", row.currency, str(row.invoices), *cells)
    if report.totals:
        table.add_section()
    for row in report.totals:
        cells = [format_sum(amount, row.currency) for amount in (*row.buckets, row.total)]
        table.add_row("[bold]Total[/]", row.currency, str(row.invoices), *cells)
    return table


@invoices_app.command("show")
def show(key: str = typer.Argument(..., help="Invoice number or id."), as_json: bool = JsonOption) -> None:
    """One invoice with its lines and totals."""
    invoice = _get(key)
    if as_json:
        _print_invoice_json(invoice)
        return
    console.print(_invoice_table(invoice))


def _print_invoice_json(invoice: Invoice) -> None:
    """The invoice as the API gives it (``InvoiceOut``), read back as stored."""
    from invoices.render import invoice_json

    _json.emit(invoice_json(invoice))


def _get(key: str) -> Invoice:
    try:
        return invoicing.get_invoice(engine_for_cli(), key)
    except BillingError as error:
        fail(str(error))


def _invoice_table(invoice: Invoice) -> Table:
    currency = invoice.currency
    title = f"{invoice.kind.value.replace('_', ' ')} {invoice.number or f'(draft {invoice.id})'} — {invoice.status}"
    table = Table(title=title, caption=f"{invoice.customer.name} ({invoice.customer.external_id}), "
                  f"period {invoice.period_label}, {currency}")
    table.add_column("Section / line")
    table.add_column("Quantity", justify="right")
    table.add_column("Amount", justify="right")
    for section, lines in invoice.sections():
        if section:
            table.add_row(f"[bold]{section}[/]", "", "")
        for line in lines:
            quantity = f"{line.quantity} {line.unit or ''}".strip()
            table.add_row(f"  {line.description}", quantity, format_amount(line.amount, currency))
    table.add_section()
    table.add_row("Subtotal", "", format_amount(invoice.subtotal, currency))
    if invoice.discount:
        table.add_row("Discounts", "", f"-{format_amount(invoice.discount, currency)}")
    from invoices.render import tax_json  # (the renderer's imports only where a document is shown)

    added, inside = tax_rows([tax_json(tax, currency) for tax in invoice.taxes])
    for label, amount, note in added:
        table.add_row(escape(label), "", amount)
        if note:
            table.add_row(f"  [italic]{escape(note)}[/]", "", "")
    table.add_row("[bold]Total[/]", "", f"[bold]{format_amount(invoice.total, currency)}[/]")
    for label, amount in inside:
        table.add_row(f"[italic]{escape(label)}[/]", "", f"[italic]{amount}[/]")
    for credit in invoice.credits_applied:
        table.add_row(credit.description, "", f"-{format_amount(credit.amount, currency)}")
    if invoice.amount_paid:
        table.add_row("Payments received", "", f"-{format_amount(invoice.amount_paid, currency)}")
    if invoice.credits_applied or invoice.amount_paid or invoice.total < 0:
        table.add_row("Amount due", "", format_amount(invoice.amount_due, currency))
    return table


@invoices_app.command("finalize")
def finalize(
    key: str | None = typer.Argument(None, help="Draft id (or billing key)."),
    period: str | None = typer.Option(None, "--period", help="Finalize every draft of this period."),
    allow_open_period: bool = typer.Option(
        False, "--allow-open-period", help="Also finalize the current period before it has ended."
    ),
    as_written: bool = typer.Option(
        False, "--as-written", help="With --period: issue the drafts as the last runs wrote them, without rating "
        "them again (right after the `billing run --shard` runs of the period); those of customers with a plan "
        "gone from the catalog stay drafts.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print JSON: the invoice (the API's fields), or with --period the numbers given."
    ),
) -> None:
    """Finalize one draft, or every draft of a period: each gets the next gap-free number. Each period draft is
    rated again first (a billing run of its customer's month), so it bills the subscriptions, prices and usage as
    they are now (--as-written: as written). A period invoice is finalized once its period has ended in its
    customer's timezone (--allow-open-period: the current period too, never one to come). A draft that waits for
    approval is refused (by id) or left a draft (--period): `billing invoices approve` first."""
    if (key is None) == (period is None):
        fail("give either an invoice id or --period YYYY-MM")
    if as_written and period is None:
        fail("--as-written goes with --period")
    engine = engine_for_cli()
    catalog = load_catalog_for_cli()
    if period is not None:
        start = _period_start(period)
        assert start is not None
        _finalize_period(engine, catalog, period, allow_open_period, as_json, as_written=as_written)
        return
    try:
        invoice = finalize_draft_fresh(
            engine, catalog, key, finalize_settings(), invoicing.issue_day(), allow_open_period=allow_open_period,  # type: ignore[arg-type]
            approval=ApprovalPolicy.configured(),
        )
    except BillingError as error:
        fail(open_period_message(error))
    if as_json:
        _print_invoice_json(invoicing.get_invoice(engine, invoice.id))
        return
    console.print(f"finalized {invoice.number}: {format_amount(invoice.total, invoice.currency)} {invoice.currency}")


def _finalize_period(
    engine: Engine, catalog: Catalog, period: str, allow_open_period: bool, as_json: bool, *, as_written: bool
) -> None:
    """Every draft of the period, rated again first (unless ``as_written``), but those waiting for approval, which
    are listed, and those of customers that cannot be rated now (a plan gone from the catalog), which are named."""
    month = parse_month(period)
    policy = ApprovalPolicy.configured()
    settings, today = finalize_settings(), invoicing.issue_day()
    try:
        invoicing.check_period_finalizable(engine, month, allow_open_period=allow_open_period)  # (before the record)
        with run_history.recorded(
            engine, month, source="cli", actor=run_history.cli_user(), finalize=True
        ) as recording:
            if as_written:
                held = held_customers(engine, catalog, month)
                report = RunReport(period=month, skipped=list(held.items()), unrated=set(held))
                numbers = finalize_period(
                    engine, month, settings, today, allow_open_period=allow_open_period, approval=policy, leave=held
                )
                report.waiting = waiting_for_earlier(engine, month)
            else:
                report, numbers = finalize_period_fresh(
                    engine, catalog, month, settings, today, allow_open_period=allow_open_period, approval=policy
                )
            waiting = awaiting_approval(engine, policy, period_start=month.start)
            recording.done(report, numbers, [item.draft.invoice_id for item in waiting])
    except BillingError as error:
        fail(open_period_message(error))
    unrated: dict[str, str] = {}  # the customers whose drafts were left as they were, with the first reason
    for who, why in report.skipped:
        if who in report.unrated:
            unrated.setdefault(who, why)
    left = sorted([*unrated.items(), *report.waiting])
    if as_json:
        _json.emit({
            "finalized": numbers,
            "awaiting_approval": [item.draft.invoice_id for item in waiting],
            "left_as_drafts": [{"customer": who, "reason": why} for who, why in left],
        })  # fmt: skip
        return
    for who, why in sorted(unrated.items()):
        err_console.print(f"[yellow]left a draft:[/] {escape(who)} cannot be rated now: {escape(why)}", highlight=False)
    for who, why in report.waiting:
        err_console.print(f"[yellow]left a draft:[/] {escape(who)}: {escape(why)}", highlight=False)
    refreshed = f" ({report.updated} draft(s) rated again first: changed since written)" if report.updated else ""
    console.print(
        f"finalized {len(numbers)} invoice(s)" + (f": {numbers[0]} … {numbers[-1]}" if numbers else "") + refreshed
    )
    if waiting:
        console.print(f"{len(waiting)} draft(s) wait for approval and were not finalized:")
        _print_pending(waiting)


@invoices_app.command("pending-approval")
def pending_approval(
    period: str | None = typer.Option(None, "--period", help="YYYY-MM"),
    customer: str | None = typer.Option(None, "--customer"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: {\"data\": [...]} as the API answers."),
) -> None:
    """The drafts that wait for approval before they are issued, each with why (above the approval limit of its
    currency, late usage, customer flagged for review)."""
    waiting = awaiting_approval(engine_for_cli(), ApprovalPolicy.configured(), period_start=_period_start(period),
                                customer=customer)
    if as_json:
        _json.emit({"data": [draft_approval_json(item) for item in waiting], "has_more": False})
        return
    _print_pending(waiting)


def _print_pending(waiting: list[DraftApproval]) -> None:
    table = Table(title=f"{len(waiting)} draft(s) waiting for approval")
    for column in ("Id", "Customer", "Period", "Total", "Why"):
        table.add_column(column, justify="right" if column in ("Id", "Total") else "left", no_wrap=column != "Why")
    for item in waiting:
        draft = item.draft
        why = "; ".join(reason.message for reason in item.reasons)
        if item.outdated:
            why += f" (approved by {item.approval.approved_by} before its content changed)"  # type: ignore[union-attr]
        label = f"{draft.period_start:%Y-%m}" if draft.period_start.day == 1 else draft.period_start.isoformat()
        table.add_row(str(draft.invoice_id), draft.customer_external_id, label,
                      f"{format_amount(draft.total, draft.currency)} {draft.currency}", why)
    print_table(table)


@invoices_app.command("approve")
def approve(
    key: str | None = typer.Argument(None, help="Draft id (or billing key)."),
    period: str | None = typer.Option(None, "--period", help="Approve every draft of this period that waits."),
    customer: str | None = typer.Option(None, "--customer", help="With --period: only this customer's drafts."),
    by: str | None = typer.Option(None, "--by", help="Who approves (default: the login name)."),
    note: str | None = typer.Option(None, "--note", help="Why, for the record."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: the draft(s) approved, with their approval."),
) -> None:
    """Approve a draft (or every draft of a period that waits) as its content is now: the scheduler's automatic
    finalization, or `billing invoices finalize`, then issues it. A billing run that changes the draft's content
    afterwards takes the approval back."""
    import getpass

    if (key is None) == (period is None):
        fail("give either a draft id or --period YYYY-MM")
    if customer is not None and period is None:
        fail("--customer: only with --period")
    engine, policy, who = engine_for_cli(), ApprovalPolicy.configured(), by or getpass.getuser()
    try:
        if key is not None:
            approved = [approval.approve(engine, key, policy, by=who, note=note)]
        else:
            start = _period_start(period)
            assert start is not None
            approved = approval.approve_period(engine, start, policy, by=who, note=note, customer=customer)
    except BillingError as error:
        fail(str(error))
    if as_json:
        _json.emit({"data": [draft_approval_json(item) for item in approved], "has_more": False})
        return
    for item in approved:
        draft = item.draft
        needed = "" if item.reasons else " (it did not need approval)"
        console.print(f"approved draft {draft.invoice_id} of {draft.customer_external_id}: "
                      f"{format_amount(draft.total, draft.currency)} {draft.currency}{needed}")
    if not approved:
        console.print("no draft of the period waits for approval")


@invoices_app.command("void")
def void(number: str = typer.Argument(..., help="Invoice number."), as_json: bool = JsonOption) -> None:
    """Void an issued invoice; it keeps its number."""
    try:
        invoice = invoicing.set_invoice_status(engine_for_cli(), number, InvoiceStatus.VOID)
    except BillingError as error:
        fail(str(error))
    if as_json:
        _print_invoice_json(invoicing.get_invoice(engine_for_cli(), invoice.id))
        return
    console.print(f"{invoice.number} is void")


@invoices_app.command("credit")
def credit(
    number: str = typer.Argument(..., help="Invoice number."),
    amount: str = typer.Option(..., "--amount", help="Amount to credit, tax included."),
    reason: str = typer.Option(..., "--reason", help="Why the customer is credited."),
    to_balance: bool = typer.Option(
        False, "--to-balance", help="Refund it to the customer's balance, which the next invoices use."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the credit note as JSON (the API's fields)."),
) -> None:
    """Issue a credit note against an invoice (its own gap-free CN- sequence); --to-balance puts its amount on
    the customer's balance."""
    try:  # (as payments record reads its amount: plain decimal notation, no 1e3, no 1_000)
        value = payments.parse_amount(amount)
    except BillingError as error:
        fail(str(error))
    try:
        note = invoicing.create_credit_note(engine_for_cli(), number, value, reason, finalize_settings(),
                                            invoicing.issue_day(), to_balance=to_balance,
                                            catalog=load_catalog_for_cli())
    except BillingError as error:
        fail(str(error))
    if as_json:
        _print_invoice_json(invoicing.get_invoice(engine_for_cli(), note.id))
        return
    console.print(f"credit note {note.number} for {number}: {format_amount(note.total, note.currency)} {note.currency}")


@invoices_app.command("render")
def render(
    number: str = typer.Argument(..., help="Invoice number or id."),
    output_format: str = typer.Option("pdf", "--format", help="json, html or pdf."),
    output: Path | None = typer.Option(None, "-o", "--output", help="File to write (default: standard output)."),
) -> None:
    """Render an invoice as JSON, HTML or PDF."""
    from invoices.render import invoice_json, render_html, render_pdf

    if output_format not in ("json", "html", "pdf"):
        fail(f"--format: expected json, html or pdf, got {output_format!r}")
    invoice = _get(number)
    if output_format != "json":
        invoice = invoicing.printable(engine_for_cli(), invoice)
    if output_format == "json":
        data: bytes = json.dumps(invoice_json(invoice), indent=2).encode() + b"\n"
    elif output_format == "html":
        data = render_html(invoice).encode()
    else:
        data = render_pdf(invoice)
    if output is None:
        if output_format == "pdf" and sys.stdout.isatty():
            fail("a PDF goes to a file: add -o FILE.pdf")
        sys.stdout.buffer.write(data)
    else:
        output.write_bytes(data)
        console.print(f"wrote {output} ({len(data):,} bytes)")
