"""``POST /v1/events``: a batch of usage events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from billing.api.auth import ApiKey, require_unbound_key
from billing.api.deps import get_catalog
from billing.api.errors import ERROR_RESPONSES, POST_ERROR_RESPONSES, ApiError
from billing.api.events import BatchError, ingest_events, parse_batch
from billing.api.schemas import EVENT_BATCH_SCHEMA, MAX_BATCH, EventBatchOut, EventResult
from billing.db.engines import get_engine
from pricing_plans.models import Catalog

router = APIRouter(tags=["events"])

MAX_BODY = 32 * 1024 * 1024


@router.post(
    "/v1/events",
    summary="Ingest a batch of usage events",
    response_model=EventBatchOut,
    operation_id="createEvents",
    responses={**ERROR_RESPONSES, **POST_ERROR_RESPONSES},
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": EVENT_BATCH_SCHEMA}}}
    },
)
async def post_events(
    request: Request,
    engine: Annotated[Engine, Depends(get_engine)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> EventBatchOut:
    """Store up to 10,000 events at once. Each event is told apart in the answer, in input order: ``accepted``
    (stored now), ``duplicate`` (its id was stored before with the same content) or ``rejected`` with the
    reason; the good events of a batch are stored even when others are rejected. Sending a batch again is
    safe."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise ApiError(422, "too_many_events", f"body: at most {MAX_BODY // 1024 // 1024} MiB", "body")
    try:
        records = parse_batch(body, MAX_BATCH)
    except BatchError as exc:
        code = "too_many_events" if exc.field == "events" and "at most" in exc.message else "invalid_request"
        raise ApiError(422, code, str(exc), exc.field) from None
    outcome = await run_in_threadpool(ingest_events, engine, catalog, records)
    return EventBatchOut(
        accepted=outcome.accepted,
        duplicates=outcome.duplicates,
        rejected=outcome.rejected,
        events=[
            EventResult(index=e.index, id=e.id, status=e.status, reason=e.reason)  # type: ignore[arg-type]
            for e in outcome.events
        ],
    )
