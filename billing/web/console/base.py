"""What every console page takes: the settings, the database, the catalog, the signed-in staff member, the forms
(CSRF-checked), the templates, and one way to answer an action (a notice, then back to a page).

- **Session cookie** ``billing_console``: the session token (``billing.staff``), ``HttpOnly``, ``SameSite=Strict``,
  ``Path=/console``, ``Secure`` when the console is reached over HTTPS.
- **CSRF**: every ``POST`` carries ``csrf_token``, the session's token (``billing.staff.csrf_token``); one
  without it, or with another session's, is answered 403 and changes nothing. A ``POST`` whose ``Origin`` is
  another site is refused too. The sign-in form, which has no session yet, is protected by a double-submit
  token: a random value in the ``billing_console_login`` cookie that the form must repeat.
- **Sent once**: each page's forms carry ``form_nonce``, a random value new on every page. A form that moves money
  or issues (a payment, a credit note, a credit grant, finalize, void) is done once per value: the same form sent
  again (a double click, a resent request) is answered as the first was and changes nothing more
  (``billing.db.idempotency``, the store of the API's ``Idempotency-Key``, scoped to the session). A payment, a
  credit note or a credit grant without it is refused.
- A page asked for without a live session redirects to the sign-in page (303); a ``POST`` without one is a 403.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Engine

from billing import staff
from billing.config import Settings, get_settings
from billing.core.metrics import format_money, format_rate
from billing.core.periods import Period, parse_month
from billing.db import idempotency
from billing.db.engines import engine_for_url
from billing.errors import BillingError, BillingInputError
from billing.staff import StaffSession
from pricing_plans.loader import load_catalog_or_raise
from pricing_plans.models import Catalog

__all__ = [
    "COOKIE",
    "LOGIN_COOKIE",
    "NONCE",
    "PREFIX",
    "CsrfRefused",
    "Form",
    "Id",
    "LoginRequired",
    "PageId",
    "act",
    "console_catalog",
    "console_engine",
    "console_settings",
    "current_staff",
    "date_field",
    "int_field",
    "month_or_none",
    "posted_form",
    "render",
    "required_once",
    "templates",
]

PREFIX = "/console"
COOKIE = "billing_console"
LOGIN_COOKIE = "billing_console_login"
MAX_FORM = 256 * 1024
HERE = Path(__file__).parent
NONCE = "form_nonce"
MAX_ID = 2**63 - 1
Id = Annotated[int, PathParam(ge=1, le=MAX_ID)]
"""A row's id in a page's path: a whole number the database can hold (else a 400 page, never a server error)."""
PageId = Annotated[int | None, Query(ge=1, le=MAX_ID)]
"""``after`` / ``before`` of a list's page: an id, as :data:`Id`."""


class LoginRequired(Exception):
    """No live session: a page redirects to the sign-in page, a form is refused."""


class CsrfRefused(Exception):
    """A form without the session's CSRF token (or from another site): refused with 403."""


Form = dict[str, str]


# -- settings, database, catalog -----------------------------------------------------------------------------


def console_settings(request: Request) -> Settings:
    fixed: Settings | None = getattr(request.app.state, "settings", None)
    return fixed if fixed is not None else get_settings()


def console_engine(settings: Annotated[Settings, Depends(console_settings)]) -> Engine:
    return engine_for_url(settings.database_url)


_CATALOGS: dict[tuple[str, int, int], Catalog] = {}


def console_catalog(settings: Annotated[Settings, Depends(console_settings)]) -> Catalog:
    """The catalog named by the settings, read again when its file changes."""
    path = str(settings.catalog)
    status = os.stat(path)
    key = (path, status.st_mtime_ns, status.st_size)
    if key not in _CATALOGS:
        _CATALOGS.clear()
        _CATALOGS[key] = load_catalog_or_raise(path)
    return _CATALOGS[key]


# -- who is signed in, and what they post --------------------------------------------------------------------


def current_staff(request: Request, engine: Annotated[Engine, Depends(console_engine)]) -> StaffSession:
    found = staff.session_of(engine, request.cookies.get(COOKIE))
    if found is None:
        raise LoginRequired()
    request.state.staff = found
    return found


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


_MAX_FIELDS = 200


