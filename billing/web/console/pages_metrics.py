"""The metrics dashboard: ``GET /console/metrics?period=YYYY-MM`` — the MRR bridge of the month per currency and
the figures of the months before it (``billing.metrics_store.figures_from_database``, as ``billing metrics``), the
revenue cohorts (``cohorts_from_database``, as ``billing metrics cohorts``), the month's churn-risk list
(``billing.risk.assess_period``, as ``billing metrics risk``) and the aged receivables today
(``billing.payments.aged_receivables``, as ``billing payments aging``). Charts are SVG drawn on the server
(``billing.web.console.charts``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import Engine

from billing.config import Settings
from billing.core.cohorts import Grain
from billing.metrics_store import cohorts_from_database, figures_from_database, months_before
from billing.payments import aged_receivables
from billing.risk import assess_period, rules_from_settings
from billing.staff import StaffSession
from billing.web.console import charts
from billing.web.console.base import (
    console_catalog,
    console_engine,
    console_settings,
    current_staff,
    month_or_none,
    render,
)
from billing.web.console.pages_runs import last_month
from pricing_plans.models import Catalog

__all__ = ["router"]

router = APIRouter()
MONTHS = 6
RISKS_SHOWN = 25


@router.get("/metrics", include_in_schema=False)
def metrics_page(
    request: Request,
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
    catalog: Annotated[Catalog, Depends(console_catalog)],
    settings: Annotated[Settings, Depends(console_settings)],
    period: str | None = None,
) -> Response:
    chosen = month_or_none(period) or last_month()
    months = [months_before(chosen, back) for back in range(MONTHS - 1, -1, -1)]
    figures = figures_from_database(engine, catalog, months)
    currencies = sorted({f.currency for f in figures})
    latest = {f.currency: f for f in figures if f.period == chosen}
    bridges = {c: charts.bridge_chart(latest[c], f"bridge-{c}") for c in currencies if c in latest}
    cohorts = cohorts_from_database(engine, Grain.MONTH)
    heatmaps = {
        c: charts.cohort_heatmap(
            [k for k in cohorts if k.currency == c], "revenue_retention", f"Revenue retention by cohort, {c}",
            f"cohorts-{c}",
        )
        for c in sorted({k.currency for k in cohorts})
    }  # fmt: skip
    risks = [a for a in assess_period(engine, catalog, chosen, rules_from_settings(settings)) if a.reasons]
    aging = aged_receivables(engine)
    return render(
        request, "metrics.html", engine, title="Metrics", section="metrics", period=chosen, figures=figures,
        currencies=currencies, bridges=bridges, heatmaps=heatmaps, risks=risks[:RISKS_SHOWN], risk_count=len(risks),
        aging=aging, aging_chart=charts.aging_chart(aging.totals, "aging"), months=months,
    )  # fmt: skip
