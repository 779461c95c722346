"""The pages ``billing serve`` serves beside the API, server-rendered with Jinja2 (no front-end build): the
customer portal (``billing.web.portal``, under ``/portal``) and the finance console (``billing.web.console``,
under ``/console``), with their shared stylesheet under ``/static`` (``billing.web.common``).

Like the API, the web pages are an entry point: they call the same services (``billing.preview``,
``billing.credits``, ``billing.invoicing``…) and hold no business rule of their own. ``install(app)`` adds them to
the application ``billing.api.create_app`` builds.
"""

from __future__ import annotations

from fastapi import FastAPI

__all__ = ["install"]


def install(app: FastAPI) -> None:
    """Serve the web pages and their static files on ``app``."""
    from billing.web import common, console, portal

    common.install(app)
    portal.install(app)
    console.install(app)
