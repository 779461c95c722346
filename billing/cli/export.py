"""``billing export --period P --to DIR [--format csv|json]``: the month's accounting export
(``billing.export``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from billing.cli import _json
from billing.cli._common import engine_for_cli, fail, print_table


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    period: str = typer.Option(..., "--period", help="The month, YYYY-MM."),
    to: Path = typer.Option(..., "--to", help="The folder to write the files into (made if missing)."),
    output_format: str = typer.Option("csv", "--format", help="csv (with a header) or json."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: the files written and the journal's totals."),
) -> None:
    """Write a month's accounting export: invoices, lines, credit notes, payments, taxes, credit movements, journal.

    One file each (CSV with a header, or JSON); the journal holds one balanced entry per movement of money or
    credit, and the command fails if its debits and credits differ."""
    from billing.core.periods import parse_month
    from billing.errors import BillingError
    from billing.export import FORMATS, export_period
    from pricing_plans.money import format_amount

    if output_format not in FORMATS:
        fail(f"--format: expected csv or json, got {output_format!r}")
    try:
        month = parse_month(period)
    except ValueError as error:
        fail(f"--period: {error}")
    try:
        done = export_period(engine_for_cli(), month, to, output_format)
    except BillingError as error:
        fail(str(error))
    except OSError as error:
        fail(f"--to: {to}: {error.strerror or error}")
    totals = {c: (format_amount(d, c), format_amount(k, c)) for c, (d, k) in done.totals().items()}
    problems = done.problems()
    if as_json:
        _json.emit({
            "period": month.label,
            "files": [
                {"name": path.name, "path": str(path), "rows": len(done.tables[path.stem])} for path in done.files
            ],
            "journal": {c: {"debit": d, "credit": k} for c, (d, k) in totals.items()},
            "balanced": not problems,
        })
    else:
        table = Table(title=f"Accounting export {month.label} → {to}")
        table.add_column("File")
        table.add_column("Rows", justify="right")
        for path in done.files:
            table.add_row(path.name, str(len(done.tables[path.stem])))
        for currency, (debit, credit) in totals.items():
            table.add_row(f"journal {currency}: debits / credits", f"{debit} / {credit}")
        print_table(table)
    if problems:
        fail("the journal does not balance: " + "; ".join(problems))
