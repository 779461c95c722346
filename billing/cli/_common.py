"""What the command modules share: the consoles, the settings, one way to fail."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.exc import SQLAlchemyError

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int | None = None) -> NoReturn:
    """Print ``message`` on standard error and exit with ``code``.

    Without a ``code``: 2 when the message is about an option's value (it starts with the option, as in
    ``--period: expected YYYY-MM``), the exit status of every usage error; else 1.
    """
    if code is None:
        code = 2 if message.startswith("--") else 1
    # (the message as written: "its [subscription] has no seats" is text, not a style)
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(code)


def open_period_message(error: Exception) -> str:
    """An error's message; for a period that has not ended, with the option that finalizes the current period."""
    from billing.invoicing import OpenPeriodError

    if isinstance(error, OpenPeriodError) and error.allowable:
        return f"{error} (--allow-open-period finalizes the current period now)"
    return str(error)


def load_catalog_for_cli(path: object = None):  # type: ignore[no-untyped-def]
    """The catalog at ``path`` (default: the ``catalog`` setting), or every problem printed and exit 1."""
    from billing.config import get_settings
    from pricing_plans.errors import CatalogError
    from pricing_plans.loader import load_catalog_or_raise

    try:
        return load_catalog_or_raise(path or get_settings().catalog)
    except CatalogError as error:
        for problem in error.problems:
            err_console.print(str(problem), highlight=False, soft_wrap=True, markup=False)
        fail(f"the catalog has {len(error.problems)} problem(s)")


def engine_for_cli():  # type: ignore[no-untyped-def]
    """The engine of the configured database: the process's shared one, closed on exit (or between tests)."""
    from billing.db.engines import get_engine

    return get_engine()


def finalize_settings():  # type: ignore[no-untyped-def]
    """Numbering and dating settings for issued invoices, from the configuration."""
    from billing.invoicing import finalize_settings as configured

    return configured()


@contextmanager
def database() -> Iterator[Engine]:
    """The configured database; any engine error becomes one message and exit 1."""
    from sqlalchemy.exc import SQLAlchemyError

    from billing.config import get_settings
    from billing.db import make_engine
    from billing.errors import BillingError

    engine = make_engine(get_settings().database_url)
    try:
        yield engine
    except BillingError as exc:
        fail(*_as_options(exc))
    except SQLAlchemyError as exc:
        fail(database_message(exc))
    finally:
        engine.dispose()


def _as_options(exc: Exception) -> tuple[str, int | None]:
    """The engine's refusal in the command's words: a problem about a field the command takes as an option
    (``email: expected an address…`` from ``--email``) names the option, and a refusal whose every problem is an
    option's value is a usage error (exit 2, as a bad ``--period`` is); any other keeps the engine's words (exit
    1 unless it names an option already)."""
    from typer._click.globals import get_current_context

    context = get_current_context(silent=True)
    options = {name for param in context.command.params for name in param.opts} if context is not None else set()
    problems = list(getattr(exc, "problems", None) or [str(exc)])
    worded, named = [], 0
    for problem in problems:
        field, colon, rest = problem.partition(": ")
        option = "--" + field.replace("_", "-")
        if colon and field.isidentifier() and option in options:
            worded.append(f"{option}: {rest}")
            named += 1
        else:
            worded.append(problem)
    if not named:
        return str(exc), None
    return "; ".join(worded), 2 if named == len(problems) else 1


_MISSING = ("no such table", "no such column", "does not exist", "unable to open")


def database_message(exc: SQLAlchemyError) -> str:
    """A database error in one line: the database's own message (without SQLAlchemy's statement dump); when it
    misses a table or a column, why, if the database's revision says: not initialized, or at another revision
    than this version's tables, with what to do."""
    original = getattr(exc, "orig", None)
    reason = str(original if original is not None else exc).strip().splitlines()[0]
    state = _schema_state() if missing_schema(exc) else None
    return f"database: {reason}" if state is None else f"database: {reason} ({state})"


def missing_schema(exc: SQLAlchemyError) -> bool:
    """Whether the error is of a table or a column the database lacks."""
    original = getattr(exc, "orig", None)
    reason = str(original if original is not None else exc).lower()
    return any(sign in reason for sign in _MISSING)


def _schema_state() -> str | None:
    """What the configured database's revision says of its tables (None: nothing, it is this version's)."""
    from sqlalchemy.exc import SQLAlchemyError

    from billing.config import get_settings
    from billing.db import current_revision, head_revision, known_revision, make_engine

    try:
        engine = make_engine(get_settings().database_url)
        try:
            revision = current_revision(engine)
        finally:
            engine.dispose()
    except (SQLAlchemyError, OSError):
        return "is the database initialized? run `billing init` or `billing db upgrade`"
    head = head_revision()
    if revision is None:
        return "the database is not initialized: run `billing init` or `billing db upgrade`"
    if revision == head:
        return None
    if not known_revision(revision):
        return f"the database is at revision {revision}, newer than this version's {head}: use the newer version"
    return f"the database is at revision {revision}, this version needs {head}: run `billing db upgrade`"


def print_table(table: Table) -> None:
    """On a terminal, fit the table to it; piped or captured, print it whole, one line per row."""
    if console.is_terminal:
        console.print(table)
    else:
        whole = console.measure(table, options=console.options.update_width(10_000)).maximum
        Console(file=console.file, width=max(console.width, whole), no_color=True).print(table)


def progress_bar(label: str) -> Progress:
    """A progress bar for long work, on standard error and only on a terminal (piped output stays clean)."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )


def tax_rows(taxes: list[dict[str, Any]]) -> tuple[list[tuple[str, str, str | None]], list[tuple[str, str]]]:
    """A document's tax rows in a terminal table, ``taxes`` as ``invoices.render.tax_json`` writes them: the tax
    added to the prices, one row per rate between the subtotal and the total, so that they add up (with the
    rate's note, if any); and the tax already inside tax-inclusive prices, "of which" rows under the total. A
    rate with both kinds of price has a row of each: 100.00 + 19 % and 119.00 with 19 % inside make "19 % on top
    of the prices 19.00" and "of which 19 % inside the prices 19.00", not 38.00 once."""
    added: list[tuple[str, str, str | None]] = []
    inside: list[tuple[str, str]] = []
    for tax in taxes:
        amount, included = Decimal(tax["tax_amount"]), Decimal(tax["tax_included"])
        name = f"{tax['name']} {tax['rate']} %"
        if included == 0:
            added.append((f"{name} of {tax['taxable_amount']}", tax["tax_amount"], tax["note"]))
            continue
        if amount != included:
            added.append((f"{name} on top of the prices", str(amount - included), tax["note"]))
        inside.append((f"  of which {name} inside the prices", tax["tax_included"]))
    return added, inside
