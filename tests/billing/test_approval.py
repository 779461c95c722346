"""Approval before issuing: drafts above the limit of their currency, holding late usage, or of a customer flagged
for review wait for an approval before the scheduler (or a finalization) issues them; an approval holds for the
content approved only. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from billing import approval
from billing.approval import ApprovalPolicy, ApprovalRequiredError, Reason
from billing.cli import app as cli_app
from billing.config import Settings, get_settings
from billing.core.periods import Period, month
from billing.customers import create_customer, subscribe
from billing.db.engines import dispose_engines
from billing.errors import ConflictError, NotFoundError
from billing.ingestion import ingest_batch
from billing.invoicing import finalize_invoice, list_invoices
from billing.run import finalize_period, run_billing
from billing.scheduler import bill_closed_periods
from invoices.model import InvoiceStatus
from invoices.store import FinalizeSettings
from pricing_plans.loader import load_catalog_or_raise
from pricing_plans.models import Catalog

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

OCTOBER = month(2026, 10)
SEPTEMBER = month(2026, 9)
LIMIT = ApprovalPolicy(limits={"USD": Decimal("11.00")})  # 10.00 + 2 calls = 11.00 passes; 12.00 waits
NO_LIMIT = ApprovalPolicy()
SETTINGS = FinalizeSettings()


def at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), dt.UTC)


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    return load_catalog_or_raise(path)


def customer(engine: Engine, catalog: Catalog, external_id: str, calls: int, period: Period = OCTOBER) -> None:
    """A customer on ``starter`` from ``period``'s start with ``calls`` API calls on its 15th: 10.00 + calls × 0.50."""
    create_customer(engine, external_id, f"{external_id} Inc.", None, "USD", "UTC")
    subscribe(engine, catalog, external_id, "starter", period.start)
    calls_in(engine, catalog, external_id, calls, period.start + dt.timedelta(days=14), received=None)


def calls_in(
    engine: Engine, catalog: Catalog, external_id: str, calls: int, day: dt.date, *, received: dt.datetime | None,
    first: int = 0,
) -> None:
    events = [
        {"id": f"{external_id}-{day}-{first + i}", "customer": external_id, "meter": "api_calls",
         "timestamp": (at(day) + dt.timedelta(minutes=i)).isoformat()}
        for i in range(calls)
    ]
    if events:
        now = received or at(day) + dt.timedelta(minutes=calls)
        assert ingest_batch(engine, catalog, events, now=now).accepted == calls


def statuses(engine: Engine) -> list[tuple[str, str, str, str | None]]:
    return [(i.customer_id or "", f"{i.period_start:%Y-%m}", str(i.total), i.number) for i in list_invoices(engine)]


def cycle(engine: Engine, catalog: Catalog, day: dt.date, policy: ApprovalPolicy = LIMIT) -> list[str]:
    """The scheduler's billing cycle at noon UTC on ``day`` (no grace days): the numbers it issued."""
    return bill_closed_periods(engine, catalog, SETTINGS, 0, now=at(day), approval=policy).finalized


# -- the scheduler -----------------------------------------------------------------------------------------------


def test_a_draft_above_the_limit_waits_is_approved_then_the_scheduler_issues_it(engine, catalog):
    customer(engine, catalog, "acme", 4)  # 10.00 + 4 × 0.50 = 12.00 > 11.00
    customer(engine, catalog, "small", 2)  # 10.00 + 2 × 0.50 = 11.00: not above the limit
    assert cycle(engine, catalog, dt.date(2026, 11, 1)) == ["INV-2026-000001"]
    assert statuses(engine) == [("acme", "2026-10", "12.00", None), ("small", "2026-10", "11.00", "INV-2026-000001")]

    [waiting] = approval.awaiting_approval(engine, LIMIT)
    assert waiting.draft.customer_external_id == "acme"
    assert [(r.code, r.message) for r in waiting.reasons] == [
        (Reason.ABOVE_LIMIT, "total 12.00 USD is above the approval limit 11.00 USD")
    ]
    # the next hourly cycles leave it as it is
    assert cycle(engine, catalog, dt.date(2026, 11, 2)) == []

    approved = approval.approve(engine, waiting.draft.invoice_id, LIMIT, by="controller", note="checked")
    assert approved.approved and not approved.awaiting and approved.approval.approved_by == "controller"
    assert approval.awaiting_approval(engine, LIMIT) == []
    assert cycle(engine, catalog, dt.date(2026, 11, 2)) == ["INV-2026-000002"]
    assert statuses(engine)[0] == ("acme", "2026-10", "12.00", "INV-2026-000002")


