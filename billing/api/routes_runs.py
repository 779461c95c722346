"""``POST /v1/billing-runs``: the billing run of a period, as ``billing run --period P [--customer C]
[--finalize]`` does it. Thin: parse, call ``billing.run``, shape its report.

A run answers 201 with what it did and its record's ``id`` (``Location`` names the record): ``GET
/v1/billing-runs`` lists the runs done (by anyone: the CLI, the API, the console), ``GET /v1/billing-runs/{id}``
gives one, and the drafts it wrote are at ``GET /v1/invoices?period=YYYY-MM``. It runs while the request waits (a
large run takes a while: give the client a generous timeout, and an ``Idempotency-Key`` so that a retry does not
run it twice at once)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy import Engine

from billing import customers, invoicing, run_history
from billing.api.auth import ApiKey, require_unbound_key
from billing.api.deps import api_engine, get_api_settings, get_catalog
from billing.api.errors import ERROR_RESPONSES, POST_ERROR_RESPONSES, ApiError, body_checked_by, unknown_in_body
from billing.api.pagination import DIGITS_ONLY, Page, page_params
from billing.api.routes_customers import month_param, storable_path
from billing.api.schemas import (
    BillingRunIn,
    BillingRunListOut,
    BillingRunOut,
    BillingRunRecordOut,
    UnbilledUsageOut,
)
from billing.approval import ApprovalPolicy, awaiting_approval
from billing.config import Settings
from billing.errors import BillingInputError, NotFoundError
from billing.run import finalize_after_run, run_billing, usage_account
from pricing_plans.models import Catalog

__all__ = ["router"]

router = APIRouter(tags=["billing runs"], responses=ERROR_RESPONSES)

RunId = Annotated[int, DIGITS_ONLY, Path(description="The billing run's id.", ge=1, le=2**63 - 1, examples=[12])]


def _period_problems(given: Mapping[str, Any], refused: frozenset[str]) -> list[str]:
    """A run's ``period``, if given as text, checked as the run checks it (for a body refused for other fields)."""
    if not isinstance(given.get("period"), str):
        return []
    try:
        month_param(given["period"])
    except ApiError as error:
        return [error.message]
    return []


@router.post(
    "/v1/billing-runs",
    summary="Run the billing of a period",
    response_model=BillingRunOut,
    status_code=201,
    operation_id="createBillingRun",
    responses={
        **POST_ERROR_RESPONSES,
        201: {
            "description": "What the run did, and its record's id",
            "headers": {"Location": {"description": "The run's record.", "schema": {"type": "string"}}},
        },
    },
)
@body_checked_by(_period_problems)
def create_billing_run(
    body: BillingRunIn,
    engine: Annotated[Engine, Depends(api_engine)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    settings: Annotated[Settings, Depends(get_api_settings)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    response: Response,
) -> BillingRunOut:
    """Write (or refresh) one draft invoice per customer for ``period`` (of ``customer`` only, if given); with
    ``finalize``, number the period's drafts, each with its ``invoice.finalized`` notification. Running it again
    is safe: drafts are refreshed, issued invoices left alone."""
    period = month_param(body.period)
    customer = None
    if body.customer is not None:
        try:
            customer = customers.get_customer(engine, storable_path(body.customer, "customer")).external_id
        except NotFoundError as exc:
            raise unknown_in_body(exc, "customer") from None
    if body.allow_open_period and not body.finalize:
        raise BillingInputError("allow_open_period: only with finalize")
    if body.finalize:  # refused before anything is written: a period that has not ended is not issued
        invoicing.check_period_finalizable(
            engine, period, customer=customer, allow_open_period=body.allow_open_period
        )
    with run_history.recorded(
        engine, period, source="api", actor=key.name, customer=customer, finalize=body.finalize
    ) as recording:
        report = run_billing(engine, catalog, period, customer=customer)
        numbers: list[str] = []
        awaiting: list[int] = []
        if body.finalize:
            policy = ApprovalPolicy.configured(settings)
            numbers = finalize_after_run(
                engine, catalog, period, report, invoicing.finalize_settings(settings), invoicing.issue_day(),
                customer=customer, allow_open_period=body.allow_open_period, approval=policy,
            )  # fmt: skip
            waiting = awaiting_approval(engine, policy, period_start=period.start, customer=customer)
            awaiting = [item.draft.invoice_id for item in waiting]
        recording.done(report, numbers, awaiting)
    response.headers["Location"] = f"/v1/billing-runs/{recording.id}"  # (the run's record)
    return BillingRunOut.model_validate({**(recording.report or {}), "id": recording.id})


@router.get(
    "/v1/billing-runs", summary="List billing runs", response_model=BillingRunListOut, operation_id="listBillingRuns"
)
def list_billing_runs(
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    page: Annotated[Page, Depends(page_params)],
    period: Annotated[
        str | None, Query(max_length=7, description="Only the runs of this month, YYYY-MM.", examples=["2026-10"])
    ] = None,
) -> BillingRunListOut:
    """The billing runs done — from the CLI, the API and the console — by id, a page at a time (the cursors are
    run ids), of one month or all: who started each, when, how it ended, and what it did."""
    after, before = page.ids()
    month = None if period is None else month_param(period)
    found, more = run_history.runs_page(engine, limit=page.limit, after=after, before=before, period=month)
    return BillingRunListOut(
        data=[BillingRunRecordOut.model_validate(run_history.run_json(run)) for run in found], has_more=more
    )


@router.get(
    "/v1/billing-runs/{run_id}",
    summary="Get a billing run",
    response_model=BillingRunRecordOut,
    operation_id="getBillingRun",
)
def get_billing_run(
    run_id: RunId,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> BillingRunRecordOut:
    return BillingRunRecordOut.model_validate(run_history.run_json(run_history.get_run(engine, run_id)))


@router.get(
    "/v1/unbilled-usage",
    summary="The usage events a month's billing run leaves unbilled, and why",
    response_model=UnbilledUsageOut,
    operation_id="getUnbilledUsage",
)
def get_unbilled_usage(
    engine: Annotated[Engine, Depends(api_engine)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    period: Annotated[str, Query(max_length=7, description="The month, YYYY-MM.", examples=["2026-10"])],
    customer: Annotated[str | None, Query(max_length=255, description="Only this customer's events.")] = None,
) -> UnbilledUsageOut:
    """The month's accepted usage events that a billing run of it does not bill, by customer, meter and reason
    (no subscription covering them, a meter the plan does not charge, a customer unknown to billing, …), with the
    count of those it rates: rated + unbilled = every event of the month's billing periods (``billing usage
    unbilled``). Nothing is billed."""
    account = usage_account(engine, catalog, month_param(period), customer=customer)
    return UnbilledUsageOut.model_validate(account.as_dict())
