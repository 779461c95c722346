"""Usage reactions behind the request path (``billing.reactions``), on SQLite and PostgreSQL: an API batch is
stored and answered without evaluating anything; a pass evaluates exactly the customer months of the events
received since the last one, once; a pass that dies before committing leaves its events pending and the next one
creates each alert exactly once; events stored by a server that was killed before reacting are evaluated by
``billing thresholds check`` and by a restarted server's reactor; the migration starts the cursor after the
events stored before it."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from billing import customers as service
from billing import reactions
from billing.apikeys import create_api_key
from billing.cli import app
from billing.config import get_settings
from billing.db import make_engine, session_scope, upgrade
from billing.db.notification_tables import NotificationRow
from billing.ingestion import ingest_batch, ingest_path
from billing.reactions import Reactor, pending_since, react_to_usage
from meters import from_epoch_us
from pricing_plans.loader import load_catalog_or_raise
from tests.billing.test_migrations import fresh_url  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parents[2]

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
unit = "call"

[plans.calls]
name = "Calls"
currency = "USD"
[[plans.calls.charges]]
meter = "api_calls"
model = "per_unit"
unit_amount = 0.01
[[plans.calls.thresholds]]
meter = "api_calls"
allowance = 10
"""

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    return path


@pytest.fixture
def catalog(catalog_path: Path):
    return load_catalog_or_raise(catalog_path)


def customer(engine, catalog, who: str, timezone: str = "UTC") -> None:
    service.create_customer(engine, who, who.title(), None, "USD", timezone=timezone)
    service.subscribe(engine, catalog, who, "calls", dt.date(NOW.year - 1, 1, 1))


def calls(who: str, n: int, prefix: str, when: dt.datetime = NOW) -> list[dict[str, str]]:
    stamp = when.isoformat()
    return [{"id": f"{prefix}-{i}", "customer": who, "meter": "api_calls", "timestamp": stamp} for i in range(n)]


def alerts(engine) -> list[tuple[str, str, int, str]]:
    with session_scope(engine) as session:
        found = session.execute(
            select(NotificationRow.customer_external_id, NotificationRow.period, NotificationRow.level,
                   NotificationRow.value).where(
                NotificationRow.level.is_not(None),
                # the threshold alerts (a server's scheduler may also queue churn-risk notifications)
                NotificationRow.kind.in_(("usage.threshold_crossed", "spend.threshold_crossed")),
            ).order_by(NotificationRow.customer_external_id, NotificationRow.level)
        ).all()
    return [(c, p, lv, str(v)) for c, p, lv, v in found]


THIS_MONTH = f"{NOW:%Y-%m}"


def test_a_batch_is_stored_without_evaluating_and_one_pass_evaluates_it_once(engine, catalog):
    customer(engine, catalog, "acme")
    customer(engine, catalog, "beta")
    assert ingest_batch(engine, catalog, calls("acme", 12, "a") + calls("beta", 8, "b")).accepted == 20
    assert alerts(engine) == []  # the request path stored and answered: nothing evaluated yet
    first = react_to_usage(engine, catalog)
    assert first.customers == 2
    assert alerts(engine) == [("acme", THIS_MONTH, 80, "12"), ("acme", THIS_MONTH, 100, "12"),
                              ("beta", THIS_MONTH, 80, "8")]
    assert pending_since(engine) == first.received_through
    # nothing new: nothing evaluated; more usage: only its customer, and only the new level
    assert react_to_usage(engine, catalog).customers == 0
    assert ingest_batch(engine, catalog, calls("beta", 2, "b2")).accepted == 2
    second = react_to_usage(engine, catalog)
    assert (second.customers, [(c.customer, c.level, str(c.value)) for c in second.created]) == (
        1, [("beta", 100, "10")])
    assert len(alerts(engine)) == 4


def test_a_pass_that_dies_before_committing_leaves_its_events_pending(engine, catalog, monkeypatch):
    """The cursor moves in the transaction that records the notifications: a pass killed before that commit
    leaves no notification and the events pending; the next pass creates each alert once."""
    customer(engine, catalog, "acme")
    ingest_batch(engine, catalog, calls("acme", 10, "a"))
    before = pending_since(engine)

    def crash(session, reaction, through):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(reactions, "_advance", crash)
    with pytest.raises(KeyboardInterrupt):
        react_to_usage(engine, catalog)
    assert (alerts(engine), pending_since(engine)) == ([], before)
    monkeypatch.undo()
    assert [c.level for c in react_to_usage(engine, catalog).created] == [80, 100]
    assert react_to_usage(engine, catalog).created == []
    assert alerts(engine) == [("acme", THIS_MONTH, 80, "10"), ("acme", THIS_MONTH, 100, "10")]


def test_late_usage_is_evaluated_in_its_own_month_in_the_customers_timezone(engine, catalog):
    """Events of last month received now are evaluated in last month; 23:30 UTC on the last day of last month
    is already this month in Auckland."""
    customer(engine, catalog, "kiwi", timezone="Pacific/Auckland")
    first_of_month = dt.datetime(NOW.year, NOW.month, 1, tzinfo=dt.UTC)
    late = first_of_month - dt.timedelta(days=10)
    evening = first_of_month - dt.timedelta(minutes=30)  # already this month in Auckland
    ingest_batch(engine, catalog, calls("kiwi", 8, "late", late) + calls("kiwi", 10, "eve", evening))
    react_to_usage(engine, catalog)
    last_month = f"{late:%Y-%m}"
    assert sorted(alerts(engine)) == [("kiwi", last_month, 80, "8"), ("kiwi", THIS_MONTH, 80, "10"),
                                      ("kiwi", THIS_MONTH, 100, "10")]