def test_a_run_that_changes_an_approved_draft_takes_the_approval_back(engine, catalog):
    customer(engine, catalog, "acme", 4)
    assert cycle(engine, catalog, dt.date(2026, 11, 1)) == []
    [waiting] = approval.awaiting_approval(engine, LIMIT)
    approval.approve(engine, waiting.draft.invoice_id, LIMIT, by="controller")
    # a call of October arrives before the cycle issues the draft: the cycle's run rewrites it (12.50)
    calls_in(engine, catalog, "acme", 1, dt.date(2026, 10, 20), received=at(dt.date(2026, 11, 1), 13), first=10)
    assert cycle(engine, catalog, dt.date(2026, 11, 2)) == []
    [again] = approval.awaiting_approval(engine, LIMIT)
    assert again.draft.total == Decimal("12.50") and again.outdated and not again.approved
    assert again.draft.content_hash != waiting.draft.content_hash
    # approved again, as it is now: issued
    approval.approve(engine, again.draft.invoice_id, LIMIT, by="controller")
    assert cycle(engine, catalog, dt.date(2026, 11, 3)) == ["INV-2026-000001"]
    assert statuses(engine) == [("acme", "2026-10", "12.50", "INV-2026-000001")]


def test_a_run_that_leaves_an_approved_draft_as_it_was_keeps_the_approval(engine, catalog):
    customer(engine, catalog, "acme", 4)
    run_billing(engine, catalog, OCTOBER)
    [waiting] = approval.awaiting_approval(engine, LIMIT)
    approval.approve(engine, waiting.draft.invoice_id, LIMIT, by="controller")
    run_billing(engine, catalog, OCTOBER)  # the same usage: the same content
    assert approval.awaiting_approval(engine, LIMIT) == []
    assert cycle(engine, catalog, dt.date(2026, 11, 1)) == ["INV-2026-000001"]


def test_a_draft_holding_late_usage_waits_for_approval(engine, catalog):
    customer(engine, catalog, "acme", 2, SEPTEMBER)  # September: 10.00 + 1.00 = 11.00, issued
    run_billing(engine, catalog, SEPTEMBER, now=at(dt.date(2026, 10, 2)))
    assert finalize_period(engine, SEPTEMBER, SETTINGS, dt.date(2026, 10, 2), now=at(dt.date(2026, 10, 2))) == [
        "INV-2026-000001"
    ]
    # two calls of 20 September received on 5 October: late, billed on October's invoice (1.00)
    calls_in(engine, catalog, "acme", 2, dt.date(2026, 9, 20), received=at(dt.date(2026, 10, 5)), first=10)
    assert cycle(engine, catalog, dt.date(2026, 11, 1), NO_LIMIT) == []
    [waiting] = approval.awaiting_approval(engine, NO_LIMIT)
    assert waiting.draft.total == Decimal("11.00")  # October's fee 10.00 + late usage 2 × 0.50
    assert [(r.code, r.message) for r in waiting.reasons] == [(Reason.LATE_USAGE, "holds late usage of 2026-09")]
    # with late_usage = false in [approval], it would not wait
    assert approval.awaiting_approval(engine, ApprovalPolicy(late_usage=False)) == []

    approval.approve(engine, waiting.draft.invoice_id, NO_LIMIT, by="controller")
    assert cycle(engine, catalog, dt.date(2026, 11, 2), NO_LIMIT) == ["INV-2026-000002"]


def test_every_draft_of_a_customer_flagged_for_review_waits(engine, catalog):
    customer(engine, catalog, "acme", 0)  # 10.00: under any limit
    customer(engine, catalog, "other", 0)
    flag = approval.set_customer_review(engine, "acme", True, by="controller", note="disputed usage")
    assert flag is not None and approval.customer_review(engine, "acme") == flag
    assert cycle(engine, catalog, dt.date(2026, 11, 1)) == ["INV-2026-000001"]  # other's only
    [waiting] = approval.awaiting_approval(engine, LIMIT)
    assert [(r.code, r.message) for r in waiting.reasons] == [
        (Reason.CUSTOMER_REVIEW, "customer acme is flagged for review (by controller): disputed usage")
    ]
    # the flag cleared: the next cycle issues the draft
    assert approval.set_customer_review(engine, "acme", False, by="controller") is None
    assert cycle(engine, catalog, dt.date(2026, 11, 2)) == ["INV-2026-000002"]
    assert [n for *_, n in statuses(engine)] == ["INV-2026-000002", "INV-2026-000001"]


