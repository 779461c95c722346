"""Stripe: invoices pushed by the real SDK to a local stand-in for api.stripe.com, and payment webhooks signed the
way Stripe signs them, on SQLite and PostgreSQL.

The stand-in (``FakeStripe``) is an HTTP server on 127.0.0.1 that answers the endpoints the sync calls with
Stripe-shaped objects, records each request's form body and Idempotency-Key, replays the saved answer when a key
comes again with the same parameters (and refuses it with other parameters), as Stripe does, and can refuse a
chosen request with a 500 or carry it out and then drop the connection, to simulate a crash.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import stripe
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, insert, select
from typer.testing import CliRunner

from billing import customers, invoicing, payments
from billing.api import routes_stripe
from billing.api.deps import api_engine
from billing.api.routes_stripe import router
from billing.cli import app as cli_app
from billing.config import Settings, get_settings
from billing.core.domain import CancelReason, SubscriptionStatus
from billing.core.periods import month as calendar_month
from billing.db import make_engine, session_scope, upgrade
from billing.db.engines import dispose_engines, get_engine
from billing.db.installation import installation_id
from billing.db.stripe_tables import DunningRow, StripeCustomerRow, StripeInvoiceSyncRow, StripeWebhookEventRow
from billing.errors import BillingInputError
from billing.run import finalize_period
from billing.stripe import sync as sync_module
from billing.stripe.sync import STRIPE_API_VERSION, SyncStep, stripe_client, stripe_items, sync_invoices
from billing.stripe.webhooks import handle_event
from dbkit import utcnow
from dbkit.dialect import is_postgresql
from invoices import store
from invoices.model import DraftInvoice, Invoice, InvoiceLine, InvoiceStatus, Party
from invoices.render import render_html
from pricing_plans.loader import loads_catalog
from pricing_plans.models import Catalog

API_KEY = "sk_test_local"
WEBHOOK_SECRET = "whsec_local_test_secret"
SETTINGS = store.FinalizeSettings(seller=Party(name="Northwind Cloud Ltd."))
ISSUED = dt.date(2026, 4, 2)
FIRST = "INV-2026-000001"

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.growth]
name = "Growth"
currency = "USD"
subscription = { fee = 49 }

[plans.support]
name = "Support"
currency = "USD"
subscription = { fee = 10 }

[plans.legacy]
name = "Legacy"
currency = "USD"
subscription = { fee = 5 }

[plans.storage]
name = "Storage"
currency = "USD"
subscription = { fee = 3 }
"""


