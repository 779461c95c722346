"""Ingestion as the orchestrator runs it: the catalog's meters and the known customers handed to ``meters``,
then the thresholds of the customers a batch touched checked at once (alerts follow usage, not a schedule)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any

from sqlalchemy import Engine, select

from billing.db import session_scope
from billing.db.tables import CustomerRow
from billing.metering import meter_specs
from billing.thresholds import check_thresholds
from dbkit import read_only
from meters import IngestReport, ingest, ingest_file
from pricing_plans.models import Catalog

__all__ = ["ingest_batch", "ingest_path", "known_customers"]


def known_customers(engine: Engine, only: Iterable[str] | None = None) -> set[str]:
    """The external ids of the customers events may name (all, or those among ``only``)."""
    statement = select(CustomerRow.external_id)
    if only is not None:
        wanted = sorted(set(only))
        if not wanted:
            return set()
        statement = statement.where(CustomerRow.external_id.in_(wanted))
    with session_scope(read_only(engine)) as session:  # a read: never waits for the write lock
        return set(session.execute(statement).scalars())


def _touched(records: Iterable[Mapping[str, Any]]) -> set[str]:
    return {r["customer"] for r in records if isinstance(r, Mapping) and isinstance(r.get("customer"), str)}


def ingest_batch(
    engine: Engine, catalog: Catalog, records: list[Mapping[str, Any]], *, now: dt.datetime | None = None
) -> IngestReport:
    """Ingest an API batch (rejections name each event's index), then check the touched customers' thresholds."""
    customers = known_customers(engine, _touched(records))
    report = ingest(engine, records, meter_specs(catalog), customers, now=now)
    _after_ingestion(engine, catalog, customers if report.accepted else set(), now)
    return report


def ingest_path(
    engine: Engine,
    catalog: Catalog,
    source: str | os.PathLike[str] | IO[bytes],
    *,
    file_format: Any = None,
    progress: Callable[[int], None] | None = None,
    now: dt.datetime | None = None,
) -> IngestReport:
    """Ingest a JSON Lines or CSV file (``-`` for standard input), then check every customer's thresholds."""
    customers = known_customers(engine)
    report = ingest_file(
        engine, source, meter_specs(catalog), customers, format=file_format, progress=progress, now=now
    )
    _after_ingestion(engine, catalog, None if report.accepted else set(), now)
    return report


def _after_ingestion(engine: Engine, catalog: Catalog, customers: set[str] | None, now: dt.datetime | None) -> None:
    """Alerts follow usage: check the thresholds of the customers a batch touched (None: everyone)."""
    if customers is not None and not customers:
        return
    check_thresholds(engine, catalog, customers=customers, now=now)
