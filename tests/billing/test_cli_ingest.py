"""``billing ingest``: the three counts, the rejects file with line numbers and reasons, the exit code, and
ingesting the same file again changes nothing."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from billing.cli import app
from billing.config import get_settings
from billing.db import make_engine, session_scope
from billing.db.tables import CustomerRow
from meters.ingest import CHUNK_SIZE
from meters.tables import UsageEventRow

CATALOG = """
[meters.api_calls]
name = "API calls"
aggregation = "count"

[meters.storage_gb]
name = "Storage"
aggregation = "weighted_sum"
unit = "GB-month"

[meters.active_users]
name = "Active users"
aggregation = "unique_count"
unique_property = "user_id"

[meters.payment_volume]
name = "Payment volume"
aggregation = "sum"

[plans.payments]
name = "Payments"
currency = "EUR"
charges = [
  { meter = "api_calls", model = "per_unit", unit_amount = "0.001" },
  { meter = "payment_volume", model = "percentage", rate = "1.4", fixed_amount = "0.25" },
]
"""

runner = CliRunner()

# Noon on the first of the current month: inside the late-usage window and not in the future, whenever it runs.
NOON = dt.datetime.now(dt.UTC).replace(day=1, hour=12, minute=0, second=0, microsecond=0)
WHEN = NOON.isoformat().replace("+00:00", "Z")


@pytest.fixture
def env(cli_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The test database with two customers, and a small catalog of our own."""
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG, encoding="utf-8")
    monkeypatch.setenv("BILLING_CATALOG", str(catalog))
    get_settings.cache_clear()
    engine = make_engine(cli_env["BILLING_DATABASE_URL"])
    with session_scope(engine) as session:
        for external_id in ("acme", "globex"):
            session.add(
                CustomerRow(
                    external_id=external_id,
                    name=external_id.title(),
                    email=None,
                    currency="EUR",
                    timezone="UTC",
                    webhook_url=None,
                )
            )
    engine.dispose()
    return cli_env


def event(event_id: str, meter: str = "api_calls", customer: str = "acme", **extra: object) -> str:
    return json.dumps(
        {"id": event_id, "customer": customer, "meter": meter, "timestamp": WHEN, **extra}
    )


def stored(env: dict[str, str]) -> list[tuple[object, ...]]:
    engine = make_engine(env["BILLING_DATABASE_URL"])
    with engine.connect() as connection:
        rows = [tuple(r) for r in connection.execute(select(UsageEventRow).order_by(UsageEventRow.event_id))]
    engine.dispose()
    return rows


