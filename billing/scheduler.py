"""The scheduler: the engine's recurring work, run by APScheduler 3 inside ``billing serve``.

Jobs (module-level functions: the job store pickles a reference to each, so they must stay importable by name):

==================  ===========  =================================================================================
job id              every        what
==================  ===========  =================================================================================
``billing_cycle``   hour         finalizes the opening invoices of the subscriptions that have started (in the
                                 customer's timezone); bills every period that has closed in the customer's
                                 timezone and has no issued invoice yet (drafts are refreshed at each run, so late
                                 usage still gets in), then finalizes those drafts ``finalize_grace_days`` after
                                 the period's end; a week or an anniversary month as soon as it has ended (and
                                 its grace passed), not when its calendar month closes; then writes off the
                                 prepaid credits expired by now and makes paid top-ups usable
``thresholds``      15 minutes   ``billing.thresholds.check_thresholds`` of every customer's current month (the
                                 usage stored is evaluated by the reactor, below, within seconds)
``notifications``   minute       ``billing.notify.deliver_pending``: sends what is due, retries what failed
``at_risk``         6 hours      assesses the churn risk of the last month that has ended in every timezone
                                 (``billing.risk``, the ``[risk]`` rules) and queues a ``customer.at_risk``
                                 notification for each customer at risk: once per customer and month (a unique
                                 index; each process assesses a month once, a restart once more, adding nothing)
``stripe_sync``     15 minutes   ``billing.stripe.sync.sync_invoices`` when ``STRIPE_API_KEY`` is set
==================  ===========  =================================================================================

The jobs live in the database (``SQLAlchemyJobStore``, table ``scheduler_jobs``, created by migration 0006), so
they survive restarts: a run that fell due while the service was down runs once when it comes back (coalesced,
within each job's misfire grace time). Each job runs one instance at a time (``max_instances=1``). A job that
fails is logged with its traceback and tried again after ``RETRY_DELAY`` (or at its next run, if sooner); a run
that could not start in time is logged too: nothing is dropped silently. Every job is safe to run again and at
the same time as the CLI: billing runs refresh drafts and never touch issued invoices, finalization numbers
under row locks, notifications are claimed, Stripe pushes carry idempotency keys.

Next to the jobs, the scheduler runs the usage reactor (``billing.reactions.Reactor``, a thread of its own, not a
stored job: it looks every second, every quarter of a second in ``billing serve``'s scheduler process): the
thresholds of the customer months that newly stored events fall in are evaluated within a couple of seconds of
the events' acceptance, and a pass that creates notifications moves the ``notifications`` job's next run to now,
so alerts go out without waiting for its minute.

Run one scheduler per database (``billing serve --no-scheduler`` for further API processes): APScheduler 3 does
not share a job store between schedulers.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from billing.approval import ApprovalPolicy
from billing.config import Settings, get_settings
from billing.core.periods import Period, month_of
from billing.core.risk import RiskRules
from billing.db import repository, session_scope
from billing.db.scheduler_tables import SCHEDULER_JOBS_TABLE
from billing.invoicing import finalize_opening_invoices
from billing.invoicing import finalize_settings as configured_finalize_settings
from billing.reactions import POLL, Reactor
from billing.run import (
    PeriodsApart,
    RunReport,
    finalize_billing_period,
    finalize_period,
    periods_apart,
    run_billing,
    waiting_for_earlier,
)
from dbkit import as_utc, read_only, utcnow
from invoices import store
from invoices.model import InvoiceScope
from invoices.store import FinalizeSettings
from pricing_plans.models import Catalog

__all__ = [
    "JOBS",
    "LOOKBACK_PERIODS",
    "RETRY_DELAY",
    "CycleReport",
    "JobSpec",
    "at_risk_job",
    "bill_closed_periods",
    "billing_cycle_job",
    "build_scheduler",
    "install_jobs",
    "notification_job",
    "notify_at_risk",
    "start_scheduler",
    "stop_scheduler",
    "stripe_sync_job",
    "threshold_job",
]

log = logging.getLogger(__name__)

LOOKBACK_PERIODS = 3
"""Closed months the billing cycle looks back over (a service down for longer needs ``billing run``)."""
RETRY_DELAY = dt.timedelta(minutes=5)
"""A failed job runs again this long after it failed (or at its next run, if that is sooner)."""


# -- the billing cycle -------------------------------------------------------------------------------------


@dataclass
class CycleReport:
    """What one billing cycle did: the periods billed (customers each), and the invoices finalized (opening invoices
    first)."""

    billed: dict[str, int] = field(default_factory=dict)
    finalized: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unrated: list[str] = field(default_factory=list)  # customers whose drafts its runs left as they were


def finalize_settings(settings: Settings) -> FinalizeSettings:
    """How the scheduler numbers and dates invoices: the configured formats, terms and seller."""
    return configured_finalize_settings(settings)


def _draft_customers(engine: Engine, period: Period) -> set[str]:
    """Customers with a draft invoice of ``period``: an opening invoice dated in it, or the invoice of a billing
    period ending in it — the month, a week, an anniversary month."""
    with session_scope(read_only(engine)) as session:
        return store.customers_with_drafts(session, period.start) | store.customers_with_drafts(
            session, period.start, InvoiceScope.PERIOD, ending_by=period.end
        )


def _period_invoices(engine: Engine, month: Period) -> dict[tuple[str, dt.date, dt.date], bool]:
    """The period invoices of the weeks and anniversary months ending in ``month``: (customer, start, end) →
    issued."""
    with session_scope(read_only(engine)) as session:
        return store.period_invoice_states(session, month.start, month.end)


def bill_closed_periods(
    engine: Engine,
    catalog: Catalog,
    settings: FinalizeSettings,
    grace_days: int,
    *,
    now: dt.datetime | None = None,
    lookback: int = LOOKBACK_PERIODS,
    approval: ApprovalPolicy | None = None,
) -> CycleReport:
    """Finalize the opening invoices of the subscriptions that have started (``finalize_opening_invoices``); bill
    each of the last ``lookback`` months for the customers in whose timezone it has closed and who have no issued
    invoice for it yet; finalize a customer's drafts of a month ``grace_days`` after it closed. Weeks and
    anniversary months do not wait for their calendar month: each is billed once it has ended in the customer's
    timezone and finalized ``grace_days`` after (those ending in the current month and in the ``lookback``
    months).

    A month closed for every subscribed customer is billed in one run (which also bills late usage of customers
    with no subscription in it); before that, customer by customer; a week or anniversary month likewise. Drafts
    are refreshed at each call until they are finalized. With an ``approval`` policy, a draft that waits for
    approval (``billing.approval``) stays a draft, refreshed at each call, until it is approved: the next call
    after its approval issues it (if its content has not changed since).
    """
    report = CycleReport()
    instant = as_utc(now or utcnow())
    with session_scope(read_only(engine)) as session:
        customers = repository.list_customers(session)
    today = {c.external_id: instant.astimezone(ZoneInfo(c.timezone)).date() for c in customers}
    if not today:
        return report
    opening = finalize_opening_invoices(engine, catalog, settings, now=instant, approval=approval)
    report.finalized += opening.finalized
    report.skipped += opening.skipped
    latest = month_of(max(today.values())).previous()
    periods = [latest]
    while len(periods) < lookback:
        periods.insert(0, periods[0].previous())
    grace = dt.timedelta(days=grace_days)
    for period in [*periods, latest.next()]:
        apart = periods_apart(engine, catalog, period, now=instant)
        whole = False  # whether a run of the whole month billed its weeks and anniversary months too
        before = len(report.unrated)  # (a draft this period's runs could not rate now is not issued)
        rated: set[str] | None = set()  # the customers billed for the whole month by this cycle (None: all)
        if period != latest.next():  # the current month is billed when it has closed
            rated = _bill_period(engine, catalog, period, apart, today, report)
            whole = rated is None
        # Its weeks and anniversary months are billed before the month's drafts are issued: finalizing the month
        # issues the drafts of every billing period ending in it, each written by this cycle.
        if apart.customers and not whole:
            _bill_apart(engine, catalog, apart, today, report)
        unrated = set(report.unrated[before:])
        if period != latest.next():
            _finalize_due(engine, catalog, period, settings, today, grace, instant, report, approval, unrated, rated)
        if apart.customers:
            _finalize_apart(engine, apart, settings, today, grace, instant, report, approval, unrated)
    return report


def _bill_period(
    engine: Engine,
    catalog: Catalog,
    period: Period,
    apart: PeriodsApart,
    today: dict[str, dt.date],
    report: CycleReport,
) -> set[str] | None:
    """Bill ``period`` for the customers billed on it (a subscription billed on calendar months: not only weeks
    or anniversary months, ``apart``) in whose timezone (``today``) it has closed and who have no issued invoice
    of the month yet: in one run when it has closed for every such customer (None: that run billed every
    customer, the month's weeks and anniversary months too), else customer by customer (those billed)."""
    subscribed = apart.month_customers
    with session_scope(read_only(engine)) as session:
        issued = store.customers_with_issued_invoice(session, period.start, period_end=period.end)
    closed = {c for c in subscribed if c in today and today[c] >= period.end}
    pending = closed - issued
    if not pending:
        return set()
    report.billed[period.label] = len(pending)
    if closed == subscribed:
        _ran(report, run_billing(engine, catalog, period))
        return None
    for customer in sorted(pending):
        _ran(report, run_billing(engine, catalog, period, customer=customer))
    return pending


def _bill_apart(
    engine: Engine, catalog: Catalog, apart: PeriodsApart, today: dict[str, dt.date], report: CycleReport
) -> None:
    """Bill each week and anniversary month ending in ``apart.month`` once it has ended in the timezone of a
    customer billed in it who has no issued invoice of it yet: in one run of that period when it has ended for
    all of them, else customer by customer. Other periods are left as they are."""
    invoices = _period_invoices(engine, apart.month)
    for period, owners in sorted(apart.customers.items(), key=lambda item: (item[0].end, item[0].start)):
        ended = {c for c in owners if c in today and today[c] >= period.end}
        pending = {c for c in ended if not invoices.get((c, period.start, period.end), False)}
        if not pending:
            continue
        if ended == owners:
            _ran(report, run_billing(engine, catalog, apart.month, only=[period]))
        else:
            for customer in sorted(pending):
                run = run_billing(engine, catalog, apart.month, customer=customer, only=[period])
                _ran(report, run)
        report.billed[period.label] = report.billed.get(period.label, 0) + len(pending)


def _finalize_apart(
    engine: Engine,
    apart: PeriodsApart,
    settings: FinalizeSettings,
    today: dict[str, dt.date],
    grace: dt.timedelta,
    instant: dt.datetime,
    report: CycleReport,
    approval: ApprovalPolicy | None = None,
    unrated: Collection[str] = frozenset(),
) -> None:
    """Finalize each customer's draft of a week or anniversary month ending in ``apart.month`` once ``grace``
    has passed since the period ended in its timezone, one finalization per period and issue date; not those of
    the ``unrated`` customers (whom the runs of the month could not rate now: their drafts are not current). A
    draft left waiting for its customer's earlier one is added to ``report.skipped``, with why."""
    invoices = _period_invoices(engine, apart.month)
    tried: list[tuple[Period, list[str]]] = []
    for period, owners in sorted(apart.customers.items(), key=lambda item: (item[0].end, item[0].start)):
        due: dict[dt.date, list[str]] = {}
        for customer in sorted(owners - set(unrated)):
            draft = invoices.get((customer, period.start, period.end)) is False
            if draft and customer in today and today[customer] >= period.end + max(grace, dt.timedelta(0)):
                due.setdefault(today[customer], []).append(customer)
        for day, customers in sorted(due.items()):
            report.finalized += finalize_billing_period(
                engine, period, settings, day, customers=customers, now=instant, approval=approval
            )
            tried.append((period, customers))
    # (as for the month's drafts: a draft of the periods tried waiting for an earlier one is said, and tried next
    # cycle)
    for period, customers in tried:
        waiting = waiting_for_earlier(engine, period, customers=customers)
        report.skipped += [item for item in waiting if item not in report.skipped]


def _ran(report: CycleReport, run: RunReport) -> RunReport:
    """``run``'s skipped customers added to the cycle's report."""
    report.skipped += run.skipped
    report.unrated += sorted(run.unrated)
    return run


def _rated_whole(
    engine: Engine, catalog: Catalog, period: Period, customers: list[str], rated: Collection[str] | None,
    report: CycleReport,
) -> list[str]:
    """``customers``, each billed for the whole of ``period`` by this cycle (a run of it for those ``rated`` does
    not name), but those that run could not rate (added to ``report.skipped``)."""
    kept = []
    for customer in customers:
        if rated is not None and customer not in rated:
            run = _ran(report, run_billing(engine, catalog, period, customer=customer))
            if customer in run.unrated:
                continue
        kept.append(customer)
    return kept


def _finalize_due(
    engine: Engine,
    catalog: Catalog,
    period: Period,
    settings: FinalizeSettings,
    today: dict[str, dt.date],
    grace: dt.timedelta,
    instant: dt.datetime,
    report: CycleReport,
    approval: ApprovalPolicy | None = None,
    unrated: Collection[str] = frozenset(),
    rated: Collection[str] | None = None,
) -> None:
    """Finalize the customers' drafts of ``period`` once ``grace`` has passed since it closed in their timezone
    (``today``); not those of the ``unrated`` customers (whom the period's run could not rate now). Finalizing a
    month issues the drafts of every billing period ending in it: a due customer this cycle did not bill for the
    whole month (``rated``; None: every customer) is billed for it first, its weeks and anniversary months
    included, so that a draft of a week its subscription no longer covers is deleted, not issued."""
    drafts = _draft_customers(engine, period)
    due: dict[dt.date, list[str]] = {}
    for customer in sorted(drafts - set(unrated)):
        # never before the period has ended in the customer's timezone, whatever the grace (an issued invoice
        # cannot be changed); a preview draft of the current period stays a draft
        if customer in today and today[customer] >= period.end + max(grace, dt.timedelta(0)):
            due.setdefault(today[customer], []).append(customer)
    for day, customers in list(due.items()):
        due[day] = _rated_whole(engine, catalog, period, customers, rated, report)
        if not due[day]:  # (every one of that day's customers left as it was)
            del due[day]
    # One finalization per issue date ("today" in the customers' timezones), not one per customer: each reads
    # the period's drafts and subscriptions once (per customer, that reading grew with the square of the
    # customers, and so did the time other writers waited).
    for day, customers in sorted(due.items(), key=lambda item: item[1][0]):
        report.finalized += finalize_period(
            engine, period, settings, day, customers=customers, now=instant, approval=approval
        )
    if due:  # (a draft whose customer has an earlier one unissued waits for it: said, and tried next cycle)
        report.skipped += waiting_for_earlier(engine, period, customers={c for cs in due.values() for c in cs})


# -- the jobs (module-level: the job store keeps references to them) -----------------------------------------


def _engine(settings: Settings) -> Engine:
    from billing.db.engines import engine_for_url

    return engine_for_url(settings.database_url)


def _catalog(settings: Settings) -> Catalog:
    from pricing_plans.loader import load_catalog_or_raise

    return load_catalog_or_raise(settings.catalog)


def billing_cycle_job() -> None:
    """Bill the periods that have closed and finalize them after the grace period (``bill_closed_periods``), the
    drafts that wait for approval left as drafts (``[approval]``)."""
    from billing.approval import awaiting_approval
    from billing.credits import settle_due

    settings = get_settings()
    policy = ApprovalPolicy.configured(settings)
    report = bill_closed_periods(
        _engine(settings), _catalog(settings), finalize_settings(settings), settings.finalize_grace_days,
        approval=policy,
    )
    # credits expired by now written off on their date, paid top-ups made usable; then alerts and automatic top-ups
    settle_due(_engine(settings), settings=finalize_settings(settings))
    for label, count in sorted(report.billed.items()):
        log.info("billing cycle: period %s billed for %d customer(s)", label, count)
    if report.finalized:
        log.info("billing cycle: finalized %d invoice(s): %s", len(report.finalized), ", ".join(report.finalized))
    for customer, reason in report.skipped:
        log.warning("billing cycle: customer %s skipped: %s", customer, reason)
    waiting = awaiting_approval(_engine(settings), policy)
    if waiting:
        log.info("billing cycle: %d draft(s) wait for approval (billing invoices pending-approval)", len(waiting))


def threshold_job() -> None:
    """Check every active subscription's thresholds for the current period."""
    from billing.thresholds import check_thresholds

    settings = get_settings()
    report = check_thresholds(_engine(settings), _catalog(settings))
    if report.created:
        log.info("thresholds: %d level(s) crossed", len(report.created))
    progressive_job()


def progressive_job() -> None:
    """Issue the progressive invoices due in every subscription's current period (those the usage reactions
    have not issued yet: a reaction that failed, a plan given progressive billing since)."""
    from billing.progressive import issue_progressive_invoices

    settings = get_settings()
    report = issue_progressive_invoices(
        _engine(settings), _catalog(settings), finalize_settings(settings)
    )
    if report.issued:
        log.info("progressive billing: issued %s", ", ".join(report.issued))


def notification_job() -> None:
    """Deliver the notifications that are due (new ones, and retries of failed ones)."""
    try:
        from billing.notify import deliver_pending
    except ImportError:
        log.warning("notifications: billing.notify is not available; nothing delivered")
        return
    global _waiting_reported
    settings = get_settings()
    report = deliver_pending(_engine(settings), settings)
    if report.waiting != _waiting_reported:  # told when it changes, not every minute
        if report.waiting:
            log.warning(
                "notifications: %d due with no destination configured (no webhook URL, no e-mail); left pending",
                report.waiting,
            )
        _waiting_reported = report.waiting


_waiting_reported = 0  # the notifications waiting for a destination, as last logged


def at_risk_job() -> None:
    """Queue the ``customer.at_risk`` notifications of the last month that has ended everywhere
    (:func:`notify_at_risk`)."""
    from billing.risk import rules_from_settings

    settings = get_settings()
    created = notify_at_risk(_engine(settings), _catalog(settings), rules_from_settings(settings), utcnow())
    if created:
        log.info("churn risk: %d customer(s) at risk, customer.at_risk queued", len(created))


_risk_assessed: set[tuple[str, str]] = set()  # (database URL, month) assessed by this process


def notify_at_risk(engine: Engine, catalog: Catalog, rules: RiskRules, now: dt.datetime) -> list[str]:
    """Assess the last month that has ended in every timezone at ``now`` and queue a ``customer.at_risk``
    notification for each customer at risk; the ids created. Each month is assessed once per process (the
    assessment is of the month as it stood at its end, so it does not change); the notifications are once per
    customer and month whatever runs them (``billing.risk.queue_at_risk``)."""
    from billing.risk import assess_period, last_closed_month, queue_at_risk

    period = last_closed_month(now)
    key = (engine.url.render_as_string(hide_password=True), period.label)
    if key in _risk_assessed:
        return []
    created = queue_at_risk(engine, assess_period(engine, catalog, period, rules))
    _risk_assessed.add(key)
    return created


def stripe_sync_job() -> None:
    """Push finalized invoices to Stripe, and carry there the voids and credit notes of those pushed before (only
    when ``STRIPE_API_KEY`` is set); raises if anything failed, so that the failure is logged and the job retried."""
    if not get_settings().secret("stripe_api_key"):
        log.debug("stripe sync: STRIPE_API_KEY is not set; nothing pushed")
        return
    from billing.stripe.sync import sync_invoices

    report = sync_invoices(_engine(get_settings()))
    if report.synced:
        log.info("stripe sync: pushed %d invoice(s)", len(report.synced))
    carried = [adjustment for adjustment in report.adjustments if adjustment.ok]
    if carried:
        log.info("stripe sync: carried %d void(s) and credit note(s)", len(carried))
    if not report.ok:
        failures = [f"{r.invoice_number}: {r.error}" for r in report.failed]
        failures += [f"{a.document}: {a.error}" for a in report.adjustments if not a.ok]
        raise RuntimeError(f"stripe sync: {len(failures)} not carried to Stripe: {'; '.join(failures)}")


# -- the scheduler -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A recurring job: its id, function, interval and misfire grace time (how late a run may still start)."""

    id: str
    func: Callable[[], None]
    every: dt.timedelta
    misfire_grace: dt.timedelta


JOBS: tuple[JobSpec, ...] = (
    JobSpec("billing_cycle", billing_cycle_job, dt.timedelta(hours=1), dt.timedelta(days=1)),
    JobSpec("thresholds", threshold_job, dt.timedelta(minutes=15), dt.timedelta(minutes=15)),
    JobSpec("notifications", notification_job, dt.timedelta(minutes=1), dt.timedelta(minutes=5)),
    JobSpec("at_risk", at_risk_job, dt.timedelta(hours=6), dt.timedelta(days=1)),
    JobSpec("stripe_sync", stripe_sync_job, dt.timedelta(minutes=15), dt.timedelta(hours=1)),
)


def _on_job_event(scheduler: BackgroundScheduler, event: JobEvent) -> None:
    """Log every failure and missed run; schedule a failed job again after ``RETRY_DELAY``."""
    if event.code == EVENT_JOB_MISSED:
        log.warning("job %s: the run due at %s was missed (too late to start)", event.job_id, event.scheduled_run_time)
        return
    if event.code == EVENT_JOB_MAX_INSTANCES:
        log.warning("job %s: still running, this run was skipped", event.job_id)
        return
    exception = getattr(event, "exception", None)
    log.error(
        "job %s failed: %s; retrying in %s",
        event.job_id,
        exception,
        RETRY_DELAY,
        exc_info=(type(exception), exception, exception.__traceback__) if exception is not None else None,
    )
    # Not here: this may run inside the scheduler's own pass over the due jobs, which then stores the job's regular
    # next run over ours. A thread of its own waits for that pass to release the job stores, then moves the run.
    threading.Thread(target=_retry_soon, args=(scheduler, event.job_id), daemon=True).start()


def _retry_soon(scheduler: BackgroundScheduler, job_id: str) -> None:
    try:
        job = scheduler.get_job(job_id)
        retry_at = utcnow() + RETRY_DELAY
        if job is not None and (job.next_run_time is None or job.next_run_time > retry_at):
            scheduler.modify_job(job_id, next_run_time=retry_at)
    except Exception:  # the retry is a courtesy: the next regular run comes anyway
        log.exception("job %s: could not schedule the retry; it runs again at its next regular time", job_id)


def build_scheduler(engine: Engine, *, workers: int = 4) -> BackgroundScheduler:
    """A scheduler (not started) whose jobs are stored in ``engine``'s database, with the job defaults: one
    instance of each job at a time, missed runs coalesced into one."""
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename=SCHEDULER_JOBS_TABLE)},
        executors={"default": ThreadPoolExecutor(workers)},
        job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": 3600},
        timezone=dt.UTC,
    )
    scheduler.add_listener(
        lambda event: _on_job_event(scheduler, event), EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
    )
    return scheduler


