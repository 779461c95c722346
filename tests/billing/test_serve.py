"""``billing serve`` as a real process: the scheduler starts only once the server listens (a server that cannot
bind its port exits 1 and has run no job), and it warns while notifications have nowhere to go. On SQLite and,
when configured, PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from billing.core.periods import month_of
from billing.customers import create_customer, subscribe
from billing.db import session_scope
from billing.db.scheduler_tables import SchedulerJobRow
from billing.ingestion import ingest_batch
from billing.invoicing import list_invoices
from pricing_plans.loader import load_catalog_or_raise

ROOT = Path(__file__).resolve().parents[2]

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.starter]
name = "Starter"
currency = "USD"
effective_from = 2025-01-01
subscription = { fee = 10.00, billing = "in_arrears" }
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = 0.5 }]
"""

NO_DESTINATION_WARNING = "warning: no notification destination is configured (notification_webhook_url, smtp_host)"


@pytest.fixture
def env(db_url: str, engine, tmp_path: Path) -> dict[str, str]:
    """A customer billed by the first billing cycle (last month has closed, 4 calls in it: 12.00), and the
    environment of a `billing serve` on the test database."""
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    catalog = load_catalog_or_raise(path)
    last_month = month_of(dt.datetime.now(dt.UTC).date()).previous()
    create_customer(engine, "acme", "Acme Inc.", None, "USD", "UTC")
    subscribe(engine, catalog, "acme", "starter", last_month.start)
    middle = dt.datetime.combine(last_month.start + dt.timedelta(days=14), dt.time(12), dt.UTC)
    events = [{"id": f"acme-{i}", "customer": "acme", "meter": "api_calls",
               "timestamp": (middle + dt.timedelta(minutes=i)).isoformat()} for i in range(4)]
    assert ingest_batch(engine, catalog, events).accepted == 4
    return {
        **os.environ,
        "BILLING_DATABASE_URL": db_url,
        "BILLING_CATALOG": str(path),
        "BILLING_CONFIG": str(ROOT / "config.toml"),
        "BILLING_FINALIZE_GRACE_DAYS": "0",
    }


def scheduler_rows(engine) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(SchedulerJobRow)) or 0


def serve(env: dict[str, str], cwd: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "billing.cli", "serve", "--port", str(port), "--log-level", "warning"],
        env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_a_server_whose_port_is_taken_exits_1_and_runs_no_job(engine, env, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = serve(env, tmp_path, port)
        _, stderr = process.communicate(timeout=120)
    assert scheduler_rows(engine) == 0  # no job was stored
    assert list_invoices(engine) == []  # nor did the billing cycle run
    assert process.returncode == 1, stderr
    assert f"could not serve on 127.0.0.1:{port}" in stderr and "the scheduler was not started" in stderr
    assert "address already in use" in stderr.lower()


def _get_healthz(connection: socket.socket) -> bytes:
    """``GET /healthz`` on an open connection: the answer's status line, or b"" if the server had closed it."""
    connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: billing\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
        chunk = connection.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_a_server_that_listens_runs_the_billing_cycle_and_warns_without_a_notification_destination(
    engine, env, tmp_path
):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = serve(env, tmp_path, port)
    try:
        deadline = time.monotonic() + 120  # (a guard against a hang, not a measurement)
        while time.monotonic() < deadline and process.poll() is None:
            if [i.status.value for i in list_invoices(engine)] == ["finalized"]:
                break
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json() == {"status": "ok"}
        [invoice] = list_invoices(engine)
        assert (invoice.customer_id, invoice.status.value, str(invoice.total)) == ("acme", "finalized", "12.00")
        assert scheduler_rows(engine) == 5  # billing_cycle, thresholds, notifications, at_risk, stripe_sync
        # an idle keep-alive connection stays open past uvicorn's default of 5 s (``billing.cli.serve.KEEP_ALIVE``)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            assert _get_healthz(connection) == b"HTTP/1.1 200 OK"
            time.sleep(6)
            assert _get_healthz(connection) == b"HTTP/1.1 200 OK"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    assert NO_DESTINATION_WARNING in stderr


def _children(pid: int) -> set[int]:
    """The server's scheduler processes that are alive (not other children, nor one killed and not yet reaped)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = task / "children"
        if children.exists():
            found |= {int(child) for child in children.read_text().split()}
    return {child for child in found if _is_scheduler(child)}


def _is_scheduler(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"background()" in command and "State:\tZ" not in status


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads the process tree from /proc")
def test_a_scheduler_process_that_dies_is_started_again_and_stops_with_the_server(engine, env, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = serve(env, tmp_path, port)
    try:
        deadline = time.monotonic() + 120  # (guards against a hang, not measurements)
        while not _children(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        [first] = _children(process.pid)
        os.kill(first, signal.SIGKILL)
        while _children(process.pid) in (set(), {first}) and time.monotonic() < deadline:
            time.sleep(0.2)
        [second] = _children(process.pid)
        assert second != first
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    assert "the scheduler's process exited (-9); starting it again in 5 s" in stderr
    assert not Path(f"/proc/{second}").exists() or "zombie" in Path(f"/proc/{second}/status").read_text().lower()
