"""``POST /v1/billing-runs``: the billing run of a period, as ``billing run --period P [--customer C]
[--finalize]`` does it. Thin: parse, call ``billing.run``, shape its report.

A run creates nothing that is read back as such: it answers 200 with what it did, and the drafts it wrote are at
``GET /v1/invoices?period=YYYY-MM``. It runs while the request waits (a large run takes a while: give the client
a generous timeout, and an ``Idempotency-Key`` so that a retry does not run it twice at once)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy import Engine

from billing import customers, invoicing
from billing.api.auth import ApiKey, require_unbound_key
from billing.api.deps import api_engine, get_api_settings, get_catalog
from billing.api.errors import ERROR_RESPONSES, POST_ERROR_RESPONSES
from billing.api.routes_customers import month_param, storable_path
from billing.api.schemas import (
    BilledPeriodOut,
    BillingRunIn,
    BillingRunOut,
    PeriodOut,
    RunEventsOut,
    SkippedOut,
    UnbilledOut,
)
from billing.approval import ApprovalPolicy, awaiting_approval
from billing.config import Settings
from billing.errors import BillingInputError
from billing.run import finalize_after_run, run_billing
from pricing_plans.models import Catalog
from pricing_plans.money import format_amount

__all__ = ["router"]

router = APIRouter(tags=["billing runs"], responses={**ERROR_RESPONSES, **POST_ERROR_RESPONSES})


@router.post(
    "/v1/billing-runs",
    summary="Run the billing of a period",
    response_model=BillingRunOut,
    operation_id="createBillingRun",
)
def create_billing_run(
    body: BillingRunIn,
    engine: Annotated[Engine, Depends(api_engine)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    settings: Annotated[Settings, Depends(get_api_settings)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> BillingRunOut:
    """Write (or refresh) one draft invoice per customer for ``period`` (of ``customer`` only, if given); with
    ``finalize``, number the period's drafts, each with its ``invoice.finalized`` notification. Running it again
    is safe: drafts are refreshed, issued invoices left alone."""
    period = month_param(body.period)
    customer = None
    if body.customer is not None:
        customer = customers.get_customer(engine, storable_path(body.customer, "customer")).external_id
    if body.allow_open_period and not body.finalize:
        raise BillingInputError("allow_open_period: only with finalize")
    if body.finalize:  # refused before anything is written: a period that has not ended is not issued
        invoicing.check_period_finalizable(
            engine, period, customer=customer, allow_open_period=body.allow_open_period
        )
    report = run_billing(engine, catalog, period, customer=customer)
    numbers: list[str] = []
    awaiting: list[int] = []
    if body.finalize:
        policy = ApprovalPolicy.configured(settings)
        numbers = finalize_after_run(
            engine,
            catalog,
            period,
            report,
            invoicing.finalize_settings(settings),
            invoicing.issue_day(),
            customer=customer,
            allow_open_period=body.allow_open_period,
            approval=policy,
        )
        waiting = awaiting_approval(engine, policy, period_start=period.start, customer=customer)
        awaiting = [item.draft.invoice_id for item in waiting]
    return BillingRunOut(
        period=PeriodOut(start=period.start, end=period.end),
        label=period.label,
        created=report.created,
        updated=report.updated,
        unchanged=report.unchanged,
        removed=len(report.removed),
        issued_untouched=report.issued_untouched,
        late_lines=report.late_lines,
        billing_periods=[
            BilledPeriodOut(period=PeriodOut(start=p.start, end=p.end), label=p.label) for p in report.periods
        ],
        events=RunEventsOut(accepted=report.accepted, rated=report.events, unbilled=report.unbilled_events),
        unbilled=[UnbilledOut(**group.as_dict()) for group in report.unbilled],
        totals={currency: format_amount(total, currency) for currency, total in sorted(report.totals.items())},
        skipped=[SkippedOut(customer=who, reason=why) for who, why in report.skipped],
        finalized=numbers,
        awaiting_approval=awaiting,
    )
