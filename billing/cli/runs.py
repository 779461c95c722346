"""``billing run``: the monthly billing run."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine

from billing import customers, run_history
from billing.approval import ApprovalPolicy, awaiting_approval
from billing.cli import _json
from billing.cli._common import (
    console,
    database,
    engine_for_cli,
    err_console,
    fail,
    finalize_settings,
    load_catalog_for_cli,
    open_period_message,
    print_table,
)
from billing.core.periods import Period, parse_month
from billing.core.shards import Shard, parse_shard
from billing.errors import BillingError, NotFoundError
from billing.invoicing import check_period_finalizable, issue_day
from billing.run import RunReport, finalize_after_run, run_billing
from meters.errors import ConflictingEvents
from pricing_plans.models import Catalog
from pricing_plans.money import format_amount

runs_app = typer.Typer(help="Billing runs done: who started each, when, and what it did.", no_args_is_help=True)

JsonOption = typer.Option(False, "--json", help="Print JSON (the API's fields) instead of text.")

MAX_ID_LENGTH = 255  # a customer's external id (as the API caps it)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.add_typer(runs_app, name="runs")


def run(
    period: str = typer.Option(..., "--period", help="The billing period, YYYY-MM."),
    finalize: bool = typer.Option(False, "--finalize", help="Finalize the period's drafts after writing them."),
    allow_open_period: bool = typer.Option(
        False, "--allow-open-period", help="With --finalize: finalize the current period before it has ended."
    ),
    customer: str | None = typer.Option(None, "--customer", help="Bill only this customer."),
    shard: str | None = typer.Option(
        None, "--shard", metavar="K/N",
        help="Bill only shard K of N (customers split by a hash of their id); run every K for the whole run.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the run's report as JSON (the API's fields)."),
) -> None:
    """Write (or refresh) one draft invoice per customer for the period; with --finalize, number them.

    A period that has not begun is refused; the current one is billed as drafts (a preview) and finalized only
    with --allow-open-period. Usage events the run does not bill are counted and named, with why.

    --shard K/N splits the run across processes or machines: each shard writes its own customers' drafts, and
    the N shards together write what one run writes; finalize once they are all done (`billing invoices finalize
    --period`)."""
    billing_period, part = _checked(period, finalize, allow_open_period, customer, shard)
    catalog = load_catalog_for_cli()
    engine = engine_for_cli()
    if customer is not None:  # (a typo bills nothing: refused, not a completed run of no one)
        try:
            customers.get_customer(engine, customer)
        except NotFoundError as error:
            fail(f"--customer: {error}")
    try:
        if finalize:  # refused before anything is written
            check_period_finalizable(
                engine, billing_period, customer=customer, allow_open_period=allow_open_period
            )
        with run_history.recorded(
            engine, billing_period, source="cli", actor=run_history.cli_user(), customer=customer,
            shard=None if part is None else part.label, finalize=finalize,
        ) as recording:  # fmt: skip
            report = _run_with_progress(engine, catalog, billing_period, customer, part, as_json)
            numbers, awaiting = (
                _finalize(engine, catalog, billing_period, customer, allow_open_period, report)
                if finalize
                else ([], [])
            )
            recording.done(report, numbers, awaiting)
    except BillingError as error:
        fail(open_period_message(error))
    except ConflictingEvents as error:
        fail(f"{error}; `billing db resolve-conflicts` keeps the first received content of each")
    if as_json:
        _json.emit({"id": recording.id, **_json.run_json(report, numbers, awaiting)})
        return
    _print_report(report, numbers if finalize else None)
    console.print(f"recorded as billing run {recording.id} (`billing runs show {recording.id}`)", highlight=False)
    if awaiting:
        console.print(
            f"{len(awaiting)} draft(s) wait for approval and were not finalized: `billing invoices pending-approval "
            f"--period {billing_period.label}` says why, `billing invoices approve` approves"
        )


def _checked(
    period: str, finalize: bool, allow_open_period: bool, customer: str | None, shard: str | None
) -> tuple[Period, Shard | None]:
    """``billing run``'s options read and checked (a usage error otherwise): the month and the shard."""
    try:
        billing_period = parse_month(period)
    except ValueError as error:
        fail(f"--period: {error}")
    if allow_open_period and not finalize:
        fail("--allow-open-period goes with --finalize")
    part = _shard(shard, finalize)
    if customer is not None and len(customer) > MAX_ID_LENGTH:
        fail(f"--customer: a customer id has at most {MAX_ID_LENGTH} characters, got {len(customer)}")
    return billing_period, part


