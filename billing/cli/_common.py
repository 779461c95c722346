"""What the command modules share: the consoles, the settings, one way to fail."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` on standard error and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


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
    """The engine of the configured database."""
    from billing.config import get_settings
    from billing.db import make_engine

    return make_engine(get_settings().database_url)


def finalize_settings():  # type: ignore[no-untyped-def]
    """Numbering and dating settings for issued invoices, from the configuration."""
    from billing.config import get_settings
    from invoices.model import Party
    from invoices.store import FinalizeSettings

    settings = get_settings()
    seller = settings.seller
    return FinalizeSettings(
        invoice_number_format=settings.invoice_number_format,
        credit_note_number_format=settings.credit_note_number_format,
        payment_terms_days=settings.payment_terms_days,
        seller=Party(name=seller.name, address=tuple(seller.address), email=seller.email, tax_id=seller.tax_id),
    )
