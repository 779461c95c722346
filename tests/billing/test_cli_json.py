"""``--json`` on every command that prints data: one JSON document on standard output, the HTTP API's field names,
lists as ``{"data": [...]}``; and ``billing usage CUSTOMER``, the usage preview in the terminal. On SQLite and
PostgreSQL.

The world below is small enough to work out by hand. The catalog's plan ``starter`` (USD) has a fee of 10.00 a
month in arrears, API calls graduated (the first 3 free, then 0.25 each) and compute minutes at 0.015, and an
allowance of 5 API calls with alerts at 80 % and 100 %. In October 2026:

- acme (UTC, tax 20 %): 6 calls → 3 × 0.25 = 0.75; 12.5 + 7.5 = 20 minutes → 20 × 0.015 = 0.30; with the fee,
  subtotal 11.05, tax 2.21, total 13.26. 6 calls cross 4 (80 %) and 5 (100 %): two notifications. Its invoice is
  finalized: INV-2026-000001.
- beta (Europe/Berlin, no tax): 2 calls, all free → 10.00; its invoice stays a draft.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import Response
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from billing import coupons, credits, customers, overrides
from billing.apikeys import create_api_key, list_api_keys
from billing.cli import COMMANDS, app, load_command
from billing.config import get_settings
from billing.core.periods import month, month_of
from billing.ingestion import ingest_batch
from billing.reactions import react_to_usage
from billing.run import finalize_period, run_billing
from invoices.store import FinalizeSettings
from pricing_plans.loader import load_catalog_or_raise
from pricing_plans.models import Catalog
from tests.dates import this_year

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"
unit = "call"

[meters.compute_minutes]
name = "Compute minutes"
aggregation = "sum"
unit = "minute"

[plans.starter]
name = "Starter"
currency = "USD"
effective_from = 2025-01-01
subscription = { fee = 10.00, billing = "in_arrears" }
charges = [
  { meter = "api_calls", model = "graduated", tiers = [{ up_to = 3, unit_amount = 0 }, { up_to = "inf", unit_amount = 0.25 }] },
  { meter = "compute_minutes", model = "per_unit", unit_amount = 0.015 },
]
thresholds = [{ meter = "api_calls", allowance = 5, levels = [80, 100] }]

[plans.pro]
name = "Pro"
currency = "USD"
effective_from = 2025-01-01
subscription = { fee = 30.00, billing = "in_arrears" }

[plans.team]
name = "Team"
currency = "USD"
effective_from = 2025-01-01
subscription = { fee = 10.00, billing = "in_advance", seats = true }
"""

OCTOBER = month(2026, 10)
INGESTED = dt.datetime(2026, 10, 25, 12, tzinfo=dt.UTC)  # the events' arrival: inside October's window
runner = CliRunner()


@dataclass
class World:
    engine: Engine
    catalog: Catalog
    catalog_path: Path
    tmp: Path
    acme_subscription: int
    beta_subscription: int
    notes: dict[str, Any] = field(default_factory=dict)  # what a case prepared, for its check
    cleanups: list[Callable[[], None]] = field(default_factory=list)


def _event(event_id: str, customer: str, meter: str, day: int, value: object = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": event_id, "customer": customer, "meter": meter, "timestamp": f"2026-10-{day:02d}T12:00:00Z"
    }
    if value is not None:
        event["value"] = value
    return event


