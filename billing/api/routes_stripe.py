"""``POST /v1/stripe/webhooks``: the body is verified with ``stripe.Webhook.construct_event`` and the secret in
``STRIPE_WEBHOOK_SECRET``; a missing or bad signature, a timestamp more than five minutes old or a body that is
not an event is answered 400 with ``{"error": {"code": …, "message": …}}`` and changes nothing. A verified event
goes to ``billing.stripe.webhooks.handle_event``.
"""

from __future__ import annotations

import os
from typing import Annotated

import stripe
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from billing.db.engines import get_engine
from billing.errors import BillingInputError
from billing.stripe.webhooks import handle_event

__all__ = ["SIGNATURE_TOLERANCE_SECONDS", "receive_stripe_webhook", "router"]

SIGNATURE_TOLERANCE_SECONDS = 300


class WebhookReceipt(BaseModel):
    """The answer to a verified event: acknowledged, with what processing it did."""

    received: bool = True
    event_id: str
    outcome: str


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


router = APIRouter(tags=["stripe"])


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


@router.post(
    "/v1/stripe/webhooks",
    summary="Receive a Stripe webhook event",
    response_model=WebhookReceipt,
    responses={400: {"model": ErrorResponse}, 500: {"model": ErrorResponse}},
)
async def receive_stripe_webhook(
    request: Request,
    engine: Annotated[Engine, Depends(get_engine)],
    stripe_signature: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Verify the ``Stripe-Signature`` of the raw body and process the event once."""
    if not stripe_signature:
        return _error(400, "missing_signature", "Stripe-Signature: header required")
    secret = os.environ.get("STRIPE_WEBHOOK_SECRET", "").strip()
    if not secret:
        return _error(500, "webhook_secret_missing", "STRIPE_WEBHOOK_SECRET is not set on the server")
    body = await request.body()
    try:
        payload = body.decode("utf-8")
    except UnicodeDecodeError:
        return _error(400, "invalid_payload", "body: expected a Stripe event as UTF-8 JSON")
    try:
        event = stripe.Webhook.construct_event(
            payload, stripe_signature, secret, tolerance=SIGNATURE_TOLERANCE_SECONDS
        )
    except stripe.SignatureVerificationError:
        if _signature_matches(payload, stripe_signature, secret):
            return _error(
                400,
                "stale_timestamp",
                f"Stripe-Signature: the timestamp is more than {SIGNATURE_TOLERANCE_SECONDS} seconds old",
            )
        return _error(400, "invalid_signature", "Stripe-Signature: does not match the body and the webhook secret")
    except (ValueError, TypeError, AttributeError):  # signed, but not JSON, or JSON that is not an object
        return _error(400, "invalid_payload", "body: expected a Stripe event (a JSON object)")
    try:
        outcome = await run_in_threadpool(handle_event, engine, event)
    except BillingInputError as exc:
        return _error(400, "invalid_payload", f"body: {exc}")
    receipt = WebhookReceipt(event_id=str(event.to_dict().get("id")), outcome=str(outcome))
    return JSONResponse(status_code=200, content=receipt.model_dump())


def _signature_matches(payload: str, header: str, secret: str) -> bool:
    """Whether the signature is right, whatever its age (to tell a stale delivery from a forged one)."""
    try:
        stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=None)
    except stripe.SignatureVerificationError:
        return False
    return True
