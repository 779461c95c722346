"""``GET /v1/metrics?period=YYYY-MM``: the revenue and churn figures of a month, one object per currency, as a list
(``{"data": [...], "has_more": ...}``, by currency; the cursors are currency codes)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import Engine

from billing.api.auth import ApiKey, require_unbound_key
from billing.api.deps import api_engine, get_catalog
from billing.api.errors import ERROR_RESPONSES, ApiError
from billing.api.pagination import Page, page_params, paginate
from billing.api.routes_customers import MONTH_PATTERN, month_param
from billing.api.schemas import MetricsListOut
from billing.core.metrics import MetricsError, figures_row
from billing.metrics_store import figures_from_database
from pricing_plans.models import Catalog

router = APIRouter(tags=["metrics"], responses=ERROR_RESPONSES)


@router.get(
    "/v1/metrics",
    summary="Revenue and churn figures of a month",
    response_model=MetricsListOut,
    operation_id="listMetrics",
)
def list_metrics(
    period: Annotated[str, Query(pattern=MONTH_PATTERN, description="The month, YYYY-MM.", examples=["2026-10"])],
    engine: Annotated[Engine, Depends(api_engine)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    page: Annotated[Page, Depends(page_params)],
) -> MetricsListOut:
    """The figures of ``billing metrics --json``: customers, MRR movements, churn, CRR, NRR, GRR, billed
    revenue, ARPA and CLV, one object per currency, every value a string."""
    month = month_param(period)
    try:
        figures = figures_from_database(engine, catalog, [month])
    except MetricsError as exc:
        raise ApiError(500, "metrics_unavailable", f"the figures cannot be computed: {exc}") from None
    rows = sorted((figures_row(f) for f in figures), key=lambda row: row["currency"])
    found, more = paginate(rows, lambda row: row["currency"], page)
    return MetricsListOut(data=found, has_more=more)
