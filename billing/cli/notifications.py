"""``billing notifications list|deliver|retry``, ``billing thresholds check`` and ``billing customers set-limit``:
thin wrappers over ``billing.notify`` and ``billing.thresholds``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from billing.cli import _json
from billing.cli._common import console, database, err_console, load_catalog_for_cli, print_table, progress_bar
from billing.cli.customers import customers_app
from billing.config import Settings, get_settings
from billing.errors import BillingInputError

if TYPE_CHECKING:
    from billing.thresholds import CheckReport

notifications_app = typer.Typer(help="Notifications: list, deliver, retry.", no_args_is_help=True)
thresholds_app = typer.Typer(help="Usage and spend thresholds.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def register(app: typer.Typer) -> None:
    app.add_typer(notifications_app, name="notifications")
    app.add_typer(thresholds_app, name="thresholds")
    # `customers` belongs to billing.cli.customers; its limit command lives here, with the thresholds.
    customers_app.command("set-limit")(customers_set_limit)




def _table(title: str, *headers: str) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for header in headers:
        justify = "right" if header in ("Level", "Value", "Limit", "Attempts") else "left"
        table.add_column(header, overflow="fold", justify=justify)  # type: ignore[arg-type]
    return table




def warn_without_destination(settings: Settings) -> None:
    """On standard error, while no notification destination is configured: where notifications go meanwhile."""
    from billing.notify import destination_warning

    warning = destination_warning(settings)
    if warning is not None:
        err_console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)


def _what(kind: str, threshold: str | None, level: int | None, invoice: str | None) -> str:
    if kind == "invoice.finalized":
        return f"invoice {invoice}"
    if kind == "credit.balance_low":
        return "credit below its level"
    if kind == "credit.balance_depleted":
        return "credit used up"
    return f"{threshold} {level} %"


# -- notifications ---------------------------------------------------------------------------------------


@notifications_app.command("list")
def notifications_list(
    status: Annotated[str | None, typer.Option("--status", help="pending, sent or dead.")] = None,
    customer: Annotated[str | None, typer.Option("--customer", metavar="ID", help="Only this customer's.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List notifications, oldest first."""
    from billing.notify import list_notifications

    with database() as engine:
        found = list_notifications(engine, status=status, customer=customer)
    if as_json:
        _json.emit(_json.listing(_json.notification_json(n) for n in found))
        return
    if not found:
        console.print("no notifications")
        return
    table = _table("Notifications", "ID", "Kind", "Customer", "Period", "What", "Value", "Limit", "Status",
                   "Attempts", "Last error")
    for n in found:
        unit = n.currency or n.payload.get("unit") or ""
        cells = (
            n.id,
            n.kind,
            n.customer,
            n.period,
            _what(n.kind, n.threshold_key, n.level, n.payload.get("invoice_number")),
            "" if n.value is None else str(n.value),
            "" if n.limit is None else f"{n.limit} {unit}".strip(),
            n.status,
            str(n.attempts),
            n.last_error or "",
        )
        table.add_row(*map(Text, cells))
    print_table(table)