# -- the local Stripe ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it: form fields flattened as the SDK sends them
    (``metadata[billing_customer_id]``)."""

    method: str
    path: str
    form: dict[str, str]
    idempotency_key: str | None
    stripe_version: str | None


@dataclass
class _Saved:
    path: str
    form: list[tuple[str, str]]
    status: int
    body: bytes


@dataclass
class FakeStripe:
    """A local api.stripe.com for the endpoints the sync calls."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    replayed: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    _saved: dict[str, _Saved] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _connections: list[socket.socket] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def start(self) -> FakeStripe:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                fake._connections.append(self.connection)

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, and end the connections clients keep open (HTTP/1.1 keeps them alive), so that no
        handler thread outlives the server: a billing run forks its rating workers only in a process of one
        thread."""
        self._server.shutdown()
        self._server.server_close()
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail(self, idempotency_key: str, mode: str) -> None:
        """Make the next request with this key fail: ``refuse`` (500, nothing done) or ``drop`` (done, saved
        under the key, then the connection is closed without an answer)."""
        assert mode in ("refuse", "drop")
        self.failures[idempotency_key] = mode

    def forget_keys(self) -> None:
        """Forget every idempotency key, as Stripe does after 24 hours."""
        self._saved.clear()

    def of(self, kind: str) -> list[dict[str, Any]]:
        """Every object of one kind (``customer``, ``invoice``, ``invoiceitem``), in creation order."""
        return [obj for obj in self.objects.values() if obj["object"] == kind]

    def posts(self) -> list[tuple[str, str | None]]:
        return [(r.path, r.idempotency_key) for r in self.requests if r.method == "POST"]

    # -- HTTP ----------------------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode("utf-8")
        url = urlsplit(handler.path)
        pairs = parse_qsl(body if method == "POST" else url.query, keep_blank_values=True)
        key = handler.headers.get("Idempotency-Key") if method == "POST" else None
        # as Stripe does (the endpoint ran and refused)
        saves_refusals = url.path == "/v1/credit_notes" or url.path.endswith("/void")
        extra: dict[str, str] = {}
        with self._lock:
            self.requests.append(Recorded(method, url.path, dict(pairs), key, handler.headers.get("Stripe-Version")))
            mode = self.failures.pop(key, None) if key else None
            if handler.headers.get("Authorization") != f"Bearer {API_KEY}":
                status, payload = 401, _error("invalid_request_error", "Invalid API Key provided")
            elif mode == "refuse":
                status, payload = 500, _error("api_error", "Something went wrong on Stripe's end.")
            elif key is not None and key in self._saved:
                saved = self._saved[key]
                if (saved.path, saved.form) != (url.path, pairs):
                    status, payload = 400, _error(
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same parameters they were first "
                        "used with.",
                    )
                else:
                    self.replayed.append(key)
                    self._respond(handler, saved.status, saved.body, {"Idempotent-Replayed": "true"})
                    return
            else:
                status, payload = self._route(method, url.path, dict(pairs))
            data = json.dumps(payload).encode("utf-8")
            if key is not None and (status == 200 or (status == 400 and saves_refusals)):
                self._saved[key] = _Saved(url.path, pairs, status, data)
            if key is not None:
                extra["Original-Request"] = key
        if mode == "drop":
            handler.close_connection = True  # carried out, answer lost
            return
        self._respond(handler, status, data, extra)

    @staticmethod
    def _respond(handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str]) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Request-Id", f"req_{time.monotonic_ns()}")
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"

    def _route(self, method: str, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/v1/customers":
            return self._create_customer(form)
        if method == "POST" and path == "/v1/invoices":
            return self._create_invoice(form)
        if method == "POST" and path == "/v1/invoiceitems":
            return self._create_item(form)
        if method == "POST" and len(parts) == 4 and parts[:2] == ["v1", "invoices"] and parts[3] == "finalize":
            return self._finalize(parts[2], form)
        if method == "POST" and len(parts) == 4 and parts[:2] == ["v1", "invoices"] and parts[3] == "void":
            return self._void(parts[2])
        if method == "POST" and path == "/v1/credit_notes":
            return self._credit_note(form)
        if method == "GET" and path == "/v1/credit_notes":
            notes = [o for o in self.objects.values() if o["object"] == "credit_note" and o["invoice"] == form.get("invoice")]
            return 200, {"object": "list", "data": notes, "has_more": False, "url": "/v1/credit_notes"}
        if method == "DELETE" and len(parts) == 3 and parts[1] == "invoices":
            invoice = self.objects.get(parts[2])
            if invoice is None or invoice["status"] != "draft":
                return 400, _error("invalid_request_error", "You can only delete draft invoices.")
            del self.objects[parts[2]]
            return 200, {"id": parts[2], "object": "invoice", "deleted": True}
        if method == "GET" and len(parts) == 3 and parts[1] in ("customers", "invoices"):
            obj = self.objects.get(parts[2])
            if obj is None:
                return 404, _error("invalid_request_error", f"No such {parts[1][:-1]}: '{parts[2]}'", "resource_missing")
            return 200, obj
        return 404, _error("invalid_request_error", f"Unrecognized request URL ({method}: {path}).")

    def _create_customer(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        customer = {
            "id": self._new_id("cus"),
            "object": "customer",
            "created": int(time.time()),
            "livemode": False,
            "name": form.get("name"),
            "email": form.get("email"),
            "description": None,
            "balance": 0,
            "currency": None,
            "delinquent": False,
            "invoice_settings": {"default_payment_method": None, "footer": None, "custom_fields": None},
            "metadata": _nested(form, "metadata"),
        }
        self.objects[customer["id"]] = customer
        return 200, customer

    def _create_invoice(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("customer") not in self.objects:
            return 400, _error("invalid_request_error", f"No such customer: '{form.get('customer')}'", "resource_missing")
        invoice_id = self._new_id("in")
        invoice = {
            "id": invoice_id,
            "object": "invoice",
            "created": int(time.time()),
            "livemode": False,
            "customer": form["customer"],
            "currency": form.get("currency", "usd"),
            "collection_method": form.get("collection_method", "charge_automatically"),
            "auto_advance": form.get("auto_advance") == "true",
            "description": form.get("description"),
            "status": "draft",
            "number": None,
            "amount_due": 0,
            "amount_paid": 0,
            "amount_remaining": 0,
            "subtotal": 0,
            "total": 0,
            "attempt_count": 0,
            "attempted": False,
            "next_payment_attempt": None,
            "metadata": _nested(form, "metadata"),
            "lines": {"object": "list", "data": [], "has_more": False, "total_count": 0,
                      "url": f"/v1/invoices/{invoice_id}/lines"},
            "status_transitions": {"finalized_at": None, "paid_at": None, "voided_at": None,
                                   "marked_uncollectible_at": None},
        }
        self.objects[invoice_id] = invoice
        return 200, invoice

    def _create_item(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        invoice = self.objects.get(form.get("invoice", ""))
        if form.get("customer") not in self.objects or invoice is None:
            return 400, _error("invalid_request_error", "No such customer or invoice", "resource_missing")
        if invoice["status"] != "draft":
            return 400, _error("invalid_request_error", "You can only add invoice items to draft invoices.")
        if invoice["customer"] != form["customer"] or invoice["currency"] != form.get("currency"):
            return 400, _error("invalid_request_error", "The invoice item's customer and currency must match.")
        now = int(time.time())
        item = {
            "id": self._new_id("ii"),
            "object": "invoiceitem",
            "amount": int(form["amount"]),
            "currency": form["currency"],
            "customer": form["customer"],
            "invoice": invoice["id"],
            "description": form.get("description"),
            "date": now,
            "discountable": True,
            "livemode": False,
            "proration": False,
            "quantity": 1,
            "period": {"start": now, "end": now},
            "metadata": _nested(form, "metadata"),
        }
        self.objects[item["id"]] = item
        invoice["lines"]["data"].append({"id": f"il_{item['id']}", "object": "line_item", "amount": item["amount"],
                                         "currency": item["currency"], "description": item["description"]})
        invoice["lines"]["total_count"] += 1
        for name in ("amount_due", "amount_remaining", "subtotal", "total"):
            invoice[name] += item["amount"]
        return 200, item

    def _finalize(self, invoice_id: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        invoice = self.objects.get(invoice_id)
        if invoice is None:
            return 404, _error("invalid_request_error", f"No such invoice: '{invoice_id}'", "resource_missing")
        if invoice["status"] != "draft":
            return 400, _error(
                "invalid_request_error", "This invoice is already finalized, you can't re-finalize a non-draft invoice."
            )
        now = int(time.time())
        invoice["number"] = f"FAKE-{next(self._ids):04d}"
        invoice["hosted_invoice_url"] = f"https://invoice.stripe.test/i/{invoice_id}"
        invoice["auto_advance"] = form.get("auto_advance", "true") == "true"
        invoice["status_transitions"]["finalized_at"] = now
        if invoice["amount_due"] == 0:  # Stripe asks nothing of a zero invoice: it is paid at once
            invoice["status"] = "paid"
            invoice["status_transitions"]["paid_at"] = now
        else:
            invoice["status"] = "open"
            invoice["next_payment_attempt"] = now + 3600 if invoice["auto_advance"] else None
        return 200, invoice


    def pay(self, invoice_id: str) -> None:
        """Stripe collects the invoice: it is paid in full."""
        invoice = self.objects[invoice_id]
        invoice["amount_paid"], invoice["amount_remaining"], invoice["status"] = invoice["amount_remaining"], 0, "paid"

    def _void(self, invoice_id: str) -> tuple[int, dict[str, Any]]:
        invoice = self.objects.get(invoice_id)
        if invoice is None:
            return 404, _error("invalid_request_error", f"No such invoice: '{invoice_id}'", "resource_missing")
        if invoice["status"] not in ("open", "uncollectible"):
            return 400, _error("invalid_request_error", f"You can only void open invoices (this one is {invoice['status']}).")
        if invoice.get("payment_processing"):  # set by a test: a payment under way that Stripe waits for
            return 400, _error("invalid_request_error", "This invoice has a payment processing and can't be voided.")
        invoice["status"] = "void"
        invoice["status_transitions"]["voided_at"] = int(time.time())
        return 200, invoice

    def _credit_note(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Stripe's rules as far as the sync meets them: an open invoice's note lowers what is left to pay (and
        pays it when nothing is left); a paid invoice's note must say where its amount went (here: out of band)."""
        invoice = self.objects.get(form.get("invoice", ""))
        if invoice is None:
            return 404, _error("invalid_request_error", "No such invoice", "resource_missing")
        amount, out_of_band = int(form["amount"]), int(form.get("out_of_band_amount", "0"))
        if invoice["status"] == "open":
            if out_of_band or amount > invoice["amount_remaining"]:
                return 400, _error("invalid_request_error", "The credit note exceeds what is left to pay.")
            invoice["amount_remaining"] -= amount
            invoice["amount_due"] -= amount
            if not invoice["amount_remaining"]:
                invoice["status"] = "paid"
            kind = "pre_payment"
        elif invoice["status"] == "paid":
            if out_of_band != amount:
                return 400, _error("invalid_request_error", "A paid invoice's credit note must refund, credit or "
                                   "record out of band its whole amount.")
            kind = "post_payment"
        else:
            return 400, _error("invalid_request_error", f"You cannot credit a {invoice['status']} invoice.")
        note = {"id": self._new_id("cn"), "object": "credit_note", "invoice": invoice["id"], "amount": amount,
                "currency": invoice["currency"], "customer": invoice["customer"], "type": kind,
                "out_of_band_amount": out_of_band or None, "memo": form.get("memo"), "status": "issued",
                "metadata": _nested(form, "metadata")}
        self.objects[note["id"]] = note
        return 200, note


def _error(kind: str, message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, "code": code}}


def _nested(form: dict[str, str], name: str) -> dict[str, str]:
    prefix = f"{name}["
    return {key[len(prefix) : -1]: value for key, value in form.items() if key.startswith(prefix)}


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    fake = FakeStripe().start()
    yield fake
    fake.stop()


@pytest.fixture
def client(fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch) -> stripe.StripeClient:
    """The real SDK as the sync makes it, pointed at the local server, without its own retries (so a refusal
    reaches the sync)."""
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    return stripe_client(Settings(stripe_api_base=fake_stripe.url), max_network_retries=0)


def test_the_local_stripe_treats_idempotency_keys_as_stripe_does(fake_stripe, client):
    first = client.v1.customers.create(params={"name": "A"}, options={"idempotency_key": "k1"})
    again = client.v1.customers.create(params={"name": "A"}, options={"idempotency_key": "k1"})
    assert again.id == first.id and fake_stripe.replayed == ["k1"] and len(fake_stripe.of("customer")) == 1
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create(params={"name": "B"}, options={"idempotency_key": "k1"})
    with pytest.raises(stripe.AuthenticationError):
        stripe.StripeClient("sk_test_wrong", base_addresses={"api": fake_stripe.url}).v1.customers.create()


# -- our side: customers, subscriptions, invoices ---------------------------------------------------------


@pytest.fixture
def catalog() -> Catalog:
    loaded, problems = loads_catalog(CATALOG, "test.toml")
    assert problems == [] and loaded is not None
    return loaded


def add_customer(engine: Engine, external_id: str = "acme", currency: str = "USD", timezone: str = "UTC") -> None:
    customers.create_customer(
        engine, external_id, f"{external_id.title()} Inc.", f"ap@{external_id}.example", currency, timezone=timezone
    )


