"""Migrations that move data: what was stored before them reads the same after them."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import stripe
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from billing.db import make_engine, session_scope, upgrade
from invoices import store
from invoices.model import InvoiceScope
from tests.conftest import BACKENDS, PG_URL

INVOICE = (
    "INSERT INTO invoices (id, billing_key, kind, status, customer_external_id, customer, seller, currency, locale,"
    " timezone, period_start, period_end, subtotal, discount, tax_rate, tax, total, refers_to_id, created_at,"
    " updated_at)"
    " VALUES (:id, :key, :kind, 'draft', 'acme', '{\"name\": \"Acme\", \"external_id\": \"acme\"}', '{}', 'USD',"
    " 'en_US', 'UTC', '2026-03-01', '2026-04-01', '10.00', '0', '0', '0', '10.00', :refers_to,"
    " '2026-04-02 10:00:00', '2026-04-02 10:00:00')"
)
LINE = (
    "INSERT INTO invoice_lines (invoice_id, position, section, kind, description, quantity, amount, details)"
    " VALUES (:id, 1, '', 'usage', 'API calls', '1', '10.00', '{}')"
)
# An invoice as stored from 0008 on (it has a scope).
PERIOD_INVOICE = INVOICE.replace("(id, ", "(scope, id, ").replace("VALUES (", "VALUES ('period', ").replace(
    ":refers_to", "NULL"
)
ISSUE = (
    "UPDATE invoices SET status = :status, number = :number, issue_date = '2026-04-02', due_date = '2026-04-16',"
    " finalized_at = '2026-04-02 10:00:00' WHERE id = :id"
)
# What a database at revision 0007 holds: every kind of billing key, issued and draft.
ROWS = (
    (1, "period:acme:2026-03", "invoice", "INV-2026-000001", "finalized", None),
    (2, "start:42", "invoice", "INV-2026-000002", "paid", None),
    (3, "start:7", "invoice", None, "draft", None),
    (4, "credit:INV-2026-000001:1", "credit_note", "CN-2026-000001", "finalized", 1),
    (5, "period:acme:2026-04", "invoice", None, "draft", None),
)


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (a SQLite file, or a PostgreSQL schema of its own) that no migration has touched."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'billing.db'}"
        return
    assert PG_URL
    schema = f"billing_migration_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = make_engine(PG_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _store_0007_rows(engine: Engine, rows: tuple[tuple[object, ...], ...] = ROWS) -> None:
    """Write ``rows`` as the store did before 0008: a draft with its line, then issued (when it has a number)."""
    with engine.begin() as connection:
        for invoice_id, key, kind, number, status, refers_to in rows:
            connection.execute(text(INVOICE), {"id": invoice_id, "key": key, "kind": kind, "refers_to": refers_to})
            connection.execute(text(LINE), {"id": invoice_id})
            if number is not None:
                connection.execute(text(ISSUE), {"id": invoice_id, "status": status, "number": number})


def _scopes(engine: Engine) -> dict[str, tuple[str, int | None]]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT billing_key, scope, subscription_id FROM invoices"))
        return {key: (scope, subscription_id) for key, scope, subscription_id in rows}


def test_0008_fills_scope_and_subscription_of_invoices_stored_before_it(fresh_url):
    upgrade(fresh_url, "0007")
    engine = make_engine(fresh_url)
    try:
        _store_0007_rows(engine)
        upgrade(engine)
        assert _scopes(engine) == {
            "period:acme:2026-03": ("period", None),
            "start:42": ("opening", 42),
            "start:7": ("opening", 7),
            "credit:INV-2026-000001:1": ("credit", None),
            "period:acme:2026-04": ("period", None),
        }
        with session_scope(engine) as session:
            invoices = store.get_invoices(session, [1, 2, 3, 4, 5])
            drafts = store.opening_drafts(session)
        assert [len(invoice.lines) for invoice in invoices] == [1, 1, 1, 1, 1]  # no line lost on the way
        assert [invoice.scope for invoice in invoices] == [
            InvoiceScope.PERIOD, InvoiceScope.OPENING, InvoiceScope.OPENING, InvoiceScope.CREDIT, InvoiceScope.PERIOD
        ]
        assert [(draft.invoice_id, draft.subscription_id) for draft in drafts] == [(3, 7)]
        # what it bills is frozen on an issued invoice from now on; a draft's still moves with its key
        with pytest.raises(DBAPIError, match="cannot change"), engine.begin() as connection:
            connection.execute(text("UPDATE invoices SET subscription_id = 43 WHERE id = 2"))
        with pytest.raises(DBAPIError, match="cannot change"), engine.begin() as connection:
            connection.execute(text("UPDATE invoices SET total = '0' WHERE id = 1"))
        with engine.begin() as connection:
            connection.execute(text("UPDATE invoices SET subscription_id = 8 WHERE id = 3"))
    finally:
        engine.dispose()


def test_0008_refuses_a_billing_key_that_says_nothing_of_what_it_bills(fresh_url):
    upgrade(fresh_url, "0007")
    engine = make_engine(fresh_url)
    try:
        _store_0007_rows(engine, ((1, "by-hand:acme", "invoice", None, "draft", None),))
        with pytest.raises(RuntimeError, match="by-hand:acme"):
            upgrade(engine)
    finally:
        engine.dispose()


def test_0008_can_be_undone_and_redone(fresh_url):
    from alembic import command

    from billing.db import _alembic_config

    upgrade(fresh_url, "0007")
    engine = make_engine(fresh_url)
    try:
        _store_0007_rows(engine)
        upgrade(engine)
        command.downgrade(_alembic_config(engine), "0007")
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM invoice_lines")).scalar_one() == len(ROWS)
        with pytest.raises(DBAPIError, match="cannot change"), engine.begin() as connection:
            connection.execute(text("UPDATE invoices SET total = '0' WHERE id = 1"))
        upgrade(engine)
        assert _scopes(engine)["start:42"] == ("opening", 42)
    finally:
        engine.dispose()


def test_0009_gives_every_database_an_installation_id_of_its_own(fresh_url, tmp_path):
    from alembic import command

    from billing.db import _alembic_config
    from billing.db.installation import installation_id

    upgrade(fresh_url, "0007")
    engine = make_engine(fresh_url)
    other = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        _store_0007_rows(engine)  # a database with invoices already, upgraded
        upgrade(engine)
        upgrade(other)  # a new one
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT singleton, id FROM installation")).all()
        assert len(rows) == 1 and rows[0][0] == 1
        ours = rows[0][1]
        assert len(ours) == 32 and set(ours) <= set("0123456789abcdef")
        assert installation_id(engine) == ours
        assert installation_id(other) != ours
        # one row only
        with pytest.raises(DBAPIError), engine.begin() as connection:
            connection.execute(text("INSERT INTO installation (singleton, id, created_at) VALUES (2, 'x', '2026-01-01')"))
        with pytest.raises(DBAPIError), engine.begin() as connection:
            connection.execute(text("INSERT INTO installation (singleton, id, created_at) VALUES (1, 'x', '2026-01-01')"))
        command.downgrade(_alembic_config(engine), "0008")
        upgrade(engine)
        assert installation_id(engine) != ours  # undone and redone: a new identity, still one row
    finally:
        engine.dispose()
        other.dispose()


def test_0009_a_push_half_done_before_it_resumes_with_the_keys_it_began_with(fresh_url):
    """A push begun before the installation id existed sent keys without it (``<number>:<step>``); after the upgrade
    it goes on with those keys, so a request Stripe carried out whose answer was lost is answered from its key."""
    from billing.config import Settings
    from billing.stripe.sync import stripe_client, sync_invoices
    from tests.billing.test_stripe import API_KEY, FakeStripe

    upgrade(fresh_url, "0007")
    engine = make_engine(fresh_url)
    fake = FakeStripe().start()
    try:
        _store_0007_rows(engine)
        upgrade(engine, "0008")
        with engine.begin() as connection:  # the push of INV-2026-000001 had begun: its row, at the first step
            connection.execute(
                text(
                    "INSERT INTO stripe_invoice_syncs (invoice_id, invoice_number, customer_external_id, step,"
                    " stripe_item_ids, attempts, started_at, updated_at)"
                    " VALUES (1, 'INV-2026-000001', 'acme', 'pending', '[]', 1, '2026-04-02 11:00:00',"
                    " '2026-04-02 11:00:00')"
                )
            )
        client = stripe.StripeClient(API_KEY, base_addresses={"api": fake.url}, max_network_retries=0)
        # …and Stripe created its customer under the key of that time, but the answer never arrived
        client.v1.customers.create(
            params={"metadata": {"billing_customer_id": "acme"}, "name": "Acme"},
            options={"idempotency_key": "INV-2026-000001:customer"},
        )
        upgrade(engine)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT key_prefix FROM stripe_invoice_syncs")).scalar_one() == ""

        report = sync_invoices(engine, stripe_client(Settings(stripe_api_base=fake.url, stripe_api_key=API_KEY)))

        assert report.ok and [r.invoice_number for r in report.synced] == ["INV-2026-000001"]
        assert [key for _, key in fake.posts()] == [
            f"INV-2026-000001:{step}" for step in ("customer", "customer", "invoice", "item:1", "finalize")
        ]
        assert fake.replayed == ["INV-2026-000001:customer"]
        assert len(fake.of("customer")) == 1 and len(fake.of("invoice")) == 1
    finally:
        fake.stop()
        engine.dispose()


def test_0010_guards_come_and_go_with_their_migration(fresh_url):
    """Upgraded over issued invoices, the lifecycle and the counted events are guarded; undone, the triggers are
    as they were (uncollectible → finalized gets through again); redone, guarded again. No row is lost."""
    from alembic import command
    from alembic.script import ScriptDirectory

    from billing.db import _alembic_config

    before = ScriptDirectory.from_config(_alembic_config(fresh_url)).get_revision("0010").down_revision
    assert isinstance(before, str)
    upgrade(fresh_url, before)
    engine = make_engine(fresh_url)
    try:
        with engine.begin() as connection:  # an issued period invoice of two lines, as the store wrote it then
            connection.execute(text(PERIOD_INVOICE), {"id": 1, "key": "period:acme:2026-03", "kind": "invoice"})
            connection.execute(text(LINE), {"id": 1})
            connection.execute(text(LINE), {"id": 1})
            connection.execute(text(ISSUE), {"id": 1, "status": "finalized", "number": "INV-2026-000001"})
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO usage_events (event_id, customer, meter, occurred_at, content_hash, received_at)"
                    " VALUES ('e1', 'acme', 'api_calls', 1773144000000000, 1, 1773144000000000)"  # 2026-03-10
                )
            )
            connection.execute(text("UPDATE invoices SET status = 'uncollectible' WHERE id = 1"))
        upgrade(engine)
        with pytest.raises(DBAPIError, match="cannot change"), engine.begin() as connection:
            connection.execute(text("UPDATE invoices SET status = 'finalized' WHERE id = 1"))
        with pytest.raises(DBAPIError, match="counted by an issued invoice"), engine.begin() as connection:
            connection.execute(text("DELETE FROM usage_events WHERE event_id = 'e1'"))
        command.downgrade(_alembic_config(engine), before)
        with engine.begin() as connection:
            connection.execute(text("UPDATE invoices SET status = 'finalized' WHERE id = 1"))  # the old hole
            connection.execute(text("UPDATE invoices SET status = 'uncollectible' WHERE id = 1"))
        with pytest.raises(DBAPIError, match="cannot change"), engine.begin() as connection:
            connection.execute(text("UPDATE invoices SET total = '0' WHERE id = 1"))  # 0003's guard is still there
        upgrade(engine)
        with pytest.raises(DBAPIError, match="cannot change"), engine.begin() as connection:
            connection.execute(text("UPDATE invoices SET status = 'finalized' WHERE id = 1"))
        with engine.connect() as connection:
            counts = connection.execute(
                text("SELECT (SELECT count(*) FROM invoice_lines), (SELECT count(*) FROM usage_events)")
            ).one()
        assert tuple(counts) == (2, 1)
    finally:
        engine.dispose()


def test_0013_gives_invoice_lines_a_dimension_and_leaves_issued_lines_as_they_were(fresh_url):
    """Upgraded over an issued invoice, its line reads the same with no dimension; undone and redone, no row is
    lost, and the column is gone and back."""
    from alembic import command

    from billing.db import _alembic_config

    upgrade(fresh_url, "0012")
    engine = make_engine(fresh_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(PERIOD_INVOICE), {"id": 1, "key": "period:acme:2026-03", "kind": "invoice"})
            connection.execute(text(LINE), {"id": 1})
            connection.execute(text(ISSUE), {"id": 1, "status": "finalized", "number": "INV-2026-000001"})
        upgrade(engine)
        with session_scope(engine) as session:
            invoice = store.get_invoice(session, "INV-2026-000001")
            assert [(line.description, str(line.amount), line.dimension) for line in invoice.lines] == [
                ("API calls", "10.00", None)
            ]
        with pytest.raises(DBAPIError, match="cannot change"), engine.begin() as connection:
            connection.execute(text("UPDATE invoice_lines SET dimension = '{}' WHERE invoice_id = 1"))  # still frozen
        command.downgrade(_alembic_config(engine), "0012")
        with engine.connect() as connection:
            columns = [row[1] for row in connection.exec_driver_sql("SELECT * FROM invoice_lines").cursor.description]
            assert "dimension" not in columns
        upgrade(engine)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*), max(dimension) FROM invoice_lines")).one() == (1, None)
    finally:
        engine.dispose()


def test_0022_lets_a_paid_invoice_reopen_and_the_ledger_hold_overpayments_and_undoes_both(fresh_url):
    """Upgraded over a paid invoice, it may go back to finalized (a payment reversed) and the credit ledger takes
    the overpayment movements; undone, both are refused again, and the payments table is gone; redone, allowed."""
    from alembic import command

    from billing.db import _alembic_config

    upgrade(fresh_url, "0020")
    engine = make_engine(fresh_url)
    grant = (
        "INSERT INTO credit_grants (id, customer_external_id, currency, kind, amount, priority, created_at)"
        " VALUES (1, 'acme', 'USD', 'balance', '20.00', 0, '2026-04-02 10:00:00')"
    )
    leg = (
        "INSERT INTO credit_entries (movement, kind, account, grant_id, amount, effective_at, recorded_at)"
        " VALUES ('overpayment:1', 'overpayment', :account, 1, :amount, '2026-04-02 10:00:00', '2026-04-02 10:00:00')"
    )
    try:
        with engine.begin() as connection:
            connection.execute(text(PERIOD_INVOICE), {"id": 1, "key": "period:acme:2026-03", "kind": "invoice"})
            connection.execute(text(ISSUE), {"id": 1, "status": "finalized", "number": "INV-2026-000001"})
            connection.execute(text("UPDATE invoices SET status = 'paid' WHERE id = 1"))
            connection.execute(text(grant))
        with pytest.raises(DBAPIError, match="cannot change"), engine.begin() as connection:
            connection.execute(text("UPDATE invoices SET status = 'finalized' WHERE id = 1"))
        with pytest.raises(DBAPIError), engine.begin() as connection:
            connection.execute(text(leg), {"account": "customer", "amount": "20.00"})
        upgrade(engine)
        with engine.begin() as connection:
            connection.execute(text("UPDATE invoices SET status = 'finalized' WHERE id = 1"))
            connection.execute(text("UPDATE invoices SET status = 'paid' WHERE id = 1"))
            connection.execute(text(leg), {"account": "customer", "amount": "20.00"})
            connection.execute(text(leg), {"account": "payment", "amount": "-20.00"})
        with pytest.raises(DBAPIError, match="cannot change"), engine.begin() as connection:
            connection.execute(text("UPDATE invoices SET status = 'void' WHERE id = 1"))  # paid → void still not
        with pytest.raises(Exception, match=r"narrower definition refuses|violated by some row"):
            command.downgrade(_alembic_config(engine), "0020")  # the ledger holds an overpayment
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM credit_entries"))
        command.downgrade(_alembic_config(engine), "0020")
        with pytest.raises(DBAPIError, match="cannot change"), engine.begin() as connection:
            connection.execute(text("UPDATE invoices SET status = 'finalized' WHERE id = 1"))
        with pytest.raises(DBAPIError), engine.begin() as connection:
            connection.execute(text("SELECT count(*) FROM payments"))
        upgrade(engine)
        with engine.begin() as connection:
            connection.execute(text("UPDATE invoices SET status = 'finalized' WHERE id = 1"))
            assert connection.execute(text("SELECT count(*) FROM payments")).scalar_one() == 0
    finally:
        engine.dispose()


NOTIFICATION = (
    "INSERT INTO notifications (id, kind, customer_external_id, period, payload, status, attempts, next_attempt_at,"
    " created_at) VALUES (:id, :kind, 'acme', '2026-04-02', '{}', 'pending', 0, '2026-04-02 10:00:00',"
    " '2026-04-02 10:00:00')"
)


def test_0021_widens_the_notification_kinds_and_keeps_every_delivery_attempt(fresh_url):
    """Upgraded over a notification with a delivery attempt, a credit alert can be stored and the attempt is
    still there; undone, it is refused while a credit alert exists, then done and a credit kind is refused again."""
    from alembic import command

    from billing.db import _alembic_config

    upgrade(fresh_url, "0023")
    engine = make_engine(fresh_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(NOTIFICATION), {"id": "n1", "kind": "invoice.finalized"})
            connection.execute(
                text(
                    "INSERT INTO notification_attempts (notification_id, channel, target, attempted_at, outcome,"
                    " duration_ms) VALUES ('n1', 'webhook', 'http://x', '2026-04-02 10:00:00', 'error', 5)"
                )
            )
        with pytest.raises(DBAPIError), engine.begin() as connection:
            connection.execute(text(NOTIFICATION), {"id": "n2", "kind": "credit.balance_low"})
        upgrade(engine)
        with engine.begin() as connection:
            connection.execute(text(NOTIFICATION), {"id": "n2", "kind": "credit.balance_low"})
            connection.execute(text(NOTIFICATION), {"id": "n3", "kind": "credit.balance_depleted"})
        with pytest.raises(DBAPIError), engine.begin() as connection:
            connection.execute(text(NOTIFICATION), {"id": "n4", "kind": "credit.something_else"})
        with pytest.raises(RuntimeError, match="credit alerts exist"):
            command.downgrade(_alembic_config(engine), "0023")
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM notifications WHERE id IN ('n2', 'n3')"))
        command.downgrade(_alembic_config(engine), "0023")
        with pytest.raises(DBAPIError), engine.begin() as connection:
            connection.execute(text(NOTIFICATION), {"id": "n5", "kind": "credit.balance_low"})
        upgrade(engine)
        with engine.connect() as connection:
            counts = connection.execute(
                text("SELECT (SELECT count(*) FROM notifications), (SELECT count(*) FROM notification_attempts)")
            ).one()
        assert tuple(counts) == (1, 1)
    finally:
        engine.dispose()


def test_0035_begins_the_status_history_with_what_was_known_and_can_be_undone_and_redone(fresh_url):
    """Each issued document's finalization, and its last status change if another; nothing for a draft."""
    import datetime as dt

    from alembic import command

    from billing.db import _alembic_config

    upgrade(fresh_url, "0034")
    engine = make_engine(fresh_url)
    try:
        with engine.begin() as connection:
            for invoice_id, key in ((1, "period:acme:2026-03"), (2, "period:beta:2026-03"), (3, "period:acme:2026-04")):
                connection.execute(text(PERIOD_INVOICE), {"id": invoice_id, "key": key, "kind": "invoice"})
            for invoice_id in (1, 2):
                connection.execute(text(ISSUE), {"id": invoice_id, "status": "finalized", "number": f"INV-{invoice_id}"})
            connection.execute(text(
                "UPDATE invoices SET status = 'uncollectible', status_changed_at = '2026-05-05 12:00:00' WHERE id = 2"
            ))  # fmt: skip
        issued, given_up = dt.datetime(2026, 4, 2, 10, tzinfo=dt.UTC), dt.datetime(2026, 5, 5, 12, tzinfo=dt.UTC)
        expected = {1: (("finalized", issued),), 2: (("finalized", issued), ("uncollectible", given_up))}
        for _ in range(2):
            upgrade(engine)
            with session_scope(engine) as session:
                found = store.status_histories(session, [1, 2, 3])
            assert {i: tuple((s.value, at) for s, at in history) for i, history in found.items()} == expected
            command.downgrade(_alembic_config(engine), "0034")
            with pytest.raises(DBAPIError), engine.begin() as connection:
                connection.execute(text("SELECT count(*) FROM invoice_status_changes"))
    finally:
        engine.dispose()


