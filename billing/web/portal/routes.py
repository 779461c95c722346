"""The portal's routes (``billing.web.portal``): thin, they check the link, ask ``views`` for the page's
content and render it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from billing.api.deps import api_engine, get_api_settings, get_catalog
from billing.config import Settings
from billing.errors import NotFoundError
from billing.invoicing import finalize_settings
from billing.portal_links import PortalAccess, PortalLinkError, check_not_revoked, verify_portal_token
from billing.web.common import SECURITY_HEADERS, PageFormat, page_format, render
from billing.web.portal import views
from dbkit import utcnow
from invoices.i18n import N_
from invoices.render import render_pdf
from pricing_plans.models import Catalog

__all__ = ["COOKIE", "PortalRefused", "refused", "router"]

COOKIE = "billing_portal"
TEMPLATES = FilePath(__file__).resolve().parent / "templates"
_NUMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/ -]{0,254}")  # as the settings allow a number to look

router = APIRouter(prefix="/portal", include_in_schema=False)

PAGES = (  # (path, template, navigation label)
    ("/portal/", "usage.html.j2", N_("Usage")),
    ("/portal/upcoming", "upcoming.html.j2", N_("Upcoming invoice")),
    ("/portal/credits", "credits.html.j2", N_("Credits")),
    ("/portal/invoices", "invoices.html.j2", N_("Invoices")),
    ("/portal/account", "account.html.j2", N_("Account")),
)


class PortalRefused(Exception):
    """No portal for this request: no link, a link that is not ours, or one that expired (``customer``: whose)."""

    def __init__(self, status: int, message: str, *, expired: bool = False, customer: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.expired = expired
        self.customer = customer


def _access(settings: Settings, token: str | None) -> PortalAccess:
    if not token:
        raise PortalRefused(403, "no portal link")
    try:
        return verify_portal_token(settings, token)
    except PortalLinkError as error:
        raise PortalRefused(403, str(error), expired=error.expired, customer=error.customer) from None


def _portal_of(engine: Engine, access: PortalAccess) -> views.Portal:
    """The portal a checked link opens, unless the customer's links were revoked since it was made."""
    try:
        check_not_revoked(engine, access)
        return views.portal_of(engine, access.customer)
    except PortalLinkError as error:
        raise PortalRefused(403, str(error), expired=error.expired, customer=error.customer) from None
    except NotFoundError:  # a link signed for an id billing does not know: no portal, as for a forged one
        raise PortalRefused(403, "no such customer") from None


async def portal_customer(
    request: Request,
    settings: Annotated[Settings, Depends(get_api_settings)],
    engine: Annotated[Engine, Depends(api_engine)],
) -> views.Portal:
    """The portal of the customer the request's portal cookie names; PortalRefused without a valid, unexpired,
    unrevoked one, or for a customer billing does not know."""
    access = _access(settings, request.cookies.get(COOKIE))
    return await run_in_threadpool(_portal_of, engine, access)


Customer = Annotated[views.Portal, Depends(portal_customer)]
DbEngine = Annotated[Engine, Depends(api_engine)]
Settings_ = Annotated[Settings, Depends(get_api_settings)]
Catalog_ = Annotated[Catalog, Depends(get_catalog)]


def _format_for(engine: Engine, customer: str | None) -> PageFormat:
    if customer is not None:
        try:
            return views.portal_of(engine, customer).f
        except NotFoundError:
            pass
    return page_format("en_US", "USD")


async def refused(request: Request, error: PortalRefused) -> Response:
    """The page that says why there is no portal: an expired link (in its customer's language), or none."""
    settings: Settings = await get_api_settings(request)
    engine = await api_engine(settings)
    f = await run_in_threadpool(_format_for, engine, error.customer)
    title = f._("This link has expired") if error.expired else f._("This page needs a valid portal link")
    context = {"f": f, "title": title, "site": settings.seller.name, "nav": [], "expired": error.expired}
    response = render(TEMPLATES, "refused.html.j2", context, status=error.status)
    response.delete_cookie(COOKIE, path="/portal")
    return response


