"""The public surface of ``pricing_plans``: one ``__all__`` that names what exists, and a pure package."""

from __future__ import annotations

import subprocess
import sys

import pricing_plans

EXPECTED = {
    "Catalog",
    "Plan",
    "Meter",
    "PerUnitCharge",
    "GraduatedCharge",
    "VolumeCharge",
    "PackageCharge",
    "PercentageCharge",
    "GraduatedPercentageCharge",
    "load_catalog",
    "load_catalog_or_raise",
    "loads_catalog",
    "CatalogProblem",
    "CatalogError",
    "D",
    "ZERO",
    "round_money",
    "format_amount",
    "minor_digits",
    "Rounding",
    "rate_charge",
    "MeterUsage",
    "ChargeAmount",
    "BreakdownRow",
}


def test_every_name_in_all_exists() -> None:
    missing = [name for name in pricing_plans.__all__ if not hasattr(pricing_plans, name)]
    assert missing == []


def test_all_has_no_repeats_and_holds_the_public_names() -> None:
    assert len(pricing_plans.__all__) == len(set(pricing_plans.__all__))
    assert EXPECTED - set(pricing_plans.__all__) == set()


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from pricing_plans import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(pricing_plans.__all__)


def test_pricing_plans_imports_no_other_package_and_no_database() -> None:
    code = (
        "import sys, pricing_plans, pricing_plans.loader;"
        "print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'billing', 'meters', 'invoices', 'sqlalchemy', 'psycopg', 'sqlite3', 'stripe'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