def test_good_duplicate_and_bad_lines(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    lines = [
        event("e1"),
        event("e2", "storage_gb", value="12.5"),
        event("e3", "active_users", properties={"user_id": "u7"}),
        event("e1"),  # duplicate
        event("e4", customer="initech"),  # unknown customer
        "this is not json",
        event("e2", "storage_gb", value="13"),  # conflict
        event("e5", "payment_volume", value="19.99"),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = runner.invoke(app, ["ingest", str(path)])
    assert result.exit_code == 1
    assert result.stdout.strip() == "accepted 4, duplicates 1, rejected 3"
    rejects = [json.loads(text) for text in Path(f"{path}.rejected.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"], r["raw"]) for r in rejects] == [
        (5, "unknown customer 'initech'", lines[4]),
        (6, "not JSON: Expecting value (column 1)", lines[5]),
        (7, "conflict: id 'e2' is used by line 2 with other content", lines[6]),
    ]
    first = stored(env)
    assert len(first) == 4

    again = runner.invoke(app, ["ingest", str(path), "--rejects", str(tmp_path / "again.jsonl")])
    assert again.exit_code == 1
    assert again.stdout.strip() == "accepted 0, duplicates 5, rejected 3"
    assert [json.loads(t)["line"] for t in (tmp_path / "again.jsonl").read_text().splitlines()] == [5, 6, 7]
    assert stored(env) == first  # nothing changed


def test_a_clean_file_exits_0_and_writes_no_rejects(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "usage.csv"
    path.write_text(
        f"id,customer,meter,timestamp,value\nc1,acme,api_calls,{WHEN},\n"
        f"c2,globex,payment_volume,{WHEN.replace('Z', '+01:00')},5.00\n",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["ingest", str(path)])
    assert (result.exit_code, result.stdout.strip()) == (0, "accepted 2, duplicates 0, rejected 0")
    assert not Path(f"{path}.rejected.jsonl").exists()


def test_standard_input_with_a_format(env: dict[str, str], tmp_path: Path) -> None:
    data = f"id,customer,meter,timestamp\ns1,acme,api_calls,{WHEN}\ns2,acme,api_calls,nope\n"
    result = runner.invoke(app, ["ingest", "-", "--format", "csv", "--rejects", str(tmp_path / "r.jsonl")], input=data)
    assert (result.exit_code, result.stdout.strip()) == (1, "accepted 1, duplicates 0, rejected 1")
    assert json.loads((tmp_path / "r.jsonl").read_text())["reason"] == (
        "timestamp 'nope' is not an ISO-8601 date and time"
    )


def test_a_rejects_file_that_cannot_be_written_is_refused_before_anything_is_stored(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "usage.jsonl"
    path.write_text(event("r1") + "\n" + event("r2", customer="initech") + "\n", encoding="utf-8")
    no_folder = runner.invoke(app, ["ingest", str(path), "--rejects", str(tmp_path / "missing" / "r.jsonl")])
    assert no_folder.exit_code == 2
    assert f"--rejects: cannot write {tmp_path / 'missing' / 'r.jsonl'}: no folder" in no_folder.stderr
    a_folder = runner.invoke(app, ["ingest", str(path), "--rejects", str(tmp_path)])
    assert a_folder.exit_code == 2 and "is a folder; expected a file name" in a_folder.stderr
    assert stored(env) == []  # refused before the good event was stored


def test_rejection_reasons_go_to_stderr_when_their_file_cannot_be_written(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    path.write_text(event("r1") + "\n" + event("r2", customer="initech") + "\n", encoding="utf-8")
    result = runner.invoke(app, ["ingest", str(path), "--rejects", "/dev/full"])  # every write fails: no space
    assert result.exit_code == 1
    assert result.stdout.strip() == "accepted 1, duplicates 0, rejected 1"
    reasons = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert [(r["line"], r["reason"]) for r in reasons] == [(2, "unknown customer 'initech'")]
    assert "cannot write /dev/full" in result.stderr and "the rejected events are above" in result.stderr
    assert len(stored(env)) == 1  # the good event is stored; the bad one is reported


def test_bad_input_is_one_clear_error(env: dict[str, str], tmp_path: Path) -> None:
    missing = runner.invoke(app, ["ingest", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 1 and "no such file" in missing.stderr
    bad_format = runner.invoke(app, ["ingest", "-", "--format", "xml"], input="")
    assert bad_format.exit_code == 2 and "expected jsonl or csv" in bad_format.stderr  # a usage error
    header = tmp_path / "bad.csv"
    header.write_text("id,who\n1,acme\n", encoding="utf-8")
    bad_header = runner.invoke(app, ["ingest", str(header)])
    assert bad_header.exit_code == 1 and "bad CSV header" in bad_header.stderr
    engine = make_engine(env["BILLING_DATABASE_URL"])
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(UsageEventRow)).scalar_one() == 0
    engine.dispose()


def test_lenient_numbers_repeated_keys_and_usage_older_than_the_late_usage_window_are_rejected(
    env: dict[str, str], tmp_path: Path
) -> None:
    """What was once stored as 1000, 5 and 5, an id given twice (the last one won), and events no run would
    ever bill: each rejected with its line and why, the rest stored."""
    window_start = NOON.replace(hour=0).replace(year=NOON.year - 1)  # the month 12 months back, its first day
    old = (window_start - dt.timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    oldest_billed = window_start.isoformat().replace("+00:00", "Z")
    lines = [
        event("v1", "payment_volume", value="1_000"),
        event("v2", "payment_volume", value="\u0665"),
        event("v3", "payment_volume", value=" 5 "),
        event("v4", "payment_volume", value="12.50"),
        event("v5", "payment_volume", value=1.5e3),
        event("d1")[:-1] + ', "id": "d2"}',
        event("o1", timestamp=old),
        event("o2", timestamp=oldest_billed),
        event("o3", timestamp="0001-01-01T00:00:00Z"),
    ]
    path = tmp_path / "usage.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["ingest", str(path)])
    assert (result.exit_code, result.stdout.strip()) == (1, "accepted 3, duplicates 0, rejected 6")
    rejects = [json.loads(text) for text in Path(f"{path}.rejected.jsonl").read_text().splitlines()]
    plain = "is not a number in plain decimal notation (like 1500 or -2.5)"
    assert [(r["line"], r["event_id"], r["reason"]) for r in rejects] == [
        (1, "v1", f"value '1_000' {plain}"),
        (2, "v2", f"value '\u0665' {plain}"),
        (3, "v3", f"value ' 5 ' {plain}"),
        (6, "d2", "duplicate key 'id'"),
        (7, "o1", f"timestamp '{old}' is older than the late-usage window of customer 'acme', which begins at "
         f"{window_start.isoformat()}: usage that old is never billed"),
        (9, "o3", "timestamp '0001-01-01T00:00:00Z' is out of range (before 1970-01-01T00:00:00+00:00)"),
    ]
    assert sorted((row[1], row[5]) for row in stored(env)) == [  # event_id, value (× 10^6)
        ("o2", None), ("v4", 12_500_000), ("v5", 1_500_000_000),
    ]


# -- a killed ingestion leaves no worker behind -----------------------------------------------------------


def _process_stat(pid: int) -> tuple[str, int, int] | None:
    """A process's state, parent and start time (from /proc), or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _children(parent: int) -> dict[int, int]:
    """The live child processes of ``parent``: pid → start time."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _process_stat(int(entry.name))
            if stat is not None and stat[1] == parent and stat[0] != "Z":
                found[int(entry.name)] = stat[2]
    return found


def _alive(pid: int, started: int) -> bool:
    """Whether that very process (not a later one with its pid) still runs; a zombie has ended."""
    stat = _process_stat(pid)
    return stat is not None and stat[2] == started and stat[0] != "Z"


def _wait_for(condition: Callable[[], object], seconds: float) -> bool:
    """Whether ``condition`` came true within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def _settled_children(pid: int, *, polls: int = 40) -> dict[int, int]:
    """The children of ``pid`` once the pool has forked all of them: the same set twice in a row, half a second
    apart (a worker forked later would otherwise be missed)."""
    seen = _children(pid)
    for _ in range(polls):
        time.sleep(0.5)
        now = _children(pid)
        if now == seen:
            return now
        seen = now
    return seen


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker processes through /proc")
@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods() or (os.cpu_count() or 1) < 2,
    reason="ingestion parses in worker processes only where it can fork and has a spare CPU",
)
def test_ingest_killed_mid_file_leaves_no_worker_behind(env: dict[str, str], tmp_path: Path) -> None:
    """``billing ingest -`` is fed two chunks' worth of events, so its parsing workers start, and then nothing
    more: it stays mid-file, its workers alive, until it is killed with SIGKILL. Its workers must end with it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "billing.cli", "ingest", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
        cwd=tmp_path,
    )
    workers: dict[int, int] = {}
    try:
        assert process.stdin is not None
        lines = "".join(event(f"k{i}", customer=("acme", "globex")[i % 2]) + "\n" for i in range(2 * CHUNK_SIZE))
        process.stdin.write(lines.encode())
        process.stdin.flush()  # and kept open: the command waits for the rest of the file
        assert _wait_for(lambda: _children(process.pid) or process.poll() is not None, 120)
        workers = _settled_children(process.pid)
        assert workers, f"no parsing worker started (exit {process.poll()})"
        assert process.poll() is None
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

        def left() -> list[int]:
            return sorted(pid for pid, started in workers.items() if _alive(pid, started))

        assert _wait_for(lambda: not left(), 10), f"worker processes left behind: {left()}"
    finally:
        for pid, started in workers.items():
            if _alive(pid, started):
                os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
            process.wait()


def test_ctrl_c_stops_an_ingest_in_one_message_and_the_same_input_again_stores_the_rest(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Ctrl-C reaches the whole process group: each parsing worker printed its own KeyboardInterrupt traceback,
    and the command exited 1 with ``(KeyboardInterrupt: )``. Now the workers leave it to the command, which says
    what was stored and exits 130 (as ``billing run`` does); the same input again stores exactly the rest."""
    total = 3 * CHUNK_SIZE + 7
    each = [event(f"c{i}", customer=("acme", "globex")[i % 2]) + "\n" for i in range(total)]
    lines = "".join(each)
    process = subprocess.Popen(
        [sys.executable, "-m", "billing.cli", "ingest", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy(), cwd=tmp_path,
        start_new_session=True,  # (its own process group, as a terminal's foreground job is)
        # Ctrl-C as a terminal delivers it: a job started in the background (CI's) inherits SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert process.stdin is not None
        process.stdin.write("".join(each[: 2 * CHUNK_SIZE]).encode())
        process.stdin.flush()  # and kept open: the command waits for the rest of the file
        assert _wait_for(lambda: _children(process.pid) or process.poll() is not None, 120)
        assert process.poll() is None
        time.sleep(1)
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, err
    assert "Traceback" not in err.decode() and "KeyboardInterrupt" not in err.decode()
    assert "error: interrupted" in err.decode() and "again is safe" in err.decode()
    first = len(stored(env))
    path = tmp_path / "all.jsonl"
    path.write_text(lines, encoding="utf-8")
    again = runner.invoke(app, ["ingest", str(path), "--json"])
    assert again.exit_code == 0, again.output
    counts = json.loads(again.stdout)
    assert (counts["accepted"], counts["duplicates"]) == (total - first, first)
    assert len(stored(env)) == total


def test_the_rejects_file_is_never_the_input_and_a_folder_or_a_pipe_is_told_apart(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--rejects`` naming the input overwrote it with the rejected lines; a folder was "no such file", and so
    was a pipe named by path (``/dev/stdin``, ``<(…)``), which is now read as standard input is."""
    path = tmp_path / "usage.jsonl"
    text = event("p1") + "\n" + event("p2", customer="initech") + "\n"
    path.write_text(text, encoding="utf-8")
    same = runner.invoke(app, ["ingest", str(path), "--rejects", str(path)])
    assert same.exit_code == 2 and f"--rejects: {path} is the input file" in same.stderr
    assert path.read_text(encoding="utf-8") == text and stored(env) == []
    folder = runner.invoke(app, ["ingest", str(tmp_path)])
    assert folder.exit_code == 1 and "is a folder; expected a file of events" in folder.stderr
    fifo = tmp_path / "events.pipe"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"cat {path} > {fifo}"])
    piped = runner.invoke(app, ["ingest", str(fifo), "--rejects", str(tmp_path / "r.jsonl")])
    writer.wait(timeout=30)
    assert piped.exit_code == 1 and piped.stdout.strip() == "accepted 1, duplicates 0, rejected 1"
    # without --rejects, a pipe's rejects are named as standard input's, in the working folder
    writer = subprocess.Popen(["sh", "-c", f"sed 's/p1/p3/; s/p2/p4/' {path} > {fifo}"])
    monkeypatch.chdir(tmp_path)
    again = runner.invoke(app, ["ingest", str(fifo)])
    writer.wait(timeout=30)
    assert again.exit_code == 1 and "rejected events written to stdin.rejected.jsonl" in again.stderr
    assert json.loads((tmp_path / "stdin.rejected.jsonl").read_text(encoding="utf-8"))["line"] == 2
