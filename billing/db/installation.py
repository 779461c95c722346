"""This installation's identity: one row, made by migration 0009 with a random id, that tells this database apart
from every other one.

What leaves the database under names of our own — Stripe idempotency keys (``billing.stripe.sync``) — carries the
id, so that two installations pushing to one Stripe account can never send the same key for two different
invoices that happen to share a number. A database copied with its files keeps the id (it is the same books); a
new database (``billing init``) gets a new one.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import CheckConstraint, Engine, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from billing.db import session_scope
from billing.db.tables import BillingBase
from dbkit import insert_ignoring, read_only, utcnow
from dbkit.types import UTCDateTime

__all__ = ["InstallationRow", "installation_id", "new_installation_id"]


class InstallationRow(BillingBase):
    """The one row (``singleton`` is always 1): this installation's ``id``, 32 hexadecimal digits."""

    __tablename__ = "installation"
    __table_args__ = (CheckConstraint("singleton = 1", name="one_row"),)

    singleton: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False, default=1)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


def new_installation_id() -> str:
    """A fresh random id: 32 hexadecimal digits (a version 4 UUID)."""
    return uuid.uuid4().hex


def installation_id(engine: Engine) -> str:
    """This database's installation id.

    Migration 0009 stores it; should the row be gone (a table emptied by hand), a new id is stored once and
    kept — two processes doing so at once agree on the first one stored.
    """
    with session_scope(read_only(engine)) as session:
        found = session.execute(select(InstallationRow.id)).scalar_one_or_none()
    if found is not None:
        return found
    with session_scope(engine) as session:
        insert_ignoring(
            session,
            InstallationRow.__table__,
            {"singleton": 1, "id": new_installation_id(), "created_at": utcnow()},
        )
        return session.execute(select(InstallationRow.id)).scalar_one()
