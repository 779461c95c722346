"""The ``billing`` command. Thin: each module parses its arguments, calls the engine and prints with rich.

Every command module exposes ``register(app)``; errors reach the user as one clear message and exit 1, usage
errors (a bad option value) exit 2.

Start-up is kept cheap for scripts that call the command hundreds of times: ``billing --help`` and ``billing
--version`` import Typer and nothing else of weight. The top-level commands are listed in :data:`COMMANDS` with
the modules that register them and their one-line help; a command's module (and with it SQLAlchemy, rich, the
settings…) is imported only when that command runs, or its own help or completion is asked for. A new command
goes into :data:`COMMANDS`; ``tests/billing/test_cli_startup.py`` checks the table against the modules.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, MutableMapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperGroup

__all__ = ["COMMANDS", "app", "main", "use_config_file"]

# Each top-level command: the modules (of billing.cli) whose ``register`` adds it, and its one-line help as
# ``billing --help`` shows it (the first paragraph of the command's own help). In the order of a first session.
COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "init": (("database",), "Create a fresh database at database_url and apply the migrations."),
    "plans": (("plans",), "Check the price catalog and look at its plans."),
    "quote": (
        ("quote",),
        "Rate one customer-period: the fee, each charge with its breakdown, the commitment true-up, the total.",
    ),
    "customers": (
        ("customers", "notifications", "reviews"),  # `customers set-limit`, `customers review`
        "Customers: add, update, archive, list, import from CSV, rotate a webhook secret.",
    ),
    "subscribe": (("customers",), "Subscribe a customer to the plan version in effect on the start date."),
    "subscriptions": (
        ("customers", "overrides"),
        "Subscriptions: list, cancel, change plan, change seats, negotiate prices.",
    ),
    "coupons": (("coupons",), "Coupons: create, issue to a customer, apply from the next billing period, list, show."),
    "ingest": (("ingest",), "Ingest usage events; each event id is stored once, however often it is sent."),
    "usage": (
        ("usage",),
        "Usage: a customer's usage and upcoming invoice, and the usage events no invoice will carry.",
    ),
    "entitlements": (
        ("entitlements",),
        "A customer's entitlements: each meter's usage this period, its limit, what remains, whether it is blocked.",
    ),
    "run": (
        ("runs",),
        "Write (or refresh) one draft invoice per customer for the period; with --finalize, number them.",
    ),
    "runs": (("runs",), "Billing runs done: who started each, when, and what it did."),
    "invoices": (("invoices",), "Invoices and credit notes."),
    "export": (
        ("export",),
        "Write a month's accounting export: invoices, lines, credit notes, payments, taxes, credit movements, journal.",
    ),
    "credits": (
        ("credits",),
        "Prepaid credits and the customer's balance: grant, balance, ledger, low-balance alert, auto top-up.",
    ),
    "payments": (("payments",), "Payments received against invoices: record, list, reverse."),
    "notifications": (("notifications",), "Notifications: list, deliver, retry."),
    "thresholds": (("notifications",), "Usage and spend thresholds."),
    "metrics": (
        ("metrics",),
        "Revenue and churn figures per month and currency: customers, MRR movements, churn, CRR, NRR, GRR, billed "
        "revenue, ARPA and CLV.",
    ),
    "stripe": (("service",), "Stripe: push finalized invoices for collection."),
    "serve": (
        ("serve",),
        "Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs) and run the scheduler: billing runs for closed "
        "periods, finalization after the grace period, threshold checks, notification delivery and Stripe sync.",
    ),
    "portal": (("portal",), "The customer portal: make a link to send to a customer, or end the links sent."),
    "apikeys": (("apikeys",), "API keys for the HTTP API: create, list, revoke."),
    "db": (("database",), "The database: migrations, the application's role."),
}


@cache
def load_command(name: str) -> Any:
    """The click command ``name``, built from the modules that register it (imported now, once)."""
    modules, _ = COMMANDS[name]
    holder = typer.Typer(rich_markup_mode=None, add_completion=False)
    for module in modules:
        importlib.import_module(f"billing.cli.{module}").register(holder)
    command = typer.main.get_group(holder).commands[name]
    _quiet_types(command)
    return command


def _quiet_types(command: Any) -> None:
    """Help without a ``<str>``/``<bool>`` after every option: a flag shows nothing, an option that takes a value
    shows its name as the value (``--period PERIOD``) unless it names its own metavar, choices show as
    ``[a|b]``, and an argument, already shown by its name, shows no type."""
    for param in command.params:
        if param.param_type_name == "option" and param.metavar is None:
            if param.is_flag or param.count:
                param.metavar = ""
            elif choices := _choices(param):
                param.metavar = f"[{'|'.join(choices)}]"
            else:
                param.metavar = max(param.opts, key=len).lstrip("-").replace("-", "_").upper()
        elif param.param_type_name == "argument":
            param.display_type_rich = _no_type
    for sub in getattr(command, "commands", {}).values():
        _quiet_types(sub)


def _choices(param: Any) -> list[str]:
    """The values a parameter with choices (an Enum) accepts; none for any other."""
    descriptor = getattr(param, "type_descriptor", None)
    if not getattr(descriptor, "is_choice", False):
        return []
    return [str(getattr(choice, "value", choice)) for choice in descriptor.choices or ()]


def _no_type(ctx: Any = None) -> None:
    return None


class _LazyCommands(MutableMapping[str, Any]):
    """The top-level commands by name: those of :data:`COMMANDS`, each loaded when first looked up, and any
    added directly."""

    def __init__(self) -> None:
        self._added: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name in self._added:
            return self._added[name]
        if name in COMMANDS:
            return load_command(name)
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return name in self._added or name in COMMANDS

    def __iter__(self) -> Iterator[str]:
        yield from COMMANDS
        yield from (name for name in self._added if name not in COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS.keys() | self._added.keys())

    def __setitem__(self, name: str, command: Any) -> None:
        self._added[name] = command

    def __delitem__(self, name: str) -> None:
        del self._added[name]


class LazyGroup(TyperGroup):
    """The top-level group: its commands come from :data:`COMMANDS`, each module imported when its command is
    needed (to run it, or for its own help or completion); the command list of ``billing --help`` is printed
    from the table."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        commands = _LazyCommands()
        commands.update(self.commands)
        self.commands = commands

    def invoke(self, ctx: Any) -> Any:
        """Run the command; a configuration file that cannot be read, a database that cannot be reached, is busy
        or lacks a table (not initialized, or not upgraded to this version) is one message and exit 1, whichever
        command met it."""
        try:
            return super().invoke(ctx)
        except Exception as error:
            config = sys.modules.get("billing.config")
            if config is not None and isinstance(error, config.ConfigError):
                from billing.cli._common import fail

                fail(str(error), code=1)
            errors = sys.modules.get("sqlalchemy.exc")
            if errors is not None and type(error) is errors.DatabaseError:  # ("file is not a database")
                from billing.cli._common import database_message, fail

                fail(database_message(error), code=1)
            if errors is not None and isinstance(error, (errors.OperationalError, errors.ProgrammingError)):
                from billing.cli._common import database_message, fail, missing_schema

                # (the database unreachable, busy, or without a table: its message; any other statement the
                # database refused is a fault here, and keeps its traceback)
                if isinstance(error, errors.OperationalError) or missing_schema(error):
                    fail(database_message(error), code=1)
            raise

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # the names, without loading the commands

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        limit = formatter.width - 6 - max(len(name) for name in self.commands)
        rows = [(name, _short_help(name, limit)) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _short_help(name: str, limit: int) -> str:
    if name not in COMMANDS:
        return str(load_command(name).get_short_help_str(limit))
    from typer._click.utils import make_default_short_help  # what click shortens a command's own help with

    return make_default_short_help(COMMANDS[name][1], limit)


def _version(value: bool) -> None:
    if value:
        from billing import __version__

        typer.echo(f"billing {__version__}")
        raise typer.Exit()


app = typer.Typer(
    name="billing",
    cls=LazyGroup,
    help="Usage-based billing engine: price plans, metering, invoices, alerts and revenue figures.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rendering it with rich costs more than the rest of start-up
)


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_version, help="Print the version and exit."),
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            exists=True,
            dir_okay=False,
            help="The configuration file (default: BILLING_CONFIG, else ./config.toml if there is one).",
            show_default=False,
        ),
    ] = None,
) -> None:
    if config is not None:
        use_config_file(ctx, config.resolve())
        return
    named = os.environ.get("BILLING_CONFIG", "").strip()
    if named and not Path(named).is_file():
        raise typer.BadParameter(f"{named}: no such file (unset it to use ./config.toml)", param_hint="BILLING_CONFIG")


def use_config_file(ctx: typer.Context, path: Path) -> None:
    """Make ``path`` the configuration file of this command (``BILLING_CONFIG``, for this process and the
    processes it starts); the previous value comes back when the command ends."""
    previous = os.environ.get("BILLING_CONFIG")

    def switch(value: str | None) -> None:
        if value is None:
            os.environ.pop("BILLING_CONFIG", None)
        else:
            os.environ["BILLING_CONFIG"] = value
        config_module = sys.modules.get("billing.config")
        if config_module is not None:
            config_module.get_settings.cache_clear()

    switch(str(path))
    ctx.call_on_close(lambda: switch(previous))


def main() -> None:
    app(prog_name="billing")
