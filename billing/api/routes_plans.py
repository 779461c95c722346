"""``GET /v1/plans`` and ``GET /v1/plans/{code}``: the catalog's price plans, as ``billing plans show`` has them.
Thin: read the catalog the server runs with (``billing.api.deps.get_catalog``), shape."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from billing.api.auth import ApiKey, require_unbound_key
from billing.api.deps import get_catalog
from billing.api.errors import ERROR_RESPONSES, not_found
from billing.api.pagination import Page, page_params, paginate
from billing.api.schemas import PlanListOut, PlanOut
from pricing_plans.errors import UnknownPlanError
from pricing_plans.models import Catalog, Plan

__all__ = ["plan_out", "router"]

router = APIRouter(tags=["plans"], responses=ERROR_RESPONSES)


def plan_out(catalog: Catalog, plan: Plan) -> PlanOut:
    """A plan version as the API shows it: the catalog's fields (decimals as strings) and every version."""
    fields = plan.model_dump(mode="json")
    return PlanOut(**fields, versions=[version.version for version in catalog.plans[plan.code]])


@router.get("/v1/plans", summary="List plans", response_model=PlanListOut, operation_id="listPlans")
def list_plans(
    catalog: Annotated[Catalog, Depends(get_catalog)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    page: Annotated[Page, Depends(page_params)],
) -> PlanListOut:
    """The catalog's plans by code, each in its latest version, a page at a time (the cursors are codes)."""
    latest = [catalog.plan(code) for code in sorted(catalog.plans)]
    found, more = paginate(latest, lambda plan: plan.code, page)
    return PlanListOut(data=[plan_out(catalog, plan) for plan in found], has_more=more)


@router.get("/v1/plans/{code}", summary="Get a plan", response_model=PlanOut, operation_id="getPlan")
def get_plan(
    code: Annotated[str, Path(max_length=100, description="The plan's code.", examples=["api_growth"])],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    version: Annotated[int | None, Query(ge=1, le=10_000, description="The version (default: the latest).")] = None,
) -> PlanOut:
    """One plan: its latest version, or ``version``."""
    try:
        plan = catalog.plan(code, version)
    except UnknownPlanError as exc:
        raise not_found(str(exc), "version" if code in catalog.plans else None) from None
    return plan_out(catalog, plan)
