"""The customer portal: what one customer sees of its account, under ``/portal``.

A customer arrives by a signed, expiring link (``billing portal link CUSTOMER``, ``POST
/v1/customers/{id}/portal_links``; see ``billing.portal_links``): ``GET /portal/link/<token>`` checks it and
hands the browser a cookie holding the token (``HttpOnly``, ``SameSite=Lax``, ``Secure`` over HTTPS, limited to
``/portal``, kept until the link expires), then sends it to the portal's first page. Every page checks the
cookie's token again and shows the customer it names, and only it: no page takes a customer's id, and an invoice
is found among that customer's own (another's, or a draft, is answered 404 as if it did not exist).

    GET /portal/                     this period's usage: a bar per meter against its allowance and alert levels
    GET /portal/upcoming             the invoice the period will bring so far, and the coupons in force
    GET /portal/credits              the credit balance and its ledger
    GET /portal/invoices             the invoices and credit notes, their payment state and PDFs
    GET /portal/invoices/<number>.pdf
    GET /portal/account              the customer's details and subscriptions

A missing, forged or expired link is answered 403 with a page that says which.

A link is a credential good for days: the server's access log (uvicorn's) writes ``/portal/link/…`` with the token
replaced by ``…`` (:class:`HiddenLinks`), so that whoever reads the logs cannot open the customers' portals.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from billing.portal_links import PATH
from billing.web.portal.routes import PortalRefused, refused, router

__all__ = ["HiddenLinks", "install"]

ACCESS_LOG = "uvicorn.access"


class HiddenLinks(logging.Filter):
    """Hides the token of a portal link in an access log record (uvicorn's: the path is its third argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > 2 and isinstance(args[2], str) and args[2].startswith(PATH):
            record.args = (*args[:2], f"{PATH}…", *args[3:])
        return True


def install(app: FastAPI) -> None:
    """Serve the portal's pages on ``app`` (under ``/portal``); hide links' tokens in the access log."""
    app.include_router(router)
    app.add_exception_handler(PortalRefused, refused)  # type: ignore[arg-type]
    access = logging.getLogger(ACCESS_LOG)
    if not any(isinstance(f, HiddenLinks) for f in access.filters):
        access.addFilter(HiddenLinks())
