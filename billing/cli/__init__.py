"""The ``billing`` command. Thin: each module parses its arguments, calls the engine and prints with rich.

Every command module exposes ``register(app)``; errors reach the user as one clear message and exit 1.
"""

from __future__ import annotations

import importlib

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="billing",
    help="Usage-based billing engine: price plans, metering, invoices, alerts and revenue figures.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_COMMAND_MODULES = (
    "plans",
    "quote",
    "database",
    "customers",
    "ingest",
    "usage",
    "runs",
    "invoices",
    "notifications",
    "metrics",
    "service",
    "serve",
    "apikeys",
)

for _name in _COMMAND_MODULES:
    importlib.import_module(f"billing.cli.{_name}").register(app)


def main() -> None:
    app()
