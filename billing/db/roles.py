"""A least-privilege PostgreSQL role for the application (``billing db create-role NAME``).

The database's guards are triggers; whoever owns the tables (or is a superuser) can ``TRUNCATE`` past them, disable
them, or alter them away. The application needs none of that: it reads and writes rows. The role made here owns
nothing and may only ``SELECT``, ``INSERT``, ``UPDATE`` and ``DELETE`` the rows of the schema's tables (the
migrations' bookkeeping table ``alembic_version`` only ``SELECT``), use their sequences, connect, and make the
temporary tables ingestion and aggregation work in. ``TRUNCATE``, ``ALTER``, ``DROP``, ``CREATE`` in the schema,
``DISABLE TRIGGER`` and ``SET session_replication_role`` are refused to it (``CREATE`` only where PUBLIC may not
create in the schema, PostgreSQL 15's default: on 14 and older the command warns, and the owner revokes it).
Migrations (``billing db upgrade``) keep
running as the tables' owner; the privileges on tables later migrations create come with them (default
privileges of the owner in the schema). Running the command again brings an existing role's privileges up to date
(and sets its password when one is given); a role that is a superuser, may create roles or databases, bypasses row
security or owns anything is refused.

Remove it with ``DROP OWNED BY NAME; DROP ROLE NAME;`` (the first drops its privileges, as the owner).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

from billing.errors import BillingInputError
from dbkit import is_postgresql

__all__ = ["AppRole", "create_app_role"]

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_POWERS = {
    "rolsuper": "a superuser",
    "rolcreaterole": "allowed to create roles",
    "rolcreatedb": "allowed to create databases",
    "rolbypassrls": "allowed to bypass row security",
    "rolreplication": "a replication role",
}


@dataclass(frozen=True, slots=True)
class AppRole:
    """What ``create_app_role`` did: the role, where its privileges hold, and whether it was new."""

    name: str
    database: str
    schema: str
    owner: str
    tables: int
    created: bool
    public_can_create: bool = False  # every role (PUBLIC) may create in the schema: PostgreSQL 14 and older's default


def create_app_role(engine: Engine, name: str, password: str | None = None) -> AppRole:
    """Create (or bring up to date) the application's role ``name`` in the connected database's current schema.

    Runs as the configured connection, which must own the tables (or be a superuser). Raises
    :class:`BillingInputError` for SQLite, a name that is not a plain lower-case identifier, or an existing role
    with more power than the application needs.
    """
    if not is_postgresql(engine):
        raise BillingInputError(
            "create-role is for PostgreSQL: SQLite has no roles (protect the database file with the file system's "
            "permissions instead)"
        )
    if not _NAME.fullmatch(name):
        raise BillingInputError(
            f"role name {name!r}: expected a lower-case identifier (letters, digits, _; at most 63 characters)"
        )
    with engine.begin() as connection:
        schema, database = connection.execute(text("SELECT current_schema(), current_database()")).one()
        if schema is None:
            raise BillingInputError("the connection has no current schema (check its search_path)")
        owner = connection.execute(
            text("SELECT tableowner FROM pg_tables WHERE schemaname = :schema AND tablename = 'alembic_version'"),
            {"schema": schema},
        ).scalar_one_or_none()
        if owner is None:
            raise BillingInputError(f"schema {schema!r} has no migrated tables: run `billing db upgrade` first")
        if name == owner:
            raise BillingInputError(f"role {name!r} owns the tables; the application's role must own nothing")
        created = _create_or_check(connection, name, password)
        tables = _grant(connection, name, str(database), str(schema), str(owner))
        public_can_create = bool(
            connection.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM pg_namespace n,"
                    " aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a"
                    " WHERE n.nspname = :schema AND a.grantee = 0 AND a.privilege_type = 'CREATE')"
                ),
                {"schema": schema},
            ).scalar_one()
        )
    return AppRole(name, str(database), str(schema), str(owner), tables, created, public_can_create)


def _ddl(connection: Connection, template: str, *identifiers: str, literal: str | None = None) -> None:
    """Run DDL with its identifiers (and a literal) quoted by the server: ``format('… %I …', ...)``."""
    arguments = {f"a{i}": value for i, value in enumerate(identifiers)}
    placeholders = ", ".join(f"CAST(:a{i} AS text)" for i in range(len(identifiers)))
    if literal is not None:
        arguments["literal"] = literal
        placeholders += ", CAST(:literal AS text)"
    statement = text(f"SELECT format(CAST(:template AS text), {placeholders})")
    ddl = connection.execute(statement, {"template": template, **arguments})
    # through the driver's cursor without parameters: nothing in the statement is read as a placeholder
    cursor = connection.connection.cursor()
    try:
        cursor.execute(ddl.scalar_one())
    finally:
        cursor.close()


def _create_or_check(connection: Connection, name: str, password: str | None) -> bool:
    """Create the role, or check that the existing one is no more than the application needs."""
    columns = ", ".join(_POWERS)
    row = connection.execute(text(f"SELECT {columns}, oid FROM pg_roles WHERE rolname = :name"), {"name": name})
    existing = row.mappings().one_or_none()
    if existing is None:
        attributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION INHERIT"
        if password is None:
            _ddl(connection, f"CREATE ROLE %I {attributes}", name)
        else:
            _ddl(connection, f"CREATE ROLE %I {attributes} PASSWORD %L", name, literal=password)
        return True
    powers = [what for column, what in _POWERS.items() if existing[column]]
    if powers:
        raise BillingInputError(f"role {name!r} exists and is {', '.join(powers)}: not a least-privilege role")
    owned = connection.execute(
        text(
            "SELECT (SELECT count(*) FROM pg_class WHERE relowner = :oid)"
            " + (SELECT count(*) FROM pg_namespace WHERE nspowner = :oid)"
            " + (SELECT count(*) FROM pg_proc WHERE proowner = :oid)"
        ),
        {"oid": existing["oid"]},
    ).scalar_one()
    if owned:
        raise BillingInputError(f"role {name!r} exists and owns {owned} object(s): the application's role owns nothing")
    memberships = connection.execute(
        text("SELECT count(*) FROM pg_auth_members WHERE member = :oid"), {"oid": existing["oid"]}
    ).scalar_one()
    if memberships:
        raise BillingInputError(f"role {name!r} exists and is a member of other roles: it would inherit their power")
    if password is not None:
        _ddl(connection, "ALTER ROLE %I PASSWORD %L", name, literal=password)
    return False


def _grant(connection: Connection, name: str, database: str, schema: str, owner: str) -> int:
    """The application's privileges and nothing more; returns how many tables they cover."""
    _ddl(connection, "GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I", database, name)
    _ddl(connection, "GRANT USAGE ON SCHEMA %I TO %I", schema, name)
    _ddl(connection, "REVOKE CREATE ON SCHEMA %I FROM %I", schema, name)
    _ddl(connection, "REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM %I", schema, name)
    _ddl(connection, "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I", schema, name)
    _ddl(connection, "REVOKE INSERT, UPDATE, DELETE ON TABLE %I.alembic_version FROM %I", schema, name)
    _ddl(connection, "REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM %I", schema, name)
    _ddl(connection, "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I", schema, name)
    # tables and sequences that later migrations create (as the owner) come with the same privileges
    _ddl(
        connection,
        "ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I",
        owner, schema, name,
    )
    _ddl(
        connection,
        "ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO %I",
        owner, schema, name,
    )
    return int(
        connection.execute(
            text("SELECT count(*) FROM pg_tables WHERE schemaname = :schema"), {"schema": schema}
        ).scalar_one()
    )
