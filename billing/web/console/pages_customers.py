"""Customers: ``GET /console/customers`` (a page at a time, or one by id) and ``GET /console/customers/{id}``:
its details (edit: ``POST /console/customers/{id}``), review flag (``…/review``), subscriptions (subscribe:
``…/subscriptions``; seats: ``POST /console/subscriptions/{id}/quantity``; negotiated prices:
``GET/POST /console/subscriptions/{id}/overrides``), coupons (``…/coupons``), credits (balance, ledger, grant:
``…/credits``) and its portal links (end them all: ``…/portal/revoke``). Each form calls the service the CLI's
command calls (``billing.customers``, ``billing.overrides``, ``billing.coupons``, ``billing.credits``,
``billing.approval``, ``billing.portal_links``)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Engine

from billing import approval, coupons, credits, customers, invoicing, overrides, portal_links
from billing.config import Settings
from billing.customers import UPDATABLE_FIELDS
from billing.errors import BillingInputError, NotFoundError
from billing.payments import parse_amount
from billing.staff import StaffSession
from billing.web.console.base import (
    PREFIX,
    Form,
    Id,
    act,
    console_catalog,
    console_engine,
    console_settings,
    current_staff,
    date_field,
    int_field,
    posted_form,
    render,
    required_once,
)
from pricing_plans.loader import loads_override
from pricing_plans.models import Catalog

__all__ = ["router"]

router = APIRouter()
PAGE = 50
TEXT_FIELDS = tuple(name for name in UPDATABLE_FIELDS if name != "address")


def customer_path(external_id: str) -> str:
    """The console path of a customer's page (its id encoded whole: ``a?b`` is not customer ``a``)."""
    return f"/customers/{quote(external_id, safe='')}"


@router.get("/customers", include_in_schema=False)
def customers_page(
    request: Request,
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
    q: str = "",
    after: str | None = None,
    before: str | None = None,
) -> Response:
    q = q.strip()
    if q:
        try:
            found = customers.get_customer(engine, q)
            return RedirectResponse(PREFIX + customer_path(found.external_id), status_code=303)
        except NotFoundError:
            pass
    listed, more = customers.customers_page(engine, limit=PAGE, after=after, before=before)
    return render(
        request, "customers.html", engine, title="Customers", section="customers", customers=listed, more=more,
        q=q, after=after, before=before, missing=bool(q),
    )  # fmt: skip


@router.get("/customers/{external_id}", include_in_schema=False)
def customer_page(
    request: Request,
    external_id: str,
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
    catalog: Annotated[Catalog, Depends(console_catalog)],
    settings: Annotated[Settings, Depends(console_settings)],
) -> Response:
    customer = customers.get_customer(engine, external_id)
    every_coupon = coupons.list_coupons(engine)
    held = [
        (stats.coupon, holder)
        for stats in every_coupon
        for holder in stats.holders
        if holder.customer == customer.external_id
    ]
    return render(
        request, "customer.html", engine, title=customer.name, section="customers", customer=customer,
        subscriptions=customers.list_subscriptions(engine, customer.external_id),
        review=approval.customer_review(engine, customer.external_id),
        held=held, all_coupons=[s.coupon for s in every_coupon],
        balances=credits.balance(engine, customer.external_id, settings=invoicing.finalize_settings(settings)),
        ledger=credits.ledger(engine, customer.external_id)[-20:],
        plans=sorted(catalog.plans), text_fields=TEXT_FIELDS, today=invoicing.issue_day(),
        invoices=invoicing.invoices_page(engine, limit=10, customer=customer.external_id)[0],
        portal_revoked=portal_links.revoked_at(engine, customer.external_id),
    )  # fmt: skip


def _changes(form: Form) -> dict[str, object]:
    """The form's fields that the customer's record takes; a blank optional field clears it."""
    changes: dict[str, object] = {name: form[name].strip() or None for name in TEXT_FIELDS if name in form}
    if changes.get("name") is None:
        changes.pop("name", None)
    if changes.get("tax_rate") is None:
        changes["tax_rate"] = "0"
    if "address" in form:
        changes["address"] = [line.strip() for line in form["address"].splitlines() if line.strip()]
    return changes


@router.post("/customers/{external_id}", include_in_schema=False)
def edit_customer(
    external_id: str,
    form: Annotated[Form, Depends(posted_form)],
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
) -> Response:
    def edit() -> str:
        before = customers.get_customer(engine, external_id).webhook_url
        saved = customers.update_customer(engine, external_id, _changes(form))
        if saved.webhook_url != before and saved.webhook_secret:  # (made for the new URL: shown this once)
            return (
                f"Customer {external_id} saved. Its new webhook secret, shown this once (webhooks to the new URL "
                f"are signed with it): {saved.webhook_secret}"
            )
        return f"Customer {external_id} saved."

    return act(engine, who, customer_path(external_id), edit)


