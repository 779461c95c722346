"""``billing db upgrade`` and ``billing init``: apply the migrations, or create a fresh database; ``billing db
create-role``: the application's least-privilege PostgreSQL role; ``billing db check``: the usage counters
recounted from the events; ``billing db resolve-conflicts``: the event store's raced conflicts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from billing.cli._common import console, err_console, fail
from billing.config import get_settings
from billing.db import current_revision, make_engine, upgrade

db_app = typer.Typer(help="The database: migrations, the application's role.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    app.command("init")(init)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations to the configured database (database_url) and print its revision."""
    url = get_settings().database_url
    _migrate(url)


@db_app.command("check")
def db_check(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Recount every usage counter from the stored events and compare (exit 1 when one differs).

    Reads every event once (one transaction that changes nothing and sees one instant: events stored meanwhile
    are neither recounted nor compared). Each counter that differs is named with
    what is stored and what the events make (events, sum and largest value, in the meters' units × 10^6). When
    the events live in another store (``events_url``), no counter is kept or read: it says so and checks nothing.
    """
    from billing.cli._common import database
    from billing.cli._json import emit
    from billing.db.counters import checked
    from billing.event_store import event_store, events_counted

    with database() as engine:
        if not events_counted(engine):  # nothing counted, nothing read: nothing to compare
            _not_counted(event_store(engine).url, as_json)
            return
        compared, differ = checked(engine)
    rows = [
        {
            "customer": key[0],
            "meter": key[1],
            "window_start": key[2],
            "window_end": key[3],
            "stored": None if stored is None else [stored.events, stored.total, stored.largest],
            "counted": None if counted is None else [counted.events, counted.total, counted.largest],
        }
        for key, stored, counted in ((m.key, m.stored, m.counted) for m in differ)
    ]
    if as_json:
        emit({"counters": compared, "differ": rows})
    else:
        console.print(f"usage counters: {compared} compared, {len(rows)} differ from the events", highlight=False)
        for row in rows:
            err_console.print(
                f"  {row['customer']} {row['meter']} [{row['window_start']}, {row['window_end']}): "
                f"stored {row['stored']}, the events make {row['counted']}",
                highlight=False,
            )
    if rows:
        raise typer.Exit(1)


@db_app.command("resolve-conflicts")
def db_resolve_conflicts() -> None:
    """Keep the first received content of each event id stored with two contents (two ingestions raced on a
    ClickHouse event store; a billing run refuses the customers concerned until then): delete the later ones."""
    from billing.cli._common import engine_for_cli
    from billing.event_store import event_store

    store = event_store(engine_for_cli())
    resolve = getattr(store, "resolve_conflicts", None)
    deleted = 0 if resolve is None else int(resolve())  # a SQL store's unique index lets no conflict in
    console.print(f"event store {store.url}: {deleted} conflicting event(s) deleted", highlight=False)


@db_app.command("create-role")
def db_create_role(
    name: Annotated[str, typer.Argument(help="The role's name (a lower-case identifier).")],
    password: Annotated[
        str | None, typer.Option("--password", help="Its login password (default: none; set one before use).")
    ] = None,
) -> None:
    """Create the application's PostgreSQL role: it owns nothing and may only read and write rows.

    Run as the tables' owner (the database_url that ran the migrations); point the application's database_url at
    the new role. TRUNCATE, ALTER, DROP and DISABLE TRIGGER are refused to it. Run it again after an upgrade to
    bring an existing role's privileges up to date.
    """
    from billing.db.roles import create_app_role
    from billing.errors import BillingError

    url = get_settings().database_url
    try:
        parsed = make_url(url)
    except ArgumentError:
        fail(f"database_url: not a database URL: {url!r}")
    shown = parsed.render_as_string(hide_password=True)
    engine = make_engine(url)
    try:
        role = create_app_role(engine, name, password)
    except BillingError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(f"cannot create the role in {shown}: {_reason(exc)}")
    finally:
        engine.dispose()
    verb = "created" if role.created else "exists; privileges brought up to date"
    console.print(f"role {role.name} {verb}", highlight=False)
    console.print(
        f"  may read and write the rows of the {role.tables} tables in schema {role.schema} of database "
        f"{role.database} (alembic_version: read only); owns nothing; TRUNCATE, ALTER, DROP and DISABLE TRIGGER "
        "are refused",
        highlight=False,
        soft_wrap=True,
    )
    if role.public_can_create:
        err_console.print(
            f"warning: every role (PUBLIC) may create tables in schema {role.schema} (PostgreSQL 14 and older "
            f"make it so), and so may {role.name}; revoke it as the owner: REVOKE CREATE ON SCHEMA {role.schema} "
            "FROM PUBLIC",
            highlight=False,
            soft_wrap=True,
        )
    example = parsed.set(username=role.name, password="PASSWORD" if password else None)
    console.print(
        f"  run the application with database_url = {example.render_as_string(hide_password=False)}; "
        f"keep running `billing db upgrade` as {role.owner}",
        highlight=False,
        soft_wrap=True,
    )


def _not_counted(store: str, as_json: bool) -> None:
    from billing.cli._json import emit

    if as_json:
        emit({"counters": None, "differ": [], "event_store": store})
        return
    console.print(
        f"usage counters: not kept, the events live in the event store {store}; thresholds and entitlements "
        "aggregate them there (nothing to compare)",
        highlight=False,
    )


def init(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing SQLite file (its data is lost).")] = False,
    example: Annotated[
        Path | None,
        typer.Option(
            "--example",
            metavar="DIR",
            help="First write the sample catalog.toml and config.toml into DIR, then create the database its "
            "config names (DIR/billing.db).",
        ),
    ] = None,
) -> None:
    """Create a fresh database at database_url and apply the migrations.

    An existing SQLite file with tables is refused unless --force, which deletes it first. A PostgreSQL
    database must be empty: init never drops tables there (drop and recreate the database yourself).
    With --example DIR the sample catalog and configuration are written into DIR first (existing ones only with
    --force) and become this command's configuration.
    """
    if example is not None:
        from billing.cli import use_config_file
        from billing.cli.examples import write_example

        use_config_file(ctx, write_example(example, force=force).resolve())
    url = get_settings().database_url
    try:
        parsed = make_url(url)
    except ArgumentError:
        fail(f"database_url: not a database URL: {url!r}")
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_path(parsed)
        if path is not None:
            if path.exists() and not force and not _is_empty_sqlite(url):
                fail(f"database {path} already exists; use --force to replace it (its data is lost)")
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)
    else:
        if force:
            fail("--force only replaces SQLite files; to start over on PostgreSQL drop and recreate the database")
        engine = make_engine(url)
        try:
            tables = inspect(engine).get_table_names()
        except SQLAlchemyError as exc:
            fail(f"cannot reach the database {shown}: {_reason(exc)}")
        finally:
            engine.dispose()
        if tables:
            fail(f"database {shown} is not empty; use `billing db upgrade` to migrate it")
    _migrate(url)
    from billing.cli.notifications import warn_without_destination

    warn_without_destination(get_settings())


def _sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite URL; None for other databases and in-memory ones."""
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _is_empty_sqlite(url: str) -> bool:
    """Whether an existing SQLite file holds no table at all (created by a command run before ``init``)."""
    engine = make_engine(url)
    try:
        return not inspect(engine).get_table_names()
    except SQLAlchemyError:
        return False  # not a database we can read: leave it alone unless --force
    finally:
        engine.dispose()


def _migrate(url: str) -> None:
    """Upgrade ``url`` to the newest revision and print the revision it is at."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        fail(f"database_url: not a database URL: {url!r}")
    shown = parsed.render_as_string(hide_password=True)
    path = _sqlite_path(parsed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        upgrade(url)
        engine = make_engine(url)
        try:
            revision = current_revision(engine)
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        fail(f"cannot migrate the database {shown}: {_reason(exc)}")
    console.print(f"database {shown} at revision {revision}", highlight=False)
    from billing.event_store import create_event_tables

    try:
        events = create_event_tables(get_settings().events_url)
    except Exception as exc:  # the event store's own error (ClickHouse, chDB, another SQL database)
        fail(f"cannot create the event store's tables: {exc}")
    if events is not None:
        console.print(f"event store {events}: tables ready", highlight=False)


def _reason(exc: SQLAlchemyError) -> str:
    """The database's own message, without SQLAlchemy's statement dump and background link."""
    original = getattr(exc, "orig", None)
    return str(original if original is not None else exc).strip().splitlines()[0]
