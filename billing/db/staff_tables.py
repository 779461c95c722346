"""The finance console's staff sessions (created by migration 0031).

- ``staff_sessions``: one row per sign-in to the console. A person signs in with an API key that is not bound to a
  customer (``billing apikeys create``); the browser then holds a random session token in a cookie, and the
  database keeps only its SHA-256 (``token_hash``), the key it was opened with (``api_key_id``), when it expires
  and when it was ended (signed out). ``notice`` holds the one message the next page shows ("Invoice
  INV-2026-000004 voided"), taken when it is shown.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from billing.db.tables import ID_TYPE, BillingBase, utcnow
from dbkit.types import UTCDateTime

__all__ = ["StaffSessionRow"]


class StaffSessionRow(BillingBase):
    """A console session: the hash of its token, the API key that opened it, its expiry, its pending notice."""

    __tablename__ = "staff_sessions"

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="RESTRICT"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    notice: Mapped[str | None] = mapped_column(Text)
