"""The HTTP API's keys (created by migration 0006).

- ``api_keys``: one row per key. Only the SHA-256 of a key is stored (``key_hash``), with its first characters
  (``prefix``) so that a person can tell keys apart in ``billing apikeys list``; the key itself is shown once,
  when it is created. A key bound to a customer (``customer_id``) sees only that customer's usage and invoices.
  A revoked key (``revoked_at`` set) is refused; its row stays, for the record.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from billing.db.tables import ID_TYPE, BillingBase, utcnow
from dbkit.types import UTCDateTime

__all__ = ["ApiKeyRow"]


class ApiKeyRow(BillingBase):
    """An API key: its name, the SHA-256 of the key (hex), and the customer it is bound to, if any."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="RESTRICT"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
