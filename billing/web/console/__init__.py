"""The finance console: server-rendered pages (Jinja2, no JavaScript build) at ``/console``, served by
``billing serve`` beside the HTTP API.

``install(app)`` mounts it into the API's application (``billing.web.install``), with the settings that application
was made with; ``create_console(settings)`` builds it alone.
Pages, each a module:

    session         GET/POST /console/login, POST /console/logout
    pages_runs      GET /console/runs (a period's invoices, its unbilled usage), POST /console/runs (run a period)
    pages_invoices  GET /console/approvals, GET /console/invoices[/{id}[/pdf]], POST …/approve, …/finalize,
                    …/void, …/credit-notes, …/payments, POST /console/approvals/finalize
    pages_customers GET/POST /console/customers[/{id}], subscriptions, seats, overrides, coupons, credits, review
    pages_notes     GET /console/notifications, POST /console/notifications/{id}/retry
    pages_metrics   GET /console/metrics (MRR bridge, cohorts, churn risk, aged receivables; charts as SVG)

Pages are thin like the API's routes: they parse a form, call the services (``billing.run``,
``billing.invoicing``, ``billing.approval``, ``billing.payments``, ``billing.customers``, …) and render what they
answer. Sign-in, sessions and CSRF: ``billing.web.console.base`` and ``billing.staff``.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from billing.config import Settings
from billing.errors import BillingInputError, NotFoundError
from billing.web.console import pages_customers, pages_invoices, pages_metrics, pages_notes, pages_runs, session
from billing.web.console.base import (
    HERE,
    PREFIX,
    SECURITY_HEADERS,
    CsrfRefused,
    LoginRequired,
    current_staff,
    login_redirect,
    templates,
)

__all__ = ["create_console", "install"]


def create_console(settings: Settings | None = None) -> FastAPI:
    """The console as an application of its own (mounted at ``/console``); ``settings`` name the database and
    the catalog (default: the configured ones)."""
    console = FastAPI(title="Finance console", docs_url=None, redoc_url=None, openapi_url=None)
    console.state.settings = settings
    console.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (session, pages_runs, pages_invoices, pages_customers, pages_notes, pages_metrics):
        console.include_router(module.router)

    @console.get("/", include_in_schema=False, dependencies=[Depends(current_staff)])
    def home() -> Response:  # signed in: the billing runs; else the sign-in page
        return RedirectResponse(f"{PREFIX}/runs", status_code=303)

    @console.exception_handler(LoginRequired)
    def login_required(request: Request, exc: LoginRequired) -> Response:
        if request.method in ("GET", "HEAD"):
            return login_redirect(request)
        return _refused(403, "Sign in first", "This form needs a signed-in session. Nothing was changed.")

    @console.exception_handler(CsrfRefused)
    def csrf_refused(request: Request, exc: CsrfRefused) -> Response:
        return _refused(
            403, "Form refused", "The form did not carry this session's security token. Nothing was changed."
        )

    @console.exception_handler(NotFoundError)
    def not_found(request: Request, exc: NotFoundError) -> Response:
        return _refused(404, "Not found", str(exc))

    @console.exception_handler(BillingInputError)
    def bad_input(request: Request, exc: BillingInputError) -> Response:
        return _refused(400, "Cannot show this page", str(exc))

    @console.exception_handler(RequestValidationError)
    def bad_request(request: Request, exc: RequestValidationError) -> Response:
        return _refused(400, "Cannot show this page", _problems(exc))

    return console


def _refused(status: int, title: str, detail: str) -> HTMLResponse:
    html = templates.get_template("refused.html").render(title=title, detail=detail, staff=None, nav=())
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _problems(exc: RequestValidationError) -> str:
    """A path or query parameter that does not parse, named: "after: expected a whole number from 1 to …"."""
    words = []
    for error in exc.errors():
        name = str(error.get("loc", ("", "?"))[-1])
        words.append(
            f"{name}: expected a whole number from 1 to 9223372036854775807, got {error.get('input')!r}"
            if error.get("type", "").startswith(("int", "greater", "less"))
            else f"{name}: {error.get('msg')}"
        )
    return "; ".join(words)


def install(app: FastAPI) -> None:
    """Serve the console at ``/console`` in ``app``, on the settings ``app`` was made with (``app.state.settings``;
    None: the configured ones)."""
    app.mount(PREFIX, create_console(getattr(app.state, "settings", None)))
