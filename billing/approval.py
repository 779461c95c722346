"""Approval before issuing: which drafts wait for a person's approval before they are issued, why, and the
approvals (``billing.db.approval_tables``).

A draft (a period invoice or an opening invoice) **waits for approval** when

- its total is above the approval limit of its currency (``[approval] limits`` in ``config.toml``; a currency
  without a limit never waits for its amount): ``above_limit``;
- it holds late usage (lines billing an earlier, already issued period; ``[approval] late_usage``, on by
  default): ``late_usage``;
- its customer is flagged for review (``billing customers review ID --on``): ``customer_review``;

and it has no approval of its present content. An approval records the draft's content hash: a billing run that
changes the draft (new usage, a plan change) changes the hash, and the draft waits again (``approval_outdated``
says so beside its reasons). Nothing else is ever held: a draft without a reason is issued as before.

Who applies it: the scheduler's automatic finalization and the finalization of a period (``billing run
--finalize``, ``billing invoices finalize --period``, the API's equivalents) leave the drafts that wait as drafts
and issue the others; the finalization of one draft by id refuses one that waits (``ApprovalRequiredError``, a
conflict). Progressive invoices, top-ups and credit notes are issued at once by design and never wait.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.orm import Session

from billing.config import Settings, get_settings
from billing.db import repository, session_scope
from billing.db.approval_tables import CustomerReviewRow, InvoiceApprovalRow
from billing.errors import ConflictError, NotFoundError
from dbkit import iso_instant, read_only, utcnow
from invoices import store
from invoices.errors import InvoiceNotFoundError
from invoices.model import InvoiceStatus
from pricing_plans.money import format_amount

__all__ = [
    "Approval",
    "ApprovalPolicy",
    "ApprovalRequiredError",
    "CustomerReview",
    "DraftApproval",
    "Reason",
    "WaitReason",
    "approve",
    "approve_period",
    "awaiting_approval",
    "check_approved",
    "customer_review",
    "draft_approval_json",
    "issuable",
    "review_drafts",
    "review_json",
    "set_customer_review",
]


class Reason(StrEnum):
    """Why a draft waits for approval."""

    ABOVE_LIMIT = "above_limit"
    LATE_USAGE = "late_usage"
    CUSTOMER_REVIEW = "customer_review"


@dataclass(frozen=True, slots=True)
class WaitReason:
    """One reason a draft waits, with a sentence for a person ("total 12400.00 USD is above …")."""

    code: Reason
    message: str


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """The configured rules: the limit per currency (above it, a draft waits) and whether late usage waits."""

    limits: Mapping[str, Decimal] = field(default_factory=dict)
    late_usage: bool = True

    @classmethod
    def configured(cls, settings: Settings | None = None) -> ApprovalPolicy:
        """The rules of ``[approval]`` in the configuration."""
        approval = (settings or get_settings()).approval
        return cls(limits=dict(approval.limits), late_usage=approval.late_usage)


@dataclass(frozen=True, slots=True)
class Approval:
    """An approval as recorded: of the content whose hash is ``content_hash``, by whom, when, with what note."""

    content_hash: str
    approved_by: str
    approved_at: dt.datetime
    note: str | None


@dataclass(frozen=True, slots=True)
class CustomerReview:
    """A customer flagged for review: each of its drafts waits for approval."""

    customer: str
    note: str | None
    flagged_by: str
    flagged_at: dt.datetime


@dataclass(frozen=True, slots=True)
class DraftApproval:
    """A draft, why it would wait (``reasons``, empty when it never waits) and its approval, if any."""

    draft: store.DraftForReview
    reasons: tuple[WaitReason, ...]
    approval: Approval | None

    @property
    def approved(self) -> bool:
        """Approved as its content is now."""
        return self.approval is not None and self.approval.content_hash == self.draft.content_hash

    @property
    def outdated(self) -> bool:
        """Approved once, but its content has changed since."""
        return self.approval is not None and not self.approved

    @property
    def awaiting(self) -> bool:
        return bool(self.reasons) and not self.approved


class ApprovalRequiredError(ConflictError):
    """A draft that waits for approval was to be finalized by id; nothing was finalized."""


# -- why a draft waits -------------------------------------------------------------------------------------------


def _reasons(
    draft: store.DraftForReview, policy: ApprovalPolicy, review: CustomerReview | None
) -> tuple[WaitReason, ...]:
    found: list[WaitReason] = []
    limit = policy.limits.get(draft.currency)
    if limit is not None and draft.total > limit:
        found.append(WaitReason(
            Reason.ABOVE_LIMIT,
            f"total {format_amount(draft.total, draft.currency)} {draft.currency} is above the approval limit "
            f"{limit} {draft.currency}",
        ))
    if policy.late_usage and draft.late_periods:
        periods = ", ".join(f"{start:%Y-%m}" if start.day == 1 else start.isoformat() for start in draft.late_periods)
        found.append(WaitReason(Reason.LATE_USAGE, f"holds late usage of {periods}"))
    if review is not None:
        note = f": {review.note}" if review.note else ""
        found.append(WaitReason(
            Reason.CUSTOMER_REVIEW,
            f"customer {draft.customer_external_id} is flagged for review (by {review.flagged_by}){note}",
        ))
    return tuple(found)


def review_drafts(session: Session, drafts: Sequence[store.DraftForReview], policy: ApprovalPolicy) -> list[
    DraftApproval
]:
    """Each draft with why it would wait and its approval (two queries per call)."""
    reviews = _reviews(session, {d.customer_external_id for d in drafts})
    approvals = _approvals(session, [d.invoice_id for d in drafts])
    return [
        DraftApproval(draft, _reasons(draft, policy, reviews.get(draft.customer_external_id)),
                      approvals.get(draft.invoice_id))
        for draft in drafts
    ]


def issuable(session: Session, invoice_ids: Sequence[int], policy: ApprovalPolicy) -> list[int]:
    """Of ``invoice_ids`` (drafts claimed for finalization, in the caller's transaction, which holds their rows),
    those that do not wait for approval, in the same order. Ids that are not period or opening drafts pass."""
    waiting = {
        item.draft.invoice_id
        for item in review_drafts(session, store.drafts_for_review(session, invoice_ids=invoice_ids), policy)
        if item.awaiting
    }
    return [invoice_id for invoice_id in invoice_ids if invoice_id not in waiting]


def check_approved(session: Session, invoice_id: int, policy: ApprovalPolicy) -> None:
    """Refuse (``ApprovalRequiredError``) to issue the draft ``invoice_id`` if it waits for approval."""
    found = review_drafts(session, store.drafts_for_review(session, invoice_ids=[invoice_id]), policy)
    if found and found[0].awaiting:
        item = found[0]
        why = "; ".join(reason.message for reason in item.reasons)
        since = " (it was approved, but its content has changed since)" if item.outdated else ""
        raise ApprovalRequiredError(
            f"invoice {invoice_id} waits for approval{since}: {why}; approve it first with `billing invoices "
            f"approve {invoice_id}` (POST /v1/invoices/{invoice_id}/approve); nothing was finalized"
        )


def awaiting_approval(
    engine: Engine,
    policy: ApprovalPolicy,
    *,
    period_start: dt.date | None = None,
    customer: str | None = None,
) -> list[DraftApproval]:
    """The drafts that wait for approval (of the period starting ``period_start``, of ``customer``), in customer
    order, each with its reasons."""
    with session_scope(read_only(engine)) as session:
        drafts = store.drafts_for_review(session, period_start=period_start, customer=customer)
        return [item for item in review_drafts(session, drafts, policy) if item.awaiting]


# -- approving ---------------------------------------------------------------------------------------------------


def approve(
    engine: Engine,
    key: str | int,
    policy: ApprovalPolicy,
    *,
    by: str,
    note: str | None = None,
    now: dt.datetime | None = None,
) -> DraftApproval:
    """Approve the draft ``key`` (id or billing key) as its content is now: the scheduler and the finalization of
    its period then issue it. A draft that needs no approval may be approved too (it changes nothing). An issued
    invoice is a ConflictError, an unknown one NotFoundError."""
    instant = now or utcnow()
    with session_scope(engine) as session:
        try:
            invoice_id = store.get_invoice(session, key).id
        except InvoiceNotFoundError as error:
            raise NotFoundError(str(error)) from None
        store.lock_invoice(session, invoice_id)  # a concurrent run's rewrite of the draft waits, or went first
        drafts = store.drafts_for_review(session, invoice_ids=[invoice_id])
        if not drafts:
            status = store.get_invoice(session, invoice_id)
            what = "issued" if status.status != InvoiceStatus.DRAFT else "not a period or opening invoice"
            raise ConflictError(f"invoice {status.number or invoice_id} is {what}: only a draft is approved")
        _record(session, drafts[0], by, note, instant)
        return review_drafts(session, drafts, policy)[0]


def approve_period(
    engine: Engine,
    period_start: dt.date,
    policy: ApprovalPolicy,
    *,
    by: str,
    note: str | None = None,
    customer: str | None = None,
    now: dt.datetime | None = None,
) -> list[DraftApproval]:
    """Approve every draft of the period that waits for approval (of ``customer``, if given), in one transaction;
    the drafts approved, as approved."""
    instant = now or utcnow()
    with session_scope(engine) as session:
        drafts = store.drafts_for_review(session, period_start=period_start, customer=customer)
        for draft in drafts:
            store.lock_invoice(session, draft.invoice_id)
        # read again under the locks: what is approved is the content as it is now
        drafts = store.drafts_for_review(session, invoice_ids=[d.invoice_id for d in drafts])
        waiting = [item.draft for item in review_drafts(session, drafts, policy) if item.awaiting]
        for draft in waiting:
            _record(session, draft, by, note, instant)
        return review_drafts(session, waiting, policy)


def _record(session: Session, draft: store.DraftForReview, by: str, note: str | None, instant: dt.datetime) -> None:
    values = {"content_hash": draft.content_hash, "approved_by": by, "note": note, "approved_at": instant}
    done = session.execute(
        update(InvoiceApprovalRow).where(InvoiceApprovalRow.invoice_id == draft.invoice_id).values(**values)
    )
    if not done.rowcount:  # type: ignore[attr-defined]
        session.execute(insert(InvoiceApprovalRow).values(invoice_id=draft.invoice_id, **values))


def _approvals(session: Session, invoice_ids: Iterable[int]) -> dict[int, Approval]:
    ids = sorted(set(invoice_ids))
    found: dict[int, Approval] = {}
    for offset in range(0, len(ids), 5000):
        rows = session.execute(
            select(InvoiceApprovalRow).where(InvoiceApprovalRow.invoice_id.in_(ids[offset : offset + 5000]))
        ).scalars()
        found.update(
            {row.invoice_id: Approval(row.content_hash, row.approved_by, row.approved_at, row.note) for row in rows}
        )
    return found


# -- customers flagged for review ----------------------------------------------------------------------------------


def set_customer_review(
    engine: Engine,
    customer: str,
    on: bool,
    *,
    by: str,
    note: str | None = None,
    now: dt.datetime | None = None,
) -> CustomerReview | None:
    """Flag the customer for review (``on``: each of its drafts waits for approval) or clear the flag; the flag
    as it now stands. NotFoundError for an unknown customer."""
    with session_scope(engine) as session:
        if repository.get_customer(session, customer) is None:
            raise NotFoundError(f"no customer {customer!r}")
        session.execute(delete(CustomerReviewRow).where(CustomerReviewRow.customer_external_id == customer))
        if not on:
            return None
        flagged = CustomerReview(customer, note, by, now or utcnow())
        session.execute(
            insert(CustomerReviewRow).values(
                customer_external_id=customer, note=note, flagged_by=by, flagged_at=flagged.flagged_at
            )
        )
        return flagged


def customer_review(engine: Engine, customer: str) -> CustomerReview | None:
    """The customer's review flag, if it is flagged."""
    with session_scope(read_only(engine)) as session:
        return _reviews(session, {customer}).get(customer)


def _reviews(session: Session, customers: Iterable[str]) -> dict[str, CustomerReview]:
    wanted = sorted(set(customers))
    found: dict[str, CustomerReview] = {}
    for offset in range(0, len(wanted), 5000):
        rows = session.execute(
            select(CustomerReviewRow).where(CustomerReviewRow.customer_external_id.in_(wanted[offset : offset + 5000]))
        ).scalars()
        found.update(
            {r.customer_external_id: CustomerReview(r.customer_external_id, r.note, r.flagged_by, r.flagged_at)
             for r in rows}
        )
    return found


# -- as JSON -------------------------------------------------------------------------------------------------------


def draft_approval_json(item: DraftApproval) -> dict[str, Any]:
    """A draft and its approval as the API and ``--json`` give them."""
    draft = item.draft
    approval = item.approval
    return {
        "invoice_id": draft.invoice_id,
        "billing_key": draft.billing_key,
        "scope": draft.scope.value,
        "customer": draft.customer_external_id,
        "currency": draft.currency,
        "period_start": draft.period_start.isoformat(),
        "period_end": draft.period_end.isoformat(),
        "total": format_amount(draft.total, draft.currency),
        "content_hash": draft.content_hash,
        "awaiting_approval": item.awaiting,
        "reasons": [{"code": r.code.value, "message": r.message} for r in item.reasons],
        "approved": item.approved,
        "approval_outdated": item.outdated,
        "approved_by": approval.approved_by if approval else None,
        "approved_at": iso_instant(approval.approved_at) if approval else None,
        "approval_note": approval.note if approval else None,
    }


def review_json(review: CustomerReview | None, customer: str) -> dict[str, Any]:
    """A customer's review flag as JSON."""
    return {
        "customer": customer,
        "review": review is not None,
        "note": review.note if review else None,
        "flagged_by": review.flagged_by if review else None,
        "flagged_at": iso_instant(review.flagged_at) if review else None,
    }
