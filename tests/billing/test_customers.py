"""Customers and subscriptions through the service layer, on every database backend."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import event

from billing import customers as service
from billing.config import get_settings
from billing.core.domain import CancelReason, Subscription, SubscriptionStatus
from billing.db import repository, session_scope
from billing.errors import BillingInputError, NotFoundError
from pricing_plans.loader import loads_catalog
from pricing_plans.models import Catalog

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[plans.starter]
name = "Starter"
currency = "EUR"
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = "0.001" }]

[plans.starter_2024]
code = "starter"
version = 2
effective_from = 2024-03-01
name = "Starter"
currency = "EUR"
charges = [{ meter = "api_calls", model = "per_unit", unit_amount = "0.002" }]

[plans.pro]
name = "Pro"
currency = "EUR"
subscription = { fee = 49 }

[plans.dollar]
name = "Dollar"
currency = "USD"
"""

D = dt.date


@pytest.fixture
def catalog() -> Catalog:
    loaded, problems = loads_catalog(CATALOG, "test.toml")
    assert problems == [] and loaded is not None
    return loaded


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Lets a test change settings through BILLING_* variables, with no configuration file (a working directory
    without a config.toml); the cached settings are reset around it."""
    monkeypatch.delenv("BILLING_CONFIG", raising=False)
    monkeypatch.delenv("BILLING_TIMEZONE", raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def add(engine, external_id: str = "acme", currency: str = "EUR", **kwargs):
    kwargs.setdefault("name", "Acme GmbH")
    kwargs.setdefault("email", "billing@acme.example")
    return service.create_customer(engine, external_id, currency=currency, **kwargs)


def errors_of(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    return str(excinfo.value)


# -- customers -------------------------------------------------------------------------------------------


def test_create_customer_keeps_every_field(engine):
    created = add(
        engine,
        timezone="Europe/Berlin",
        locale="de-DE",
        address=("Hauptstraße 1", "10115 Berlin"),
        webhook_url="https://hooks.acme.example/billing",
        tax_rate="19.5",
        currency="eur",
    )
    stored = service.get_customer(engine, "acme")
    assert stored == created
    assert stored.external_id == "acme"
    assert stored.currency == "EUR"
    assert stored.timezone == "Europe/Berlin"
    assert stored.locale == "de_DE"
    assert stored.address == ("Hauptstraße 1", "10115 Berlin")
    assert stored.webhook_url == "https://hooks.acme.example/billing"
    assert stored.tax_rate == Decimal("19.5") and isinstance(stored.tax_rate, Decimal)
    assert re.fullmatch(r"whsec_[0-9a-f]{48}", stored.webhook_secret)


def test_a_customer_with_a_webhook_url_gets_a_secret_of_its_own_kept_out_of_its_repr(engine):
    acme = add(engine, "acme", webhook_url="https://hooks.acme.example/billing")
    globex = add(engine, "globex", webhook_url="https://hooks.globex.example/billing")
    plain = add(engine, "plain")
    assert acme.webhook_secret.startswith("whsec_") and globex.webhook_secret.startswith("whsec_")
    assert acme.webhook_secret != globex.webhook_secret
    assert plain.webhook_secret is None  # no URL, no secret: its notifications go to the global endpoint
    assert acme.webhook_secret not in repr(acme) and "webhook_secret" not in repr(acme)
    assert service.get_customer(engine, "acme").webhook_secret == acme.webhook_secret


def test_rotating_a_webhook_secret_replaces_it(engine):
    old = add(engine, "acme", webhook_url="https://hooks.acme.example/billing").webhook_secret
    rotated = service.rotate_webhook_secret(engine, "acme")
    assert rotated.webhook_secret != old and re.fullmatch(r"whsec_[0-9a-f]{48}", rotated.webhook_secret)
    assert service.get_customer(engine, "acme").webhook_secret == rotated.webhook_secret
    add(engine, "plain")
    with pytest.raises(BillingInputError, match=r"^customer 'plain' has no webhook_url: its notifications go to "):
        service.rotate_webhook_secret(engine, "plain")
    with pytest.raises(NotFoundError, match="unknown customer 'nobody'"):
        service.rotate_webhook_secret(engine, "nobody")


def test_a_customer_from_before_per_endpoint_secrets_gets_one_by_rotation(engine):
    with session_scope(engine) as session:  # as migration 0007 leaves the customers it finds
        repository.add_customer(
            session, external_id="old", name="Old", email=None, currency="EUR", timezone="UTC", locale="en_US",
            webhook_url="https://hooks.old.example/billing",
        )
    assert service.get_customer(engine, "old").webhook_secret is None
    assert service.rotate_webhook_secret(engine, "old").webhook_secret.startswith("whsec_")


def test_a_duplicate_external_id_is_refused(engine):
    add(engine)
    with pytest.raises(BillingInputError) as excinfo:
        add(engine, name="Someone else")
    assert errors_of(excinfo) == "customer 'acme' already exists"
    assert [c.name for c in service.list_customers(engine)] == ["Acme GmbH"]


def test_an_unknown_currency_is_refused(engine):
    with pytest.raises(BillingInputError) as excinfo:
        add(engine, currency="EUX")
    assert errors_of(excinfo) == "currency: unknown currency 'EUX' (expected an ISO 4217 code such as USD, EUR, JPY)"
    assert service.list_customers(engine) == []


def test_a_bad_timezone_is_refused(engine):
    with pytest.raises(BillingInputError, match=r"^timezone: unknown timezone 'Europe/Atlantis' \(expected an IANA"):
        add(engine, timezone="Europe/Atlantis")


def test_the_timezone_defaults_to_the_settings(engine, settings_env):
    assert add(engine, "utc-co").timezone == "UTC"
    settings_env.setenv("BILLING_TIMEZONE", "America/New_York")
    get_settings.cache_clear()
    assert add(engine, "ny-co").timezone == "America/New_York"


def test_every_bad_field_is_reported_at_once(engine):
    with pytest.raises(BillingInputError) as excinfo:
        service.create_customer(
            engine,
            "acme corp",
            name="",
            email="not-an-address",
            currency="EUR",
            locale="xx",
            webhook_url="ftp://hooks.example",
            tax_rate="120",
        )
    assert errors_of(excinfo).split("; ") == [
        "external_id: expected an id without spaces, control characters or '/', and not '.' or '..', got 'acme corp'",
        "name: required, got nothing",
        "email: expected an address like name@example.com, got 'not-an-address'",
        "locale: unknown locale 'xx' (expected a locale such as en_US, de_DE, fr)",
        "webhook_url: expected an http:// or https:// URL, got 'ftp://hooks.example'",
        "tax_rate: expected a percentage between 0 and 100 (19 for 19 %), got 120",
    ]


@pytest.mark.parametrize("external_id", ["a/b", "/", ".", ".."])
def test_an_id_the_apis_paths_cannot_carry_is_refused(engine, external_id):
    """``/v1/customers/a%2Fb`` reaches the router as ``/v1/customers/a/b``, and clients resolve ``.`` and ``..``
    away: such a customer could be created and never read back over HTTP."""
    with pytest.raises(BillingInputError) as excinfo:
        add(engine, external_id)
    assert errors_of(excinfo) == (
        f"external_id: expected an id without spaces, control characters or '/', and not '.' or '..', "
        f"got {external_id!r}"
    )
    assert [c.external_id for c in service.list_customers(engine)] == []


def test_a_customer_stored_with_such_an_id_before_stays_updatable(engine):
    """Created before ids with '/' were refused (here: written straight to the table), it is updated as any
    other; only new ids are checked."""
    from sqlalchemy import update

    from billing.db.tables import CustomerRow

    add(engine, "acme-eu")
    with session_scope(engine) as session:
        session.execute(update(CustomerRow).where(CustomerRow.external_id == "acme-eu").values(external_id="acme/eu"))
    updated = service.update_customer(engine, "acme/eu", {"email": "ap@acme.example"})
    assert (updated.external_id, updated.email) == ("acme/eu", "ap@acme.example")


def test_a_float_tax_rate_is_refused(engine):
    with pytest.raises(BillingInputError, match=r"^tax_rate: "):
        add(engine, tax_rate=19.5)


def test_an_unknown_customer_is_not_found(engine):
    with pytest.raises(NotFoundError, match=r"^unknown customer 'nobody'$"):
        service.get_customer(engine, "nobody")


def test_customers_by_external_id(engine):
    for external_id in ("a", "b", "c"):
        add(engine, external_id)
    with session_scope(engine) as session:
        assert sorted(repository.customers_by_external_id(session)) == ["a", "b", "c"]
        found = repository.customers_by_external_id(session, ["c", "a", "zz"])
    assert sorted(found) == ["a", "c"] and found["c"].external_id == "c"


# -- importing -------------------------------------------------------------------------------------------

CSV = """external_id,name,email,currency,timezone,locale,address,webhook_url,tax_rate
alpha,Alpha Ltd,ap@alpha.example,GBP,Europe/London,en_GB,1 High St|London,,20
beta,Beta,,EUX,,,,,
acme,Acme again,,EUR,,,,,