def test_a_file_is_evaluated_at_its_end_with_what_was_pending(engine, catalog, tmp_path):
    """``billing ingest`` (a batch command) reacts once, at its end, to its own events and any still pending."""
    customer(engine, catalog, "acme")
    customer(engine, catalog, "beta")
    ingest_batch(engine, catalog, calls("beta", 8, "b"))  # stored by the API, not reacted to yet
    path = tmp_path / "usage.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in calls("acme", 10, "a")), encoding="utf-8")
    assert ingest_path(engine, catalog, path).accepted == 10
    assert alerts(engine) == [("acme", THIS_MONTH, 80, "10"), ("acme", THIS_MONTH, 100, "10"),
                              ("beta", THIS_MONTH, 80, "8")]
    assert react_to_usage(engine, catalog).created == []


def test_a_file_sent_again_after_an_ingest_stopped_before_reacting_evaluates_what_it_stored(
    engine, catalog, tmp_path, monkeypatch
):
    """Ctrl-C after a file's last chunk was stored and before its pass: every event stored, none evaluated. The
    file sent again is all duplicates: it reacted only when it stored something, so the alerts never came (only a
    ``thresholds check`` brought them); now its pass evaluates what was pending."""
    customer(engine, catalog, "acme")
    path = tmp_path / "usage.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in calls("acme", 10, "a")), encoding="utf-8")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("billing.ingestion.react_to_usage", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ingest_path(engine, catalog, path)
    monkeypatch.undo()
    assert alerts(engine) == []
    again = ingest_path(engine, catalog, path)
    assert (again.accepted, again.duplicates) == (0, 10)
    assert alerts(engine) == [("acme", THIS_MONTH, 80, "10"), ("acme", THIS_MONTH, 100, "10")]


def test_the_reactor_evaluates_what_an_ingestion_of_its_process_stored(engine, catalog):
    customer(engine, catalog, "acme")
    reactor = Reactor(engine, lambda: catalog, poll=60.0, gap=0.0).start()  # only a wake-up makes it look
    try:
        ingest_batch(engine, catalog, calls("acme", 10, "a"))
        deadline = time.monotonic() + 60
        while len(alerts(engine)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        reactor.stop()
    assert alerts(engine) == [("acme", THIS_MONTH, 80, "10"), ("acme", THIS_MONTH, 100, "10")]


def test_events_stored_before_a_crash_are_evaluated_by_thresholds_check(engine, catalog, catalog_path, cli_env,
                                                                       monkeypatch):
    customer(engine, catalog, "acme")
    ingest_batch(engine, catalog, calls("acme", 10, "a"))  # the server died before its reactor looked
    monkeypatch.setenv("BILLING_CATALOG", str(catalog_path))
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["thresholds", "check"], env={**cli_env, "BILLING_CATALOG": str(catalog_path)})
    assert result.exit_code == 0, result.output
    assert "created 2 notifications" in " ".join(result.output.split())
    assert alerts(engine) == [("acme", THIS_MONTH, 80, "10"), ("acme", THIS_MONTH, 100, "10")]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(env: dict[str, str], port: int, *options: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "billing.cli", "serve", "--port", str(port), "--log-level", "warning", *options],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    process.kill()
    raise AssertionError("the server did not start")


@pytest.mark.slow
def test_a_killed_servers_events_are_evaluated_by_the_next_servers_reactor(engine, catalog, catalog_path, db_url):
    """A server that stored events and was killed (SIGKILL) before reacting — here one that never reacts
    (``--no-scheduler``) — loses nothing: the next ``billing serve`` evaluates them."""
    customer(engine, catalog, "acme")
    _, key = create_api_key(engine, "test")
    env = {**os.environ, "BILLING_DATABASE_URL": db_url, "BILLING_CATALOG": str(catalog_path),
           "BILLING_CONFIG": str(ROOT / "config.toml"), "PYTHONPATH": str(ROOT)}
    port = _free_port()
    first = _serve(env, port, "--no-scheduler")
    try:
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/events", json={"events": calls("acme", 10, "a")},
                            headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == 10
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    assert alerts(engine) == []
    second = _serve(env, port)
    try:
        deadline = time.monotonic() + 60
        while len(alerts(engine)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        second.terminate()
        second.communicate(timeout=60)
    assert alerts(engine) == [("acme", THIS_MONTH, 80, "10"), ("acme", THIS_MONTH, 100, "10")]


def test_0012_starts_the_reaction_after_the_events_stored_before_it(fresh_url):  # noqa: F811
    upgrade(fresh_url, "0011")
    engine = make_engine(fresh_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO usage_events (event_id, customer, meter, occurred_at, content_hash, received_at) "
                "VALUES ('e1', 'acme', 'api_calls', 1, 7, 1700000000000000), "
                "('e2', 'acme', 'api_calls', 2, 8, 1700000000500000)"
            ))
        upgrade(engine)
        assert pending_since(engine) == from_epoch_us(1700000000500000)
    finally:
        engine.dispose()
