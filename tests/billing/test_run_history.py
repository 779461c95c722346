"""The record of each billing run (``billing.run_history``): how a run that fails, is interrupted or is killed is
recorded. (What a completed run records is tested through the CLI, the API and the console.)"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from billing import run_history
from billing.cli import app
from billing.core.periods import month
from billing.errors import BillingInputError
from tests.dates import this_year

pytestmark = pytest.mark.db

OCTOBER = month(2026, 10)
STARTED = dt.datetime(2026, 11, 3, 9, 14, 2, tzinfo=dt.UTC)


def test_a_run_that_raises_is_recorded_as_failed_with_why_and_the_error_goes_on(engine: Engine):
    failing = run_history.recorded(engine, OCTOBER, source="cli", actor="ops", shard="2/4", now=STARTED)
    with pytest.raises(RuntimeError, match="disk full"), failing:
        raise RuntimeError("disk full")
    refused = run_history.recorded(engine, OCTOBER, source="api", actor="Ada", finalize=True)
    with pytest.raises(BillingInputError), refused:
        raise BillingInputError("period 2026-10 has not ended in the timezone of acme")
    with pytest.raises(KeyboardInterrupt), run_history.recorded(engine, OCTOBER, source="cli", customer="acme"):
        raise KeyboardInterrupt
    runs, more = run_history.runs_page(engine, limit=10)
    assert more is False
    assert [(r.id, r.outcome, r.error, r.report) for r in runs] == [
        # (an internal error's message may hold SQL and values: only its type, the log has the rest)
        (1, "failed", "internal error (RuntimeError): the log of the process that ran it has the details", None),
        (2, "failed", "period 2026-10 has not ended in the timezone of acme", None),  # as the user read it
        (3, "failed", "interrupted", None),
    ]
    first = runs[0]
    assert (first.started_at, first.shard, first.actor, first.source) == (STARTED, "2/4", "ops", "cli")
    assert first.finished_at is not None and first.finished_at > STARTED
    assert (runs[1].finalize, runs[2].customer) == (True, "acme")
    assert [r.id for r in run_history.runs_page(engine, limit=2, newest_first=True)[0]] == [3, 2]


def test_a_run_whose_process_is_killed_stays_running_and_a_new_run_is_recorded_beside_it(engine: Engine, db_url: str):
    script = textwrap.dedent(f"""
        import os
        from billing import run_history
        from billing.core.periods import month
        from billing.db import make_engine

        with run_history.recorded(make_engine({db_url!r}), month(2026, 10), source="cli", actor="ops"):
            os._exit(9)  # killed mid-run: no exception, no end
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    with run_history.recorded(engine, OCTOBER, source="cli", actor="ops") as recording:
        pass  # (a run that did nothing: completed, with no report)
    stopped, again = run_history.runs_page(engine, limit=10)[0]
    assert (stopped.outcome, stopped.finished_at, stopped.seconds, stopped.report) == ("running", None, None, None)
    assert (again.id, again.outcome, again.report) == (recording.id, "completed", None)
    assert stopped.started_at.year == again.started_at.year == this_year()
    assert run_history.run_json(stopped)["finished_at"] is None


def test_the_commands_print_stored_text_as_it_is_never_as_markup(engine: Engine, cli_env: dict[str, str]):
    refused = run_history.recorded(engine, OCTOBER, source="api", actor="[bold]ops", customer="x[/]")
    with pytest.raises(BillingInputError), refused:
        raise BillingInputError("customer x[/] has no [red]subscription[/red]")
    runner = CliRunner()
    listed = runner.invoke(app, ["runs", "list"], terminal_width=300)
    assert listed.exit_code == 0, listed.output
    assert "customer x[/]" in listed.output and "api: [bold]ops" in listed.output
    shown = runner.invoke(app, ["runs", "show", "1"], terminal_width=300)
    assert shown.exit_code == 0, shown.output
    assert "failed: customer x[/] has no [red]subscription[/red]" in shown.output


def test_a_customer_id_longer_than_any_is_refused_before_the_run(cli_env: dict[str, str]):
    result = CliRunner().invoke(app, ["run", "--period", "2026-10", "--customer", "c" * 256])
    assert result.exit_code == 2  # a usage error
    assert "--customer: a customer id has at most 255 characters, got 256" in result.output
