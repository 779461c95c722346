"""The HTTP API: FastAPI, OpenAPI published at ``/openapi.json`` (and browsable at ``/docs``).

``create_app(settings)`` builds the application: the routers below, Stripe's webhook router (``routes_stripe``,
which hands verified events to ``billing.stripe.webhooks``), and error handlers that answer every failure as an
RFC 9457 problem, ``application/problem+json`` (``billing.api.errors``). Every route but the webhook (which
Stripe signs), ``/healthz`` and ``/problems/{code}`` needs ``Authorization: Bearer <API key>``
(``billing.apikeys``).

    routes_events           POST /v1/events
    routes_customers        POST/GET /v1/customers, GET /v1/customers/{id}, GET /v1/customers/{id}/usage,
                            POST/GET /v1/subscriptions, GET /v1/subscriptions/{id}, POST /v1/subscriptions/{id}/cancel
    routes_entitlements     GET /v1/customers/{id}/entitlements, GET /v1/customers/{id}/entitlements/{meter}
    routes_overrides        GET/PUT /v1/subscriptions/{id}/overrides
    routes_coupons          POST/GET /v1/coupons, GET /v1/coupons/{code}, POST /v1/coupons/{code}/issue, …/apply
    routes_credits          POST /v1/customers/{id}/credits/grants, GET …/credits/balance, …/credits/ledger
    routes_payments         POST /v1/invoices/{id}/payments, GET /v1/payments, POST /v1/payments/{id}/reverse,
                            GET /v1/receivables/aging
    routes_plans            GET /v1/plans, GET /v1/plans/{code}
    routes_invoices         GET /v1/invoices, GET /v1/invoices/{id}, GET /v1/invoices/{id}/pdf
    routes_invoice_actions  POST /v1/invoices/{id}/finalize, …/void, …/credit-notes
    routes_approvals        GET /v1/invoices/pending-approval, POST /v1/invoices/{id}/approve,
                            GET/PUT /v1/customers/{id}/review
    routes_runs             POST /v1/billing-runs
    routes_metrics          GET /v1/metrics?period=YYYY-MM
    routes_portal           POST /v1/customers/{id}/portal_links (a signed link to the customer portal)

The conventions every route keeps:

- lists are ``{"data": [...], "has_more": ...}`` with ``limit``, ``starting_after`` and ``ending_before``
  (``billing.api.pagination``); a query parameter a route does not take is a 400;
- a ``POST`` or ``PUT`` with an ``Idempotency-Key`` runs once; a retry gets the first answer
  (``billing.api.idempotency``);
- a create answers 201 with the new resource's ``Location``;
- every request body is limited while it is read (``billing.api.limits``): 32 MiB for ``POST /v1/events``,
  1 MiB for every other route, the Stripe webhook included; a larger body is answered 413 ``body_too_large``.

Routes are thin: they parse, call the service layer (``billing.customers``, ``billing.ingestion``,
``billing.invoicing``, ``billing.run``, ``billing.metrics_store``, ``billing.preview``) and shape the answer.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Engine
from starlette.types import Message, Receive, Scope, Send

from billing.api import (
    errors,
    routes_approvals,
    routes_coupons,
    routes_credits,
    routes_customers,
    routes_entitlements,
    routes_events,
    routes_invoice_actions,
    routes_invoices,
    routes_limits,
    routes_metrics,
    routes_notifications,
    routes_overrides,
    routes_payments,
    routes_plans,
    routes_portal,
    routes_runs,
    schemas,
)
from billing.api.deps import api_engine
from billing.api.errors import HEAD_REQUEST, PROBLEMS, ApiError, install_error_handlers, not_found, problem_openapi
from billing.api.idempotency import HEADER, REPLAYED_HEADER, Idempotency
from billing.api.limits import DEFAULT_MAX_BODY, BodyLimit, require_json_body
from billing.api.pagination import reject_unknown_query
from billing.apikeys import ApiKey, create_api_key, list_api_keys, revoke_api_key
from billing.config import Settings, get_settings
from billing.db.engines import engine_for_url, get_engine

__all__ = ["ApiError", "ApiKey", "create_api_key", "create_app", "list_api_keys", "revoke_api_key"]

DESCRIPTION = """Usage-based billing: ingest usage events, manage customers and subscriptions, read plans, usage,
upcoming and issued invoices, run billing, finalize, void and credit invoices, and read revenue figures.

