"""What reacts to usage, and how far it has read (created by migration 0012).

A *usage reaction* (threshold evaluation, and whatever else follows usage rather than a schedule) runs behind the
request path that stores events: a row per reaction holds ``received_through``, the ``received_at`` (microseconds
since the epoch, ``meters``' clock) up to which every stored event has been reacted to. The events received after
it are the reaction's pending work; they are in the database already, so nothing is lost when a server stops
between storing events and reacting to them. A reaction that finds no row starts from the beginning (slower, but
it misses nothing).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from billing.db.tables import BillingBase
from dbkit.types import UTCDateTime

__all__ = ["UsageReactionRow"]


class UsageReactionRow(BillingBase):
    """A reaction to usage and the ``received_at`` through which it has handled every stored event."""

    __tablename__ = "usage_reactions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_through: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