def test_a_command_on_a_database_at_an_older_revision_names_the_upgrade(fresh_url, tmp_path, monkeypatch):
    """``billing run`` and ``billing runs list`` on a database at 0035 (before the run history's table): one line
    naming the revision it is at, the one this version needs and the command that upgrades it; exit 1, no
    traceback. Upgraded, the same commands work."""
    from typer.testing import CliRunner

    from billing.cli import app
    from billing.config import get_settings
    from billing.db import head_revision
    from tests.conftest import SAMPLE_CATALOG

    upgrade(fresh_url, "0035")
    monkeypatch.setenv("BILLING_DATABASE_URL", fresh_url)
    monkeypatch.setenv("BILLING_CATALOG", str(SAMPLE_CATALOG))
    monkeypatch.setenv("BILLING_CONFIG", str(tmp_path / "config.toml"))
    (tmp_path / "config.toml").write_text("", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    runner = CliRunner()
    head = head_revision()
    assert head is not None and head > "0035"
    try:
        for args in (["run", "--period", "2026-10"], ["runs", "list"]):
            result = runner.invoke(app, args)
            assert result.exit_code == 1, (args, result.output)
            assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
            assert "billing_runs" in result.stderr
            assert f"the database is at revision 0035, this version needs {head}: run `billing db upgrade`" in (
                " ".join(result.stderr.split())
            )
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        result = runner.invoke(app, ["runs", "list", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {"data": [], "has_more": False}
        # a newer version migrated it (its revision unknown here) and the table is gone: upgrading cannot help
        engine = make_engine(fresh_url)
        try:
            with engine.begin() as connection:
                connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
                connection.execute(text("DROP TABLE billing_runs"))
        finally:
            engine.dispose()
        result = runner.invoke(app, ["runs", "list"])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
        assert f"the database is at revision 9999, newer than this version's {head}: use the newer version" in (
            " ".join(result.stderr.split())
        )
    finally:
        get_settings.cache_clear()


RUN = (
    "INSERT INTO billing_runs (id, period_start, period_end, finalize, source, actor, started_at, outcome)"
    " VALUES (1, '2026-10-01', '2026-11-01', :finalize, 'cli', 'ada', '2026-11-02 09:00:00', 'running')"
)
END_RUN = (
    "UPDATE billing_runs SET outcome = :outcome, finished_at = '2026-11-02 09:01:00', report = '{}' WHERE id = 1"
)


def _refused(engine: Engine, statement: str, message: str, **values: object) -> None:
    with pytest.raises(DBAPIError, match=message), engine.begin() as connection:
        connection.execute(text(statement), values)


def test_0037_keeps_the_status_history_and_the_run_records_as_written_and_can_be_undone(fresh_url):
    """A status change is never updated nor deleted; a billing run's record is ended once, while running, and
    changes nothing else, then nothing at all; no record is deleted, nor replaced by an insert on its id.
    Downgraded to 0036, the same statements go through."""
    from alembic import command

    from billing.db import _alembic_config

    upgrade(fresh_url, "0037")
    engine = make_engine(fresh_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(PERIOD_INVOICE), {"id": 1, "key": "period:acme:2026-03", "kind": "invoice"})
            connection.execute(text(ISSUE), {"id": 1, "status": "finalized", "number": "INV-1"})
            connection.execute(text(
                "INSERT INTO invoice_status_changes (id, invoice_id, status, changed_at)"
                " VALUES (1, 1, 'finalized', '2026-04-02 10:00:00')"
            ))  # fmt: skip
            connection.execute(text(RUN), {"finalize": False})
        history = "invoice status history: a status change is recorded once"
        _refused(engine, "UPDATE invoice_status_changes SET changed_at = '2026-04-01 10:00:00'", history)
        _refused(engine, "UPDATE invoice_status_changes SET status = 'paid'", history)
        _refused(engine, "DELETE FROM invoice_status_changes", history)
        ended_once = "billing run record: it is ended once"
        _refused(engine, "UPDATE billing_runs SET actor = 'mallory'", ended_once)  # (running: only how it ended)
        _refused(engine, "UPDATE billing_runs SET finalize = :f", ended_once, f=True)
        with engine.begin() as connection:
            assert connection.execute(text(END_RUN), {"outcome": "completed"}).rowcount == 1
        _refused(engine, END_RUN, ended_once, outcome="failed")
        _refused(engine, "UPDATE billing_runs SET report = NULL", ended_once)
        kept = "billing run record: the history of runs is kept"
        _refused(engine, "DELETE FROM billing_runs", kept)
        if fresh_url.startswith("sqlite"):
            _refused(engine, RUN.replace("INSERT", "INSERT OR REPLACE"), kept, finalize=True)
            _refused(
                engine,
                "INSERT OR REPLACE INTO invoice_status_changes (id, invoice_id, status, changed_at)"
                " VALUES (1, 1, 'paid', '2026-04-03 10:00:00')",
                history,
            )
        with engine.begin() as connection:
            assert connection.execute(text("SELECT actor, outcome, finalize FROM billing_runs")).one() == (
                "ada", "completed", False,
            )
            assert connection.execute(text("SELECT status FROM invoice_status_changes")).scalars().all() == [
                "finalized"
            ]
        command.downgrade(_alembic_config(engine), "0036")
        with engine.begin() as connection:
            assert connection.execute(text("UPDATE billing_runs SET actor = 'grace'")).rowcount == 1
            assert connection.execute(text("DELETE FROM invoice_status_changes")).rowcount == 1
            assert connection.execute(text("DELETE FROM billing_runs")).rowcount == 1
        upgrade(engine)
    finally:
        engine.dispose()


def test_0038_leaves_the_plan_changes_before_it_on_the_terms_they_were_invoiced_on(fresh_url):
    """Subscriptions stored before 0038: 1 (from 1 March) changed to 2 on 10 March, changed to 3 on 20 March; 4
    on its own. After it none has a ``chain_start``: each trial still counts from its own start, as their fees
    were invoiced (a cancellation of 3 is settled on the terms its fee was billed on). Downgraded to 0037, the
    column is gone."""
    from alembic import command

    from billing.db import _alembic_config

    upgrade(fresh_url, "0037")
    engine = make_engine(fresh_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO customers (id, external_id, name, currency, timezone, locale, address, tax_rate,"
                " created_at) VALUES (1, 'acme', 'Acme', 'USD', 'UTC', 'en_US', '[]', '0', '2026-03-01 00:00:00')"
            ))  # fmt: skip
            for id_, start, end, previous in (
                (1, "2026-03-01", "2026-03-10", None),
                (2, "2026-03-10", "2026-03-20", 1),
                (3, "2026-03-20", None, 2),
                (4, "2026-02-15", None, None),
            ):
                connection.execute(
                    text(
                        "INSERT INTO subscriptions (id, customer_id, plan_code, plan_version, start_date, end_date,"
                        " status, previous_subscription_id, created_at) VALUES (:id, 1, 'p', 1, :start, :end,"
                        " :status, :previous, '2026-03-01 00:00:00')"
                    ),
                    {"id": id_, "start": start, "end": end, "previous": previous,
                     "status": "active" if end is None else "cancelled"},
                )  # fmt: skip
        upgrade(engine)
        with engine.begin() as connection:
            rows = connection.execute(text("SELECT id, chain_start FROM subscriptions ORDER BY id")).all()
        assert [(id_, str(chain) if chain else None) for id_, chain in rows] == [
            (1, None), (2, None), (3, None), (4, None),
        ]  # fmt: skip
        command.downgrade(_alembic_config(engine), "0037")
        with engine.begin() as connection:
            assert connection.execute(text("SELECT count(*) FROM subscriptions")).scalar_one() == 4
            with pytest.raises(DBAPIError):
                connection.execute(text("SELECT chain_start FROM subscriptions"))
        upgrade(engine)
    finally:
        engine.dispose()