async def read_form(request: Request) -> Form:
    """The request's url-encoded form, one value per name (the last one)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = await request.body()
    if len(body) > MAX_FORM:
        raise BillingInputError("the form is too large")
    try:
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=_MAX_FIELDS)
    except ValueError:  # (more fields than any form of the console has)
        raise BillingInputError(f"the form has more than {_MAX_FIELDS} fields") from None
    return {name: values[-1] for name, values in parsed.items()}


async def posted_form(request: Request, who: Annotated[StaffSession, Depends(current_staff)]) -> Form:
    """The form of a ``POST`` by the signed-in staff member, its CSRF token checked."""
    form = await read_form(request)
    if not _same_origin(request) or not staff.csrf_matches(request.cookies.get(COOKIE), form.get("csrf_token")):
        raise CsrfRefused()
    return form


# -- pages ---------------------------------------------------------------------------------------------------


def _money(amount: Any, currency: str) -> str:
    """An amount as ``billing metrics`` prints it (rounded half up to the currency's minor units), with its
    currency."""
    if amount is None:
        return "—"
    return f"{format_money(amount, currency)} {currency}"


def _percent(value: Any) -> str:
    """A fraction as ``billing metrics`` prints it (one decimal, half up)."""
    return "—" if value is None else f"{format_rate(value)} %"


def _when(value: dt.datetime | dt.date | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return value.isoformat()


def _days(start: dt.date, end: dt.date) -> str:
    """A period ``[start, end)`` as the days it covers: ``2026-10-01 – 2026-10-31``."""
    return f"{start.isoformat()} – {(end - dt.timedelta(days=1)).isoformat()}"


def _environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        money=_money, percent=_percent, when=_when, days=_days, q=lambda text: quote(str(text), safe="")
    )
    environment.globals["prefix"] = PREFIX
    return environment


templates = _environment()

NAV = (
    ("runs", "Billing runs"),
    ("approvals", "Approvals"),
    ("invoices", "Invoices"),
    ("customers", "Customers"),
    ("notifications", "Notifications"),
    ("metrics", "Metrics"),
)


def render(
    request: Request, template: str, engine: Engine | None = None, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """A page: ``template`` with the signed-in staff member, the session's CSRF token, and the pending notice."""
    who: StaffSession | None = getattr(request.state, "staff", None)
    token = request.cookies.get(COOKIE)
    notice = staff.take_notice(engine, who) if who is not None and engine is not None else None
    html = templates.get_template(template).render(
        staff=who,
        csrf=staff.csrf_token(token) if who is not None and token else "",
        nonce=secrets.token_urlsafe(16),
        notice=notice,
        nav=NAV,
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}


def _outcome(action: Callable[[], str]) -> str:
    try:
        return "ok:" + action()
    except BillingError as exc:
        return "error:" + str(exc)
    except ValueError as exc:  # a date or a number that does not parse, before any service is called
        return "error:" + str(exc)


def act(
    engine: Engine, who: StaffSession, back: str, action: Callable[[], str], *, once: Form | None = None
) -> Response:
    """Run ``action`` (a call of the services that returns what was done, in words); keep what was done, or why
    it was refused, as the next page's notice; then back to ``back`` (303). With ``once`` (the posted form), the
    form is done once per ``form_nonce`` (:func:`act_once`)."""
    if once is not None and NONCE in once:
        return act_once(engine, who, back, action, once)
    staff.set_notice(engine, who.id, _outcome(action))
    return RedirectResponse(PREFIX + back, status_code=303)


def act_once(engine: Engine, who: StaffSession, back: str, action: Callable[[], str], form: Form) -> Response:
    """:func:`act` once per ``form_nonce`` of the session: the same form again is answered with the first one's
    notice and page; while the first still runs, with its page; another form with the same value is refused.
    A form refused by the services keeps nothing (sent again, it is checked again)."""
    nonce = form.get(NONCE, "")
    if not nonce or len(nonce) > 255:
        staff.set_notice(engine, who.id, f"error:{NONCE}: missing; reload the page and send the form again")
        return RedirectResponse(PREFIX + back, status_code=303)
    scope = hashlib.sha256(f"billing console session {who.id}".encode()).hexdigest()
    sent = "&".join(f"{quote(k)}={quote(v)}" for k, v in sorted(form.items()) if k != "csrf_token")
    claimed = idempotency.claim(engine, scope, nonce, hashlib.sha256(f"{back} {sent}".encode()).hexdigest())
    if claimed.outcome == "replay" and claimed.answer is not None:
        first = claimed.answer.body.decode()
        staff.set_notice(engine, who.id, f"{first} (This form was sent twice; it was done once.)")
        return RedirectResponse(claimed.answer.headers.get("location", PREFIX + back), status_code=303)
    if claimed.outcome != "run":
        if claimed.outcome == "reused":
            staff.set_notice(
                engine, who.id, "error:This page was used for another form already: reload it. Nothing was changed."
            )
        return RedirectResponse(PREFIX + back, status_code=303)
    try:
        done = _outcome(action)
    except BaseException:
        idempotency.release(engine, scope, nonce)
        raise
    if done.startswith("ok:"):
        idempotency.complete(
            engine, scope, nonce, idempotency.StoredAnswer(303, {"location": PREFIX + back}, done.encode())
        )
    else:
        idempotency.release(engine, scope, nonce)
    staff.set_notice(engine, who.id, done)
    return RedirectResponse(PREFIX + back, status_code=303)


def required_once(form: Form) -> Form:
    """A form that moves money, for :func:`act`'s ``once``: done once per ``form_nonce``, refused without one."""
    return form if form.get(NONCE) else {**form, NONCE: ""}


def date_field(form: Form, name: str, label: str) -> dt.date | None:
    """The form's date ``name`` (YYYY-MM-DD), None when blank; BillingInputError naming ``label`` when it does not
    parse."""
    text = form.get(name, "").strip()
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise BillingInputError(f"{label}: expected a date YYYY-MM-DD, got {text!r}") from None


def int_field(form: Form, name: str, label: str, default: int | None = None) -> int:
    """The form's whole number ``name`` (``default`` when blank); BillingInputError naming ``label`` when it is not
    one."""
    text = form.get(name, "").strip()
    if not text and default is not None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise BillingInputError(f"{label}: expected a whole number, got {text!r}")
    return int(text)


def month_or_none(text: str | None) -> Period | None:
    """A ``YYYY-MM`` from a query or a form, or None when blank; BillingInputError when it does not parse or its
    year is not 1971 to 9998 (as the API's)."""
    if not text or not text.strip():
        return None
    try:
        period = parse_month(text)
    except ValueError as exc:
        raise BillingInputError(f"period: {exc}") from None
    if not 1971 <= period.start.year <= 9998:
        raise BillingInputError(f"period: expected a year from 1971 to 9998, got {text.strip()!r}")
    return period


def login_redirect(request: Request) -> RedirectResponse:
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{PREFIX}/login?next={quote(back, safe='')}", status_code=303)
