"""Customers, subscriptions and a customer's usage: ``/v1/customers``, ``/v1/subscriptions``,
``/v1/customers/{id}/usage``. Thin: parse, call ``billing.customers`` / ``billing.preview``, shape. A create
answers 201 with the new resource's ``Location``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Body, Depends, Path, Query, Response
from sqlalchemy import Engine

from billing import customers as service
from billing.api.auth import ApiKey, require_key, require_unbound_key
from billing.api.deps import api_engine, get_catalog
from billing.api.errors import (
    ERROR_RESPONSES,
    POST_ERROR_RESPONSES,
    ApiError,
    body_checked_by,
    input_error,
    not_found,
    unknown_in_body,
)
from billing.api.pagination import DIGITS_ONLY, Page, page_params
from billing.api.schemas import (
    CancelIn,
    CustomerCreatedOut,
    CustomerIn,
    CustomerListOut,
    CustomerOut,
    CustomerPatchIn,
    MeterUsageOut,
    PeriodOut,
    PlanChangeIn,
    PreviewLineOut,
    PreviewOut,
    QuantityIn,
    QuantityOut,
    SubscriptionIn,
    SubscriptionListOut,
    SubscriptionOut,
    TaxOut,
    ThresholdOut,
    UsageOut,
    decimal_text,
)
from billing.core.domain import Customer, Subscription
from billing.core.periods import Period, parse_month, parse_period
from billing.errors import BillingInputError, ConflictError, NotFoundError
from billing.preview import MeterTotal, ThresholdState, customer_usage
from invoices.model import DraftInvoice
from invoices.render import tax_json
from pricing_plans.models import Catalog
from pricing_plans.money import format_amount

router = APIRouter(tags=["customers"], responses=ERROR_RESPONSES)

MAX_ID = 2**63 - 1
MONTH_PATTERN = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$"
"""A month from 1970-01 to 9999-12 (``month_param`` takes 1971 to 9998)."""
CustomerId = Annotated[str, Path(description="The customer's external id.", max_length=255, examples=["acme"])]
SubscriptionId = Annotated[int, DIGITS_ONLY, Path(ge=1, le=MAX_ID, description="The subscription's id.", examples=[1])]


BillingPeriodParam = Annotated[
    str | None,
    Query(
        pattern=r"^([0-9]{4}-[0-9]{2}|[0-9]{4}-W[0-9]{2}|[0-9]{4}-[0-9]{2}-[0-9]{2}\.\.[0-9]{4}-[0-9]{2}-[0-9]{2})$",
        description="A billing period: YYYY-MM, an ISO week YYYY-Www, or START..END (ISO dates, END exclusive); a "
        "month names a subscription's anniversary month ending in it (default: the current period in the "
        "customer's timezone).",
    ),
]


def period_param(value: str, field: str = "period") -> Period:
    """A billing period query parameter (``parse_period``; years 1971 to 9998)."""
    try:
        period = parse_period(value)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", f"{field}: {exc}", field) from None
    if not (period.start.year >= 1971 and period.end.year <= 9998):
        raise ApiError(422, "invalid_request", f"{field}: expected a year from 1971 to 9998, got {value!r}", field)
    return period


def storable_path(value: str, what: str) -> str:
    """A path parameter the database can be asked about; anything else cannot exist (404)."""
    if "\x00" in value or len(value) > 255:
        raise not_found(f"unknown {what}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise not_found(f"unknown {what}") from None
    return value


def month_param(value: str, field: str = "period") -> Period:
    """A ``YYYY-MM`` query parameter as a period (years 1971 to 9998)."""
    try:
        period = parse_month(value)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", f"{field}: {exc}", field) from None
    if not 1971 <= period.start.year <= 9998:
        raise ApiError(422, "invalid_request", f"{field}: expected a year from 1971 to 9998, got {value!r}", field)
    return period


def customer_out(customer: Customer) -> CustomerOut:
    return CustomerOut(
        external_id=customer.external_id,
        name=customer.name,
        email=customer.email,
        currency=customer.currency,
        timezone=customer.timezone,
        locale=customer.locale,
        address=list(customer.address),
        webhook_url=customer.webhook_url,
        tax_rate=decimal_text(customer.tax_rate),
        country=customer.country,
        region=customer.region,
        tax_id=customer.tax_id,
        tax_exempt_reason=customer.tax_exempt_reason,
        archived_at=customer.archived_at,
    )


def subscription_out(subscription: Subscription) -> SubscriptionOut:
    s = subscription
    return SubscriptionOut(
        id=s.id,
        customer=s.customer_external_id,
        plan=s.plan_code,
        plan_version=s.plan_version,
        start_date=s.start_date,
        end_date=s.end_date,
        status=s.status.value,  # type: ignore[arg-type]
        cancel_reason=None if s.cancel_reason is None else s.cancel_reason.value,  # type: ignore[arg-type]
        previous_subscription_id=s.previous_subscription_id,
        quantity=s.latest_quantity,
        quantities=[
            QuantityOut(effective_from=day, quantity=quantity) for day, quantity in s.quantity_schedule
        ],
    )


# -- customers ---------------------------------------------------------------------------------------------

_EXTERNAL_ID = "$response.body#/external_id"  # OpenAPI links: a created customer's id feeds the reads


LOCATION = {"Location": {"description": "The new resource's URL.", "schema": {"type": "string"}}}


def customer_location(external_id: str) -> str:
    return "/v1/customers/" + quote(external_id, safe="")


@router.post(
    "/v1/customers",
    status_code=201,
    summary="Create a customer",
    response_model=CustomerCreatedOut,
    operation_id="createCustomer",
    responses={
        **POST_ERROR_RESPONSES,
        201: {
            "description": "The customer",
            "headers": LOCATION,
            "links": {
                "GetCustomer": {"operationId": "getCustomer", "parameters": {"customer_id": _EXTERNAL_ID}},
                "GetCustomerUsage": {"operationId": "getCustomerUsage", "parameters": {"customer_id": _EXTERNAL_ID}},
            },
        },
    },
)
@body_checked_by(service.field_problems)
def create_customer(
    body: CustomerIn,
    response: Response,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> CustomerCreatedOut:
    """Create a customer. Every invalid field is reported at once, each in ``errors``; an ``external_id`` that
    exists already is a 409 ``already_exists``. With a ``webhook_url``, the answer carries the endpoint's
    ``webhook_secret``: this once, never again."""
    if body.webhook_url is not None:
        try:
            urlsplit(body.webhook_url)
        except ValueError as exc:
            raise ApiError(422, "invalid_input", f"webhook_url: {exc}", "webhook_url") from None
    try:
        customer = service.create_customer(
            engine,
            body.external_id,
            name=body.name,
            email=body.email,
            currency=body.currency,
            timezone=body.timezone,
            locale=body.locale,
            address=body.address,
            webhook_url=body.webhook_url,
            tax_rate=body.tax_rate,
            country=body.country,
            region=body.region,
            tax_id=body.tax_id,
            tax_exempt_reason=body.tax_exempt_reason,
        )
    except ConflictError as exc:
        raise input_error(exc, "external_id", "already_exists") from None
    except BillingInputError as exc:
        raise input_error(exc) from None
    response.headers["Location"] = customer_location(customer.external_id)
    return CustomerCreatedOut(**customer_out(customer).model_dump(), webhook_secret=customer.webhook_secret)


@router.get(
    "/v1/customers", summary="List customers", response_model=CustomerListOut, operation_id="listCustomers"
)
def list_customers(
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    page: Annotated[Page, Depends(page_params)],
) -> CustomerListOut:
    """The customers, by external id, a page at a time (the cursors are external ids)."""
    found, more = service.customers_page(
        engine, limit=page.limit, after=page.starting_after, before=page.ending_before
    )
    return CustomerListOut(data=[customer_out(customer) for customer in found], has_more=more)


@router.get(
    "/v1/customers/{customer_id}", summary="Get a customer", response_model=CustomerOut, operation_id="getCustomer"
)
def get_customer(
    customer_id: CustomerId,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> CustomerOut:
    return customer_out(service.get_customer(engine, storable_path(customer_id, "customer")))


@router.patch(
    "/v1/customers/{customer_id}",
    summary="Update a customer",
    response_model=CustomerCreatedOut,
    operation_id="changeCustomer",
    responses=POST_ERROR_RESPONSES,
)
@body_checked_by(service.field_problems)
def update_customer(
    customer_id: CustomerId,
    body: CustomerPatchIn,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> CustomerCreatedOut:
    """Change the fields given (``null`` clears an optional one); every invalid field is reported at once, each
    in ``errors`` (a tax id that fails its check digits: ``tax_id``). ``archived`` archives the customer (409 while
    a subscription of it is still running) or makes it active again. Issued invoices keep the buyer as it was.
    A new ``webhook_url`` gets a new ``webhook_secret``, in this answer only."""
    customer_id = storable_path(customer_id, "customer")
    changes = body.model_dump(exclude_unset=True)
    archived = changes.pop("archived", None)
    try:  # the changes and the archiving together: a refused request changes nothing
        customer = service.update_customer(engine, customer_id, changes, archived=archived)
    except BillingInputError as exc:
        raise input_error(exc) from None
    secret = customer.webhook_secret if "webhook_url" in changes else None
    return CustomerCreatedOut(**customer_out(customer).model_dump(), webhook_secret=secret)


@router.post(
    "/v1/customers/{customer_id}/webhook_secret/rotate",
    summary="Give the customer's webhook endpoint a new secret",
    response_model=CustomerCreatedOut,
    operation_id="rotateCustomerWebhookSecret",
    responses=POST_ERROR_RESPONSES,
)
def rotate_webhook_secret(
    customer_id: CustomerId,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> CustomerCreatedOut:
    """A new ``webhook_secret`` for the customer's ``webhook_url``, in this answer only (``billing customers
    rotate-webhook-secret``): the old one stops signing at once, and a notification its receiver refuses meanwhile
    is retried with backoff. A customer without a ``webhook_url`` is a 422 (its notifications are signed with the
    service's own secret)."""
    customer = service.rotate_webhook_secret(engine, storable_path(customer_id, "customer"))
    return CustomerCreatedOut(**customer_out(customer).model_dump(), webhook_secret=customer.webhook_secret)


@router.get(
    "/v1/customers/{customer_id}/usage",
    summary="A customer's usage, thresholds and upcoming invoice",
    response_model=UsageOut,
    operation_id="getCustomerUsage",
)
def get_usage(
    customer_id: CustomerId,
    engine: Annotated[Engine, Depends(api_engine)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    key: Annotated[ApiKey, Depends(require_key)],
    period: BillingPeriodParam = None,
) -> UsageOut:
    """The period so far (default: the current calendar month in the customer's timezone): usage per meter, each
    threshold with the levels reached now and those already notified, and a preview of the period's invoice
    rated by the same functions as the billing run. A key bound to another customer gets 404."""
    customer_id = storable_path(customer_id, "customer")
    if key.customer is not None and key.customer != customer_id:
        raise not_found(f"unknown customer {customer_id!r}")
    found = customer_usage(engine, catalog, customer_id, period_param(period) if period else None)
    currency = found.customer.currency
    return UsageOut(
        customer=found.customer.external_id,
        currency=currency,
        timezone=found.customer.timezone,
        period=PeriodOut(start=found.period.start, end=found.period.end),
        label=found.period.label,
        as_of=found.as_of,
        meters=[_meter_out(m) for m in found.meters],
        thresholds=[_threshold_out(t, currency) for t in found.thresholds],
        preview=_preview_out(found.preview, currency),
    )


def _meter_out(meter: MeterTotal) -> MeterUsageOut:
    return MeterUsageOut(
        meter=meter.code,
        name=meter.name,
        unit=meter.unit,
        quantity=decimal_text(meter.usage.quantity),
        events=meter.usage.events,
    )


def _threshold_out(state: ThresholdState, currency: str) -> ThresholdOut:
    """A threshold as the API shows it: a spend limit and value as money, a usage one as a plain number."""
    spec = state.spec
    spend = spec.kind == "spend"
    return ThresholdOut(
        subscription_id=state.subscription_id,
        key=spec.key,
        kind=spec.kind,
        meter=spec.meter,
        limit=format_amount(spec.limit, currency) if spend else decimal_text(spec.limit),
        value=format_amount(state.value, currency) if spend else decimal_text(state.value),
        percent=None if state.percent is None else decimal_text(state.percent),
        levels=list(spec.levels),
        reached=list(state.reached),
        notified=list(state.notified),
    )


def _preview_out(preview: DraftInvoice, currency: str) -> PreviewOut:
    """The upcoming invoice's lines and totals, amounts formatted in the customer's currency."""
    totals = preview.totals
    return PreviewOut(
        currency=currency,
        lines=[
            PreviewLineOut(
                section=line.section,
                kind=line.kind,
                description=line.description,
                meter=line.meter,
                dimension=line.dimension,
                quantity=decimal_text(line.quantity),
                unit=line.unit,
                amount=format_amount(line.amount, currency),
                subscription_id=line.subscription_id,
            )
            for line in preview.lines
        ],
        subtotal=format_amount(totals.subtotal, currency),
        discount=format_amount(totals.discount, currency),
        tax_rate=decimal_text(preview.tax_rate),
        tax=format_amount(totals.tax, currency),
        tax_included=format_amount(totals.tax_included, currency),
        taxes=[TaxOut.model_validate(tax_json(tax, currency)) for tax in preview.tax_lines],
        total=format_amount(totals.total, currency),
    )

# -- subscriptions -----------------------------------------------------------------------------------------


_SUBSCRIPTION_ID = "$response.body#/id"


@router.post(
    "/v1/subscriptions",
    status_code=201,
    summary="Subscribe a customer to a plan",
    response_model=SubscriptionOut,
    operation_id="createSubscription",
    responses={
        **POST_ERROR_RESPONSES,
        201: {
            "description": "The subscription",
            "headers": LOCATION,
            "links": {
                "GetSubscription": {
                    "operationId": "getSubscription", "parameters": {"subscription_id": _SUBSCRIPTION_ID}
                },
                "CancelSubscription": {
                    "operationId": "cancelSubscription", "parameters": {"subscription_id": _SUBSCRIPTION_ID}
                },
            },
        },
    },
    tags=["subscriptions"],
)
def create_subscription(
    body: SubscriptionIn,
    response: Response,
    engine: Annotated[Engine, Depends(api_engine)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> SubscriptionOut:
    """Subscribe ``customer`` to the version of ``plan`` in effect on ``start``, open-ended, with ``quantity``
    seats (above 1 only on a plan priced per seat). A customer may hold several plans at once (add-ons); one
    overlapping a subscription of the customer to the same plan is a 409 ``conflict`` (more of it is more seats).
    """
    try:
        subscription = service.subscribe(engine, catalog, body.customer, body.plan, body.start, body.quantity)
    except NotFoundError as exc:
        raise unknown_in_body(exc, "customer") from None
    response.headers["Location"] = f"/v1/subscriptions/{subscription.id}"
    return subscription_out(subscription)


@router.get(
    "/v1/subscriptions",
    summary="List subscriptions",
    response_model=SubscriptionListOut,
    operation_id="listSubscriptions",
    tags=["subscriptions"],
)
def list_subscriptions(
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    page: Annotated[Page, Depends(page_params)],
    customer: Annotated[str | None, Query(max_length=255, description="A customer's external id.")] = None,
    status: Annotated[Literal["active", "cancelled"] | None, Query(description="Only this status.")] = None,
) -> SubscriptionListOut:
    """The subscriptions, by id, a page at a time (the cursors are ids), of one customer and one status if
    asked."""
    after, before = page.ids()
    found, more = service.subscriptions_page(
        engine,
        limit=page.limit,
        after=after,
        before=before,
        customer=None if customer is None else storable_path(customer, "customer"),
        status=status,
    )
    return SubscriptionListOut(data=[subscription_out(s) for s in found], has_more=more)


@router.get(
    "/v1/subscriptions/{subscription_id}",
    summary="Get a subscription",
    response_model=SubscriptionOut,
    operation_id="getSubscription",
    tags=["subscriptions"],
)
def get_subscription(
    subscription_id: SubscriptionId,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> SubscriptionOut:
    return subscription_out(service.get_subscription(engine, subscription_id))


def _customers_today(engine: Engine, subscription_id: int) -> dt.date:
    """Today in the timezone of the subscription's customer: an action's day when the body gives none."""
    subscription = service.get_subscription(engine, subscription_id)
    customer = service.get_customer(engine, subscription.customer_external_id)
    return dt.datetime.now(ZoneInfo(customer.timezone)).date()


@router.post(
    "/v1/subscriptions/{subscription_id}/cancel",
    summary="Cancel a subscription",
    response_model=SubscriptionOut,
    operation_id="cancelSubscription",
    responses=POST_ERROR_RESPONSES,
    tags=["subscriptions"],
)
def cancel_subscription(
    subscription_id: SubscriptionId,
    engine: Annotated[Engine, Depends(api_engine)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    body: Annotated[CancelIn | None, Body()] = None,
) -> SubscriptionOut:
    """End the subscription on ``date`` (exclusive; default today in the customer's timezone)."""
    body = body or CancelIn()
    end = body.date or _customers_today(engine, subscription_id)
    return subscription_out(service.cancel_subscription(engine, subscription_id, end, body.reason, catalog=catalog))


@router.post(
    "/v1/subscriptions/{subscription_id}/change-plan",
    status_code=201,
    summary="Change a subscription's plan",
    response_model=SubscriptionOut,
    operation_id="changeSubscriptionPlan",
    responses={
        **POST_ERROR_RESPONSES,
        201: {"description": "The new subscription", "headers": LOCATION},
    },
    tags=["subscriptions"],
)
def change_subscription_plan(
    subscription_id: SubscriptionId,
    body: PlanChangeIn,
    response: Response,
    engine: Annotated[Engine, Depends(api_engine)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> SubscriptionOut:
    """Move the subscription to ``plan`` on ``date`` (default: today in the customer's timezone), as ``billing
    subscriptions change`` does: it ends the day before (no churn), and the new subscription, answered with its
    ``Location``, starts on ``date`` with the plan's version in effect then and ``previous_subscription_id``
    naming this one; fees paid in advance are settled on the next invoice. A date inside an invoiced period, or
    the plan and version the subscription has, is a 422; an ended subscription a 409."""
    on = body.date or _customers_today(engine, subscription_id)
    changed = service.change_plan(engine, catalog, subscription_id, body.plan, on)
    response.headers["Location"] = f"/v1/subscriptions/{changed.id}"
    return subscription_out(changed)


@router.post(
    "/v1/subscriptions/{subscription_id}/quantity",
    summary="Change a subscription's seats",
    response_model=SubscriptionOut,
    operation_id="changeSubscriptionQuantity",
    responses=POST_ERROR_RESPONSES,
    tags=["subscriptions"],
)
def change_subscription_quantity(
    subscription_id: SubscriptionId,
    body: QuantityIn,
    engine: Annotated[Engine, Depends(api_engine)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> SubscriptionOut:
    """Give the subscription ``quantity`` seats from ``effective_from`` on (default: today in the customer's
    timezone), as ``billing subscriptions quantity`` does: a date inside an invoiced period is a 422; in advance
    the added seats are charged (removed ones credited) for the rest of the period on the next invoice; in arrears
    each seat is billed for the days it is held."""
    on = body.effective_from or _customers_today(engine, subscription_id)
    return subscription_out(service.change_quantity(engine, catalog, subscription_id, body.quantity, on))