@router.get("/link/{token}")
def open_link(token: str, request: Request, engine: DbEngine, settings: Settings_) -> Response:
    """A portal link: checked (one too long is refused like any other that is not ours), then kept in a cookie
    until it expires; on to the portal's first page. The cookie is ``Secure`` when the request came over HTTPS
    (uvicorn reads ``X-Forwarded-Proto`` from the proxies it trusts) or the links are made for an HTTPS
    ``public_url``."""
    access = _access(settings, token)
    _portal_of(engine, access)
    response = RedirectResponse("/portal/", status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(
        COOKIE,
        token,
        max_age=max(1, int((access.expires_at - utcnow()).total_seconds())),
        path="/portal",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https" or settings.public_url.lower().startswith("https://"),
    )
    return response


def _page(
    path: str, portal: views.Portal, settings: Settings, build: Callable[[views.Portal], dict[str, Any]]
) -> Response:
    """A portal page: the customer's formatting, the page's content from ``build``, the navigation."""
    f = portal.f
    template, label = next((t, label) for p, t, label in PAGES if p == path)
    nav = [(p, f._(name), p == path) for p, _, name in PAGES]
    context = {"f": f, "title": f._(label), "site": settings.seller.name, "nav": nav, "customer": portal.customer}
    return render(TEMPLATES, template, {**context, **build(portal)})


def _not_found(portal: views.Portal, settings: Settings) -> Response:
    """The portal's 404: in the customer's language, with its navigation, naming nothing of what was asked."""
    f = portal.f
    nav = [(p, f._(name), False) for p, _, name in PAGES]
    context = {"f": f, "title": f._("Page not found"), "site": settings.seller.name, "nav": nav}
    return render(TEMPLATES, "not_found.html.j2", context, status=404)


@router.get("/")
def usage(customer: Customer, engine: DbEngine, settings: Settings_, catalog: Catalog_) -> Response:
    return _page("/portal/", customer, settings, lambda p: views.usage_view(engine, catalog, p))


@router.get("/upcoming")
def upcoming(customer: Customer, engine: DbEngine, settings: Settings_, catalog: Catalog_) -> Response:
    return _page("/portal/upcoming", customer, settings, lambda p: views.upcoming_view(engine, catalog, p))


@router.get("/credits")
def credit(customer: Customer, engine: DbEngine, settings: Settings_) -> Response:
    issuing = finalize_settings(settings)
    return _page("/portal/credits", customer, settings, lambda p: views.credits_view(engine, p, issuing))


@router.get("/invoices")
def invoice_list(customer: Customer, engine: DbEngine, settings: Settings_) -> Response:
    return _page("/portal/invoices", customer, settings, lambda p: views.invoices_view(engine, p))


@router.get("/invoices/{number:path}.pdf")  # a number may hold "/" (RE/2026/0001)
def invoice_pdf(number: str, customer: Customer, engine: DbEngine, settings: Settings_) -> Response:
    """One of the customer's issued invoices as a PDF; any other number is the portal's 404 page."""
    invoice = views.visible_invoice(engine, customer, number, settings) if _NUMBER.fullmatch(number) else None
    if invoice is None:
        return _not_found(customer, settings)
    return Response(
        render_pdf(invoice),
        media_type="application/pdf",
        headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{number.replace("/", "-")}.pdf"'},
    )


@router.get("/account")
def account(customer: Customer, engine: DbEngine, settings: Settings_, catalog: Catalog_) -> Response:
    return _page("/portal/account", customer, settings, lambda p: views.account_view(engine, catalog, p))


@router.get("/{path:path}")
def not_found(path: str, customer: Customer, settings: Settings_) -> Response:
    """Any other page under ``/portal``: 404 in the customer's language (403 without a valid link)."""
    return _not_found(customer, settings)
