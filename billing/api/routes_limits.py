"""A customer's own limits: ``PUT /v1/customers/{id}/limits`` and ``GET /v1/customers/{id}/limits``, as ``billing
customers set-limit`` sets them. Thin: parse, call ``billing.thresholds``, shape."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy import Engine

from billing.api.auth import ApiKey, require_unbound_key
from billing.api.deps import api_engine, get_catalog
from billing.api.errors import ERROR_RESPONSES, POST_ERROR_RESPONSES
from billing.api.pagination import Page, page_params, paginate
from billing.api.routes_customers import CustomerId, storable_path
from billing.api.schemas import LimitIn, LimitListOut, LimitOut, decimal_text
from billing.customers import get_customer
from billing.thresholds import CustomerLimit, list_limits, set_limit
from pricing_plans.models import Catalog

__all__ = ["router"]

router = APIRouter(tags=["customers"], responses=ERROR_RESPONSES)


def limit_out(limit: CustomerLimit) -> LimitOut:
    return LimitOut(
        customer=limit.customer, threshold=limit.key, kind=limit.kind, meter=limit.meter,
        limit=decimal_text(limit.limit),
    )


@router.put(
    "/v1/customers/{customer_id}/limits",
    summary="Set a customer's own allowance or spend cap",
    response_model=LimitOut,
    operation_id="changeCustomerLimit",
    responses=POST_ERROR_RESPONSES,
)
def put_limit(
    customer_id: CustomerId,
    body: LimitIn,
    engine: Annotated[Engine, Depends(api_engine)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> LimitOut:
    """Set the customer's own allowance of ``meter`` (``allowance``) or its spend cap (``spend_cap``), replacing an
    earlier one of the same threshold and, in the customer's thresholds, the catalog's (``billing customers
    set-limit``). Every invalid field is named at once."""
    limit = set_limit(
        engine, catalog, storable_path(customer_id, "customer"), meter=body.meter,
        allowance=None if body.allowance is None else str(body.allowance),
        spend_cap=None if body.spend_cap is None else str(body.spend_cap),
    )
    return limit_out(limit)


@router.get(
    "/v1/customers/{customer_id}/limits",
    summary="List a customer's own limits",
    response_model=LimitListOut,
    operation_id="listCustomerLimits",
)
def get_limits(
    customer_id: CustomerId,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    page: Annotated[Page, Depends(page_params)],
) -> LimitListOut:
    """The customer's own allowances and spend cap, by threshold (the cursors are thresholds: ``spend``,
    ``usage:api_calls``)."""
    customer = get_customer(engine, storable_path(customer_id, "customer")).external_id
    found, more = paginate(list_limits(engine, customer), lambda limit: limit.key, page)
    return LimitListOut(data=[limit_out(limit) for limit in found], has_more=more)