@pytest.fixture
def world(cli_env, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    monkeypatch.setenv("BILLING_CATALOG", str(path))
    for name in ("STRIPE_API_KEY", "BILLING_NOTIFICATION_WEBHOOK_URL", "BILLING_SMTP_HOST"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    catalog = load_catalog_or_raise(path)
    customers.create_customer(
        engine, "acme", "Acme Corp", "ap@acme.example", "USD", timezone="UTC", address=("1 Main St",), tax_rate="20"
    )
    customers.create_customer(engine, "beta", "Beta Ltd", None, "USD", timezone="Europe/Berlin")
    acme = customers.subscribe(engine, catalog, "acme", "starter", dt.date(2026, 10, 1))
    beta = customers.subscribe(engine, catalog, "beta", "starter", dt.date(2026, 10, 1))
    events = [_event(f"acme-call-{i}", "acme", "api_calls", i + 1) for i in range(6)]
    events += [_event("acme-min-1", "acme", "compute_minutes", 3, "12.5"), _event("acme-min-2", "acme", "compute_minutes", 20, "7.5")]
    events += [_event(f"beta-call-{i}", "beta", "api_calls", i + 10) for i in range(2)]
    report = ingest_batch(engine, catalog, events, now=INGESTED)
    assert (report.accepted, report.rejected) == (10, [])
    react_to_usage(engine, catalog, now=INGESTED)  # the thresholds, behind the ingestion: acme crosses two
    run_billing(engine, catalog, OCTOBER)
    assert finalize_period(engine, OCTOBER, FinalizeSettings(), dt.date(2026, 11, 3), customer="acme") == [
        "INV-2026-000001"
    ]
    create_api_key(engine, "ci")
    world = World(engine, catalog, path, tmp_path, acme.id, beta.id)
    yield world
    for cleanup in world.cleanups:
        cleanup()


# -- every data command, parsed ---------------------------------------------------------------------------------

NOON = dt.datetime.now(dt.UTC).replace(day=1, hour=12, minute=0, second=0, microsecond=0)
"""Noon on the first of the current month: inside the late-usage window and not in the future, whenever it runs."""

# The commands that print no data: what they print is a confirmation, a document or a server's log.
NO_DATA = {
    ("init",): "creates the database and says so",
    ("db", "upgrade"): "applies migrations and says so",
    ("db", "create-role"): "creates a database role and says so",
    ("db", "resolve-conflicts"): "confirms how many conflicting events it deleted",
    ("serve",): "serves the API; it prints a log",
    ("invoices", "render"): "writes a document; --format json is the invoice's JSON",
}


@dataclass(frozen=True)
class Case:
    """A data command: its path in the command tree, how it is called (``args(world, monkeypatch)`` may prepare
    what it needs), its exit status, and what its JSON must say."""

    path: tuple[str, ...]
    args: Any
    check: Any
    exit_code: int = 0


def _fixed(*args: str) -> Any:
    return lambda world, monkeypatch: list(args)


def _ids(documents: list[dict[str, Any]], key: str = "id") -> list[Any]:
    return [document[key] for document in documents]


def _check_customers(doc: dict[str, Any], world: World) -> None:
    acme, beta = doc["data"]
    assert (acme["external_id"], acme["tax_rate"], acme["timezone"], acme["address"]) == ("acme", "20", "UTC", ["1 Main St"])
    assert (beta["external_id"], beta["email"], beta["tax_rate"], beta["timezone"]) == ("beta", None, "0", "Europe/Berlin")
    assert "webhook_secret" not in acme


def _check_added(doc: dict[str, Any], world: World) -> None:
    assert (doc["external_id"], doc["currency"], doc["webhook_url"]) == ("gamma", "EUR", "https://hooks.example/gamma")
    assert doc["webhook_secret"].startswith("whsec_")


def _rotate(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    created = customers.create_customer(
        world.engine, "hooked", "Hooked", None, "USD", webhook_url="https://hooks.example/hooked"
    )
    world.notes["old secret"] = created.webhook_secret
    return ["customers", "rotate-webhook-secret", "hooked", "--json"]


def _check_rotated(doc: dict[str, Any], world: World) -> None:
    assert doc["external_id"] == "hooked" and doc["webhook_secret"].startswith("whsec_")
    assert doc["webhook_secret"] != world.notes["old secret"]


def _check_updated(doc: dict[str, Any], world: World) -> None:
    assert (doc["external_id"], doc["country"], doc["tax_id"], doc["name"]) == ("beta", "DE", "DE136695976", "Beta AG")
    assert doc["webhook_secret"] is None  # (no new webhook URL: no secret to show)


def _check_archived(archived: bool):
    def check(doc: dict[str, Any], world: World) -> None:
        assert doc["external_id"] == "gone" and (doc["archived_at"] is not None) is archived

    return check


def _archive(*commands: str):
    def prepare(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        customers.create_customer(world.engine, "gone", "Gone", None, "USD")
        if "unarchive" in commands:
            customers.archive_customer(world.engine, "gone")
        return ["customers", *commands, "gone", "--json"]

    return prepare


def _import(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    path = world.tmp / "customers.csv"
    path.write_text(
        "external_id,name,currency,webhook_url\n"
        "delta,Delta,EUR,https://hooks.example/delta\n"
        "epsilon,Epsilon,XXQ,\n",
        encoding="utf-8",
    )
    return ["customers", "import", str(path), "--json"]


def _check_imported(doc: dict[str, Any], world: World) -> None:
    assert (doc["accepted"], doc["rejected"]) == (1, 1)
    assert doc["created"][0]["external_id"] == "delta" and doc["created"][0]["webhook_secret"].startswith("whsec_")
    assert doc["problems"][0]["line"] == 3 and "XXQ" in doc["problems"][0]["message"]


def _check_subscribed(doc: dict[str, Any], world: World) -> None:
    assert (doc["id"], doc["customer"], doc["plan"], doc["plan_version"]) == (3, "beta", "pro", 1)
    assert (doc["start_date"], doc["end_date"], doc["status"]) == ("2026-11-01", None, "active")


def _check_subscribed_seats(doc: dict[str, Any], world: World) -> None:
    assert (doc["customer"], doc["plan"], doc["quantity"]) == ("beta", "team", 3)
    assert doc["quantities"] == [{"effective_from": "2026-11-01", "quantity": 3}]


def _seats(world: World, mp: pytest.MonkeyPatch) -> list[str]:
    team = customers.subscribe(world.engine, world.catalog, "acme", "team", dt.date(2026, 11, 1), quantity=5)
    world.notes["team"] = team.id
    return ["subscriptions", "quantity", str(team.id), "8", "--from", "2026-11-11", "--json"]


def _check_seats(doc: dict[str, Any], world: World) -> None:
    assert (doc["id"], doc["plan"], doc["quantity"]) == (world.notes["team"], "team", 8)
    assert doc["quantities"] == [{"effective_from": "2026-11-01", "quantity": 5}, {"effective_from": "2026-11-11", "quantity": 8}]
    assert customers.get_subscription(world.engine, world.notes["team"]).quantity_on(dt.date(2026, 11, 10)) == 5


def _check_cancelled(doc: dict[str, Any], world: World) -> None:
    assert (doc["id"], doc["end_date"], doc["cancel_reason"]) == (world.beta_subscription, "2026-12-01", "voluntary")


def _check_changed(doc: dict[str, Any], world: World) -> None:
    assert (doc["plan"], doc["start_date"], doc["previous_subscription_id"]) == ("pro", "2026-12-01", world.beta_subscription)


def _check_subscriptions(doc: dict[str, Any], world: World) -> None:
    assert _ids(doc["data"]) == [world.acme_subscription, world.beta_subscription]
    assert [(s["customer"], s["plan"], s["start_date"], s["status"]) for s in doc["data"]] == [
        ("acme", "starter", "2026-10-01", "active"),
        ("beta", "starter", "2026-10-01", "active"),
    ]


def _check_invoices(doc: dict[str, Any], world: World) -> None:
    assert [(i["number"], i["customer"], i["status"], i["subtotal"], i["tax"], i["total"]) for i in doc["data"]] == [
        ("INV-2026-000001", "acme", "finalized", "11.05", "2.21", "13.26"),
        (None, "beta", "draft", "10.00", "0.00", "10.00"),
    ]
    assert doc["data"][0]["period"] == {"start": "2026-10-01", "end": "2026-11-01"}


def _check_invoice(doc: dict[str, Any], world: World) -> None:
    assert [(line["kind"], line["quantity"], line["amount"]) for line in doc["lines"]] == [
        ("subscription", "1", "10.00"),
        ("usage", "6", "0.75"),
        ("usage", "20", "0.30"),
    ]
    assert (doc["subtotal"], doc["tax_rate"], doc["tax"], doc["total"]) == ("11.05", "20", "2.21", "13.26")


def _next_number() -> str:
    """The number the commands give the next invoice: dated today (the fixture's one is dated 2026-11-03), so the
    second of 2026, or the first of a later year."""
    year = this_year()
    return "INV-2026-000002" if year == 2026 else f"INV-{year}-000001"


def _check_finalized_one(doc: dict[str, Any], world: World) -> None:
    assert (doc["number"], doc["status"], doc["customer"]["external_id"], doc["total"]) == (
        _next_number(), "finalized", "beta", "10.00"
    )


def _check_voided(doc: dict[str, Any], world: World) -> None:
    assert (doc["number"], doc["status"], doc["total"]) == ("INV-2026-000001", "void", "13.26")


def _check_credited(doc: dict[str, Any], world: World) -> None:
    assert (doc["kind"], doc["refers_to"], doc["reason"], doc["total"]) == (
        "credit_note", "INV-2026-000001", "outage", "2.00"
    )


def _check_validated(doc: dict[str, Any], world: World) -> None:
    assert [(p["code"], p["version"], p["subscription"]["fee"]) for p in doc["data"]] == [
        ("pro", 1, "30.00"),
        ("starter", 1, "10.00"),
        ("team", 1, "10.00"),
    ]
    assert [p["subscription"]["seats"] for p in doc["data"]] == [False, False, True]


def _check_plan(doc: dict[str, Any], world: World) -> None:
    assert (doc["code"], doc["versions"], doc["currency"]) == ("starter", [1], "USD")
    assert doc["charges"][0]["tiers"] == [
        {"up_to": "3", "unit_amount": "0", "flat_amount": "0"},
        {"up_to": None, "unit_amount": "0.25", "flat_amount": "0"},
    ]
    assert doc["thresholds"] == [{"meter": "api_calls", "allowance": "5", "spend_cap": None, "levels": [80, 100],
                                  "hard_limit": False}]


def _check_quote(doc: dict[str, Any], world: World) -> None:
    assert [line["amount"] for line in doc["lines"]] == ["10.00", "0.75", "0.30"]
    assert doc["total"] == "11.05"


def _check_run(doc: dict[str, Any], world: World) -> None:
    # acme's invoice is issued: left alone; beta's draft is already right
    assert doc.get("id", 1) == 1  # (the first run recorded; a stored report has no id of its own)
    assert (doc["label"], doc["created"], doc["unchanged"], doc["issued_untouched"]) == ("2026-10", 0, 1, 1)
    assert doc["events"] == {"accepted": 10, "rated": 10, "unbilled": 0}
    assert (doc["totals"], doc["finalized"]) == ({"USD": "10.00"}, [])


def _after_two_runs(*args: str) -> Any:
    """``args``, after ``billing run --period 2026-10`` and ``billing invoices finalize --period 2026-10``."""

    def prepared(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        for command in (["run", "--period", "2026-10"], ["invoices", "finalize", "--period", "2026-10"]):
            result = runner.invoke(app, command)
            assert result.exit_code == 0, (command, result.stdout, result.stderr)
        return list(args)

    return prepared


def _check_runs(doc: dict[str, Any], world: World) -> None:
    finalize, run = doc["data"]  # the latest first
    assert doc["has_more"] is False
    assert (finalize["id"], finalize["finalize"], finalize["source"], finalize["outcome"]) == (2, True, "cli", "completed")
    assert finalize["actor"] == getpass.getuser() and finalize["error"] is None
    assert (finalize["report"]["finalized"], finalize["report"]["totals"]) == ([_next_number()], {"USD": "10.00"})
    assert (run["id"], run["finalize"], run["customer"], run["shard"]) == (1, False, None, None)
    _check_run(run["report"], world)
    assert run["started_at"].endswith("Z") and run["finished_at"] >= run["started_at"]


def _check_first_run(doc: dict[str, Any], world: World) -> None:
    assert (doc["id"], doc["label"], doc["period"], doc["outcome"]) == (
        1, "2026-10", {"start": "2026-10-01", "end": "2026-11-01"}, "completed"
    )
    _check_run(doc["report"], world)


def _ingest(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    when = NOON.isoformat().replace("+00:00", "Z")
    lines = [
        {"id": "now-1", "customer": "acme", "meter": "api_calls", "timestamp": when},
        {"id": "now-1", "customer": "acme", "meter": "api_calls", "timestamp": when},
        {"id": "now-2", "customer": "acme", "meter": "compute_minutes", "timestamp": when, "value": "1.5"},
        {"id": "now-3", "customer": "nobody", "meter": "api_calls", "timestamp": when},
    ]
    path = world.tmp / "events.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return ["ingest", str(path), "--json"]


def _check_ingested(doc: dict[str, Any], world: World) -> None:
    rejects = world.tmp / "events.jsonl.rejected.jsonl"
    assert doc == {"accepted": 2, "duplicates": 1, "rejected": 1, "rejects": str(rejects)}
    assert json.loads(rejects.read_text(encoding="utf-8"))["line"] == 4


def _check_notifications(doc: dict[str, Any], world: World) -> None:
    assert [(n["kind"], n["level"], n["status"]) for n in doc["data"]] == [
        ("usage.threshold_crossed", 80, "pending"),
        ("usage.threshold_crossed", 100, "pending"),
        ("invoice.finalized", None, "pending"),
    ]
    crossing = doc["data"][0]
    assert (crossing["threshold"], crossing["subscription_id"]) == ("usage:api_calls", world.acme_subscription)
    assert (crossing["payload"]["value"], crossing["payload"]["limit"], crossing["payload"]["level_value"]) == ("6", "5", "4")


def _check_delivered(doc: dict[str, Any], world: World) -> None:
    # nowhere to send them: no webhook URL, no SMTP server
    assert doc == {"sent": 0, "retrying": 0, "dead": 0, "attempts": 0, "waiting": 3, "errors": []}


def _lower_limit(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from billing.thresholds import set_limit

    set_limit(world.engine, world.catalog, "beta", meter="api_calls", allowance="2")
    return ["thresholds", "check", "--period", "2026-10", "--json"]


def _check_thresholds(doc: dict[str, Any], world: World) -> None:
    # acme's invoice of October is issued: not evaluated; beta's 2 calls reach 80 % and 100 % of its own 2
    assert (doc["subscriptions"], doc["evaluations"]) == (1, 1)
    assert doc["issued"] == [{"customer": "acme", "period": "2026-10"}]
    assert [(c["customer"], c["level"], c["value"], c["limit"], c["unit"]) for c in doc["created"]] == [
        ("beta", 80, "2", "2", "call"),
        ("beta", 100, "2", "2", "call"),
    ]


def _check_keys(doc: dict[str, Any], world: World) -> None:
    (key,) = doc["data"]
    assert (key["id"], key["name"], key["customer"], key["revoked_at"]) == (1, "ci", None, None)
    assert key["prefix"] == list_api_keys(world.engine)[0].prefix and "secret" not in key


def _check_revoked_key(doc: dict[str, Any], world: World) -> None:
    assert (doc["id"], doc["name"]) == (1, "ci") and doc["revoked_at"].endswith("Z")
    assert list_api_keys(world.engine)[0].revoked_at is not None


def _dead_notification(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from billing.notify import list_notifications

    first = list_notifications(world.engine)[0]
    with world.engine.begin() as connection:
        connection.execute(
            text("UPDATE notifications SET status = 'dead', attempts = 8 WHERE id = :id"), {"id": first.id}
        )
    world.notes["dead"] = first.id
    return ["notifications", "retry", first.id, "--json"]


def _check_retried(doc: dict[str, Any], world: World) -> None:
    assert (doc["id"], doc["status"], doc["attempts"]) == (world.notes["dead"], "pending", 0)


def _check_limit(doc: dict[str, Any], world: World) -> None:
    assert doc == {"customer": "beta", "threshold": "spend", "kind": "spend", "meter": None, "limit": "250.50"}


def _check_new_key(doc: dict[str, Any], world: World) -> None:
    assert (doc["id"], doc["name"], doc["customer"]) == (2, "deploy", "acme")
    assert doc["secret"].startswith(doc["prefix"])


def _check_metrics(doc: dict[str, Any], world: World) -> None:
    (usd,) = doc["data"]
    # two subscriptions at 10.00; October billed: acme's finalized invoice, 11.05 before tax
    assert (usd["period"], usd["currency"], usd["customers_end"], usd["mrr_end"]) == ("2026-10", "USD", "2", "20.00")
    assert usd["billed_revenue"] == "11.05"


def _check_cohorts(doc: dict[str, Any], world: World) -> None:
    (october,) = doc["data"]
    # acme, first billed in October (11.05 before tax): one cohort of one, its own month only
    assert (october["cohort"], october["currency"], october["customers"], october["revenue"]) == (
        "2026-10",
        "USD",
        "1",
        "11.05",
    )
    assert [(p["period"], p["logo_retention"], p["revenue_retention"]) for p in october["periods"]] == [
        ("2026-10", "100.0", "100.0")
    ]


def _check_margin(doc: dict[str, Any], world: World) -> None:
    # acme's issued October invoice (beta's is a draft): api_calls 6 units 0.75, compute_minutes 20 units 0.30,
    # plan starter 10.00 + 0.75 + 0.30 = 11.05; the catalog declares no cost: no cost figures
    rows = [(r["scope"], r["key"], r["units"], r["revenue"], r["cost"], r["markup"]) for r in doc["data"]]
    assert rows == [
        ("meter", "api_calls", "6", "0.75", "n/a", "n/a"),
        ("meter", "compute_minutes", "20", "0.30", "n/a", "n/a"),
        ("plan", "starter", "", "11.05", "n/a", "n/a"),
    ]


def _check_revenue(doc: dict[str, Any], world: World) -> None:
    (usd,) = doc["data"]
    # acme's issued October invoice: the fee (in arrears) and the usage all serve October: 11.05 billed and
    # recognized, nothing deferred (beta's invoice is a draft)
    assert (usd["period"], usd["billed"], usd["recognized"], usd["deferred_closing"]) == (
        "2026-10",
        "11.05",
        "11.05",
        "0.00",
    )


def _check_risk(doc: dict[str, Any], world: World) -> None:
    beta, acme = doc["data"]
    # beta's last event is on 10-11 (Berlin): 11-01 − 10-12 = 20 idle days ≥ 14: inactive, 3 points, at risk (≥ 3);
    # its 2 calls of 5 included are 40 %, above the 10 % of low adoption
    assert (beta["customer"], beta["score"], beta["at_risk"]) == ("beta", 3, True)
    assert [(r["rule"], r["detail"], r["points"]) for r in beta["reasons"]] == [
        ("inactive", "no event for 20 days", 3)
    ]
    # acme: last event 10-20, 11 idle days; 6 calls of 5 included reached 100 %: an expansion signal, no risk
    assert (acme["customer"], acme["score"], acme["at_risk"], acme["reasons"]) == ("acme", 0, False, [])
    assert acme["expansion_signals"] == ["usage:api_calls"]


def _check_unbilled(doc: dict[str, Any], world: World) -> None:
    assert (doc["accepted"], doc["rated"], doc["unbilled_events"], doc["unbilled"]) == (10, 10, 0, [])


def _check_acme_usage(doc: dict[str, Any], world: World) -> None:
    assert (doc["customer"], doc["label"], doc["timezone"]) == ("acme", "2026-10", "UTC")
    assert [(m["meter"], m["quantity"], m["events"]) for m in doc["meters"]] == [
        ("api_calls", "6", 6),
        ("compute_minutes", "20", 2),
    ]
    (threshold,) = doc["thresholds"]
    assert (threshold["value"], threshold["limit"], threshold["percent"]) == ("6", "5", "120.0")
    assert threshold["reached"] == threshold["notified"] == [80, 100]
    preview = doc["preview"]
    assert [line["amount"] for line in preview["lines"]] == ["10.00", "0.75", "0.30"]
    assert (preview["subtotal"], preview["tax"], preview["total"]) == ("11.05", "2.21", "13.26")


def _check_beta_usage(doc: dict[str, Any], world: World) -> None:
    assert (doc["customer"], doc["timezone"], doc["period"]) == (
        "beta", "Europe/Berlin", {"start": "2026-10-01", "end": "2026-11-01"}
    )
    assert [line["amount"] for line in doc["preview"]["lines"]] == ["10.00", "0.00", "0.00"]
    assert doc["preview"]["total"] == "10.00"


def _check_entitlements(doc: dict[str, Any], world: World) -> None:
    """acme's current period (whichever it is today): its allowance of 5 calls only alerts, so nothing blocks."""
    assert (doc["customer"], doc["timezone"]) == ("acme", "UTC")
    calls, minutes = doc["entitlements"]
    assert (calls["meter"], calls["limit"], calls["hard_limit"], calls["blocked"]) == ("api_calls", "5", False, False)
    assert Decimal(calls["remaining"]) == max(Decimal(5) - Decimal(calls["used"]), Decimal(0))
    assert (minutes["meter"], minutes["limit"], minutes["remaining"]) == ("compute_minutes", None, None)
    assert calls["resets_at"].endswith("T00:00:00Z") and calls["credit_balance"] == "0.00"


def _stripe(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from tests.billing.test_stripe import API_KEY, FakeStripe

    fake = FakeStripe().start()
    world.cleanups.append(fake.stop)
    world.notes["stripe"] = fake
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    monkeypatch.setenv("BILLING_STRIPE_API_BASE", fake.url)
    get_settings.cache_clear()
    return ["stripe", "sync", "--json"]


def _portal_link(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("BILLING_PORTAL_SECRET", "s" * 32)
    monkeypatch.setenv("BILLING_PUBLIC_URL", "https://billing.example.com")
    get_settings.cache_clear()
    return ["portal", "link", "acme", "--days", "3", "--json"]


def _check_portal_link(doc: dict[str, Any], world: World) -> None:
    assert (doc["object"], doc["customer"]) == ("portal_link", "acme")
    assert doc["url"].startswith("https://billing.example.com/portal/link/")
    expires = dt.datetime.fromisoformat(doc["expires_at"].replace("Z", "+00:00"))
    # three days from now, to the minute of the command's run
    assert abs(expires - dt.datetime.now(dt.UTC) - dt.timedelta(days=3)) < dt.timedelta(minutes=5)


def _check_revoked(doc: dict[str, Any], world: World) -> None:
    assert (doc["object"], doc["customer"]) == ("portal_link_revocation", "acme")
    revoked = dt.datetime.fromisoformat(doc["revoked_at"].replace("Z", "+00:00"))
    assert dt.timedelta(0) <= dt.datetime.now(dt.UTC) - revoked < dt.timedelta(minutes=5)


def _check_synced(doc: dict[str, Any], world: World) -> None:
    fake = world.notes["stripe"]
    assert (doc["synced"], doc["failed"]) == (1, 0)
    (pushed,) = doc["invoices"]
    assert (pushed["invoice_number"], pushed["customer"], pushed["total"], pushed["step"]) == (
        "INV-2026-000001", "acme", "13.26", "finalized"
    )
    assert pushed["ok"] is True and pushed["stripe_invoice_id"] == fake.of("invoice")[0]["id"]



def _override(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    deal = world.tmp / "deal.toml"
    deal.write_text('[[charges]]\nmeter = "api_calls"\nmodel = "per_unit"\nunit_amount = 0.05\n', encoding="utf-8")
    return ["subscriptions", "override", str(world.acme_subscription), str(deal), "--json"]


def _check_override(doc: dict[str, Any], world: World) -> None:
    keys = {"id", "subscription_id", "effective_from", "created_at", "subscription", "charges", "commitment", "thresholds"}
    keys.add("progressive_billing")
    assert set(doc) == keys
    # acme is invoiced through October: the first period not yet invoiced begins 1 November
    assert (doc["subscription_id"], doc["effective_from"]) == (world.acme_subscription, "2026-11-01")
    assert doc["charges"] == [{"meter": "api_calls", "model": "per_unit", "unit_amount": "0.05"}]
    assert (doc["subscription"], doc["commitment"], doc["thresholds"]) == (None, None, None)


def _overrides(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    overrides.set_override(world.engine, world.catalog, world.acme_subscription, {"commitment": {"minimum": Decimal(5)}})
    return ["subscriptions", "overrides", str(world.acme_subscription), "--json"]


def _check_overrides(doc: dict[str, Any], world: World) -> None:
    assert [(v["effective_from"], v["commitment"]) for v in doc["data"]] == [("2026-11-01", {"minimum": "5"})]


def _granted(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    credits.grant_credit(world.engine, "acme", Decimal("10.00"), "USD", reason="welcome")
    return []


def _check_grant(doc: dict[str, Any], world: World) -> None:
    assert (doc["kind"], doc["amount"], doc["remaining"], doc["usable"], doc["expires"], doc["reason"]) == (
        "free", "25.00", "25.00", True, "2099-01-01", "welcome"
    )


def _check_balance(doc: dict[str, Any], world: World) -> None:
    [usd] = doc["balances"]
    assert (doc["customer"], usd["currency"], usd["free"], usd["paid"], usd["balance"], usd["total"]) == (
        "acme", "USD", "10.00", "0.00", "0.00", "10.00"
    )


def _check_ledger(doc: dict[str, Any], world: World) -> None:
    assert [(e["kind"], e["account"], e["amount"]) for e in doc["data"]] == [
        ("grant", "customer", "10.00"), ("grant", "promotion", "-10.00")
    ]


def _paid(world: World, monkeypatch: pytest.MonkeyPatch) -> int:
    """A 5.00 transfer against acme's 13.26."""
    from billing import payments

    return payments.record_payment(
        world.engine, "INV-2026-000001", Decimal("5.00"), method="bank_transfer", received_on=dt.date(2026, 11, 10)
    ).id


def _check_recorded(doc: dict[str, Any], world: World) -> None:
    assert (doc["invoice"], doc["amount"], doc["applied"], doc["to_balance"], doc["method"], doc["reference"]) == (
        "INV-2026-000001", "20.00", "13.26", "6.74", "card", "T-1"
    )
    assert (doc["received_on"], doc["status"], doc["reversed_on"]) == ("2026-11-10", "succeeded", None)


def _check_payments(doc: dict[str, Any], world: World) -> None:
    assert [(p["invoice"], p["amount"], p["status"]) for p in doc["data"]] == [("INV-2026-000001", "5.00", "succeeded")]


def _reverse(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return ["payments", "reverse", str(_paid(world, monkeypatch)), "--reason", "bounced", "--date", "2026-11-12", "--json"]


def _check_reversed(doc: dict[str, Any], world: World) -> None:
    assert (doc["status"], doc["reversed_on"], doc["reversal_reason"], doc["balance_recovered"]) == (
        "reversed", "2026-11-12", "bounced", "0.00"
    )


def _check_aging(doc: dict[str, Any], world: World) -> None:
    # acme's 13.26, due 2026-11-17, is 14 days overdue on 1 December; beta's invoice is a draft
    assert doc["as_of"] == "2026-12-01" and doc["buckets"] == ["current", "1-30", "31-60", "61-90", "90+"]
    assert [(r["customer"], r["1-30"], r["total"]) for r in doc["data"]] == [("acme", "13.26", "13.26")]
    assert [(r["currency"], r["invoices"], r["total"]) for r in doc["totals"]] == [("USD", 1, "13.26")]


def _check_low_balance(doc: dict[str, Any], world: World) -> None:
    assert (doc["currency"], doc["total"], doc["low_balance"], doc["auto_topup"]) == ("USD", "10.00", "20.00", None)


def _check_auto_topup(doc: dict[str, Any], world: World) -> None:
    # no paid credit, below 5.00: a top-up of 50.00 is issued at once, pending until its invoice is paid
    assert (doc["paid"], doc["pending"], doc["auto_topup"]) == ("0.00", "50.00", {"below": "5.00", "amount": "50.00"})
    [grant] = [g for g in doc["grants"] if g["kind"] == "paid"]
    assert (grant["amount"], grant["usable"], grant["invoice"][:4]) == ("50.00", False, "INV-")


def _coupon(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    coupons.create_coupon(
        world.engine, world.catalog, coupons.parse_coupon("WELCOME", percent="20", amount=None, currency=None, duration="once")
    )


def _create_coupon(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return ["coupons", "create", "TENOFF", "--amount", "10", "--currency", "USD", "--duration", "repeating",
            "--months", "3", "--plans", "starter", "--max-redemptions", "5", "--expires", "2030-01-01", "--json"]


def _check_created_coupon(doc: dict[str, Any], world: World) -> None:
    assert doc == {
        "code": "TENOFF", "percent_off": None, "amount_off": "10.00", "currency": "USD", "duration": "repeating",
        "months": 3, "plans": ["starter"], "max_redemptions": 5, "expires_on": "2030-01-01",
        "created_at": doc["created_at"], "issued": 0, "applied": 0, "redeemed": 0, "redemption_rate": None,
    }


def _hand_coupon(action: str) -> Any:
    def args(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        _coupon(world, monkeypatch)
        return ["coupons", action, "WELCOME", "--customer", "acme", "--json"]

    return args


def _check_held_coupon(applied: bool) -> Any:
    def check(doc: dict[str, Any], world: World) -> None:
        assert set(doc) == {"coupon", "customer", "issued_at", "applied_on", "redeemed_at"}
        assert (doc["coupon"], doc["customer"], doc["redeemed_at"]) == ("WELCOME", "acme", None)
        assert (doc["applied_on"] is not None) == applied

    return check


def _list_coupons(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    _coupon(world, monkeypatch)
    coupons.issue_coupon(world.engine, "WELCOME", "beta")
    return ["coupons", "list", "--json"]


def _check_coupons(doc: dict[str, Any], world: World) -> None:
    assert [(c["code"], c["percent_off"], c["issued"], c["redemption_rate"]) for c in doc["data"]] == [
        ("WELCOME", "20", 1, "0.0000")  # issued to beta, not redeemed: 0 / 1
    ]


def _show_coupon(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    _coupon(world, monkeypatch)
    coupons.apply_coupon(world.engine, "WELCOME", "beta")
    return ["coupons", "show", "WELCOME", "--json"]


def _check_coupon(doc: dict[str, Any], world: World) -> None:
    assert (doc["code"], doc["issued"], doc["applied"], doc["redeemed"]) == ("WELCOME", 1, 1, 0)
    assert [(c["customer"], c["redeemed_at"]) for c in doc["customers"]] == [("beta", None)]


def _flag_beta(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from billing import approval

    approval.set_customer_review(world.engine, "beta", True, by="ops", note="new contract")
    return ["invoices", "pending-approval", "--period", "2026-10", "--json"]


def _check_pending(doc: dict[str, Any], world: World) -> None:
    assert [(d["invoice_id"], d["customer"], d["awaiting_approval"], [r["code"] for r in d["reasons"]])
            for d in doc["data"]] == [(2, "beta", True, ["customer_review"])]


def _check_approved(doc: dict[str, Any], world: World) -> None:
    [draft] = doc["data"]
    assert (draft["invoice_id"], draft["approved"], draft["approved_by"], draft["reasons"]) == (2, True, "controller", [])


def _check_review(doc: dict[str, Any], world: World) -> None:
    assert (doc["customer"], doc["review"], doc["note"], doc["flagged_by"]) == ("beta", True, "new contract", "ops")


def _export(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return ["export", "--period", "2026-11", "--to", str(world.tmp / "export"), "--json"]


def _check_export(doc: dict[str, Any], world: World) -> None:
    # INV-2026-000001 (acme's October, issued on 3 November): Dr receivable 13.26; Cr revenue 11.05 and tax 2.21
    assert doc["period"] == "2026-11" and doc["balanced"] is True
    assert [(f["name"], f["rows"]) for f in doc["files"]][::6] == [("invoices.csv", 1), ("journal.csv", 5)]
    assert doc["journal"] == {"USD": {"debit": "13.26", "credit": "13.26"}}


def _check_counters(doc: dict[str, Any], world: World) -> None:
    # the world's usage, counted as it was stored, recounted from the events: nothing differs
    assert doc["differ"] == [] and doc["counters"] >= 1


CASES = [
    Case(("db", "check"), _fixed("db", "check", "--json"), _check_counters),
    Case(("export",), _export, _check_export),
    Case(("invoices", "pending-approval"), _flag_beta, _check_pending),
    Case(("invoices", "approve"), _fixed("invoices", "approve", "2", "--by", "controller", "--json"), _check_approved),
    Case(
        ("customers", "review"),
        _fixed("customers", "review", "beta", "--on", "--note", "new contract", "--by", "ops", "--json"),
        _check_review,
    ),
    Case(
        ("credits", "grant"),
        _fixed("credits", "grant", "acme", "25.00", "--currency", "USD", "--expires", "2099-01-01", "--reason",
               "welcome", "--json"),
        _check_grant,
    ),
    Case(("credits", "balance"), lambda w, mp: [*_granted(w, mp), "credits", "balance", "acme", "--json"], _check_balance),
    Case(("credits", "ledger"), lambda w, mp: [*_granted(w, mp), "credits", "ledger", "acme", "--json"], _check_ledger),
    Case(
        ("credits", "low-balance"),
        lambda w, mp: [*_granted(w, mp), "credits", "low-balance", "acme", "--currency", "USD", "--below", "20.00",
                       "--json"],
        _check_low_balance,
    ),
    Case(
        ("credits", "auto-topup"),
        _fixed("credits", "auto-topup", "acme", "--currency", "USD", "--below", "5.00", "--amount", "50.00", "--json"),
        _check_auto_topup,
    ),
    Case(
        ("payments", "record"),
        _fixed("payments", "record", "INV-2026-000001", "--amount", "20.00", "--date", "2026-11-10", "--method", "card",
               "--reference", "T-1", "--json"),
        _check_recorded,
    ),
    Case(("payments", "list"), lambda w, mp: [_paid(w, mp) and "payments", "list", "--json"], _check_payments),
    Case(("payments", "reverse"), _reverse, _check_reversed),
    Case(("invoices", "aging"), _fixed("invoices", "aging", "--as-of", "2026-12-01", "--json"), _check_aging),
    Case(("coupons", "create"), _create_coupon, _check_created_coupon),
    Case(("coupons", "issue"), _hand_coupon("issue"), _check_held_coupon(applied=False)),
    Case(("coupons", "apply"), _hand_coupon("apply"), _check_held_coupon(applied=True)),
    Case(("coupons", "list"), _list_coupons, _check_coupons),
    Case(("coupons", "show"), _show_coupon, _check_coupon),
    Case(("customers", "list"), _fixed("customers", "list", "--json"), _check_customers),
    Case(
        ("customers", "add"),
        _fixed("customers", "add", "gamma", "--name", "Gamma", "--email", "ap@gamma.example", "--currency", "EUR",
               "--webhook-url", "https://hooks.example/gamma", "--json"),
        _check_added,
    ),
    Case(("customers", "rotate-webhook-secret"), _rotate, _check_rotated),
    Case(
        ("customers", "update"),
        _fixed("customers", "update", "beta", "--name", "Beta AG", "--country", "DE", "--tax-id", "DE136695976",
               "--json"),
        _check_updated,
    ),
    Case(("customers", "archive"), _archive("archive"), _check_archived(True)),
    Case(("customers", "unarchive"), _archive("unarchive"), _check_archived(False)),
    Case(("customers", "import"), _import, _check_imported, exit_code=1),
    Case(("subscribe",), _fixed("subscribe", "beta", "pro", "--start", "2026-11-01", "--json"), _check_subscribed),
    Case(
        ("subscribe",),
        _fixed("subscribe", "beta", "team", "--start", "2026-11-01", "--quantity", "3", "--json"),
        _check_subscribed_seats,
    ),
    Case(("subscriptions", "quantity"), _seats, _check_seats),
    Case(
        ("subscriptions", "cancel"),
        lambda world, mp: ["subscriptions", "cancel", str(world.beta_subscription), "--date", "2026-12-01", "--json"],
        _check_cancelled,
    ),
    Case(
        ("subscriptions", "change"),
        lambda world, mp: ["subscriptions", "change", str(world.beta_subscription), "pro", "--date", "2026-12-01",
                           "--json"],
        _check_changed,
    ),
    Case(("subscriptions", "list"), _fixed("subscriptions", "list", "--json"), _check_subscriptions),
    Case(("subscriptions", "override"), _override, _check_override),
    Case(("subscriptions", "overrides"), _overrides, _check_overrides),
    Case(("invoices", "list"), _fixed("invoices", "list", "--json"), _check_invoices),
    Case(("invoices", "show"), _fixed("invoices", "show", "INV-2026-000001", "--json"), _check_invoice),
    Case(("invoices", "finalize"), _fixed("invoices", "finalize", "2", "--json"), _check_finalized_one),
    Case(
        ("invoices", "finalize"),
        _fixed("invoices", "finalize", "--period", "2026-10", "--json"),
        lambda doc, world: (
            doc == {"finalized": [_next_number()], "awaiting_approval": [], "left_as_drafts": []} or pytest.fail(str(doc))
        ),
    ),
    Case(("invoices", "void"), _fixed("invoices", "void", "INV-2026-000001", "--json"), _check_voided),
    Case(
        ("invoices", "credit"),
        _fixed("invoices", "credit", "INV-2026-000001", "--amount", "2", "--reason", "outage", "--json"),
        _check_credited,
    ),
    Case(("plans", "validate"), lambda world, mp: ["plans", "validate", str(world.catalog_path), "--json"], _check_validated),
    Case(("plans", "show"), _fixed("plans", "show", "starter", "--json"), _check_plan),
    Case(
        ("quote",),
        _fixed("quote", "--plan", "starter", "--usage", "api_calls=6", "--usage", "compute_minutes=20", "--period",
               "2026-10", "--json"),
        _check_quote,
    ),
    Case(("run",), _fixed("run", "--period", "2026-10", "--json"), _check_run),
    Case(("runs", "list"), _after_two_runs("runs", "list", "--json"), _check_runs),
    Case(("runs", "show"), _after_two_runs("runs", "show", "1", "--json"), _check_first_run),
    Case(("ingest",), _ingest, _check_ingested, exit_code=1),
    Case(("notifications", "list"), _fixed("notifications", "list", "--json"), _check_notifications),
    Case(("notifications", "deliver"), _fixed("notifications", "deliver", "--json"), _check_delivered),
    Case(("thresholds", "check"), _lower_limit, _check_thresholds),
    Case(("apikeys", "list"), _fixed("apikeys", "list", "--json"), _check_keys),
    Case(("apikeys", "revoke"), _fixed("apikeys", "revoke", "1", "--json"), _check_revoked_key),
    Case(("notifications", "retry"), _dead_notification, _check_retried),
    Case(
        ("customers", "set-limit"), _fixed("customers", "set-limit", "beta", "--spend-cap", "250.50", "--json"),
        _check_limit,
    ),
    Case(
        ("apikeys", "create"), _fixed("apikeys", "create", "--name", "deploy", "--customer", "acme", "--json"), _check_new_key
    ),
    Case(("metrics",), _fixed("metrics", "--period", "2026-10", "--json"), _check_metrics),
    Case(("metrics", "cohorts"), _fixed("metrics", "cohorts", "--json"), _check_cohorts),
    Case(("metrics", "margin"), _fixed("metrics", "margin", "--period", "2026-10", "--json"), _check_margin),
    Case(("metrics", "revenue"), _fixed("metrics", "revenue", "--period", "2026-10", "--json"), _check_revenue),
    Case(("metrics", "risk"), _fixed("metrics", "risk", "--period", "2026-10", "--json"), _check_risk),
    Case(("usage", "unbilled"), _fixed("usage", "unbilled", "--period", "2026-10", "--json"), _check_unbilled),
    Case(("usage", "show"), _fixed("usage", "acme", "--period", "2026-10", "--json"), _check_acme_usage),
    Case(("usage", "show"), _fixed("usage", "show", "beta", "--period", "2026-10", "--json"), _check_beta_usage),
    Case(("stripe", "sync"), _stripe, _check_synced),
    Case(("entitlements",), _fixed("entitlements", "acme", "--json"), _check_entitlements),
    Case(("portal", "link"), _portal_link, _check_portal_link),
    Case(("portal", "revoke"), _fixed("portal", "revoke", "acme", "--json"), _check_revoked),
]


@pytest.mark.db
@pytest.mark.parametrize("case", CASES, ids=[" ".join(case.path) for case in CASES])
def test_every_data_command_prints_one_json_document(case: Case, world: World, monkeypatch: pytest.MonkeyPatch):
    args = case.args(world, monkeypatch)
    result = runner.invoke(app, args)
    assert result.exit_code == case.exit_code, (args, result.stdout, result.stderr)
    document = json.loads(result.stdout)  # all of standard output: one document, nothing else
    case.check(document, world)
    assert [t for t in _strings(document) if re.fullmatch(r"\d{4}-\d\d-\d\dT[^ ]*\+00:00", t)] == []  # UTC: "Z"


def _strings(document: Any) -> list[str]:
    """Every string of a JSON document, values of nested objects and lists included."""
    if isinstance(document, str):
        return [document]
    values = document.values() if isinstance(document, dict) else document if isinstance(document, list) else []
    return [text for value in values for text in _strings(value)]


def _leaves(command: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        return [(path, command)]
    # a group that runs on its own (`billing metrics --period …`) is a command too
    own = [(path, command)] if getattr(command, "invoke_without_command", False) else []
    return own + [leaf for name, sub in sorted(subcommands.items()) for leaf in _leaves(sub, (*path, name))]


def test_every_command_that_prints_data_has_json_and_is_parsed_above():
    leaves = dict(leaf for name in COMMANDS for leaf in _leaves(load_command(name), (name,)))
    assert set(NO_DATA) <= set(leaves), "a command of NO_DATA is gone"
    without = sorted(path for path, command in leaves.items() if path not in NO_DATA and not any(
        "--json" in param.opts for param in command.params if param.param_type_name == "option"
    ))
    assert without == [], f"add --json to these commands, or list them in NO_DATA with why: {without}"
    assert {case.path for case in CASES} == set(leaves) - set(NO_DATA), "parse each data command's --json above"


# -- the API's names and values -------------------------------------------------------------------------------


def _api_key() -> Any:
    from billing.apikeys import ApiKey

    return ApiKey(id=1, name="tests", prefix="bk_test", customer=None, created_at=INGESTED, revoked_at=None)


def _cli_json(*args: str) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return json.loads(result.stdout)


@pytest.mark.db
def test_the_json_is_what_the_api_answers(world: World):
    from billing.api import routes_customers, routes_invoices, routes_plans, routes_runs
    from billing.api.schemas import BillingRunIn, InvoiceOut
    from billing.config import Settings
    from billing.invoicing import get_invoice, list_invoices
    from invoices.render import invoice_json

    engine, catalog = world.engine, world.catalog

    def dumped(model: Any) -> Any:
        return model.model_dump(mode="json")

    assert _cli_json("customers", "list")["data"] == [
        dumped(routes_customers.customer_out(c)) for c in customers.list_customers(engine)
    ]
    assert _cli_json("subscriptions", "list")["data"] == [
        dumped(routes_customers.subscription_out(s)) for s in customers.list_subscriptions(engine)
    ]
    assert _cli_json("invoices", "list")["data"] == [
        dumped(routes_invoices._summary(invoice)) for invoice in list_invoices(engine)
    ]
    assert _cli_json("invoices", "show", "1") == dumped(InvoiceOut.model_validate(invoice_json(get_invoice(engine, 1))))
    assert _cli_json("plans", "show", "starter") == dumped(routes_plans.plan_out(catalog, catalog.plan("starter")))

    cli_usage = _cli_json("usage", "acme", "--period", "2026-10")
    api_usage = dumped(routes_customers.get_usage("acme", engine, catalog, _api_key(), period="2026-10"))
    assert cli_usage.pop("as_of").endswith("Z") and api_usage.pop("as_of").endswith("Z")
    assert cli_usage == api_usage

    cli_run = _cli_json("run", "--period", "2026-10")
    settings = Settings(database_url=str(engine.url.render_as_string(hide_password=False)), catalog=str(world.catalog_path))
    api_run = dumped(routes_runs.create_billing_run(BillingRunIn(period="2026-10"), engine, catalog, settings, _api_key(),
                                                      Response()))
    assert (cli_run.pop("id"), api_run.pop("id")) == (1, 2)  # each recorded
    assert cli_run == api_run
    for run_id in (1, 2):
        assert _cli_json("runs", "show", str(run_id)) == dumped(routes_runs.get_billing_run(run_id, engine, _api_key()))


# -- billing usage CUSTOMER -----------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines()]


@pytest.mark.db
def test_usage_shows_each_meter_the_thresholds_and_the_upcoming_invoice(world: World):
    result = runner.invoke(app, ["usage", "acme", "--period", "2026-10"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    lines = _words(result.stdout)
    assert lines[0].startswith("acme: usage of 2026-10 so far (as of ") and lines[0].endswith("USD, timezone UTC")
    for expected in (
        "API calls 6 call 6",
        "Compute minutes 20 minute 2",
        "usage:api_calls 6 5 120.0 80 %, 100 % 80 %, 100 %",
        "Starter subscription, 2026-10 (in arrears) 1 10.00",
        "API calls 6 call 0.75",
        "Compute minutes 20 minute 0.30",
        "Subtotal 11.05",
        "Tax 20 % of 11.05 2.21",
        "Total 13.26",
    ):
        assert expected in lines, (expected, result.stdout)
    assert runner.invoke(app, ["usage", "show", "acme", "--period", "2026-10"]).stdout.splitlines()[1:] == (
        result.stdout.splitlines()[1:]
    )


@pytest.mark.db
def test_usage_defaults_to_the_current_period_in_the_customers_timezone(world: World):
    # this month so far: 4 calls (3 free, 1 × 0.25) and the fee: 10.25, tax 20 % 2.05, total 12.30
    calls = [
        {"id": f"this-month-{i}", "customer": "acme", "meter": "api_calls", "timestamp": NOON.isoformat()}
        for i in range(4)
    ]
    assert ingest_batch(world.engine, world.catalog, calls).accepted == 4

    def current(timezone: str) -> str:
        return month_of(dt.datetime.now(ZoneInfo(timezone)).date()).label

    before = {"acme": current("UTC"), "beta": current("Europe/Berlin")}
    acme, beta = _cli_json("usage", "acme"), _cli_json("usage", "beta")
    after = {"acme": current("UTC"), "beta": current("Europe/Berlin")}
    assert acme["label"] in (before["acme"], after["acme"]) and beta["label"] in (before["beta"], after["beta"])
    assert [(m["meter"], m["quantity"]) for m in acme["meters"]] == [("api_calls", "4"), ("compute_minutes", "0")]
    preview = acme["preview"]
    assert [line["amount"] for line in preview["lines"]] == ["10.00", "0.25", "0.00"]
    assert (preview["subtotal"], preview["tax"], preview["total"]) == ("10.25", "2.05", "12.30")
    assert acme["thresholds"][0]["reached"] == [80]  # 4 of 5 calls


@pytest.mark.db
def test_usage_refuses_a_bad_period_and_an_unknown_customer_and_keeps_its_subcommands(world: World):
    bad = runner.invoke(app, ["usage", "acme", "--period", "2026-13"])
    assert bad.exit_code == 2 and "--period: expected a month as YYYY-MM, got '2026-13'" in bad.stderr
    unknown = runner.invoke(app, ["usage", "nobody"])
    assert unknown.exit_code == 1 and "unknown customer 'nobody'" in unknown.stderr
    # `unbilled` is the subcommand; a customer of that name is shown with `usage show`
    assert runner.invoke(app, ["usage", "unbilled", "--period", "2026-10", "--json"]).exit_code == 0
    customers.create_customer(world.engine, "unbilled", "Unbilled Inc", None, "USD", timezone="UTC")
    shown = _cli_json("usage", "show", "unbilled", "--period", "2026-10")
    assert (shown["customer"], shown["meters"], shown["preview"]["total"]) == ("unbilled", [], "0.00")
    assert "CUSTOMER [--period P]" in runner.invoke(app, ["usage", "--help"]).stdout