def test_reasons_add_up_and_an_unknown_customer_cannot_be_flagged(engine, catalog):
    customer(engine, catalog, "acme", 4)
    approval.set_customer_review(engine, "acme", True, by="controller")
    run_billing(engine, catalog, OCTOBER)
    [waiting] = approval.awaiting_approval(engine, LIMIT, period_start=OCTOBER.start, customer="acme")
    assert [r.code for r in waiting.reasons] == [Reason.ABOVE_LIMIT, Reason.CUSTOMER_REVIEW]
    assert approval.awaiting_approval(engine, LIMIT, period_start=SEPTEMBER.start) == []
    with pytest.raises(NotFoundError, match="no customer 'nobody'"):
        approval.set_customer_review(engine, "nobody", True, by="controller")


# -- finalizing by hand ------------------------------------------------------------------------------------------


def test_finalizing_a_waiting_draft_by_id_is_refused_until_it_is_approved(engine, catalog):
    customer(engine, catalog, "acme", 4)
    run_billing(engine, catalog, OCTOBER)
    [draft] = list_invoices(engine)
    with pytest.raises(ApprovalRequiredError) as refused:
        finalize_invoice(engine, draft.id, SETTINGS, dt.date(2026, 11, 3), now=at(dt.date(2026, 11, 3)), approval=LIMIT)
    assert str(refused.value) == (
        f"invoice {draft.id} waits for approval: total 12.00 USD is above the approval limit 11.00 USD; approve it "
        f"first with `billing invoices approve {draft.id}` (POST /v1/invoices/{draft.id}/approve); nothing was "
        "finalized"
    )
    assert list_invoices(engine)[0].status is InvoiceStatus.DRAFT
    approval.approve(engine, draft.id, LIMIT, by="controller")
    issued = finalize_invoice(engine, draft.id, SETTINGS, dt.date(2026, 11, 3), now=at(dt.date(2026, 11, 3)),
                              approval=LIMIT)
    assert issued.number == "INV-2026-000001"
    with pytest.raises(ConflictError, match="INV-2026-000001 is issued: only a draft is approved"):
        approval.approve(engine, draft.id, LIMIT, by="controller")


def test_finalizing_a_period_issues_the_others_and_approving_a_period_approves_what_waits(engine, catalog):
    customer(engine, catalog, "acme", 4)
    customer(engine, catalog, "big", 6)  # 13.00
    customer(engine, catalog, "small", 0)
    run_billing(engine, catalog, OCTOBER)
    day = dt.date(2026, 11, 3)
    assert finalize_period(engine, OCTOBER, SETTINGS, day, now=at(day), approval=LIMIT) == ["INV-2026-000001"]
    approved = approval.approve_period(engine, OCTOBER.start, LIMIT, by="controller", customer="big")
    assert [a.draft.customer_external_id for a in approved] == ["big"]
    assert finalize_period(engine, OCTOBER, SETTINGS, day, now=at(day), approval=LIMIT) == ["INV-2026-000002"]
    assert [a.draft.customer_external_id for a in approval.approve_period(engine, OCTOBER.start, LIMIT, by="c")] == [
        "acme"
    ]
    assert finalize_period(engine, OCTOBER, SETTINGS, day, now=at(day), approval=LIMIT) == ["INV-2026-000003"]


# -- the command and the API -------------------------------------------------------------------------------------


