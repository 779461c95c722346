"""Storing invoices: drafts written and refreshed by billing runs (``drafts``), gap-free numbers on finalization
(``numbering``), finalization, status changes and credit notes (``lifecycle``), and every read of invoice rows
(``queries``). This package is the only code that reads or writes the invoice tables; what it hands out are
records (``Invoice``, and the small typed records of the narrow reads), never rows.

Every function works inside the caller's transaction (a Session); the caller commits.
"""

from __future__ import annotations

from invoices.store.drafts import (
    LINE_FIELDS,
    DraftOutcome,
    DraftRow,
    DraftWriter,
    StoredDraft,
    delete_opening_draft,
    draft_row,
    remove_stale_drafts,
    stored_drafts,
    touch_drafts,
    upsert_draft,
)
from invoices.store.drafts import _Prepared as _Prepared  # (tests count the statements it sends)
from invoices.store.lifecycle import (
    FinalizeSettings,
    claim_drafts,
    create_credit_note,
    finalize,
    finalize_many,
    lock_invoice,
    set_status,
)
from invoices.store.numbering import next_numbers, sequence_name
from invoices.store.queries import (
    InvoiceAmounts,
    IssuedPeriod,
    OpeningDraft,
    billed_by_period,
    billed_fees,
    customers_with_drafts,
    customers_with_issued_invoice,
    customers_with_progressive_invoices,
    draft_periods,
    drafts_of_period,
    finalized_invoice_ids,
    get_invoice,
    get_invoices,
    invoice_amounts,
    invoice_id_by_number,
    invoiced_until,
    invoices_page,
    issued_period_invoices,
    list_invoices,
    opening_drafts,
    period_drafts,
    period_invoice_states,
    progressive_keys,
)

__all__ = [
    "LINE_FIELDS",
    "DraftOutcome",
    "DraftRow",
    "DraftWriter",
    "FinalizeSettings",
    "InvoiceAmounts",
    "IssuedPeriod",
    "OpeningDraft",
    "StoredDraft",
    "billed_by_period",
    "billed_fees",
    "claim_drafts",
    "create_credit_note",
    "customers_with_drafts",
    "customers_with_issued_invoice",
    "customers_with_progressive_invoices",
    "delete_opening_draft",
    "draft_periods",
    "draft_row",
    "drafts_of_period",
    "finalize",
    "finalize_many",
    "finalized_invoice_ids",
    "get_invoice",
    "get_invoices",
    "invoice_amounts",
    "invoice_id_by_number",
    "invoiced_until",
    "invoices_page",
    "issued_period_invoices",
    "list_invoices",
    "lock_invoice",
    "next_numbers",
    "opening_drafts",
    "period_drafts",
    "period_invoice_states",
    "progressive_keys",
    "remove_stale_drafts",
    "sequence_name",
    "set_status",
    "stored_drafts",
    "touch_drafts",
    "upsert_draft",
]