gamma,Gamma,g@gamma.example,EUR,,de_DE,"Ring 2
50667 Köln",https://gamma.example/hook,
alpha,Alpha twice,,GBP,,,,,
delta,Delta,d@delta.example,USD,Mars/Olympus,,,,7.5
epsilon,Epsilon
zeta,Zeta,,JPY,Asia/Tokyo,ja_JP,,,10
"""


def test_import_accepts_the_good_rows_and_reports_each_bad_one_with_its_line(engine, tmp_path):
    add(engine, "acme")
    path = tmp_path / "customers.csv"
    path.write_text(CSV, encoding="utf-8")
    calls: list[tuple[int, int]] = []

    report = service.import_customers(engine, path, progress=lambda done, total: calls.append((done, total)))

    name = str(path)
    assert [str(p) for p in report.problems] == [
        f"{name}:3: currency: unknown currency 'EUX' (expected an ISO 4217 code such as USD, EUR, JPY)",
        f"{name}:4: customer 'acme' already exists",
        f"{name}:8: customer 'alpha' already appears on line 2",
        f"{name}:9: timezone: unknown timezone 'Mars/Olympus' (expected an IANA name such as Europe/Berlin)",
        f"{name}:10: expected 9 fields (external_id,name,email,currency,timezone,locale,address,webhook_url,"
        "tax_rate), got 2",
    ]
    assert [c.external_id for c in report.created] == ["alpha", "gamma", "zeta"]
    assert (report.accepted, report.rejected, report.ok) == (3, 5, False)
    assert calls[0] == (0, 4) and calls[-1] == (4, 4)

    customers = {c.external_id: c for c in service.list_customers(engine)}
    assert sorted(customers) == ["acme", "alpha", "gamma", "zeta"]
    assert customers["alpha"].address == ("1 High St", "London")
    assert customers["alpha"].tax_rate == Decimal(20)
    assert customers["gamma"].address == ("Ring 2", "50667 Köln")
    assert customers["gamma"].locale == "de_DE" and customers["gamma"].timezone == "UTC"
    assert customers["zeta"].currency == "JPY"
    # the one customer with a webhook URL got a secret, handed out in the report
    created = {c.external_id: c for c in report.created}
    assert re.fullmatch(r"whsec_[0-9a-f]{48}", created["gamma"].webhook_secret)
    assert customers["gamma"].webhook_secret == created["gamma"].webhook_secret
    assert created["alpha"].webhook_secret is None and created["zeta"].webhook_secret is None


def test_importing_the_same_file_again_creates_nothing(engine, tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text("external_id,name,currency\nacme,Acme,EUR\n", encoding="utf-8")
    assert service.import_customers(engine, path).accepted == 1
    again = service.import_customers(engine, path)
    assert (again.accepted, [str(p) for p in again.problems]) == (0, [f"{path}:2: customer 'acme' already exists"])


def test_import_refuses_a_bad_header_and_imports_nothing(engine, tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text("id,name,currency,colour\nacme,Acme,EUR,red\n", encoding="utf-8")
    with pytest.raises(BillingInputError) as excinfo:
        service.import_customers(engine, path)
    assert errors_of(excinfo) == (
        f"{path}:1: unknown column 'id', 'colour' (allowed: external_id,name,email,currency,timezone,locale,"
        "address,webhook_url,tax_rate,country,region,tax_id,tax_exempt_reason); missing required column 'external_id'"
    )
    assert service.list_customers(engine) == []


def test_import_of_a_missing_file(engine, tmp_path):
    with pytest.raises(BillingInputError, match="cannot read the file"):
        service.import_customers(engine, tmp_path / "nope.csv")


# -- subscriptions ---------------------------------------------------------------------------------------


def test_subscribe_picks_the_version_in_effect_on_the_start_date(engine, catalog):
    for external_id in ("early", "onthedot", "late"):
        add(engine, external_id)
    early = service.subscribe(engine, catalog, "early", "starter", D(2024, 2, 29))
    on_the_dot = service.subscribe(engine, catalog, "onthedot", "starter", D(2024, 3, 1))
    late = service.subscribe(engine, catalog, "late", "starter", D(2025, 1, 1))
    assert (early.plan_version, on_the_dot.plan_version, late.plan_version) == (1, 2, 2)
    assert early == Subscription(
        id=early.id,
        customer_id=early.customer_id,
        customer_external_id="early",
        plan_code="starter",
        plan_version=1,
        start_date=D(2024, 2, 29),
        end_date=None,
        status=SubscriptionStatus.ACTIVE,
        cancel_reason=None,
        previous_subscription_id=None,
    )
    assert service.get_subscription(engine, early.id) == early


def test_subscribe_refuses_an_unknown_plan(engine, catalog):
    add(engine)
    expected = r"^plan: unknown plan 'platinum' \(known plans: dollar, pro, starter\)$"
    with pytest.raises(BillingInputError, match=expected):
        service.subscribe(engine, catalog, "acme", "platinum", D(2024, 1, 1))


def test_subscribe_refuses_a_plan_in_another_currency(engine, catalog):
    add(engine)
    with pytest.raises(BillingInputError) as excinfo:
        service.subscribe(engine, catalog, "acme", "dollar", D(2024, 1, 1))
    assert errors_of(excinfo) == "plan: 'dollar' is priced in USD but customer 'acme' is billed in EUR"
    assert service.list_subscriptions(engine) == []


def test_subscribe_refuses_an_unknown_customer(engine, catalog):
    with pytest.raises(NotFoundError, match=r"^unknown customer 'ghost'$"):
        service.subscribe(engine, catalog, "ghost", "pro", D(2024, 1, 1))


def test_subscribe_refuses_an_overlapping_subscription_to_the_same_plan(engine, catalog):
    add(engine)
    first = service.subscribe(engine, catalog, "acme", "pro", D(2024, 1, 1))
    with pytest.raises(BillingInputError) as excinfo:
        service.subscribe(engine, catalog, "acme", "pro", D(2024, 6, 1))
    assert errors_of(excinfo) == (
        f"customer 'acme' already has subscription {first.id} to plan 'pro' from 2024-01-01 (open-ended), "
        "which overlaps a start on 2024-06-01"
    )
    # Another plan at the same time is fine (an add-on).
    service.subscribe(engine, catalog, "acme", "starter", D(2024, 6, 1))
    # After the first one ends, the same plan again is fine; not before it ends.
    service.cancel_subscription(engine, first.id, D(2024, 7, 1))
    with pytest.raises(BillingInputError, match="until 2024-07-01"):
        service.subscribe(engine, catalog, "acme", "pro", D(2024, 6, 30))
    again = service.subscribe(engine, catalog, "acme", "pro", D(2024, 7, 1))
    assert again.start_date == D(2024, 7, 1)


def test_an_open_ended_subscription_may_not_start_before_a_later_one(engine, catalog):
    add(engine)
    later = service.subscribe(engine, catalog, "acme", "pro", D(2024, 6, 1))
    with pytest.raises(BillingInputError, match=f"subscription {later.id} to plan 'pro'"):
        service.subscribe(engine, catalog, "acme", "pro", D(2024, 1, 1))


@pytest.mark.parametrize("reason", ["voluntary", "involuntary"])
def test_cancel_with_a_reason(engine, catalog, reason):
    add(engine)
    subscription = service.subscribe(engine, catalog, "acme", "pro", D(2024, 1, 15))
    cancelled = service.cancel_subscription(engine, subscription.id, D(2024, 4, 1), reason)
    assert (cancelled.status, cancelled.cancel_reason, cancelled.end_date) == (
        SubscriptionStatus.CANCELLED,
        CancelReason(reason),
        D(2024, 4, 1),
    )
    assert service.get_subscription(engine, subscription.id) == cancelled
    assert cancelled.active_on(D(2024, 3, 31)) and not cancelled.active_on(D(2024, 4, 1))
    assert service.list_subscriptions(engine, status="active") == []
    assert service.list_subscriptions(engine, customer="acme", status="cancelled") == [cancelled]


def test_cancel_defaults_to_voluntary(engine, catalog):
    add(engine)
    subscription = service.subscribe(engine, catalog, "acme", "pro", D(2024, 1, 15))
    assert service.cancel_subscription(engine, subscription.id, D(2024, 2, 1)).cancel_reason is CancelReason.VOLUNTARY


def test_cancel_refuses_an_end_before_the_start(engine, catalog):
    add(engine)
    subscription = service.subscribe(engine, catalog, "acme", "pro", D(2024, 1, 15))
    with pytest.raises(BillingInputError) as excinfo:
        service.cancel_subscription(engine, subscription.id, D(2024, 1, 14))
    assert errors_of(excinfo) == (
        f"date: cannot cancel subscription {subscription.id} on 2024-01-14, before its start date 2024-01-15"
    )
    assert service.get_subscription(engine, subscription.id).status is SubscriptionStatus.ACTIVE


def test_cancel_on_the_start_day_leaves_a_subscription_that_covers_no_day(engine, catalog):
    add(engine)
    subscription = service.subscribe(engine, catalog, "acme", "pro", D(2024, 1, 15))
    cancelled = service.cancel_subscription(engine, subscription.id, D(2024, 1, 15))
    assert not cancelled.active_on(D(2024, 1, 15))
    with session_scope(engine) as session:
        assert repository.subscriptions_active_between(session, D(2024, 1, 1), D(2024, 2, 1)) == []


def test_cancel_refuses_a_second_cancellation_a_bad_reason_and_an_unknown_id(engine, catalog):
    add(engine)
    subscription = service.subscribe(engine, catalog, "acme", "pro", D(2024, 1, 15))
    with pytest.raises(BillingInputError, match=r"^reason: expected voluntary or involuntary, got 'bored'$"):
        service.cancel_subscription(engine, subscription.id, D(2024, 2, 1), "bored")
    service.cancel_subscription(engine, subscription.id, D(2024, 2, 1))
    with pytest.raises(BillingInputError, match=rf"^subscription {subscription.id} is already cancelled"):
        service.cancel_subscription(engine, subscription.id, D(2024, 3, 1))
    with pytest.raises(NotFoundError, match=r"^unknown subscription 999$"):
        service.cancel_subscription(engine, 999, D(2024, 3, 1))


def test_change_plan_ends_the_old_and_starts_the_new_on_the_same_day(engine, catalog):
    add(engine)
    old = service.subscribe(engine, catalog, "acme", "starter", D(2024, 1, 10))
    new = service.change_plan(engine, catalog, old.id, "pro", D(2024, 2, 20))

    ended = service.get_subscription(engine, old.id)
    assert (ended.status, ended.end_date, ended.cancel_reason) == (SubscriptionStatus.CANCELLED, D(2024, 2, 20), None)
    assert (new.plan_code, new.plan_version, new.start_date, new.end_date) == ("pro", 1, D(2024, 2, 20), None)
    assert (new.status, new.previous_subscription_id) == (SubscriptionStatus.ACTIVE, old.id)
    # Exactly one of them covers each day around the change.
    for day in (D(2024, 2, 19), D(2024, 2, 20), D(2024, 2, 21)):
        assert [s.id for s in (ended, new) if s.active_on(day)] == [old.id if day < D(2024, 2, 20) else new.id]


def test_change_to_a_newer_version_of_the_same_plan(engine, catalog):
    add(engine)
    old = service.subscribe(engine, catalog, "acme", "starter", D(2024, 1, 10))
    new = service.change_plan(engine, catalog, old.id, "starter", D(2024, 3, 1))
    assert (new.plan_code, new.plan_version) == ("starter", 2)
    with pytest.raises(BillingInputError, match=f"^plan: subscription {new.id} is already on plan 'starter' version 2"):
        service.change_plan(engine, catalog, new.id, "starter", D(2024, 4, 1))


def test_a_refused_plan_change_changes_nothing(engine, catalog):
    add(engine)
    old = service.subscribe(engine, catalog, "acme", "starter", D(2024, 1, 10))
    with pytest.raises(BillingInputError, match="priced in USD"):
        service.change_plan(engine, catalog, old.id, "dollar", D(2024, 2, 1))
    with pytest.raises(BillingInputError, match="before its start date 2024-01-10"):
        service.change_plan(engine, catalog, old.id, "pro", D(2024, 1, 9))
    assert service.list_subscriptions(engine) == [old]
    service.cancel_subscription(engine, old.id, D(2024, 3, 1))
    with pytest.raises(BillingInputError, match="is already cancelled"):
        service.change_plan(engine, catalog, old.id, "pro", D(2024, 2, 1))


def test_list_subscriptions_checks_its_filters(engine):
    with pytest.raises(NotFoundError, match="unknown customer 'ghost'"):
        service.list_subscriptions(engine, customer="ghost")
    with pytest.raises(BillingInputError, match=r"^status: expected active or cancelled, got 'paused'$"):
        service.list_subscriptions(engine, status="paused")


def test_subscriptions_active_between_is_one_query_over_every_overlapping_subscription(engine, catalog):
    for external_id in ("a", "b", "c"):
        add(engine, external_id)
    ended_before = service.subscribe(engine, catalog, "a", "pro", D(2024, 1, 1))
    service.cancel_subscription(engine, ended_before.id, D(2024, 3, 1))  # ends on the period's first day
    ends_inside = service.subscribe(engine, catalog, "a", "starter", D(2024, 1, 1))
    service.cancel_subscription(engine, ends_inside.id, D(2024, 3, 10), "involuntary")
    open_ended = service.subscribe(engine, catalog, "b", "pro", D(2024, 2, 15))
    starts_inside = service.subscribe(engine, catalog, "c", "starter", D(2024, 3, 31))
    service.subscribe(engine, catalog, "c", "pro", D(2024, 4, 1))  # starts on the day after the period

    selects: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        with session_scope(engine) as session:
            found = repository.subscriptions_active_between(session, D(2024, 3, 1), D(2024, 4, 1))
    finally:
        event.remove(engine, "before_cursor_execute", count)

    assert len(selects) == 1
    assert [(s.id, s.customer_external_id) for s in found] == [
        (ends_inside.id, "a"),
        (open_ended.id, "b"),
        (starts_inside.id, "c"),
    ]
    assert found[0].cancel_reason is CancelReason.INVOLUNTARY


# -- the records -----------------------------------------------------------------------------------------


def _subscription(start: dt.date, end: dt.date | None) -> Subscription:
    return Subscription(1, 1, "acme", "pro", 1, start, end, SubscriptionStatus.ACTIVE, None, None)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (D(2024, 1, 1), D(2024, 2, 1), True),  # inside
        (D(2023, 1, 1), D(2024, 1, 10), False),  # ends on the subscription's start
        (D(2023, 1, 1), D(2024, 1, 11), True),  # shares its first day
        (D(2024, 3, 1), None, False),  # starts on its end
        (D(2024, 2, 29), None, True),  # shares its last day
    ],
)
def test_overlaps_uses_half_open_ranges(start, end, expected):
    assert _subscription(D(2024, 1, 10), D(2024, 3, 1)).overlaps(start, end) is expected


def test_an_open_subscription_is_active_from_its_start_on():
    open_ended = _subscription(D(2024, 1, 10), None)
    assert not open_ended.active_on(D(2024, 1, 9))
    assert open_ended.active_on(D(2024, 1, 10)) and open_ended.active_on(D(2099, 1, 1))
    assert open_ended.overlaps(D(2030, 1, 1), D(2030, 2, 1))
    assert not _subscription(D(2024, 1, 10), D(2024, 1, 10)).overlaps(D(2024, 1, 1), None)


def test_a_malformed_webhook_url_is_an_input_error(engine):
    from billing.customers import create_customer
    from billing.errors import BillingInputError

    with pytest.raises(BillingInputError, match=r"webhook_url: expected an http:// or https:// URL, got 'http://\['"):
        create_customer(engine, "acme", "Acme", "ap@acme.test", "USD", webhook_url="http://[")
