"""Invoices: ``/v1/invoices`` (list), ``/v1/invoices/{id}`` (JSON), ``/v1/invoices/{id}/pdf``. Thin: parse, call
``billing.invoicing``, shape with ``invoices.render``. A key bound to a customer sees that customer's only."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from sqlalchemy import Engine

from billing import invoicing
from billing.api.auth import ApiKey, require_key
from billing.api.deps import api_engine
from billing.api.errors import ERROR_RESPONSES, not_found
from billing.api.pagination import Page, page_params
from billing.api.routes_customers import MAX_ID, MONTH_PATTERN, month_param, storable_path
from billing.api.schemas import InvoiceListOut, InvoiceOut, InvoiceSummaryOut, PeriodOut
from billing.errors import NotFoundError
from invoices.model import Invoice
from invoices.render import invoice_json, render_pdf
from pricing_plans.money import format_amount

router = APIRouter(tags=["invoices"], responses=ERROR_RESPONSES)

InvoiceKey = Annotated[
    str, Path(description="The invoice's id or number (INV-2026-000001).", max_length=255, examples=["1"])
]
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _visible_invoice(engine: Engine, key: ApiKey, invoice_key: str) -> Invoice:
    """The invoice by id or number, if this key may see it; 404 otherwise."""
    text = storable_path(invoice_key, "invoice")
    lookup: int | str
    if text.isascii() and text.isdigit():
        if int(text) > MAX_ID or int(text) < 1:
            raise not_found(f"no invoice {text!r}")
        lookup = int(text)
    elif text.isdigit():  # digits of other scripts are not an id
        raise not_found(f"no invoice {text!r}")
    else:
        lookup = text
    try:
        invoice = invoicing.get_invoice(engine, lookup)
    except NotFoundError:  # (said as of another customer's: a bound key tells no difference)
        raise not_found(f"no invoice {text!r}") from None
    if key.customer is not None and invoice.customer_id != key.customer:
        raise not_found(f"no invoice {text!r}")
    return invoice


def _summary(invoice: Invoice) -> InvoiceSummaryOut:
    currency = invoice.currency
    return InvoiceSummaryOut(
        id=invoice.id,
        number=invoice.number,
        kind=invoice.kind.value,  # type: ignore[arg-type]
        status=invoice.status.value,  # type: ignore[arg-type]
        customer=invoice.customer_id,
        currency=currency,
        period=PeriodOut(start=invoice.period_start, end=invoice.period_end),
        issue_date=invoice.issue_date,
        due_date=invoice.due_date,
        subtotal=format_amount(invoice.subtotal, currency),
        tax=format_amount(invoice.tax, currency),
        total=format_amount(invoice.total, currency),
        amount_paid=format_amount(invoice.amount_paid, currency),
        amount_due=format_amount(invoice.amount_due, currency),
    )


@router.get("/v1/invoices", summary="List invoices", response_model=InvoiceListOut, operation_id="listInvoices")
def list_invoices(
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_key)],
    page: Annotated[Page, Depends(page_params)],
    customer: Annotated[str | None, Query(max_length=255, description="A customer's external id.")] = None,
    period: Annotated[str | None, Query(pattern=MONTH_PATTERN, description="YYYY-MM")] = None,
    status: Literal["draft", "finalized", "paid", "void", "uncollectible"] | None = None,
    unpaid: Annotated[
        bool, Query(description="Only finalized invoices with an amount due (what customers still owe).")
    ] = False,
) -> InvoiceListOut:
    """Invoices and credit notes by id — the order they were first written in — a page at a time (the cursors
    are ids), filtered by customer, period and status, or ``unpaid``. A key bound to a customer lists that
    customer's only."""
    if customer is not None:
        customer = storable_path(customer, "customer")
    if key.customer is not None:
        if customer is not None and customer != key.customer:
            raise not_found(f"unknown customer {customer!r}")
        customer = key.customer
    after, before = page.ids()
    found, more = invoicing.invoices_page(
        engine,
        limit=page.limit,
        after=after,
        before=before,
        customer=customer,
        period_start=month_param(period).start if period else None,
        status=status,
        unpaid=unpaid,
    )
    return InvoiceListOut(data=[_summary(invoice) for invoice in found], has_more=more)


@router.get("/v1/invoices/{invoice_id}", summary="Get an invoice", response_model=InvoiceOut, operation_id="getInvoice")
def get_invoice(
    invoice_id: InvoiceKey,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_key)],
) -> InvoiceOut:
    """The invoice with its lines and totals (money as strings in the currency's minor digits)."""
    return InvoiceOut.model_validate(invoice_json(_visible_invoice(engine, key, invoice_id)))


@router.get(
    "/v1/invoices/{invoice_id}/pdf",
    summary="Get an invoice as PDF",
    response_class=Response,
    operation_id="getInvoicePdf",
    responses={200: {"content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}}},
)
def get_invoice_pdf(
    invoice_id: InvoiceKey,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_key)],
) -> Response:
    """The invoice as the customer receives it, a PDF in the customer's locale."""
    invoice = invoicing.printable(engine, _visible_invoice(engine, key, invoice_id))
    name = _UNSAFE.sub("-", invoice.number or f"draft-{invoice.id}")
    return Response(
        render_pdf(invoice),
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{name}.pdf"'},
    )
