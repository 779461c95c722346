"""The layout the README draws, kept honest: the import contracts cover every module of ``billing/`` that is not
an entry point, and only the db kit (and the migrations) ask which database they talk to."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import billing

ROOT = Path(__file__).resolve().parent.parent
ENTRY_POINTS = {"billing.api", "billing.cli", "billing.web", "billing.demo", "billing.__main__"}


def _contract(name_start: str) -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["name"].startswith(name_start))


def test_every_module_below_the_entry_points_is_forbidden_to_import_them():
    listed = set(_contract("billing.api and billing.cli are entry points")["source_modules"])
    modules = {f"billing.{m.name}" for m in pkgutil.iter_modules(billing.__path__)}
    assert modules - ENTRY_POINTS - listed == set(), "add these to the contract's source_modules in pyproject.toml"
    assert listed <= modules


def test_only_the_db_kit_and_the_migrations_ask_which_database_they_talk_to():
    asking = sorted(
        str(path.relative_to(ROOT))
        for package in ("pricing_plans", "meters", "invoices", "billing", "benchmarks", "tests")
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts and path != Path(__file__) and "dialect.name" in path.read_text()
    )
    assert asking == []
