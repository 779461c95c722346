"""The meters' tables: usage events.

One row per accepted event. Numbers are stored the way the aggregation kernels want them:

- ``occurred_at`` and ``received_at`` are integer microseconds since 1970-01-01T00:00:00Z (UTC);
- ``value`` is a fixed-point integer, the event's decimal value × 10^6 (``meters.events.VALUE_SCALE``);
  NULL when the event has none (``count`` meters);
- ``unique_value`` is the value of the meter's ``unique_property`` (``unique_count`` meters only);
- ``properties`` is the event's property map as canonical JSON (sorted keys), NULL when empty;
- ``content_hash`` is a 64-bit BLAKE2b digest of the event's content (customer, meter, instant, value,
  properties): the same ``event_id`` again with the same hash is a duplicate, with another hash a conflict.

``event_id`` is the idempotency key, unique across the installation (the database enforces it). An event that an
issued invoice counted (its instant within 14 hours of an issued period invoice's period, of its customer) cannot
be deleted or changed: triggers of migration 0010 refuse it. The aggregation
index covers every column an aggregation reads (``id`` included: it breaks ties of ``latest``), so a period's
totals come from the index alone.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dbkit.types import ID_TYPE, new_metadata

__all__ = ["MetersBase", "UsageEventRow"]


class MetersBase(DeclarativeBase):
    metadata = new_metadata()


class UsageEventRow(MetersBase):
    """One accepted usage event (see the module docstring for the units of each column)."""

    __tablename__ = "usage_events"
    __table_args__ = (
        Index(
            "ix_usage_events_aggregation",
            "meter",
            "customer",
            "occurred_at",
            "value",
            "received_at",
            "unique_value",
            postgresql_include=["id"],  # SQLite's index entries end with the rowid anyway
        ),
        # the events in the order they were received: what reacts to usage reads what arrived since it last looked
        Index("ix_usage_events_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), unique=True)
    customer: Mapped[str] = mapped_column(String(255))
    meter: Mapped[str] = mapped_column(String(255))
    occurred_at: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[int | None] = mapped_column(BigInteger)
    unique_value: Mapped[str | None] = mapped_column(String(255))
    properties: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[int] = mapped_column(BigInteger)
