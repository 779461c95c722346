"""The billing run gives the same invoices (content hashes) whichever store holds the events: the billing
database itself (SQLite, PostgreSQL), or chDB beside a SQLite billing database; on chDB with merges stopped and
every event stored twice (and some redelivered with other content) too, then again once merged. Late usage:
March finalized, late March events ingested, April's invoices alike everywhere."""

from __future__ import annotations

import datetime as dt
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from billing import customers as service
from billing.core.periods import month
from billing.db import make_engine, session_scope
from billing.event_store import event_store, use_event_store
from billing.metering import meter_specs
from billing.run import finalize_period, run_billing
from dbkit import is_sqlite
from invoices import store as invoice_store
from invoices.tables import InvoiceRow
from meters import EventValidator
from pricing_plans.loader import load_catalog_or_raise
from tests.conftest import SAMPLE_CATALOG, chdb_store

MARCH, APRIL = month(2026, 3), month(2026, 4)
NOW = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
SUBSCRIBERS = {
    "growth": ("api_growth", "USD", "America/New_York"),
    "seats": ("seats", "EUR", "Europe/Berlin"),
    "pay": ("payments", "USD", "UTC"),
    "sms": ("sms", "USD", "UTC"),
    "cloud": ("cloud", "EUR", "Europe/Berlin"),
    "dwh": ("warehouse", "USD", "Asia/Tokyo"),
}
PROPERTIES = {
    "sms": {"country": ["US", "CA", "DE", "FR"], "direction": ["inbound", "outbound"]},
    "vm_hours": {"region": ["eu-central-1", "eu-north-1", "us-east-1"], "platform": ["standard-v3", "gpu-a100"]},
    "object_storage": {"region": ["eu-central-1", "eu-north-1"]},
    "compute_credits": {"edition": ["standard", "enterprise", "business_critical", "other"]},
}
CUSTOMER_METERS = {
    "growth": ["api_calls", "storage_gb", "active_users"],
    "seats": ["active_users"],
    "pay": ["payment_volume"],
    "sms": ["sms"],
    "cloud": ["vm_hours", "object_storage"],
    "dwh": ["warehouse_storage", "compute_credits"],
}


@pytest.fixture(scope="module")
def catalog() -> Any:
    return load_catalog_or_raise(SAMPLE_CATALOG)


def events(seed: int, start: dt.datetime, days: int, count: int, prefix: str) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    records = []
    for n in range(count):
        customer = rng.choice(sorted(CUSTOMER_METERS))
        meter = rng.choice(CUSTOMER_METERS[customer])
        when = start + dt.timedelta(seconds=rng.randrange(days * 86400))
        record: dict[str, Any] = {
            "id": f"{prefix}{n}",
            "customer": customer,
            "meter": meter,
            "timestamp": when.isoformat(),
        }
        properties = {k: rng.choice(v) for k, v in PROPERTIES.get(meter, {}).items() if rng.random() < 0.9}
        if meter == "active_users":
            properties["user_id"] = f"u{rng.randrange(40)}"
        if properties:
            record["properties"] = properties
        if meter in ("object_storage", "warehouse_storage", "storage_gb"):
            record["value"] = str(rng.randrange(-20, 200) * 10 ** rng.randrange(0, 4) / 1000)
        elif meter not in ("api_calls", "active_users", "sms"):
            record["value"] = f"{rng.randrange(1, 10**7)}.{rng.randrange(10**6):06d}"
        records.append(record)
    return records


MARCH_EVENTS = events(19, dt.datetime(2026, 2, 20, tzinfo=dt.UTC), 45, 1500, "e")
LATE_EVENTS = events(20, dt.datetime(2026, 3, 5, tzinfo=dt.UTC), 20, 200, "late")
APRIL_EVENTS = events(21, dt.datetime(2026, 4, 1, tzinfo=dt.UTC), 29, 300, "apr")


def set_up(engine: Engine, catalog: Any) -> None:
    for customer, (plan, currency, timezone) in SUBSCRIBERS.items():
        service.create_customer(engine, customer, customer.title(), f"ap@{customer}.test", currency, timezone=timezone)
        service.subscribe(engine, catalog, customer, plan, dt.date(2026, 1, 1))


def ingest(engine: Engine, catalog: Any, records: list[dict[str, Any]]) -> None:
    report = event_store(engine).ingest(records, meter_specs(catalog), set(SUBSCRIBERS), now=NOW)
    assert not report.rejected, report.rejected[:3]