def _run_with_progress(
    engine: Engine, catalog: Catalog, billing_period: Period, customer: str | None, part: Shard | None, as_json: bool
) -> RunReport:
    """The run, its customers counted on a progress bar: on standard error, and only on a terminal (standard
    output holds the report alone, piped or not); with --json it is cleared once done."""
    with Progress(
        TextColumn("[bold]billing {task.fields[period]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("customers"),
        TimeElapsedColumn(),
        console=err_console,
        transient=as_json,
        disable=not err_console.is_terminal,
        auto_refresh=False,  # no refresh thread: a big run is rated by forked worker processes
    ) as progress:
        task = progress.add_task("run", total=None, period=billing_period.label)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, refresh=True)

        return run_billing(engine, catalog, billing_period, customer=customer, progress=advance, shard=part)


def _shard(text: str | None, finalize: bool) -> Shard | None:
    """``--shard K/N`` read and checked (a usage error otherwise)."""
    if text is None:
        return None
    if finalize:
        fail("--shard: finalize once every shard has run (`billing invoices finalize --period`), not with --finalize")
    try:
        return parse_shard(text)
    except ValueError as error:
        fail(f"--shard: {error}")


def _finalize(
    engine: Engine,
    catalog: Catalog,
    billing_period: Period,
    customer: str | None,
    allow_open_period: bool,
    report: RunReport,
) -> tuple[list[str], list[int]]:
    """The period's drafts finalized but those waiting for approval and those of the customers the run could not
    rate (listed among the skipped): the numbers given, the ids left waiting."""
    policy = ApprovalPolicy.configured()
    numbers = finalize_after_run(
        engine, catalog, billing_period, report, finalize_settings(), issue_day(), customer=customer,
        allow_open_period=allow_open_period, approval=policy,
    )
    waiting = awaiting_approval(engine, policy, period_start=billing_period.start, customer=customer)
    return numbers, [item.draft.invoice_id for item in waiting]


def _print_report(report: RunReport, finalized: list[str] | None) -> None:
    table = Table(title=f"Billing run {report.period.label}")
    table.add_column("What")
    table.add_column("Count / amount", justify="right")
    table.add_row("invoices written (new)", str(report.created))
    table.add_row("drafts refreshed", str(report.updated))
    table.add_row("drafts unchanged", str(report.unchanged))
    table.add_row("drafts removed (nothing to invoice now)", str(len(report.removed)))
    table.add_row("issued, left untouched", str(report.issued_untouched))
    if report.periods:  # weeks and anniversary months ending in the month, beside the month itself
        table.add_row("billing periods besides the month", ", ".join(p.label for p in report.periods))
    table.add_row("late-usage lines", str(report.late_lines))
    table.add_row("usage events in the period", f"{report.accepted:,}")
    table.add_row("usage events rated", f"{report.events:,}")
    table.add_row("usage events unbilled", f"{report.unbilled_events:,}")
    if finalized is not None:
        table.add_row("finalized", str(len(finalized)))
    for currency, total in sorted(report.totals.items()):
        table.add_row(f"total {currency}", format_amount(total, currency))
    table.add_row("rating worker processes", str(report.rating_workers))
    table.add_row("seconds (load/aggregate/rate/write)",
                  " / ".join(f"{report.seconds.get(k, 0):.2f}" for k in ("load", "aggregate", "rate", "write")))
    console.print(table)
    if report.skipped:
        skipped = Table(title="Customers skipped")
        skipped.add_column("Customer")
        skipped.add_column("Why")
        for customer_id, reason in report.skipped:
            skipped.add_row(escape(customer_id), escape(reason))
        console.print(skipped)
    for group in report.unbilled:
        console.print(f"[yellow]unbilled:[/] {escape(group.message)}", highlight=False, soft_wrap=True)


# -- billing runs list | show ----------------------------------------------------------------------------------


