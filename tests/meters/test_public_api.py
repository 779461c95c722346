"""The public surface of ``meters``: one ``__all__`` that names what exists, and no dependency on the other
packages (the orchestrator hands ``meters`` what it must know)."""

from __future__ import annotations

import subprocess
import sys

import meters


def test_every_name_in_all_exists_once() -> None:
    assert [name for name in meters.__all__ if not hasattr(meters, name)] == []
    assert len(meters.__all__) == len(set(meters.__all__))
    assert {
        "ingest",
        "ingest_file",
        "aggregate_usage",
        "MeterSpec",
        "IngestReport",
        "Rejection",
        "MeterAggregate",
        "UsageEvent",
    } <= set(meters.__all__)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from meters import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(meters.__all__)


def test_meters_imports_neither_billing_nor_invoices_nor_pricing_plans() -> None:
    code = (
        "import sys, meters, meters.tables, meters.ingest, meters.aggregate;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'billing', 'invoices', 'pricing_plans'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
