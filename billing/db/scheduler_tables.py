"""The scheduler's job store (created by migration 0006).

``scheduler_jobs`` is APScheduler's ``SQLAlchemyJobStore`` table (each job's next run time and its pickled state:
a reference to a module-level function and its trigger), declared here with exactly the columns the job store
uses, so that the jobs survive restarts and the migrations stay the one place that creates tables.
"""

from __future__ import annotations

from sqlalchemy import Float, LargeBinary, Unicode
from sqlalchemy.orm import Mapped, mapped_column

from billing.db.tables import BillingBase

__all__ = ["SCHEDULER_JOBS_TABLE", "SchedulerJobRow"]

SCHEDULER_JOBS_TABLE = "scheduler_jobs"


class SchedulerJobRow(BillingBase):
    """A scheduled job as APScheduler's SQLAlchemy job store keeps it (its columns, types and index)."""

    __tablename__ = SCHEDULER_JOBS_TABLE

    id: Mapped[str] = mapped_column(Unicode(191), primary_key=True)
    next_run_time: Mapped[float | None] = mapped_column(Float(25), index=True)
    job_state: Mapped[bytes] = mapped_column(LargeBinary)
