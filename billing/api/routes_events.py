"""``POST /v1/events``: a batch of usage events."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from billing.api.auth import ApiKey, require_key, require_unbound_key
from billing.api.deps import api_engine, get_api_settings, get_catalog
from billing.api.errors import ERROR_RESPONSES, POST_ERROR_RESPONSES, ApiError
from billing.api.events import BatchError, BatchWriter, outcome_json, parse_batch
from billing.api.pagination import refuse_unknown_query
from billing.api.schemas import EVENT_BATCH_SCHEMA, MAX_BATCH, EventBatchOut
from pricing_plans.models import Catalog

router = APIRouter(tags=["events"])

MAX_BODY = 32 * 1024 * 1024
INLINE_PARSE = 64 * 1024  # a larger body is parsed off the event loop, which serves the other requests meanwhile
WRITER = BatchWriter(MAX_BATCH)


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
    engine: Annotated[Engine, Depends(api_engine)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> Response:
    """Store up to 10,000 events at once. Each event is told apart in the answer, in input order: ``accepted``
    (stored now), ``duplicate`` (its id was stored before with the same content) or ``rejected`` with the
    reason; the good events of a batch are stored even when others are rejected. Sending a batch again is
    safe. Batches that arrive together are stored in one transaction (``billing.api.events.BatchWriter``)."""
    return await _store(request, engine, catalog)


async def events_endpoint(request: Request) -> Response:
    """``POST /v1/events`` as served: what :func:`post_events` declares (and the OpenAPI document shows), checked
    in the same order and answered alike, without FastAPI's dependency solving, which costs more than storing an
    event: the path a product calls on every request stays short. Errors are raised as the routes raise them and
    answered by the app's error handlers."""
    refuse_unknown_query(request, "/v1/events", frozenset())
    settings = await get_api_settings(request)
    engine = await api_engine(settings)
    catalog = await get_catalog(settings)
    scheme, credentials = get_authorization_scheme_param(request.headers.get("authorization"))
    bearer = HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials) if (
        scheme and credentials and scheme.lower() == "bearer"
    ) else None
    await require_unbound_key(await require_key(engine, bearer))
    return await _store(request, engine, catalog)


FAST_ROUTE = Route("/v1/events", events_endpoint, methods=["POST"], include_in_schema=False)
"""Mounted ahead of the API's routes (``billing.api.create_app``)."""


async def _store(request: Request, engine: Engine, catalog: Catalog) -> Response:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise ApiError(422, "too_many_events", f"body: at most {MAX_BODY // 1024 // 1024} MiB", "body")
    try:
        if len(body) <= INLINE_PARSE:
            records = parse_batch(body, MAX_BATCH)
        else:
            records = await run_in_threadpool(parse_batch, body, MAX_BATCH)
    except BatchError as exc:
        code = "too_many_events" if exc.field == "events" and "at most" in exc.message else "invalid_request"
        raise ApiError(422, code, str(exc), exc.field) from None
    outcome = await asyncio.wrap_future(WRITER.submit(engine, catalog, records))
    return Response(outcome_json(outcome), media_type="application/json")
