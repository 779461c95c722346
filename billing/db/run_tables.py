"""The billing runs done (created by migration 0036).

- ``billing_runs``: one row per billing run started by a person or a program — ``billing run``, ``billing invoices
  finalize --period``, ``POST /v1/billing-runs``, the console's *Run a period* and *Finalize every draft of the
  month* — written when it starts (``outcome`` ``running``) and again when it ends: ``completed`` with its
  report (the JSON of ``POST /v1/billing-runs``' answer, amounts as strings), or ``failed`` with why. A run whose
  process was killed keeps ``running`` and no ``finished_at``; running the period again is safe. Rows are never
  changed after they end, nor deleted.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, CheckConstraint, Date, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from billing.db.tables import BillingBase
from dbkit.types import ID_TYPE, UTCDateTime

__all__ = ["RUN_OUTCOMES", "RUN_SOURCES", "BillingRunRow"]

RUN_SOURCES = ("cli", "api", "console", "scheduler")
RUN_OUTCOMES = ("running", "completed", "failed")


class BillingRunRow(BillingBase):
    """A billing run: what it was asked (period, customer, shard, finalize), who asked, when, and what it did."""

    __tablename__ = "billing_runs"
    __table_args__ = (
        CheckConstraint("source IN ('cli', 'api', 'console', 'scheduler')", name="source"),
        CheckConstraint("outcome IN ('running', 'completed', 'failed')", name="outcome"),
        CheckConstraint("(outcome = 'running') = (finished_at IS NULL)", name="finished_iff_ended"),
        Index("ix_billing_runs_period", "period_start", "id"),
    )

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True)
    period_start: Mapped[dt.date] = mapped_column(Date)
    period_end: Mapped[dt.date] = mapped_column(Date)
    customer_external_id: Mapped[str | None] = mapped_column(String(255))
    shard: Mapped[str | None] = mapped_column(String(32))
    finalize: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    report: Mapped[str | None] = mapped_column(Text)  # JSON: BillingRunOut's fields
