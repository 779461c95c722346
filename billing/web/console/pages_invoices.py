"""Approvals and invoices.

- ``GET /console/approvals?period=``: the drafts (of a period), each with whether it waits for an approval and
  why (``billing.approval``); ``POST /console/invoices/{id}/approve``, ``POST /console/invoices/{id}/finalize``,
  ``POST /console/approvals/finalize`` (every draft of a period that needs no approval, as ``billing run
  --finalize`` issues them).
- ``GET /console/invoices``: search (an invoice's number or id, or a customer's id) and filters by status and
  period, a page at a time; ``GET /console/invoices/{id}``: the invoice, its lines, credits and payments, and what
  can be done to it: ``…/void``, ``…/credit-notes``, ``…/payments``; ``GET /console/invoices/{id}/pdf``.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Engine

from billing import approval, invoicing, payments, run_history
from billing.config import Settings
from billing.errors import BillingInputError, NotFoundError
from billing.payments import PAYMENT_METHODS, parse_amount, record_payment
from billing.run import finalize_draft_fresh, finalize_period_fresh
from billing.staff import StaffSession
from billing.web.console.base import (
    PREFIX,
    Form,
    Id,
    PageId,
    act,
    console_catalog,
    console_engine,
    console_settings,
    current_staff,
    date_field,
    month_or_none,
    posted_form,
    render,
    required_once,
)
from invoices.model import InvoiceStatus
from invoices.render import render_pdf
from pricing_plans.models import Catalog

__all__ = ["router"]

router = APIRouter()
PAGE = 50
STATUSES = tuple(s.value for s in InvoiceStatus)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


# -- approvals -----------------------------------------------------------------------------------------------


@router.get("/approvals", include_in_schema=False)
def approvals_page(
    request: Request,
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
    settings: Annotated[Settings, Depends(console_settings)],
    period: str | None = None,
) -> Response:
    chosen = month_or_none(period)
    start = chosen.start if chosen else None
    drafts = invoicing.list_invoices(engine, status="draft", period_start=start)
    waiting = {
        item.draft.invoice_id: item
        for item in approval.awaiting_approval(engine, approval.ApprovalPolicy.configured(settings), period_start=start)
    }
    return render(
        request, "approvals.html", engine, title="Approvals", section="approvals", period=chosen, drafts=drafts,
        waiting=waiting,
    )  # fmt: skip


@router.post("/invoices/{invoice_id}/approve", include_in_schema=False)
def approve_invoice(
    invoice_id: Id,
    form: Annotated[Form, Depends(posted_form)],
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
    settings: Annotated[Settings, Depends(console_settings)],
) -> Response:
    def approve() -> str:
        note = form.get("note", "").strip() or None
        approval.approve(engine, invoice_id, approval.ApprovalPolicy.configured(settings), by=who.actor, note=note)
        return f"Draft {invoice_id} approved."

    return act(engine, who, _back(form, f"/invoices/{invoice_id}"), approve)


@router.post("/invoices/{invoice_id}/finalize", include_in_schema=False)
def finalize_invoice(
    invoice_id: Id,
    form: Annotated[Form, Depends(posted_form)],
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
    catalog: Annotated[Catalog, Depends(console_catalog)],
    settings: Annotated[Settings, Depends(console_settings)],
) -> Response:
    def finalize() -> str:
        issued = finalize_draft_fresh(
            engine, catalog, invoice_id, invoicing.finalize_settings(settings), invoicing.issue_day(),
            approval=approval.ApprovalPolicy.configured(settings),
        )  # fmt: skip
        return f"Invoice {issued.number} issued."

    return act(engine, who, _back(form, f"/invoices/{invoice_id}"), finalize, once=form)


@router.post("/approvals/finalize", include_in_schema=False)
def finalize_drafts(
    form: Annotated[Form, Depends(posted_form)],
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
    catalog: Annotated[Catalog, Depends(console_catalog)],
    settings: Annotated[Settings, Depends(console_settings)],
) -> Response:
    period_text = form.get("period", "")

    def finalize() -> str:
        period = month_or_none(period_text)
        if period is None:
            raise BillingInputError("period: required, as YYYY-MM")
        invoicing.check_period_finalizable(engine, period)  # (refused before anything is written, or recorded)
        policy = approval.ApprovalPolicy.configured(settings)
        with run_history.recorded(engine, period, source="console", actor=who.key_name, finalize=True) as recording:
            report, numbers = finalize_period_fresh(
                engine, catalog, period, invoicing.finalize_settings(settings), invoicing.issue_day(), approval=policy
            )
            waiting = approval.awaiting_approval(engine, policy, period_start=period.start)
            recording.done(report, numbers, [item.draft.invoice_id for item in waiting])
        unrated = sorted(report.unrated)
        left = f" Left as drafts, cannot be rated now: {', '.join(unrated)}." if unrated else ""
        earlier = sorted({who for who, _ in report.waiting})
        if earlier:
            left += f" Left as drafts until their earlier drafts are issued: {', '.join(earlier)}."
        return f"{len(numbers)} invoices of {period.label} issued.{left}"

    back = f"/approvals?period={quote(period_text.strip(), safe='')}" if _parses(period_text) else "/approvals"
    return act(engine, who, back, finalize, once=form)


def _parses(text: str) -> bool:
    try:
        return month_or_none(text) is not None
    except BillingInputError:
        return False


def _back(form: Form, default: str) -> str:
    """The console page a form asks to go back to (``back``), or ``default``."""
    back = form.get("back", "")
    return back if back.startswith("/") and not back.startswith("//") else default


# -- invoices ------------------------------------------------------------------------------------------------


@router.get("/invoices", include_in_schema=False)
def invoices_page(
    request: Request,
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
    q: str = "",
    status: str = "",
    period: str = "",
    unpaid: bool = False,
    after: PageId = None,
    before: PageId = None,
) -> Response:
    q = q.strip()
    if q and status == "" and not period:
        try:  # an invoice's number or id: straight to it
            return RedirectResponse(f"{PREFIX}/invoices/{invoicing.get_invoice(engine, q).id}", status_code=303)
        except NotFoundError:
            pass
    if status and status not in STATUSES:
        raise BillingInputError(f"status: expected one of {', '.join(STATUSES)}, got {status!r}")
    chosen = month_or_none(period)
    found, more = invoicing.invoices_page(
        engine, limit=PAGE, after=after, before=before, customer=q or None,
        period_start=chosen.start if chosen else None, status=status or None, unpaid=unpaid,
    )  # fmt: skip
    return render(
        request, "invoices.html", engine, title="Invoices", section="invoices", invoices=found, more=more,
        q=q, status=status, period=period, unpaid=unpaid, statuses=STATUSES, after=after, before=before,
    )  # fmt: skip


@router.get("/invoices/{invoice_id}", include_in_schema=False)
def invoice_page(
    request: Request,
    invoice_id: str,
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
    settings: Annotated[Settings, Depends(console_settings)],
) -> Response:
    invoice = invoicing.get_invoice(engine, invoice_id)
    received = payments.list_payments(engine, invoice=invoice.number) if invoice.number else []
    waiting = None
    if invoice.status == InvoiceStatus.DRAFT:
        policy = approval.ApprovalPolicy.configured(settings)
        found = [
            item
            for item in approval.awaiting_approval(engine, policy, period_start=invoice.period_start)
            if item.draft.invoice_id == invoice.id
        ]
        waiting = found[0] if found else None
    return render(
        request, "invoice.html", engine, title=f"Invoice {invoice.number or invoice.id}", section="invoices",
        invoice=invoice, payments=received, waiting=waiting, actions=invoicing.invoice_actions(invoice),
        methods=PAYMENT_METHODS, today=invoicing.issue_day(),
    )  # fmt: skip


@router.get("/invoices/{invoice_id}/pdf", include_in_schema=False)
def invoice_pdf(
    invoice_id: Id,
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
    settings: Annotated[Settings, Depends(console_settings)],
) -> Response:
    invoice = invoicing.printable(engine, invoicing.get_invoice(engine, invoice_id), settings)
    name = _UNSAFE.sub("-", invoice.number or f"draft-{invoice.id}")
    return Response(
        render_pdf(invoice), media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{name}.pdf"', "Cache-Control": "no-store"},
    )  # fmt: skip


@router.post("/invoices/{invoice_id}/void", include_in_schema=False)
def void_invoice(
    invoice_id: Id,
    form: Annotated[Form, Depends(posted_form)],
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
) -> Response:
    def void() -> str:
        voided = invoicing.set_invoice_status(engine, invoice_id, InvoiceStatus.VOID)
        return f"Invoice {voided.number} voided."

    return act(engine, who, f"/invoices/{invoice_id}", void, once=form)


@router.post("/invoices/{invoice_id}/credit-notes", include_in_schema=False)
def credit_invoice(
    invoice_id: Id,
    form: Annotated[Form, Depends(posted_form)],
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
    settings: Annotated[Settings, Depends(console_settings)],
    catalog: Annotated[Catalog, Depends(console_catalog)],
) -> Response:
    def credit() -> str:
        invoice = invoicing.get_invoice(engine, invoice_id)
        if invoice.number is None:
            raise BillingInputError(f"invoice {invoice_id} is a draft: only issued invoices take credit notes")
        note = invoicing.create_credit_note(
            engine, invoice.number, parse_amount(form.get("amount", ""), "amount"), form.get("reason", ""),
            invoicing.finalize_settings(settings), invoicing.issue_day(), to_balance=form.get("to_balance") == "on",
            catalog=catalog,
        )  # fmt: skip
        return f"Credit note {note.number} of {note.total} {note.currency} issued against {invoice.number}."

    return act(engine, who, f"/invoices/{invoice_id}", credit, once=required_once(form))


@router.post("/invoices/{invoice_id}/payments", include_in_schema=False)
def pay_invoice(
    invoice_id: Id,
    form: Annotated[Form, Depends(posted_form)],
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
) -> Response:
    def pay() -> str:
        payment = record_payment(
            engine, invoice_id, parse_amount(form.get("amount", ""), "amount"), method=form.get("method", ""),
            received_on=date_field(form, "received_on", "received on"),
            reference=form.get("reference", "").strip() or None,
        )  # fmt: skip
        return f"Payment of {payment.amount} {payment.currency} recorded against {payment.invoice_number}."

    return act(engine, who, f"/invoices/{invoice_id}", pay, once=required_once(form))
