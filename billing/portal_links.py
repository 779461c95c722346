"""Links to the customer portal: signed, expiring, for one customer (``billing portal link CUSTOMER``,
``POST /v1/customers/{id}/portal_links``).

A link is ``<public_url>/portal/link/<token>``. The token is ``v1.<payload>.<signature>``: the payload the
customer's external id, the instant the link expires in seconds and the instant it was made in milliseconds
(``{"c": "acme", "e": 1767225600, "i": 1766620800000}``, JSON in UTF-8 in unpadded base64url), the signature
HMAC-SHA256 of ``v1.<payload>`` under the ``portal_secret`` setting (unpadded base64url). No link is stored:
whoever holds the secret makes links, and a link is good until it expires, or until the customer's links are
revoked (``billing portal revoke CUSTOMER``: every link made for that customer before then is refused, one made
before links held the instant they were made too; table ``portal_link_revocations``). Changing
``portal_secret`` ends every link of every customer. Python's own ``hmac`` signs and checks it (compared in
constant time); the format is small enough that a further library would add nothing but a dependency. A token
of more than :data:`MAX_TOKEN` characters, or with any character beyond ASCII, is refused before anything is
compared.

Opening a link gives the browser a cookie holding the same token (``billing.web.portal``), checked again on
every page: the portal stops answering when the link expires.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass

from sqlalchemy import Engine, select

from billing.config import Settings
from billing.customers import get_customer
from billing.db import session_scope
from billing.db.portal_tables import PortalRevocationRow
from billing.errors import BillingInputError
from dbkit import as_utc, insert_ignoring, read_only, utcnow

__all__ = [
    "DEFAULT_DAYS",
    "MAX_DAYS",
    "MAX_TOKEN",
    "MIN_SECRET",
    "PATH",
    "PortalAccess",
    "PortalLink",
    "PortalLinkError",
    "PortalRevocation",
    "check_not_revoked",
    "create_portal_link",
    "portal_token",
    "revoke_portal_links",
    "revoked_at",
    "verify_portal_token",
]

VERSION = "v1"
DEFAULT_DAYS = 7
MAX_DAYS = 90
MIN_SECRET = 32
"""The fewest characters ``portal_secret`` may have."""
MAX_TOKEN = 2048
"""The most characters a token may have (a customer id of 255 characters makes one of about 420)."""
PATH = "/portal/link/"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class PortalLinkError(BillingInputError):
    """A portal link that cannot be made (no secret set, an unknown customer, a bad number of days), or a token
    that is not one of ours, or has expired (``expired``)."""

    def __init__(self, message: str, *, expired: bool = False, customer: str | None = None) -> None:
        super().__init__(message)
        self.expired = expired
        self.customer = customer


@dataclass(frozen=True, slots=True)
class PortalLink:
    """A link made for ``customer``, good until ``expires_at``."""

    customer: str
    token: str
    url: str
    expires_at: dt.datetime


@dataclass(frozen=True, slots=True)
class PortalAccess:
    """What a valid token gives: ``customer``'s portal until ``expires_at``; ``issued_at``: when the link was made
    (None for a link made before links held it)."""

    customer: str
    expires_at: dt.datetime
    issued_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class PortalRevocation:
    """``customer``'s portal links made before ``revoked_at`` are refused."""

    customer: str
    revoked_at: dt.datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(settings: Settings) -> bytes:
    secret = settings.secret("portal_secret")
    if len(secret) < MIN_SECRET:
        raise PortalLinkError(
            f"portal_secret: set it (BILLING_PORTAL_SECRET or portal_secret in the configuration) to at least "
            f"{MIN_SECRET} random characters to make and open portal links, e.g. the output of "
            'python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    return secret.encode("utf-8")


def _signature(key: bytes, signed: str) -> str:
    return _b64(hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest())


def portal_token(
    settings: Settings, customer: str, expires_at: dt.datetime, issued_at: dt.datetime | None = None
) -> str:
    """The token of a link for ``customer`` that expires at ``expires_at``, made at ``issued_at`` (default: now)."""
    # UTF-8, not \u escapes: a customer id of 255 characters of any script still makes a token of at most
    # MAX_TOKEN characters (255 × 4 bytes in base64, about 1,400)
    issued = _millis(issued_at or utcnow())
    fields = {"c": customer, "e": int(expires_at.timestamp()), "i": issued}
    payload = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
    signed = f"{VERSION}.{_b64(payload.encode('utf-8'))}"
    return f"{signed}.{_signature(_key(settings), signed)}"


def verify_portal_token(settings: Settings, token: str, now: dt.datetime | None = None) -> PortalAccess:
    """The customer a token is for and until when, if it is ours (its signature checks) and has not expired.

    Raises PortalLinkError otherwise (``expired`` True, with ``customer``, for one that was ours but expired).
    """
    key = _key(settings)
    if len(token) > MAX_TOKEN or not token.isascii():  # ours are short and ASCII: anything else is not compared
        raise PortalLinkError("not a portal link")
    version, _, rest = token.partition(".")
    payload, _, signature = rest.partition(".")
    if version != VERSION or not payload or not signature:
        raise PortalLinkError("not a portal link")
    expected = _signature(key, f"{version}.{payload}").encode("ascii")
    if not hmac.compare_digest(expected, signature.encode("ascii")):
        raise PortalLinkError("not a portal link (its signature does not check)")
    try:
        fields = json.loads(_unb64(payload))
        customer, expires, issued = fields["c"], fields["e"], fields.get("i")
        if not isinstance(customer, str) or type(expires) is not int or type(issued) not in (int, type(None)):
            raise TypeError(fields)
        expires_at = dt.datetime.fromtimestamp(expires, dt.UTC)
        issued_at = None if issued is None else _from_millis(issued)
    except (binascii.Error, ValueError, KeyError, TypeError, OverflowError, OSError):
        raise PortalLinkError("not a portal link") from None
    if (now or utcnow()).timestamp() >= expires:
        raise PortalLinkError("this portal link has expired", expired=True, customer=customer)
    return PortalAccess(customer, expires_at, issued_at)


def create_portal_link(
    engine: Engine, settings: Settings, customer: str, *, days: int = DEFAULT_DAYS, now: dt.datetime | None = None
) -> PortalLink:
    """A link to ``customer``'s portal, good for ``days`` days (1 to :data:`MAX_DAYS`) from ``now``.

    Raises NotFoundError for an unknown customer, PortalLinkError without a secret or for a bad ``days``.
    """
    if not 1 <= days <= MAX_DAYS:
        raise PortalLinkError(f"--days: expected 1 to {MAX_DAYS} days, got {days}")
    _key(settings)
    found = get_customer(engine, customer)
    issued_at = now or utcnow()
    expires_at = issued_at.replace(microsecond=0) + dt.timedelta(days=days)
    token = portal_token(settings, found.external_id, expires_at, issued_at)
    return PortalLink(found.external_id, token, f"{settings.public_url.rstrip('/')}{PATH}{token}", expires_at)


def _millis(instant: dt.datetime) -> int:
    """An instant in whole milliseconds since the epoch (exact: no float on the way)."""
    return (as_utc(instant) - EPOCH) // dt.timedelta(milliseconds=1)


def _from_millis(millis: int) -> dt.datetime:
    return EPOCH + dt.timedelta(milliseconds=millis)


def revoke_portal_links(engine: Engine, customer: str, *, now: dt.datetime | None = None) -> PortalRevocation:
    """End every portal link made for ``customer`` before ``now`` (default: the clock, to the millisecond): each
    is refused from the next page it opens on, the one already open included (its cookie holds the link). Links
    made afterwards open as usual. Revoking again moves the instant on. NotFoundError for an unknown customer."""
    found = get_customer(engine, customer)
    instant = _from_millis(_millis(now or utcnow()))
    with session_scope(engine) as session:
        # two revocations at once: the first inserts, both then move the row's instant on under its lock
        insert_ignoring(
            session,
            PortalRevocationRow.__table__,
            {"customer_external_id": found.external_id, "revoked_at": instant},
        )
        row = session.get(PortalRevocationRow, found.external_id, with_for_update=True)
        assert row is not None
        if as_utc(row.revoked_at) < instant:
            row.revoked_at = instant
        instant = as_utc(row.revoked_at)
    return PortalRevocation(found.external_id, instant)


def revoked_at(engine: Engine, customer: str) -> dt.datetime | None:
    """When ``customer``'s portal links were last revoked (the links made before then are refused); None if
    never."""
    with session_scope(read_only(engine)) as session:
        found = session.scalar(
            select(PortalRevocationRow.revoked_at).where(PortalRevocationRow.customer_external_id == customer)
        )
    return None if found is None else as_utc(found)


def check_not_revoked(engine: Engine, access: PortalAccess) -> None:
    """Raise PortalLinkError (``expired``: the customer is told the link has ended, in its language) if the
    customer's links were revoked after this one was made (or it was made before links held that instant)."""
    revoked = revoked_at(engine, access.customer)
    if revoked is not None and (access.issued_at is None or access.issued_at <= revoked):
        raise PortalLinkError("this portal link has been revoked", expired=True, customer=access.customer)
