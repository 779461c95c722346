"""Coupons: ``POST /v1/coupons``, ``GET /v1/coupons``, ``GET /v1/coupons/{code}``, ``POST /v1/coupons/{code}/issue``
and ``POST /v1/coupons/{code}/apply``. Thin: parse, call ``billing.coupons``, shape."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from billing import coupons as service
from billing.api.auth import ApiKey, require_unbound_key
from billing.api.deps import api_engine, get_catalog
from billing.api.errors import ERROR_RESPONSES, POST_ERROR_RESPONSES, body_checked_by, input_error, unknown_in_body
from billing.api.pagination import Page, page_params, paginate
from billing.api.routes_customers import LOCATION
from billing.api.schemas import CouponCustomerIn, CouponHolderOut, CouponIn, CouponListOut, CouponOut
from billing.errors import BillingInputError, NotFoundError
from pricing_plans.models import Catalog

router = APIRouter(tags=["coupons"], responses=ERROR_RESPONSES)

CouponCode = Annotated[str, Path(description="The coupon's code.", max_length=64, examples=["SPRING"])]


def coupon_location(code: str) -> str:
    return "/v1/coupons/" + quote(code, safe="")


def coupon_out(stats: service.CouponStats, *, holders: bool = False) -> CouponOut:
    document = service.coupon_json(stats.coupon, stats)
    if holders:
        document["customers"] = [service.holder_json(stats.coupon.code, h) for h in stats.holders]
    return CouponOut.model_validate(document)


def coupon_problems(given: Mapping[str, Any], refused: frozenset[str]) -> list[str]:
    """The problems ``parse_coupon`` finds in the fields of a coupon's body that are ``given`` (as sent), the fields
    ``refused`` for other reasons taken as some valid value (a refused ``amount_off`` is an amount off: its
    currency is not out of place), for the answer that refuses the body for those too."""
    fields = {**{name: _STAND_IN[name] for name in refused if name in _STAND_IN}, **given}
    if "duration" in refused:
        fields["duration"] = "once" if fields.get("months") is None else "repeating"
    expires = fields.get("expires_on")
    try:
        service.parse_coupon(
            str(fields.get("code", "X")),
            percent=None if fields.get("percent_off") is None else str(fields["percent_off"]),
            amount=None if fields.get("amount_off") is None else str(fields["amount_off"]),
            currency=fields.get("currency"),
            duration=str(fields.get("duration", "once")),
            months=fields.get("months"),
            plans=fields.get("plans", ()),
            max_redemptions=fields.get("max_redemptions"),
            expires_on=dt.date.fromisoformat(expires) if isinstance(expires, str) else None,
        )
    except BillingInputError as exc:
        return [problem for problem in exc.problems if re.split(r"[:.\[]", problem, maxsplit=1)[0] in given]
    return []


_STAND_IN: dict[str, Any] = {"code": "X", "percent_off": "1", "amount_off": "1", "currency": "USD", "months": 1}


@router.post(
    "/v1/coupons",
    status_code=201,
    summary="Create a coupon",
    response_model=CouponOut,
    operation_id="createCoupon",
    responses={**POST_ERROR_RESPONSES, 201: {"description": "The coupon", "headers": LOCATION}},
)
@body_checked_by(coupon_problems)
def create_coupon(
    body: CouponIn,
    response: Response,
    engine: Annotated[Engine, Depends(api_engine)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> CouponOut:
    """Create a coupon: a percentage or an amount off, ``once``, ``repeating`` (for ``months`` billing periods)
    or ``forever``. Every invalid field is reported at once; a code that exists already is a 409
    ``already_exists``."""
    try:
        coupon = service.parse_coupon(
            body.code,
            percent=None if body.percent_off is None else str(body.percent_off),
            amount=None if body.amount_off is None else str(body.amount_off),
            currency=body.currency,
            duration=body.duration,
            months=body.months,
            plans=body.plans,
            max_redemptions=body.max_redemptions,
            expires_on=body.expires_on,
        )
        created = service.create_coupon(engine, catalog, coupon)
    except BillingInputError as exc:
        raise input_error(exc, "code", "already_exists" if "exists already" in str(exc) else None) from None
    response.headers["Location"] = coupon_location(created.code)
    return coupon_out(service.CouponStats(created), holders=True)  # (as GET answers it: no holders yet)


@router.get("/v1/coupons", summary="List coupons", response_model=CouponListOut, operation_id="listCoupons")
def list_coupons(
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    page: Annotated[Page, Depends(page_params)],
) -> CouponListOut:
    """The coupons by code, a page at a time (the cursors are codes), each with its counts."""
    found, more = paginate(service.list_coupons(engine), lambda s: s.coupon.code, page)
    return CouponListOut(data=[coupon_out(s) for s in found], has_more=more)


@router.get("/v1/coupons/{code}", summary="Get a coupon", response_model=CouponOut, operation_id="getCoupon")
def get_coupon(
    code: CouponCode,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> CouponOut:
    """A coupon and the customers holding it."""
    return coupon_out(service.get_coupon(engine, code), holders=True)


async def _hand(action: str, code: str, body: CouponCustomerIn, response: Response, engine: Engine) -> CouponHolderOut:
    act = service.issue_coupon if action == "issue" else service.apply_coupon
    try:
        held = await run_in_threadpool(act, engine, code, body.customer)
    except NotFoundError as exc:
        raise unknown_in_body(exc, "customer") from None
    except BillingInputError as exc:
        raise input_error(exc) from None
    response.headers["Location"] = coupon_location(code)
    return CouponHolderOut.model_validate(service.holder_json(code, held))


@router.post(
    "/v1/coupons/{code}/issue",
    status_code=201,
    summary="Issue a coupon to a customer",
    response_model=CouponHolderOut,
    operation_id="issueCoupon",
    responses={**POST_ERROR_RESPONSES, 201: {"description": "The customer's coupon", "headers": LOCATION}},
)
async def issue_coupon(
    code: CouponCode,
    body: CouponCustomerIn,
    response: Response,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> CouponHolderOut:
    """Hand the coupon to a customer; it reduces nothing until it is applied. 409 if the customer holds it
    already; 422 once it has expired."""
    return await _hand("issue", code, body, response, engine)


@router.post(
    "/v1/coupons/{code}/apply",
    status_code=201,
    summary="Apply a coupon to a customer's subscriptions",
    response_model=CouponHolderOut,
    operation_id="applyCoupon",
    responses={**POST_ERROR_RESPONSES, 201: {"description": "The customer's coupon", "headers": LOCATION}},
)
async def apply_coupon(
    code: CouponCode,
    body: CouponCustomerIn,
    response: Response,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> CouponHolderOut:
    """Apply the coupon to the customer's subscriptions from the next billing period (issuing it if needed). 409
    if it is applied already or has reached its maximum of redemptions; 422 once it has expired or for an amount
    in another currency than the customer's."""
    return await _hand("apply", code, body, response, engine)
