"""``billing apikeys create|list|revoke``: the HTTP API's keys (``billing.apikeys``)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from billing.cli import _json
from billing.cli._common import console, database_message, engine_for_cli, fail
from billing.errors import BillingError

__all__ = ["register"]

apikeys_app = typer.Typer(help="API keys for the HTTP API: create, list, revoke.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(apikeys_app, name="apikeys")


@apikeys_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="What the key is for.")],
    customer: Annotated[
        str | None, typer.Option("--customer", help="Bind the key to this customer: it sees only their data.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the key's record with the key itself (secret) as JSON.")
    ] = False,
) -> None:
    """Make an API key and print it. It is shown this once: only its hash is stored."""
    from billing.apikeys import create_api_key

    engine = engine_for_cli()
    try:
        key, secret = create_api_key(engine, name, customer)
    except BillingError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(database_message(exc))
    finally:
        engine.dispose()
    scope = f"customer {key.customer}" if key.customer else "all customers"
    if as_json:
        _json.emit(_json.api_key_json(key, secret))
    else:
        typer.echo(secret)
    typer.echo(
        f"API key {key.id} ({key.name}, {scope}): send it as 'Authorization: Bearer <key>'; it is not shown again.",
        err=True,
    )


@apikeys_app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Every key: id, name, prefix, customer, created, revoked."""
    from billing.apikeys import list_api_keys

    engine = engine_for_cli()
    try:
        keys = list_api_keys(engine)
    except SQLAlchemyError as exc:
        fail(database_message(exc))
    finally:
        engine.dispose()
    if as_json:
        _json.emit(_json.listing(_json.api_key_json(key) for key in keys))
        return
    table = Table(box=box.SIMPLE_HEAD, title=f"{len(keys)} API key(s)")
    for column in ("Id", "Name", "Key", "Customer", "Created", "Revoked"):
        table.add_column(column, overflow="fold")
    for key in keys:
        table.add_row(
            str(key.id),
            key.name,
            f"{key.prefix}…",
            key.customer or "(all)",
            f"{key.created_at:%Y-%m-%d %H:%M}",
            f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "",
        )
    console.print(table)


@apikeys_app.command("revoke")
def revoke(
    key_id: Annotated[int, typer.Argument(metavar="ID", min=1, max=2**63 - 1, help="The key's id (apikeys list).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the revoked key as a JSON object.")] = False,
) -> None:
    """Revoke a key: it is refused from the next request on."""
    from billing.apikeys import revoke_api_key

    engine = engine_for_cli()
    try:
        key = revoke_api_key(engine, key_id)
    except BillingError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(database_message(exc))
    finally:
        engine.dispose()
    if as_json:
        _json.emit(_json.api_key_json(key))
        return
    console.print(f"API key {key.id} ({key.name}) revoked", highlight=False)