@notifications_app.command("deliver")
def notifications_deliver(
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many notifications.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Send the due pending notifications (webhook and e-mail); failures are retried later with backoff. One with
    nowhere to go (no webhook URL and no e-mail configured for it) stays pending until a destination is."""
    from billing.notify import deliver_pending

    settings = get_settings()
    warn_without_destination(settings)
    with (
        database() as engine,
        progress_bar("delivering") as progress,
    ):
        task = progress.add_task("deliver", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        report = deliver_pending(engine, settings, limit=limit, progress=advance)
    for notification_id, error in report.errors:
        err_console.print(f"{notification_id}: {error}", highlight=False, soft_wrap=True, markup=False)
    if as_json:
        _json.emit(
            {
                "sent": report.sent,
                "retrying": report.retrying,
                "dead": report.dead,
                "attempts": report.attempts,
                "waiting": report.waiting,
                "errors": [{"id": notification_id, "error": error} for notification_id, error in report.errors],
            }
        )
        return
    waiting = f"; {report.waiting} waiting for a destination (pending)" if report.waiting else ""
    console.print(
        f"sent {report.sent}, to retry {report.retrying}, dead {report.dead} ({report.attempts} attempts){waiting}",
        highlight=False,
    )


@notifications_app.command("retry")
def notifications_retry(
    notification_id: Annotated[str, typer.Argument(metavar="ID", help="The id of a dead notification.")],
    as_json: JsonOption = False,
) -> None:
    """Put a dead notification back to pending; the next `billing notifications deliver` sends it."""
    from billing.notify import retry

    with database() as engine:
        notification = retry(engine, notification_id)
    if as_json:
        _json.emit(_json.notification_json(notification))
        return
    console.print(f"notification {notification.id} is pending again", highlight=False, markup=False)


# -- thresholds ------------------------------------------------------------------------------------------


@thresholds_app.command("check")
def thresholds_check(
    customer: Annotated[
        list[str] | None, typer.Option("--customer", metavar="ID", help="Only this customer; repeat for more.")
    ] = None,
    period: Annotated[
        str | None,
        typer.Option(
            "--period", metavar="YYYY-MM", help="This month instead of the current one (e.g. usage that came late)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Evaluate the thresholds of every subscription in the current month (or --period), and of the months of any
    usage stored but not yet evaluated; print the notifications created. A customer whose invoice of the period
    is already issued is not evaluated."""
    from billing.cli._common import fail
    from billing.core.periods import parse_month
    from billing.reactions import react_to_usage
    from billing.thresholds import check_thresholds

    month = None
    if period is not None:
        try:
            month = parse_month(period)
        except ValueError as error:
            fail(f"--period: {error}")
    catalog = load_catalog_for_cli()
    with database() as engine:
        pending = react_to_usage(engine, catalog)  # usage stored but not evaluated yet (a server stopped)
        report = check_thresholds(engine, catalog, customers=customer or None, period=month)
        report.created[:0] = pending.created
    _print_check_notes(report)
    _print_check_report(report, as_json)


def _print_check_notes(report: CheckReport) -> None:
    """On stderr: the customers skipped, with why, and the customer periods left out because their invoice is
    already issued."""
    for customer_id, reason in report.skipped:
        err_console.print(f"{customer_id}: skipped: {reason}", highlight=False, soft_wrap=True, markup=False)
    if report.issued:
        labels = sorted({label for _, label in report.issued})
        err_console.print(
            f"not evaluated: {len(report.issued)} customer period(s) whose invoice is already issued "
            f"({', '.join(labels)})",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )


def _print_check_report(report: CheckReport, as_json: bool) -> None:
    """On stdout: the notifications created and the counts evaluated, as JSON or as a table and a summary line."""
    if as_json:
        _json.emit(
            {
                "subscriptions": report.subscriptions,
                "evaluations": report.evaluations,
                "events": report.events,
                "created": [_json.record_json(crossing) for crossing in report.created],
                "skipped": [{"customer": who, "reason": why} for who, why in report.skipped],
                "issued": [{"customer": who, "period": label} for who, label in report.issued],
            }
        )
        return
    if report.created:
        table = _table("Thresholds crossed", "Customer", "Subscription", "Period", "Threshold", "Level", "Value",
                       "Limit", "Notification")
        for c in report.created:
            unit = c.currency or c.unit or ""
            cells = (c.customer, str(c.subscription_id), c.period, c.threshold_key, f"{c.level} %", str(c.value),
                     f"{c.limit} {unit}".strip(), c.notification_id)
            table.add_row(*map(Text, cells))
        print_table(table)
    console.print(
        f"evaluated {report.evaluations} thresholds of {report.subscriptions} subscriptions; "
        f"created {len(report.created)} notifications",
        highlight=False,
    )


def customers_set_limit(
    customer: Annotated[str, typer.Argument(metavar="CUSTOMER", help="The customer's id.")],
    meter: Annotated[str | None, typer.Option("--meter", help="The meter of an allowance.")] = None,
    allowance: Annotated[str | None, typer.Option("--allowance", metavar="N", help="Units of --meter.")] = None,
    spend_cap: Annotated[
        str | None, typer.Option("--spend-cap", metavar="X", help="Usage charges per period, in the plan's currency.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Set the customer's own allowance of a meter (--meter M --allowance N) or spend cap (--spend-cap X),
    replacing the catalog's in their thresholds (--json: the limit as the API answers it)."""
    from billing.thresholds import set_limit

    catalog = load_catalog_for_cli()
    with database() as engine:
        try:
            limit = set_limit(engine, catalog, customer, meter=meter, allowance=allowance, spend_cap=spend_cap)
        except BillingInputError as exc:  # (the service names the API's fields: here they are options)
            options = {"spend_cap": "--spend-cap", "allowance": "--allowance", "meter": "--meter"}
            raise BillingInputError.of(
                [re.sub(r"^(spend_cap|allowance|meter):", lambda m: options[m[1]] + ":", p) for p in exc.problems]
            ) from None
    if as_json:
        _json.emit({"customer": limit.customer, "threshold": limit.key, "kind": limit.kind, "meter": limit.meter,
                    "limit": f"{limit.limit:f}"})  # fmt: skip
        return
    what = f"allowance of {limit.meter}" if limit.kind == "usage" else "spend cap"
    console.print(f"customer {limit.customer}: {what} set to {limit.limit}", highlight=False, markup=False)
