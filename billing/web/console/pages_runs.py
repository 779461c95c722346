"""Billing runs: ``GET /console/runs`` (a period's invoices by status and, on request, its usage that no invoice
carries, as ``billing usage unbilled`` shows it) and ``POST /console/runs`` (run a period, as ``billing run
--period P [--finalize]`` does, and show its report: drafts written, events rated and unbilled, skipped
customers, invoices issued and drafts waiting for approval)."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from sqlalchemy import Engine

from billing import invoicing, run_history
from billing.approval import ApprovalPolicy, awaiting_approval
from billing.config import Settings
from billing.core.periods import Period, month
from billing.errors import BillingError, BillingInputError
from billing.run import finalize_after_run, run_billing, usage_account
from billing.staff import StaffSession
from billing.web.console.base import (
    Form,
    console_catalog,
    console_engine,
    console_settings,
    current_staff,
    month_or_none,
    posted_form,
    render,
)
from invoices.model import Invoice
from pricing_plans.models import Catalog

__all__ = ["router"]

router = APIRouter()

RUNS_SHOWN = 50  # the latest runs of the month on its page


def last_month(today: dt.date | None = None) -> Period:
    day = (today or dt.datetime.now(dt.UTC).date()).replace(day=1) - dt.timedelta(days=1)
    return month(day.year, day.month)


def _by_status(found: list[Invoice]) -> tuple[Counter[str], dict[str, Decimal]]:
    counts: Counter[str] = Counter(str(i.status) for i in found)
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for invoice in found:
        if str(invoice.status) != "void":
            totals[invoice.currency] += invoice.total
    return counts, dict(sorted(totals.items()))


@router.get("/runs", include_in_schema=False)
def runs_page(
    request: Request,
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
    catalog: Annotated[Catalog, Depends(console_catalog)],
    period: str | None = None,
    account: bool = False,
) -> Response:
    chosen = month_or_none(period) or last_month()
    counts, totals = _by_status(invoicing.list_invoices(engine, period_start=chosen.start))
    usage = None
    if account:
        usage = usage_account(engine, catalog, chosen)
    runs, more = run_history.runs_page(engine, limit=RUNS_SHOWN, period=chosen, newest_first=True)
    return render(
        request, "runs.html", engine, title="Billing runs", section="runs", period=chosen, counts=counts,
        totals=totals, usage=usage, runs=runs, more_runs=more,
    )  # fmt: skip


@router.get("/runs/{run_id}", include_in_schema=False)
def run_page(
    request: Request,
    run_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
) -> Response:
    """One recorded run: who started it, when, how it ended, and its report."""
    run = run_history.get_run(engine, run_id)
    return render(request, "run.html", engine, title=f"Billing run {run.id}", section="runs", run=run)


@router.post("/runs", include_in_schema=False)
def start_run(
    request: Request,
    form: Annotated[Form, Depends(posted_form)],
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
    catalog: Annotated[Catalog, Depends(console_catalog)],
    settings: Annotated[Settings, Depends(console_settings)],
) -> Response:
    """Run the period; with ``finalize``, issue the drafts that need no approval (refused, before anything is
    written, for a period that has not ended)."""
    finalize = form.get("finalize") == "on"
    try:
        period = month_or_none(form.get("period"))
        if period is None:
            raise BillingInputError("period: required, as YYYY-MM")
        if finalize:
            invoicing.check_period_finalizable(engine, period)
        with run_history.recorded(engine, period, source="console", actor=who.key_name, finalize=finalize) as recording:
            report = run_billing(engine, catalog, period)
            numbers: list[str] = []
            policy = ApprovalPolicy.configured(settings)
            if finalize:
                numbers = finalize_after_run(
                    engine, catalog, period, report, invoicing.finalize_settings(settings), invoicing.issue_day(),
                    approval=policy,
                )  # fmt: skip
            waiting = awaiting_approval(engine, policy, period_start=period.start)
            recording.done(report, numbers, [item.draft.invoice_id for item in waiting])
    except BillingError as exc:
        return render(
            request, "runs.html", engine, status_code=422, title="Billing runs", section="runs",
            period=month_or_none(form.get("period")) if _parses(form.get("period")) else last_month(),
            counts=Counter(), totals={}, usage=None, error=str(exc),
        )  # fmt: skip
    return render(
        request, "run_report.html", engine, title=f"Billing run {period.label}", section="runs", period=period,
        report=report, finalized=numbers, waiting=waiting, finalize=finalize, run_id=recording.id,
    )  # fmt: skip


def _parses(text: str | None) -> bool:
    try:
        return month_or_none(text) is not None
    except BillingInputError:
        return False
