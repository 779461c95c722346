"""A customer's entitlements: ``/v1/customers/{id}/entitlements`` and ``…/entitlements/{meter}``, what a product asks
on every request before it lets usage through. Thin: parse, call ``billing.entitlements``, shape."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from sqlalchemy import Engine

from billing.api.auth import ApiKey, require_key
from billing.api.deps import api_engine, get_catalog
from billing.api.errors import ERROR_RESPONSES, not_found
from billing.api.routes_customers import CustomerId, storable_path
from billing.api.schemas import EntitlementOut, EntitlementsOut, PeriodOut, decimal_text
from billing.entitlements import Entitlement, customer_entitlements
from pricing_plans.models import Catalog

router = APIRouter(tags=["customers"], responses=ERROR_RESPONSES)

MeterCode = Annotated[str, Path(description="A meter's code.", max_length=255, examples=["api_calls"])]


@router.get(
    "/v1/customers/{customer_id}/entitlements",
    summary="A customer's entitlements: usage, limit and whether each meter is blocked",
    response_model=EntitlementsOut,
    operation_id="getCustomerEntitlements",
)
def get_entitlements(
    customer_id: CustomerId,
    engine: Annotated[Engine, Depends(api_engine)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    key: Annotated[ApiKey, Depends(require_key)],
) -> EntitlementsOut:
    """Each meter the customer's current subscriptions charge for or give an allowance of: used so far in the
    current billing period, the limit, what remains, whether a hard limit blocks it, and when the period resets.
    A key bound to another customer gets 404."""
    customer_id = _own(customer_id, key)
    found = customer_entitlements(engine, catalog, customer_id)
    return EntitlementsOut(
        customer=found.customer.external_id,
        timezone=found.customer.timezone,
        as_of=found.as_of,
        entitlements=[entitlement_out(e) for e in found.meters],
    )


@router.get(
    "/v1/customers/{customer_id}/entitlements/{meter}",
    summary="A customer's entitlement to one meter",
    response_model=EntitlementOut,
    operation_id="getCustomerEntitlement",
)
def get_entitlement(
    customer_id: CustomerId,
    meter: MeterCode,
    engine: Annotated[Engine, Depends(api_engine)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    key: Annotated[ApiKey, Depends(require_key)],
) -> EntitlementOut:
    """One meter's entitlement; 404 for a meter none of the customer's current subscriptions has."""
    customer_id = _own(customer_id, key)
    meter = storable_path(meter, "meter")
    found = customer_entitlements(engine, catalog, customer_id, meter=meter)
    return entitlement_out(found.meters[0])


def _own(customer_id: str, key: ApiKey) -> str:
    customer_id = storable_path(customer_id, "customer")
    if key.customer is not None and key.customer != customer_id:
        raise not_found(f"unknown customer {customer_id!r}")
    return customer_id


def entitlement_out(entitlement: Entitlement) -> EntitlementOut:
    e = entitlement
    return EntitlementOut(
        meter=e.meter,
        used=decimal_text(e.used),
        limit=None if e.limit is None else decimal_text(e.limit),
        remaining=None if e.remaining is None else decimal_text(e.remaining),
        blocked=e.blocked,
        hard_limit=e.hard_limit,
        resets_at=e.resets_at,
        period=PeriodOut(start=e.period.start, end=e.period.end),
        subscription_id=e.subscription_id,
        credit_balance=None if e.credit_balance is None else decimal_text(e.credit_balance),
    )
