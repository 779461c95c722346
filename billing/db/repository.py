"""Customers and subscriptions in the database: the only place that maps rows to domain records and back.

Every function takes a ``Session`` inside the caller's transaction and neither commits nor validates: the
service layer (``billing.customers``) checks input, this module reads and writes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from billing.core.domain import CancelReason, Customer, QuantityChange, Subscription, SubscriptionStatus
from billing.core.periods import Period
from billing.db.tables import CustomerRow, SubscriptionQuantityRow, SubscriptionRow
from dbkit import among, is_postgresql, keyset_page, page_of, utcnow

__all__ = [
    "add_customer",
    "add_subscription",
    "cancel_subscription",
    "customers_by_external_id",
    "customers_page",
    "get_customer",
    "get_subscription",
    "list_customers",
    "list_subscriptions",
    "lock_customers",
    "set_quantity",
    "set_webhook_secret",
    "subscription_starts",
    "subscriptions_active_between",
    "subscriptions_of",
    "subscriptions_of_customers",
    "subscriptions_page",
]

# Ids per IN (...) query: far below SQLite's and PostgreSQL's limits on bound parameters.
_CHUNK = 5_000


# -- customers -------------------------------------------------------------------------------------------


_CUSTOMER_COLUMNS = tuple(
    getattr(CustomerRow, name)
    for name in (
        "id", "external_id", "name", "email", "currency", "timezone", "locale", "address", "webhook_url", "tax_rate",
        "webhook_secret", "country", "region", "tax_id", "tax_exempt_reason", "archived_at",
    )
)


def _customer_of(values: Sequence[Any]) -> Customer:
    """A customer from the values of ``_CUSTOMER_COLUMNS``, in their order (a Customer's own)."""
    (id_, external_id, name, email, currency, timezone, locale, address, webhook_url, tax_rate, secret, *tax) = values
    lines = tuple(address.split("\n")) if address else ()
    return Customer(
        id_, external_id, name, email, currency, timezone, locale, lines, webhook_url, tax_rate, secret, *tax
    )


def _customer(row: CustomerRow) -> Customer:
    return Customer(
        id=row.id,
        external_id=row.external_id,
        name=row.name,
        email=row.email,
        currency=row.currency,
        timezone=row.timezone,
        locale=row.locale,
        address=tuple(row.address.split("\n")) if row.address else (),
        webhook_url=row.webhook_url,
        tax_rate=row.tax_rate,
        webhook_secret=row.webhook_secret,
        country=row.country,
        region=row.region,
        tax_id=row.tax_id,
        tax_exempt_reason=row.tax_exempt_reason,
        archived_at=row.archived_at,
    )


def add_customer(
    session: Session,
    *,
    external_id: str,
    name: str,
    email: str | None,
    currency: str,
    timezone: str,
    locale: str,
    address: Sequence[str] = (),
    webhook_url: str | None = None,
    tax_rate: Decimal = Decimal(0),
    webhook_secret: str | None = None,
    country: str | None = None,
    region: str | None = None,
    tax_id: str | None = None,
    tax_exempt_reason: str | None = None,
) -> Customer:
    """Insert a customer (flushed, so a duplicate external id raises ``IntegrityError`` here)."""
    row = CustomerRow(
        external_id=external_id,
        name=name,
        email=email,
        currency=currency,
        timezone=timezone,
        locale=locale,
        address="\n".join(address),
        webhook_url=webhook_url,
        tax_rate=tax_rate,
        webhook_secret=webhook_secret,
        country=country,
        region=region,
        tax_id=tax_id,
        tax_exempt_reason=tax_exempt_reason,
    )
    session.add(row)
    session.flush()
    return _customer(row)


def _customer_row(session: Session, external_id: str, *, for_update: bool = False) -> CustomerRow | None:
    query = select(CustomerRow).where(CustomerRow.external_id == external_id)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def get_customer(session: Session, external_id: str, *, for_update: bool = False) -> Customer | None:
    """The customer with ``external_id``, or None. ``for_update`` locks its row (PostgreSQL) until commit."""
    row = _customer_row(session, external_id, for_update=for_update)
    return None if row is None else _customer(row)


# What ``update_customer`` may change (the currency and the external id never change).
UPDATABLE = (
    "name", "email", "address", "country", "region", "tax_id", "tax_exempt_reason", "tax_rate", "locale", "timezone",
    "webhook_url", "webhook_secret", "archived_at",
)


def update_customer(session: Session, external_id: str, changes: dict[str, Any]) -> Customer | None:
    """Set the ``changes`` (names from ``UPDATABLE``; an address as lines) on a customer; the customer as it is now,
    or None if there is no such customer."""
    row = _customer_row(session, external_id, for_update=True)
    if row is None:
        return None
    for name, value in changes.items():
        if name not in UPDATABLE:
            raise ValueError(f"{name}: a customer's {name} cannot be changed")
        setattr(row, name, "\n".join(value) if name == "address" else value)
    session.flush()
    return _customer(row)


def lock_customers(session: Session, external_ids: Iterable[str]) -> None:
    """Lock these customers' rows until commit (PostgreSQL; SQLite's write transaction holds the database), in
    external id order, as ``billing.credits`` does one by one. Every transaction that takes a customer's row and a
    number sequence's takes the customer's first, so that two never wait for each other in a circle."""
    wanted = sorted(set(external_ids))
    if not wanted or not is_postgresql(session):
        return
    for offset in range(0, len(wanted), 5_000):
        statement = (
            select(CustomerRow.id)
            .where(CustomerRow.external_id.in_(wanted[offset : offset + 5_000]))
            .order_by(CustomerRow.external_id)
            .with_for_update()
        )
        session.execute(statement).all()


def set_webhook_secret(session: Session, external_id: str, secret: str | None) -> Customer | None:
    """Replace a customer's webhook secret; the customer as it is now, or None if there is no such customer."""
    row = _customer_row(session, external_id, for_update=True)
    if row is None:
        return None
    row.webhook_secret = secret
    session.flush()
    return _customer(row)


def list_customers(session: Session) -> list[Customer]:
    """Every customer, by external id."""
    return [_customer(row) for row in session.scalars(select(CustomerRow).order_by(CustomerRow.external_id))]


def customers_page(
    session: Session, *, limit: int, after: str | None = None, before: str | None = None
) -> tuple[list[Customer], bool]:
    """One page of the customers by external id (``dbkit.keyset_page``), and whether more lie beyond it."""
    statement = keyset_page(select(CustomerRow), CustomerRow.external_id, limit=limit, after=after, before=before)
    rows, more = page_of(session.scalars(statement).all(), limit=limit, before=before)
    return [_customer(row) for row in rows], more


def customers_by_external_id(session: Session, ids: Iterable[str] | None = None) -> dict[str, Customer]:
    """The customers with the given external ids (all customers when ``ids`` is None), keyed by external id.

    Unknown ids are simply absent from the result.
    """
    if ids is None:
        return {c.external_id: c for c in list_customers(session)}
    wanted = sorted(set(ids))
    found: dict[str, Customer] = {}
    for i in range(0, len(wanted), _CHUNK):
        # Plain rows, not mapped objects: their fields are all a Customer needs, and nothing is kept to flush.
        query = select(*_CUSTOMER_COLUMNS).where(among(session, CustomerRow.external_id, wanted[i : i + _CHUNK]))
        found.update((values[1], _customer_of(values)) for values in session.execute(query))
    return found


# -- subscriptions ---------------------------------------------------------------------------------------


def _subscription(row: SubscriptionRow, customer_external_id: str) -> Subscription:
    return Subscription(
        id=row.id,
        customer_id=row.customer_id,
        customer_external_id=customer_external_id,
        plan_code=row.plan_code,
        plan_version=row.plan_version,
        start_date=row.start_date,
        end_date=row.end_date,
        status=SubscriptionStatus(row.status),
        cancel_reason=None if row.cancel_reason is None else CancelReason(row.cancel_reason),
        previous_subscription_id=row.previous_subscription_id,
        chain_start=row.chain_start,
    )


_STATUSES = {status.value: status for status in SubscriptionStatus}
_REASONS = {reason.value: reason for reason in CancelReason}


def _subscription_of(values: Sequence[Any]) -> Subscription:
    """A subscription from the values of ``_SUBSCRIPTION_COLUMNS`` and its customer's external id, in order."""
    (id_, customer_id, plan_code, plan_version, start_date, end_date, status, reason, previous, chain, external_id) = (
        values
    )
    return Subscription(
        id=id_,
        customer_id=customer_id,
        customer_external_id=external_id,
        plan_code=plan_code,
        plan_version=plan_version,
        start_date=start_date,
        end_date=end_date,
        status=_STATUSES[status],
        cancel_reason=None if reason is None else _REASONS[reason],
        previous_subscription_id=previous,
        chain_start=chain,
    )


def _with_customer() -> Select[tuple[SubscriptionRow, str]]:
    return select(SubscriptionRow, CustomerRow.external_id).join(
        CustomerRow, CustomerRow.id == SubscriptionRow.customer_id
    )


def add_subscription(
    session: Session,
    *,
    customer: Customer,
    plan_code: str,
    plan_version: int,
    start_date: dt.date,
    previous_subscription_id: int | None = None,
    quantity: int = 1,
    chain_start: dt.date | None = None,
) -> Subscription:
    """Insert an active, open-ended subscription with ``quantity`` seats from its start (``chain_start``: the
    start of the chain of plan changes it continues)."""
    row = SubscriptionRow(
        customer_id=customer.id,
        plan_code=plan_code,
        plan_version=plan_version,
        start_date=start_date,
        status=SubscriptionStatus.ACTIVE.value,
        previous_subscription_id=previous_subscription_id,
        chain_start=chain_start,
    )
    session.add(row)
    session.flush()
    if quantity != 1:
        session.add(SubscriptionQuantityRow(subscription_id=row.id, effective_from=start_date, quantity=quantity))
        session.flush()
    return _with_quantities(session, [_subscription(row, customer.external_id)])[0]


def get_subscription(session: Session, subscription_id: int, *, for_update: bool = False) -> Subscription | None:
    """The subscription with ``subscription_id``, or None. ``for_update`` locks its row (PostgreSQL)."""
    query = _with_customer().where(SubscriptionRow.id == subscription_id)
    if for_update:
        query = query.with_for_update(of=SubscriptionRow)
    found = session.execute(query).one_or_none()
    return None if found is None else _with_quantities(session, [_subscription(*found)])[0]


def list_subscriptions(
    session: Session, customer: str | None = None, status: SubscriptionStatus | str | None = None
) -> list[Subscription]:
    """Subscriptions, optionally of one customer (by external id) and of one status; by customer, start, id."""
    query = _with_customer()
    if customer is not None:
        query = query.where(CustomerRow.external_id == customer)
    if status is not None:
        query = query.where(SubscriptionRow.status == str(status))
    query = query.order_by(CustomerRow.external_id, SubscriptionRow.start_date, SubscriptionRow.id)
    return _with_quantities(session, [_subscription(row, external_id) for row, external_id in session.execute(query)])


def subscriptions_page(
    session: Session,
    *,
    limit: int,
    after: int | None = None,
    before: int | None = None,
    customer: str | None = None,
    status: SubscriptionStatus | str | None = None,
) -> tuple[list[Subscription], bool]:
    """One page of the subscriptions by id (``dbkit.keyset_page``), optionally of one customer (by external id)
    and of one status, and whether more lie beyond it."""
    query = _with_customer()
    if customer is not None:
        query = query.where(CustomerRow.external_id == customer)
    if status is not None:
        query = query.where(SubscriptionRow.status == str(status))
    statement = keyset_page(query, SubscriptionRow.id, limit=limit, after=after, before=before)
    rows, more = page_of(session.execute(statement).all(), limit=limit, before=before)
    return _with_quantities(session, [_subscription(row, external_id) for row, external_id in rows]), more


def subscriptions_of(session: Session, customer_id: int, plan_code: str | None = None) -> list[Subscription]:
    """One customer's subscriptions (to ``plan_code`` only, if given), by start date."""
    query = _with_customer().where(SubscriptionRow.customer_id == customer_id)
    if plan_code is not None:
        query = query.where(SubscriptionRow.plan_code == plan_code)
    query = query.order_by(SubscriptionRow.start_date, SubscriptionRow.id)
    return _with_quantities(session, [_subscription(row, external_id) for row, external_id in session.execute(query)])


def subscriptions_of_customers(session: Session, external_ids: Iterable[str]) -> list[Subscription]:
    """Every subscription of these customers (by external id), whatever its dates, by customer, start date, id."""
    wanted = sorted(set(external_ids))
    found: list[Subscription] = []
    for i in range(0, len(wanted), _CHUNK):
        query = (
            _with_customer()
            .where(CustomerRow.external_id.in_(wanted[i : i + _CHUNK]))
            .order_by(CustomerRow.external_id, SubscriptionRow.start_date, SubscriptionRow.id)
        )
        found += [_subscription(row, external_id) for row, external_id in session.execute(query)]
    return _with_quantities(session, found)


_SUBSCRIPTION_COLUMNS = tuple(
    getattr(SubscriptionRow, name)
    for name in (
        "id", "customer_id", "plan_code", "plan_version", "start_date", "end_date", "status", "cancel_reason",
        "previous_subscription_id", "chain_start",
    )
)


def _subscriptions_where(*conditions: Any) -> Select[Any]:
    """The subscriptions meeting ``conditions``, with their customer's external id and each quantity change, in
    customer external id, start date, id and effective date order (:func:`_subscriptions_with_quantities` reads
    them)."""
    quantities = SubscriptionQuantityRow
    return (
        select(*_SUBSCRIPTION_COLUMNS, CustomerRow.external_id, quantities.effective_from, quantities.quantity)
        .join(CustomerRow, CustomerRow.id == SubscriptionRow.customer_id)
        .outerjoin(quantities, quantities.subscription_id == SubscriptionRow.id)
        .where(*conditions)
        .order_by(CustomerRow.external_id, SubscriptionRow.start_date, SubscriptionRow.id, quantities.effective_from)
    )


def subscription_starts(session: Session, ids: Iterable[int]) -> list[tuple[int, dt.date]]:
    """(id, start date) of the subscriptions with these ids (those that exist)."""
    wanted = sorted(set(ids))
    found: list[tuple[int, dt.date]] = []
    for i in range(0, len(wanted), _CHUNK):
        query = select(SubscriptionRow.id, SubscriptionRow.start_date).where(
            SubscriptionRow.id.in_(wanted[i : i + _CHUNK])
        )
        found += [(id_, start) for id_, start in session.execute(query)]
    return found


def subscriptions_ended_as_they_began(
    session: Session, period: Period, customer: str | None = None
) -> list[Subscription]:
    """The subscriptions (of ``customer`` only, if given) that ended on their start day, a day of ``period``: they
    cover no day, but an opening invoice may have billed them a fee."""
    query = _subscriptions_where(
        SubscriptionRow.end_date == SubscriptionRow.start_date,
        SubscriptionRow.start_date >= period.start,
        SubscriptionRow.start_date < period.end,
    )
    if customer is not None:
        query = query.where(CustomerRow.external_id == customer)
    return _subscriptions_with_quantities(session.execute(query))


def subscriptions_active_between(
    session: Session, start: dt.date, end: dt.date, customers: Iterable[str] | None = None
) -> list[Subscription]:
    """Every subscription covering at least one day of ``[start, end)``, whatever its status: of every customer
    in one query, or of ``customers`` only (external ids), a query per few thousand of them.

    A subscription that ended on its start day covers no day and is left out. Ordered by customer external id,
    start date, id.
    """
    query = _subscriptions_where(
        SubscriptionRow.start_date < end,
        or_(
            SubscriptionRow.end_date.is_(None),
            and_(SubscriptionRow.end_date > start, SubscriptionRow.end_date > SubscriptionRow.start_date),
        ),
    )
    if customers is None:
        return _subscriptions_with_quantities(session.execute(query))
    wanted = sorted(set(customers))
    found: list[Subscription] = []
    for i in range(0, len(wanted), _CHUNK):  # chunks in customer order, each ordered: the whole list is
        chunk = query.where(among(session, CustomerRow.external_id, wanted[i : i + _CHUNK]))
        found += _subscriptions_with_quantities(session.execute(chunk))
    return found


def _subscriptions_with_quantities(rows: Iterable[Sequence[Any]]) -> list[Subscription]:
    """Subscriptions from rows of ``_SUBSCRIPTION_COLUMNS``, the customer's external id and one quantity row each
    (None, None without one), a subscription's rows together and by date."""
    found: list[Subscription] = []
    quantities: dict[int, list[tuple[dt.date, int]]] = {}
    for values in rows:
        *columns, effective_from, quantity = values
        if not found or found[-1].id != columns[0]:
            found.append(_subscription_of(columns))
        if effective_from is not None:
            quantities.setdefault(columns[0], []).append((effective_from, quantity))
    if not quantities:
        return found
    return [_quantities(s, quantities[s.id]) if s.id in quantities else s for s in found]


def cancel_subscription(
    session: Session,
    subscription_id: int,
    *,
    end_date: dt.date,
    reason: CancelReason | None,
    cancelled_at: dt.datetime,
) -> Subscription:
    """Set a subscription's end date and mark it cancelled (``reason`` None: ended by a plan change)."""
    row = session.get_one(SubscriptionRow, subscription_id)
    row.end_date = end_date
    row.status = SubscriptionStatus.CANCELLED.value
    row.cancel_reason = None if reason is None else reason.value
    row.cancelled_at = cancelled_at
    session.flush()
    external_id = session.scalars(select(CustomerRow.external_id).where(CustomerRow.id == row.customer_id)).one()
    return _with_quantities(session, [_subscription(row, external_id)])[0]


def set_quantity(session: Session, subscription: Subscription, quantity: int, effective_from: dt.date) -> Subscription:
    """Record ``quantity`` seats from ``effective_from`` on (replacing a change of the same day; on the start date,
    the quantity at the start); a change that repeats the quantity before it is stored all the same."""
    row = session.get(SubscriptionQuantityRow, (subscription.id, effective_from))
    if row is None:
        session.add(
            SubscriptionQuantityRow(subscription_id=subscription.id, effective_from=effective_from, quantity=quantity)
        )
    else:
        row.quantity = quantity
        row.recorded_at = utcnow()
    session.flush()
    return _with_quantities(session, [replace(subscription, quantity=1, quantity_changes=())])[0]


def _with_quantities(session: Session, subscriptions: list[Subscription]) -> list[Subscription]:
    """The subscriptions with their quantities: the quantity at the start and the later changes, by date. (Few
    subscriptions have rows: a big list reads the whole table once rather than a query per few thousand ids.)"""
    if not subscriptions:
        return subscriptions
    ids = sorted({s.id for s in subscriptions})
    columns = (
        SubscriptionQuantityRow.subscription_id,
        SubscriptionQuantityRow.effective_from,
        SubscriptionQuantityRow.quantity,
    )
    query = select(*columns).order_by(SubscriptionQuantityRow.subscription_id, SubscriptionQuantityRow.effective_from)
    rows: dict[int, list[tuple[dt.date, int]]] = {}
    statement = query if len(ids) > _CHUNK else query.where(SubscriptionQuantityRow.subscription_id.in_(ids))
    for subscription_id, effective_from, quantity in session.execute(statement):
        rows.setdefault(subscription_id, []).append((effective_from, quantity))
    if not rows:
        return subscriptions
    return [_quantities(s, rows[s.id]) if s.id in rows else s for s in subscriptions]


def _quantities(subscription: Subscription, rows: list[tuple[dt.date, int]]) -> Subscription:
    start = subscription.start_date
    initial = [quantity for effective_from, quantity in rows if effective_from <= start]
    changes = tuple(QuantityChange(day, quantity) for day, quantity in rows if day > start)
    return replace(subscription, quantity=initial[-1] if initial else 1, quantity_changes=changes)
