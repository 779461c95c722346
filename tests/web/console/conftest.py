"""The finance console over a test database: two customers billed in October 2026 on a one-plan catalog, an
approval limit of 11.00 USD, a staff API key; the console served by the API's application, as ``billing serve``
serves it."""

from __future__ import annotations

import datetime as dt
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from billing.api import create_app
from billing.apikeys import create_api_key
from billing.config import Approval, Settings
from billing.core.periods import month
from billing.customers import create_customer, subscribe
from billing.db import make_engine
from billing.db.engines import dispose_engines
from billing.ingestion import ingest_batch
from pricing_plans.loader import load_catalog_or_raise
from pricing_plans.models import Catalog

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

[plans.team]
name = "Team"
currency = "USD"
effective_from = 2025-01-01
subscription = { fee = 5.00, billing = "in_arrears", seats = true }
"""

OCTOBER = month(2026, 10)
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
NONCE = re.compile(r'name="form_nonce" value="([^"]+)"')


@dataclass
class Console:
    app: FastAPI
    engine: Engine
    catalog: Catalog
    settings: Settings
    key: str


def calls(engine: Engine, catalog: Catalog, customer: str, count: int) -> None:
    events = [
        {"id": f"{customer}-{i}", "customer": customer, "meter": "api_calls",
         "timestamp": dt.datetime(2026, 10, 15, 12, i, tzinfo=dt.UTC).isoformat()}
        for i in range(count)
    ]  # fmt: skip
    assert ingest_batch(engine, catalog, events, now=dt.datetime(2026, 10, 15, 13, tzinfo=dt.UTC)).accepted == count


@pytest.fixture
def console(db_url: str, tmp_path: Path) -> Iterator[Console]:
    """acme (4 calls: 10.00 + 4 × 0.50 = 12.00, above the 11.00 limit: it waits for approval) and beta (1 call:
    10.00 + 0.50 = 10.50), both on starter from 1 October 2026, in UTC."""
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    catalog = load_catalog_or_raise(path)
    engine = make_engine(db_url)
    for who, count in (("acme", 4), ("beta", 1)):
        create_customer(engine, who, f"{who.title()} Inc.", f"billing@{who}.example", "USD", "UTC")
        subscribe(engine, catalog, who, "starter", OCTOBER.start)
        calls(engine, catalog, who, count)
    _, key = create_api_key(engine, "Ada")
    settings = Settings(database_url=db_url, catalog=str(path), approval=Approval(limits={"USD": "11.00"}))
    app = create_app(settings)  # the console comes with it, at /console
    try:
        yield Console(app, engine, catalog, settings, key)
    finally:
        dispose_engines()
        engine.dispose()


def csrf_of(html: str) -> str:
    return CSRF.search(html).group(1)


def nonce_of(client: TestClient, page: str) -> str:
    """A fresh ``form_nonce`` of ``page``'s forms (each page shows a new one)."""
    return NONCE.search(client.get(page).text).group(1)


def sign_in(client: TestClient, key: str) -> str:
    """Sign ``client`` in with ``key``; the session's CSRF token."""
    page = client.get("/console/login")
    answer = client.post(
        "/console/login", data={"api_key": key, "csrf_token": csrf_of(page.text), "next": "/console/runs"},
        follow_redirects=False,
    )  # fmt: skip
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/console/runs").text)


@pytest.fixture
def console_url(console: Console) -> Iterator[str]:
    """The console's application on a real uvicorn (a thread, a free port of 127.0.0.1); its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(console.app, log_level="warning", http="h11", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:  # waits for the socket to be served (no timing is asserted)
        if not thread.is_alive():
            pytest.fail("the console's server did not start (its error is logged above)")
        time.sleep(0.02)
    host, port = sock.getsockname()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


@pytest.fixture
def client(console: Console) -> Iterator[TestClient]:
    with TestClient(console.app, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def staff(console: Console, client: TestClient) -> str:
    """``client`` signed in; the session's CSRF token."""
    return sign_in(client, console.key)


@pytest.fixture
def context(browser) -> Iterator[object]:
    """The harness's browser context, letting axe-core in: the console's Content-Security-Policy allows only its
    own scripts, so an injected one runs only with the policy bypassed (for the test's own script alone)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True, bypass_csp=True)
    yield context
    context.close()
