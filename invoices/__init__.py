"""Invoices: immutable records (an invoice or credit note, its lines, its totals), their storage (drafts, gap-free
numbers, finalization, status changes, credit notes, and every read of the invoice tables), and their rendering
as JSON, HTML and PDF.

``invoices`` imports only ``pricing_plans`` and the database kit: the billing run hands it drafts and gets back
records, never rows.

    from invoices import store
    outcome = store.upsert_draft(session, draft)                          # a DraftInvoice
    invoice = store.finalize(session, outcome.invoice_id, settings, today)  # its gap-free number
    pdf = render_pdf(invoice)

The records and errors load with the package; the store (SQLAlchemy) and the renderers (Jinja2, WeasyPrint) load
when one of their names is first used, so code that only needs the records, such as the pure billing core, loads
no database and no template engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from invoices.errors import InvoiceError, InvoiceNotFoundError, InvoiceStateError
from invoices.model import (
    COUPON_TERMS,
    DISCOUNT_SECTION,
    LINE_TAX_INCLUSIVE,
    LINE_TAX_RATE,
    AppliedCredit,
    DraftInvoice,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceScope,
    InvoiceStatus,
    LineDetails,
    LineKind,
    Party,
    PaymentInstructions,
    TaxLine,
    Totals,
    compute_totals,
    taxes_from_json,
    taxes_to_json,
)

if TYPE_CHECKING:
    from invoices.render import invoice_json, render_html, render_pdf, tax_json
    from invoices.store import (
        LINE_FIELDS,
        DraftForReview,
        DraftOutcome,
        DraftRow,
        DraftWriter,
        EarlierDraft,
        FinalizeSettings,
        InvoiceAmounts,
        IssuedLine,
        IssuedNote,
        IssuedPeriod,
        OpeningDraft,
        Receivable,
        StatusChange,
        StoredDraft,
        billed_by_period,
        claim_drafts,
        create_credit_note,
        credit_notes_of,
        customers_with_drafts,
        customers_with_issued_invoice,
        customers_with_progressive_invoices,
        delete_opening_draft,
        draft_periods,
        draft_row,
        drafts_for_review,
        drafts_of_period,
        earlier_drafts,
        fee_invoices,
        finalize,
        finalize_many,
        finalized_invoice_ids,
        get_invoice,
        get_invoices,
        invoice_amounts,
        invoice_currencies,
        invoice_id_by_number,
        invoice_numbers,
        invoiced_until,
        invoices_page,
        issue_dates,
        issued_between,
        issued_lines,
        issued_period_invoices,
        list_invoices,
        lock_invoice,
        next_numbers,
        opening_drafts,
        period_drafts,
        period_invoice_states,
        progressive_keys,
        progressive_lines,
        receivables,
        remove_stale_drafts,
        reopen_paid,
        scopes_by_number,
        sequence_name,
        set_status,
        status_changes_between,
        status_histories,
        stored_drafts,
        touch_drafts,
        upsert_draft,
        void_among,
    )

__all__ = [
    "COUPON_TERMS",
    "DISCOUNT_SECTION",
    "LINE_FIELDS",
    "LINE_TAX_INCLUSIVE",
    "LINE_TAX_RATE",
    "AppliedCredit",
    "DraftForReview",
    "DraftInvoice",
    "DraftOutcome",
    "DraftRow",
    "DraftWriter",
    "EarlierDraft",
    "FinalizeSettings",
    "Invoice",
    "InvoiceAmounts",
    "InvoiceError",
    "InvoiceKind",
    "InvoiceLine",
    "InvoiceNotFoundError",
    "InvoiceScope",
    "InvoiceStateError",
    "InvoiceStatus",
    "IssuedLine",
    "IssuedNote",
    "IssuedPeriod",
    "LineDetails",
    "LineKind",
    "OpeningDraft",
    "Party",
    "PaymentInstructions",
    "Receivable",
    "StatusChange",
    "StoredDraft",
    "TaxLine",
    "Totals",
    "billed_by_period",
    "claim_drafts",
    "compute_totals",
    "create_credit_note",
    "credit_notes_of",
    "customers_with_drafts",
    "customers_with_issued_invoice",
    "customers_with_progressive_invoices",
    "delete_opening_draft",
    "draft_periods",
    "draft_row",
    "drafts_for_review",
    "drafts_of_period",
    "earlier_drafts",
    "fee_invoices",
    "finalize",
    "finalize_many",
    "finalized_invoice_ids",
    "get_invoice",
    "get_invoices",
    "invoice_amounts",
    "invoice_currencies",
    "invoice_id_by_number",
    "invoice_json",
    "invoice_numbers",
    "invoiced_until",
    "invoices_page",
    "issue_dates",
    "issued_between",
    "issued_lines",
    "issued_period_invoices",
    "list_invoices",
    "lock_invoice",
    "next_numbers",
    "opening_drafts",
    "period_drafts",
    "period_invoice_states",
    "progressive_keys",
    "progressive_lines",
    "receivables",
    "remove_stale_drafts",
    "render_html",
    "render_pdf",
    "reopen_paid",
    "scopes_by_number",
    "sequence_name",
    "set_status",
    "status_changes_between",
    "status_histories",
    "stored_drafts",
    "tax_json",
    "taxes_from_json",
    "taxes_to_json",
    "touch_drafts",
    "upsert_draft",
    "void_among",
]

# The names that load their module on first use (see the module's note): the renderers', and the store's.
_RENDERED = frozenset({"invoice_json", "render_html", "render_pdf", "tax_json"})


def __getattr__(name: str) -> object:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module("invoices.render" if name in _RENDERED else "invoices.store")
    value = getattr(module, name)
    globals()[name] = value
    return value