def install_jobs(scheduler: BackgroundScheduler, jobs: tuple[JobSpec, ...] = JOBS) -> None:
    """Add the jobs the store does not hold yet (due at once); a stored job keeps its next run time — a run
    that fell due while the service was down still happens — unless its interval changed."""
    for spec in jobs:
        trigger = IntervalTrigger(seconds=int(spec.every.total_seconds()), timezone=dt.UTC)
        options = {
            "id": spec.id,
            "name": spec.id,
            "max_instances": 1,
            "coalesce": True,
            "misfire_grace_time": int(spec.misfire_grace.total_seconds()),
        }
        stored = scheduler.get_job(spec.id)
        if stored is None:
            scheduler.add_job(spec.func, trigger, next_run_time=utcnow(), **options)
        elif getattr(stored.trigger, "interval", None) != spec.every:
            scheduler.reschedule_job(spec.id, trigger=trigger)


_REACTORS: weakref.WeakKeyDictionary[BackgroundScheduler, Reactor] = weakref.WeakKeyDictionary()


def _cached_catalog(settings: Settings) -> Callable[[], Catalog]:
    """The configured catalog, loaded again only when its file changes (the reactor asks every second)."""
    cache: dict[str, tuple[float, Catalog]] = {}

    def catalog() -> Catalog:
        path = str(settings.catalog)
        stamp = os.stat(path).st_mtime
        cached = cache.get(path)
        if cached is None or cached[0] != stamp:
            cache[path] = (stamp, _catalog(settings))
        return cache[path][1]

    return catalog


