"""Usage metering: usage events, idempotent ingestion, storage and exact aggregation.

``meters`` imports nothing from ``billing``, ``invoices`` or ``pricing_plans``: the orchestrator hands in what it
must know (the meters as :class:`MeterSpec`, the known customers' external ids) and gets back results.

    specs = [MeterSpec("api_calls", "count"), MeterSpec("storage_gb", "weighted_sum")]
    report = ingest_file(engine, "usage.jsonl", specs, {"acme", "globex"})   # or ingest(engine, records, ...)
    print(report.summary())                     # accepted 998, duplicates 1, rejected 1
    usage = aggregate_usage(engine, {"acme": (march_start_utc, april_start_utc)}, specs)
    usage[("acme", "storage_gb")].quantity      # GB-month, a Decimal
    split = Split.of([{"country": ["US", "CA"]}], group_by=[[], ["region"]])
    parts = aggregate_split_usage(engine, {"acme": (march_start_utc, april_start_utc)}, specs, {"sms": split})
    parts[PartKey("acme", "sms", 0, ())].quantity   # the US & Canada part; (…, None, ("eu",)): the rest in eu

Only ``meters`` reads the stored events: besides aggregates, ``windows_with_late_events`` (the windows that
received events after their usage was counted), ``stored_event_ids``, ``customers_by_meter`` (who has events of
which meter) and ``count_events`` answer what the orchestrator asks.

Storage: ``meters.tables.UsageEventRow`` (timestamps as integer microseconds UTC, values as integers × 10^6).
The functions above work on a SQL database's engine; ``meters.store`` puts every one of them behind one interface,
``EventStore``, whose ClickHouse implementation (chDB in this process, or a server) answers alike.
"""

from __future__ import annotations

from meters.aggregate import MeterAggregate, Window, aggregate_usage
from meters.errors import EventError, IngestError, IngestInterrupted, MalformedFileError, MeteringError
from meters.events import (
    AGGREGATIONS,
    MAX_FUTURE,
    VALUE_DIGITS,
    VALUE_SCALE,
    Aggregation,
    EventValidator,
    MeterSpec,
    UsageEvent,
    from_epoch_us,
    from_scaled,
    parse_event,
    to_epoch_us,
)
from meters.fees import EventFees, FeeTerms
from meters.ingest import FileFormat, IngestReport, Rejection, ingest, ingest_file, ingestion_cutoff
from meters.queries import (
    CountedWindow,
    count_events,
    customers_by_meter,
    meter_totals,
    received_since,
    received_spans,
    stored_event_ids,
    windows_with_late_events,
)
from meters.split import PartKey, Split, aggregate_split_usage

__all__ = [
    "AGGREGATIONS",
    "MAX_FUTURE",
    "VALUE_DIGITS",
    "VALUE_SCALE",
    "Aggregation",
    "CountedWindow",
    "EventError",
    "EventFees",
    "EventValidator",
    "FeeTerms",
    "FileFormat",
    "IngestError",
    "IngestInterrupted",
    "IngestReport",
    "MalformedFileError",
    "MeterAggregate",
    "MeterSpec",
    "MeteringError",
    "PartKey",
    "Rejection",
    "Split",
    "UsageEvent",
    "Window",
    "aggregate_split_usage",
    "aggregate_usage",
    "count_events",
    "customers_by_meter",
    "from_epoch_us",
    "from_scaled",
    "ingest",
    "ingest_file",
    "ingestion_cutoff",
    "meter_totals",
    "parse_event",
    "received_since",
    "received_spans",
    "stored_event_ids",
    "to_epoch_us",
    "windows_with_late_events",
]