@pytest.fixture
def approval_config(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    catalog_path = tmp_path / "catalog.toml"
    catalog_path.write_text(CATALOG, encoding="utf-8")
    config = tmp_path / "config.toml"
    config.write_text(
        f'database_url = "{db_url}"\ncatalog = "{catalog_path}"\n\n[approval]\nlimits = {{ USD = "11.00" }}\n',
        encoding="utf-8",
    )
    for name in ("BILLING_DATABASE_URL", "BILLING_CATALOG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BILLING_CONFIG", str(config))
    get_settings.cache_clear()
    yield config
    dispose_engines()
    get_settings.cache_clear()


def test_the_commands_list_approve_and_flag(engine, catalog, approval_config):
    customer(engine, catalog, "acme", 4)
    customer(engine, catalog, "small", 0)
    run_billing(engine, catalog, OCTOBER)
    runner = CliRunner()
    listed = runner.invoke(cli_app, ["invoices", "pending-approval", "--period", "2026-10", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)["data"]
    assert (row["customer"], row["total"], row["awaiting_approval"], row["approved"]) == ("acme", "12.00", True, False)
    assert row["reasons"] == [
        {"code": "above_limit", "message": "total 12.00 USD is above the approval limit 11.00 USD"}
    ]
    refused = runner.invoke(cli_app, ["invoices", "finalize", str(row["invoice_id"])])
    assert refused.exit_code == 1 and "waits for approval" in refused.output

    flagged = runner.invoke(cli_app, ["customers", "review", "small", "--on", "--note", "new contract", "--by", "ops",
                                      "--json"])
    assert flagged.exit_code == 0, flagged.output
    assert json.loads(flagged.output)["review"] is True
    listed = runner.invoke(cli_app, ["invoices", "pending-approval", "--json"])
    assert [r["customer"] for r in json.loads(listed.output)["data"]] == ["acme", "small"]

    approved = runner.invoke(cli_app, ["invoices", "approve", str(row["invoice_id"]), "--by", "controller", "--json"])
    assert approved.exit_code == 0, approved.output
    [done] = json.loads(approved.output)["data"]
    assert (done["approved"], done["approved_by"], done["awaiting_approval"]) == (True, "controller", False)
    # the period's finalization issues acme's, leaves small's (flagged) and names it
    finalized = runner.invoke(cli_app, ["invoices", "finalize", "--period", "2026-10", "--json"])
    assert finalized.exit_code == 0, finalized.output
    answer = json.loads(finalized.output)
    assert len(answer["finalized"]) == 1 and len(answer["awaiting_approval"]) == 1
    usage = runner.invoke(cli_app, ["invoices", "approve"])
    assert usage.exit_code == 1 and "give either a draft id or --period" in usage.output


def test_the_api_lists_the_waiting_drafts_and_approves_one(engine, catalog, db_url, tmp_path):
    from billing.api import create_app
    from billing.apikeys import create_api_key
    from billing.config import Approval
    from tests.billing.test_api import _serve

    customer(engine, catalog, "acme", 4)
    run_billing(engine, catalog, OCTOBER)
    _, key = create_api_key(engine, "finance")
    catalog_path = tmp_path / "catalog.toml"
    catalog_path.write_text(CATALOG, encoding="utf-8")
    settings = Settings(database_url=db_url, catalog=str(catalog_path), approval=Approval(limits={"USD": "11.00"}))
    server, thread, url = _serve(create_app(settings))
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            listed = client.get("/v1/invoices/pending-approval", params={"period": "2026-10"})
            assert listed.status_code == 200, listed.text
            [row] = listed.json()["data"]
            assert row["reasons"][0]["code"] == "above_limit" and listed.json()["has_more"] is False
            refused = client.post(f"/v1/invoices/{row['invoice_id']}/finalize")
            assert refused.status_code == 409, refused.text
            assert "waits for approval" in refused.json()["detail"]
            approved = client.post(f"/v1/invoices/{row['invoice_id']}/approve", json={"note": "ok"})
            assert approved.status_code == 200, approved.text
            body = approved.json()
            assert (body["approved"], body["approved_by"], body["approval_note"]) == (True, "api key finance", "ok")
            assert client.get("/v1/invoices/pending-approval").json()["data"] == []
            issued = client.post(f"/v1/invoices/{row['invoice_id']}/finalize")
            assert issued.status_code == 200 and issued.json()["number"] == "INV-2026-000001"

            flagged = client.put("/v1/customers/acme/review", json={"review": True, "note": "disputed usage"})
            assert flagged.status_code == 200, flagged.text
            assert {k: flagged.json()[k] for k in ("review", "note", "flagged_by")} == {
                "review": True, "note": "disputed usage", "flagged_by": "api key finance"
            }
            assert client.get("/v1/customers/acme/review").json()["review"] is True
            assert approval.customer_review(engine, "acme").note == "disputed usage"
            cleared = client.put("/v1/customers/acme/review", json={"review": False})
            assert cleared.json() == {"customer": "acme", "review": False, "note": None, "flagged_by": None,
                                      "flagged_at": None}
            assert client.put("/v1/customers/nobody/review", json={"review": True}).status_code == 404
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        dispose_engines()
