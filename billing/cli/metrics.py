"""``billing metrics``: revenue and churn figures per month and currency, as tables, JSON, CSV or a chart.

Thin: the figures come from ``billing.metrics_store.figures_from_database`` (which calls the pure
``billing.core.metrics.compute_figures``); this module only parses the options and presents the result.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.table import Table

from billing.cli import _json
from billing.cli._common import (
    console,
    database_message,
    engine_for_cli,
    err_console,
    fail,
    load_catalog_for_cli,
    print_table,
)
from billing.core.cohorts import Cohort, Grain
from billing.core.metrics import JSON_KEYS, PeriodFigures, figures_row, format_money, format_rate, ratio
from billing.core.periods import Period, parse_month

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from billing.core.margin import Margin, RepeatPurchases
    from billing.core.recognition import Recognition
    from billing.core.risk import Assessment
    from billing.coupons import CouponStats
    from pricing_plans.models import Catalog

__all__ = [
    "assessment_row",
    "cohorts",
    "margin",
    "margin_row",
    "metrics",
    "plot_cohorts",
    "plot_figures",
    "plot_risk",
    "print_cohorts",
    "print_coupons",
    "print_risk",
    "print_tables",
    "recognition_row",
    "register",
    "revenue",
    "risk",
]

MAX_PERIODS = 120


metrics_app = typer.Typer(invoke_without_command=True)


def register(app: typer.Typer) -> None:
    metrics_app.callback()(metrics)
    metrics_app.command("cohorts")(cohorts)
    metrics_app.command("risk")(risk)
    metrics_app.command("margin")(margin)
    metrics_app.command("revenue")(revenue)
    app.add_typer(metrics_app, name="metrics")


def metrics(
    ctx: typer.Context,
    period: Annotated[str | None, typer.Option("--period", help="The (first) month, YYYY-MM.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="The last month of a range, YYYY-MM.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print JSON: {"data": [...]}, one object per month and currency.')
    ] = False,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Also write the JSON's rows to this CSV file.")] = None,
    plot_path: Annotated[
        Path | None, typer.Option("--plot", help="Also draw the MRR bridge and the rates to this PNG file.")
    ] = None,
) -> None:
    """Revenue and churn figures per month and currency: customers, MRR movements, churn, CRR, NRR, GRR, billed
    revenue, ARPA and CLV.

    `billing metrics --period P [--to Q]` prints the figures; the sub-commands print cohorts, churn-risk
    warnings, margins and recognized revenue."""
    if ctx.invoked_subcommand is not None:
        return
    if period is None:
        fail("--period is required (or a sub-command: cohorts, risk, margin, revenue)", code=2)
    periods = _periods(period, to)
    catalog = load_catalog_for_cli()
    figures, coupons = _figures(catalog, periods)
    rows = [figures_row(f) for f in figures]
    if as_json:
        _json.emit(_json.listing(rows))
    else:
        print_tables(figures)
        print_coupons(coupons)
    notes = err_console if as_json else console
    if csv_path is not None:
        _write(csv_path, lambda path: _write_csv(path, rows))
        notes.print(f"wrote {csv_path}", highlight=False, markup=False)
    if plot_path is not None:
        _write(plot_path, lambda path: plot_figures(figures, path))
        notes.print(f"wrote {plot_path}", highlight=False, markup=False)


def _month(option: str, text: str) -> Period:
    try:
        return parse_month(text)
    except ValueError as exc:
        fail(f"{option}: {exc}")


def _periods(first: str, last: str | None) -> list[Period]:
    start = _month("--period", first)
    end = _month("--to", last) if last is not None else start
    if end < start:
        fail(f"--to {end.label} is before --period {start.label}")
    periods = [start]
    while periods[-1] != end:
        periods.append(periods[-1].next())
        if len(periods) > MAX_PERIODS:
            fail(f"at most {MAX_PERIODS} months at once (got {start.label} to {end.label})", code=2)
    return periods


def _figures(catalog: Catalog, periods: list[Period]) -> tuple[list[PeriodFigures], list[CouponStats]]:
    """The figures of the periods, and every coupon with its redemptions over all time."""
    from sqlalchemy.exc import SQLAlchemyError

    from billing.coupons import list_coupons
    from billing.errors import BillingError
    from billing.metrics_store import figures_from_database

    engine = engine_for_cli()
    try:
        return figures_from_database(engine, catalog, periods), list_coupons(engine)
    except BillingError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(database_message(exc))
    finally:
        engine.dispose()


def _write(path: Path, writer: Callable[[Path], None]) -> None:
    try:
        writer(path)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=JSON_KEYS)
        writer.writeheader()
        writer.writerows(rows)


# -- tables ------------------------------------------------------------------------------------------------


def _percent(value: Decimal | None) -> str:
    text = format_rate(value)
    return text if text == "n/a" else f"{text} %"


# (label, cell) per row; None starts a new section. Money and rates are shown as in the JSON (rates with " %").
_Row = tuple[str, Callable[[PeriodFigures], str]]


def _rows(currency: str) -> list[_Row | None]:
    def money(get: Callable[[PeriodFigures], Decimal | None]) -> Callable[[PeriodFigures], str]:
        return lambda f: format_money(get(f), currency)

    return [
        ("Paying customers at start (S)", lambda f: str(f.customers_start)),
        ("+ new (N)", lambda f: str(f.customers_new)),
        ("   of which reactivated", lambda f: str(f.customers_reactivated)),
        ("   of which converted from free", lambda f: str(f.conversions)),
        ("− churned (C)", lambda f: str(f.customers_churned)),
        ("   voluntary", lambda f: str(f.customers_churned_voluntary)),
        ("   involuntary", lambda f: str(f.customers_churned_involuntary)),
        ("Paying customers at end (E)", lambda f: str(f.customers_end)),
        ("Customer churn rate  C / S", lambda f: _percent(f.customer_churn_rate)),
        ("CRR  (E − N) / S", lambda f: _percent(f.crr)),
        ("Free customers at start", lambda f: str(f.free_customers_start)),
        ("Free customers at end", lambda f: str(f.free_customers_end)),
        ("Free → paid conversion rate", lambda f: _percent(f.conversion_rate)),
        None,
        ("MRR at start", money(lambda f: f.mrr_start)),
        ("+ new", money(lambda f: f.mrr_new)),
        ("+ reactivation", money(lambda f: f.mrr_reactivation)),
        ("+ expansion", money(lambda f: f.mrr_expansion)),
        ("− contraction", money(lambda f: f.mrr_contraction)),
        ("− churned", money(lambda f: f.mrr_churned)),
        ("MRR at end", money(lambda f: f.mrr_end)),
        ("Revenue churn (net)", lambda f: _percent(f.revenue_churn_rate)),
        ("NRR (MRR)", lambda f: _percent(f.nrr)),
        ("GRR (MRR)", lambda f: _percent(f.grr)),
        None,
        ("Billed revenue (excl. tax)", money(lambda f: f.billed_revenue)),
        ("   subscription fees", money(lambda f: f.billed.subscription)),
        ("   usage (incl. late usage)", money(lambda f: f.billed.usage)),
        ("   commitment true-ups", money(lambda f: f.billed.commitment)),
        ("   credits & discounts", money(lambda f: f.billed.adjustments)),
        ("Customers billed", lambda f: str(f.billed_customers)),
        ("ARPA", money(lambda f: f.arpa)),
        ("Cost of goods (declared costs)", money(lambda f: f.cost)),
        ("Gross margin rate", lambda f: _percent(f.gross_margin_rate)),
        ("CLV  ARPA (on gross margin if costed) / churn", money(lambda f: f.clv)),
        None,
        ("Existing customers' billed revenue, P−1 → P:", lambda f: ""),
        ("   customers billed in P−1", lambda f: str(f.billed_base.customers)),
        ("   billed in P−1", money(lambda f: f.billed_base.previous)),
        ("   billed in P", money(lambda f: f.billed_base.current)),
        ("   NRR billed", lambda f: _percent(f.nrr_billed)),
        ("   GRR billed", lambda f: _percent(f.grr_billed)),
        ("Trailing 3 months (cohort billed in the 3 before):", lambda f: ""),
        ("   customers in the cohort", lambda f: str(f.trailing_3.customers)),
        ("   NRR billed 3m", lambda f: _percent(f.nrr_trailing(3))),
        ("   GRR billed 3m", lambda f: _percent(f.grr_trailing(3))),
        ("Trailing 12 months (cohort billed in the 12 before):", lambda f: ""),
        ("   customers in the cohort", lambda f: str(f.trailing_12.customers)),
        ("   NRR billed 12m", lambda f: _percent(f.nrr_trailing(12))),
        ("   GRR billed 12m", lambda f: _percent(f.grr_trailing(12))),
        None,
        ("Coupons issued in P", lambda f: str(f.coupons_issued)),
        ("   redeemed by now", lambda f: str(f.coupons_redeemed)),
        ("Coupon redemption rate", lambda f: _percent(f.coupon_redemption_rate)),
    ]


def print_tables(figures: Sequence[PeriodFigures]) -> None:
    currencies = sorted({f.currency for f in figures})
    if not currencies:
        console.print("no customers and no invoices: no figures", highlight=False)
        return
    for currency in currencies:
        columns = [f for f in figures if f.currency == currency]
        table = Table(title=f"Revenue and churn figures, {currency}", box=box.SIMPLE_HEAD, title_justify="left")
        table.add_column("Figure", no_wrap=True)
        for f in columns:
            label = f.period.label if f.closed else f"{f.period.label} (open)"
            table.add_column(label, justify="right", no_wrap=True)
        for row in _rows(currency):
            if row is None:
                table.add_section()
                continue
            label, cell = row
            table.add_row(label, *(cell(f) for f in columns))
        print_table(table)




def print_coupons(coupons: Sequence[CouponStats]) -> None:
    """Each coupon's redemption rate over all time: redeemed / issued."""
    if not coupons:
        return
    table = Table(title="Coupon redemption, all time", box=box.SIMPLE_HEAD, title_justify="left")
    for header in ("Coupon", "Issued", "Redeemed", "Redemption rate"):
        table.add_column(header, justify="left" if header == "Coupon" else "right", no_wrap=True)
    for stats in coupons:
        rate = ratio(stats.redeemed, stats.issued)
        table.add_row(stats.coupon.code, str(stats.issued), str(stats.redeemed), _percent(rate))
    print_table(table)