def issue(
    engine: Engine,
    customer: str = "acme",
    currency: str = "USD",
    lines: tuple[tuple[str, str], ...] = (("Growth plan, April", "49.00"), ("API calls: 12,500 × 0.001", "12.50")),
    *,
    period: dt.date = dt.date(2026, 3, 1),
    tax_rate: str = "0",
    discount: str = "0",
) -> Invoice:
    """An issued invoice, written and finalized through the invoice store."""
    draft = DraftInvoice(
        billing_key=f"period:{customer}:{period:%Y-%m}",
        customer=Party(name=f"{customer.title()} Inc.", email=f"ap@{customer}.example", external_id=customer),
        currency=currency,
        locale="en_US",
        period_start=period,
        period_end=(period + dt.timedelta(days=32)).replace(day=1),
        lines=tuple(InvoiceLine(kind="usage", description=text, amount=Decimal(amount)) for text, amount in lines),
        tax_rate=Decimal(tax_rate),
        discount=Decimal(discount),
    )
    with session_scope(engine) as session:
        outcome = store.upsert_draft(session, draft)
        return store.finalize(session, outcome.invoice_id, SETTINGS, ISSUED)


def stripe_key(engine: Engine, step: str, number: str = FIRST) -> str:
    """The idempotency key of one step of an invoice's push from the test database."""
    return f"{installation_id(engine)}:{number}:{step}"


def sync_row(engine: Engine, number: str = FIRST) -> StripeInvoiceSyncRow:
    with session_scope(engine) as session:
        return session.execute(
            select(StripeInvoiceSyncRow).where(StripeInvoiceSyncRow.invoice_number == number)
        ).scalar_one()


def status_of(engine: Engine, number: str = FIRST) -> InvoiceStatus:
    with session_scope(engine) as session:
        return store.get_invoice(session, number).status


# -- sync ------------------------------------------------------------------------------------------------


def test_sync_pushes_the_customer_the_invoice_one_item_per_line_and_finalizes(engine, fake_stripe, client):
    add_customer(engine)
    invoice = issue(engine)

    report = sync_invoices(engine, client)

    assert report.ok and [r.invoice_number for r in report.synced] == [FIRST]
    customer, stripe_invoice = fake_stripe.of("customer")[0], fake_stripe.of("invoice")[0]
    assert fake_stripe.posts() == [
        ("/v1/customers", stripe_key(engine, "customer")),
        ("/v1/invoices", stripe_key(engine, "invoice")),
        ("/v1/invoiceitems", stripe_key(engine, "item:1")),
        ("/v1/invoiceitems", stripe_key(engine, "item:2")),
        (f"/v1/invoices/{stripe_invoice['id']}/finalize", stripe_key(engine, "finalize")),
    ]
    customer_form, invoice_form, *item_forms, finalize_form = (r.form for r in fake_stripe.requests if r.method == "POST")
    assert customer_form == {"name": "Acme Inc.", "email": "ap@acme.example", "metadata[billing_customer_id]": "acme"}
    assert invoice_form["customer"] == customer["id"]
    assert invoice_form["currency"] == "usd"
    assert invoice_form["collection_method"] == "charge_automatically"
    assert invoice_form["auto_advance"] == "false"
    assert invoice_form["pending_invoice_items_behavior"] == "exclude"
    assert invoice_form["metadata[billing_invoice_number]"] == FIRST
    assert invoice_form["metadata[billing_invoice_id]"] == str(invoice.id)
    assert [(f["amount"], f["currency"], f["invoice"], f["description"]) for f in item_forms] == [
        ("4900", "usd", stripe_invoice["id"], "Growth plan, April"),
        ("1250", "usd", stripe_invoice["id"], "API calls: 12,500 × 0.001"),
    ]
    assert [f["metadata[billing_invoice_line]"] for f in item_forms] == ["1", "2"]
    assert finalize_form == {"auto_advance": "true"}  # from now on Stripe collects
    assert stripe_invoice["status"] == "open" and stripe_invoice["amount_due"] == 6150

    row = sync_row(engine)
    assert row.step == "finalized" and row.synced_at is not None and row.last_error is None
    assert row.hosted_invoice_url == f"https://invoice.stripe.test/i/{stripe_invoice['id']}"
    assert (row.stripe_customer_id, row.stripe_invoice_id) == (customer["id"], stripe_invoice["id"])
    assert json.loads(row.stripe_item_ids) == [item["id"] for item in fake_stripe.of("invoiceitem")]
    with session_scope(engine) as session:
        assert session.get(StripeCustomerRow, "acme").stripe_customer_id == customer["id"]
    assert status_of(engine) is InvoiceStatus.FINALIZED  # paid only when Stripe says so

    requests_before = len(fake_stripe.requests)
    assert sync_invoices(engine, client).results == ()
    assert len(fake_stripe.requests) == requests_before


def test_amounts_are_integer_minor_units_of_the_invoice_currency(engine, fake_stripe, client):
    add_customer(engine, "tanaka", "JPY")
    issue(engine, "tanaka", "JPY", (("Storage, 1,500 GB", "1500"), ("Support", "300")))
    assert sync_invoices(engine, client).ok
    items = fake_stripe.of("invoiceitem")
    assert [(r.form["amount"], r.form["currency"]) for r in fake_stripe.requests if r.path == "/v1/invoiceitems"] == [
        ("1500", "jpy"),
        ("300", "jpy"),
    ]
    assert [item["amount"] for item in items] == [1500, 300]
    assert fake_stripe.of("invoice")[0]["currency"] == "jpy"


@pytest.mark.parametrize(("currency", "amounts", "sent", "due"), [
    ("ISK", ("5000", "250"), ("500000", "25000"), 525000),  # no minor unit here, two decimals in Stripe's API
    ("COP", ("100001", "5000"), ("10000100", "500000"), 10500100),
    ("KWD", ("31.500", "0.120"), ("31500", "120"), 31620),  # three decimals, the amount due ending in 0
])  # fmt: skip
def test_amounts_are_stripes_minor_units_and_what_it_collects_is_read_back_in_them(
    engine, fake_stripe, client, webhooks, currency, amounts, sent, due
):
    """Stripe's API takes ISK and COP in hundredths though they have no minor unit here (Babel: 0 places): 5,250
    ISK is sent as 525000 (before: 5250, which Stripe read as 52.50 ISK and collected, and whose ``invoice.paid``
    of 5250 was recorded as the 5,250 ISK due), and its ``invoice.paid`` of 525000 records 5250 ISK paid. KWD:
    in thousandths."""
    add_customer(engine, "jon", currency)
    issue(engine, "jon", currency, (("Hosting", amounts[0]), ("Support", amounts[1])))
    assert sync_invoices(engine, client).ok
    assert [(r.form["amount"], r.form["currency"]) for r in fake_stripe.requests if r.path == "/v1/invoiceitems"] == [
        (sent[0], currency.lower()), (sent[1], currency.lower()),
    ]
    [stripe_invoice] = fake_stripe.of("invoice")
    assert stripe_invoice["amount_due"] == due
    event = json.loads(invoice_event("evt_paid", "invoice.paid", stripe_invoice=stripe_invoice["id"]))
    event["data"]["object"].update(currency=currency.lower(), amount_paid=due)
    assert post(webhooks, json.dumps(event)).json()["outcome"] == "paid"
    invoice = invoicing.get_invoice(engine, FIRST)
    total = str(sum((Decimal(a) for a in amounts), Decimal(0)))
    assert invoice.status is InvoiceStatus.PAID and str(invoice.amount_paid) == total
    assert [str(p.amount) for p in payments.list_payments(engine, invoice=FIRST)] == [total]


def test_a_three_decimal_amount_due_not_ending_in_0_is_not_pushed_and_says_why(engine, fake_stripe, client):
    """Stripe charges KWD, BHD, JOD, OMR and TND only in multiples of 0.010: 31.506 KWD due is not pushed (nothing
    is created there, where it would fail when charged), the reason recorded."""
    add_customer(engine, "nasser", "KWD")
    issue(engine, "nasser", "KWD", (("Hosting", "31.500"), ("Support", "0.006")))
    report = sync_invoices(engine, client)
    assert not report.ok and fake_stripe.requests == []
    [failed] = report.results
    assert failed.error == (
        f"{FIRST}: 31.506 KWD is due, and Stripe collects KWD only in multiples of 0.010 (the last of its three "
        "decimals 0): not pushed; collect it another way and record the payment (billing payments record)"
    )


