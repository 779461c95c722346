"""Prepaid credits and the customer's balance, as ``billing credits grant|balance|ledger|low-balance|auto-topup``
does it: ``POST /v1/customers/{customer}/credits/grants``, ``GET …/credits/grants/{grant}``,
``GET …/credits/balance``, ``GET …/credits/ledger``, ``GET`` and ``PUT …/credits/settings/{currency}``. Thin:
parse (amounts as Decimal, never a float), call ``billing.credits``, shape."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from billing import credits as service
from billing.api.auth import ApiKey, require_unbound_key
from billing.api.deps import api_engine, get_api_settings
from billing.api.errors import (
    ERROR_RESPONSES,
    POST_ERROR_RESPONSES,
    ApiError,
    body_checked_by,
    currency_problems,
    not_found,
)
from billing.api.pagination import DIGITS_ONLY, Page, page_params
from billing.api.routes_customers import CustomerId, customer_location, storable_path
from billing.api.schemas import (
    CreditBalanceOut,
    CreditBalancesOut,
    CreditEntryListOut,
    CreditEntryOut,
    CreditGrantIn,
    CreditGrantOut,
    CreditSettingsIn,
)
from billing.config import Settings
from billing.errors import BillingInputError, ConflictError
from billing.invoicing import finalize_settings

router = APIRouter(tags=["credits"], responses=ERROR_RESPONSES)

_FIELDS = {"AMOUNT": "amount", "--currency": "currency", "--expires": "expires", "--priority": "priority"}

GrantId = Annotated[int, DIGITS_ONLY, Path(description="The grant's id.", ge=1, examples=[3])]
Currency = Annotated[str, Path(description="ISO 4217 code.", min_length=3, max_length=3, examples=["USD"])]


def grant_location(customer: str, grant_id: int) -> str:
    return f"{customer_location(customer)}/credits/grants/{grant_id}"


@router.post(
    "/v1/customers/{customer_id}/credits/grants",
    status_code=201,
    summary="Grant prepaid credit to a customer",
    response_model=CreditGrantOut,
    operation_id="createCreditGrant",
    responses={
        **POST_ERROR_RESPONSES,
        201: {
            "description": "The grant",
            "headers": {"Location": {"description": "The grant's URL.", "schema": {"type": "string"}}},
        },
    },
)
@body_checked_by(currency_problems)
async def create_grant(
    customer_id: CustomerId,
    body: CreditGrantIn,
    response: Response,
    engine: Annotated[Engine, Depends(api_engine)],
    settings: Annotated[Settings, Depends(get_api_settings)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> CreditGrantOut:
    """Grant ``amount`` of credit in ``currency``: free, usable at once, or ``paid``: sold on a top-up invoice of
    its own, issued now, and usable once that invoice is paid. Credits pay invoices at finalization, after tax:
    free before paid, then the lower ``priority``, the earliest expiry, the oldest."""
    customer = storable_path(customer_id, "customer")
    try:
        grant = await run_in_threadpool(
            service.grant_credit, engine, customer, Decimal(body.amount), body.currency, paid=body.paid,
            expires=body.expires, priority=body.priority, reason=body.reason, settings=finalize_settings(settings),
        )
    except ConflictError:
        raise
    except BillingInputError as exc:
        # the service names the command's arguments (AMOUNT, --currency): over HTTP they are the body's fields
        message = str(exc)
        for argument, field in _FIELDS.items():
            message = message.replace(argument, field)
        raise ApiError(422, "invalid_input", message, message.partition(":")[0]) from None
    response.headers["Location"] = grant_location(customer, grant.id)
    return CreditGrantOut.model_validate(service.grant_json(grant))


@router.get(
    "/v1/customers/{customer_id}/credits/grants/{grant_id}",
    summary="Get a credit grant",
    response_model=CreditGrantOut,
    operation_id="getCreditGrant",
)
def get_grant(
    customer_id: CustomerId,
    grant_id: GrantId,
    engine: Annotated[Engine, Depends(api_engine)],
    settings: Annotated[Settings, Depends(get_api_settings)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> CreditGrantOut:
    customer = storable_path(customer_id, "customer")
    for balance in service.balance(engine, customer, settings=finalize_settings(settings)):
        for grant in balance.grants:
            if grant.id == grant_id:
                return CreditGrantOut.model_validate(service.grant_json(grant))
    raise not_found(f"customer {customer!r} has no credit grant {grant_id}")


@router.get(
    "/v1/customers/{customer_id}/credits/balance",
    summary="A customer's credit balance",
    response_model=CreditBalancesOut,
    operation_id="getCreditBalance",
)
def get_balance(
    customer_id: CustomerId,
    engine: Annotated[Engine, Depends(api_engine)],
    settings: Annotated[Settings, Depends(get_api_settings)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> CreditBalancesOut:
    """Per currency: free and paid credit, the cash balance, their total, and paid credit waiting for its top-up
    invoice to be paid; each grant with what is left of it; the low-balance level and the automatic top-up."""
    customer = storable_path(customer_id, "customer")
    found = service.balance(engine, customer, settings=finalize_settings(settings))
    return CreditBalancesOut.model_validate(service.balance_json(customer, found))


@router.get(
    "/v1/customers/{customer_id}/credits/settings/{currency}",
    summary="A customer's credit in one currency, with its alert level and automatic top-up",
    response_model=CreditBalanceOut,
    operation_id="getCreditSettings",
)
def get_settings(
    customer_id: CustomerId,
    currency: Currency,
    engine: Annotated[Engine, Depends(api_engine)],
    settings: Annotated[Settings, Depends(get_api_settings)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> CreditBalanceOut:
    """The customer's credit in ``currency`` as ``…/credits/balance`` gives it, with ``low_balance`` and
    ``auto_topup``."""
    customer = storable_path(customer_id, "customer")
    try:
        found = service.balance_in(engine, customer, currency, settings=finalize_settings(settings))
    except BillingInputError as exc:
        raise ApiError(422, "invalid_input", str(exc), "currency") from None
    return _currency_out(customer, found)


@router.put(
    "/v1/customers/{customer_id}/credits/settings/{currency}",
    summary="Set a customer's low-balance alert and automatic top-up in one currency",
    response_model=CreditBalanceOut,
    operation_id="changeCreditSettings",
    responses=POST_ERROR_RESPONSES,
)
async def put_settings(
    customer_id: CustomerId,
    currency: Currency,
    body: CreditSettingsIn,
    engine: Annotated[Engine, Depends(api_engine)],
    settings: Annotated[Settings, Depends(get_api_settings)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
) -> CreditBalanceOut:
    """Replace what is set for the customer's credit in ``currency``: ``low_balance``, the level below which the
    total sends a ``credit.balance_low`` notification (once per fall below it; setting it sends none), and
    ``auto_topup``: a top-up invoice of ``amount`` whenever the paid credit is below ``below`` and no top-up
    invoice is unpaid — issued at once if that is so now. A field left out or null turns it off. The same body
    again changes nothing."""
    customer = storable_path(customer_id, "customer")
    low = None if body.low_balance is None else Decimal(body.low_balance)
    topup = None if body.auto_topup is None else (Decimal(body.auto_topup.below), Decimal(body.auto_topup.amount))
    try:
        found, _ = await run_in_threadpool(
            service.configure, engine, customer, currency, low_balance=low, auto_topup=topup,
            settings=finalize_settings(settings),
        )
    except BillingInputError as exc:
        message = str(exc)  # (it names the body's field)
        raise ApiError(422, "invalid_input", message, message.partition(":")[0]) from None
    return _currency_out(customer, found)


def _currency_out(customer: str, found: service.Balance) -> CreditBalanceOut:
    [document] = service.balance_json(customer, [found])["balances"]
    return CreditBalanceOut.model_validate(document)


@router.get(
    "/v1/customers/{customer_id}/credits/ledger",
    summary="A customer's credit ledger",
    response_model=CreditEntryListOut,
    operation_id="listCreditLedgerEntries",
)
def list_entries(
    customer_id: CustomerId,
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    page: Annotated[Page, Depends(page_params)],
) -> CreditEntryListOut:
    """Every leg of every movement of the customer's credit (grant, application, expiry, reinstatement, void,
    refund), by id, a page at a time (the cursors are entry ids)."""
    customer = storable_path(customer_id, "customer")
    after, before = page.ids()
    found, more = service.entries_page(engine, customer, limit=page.limit, after=after, before=before)
    return CreditEntryListOut(data=[CreditEntryOut.model_validate(service.entry_json(e)) for e in found], has_more=more)
