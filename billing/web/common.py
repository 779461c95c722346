"""What the web pages share: formatting in a person's locale, the Jinja2 environment, the base layout and
stylesheet (``/static``), and the headers every page is sent with.

Words are gettext messages of the catalogs in ``invoices/locale`` (``make translations`` extracts them from
``billing/web`` too); numbers, money, dates and times are formatted by Babel for the locale, as invoices are
(``invoices.render.Formatter``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.staticfiles import StaticFiles

from invoices.i18n import translations
from invoices.render import Formatter

__all__ = ["SECURITY_HEADERS", "STATIC", "TEMPLATES", "PageFormat", "environment", "install", "page_format", "render"]

WEB = Path(__file__).resolve().parent
STATIC = WEB / "static"
TEMPLATES = WEB / "templates"

# Sent with every page: nothing cached (the pages show one customer's money), no framing, no referrer (a portal
# link must not leak to other sites), scripts and styles from this server only.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
}


@dataclass(frozen=True, slots=True)
class PageFormat:
    """Words, numbers, money, dates and times as one person reads them: a locale, a currency and a timezone."""

    fmt: Formatter
    timezone: str

    @property
    def locale(self) -> str:
        return self.fmt.locale

    @property
    def lang(self) -> str:
        """The page's language as HTML names it (``de-DE``)."""
        return self.fmt.locale.replace("_", "-")

    def _(self, message: str, **values: object) -> str:
        """``message`` in the locale's language, its ``%(name)s`` placeholders filled from ``values``."""
        return self.fmt._(message, **values)

    def ngettext(self, singular: str, plural: str, count: int, **values: object) -> str:
        """The form of a message ``count`` takes, its placeholders filled (``count`` among them)."""
        return self.fmt.words.ngettext(singular, plural, count) % {"count": count, **values}

    def money(self, amount: Decimal, currency: str | None = None) -> str:
        if currency is None or currency == self.fmt.currency:
            return self.fmt.money(amount)
        return Formatter(currency, self.fmt.locale).money(amount)

    def number(self, value: Decimal) -> str:
        return self.fmt.number(value)

    def quantity(self, value: Decimal, unit: str | None) -> str:
        return self.fmt.quantity(value, unit)

    def percent(self, value: Decimal) -> str:
        """A percentage (80 → "80 %" or "80%" as the locale writes it)."""
        return self.fmt.percent(value)

    def date(self, day: dt.date | None) -> str:
        return self.fmt.date(day)

    def short_date(self, day: dt.date | None) -> str:
        """A date as tables print it (medium length: "03.11.2026", "Nov 3, 2026")."""
        return "—" if day is None else format_date(day, format="medium", locale=self.fmt.locale)

    def period(self, start: dt.date, end: dt.date) -> str:
        """A half-open period ``[start, end)``: a calendar month by its name, else its first – last day."""
        return self.fmt.period(start, end)

    def datetime(self, instant: dt.datetime | None) -> str:
        """An instant in the timezone, as the locale writes a date and time (medium length)."""
        if instant is None:
            return "—"
        local = instant.astimezone(ZoneInfo(self.timezone))
        return format_datetime(local, format="medium", tzinfo=ZoneInfo(self.timezone), locale=self.fmt.locale)


def _usable_locale(locale: str) -> str:
    try:
        Locale.parse(locale)
    except (UnknownLocaleError, ValueError):
        return "en_US"
    return locale


def page_format(locale: str, currency: str, timezone: str = "UTC") -> PageFormat:
    """The formatting of a person with ``locale`` whose money is ``currency`` and who lives in ``timezone``."""
    usable = _usable_locale(locale)
    return PageFormat(Formatter(currency, usable, translations(usable)), timezone)


@cache
def environment(folder: Path) -> Environment:
    """The Jinja2 environment of a package's templates in ``folder``, beside the shared ones (the layout)."""
    return Environment(
        loader=FileSystemLoader([folder, TEMPLATES]),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(
    folder: Path,
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """An HTML page: ``template`` of ``folder`` with ``context``, sent with :data:`SECURITY_HEADERS`. With a
    :class:`PageFormat` ``f`` in the context, the templates' ``_("…")`` is its translation (as ``pybabel
    extract`` finds the words)."""
    words = {"_": context["f"]._} if isinstance(context.get("f"), PageFormat) else {}
    html = environment(folder).get_template(template).render(**words, **context)
    return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})


def install(app: FastAPI) -> None:
    """Serve the shared static files under ``/static``."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
