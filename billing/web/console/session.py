"""Signing in and out: ``GET/POST /console/login`` (an API key for a session cookie), ``POST /console/logout``.

The sign-in form has no session to tie a CSRF token to: it repeats a random value that the page set in the
``billing_console_login`` cookie (double submit), so another site cannot sign a browser in with its own key."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from billing import staff
from billing.errors import BillingInputError
from billing.staff import SESSION_HOURS, StaffSession
from billing.web.console.base import (
    COOKIE,
    LOGIN_COOKIE,
    PREFIX,
    SECURITY_HEADERS,
    CsrfRefused,
    Form,
    console_engine,
    posted_form,
    read_form,
    templates,
)

router = APIRouter()


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a console page only (never another site)."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{PREFIX}/runs"


def _login_page(request: Request, error: str | None, status: int = 200) -> HTMLResponse:
    value = secrets.token_urlsafe(24)
    html = templates.get_template("login.html").render(
        staff=None, nav=(), error=error, login_csrf=value, next=_safe_next(request.query_params.get("next"))
    )
    response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
    response.set_cookie(
        LOGIN_COOKIE, value, max_age=3600, path=PREFIX, httponly=True, samesite="strict", secure=_secure(request)
    )
    return response


@router.get("/login", include_in_schema=False)
def login_page(request: Request) -> Response:
    return _login_page(request, None)


@router.post("/login", include_in_schema=False)
async def login(request: Request, engine: Annotated[Engine, Depends(console_engine)]) -> Response:
    form = await read_form(request)
    expected = request.cookies.get(LOGIN_COOKIE)
    if not expected or not secrets.compare_digest(expected, form.get("csrf_token", "")):
        raise CsrfRefused()
    try:
        _opened, token = await run_in_threadpool(staff.sign_in, engine, form.get("api_key", ""))
    except BillingInputError as exc:
        return _login_page(request, str(exc), status=401)
    response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_HOURS * 3600,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
    return response


@router.post("/logout", include_in_schema=False)
def logout(
    request: Request,
    form: Annotated[Form, Depends(posted_form)],
    engine: Annotated[Engine, Depends(console_engine)],
) -> Response:
    staff.sign_out(engine, request.cookies.get(COOKIE))
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict", secure=_secure(request))
    return response


__all__ = ["StaffSession", "router"]
