"""Coupons: create one, issue it to a customer, apply it to the customer's subscriptions, and count how many were
issued and redeemed (the service the CLI and the HTTP API call; ``billing.core.coupons`` computes the discounts).

Rules (the README's "Coupons and discounts"):
  - a coupon takes a percentage (0 < P ≤ 100) or a fixed amount in one currency off; ``once`` reduces one billing
    period, ``repeating`` the first ``months`` billing periods it reduces, ``forever`` every one;
  - ``issue`` hands it to a customer; ``apply`` (which issues it if needed) attaches it to the customer's
    subscriptions from the next billing period: every period that starts after the day it is applied (in the
    customer's timezone);
  - from ``expires_on`` (the start of that day in the customer's timezone) a coupon can no longer be issued nor
    applied; one applied before keeps its duration;
  - ``max_redemptions`` caps the customers it can be applied to;
  - it is **redeemed** by a customer when it first reduces one of the customer's finalized invoices.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from billing.core.coupons import AppliedCoupon, Coupon, Duration
from billing.core.domain import Customer
from billing.core.periods import Period
from billing.db import coupon_tables, repository, session_scope
from billing.db.coupon_tables import CouponRow, CustomerCoupon, CustomerCouponRow
from billing.db.tables import CustomerRow
from billing.errors import BillingInputError, ConflictError, NotFoundError
from dbkit import for_update, read_only, utcnow
from pricing_plans.models import Catalog
from pricing_plans.money import MAX_AMOUNT, format_amount, is_known_currency, round_money

__all__ = [
    "CouponHolder",
    "CouponStats",
    "applied_coupons",
    "apply_coupon",
    "coupon_json",
    "create_coupon",
    "get_coupon",
    "holder_json",
    "issue_coupon",
    "list_coupons",
    "parse_coupon",
]

MAX_REDEMPTIONS = 1_000_000_000  # (the database's whole numbers hold up to 2,147,483,647)
MAX_MONTHS = 1200
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class CouponHolder:
    """A customer holding a coupon: issued, applied (the day), redeemed (when)."""

    customer: str
    issued_at: dt.datetime
    applied_on: dt.date | None
    redeemed_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class CouponStats:
    """A coupon with the customers it was issued, applied to and redeemed by."""

    coupon: Coupon
    holders: tuple[CouponHolder, ...] = ()

    @property
    def issued(self) -> int:
        return len(self.holders)

    @property
    def applied(self) -> int:
        return sum(1 for h in self.holders if h.applied_on is not None)

    @property
    def redeemed(self) -> int:
        return sum(1 for h in self.holders if h.redeemed_at is not None)


def parse_coupon(
    code: str,
    *,
    percent: str | Decimal | None,
    amount: str | Decimal | None,
    currency: str | None,
    duration: str,
    months: int | None = None,
    plans: Collection[str] = (),
    max_redemptions: int | None = None,
    expires_on: dt.date | None = None,
    today: dt.date | None = None,
) -> Coupon:
    """A coupon from its fields as given (a currency in any case; ``today``: the day it is created, by default
    the clock's); BillingInputError naming every field that is wrong."""
    problems: list[str] = []
    if not _CODE.fullmatch(code):
        problems.append(
            f"code: expected 1 to 64 letters, digits, '_', '-' or '.', starting with a letter or digit, got {code!r}"
        )
    if percent is None and amount is None:
        problems.append("percent_off: give a percentage off, or an amount off with its currency")
    elif percent is not None and amount is not None:
        problems.append("amount_off: give a percentage off or an amount off, not both")
    percent_off = _decimal("percent_off", percent, problems)
    if percent_off is not None and not Decimal(0) < percent_off <= 100:
        problems.append(f"percent_off: expected a number above 0 and at most 100, got {percent}")
    amount_off = _decimal("amount_off", amount, problems)
    currency = None if currency is None else currency.strip().upper()
    amount_off = _amount(amount_off, currency, problems)
    if amount_off is None and currency is not None and amount is None:
        problems.append("currency: only a coupon with an amount off has a currency")
    kind = _duration(duration, months, problems)
    if max_redemptions is not None and not 1 <= max_redemptions <= MAX_REDEMPTIONS:
        problems.append(
            f"max_redemptions: expected a whole number from 1 to {MAX_REDEMPTIONS:,}, got {max_redemptions}"
        )
    # (today where the day is earliest on earth: a coupon expiring today there has expired everywhere)
    if expires_on is not None and expires_on <= (today or (utcnow() - dt.timedelta(hours=12)).date()):
        problems.append(f"expires_on: {expires_on.isoformat()} has passed: the coupon could never be issued")
    if problems:
        raise BillingInputError.of(problems)
    return Coupon(
        code=code,
        duration=kind,
        percent_off=percent_off,
        amount_off=amount_off,
        currency=currency if amount_off is not None else None,
        months=months if kind is Duration.REPEATING else None,
        plans=tuple(dict.fromkeys(plans)),
        max_redemptions=max_redemptions,
        expires_on=expires_on,
    )


def _decimal(field: str, value: str | Decimal | None, problems: list[str]) -> Decimal | None:
    if value is None or (isinstance(value, Decimal) and value.is_finite()):
        return value
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        problems.append(f"{field}: expected a decimal number, got {value!r}")
        return None
    return number


def _amount(amount: Decimal | None, currency: str | None, problems: list[str]) -> Decimal | None:
    if amount is None:
        return None
    if currency is None or not is_known_currency(currency):
        problems.append(f"currency: an amount off needs its ISO 4217 currency code, got {currency!r}")
        return None
    if amount <= 0 or amount >= MAX_AMOUNT or round_money(amount, currency) != amount:
        problems.append(
            f"amount_off: expected a positive amount in whole minor units of {currency} below {MAX_AMOUNT:,}, "
            f"got {amount}"
        )
        return None
    return amount


def _duration(duration: str, months: int | None, problems: list[str]) -> Duration:
    try:
        kind = Duration(duration)
    except ValueError:
        problems.append(f"duration: expected once, repeating or forever, got {duration!r}")
        return Duration.ONCE
    if kind is Duration.REPEATING and (months is None or not 1 <= months <= MAX_MONTHS):
        problems.append(
            f"months: a repeating coupon needs the number of billing periods it reduces (1 to {MAX_MONTHS})"
        )
    elif kind is not Duration.REPEATING and months is not None:
        problems.append(f"months: only a repeating coupon has a number of billing periods, not a {kind.value} one")
    return kind


def create_coupon(engine: Engine, catalog: Catalog, coupon: Coupon) -> Coupon:
    """Store a new coupon; its plans must be the catalog's. ConflictError if the code is taken."""
    unknown = [code for code in coupon.plans if code not in catalog.plans]
    if unknown:
        known = ", ".join(sorted(catalog.plans)) or "none"
        raise BillingInputError(f"plans: unknown plan {', '.join(map(repr, unknown))} (known plans: {known})")
    with session_scope(engine) as session:
        if coupon_tables.coupon_by_code(session, coupon.code) is not None:
            raise ConflictError(f"code: a coupon {coupon.code!r} exists already")
        row = CouponRow(
            code=coupon.code,
            percent_off=coupon.percent_off,
            amount_off=coupon.amount_off,
            currency=coupon.currency,
            duration=coupon.duration.value,
            months=coupon.months,
            plans=",".join(coupon.plans),
            max_redemptions=coupon.max_redemptions,
            expires_on=coupon.expires_on,
            created_at=utcnow(),
        )
        session.add(row)
        session.flush()
        return coupon_tables.coupon_from_row(row)


def issue_coupon(engine: Engine, code: str, customer: str, *, now: dt.datetime | None = None) -> CustomerCoupon:
    """Hand coupon ``code`` to ``customer``. NotFoundError for an unknown coupon or customer; BillingInputError
    once it has expired; ConflictError if the customer holds it already."""
    instant = now or utcnow()
    with session_scope(engine) as session:
        row, owner, held = _load(session, code, customer)
        _check_usable(row, owner, instant)
        if held is not None:
            raise ConflictError(f"customer {customer!r} holds coupon {code!r} already (issued {_when(held.issued_at)})")
        session.add(CustomerCouponRow(coupon_id=row.id, customer_id=_customer_id(session, customer), issued_at=instant))
    return _held(engine, code, customer)


def apply_coupon(engine: Engine, code: str, customer: str, *, now: dt.datetime | None = None) -> CustomerCoupon:
    """Attach coupon ``code`` to ``customer``'s subscriptions from the next billing period (issuing it first if
    the customer does not hold it). Errors as ``issue_coupon``; ConflictError if it is applied already or has
    reached its maximum of redemptions; BillingInputError for an amount off in another currency than the
    customer's."""
    instant = now or utcnow()
    with session_scope(engine) as session:
        row, owner, held = _load(session, code, customer, lock=True)
        _check_usable(row, owner, instant)
        if held is not None and held.applied_on is not None:
            raise ConflictError(f"coupon {code!r} is applied to customer {customer!r} already (on {held.applied_on})")
        if row.currency is not None and row.currency != owner.currency:
            raise BillingInputError(
                f"currency: coupon {code!r} takes {row.currency} off; customer {customer!r} is billed in "
                f"{owner.currency}"
            )
        if row.max_redemptions is not None and coupon_tables.applied_count(session, row.id) >= row.max_redemptions:
            raise ConflictError(f"coupon {code!r} has reached its maximum of {row.max_redemptions} redemptions")
        if held is None:
            held = CustomerCouponRow(coupon_id=row.id, customer_id=_customer_id(session, customer), issued_at=instant)
            session.add(held)
        held.applied_on = _local_day(owner, instant)
        held.applied_at = instant
    return _held(engine, code, customer)


def _load(
    session: Session, code: str, customer: str, *, lock: bool = False
) -> tuple[CouponRow, Customer, CustomerCouponRow | None]:
    statement = select(CouponRow).where(CouponRow.code == code)
    row = session.scalars(for_update(session, statement) if lock else statement).one_or_none()
    if row is None:
        raise NotFoundError(f"unknown coupon {code!r}")
    owner = repository.get_customer(session, customer)
    if owner is None:
        raise NotFoundError(f"unknown customer {customer!r}")
    held = session.scalars(
        select(CustomerCouponRow)
        .join(CustomerRow, CustomerRow.id == CustomerCouponRow.customer_id)
        .where(CustomerCouponRow.coupon_id == row.id, CustomerRow.external_id == customer)
    ).one_or_none()
    return row, owner, held


def _customer_id(session: Session, customer: str) -> int:
    return int(session.execute(select(CustomerRow.id).where(CustomerRow.external_id == customer)).scalar_one())


def _local_day(customer: Customer, instant: dt.datetime) -> dt.date:
    return instant.astimezone(ZoneInfo(customer.timezone)).date()


def _check_usable(row: CouponRow, customer: Customer, instant: dt.datetime) -> None:
    if row.expires_on is not None and _local_day(customer, instant) >= row.expires_on:
        raise BillingInputError(
            f"coupon {row.code!r} expired on {row.expires_on.isoformat()} (in the customer's timezone, "
            f"{customer.timezone}): it can no longer be issued nor applied"
        )


def _when(instant: dt.datetime) -> str:
    return instant.isoformat(timespec="seconds")


def _held(engine: Engine, code: str, customer: str) -> CustomerCoupon:
    with session_scope(read_only(engine)) as session:
        return coupon_tables.customer_coupons(session, [customer], code=code)[0]


def applied_coupons(session: Session, customers: Collection[str], period: Period) -> dict[str, list[AppliedCoupon]]:
    """The coupons applied to ``customers``, in the order they apply, each with the number of billing periods
    before ``period`` it already reduced (read from the invoices' discount lines, ``periods_reduced``)."""
    held = [c for c in coupon_tables.customer_coupons(session, customers) if c.applied_on is not None]
    if not held:
        return {}
    used = coupon_tables.periods_reduced(session, {c.customer for c in held}, period)
    found: dict[str, list[AppliedCoupon]] = {}
    for c in held:
        assert c.applied_on is not None
        applied = AppliedCoupon(c.coupon, c.applied_on, used.get((c.customer, c.coupon.code), 0))
        found.setdefault(c.customer, []).append(applied)
    return found


def list_coupons(engine: Engine) -> list[CouponStats]:
    """Every coupon by code, with its holders."""
    with session_scope(read_only(engine)) as session:
        rows = session.scalars(select(CouponRow).order_by(CouponRow.code)).all()
        held = coupon_tables.customer_coupons(session)
        redeemed = coupon_tables.redemptions(session)
    by_code: dict[str, list[CouponHolder]] = {}
    for c in held:
        holder = CouponHolder(c.customer, c.issued_at, c.applied_on, redeemed.get((c.customer, c.coupon.code)))
        by_code.setdefault(c.coupon.code, []).append(holder)
    return [
        CouponStats(
            coupon_tables.coupon_from_row(row), tuple(sorted(by_code.get(row.code, ()), key=lambda h: h.customer))
        )
        for row in rows
    ]


def get_coupon(engine: Engine, code: str) -> CouponStats:
    """One coupon with its holders; NotFoundError for an unknown code."""
    for stats in list_coupons(engine):
        if stats.coupon.code == code:
            return stats
    raise NotFoundError(f"unknown coupon {code!r}")


def coupon_json(coupon: Coupon, stats: CouponStats | None = None) -> dict[str, Any]:
    """A coupon as the API and ``--json`` give it out; with its counts when ``stats`` is given."""
    data: dict[str, Any] = {
        "code": coupon.code,
        "percent_off": None if coupon.percent_off is None else f"{coupon.percent_off.normalize():f}",
        "amount_off": None if coupon.amount_off is None else format_amount(coupon.amount_off, coupon.currency or ""),
        "currency": coupon.currency,
        "duration": coupon.duration.value,
        "months": coupon.months,
        "plans": list(coupon.plans),
        "max_redemptions": coupon.max_redemptions,
        "expires_on": None if coupon.expires_on is None else coupon.expires_on.isoformat(),
        "created_at": None if coupon.created_at is None else _z(coupon.created_at),
    }
    if stats is not None:
        data["issued"] = stats.issued
        data["applied"] = stats.applied
        data["redeemed"] = stats.redeemed
        data["redemption_rate"] = _rate(stats.redeemed, stats.issued)
    return data


def holder_json(
    code: str, holder: CouponHolder | CustomerCoupon, redeemed_at: dt.datetime | None = None
) -> dict[str, Any]:
    """A customer's coupon: ``{coupon, customer, issued_at, applied_on, redeemed_at}``."""
    if isinstance(holder, CouponHolder):
        redeemed_at = holder.redeemed_at
    return {
        "coupon": code,
        "customer": holder.customer,
        "issued_at": _z(holder.issued_at),
        "applied_on": None if holder.applied_on is None else holder.applied_on.isoformat(),
        "redeemed_at": None if redeemed_at is None else _z(redeemed_at),
    }


def _z(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _rate(redeemed: int, issued: int) -> str | None:
    """redeemed / issued as a decimal string to 4 places (0.3333); None when none was issued."""
    if issued == 0:
        return None
    return str((Decimal(redeemed) / Decimal(issued)).quantize(Decimal("0.0001")))
