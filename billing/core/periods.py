"""Billing periods: half-open ``[start, end)`` ranges of local dates in the customer's timezone — calendar months
(or weeks, quarters, years), or anniversary periods from a subscription's start day (``Schedule``) — and where a
period stands at an instant (to come, open, ended), which decides what may be billed and issued.

A calendar week is an ISO week: Monday to Sunday, in the customer's timezone. An anniversary month runs from the
start day to the same day of the next month, or to its last day when it is shorter (a start on Jan 31: Jan 31 →
Feb 28 (29 in a leap year) → Mar 31 → Apr 30 → May 31: each boundary is counted from the start, never from the
previous boundary, so it never drifts to the 28th)."""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import re
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo

from pricing_plans.models import Interval

__all__ = [
    "EARLIEST_UTC_OFFSET",
    "FIRST_YEAR",
    "LAST_YEAR",
    "LATE_USAGE_MONTHS",
    "Period",
    "PeriodState",
    "Schedule",
    "billing_period_named",
    "has_begun_anywhere",
    "late_usage_start",
    "month",
    "month_of",
    "months_between",
    "parse_month",
    "parse_period",
    "period_state",
    "quarter_of",
    "week_of",
    "year_of",
]

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")

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
        """``2026-03`` for a calendar month, ``2026`` for a calendar year, ``2026-Q1`` for a calendar quarter,
        ``2026-W09`` for an ISO week, ``start..end`` (ISO dates, ``end`` exclusive) otherwise."""
        return _label(self.start, self.end)

    @property
    def last_day(self) -> dt.date:
        return self.end - dt.timedelta(days=1)

    def next(self) -> Period:
        """The period of the same length right after this one: a week (7 days), or as many calendar months.
        (Anniversary periods follow their ``Schedule``.)"""
        if self.days == 7:
            return Period(self.end, self.end + dt.timedelta(days=7))
        months = (self.end.year - self.start.year) * 12 + self.end.month - self.start.month
        return Period(self.end, _add_months(self.end, months))

    def previous(self) -> Period:
        if self.days == 7:
            return Period(self.start - dt.timedelta(days=7), self.start)
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


def _shift_months(anchor: dt.date, months: int) -> dt.date:
    """``anchor`` moved by ``months`` months, on its own day of the month or the last day of a shorter month."""
    index = anchor.year * 12 + anchor.month - 1 + months
    year, month_number = index // 12, index % 12 + 1
    return dt.date(year, month_number, min(anchor.day, calendar.monthrange(year, month_number)[1]))


@functools.lru_cache(maxsize=4096)
def _label(start: dt.date, end: dt.date) -> str:
    """:attr:`Period.label` (remembered: a threshold pass or a billing run asks it of thousands of periods)."""
    if start.day == 1 and end == _add_months(start, 1):
        return f"{start:%Y-%m}"
    if start.month == 1 and start.day == 1 and end == dt.date(start.year + 1, 1, 1):
        return f"{start:%Y}"
    if start.day == 1 and start.month % 3 == 1 and end == _add_months(start, 3):
        return f"{start.year}-Q{start.month // 3 + 1}"
    if start.isoweekday() == 1 and (end - start).days == 7:
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{start.isoformat()}..{end.isoformat()}"


@functools.lru_cache(maxsize=1024)
def month(year: int, month_number: int) -> Period:
    """The calendar month (the same immutable Period for the same month: asked of every customer's day)."""
    start = dt.date(year, month_number, 1)
    return Period(start, _add_months(start, 1))


def parse_month(text: str) -> Period:
    """``"2026-03"`` → the period of March 2026; a clear ValueError otherwise."""
    match = _MONTH.match(text.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"expected a month as YYYY-MM, got {text!r}")
    _check_year(int(match.group(1)), text)
    return month(int(match.group(1)), int(match.group(2)))


FIRST_YEAR, LAST_YEAR = 1971, 9998
"""The years a named period may fall in: every computation around it (a month back, a timezone's day either side)
stays inside the calendar, as the API's days do."""


def _check_year(year: int, text: str) -> None:
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise ValueError(f"expected a period from {FIRST_YEAR} to {LAST_YEAR}, got {text!r}")