- **Authentication**: `Authorization: Bearer <API key>` (`billing apikeys create`).
- **Errors**: RFC 9457 problems, `application/problem+json`: `type`, `title`, `status`, `detail`, a stable `code`,
  and `errors`, every invalid field with its message.
- **Lists**: `{"data": [...], "has_more": bool}`; `limit` (default 100, at most 1000), `starting_after`,
  `ending_before` (ids of the list's items). A query parameter a route does not take is a 400.
- **Idempotency**: a `POST` with `Idempotency-Key: <key>` runs once; the same key and request within 24 hours
  get the first answer again (`Idempotent-Replayed: true`), the same key with another request a 409.
- **Creates** answer 201 with the new resource's `Location`.
- **Money** is a string with the currency's minor digits (`"49.00"`, `"1500"` for JPY)."""


def _with_examples(document: dict[str, Any]) -> dict[str, Any]:
    """The document with each schema's examples exactly as its model states them: FastAPI leaves out every null
    when it writes the document, which would drop the null fields of an example (``"end_date": null``)."""
    from billing.api import routes_stripe

    models = {
        name: value
        for module in (schemas, errors, routes_stripe)
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, BaseModel)
    }
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        extra = models[name].model_config.get("json_schema_extra") if name in models else None
        if isinstance(extra, dict) and "examples" in extra:
            schema["examples"] = jsonable_encoder(extra["examples"])
    return document


_EVENT_BATCH_EXAMPLE = {
    "events": [
        {"id": "evt-1", "customer": "acme", "meter": "api_calls", "timestamp": "2026-10-05T12:00:00Z"},
        {"id": "evt-2", "customer": "acme", "meter": "storage_gb", "timestamp": "2026-10-05T12:00:00Z",
         "value": "12.5", "properties": {"region": "eu"}},
    ]
}


def _with_event_batch(document: dict[str, Any]) -> dict[str, Any]:
    """The body of ``POST /v1/events`` (a JSON schema its route reads by itself) as the component
    ``EventBatchIn``, with its examples, as every other body is."""
    schemas_ = document.setdefault("components", {}).setdefault("schemas", {})
    schemas_["EventBatchIn"] = {
        **schemas.EVENT_BATCH_SCHEMA,
        "title": "EventBatchIn",
        "description": "Up to 10,000 usage events, each told apart in the answer.",
        "examples": [_EVENT_BATCH_EXAMPLE],
    }
    body = document["paths"][routes_events.PATH]["post"]["requestBody"]["content"]["application/json"]
    body["schema"] = {"$ref": "#/components/schemas/EventBatchIn"}
    return document


_IDEMPOTENCY_KEY = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "description": "Runs the request once: the same key and request within 24 hours get the first answer again "
    f"(with `{REPLAYED_HEADER}: true`), the same key with another request a 409 `idempotency_key_reused`.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "example": "4f9d2c1e-6b1a-4c8e-9a57-0f3d2b7e8a10",
}
STRIPE_WEBHOOKS = "/v1/stripe/webhooks"
_REPLAYED = {"description": "`true` on an answer given again for an Idempotency-Key.", "schema": {"type": "string"}}


def _with_idempotency(document: dict[str, Any]) -> dict[str, Any]:
    """Every ``POST`` and ``PUT`` an API key sends takes an ``Idempotency-Key`` header, and the answers a key
    keeps (a success, an engine's refusal) may say they are replayed."""
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in ("post", "put") or path == STRIPE_WEBHOOKS:  # (Stripe's signature, not an API key)
                continue
            operation["parameters"] = [*operation.get("parameters", []), _IDEMPOTENCY_KEY]
            answers = operation.get("responses", {})
            for status, answer in answers.items():
                if status[0] == "2" or status in ("404", "409", "422"):  # (the answers a key keeps)
                    answers[status] = {**answer, "headers": {**answer.get("headers", {}), REPLAYED_HEADER: _REPLAYED}}
    return document