def _deliver_soon(scheduler: BackgroundScheduler) -> None:
    """Move the notification job's next run to now (alerts just created go out at once)."""
    try:
        scheduler.modify_job("notifications", next_run_time=utcnow())
    except Exception:  # a courtesy: the job runs every minute anyway
        log.debug("could not move the notification job's next run", exc_info=True)


def start_scheduler(
    engine: Engine, jobs: tuple[JobSpec, ...] = JOBS, *, reactor: bool = True, reactor_poll: float = POLL
) -> BackgroundScheduler:
    """Build the scheduler, install the jobs and start running them; with ``reactor``, start the usage reactor
    too (``billing.reactions``), looking for new events every ``reactor_poll`` seconds."""
    scheduler = build_scheduler(engine)
    scheduler.start(paused=True)  # the job store is open: look at the stored jobs before anything runs
    install_jobs(scheduler, jobs)
    scheduler.resume()
    if reactor:
        _REACTORS[scheduler] = Reactor(
            engine,
            _cached_catalog(get_settings()),
            poll=reactor_poll,
            on_created=lambda: _deliver_soon(scheduler) if scheduler.get_job("notifications") else None,
        ).start()
    names = ", ".join(f"{job.id} (next {job.next_run_time:%Y-%m-%d %H:%M:%S %Z})" for job in scheduler.get_jobs())
    log.info("scheduler started: %s", names)
    return scheduler


def stop_scheduler(scheduler: BackgroundScheduler, *, wait: bool = True) -> None:
    """Stop the scheduler, waiting (``wait``) for the jobs that are running; the stored jobs stay as they are.

    The job store is detached first: after ``shutdown`` APScheduler 3's thread looks for due jobs once more and
    would hand a due one to the stopped executor and move it on to its next run — a lost run.
    """
    reactor = _REACTORS.pop(scheduler, None)
    if reactor is not None:
        reactor.stop()
    scheduler.pause()
    for alias in list(scheduler._jobstores):  # no public listing of the stores; removing them is public
        scheduler.remove_jobstore(alias, shutdown=True)
    scheduler.shutdown(wait=wait)