def invoices(engine: Engine) -> dict[str, tuple[str | None, str]]:
    with session_scope(engine) as session:
        rows = session.execute(select(InvoiceRow.billing_key, InvoiceRow.content_hash, InvoiceRow.total))
        return {key: (digest, str(total)) for key, digest, total in rows}


def bill(engine: Engine, catalog: Any, extra: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """March billed, finalized; late March events and April's; April billed: both months' invoices."""
    run_billing(engine, catalog, MARCH)
    march = invoices(engine)
    finalize_period(engine, MARCH, invoice_store.FinalizeSettings(), dt.date(2026, 4, 2))
    ingest(engine, catalog, LATE_EVENTS + APRIL_EVENTS)
    if extra is not None:
        extra()
    report = run_billing(engine, catalog, APRIL)
    assert report.late_lines > 0
    return march, invoices(engine)


def billing_database(request: pytest.FixtureRequest, tmp_path: Path, name: str) -> Engine:
    path = tmp_path / f"{name}.db"
    shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
    return make_engine(f"sqlite:///{path}")


def test_the_same_invoices_on_every_event_store(
    engine: Engine, catalog: Any, chdb_folder: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    set_up(engine, catalog)
    ingest(engine, catalog, MARCH_EVENTS)
    expected_march, expected_april = bill(engine, catalog)
    assert sum(key.startswith("period:") for key in expected_march) == len(SUBSCRIBERS)
    assert all(digest for digest, _ in expected_march.values())

    embedded = billing_database(request, tmp_path, "embedded")
    try:
        use_event_store(embedded, chdb_store(chdb_folder))
        set_up(embedded, catalog)
        ingest(embedded, catalog, MARCH_EVENTS)
        assert bill(embedded, catalog) == (expected_march, expected_april)
    finally:
        embedded.dispose()


def test_the_same_invoices_on_chdb_with_duplicates_and_merges_stopped(
    engine: Engine, catalog: Any, chdb_folder: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if not is_sqlite(engine):
        pytest.skip("the clean run's invoices are SQLite's")
    set_up(engine, catalog)
    ingest(engine, catalog, MARCH_EVENTS)
    expected = bill(engine, catalog)

    embedded = billing_database(request, tmp_path, "torture")
    events_store: Any = chdb_store(chdb_folder)
    try:
        use_event_store(embedded, events_store)
        events_store.client.command(f"SYSTEM STOP MERGES {events_store.table}")
        set_up(embedded, catalog)
        validator = EventValidator(meter_specs(catalog), set(SUBSCRIBERS), NOW)
        stored = [validator.validate(record) for record in MARCH_EVENTS]
        # events stored two or three times over, as racing ingestions would, in other chunks
        events_store.insert_events(stored[:900])
        events_store.insert_events(stored[400:])
        events_store.insert_events(stored[:400])
        conflicting = [
            dict(r, value="7") if "value" in r else dict(r, timestamp="2026-03-03T00:00:00Z") for r in MARCH_EVENTS[:50]
        ]
        report = events_store.ingest(conflicting + MARCH_EVENTS[1000:], meter_specs(catalog), set(SUBSCRIBERS), now=NOW)
        assert (report.accepted, report.duplicates, len(report.rejected)) == (0, 500, 50)

        def late_twice() -> None:  # the late events delivered a second time, past the check
            events_store.insert_events([validator.validate(r) for r in LATE_EVENTS])

        assert bill(embedded, catalog, late_twice) == expected
        rows = events_store.client.query(f"SELECT count() FROM {events_store.table}")[0][0]
        assert rows == 900 + 1100 + 400 + 2 * 200 + 300  # March: the first 400 events thrice, the rest twice or once
        events_store.client.command(f"SYSTEM START MERGES {events_store.table}")
        events_store.client.command(f"OPTIMIZE TABLE {events_store.table} FINAL")
        assert events_store.client.query(f"SELECT count() FROM {events_store.table}")[0][0] == 2000
        again = run_billing(embedded, catalog, APRIL)
        assert again.updated == 0 and again.created == 0
        assert invoices(embedded) == expected[1]
    finally:
        embedded.dispose()


def test_db_upgrade_creates_the_event_stores_tables(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    pytest.importorskip("chdb")
    folder = tmp_path / "events"
    env = {
        **os.environ,
        "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'billing.db'}",
        "BILLING_EVENTS_URL": f"chdb://{folder}?database=billing",
        "BILLING_CONFIG": "",
        "COLUMNS": "1000",
    }
    command = [sys.executable, "-m", "billing", "db", "upgrade"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"event store chdb://{folder}?database=billing: tables ready" in result.stdout
    url = env["BILLING_EVENTS_URL"]
    check = (
        f"from meters.store import open_event_store; s = open_event_store({url!r}); "
        "print(sorted(r[0] for r in s.client.query('SHOW TABLES FROM billing')))"
    )
    listed = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert listed.stdout.strip() == "['usage_event_conflicts', 'usage_event_ids', 'usage_events']", listed.stderr


def test_an_engine_twin_reaches_the_billing_databases_events_with_its_own_options(engine: Engine) -> None:
    """The HTTP writer's twin of the engine (``sqlite_poll``) stores through itself, keeping its options, and its
    events are counted like the engine's."""
    from billing.event_store import events_counted
    from meters.store.sql import SqlEventStore

    twin = engine.execution_options(sqlite_poll=0.01)
    store = event_store(twin)
    assert isinstance(store, SqlEventStore) and store.engine is twin
    assert twin.get_execution_options()["sqlite_poll"] == 0.01
    assert event_store(engine).engine is engine
    assert events_counted(twin) and events_counted(engine)


def test_db_upgrade_twice_and_a_bad_events_url(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    pytest.importorskip("chdb")
    env = {
        **os.environ,
        "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'billing.db'}",
        "BILLING_EVENTS_URL": f"chdb://{tmp_path / 'events'}",
        "BILLING_CONFIG": "",
        "COLUMNS": "1000",
    }
    command = [sys.executable, "-m", "billing", "db", "upgrade"]
    for _ in range(2):  # the tables are created once, then found
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "tables ready" in result.stdout
    env["BILLING_EVENTS_URL"] = "chdbx:///tmp/events"
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert result.returncode != 0
    assert "events_url" in result.stderr and "chdbx" in result.stderr, result.stderr


def test_a_chdb_url_names_an_absolute_folder_that_exists(tmp_path: Path) -> None:
    pytest.importorskip("chdb")
    from meters import MeterSpec
    from meters.store import open_event_store

    spec = MeterSpec("api_calls", "count")
    with pytest.raises(ValueError, match=r"chdb:///absolute/folder.*'relative' read as a host"):
        open_event_store("chdb://relative/folder")
    with pytest.raises(ValueError, match="chdb:///absolute/folder"):
        open_event_store("chdb:")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="not a folder"):
        open_event_store(f"chdb://{tmp_path / 'file'}")
    # a folder that is missing (a typo in events_url): refused, not created empty and read as no usage
    missing = open_event_store(f"chdb://{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match=r"does not exist: billing db upgrade creates it"):
        missing.aggregate(
            {"acme": (dt.datetime(2024, 3, 1, tzinfo=dt.UTC), dt.datetime(2024, 4, 1, tzinfo=dt.UTC))}, [spec]
        )
    assert not (tmp_path / "missing").exists()


def test_billing_run_refuses_a_raced_conflict_with_a_message(
    engine: Engine, catalog: Any, cli_env: dict[str, str], chdb_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uuid

    from typer.testing import CliRunner

    from billing.cli import app
    from billing.config import get_settings

    url = f"chdb://{chdb_folder}?database=cli_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("BILLING_EVENTS_URL", url)
    get_settings.cache_clear()
    store: Any = event_store(engine)
    store.create_tables()
    set_up(engine, catalog)
    first = {"id": "x", "customer": "growth", "meter": "api_calls", "timestamp": "2026-03-02T00:00:00Z"}
    ingest(engine, catalog, [first])
    validator = EventValidator(meter_specs(catalog), set(SUBSCRIBERS), NOW)
    store.insert_events([validator.validate(dict(first, timestamp="2026-03-03T00:00:00Z"))])  # a raced redelivery
    store._raced(["x"])
    result = CliRunner().invoke(app, ["run", "--period", "2026-03"], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "event id(s) stored with different contents: x" in result.output
    assert "billing db resolve-conflicts" in result.output
    resolved = CliRunner().invoke(app, ["db", "resolve-conflicts"], env={"COLUMNS": "400"})
    assert resolved.exit_code == 0, resolved.output
    assert resolved.output == f"event store {url}: 1 conflicting event(s) deleted\n"
    billed = CliRunner().invoke(app, ["run", "--period", "2026-03"], env={"COLUMNS": "200"})
    assert billed.exit_code == 0, billed.output
