"""The service's commands: ``billing stripe sync`` (pushes finalized invoices to Stripe for collection).

Thin: it calls :func:`billing.stripe.sync.sync_invoices` and prints what was pushed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from billing.cli import _json
from billing.cli._common import console, engine_for_cli, err_console, fail
from billing.errors import BillingError
from pricing_plans.money import format_amount

if TYPE_CHECKING:
    from billing.stripe.adjust import Adjustment
    from billing.stripe.sync import InvoiceSync, SyncReport

stripe_app = typer.Typer(help="Stripe: push finalized invoices for collection.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(stripe_app, name="stripe")


@stripe_app.command("sync")
def stripe_sync(
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Push at most this many invoices (oldest first).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: the counts and each invoice pushed.")] = False,
) -> None:
    """Push each finalized invoice not yet in Stripe: customer, invoice, one item per line, finalize. Then carry
    there the voids and credit notes of invoices pushed before: the Stripe invoice voided, a Stripe credit note.

    Needs STRIPE_API_KEY. Safe to run again at any time: a push that failed resumes where it stopped, and
    idempotency keys keep Stripe from creating anything twice. Exits 1 if anything could not be carried.
    """
    from billing.stripe.sync import sync_invoices

    engine = engine_for_cli()
    try:
        with Progress(
            TextColumn("pushing to Stripe"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err_console,
            transient=True,
            disable=not err_console.is_terminal,
        ) as progress:
            task = progress.add_task("sync", total=None)
            report = sync_invoices(
                engine, limit=limit, progress=lambda done, total: progress.update(task, completed=done, total=total)
            )
    except BillingError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        original = getattr(exc, "orig", None)
        fail(f"database: {str(original if original is not None else exc).strip().splitlines()[0]}")
    finally:
        engine.dispose()
    if as_json:
        _json.emit(
            {
                "synced": len(report.synced),
                "failed": len(report.failed),
                "invoices": [_sync_json(result) for result in report.results],
                "adjustments": [_adjustment_json(adjustment) for adjustment in report.adjustments],
            }
        )
        if not report.ok:
            raise typer.Exit(1)
        return
    if not report.results and not report.adjustments:
        console.print("nothing to push: every finalized invoice is in Stripe, with its voids and credit notes")
        return
    if report.results:
        _print_pushes(report)
    if report.adjustments:
        _print_adjustments(report)
    if not report.ok:
        raise typer.Exit(1)


def _print_pushes(report: SyncReport) -> None:
    table = Table(box=box.SIMPLE_HEAD)
    for header in ("Invoice", "Customer", "Total", "Stripe invoice", "Items", "Result"):
        table.add_column(header, overflow="fold")
    for result in report.results:
        outcome = "finalized" if result.ok else f"stopped after {result.step}: {result.error}"
        total = f"{format_amount(result.total, result.currency)} {result.currency}"
        cells = (result.invoice_number, result.customer, total, result.stripe_invoice_id or "", str(result.items))
        table.add_row(*map(Text, (*cells, outcome)))
    console.print(table)
    console.print(f"pushed {len(report.synced)}, failed {len(report.failed)}", highlight=False)


def _print_adjustments(report: SyncReport) -> None:
    table = Table(box=box.SIMPLE_HEAD, title="Carried to Stripe after the push")
    for header in ("Document", "Invoice", "Stripe invoice", "Amount", "Result"):
        table.add_column(header, overflow="fold")
    for adjustment in report.adjustments:
        currency = adjustment.currency
        amount = "" if adjustment.amount is None else f"{format_amount(adjustment.amount, currency)} {currency}"
        shown = adjustment.outcome or ""
        outcome = _OUTCOMES.get(shown, shown) if adjustment.ok else f"not carried: {adjustment.error}"
        cells = (adjustment.document, adjustment.invoice_number, adjustment.stripe_invoice_id, amount, outcome)
        table.add_row(*map(Text, cells))
    console.print(table)
    failed = sum(not adjustment.ok for adjustment in report.adjustments)
    console.print(f"carried {len(report.adjustments) - failed}, failed {failed}", highlight=False)


_OUTCOMES = {
    "voided": "Stripe invoice voided",
    "deleted": "draft Stripe invoice deleted",
    "paid": "paid in Stripe before the void: nothing voided",
    "pre_payment": "credit note: Stripe collects that much less",
    "out_of_band": "credit note recorded (paid in Stripe: the amount is on the balance here)",
}


def _adjustment_json(adjustment: Adjustment) -> dict[str, object]:
    """A void or credit note carried to Stripe: a credit note's amount in its currency's digits (null for a void)."""
    shown = _json.record_json(adjustment)
    shown["amount"] = None if adjustment.amount is None else format_amount(adjustment.amount, adjustment.currency)
    shown["ok"] = adjustment.ok
    return shown


def _sync_json(result: InvoiceSync) -> dict[str, object]:
    """One invoice's push: our invoice (total in the currency's minor digits), its last step, Stripe's ids."""
    shown = _json.record_json(result)
    shown["total"] = format_amount(result.total, result.currency)
    shown["ok"] = result.ok
    return shown
