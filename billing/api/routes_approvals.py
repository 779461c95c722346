"""Approval before issuing, as ``billing invoices pending-approval`` and ``billing invoices approve`` do it:
``GET /v1/invoices/pending-approval`` (the drafts that wait, each with why) and ``POST /v1/invoices/{id}/approve``;
and ``billing customers review``: ``GET/PUT /v1/customers/{id}/review``.
Thin: call ``billing.approval`` with the configured ``[approval]`` rules. Keys bound to a customer see none of this
(404). Included before ``routes_invoices``, whose ``/v1/invoices/{id}`` would otherwise take the list's path."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import Engine

from billing import approval, customers
from billing.api.auth import ApiKey, require_unbound_key
from billing.api.deps import api_engine, get_api_settings
from billing.api.errors import ERROR_RESPONSES, POST_ERROR_RESPONSES
from billing.api.pagination import Page, page_params
from billing.api.routes_customers import MONTH_PATTERN, CustomerId, month_param, storable_path
from billing.api.routes_invoices import InvoiceKey, _visible_invoice
from billing.api.schemas import (
    ApproveIn,
    CustomerReviewIn,
    CustomerReviewOut,
    DraftApprovalListOut,
    DraftApprovalOut,
)
from billing.config import Settings

__all__ = ["router"]

router = APIRouter(tags=["invoices"], responses=ERROR_RESPONSES)


@router.get(
    "/v1/invoices/pending-approval",
    summary="List the drafts waiting for approval",
    response_model=DraftApprovalListOut,
    operation_id="listDraftsPendingApproval",
)
def pending_approval(
    engine: Annotated[Engine, Depends(api_engine)],
    settings: Annotated[Settings, Depends(get_api_settings)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    page: Annotated[Page, Depends(page_params)],
    customer: Annotated[str | None, Query(max_length=255, description="A customer's external id.")] = None,
    period: Annotated[str | None, Query(pattern=MONTH_PATTERN, description="YYYY-MM")] = None,
) -> DraftApprovalListOut:
    """The draft invoices that the scheduler and the finalization of their period leave as drafts until they are
    approved, by invoice id, each with its reasons: ``above_limit``, ``late_usage``, ``customer_review`` (and
    ``approval_outdated`` when it was approved before its content changed)."""
    waiting = approval.awaiting_approval(
        engine,
        approval.ApprovalPolicy.configured(settings),
        period_start=month_param(period).start if period else None,
        customer=storable_path(customer, "customer") if customer is not None else None,
    )
    waiting.sort(key=lambda item: item.draft.invoice_id)
    after, before = page.ids()
    if before is not None:
        earlier = [item for item in waiting if item.draft.invoice_id < before]
        shown, more = earlier[-page.limit :], len(earlier) > page.limit
    else:
        later = [item for item in waiting if after is None or item.draft.invoice_id > after]
        shown, more = later[: page.limit], len(later) > page.limit
    return DraftApprovalListOut(
        data=[DraftApprovalOut.model_validate(approval.draft_approval_json(item)) for item in shown], has_more=more
    )


@router.post(
    "/v1/invoices/{invoice_id}/approve",
    summary="Approve a draft invoice",
    response_model=DraftApprovalOut,
    operation_id="approveInvoice",
    responses=POST_ERROR_RESPONSES,
)
def approve_invoice(
    invoice_id: InvoiceKey,
    engine: Annotated[Engine, Depends(api_engine)],
    settings: Annotated[Settings, Depends(get_api_settings)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    body: ApproveIn | None = None,
) -> DraftApprovalOut:
    """Approve a draft as its content is now (recorded as approved by the API key's name): the scheduler, or a
    finalization, then issues it. A billing run that changes the draft afterwards takes the approval back. An
    issued invoice is a 409."""
    draft = _visible_invoice(engine, key, invoice_id)
    approved = approval.approve(
        engine,
        draft.id,
        approval.ApprovalPolicy.configured(settings),
        by=f"api key {key.name}",
        note=body.note if body is not None else None,
    )
    return DraftApprovalOut.model_validate(approval.draft_approval_json(approved))


@router.get(
    "/v1/customers/{customer_id}/review",
    summary="Get a customer's review flag",
    response_model=CustomerReviewOut,
    operation_id="getCustomerReview",
)
def get_customer_review(
    customer_id: CustomerId,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> CustomerReviewOut:
    """Whether the customer is flagged for review (each of its drafts then waits for an approval), by whom, why."""
    customer = customers.get_customer(engine, storable_path(customer_id, "customer")).external_id
    return CustomerReviewOut.model_validate(approval.review_json(approval.customer_review(engine, customer), customer))


@router.put(
    "/v1/customers/{customer_id}/review",
    summary="Flag a customer for review, or clear the flag",
    response_model=CustomerReviewOut,
    operation_id="changeCustomerReview",
    responses=POST_ERROR_RESPONSES,
)
def change_customer_review(
    customer_id: CustomerId,
    body: CustomerReviewIn,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> CustomerReviewOut:
    """``"review": true`` flags the customer (recorded as by the API key's name, with the note): each of its drafts
    waits for an approval before it is issued; ``false`` clears the flag. An unknown customer is a 404."""
    customer = storable_path(customer_id, "customer")
    review = approval.set_customer_review(engine, customer, body.review, by=f"api key {key.name}", note=body.note)
    return CustomerReviewOut.model_validate(approval.review_json(review, customer))
