"""Usage counters: each customer's usage of a meter over one window, kept up to date behind the request path so
that an entitlement is answered without reading the window's events (created by migration 0019).

A row holds the exact aggregate (``events``, ``quantity``) of the window's events received up to
``counted_through`` (``received_at`` microseconds, ``meters``' clock): the usage reaction writes it in the
transaction that moves its cursor past those events, for the current windows of every customer the pass reacted
to, and never moves it back. Only ``count``, ``sum`` and ``max`` meters have counters (what can be added to).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from billing.db.tables import BillingBase
from dbkit.types import ExactDecimal, UTCDateTime

__all__ = ["UsageCounterRow"]


class UsageCounterRow(BillingBase):
    """A customer's usage of a meter over the UTC window ``[window_start, window_end)`` (microseconds), counted
    through ``counted_through``."""

    __tablename__ = "usage_counters"

    customer_external_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    meter: Mapped[str] = mapped_column(String(255), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    window_end: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    events: Mapped[int] = mapped_column(BigInteger)
    quantity: Mapped[Decimal] = mapped_column(ExactDecimal)
    counted_through: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