def parse_period(text: str) -> Period:
    """A billing period named as its label names it: ``2026-03`` (a calendar month), ``2026-W09`` (an ISO week)
    or ``2026-02-28..2026-03-31`` (ISO dates, the end exclusive); a clear ValueError otherwise."""
    text = text.strip()
    week = _WEEK.match(text)
    if week:
        _check_year(int(week.group(1)), text)
        try:
            start = dt.date.fromisocalendar(int(week.group(1)), int(week.group(2)), 1)
        except ValueError:
            raise ValueError(f"no ISO week {text!r}: a year has weeks 01 to 52 (or 53)") from None
        return Period(start, start + _ONE_WEEK)
    bounds = _RANGE.match(text)
    if bounds:
        try:
            start, end = (dt.date.fromisoformat(bounds.group(i)) for i in (1, 2))
        except ValueError:
            raise ValueError(f"expected START..END with valid ISO dates, got {text!r}") from None
        if not start < end:
            raise ValueError(f"expected START..END with START before END (exclusive), got {text!r}")
        _check_year(start.year, text)
        _check_year(end.year, text)
        return Period(start, end)
    if _MONTH.match(text):
        return parse_month(text)
    raise ValueError(
        f"expected a month as YYYY-MM, an ISO week as YYYY-Www or START..END (ISO dates), got {text!r}"
    )


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


def quarter_of(day: dt.date) -> Period:
    """The calendar quarter of ``day``: January–March, April–June, July–September or October–December."""
    start = dt.date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
    return Period(start, _add_months(start, 3))


def week_of(day: dt.date) -> Period:
    """The ISO week of ``day``: Monday to Sunday."""
    start = day - dt.timedelta(days=day.weekday())
    return Period(start, start + dt.timedelta(days=7))


_MONTHS = {Interval.MONTH: 1, Interval.QUARTER: 3, Interval.YEAR: 12}
_ONE_WEEK = dt.timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A subscription's periods: its plan's ``interval`` and where they begin, ``anchor`` — None for calendar
    boundaries, or the subscription's start date for anniversary billing.

    The fee period is the interval. The billing period — what one invoice bills usage for — is the week on a
    weekly plan and the month (calendar or anniversary) on the others: a quarterly or yearly plan bills its usage
    monthly and its fee once per quarter or year."""

    interval: Interval = Interval.MONTH
    anchor: dt.date | None = None

    def fee_period(self, day: dt.date) -> Period:
        """The fee period containing ``day``."""
        if self.interval is Interval.WEEK:
            return self._weeks(day)
        if self.anchor is None:
            by_interval = {Interval.MONTH: month_of, Interval.QUARTER: quarter_of, Interval.YEAR: year_of}
            return by_interval[self.interval](day)
        return self._months(day, _MONTHS[self.interval])

    def billing_period(self, day: dt.date) -> Period:
        """The billing period containing ``day``: the week on a weekly plan, the month otherwise."""
        if self.interval is Interval.WEEK:
            return self._weeks(day)
        return month_of(day) if self.anchor is None else self._months(day, 1)

    def next_billing_period(self, period: Period) -> Period:
        return self.billing_period(period.end)

    def previous_billing_period(self, period: Period) -> Period:
        return self.billing_period(period.start - dt.timedelta(days=1))

    def billing_periods_ending_in(self, month_period: Period) -> list[Period]:
        """The billing periods whose last day falls in ``month_period`` (a calendar month), in order."""
        periods: list[Period] = []
        period = self.billing_period(month_period.start)
        while period.last_day < month_period.end:
            if period.last_day >= month_period.start:
                periods.append(period)
            period = self.next_billing_period(period)
        return periods

    def _weeks(self, day: dt.date) -> Period:
        if self.anchor is None:
            return week_of(day)
        start = self.anchor + _ONE_WEEK * ((day - self.anchor).days // 7)
        return Period(start, start + _ONE_WEEK)

    def _months(self, day: dt.date, months: int) -> Period:
        assert self.anchor is not None
        anchor = self.anchor
        steps = ((day.year - anchor.year) * 12 + day.month - anchor.month) // months
        while _shift_months(anchor, steps * months) > day:
            steps -= 1
        while _shift_months(anchor, (steps + 1) * months) <= day:
            steps += 1
        return Period(_shift_months(anchor, steps * months), _shift_months(anchor, (steps + 1) * months))


def billing_period_named(schedule: Schedule, named: Period) -> Period:
    """The billing period of ``schedule`` that ``named`` (a period as ``--period`` names it) designates: ``named``
    itself when it is one of the schedule's billing periods; for a calendar month, the one billing period of the
    schedule that ends in it (an anniversary month). Otherwise a ValueError naming the periods that would do."""
    own = schedule.billing_period(named.start)
    if own == named:
        return named
    if named == month_of(named.start):
        ending = schedule.billing_periods_ending_in(named)
        if len(ending) == 1:
            return ending[0]
        labels = ", ".join(p.label for p in ending)
        raise ValueError(
            f"{named.label} is not one billing period of a weekly plan: name a week ending in it ({labels})"
        )
    raise ValueError(
        f"{named.label} is not one of the subscription's billing periods (that of its first day is {own.label})"
    )


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
