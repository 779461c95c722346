"""``billing serve``: the HTTP API (uvicorn), with the scheduler and the usage reactor in a process of its own.

Thin: it checks the database, builds the app with ``billing.api.create_app`` and runs uvicorn until
SIGINT/SIGTERM, then stops the scheduler's process (which waits for its running jobs) and closes the database
connections.

The scheduler (``billing.scheduler.start_scheduler``) starts only once uvicorn listens on its socket: a server
that cannot start (its port taken, say) exits 1 before any job has run or been stored, so a second ``billing
serve`` started by mistake next to a running one bills nothing. It runs in a child process (:func:`background`):
a billing run, a threshold evaluation or a PDF never holds the interpreter lock the requests need (on SQLite their
writes still share the database's one write lock with the requests': ``dbkit.writelock``). The child stops when
asked (SIGTERM, SIGINT) and when the server's process is gone; it is started again, after an error in the log,
if it exits while the server runs. Its reactor looks for newly stored events every :data:`REACTOR_POLL` seconds.
It runs at a lower priority (:data:`SCHEDULER_NICENESS`): its work is batch work, and on a busy machine the
requests get the CPU first (the reactor's write transactions are short, so a request seldom waits for one that
was held up). On SQLite the API's process copies the write-ahead log in a thread of its own
(``dbkit.checkpoints``), never in the commit of a request.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from billing.cli._common import console, fail
from billing.config import get_settings

if TYPE_CHECKING:
    import uvicorn

__all__ = ["KEEP_ALIVE", "register", "serve"]

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
REACTOR_POLL = 0.25
"""Seconds between two looks of the scheduler process's reactor for events the server stored."""
GC_YOUNG = 10_000
"""Allocations between two collections of the garbage collector's youngest generation in the API's process."""
RESTART_DELAY = 5
"""Seconds before a scheduler process that exited while the server runs is started again."""
KEEP_ALIVE = 75
"""Seconds an idle keep-alive connection stays open (uvicorn's default is 5). A server that closes an idle
connection races the client's next request on it: one sent as the close crosses it fails with a connection
reset, and a POST is not retried. Clients keep idle connections for less than this (httpx 5 s, a load balancer
60 s), so they close first; any pause of the process longer than 5 s (a full garbage collection of a large
heap) no longer turns into failed requests."""
SCHEDULER_NICENESS = 10
"""How much lower the scheduler process's CPU priority is than the server's (``nice``)."""
log = logging.getLogger(__name__)
_NOISY = ("apscheduler.executors", "alembic", "weasyprint", "fontTools")  # a line per job run, step, page


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def _check_database(url: str) -> None:
    """A fresh SQLite database is created; any other database must be at the newest revision."""
    from billing.db import current_revision, head_revision, make_engine, upgrade

    try:
        parsed = make_url(url)
    except ArgumentError:
        fail(f"database_url: not a database URL: {url!r}")
    shown = parsed.render_as_string(hide_password=True)
    engine = make_engine(url)
    try:
        revision = current_revision(engine)
        head = head_revision()
        if revision is None and parsed.get_backend_name() == "sqlite":
            upgrade(engine)
            console.print(f"created the database {shown} (revision {head})", highlight=False)
        elif revision is None:
            fail(f"database {shown} is not initialized: run `billing init`")
        elif revision != head:
            fail(f"database {shown} is at revision {revision}, this version needs {head}: run `billing db upgrade`")
    except SQLAlchemyError as exc:
        original = getattr(exc, "orig", None)
        fail(f"cannot reach the database {shown}: {str(original or exc).strip().splitlines()[0]}")
    finally:
        engine.dispose()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _server(config: uvicorn.Config, on_started: Callable[[], Any]) -> uvicorn.Server:
    """A uvicorn server that calls ``on_started`` (in a worker thread) once it listens, before serving; if that
    raises, the server stops and the error goes on.

    Once it listens, every object made so far (the modules, the app: about 170,000 objects) leaves the garbage
    collector's view (``gc.freeze``): they live as long as the process, and a full collection that walked them
    all took 100–250 ms, a pause every request in flight waited out, every few dozen batches of events. The
    youngest generation is collected every :data:`GC_YOUNG` allocations instead of 700: a batch of 1,000 events
    is mostly garbage by then, and was collected 7 times while alive (about 4 µs an event)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and not self.should_exit:
                gc.freeze()  # (see the docstring)
                gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
                await asyncio.to_thread(on_started)

    return Server(config)


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8000,
    no_scheduler: Annotated[
        bool, typer.Option("--no-scheduler", help="Serve the API only (for further processes on one database).")
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs) and run the scheduler: billing runs for closed
    periods, finalization after the grace period, threshold checks, notification delivery and Stripe sync."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    from billing.api import create_app
    from billing.cli.notifications import warn_without_destination
    from billing.db.engines import checkpoint_in_background, dispose_engines

    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        fail(f"--log-level: expected debug, info, warning or error, got {log_level!r}")
    _logging(level)
    settings = get_settings()
    _check_database(settings.database_url)
    checkpoint_in_background()  # (SQLite) the API's event writer never copies the log while a request waits
    warn_without_destination(settings)
    schedulers: list[_Background] = []

    def start_jobs() -> None:  # once the socket is bound and listening
        if not no_scheduler:
            schedulers.append(_Background(level).start())

    # uvicorn's fastest HTTP parser and event loop that are installed: httptools and uvloop (dependencies), else
    # h11 and asyncio; the body limits hold on either (``billing.api.limits``)
    config = uvicorn.Config(create_app(settings), host=host, port=port, log_level=log_level.lower(), http="auto",
                            timeout_keep_alive=KEEP_ALIVE)
    server = _server(config, start_jobs)
    # uvicorn hands a SIGTERM back to the previous handler once it has stopped serving: make that an exit through
    # the ``finally`` below (the default handler would kill the process before the scheduler is stopped).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        server.run()
    except SystemExit as exc:
        if server.started or exc.code != STARTUP_FAILURE:
            raise
        fail(f"could not serve on {host}:{port} (the reason is above); the scheduler was not started")
    finally:
        for child in schedulers:
            child.stop()
        dispose_engines()


def _logging(level: str) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


class _Background:
    """The scheduler's process (:func:`background`): the same interpreter and settings (the environment, with
    ``BILLING_CONFIG``), its log lines on the same streams. One that exits while the server runs is logged as
    an error and started again after :data:`RESTART_DELAY` seconds."""

    def __init__(self, level: str) -> None:
        self.level = level
        self.process: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def start(self) -> _Background:
        self._spawn()
        threading.Thread(target=self._watch, name="scheduler-watch", daemon=True).start()
        return self

    def _spawn(self) -> None:
        code = "from billing.cli.serve import background; background()"
        with self.lock:
            if not self.stopping.is_set():
                self.process = subprocess.Popen([sys.executable, "-c", code, self.level, str(os.getpid())])

    def _watch(self) -> None:
        while not self.stopping.is_set():
            process = self.process
            if process is None:
                return
            code = process.wait()
            if self.stopping.wait(0):
                return
            log.error("the scheduler's process exited (%s); starting it again in %d s", code, RESTART_DELAY)
            if not self.stopping.wait(RESTART_DELAY):
                self._spawn()

    def stop(self) -> None:
        """Stop the process (it waits for its running jobs) and let it finish."""
        with self.lock:
            self.stopping.set()
            process = self.process
        if process is not None:
            process.terminate()
            process.wait()


def background() -> None:
    """The scheduler's process: the jobs and the usage reactor until SIGTERM or SIGINT, or until the server's
    process (``argv[2]``) is gone; then the scheduler stops, waiting for its running jobs."""
    from billing.db.engines import dispose_engines, engine_for_url
    from billing.scheduler import start_scheduler, stop_scheduler

    level, server = sys.argv[1], int(sys.argv[2])
    os.nice(SCHEDULER_NICENESS)
    _logging(level)
    stopping: list[int] = []  # (a signal handler only appends: nothing it could wait for)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: stopping.append(received))
    scheduler = start_scheduler(engine_for_url(get_settings().database_url), reactor_poll=REACTOR_POLL)
    try:
        while not stopping and os.getppid() == server:
            time.sleep(0.2)
    finally:
        stop_scheduler(scheduler, wait=True)
        logging.getLogger(__name__).info("scheduler stopped")
        dispose_engines()
