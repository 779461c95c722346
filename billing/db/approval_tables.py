"""Approval before issuing (created by migration 0024).

- ``invoice_approvals``: a draft invoice approved for issuing — by whom, when, with what note — and the
  ``content_hash`` of the draft as it was approved. An approval holds only while the draft's content hash is that
  one: a billing run that changes the draft (new usage, a new price) changes its hash, and the draft waits for a
  new approval. One row per invoice (a new approval replaces the old); kept once the invoice is issued, as the
  record of who approved it.
- ``customer_reviews``: the customers flagged for review, whose every draft waits for an approval.

The invoices live in another package's metadata, so ``invoice_id`` carries no foreign key (a draft may be
deleted by a billing run with nothing left to bill; its approval then matches no invoice).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from billing.db.tables import BillingBase
from dbkit.types import ID_TYPE, UTCDateTime

__all__ = ["CustomerReviewRow", "InvoiceApprovalRow"]


class InvoiceApprovalRow(BillingBase):
    """An invoice approved for issuing, as its content was when approved."""

    __tablename__ = "invoice_approvals"

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    approved_by: Mapped[str] = mapped_column(String(255))
    note: Mapped[str | None] = mapped_column(Text)
    approved_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class CustomerReviewRow(BillingBase):
    """A customer flagged for review: each of its drafts waits for an approval before it is issued."""

    __tablename__ = "customer_reviews"

    customer_external_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    note: Mapped[str | None] = mapped_column(Text)
    flagged_by: Mapped[str] = mapped_column(String(255))
    flagged_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
