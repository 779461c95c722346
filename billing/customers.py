"""Customers and subscriptions: the service that the CLI and the HTTP API call.

Each function takes an ``Engine``, checks its input, runs one transaction and returns domain records. Bad input
raises :class:`~billing.errors.BillingInputError` whose message names the field and what was expected (every
problem of a customer at once, joined by "; "); a customer or subscription that does not exist raises
:class:`~billing.errors.NotFoundError`.

Rules:
  - a subscription covers ``[start, end)``: the end date is exclusive, so a plan change on day D ends the old
    subscription on D and starts the new one on D, and no day is billed twice;
  - a new subscription gets the plan version in effect on its start date and keeps it;
  - a customer may hold subscriptions to several plans at once (a base plan and add-ons), but never two
    overlapping ones to the same plan: more of the same plan is more seats (``quantity``) on one subscription;
  - a subscription has a quantity (seats, default 1), versioned by effective date (``change_quantity``); more
    than 1 only on a plan priced per seat (``seats = true``); a plan change keeps the seats when the new plan is
    priced per seat too;
  - a plan's currency must be the customer's currency;
  - a cancellation records ``voluntary`` or ``involuntary`` (churn); a plan change ends the old subscription
    with no reason, since the customer did not leave;
  - a subscription with an in-advance fee gets its opening invoice (the prorated fee of its first fee period) as a
    draft in the transaction that creates it, under the billing key the billing run uses (``start:<id>``); the
    scheduler finalizes it once the subscription has started;
  - a customer with a ``webhook_url`` gets a webhook secret of its own (``whsec_…``), which signs the webhooks
    posted to that URL; it is returned once, by the call that creates or rotates it;
  - a customer's tax id is checked offline (``billing.core.tax.check_tax_id``: format and check digits) against
    its country, and stored compact; a region needs a country;
  - updating a customer changes its future invoices (and its drafts, when they are next written), never an issued
    invoice: each keeps the buyer as it was printed; the external id and the currency never change;
  - an archived customer takes no new subscription (nor a plan change); its subscriptions, invoices and usage
    stay; it can be unarchived. A customer with a subscription still running cannot be archived.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import secrets
import zoneinfo
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal
from os import PathLike
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from babel import Locale, UnknownLocaleError
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billing.config import get_settings
from billing.core.compose import opening_key
from billing.core.countries import COUNTRY_HINTS, is_country
from billing.core.domain import CancelReason, Customer, Subscription, SubscriptionStatus
from billing.core.fees import schedule_of
from billing.core.periods import FIRST_YEAR, LAST_YEAR, Period
from billing.core.tax import MAX_RATE_PLACES, check_tax_id, tax_id_country
from billing.db import counters, repository, session_scope
from billing.errors import BillingInputError, ConflictError, NotFoundError
from billing.invoicing import check_meters_charged_once, drop_opening_draft, opening_plan, write_opening_invoice
from dbkit import read_only, utcnow
from invoices import store
from invoices.model import InvoiceStatus
from pricing_plans.errors import UnknownPlanError
from pricing_plans.models import BillingAnchor, Catalog, Interval, Plan
from pricing_plans.money import HUNDRED, ZERO, D, is_known_currency

__all__ = [
    "CSV_COLUMNS",
    "UPDATABLE_FIELDS",
    "ImportProblem",
    "ImportReport",
    "archive_customer",
    "cancel_subscription",
    "change_plan",
    "change_quantity",
    "create_customer",
    "customers_page",
    "field_problems",
    "get_customer",
    "get_subscription",
    "import_customers",
    "list_customers",
    "list_subscriptions",
    "new_webhook_secret",
    "rotate_webhook_secret",
    "settle_opening_draft",
    "subscribe",
    "subscriptions_page",
    "unarchive_customer",
    "update_customer",
]

CSV_COLUMNS = (
    "external_id", "name", "email", "currency", "timezone", "locale", "address", "webhook_url", "tax_rate", "country",
    "region", "tax_id", "tax_exempt_reason",
)
UPDATABLE_FIELDS = (
    "name", "email", "address", "country", "region", "tax_id", "tax_exempt_reason", "locale", "timezone", "tax_rate",
    "webhook_url",
)
REQUIRED_CSV_COLUMNS = ("external_id", "name", "currency")

WEBHOOK_SECRET_PREFIX = "whsec_"

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_NO_SPACE = re.compile(r"[^\s\x00-\x1f\x7f]+")


# -- customers -------------------------------------------------------------------------------------------


def create_customer(
    engine: Engine,
    external_id: str,
    name: str,
    email: str | None,
    currency: str,
    timezone: str | None = None,
    locale: str = "en_US",
    address: Sequence[str] = (),
    webhook_url: str | None = None,
    tax_rate: Decimal | int | str = 0,
    *,
    country: str | None = None,
    region: str | None = None,
    tax_id: str | None = None,
    tax_exempt_reason: str | None = None,
) -> Customer:
    """Create a customer; ``timezone`` None takes the settings' default.

    A customer with a ``webhook_url`` gets a new webhook secret: the returned record carries it, and this is the
    only time it is handed out (``rotate_webhook_secret`` makes a new one).

    Raises BillingInputError listing every bad field, or ConflictError ``customer 'acme' already exists``.
    """
    fields, problems = _customer_fields(
        external_id=external_id,
        name=name,
        email=email,
        currency=currency,
        timezone=timezone,
        locale=locale,
        address=address,
        webhook_url=webhook_url,
        tax_rate=tax_rate,
        country=country,
        region=region,
        tax_id=tax_id,
        tax_exempt_reason=tax_exempt_reason,
    )
    if problems:
        raise BillingInputError.of(problems)
    fields["webhook_secret"] = new_webhook_secret() if fields["webhook_url"] else None
    duplicate = ConflictError(f"customer {fields['external_id']!r} already exists")
    try:
        with session_scope(engine) as session:
            if repository.get_customer(session, fields["external_id"]) is not None:
                raise duplicate
            return repository.add_customer(session, **fields)
    except IntegrityError:  # created by someone else between our check and our insert
        raise duplicate from None


def new_webhook_secret() -> str:
    """A new webhook secret: ``whsec_`` and 48 hex digits (192 random bits)."""
    return WEBHOOK_SECRET_PREFIX + secrets.token_hex(24)


def rotate_webhook_secret(engine: Engine, external_id: str) -> Customer:
    """Give a customer a new webhook secret, returned once in the customer's record; the old one stops signing at
    once (a notification its receiver refuses meanwhile is retried with backoff).

    Refused: an unknown customer (NotFoundError), a customer without a ``webhook_url`` (its notifications go to the
    global ``notification_webhook_url``, signed with ``notification_webhook_secret``).
    """
    with session_scope(engine) as session:
        customer = _customer_or_raise(session, external_id, for_update=True)
        if customer.webhook_url is None:
            raise BillingInputError(
                f"customer {customer.external_id!r} has no webhook_url: its notifications go to "
                "notification_webhook_url, signed with notification_webhook_secret"
            )
        rotated = repository.set_webhook_secret(session, customer.external_id, new_webhook_secret())
        assert rotated is not None  # locked above
        return rotated


def update_customer(
    engine: Engine, external_id: str, changes: Mapping[str, Any], *, archived: bool | None = None
) -> Customer:
    """Change some of a customer's fields (names from ``UPDATABLE_FIELDS``; None clears an optional one) and, with
    ``archived``, archive it (True) or make it active again (False), all in one transaction: a change refused
    changes nothing. The customer as it is now. Issued invoices keep the buyer as it was.

    The customer's fields, changed, are checked together as a new customer's are (a tax id against the country
    it now has). A new ``webhook_url`` gets a new webhook secret, carried by the returned record this once.

    Raises NotFoundError for an unknown customer; BillingInputError ``customer 'acme': tax_id: …`` listing every
    bad field (a field that cannot change, such as the currency, among them); ConflictError for archiving a
    customer with a subscription still running (``archive_customer``).
    """
    fixed = [f"{name}: cannot be changed (changeable: {', '.join(UPDATABLE_FIELDS)})" for name in changes
             if name not in UPDATABLE_FIELDS]
    with session_scope(engine) as session:
        current = _customer_or_raise(session, external_id, for_update=True)
        merged = {name: changes.get(name, getattr(current, name)) for name in UPDATABLE_FIELDS}
        if merged["address"] is None:  # cleared
            merged["address"] = ()
        fields, problems = _customer_fields(
            external_id=current.external_id, currency=current.currency, stored_id=True, **merged
        )
        problems = fixed + problems
        if problems:
            raise BillingInputError(f"customer {external_id!r}: " + "; ".join(problems), problems)
        given = [name for name in UPDATABLE_FIELDS if name in changes]
        updates = {name: fields[name] for name in given if fields[name] != getattr(current, name)}
        if "webhook_url" in updates:
            updates["webhook_secret"] = new_webhook_secret() if updates["webhook_url"] else None
        if archived is True and current.archived_at is None:
            _check_can_archive(session, current, utcnow().date())
            updates["archived_at"] = utcnow()
        elif archived is False and current.archived_at is not None:
            updates["archived_at"] = None
        if not updates:
            return current
        if "timezone" in updates:
            _check_timezone_free(session, current, updates["timezone"])
        updated = repository.update_customer(session, current.external_id, updates)
        assert updated is not None  # locked above
        if "timezone" in updates:  # its usage counters are of calendar months in its timezone
            counters.rebuild(session.connection(), [current.external_id])
        return updated


def _check_timezone_free(session: Session, customer: Customer, timezone: str) -> None:
    """A customer's timezone is where its periods begin and end: once a period is invoiced, the next one begins
    where that one ended, at midnight there. A timezone whose midnight of that day is another instant would begin
    it elsewhere, and the usage of the hours between would be billed twice (east) or never (west); one whose
    midnight is the same instant (``Asia/Calcutta`` → ``Asia/Kolkata``, ``UTC`` → ``Europe/London`` in winter) is
    a change from there on."""
    through = store.invoiced_until(session, customer.external_id)
    midnight = dt.time(0)
    if through is not None and dt.datetime.combine(through, midnight, zoneinfo.ZoneInfo(customer.timezone)) != (
        dt.datetime.combine(through, midnight, zoneinfo.ZoneInfo(timezone))
    ):
        last_day = (through - dt.timedelta(days=1)).isoformat()
        raise ConflictError(
            f"customer {customer.external_id!r}: timezone: {customer.external_id} is invoiced through {last_day} "
            f"in {customer.timezone}; midnight of {through.isoformat()} in {timezone} is another instant, so the "
            "next period would not begin where that one ended, and the usage between would be billed twice or never"
        )


def archive_customer(engine: Engine, external_id: str, *, today: dt.date | None = None) -> Customer:
    """Archive a customer: it takes no new subscription; its subscriptions, invoices and usage are kept. Archiving
    an archived customer changes nothing.

    Refused (ConflictError) while one of its subscriptions is still running: open-ended, or ending after ``today``
    (UTC's today by default): cancel it first.
    """
    day = today or utcnow().date()
    with session_scope(engine) as session:
        customer = _customer_or_raise(session, external_id, for_update=True)
        if customer.archived_at is not None:
            return customer
        _check_can_archive(session, customer, day)
        updated = repository.update_customer(session, external_id, {"archived_at": utcnow()})
        assert updated is not None
        return updated


def _check_can_archive(session: Session, customer: Customer, day: dt.date) -> None:
    """ConflictError while one of the customer's subscriptions is still running on ``day``."""
    subscriptions = repository.subscriptions_of(session, customer.id)
    running = [s for s in subscriptions if s.end_date is None or s.end_date > day]
    if running:
        first = running[0]
        until = f"until {first.end_date.isoformat()}" if first.end_date else "open-ended"
        raise ConflictError(
            f"customer {customer.external_id!r} has a subscription still running: subscription {first.id} to plan "
            f"{first.plan_code!r} ({until}); cancel it before archiving the customer"
        )


def unarchive_customer(engine: Engine, external_id: str) -> Customer:
    """Make an archived customer active again (it may take subscriptions)."""
    with session_scope(engine) as session:
        customer = _customer_or_raise(session, external_id, for_update=True)
        if customer.archived_at is None:
            return customer
        updated = repository.update_customer(session, external_id, {"archived_at": None})
        assert updated is not None
        return updated


def _check_not_archived(customer: Customer) -> None:
    if customer.archived_at is not None:
        raise ConflictError(
            f"customer {customer.external_id!r} is archived (since {customer.archived_at:%Y-%m-%d}): it takes no new "
            "subscription; unarchive it first"
        )


def get_customer(engine: Engine, external_id: str) -> Customer:
    """The customer with ``external_id``; NotFoundError if there is none."""
    with _reading(engine) as session:
        return _customer_or_raise(session, external_id)


def list_customers(engine: Engine) -> list[Customer]:
    """Every customer, by external id."""
    with _reading(engine) as session:
        return repository.list_customers(session)


def customers_page(
    engine: Engine, *, limit: int, after: str | None = None, before: str | None = None
) -> tuple[list[Customer], bool]:
    """At most ``limit`` customers by external id, after ``after`` or right before ``before``; and whether more
    lie that way."""
    with _reading(engine) as session:
        return repository.customers_page(session, limit=limit, after=after, before=before)


def _customer_fields(
    *,
    external_id: Any,
    name: Any,
    email: Any,
    currency: Any,
    timezone: Any,
    locale: Any,
    address: Any,
    webhook_url: Any,
    tax_rate: Any,
    country: Any = None,
    region: Any = None,
    tax_id: Any = None,
    tax_exempt_reason: Any = None,
    stored_id: bool = False,
) -> tuple[dict[str, Any], list[str]]:
    """The customer's fields, normalized (text stripped, currency upper-cased, locale canonical), and every
    problem found, each as ``field: what was expected, got what``, in the order of the fields. ``stored_id``: the
    id is a stored customer's, not checked again (one with a '/', from before ids were refused it, stays
    updatable)."""
    problems: list[str] = []

    def text(field: str, value: Any, limit: int, required: bool = True) -> str | None:
        return _text(problems, field, value, limit, required)

    fields: dict[str, Any] = {
        "external_id": external_id if stored_id else _external_id(text("external_id", external_id, 255), problems),
        "name": text("name", name, 255),
        "email": _email_address(text("email", email, 320, required=False), problems),
        "currency": _currency_code(text("currency", currency, 3), problems),
        "timezone": _timezone(text("timezone", timezone, 64, required=False), problems),
        "locale": _locale(text("locale", locale, 35, required=False) or "en_US", problems),
        "address": _address_lines(address, problems),
        "webhook_url": _webhook_url(text("webhook_url", webhook_url, 2048, required=False), problems),
        "tax_rate": _tax_rate(tax_rate, problems),
    }
    fields["country"] = _country(text("country", country, 2, required=False), problems)
    fields["region"] = _region(text("region", region, 3, required=False), fields["country"], problems)
    fields["tax_id"] = _tax_id(text("tax_id", tax_id, 64, required=False), fields["country"], problems)
    if fields["country"] is None and fields["tax_id"] is not None:  # a VAT number's prefix says the country
        fields["country"] = tax_id_country(fields["tax_id"])
    fields["tax_exempt_reason"] = text("tax_exempt_reason", tax_exempt_reason, 500, required=False)
    return fields, problems


_LEADING_FIELD = re.compile(r"[a-z_]+")
_BLANK_CUSTOMER = {
    "external_id": "x", "name": "x", "email": None, "currency": "USD", "timezone": None, "locale": "en_US",
    "address": (), "webhook_url": None, "tax_rate": 0,
}


def field_problems(given: Mapping[str, Any], refused: Collection[str] = ()) -> list[str]:
    """The problems of the customer fields in ``given`` alone (``CSV_COLUMNS`` names, values as a request gives
    them), each checked as a new customer's is (a tax id against the country given beside it, or its own prefix
    where the country was ``refused`` for other reasons); fields not given are not checked, and neither is anything
    a stored customer decides (a taken id). For an answer that must name every invalid field when a request is
    refused before the engine sees it."""
    known = {name: value for name, value in given.items() if name in CSV_COLUMNS}
    # (a region and a tax id are checked against the country: without it, a stored one decides, or a refused one)
    checked = set(known) if "country" in known else set(known) - {"region", "tax_id"}
    _, problems = _customer_fields(**(_BLANK_CUSTOMER | known))
    named = (_LEADING_FIELD.match(problem) for problem in problems)
    return [problem for problem, field in zip(problems, named, strict=True) if field and field.group() in checked]


def _text(problems: list[str], field: str, value: Any, limit: int, required: bool) -> str | None:
    """A text field stripped; None when it is missing (a problem if ``required``) or not text."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            problems.append(f"{field}: required, got nothing")
        return None
    if not isinstance(value, str):
        problems.append(f"{field}: expected text, got {type(value).__name__}")
        return None
    value = value.strip()
    if len(value) > limit:
        problems.append(f"{field}: at most {limit} characters, got {len(value)}")
    return value


def _external_id(external: str | None, problems: list[str]) -> str | None:
    """An id names the customer in the API's paths (``/v1/customers/{id}``): no ``/`` (a path's separator, even
    written %2F), and not ``.`` or ``..`` (which clients resolve away)."""
    if external is not None and (not _NO_SPACE.fullmatch(external) or "/" in external or external in (".", "..")):
        problems.append(
            "external_id: expected an id without spaces, control characters or '/', and not '.' or '..', "
            f"got {external!r}"
        )
    return external


def _email_address(mail: str | None, problems: list[str]) -> str | None:
    if mail is not None and not _EMAIL.fullmatch(mail):
        problems.append(f"email: expected an address like name@example.com, got {mail!r}")
    return mail


def _currency_code(code: str | None, problems: list[str]) -> str | None:
    """The currency upper-cased; it must be one ISO 4217 knows."""
    if code is not None:
        code = code.upper()
        if not is_known_currency(code):
            problems.append(f"currency: unknown currency {code!r} (expected an ISO 4217 code such as USD, EUR, JPY)")
    return code


def _timezone(zone: str | None, problems: list[str]) -> str | None:
    """The customer's timezone, or the settings' default when none is given; either must be an IANA name."""
    default = zone is None
    if default:
        zone = get_settings().timezone
    if not _is_timezone(zone):
        source = " (the default timezone from the settings)" if default else ""
        problems.append(f"timezone: unknown timezone {zone!r}{source} (expected an IANA name such as Europe/Berlin)")
    return zone


def _webhook_url(url: str | None, problems: list[str]) -> str | None:
    """An http(s) URL with a host: where the customer's own notifications are posted."""
    if url is not None:
        try:
            parts = urlsplit(url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:  # e.g. an unclosed IPv6 bracket: "http://["
            valid = False
        if not valid:
            problems.append(f"webhook_url: expected an http:// or https:// URL, got {url!r}")
    return url


def _is_timezone(name: str | None) -> bool:
    if not name:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _locale(value: str, problems: list[str]) -> str:
    try:
        return str(Locale.parse(value.replace("-", "_")))
    except (UnknownLocaleError, ValueError):
        problems.append(f"locale: unknown locale {value!r} (expected a locale such as en_US, de_DE, fr)")
        return value


def _address_lines(address: Any, problems: list[str]) -> tuple[str, ...]:
    if isinstance(address, str):
        address = (address,)
    if not isinstance(address, Sequence) or not all(isinstance(line, str) for line in address):
        problems.append("address: expected lines of text")
        return ()
    # A line given with embedded newlines is several lines; blank lines are dropped.
    return tuple(part.strip() for line in address for part in line.splitlines() if part.strip())


_REGION = re.compile(r"[A-Z0-9]{1,3}")


def _country(code: str | None, problems: list[str]) -> str | None:
    """The country upper-cased; an ISO 3166-1 alpha-2 code Babel knows."""
    if code is None:
        return None
    code = code.upper()
    if code in COUNTRY_HINTS:
        problems.append(f"country: {code!r} is not an ISO 3166-1 country code: {COUNTRY_HINTS[code]}")
    elif not is_country(code):
        problems.append(f"country: expected an ISO 3166-1 alpha-2 country code such as DE, got {code!r}")
    return code


def _region(code: str | None, country: str | None, problems: list[str]) -> str | None:
    """A subdivision of the country: ISO 3166-2's part after the dash (``NY`` of ``US-NY``)."""
    if code is None:
        return None
    code = code.upper().removeprefix(f"{country}-")
    if not _REGION.fullmatch(code):
        problems.append(f"region: expected a subdivision code such as NY (ISO 3166-2, no country), got {code!r}")
    elif country is None:
        problems.append("region: a region needs the customer's country")
    return code


def _tax_id(value: str | None, country: str | None, problems: list[str]) -> str | None:
    """The tax id checked offline against the country (format and check digits) and made compact."""
    if value is None:
        return None
    compact, problem = check_tax_id(value, country)
    if problem is not None:
        problems.append(f"tax_id: {value!r}: {problem}")
    return compact


def _tax_rate(value: Any, problems: list[str]) -> Decimal:
    try:
        rate = D(value)
    except (TypeError, ValueError):
        problems.append(f"tax_rate: expected a percentage between 0 and 100 (19 for 19 %), got {value!r}")
        return ZERO
    if not rate.is_finite() or not ZERO <= rate <= HUNDRED:
        problems.append(f"tax_rate: expected a percentage between 0 and 100 (19 for 19 %), got {rate}")
    elif -int(rate.as_tuple().exponent) > MAX_RATE_PLACES:
        problems.append(f"tax_rate: at most {MAX_RATE_PLACES} decimal places (8.875 for 8.875 %), got {rate}")
    elif int(rate.as_tuple().exponent) > 0 or rate.is_signed():  # 1E+1 → 10, -0 → 0: stored as written plainly
        rate = abs(rate).quantize(Decimal(1))
    return rate


# -- importing customers from CSV -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportProblem:
    """A row that was not imported: the file, the line it starts on, and why."""

    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did: the customers created and every row refused, with its line number."""

    source: str
    created: tuple[Customer, ...]
    problems: tuple[ImportProblem, ...]

    @property
    def accepted(self) -> int:
        return len(self.created)

    @property
    def rejected(self) -> int:
        return len(self.problems)

    @property
    def ok(self) -> bool:
        return not self.problems


ProgressCallback = Callable[[int, int], None]


def import_customers(
    engine: Engine, path: str | PathLike[str], progress: ProgressCallback | None = None
) -> ImportReport:
    """Import customers from a CSV file; the good rows are created, every bad row is reported with its line.

    Each created customer with a ``webhook_url`` gets a webhook secret, carried (once) by ``report.created``.

    The header names the columns (any order): ``external_id``, ``name`` and ``currency`` are required;
    ``email``, ``timezone``, ``locale``, ``address``, ``webhook_url`` and ``tax_rate`` are optional. An address
    holds its lines separated by newlines (in a quoted cell) or by ``|``. An existing external id, or one that
    appears again further down the file, is refused. ``progress(done, total)`` is called as rows are stored.

    Raises BillingInputError when the file cannot be read or its header is wrong (nothing is imported then).
    """
    source = str(path)
    rows, problems = _read_csv(Path(path), source)
    fields, invalid = _validate_rows(rows, source)
    created, refused = _store_customers(engine, fields, source, progress)
    problems = sorted([*problems, *invalid, *refused], key=lambda p: p.line)
    return ImportReport(source=source, created=tuple(created), problems=tuple(problems))


Row = tuple[int, dict[str, str]]


def _read_csv(path: Path, source: str) -> tuple[list[Row], list[ImportProblem]]:
    """The data rows, each with the line it starts on, and the rows that are not well-formed."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except OSError as exc:
        raise BillingInputError(f"{source}: cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise BillingInputError(f"{source}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise BillingInputError(f"{source}:1: {exc}") from None
    if header is None:
        raise BillingInputError(f"{source}: empty file (expected a header: {','.join(CSV_COLUMNS)})")
    columns = [name.strip() for name in header]
    _check_header(columns, source)
    rows: list[Row] = []
    problems: list[ImportProblem] = []
    line = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # the reader cannot find the next row reliably: stop here, and say so
            problems.append(ImportProblem(source, line, f"malformed CSV ({exc}); this line and the rest were skipped"))
            break
        if not any(cell.strip() for cell in cells):
            pass  # blank line
        elif len(cells) != len(columns):
            problems.append(
                ImportProblem(source, line, f"expected {len(columns)} fields ({','.join(columns)}), got {len(cells)}")
            )
        else:
            rows.append((line, dict(zip(columns, cells, strict=True))))
        line = reader.line_num + 1
    return rows, problems


def _check_header(columns: list[str], source: str) -> None:
    problems = []
    unknown = [c for c in columns if c not in CSV_COLUMNS]
    if unknown:
        problems.append(f"unknown column {', '.join(map(repr, unknown))} (allowed: {','.join(CSV_COLUMNS)})")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        problems.append(f"repeated column {', '.join(map(repr, repeated))}")
    missing = [c for c in REQUIRED_CSV_COLUMNS if c not in columns]
    if missing:
        problems.append(f"missing required column {', '.join(map(repr, missing))}")
    if problems:
        raise BillingInputError(f"{source}:1: " + "; ".join(problems))


def _validate_rows(rows: list[Row], source: str) -> tuple[list[tuple[int, dict[str, Any]]], list[ImportProblem]]:
    """Each row's customer fields, and each invalid row's problems; a repeated id refers to its first line."""
    valid: list[tuple[int, dict[str, Any]]] = []
    problems: list[ImportProblem] = []
    first_line: dict[str, int] = {}
    for line, cells in rows:
        address = cells.get("address", "")
        fields, row_problems = _customer_fields(
            external_id=cells.get("external_id"),
            name=cells.get("name"),
            email=cells.get("email") or None,
            currency=cells.get("currency"),
            timezone=cells.get("timezone") or None,
            locale=cells.get("locale") or "en_US",
            address=tuple(address.replace("|", "\n").splitlines()),
            webhook_url=cells.get("webhook_url") or None,
            tax_rate=cells.get("tax_rate") or "0",
            country=cells.get("country") or None,
            region=cells.get("region") or None,
            tax_id=cells.get("tax_id") or None,
            tax_exempt_reason=cells.get("tax_exempt_reason") or None,
        )
        external_id = fields["external_id"]
        if external_id is not None and external_id in first_line:
            row_problems.insert(0, f"customer {external_id!r} already appears on line {first_line[external_id]}")
        elif external_id is not None:
            first_line[external_id] = line
        if row_problems:
            problems.append(ImportProblem(source, line, "; ".join(row_problems)))
        else:
            valid.append((line, fields))
    return valid, problems


def _store_customers(
    engine: Engine,
    rows: list[tuple[int, dict[str, Any]]],
    source: str,
    progress: ProgressCallback | None,
) -> tuple[list[Customer], list[ImportProblem]]:
    """Insert the valid rows in one transaction, each behind a savepoint so that a duplicate refuses one row."""
    created: list[Customer] = []
    problems: list[ImportProblem] = []
    total = len(rows)
    if progress:
        progress(0, total)
    with session_scope(engine) as session:
        existing = repository.customers_by_external_id(session, (fields["external_id"] for _, fields in rows))
        for done, (line, fields) in enumerate(rows, start=1):
            duplicate = ImportProblem(source, line, f"customer {fields['external_id']!r} already exists")
            if fields["external_id"] in existing:
                problems.append(duplicate)
            else:
                try:
                    secret = new_webhook_secret() if fields["webhook_url"] else None
                    with session.begin_nested():
                        created.append(repository.add_customer(session, **fields, webhook_secret=secret))
                except IntegrityError:  # created by someone else since we looked
                    problems.append(duplicate)
            if progress:
                progress(done, total)
    return created, problems


# -- subscriptions ---------------------------------------------------------------------------------------


def subscribe(
    engine: Engine, catalog: Catalog, customer_external_id: str, plan_code: str, start: dt.date, quantity: int = 1
) -> Subscription:
    """Subscribe a customer to the version of ``plan_code`` in effect on ``start``, open-ended, with ``quantity``
    seats (more than 1 only on a plan priced per seat).

    A plan with an in-advance fee gets the subscription's opening invoice (its first fee, prorated from
    ``start``) as a draft, in the same transaction.

    Refused: an unknown customer (NotFoundError), an unknown plan or one not yet in effect, a plan priced in
    another currency than the customer's, an overlapping subscription to the same plan or to a plan charging one of
    its meters (each event would be billed twice), a start inside a period the customer is already invoiced for
    (its days there would never be billed), a bad quantity.
    """
    start = _date("start", start)
    plan = _plan_for_start(catalog, plan_code, start)
    quantity = _quantity(quantity, plan)
    with session_scope(engine) as session:
        # Locking the customer serializes concurrent subscribes of one customer, so the overlap check holds.
        customer = _customer_or_raise(session, customer_external_id, for_update=True)
        _check_not_archived(customer)
        _check_currency(plan, customer)
        _check_no_overlap(session, customer, plan.code, start)
        _check_start_not_invoiced(session, customer, plan, start)
        subscription = repository.add_subscription(
            session,
            customer=customer,
            plan_code=plan.code,
            plan_version=plan.version,
            start_date=start,
            quantity=quantity,
        )
        check_meters_charged_once(session, catalog, subscription, {charge.meter for charge in plan.charges})
        write_opening_invoice(session, catalog, customer, subscription, plan)
        return subscription


def cancel_subscription(
    engine: Engine,
    subscription_id: int,
    end_date: dt.date,
    reason: CancelReason | str = "voluntary",
    *,
    catalog: Catalog | None = None,
) -> Subscription:
    """End a subscription on ``end_date`` (exclusive: its last day is the day before) for ``reason``.

    An opening invoice still in draft is dropped when the subscription no longer covers any day (cancelled on its
    start day); otherwise, given the ``catalog``, it is written again for the days covered, in the same
    transaction, so that however it is issued (``billing invoices finalize``, a period's finalization, the
    scheduler) it bills what the billing runs adjust against.

    Refused: an unknown subscription (NotFoundError), a reason other than voluntary or involuntary, an end date
    before the start date, a subscription already cancelled.
    """
    end_date = _date("date", end_date)
    cancel_reason = _reason(reason)
    with session_scope(engine) as session:
        subscription = _subscription_or_raise(session, subscription_id)
        _check_can_end(subscription, end_date, "cancel")
        _check_not_invoiced(session, subscription, end_date, "cancel", plan=_known_plan(catalog, subscription))
        cancelled = repository.cancel_subscription(
            session, subscription.id, end_date=end_date, reason=cancel_reason, cancelled_at=utcnow()
        )
        owner = None if catalog is None else repository.get_customer(session, cancelled.customer_external_id)
        settle_opening_draft(session, catalog, cancelled, owner)
        return cancelled


def change_plan(
    engine: Engine, catalog: Catalog, subscription_id: int, new_plan_code: str, on: dt.date
) -> Subscription:
    """Move a subscription to another plan on ``on``, in one transaction; returns the new subscription.

    The old subscription ends on ``on`` (cancelled, with no churn reason); the new one starts on ``on`` with
    the version of ``new_plan_code`` in effect that day and points back to the old one. Moving to the same
    plan is allowed when it brings a newer version. The new subscription's opening invoice is written as in
    :func:`subscribe`; the old one's, if still a draft, is written again for the days it now covers (dropped if
    none).
    """
    on = _date("date", on)
    plan = _plan_for_start(catalog, new_plan_code, on)
    with session_scope(engine) as session:
        # the customer before the subscription, as every writer of both takes them (never a circle of waits)
        known = _subscription_or_raise(session, subscription_id, locked=False)
        repository.lock_customers(session, [known.customer_external_id])
        old = _subscription_or_raise(session, subscription_id)
        _check_can_end(old, on, "change the plan of")
        _check_not_invoiced(session, old, on, "change the plan of", plan=_known_plan(catalog, old))
        if (old.plan_code, old.plan_version) == (plan.code, plan.version):
            raise BillingInputError(
                f"plan: subscription {old.id} is already on plan {plan.code!r} version {plan.version}"
            )
        customer = _customer_or_raise(session, old.customer_external_id, for_update=True)
        _check_not_archived(customer)
        _check_currency(plan, customer)
        _check_start_not_invoiced(session, customer, plan, on)  # (the new plan's days there, as a subscribe's)
        _check_no_overlap(session, customer, plan.code, on, ignore=old.id)
        ended = repository.cancel_subscription(session, old.id, end_date=on, reason=None, cancelled_at=utcnow())
        settle_opening_draft(session, catalog, ended, customer)
        subscription = repository.add_subscription(
            session,
            customer=customer,
            plan_code=plan.code,
            plan_version=plan.version,
            start_date=on,
            previous_subscription_id=old.id,
            quantity=old.quantity_on(on) if _per_seat(plan) else 1,
            chain_start=old.trial_from,  # its trial counts from the first plan's start: no new trial
        )
        meters = {charge.meter for charge in plan.charges}
        check_meters_charged_once(session, catalog, subscription, meters, ignore=old.id)
        write_opening_invoice(session, catalog, customer, subscription, plan)
        return subscription


def change_quantity(engine: Engine, catalog: Catalog, subscription_id: int, quantity: int, on: dt.date) -> Subscription:
    """Give a subscription ``quantity`` seats from ``on`` on (until a later change), in one transaction; returns
    the subscription with its quantities. A change on a day that already has one replaces it.

    The billing run settles it: in arrears each seat is billed for the days it is held; in advance the added
    seats are charged for the rest of the fee period, or the removed ones credited, on the invoice of the billing
    period ``on`` falls in. On the start date it is the quantity at the start (its opening invoice, while a
    draft, is written again).

    Refused: an unknown subscription (NotFoundError), a plan not priced per seat, a quantity below 1, a date
    before the start or from the end on, a date inside a period already invoiced.
    """
    on = _date("date", on)
    with session_scope(engine) as session:
        subscription = _subscription_or_raise(session, subscription_id)
        plan = _subscription_plan(catalog, subscription)
        quantity = _quantity(quantity, plan)
        if on < subscription.start_date or (subscription.end_date is not None and on >= subscription.end_date):
            last = subscription.end_date.isoformat() if subscription.end_date else "open-ended"
            raise BillingInputError(
                f"date: {on.isoformat()} is outside subscription {subscription.id} "
                f"(from {subscription.start_date.isoformat()}, until {last})"
            )
        _check_not_invoiced(session, subscription, on, "change the quantity of", "change it from", plan=plan)
        if on == subscription.start_date:
            _check_opening_not_issued(session, subscription)
        customer = _customer_or_raise(session, subscription.customer_external_id)
        changed = repository.set_quantity(session, subscription, quantity, on)
        if on == subscription.start_date:
            settle_opening_draft(session, catalog, changed, customer)
        return changed


def get_subscription(engine: Engine, subscription_id: int) -> Subscription:
    """The subscription with ``subscription_id``; NotFoundError if there is none."""
    with _reading(engine) as session:
        subscription = repository.get_subscription(session, subscription_id)
    if subscription is None:
        raise NotFoundError(f"unknown subscription {subscription_id}")
    return subscription


def list_subscriptions(
    engine: Engine, customer: str | None = None, status: SubscriptionStatus | str | None = None
) -> list[Subscription]:
    """Subscriptions, optionally of one customer (external id; NotFoundError if unknown) and one status."""
    if status is not None:
        try:
            status = SubscriptionStatus(status)
        except ValueError:
            raise BillingInputError(f"status: expected active or cancelled, got {status!r}") from None
    with _reading(engine) as session:
        if customer is not None:
            _customer_or_raise(session, customer)
        return repository.list_subscriptions(session, customer=customer, status=status)


def subscriptions_page(
    engine: Engine,
    *,
    limit: int,
    after: int | None = None,
    before: int | None = None,
    customer: str | None = None,
    status: SubscriptionStatus | str | None = None,
) -> tuple[list[Subscription], bool]:
    """At most ``limit`` subscriptions by id, after ``after`` or right before ``before``, optionally of one
    customer (external id; NotFoundError if unknown) and one status; and whether more lie that way."""
    if status is not None:
        try:
            status = SubscriptionStatus(status)
        except ValueError:
            raise BillingInputError(f"status: expected active or cancelled, got {status!r}") from None
    with _reading(engine) as session:
        if customer is not None:
            _customer_or_raise(session, customer)
        return repository.subscriptions_page(
            session, limit=limit, after=after, before=before, customer=customer, status=status
        )


def settle_opening_draft(
    session: Session, catalog: Catalog | None, subscription: Subscription, customer: Customer | None = None
) -> None:
    """An ended subscription's opening invoice, while it is a draft: dropped if the subscription covers no day;
    else, given the catalog, written again for the days it covers (in ``session``'s transaction: every path that
    ends a subscription calls it, a Stripe webhook's involuntary cancellation included)."""
    if not subscription.overlaps(subscription.start_date, None):
        drop_opening_draft(session, subscription.id)
        return
    if catalog is None or customer is None:
        return
    try:
        plan = opening_plan(session, catalog, subscription)
    except UnknownPlanError:
        return  # left as it is; the billing run reports the unknown plan
    write_opening_invoice(session, catalog, customer, subscription, plan, only_draft=True)


# -- shared checks ---------------------------------------------------------------------------------------


def _reading(engine: Engine) -> AbstractContextManager[Session]:
    """A read-only transaction (on SQLite it does not take the write lock)."""
    return session_scope(read_only(engine))


def _date(field: str, value: Any) -> dt.date:
    """A day a subscription starts, changes or ends on: in 1971-9998, the years billing periods are made of (as
    the API's days are), so that its periods, opening invoice and fee periods can be computed."""
    if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
        raise BillingInputError(f"{field}: expected a date (YYYY-MM-DD), got {value!r}")
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise BillingInputError(
            f"{field}: expected a date from {FIRST_YEAR}-01-01 to {LAST_YEAR}-12-31, got {value.isoformat()}"
        )
    return value


def _reason(reason: CancelReason | str) -> CancelReason:
    try:
        return CancelReason(reason)
    except ValueError:
        raise BillingInputError(f"reason: expected voluntary or involuntary, got {reason!r}") from None


def _customer_or_raise(session: Session, external_id: str, *, for_update: bool = False) -> Customer:
    customer = repository.get_customer(session, external_id, for_update=for_update)
    if customer is None:
        raise NotFoundError(f"unknown customer {external_id!r}")
    return customer


def _subscription_or_raise(session: Session, subscription_id: int, *, locked: bool = True) -> Subscription:
    subscription = repository.get_subscription(session, subscription_id, for_update=locked)
    if subscription is None:
        raise NotFoundError(f"unknown subscription {subscription_id}")
    return subscription


def _plan_for_start(catalog: Catalog, plan_code: str, start: dt.date) -> Plan:
    try:
        return catalog.plan_for_start(plan_code, start)
    except UnknownPlanError as exc:
        raise BillingInputError(f"plan: {exc}") from None


MAX_QUANTITY = 1_000_000


def _per_seat(plan: Plan) -> bool:
    return plan.subscription is not None and plan.subscription.seats


def _quantity(value: Any, plan: Plan) -> int:
    """A quantity of seats: a whole number from 1 to ``MAX_QUANTITY``, above 1 only on a plan priced per seat."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_QUANTITY:
        raise BillingInputError(f"quantity: expected a whole number of seats from 1 to {MAX_QUANTITY:,}, got {value!r}")
    if value != 1 and not _per_seat(plan):
        raise BillingInputError(
            f"quantity: plan {plan.code!r} is not priced per seat (its [subscription] has no seats = true), so its "
            f"quantity is 1, got {value}"
        )
    return value


def _subscription_plan(catalog: Catalog, subscription: Subscription) -> Plan:
    try:
        return catalog.plan(subscription.plan_code, subscription.plan_version)
    except UnknownPlanError as exc:
        raise BillingInputError(f"plan: {exc}") from None


def _known_plan(catalog: Catalog | None, subscription: Subscription) -> Plan | None:
    """The subscription's plan version, if the catalog is given and still has it."""
    if catalog is None:
        return None
    try:
        return catalog.plan(subscription.plan_code, subscription.plan_version)
    except UnknownPlanError:
        return None


def _check_opening_not_issued(session: Session, subscription: Subscription) -> None:
    """The quantity at the start is what the opening invoice bills: once that invoice is issued, it stays."""
    known = store.stored_drafts(session, [opening_key(subscription.id)]).get(opening_key(subscription.id))
    if known is not None and known.status != InvoiceStatus.DRAFT.value:
        raise BillingInputError(
            f"date: subscription {subscription.id}'s opening invoice, which bills its seats from "
            f"{subscription.start_date.isoformat()}, is issued; change the quantity from a later day"
        )


def _check_currency(plan: Plan, customer: Customer) -> None:
    if plan.currency != customer.currency:
        raise BillingInputError(
            f"plan: {plan.code!r} is priced in {plan.currency} but customer {customer.external_id!r} is billed "
            f"in {customer.currency}"
        )


def _check_can_end(subscription: Subscription, end: dt.date, action: str) -> None:
    if subscription.status is SubscriptionStatus.CANCELLED:
        ends = subscription.end_date.isoformat() if subscription.end_date else "open"
        raise ConflictError(f"subscription {subscription.id} is already cancelled (end date {ends})")
    if end < subscription.start_date:
        raise BillingInputError(
            f"date: cannot {action} subscription {subscription.id} on {end.isoformat()}, before its start date "
            f"{subscription.start_date.isoformat()}"
        )


def _check_not_invoiced(
    session: Session,
    subscription: Subscription,
    end: dt.date,
    action: str,
    advice: str = "end it on",
    *,
    plan: Plan | None = None,
) -> None:
    """An end date inside a period whose invoice is already issued would leave that invoice billing days the
    subscription no longer has; such a correction is a credit note, so the date is refused with that advice.
    Given the subscription's ``plan``, only the invoices of its own billing periods count (an anniversary
    subscription's days from the 15th are not on the calendar month's invoice of another plan); without it, every
    period invoice of the customer."""
    of = None
    if plan is not None:
        schedule = schedule_of(subscription, plan)

        def of(start: dt.date, end: dt.date) -> bool:
            return schedule.billing_period(start) == Period(start, end)

    invoiced_until = store.invoiced_until(session, subscription.customer_external_id, of=of)
    if invoiced_until is not None and end < invoiced_until:
        last_day = (invoiced_until - dt.timedelta(days=1)).isoformat()
        raise BillingInputError(
            f"date: cannot {action} subscription {subscription.id} on {end.isoformat()}: it is invoiced through "
            f"{last_day}; {advice} {invoiced_until.isoformat()} or later, and correct issued invoices with a "
            "credit note (billing invoices credit)"
        )


def _check_start_not_invoiced(session: Session, customer: Customer, plan: Plan, start: dt.date) -> None:
    """A plan billed on calendar months started inside a month whose invoice is issued would never be billed for
    its days there (nor for the fee billed in advance on that invoice): refused, as an end date there is. (A
    weekly or anniversary plan is billed on periods of its own, none of them issued before it starts.)"""
    if plan.interval is Interval.WEEK or plan.billing_anchor is not BillingAnchor.CALENDAR:
        return
    invoiced_until = store.invoiced_until(session, customer.external_id, calendar_months=True)
    if invoiced_until is not None and start < invoiced_until:
        last_day = (invoiced_until - dt.timedelta(days=1)).isoformat()
        raise BillingInputError(
            f"start: cannot start a subscription of customer {customer.external_id!r} on {start.isoformat()}: it is "
            f"invoiced through {last_day}; start it on {invoiced_until.isoformat()} or later"
        )


def _check_no_overlap(
    session: Session, customer: Customer, plan_code: str, start: dt.date, ignore: int | None = None
) -> None:
    """A new open-ended subscription from ``start`` must not share a day with one to the same plan."""
    for other in _overlapping(repository.subscriptions_of(session, customer.id, plan_code), start, ignore):
        until = f"until {other.end_date.isoformat()}" if other.end_date else "open-ended"
        raise ConflictError(
            f"customer {customer.external_id!r} already has subscription {other.id} to plan {plan_code!r} "
            f"from {other.start_date.isoformat()} ({until}), which overlaps a start on {start.isoformat()}"
        )


def _overlapping(subscriptions: list[Subscription], start: dt.date, ignore: int | None) -> Iterator[Subscription]:
    return (s for s in subscriptions if s.id != ignore and s.overlaps(start, None))
