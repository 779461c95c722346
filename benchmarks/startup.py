"""Start-up: what a script pays each time it calls ``billing``, and how long the API takes to answer after a start.

- ``billing --help`` and ``billing --version``: CPU-seconds (user + system) of the whole process, beside
  ``python -c pass`` on the same interpreter. Target: ≤ 0.25 CPU-seconds each. The fastest of five runs, so that
  other work on the machine counts as little as possible; CPU time rather than wall time for the same reason.
- ``billing serve`` (API and scheduler, on a fresh SQLite database): wall seconds from starting the process to
  the first ``200`` from ``GET /healthz``, beside an empty FastAPI application on the same uvicorn. The fastest of
  three runs.

Every process runs this checkout's code (``PYTHONPATH``), the way ``make bench`` runs from the repository.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console

from benchmarks import Figure

ROOT = Path(__file__).resolve().parent.parent
CPU_TARGET = 0.25
CPU_RUNS = 5
API_RUNS = 3
API_TIMEOUT = 120.0

EMPTY_API = """
import sys
import uvicorn
from fastapi import FastAPI

app = FastAPI()
app.get("/healthz")(lambda: {"status": "ok"})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def _environment(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def cpu_seconds(argv: list[str], env: dict[str, str] | None = None) -> float:
    """CPU-seconds (user + system) of one run of ``argv``, from the rusage of the waited-for child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def seconds_to_healthz(argv: list[str], port: int, env: dict[str, str]) -> float:
    """Wall seconds from starting ``argv`` to the first 200 from ``GET /healthz`` on ``port``; the process is
    stopped (SIGTERM) afterwards."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{' '.join(argv)} exited {process.returncode}: {process.stderr.read()}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.perf_counter() - started > API_TIMEOUT:
                raise RuntimeError(f"no answer from /healthz within {API_TIMEOUT:.0f} s")
            time.sleep(0.02)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _cli_figures() -> list[Figure]:
    env = _environment()
    python = sys.executable
    baseline = min(cpu_seconds([python, "-c", "pass"], env) for _ in range(CPU_RUNS))
    figures = []
    for args in (["--help"], ["--version"]):
        measured = min(cpu_seconds([python, "-m", "billing", *args], env) for _ in range(CPU_RUNS))
        figures.append(
            Figure(
                name=f"CLI start-up: billing {args[0]} (lower is better)",
                measured=measured,
                unit="CPU-s",
                baseline=baseline,
                baseline_name="python -c pass",
                target=f"≤ {CPU_TARGET} CPU-s",
                met=measured <= CPU_TARGET,
            )
        )
    return figures


def _api_figure(console: Console) -> Figure:
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as folder:
        env = _environment(
            BILLING_DATABASE_URL=f"sqlite:///{Path(folder) / 'billing.db'}",
            BILLING_CATALOG=str(ROOT / "catalog.toml"),
            BILLING_CONFIG=str(ROOT / "config.toml"),
        )
        subprocess.run(
            [sys.executable, "-m", "billing", "init"], env=env, check=True, capture_output=True, timeout=300
        )
        console.log("starting billing serve and an empty FastAPI app, three times each...")
        serve: list[float] = []
        empty: list[float] = []
        for _ in range(API_RUNS):
            port = _free_port()
            argv = [sys.executable, "-m", "billing", "serve", "--port", str(port), "--log-level", "warning"]
            serve.append(seconds_to_healthz(argv, port, env))
            port = _free_port()
            empty.append(seconds_to_healthz([sys.executable, "-c", EMPTY_API, str(port)], port, env))
    return Figure(
        name="API start-up: billing serve to the first /healthz (lower is better)",
        measured=min(serve),
        unit="s",
        baseline=min(empty),
        baseline_name="an empty FastAPI app on uvicorn",
    )


def run(scale: float, console: Console) -> list[Figure]:
    return [*_cli_figures(), _api_figure(console)]
