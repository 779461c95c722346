"""Negotiated prices: every version of every subscription's overrides (created by migration 0015), and the
queries that map them to ``billing.core.overrides.SubscriptionOverride``.

A version is never updated nor deleted: a later one (by ``effective_from``, then id) takes over from its date.
The override's tables are kept as written, as JSON text with every decimal number a string (exact, and read
back as the catalog loader reads a number) and whole numbers as numbers (levels and trial days must be whole).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import Date, ForeignKey, Index, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from billing.core.overrides import SubscriptionOverride
from billing.db.tables import BillingBase
from dbkit import among, keyset_page, page_of
from dbkit.clock import utcnow
from dbkit.types import ID_TYPE, UTCDateTime

__all__ = [
    "SubscriptionOverrideRow",
    "add_override",
    "document_json",
    "overrides_of",
    "overrides_page",
]

# Ids per IN (...) query: far below SQLite's and PostgreSQL's limits on bound parameters.
_CHUNK = 5_000


class SubscriptionOverrideRow(BillingBase):
    """One version of a subscription's negotiated prices, in force from ``effective_from``."""

    __tablename__ = "subscription_overrides"
    __table_args__ = (Index("ix_subscription_overrides_subscription", "subscription_id", "effective_from"),)

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id", ondelete="RESTRICT"))
    effective_from: Mapped[dt.date] = mapped_column(Date)
    document: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


def _plain(value: Any) -> Any:
    """A TOML or JSON value with its decimal numbers as strings, whole numbers as they are (a float never gets
    here: TOML and JSON are read with ``parse_float=Decimal``)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, bool | int | str) or value is None:  # whole numbers stay numbers: levels, trial days
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def document_json(document: Mapping[str, Any]) -> dict[str, Any]:
    """An override's tables as they are stored and shown: numbers as decimal strings."""
    plain: dict[str, Any] = _plain(document)
    return plain


def _override(row: SubscriptionOverrideRow) -> SubscriptionOverride:
    return SubscriptionOverride(
        id=row.id,
        subscription_id=row.subscription_id,
        effective_from=row.effective_from,
        document=json.loads(row.document),
        created_at=row.created_at,
    )


def add_override(
    session: Session, subscription_id: int, effective_from: dt.date, document: Mapping[str, Any]
) -> SubscriptionOverride:
    """Record a version (flushed)."""
    row = SubscriptionOverrideRow(
        subscription_id=subscription_id,
        effective_from=effective_from,
        document=json.dumps(document_json(document), ensure_ascii=False),
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return _override(row)


def overrides_of(session: Session, subscription_ids: Iterable[int]) -> dict[int, tuple[SubscriptionOverride, ...]]:
    """Every version of the subscriptions' overrides, by subscription, in order (date, then id); a subscription
    without one is absent."""
    wanted = sorted(set(subscription_ids))
    found: dict[int, list[SubscriptionOverride]] = {}
    for offset in range(0, len(wanted), _CHUNK):
        statement = (
            select(SubscriptionOverrideRow)
            .where(among(session, SubscriptionOverrideRow.subscription_id, wanted[offset : offset + _CHUNK]))
            .order_by(SubscriptionOverrideRow.effective_from, SubscriptionOverrideRow.id)
        )
        for row in session.scalars(statement):
            found.setdefault(row.subscription_id, []).append(_override(row))
    return {sub_id: tuple(versions) for sub_id, versions in found.items()}


def overrides_page(
    session: Session, subscription_id: int, *, limit: int, after: int | None = None, before: int | None = None
) -> tuple[list[SubscriptionOverride], bool]:
    """At most ``limit`` versions of a subscription's overrides by id, after ``after`` or right before ``before``;
    and whether more lie that way."""
    statement = select(SubscriptionOverrideRow).where(SubscriptionOverrideRow.subscription_id == subscription_id)
    rows = session.scalars(
        keyset_page(statement, SubscriptionOverrideRow.id, limit=limit, after=after, before=before)
    ).all()
    page, more = page_of(rows, limit=limit, before=before)
    return [_override(row) for row in page], more
