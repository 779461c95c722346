"""Guards in the database itself, on SQLite and PostgreSQL: an invoice's status moves only as the lifecycle
allows, its id never changes, an issued invoice cannot be replaced, a usage event an issued invoice counted cannot
be deleted or changed; and on PostgreSQL the application's least-privilege role (``billing db create-role``), under
which a billing run and its finalization work while TRUNCATE, ALTER, DROP and DISABLE TRIGGER are refused."""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from billing import customers as service
from billing.cli import app
from billing.core.periods import month
from billing.db import make_engine, session_scope
from billing.metering import meter_specs
from billing.run import finalize_period, run_billing
from dbkit import is_sqlite
from invoices import store
from invoices.model import InvoiceStatus
from meters import ingest
from pricing_plans.loader import loads_catalog
from tests.conftest import PG_URL
from tests.invoices.test_store import SETTINGS, TODAY, draft

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.basic]
name = "Basic"
currency = "USD"
[plans.basic.subscription]
fee = 30.00
billing = "in_arrears"
[[plans.basic.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.50
"""
MARCH = month(2026, 3)
runner = CliRunner()


@pytest.fixture
def catalog():
    loaded, problems = loads_catalog(CATALOG, "guards.toml")
    assert not problems
    return loaded


def _refused(engine: Engine, statement: str, match: str, **params: object) -> None:
    with pytest.raises(DBAPIError, match=match), engine.begin() as connection:
        connection.execute(text(statement), params)


def _status(engine: Engine, invoice_id: int) -> str:
    with engine.connect() as connection:
        return connection.execute(text("SELECT status FROM invoices WHERE id = :id"), {"id": invoice_id}).scalar_one()


def _issued(engine: Engine, key: str = "period:acme:2026-03") -> int:
    with session_scope(engine) as session:
        invoice_id = store.upsert_draft(session, draft(key)).invoice_id
        store.finalize(session, invoice_id, SETTINGS, TODAY)
    return invoice_id


# -- the lifecycle -----------------------------------------------------------------------------------------------

MOVE = "UPDATE invoices SET status = :status WHERE id = :id"


@pytest.mark.parametrize(
    "path",
    [
        ("paid",),
        ("void",),
        ("uncollectible", "paid"),
        ("uncollectible", "void"),
        ("paid", "finalized"),  # a payment reversed (migration 0022)
        ("paid", "finalized", "void"),
    ],
)
def test_an_issued_invoice_moves_on_as_the_lifecycle_allows(engine, path):
    invoice_id = _issued(engine)
    for status in path:
        with engine.begin() as connection:
            connection.execute(text(MOVE), {"status": status, "id": invoice_id})
    assert _status(engine, invoice_id) == path[-1]


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        (("uncollectible",), "finalized"),  # the hole: uncollectible went back to finalized
        (("uncollectible",), "draft"),
        (("paid",), "void"),
        (("paid",), "uncollectible"),
        (("void",), "paid"),
        (("void",), "finalized"),
        ((), "draft"),
    ],
)
def test_every_other_status_change_is_refused(engine, path, refused):
    invoice_id = _issued(engine)
    for status in path:
        with engine.begin() as connection:
            connection.execute(text(MOVE), {"status": status, "id": invoice_id})
    _refused(engine, MOVE, "cannot change", status=refused, id=invoice_id)
    assert _status(engine, invoice_id) == (path[-1] if path else "finalized")


def test_a_draft_only_becomes_finalized_and_a_new_invoice_starts_as_a_draft(engine):
    with session_scope(engine) as session:
        draft_id = store.upsert_draft(session, draft()).invoice_id
    _refused(
        engine, "UPDATE invoices SET status = 'paid', number = 'INV-X' WHERE id = :id", "cannot change", id=draft_id
    )
    with session_scope(engine) as session:
        store.finalize(session, draft_id, SETTINGS, TODAY)
        store.set_status(session, draft_id, InvoiceStatus.UNCOLLECTIBLE)
        store.set_status(session, draft_id, InvoiceStatus.PAID)  # a late payment
    assert _status(engine, draft_id) == "paid"
    _refused(
        engine,
        "INSERT INTO invoices (billing_key, kind, scope, number, status, customer_external_id, customer, seller,"
        " currency, locale, timezone, period_start, period_end, subtotal, discount, tax_rate, tax, total,"
        " created_at, updated_at) VALUES ('period:acme:2026-04', 'invoice', 'period', 'INV-9', 'paid', 'acme', '{}',"
        " '{}', 'USD', 'en_US', 'UTC', '2026-04-01', '2026-05-01', '1', '0', '0', '0', '1', '2026-05-01 00:00:00',"
        " '2026-05-01 00:00:00')",
        "a new invoice is a draft",
    )


# -- an invoice's id and number ----------------------------------------------------------------------------------


@pytest.mark.parametrize("issued", [True, False])
def test_an_invoices_id_never_changes(engine, issued):
    if issued:
        invoice_id = _issued(engine)
    else:
        with session_scope(engine) as session:
            invoice_id = store.upsert_draft(session, draft()).invoice_id
    _refused(engine, "UPDATE invoices SET id = 999 WHERE id = :id", "id cannot change", id=invoice_id)
    if issued:
        _refused(engine, "UPDATE invoices SET number = 'INV-X' WHERE id = :id", "cannot change", id=invoice_id)
    with session_scope(engine) as session:
        assert len(store.get_invoice(session, invoice_id).lines) == 2


def _sqlite_file(db_url: str) -> sqlite3.Connection:
    """A plain sqlite3 connection, as the sqlite3 shell opens one: foreign keys off, no recursive triggers."""
    connection = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    assert connection.execute("PRAGMA foreign_keys").fetchone() == (0,)
    return connection


def test_on_sqlite_with_foreign_keys_off_an_issued_invoice_keeps_its_id_and_cannot_be_replaced(engine, db_url):
    if not is_sqlite(engine):
        pytest.skip("SQLite's foreign_keys pragma and INSERT OR REPLACE")
    invoice_id = _issued(engine)
    with session_scope(engine) as session:
        draft_id = store.upsert_draft(session, draft("period:beta:2026-03")).invoice_id
    shell = _sqlite_file(db_url)
    try:
        line_id = shell.execute("SELECT min(id) FROM invoice_lines WHERE invoice_id = ?", (invoice_id,)).fetchone()[0]
        columns = ", ".join(row[1] for row in shell.execute("PRAGMA table_info(invoices)") if row[1] != "id")
        for statement in (
            f"UPDATE invoices SET id = 999 WHERE id = {invoice_id}",
            # OR REPLACE deletes the row in the way without firing its delete trigger
            f"REPLACE INTO invoices (id, {columns}) SELECT {invoice_id}, {columns} FROM invoices WHERE id = {draft_id}",
            f"UPDATE OR REPLACE invoices SET billing_key = 'period:acme:2026-03' WHERE id = {draft_id}",
            f"UPDATE OR REPLACE invoices SET id = {invoice_id} WHERE id = {draft_id}",
            f"REPLACE INTO invoice_lines (id, invoice_id, position, section, kind, description, quantity, amount,"
            f" details) VALUES ({line_id}, {draft_id}, 9, '', 'usage', 'swapped', '1', '0.01', '{{}}')",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="cannot change"):
                shell.execute(statement)
    finally:
        shell.close()
    with session_scope(engine) as session:
        invoice = store.get_invoice(session, invoice_id)
    assert (invoice.number, [str(line.amount) for line in invoice.lines]) == ("INV-2026-000001", ["49.00", "12.50"])


# -- usage events an issued invoice counted -----------------------------------------------------------------------


def _events(customer: str, *instants: str) -> list[dict[str, str]]:
    return [
        {"id": f"{customer}-{instant}", "customer": customer, "meter": "api_calls", "timestamp": instant}
        for instant in instants
    ]


COUNTED = ("2026-03-10T12:00:00Z", "2026-03-31T23:59:59Z")
# March's period widened by 14 hours on either side (UTC offsets run from −12 to +14 hours)
WIDENED = ("2026-02-28T10:00:00Z", "2026-04-01T13:59:59Z")
OUTSIDE = ("2026-02-28T09:59:59Z", "2026-04-01T14:00:00Z", "2026-04-10T12:00:00Z")


@pytest.fixture
def march_issued(engine, catalog) -> Engine:
    """acme's March invoice is issued; beta's is a draft; both have events in and around March."""
    for customer in ("acme", "beta"):
        service.create_customer(engine, customer, customer.title(), f"ap@{customer}.test", "USD", timezone="UTC")
        service.subscribe(engine, catalog, customer, "basic", dt.date(2026, 1, 1))
        report = ingest(engine, _events(customer, *COUNTED, *WIDENED, *OUTSIDE), meter_specs(catalog), {customer})
        assert not report.rejected
    run_billing(engine, catalog, MARCH)
    assert finalize_period(engine, MARCH, SETTINGS, dt.date(2026, 4, 2), customer="acme") == ["INV-2026-000001"]
    return engine


def _count(engine: Engine, customer: str) -> int:
    with engine.connect() as connection:
        statement = text("SELECT count(*) FROM usage_events WHERE customer = :c")
        return connection.execute(statement, {"c": customer}).scalar_one()


DELETE = "DELETE FROM usage_events WHERE event_id = :id"


@pytest.mark.parametrize("instant", COUNTED + WIDENED)
def test_an_event_in_an_issued_period_cannot_be_deleted(march_issued, instant):
    _refused(march_issued, DELETE, "counted by an issued invoice", id=f"acme-{instant}")
    assert _count(march_issued, "acme") == 7


def test_events_outside_it_or_of_a_draft_can_be_deleted_and_a_bulk_delete_is_refused_whole(march_issued):
    engine = march_issued
    _refused(engine, "DELETE FROM usage_events WHERE customer = 'acme'", "counted by an issued invoice")
    assert _count(engine, "acme") == 7
    with engine.begin() as connection:
        for instant in OUTSIDE:
            assert connection.execute(text(DELETE), {"id": f"acme-{instant}"}).rowcount == 1
        # beta's March invoice is still a draft: its events may go (the next run bills what is left)
        assert connection.execute(text("DELETE FROM usage_events WHERE customer = 'beta'")).rowcount == 7
    assert _count(engine, "acme") == 4


def test_a_counted_event_cannot_change_and_no_event_moves_into_an_issued_period(march_issued, catalog):
    engine = march_issued
    march_10, april_10 = "acme-2026-03-10T12:00:00Z", "acme-2026-04-10T12:00:00Z"
    _refused(engine, "UPDATE usage_events SET customer = 'beta' WHERE event_id = :id", "counted", id=march_10)
    _refused(engine, "UPDATE usage_events SET occurred_at = occurred_at + 86400000000 WHERE event_id = :id",
             "counted", id=march_10)
    # moving April's event back into March would be usage the issued invoice never billed, and no late line either
    _refused(engine, "UPDATE usage_events SET occurred_at = occurred_at - 864000000000 WHERE event_id = :id",
             "counted", id=april_10)
    with engine.begin() as connection:
        statement = text("UPDATE usage_events SET properties = '{\"region\": \"eu\"}' WHERE event_id = :id")
        assert connection.execute(statement, {"id": april_10}).rowcount == 1
    # ingesting the same events again still reports them as duplicates, counted ones included
    again = ingest(engine, _events("acme", *COUNTED, *WIDENED), meter_specs(catalog), {"acme"})
    assert (again.accepted, again.duplicates, len(again.rejected)) == (0, 4, 0)


def test_on_sqlite_a_counted_event_cannot_be_replaced_by_an_update(march_issued, db_url):
    if not is_sqlite(march_issued):
        pytest.skip("SQLite's UPDATE OR REPLACE")
    shell = _sqlite_file(db_url)
    try:
        # April's event taking the id of a counted March one would delete it, without its delete trigger
        with pytest.raises(sqlite3.IntegrityError, match="counted"):
            shell.execute(
                "UPDATE OR REPLACE usage_events SET event_id = 'acme-2026-03-10T12:00:00Z'"
                " WHERE event_id = 'acme-2026-04-10T12:00:00Z'"
            )
    finally:
        shell.close()
    assert _count(march_issued, "acme") == 7


@pytest.mark.parametrize("timezone", ["Pacific/Kiritimati", "Pacific/Pago_Pago"])
def test_the_widened_period_covers_every_timezone(engine, catalog, timezone):
    """UTC+14 and UTC−11: the first and last instants of the customer's local March are counted."""
    service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone=timezone)
    service.subscribe(engine, catalog, "acme", "basic", dt.date(2026, 1, 1))
    first, last = (
        ("2026-02-28T10:00:00Z", "2026-03-31T09:59:59Z")
        if timezone == "Pacific/Kiritimati"
        else ("2026-03-01T11:00:00Z", "2026-04-01T10:59:59Z")
    )
    ingest(engine, _events("acme", first, last), meter_specs(catalog), {"acme"})
    run_billing(engine, catalog, MARCH)
    finalize_period(engine, MARCH, SETTINGS, dt.date(2026, 4, 2))
    with session_scope(engine) as session:
        usage = [line for line in store.get_invoice(session, "INV-2026-000001").lines if line.meter == "api_calls"]
    assert [str(line.quantity) for line in usage] == ["2"]  # both counted by March's invoice
    for instant in (first, last):
        _refused(engine, DELETE, "counted by an issued invoice", id=f"acme-{instant}")


# -- PostgreSQL: the application's role ---------------------------------------------------------------------------


def test_create_role_is_for_postgresql(cli_env):
    if not cli_env["BILLING_DATABASE_URL"].startswith("sqlite"):
        pytest.skip("the SQLite answer")
    result = runner.invoke(app, ["db", "create-role", "billing_app"])
    assert result.exit_code == 1
    assert "create-role is for PostgreSQL" in result.stderr


@pytest.fixture
def app_role(cli_env) -> Iterator[tuple[str, str]]:
    """A least-privilege role made by `billing db create-role`, and a database URL that logs in as it."""
    if cli_env["BILLING_DATABASE_URL"].startswith("sqlite"):
        pytest.skip("PostgreSQL roles")
    name = f"billing_app_{uuid.uuid4().hex[:8]}"
    result = runner.invoke(app, ["db", "create-role", name, "--password", "s3cret:%'x"])
    try:
        assert result.exit_code == 0, result.output
        assert f"role {name} created" in result.stdout
        url = make_url(cli_env["BILLING_DATABASE_URL"]).set(username=name, password="s3cret:%'x")
        yield name, url.render_as_string(hide_password=False)
    finally:
        assert PG_URL
        admin = make_engine(PG_URL)
        with admin.begin() as connection:
            if connection.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}).first():
                connection.exec_driver_sql(f'DROP OWNED BY "{name}"')
                connection.exec_driver_sql(f'DROP ROLE "{name}"')
        admin.dispose()