class _Api(FastAPI):
    """The API: ``POST /v1/events`` without an ``Idempotency-Key`` is answered by its lean path
    (``routes_events.serve_events``) before the middleware and the routing; every other request goes through
    them."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if routes_events.takes(scope):
            settings: Settings | None = self.state.settings
            await routes_events.serve_events(
                scope, receive, send, settings or get_settings(), lambda: _app_engine(self)
            )
            return
        if scope["type"] == "http" and scope["method"] == "HEAD":
            as_get, headers_only = _as_get(scope, send)
            await super().__call__(as_get, receive, headers_only)
            return
        await super().__call__(scope, receive, send)


def _as_get(scope: Scope, send: Send) -> tuple[Scope, Send]:
    """A ``HEAD`` request answered as its ``GET`` (RFC 9110 9.3.2): the same status and headers, the
    ``Content-Length`` of the body it would have had, no body. (The routes take ``GET`` only: a route of both
    would list each operation twice in the OpenAPI document.)"""

    async def headers_only(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return {**scope, "method": "GET", HEAD_REQUEST: True}, headers_only


def _app_engine(app: FastAPI) -> Engine:
    """The engine the app's routes use (the one ``api_engine`` gives, or its override)."""
    override = app.dependency_overrides.get(api_engine)  # (an app that overrides the routes' engine)
    if override is not None:
        return override()  # type: ignore[no-any-return]
    settings: Settings | None = app.state.settings
    return engine_for_url(settings.database_url) if settings is not None else get_engine()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API application; ``settings`` (default: the configured ones) name the database and the catalog."""
    app = _Api(
        title="Billing engine",
        version="1.0.0",
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        dependencies=[Depends(reject_unknown_query), Depends(require_json_body)],
    )
    app.state.settings = settings  # None: the configured settings (billing.api.deps)
    install_error_handlers(app)
    _add_service_routes(app)
    _add_routers(app)
    _add_web(app)
    _install_openapi(app)
    _add_middleware(app)
    return app


def _add_service_routes(app: FastAPI) -> None:
    """The routes outside the documented API: liveness, and what each problem ``type`` names."""

    @app.get("/healthz", tags=["service"], summary="Liveness", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/problems/{code}", include_in_schema=False)
    def problem_type(code: str) -> JSONResponse:
        """What a problem's ``type`` names: its status, title and when it happens."""
        kind = PROBLEMS.get(code)
        if kind is None:
            raise not_found(f"no problem type {code!r}")
        return JSONResponse(
            {"type": f"/problems/{code}", "code": code, "status": kind.status, "title": kind.title,
             "description": kind.description}
        )


def _add_routers(app: FastAPI) -> None:
    """The API's routes, resource by resource, the Stripe webhooks last."""
    for module in (
        routes_events,
        routes_customers,
        routes_entitlements,
        routes_limits,
        routes_plans,
        routes_approvals,  # before routes_invoices: /v1/invoices/pending-approval is not an invoice's id
        routes_invoices,
        routes_invoice_actions,
        routes_overrides,
        routes_coupons,
        routes_credits,
        routes_payments,
        routes_portal,
        routes_runs,
        routes_metrics,
        routes_notifications,
    ):
        app.include_router(module.router)
    from billing.api.routes_stripe import router as stripe_router

    app.include_router(stripe_router)


def _add_web(app: FastAPI) -> None:
    """The web pages served beside the API: the customer portal and the finance console (``billing.web``)."""
    from billing.web import install

    install(app)


def _install_openapi(app: FastAPI) -> None:
    """The OpenAPI document, built once on first request: the problem responses and the examples added."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            app.openapi_schema = _with_idempotency(_with_event_batch(_with_examples(problem_openapi(document))))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_middleware(app: FastAPI) -> None:
    """The idempotency keys, and the body limits outside them, on the engine the app's dependencies name."""
    from billing.api.routes_stripe import MAX_BODY as STRIPE_MAX_BODY

    # Outermost last: the body is bounded before the idempotency keys read it.
    app.add_middleware(Idempotency, engine=lambda: _app_engine(app))
    app.add_middleware(
        BodyLimit,
        default=DEFAULT_MAX_BODY,
        limits={"/v1/events": routes_events.MAX_BODY, "/v1/stripe/webhooks": STRIPE_MAX_BODY},
    )
