"""Metering as the billing run and quotes need it (to be wired to meters' aggregation)."""

from __future__ import annotations

from typing import Any


def aggregate_windows(engine: Any, catalog: Any, windows: Any) -> Any:
    raise NotImplementedError


def late_event_periods(session: Any, period: Any, customer: Any, lookback: int) -> Any:
    raise NotImplementedError


def usage_from_event_file(path: Any, catalog: Any, period: Any, timezone: str) -> Any:
    raise NotImplementedError