@runs_app.command("list")
def list_command(
    period: str | None = typer.Option(None, "--period", help="Only the runs of this month, YYYY-MM."),
    limit: int = typer.Option(20, "--limit", min=1, max=1000, help="At most this many, the latest first."),
    as_json: bool = JsonOption,
) -> None:
    """The latest billing runs, latest first: when, who, what for, how it ended, what it wrote and issued."""
    try:
        month = None if period is None else parse_month(period)
    except ValueError as error:
        fail(f"--period: {error}")
    with database() as engine:
        found, more = run_history.runs_page(engine, limit=limit, period=month, newest_first=True)
    if as_json:
        _json.emit({"data": [run_history.run_json(r) for r in found], "has_more": more})
        return
    scope = f" of {month.label}" if month else ""
    table = Table(title=f"{len(found)} billing run(s){scope}" + (", more before" if more else ""))
    numeric = ("Id", "Seconds", "Written", "Finalized", "Skipped")
    for column in ("Id", "Started (UTC)", "Period", "Scope", "By", "Outcome", *numeric[1:], "Totals"):
        table.add_column(column, justify="right" if column in numeric else "left")
    for r in found:
        report = r.report or {}
        table.add_row(
            str(r.id), r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.period.label + (" +finalize" if r.finalize else ""),
            escape(_scope(r)), escape(_by(r)), escape(_outcome(r)),
            "" if r.seconds is None else f"{r.seconds:.1f}",
            f"{report['created']} new, {report['updated']} refreshed" if report else "",
            str(len(report["finalized"])) if report else "", str(len(report["skipped"])) if report else "",
            escape(", ".join(f"{amount} {currency}" for currency, amount in report.get("totals", {}).items())),
        )  # fmt: skip
    print_table(table)


@runs_app.command("show")
def show(
    run_id: int = typer.Argument(..., metavar="RUN_ID", min=1, max=2**63 - 1, help="The run's id (billing runs list)."),
    as_json: bool = JsonOption,
) -> None:
    """One billing run: who started it and when, what it was asked, how it ended, and its report."""
    with database() as engine:
        try:
            found = run_history.get_run(engine, run_id)
        except BillingError as error:
            fail(str(error))
    if as_json:
        _json.emit(run_history.run_json(found))
        return
    table = Table(title=f"Billing run {found.id}: {found.period.label}", show_header=False)
    table.add_column("What")
    table.add_column("Value")
    table.add_row("started (UTC)", found.started_at.strftime("%Y-%m-%d %H:%M:%S"))
    table.add_row("by", escape(_by(found)))
    table.add_row("scope", escape(_scope(found) + (", then finalize" if found.finalize else "")))
    table.add_row("outcome", escape(_outcome(found)))
    if found.seconds is not None:
        table.add_row("seconds", f"{found.seconds:.1f}")
    report = found.report
    if report:
        for key, what in (("created", "invoices written (new)"), ("updated", "drafts refreshed"),
                          ("unchanged", "drafts unchanged"), ("removed", "drafts removed (nothing to invoice now)"),
                          ("issued_untouched", "issued, left untouched"), ("late_lines", "late-usage lines")):
            table.add_row(what, str(report[key]))
        events = report["events"]
        table.add_row("usage events (rated / unbilled)", f"{events['rated']:,} / {events['unbilled']:,}")
        table.add_row("finalized", str(len(report["finalized"])))
        table.add_row("waiting for approval", str(len(report["awaiting_approval"])))
        for currency, amount in report["totals"].items():
            table.add_row(f"total {escape(currency)}", escape(amount))
    print_table(table)
    if report and report["skipped"]:
        skipped = Table(title="Customers skipped")
        skipped.add_column("Customer")
        skipped.add_column("Why")
        for item in report["skipped"]:
            skipped.add_row(escape(item["customer"]), escape(item["reason"]))
        print_table(skipped)
    for group in (report or {}).get("unbilled", []):
        console.print(f"[yellow]unbilled:[/] {escape(group['message'])}", highlight=False, soft_wrap=True)


def _by(found: run_history.BillingRun) -> str:
    return f"{found.source}: {found.actor}" if found.actor else found.source


def _scope(found: run_history.BillingRun) -> str:
    if found.customer is not None:
        return f"customer {found.customer}"
    if found.shard is not None:
        return f"shard {found.shard}"
    return "every customer"


def _outcome(found: run_history.BillingRun) -> str:
    if found.outcome == "failed":
        return f"failed: {found.error}"
    if found.outcome == "running":
        return "running (or stopped without ending: run the period again)"
    return found.outcome
