"""Links to the customer portal (``billing.portal_links``, ``billing portal link``): signed with ``portal_secret``,
good until they expire and not a second after, refused when any part of them is changed or another secret signed
them; made only for a customer that exists, for 1 to 90 days."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from typer.testing import CliRunner

from billing.cli import app
from billing.config import Settings, get_settings
from billing.customers import create_customer
from billing.errors import NotFoundError
from billing.portal_links import (
    PortalLinkError,
    check_not_revoked,
    create_portal_link,
    portal_token,
    revoke_portal_links,
    verify_portal_token,
)

SECRET = "a-portal-secret-of-at-least-32-characters"
SETTINGS = Settings(portal_secret=SECRET, public_url="https://billing.example.com/")
NOW = dt.datetime(2026, 11, 3, 10, 0, tzinfo=dt.UTC)
runner = CliRunner()


def test_a_token_names_its_customer_until_it_expires_and_not_a_second_longer():
    token = portal_token(SETTINGS, "acme", NOW + dt.timedelta(days=7))
    access = verify_portal_token(SETTINGS, token, NOW + dt.timedelta(days=7) - dt.timedelta(seconds=1))
    assert (access.customer, access.expires_at) == ("acme", NOW + dt.timedelta(days=7))
    with pytest.raises(PortalLinkError, match="expired") as expired:
        verify_portal_token(SETTINGS, token, NOW + dt.timedelta(days=7))
    assert (expired.value.expired, expired.value.customer) == (True, "acme")


def test_a_changed_token_or_one_signed_with_another_secret_is_refused():
    token = portal_token(SETTINGS, "acme", NOW + dt.timedelta(days=7))
    version, payload, signature = token.split(".")
    theirs = portal_token(SETTINGS, "globex", NOW + dt.timedelta(days=7)).split(".")[1]
    other = Settings(portal_secret="another-secret-of-at-least-32-characters")
    for forged in (
        f"{version}.{theirs}.{signature}",  # another customer's payload under acme's signature
        f"{version}.{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}",  # one character of it changed
        f"v2.{payload}.{signature}",
        f"{version}.{payload}",
        "",
        portal_token(other, "acme", NOW + dt.timedelta(days=7)),
    ):
        with pytest.raises(PortalLinkError, match="not a portal link") as refused:
            verify_portal_token(SETTINGS, forged, NOW)
        assert not refused.value.expired


def test_no_link_without_a_secret_long_enough():
    for settings in (Settings(portal_secret=None), Settings(portal_secret="short")):
        with pytest.raises(PortalLinkError, match="portal_secret: set it"):
            portal_token(settings, "acme", NOW)
        with pytest.raises(PortalLinkError, match="portal_secret"):
            verify_portal_token(settings, "v1.e30.x", NOW)


@pytest.mark.db
def test_a_link_is_made_for_a_customer_that_exists_for_1_to_90_days(engine):
    create_customer(engine, "acme", "Acme", None, "USD", "UTC")
    link = create_portal_link(engine, SETTINGS, "acme", days=3, now=NOW)
    assert link.url == f"https://billing.example.com/portal/link/{link.token}"
    assert link.expires_at == NOW + dt.timedelta(days=3)
    assert verify_portal_token(SETTINGS, link.token, NOW).customer == "acme"
    with pytest.raises(NotFoundError):
        create_portal_link(engine, SETTINGS, "nobody", now=NOW)
    for days in (0, 91):
        with pytest.raises(PortalLinkError, match="--days: expected 1 to 90 days"):
            create_portal_link(engine, SETTINGS, "acme", days=days, now=NOW)


@pytest.mark.db
def test_billing_portal_link_prints_the_link_or_says_what_is_missing(cli_env, engine, monkeypatch):
    create_customer(engine, "acme", "Acme", None, "USD", "UTC")
    missing = runner.invoke(app, ["portal", "link", "acme"])
    assert missing.exit_code == 1 and "portal_secret: set it" in missing.output
    monkeypatch.setenv("BILLING_PORTAL_SECRET", SECRET)
    monkeypatch.setenv("BILLING_PUBLIC_URL", "https://billing.example.com")
    get_settings.cache_clear()
    made = runner.invoke(app, ["portal", "link", "acme", "--days", "2", "--json"])
    assert made.exit_code == 0, made.output
    document = json.loads(made.stdout)
    assert set(document) == {"object", "customer", "url", "expires_at"} and document["customer"] == "acme"
    token = document["url"].removeprefix("https://billing.example.com/portal/link/")
    assert verify_portal_token(get_settings(), token).customer == "acme"
    assert runner.invoke(app, ["portal", "link", "acme", "--days", "0"]).exit_code == 2
    unknown = runner.invoke(app, ["portal", "link", "nobody"])
    assert unknown.exit_code == 1 and "nobody" in unknown.output


def _signed(settings: Settings, fields: object) -> str:
    """A token signed with ``settings``' secret whose payload is ``fields`` as JSON (any shape)."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    signed = "v1." + b64(json.dumps(fields).encode("utf-8"))
    digest = hmac.new(SECRET.encode("utf-8"), signed.encode("ascii"), hashlib.sha256).digest()
    return f"{signed}.{b64(digest)}"


