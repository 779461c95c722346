"""Dates relative to today for the tests that go through the commands or the API, which read the real clock: a
billing run refuses a period that has not begun, finalizing one that has not ended, and ingestion an event older
than the late-usage window (12 months back). Fixed dates there would start failing as the real date moves on."""

from __future__ import annotations

import datetime as dt

from billing.core.periods import Period, month_of


def ended_month(months_back: int = 2) -> Period:
    """The calendar month ``months_back`` months before the current one (in UTC). Two back by default: it has ended
    in every timezone (even where today is still the last day of the month before the current UTC one) and lies
    well inside every customer's late-usage window."""
    period = month_of(dt.datetime.now(dt.UTC).date())
    for _ in range(months_back):
        period = period.previous()
    return period


def this_year() -> int:
    """The year invoices finalized today by the commands are numbered in (``INV-{year}-…``): the commands take
    today's date as the issue date."""
    return dt.date.today().year
