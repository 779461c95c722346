"""Console sessions (``billing.staff``): an API key for a session, its expiry, signing out, a revoked key, and the
CSRF token tied to the session. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from billing import staff
from billing.apikeys import create_api_key, revoke_api_key
from billing.customers import create_customer
from billing.db import session_scope
from billing.db.staff_tables import StaffSessionRow
from billing.errors import BillingInputError

pytestmark = pytest.mark.db

NOON = dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC)


def test_a_key_opens_a_session_that_lasts_twelve_hours(engine):
    _, key = create_api_key(engine, "Ada")
    opened, token = staff.sign_in(engine, key, now=NOON)
    assert token.startswith("bs_") and key not in token
    assert (opened.key_name, opened.actor, opened.expires_at) == ("Ada", "console: Ada", NOON + dt.timedelta(hours=12))
    assert staff.session_of(engine, token, now=NOON + dt.timedelta(hours=11, minutes=59)) is not None
    assert staff.session_of(engine, token, now=NOON + dt.timedelta(hours=12)) is None  # expired
    with session_scope(engine) as session:  # only the token's hash is stored
        assert session.scalar(select(StaffSessionRow.token_hash)) != token


@pytest.mark.parametrize("bound", [False, True])
def test_unknown_revoked_and_customer_bound_keys_open_nothing(engine, bound):
    create_customer(engine, "acme", "Acme", None, "USD", "UTC")
    made, key = create_api_key(engine, "k", customer="acme" if bound else None)
    if not bound:
        revoke_api_key(engine, made.id)
    for attempt in (key, "bk_unknown", ""):
        with pytest.raises(BillingInputError, match="unknown, revoked, or bound to a customer"):
            staff.sign_in(engine, attempt)


def test_signing_out_and_revoking_the_key_end_the_session(engine):
    made, key = create_api_key(engine, "Ada")
    _, first = staff.sign_in(engine, key)
    _, second = staff.sign_in(engine, key)
    assert staff.sign_out(engine, first) is True
    assert staff.sign_out(engine, first) is False  # once
    assert staff.session_of(engine, first) is None and staff.session_of(engine, second) is not None
    revoke_api_key(engine, made.id)
    assert staff.session_of(engine, second) is None
    assert staff.session_of(engine, "bs_" + "x" * 500) is None and staff.session_of(engine, None) is None


def test_the_csrf_token_belongs_to_its_session(engine):
    _, key = create_api_key(engine, "Ada")
    _, one = staff.sign_in(engine, key)
    _, two = staff.sign_in(engine, key)
    assert staff.csrf_matches(one, staff.csrf_token(one))
    assert not staff.csrf_matches(one, staff.csrf_token(two))
    assert not staff.csrf_matches(one, "") and not staff.csrf_matches(None, staff.csrf_token(one))


def test_a_notice_is_shown_once(engine):
    _, key = create_api_key(engine, "Ada")
    opened, token = staff.sign_in(engine, key)
    staff.set_notice(engine, opened.id, "ok:Invoice INV-2026-000001 issued.")
    found = staff.session_of(engine, token)
    assert staff.take_notice(engine, found) == "ok:Invoice INV-2026-000001 issued."
    assert staff.take_notice(engine, staff.session_of(engine, token)) is None


def test_sessions_expired_a_month_ago_are_removed_at_the_next_sign_in(engine):
    _, key = create_api_key(engine, "Ada")
    staff.sign_in(engine, key, now=NOON - dt.timedelta(days=40))
    staff.sign_in(engine, key, now=NOON - dt.timedelta(days=2))
    staff.sign_in(engine, key, now=NOON)
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(StaffSessionRow)) == 2
