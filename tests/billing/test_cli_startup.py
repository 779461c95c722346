"""The ``billing`` command as scripts use it: a cheap start (``--help`` and ``--version`` import none of the heavy
libraries), the command table kept whole, help without type noise, ``--version``, shell completion, and usage
errors that exit 2."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
from typer.testing import CliRunner

import billing
import billing.cli
from billing.cli import COMMANDS, app, load_command

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("sqlalchemy", "numpy", "fastapi", "weasyprint", "pydantic_settings", "rich", "stripe", "alembic", "uvicorn")

# Runs ``billing ARGS`` in a fresh interpreter and prints the top-level packages it imported, as JSON.
IMPORTED = """
import json, sys
from billing.cli import main
sys.argv = ["billing", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})), file=sys.stderr)
"""


def billing_process(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", "billing", *args], capture_output=True, text=True, env=environment, timeout=120
    )


@pytest.mark.parametrize("args", [["--help"], ["--version"], []])
def test_help_and_version_import_none_of_the_heavy_libraries(args):
    done = subprocess.run(
        [sys.executable, "-c", IMPORTED, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    imported = set(json.loads(done.stderr.strip().splitlines()[-1]))
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))
    assert imported.isdisjoint({"pricing_plans", "meters", "invoices", "dbkit"})
    assert "Usage: billing" in done.stdout + done.stderr or done.stdout == f"billing {billing.__version__}\n"


def test_the_version():
    done = billing_process("--version")
    assert (done.returncode, done.stdout) == (0, f"billing {billing.__version__}\n")


def _eager_commands() -> dict[str, Any]:
    """Every top-level command, built the plain way: every command module registered on one Typer."""
    holder = typer.Typer(rich_markup_mode=None)
    for module in pkgutil.iter_modules(billing.cli.__path__):
        if module.name.startswith("_"):
            continue  # __main__ runs the command; _common registers none
        loaded = importlib.import_module(f"billing.cli.{module.name}")
        if hasattr(loaded, "register"):
            loaded.register(holder)
    return dict(typer.main.get_group(holder).commands)


def test_the_command_table_lists_every_command_with_its_own_help_and_modules():
    eager = _eager_commands()
    assert list(COMMANDS) != [] and set(COMMANDS) == set(eager), "add the command to billing.cli.COMMANDS"
    for name, command in eager.items():
        first_paragraph = " ".join((command.help or "").split("\n\n")[0].split())
        assert COMMANDS[name][1] == first_paragraph, name
        lazy = load_command(name)
        # the modules listed register all of it: `customers set-limit` comes from the notifications module
        assert sorted(getattr(lazy, "commands", {})) == sorted(getattr(command, "commands", {})), name


def test_the_top_level_help_lists_every_command():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    listed = result.stdout.split("Commands:")[1]
    assert [line.split()[0] for line in listed.strip().splitlines()] == list(COMMANDS)
    assert "run Write (or refresh) one draft invoice per customer for" in " ".join(listed.split())
    for option in ("--version", "--config FILE", "--install-completion", "--show-completion"):
        assert option in result.stdout


def _every_command_path(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [path]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        paths += _every_command_path(sub, (*path, name))
    return paths


def test_help_shows_no_type_after_options_or_arguments():
    runner = CliRunner()
    paths = [p for name in COMMANDS for p in _every_command_path(load_command(name), (name,))]
    assert ("customers", "set-limit") in paths and ("db", "create-role") in paths and len(paths) > 30
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "<" not in result.stdout.replace("<=", ""), (path, result.stdout)
    run_help = runner.invoke(app, ["run", "--help"]).stdout
    assert "--period PERIOD" in run_help and "--finalize " in run_help and "--finalize <" not in run_help
    assert "--status [draft|finalized|paid|void|uncollectible]" in runner.invoke(app, ["invoices", "list", "--help"]).stdout
    show_help = runner.invoke(app, ["plans", "show", "--help"]).stdout
    assert "  plan  The plan code." in show_help


def test_shell_completion_completes_commands_and_subcommands():
    commands = billing_process(_BILLING_COMPLETE="complete_bash", COMP_WORDS="billing pl", COMP_CWORD="1")
    assert commands.stdout.split() == ["plans"]
    subcommands = billing_process(_BILLING_COMPLETE="complete_bash", COMP_WORDS="billing plans ", COMP_CWORD="2")
    assert subcommands.stdout.split() == ["validate", "show"]
    # the shell named on the command line, not detected from the parent processes (which fails when the tests
    # run without a shell above them)
    script = billing_process("--show-completion", "bash", _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    assert script.returncode == 0 and "_BILLING_COMPLETE=complete_bash" in script.stdout


def test_a_mistyped_command_is_a_usage_error_with_a_suggestion():
    result = CliRunner().invoke(app, ["rn"])
    assert result.exit_code == 2 and "No such command 'rn'. Did you mean 'run', 'runs'?" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--period", "2024-13"], "error: --period: expected a month as YYYY-MM, got '2024-13'"),
        (["run"], "Missing option '--period'"),
        (["invoices", "list", "--period", "May"], "error: --period:"),
        (["metrics", "--period", "2024-05", "--to", "2024-01"], "error: --to 2024-01 is before --period 2024-05"),
        (["metrics", "--period", "2024/05"], "error: --period:"),
        (["ingest", "events.jsonl", "--format", "xml"], "error: --format: expected jsonl or csv, got 'xml'"),
        (["quote", "--plan", "starter"], "error: give the usage either as --usage"),
        (["quote", "--plan", "api_growth", "--usage", "api_calls"], "error: --usage 'api_calls': expected METER=QUANTITY"),
        (["subscriptions", "cancel", "x1", "--date", "2024-01-01"], "error: ID: expected a subscription id"),
        (["stripe", "sync", "--limit", "0"], "Invalid value for '--limit'"),
    ],
)
def test_usage_errors_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BILLING_CATALOG", str(ROOT / "catalog.toml"))
    monkeypatch.setenv("BILLING_DATABASE_URL", f"sqlite:///{tmp_path / 'never-created.db'}")
    monkeypatch.delenv("BILLING_CONFIG", raising=False)
    from billing.config import get_settings

    get_settings.cache_clear()
    (tmp_path / "events.jsonl").write_text("", encoding="utf-8")
    result = CliRunner().invoke(app, args)
    get_settings.cache_clear()
    assert result.exit_code == 2, (args, result.output)
    assert message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "never-created.db").exists()
