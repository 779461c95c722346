"""What is done to an invoice, as ``billing invoices finalize|void|credit`` does it:
``POST /v1/invoices/{id}/finalize``, ``POST /v1/invoices/{id}/void``, ``POST /v1/invoices/{id}/credit-notes``.
Thin: find the invoice, call ``billing.invoicing``, answer the invoice as ``GET /v1/invoices/{id}`` does. An
invoice whose status does not allow the change is a 409 ``conflict``. Keys bound to a customer see none of this
(404)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import Engine

from billing import invoicing
from billing.api.auth import ApiKey, require_unbound_key
from billing.api.deps import api_engine, get_api_settings, get_catalog
from billing.api.errors import ERROR_RESPONSES, POST_ERROR_RESPONSES, ApiError
from billing.api.routes_invoices import InvoiceKey, _visible_invoice
from billing.api.schemas import CreditNoteIn, InvoiceOut
from billing.approval import ApprovalPolicy
from billing.config import Settings
from billing.errors import BillingInputError, ConflictError
from billing.run import finalize_draft_fresh
from invoices.model import Invoice, InvoiceStatus
from invoices.render import invoice_json
from pricing_plans.models import Catalog

__all__ = ["router"]

router = APIRouter(tags=["invoices"], responses={**ERROR_RESPONSES, **POST_ERROR_RESPONSES})


def _out(engine: Engine, invoice: Invoice) -> InvoiceOut:
    """The invoice as stored now, with its lines."""
    return InvoiceOut.model_validate(invoice_json(invoicing.get_invoice(engine, invoice.id)))


@router.post(
    "/v1/invoices/{invoice_id}/finalize",
    summary="Finalize a draft invoice",
    response_model=InvoiceOut,
    operation_id="finalizeInvoice",
)
def finalize_invoice(
    invoice_id: InvoiceKey,
    engine: Annotated[Engine, Depends(api_engine)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    settings: Annotated[Settings, Depends(get_api_settings)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    allow_open_period: Annotated[
        bool,
        Query(
            description="Issue a period invoice of the current period before the period has ended (never one of a "
            "period to come)."
        ),
    ] = False,
) -> InvoiceOut:
    """Give a draft the next gap-free number, dated today; its ``invoice.finalized`` notification is queued with
    it. A period invoice is rated again first, by a billing run of its customer's month, so that it bills the
    subscriptions, prices and usage as they are now. An invoice that is not a draft is a 409; a period invoice
    whose period has not ended in its customer's timezone is a 422 (``allow_open_period`` issues the current period
    early), and nothing is finalized. A draft that waits for approval is a 409 (``POST /v1/invoices/{id}/approve``
    first), as is one whose customer cannot be rated now or has nothing left to bill in that period."""
    draft = _visible_invoice(engine, key, invoice_id)
    issued = finalize_draft_fresh(
        engine,
        catalog,
        draft.id,
        invoicing.finalize_settings(settings),
        invoicing.issue_day(),
        allow_open_period=allow_open_period,
        approval=ApprovalPolicy.configured(settings),
    )
    return _out(engine, issued)


@router.post(
    "/v1/invoices/{invoice_id}/void",
    summary="Void an issued invoice",
    response_model=InvoiceOut,
    operation_id="voidInvoice",
)
def void_invoice(
    invoice_id: InvoiceKey,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> InvoiceOut:
    """Void an issued invoice; it keeps its number. A draft, or an invoice already void, is a 409."""
    invoice = _visible_invoice(engine, key, invoice_id)
    return _out(engine, invoicing.set_invoice_status(engine, invoice.id, InvoiceStatus.VOID))


@router.post(
    "/v1/invoices/{invoice_id}/credit-notes",
    status_code=201,
    summary="Credit an issued invoice",
    response_model=InvoiceOut,
    operation_id="createCreditNote",
    responses={
        201: {
            "description": "The credit note",
            "headers": {"Location": {"description": "The credit note's URL.", "schema": {"type": "string"}}},
            "links": {
                "GetCreditNote": {"operationId": "getInvoice", "parameters": {"invoice_id": "$response.body#/id"}}
            },
        }
    },
)
def create_credit_note(
    invoice_id: InvoiceKey,
    body: CreditNoteIn,
    response: Response,
    engine: Annotated[Engine, Depends(api_engine)],
    settings: Annotated[Settings, Depends(get_api_settings)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> InvoiceOut:
    """Issue a credit note of ``amount`` (tax included) against an issued invoice, numbered in its own gap-free
    sequence. More than is left to credit (its total less earlier notes and what later invoices gave back of its
    fees), or an amount that is not in whole minor units, is a 422; a draft, a void invoice, a credit note, or an
    invoice whose fee a draft gives back in part is a 409."""
    invoice = _visible_invoice(engine, key, invoice_id)
    if invoice.number is None:
        raise ApiError(409, "conflict", f"invoice {invoice.id} is a draft: only issued invoices take credit notes")
    try:
        amount = Decimal(body.amount)
    except InvalidOperation:  # the schema's pattern lets only decimals through
        raise ApiError(422, "invalid_request", f"amount: expected a decimal, got {body.amount!r}", "amount") from None
    try:
        note = invoicing.create_credit_note(
            engine, invoice.number, amount, body.reason, invoicing.finalize_settings(settings), invoicing.issue_day(),
            to_balance=body.to_balance, catalog=catalog,
        )
    except ConflictError:
        raise
    except BillingInputError as exc:
        message = str(exc).replace("--amount must", "amount: must")
        field = "reason" if "reason" in message else "amount"
        raise ApiError(422, "invalid_input", message, field) from None
    response.headers["Location"] = f"/v1/invoices/{note.id}"
    return _out(engine, note)
