"""``POST /v1/stripe/webhooks``: the body is verified against its ``Stripe-Signature`` and the secret in the
``stripe_webhook_secret`` setting (``STRIPE_WEBHOOK_SECRET``); a missing or bad signature, a signature timestamp
more than five minutes from the server's clock (older, as a replayed delivery is, or newer, as no delivery from
Stripe can be) or a body that is not an event is answered 400 with a problem (``billing.api.errors.Problem``:
``code`` says which) and changes nothing. A verified event goes to ``billing.stripe.webhooks.handle_event``.

Anyone can post here, so the body is bounded before anything else is done with it: at most
:data:`MAX_BODY` bytes (Stripe's events are a few kilobytes) are read, a larger declared or received body is
answered 413 ``body_too_large`` without being read further, decoded or verified.
"""

from __future__ import annotations

import functools
from typing import Annotated

import stripe
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from billing.api.deps import api_engine, get_api_settings, get_catalog
from billing.api.errors import ApiError, Problem, field_of
from billing.api.limits import BodyTooLarge, read_body
from billing.config import Settings
from billing.errors import BillingInputError
from billing.stripe.webhooks import handle_event
from dbkit import utcnow
from pricing_plans.models import Catalog

__all__ = ["MAX_BODY", "SIGNATURE_TOLERANCE_SECONDS", "receive_stripe_webhook", "router"]

SIGNATURE_TOLERANCE_SECONDS = 300
"""How far a signature's timestamp may be from now, either way, in seconds (Stripe's own default)."""

MAX_BODY = 1024 * 1024
"""The largest body read, in bytes: Stripe's events are far smaller."""


class WebhookReceipt(BaseModel):
    """The answer to a verified event: acknowledged, with what processing it did."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"received": True, "event_id": "evt_1Q2w3E4r", "outcome": "invoice_paid"}]}
    )

    received: bool = True
    event_id: str
    outcome: str


router = APIRouter(tags=["stripe"])


async def _catalog_if_readable(settings: Annotated[Settings, Depends(get_api_settings)]) -> Catalog | None:
    """The server's catalog, or None when it cannot be read (logged by ``get_catalog``): Stripe's events are
    processed anyway (a subscription cancelled for a failed collection then keeps its opening draft, if any, unless
    it covers no day)."""
    try:
        return await get_catalog(settings)
    except ApiError:
        return None


def _error(status: int, code: str, message: str) -> JSONResponse:
    """A problem, as the API answers every error; the field is what the message starts with
    (``Stripe-Signature``, ``body``)."""
    return ApiError(status, code, message, field_of(message)).response()


@router.post(
    "/v1/stripe/webhooks",
    summary="Receive a Stripe webhook event",
    response_model=WebhookReceipt,
    operation_id="receiveStripeWebhook",
    responses={
        400: {"model": Problem, "description": "A missing or bad signature, or a body that is not an event"},
        413: {"model": Problem, "description": "Body too large"},
        500: {"model": Problem, "description": "The webhook secret is not set on the server"},
    },
)
async def receive_stripe_webhook(
    request: Request,
    engine: Annotated[Engine, Depends(api_engine)],
    settings: Annotated[Settings, Depends(get_api_settings)],
    catalog: Annotated[Catalog | None, Depends(_catalog_if_readable)],
    stripe_signature: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Verify the ``Stripe-Signature`` of the raw body and process the event once."""
    if not stripe_signature:
        return _error(400, "missing_signature", "Stripe-Signature: header required")
    secret = settings.secret("stripe_webhook_secret")
    if not secret:
        return _error(500, "webhook_secret_missing", "STRIPE_WEBHOOK_SECRET is not set on the server")
    try:
        body = await read_body(request, MAX_BODY)
    except BodyTooLarge as exc:
        return _error(413, "body_too_large", str(exc.detail))
    try:
        payload = body.decode("utf-8")
    except UnicodeDecodeError:
        return _error(400, "invalid_payload", "body: expected a Stripe event as UTF-8 JSON")
    try:
        stripe.WebhookSignature.verify_header(payload, stripe_signature, secret, tolerance=None)
    except stripe.SignatureVerificationError:
        return _error(400, "invalid_signature", "Stripe-Signature: does not match the body and the webhook secret")
    skew = _signed_at(stripe_signature) - int(utcnow().timestamp())  # whole seconds, as the timestamp is
    if skew < -SIGNATURE_TOLERANCE_SECONDS:
        return _error(
            400,
            "stale_timestamp",
            f"Stripe-Signature: the timestamp is more than {SIGNATURE_TOLERANCE_SECONDS} seconds old",
        )
    if skew > SIGNATURE_TOLERANCE_SECONDS:
        return _error(
            400,
            "future_timestamp",
            f"Stripe-Signature: the timestamp is more than {SIGNATURE_TOLERANCE_SECONDS} seconds ahead of the "
            "server's clock",
        )
    try:
        # Verified above (and again here, without a tolerance): what is left to fail is the body itself.
        event = stripe.Webhook.construct_event(payload, stripe_signature, secret, tolerance=None)
    except (ValueError, TypeError, AttributeError):  # signed, but not JSON, or JSON that is not an object
        return _error(400, "invalid_payload", "body: expected a Stripe event (a JSON object)")
    try:
        outcome = await run_in_threadpool(functools.partial(handle_event, engine, event, catalog=catalog))
    except BillingInputError as exc:
        return _error(400, "invalid_payload", f"body: {exc}")
    receipt = WebhookReceipt(event_id=str(event.to_dict().get("id")), outcome=str(outcome))
    return JSONResponse(status_code=200, content=receipt.model_dump())


def _signed_at(header: str) -> int:
    """The timestamp (``t=``) of a ``Stripe-Signature`` header that verified, so it has one, read as the SDK read
    it to verify (``t=1796176737=x`` is 1796176737, not an error)."""
    for item in header.split(","):
        parts = item.split("=", 2)
        if parts[0] == "t" and len(parts) > 1:
            return int(parts[1])
    raise ValueError("Stripe-Signature: no timestamp")  # unreachable once the signature verified
