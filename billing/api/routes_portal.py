"""Links to the customer portal: ``POST /v1/customers/{id}/portal_links`` makes one,
``POST /v1/customers/{id}/portal_links/revoke`` ends every link made so far. Thin: ``billing.portal_links`` does
it. A key bound to a customer may make and end its own customer's links (and gets 404 for any other), so that a
customer's own system can send its people to the portal."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from billing.api.auth import ApiKey, require_key
from billing.api.deps import api_engine, get_api_settings
from billing.api.errors import ERROR_RESPONSES, POST_ERROR_RESPONSES, ApiError, not_found
from billing.api.routes_customers import CustomerId, storable_path
from billing.api.schemas import PortalLinkIn, PortalLinkOut, PortalRevocationOut
from billing.config import Settings
from billing.errors import NotFoundError
from billing.portal_links import PortalLinkError, create_portal_link, revoke_portal_links

router = APIRouter(tags=["customers"], responses=ERROR_RESPONSES)


@router.post(
    "/v1/customers/{customer_id}/portal_links",
    status_code=201,
    summary="Make a link to the customer's portal",
    response_model=PortalLinkOut,
    operation_id="createPortalLink",
    responses={
        **POST_ERROR_RESPONSES,
        201: {
            "description": "The link",
            "headers": {"Location": {"description": "The link itself.", "schema": {"type": "string"}}},
        },
    },
)
async def create_link(
    customer_id: CustomerId,
    response: Response,
    engine: Annotated[Engine, Depends(api_engine)],
    settings: Annotated[Settings, Depends(get_api_settings)],
    key: Annotated[ApiKey, Depends(require_key)],
    body: PortalLinkIn | None = None,
) -> PortalLinkOut:
    """A signed link to the customer's portal (usage, the upcoming invoice, credits, invoices and their PDFs,
    the customer's details), good for ``days`` days. It needs the server's ``portal_secret``."""
    customer = storable_path(customer_id, "customer")
    if key.customer is not None and key.customer != customer:
        raise not_found(f"unknown customer {customer!r}")
    days = (body or PortalLinkIn()).days
    try:
        link = await run_in_threadpool(create_portal_link, engine, settings, customer, days=days)
    except PortalLinkError as exc:
        field = "days" if str(exc).startswith("--days") else "portal_secret"
        raise ApiError(422, "invalid_input", str(exc).replace("--days", "days"), field) from None
    response.headers["Location"] = link.url
    return PortalLinkOut(customer=link.customer, url=link.url, expires_at=link.expires_at)


@router.post(
    "/v1/customers/{customer_id}/portal_links/revoke",
    summary="End every link to the customer's portal made so far",
    response_model=PortalRevocationOut,
    operation_id="revokePortalLinks",
    responses=POST_ERROR_RESPONSES,
)
async def revoke_links(
    customer_id: CustomerId,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_key)],
) -> PortalRevocationOut:
    """Every portal link made for the customer until now is refused from the next page it opens (a portal open in
    a browser included); links made afterwards open as usual. For a link sent to the wrong person, or one that
    leaked."""
    customer = storable_path(customer_id, "customer")
    if key.customer is not None and key.customer != customer:
        raise not_found(f"unknown customer {customer!r}")
    try:
        revoked = await run_in_threadpool(revoke_portal_links, engine, customer)
    except NotFoundError as exc:
        raise not_found(str(exc)) from None
    return PortalRevocationOut(customer=revoked.customer, revoked_at=revoked.revoked_at)
