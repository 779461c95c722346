"""The service's tables: the HTTP API's keys, and the scheduler's job store.

Created by migration 0006.

- ``api_keys``: one row per key. Only the SHA-256 of a key is stored (``key_hash``), with its first characters
  (``prefix``) so that a person can tell keys apart in ``billing apikeys list``; the key itself is shown once,
  when it is created. A key bound to a customer (``customer_id``) sees only that customer's usage and invoices.
  A revoked key (``revoked_at`` set) is refused; its row stays, for the record.
- ``scheduler_jobs``: APScheduler's ``SQLAlchemyJobStore`` table (each job's next run time and its pickled
  state: a reference to a module-level function and its trigger), declared here with exactly the columns the job
  store uses, so that the jobs survive restarts and the migrations stay the one place that creates tables.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, Float, ForeignKey, LargeBinary, String, Unicode
from sqlalchemy.orm import Mapped, mapped_column

from billing.db.tables import ID_TYPE, BillingBase, utcnow

__all__ = ["SCHEDULER_JOBS_TABLE", "ApiKeyRow", "SchedulerJobRow"]

SCHEDULER_JOBS_TABLE = "scheduler_jobs"


class ApiKeyRow(BillingBase):
    """An API key: its name, the SHA-256 of the key (hex), and the customer it is bound to, if any."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="RESTRICT"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class SchedulerJobRow(BillingBase):
    """A scheduled job as APScheduler's SQLAlchemy job store keeps it (its columns, types and index)."""

    __tablename__ = SCHEDULER_JOBS_TABLE

    id: Mapped[str] = mapped_column(Unicode(191), primary_key=True)
    next_run_time: Mapped[float | None] = mapped_column(Float(25), index=True)
    job_state: Mapped[bytes] = mapped_column(LargeBinary)
