"""The metrics page's charts, drawn on the server as SVG: the MRR bridge (a waterfall), the cohort heatmap and the
aged receivables (bars). Each chart is an ``<svg role="img">`` with a title and a description that say what it
shows in words, and every value is also printed in a table beside it.

Amounts are Decimals up to here; they become floats only as pixel positions. Labels print the Decimals as
``billing metrics`` prints them (``format_money``, ``format_rate``: half up)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from markupsafe import Markup, escape

from billing.core.aging import BUCKETS, AgingRow
from billing.core.cohorts import Cohort
from billing.core.metrics import PeriodFigures, format_money, format_rate

__all__ = ["aging_chart", "bridge_chart", "cohort_heatmap"]

BRIDGE = (
    ("Start", "mrr_start", "total"),
    ("New", "mrr_new", "up"),
    ("Reactivation", "mrr_reactivation", "up"),
    ("Expansion", "mrr_expansion", "up"),
    ("Contraction", "mrr_contraction", "down"),
    ("Churned", "mrr_churned", "down"),
    ("End", "mrr_end", "total"),
)
COLORS = {"total": "#1d4ed8", "up": "#15803d", "down": "#b91c1c"}  # each ≥ 4.5:1 on white
INK = "#1c2430"


def _svg(width: int, height: int, ident: str, title: str, description: str, body: list[str]) -> Markup:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-labelledby="{ident}-title {ident}-desc" font-family="system-ui, DejaVu Sans, sans-serif" '
        f'font-size="12"><title id="{ident}-title">{escape(title)}</title>'
        f'<desc id="{ident}-desc">{escape(description)}</desc>'
    )
    return Markup(head + "".join(body) + "</svg>")


def _text(x: float, y: float, text: str, *, anchor: str = "middle", fill: str = INK, weight: str = "normal") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}" font-weight="{weight}">'
        f"{escape(text)}</text>"
    )


def bridge_chart(figures: PeriodFigures, ident: str) -> Markup:
    """The MRR bridge of one period and currency: start, the movements up and down, end."""
    currency = figures.currency
    width, height, left, top, bottom = 720, 280, 30, 30, 40
    steps: list[tuple[str, str, Decimal, Decimal]] = []  # label, kind, from, to
    level = Decimal(0)
    for label, name, kind in BRIDGE:
        value: Decimal = getattr(figures, name)
        if kind == "total":
            steps.append((label, kind, Decimal(0), value))
            level = value
        elif kind == "up":
            steps.append((label, kind, level, level + value))
            level += value
        else:
            steps.append((label, kind, level - value, level))
            level -= value
    top_value = max([max(a, b) for _, _, a, b in steps] + [Decimal(1)])
    scale = (height - top - bottom) / float(top_value)
    slot = (width - 2 * left) / len(steps)
    body = [f'<line x1="{left}" y1="{height - bottom}" x2="{width - left}" y2="{height - bottom}" stroke="#6b7280"/>']
    words = []
    for i, (label, kind, low, high) in enumerate(steps):
        x = left + i * slot + slot * 0.15
        y = height - bottom - float(high) * scale
        bar = max(float(high - low) * scale, 1.0)
        amount = high - low
        sign = "" if not amount else "+" if kind == "up" else "−" if kind == "down" else ""
        shown = f"{sign}{format_money(amount, currency)}"
        body.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{bar:.1f}" fill="{COLORS[kind]}"/>'
        )
        body.append(_text(x + slot * 0.35, y - 6, shown))
        body.append(_text(x + slot * 0.35, height - bottom + 18, label))
        words.append(f"{label} {shown}")
    title = f"MRR bridge {figures.period.label}, {currency}"
    return _svg(width, height, ident, title, "; ".join(words) + f" ({currency}).", body)


def _cell_color(value: Decimal | None) -> tuple[str, str]:
    """A blue whose depth grows with the retention (0 % pale, 100 % and more deep), and a text colour that keeps
    its contrast on it."""
    if value is None:
        return "#f1f5f9", INK
    share = min(max(float(value), 0.0), 1.0)
    light = (239, 246, 255)
    deep = (30, 64, 175)
    rgb = tuple(round(a + (b - a) * share) for a, b in zip(light, deep, strict=True))
    return "#{:02x}{:02x}{:02x}".format(*rgb), ("#ffffff" if share >= 0.5 else INK)


def cohort_heatmap(cohorts: Sequence[Cohort], attr: str, title: str, ident: str) -> Markup:
    """A row per cohort, a column per period since its first billed period; each cell its retention (``attr``:
    ``revenue_retention`` or ``logo_retention``) as a percent."""
    columns = max((len(c.cells) for c in cohorts), default=0)
    cell_w, cell_h, left, top = 58, 26, 150, 40
    width, height = max(left + max(columns, 1) * cell_w + 10, 480), top + max(len(cohorts), 1) * cell_h + 10
    body = [_text(left, 14, "Periods since the cohort's first billed period", anchor="start")]
    for offset in range(columns):
        body.append(_text(left + offset * cell_w + cell_w / 2, top - 8, str(offset)))
    for row, cohort in enumerate(cohorts):
        y = top + row * cell_h
        body.append(_text(left - 8, y + 17, f"{cohort.period.label} ({cohort.customers})", anchor="end"))
        for cell in cohort.cells:
            value: Decimal | None = getattr(cell, attr)
            fill, ink = _cell_color(value)
            x = left + cell.offset * cell_w
            body.append(f'<rect x="{x}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" fill="{fill}"/>')
            shown = "—" if value is None else f"{format_rate(value)}%"
            body.append(_text(x + cell_w / 2 - 1, y + 17, shown, fill=ink))
    description = f"{len(cohorts)} cohorts; each cell is the retention in a later period, in percent."
    return _svg(width, height, ident, title, description, body)


def aging_chart(totals: Sequence[AgingRow], ident: str) -> Markup:
    """Per currency, what is owed in each bucket of days overdue (bars)."""
    width, bar_h, left, top = 720, 22, 110, 30
    rows = [
        (row.currency, bucket, amount) for row in totals for bucket, amount in zip(BUCKETS, row.buckets, strict=True)
    ]
    height = top + max(len(rows), 1) * (bar_h + 6) + 10
    biggest: dict[str, Decimal] = {}
    for currency, _bucket, amount in rows:
        biggest[currency] = max(biggest.get(currency, Decimal(0)), amount)
    body = [_text(left, 16, "Owed by days overdue", anchor="start", weight="bold")]
    if not rows:
        body.append(_text(left, top + 15, "Nothing owed.", anchor="start"))
    words = []
    for i, (currency, bucket, amount) in enumerate(rows):
        y = top + i * (bar_h + 6)
        span = float(amount / biggest[currency]) * (width - left - 160) if biggest[currency] > 0 else 0.0
        shown = f"{format_money(amount, currency)} {currency}"
        body.append(_text(left - 8, y + 15, f"{bucket} days" if bucket != "current" else "not yet due", anchor="end"))
        fill = COLORS["total"]
        body.append(f'<rect x="{left}" y="{y}" width="{max(span, 1.0):.1f}" height="{bar_h}" fill="{fill}"/>')
        body.append(_text(left + span + 6, y + 15, shown, anchor="start"))
        words.append(f"{bucket}: {shown}")
    return _svg(width, height, ident, "Aged receivables", "; ".join(words) or "Nothing owed.", body)
