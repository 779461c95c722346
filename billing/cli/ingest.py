"""``billing ingest FILE``: usage events from JSON Lines or CSV (``-`` for standard input) into the database,
through ``billing.ingestion.ingest_path`` (the catalog's meters, the known customers, then the thresholds).

Prints ``accepted N, duplicates N, rejected N`` (``--json``: ``{"accepted": N, "duplicates": N, "rejected": N,
"rejects": FILE}``); rejected events go to ``FILE.rejected.jsonl`` (or ``--rejects``),
one JSON object per line with the ``line``, the ``reason`` and the ``raw`` input. Exit 1 if anything was
rejected (or ingestion stopped), else 0.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.exc import SQLAlchemyError

from billing.cli import _json
from billing.cli._common import database_message, engine_for_cli, err_console, fail, load_catalog_for_cli
from billing.ingestion import ingest_path
from meters import IngestInterrupted, IngestReport, MalformedFileError


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)


def ingest(
    file: Annotated[str, typer.Argument(help="A JSON Lines or CSV file of usage events; - for standard input.")],
    rejects: Annotated[
        Path | None, typer.Option("--rejects", help="Where rejected events go (default: FILE.rejected.jsonl).")
    ] = None,
    format: Annotated[
        str | None, typer.Option("--format", help="jsonl or csv (default: from the file name; stdin: jsonl).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the counts (and the rejects file) as a JSON object.")
    ] = False,
) -> None:
    """Ingest usage events; each event id is stored once, however often it is sent."""
    if format is not None and format not in ("jsonl", "csv"):
        fail(f"--format: expected jsonl or csv, got {format!r}")
    if file != "-" and Path(file).is_dir():
        fail(f"{file}: is a folder; expected a file of events")
    if file != "-" and not Path(file).exists():
        fail(f"{file}: no such file")
    streamed = file == "-" or not Path(file).is_file()  # (a pipe or a device: read, and its rejects named, as stdin's)
    rejects_path = rejects or Path("stdin.rejected.jsonl" if streamed else f"{file}.rejected.jsonl")
    if rejects is not None:  # (the default beside the input is written only if something is rejected)
        _check_writable(rejects, None if file == "-" else Path(file))
    catalog = load_catalog_for_cli()
    engine = engine_for_cli()
    try:
        with _progress(file) as advance, _source(file) as source:
            report = ingest_path(engine, catalog, source, file_format=format, progress=advance)
    except MalformedFileError as error:
        fail(str(error))
    except IngestInterrupted as error:
        _finish(error.report, rejects_path, as_json)
        if isinstance(error.cause, KeyboardInterrupt):
            fail(f"interrupted at line {error.line:,}: the events before it are stored; ingesting the same input "
                 "again is safe", code=130)  # fmt: skip
        fail(str(error))
    except KeyboardInterrupt:  # (before the file was read, or after it was stored, while thresholds were evaluated)
        fail("interrupted: what was stored stays stored; ingesting the same input again is safe and evaluates the "
             "thresholds of everything stored", code=130)  # fmt: skip
    except SQLAlchemyError as error:
        fail(database_message(error))
    finally:
        engine.dispose()
    _finish(report, rejects_path, as_json)
    if report.rejected:
        raise typer.Exit(1)


def _finish(report: IngestReport, rejects_path: Path, as_json: bool) -> None:
    """Print the three counts (as the API's ``POST /v1/events`` names them, with ``--json``); write the rejects
    file when something was rejected."""
    if as_json:
        rejects = str(rejects_path) if report.rejected else None
        _json.emit(
            {
                "accepted": report.accepted,
                "duplicates": report.duplicates,
                "rejected": len(report.rejected),
                "rejects": rejects,
            }
        )
    else:
        typer.echo(report.summary())
    if report.rejected:
        try:
            with rejects_path.open("w", encoding="utf-8") as out:
                for rejection in report.rejected:
                    out.write(rejection.as_json() + "\n")
        except OSError as error:
            # The good events are stored: the reasons must not be lost with the file, so they go to stderr.
            for rejection in report.rejected:
                sys.stderr.write(rejection.as_json() + "\n")
            fail(f"--rejects: cannot write {rejects_path} ({error.strerror}); the rejected events are above", code=1)
        err_console.print(f"rejected events written to {rejects_path}", highlight=False)


def _check_writable(path: Path, source: Path | None) -> None:
    """Refuse, before anything is stored, a rejects file that could not be written afterwards, or that would
    overwrite the input (``source``)."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        fail(f"--rejects: {path} is a folder; expected a file name", code=2)
    if source is not None and path.exists() and os.path.samefile(path, source):
        fail(f"--rejects: {path} is the input file; expected another file name", code=2)
    if not folder.is_dir():
        fail(f"--rejects: cannot write {path}: no folder {folder}", code=2)
    if not os.access(path if path.exists() else folder, os.W_OK):
        fail(f"--rejects: cannot write {path}: not writable", code=2)


@contextlib.contextmanager
def _source(file: str) -> Iterator[str | IO[bytes]]:
    """What to read: the file's path, or, for a pipe or a device named by path (``/dev/stdin``, ``<(…)``), the
    stream itself, read as standard input is (one pass, no seeking)."""
    if file == "-" or Path(file).is_file():
        yield file
        return
    with open(file, "rb") as stream:
        yield stream


@contextlib.contextmanager
def _progress(file: str) -> Iterator[Callable[[int], None]]:
    """A progress bar over the bytes of the file (indeterminate for standard input, a pipe or a device)."""
    total = os.path.getsize(file) if file != "-" and Path(file).is_file() else None
    bar = Progress(
        TextColumn("ingesting"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
        auto_refresh=False,  # no refresh thread: big files are parsed by forked worker processes
    )
    task = bar.add_task("ingest", total=total)
    with bar:
        yield lambda done: bar.update(task, completed=done, refresh=True)
