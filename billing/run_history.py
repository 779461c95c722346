"""The billing runs done: who started each, when, for what, and what it did (table ``billing_runs``).

Every billing run started by a person or a program is recorded — ``billing run``, ``billing invoices finalize
--period``, ``POST /v1/billing-runs`` and the console's *Run a period* and *Finalize every draft of the month* —
in two writes of their own, outside the run's transactions:

- when it starts: the period, the customer or shard it was limited to, whether it finalizes, where it came from
  (``cli``, ``api``, ``console``) and who (the operating-system user, the API key's name, the name of the key
  signed in to the console), with outcome ``running``;
- when it ends: ``completed`` with its report (what ``POST /v1/billing-runs`` answers: drafts written, refreshed,
  unchanged and removed, events rated and unbilled, totals per currency, the customers skipped and why, the
  numbers finalized, the drafts left waiting for approval), or ``failed`` with why (the error as the user saw it;
  ``interrupted`` for Ctrl-C; for an internal error only its type: its details are in the log).

A run whose process was killed keeps ``running`` with no end: it wrote each customer's invoice in its own
transaction, and running the period again completes it without billing anyone twice. A record that cannot be
ended (the database gone at that moment) is logged, never turned into the run's failure: the run's invoices are
what counts. The scheduler's hourly cycle is not recorded here (it logs each cycle): it refreshes the drafts of
every period still open every hour, which would bury the runs people started.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select, update

from billing.core.periods import Period
from billing.db import session_scope
from billing.db.run_tables import BillingRunRow
from billing.errors import BillingError, NotFoundError
from billing.invoicing import clock
from billing.run import RunReport
from dbkit.dialect import read_only
from dbkit.pagination import keyset_page, page_of
from meters.errors import ConflictingEvents
from pricing_plans.money import format_amount

__all__ = [
    "BillingRun",
    "Recording",
    "cli_user",
    "get_run",
    "recorded",
    "report_json",
    "run_json",
    "runs_page",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BillingRun:
    """A billing run as recorded.

    Attributes:
      id: the record's id (``billing runs show ID``, ``GET /v1/billing-runs/{id}``).
      period: the calendar month it billed; customer, shard: what it was limited to (None: everyone).
      finalize: whether it was asked to number the period's drafts.
      source: ``cli``, ``api`` or ``console``; actor: who (None when unknown).
      started_at, finished_at: when it started and ended (None: running, or its process was killed).
      outcome: ``running``, ``completed`` or ``failed``; error: why it failed.
      report: what it did (``report_json``'s fields), once completed.
    """

    id: int
    period: Period
    customer: str | None
    shard: str | None
    finalize: bool
    source: str
    actor: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    outcome: str
    error: str | None
    report: dict[str, Any] | None

    @property
    def seconds(self) -> float | None:
        """How long it took (None while it has not ended)."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(slots=True)
class Recording:
    """A run being recorded: its record's ``id``; the caller says what it did with :meth:`done`."""

    id: int
    report: dict[str, Any] | None = None

    def done(self, report: RunReport, finalized: Sequence[str] = (), awaiting: Sequence[int] = ()) -> None:
        self.report = report_json(report, finalized, awaiting)


@contextmanager
def recorded(
    engine: Engine,
    period: Period,
    *,
    source: str,
    actor: str | None = None,
    customer: str | None = None,
    shard: str | None = None,
    finalize: bool = False,
    now: dt.datetime | None = None,
) -> Iterator[Recording]:
    """Record the run done inside the block: started now, ended when the block ends — ``completed`` with what
    :meth:`Recording.done` was given, or ``failed`` with the exception that left it (re-raised)."""
    with session_scope(engine) as session:
        row = BillingRunRow(
            period_start=period.start, period_end=period.end, customer_external_id=customer, shard=shard,
            finalize=finalize, source=source, actor=actor, started_at=clock(now), outcome="running",
        )  # fmt: skip
        session.add(row)
        session.flush()
        recording = Recording(id=row.id)
    try:
        yield recording
    except BaseException as exc:
        _end(engine, recording.id, "failed", error=_why(exc))
        raise
    _end(engine, recording.id, "completed", report=recording.report)


def _why(exc: BaseException) -> str:
    """What the user was told: a billing error's own message; for anything else only its type (its message may
    hold SQL and its values, which an API user is not shown: the process that ran the run logged it whole)."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, BillingError | ConflictingEvents):
        return str(exc)
    return f"internal error ({type(exc).__name__}): the log of the process that ran it has the details"


def _end(engine: Engine, run_id: int, outcome: str, *, error: str | None = None, report: Any = None) -> None:
    try:
        with session_scope(engine) as session:
            session.execute(
                update(BillingRunRow)
                .where(BillingRunRow.id == run_id, BillingRunRow.outcome == "running")
                .values(
                    outcome=outcome, finished_at=clock(), error=error,
                    report=None if report is None else json.dumps(report),
                )
            )
    except Exception:  # (the run's invoices are written: a record that cannot be ended is logged, not raised)
        logger.exception("billing run %s ended (%s) but its record could not be updated", run_id, outcome)


def cli_user() -> str | None:
    """Who runs the command line: the operating system's user name (None where it has none, in a container)."""
    try:
        return getpass.getuser()
    except Exception:  # (no user name in the environment nor the password database)
        return None


# -- reading the records ---------------------------------------------------------------------------------------


def get_run(engine: Engine, run_id: int) -> BillingRun:
    with session_scope(read_only(engine)) as session:
        row = session.get(BillingRunRow, run_id)
        if row is None:
            raise NotFoundError(f"billing run {run_id}: no such run")
        return _run(row)


def runs_page(
    engine: Engine,
    *,
    limit: int,
    after: int | None = None,
    before: int | None = None,
    period: Period | None = None,
    newest_first: bool = False,
) -> tuple[list[BillingRun], bool]:
    """At most ``limit`` runs by id (oldest first, as every list), after ``after`` or right before ``before``, of
    one month or all; ``newest_first``: the latest ``limit`` runs (before ``before``), latest first."""
    statement = select(BillingRunRow)
    if period is not None:
        statement = statement.where(BillingRunRow.period_start == period.start)
    with session_scope(read_only(engine)) as session:
        if newest_first:
            if before is not None:
                statement = statement.where(BillingRunRow.id < before)
            rows = session.scalars(statement.order_by(BillingRunRow.id.desc()).limit(limit + 1)).all()
            return [_run(row) for row in rows[:limit]], len(rows) > limit
        paged = keyset_page(statement, BillingRunRow.id, limit=limit, after=after, before=before)
        page, more = page_of(session.scalars(paged).all(), limit=limit, before=before)
        return [_run(row) for row in page], more


def _run(row: BillingRunRow) -> BillingRun:
    return BillingRun(
        id=row.id,
        period=Period(row.period_start, row.period_end),
        customer=row.customer_external_id,
        shard=row.shard,
        finalize=row.finalize,
        source=row.source,
        actor=row.actor,
        started_at=row.started_at,
        finished_at=row.finished_at,
        outcome=row.outcome,
        error=row.error,
        report=None if row.report is None else json.loads(row.report),
    )


# -- JSON (the API's fields) -----------------------------------------------------------------------------------


def _period_json(period: Period) -> dict[str, str]:
    return {"start": period.start.isoformat(), "end": period.end.isoformat()}


def report_json(report: RunReport, finalized: Sequence[str] = (), awaiting: Sequence[int] = ()) -> dict[str, Any]:
    """What a billing run did (``BillingRunReportOut``): the drafts written, refreshed, unchanged and removed, the
    weeks and anniversary months billed beside the month, the period's usage events (accepted = rated +
    unbilled) with each unbilled group named, the totals per currency, the customers skipped, the numbers
    finalized and the drafts left waiting for approval."""
    return {
        "period": _period_json(report.period),
        "label": report.period.label,
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "removed": len(report.removed),
        "issued_untouched": report.issued_untouched,
        "late_lines": report.late_lines,
        "billing_periods": [{"period": _period_json(p), "label": p.label} for p in report.periods],
        "events": {"accepted": report.accepted, "rated": report.events, "unbilled": report.unbilled_events},
        "unbilled": [group.as_dict() for group in report.unbilled],
        "totals": {currency: format_amount(total, currency) for currency, total in sorted(report.totals.items())},
        "skipped": [{"customer": customer, "reason": reason} for customer, reason in report.skipped],
        "finalized": list(finalized),
        "awaiting_approval": list(awaiting),
    }


def run_json(run: BillingRun) -> dict[str, Any]:
    """A recorded run (``BillingRunRecordOut``; its instants as datetimes, as the API's model takes them)."""
    return {
        "id": run.id,
        "period": _period_json(run.period),
        "label": run.period.label,
        "customer": run.customer,
        "shard": run.shard,
        "finalize": run.finalize,
        "source": run.source,
        "actor": run.actor,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "outcome": run.outcome,
        "error": run.error,
        "report": run.report,
    }
