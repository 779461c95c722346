"""A subscription's negotiated prices: ``GET`` and ``PUT /v1/subscriptions/{id}/overrides``. Thin: parse (numbers
as Decimal, never a float), call ``billing.overrides``, shape."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from billing import overrides as service
from billing.api.auth import ApiKey, require_unbound_key
from billing.api.deps import api_engine, get_catalog
from billing.api.errors import ERROR_RESPONSES, POST_ERROR_RESPONSES, ApiError
from billing.api.pagination import DIGITS_ONLY, MAX_ID, Page, page_params
from billing.api.routes_customers import LOCATION, SubscriptionId
from billing.api.schemas import FIRST_DAY, LAST_DAY, OVERRIDE_SCHEMA, OverrideListOut, OverrideOut
from billing.core.overrides import SubscriptionOverride
from pricing_plans.models import Catalog

router = APIRouter(tags=["subscriptions"], responses=ERROR_RESPONSES)

OverrideId = Annotated[int, DIGITS_ONLY, Path(ge=1, le=MAX_ID, description="The version's id.", examples=[1])]


def override_out(override: SubscriptionOverride) -> OverrideOut:
    return OverrideOut.model_validate(service.override_json(override))


@router.get(
    "/v1/subscriptions/{subscription_id}/overrides",
    summary="List a subscription's negotiated prices",
    response_model=OverrideListOut,
    operation_id="listSubscriptionOverrides",
)
def list_overrides(
    subscription_id: SubscriptionId,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    page: Annotated[Page, Depends(page_params)],
) -> OverrideListOut:
    """Every version of the subscription's overrides, by id, a page at a time (the cursors are ids)."""
    after, before = page.ids()
    found, more = service.overrides_page(engine, subscription_id, limit=page.limit, after=after, before=before)
    return OverrideListOut(data=[override_out(o) for o in found], has_more=more)


@router.get(
    "/v1/subscriptions/{subscription_id}/overrides/{override_id}",
    summary="Retrieve one version of a subscription's negotiated prices",
    response_model=OverrideOut,
    operation_id="getSubscriptionOverride",
)
def get_override(
    subscription_id: SubscriptionId,
    override_id: OverrideId,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> OverrideOut:
    """One version, as its ``PUT`` answered it; 404 for an unknown subscription or version."""
    return override_out(service.get_override(engine, subscription_id, override_id))


@router.put(
    "/v1/subscriptions/{subscription_id}/overrides",
    summary="Negotiate a subscription's prices from a date",
    response_model=OverrideOut,
    operation_id="createSubscriptionOverride",
    status_code=201,
    responses={
        **POST_ERROR_RESPONSES,
        200: {"description": "The same tables from the same date were recorded already: that version, unchanged."},
        201: {"description": "A new version, recorded.", "headers": LOCATION},
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": OVERRIDE_SCHEMA}}}},
)
async def put_override(
    subscription_id: SubscriptionId,
    request: Request,
    response: Response,
    engine: Annotated[Engine, Depends(api_engine)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> OverrideOut:
    """Record a version of the subscription's negotiated prices: each of ``subscription``, ``charges`` (by
    meter), ``commitment``, ``thresholds`` given replaces the plan's from ``effective_from`` (a billing-period
    boundary; default: the first period not yet invoiced). Validated as the catalog is: each invalid field is
    named (``charges[0].tiers[1].up_to``). A new version answers 201 with its ``Location``; the same body again
    records nothing new and answers 200 with the version recorded."""
    document, effective_from = _body(await request.body())
    override, created = await run_in_threadpool(
        service.record_override, engine, catalog, subscription_id, document, effective_from
    )
    response.headers["Location"] = f"/v1/subscriptions/{subscription_id}/overrides/{override.id}"
    if not created:
        response.status_code = 200
    return override_out(override)


def _body(raw: bytes) -> tuple[dict[str, Any], dt.date | None]:
    """The override's tables and ``effective_from`` of a PUT body."""
    try:
        document = json.loads(raw, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(422, "invalid_request", f"body: not JSON ({exc})", "body") from None
    except RecursionError:
        raise ApiError(422, "invalid_request", "body: not JSON this server reads (nested too deeply)", "body") from None
    if not isinstance(document, dict):
        raise ApiError(422, "invalid_request", "body: expected a JSON object (the override's tables)", "body")
    effective = document.pop("effective_from", None)
    if effective is None:
        return document, None
    try:
        day = dt.date.fromisoformat(effective) if isinstance(effective, str) else _not_a_date(effective)
    except ValueError:
        raise ApiError(
            422, "invalid_input", f"effective_from: expected a date (YYYY-MM-DD), got {effective!r}", "effective_from"
        ) from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ApiError(
            422, "invalid_input", f"effective_from: expected a date from 1971-01-01 to 9998-12-31, got {effective!r}",
            "effective_from",
        )
    return document, day


def _not_a_date(value: Any) -> dt.date:
    raise ValueError(value)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")
