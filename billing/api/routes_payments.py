"""Payments and receivables, as ``billing payments record|list|reverse`` and ``billing invoices aging`` do them:
``POST /v1/invoices/{id}/payments``, ``GET /v1/payments``, ``GET /v1/payments/{id}``,
``POST /v1/payments/{id}/reverse``, ``GET /v1/receivables/aging``. Thin: parse (amounts as Decimal, never a
float), call ``billing.payments``, shape. Keys bound to a customer see none of this."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from billing import payments as service
from billing.api.auth import ApiKey, require_unbound_key
from billing.api.deps import api_engine
from billing.api.errors import ERROR_RESPONSES, POST_ERROR_RESPONSES, ApiError, body_checked_by, currency_problems
from billing.api.pagination import DIGITS_ONLY, Page, page_params
from billing.api.routes_customers import storable_path
from billing.api.routes_invoices import InvoiceKey, _visible_invoice
from billing.api.schemas import AgingOut, ApiDate, PaymentIn, PaymentListOut, PaymentOut, PaymentReversalIn
from billing.errors import BillingInputError, ConflictError

router = APIRouter(tags=["payments"], responses=ERROR_RESPONSES)

_FIELDS = {"--amount": "amount", "--currency": "currency", "--date": "date", "--method": "method",
           "--reference": "reference"}

PaymentId = Annotated[int, DIGITS_ONLY, Path(description="The payment's id.", ge=1, le=2**63 - 1, examples=[4])]


def payment_location(payment_id: int) -> str:
    return f"/v1/payments/{payment_id}"


def _invalid(exc: BillingInputError) -> ApiError:
    """The service names the command's options (--amount, --date): over HTTP they are the body's fields."""
    message = str(exc)
    for option, field in _FIELDS.items():
        message = message.replace(option, field)
    return ApiError(422, "invalid_input", message, message.partition(":")[0] if ":" in message else None)


@router.post(
    "/v1/invoices/{invoice_id}/payments",
    status_code=201,
    summary="Record a payment received against an invoice",
    response_model=PaymentOut,
    operation_id="createPayment",
    responses={
        **POST_ERROR_RESPONSES,
        201: {
            "description": "The payment",
            "headers": {"Location": {"description": "The payment's URL.", "schema": {"type": "string"}}},
        },
    },
)
@body_checked_by(currency_problems)
async def create_payment(
    invoice_id: InvoiceKey,
    body: PaymentIn,
    response: Response,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> PaymentOut:
    """The invoice takes what it is owed (it stays ``finalized`` until nothing is due, then it is ``paid``); the
    excess goes to the customer's cash balance. A draft, a void invoice or a credit note is a 409."""
    invoice = _visible_invoice(engine, key, invoice_id)
    try:
        payment = await run_in_threadpool(
            service.record_payment, engine, invoice.id, Decimal(body.amount), method=body.method,
            received_on=body.date, reference=body.reference, currency=body.currency,
        )
    except ConflictError:
        raise
    except BillingInputError as exc:
        raise _invalid(exc) from None
    response.headers["Location"] = payment_location(payment.id)
    return PaymentOut.model_validate(service.payment_json(payment))


@router.get("/v1/payments", summary="List payments", response_model=PaymentListOut, operation_id="listPayments")
def list_payments(
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    page: Annotated[Page, Depends(page_params)],
    invoice: Annotated[str | None, Query(max_length=64, description="An invoice's number or id.")] = None,
    customer: Annotated[str | None, Query(max_length=255, description="A customer's external id.")] = None,
) -> PaymentListOut:
    """Payments by id, a page at a time (the cursors are payment ids), of one invoice or customer, reversed ones
    included."""
    after, before = page.ids()
    found, more = service.payments_page(
        engine, limit=page.limit, after=after, before=before,
        invoice=None if invoice is None else storable_path(invoice, "invoice"),
        customer=None if customer is None else storable_path(customer, "customer"),
    )
    return PaymentListOut(data=[PaymentOut.model_validate(service.payment_json(p)) for p in found], has_more=more)


@router.get("/v1/payments/{payment_id}", summary="Get a payment", response_model=PaymentOut, operation_id="getPayment")
def get_payment(
    payment_id: PaymentId,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> PaymentOut:
    return PaymentOut.model_validate(service.payment_json(service.get_payment(engine, payment_id)))


@router.post(
    "/v1/payments/{payment_id}/reverse",
    summary="Reverse a payment",
    response_model=PaymentOut,
    operation_id="reversePayment",
    responses=POST_ERROR_RESPONSES,
)
async def reverse_payment(
    payment_id: PaymentId,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    body: PaymentReversalIn | None = None,
) -> PaymentOut:
    """A bounced transfer or a charge-back: the invoice is owed again what the payment gave it (a paid invoice goes
    back to ``finalized``); its excess is taken back from the customer's balance as far as it is left. A payment
    reversed already is a 409."""
    reversal = body or PaymentReversalIn()
    try:
        payment = await run_in_threadpool(
            service.reverse_payment, engine, payment_id, reason=reversal.reason, on=reversal.date
        )
    except ConflictError:
        raise
    except BillingInputError as exc:
        raise _invalid(exc) from None
    return PaymentOut.model_validate(service.payment_json(payment))


@router.get(
    "/v1/receivables/aging", summary="Aged receivables", response_model=AgingOut, operation_id="getReceivablesAging"
)
def get_aging(
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    as_of: Annotated[ApiDate | None, Query(description="The day to age on (default today, UTC).")] = None,
    customer: Annotated[str | None, Query(max_length=255, description="A customer's external id.")] = None,
) -> AgingOut:
    """What each customer owes per currency at the end of ``as_of``, by days past the due date: ``current`` (not
    yet due), ``1-30``, ``31-60``, ``61-90``, ``90+``; and the totals per currency."""
    report = service.aged_receivables(
        engine, as_of, customer=None if customer is None else storable_path(customer, "customer")
    )
    return AgingOut.model_validate(service.aging_json(report))
