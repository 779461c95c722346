"""What reacts to usage, behind the request path: threshold evaluation runs after the events are stored and
answered for, batched, exactly once, within a bounded delay.

Ingestion (``POST /v1/events``) only validates, stores (idempotently, by event id) and answers. The reaction reads
what was stored since it last looked, through a cursor over the order in which events were received:

  pending   the events whose ``received_at`` is after the reaction's ``received_through``
            (``billing.db.reaction_tables``); they are in the database already, so a server killed between storing
            events and reacting to them loses nothing: the next pass (or ``billing thresholds check``) reacts;
  cutoff    ``meters.ingestion_cutoff``: an instant F such that every event received at or before F is committed
            and every later one is received after F. A pass reacts to the events received in
            ``(received_through, F]`` — none skipped, however many ingestions commit concurrently;
  react     the customers of those events and the calendar months (in each customer's timezone) their events fall
            in (read from those events when they are few, else from the usage counters that counted them,
            ``billing.db.counters``): ``check_thresholds`` of exactly those, in one batched evaluation that reads
            the months' usage from the counters, kept in the transactions that stored the events;
  advance   ``received_through`` set to F in the very transaction that records the notifications (and, on
            PostgreSQL, the evaluations; on SQLite those are upserted just before, in short transactions of their
            own: ``billing.thresholds``).

Exactly once: a crash before that transaction commits leaves the cursor where it was, and the next pass evaluates
the same events again; a threshold notification is unique per crossing (subscription, period, threshold, level),
so the second evaluation creates nothing the first did. The cursor only moves forward (two passes racing each set
it to their own F; the later F wins), so any number of processes may react at once.

Delay: a :class:`Reactor` runs next to the scheduler (``billing serve`` runs both in a process of its own, beside
the API's). An ingestion in the reactor's own process wakes it; a pass then starts at once unless one ran less than
:data:`MIN_GAP` ago (under a steady stream of events, passes are at most that frequent and take in everything
received meanwhile); events stored by another process (the API's, for ``billing serve``) it finds by looking every
``poll`` seconds (:data:`POLL` by default, a quarter of a second in ``billing serve``: a look is one indexed read).
A pass is followed by a rest of ``MIN_GAP``, or of as long as the pass took if longer: under a heavy stream of
events the reactor uses at most half of a core, and each pass takes in everything received meanwhile (a pass costs
by the customers it evaluates, so it grows less than the events it follows: about a second for 10,000 customers).
An event accepted just after a pass took its cutoff waits for that pass to end, the rest after it and the next
pass: it is evaluated within ``MIN_GAP`` + two passes of its acceptance while passes are shorter than ``MIN_GAP``,
within about three passes when they are longer (``poll`` more when another process stored it): well under 2 s at a
steady few hundred events per second.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from billing.core.periods import Period, months_between
from billing.db import session_scope
from billing.db.counters import timezones_of, touched_months
from billing.db.reaction_tables import UsageReactionRow
from billing.event_store import event_store, events_counted
from billing.progressive import issue_progressive_invoices
from billing.thresholds import Crossing, check_thresholds
from dbkit import as_utc, insert_for, read_only, utcnow
from meters import from_epoch_us, to_epoch_us
from meters.store import EventStore
from pricing_plans.models import Aggregation, Catalog

__all__ = ["MIN_GAP", "POLL", "THRESHOLDS", "ReactionReport", "Reactor", "pending_since", "react_to_usage", "wake"]

log = logging.getLogger(__name__)

THRESHOLDS = "thresholds"
"""The reaction that evaluates thresholds (its row in ``usage_reactions``)."""
POLL = 1.0
"""Seconds between two looks for events stored by other processes."""
MIN_GAP = 0.2
"""Seconds at least between the end of a pass and the start of the next one."""

_PASS = threading.Lock()  # one pass at a time in a process: two would only evaluate the same events twice


@dataclass
class ReactionReport:
    """What one pass did: the customers whose usage it evaluated, the notifications it created, and the
    ``received_at`` through which every stored event has now been reacted to."""

    customers: int = 0
    created: list[Crossing] = field(default_factory=list)
    received_through: dt.datetime | None = None
    progressive: list[str] = field(default_factory=list)  # the numbers of the progressive invoices it issued


def pending_since(engine: Engine, reaction: str = THRESHOLDS) -> dt.datetime:
    """The ``received_at`` after which stored events are still to be reacted to (the epoch when the reaction has
    no row: everything is)."""
    with session_scope(read_only(engine)) as session:
        through = session.scalar(select(UsageReactionRow.received_through).where(UsageReactionRow.name == reaction))
    return from_epoch_us(through or 0)


def react_to_usage(
    engine: Engine, catalog: Catalog, *, now: dt.datetime | None = None, make_way: bool = True
) -> ReactionReport:
    """One pass: evaluate the thresholds of the customer months that the events received since the last pass
    fall in, and move the cursor past them in the same transaction. Safe to run from any number of threads and
    processes at once; ``now`` is "today" for the evaluation (default: the clock). ``make_way=False``: a batch
    command's pass, whose SQLite transactions need not be kept short for an API writer (see
    :func:`billing.thresholds.check_thresholds`)."""
    report = ReactionReport()
    with _PASS:
        after = to_epoch_us(pending_since(engine))
        events = event_store(engine)
        pending = events.received_since(after)
        if not pending:  # nothing new: no ingestion cutoff to take (on PostgreSQL it waits for writers)
            report.received_through = from_epoch_us(after)
            return report
        through = to_epoch_us(events.ingestion_cutoff())
        report.received_through = from_epoch_us(max(after, through))
        if through <= after:
            return report
        periods = _pending_months(engine, events, after, through)
        instant = as_utc(now or utcnow())
        if any(meter.aggregation is Aggregation.WEIGHTED_SUM for meter in catalog.meters.values()):
            periods = _through_this_month(engine, periods, instant)
        report.customers = len(periods)
        # Progressive invoices first, each in its own transaction: one issued before a crash is found issued by
        # the next pass, which evaluates the same events again (the cursor moves with the thresholds below).
        if any(plan.progressive_billing is not None for plan in catalog.all_plans()):
            issued = issue_progressive_invoices(engine, catalog, periods=periods, now=now)
            report.progressive = issued.issued

        def in_transaction(session: Session) -> None:
            _advance(session, THRESHOLDS, through)

        checked = check_thresholds(
            engine, catalog, periods=periods, now=instant, in_transaction=in_transaction, make_way=make_way
        )
        report.created = checked.created
    return report


_FEW = 20_000
"""Up to this many pending events are read themselves (through the index of the order they were received in);
more, and the usage counters say which customer months they touched."""


def _pending_months(engine: Engine, events: EventStore, after: int, through: int) -> dict[str, list[Period]]:
    """The calendar months (each customer's, in its timezone) that the events received after ``after`` fall in:
    from those events themselves when they are few (an API's stream) or live outside the billing database (no
    usage counters there), else from the usage counters that counted them (a file's million), one row per
    customer month and meter instead of one per event."""
    with read_only(engine).connect() as connection, connection.begin():
        if events_counted(engine) and connection.execute(_PENDING, {"after": after, "few": _FEW}).scalar_one() >= _FEW:
            return touched_months(connection, after)
    spans = events.received_spans(after, through)
    with read_only(engine).connect() as connection, connection.begin():
        zones = {customer: ZoneInfo(zone) for customer, zone in timezones_of(connection, spans).items()}
    return {
        customer: months_between(earliest.astimezone(zones[customer]).date(), latest.astimezone(zones[customer]).date())
        for customer, (earliest, latest) in spans.items()
        if customer in zones  # a customer since deleted: nothing of it is evaluated
    }


def _through_this_month(
    engine: Engine, periods: dict[str, list[Period]], instant: dt.datetime
) -> dict[str, list[Period]]:
    """Each customer's months from the first of ``periods`` through the one it is in now: a ``weighted_sum``
    level carries over, so a late event raises every later month (one of January, received in March, puts
    February over its limit as much as January)."""
    with read_only(engine).connect() as connection, connection.begin():
        zones = timezones_of(connection, periods)
    return {
        customer: months_between(
            min(m.start for m in months), max(max(m.start for m in months), instant.astimezone(ZoneInfo(zone)).date())
        )
        for customer, months in periods.items()
        if months and (zone := zones.get(customer)) is not None
    }


_PENDING = text("SELECT count(*) FROM (SELECT 1 FROM usage_events WHERE received_at > :after LIMIT :few) AS pending")


def _advance(session: Session, reaction: str, through: int) -> None:
    """Move the reaction's cursor forward to ``through`` (never back: a slower pass that read less changes
    nothing)."""
    table = UsageReactionRow.__table__
    statement = insert_for(session, UsageReactionRow).values(
        name=reaction, received_through=through, updated_at=utcnow()
    )
    excluded = statement.excluded
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["name"],
            set_={"received_through": excluded.received_through, "updated_at": excluded.updated_at},
            where=table.c.received_through < excluded.received_through,
        )
    )


# -- the reactor in a serving process ---------------------------------------------------------------------

_REACTORS: weakref.WeakSet[Reactor] = weakref.WeakSet()


def wake() -> None:
    """Tell this process's reactors that events were stored (a pass starts soon, not at the next look)."""
    for reactor in list(_REACTORS):
        reactor.wake()


class Reactor:
    """A thread that reacts to usage: a pass when woken (resting ``gap`` seconds, or as long as the pass took, after
    each) and every ``poll`` seconds anyway; ``on_created`` is called after a pass that created notifications. A
    failed pass is logged and tried again at the next look; its events stay pending."""

    def __init__(
        self,
        engine: Engine,
        catalog: Callable[[], Catalog],
        *,
        poll: float = POLL,
        gap: float = MIN_GAP,
        on_created: Callable[[], object] | None = None,
    ):
        self.engine = engine
        self.on_created = on_created
        self.catalog = catalog
        self.poll = poll
        self.gap = gap
        self._woken = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Reactor:
        self._thread = threading.Thread(target=self._run, name="usage-reactor", daemon=True)
        self._thread.start()
        _REACTORS.add(self)
        return self

    def wake(self) -> None:
        self._woken.set()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop after the pass under way, if any."""
        _REACTORS.discard(self)
        self._stopping.set()
        self._woken.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._woken.wait(self.poll)
            self._woken.clear()
            if self._stopping.is_set():
                break
            started = time.monotonic()
            try:
                report = react_to_usage(self.engine, self.catalog())
            except Exception:
                log.exception("usage reactions: the pass failed; its events stay pending and are tried again")
                self._stopping.wait(self.poll)
                continue
            if report.created:
                if self.on_created is not None:
                    self.on_created()
                log.info(
                    "thresholds: %d level(s) crossed by the usage of %d customer(s) (%.0f ms)",
                    len(report.created),
                    report.customers,
                    (time.monotonic() - started) * 1000,
                )
            # Rest at least as long as the pass took: under a heavy stream the reactor takes at most half of a core
            # from the ingestion it follows, and its passes grow to take in what arrived meanwhile.
            self._stopping.wait(max(self.gap, time.monotonic() - started))
