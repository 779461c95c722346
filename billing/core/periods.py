"""Billing periods: half-open ``[start, end)`` calendar months (or years) in the customer's timezone, and where a
period stands at an instant (to come, open, ended), which decides what may be billed and issued."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo

__all__ = [
    "EARLIEST_UTC_OFFSET",
    "LATE_USAGE_MONTHS",
    "Period",
    "PeriodState",
    "has_begun_anywhere",
    "late_usage_start",
    "month",
    "month_of",
    "months_between",
    "parse_month",
    "period_state",
    "year_of",
]

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")

LATE_USAGE_MONTHS = 12
"""The late-usage window: a billing run bills the usage of its period and, as late usage, events that arrived
since of the periods up to this many months before it. Events older than the window of the current month are
never billed, so ingestion refuses them."""


@dataclass(frozen=True, slots=True, order=True)
class Period:
    """``[start, end)`` in local dates; ``end`` is the first day after the period."""

    start: dt.date
    end: dt.date

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def label(self) -> str:
        """``2026-03`` for a month, ``2026`` for a calendar year, ``start..end`` otherwise."""
        if self.start.day == 1 and self.end == _add_months(self.start, 1):
            return f"{self.start:%Y-%m}"
        if self.start.month == 1 and self.start.day == 1 and self.end == dt.date(self.start.year + 1, 1, 1):
            return f"{self.start:%Y}"
        return f"{self.start.isoformat()}..{self.end.isoformat()}"

    def next(self) -> Period:
        months = (self.end.year - self.start.year) * 12 + self.end.month - self.start.month
        return Period(self.end, _add_months(self.end, months))

    def previous(self) -> Period:
        months = (self.end.year - self.start.year) * 12 + self.end.month - self.start.month
        return Period(_add_months(self.start, -months), self.start)

    def contains(self, day: dt.date) -> bool:
        return self.start <= day < self.end

    def as_dict(self) -> dict[str, str]:
        """The period as an invoice line's details give it: ISO dates, ``end`` exclusive."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}

    def utc_window(self, timezone: str) -> tuple[dt.datetime, dt.datetime]:
        """The period's bounds as UTC instants: local midnights in ``timezone``."""
        zone = ZoneInfo(timezone)
        start = dt.datetime.combine(self.start, dt.time(), zone).astimezone(dt.UTC)
        end = dt.datetime.combine(self.end, dt.time(), zone).astimezone(dt.UTC)
        return start, end


def _add_months(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def month(year: int, month_number: int) -> Period:
    start = dt.date(year, month_number, 1)
    return Period(start, _add_months(start, 1))


def parse_month(text: str) -> Period:
    """``"2026-03"`` → the period of March 2026; a clear ValueError otherwise."""
    match = _MONTH.match(text.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"expected a month as YYYY-MM, got {text!r}")
    return month(int(match.group(1)), int(match.group(2)))


def month_of(day: dt.date) -> Period:
    return month(day.year, day.month)


def late_usage_start(today: dt.date) -> dt.date:
    """The first day of the late-usage window on ``today``: the first of the month ``LATE_USAGE_MONTHS`` months
    before today's (on 2026-11-28, 2025-11-01). The run of today's month bills late usage back to it."""
    return _add_months(month_of(today).start, -LATE_USAGE_MONTHS)


def months_between(first: dt.date, last: dt.date) -> list[Period]:
    """The calendar months from ``first``'s to ``last``'s, both included, in order (none if ``last`` is before
    ``first``'s month)."""
    months = []
    period = month_of(first)
    while period.start <= last:
        months.append(period)
        period = period.next()
    return months


def year_of(day: dt.date) -> Period:
    return Period(dt.date(day.year, 1, 1), dt.date(day.year + 1, 1, 1))


class PeriodState(StrEnum):
    """Where a period stands at an instant, in one timezone: ``future`` (its first day has not begun), ``open``
    (it has begun and not ended: the current period) or ``ended``."""

    FUTURE = "future"
    OPEN = "open"
    ENDED = "ended"


def period_state(period: Period, timezone: str, now: dt.datetime) -> PeriodState:
    """Where ``period`` stands at ``now`` (an aware instant) in ``timezone``: a period ends at the local midnight
    that begins its ``end`` day."""
    start, end = period.utc_window(timezone)
    if now < start:
        return PeriodState.FUTURE
    if now < end:
        return PeriodState.OPEN
    return PeriodState.ENDED


EARLIEST_UTC_OFFSET = dt.timedelta(hours=14)
"""The timezone where each day begins first (UTC+14, the Line Islands)."""


def has_begun_anywhere(period: Period, now: dt.datetime) -> bool:
    """Whether the first day of ``period`` has begun somewhere on earth at ``now`` (an aware instant): from then
    on it is the current period of some customer."""
    return (now.astimezone(dt.UTC) + EARLIEST_UTC_OFFSET).date() >= period.start