def test_discount_and_tax_become_items_so_stripe_asks_for_our_total(engine, fake_stripe, client):
    add_customer(engine)
    invoice = issue(engine, lines=(("Growth plan", "100.00"),), discount="10.00", tax_rate="19")
    assert (str(invoice.tax), str(invoice.total)) == ("17.10", "107.10")
    assert [(i.key, i.amount) for i in stripe_items(invoice)] == [("item:1", 10000), ("discount", -1000), ("tax", 1710)]

    assert sync_invoices(engine, client).ok

    keys = [key for path, key in fake_stripe.posts() if path == "/v1/invoiceitems"]
    assert keys == [stripe_key(engine, "item:1"), stripe_key(engine, "discount"), stripe_key(engine, "tax")]
    assert [item["description"] for item in fake_stripe.of("invoiceitem")] == ["Growth plan", "Discount", "Tax (19 %)"]
    assert fake_stripe.of("invoice")[0]["amount_due"] == 10710


def test_one_stripe_customer_per_customer_across_invoices(engine, fake_stripe, client):
    add_customer(engine, "acme")
    add_customer(engine, "globex")
    issue(engine, "acme", period=dt.date(2026, 2, 1))
    issue(engine, "globex", period=dt.date(2026, 2, 1))
    issue(engine, "acme", period=dt.date(2026, 3, 1))

    report = sync_invoices(engine, client)

    assert report.ok and len(report.synced) == 3
    customer_keys = [key for path, key in fake_stripe.posts() if path == "/v1/customers"]
    assert customer_keys == [stripe_key(engine, "customer"), stripe_key(engine, "customer", "INV-2026-000002")]
    by_customer = {c["metadata"]["billing_customer_id"]: c["id"] for c in fake_stripe.of("customer")}
    assert [r.stripe_customer_id for r in report.results] == [by_customer["acme"], by_customer["globex"],
                                                               by_customer["acme"]]
    assert [i["customer"] for i in fake_stripe.of("invoice")] == [r.stripe_customer_id for r in report.results]


def test_a_refused_request_stops_the_push_and_the_next_run_resumes_where_it_stopped(engine, fake_stripe, client):
    add_customer(engine)
    issue(engine)
    fake_stripe.fail(stripe_key(engine, "item:2"), "refuse")

    first = sync_invoices(engine, client)

    assert not first.ok
    failed = first.failed[0]
    assert (failed.step, failed.items) == (SyncStep.INVOICE, 1)
    assert failed.error is not None and failed.error.startswith("APIError")
    row = sync_row(engine)
    assert (row.step, row.attempts, len(json.loads(row.stripe_item_ids))) == ("invoice", 1, 1)
    assert row.last_error == failed.error
    already_sent = len(fake_stripe.requests)

    second = sync_invoices(engine, client)

    assert second.ok
    assert [key for _, key in fake_stripe.posts()[already_sent:]] == [stripe_key(engine, "item:2"), stripe_key(engine, "finalize")]
    assert (len(fake_stripe.of("customer")), len(fake_stripe.of("invoice")), len(fake_stripe.of("invoiceitem"))) == (
        1,
        1,
        2,
    )
    row = sync_row(engine)
    assert (row.step, row.attempts, row.last_error) == ("finalized", 2, None)


@pytest.mark.parametrize("step", ["customer", "invoice", "item:1", "item:2", "finalize"])
def test_a_request_carried_out_whose_answer_was_lost_is_not_carried_out_twice(engine, fake_stripe, client, step):
    add_customer(engine)
    issue(engine)
    fake_stripe.fail(stripe_key(engine, step), "drop")

    first = sync_invoices(engine, client)

    assert not first.ok and first.failed[0].error.startswith("APIConnectionError")
    already_sent = len(fake_stripe.posts())

    second = sync_invoices(engine, client)

    assert second.ok
    # The retry starts again with the lost request, under the same key, and Stripe answers it from the key.
    assert fake_stripe.posts()[already_sent][1] == stripe_key(engine, step)
    assert fake_stripe.replayed == [stripe_key(engine, step)]
    customers_, invoices_, items = (fake_stripe.of(k) for k in ("customer", "invoice", "invoiceitem"))
    assert (len(customers_), len(invoices_), len(items)) == (1, 1, 2)
    assert invoices_[0]["status"] == "open" and invoices_[0]["amount_due"] == 6150
    row = sync_row(engine)
    assert (row.stripe_customer_id, row.stripe_invoice_id) == (customers_[0]["id"], invoices_[0]["id"])
    assert json.loads(row.stripe_item_ids) == [item["id"] for item in items]
    # Every key was used for one object only.
    posted = [key for _, key in fake_stripe.posts()]
    assert sorted(set(posted)) == sorted(
        stripe_key(engine, s) for s in ("customer", "invoice", "item:1", "item:2", "finalize")
    )


def test_a_push_that_ends_after_another_run_finished_it_never_sets_it_back(engine, fake_stripe, client, monkeypatch):
    """Two runs push one invoice at once: run A reads the row at ``invoice``, run B finishes the push, then A
    stores its items and fails at its last request. The row stays ``finalized`` (it went back to ``items``, and
    the next run pushed the invoice again)."""
    add_customer(engine)
    issue(engine)
    fake_stripe.fail(stripe_key(engine, "item:2"), "refuse")
    assert not sync_invoices(engine, client).ok
    assert sync_row(engine).step == "invoice"
    original = sync_module._Push._create_items
    other_runs: list[Any] = []
    began: list[bool] = []

    def create_items_while_another_run_finishes(push: Any, items: list[Any]) -> None:
        if not began:  # run A, after reading the row: run B goes all the way first
            began.append(True)
            other_runs.append(sync_invoices(engine, client))
            fake_stripe.fail(stripe_key(engine, "finalize"), "refuse")  # A's own finalize fails
        original(push, items)

    monkeypatch.setattr(sync_module._Push, "_create_items", create_items_while_another_run_finishes)
    run_a = sync_invoices(engine, client)

    assert [r.step for r in other_runs[0].results] == [SyncStep.FINALIZED]
    assert not run_a.ok and run_a.failed[0].error.startswith("APIError")
    row = sync_row(engine)
    assert row.step == "finalized" and row.last_error is None  # A's failure is its run's, not the push's
    assert sync_invoices(engine, client).results == ()  # nothing left to push
    assert len(fake_stripe.of("invoice")) == 1 and len(fake_stripe.of("invoiceitem")) == 2


def test_every_request_names_the_pinned_api_version(engine, fake_stripe, client):
    add_customer(engine)
    issue(engine)
    fake_stripe.fail(stripe_key(engine, "finalize"), "drop")  # finalized, the answer lost…
    sync_invoices(engine, client)
    fake_stripe.forget_keys()  # …and the key forgotten: the next run looks the invoice up (a GET)
    # even a client made elsewhere, without a version, is held to it
    bare = stripe.StripeClient(API_KEY, base_addresses={"api": fake_stripe.url}, max_network_retries=0)
    assert sync_invoices(engine, bare).ok

    assert STRIPE_API_VERSION == "2026-10-28.endive"
    assert [(r.method, r.path.split("/")[2]) for r in fake_stripe.requests] == [
        ("POST", "customers"), ("POST", "invoices"), ("POST", "invoiceitems"), ("POST", "invoiceitems"),
        ("GET", "invoices"), ("POST", "invoices"),  # the draft checked against what is due, then finalized
        ("GET", "invoices"), ("POST", "invoices"), ("GET", "invoices"),
    ]
    assert {r.stripe_version for r in fake_stripe.requests} == {STRIPE_API_VERSION}


