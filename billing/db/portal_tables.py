"""Revoked customer-portal links (created by migration 0033).

- ``portal_link_revocations``: one row per customer whose portal links were ended by hand (``billing portal
  revoke``): every link made for that customer before ``revoked_at`` is refused from then on; links made after
  it open as usual. A link holds the instant it was made (``billing.portal_links``), so nothing else is stored.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from billing.db.tables import BillingBase
from dbkit.types import UTCDateTime

__all__ = ["PortalRevocationRow"]


class PortalRevocationRow(BillingBase):
    """The last time ``customer_external_id``'s portal links were revoked."""

    __tablename__ = "portal_link_revocations"

    customer_external_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    revoked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
