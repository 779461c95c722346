"""Benchmarks: ``python -m benchmarks [NAME ...]`` (``make bench``) runs every benchmark module of this package
(or the ones named) and prints each figure beside a baseline measured in the same run, as a ratio.

Each module has ``run(scale) -> list[Figure]``. ``BENCH_SCALE`` (default 1) scales the sizes down for quick
runs (``BENCH_SCALE=0.1``). PostgreSQL figures are measured when ``BILLING_BENCH_DATABASE_URL`` (or
``BILLING_TEST_DATABASE_URL``) is set; each run works in a schema of its own, dropped at the end. Generated
data is cached under ``bench-data/`` (gitignored).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DATA", "Figure", "best_of", "postgres_schema", "postgres_url", "scale", "timed"]

DATA = Path(__file__).resolve().parent.parent / "bench-data"


@dataclass(frozen=True)
class Figure:
    """One measured figure and the baseline it is compared with.

    Attributes:
      name: what was measured.
      measured: the figure, in ``unit`` (higher is better).
      unit: e.g. "events/s".
      baseline: the baseline's figure in the same unit, measured in the same run, or None.
      baseline_name: what the baseline is.
      target: the target, in words (e.g. "≥ 70,000 events/s").
      met: whether the target was met (None: no target).
    """

    name: str
    measured: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        return None if not self.baseline else self.measured / self.baseline


def scale() -> float:
    """The size factor from ``BENCH_SCALE`` (default 1.0)."""
    return float(os.environ.get("BENCH_SCALE", "1"))


def postgres_url() -> str | None:
    return os.environ.get("BILLING_BENCH_DATABASE_URL") or os.environ.get("BILLING_TEST_DATABASE_URL")


@contextmanager
def postgres_schema(url: str, name: str) -> Iterator[str]:
    """A fresh schema on ``url``; yields the URL whose search_path is that schema; dropped at the end."""
    from urllib.parse import quote

    from sqlalchemy import text

    from billing.db import make_engine

    schema = f"bench_{name}_{os.getpid()}"
    admin = make_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in url else "?"
    try:
        yield f"{url}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def timed(function: Callable[[], object]) -> float:
    """Seconds ``function`` took."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def best_of(runs: int, function: Callable[[], object]) -> float:
    """The fastest of ``runs`` runs, in seconds."""
    return min(timed(function) for _ in range(runs))