def test_two_databases_pushing_to_one_stripe_account_never_share_a_key(engine, fake_stripe, client, tmp_path):
    other = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        upgrade(other)
        for database in (engine, other):  # both issue INV-2026-000001, to different customers
            add_customer(database, "acme" if database is engine else "globex")
            issue(database, "acme" if database is engine else "globex")
            assert sync_invoices(database, client).ok

        ours, theirs = installation_id(engine), installation_id(other)
        assert ours != theirs and len(ours) == len(theirs) == 32
        assert int(ours, 16) >= 0 and int(theirs, 16) >= 0  # hexadecimal digits
        keys = [key for _, key in fake_stripe.posts()]
        assert keys == [f"{ours}:{FIRST}:{step}" for step in ("customer", "invoice", "item:1", "item:2", "finalize")] + [
            f"{theirs}:{FIRST}:{step}" for step in ("customer", "invoice", "item:1", "item:2", "finalize")
        ]
        # Stripe replayed nothing: each database got its own customer and invoice
        assert fake_stripe.replayed == []
        assert [c["metadata"]["billing_customer_id"] for c in fake_stripe.of("customer")] == ["acme", "globex"]
        assert len(fake_stripe.of("invoice")) == 2 and len(fake_stripe.of("invoiceitem")) == 4
        assert installation_id(engine) == ours  # kept, not made anew
    finally:
        other.dispose()


def test_a_push_begun_before_keys_had_an_installation_id_keeps_its_keys_and_a_new_push_uses_the_id(
    engine, fake_stripe, client
):
    add_customer(engine)
    first = issue(engine, period=dt.date(2026, 2, 1))
    with session_scope(engine) as session:  # the row a push begun before migration 0009 stored: no key prefix
        session.execute(
            insert(StripeInvoiceSyncRow.__table__).values(
                invoice_id=first.id, invoice_number=FIRST, customer_external_id="acme", step="pending",
                stripe_item_ids="[]", attempts=0, started_at=utcnow(), updated_at=utcnow(),
            )
        )
    assert sync_row(engine).key_prefix == ""
    fake_stripe.fail(f"{FIRST}:item:2", "drop")  # carried out by Stripe, the answer lost

    assert not sync_invoices(engine, client).ok
    assert sync_invoices(engine, client).ok

    old_keys = [f"{FIRST}:{step}" for step in ("customer", "invoice", "item:1", "item:2", "item:2", "finalize")]
    assert [key for _, key in fake_stripe.posts()] == old_keys
    assert fake_stripe.replayed == [f"{FIRST}:item:2"]  # answered from its key, not created twice
    assert (len(fake_stripe.of("customer")), len(fake_stripe.of("invoice")), len(fake_stripe.of("invoiceitem"))) == (
        1,
        1,
        2,
    )
    assert sync_row(engine).key_prefix == ""

    second = "INV-2026-000002"
    issue(engine, period=dt.date(2026, 3, 1))
    already_sent = len(fake_stripe.posts())
    assert sync_invoices(engine, client).ok
    ours = installation_id(engine)
    assert [key for _, key in fake_stripe.posts()[already_sent:]] == [
        f"{ours}:{second}:{step}" for step in ("invoice", "item:1", "item:2", "finalize")
    ]
    assert sync_row(engine, second).key_prefix == ours


def test_only_finalized_invoices_are_pushed(engine, fake_stripe, client):
    add_customer(engine)
    pushed = issue(engine, period=dt.date(2026, 1, 1))
    paid = issue(engine, period=dt.date(2026, 2, 1))
    void = issue(engine, period=dt.date(2026, 3, 1))
    with session_scope(engine) as session:
        store.set_status(session, paid.id, InvoiceStatus.PAID)
        store.set_status(session, void.id, InvoiceStatus.VOID)
        store.upsert_draft(
            session,
            DraftInvoice(
                billing_key="period:acme:2026-04",
                customer=Party(name="Acme Inc.", external_id="acme"),
                currency="USD",
                locale="en_US",
                period_start=dt.date(2026, 4, 1),
                period_end=dt.date(2026, 5, 1),
                lines=(InvoiceLine(kind="usage", description="draft", amount=Decimal("1.00")),),
            ),
        )
        store.create_credit_note(session, pushed.number or "", Decimal("5.00"), "goodwill", SETTINGS, ISSUED)

    report = sync_invoices(engine, client)

    assert [r.invoice_number for r in report.results] == [pushed.number]
    assert len(fake_stripe.of("invoice")) == 1


def test_a_zero_invoice_is_pushed_and_stripe_asks_for_no_payment(engine, fake_stripe, client):
    add_customer(engine)
    issue(engine, lines=(("Free plan", "0.00"),))
    assert sync_invoices(engine, client).ok
    assert [r.form["amount"] for r in fake_stripe.requests if r.path == "/v1/invoiceitems"] == ["0"]
    stripe_invoice = fake_stripe.of("invoice")[0]
    assert stripe_invoice["status"] == "paid" and stripe_invoice["amount_due"] == 0


def test_limit_pushes_the_oldest_first_and_the_rest_next_time(engine, fake_stripe, client):
    add_customer(engine)
    for month in (1, 2, 3):
        issue(engine, period=dt.date(2026, month, 1))
    assert [r.invoice_number for r in sync_invoices(engine, client, limit=2).results] == [
        "INV-2026-000001",
        "INV-2026-000002",
    ]
    assert [r.invoice_number for r in sync_invoices(engine, client).results] == ["INV-2026-000003"]
    with pytest.raises(BillingInputError, match="limit"):
        sync_invoices(engine, client, limit=0)


def test_the_client_comes_from_stripe_api_key_and_the_configured_api_base(engine, fake_stripe, monkeypatch):
    add_customer(engine)
    issue(engine)
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    with pytest.raises(BillingInputError, match="STRIPE_API_KEY"):
        sync_invoices(engine, Settings(stripe_api_base=fake_stripe.url))
    monkeypatch.setenv("STRIPE_API_KEY", f"  {API_KEY}\n")
    settings = Settings(stripe_api_base=fake_stripe.url)
    assert settings.secret("stripe_api_key") == API_KEY and API_KEY not in repr(settings)
    assert sync_invoices(engine, settings).ok
    assert len(fake_stripe.of("invoice")) == 1


def test_the_stripe_secrets_come_from_stripe_variables_or_the_config_file(tmp_path, monkeypatch):
    config = tmp_path / "billing.toml"
    config.write_text('stripe_api_key = "sk_test_file"\nstripe_webhook_secret = "whsec_file"\n', encoding="utf-8")
    monkeypatch.setenv("BILLING_CONFIG", str(config))
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    from_file = Settings()
    assert (from_file.secret("stripe_api_key"), from_file.secret("stripe_webhook_secret")) == ("sk_test_file", "whsec_file")
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_env")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_env")
    from_env = Settings()
    assert (from_env.secret("stripe_api_key"), from_env.secret("stripe_webhook_secret")) == ("sk_test_env", "whsec_env")


