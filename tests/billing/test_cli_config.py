"""The configuration file: ``billing --config FILE``, a ``BILLING_CONFIG`` naming a missing file refused, relative
paths in the file taken from its folder, a file that is not TOML named with its line."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing.cli import app
from billing.config import ConfigError, Settings, get_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_settings_from_outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No BILLING_* variable from the caller's environment, and a working directory without a config.toml."""
    for key in list(os.environ):
        if key.startswith("BILLING_") and key != "BILLING_TEST_DATABASE_URL":
            monkeypatch.delenv(key)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with a configuration whose catalog and SQLite database are named relative to it."""
    folder = tmp_path / "project"
    (folder / "prices").mkdir(parents=True)
    (folder / "prices" / "catalog.toml").write_text((ROOT / "catalog.toml").read_text(encoding="utf-8"))
    (folder / "config.toml").write_text(
        'catalog = "prices/catalog.toml"\ndatabase_url = "sqlite:///data/billing.db?timeout=5"\n', encoding="utf-8"
    )
    return folder


def test_relative_paths_in_the_config_file_are_relative_to_its_folder(project, monkeypatch):
    monkeypatch.setenv("BILLING_CONFIG", str(project / "config.toml"))
    settings = Settings()
    assert settings.catalog == str(project.resolve() / "prices" / "catalog.toml")
    assert settings.database_url == f"sqlite:///{project.resolve() / 'data' / 'billing.db'}?timeout=5"


def test_absolute_memory_and_server_urls_and_environment_paths_are_left_alone(tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    for url in ("sqlite:////var/lib/billing.db", "sqlite://", "sqlite:///:memory:", "postgresql+psycopg://u@h/db"):
        config.write_text(f'database_url = "{url}"\ncatalog = "/etc/billing/catalog.toml"\n', encoding="utf-8")
        monkeypatch.setenv("BILLING_CONFIG", str(config))
        assert (Settings().database_url, Settings().catalog) == (url, "/etc/billing/catalog.toml")
    # a relative path from an environment variable stays relative to the working directory
    monkeypatch.setenv("BILLING_CATALOG", "here/catalog.toml")
    monkeypatch.setenv("BILLING_DATABASE_URL", "sqlite:///here.db")
    assert (Settings().catalog, Settings().database_url) == ("here/catalog.toml", "sqlite:///here.db")


def test_without_a_config_file_the_defaults_apply(tmp_path):
    settings = Settings()
    assert (settings.catalog, settings.database_url) == ("catalog.toml", "sqlite:///billing.db")


def test_a_billing_config_naming_a_missing_file_is_an_error(tmp_path, monkeypatch):
    missing = tmp_path / "typo" / "config.toml"
    monkeypatch.setenv("BILLING_CONFIG", str(missing))
    with pytest.raises(ConfigError, match=f"BILLING_CONFIG: {missing}: no such file"):
        Settings()
    result = CliRunner().invoke(app, ["plans", "validate"])
    assert result.exit_code == 2
    assert f"Invalid value for BILLING_CONFIG: {missing}: no such file" in " ".join(result.output.split())


def test_config_option_names_the_file_for_one_command(project, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["--config", str(project / "config.toml"), "plans", "validate"])
    assert result.exit_code == 0, result.output
    assert f"{project.resolve() / 'prices' / 'catalog.toml'}: OK — 13 meters, 13 plans" in " ".join(result.stdout.split())
    assert "BILLING_CONFIG" not in os.environ  # set for the command only
    # it wins over BILLING_CONFIG
    other = tmp_path / "other.toml"
    other.write_text('catalog = "nowhere.toml"\n', encoding="utf-8")
    result = runner.invoke(
        app, ["--config", str(project / "config.toml"), "plans", "validate"], env={"BILLING_CONFIG": str(other)}
    )
    assert result.exit_code == 0, result.output


def test_config_option_with_a_missing_file_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["--config", str(tmp_path / "nope.toml"), "plans", "validate"])
    assert result.exit_code == 2
    assert f"Invalid value for '--config': file '{tmp_path / 'nope.toml'}' does not exist" in " ".join(
        result.output.split()
    )


def test_a_config_file_that_is_not_toml_is_named_with_its_line(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text('catalog = "catalog.toml"\n[seller\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["--config", str(broken), "plans", "validate"])
    assert result.exit_code == 1
    assert f"error: {broken}: not valid TOML:" in result.output and "(at line 2, column 8)" in result.output


@pytest.mark.parametrize(
    ("written", "named"),
    [
        ('[seller]\ncountry = "XX"\n', "seller.country: Value error, expected an ISO 3166-1 alpha-2 country code"),
        ('[seller]\ncountry = "XB"\n', "seller.country: Value error, expected an ISO 3166-1 alpha-2 country code"),
        ('[seller]\ncountryy = "IE"\n', "seller.countryy: Extra inputs are not permitted"),
        ('[tax]\nnmae = "MwSt."\n', "tax.nmae: Extra inputs are not permitted"),
        ("payment_terms_days = -30\n", "payment_terms_days: Input should be greater than or equal to 0"),
        (  # every invoice of a year would have had the one number: the second finalization failed
            'invoice_number_format = "INV-{year}"\n',
            "invoice_number_format: Value error, 'INV-{year}': expected a format holding {seq}",
        ),
        (  # the first finalization failed with a KeyError
            'credit_note_number_format = "CN-{month}-{seq}"\n',
            "credit_note_number_format: Value error, 'CN-{month}-{seq}': expected only {year} and {seq} in the format",
        ),
        (  # a credit note took an invoice's number and its finalization failed
            'invoice_number_format = "D-{seq}"\ncredit_note_number_format = "D-{seq}"\n',
            "credit_note_number_format: Value error, expected a format whose numbers are not "
            "invoice_number_format's ('D-{seq}')",
        ),
        (  # another spelling of the same numbers
            'invoice_number_format = "D-{seq}"\ncredit_note_number_format = "D-{seq:d}"\n',
            "credit_note_number_format: Value error, expected a format whose numbers are not "
            "invoice_number_format's ('D-{seq:d}')",
        ),
        (  # a number no link or file name could carry
            'invoice_number_format = "INV #{seq}"\n',
            "invoice_number_format: Value error, 'INV #{seq}' makes numbers such as 'INV #1': expected letters, digits",
        ),
        (  # fine up to invoice 999, then INV-1,000
            'invoice_number_format = "INV-{seq:,}"\n',
            "invoice_number_format: Value error, 'INV-{seq:,}' makes numbers such as 'INV-1,234,567': expected",
        ),
    ],
)
def test_a_setting_that_cannot_be_right_is_refused_naming_the_file_and_key(tmp_path, written, named):
    """A seller country no one has (XX), a misspelt key of [seller] or [tax] (a misspelt seller country turned
    the EU reverse charge off without a word) and negative payment terms (a due date before the issue date) were
    accepted."""
    path = tmp_path / "config.toml"
    path.write_text(written, encoding="utf-8")
    result = CliRunner().invoke(app, ["--config", str(path), "plans", "validate"])
    assert result.exit_code == 1
    assert f"error: {path}: {named}" in " ".join(result.output.split())


def test_init_writes_into_the_config_files_folder_whatever_the_working_directory(project, tmp_path):
    result = CliRunner().invoke(app, ["--config", str(project / "config.toml"), "init"])
    assert result.exit_code == 0, result.output
    assert (project / "data" / "billing.db").is_file()
    assert not (tmp_path / "elsewhere" / "data").exists()


def test_settings_are_read_from_the_environment_only_by_the_settings_model():
    """No module reads a setting (STRIPE_*, BILLING_*) from os.environ itself: it asks billing.config, whose
    model reads the environment, the configuration file and the defaults in one place. The CLI's top level
    checks and sets BILLING_CONFIG (the name of the file) only; the demo sets variables for its own run."""
    allowed = {"billing/config.py", "billing/cli/__init__.py", "billing/demo/__init__.py"}
    readers = sorted(
        str(path.relative_to(ROOT))
        for package in ("pricing_plans", "meters", "invoices", "dbkit", "billing")
        for path in (ROOT / package).rglob("*.py")
        if ("os.environ" in (text := path.read_text(encoding="utf-8")) or "getenv(" in text)
        and str(path.relative_to(ROOT)) not in allowed
    )
    assert readers == []
    cli_reads = (ROOT / "billing" / "cli" / "__init__.py").read_text(encoding="utf-8")
    assert "STRIPE_" not in cli_reads and "os.environ.get(\"BILLING_CONFIG\"" in cli_reads


def test_a_number_format_with_a_space_is_kept():
    """Accepted before number formats were checked; an installation using one must still start."""
    from billing.config import Settings

    assert Settings(invoice_number_format="INV {year}-{seq:05d}").invoice_number_format == "INV {year}-{seq:05d}"
    with pytest.raises(ValueError, match="makes numbers such as 'INV 1 '"):
        Settings(invoice_number_format="INV {seq} ")


@pytest.mark.parametrize(
    ("url", "shown", "why"),
    [
        ("bogus://x", "'bogus://x'", "Can't load plugin: sqlalchemy.dialects:bogus"),
        ("mysql://u:secret@h/db", "'mysql://u:***@h/db'", "No module named 'MySQLdb'"),
        ("not a url", "'not a url'", "Could not parse SQLAlchemy URL"),
    ],
)
def test_a_database_url_that_cannot_be_used_is_one_line_naming_the_setting(url, shown, why, tmp_path, monkeypatch):
    """A dialect that does not exist, a driver not installed, a string that is no URL: each was a traceback on
    every command; now one line naming the setting, the URL (its password hidden) and why; exit 1."""
    monkeypatch.setenv("BILLING_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("", encoding="utf-8")
    monkeypatch.setenv("BILLING_DATABASE_URL", url)
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["customers", "list"])
    get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: database_url: cannot use {shown}: ") and why in result.stderr
    assert "Traceback" not in result.output and "secret" not in result.output
