"""``python -m benchmarks [NAME ...]``: run the benchmark modules and print their figures as a table."""

from __future__ import annotations

import importlib
import pkgutil
import platform
import sys

from rich.console import Console
from rich.table import Table

import benchmarks
from benchmarks import Figure, scale


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_"))


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def main(argv: list[str]) -> int:
    console = Console(width=max(Console().width, 150))
    names = argv or _modules()
    unknown = [name for name in names if name not in _modules()]
    if unknown:
        console.print(f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(_modules())})")
        return 2
    factor = scale()
    console.print(f"benchmarks at BENCH_SCALE={factor} on {platform.machine()}, Python {platform.python_version()}")
    figures: list[Figure] = []
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        # No live spinner: its refresh thread would keep ingestion from forking its parsing workers.
        console.print(f"running {name}...")
        figures.extend(module.run(factor, console))
    table = Table(title="Benchmarks")
    for column in ("figure", "measured", "baseline", "ratio", "target"):
        table.add_column(column, justify="left" if column in ("figure", "target") else "right")
    for figure in figures:
        baseline = f"{_number(figure.baseline)} {figure.unit}\n({figure.baseline_name})" if figure.baseline else "—"
        ratio = f"{figure.ratio:.2f}×" if figure.ratio else "—"
        mark = {True: "[green]✓[/]", False: "[red]✗[/]", None: ""}[figure.met]
        table.add_row(
            figure.name, f"{_number(figure.measured)} {figure.unit}", baseline, ratio, f"{figure.target} {mark}".strip()
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