def test_billing_stripe_sync_prints_what_was_pushed(cli_env, engine, fake_stripe, monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    monkeypatch.setenv("BILLING_STRIPE_API_BASE", fake_stripe.url)
    get_settings.cache_clear()
    add_customer(engine)
    issue(engine)
    runner = CliRunner()

    result = runner.invoke(cli_app, ["stripe", "sync"])

    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "Stripe invoice" in result.stdout and "finalized" in result.stdout
    assert "pushed 1, failed 0" in result.stdout
    assert sync_row(engine).stripe_invoice_id == fake_stripe.of("invoice")[0]["id"]
    again = runner.invoke(cli_app, ["stripe", "sync"])
    assert again.exit_code == 0 and "nothing to push" in again.stdout


def test_billing_stripe_sync_exits_1_when_a_push_fails(cli_env, engine, fake_stripe, monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_wrong")
    monkeypatch.setenv("BILLING_STRIPE_API_BASE", fake_stripe.url)
    get_settings.cache_clear()
    add_customer(engine)
    issue(engine)
    result = CliRunner().invoke(cli_app, ["stripe", "sync"])
    assert result.exit_code == 1
    assert "pushed 0, failed 1" in result.stdout
    assert "AuthenticationError" in "".join(result.stdout.split())  # the table may fold a long cell
    assert sync_row(engine).step == "pending"


# -- webhooks --------------------------------------------------------------------------------------------


def signed(payload: str, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> dict[str, str]:
    """The headers Stripe sends: ``Stripe-Signature: t=…,v1=HMAC_SHA256(secret, "t.payload")``."""
    t = int(time.time()) if timestamp is None else timestamp
    signature = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={signature}", "Content-Type": "application/json"}


def invoice_event(
    event_id: str,
    event_type: str,
    *,
    stripe_invoice: str = "in_unknown",
    number: str | None = FIRST,
    created: dt.datetime = dt.datetime(2026, 4, 20, 12, 0, tzinfo=dt.UTC),
    next_payment_attempt: dt.datetime | None = None,
    attempt_count: int = 1,
) -> str:
    """A Stripe event about an invoice, as Stripe delivers it."""
    status = {"invoice.paid": "paid", "invoice.marked_uncollectible": "uncollectible"}.get(event_type, "open")
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "api_version": "2026-10-28.endive",
            "created": int(created.timestamp()),
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
            "data": {
                "object": {
                    "id": stripe_invoice,
                    "object": "invoice",
                    "customer": "cus_0001",
                    "currency": "usd",
                    "amount_due": 6150,
                    "status": status,
                    "collection_method": "charge_automatically",
                    "attempt_count": attempt_count,
                    "attempted": True,
                    "next_payment_attempt": None
                    if next_payment_attempt is None
                    else int(next_payment_attempt.timestamp()),
                    "metadata": {} if number is None else {"billing_invoice_number": number},
                }
            },
        }
    )


@pytest.fixture
def webhooks(engine, monkeypatch, request) -> Iterator[TestClient]:
    """The webhook router in an app of its own, on the test database and the test module's catalog (if any)."""
    catalog = request.getfixturevalue("catalog") if "catalog" in request.fixturenames else None
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    get_settings.cache_clear()
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[api_engine] = lambda: engine
    app.dependency_overrides[routes_stripe._catalog_if_readable] = lambda: catalog
    with TestClient(app) as test_client:
        yield test_client
    get_settings.cache_clear()


def post(webhooks: TestClient, payload: str, headers: dict[str, str] | None = None) -> Any:
    return webhooks.post("/v1/stripe/webhooks", content=payload.encode(), headers=signed(payload) if headers is None else headers)


def recorded_events(engine: Engine) -> list[tuple[str, str]]:
    with session_scope(engine) as session:
        rows = session.execute(select(StripeWebhookEventRow).order_by(StripeWebhookEventRow.received_at)).scalars()
        return [(row.event_id, row.outcome) for row in rows]


def dunning(engine: Engine, invoice: Invoice) -> DunningRow | None:
    with session_scope(engine) as session:
        return session.get(DunningRow, invoice.id)


def test_invoice_paid_marks_our_invoice_paid(engine, webhooks):
    add_customer(engine)
    issue(engine)
    response = post(webhooks, invoice_event("evt_paid", "invoice.paid"))
    assert response.status_code == 200
    assert response.json() == {"received": True, "event_id": "evt_paid", "outcome": "paid"}
    assert status_of(engine) is InvoiceStatus.PAID
    assert recorded_events(engine) == [("evt_paid", "paid")]


def test_the_invoice_is_found_by_the_stripe_id_stored_when_it_was_pushed(engine, webhooks, fake_stripe, client):
    add_customer(engine)
    issue(engine)
    assert sync_invoices(engine, client).ok
    stripe_id = fake_stripe.of("invoice")[0]["id"]
    payload = invoice_event("evt_paid", "invoice.paid", stripe_invoice=stripe_id, number=None)
    assert post(webhooks, payload).json()["outcome"] == "paid"
    assert status_of(engine) is InvoiceStatus.PAID


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        (lambda p: signed(p, secret="whsec_someone_else"), "invalid_signature"),
        (lambda p: signed(p.replace("invoice.paid", "invoice.paid ")), "invalid_signature"),
        (lambda p: {"Stripe-Signature": "t=123,v1=abc"}, "invalid_signature"),
        (lambda p: {"Stripe-Signature": "garbage"}, "invalid_signature"),
        (lambda p: {}, "missing_signature"),
        (lambda p: signed(p, timestamp=int(time.time()) - 600), "stale_timestamp"),
        (lambda p: signed(p, timestamp=int(time.time()) + 600), "future_timestamp"),
    ],
    ids=["wrong-secret", "tampered-body", "bad-hmac", "unparsable", "missing", "stale", "from-the-future"],
)
def test_an_unverified_delivery_is_refused_with_400_and_changes_nothing(engine, webhooks, headers, code):
    add_customer(engine)
    issue(engine)
    payload = invoice_event("evt_forged", "invoice.paid")

    response = post(webhooks, payload, headers(payload))

    assert response.status_code == 400
    assert response.json()["code"] == code and response.json()["detail"]
    assert response.headers["content-type"] == "application/problem+json"
    assert status_of(engine) is InvoiceStatus.FINALIZED
    assert recorded_events(engine) == []


def test_a_signature_counts_up_to_the_tolerance_either_way_and_not_a_second_past_it(engine, webhooks, monkeypatch):
    now = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
    monkeypatch.setattr(routes_stripe, "utcnow", lambda: now)
    assert routes_stripe.SIGNATURE_TOLERANCE_SECONDS == 300
    answers = {}
    for offset in (-301, -300, 300, 301):
        payload = invoice_event(f"evt_{offset}", "customer.created")
        response = post(webhooks, payload, signed(payload, timestamp=int(now.timestamp()) + offset))
        body = response.json()
        answers[offset] = (response.status_code, body["code"] if "code" in body else body["outcome"])
    assert answers == {
        -301: (400, "stale_timestamp"),
        -300: (200, "ignored"),
        300: (200, "ignored"),
        301: (400, "future_timestamp"),
    }
    assert sorted(recorded_events(engine)) == [("evt_-300", "ignored"), ("evt_300", "ignored")]


def test_a_signed_body_that_is_not_an_event_is_refused(engine, webhooks):
    for payload in ("not json", "[1, 2]", json.dumps({"object": "event"})):
        response = post(webhooks, payload)
        assert response.status_code == 400, payload
        assert response.json()["code"] == "invalid_payload"
    not_utf8 = webhooks.post("/v1/stripe/webhooks", content=b"\xff\xfe", headers={"Stripe-Signature": "t=1,v1=0"})
    assert (not_utf8.status_code, not_utf8.json()["code"]) == (400, "invalid_payload")
    assert recorded_events(engine) == []


def test_the_endpoint_is_described_in_the_openapi_document(webhooks):
    operation = webhooks.get("/openapi.json").json()["paths"]["/v1/stripe/webhooks"]["post"]
    assert {"200", "400"} <= set(operation["responses"])
    assert any(p["name"] == "stripe-signature" and p["in"] == "header" for p in operation["parameters"])


def test_without_a_webhook_secret_the_server_answers_500(engine, webhooks, monkeypatch):
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET")
    get_settings.cache_clear()
    payload = invoice_event("evt_1", "invoice.paid")
    response = post(webhooks, payload)
    assert response.status_code == 500 and response.json()["code"] == "webhook_secret_missing"


def test_a_replayed_event_is_acknowledged_and_ignored(engine, webhooks):
    add_customer(engine)
    invoice = issue(engine)
    payload = invoice_event("evt_fail", "invoice.payment_failed", next_payment_attempt=dt.datetime(2026, 4, 23, tzinfo=dt.UTC))
    assert post(webhooks, payload).json()["outcome"] == "payment_failed"

    for _ in range(2):  # Stripe delivers again, with a fresh signature
        response = post(webhooks, payload)
        assert response.status_code == 200 and response.json()["outcome"] == "duplicate"

    assert dunning(engine, invoice).failed_attempts == 1
    assert recorded_events(engine) == [("evt_fail", "payment_failed")]


