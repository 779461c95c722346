"""Coupons and the customers they are issued to (created by migration 0017), and the queries that read the
coupons' discount lines back from the invoices.

A coupon row never changes once created. A customer's coupon row records when it was issued and, once applied,
the day it was applied (its discounts start with the next billing period). What a coupon has taken off is never
stored twice: the invoices' discount lines are the record, and the number of billing periods a coupon already
reduced, and when it was first redeemed, are read from them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, String, Text, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from billing.core.coupons import Coupon, Duration
from billing.core.periods import Period
from billing.db.tables import BillingBase, CustomerRow
from dbkit.clock import utcnow
from dbkit.types import ID_TYPE, ExactDecimal, UTCDateTime
from invoices.model import InvoiceKind, InvoiceScope, InvoiceStatus, LineKind
from invoices.tables import InvoiceLineRow, InvoiceRow

__all__ = [
    "CouponRow",
    "CustomerCoupon",
    "CustomerCouponRow",
    "coupon_by_code",
    "coupon_from_row",
    "customer_coupons",
    "periods_reduced",
    "redemptions",
]

_CHUNK = 5_000


class CouponRow(BillingBase):
    __tablename__ = "coupons"
    __table_args__ = (
        CheckConstraint("duration IN ('once', 'repeating', 'forever')", name="duration"),
        CheckConstraint("(percent_off IS NULL) <> (amount_off IS NULL)", name="one_kind"),
        CheckConstraint("(amount_off IS NULL) = (currency IS NULL)", name="amount_currency"),
    )

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    percent_off: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    amount_off: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    currency: Mapped[str | None] = mapped_column(String(3))
    duration: Mapped[str] = mapped_column(String(16))
    months: Mapped[int | None]
    plans: Mapped[str] = mapped_column(Text, default="")  # plan codes separated by ","; "" for every plan
    max_redemptions: Mapped[int | None]
    expires_on: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class CustomerCouponRow(BillingBase):
    """A coupon issued to a customer, and applied to its subscriptions from the day after ``applied_on``."""

    __tablename__ = "customer_coupons"
    __table_args__ = (
        UniqueConstraint("coupon_id", "customer_id"),
        Index("ix_customer_coupons_customer", "customer_id"),
    )

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    coupon_id: Mapped[int] = mapped_column(ForeignKey("coupons.id", ondelete="RESTRICT"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="RESTRICT"))
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    applied_on: Mapped[dt.date | None] = mapped_column(Date)
    applied_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


@dataclass(frozen=True, slots=True)
class CustomerCoupon:
    """A coupon as one customer holds it."""

    coupon: Coupon
    customer: str
    issued_at: dt.datetime
    applied_on: dt.date | None
    applied_at: dt.datetime | None


def coupon_from_row(row: CouponRow) -> Coupon:
    return Coupon(
        code=row.code,
        duration=Duration(row.duration),
        percent_off=row.percent_off,
        amount_off=row.amount_off,
        currency=row.currency,
        months=row.months,
        plans=tuple(p for p in row.plans.split(",") if p),
        max_redemptions=row.max_redemptions,
        expires_on=row.expires_on,
        created_at=row.created_at,
    )


def coupon_by_code(session: Session, code: str) -> CouponRow | None:
    return session.scalars(select(CouponRow).where(CouponRow.code == code)).one_or_none()


def customer_coupons(
    session: Session, customers: Collection[str] | None = None, *, code: str | None = None
) -> list[CustomerCoupon]:
    """The coupons issued to ``customers`` (every customer: None), or only coupon ``code``'s, in the order they
    apply: by the day applied, then code (issued, not applied, last)."""
    statement = (
        select(CouponRow, CustomerCouponRow, CustomerRow.external_id)
        .join(CustomerCouponRow, CustomerCouponRow.coupon_id == CouponRow.id)
        .join(CustomerRow, CustomerRow.id == CustomerCouponRow.customer_id)
    )
    if code is not None:
        statement = statement.where(CouponRow.code == code)
    found: list[CustomerCoupon] = []
    wanted = None if customers is None else sorted(set(customers))
    chunks = [None] if wanted is None else [wanted[i : i + _CHUNK] for i in range(0, len(wanted), _CHUNK)]
    for chunk in chunks:
        where = statement if chunk is None else statement.where(CustomerRow.external_id.in_(chunk))
        for coupon, held, customer in session.execute(where):
            found.append(
                CustomerCoupon(coupon_from_row(coupon), customer, held.issued_at, held.applied_on, held.applied_at)
            )
    found.sort(key=lambda c: (c.applied_on is None, c.applied_on or dt.date.min, c.coupon.code, c.customer))
    return found


def _discount_lines(
    session: Session, customers: Collection[str] | None, *statuses_out: str
) -> Iterable[tuple[str, dt.date, dt.date, dt.datetime | None, str, str]]:
    """(customer, period start, period end, finalized at, status, details) of the discount lines of the period
    invoices and progressive invoices (which bill a period's usage before it ends)."""
    statement = (
        select(
            InvoiceRow.customer_external_id,
            InvoiceRow.period_start,
            InvoiceRow.period_end,
            InvoiceRow.finalized_at,
            InvoiceRow.status,
            InvoiceLineRow.details,
        )
        .join(InvoiceLineRow, InvoiceLineRow.invoice_id == InvoiceRow.id)
        .where(
            InvoiceLineRow.kind == LineKind.DISCOUNT.value,
            InvoiceRow.kind == InvoiceKind.INVOICE.value,
            InvoiceRow.scope.in_((InvoiceScope.PERIOD.value, InvoiceScope.PROGRESSIVE.value)),
            InvoiceRow.status.not_in(statuses_out),
        )
    )
    if customers is None:
        yield from (tuple(row) for row in session.execute(statement))
        return
    wanted = sorted(set(customers))
    for offset in range(0, len(wanted), _CHUNK):
        chunk = wanted[offset : offset + _CHUNK]
        yield from (tuple(row) for row in session.execute(statement.where(InvoiceRow.customer_external_id.in_(chunk))))


def _code(details: str) -> str | None:
    code = json.loads(details).get("coupon")
    return None if code is None else str(code)


def periods_reduced(session: Session, customers: Collection[str], period: Period) -> dict[tuple[str, str], int]:
    """How many billing periods other than ``period`` each (customer, coupon code) reduced before it: the
    distinct billing periods (start and end) of the customer's period and progressive invoices (not void) with
    its discount line that are issued, or end before ``period`` (a draft; by start for equal ends). A customer
    with billing periods of different lengths (a weekly and a monthly plan) has them counted in the order a
    billing run writes them (by their ends), so a ``once`` coupon reduces one of them, never two."""
    seen: set[tuple[str, str, dt.date, dt.date]] = set()
    for customer, start, end, _, status, details in _discount_lines(session, customers, InvoiceStatus.VOID.value):
        code = _code(details)
        if code is None or (start, end) == (period.start, period.end):
            continue
        if status != InvoiceStatus.DRAFT.value or (end, start) < (period.end, period.start):
            seen.add((customer, code, start, end))
    counts: dict[tuple[str, str], int] = {}
    for customer, code, _, _ in seen:
        counts[(customer, code)] = counts.get((customer, code), 0) + 1
    return counts


def redemptions(session: Session, customers: Collection[str] | None = None) -> dict[tuple[str, str], dt.datetime]:
    """When each (customer, coupon code) was redeemed: the finalization of the first issued invoice its discount
    line reduced (a redemption stays one even if that invoice is later voided)."""
    first: dict[tuple[str, str], dt.datetime] = {}
    for customer, _, _, finalized_at, _, details in _discount_lines(session, customers, InvoiceStatus.DRAFT.value):
        code = _code(details)
        if code is None or finalized_at is None:
            continue
        key = (customer, code)
        if key not in first or finalized_at < first[key]:
            first[key] = finalized_at
    return first


def applied_count(session: Session, coupon_id: int) -> int:
    """How many customers the coupon is applied to."""
    statement = select(func.count()).where(
        CustomerCouponRow.coupon_id == coupon_id, CustomerCouponRow.applied_on.is_not(None)
    )
    return int(session.execute(statement).scalar_one())
