"""Usage counters: each customer's events of a meter in one calendar month of its timezone, kept at store time
(``billing.db.counters``; the table of migration 0026) so that thresholds and entitlements read a row instead of
the month's events.

A row holds, for the events of its window stored so far: how many (``events``), the sum of their values
(``total``, a fixed-point integer × 10^6 as ``meters`` stores values; NULL once it would leave 64 bits) and the
largest value (``largest``, × 10^6; NULL when no event had one); ``received_through`` is the latest
``received_at`` it counted.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from billing.db.tables import BillingBase

__all__ = ["UsageCounterRow"]


class UsageCounterRow(BillingBase):
    """A customer's events of a meter in the UTC window ``[window_start, window_end)`` (microseconds): the
    calendar month of the customer's timezone."""

    __tablename__ = "usage_counters"
    # room in each page for a counter's next version (PostgreSQL, migration 0027): updates skip the index
    __table_args__ = {"sqlite_with_rowid": False, "postgresql_with": {"fillfactor": 70}}

    customer_external_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    meter: Mapped[str] = mapped_column(String(255), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    window_end: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    events: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[int | None] = mapped_column(BigInteger)
    largest: Mapped[int | None] = mapped_column(BigInteger)
    received_through: Mapped[int] = mapped_column(BigInteger)
