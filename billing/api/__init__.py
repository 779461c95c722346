"""The HTTP API: FastAPI, OpenAPI published at ``/openapi.json`` (and browsable at ``/docs``).

``create_app(settings)`` builds the application: the routers below, Stripe's webhook router (``routes_stripe``,
which hands verified events to ``billing.stripe.webhooks``), and error handlers that answer every failure as
``{"error": {"code", "message", "field"}}`` (``billing.api.errors``). Every route but the webhook (which Stripe
signs) and ``/healthz`` needs ``Authorization: Bearer <API key>`` (``billing.apikeys``).

    routes_events      POST /v1/events
    routes_customers   POST/GET /v1/customers, GET /v1/customers/{id}, GET /v1/customers/{id}/usage,
                       POST /v1/subscriptions, POST /v1/subscriptions/{id}/cancel
    routes_invoices    GET /v1/invoices, GET /v1/invoices/{id}, GET /v1/invoices/{id}/pdf
    routes_metrics     GET /v1/metrics?period=YYYY-MM

Every request body is limited while it is read (``billing.api.limits``): 32 MiB for ``POST /v1/events``,
1 MiB for every other route, the Stripe webhook included; a larger body is answered 413 ``body_too_large``.

Routes are thin: they parse, call the service layer (``billing.customers``, ``billing.ingestion``,
``billing.invoicing``, ``billing.metrics_store``, ``billing.preview``) and shape the answer.
"""

from __future__ import annotations

from fastapi import FastAPI

from billing.api import routes_customers, routes_events, routes_invoices, routes_metrics
from billing.api.deps import get_api_settings
from billing.api.errors import ApiError, install_error_handlers
from billing.api.limits import DEFAULT_MAX_BODY, BodyLimit
from billing.apikeys import ApiKey, create_api_key, list_api_keys, revoke_api_key
from billing.config import Settings
from billing.db.engines import engine_for_url, get_engine

__all__ = ["ApiError", "ApiKey", "create_api_key", "create_app", "list_api_keys", "revoke_api_key"]

DESCRIPTION = """Usage-based billing: ingest usage events, manage customers and subscriptions, read usage, upcoming
and issued invoices, and revenue figures. Authenticate with `Authorization: Bearer <API key>`
(`billing apikeys create`). Errors are `{"error": {"code", "message", "field"}}`; money is a string with the
currency's minor digits."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API application; ``settings`` (default: the configured ones) name the database and the catalog."""
    app = FastAPI(
        title="Billing engine",
        version="1.0.0",
        description=DESCRIPTION,
        openapi_url="/openapi.json",
    )
    if settings is not None:
        fixed = settings
        app.dependency_overrides[get_api_settings] = lambda: fixed
        app.dependency_overrides[get_engine] = lambda: engine_for_url(fixed.database_url)
    install_error_handlers(app)

    @app.get("/healthz", tags=["service"], summary="Liveness", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    for module in (routes_events, routes_customers, routes_invoices, routes_metrics):
        app.include_router(module.router)
    from billing.api.routes_stripe import MAX_BODY as STRIPE_MAX_BODY
    from billing.api.routes_stripe import router as stripe_router

    app.include_router(stripe_router)
    app.add_middleware(
        BodyLimit,
        default=DEFAULT_MAX_BODY,
        limits={"/v1/events": routes_events.MAX_BODY, "/v1/stripe/webhooks": STRIPE_MAX_BODY},
    )
    return app