def test_payment_failures_then_the_final_one_churn_the_customer_involuntarily(engine, webhooks, catalog, caplog):
    add_customer(engine, "acme", timezone="America/New_York")
    add_customer(engine, "globex")
    growth = customers.subscribe(engine, catalog, "acme", "growth", dt.date(2026, 1, 1))
    support = customers.subscribe(engine, catalog, "acme", "support", dt.date(2026, 3, 15))
    legacy = customers.subscribe(engine, catalog, "acme", "legacy", dt.date(2025, 6, 1))
    customers.cancel_subscription(engine, legacy.id, dt.date(2026, 2, 1), reason="voluntary")
    later = customers.subscribe(engine, catalog, "acme", "storage", dt.date(2026, 6, 1))
    other = customers.subscribe(engine, catalog, "globex", "growth", dt.date(2026, 1, 1))
    invoice = issue(engine)
    retry = dt.datetime(2026, 4, 25, tzinfo=dt.UTC)

    first = post(webhooks, invoice_event("evt_1", "invoice.payment_failed", next_payment_attempt=retry))
    second = post(webhooks, invoice_event("evt_2", "invoice.payment_failed", next_payment_attempt=retry))

    assert [first.json()["outcome"], second.json()["outcome"]] == ["payment_failed", "payment_failed"]
    record = dunning(engine, invoice)
    assert (record.failed_attempts, record.final) == (2, False)
    assert status_of(engine) is InvoiceStatus.FINALIZED
    assert all(s.status is SubscriptionStatus.ACTIVE for s in customers.list_subscriptions(engine, "acme")
               if s.id != legacy.id)
    assert "attempt 2" in caplog.text  # the customer's notification (logged for now)

    # 03:30 UTC on 10 May is still 9 May in New York: the customer's day is the failure date.
    final_at = dt.datetime(2026, 5, 10, 3, 30, tzinfo=dt.UTC)
    final = post(webhooks, invoice_event("evt_3", "invoice.payment_failed", created=final_at, attempt_count=3))

    assert final.json()["outcome"] == "uncollectible"
    assert status_of(engine) is InvoiceStatus.UNCOLLECTIBLE
    record = dunning(engine, invoice)
    assert (record.failed_attempts, record.final, record.next_attempt_at) == (3, True, None)
    assert record.final_at is not None and record.final_at.replace(tzinfo=dt.UTC) == final_at
    for subscription in (growth, support):
        cancelled = customers.get_subscription(engine, subscription.id)
        assert cancelled.status is SubscriptionStatus.CANCELLED
        assert (cancelled.end_date, cancelled.cancel_reason) == (dt.date(2026, 5, 9), CancelReason.INVOLUNTARY)
    # given up on from Stripe's instant, however late the event was delivered: owed on 8 May, not from the 9th
    assert [r.customer for r in payments.aged_receivables(engine, dt.date(2026, 5, 8)).rows] == ["acme"]
    assert payments.aged_receivables(engine, dt.date(2026, 5, 9)).rows == ()
    untouched = customers.get_subscription(engine, legacy.id)
    assert (untouched.end_date, untouched.cancel_reason) == (dt.date(2026, 2, 1), CancelReason.VOLUNTARY)
    assert customers.get_subscription(engine, later.id).status is SubscriptionStatus.ACTIVE  # not yet started
    assert customers.get_subscription(engine, other.id).status is SubscriptionStatus.ACTIVE  # another customer

    assert post(webhooks, invoice_event("evt_3", "invoice.payment_failed", created=final_at)).json()["outcome"] == (
        "duplicate"
    )
    assert dunning(engine, invoice).failed_attempts == 3


def _opening_total(engine: Engine, subscription_id: int) -> str | None:
    """The total of a subscription's opening invoice (``start:ID``) while it is a draft; None if there is none."""
    with session_scope(engine) as session:
        drafts = [i for i in store.list_invoices(session) if i.billing_key == f"start:{subscription_id}"]
    return str(drafts[0].total) if drafts and drafts[0].status is InvoiceStatus.DRAFT else None


def test_an_involuntary_cancellation_settles_the_opening_drafts_as_a_cancellation_does(engine, webhooks, catalog):
    """The customer's subscriptions cancelled for a failed collection have their opening invoices, still drafts,
    written again for the days they now cover (as ``billing subscriptions cancel`` writes them), so that the
    scheduler does not issue a month's fee for a subscription that ended a week in, or any fee for one that ended
    on its start day."""
    add_customer(engine)
    support = customers.subscribe(engine, catalog, "acme", "support", dt.date(2026, 5, 1))
    storage = customers.subscribe(engine, catalog, "acme", "storage", dt.date(2026, 5, 9))
    # in advance, prorated: 10.00 for 1–31 May; 3 × 23/31 = 2.225… → 2.23 for 9–31 May
    assert (_opening_total(engine, support.id), _opening_total(engine, storage.id)) == ("10.00", "2.23")
    issue(engine)

    failed_on = dt.datetime(2026, 5, 9, 12, tzinfo=dt.UTC)
    answer = post(webhooks, invoice_event("evt_gone", "invoice.marked_uncollectible", created=failed_on))

    assert answer.json()["outcome"] == "uncollectible"
    assert customers.get_subscription(engine, support.id).end_date == dt.date(2026, 5, 9)
    assert _opening_total(engine, support.id) == "2.58"  # 1–8 May: 10 × 8/31 = 2.580… → 2.58
    assert customers.get_subscription(engine, storage.id).end_date == dt.date(2026, 5, 9)  # its start day
    assert _opening_total(engine, storage.id) is None  # it covers no day: no fee


@pytest.mark.parametrize("finalizer", ["api", "scheduler", "period"])
def test_an_involuntary_cancellation_and_finalizing_the_opening_draft_at_once_never_deadlock(
    engine, catalog, monkeypatch, finalizer
):
    """PostgreSQL: the webhook cancelling the subscriptions (the failed invoice, the customer, the subscription,
    its opening draft) and finalizing that opening draft — by the API with an approval policy (which took the
    draft, then the customer), by the scheduler (the subscription, the draft, then the customer), or with its
    period's drafts (the drafts, then the customers) — waited for each other in a circle; all now take the
    customer first. The finalization is held up with what it locked while
    the webhook arrives: both finish, one after the other."""
    if not is_postgresql(engine):
        pytest.skip("PostgreSQL: row locks (SQLite's write transaction holds the whole database)")
    from billing.approval import ApprovalPolicy

    add_customer(engine)
    support = customers.subscribe(engine, catalog, "acme", "support", dt.date(2026, 5, 1))
    issue(engine)
    with session_scope(engine) as session:
        opening_id = next(i.id for i in store.list_invoices(session) if i.billing_key == f"start:{support.id}")
    held_up = {"api": "check_approved", "scheduler": "write_opening_invoice", "period": "claim_drafts"}[finalizer]
    where = store if finalizer == "period" else invoicing
    real = getattr(where, held_up)

    def slowly(*args, **kwargs):
        found = real(*args, **kwargs)
        time.sleep(0.5)  # what the finalization locked so far stays locked meanwhile
        return found

    monkeypatch.setattr(where, held_up, slowly)
    outcomes: dict[str, object] = {}

    def finalize():
        try:
            if finalizer == "api":
                outcomes["finalize"] = invoicing.finalize_invoice(
                    engine, opening_id, SETTINGS, dt.date(2026, 5, 2), approval=ApprovalPolicy()
                ).status
            elif finalizer == "period":
                numbers = finalize_period(engine, calendar_month(2026, 5), SETTINGS, dt.date(2026, 5, 2),
                                          now=dt.datetime(2026, 5, 2, 12, tzinfo=dt.UTC), customer="acme")
                outcomes["finalize"] = InvoiceStatus.FINALIZED if numbers else numbers
            else:
                report = invoicing.finalize_opening_invoices(
                    engine, catalog, SETTINGS, now=dt.datetime(2026, 5, 2, 12, tzinfo=dt.UTC), customer="acme"
                )
                outcomes["finalize"] = InvoiceStatus.FINALIZED if report.finalized else report
        except Exception as exc:  # a deadlock would be reported here, or in the webhook's thread
            outcomes["finalize"] = exc

    def webhook():
        event = json.loads(invoice_event("evt_race", "invoice.marked_uncollectible",
                                         created=dt.datetime(2026, 5, 9, 12, tzinfo=dt.UTC)))
        try:
            outcomes["webhook"] = handle_event(engine, event, catalog=catalog)
        except Exception as exc:
            outcomes["webhook"] = exc

    first = threading.Thread(target=finalize)
    first.start()
    time.sleep(0.2)
    second = threading.Thread(target=webhook)
    second.start()
    first.join(30)
    second.join(30)
    assert outcomes == {"finalize": InvoiceStatus.FINALIZED, "webhook": "uncollectible"}, outcomes