def test_the_application_role_bills_and_finalizes_but_cannot_bypass_the_guards(app_role, catalog):
    name, url = app_role
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT current_user")).scalar_one() == name
            powers = text("SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles WHERE rolname = current_user")
            assert connection.execute(powers).scalar_one() is False
        # the application's normal work: customers, subscriptions, ingestion (COPY and its staging table), a
        # billing run, finalization, a status change, a credit note
        service.create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", timezone="UTC")
        service.subscribe(engine, catalog, "acme", "basic", dt.date(2026, 1, 1))
        report = ingest(engine, _events("acme", *COUNTED, *OUTSIDE), meter_specs(catalog), {"acme"})
        assert (report.accepted, len(report.rejected)) == (5, 0)
        again = ingest(engine, _events("acme", *COUNTED), meter_specs(catalog), {"acme"})
        assert again.duplicates == 2
        run_billing(engine, catalog, MARCH)
        assert finalize_period(engine, MARCH, SETTINGS, dt.date(2026, 4, 2)) == ["INV-2026-000001"]
        with session_scope(engine) as session:
            invoice = store.get_invoice(session, "INV-2026-000001")
            assert str(invoice.total) == "31.00"  # 30.00 + 2 calls × 0.50
            store.set_status(session, invoice.id, InvoiceStatus.UNCOLLECTIBLE)
            store.create_credit_note(session, "INV-2026-000001", invoice.total, "goodwill", SETTINGS, TODAY)
        run_billing(engine, catalog, month(2026, 4))  # drafts are written and rewritten
        run_billing(engine, catalog, month(2026, 4))

        forbidden = [
            "TRUNCATE usage_events",
            "TRUNCATE invoices CASCADE",
            "ALTER TABLE invoices DISABLE TRIGGER invoices_guard",
            "ALTER TABLE usage_events DISABLE TRIGGER ALL",
            "DROP TRIGGER usage_events_guard ON usage_events",
            "CREATE OR REPLACE FUNCTION usage_event_counted(p_customer text, p_occurred_at bigint) RETURNS boolean"
            " LANGUAGE sql AS $$ SELECT false $$",
            "ALTER TABLE invoices ADD COLUMN note text",
            "DROP TABLE usage_events",
            "CREATE TABLE shadow (id int)",
            "SET session_replication_role = replica",
            "UPDATE alembic_version SET version_num = '0001'",
            "CREATE ROLE helper SUPERUSER",
        ]
        for statement in forbidden:
            with pytest.raises(DBAPIError) as refused, engine.begin() as connection:
                connection.exec_driver_sql(statement)
            assert refused.value.orig.sqlstate == "42501", (statement, refused.value.orig)  # insufficient privilege
        # A temporary table named like ours does not fool the guards (their search_path puts pg_temp last).
        with pytest.raises(DBAPIError, match="counted by an issued invoice"), engine.begin() as connection:
            connection.exec_driver_sql("CREATE TEMPORARY TABLE invoices (customer_external_id text, scope text,"
                                       " status text, period_start date, period_end date)")
            connection.execute(text(DELETE), {"id": "acme-2026-03-10T12:00:00Z"})
        _refused(engine, "UPDATE invoices SET status = 'finalized' WHERE number = 'INV-2026-000001'", "cannot change")
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM usage_events")).scalar_one() == 5
    finally:
        engine.dispose()


def test_create_role_again_updates_it_and_refuses_a_powerful_role(app_role, cli_env):
    name, _ = app_role
    again = runner.invoke(app, ["db", "create-role", name])
    assert again.exit_code == 0, again.output
    assert f"role {name} exists; privileges brought up to date" in again.stdout
    superuser = runner.invoke(app, ["db", "create-role", "postgres"])
    assert superuser.exit_code == 1
    assert "exists and is a superuser" in superuser.stderr or "owns the tables" in superuser.stderr
    bad = runner.invoke(app, ["db", "create-role", "App; DROP TABLE invoices"])
    assert bad.exit_code == 1
    assert "expected a lower-case identifier" in bad.stderr