# -- chart -------------------------------------------------------------------------------------------------


_BRIDGE = (
    ("Start", "mrr_start", "total"),
    ("+ New", "mrr_new", "up"),
    ("+ Reactivation", "mrr_reactivation", "up"),
    ("+ Expansion", "mrr_expansion", "up"),
    ("− Contraction", "mrr_contraction", "down"),
    ("− Churned", "mrr_churned", "down"),
    ("End", "mrr_end", "total"),
)
_COLORS = {"total": "#4c72b0", "up": "#55a868", "down": "#c44e52"}
_RATES = (  # label, figure, color, line style, marker, marker size: equal values stay visible as nested markers
    ("Customer churn", "customer_churn_rate", "#c44e52", "-", "o", 9),
    ("CRR", "crr", "#4c72b0", "--", "s", 7.5),
    ("NRR (MRR)", "nrr", "#55a868", "-", "^", 6.5),
    ("GRR (MRR)", "grr", "#8172b2", ":", "D", 4.5),
)


def plot_figures(figures: Sequence[PeriodFigures], path: Path) -> None:
    """Draw, per currency, the MRR bridge of the last period (a waterfall) and the churn and retention rates over
    the range (lines), and save them as a PNG. Decimals become floats only here, to be drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    currencies = sorted({f.currency for f in figures}) or ["—"]
    chart = Figure(figsize=(14, 5.2 * len(currencies)), layout="constrained")
    FigureCanvasAgg(chart)
    axes = chart.subplots(len(currencies), 2, squeeze=False, width_ratios=(1.25, 1))
    for row, currency in enumerate(currencies):
        series = [f for f in figures if f.currency == currency]
        bridge, rates = axes[row]
        if not series:
            for ax in (bridge, rates):
                ax.text(0.5, 0.5, "no figures", ha="center", va="center", transform=ax.transAxes)
            continue
        _draw_bridge(bridge, series[-1], FuncFormatter)
        _draw_rates(rates, series, FuncFormatter)
    chart.suptitle("Revenue and churn figures", fontsize=15, fontweight="bold")
    chart.savefig(path, format="png", dpi=110)


def _draw_bridge(ax: Axes, figures: PeriodFigures, formatter: type) -> None:
    currency = figures.currency
    labels, bottoms, heights, colors, texts = [], [], [], [], []
    level = Decimal(0)
    for label, name, kind in _BRIDGE:
        value: Decimal = getattr(figures, name)
        if kind == "total":
            bottom, level = Decimal(0), value
            text = format_money(value, currency)
        elif kind == "up":
            bottom, level = level, level + value
            text = f"+{format_money(value, currency)}" if value else format_money(value, currency)
        else:
            level = level - value
            bottom = level
            text = f"−{format_money(value, currency)}" if value else format_money(value, currency)
        labels.append(label)
        bottoms.append(float(bottom))
        heights.append(float(value))
        colors.append(_COLORS[kind])
        texts.append(text)
    positions = list(range(len(labels)))
    ax.bar(positions, heights, bottom=bottoms, color=colors, width=0.62, edgecolor="#333333", linewidth=0.6)
    top = max((b + h for b, h in zip(bottoms, heights, strict=True)), default=0.0) or 1.0
    for x, bottom, height, text in zip(positions, bottoms, heights, texts, strict=True):
        ax.annotate(
            text, (x, bottom + height), xytext=(0, 4), textcoords="offset points", ha="center", va="bottom", fontsize=9
        )
    for x in positions[:-1]:  # connectors: each bar starts where the previous one ended
        level_after = bottoms[x] + heights[x] if _BRIDGE[x][2] != "down" else bottoms[x]
        ax.plot([x + 0.31, x + 0.69], [level_after, level_after], color="#777777", linewidth=0.8)
    ax.set_xticks(positions, labels, rotation=20, ha="right")
    ax.set_ylim(0, top * 1.15)
    ax.set_ylabel(f"MRR ({currency})")
    ax.yaxis.set_major_formatter(formatter(lambda y, _pos: f"{y:,.0f}"))
    ax.set_title(f"MRR bridge {figures.period.label}, {currency}", fontsize=12)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _draw_rates(ax: Axes, series: Sequence[PeriodFigures], formatter: type) -> None:
    positions = list(range(len(series)))
    labels: dict[int, list[tuple[float, str, str]]] = {x: [] for x in positions}
    drawn: list[float] = []
    for label, name, color, style, marker, size in _RATES:
        values: list[Decimal | None] = [getattr(f, name) for f in series]
        points = [float(v * 100) if v is not None else float("nan") for v in values]
        ax.plot(
            positions, points, linestyle=style, marker=marker, markersize=size, color=color, label=label, linewidth=2
        )
        for x, value in zip(positions, values, strict=True):
            if value is not None:
                labels[x].append((float(value * 100), format_rate(value), color))
                drawn.append(float(value * 100))
    low, high = min([0.0, *drawn]), max([100.0, *drawn])
    if len(series) <= 12:  # the values beside the points, pushed apart so that none hides another
        gap = (high - low) * 0.06
        for x, at_x in labels.items():
            floor = float("-inf")
            for value, text, color in _merge_equal(at_x):
                floor = max(value, floor + gap)
                ax.annotate(
                    text,
                    (x, floor),
                    xytext=(9, -3),
                    textcoords="offset points",
                    fontsize=8.5,
                    color=color,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
                )
    ax.set_xticks(positions, [f.period.label for f in series])
    ax.set_xlim(-0.35, len(series) - 0.35)
    ax.set_ylim(low - (high - low) * 0.06, high + (high - low) * 0.12)
    ax.set_ylabel("% of the month's starting customers / MRR")
    ax.yaxis.set_major_formatter(formatter(lambda y, _pos: f"{y:.0f} %"))
    ax.set_title(f"Churn and retention by month, {series[0].currency}", fontsize=12)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=4, fontsize=9, frameon=False)


def _merge_equal(labels: list[tuple[float, str, str]]) -> list[tuple[float, str, str]]:
    """The labels at one month, lowest first; series showing the same value share one grey label."""
    merged: dict[str, tuple[float, str, str]] = {}
    for value, text, color in labels:
        merged[text] = (value, text, "#444444") if text in merged else (value, text, color)
    return sorted(merged.values())


# -- cohorts -----------------------------------------------------------------------------------------------


def cohorts(
    by: Annotated[Grain, typer.Option("--by", help="Group by calendar month or quarter.")] = Grain.MONTH,
    currency: Annotated[str | None, typer.Option("--currency", help="Only this currency (ISO 4217).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print JSON: {"data": [...]}, a cohort per object.')] = False,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Also write one row per cohort and period to this CSV file.")
    ] = None,
    plot_path: Annotated[
        Path | None, typer.Option("--plot", help="Also draw the logo and revenue retention heatmaps to this PNG.")
    ] = None,
) -> None:
    """Revenue cohorts: customers grouped by the period of their first billed revenue, with the logo retention
    (% still billed) and revenue retention (billed / the cohort's first-period revenue) of every later period."""
    from billing.core.cohorts import cohort_rows

    code = currency.upper() if currency is not None else None
    found = _cohorts(by, code)
    rows = cohort_rows(found)
    if as_json:
        _json.emit(_json.listing(rows))
    else:
        print_cohorts(found, by)
    notes = err_console if as_json else console
    if csv_path is not None:
        _write(csv_path, lambda path: _write_cohort_csv(path, rows))
        notes.print(f"wrote {csv_path}", highlight=False, markup=False)
    if plot_path is not None:
        _write(plot_path, lambda path: plot_cohorts(found, path))
        notes.print(f"wrote {plot_path}", highlight=False, markup=False)


def _cohorts(grain: Grain, currency: str | None) -> list[Cohort]:
    from sqlalchemy.exc import SQLAlchemyError

    from billing.metrics_store import cohorts_from_database

    engine = engine_for_cli()
    try:
        return cohorts_from_database(engine, grain, currency)
    except SQLAlchemyError as exc:
        fail(database_message(exc))
    finally:
        engine.dispose()


_COHORT_CSV = (
    "cohort", "currency", "customers", "revenue", "period", "offset", "customers_retained", "logo_retention",
    "period_revenue", "revenue_retention",
)  # fmt: skip


def _write_cohort_csv(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(_COHORT_CSV)
        for row in rows:
            head = [row["cohort"], row["currency"], row["customers"], row["revenue"]]
            for cell in row["periods"]:  # type: ignore[attr-defined]
                writer.writerow([*head, cell["period"], cell["offset"], cell["customers_retained"],
                                 cell["logo_retention"], cell["revenue"], cell["revenue_retention"]])  # fmt: skip


def print_cohorts(found: Sequence[Cohort], grain: Grain) -> None:
    """Per currency, one table: a row per cohort, a column per period since (0 = the cohort's own), each cell
    "logo % / revenue %"."""
    if not found:
        console.print("no billed revenue in a closed period: no cohorts", highlight=False)
        return
    for currency in sorted({c.currency for c in found}):
        group = [c for c in found if c.currency == currency]
        width = max(len(c.cells) for c in group)
        unit = "month" if grain is Grain.MONTH else "quarter"
        table = Table(
            title=f"Cohorts by first billed {unit}, {currency}: customers still billed % / revenue retained %",
            box=box.SIMPLE_HEAD,
            title_justify="left",
        )
        for header in ("Cohort", "Customers", "First revenue"):
            table.add_column(header, justify="left" if header == "Cohort" else "right", no_wrap=True)
        for offset in range(width):
            table.add_column(f"+{offset}", justify="right", no_wrap=True)
        for c in group:
            cells = [f"{format_rate(x.logo_retention)} / {format_rate(x.revenue_retention)}" for x in c.cells]
            table.add_row(c.period.label, str(c.customers), format_money(c.revenue, currency), *cells)
        print_table(table)


def plot_cohorts(found: Sequence[Cohort], path: Path) -> None:
    """Draw, per currency, two heatmaps (logo retention, revenue retention): a row per cohort, a column per period
    since its first; the value written in each cell. Decimals become floats only here, to be drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    currencies = sorted({c.currency for c in found}) or ["—"]
    rows = max((len([c for c in found if c.currency == cur]) for cur in currencies), default=1)
    chart = Figure(figsize=(14, max(3.5, 0.45 * rows + 2.2) * len(currencies)), layout="constrained")
    FigureCanvasAgg(chart)
    axes = chart.subplots(len(currencies), 2, squeeze=False)
    for row, currency in enumerate(currencies):
        group = [c for c in found if c.currency == currency]
        for ax, (title, attr) in zip(axes[row], (("Logo retention", "logo_retention"),
                                                 ("Revenue retention", "revenue_retention")), strict=True):  # fmt: skip
            if not group:
                ax.text(0.5, 0.5, "no cohorts", ha="center", va="center", transform=ax.transAxes)
                continue
            _draw_heatmap(ax, chart, group, attr, f"{title}, {currency}")
    chart.suptitle("Cohorts by first billed period", fontsize=15, fontweight="bold")
    chart.savefig(path, format="png", dpi=110)


def _draw_heatmap(ax: Axes, chart: Any, group: Sequence[Cohort], attr: str, title: str) -> None:
    import numpy as np

    width = max(len(c.cells) for c in group)
    values = np.full((len(group), width), np.nan)
    for i, c in enumerate(group):
        for cell in c.cells:
            rate = getattr(cell, attr)
            if rate is not None:
                values[i, cell.offset] = float(rate * 100)
    top = max(100.0, float(np.nanmax(values)) if not np.all(np.isnan(values)) else 100.0)
    image = ax.imshow(values, cmap="YlGnBu", vmin=0, vmax=top, aspect="auto")
    for i, c in enumerate(group):
        for cell in c.cells:
            rate = getattr(cell, attr)
            text = format_rate(rate)
            shade = "white" if rate is not None and float(rate * 100) > top * 0.6 else "black"
            ax.text(cell.offset, i, text if text == "n/a" else f"{text} %", ha="center", va="center",
                    fontsize=8, color=shade)  # fmt: skip
    ax.set_xticks(range(width), [f"+{k}" for k in range(width)])
    ax.set_yticks(range(len(group)), [f"{c.period.label} ({c.customers})" for c in group])
    ax.set_xlabel("periods since the cohort's first billed period")
    ax.set_ylabel("cohort (customers)")
    ax.set_title(title, fontsize=12)
    chart.colorbar(image, ax=ax, format="%.0f %%", shrink=0.9)


# -- risk --------------------------------------------------------------------------------------------------


def risk(
    period: Annotated[str, typer.Option("--period", help="The month assessed, YYYY-MM.")],
    as_json: Annotated[bool, typer.Option("--json", help='Print JSON: {"data": [...]}, a customer each.')] = False,
    notify: Annotated[
        bool, typer.Option("--notify", help="Queue a customer.at_risk notification for each customer at risk.")
    ] = False,
    plot_path: Annotated[Path | None, typer.Option("--plot", help="Also draw the scores to this PNG file.")] = None,
) -> None:
    """Churn-risk warnings from usage: the month's active customers ranked by risk, with the rules that fired
    (usage drop, inactivity, low adoption, failed payments, a scheduled downgrade or cancellation, a coupon
    ending) and the expansion signals (a limit reached)."""
    from billing.config import get_settings
    from billing.risk import assess_period, queue_at_risk, rules_from_settings

    month = _month("--period", period)
    catalog = load_catalog_for_cli()
    engine = engine_for_cli()
    try:
        found = assess_period(engine, catalog, month, rules_from_settings(get_settings()))
        queued = queue_at_risk(engine, found) if notify else []
    finally:
        engine.dispose()
    if as_json:
        _json.emit(_json.listing([assessment_row(a) for a in found]))
    else:
        print_risk(found)
    notes = err_console if as_json else console
    if notify:
        notes.print(f"customer.at_risk notifications queued: {len(queued)} new", highlight=False, markup=False)
    if plot_path is not None:
        _write(plot_path, lambda path: plot_risk(found, path))
        notes.print(f"wrote {plot_path}", highlight=False, markup=False)


def assessment_row(a: Assessment) -> dict[str, object]:
    return {
        "customer": a.customer,
        "period": a.period.label,
        "score": a.score,
        "at_risk": a.at_risk,
        "reasons": [{"rule": r.rule.value, "detail": r.detail, "points": r.points} for r in a.reasons],
        "expansion_signals": list(a.expansion),
    }


def print_risk(found: Sequence[Assessment], limit: int | None = None) -> None:
    """The customers with a reason or an expansion signal (the first ``limit``), highest score first; the count of
    the others."""
    signs = [a for a in found if a.reasons or a.expansion]
    shown = signs[:limit] if limit is not None else signs
    if not found:
        console.print("no active customer in the period", highlight=False)
        return
    period = found[0].period.label
    level = found[0].level
    table = Table(title=f"Churn risk {period} (at risk: score ≥ {level})", box=box.SIMPLE_HEAD, title_justify="left")
    for header in ("Customer", "Score", "At risk", "Reasons", "Expansion signals"):
        table.add_column(header, justify="right" if header == "Score" else "left")
    for a in shown:
        reasons = "; ".join(f"{r.rule.value} (+{r.points}): {r.detail}" for r in a.reasons)
        table.add_row(a.customer, str(a.score), "yes" if a.at_risk else "", reasons, ", ".join(a.expansion))
    print_table(table)
    at_risk = sum(1 for a in found if a.at_risk)
    console.print(
        f"{len(found)} active customers: {at_risk} at risk, {len(signs) - at_risk} with a lesser sign or an "
        f"expansion signal{f' ({len(signs) - len(shown)} not shown)' if len(shown) < len(signs) else ''}, "
        f"{len(found) - len(signs)} with none",
        highlight=False,
    )


_RULE_COLORS = {
    "usage_drop": "#c44e52", "inactive": "#8c1c13", "low_adoption": "#dd8452", "failed_payment": "#8172b2",
    "downgrade_scheduled": "#937860", "cancellation_scheduled": "#333333", "coupon_ending": "#da8bc3",
}  # fmt: skip


def plot_risk(found: Sequence[Assessment], path: Path) -> None:
    """A horizontal bar per customer with a reason (the 30 highest scores), stacked by rule, with the risk level
    as a dashed line and the expansion signals named beside the bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [a for a in found if a.reasons][:30]
    chart = Figure(figsize=(11, max(3.0, 0.38 * len(shown) + 1.8)), layout="constrained")
    FigureCanvasAgg(chart)
    ax = chart.subplots()
    if not shown:
        ax.text(0.5, 0.5, "no customer with a warning sign", ha="center", va="center", transform=ax.transAxes)
    drawn: set[str] = set()
    for y, a in enumerate(reversed(shown)):
        left = 0
        for reason in a.reasons:
            if reason.points == 0:
                continue
            rule = reason.rule.value
            ax.barh(y, reason.points, left=left, color=_RULE_COLORS.get(rule, "#999999"), edgecolor="white",
                    label=rule if rule not in drawn else None)  # fmt: skip
            drawn.add(rule)
            left += reason.points
        if a.expansion:
            ax.text(left + 0.1, y, "expansion: " + ", ".join(a.expansion), va="center", fontsize=8, color="#2a7f3f")
    if shown:
        level = shown[0].level
        ax.axvline(level, color="#444444", linestyle="--", linewidth=1)
        ax.text(level, len(shown) - 0.4, f" at risk ≥ {level}", fontsize=9, va="bottom")
        ax.set_yticks(range(len(shown)), [a.customer for a in reversed(shown)])
        ax.set_ylim(-0.6, len(shown) + 0.2)
        ax.legend(loc="lower right", fontsize=8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("risk score (points of the rules that fired)")
    period = found[0].period.label if found else ""
    ax.set_title(f"Churn risk by customer, {period}", fontsize=13, fontweight="bold")
    ax.grid(axis="x", alpha=0.3)
    chart.savefig(path, format="png", dpi=110)


# -- margin ------------------------------------------------------------------------------------------------


def margin(
    period: Annotated[str, typer.Option("--period", help="The (first) month, YYYY-MM.")],
    to: Annotated[str | None, typer.Option("--to", help="The last month of a range, YYYY-MM.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print JSON: {"data": [...]}, a meter or plan each.')] = False,
) -> None:
    """Gross margin and markup per meter and per plan (from the meters' unit_cost and the plans'
    subscription_cost), and the repeat purchase rate of top-ups, per month and currency."""
    from billing.metrics_store import margins_from_database, repeat_purchases_from_database

    periods = _periods(period, to)
    catalog = load_catalog_for_cli()
    engine = engine_for_cli()
    try:
        found = margins_from_database(engine, catalog, periods)
        repeats = repeat_purchases_from_database(engine, periods)
    finally:
        engine.dispose()
    if as_json:
        rows = [margin_row(m) for m in found]
        rows += [
            {"scope": "repeat_purchases", "period": r.period.label, "currency": r.currency, "buyers": str(r.buyers),
             "returning_buyers": str(r.returning), "repeat_purchase_rate": format_rate(r.rate)}
            for r in repeats
        ]  # fmt: skip
        _json.emit(_json.listing(rows))
        return
    print_margins(found, repeats)


def margin_row(m: Margin) -> dict[str, str]:
    return {
        "scope": m.scope,
        "key": m.key,
        "period": m.period.label,
        "currency": m.currency,
        "units": f"{m.units.normalize():f}" if m.scope == "meter" else "",
        "revenue": format_money(m.revenue, m.currency),
        "cost": format_money(m.cost, m.currency),
        "gross_margin": format_money(m.gross_margin, m.currency),
        "gross_margin_rate": format_rate(m.gross_margin_rate),
        "markup": format_rate(m.markup),
    }


def print_margins(found: Sequence[Margin], repeats: Sequence[RepeatPurchases]) -> None:
    if not found and not repeats:
        console.print("nothing billed in the range: no margins", highlight=False)
    for (label, currency) in sorted({(m.period.label, m.currency) for m in found}):
        table = Table(title=f"Margin and markup {label}, {currency}", box=box.SIMPLE_HEAD, title_justify="left")
        for header in ("", "Units", "Revenue", "Cost", "Gross margin", "Margin rate", "Markup"):
            table.add_column(header, justify="left" if not header else "right", no_wrap=True)
        for m in (m for m in found if (m.period.label, m.currency) == (label, currency)):
            row = margin_row(m)
            table.add_row(
                f"{m.scope} {m.key}", row["units"], row["revenue"], row["cost"], row["gross_margin"],
                _percent(m.gross_margin_rate), _percent(m.markup),
            )  # fmt: skip
        print_table(table)
    for r in repeats:
        console.print(
            f"repeat purchases {r.period.label} {r.currency}: {r.returning} of {r.buyers} top-up buyers had bought "
            f"before: {_percent(r.rate)}",
            highlight=False,
        )


# -- recognized revenue ------------------------------------------------------------------------------------


def revenue(
    period: Annotated[str, typer.Option("--period", help="The (first) month, YYYY-MM.")],
    to: Annotated[str | None, typer.Option("--to", help="The last month of a range, YYYY-MM.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print JSON: {"data": [...]}, a month each.')] = False,
) -> None:
    """Recognized revenue: billed, recognized (a fee over the days it covers) and deferred revenue (opening,
    added, recognized, closing) per month and currency."""
    from billing.metrics_store import recognition_from_database

    periods = _periods(period, to)
    engine = engine_for_cli()
    try:
        found = recognition_from_database(engine, periods)
    finally:
        engine.dispose()
    rows = [recognition_row(r) for r in found]
    if as_json:
        _json.emit(_json.listing(rows))
        return
    if not rows:
        console.print("nothing billed: no revenue", highlight=False)
    for currency in sorted({r.currency for r in found}):
        table = Table(title=f"Recognized revenue, {currency}", box=box.SIMPLE_HEAD, title_justify="left")
        table.add_column("Figure", no_wrap=True)
        columns = [row for row in rows if row["currency"] == currency]
        for row in columns:
            table.add_column(row["period"], justify="right", no_wrap=True)
        for label, key in _RECOGNITION_ROWS:
            table.add_row(label, *(row[key] for row in columns))
        print_table(table)


_RECOGNITION_ROWS = (
    ("Billed (excl. tax)", "billed"),
    ("Recognized", "recognized"),
    ("Deferred revenue at start", "deferred_opening"),
    ("+ added (billed)", "deferred_added"),
    ("− recognized", "recognized"),
    ("Deferred revenue at end", "deferred_closing"),
)


def recognition_row(r: Recognition) -> dict[str, str]:
    return {
        "period": r.period.label,
        "currency": r.currency,
        "billed": format_money(r.billed, r.currency),
        "recognized": format_money(r.recognized, r.currency),
        "deferred_opening": format_money(r.deferred_opening, r.currency),
        "deferred_added": format_money(r.deferred_added, r.currency),
        "deferred_closing": format_money(r.deferred_closing, r.currency),
    }