def test_a_token_with_characters_beyond_ascii_or_too_long_is_refused_not_an_error():
    token = portal_token(SETTINGS, "acme", NOW + dt.timedelta(days=7))
    version, payload, signature = token.split(".")
    for forged in (
        f"{version}.{payload}.{signature[:-1]}é",  # the signature (hmac.compare_digest refuses such str)
        f"{version}.{payload}é.{signature}",  # the payload (it is signed as ASCII)
        f"{version}.{payload}.{signature}\udcff",
        f"{version}.{payload}.{signature}{'A' * 3000}",
    ):
        with pytest.raises(PortalLinkError, match="not a portal link"):
            verify_portal_token(SETTINGS, forged, NOW)


def test_a_signed_token_whose_expiry_is_not_an_instant_is_refused():
    for fields in (
        {"c": "acme", "e": 10**20},  # beyond any date
        {"c": "acme", "e": -(10**20)},
        {"c": "acme", "e": "1799999999"},
        {"c": "acme", "e": 1799999999.5},
        {"c": "acme", "e": True},
        {"c": 42, "e": 1799999999},
        ["acme", 1799999999],
    ):
        with pytest.raises(PortalLinkError, match="not a portal link"):
            verify_portal_token(SETTINGS, _signed(SETTINGS, fields), NOW)
    assert verify_portal_token(SETTINGS, _signed(SETTINGS, {"c": "acme", "e": 1799999999}), NOW).customer == "acme"


def test_a_customer_id_of_255_characters_of_any_script_makes_a_link_that_opens():
    for customer in ("é" * 255, "顧" * 255, "😀" * 255, "a" * 255):
        token = portal_token(SETTINGS, customer, NOW + dt.timedelta(days=90))
        assert token.isascii() and len(token) <= 2048, len(token)
        assert verify_portal_token(SETTINGS, token, NOW).customer == customer


@pytest.mark.db
def test_revoking_refuses_the_links_made_before_to_the_millisecond_and_links_without_their_making_instant(engine):
    create_customer(engine, "acme", "Acme", None, "USD", "UTC")
    create_customer(engine, "globex", "Globex", None, "USD", "UTC")
    before = create_portal_link(engine, SETTINGS, "acme", now=NOW)
    unstamped = _signed(SETTINGS, {"c": "acme", "e": int((NOW + dt.timedelta(days=7)).timestamp())})
    theirs = create_portal_link(engine, SETTINGS, "globex", now=NOW)
    check_not_revoked(engine, verify_portal_token(SETTINGS, unstamped, NOW))  # nothing revoked yet: it opens

    revoked = revoke_portal_links(engine, "acme", now=NOW + dt.timedelta(hours=1, microseconds=2500))

    assert (revoked.customer, revoked.revoked_at) == ("acme", NOW + dt.timedelta(hours=1, milliseconds=2))
    at_once = create_portal_link(engine, SETTINGS, "acme", now=revoked.revoked_at)
    after = create_portal_link(engine, SETTINGS, "acme", now=revoked.revoked_at + dt.timedelta(milliseconds=1))
    for link in (before.token, unstamped, at_once.token):
        access = verify_portal_token(SETTINGS, link, NOW + dt.timedelta(hours=2))
        with pytest.raises(PortalLinkError, match="has been revoked") as refused:
            check_not_revoked(engine, access)
        assert (refused.value.expired, refused.value.customer) == (True, "acme")
    for link in (after.token, theirs.token):
        check_not_revoked(engine, verify_portal_token(SETTINGS, link, NOW + dt.timedelta(hours=2)))
    # revoking again moves the instant on, never back
    assert revoke_portal_links(engine, "acme", now=NOW).revoked_at == revoked.revoked_at
    again = revoke_portal_links(engine, "acme", now=NOW + dt.timedelta(days=1))
    assert again.revoked_at == NOW + dt.timedelta(days=1)
    with pytest.raises(PortalLinkError, match="has been revoked"):
        check_not_revoked(engine, verify_portal_token(SETTINGS, after.token, NOW + dt.timedelta(days=2)))
    with pytest.raises(NotFoundError):
        revoke_portal_links(engine, "nobody")


@pytest.mark.db
def test_billing_portal_revoke_ends_the_links_and_says_so(cli_env, engine):
    create_customer(engine, "acme", "Acme", None, "USD", "UTC")
    done = runner.invoke(app, ["portal", "revoke", "acme", "--json"])
    assert done.exit_code == 0, done.output
    document = json.loads(done.stdout)
    assert (document["object"], document["customer"]) == ("portal_link_revocation", "acme")
    at = dt.datetime.fromisoformat(document["revoked_at"].replace("Z", "+00:00"))
    assert dt.timedelta(0) <= dt.datetime.now(dt.UTC) - at < dt.timedelta(minutes=5)
    said = runner.invoke(app, ["portal", "revoke", "acme"])
    assert said.exit_code == 0 and "every portal link made for acme before" in said.stdout
    unknown = runner.invoke(app, ["portal", "revoke", "nobody"])
    assert unknown.exit_code == 1 and "nobody" in unknown.output