def test_reaching_dunning_max_attempts_is_final_even_if_stripe_would_retry(engine, webhooks, catalog, monkeypatch):
    monkeypatch.setenv("BILLING_DUNNING_MAX_ATTEMPTS", "2")
    get_settings.cache_clear()
    try:
        add_customer(engine)
        growth = customers.subscribe(engine, catalog, "acme", "growth", dt.date(2026, 1, 1))
        issue(engine)
        retry = dt.datetime(2026, 4, 30, tzinfo=dt.UTC)
        outcomes = [
            post(webhooks, invoice_event(f"evt_{n}", "invoice.payment_failed", next_payment_attempt=retry)).json()[
                "outcome"
            ]
            for n in (1, 2)
        ]
    finally:
        get_settings.cache_clear()
    assert outcomes == ["payment_failed", "uncollectible"]
    assert status_of(engine) is InvoiceStatus.UNCOLLECTIBLE
    cancelled = customers.get_subscription(engine, growth.id)
    assert (cancelled.end_date, cancelled.cancel_reason) == (dt.date(2026, 4, 20), CancelReason.INVOLUNTARY)


def test_marked_uncollectible_churns_and_a_late_payment_still_marks_the_invoice_paid(engine, webhooks, catalog):
    add_customer(engine)
    growth = customers.subscribe(engine, catalog, "acme", "growth", dt.date(2026, 1, 1))
    invoice = issue(engine)
    when = dt.datetime(2026, 5, 2, 9, 0, tzinfo=dt.UTC)

    response = post(webhooks, invoice_event("evt_u", "invoice.marked_uncollectible", created=when))

    assert response.json()["outcome"] == "uncollectible"
    assert status_of(engine) is InvoiceStatus.UNCOLLECTIBLE
    assert dunning(engine, invoice).final is True
    cancelled = customers.get_subscription(engine, growth.id)
    assert (cancelled.end_date, cancelled.cancel_reason) == (dt.date(2026, 5, 2), CancelReason.INVOLUNTARY)

    assert post(webhooks, invoice_event("evt_p", "invoice.paid")).json()["outcome"] == "paid"
    assert status_of(engine) is InvoiceStatus.PAID
    assert customers.get_subscription(engine, growth.id).status is SubscriptionStatus.CANCELLED


def test_a_failure_delivered_after_the_payment_changes_nothing(engine, webhooks, catalog):
    add_customer(engine)
    growth = customers.subscribe(engine, catalog, "acme", "growth", dt.date(2026, 1, 1))
    invoice = issue(engine)
    assert post(webhooks, invoice_event("evt_paid", "invoice.paid")).json()["outcome"] == "paid"
    late = post(webhooks, invoice_event("evt_failed", "invoice.payment_failed"))
    assert late.status_code == 200 and late.json()["outcome"] == "ignored"
    assert status_of(engine) is InvoiceStatus.PAID
    assert dunning(engine, invoice) is None
    assert customers.get_subscription(engine, growth.id).status is SubscriptionStatus.ACTIVE


def test_events_about_other_invoices_or_of_other_types_are_acknowledged_and_ignored(engine, webhooks):
    add_customer(engine)
    issue(engine)
    not_ours = invoice_event("evt_a", "invoice.paid", number="INV-1999-000001")
    no_metadata = invoice_event("evt_b", "invoice.paid", number=None)
    other_type = invoice_event("evt_c", "invoice.finalized")
    for payload in (not_ours, no_metadata, other_type):
        response = post(webhooks, payload)
        assert response.status_code == 200 and response.json()["outcome"] == "ignored"
    assert status_of(engine) is InvoiceStatus.FINALIZED
    assert sorted(recorded_events(engine)) == [("evt_a", "ignored"), ("evt_b", "ignored"), ("evt_c", "ignored")]


def test_handle_event_takes_a_verified_event_and_processes_it_once(engine):
    add_customer(engine)
    issue(engine)
    payload = invoice_event("evt_direct", "invoice.paid")
    event = stripe.Webhook.construct_event(payload, signed(payload)["Stripe-Signature"], WEBHOOK_SECRET)
    assert handle_event(engine, event) == "paid"
    assert handle_event(engine, json.loads(payload)) == "duplicate"
    with pytest.raises(BillingInputError, match="event"):
        handle_event(engine, {"type": "invoice.paid"})
    with session_scope(engine) as session:
        assert session.execute(select(func.count()).select_from(StripeWebhookEventRow)).scalar_one() == 1


def test_the_router_reads_the_configured_database_through_get_engine(cli_env, engine, monkeypatch):
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    get_settings.cache_clear()
    add_customer(engine)
    issue(engine)
    app = FastAPI()
    app.include_router(router)
    try:
        assert get_engine() is get_engine()
        assert get_engine().url.render_as_string(hide_password=False) == engine.url.render_as_string(
            hide_password=False
        )
        with TestClient(app) as test_client:
            response = post(test_client, invoice_event("evt_cfg", "invoice.paid"))
        assert response.status_code == 200 and response.json()["outcome"] == "paid"
    finally:
        dispose_engines()
    assert status_of(engine) is InvoiceStatus.PAID


def test_concurrent_deliveries_are_processed_once_and_failures_counted_exactly(engine):
    add_customer(engine)
    invoice = issue(engine)
    retry = dt.datetime(2026, 4, 30, tzinfo=dt.UTC)
    same = json.loads(invoice_event("evt_same", "invoice.payment_failed", next_payment_attempt=retry))
    distinct = [
        json.loads(invoice_event(f"evt_{n}", "invoice.payment_failed", next_payment_attempt=retry)) for n in range(2)
    ]
    events = [same] * 4 + distinct
    barrier = threading.Barrier(len(events))
    outcomes: list[str] = []

    def deliver(event: dict[str, Any]) -> None:
        barrier.wait()
        outcomes.append(handle_event(engine, event, max_attempts=10))

    threads = [threading.Thread(target=deliver, args=(event,)) for event in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcomes) == ["duplicate"] * 3 + ["payment_failed"] * 3
    assert dunning(engine, invoice).failed_attempts == 3
    assert len(recorded_events(engine)) == 3


def test_the_printed_invoice_links_stripes_hosted_page_while_something_is_due(engine, fake_stripe, client):
    add_customer(engine)
    issue(engine)
    before = invoicing.printable(engine, invoicing.get_invoice(engine, FIRST), Settings())
    assert before.payment is not None and before.payment.pay_online_url is None  # not pushed yet

    sync_invoices(engine, client)
    url = f"https://invoice.stripe.test/i/{fake_stripe.of('invoice')[0]['id']}"
    pushed = invoicing.printable(engine, invoicing.get_invoice(engine, FIRST), Settings())
    assert pushed.payment is not None and pushed.payment.pay_online_url == url
    html = render_html(pushed)
    assert "Pay online:" in html and f'href="{url}"' in html

    invoicing.set_invoice_status(engine, FIRST, InvoiceStatus.PAID)
    paid = invoicing.printable(engine, invoicing.get_invoice(engine, FIRST), Settings())
    assert paid.payment is not None and paid.payment.pay_online_url is None  # nothing left to pay there


def test_stripes_units_of_each_kind_of_currency():
    """Two decimals in Stripe's API unless Stripe lists the currency as zero- or three-decimal, whatever its own
    minor unit (ISK, HUF, COP: none here); what Stripe reports is read exactly (5.50 ISK: rounded when recorded)."""
    from billing.stripe.amounts import collectable, from_stripe, to_stripe

    assert [to_stripe(Decimal(a), c) for a, c in (("12.50", "USD"), ("1500", "JPY"), ("5", "ISK"), ("12963", "HUF"),
                                                    ("5.124", "KWD"), ("7", "UGX"))] == [1250, 1500, 500, 1296300,
                                                                                        5124, 7]  # fmt: skip
    with pytest.raises(ValueError, match=r"0.5 JPY: Stripe takes JPY amounts with at most 0 decimal places"):
        to_stripe(Decimal("0.5"), "JPY")
    assert (from_stripe(500, "isk"), from_stripe(550, "ISK"), from_stripe(1250, "usd"), from_stripe(5124, "KWD")) == (
        Decimal("5"), Decimal("5.50"), Decimal("12.50"), Decimal("5.124"),
    )
    assert (collectable(5124, "KWD"), collectable(5120, "kwd"), collectable(5125, "USD")) == (False, True, True)
