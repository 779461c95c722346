"""The demo's payments and receivables: the quarter's invoices paid as customers pay — most in full by bank
transfer or card ten days after issue, some in part, some not at all — then the aged receivables at a fixed
day after the quarter (so every run prints the same table)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from rich.console import Console
from sqlalchemy import Engine

from billing import invoicing, payments
from billing.cli._common import print_table
from billing.cli.invoices import aging_table
from pricing_plans.money import round_money

AS_OF = dt.date(2026, 12, 15)
NOW = dt.datetime(2026, 12, 15, 12, 0, tzinfo=dt.UTC)
SHOWN = 12  # customers in the printed table: the most overdue


def record_payments_and_age(engine: Engine, console: Console) -> None:
    """Record the payments and print the aged receivables as of ``AS_OF``."""
    unpaid = sorted(invoicing.list_invoices(engine, unpaid=True), key=lambda i: (i.issue_date, i.number or ""))
    full = partial = 0
    for index, invoice in enumerate(unpaid):
        if invoice.issue_date is None or invoice.number is None:
            continue
        october = invoice.period_start >= dt.date(2026, 10, 1)
        if index % 7 == 3 or (october and index % 3 != 0):
            continue  # left unpaid: overdue by the as-of day
        half = index % 5 == 0
        amount = round_money(invoice.amount_due / 2, invoice.currency) if half else invoice.amount_due
        if amount <= Decimal(0):
            continue
        payments.record_payment(
            engine, invoice.number, amount, method="card" if index % 2 else "bank_transfer",
            received_on=invoice.issue_date + dt.timedelta(days=10), reference=f"DEMO-{index:04d}", now=NOW,
        )
        partial, full = partial + half, full + (not half)
    console.print(
        f"payments: {full} invoices paid in full, {partial} in part (half), {len(unpaid) - full - partial} left "
        f"unpaid (billing payments list; billing invoices list --unpaid)"
    )
    report = payments.aged_receivables(engine, AS_OF)
    # the most overdue: the oldest bucket holding something, then the most invoices (amounts of several currencies
    # do not compare)
    oldest = {id(r): max(i for i, amount in enumerate(r.buckets) if amount > 0) for r in report.rows}
    worst = sorted(report.rows, key=lambda r: (-oldest[id(r)], -r.invoices, r.customer or ""))[:SHOWN]
    shown = payments.Aging(report.as_of, tuple(sorted(worst, key=lambda r: (r.customer or "", r.currency))),
                           report.totals)
    print_table(aging_table(shown))
    shown_count = min(SHOWN, len(report.rows))
    console.print(
        f"({len(report.rows)} customers owe something; the {shown_count} most overdue shown, the totals over all: "
        f"billing invoices aging --as-of {AS_OF.isoformat()})"
    )
