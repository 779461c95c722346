"""The ``billing`` commands for customers, subscriptions and the database, run through typer's CliRunner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import inspect
from typer.testing import CliRunner

from billing import customers as service
from billing.cli import app
from billing.config import get_settings
from billing.db import current_revision, make_engine

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
"""

runner = CliRunner()


@pytest.fixture
def env(cli_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The test database, with a small catalog of our own."""
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG, encoding="utf-8")
    monkeypatch.setenv("BILLING_CATALOG", str(catalog))
    get_settings.cache_clear()
    return cli_env


def billing(*args: str):
    return runner.invoke(app, list(args))


def ok(*args: str) -> str:
    result = billing(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def refused(*args: str, code: int = 1) -> str:
    """Run a command that must fail with one clear message (no traceback) and exit 1 (2 for a usage error, a bad
    option or argument); return its stderr."""
    result = billing(*args)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result.stderr


def add_acme() -> None:
    ok("customers", "add", "acme", "--name", "Acme", "--email", "ops@acme.example", "--currency", "EUR")


# -- customers -------------------------------------------------------------------------------------------


def test_add_and_list_customers(env):
    out = ok(
        "customers", "add", "acme",
        "--name", "Acme GmbH",
        "--email", "ops@acme.example",
        "--currency", "EUR",
        "--timezone", "Europe/Berlin",
        "--locale", "de_DE",
        "--address", "Hauptstraße 1",
        "--address", "10115 Berlin",
        "--webhook-url", "https://acme.example/hook",
        "--tax-rate", "19",
    )  # fmt: skip
    created, secret_line, note = out.strip().splitlines()
    assert created == "created customer acme (EUR, Europe/Berlin)"
    assert re.fullmatch(r"webhook secret: whsec_[0-9a-f]{48}", secret_line)
    assert note.startswith("Shown once: store it now. The receiver at https://acme.example/hook verifies")
    out = ok("customers", "add", "beta", "--name", "Beta", "--email", "b@beta.example", "--currency", "USD")
    assert out.strip() == "created customer beta (USD, UTC)"  # no webhook URL: no secret

    listing = ok("customers", "list")
    assert "acme" in listing and "beta" in listing and "USD" in listing
    assert listing.index("acme") < listing.index("beta")
    assert "whsec_" not in listing  # shown once, when created: never listed


def test_rotate_webhook_secret_prints_the_new_secret_once(env):
    out = ok("customers", "add", "acme", "--name", "Acme", "--email", "ops@acme.example", "--currency", "EUR",
             "--webhook-url", "https://acme.example/hook")
    first = re.search(r"whsec_[0-9a-f]{48}", out).group()
    rotated = ok("customers", "rotate-webhook-secret", "acme").strip().splitlines()
    match = re.fullmatch(r"new webhook secret for acme: (whsec_[0-9a-f]{48})", rotated[0])
    assert match and match.group(1) != first
    assert rotated[1].startswith("Shown once: store it now.") and len(rotated) == 2
    engine = make_engine(env["BILLING_DATABASE_URL"])
    try:
        assert service.get_customer(engine, "acme").webhook_secret == match.group(1)
    finally:
        engine.dispose()

    without_url = ok("customers", "add", "beta", "--name", "B", "--email", "b@b.example", "--currency", "EUR")
    assert "whsec_" not in without_url
    assert "customer 'beta' has no webhook_url" in refused("customers", "rotate-webhook-secret", "beta")
    assert "unknown customer 'ghost'" in refused("customers", "rotate-webhook-secret", "ghost")


def test_an_empty_customer_list(env):
    assert ok("customers", "list").strip() == "no customers"


def test_add_refuses_a_duplicate_and_bad_input(env):
    add_acme()
    assert (
        refused("customers", "add", "acme", "--name", "A", "--email", "a@a.example", "--currency", "EUR").strip()
        == "error: customer 'acme' already exists"
    )
    message = refused("customers", "add", "new", "--name", "N", "--email", "n@n.example", "--currency", "EUX", code=2)
    assert "--currency: unknown currency 'EUX'" in message  # (an option's value: a usage error)
    message = refused(
        "customers", "add", "new", "--name", "N", "--email", "n@n.example", "--currency", "EUR", "--tax-rate", "x",
        code=2,
    )
    assert "--tax-rate: expected a percentage" in message


def test_import_reports_each_bad_row_with_its_line_and_exits_1(env, tmp_path):
    add_acme()
    path = tmp_path / "customers.csv"
    path.write_text(
        "external_id,name,email,currency\n"
        "alpha,Alpha,a@alpha.example,EUR\n"
        "beta,Beta,b@beta.example,EUX\n"
        "acme,Acme again,,EUR\n"
        "gamma,Gamma,,EUR\n",
        encoding="utf-8",
    )
    result = billing("customers", "import", str(path))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{path}:3: currency: unknown currency 'EUX' (expected an ISO 4217 code such as USD, EUR, JPY)",
        f"{path}:4: customer 'acme' already exists",
    ]
    assert result.stdout.strip() == "imported 2, rejected 2"
    listing = ok("customers", "list")
    assert "alpha" in listing and "gamma" in listing and "beta" not in listing


def test_import_prints_the_webhook_secret_of_each_customer_with_a_url_once(env, tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text(
        "external_id,name,currency,webhook_url\n"
        "alpha,Alpha,EUR,https://alpha.example/hooks\n"
        "beta,Beta,EUR,\n"
        "gamma,Gamma,EUR,https://gamma.example/hooks\n",
        encoding="utf-8",
    )
    lines = ok("customers", "import", str(path)).strip().splitlines()
    assert lines[0] == "imported 3, rejected 0"
    assert lines[1].startswith("webhook secrets (shown once: store them now;")
    assert [line.split()[0] for line in lines[2:]] == ["alpha", "gamma"]
    assert all(re.fullmatch(r"\S+ whsec_[0-9a-f]{48}", line) for line in lines[2:])
    assert lines[2].split()[1] != lines[3].split()[1]


def test_import_of_a_good_file_exits_0(env, tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text("external_id,name,currency\nalpha,Alpha,EUR\n", encoding="utf-8")
    assert ok("customers", "import", str(path)).strip() == "imported 1, rejected 0"


def test_import_of_a_missing_file(env, tmp_path):
    assert "cannot read the file" in refused("customers", "import", str(tmp_path / "missing.csv"))


# -- subscriptions ---------------------------------------------------------------------------------------


def test_subscribe_cancel_change_and_list(env):
    add_acme()
    assert ok("subscribe", "acme", "starter", "--start", "2024-01-15").strip() == (
        "created subscription 1: acme on starter v1 from 2024-01-15"
    )
    assert ok("subscriptions", "change", "1", "pro", "--date", "2024-02-01").strip() == (
        "ended subscription 1; created subscription 2: acme on pro v1 from 2024-02-01"
    )
    assert ok("subscriptions", "cancel", "2", "--date", "2024-05-01", "--reason", "involuntary").strip() == (
        "cancelled subscription 2 (involuntary), ends 2024-05-01"
    )
    assert ok("subscribe", "acme", "starter", "--start", "2024-05-01").strip() == (
        "created subscription 3: acme on starter v2 from 2024-05-01"
    )

    everything = ok("subscriptions", "list")
    assert "starter v1" in everything and "pro v1" in everything and "starter v2" in everything
    active = ok("subscriptions", "list", "--customer", "acme", "--status", "active")
    assert "starter v2" in active and "pro v1" not in active
    cancelled = ok("subscriptions", "list", "--status", "cancelled")
    assert "starter v2" not in cancelled and "involuntary" in cancelled


def test_subscription_errors_are_one_message_and_exit_1_or_2_for_usage(env):
    add_acme()
    ok("subscribe", "acme", "pro", "--start", "2024-01-15")
    assert "plan: unknown plan 'gold'" in refused("subscribe", "acme", "gold", "--start", "2024-01-01")
    assert "unknown customer 'ghost'" in refused("subscribe", "ghost", "pro", "--start", "2024-01-01")
    assert "--start: expected a date YYYY-MM-DD, got '2024-02-30'" in refused(
        "subscribe", "acme", "starter", "--start", "2024-02-30", code=2
    )
    assert "already has subscription 1 to plan 'pro'" in refused("subscribe", "acme", "pro", "--start", "2024-03-01")
    # an option's value the engine refuses is named as the option, a usage error (exit 2) as a malformed one is
    assert "--date: cannot cancel subscription 1 on 2024-01-01, before its start date 2024-01-15" in refused(
        "subscriptions", "cancel", "1", "--date", "2024-01-01", code=2
    )
    assert "--reason: expected voluntary or involuntary" in refused(
        "subscriptions", "cancel", "1", "--date", "2024-02-01", "--reason", "bored", code=2
    )
    assert "unknown subscription 42" in refused("subscriptions", "cancel", "42", "--date", "2024-02-01")
    assert "ID: expected a subscription id" in refused("subscriptions", "cancel", "one", "--date", "2024-02-01", code=2)
    assert "--status: expected active or cancelled" in refused("subscriptions", "list", "--status", "paused", code=2)


def test_a_broken_catalog_is_reported(env, tmp_path, monkeypatch):
    add_acme()
    broken = tmp_path / "broken.toml"
    broken.write_text("[plans.x]\nname = 1\n", encoding="utf-8")
    monkeypatch.setenv("BILLING_CATALOG", str(broken))
    get_settings.cache_clear()
    message = refused("subscribe", "acme", "x", "--start", "2024-01-01")
    assert f"{broken}: plans.x.name" in message and "the catalog has" in message


# -- the database ----------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A database URL pointing at a SQLite file that does not exist yet."""
    path = tmp_path / "data" / "billing.db"
    monkeypatch.setenv("BILLING_DATABASE_URL", f"sqlite:///{path}")
    (tmp_path / "empty-config.toml").write_text("", encoding="utf-8")
    monkeypatch.setenv("BILLING_CONFIG", str(tmp_path / "empty-config.toml"))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def _revision(path: Path) -> str | None:
    engine = make_engine(f"sqlite:///{path}")
    try:
        assert {"customers", "subscriptions"} <= set(inspect(engine).get_table_names())
        return current_revision(engine)
    finally:
        engine.dispose()


def test_init_creates_a_fresh_database_and_refuses_to_overwrite_it(sqlite_file):
    out = ok("init")
    revision = _revision(sqlite_file)
    assert revision is not None and out.strip().endswith(f"at revision {revision}")

    add_acme()
    assert "already exists; use --force" in refused("init")
    assert "acme" in ok("customers", "list")

    ok("init", "--force")
    assert ok("customers", "list").strip() == "no customers"


def test_db_upgrade_migrates_and_prints_the_revision(sqlite_file):
    out = ok("db", "upgrade")
    revision = _revision(sqlite_file)
    assert out.strip().endswith(f"at revision {revision}")
    assert ok("db", "upgrade") == out  # nothing left to do, same revision


def test_commands_on_a_database_that_was_never_initialized(sqlite_file):
    message = refused("customers", "list")
    assert "run `billing init` or `billing db upgrade`" in message


# -- updating and archiving -------------------------------------------------------------------------------------


@pytest.mark.db
def test_customers_update_changes_the_options_given_and_refuses_a_bad_vat_id(env):
    ok("customers", "add", "cus_1", "--name", "Kunde", "--email", "ap@kunde.example", "--currency", "EUR")
    out = ok("customers", "update", "cus_1", "--name", "Kunde GmbH", "--country", "de", "--tax-id", "DE136695976",
             "--address", "Hauptstr. 1", "--address", "10115 Berlin", "--locale", "de_DE")
    assert "updated customer cus_1: name, address, country, tax_id, locale" in out
    shown = json.loads(ok("customers", "update", "cus_1", "--timezone", "Europe/Berlin", "--json"))
    assert {k: shown[k] for k in ("name", "country", "tax_id", "address", "locale", "timezone", "archived_at")} == {
        "name": "Kunde GmbH", "country": "DE", "tax_id": "DE136695976", "address": ["Hauptstr. 1", "10115 Berlin"],
        "locale": "de_DE", "timezone": "Europe/Berlin", "archived_at": None,
    }
    refused = billing("customers", "update", "cus_1", "--tax-id", "DE123")
    assert refused.exit_code == 2
    assert "--tax-id: 'DE123': not a valid VAT number of Germany (wrong length)" in refused.stderr
    # an empty value clears an optional field
    assert json.loads(ok("customers", "update", "cus_1", "--tax-id", "", "--json"))["tax_id"] is None
    assert billing("customers", "update", "cus_1").exit_code == 2  # nothing to change


@pytest.mark.db
def test_customers_archive_and_unarchive(env):
    ok("customers", "add", "cus_1", "--name", "Kunde", "--email", "ap@kunde.example", "--currency", "EUR")
    assert "archived customer cus_1" in ok("customers", "archive", "cus_1")
    assert "(archived)" in ok("customers", "list")
    refused = billing("subscribe", "cus_1", "pro", "--start", "2026-03-01")
    assert refused.exit_code == 1 and "is archived" in refused.stderr
    assert "unarchived customer cus_1" in ok("customers", "unarchive", "cus_1")
    ok("subscribe", "cus_1", "pro", "--start", "2026-03-01")