@router.post("/customers/{external_id}/portal/revoke", include_in_schema=False)
def revoke_portal_links(
    external_id: str,
    form: Annotated[Form, Depends(posted_form)],
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
) -> Response:
    def revoke() -> str:
        revoked = portal_links.revoke_portal_links(engine, external_id)
        return (
            f"Every portal link made for {revoked.customer} before {revoked.revoked_at:%Y-%m-%d %H:%M:%S} UTC is "
            "refused from now on."
        )

    return act(engine, who, customer_path(external_id), revoke)


@router.post("/customers/{external_id}/review", include_in_schema=False)
def review_customer(
    external_id: str,
    form: Annotated[Form, Depends(posted_form)],
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
) -> Response:
    def review() -> str:
        flag = form.get("review") == "on"
        note = form.get("note", "").strip() or None
        approval.set_customer_review(engine, external_id, flag, by=who.actor, note=note)
        return f"Customer {external_id} {'flagged for review' if flag else 'no longer flagged for review'}."

    return act(engine, who, customer_path(external_id), review)


@router.post("/customers/{external_id}/subscriptions", include_in_schema=False)
def subscribe(
    external_id: str,
    form: Annotated[Form, Depends(posted_form)],
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
    catalog: Annotated[Catalog, Depends(console_catalog)],
) -> Response:
    def add() -> str:
        start = date_field(form, "start", "starting")
        if start is None:
            raise BillingInputError("starting: required, a date YYYY-MM-DD")
        quantity = int_field(form, "quantity", "seats", default=1)
        made = customers.subscribe(engine, catalog, external_id, form.get("plan", ""), start, quantity)
        return f"Subscription {made.id} to {made.plan_code} from {made.start_date} added."

    return act(engine, who, customer_path(external_id), add)


@router.post("/subscriptions/{subscription_id}/quantity", include_in_schema=False)
def change_seats(
    subscription_id: Id,
    form: Annotated[Form, Depends(posted_form)],
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
    catalog: Annotated[Catalog, Depends(console_catalog)],
) -> Response:
    owner = customers.get_subscription(engine, subscription_id).customer_external_id

    def seats() -> str:
        on = date_field(form, "effective_from", "from")
        if on is None:
            raise BillingInputError("from: required, a date YYYY-MM-DD")
        changed = customers.change_quantity(engine, catalog, subscription_id, int_field(form, "quantity", "seats"), on)
        return f"Subscription {changed.id}: {changed.quantity_on(on)} seats from {on}."

    return act(engine, who, customer_path(owner), seats)


@router.get("/subscriptions/{subscription_id}/overrides", include_in_schema=False)
def overrides_page(
    request: Request,
    subscription_id: Id,
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
) -> Response:
    subscription = customers.get_subscription(engine, subscription_id)
    versions = [overrides.override_json(o) for o in overrides.list_overrides(engine, subscription_id)]
    return render(
        request, "overrides.html", engine, title=f"Negotiated prices of subscription {subscription_id}",
        section="customers", subscription=subscription, versions=versions,
    )  # fmt: skip


@router.post("/subscriptions/{subscription_id}/overrides", include_in_schema=False)
def set_overrides(
    subscription_id: Id,
    form: Annotated[Form, Depends(posted_form)],
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
    catalog: Annotated[Catalog, Depends(console_catalog)],
) -> Response:
    def record() -> str:
        document, problems = loads_override(form.get("document", ""), "document")
        if document is None:
            raise BillingInputError.of([str(p) for p in problems])
        version = overrides.set_override(
            engine, catalog, subscription_id, document, date_field(form, "effective_from", "effective from")
        )
        return f"Negotiated prices recorded, from {version.effective_from}."

    return act(engine, who, f"/subscriptions/{subscription_id}/overrides", record)


@router.post("/customers/{external_id}/coupons", include_in_schema=False)
def apply_coupon(
    external_id: str,
    form: Annotated[Form, Depends(posted_form)],
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
) -> Response:
    def apply() -> str:
        code = form.get("code", "").strip()
        held = coupons.apply_coupon(engine, code, external_id)
        return f"Coupon {code} applied from {held.applied_on}."

    return act(engine, who, customer_path(external_id), apply)


@router.post("/customers/{external_id}/credits", include_in_schema=False)
def grant_credit(
    external_id: str,
    form: Annotated[Form, Depends(posted_form)],
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
    settings: Annotated[Settings, Depends(console_settings)],
) -> Response:
    def grant() -> str:
        made = credits.grant_credit(
            engine, external_id, parse_amount(form.get("amount", ""), "amount"), form.get("currency", ""),
            paid=form.get("paid") == "on", expires=date_field(form, "expires", "expires"),
            reason=form.get("reason", "").strip() or None, settings=invoicing.finalize_settings(settings),
        )  # fmt: skip
        return f"Credit of {made.amount} {made.currency} granted ({made.kind})."

    return act(engine, who, customer_path(external_id), grant, once=required_once(form))
