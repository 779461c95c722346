"""The browser harness: the real application served on 127.0.0.1, driven by Debian's Chromium through Playwright.

- ``live_server``: the app ``billing serve`` serves (``billing.api.create_app``), run by uvicorn in a thread on a
  free port, on a fresh, migrated database (SQLite, and PostgreSQL when ``BILLING_TEST_DATABASE_URL`` is set),
  with the catalog of ``live_catalog_path`` (the sample catalog unless a module overrides it) and a
  ``portal_secret``.
- ``browser`` / ``page``: Chromium from the system (``/usr/bin/chromium``, or ``BILLING_CHROMIUM``), never a
  browser Playwright downloads. ``phone_page``: the same at a phone's viewport.
- ``axe_check(page)``: runs axe-core (installed from the npm registry by ``make system-deps`` into
  ``.cache/axe``) in the page; fails on any "serious" or "critical" violation.
- ``screenshot(page, name)``: writes ``build/screenshots/<name>.png``.

Without Chromium, Playwright or axe-core the browser tests are skipped with the reason, except in CI (``CI`` set
to true), where they fail: the Makefile installs all three.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "screenshots"
AXE_JS = ROOT / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING_IMPACTS = ("serious", "critical")
PHONE = {"width": 390, "height": 844}  # a common phone's CSS viewport
# Chromium as root in a container, with no network beyond localhost: no sandbox, no GPU, no background calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")  # never fetch a browser of Playwright's own


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """Skip for ``reason`` on a developer's machine; in CI, fail (the Makefile installs what is missing)."""
    if in_ci():
        pytest.fail(f"{reason} (CI: browser tests never skip; `make system-deps` installs it)", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str | None:
    named = os.environ.get("BILLING_CHROMIUM", "").strip()
    if named:
        return named if Path(named).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        missing("no Chromium found (apt-get install chromium, or set BILLING_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright for Python is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    # bypass_csp: axe-core is injected as an inline script, which the pages' Content-Security-Policy forbids
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True, bypass_csp=True)
    yield context
    context.close()


@pytest.fixture
def page(context: Any) -> Any:
    return context.new_page()


@pytest.fixture
def phone_page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(
        viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2, accept_downloads=True, bypass_csp=True
    )
    yield context.new_page()
    context.close()


def _axe_source() -> str:
    if not AXE_JS.is_file():
        missing(f"axe-core is not installed at {AXE_JS.relative_to(ROOT)} (make system-deps)")
    return AXE_JS.read_text(encoding="utf-8")


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations of the page as it stands (injected into it, run on the whole document)."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=_axe_source())
    result = page.evaluate("async () => await window.axe.run(document, {resultTypes: ['violations']})")
    return list(result["violations"])


def _describe(violations: list[dict[str, Any]]) -> str:
    lines = []
    for violation in violations:
        lines.append(f"[{violation['impact']}] {violation['id']}: {violation['help']} ({violation['helpUrl']})")
        lines.extend(f"    {' '.join(node['target'])}: {node['failureSummary']}" for node in violation["nodes"][:5])
    return "\n".join(lines)


@pytest.fixture
def axe_check() -> Callable[[Any], list[dict[str, Any]]]:
    """``axe_check(page)``: fails the test on the page's serious and critical accessibility violations; returns
    the lesser ones (moderate, minor)."""

    def check(page: Any) -> list[dict[str, Any]]:
        violations = axe_violations(page)
        blocking = [v for v in violations if v["impact"] in BLOCKING_IMPACTS]
        assert not blocking, f"{page.url}: accessibility violations:\n{_describe(blocking)}"
        return [v for v in violations if v["impact"] not in BLOCKING_IMPACTS]

    return check


@pytest.fixture
def screenshot() -> Callable[[Any, str], Path]:
    """``screenshot(page, name)``: the whole page as ``build/screenshots/<name>.png``; returns the path."""

    def take(page: Any, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@dataclass
class LiveServer:
    """The application served on ``url`` (``http://127.0.0.1:<port>``), on the database ``database_url``."""

    url: str
    database_url: str
    settings: Any
    app: Any

    def __call__(self, path: str) -> str:
        return self.url + path


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


PORTAL_SECRET = "portal-secret-of-the-tests-0123456789abcdef"


@pytest.fixture
def live_catalog_path(sample_catalog_path: Path) -> Path:
    """The catalog the live server bills with (a test module may override this fixture)."""
    return sample_catalog_path


@pytest.fixture
def live_server(db_url: str, live_catalog_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    """``billing serve``'s application (without its scheduler) on a free port of 127.0.0.1, on a fresh database;
    the settings also in the environment, for the services that read the configured ones."""
    import uvicorn

    from billing.api import create_app
    from billing.config import Settings, get_settings

    env = {
        "BILLING_DATABASE_URL": db_url,
        "BILLING_CATALOG": str(live_catalog_path),
        "BILLING_CONFIG": str(ROOT / "config.toml"),
        "BILLING_PORTAL_SECRET": PORTAL_SECRET,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    sock = _free_socket()
    host, port = sock.getsockname()
    monkeypatch.setenv("BILLING_PUBLIC_URL", f"http://{host}:{port}")
    settings = Settings()
    app = create_app(settings)
    config = uvicorn.Config(app, log_level="warning", http="h11", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:  # waits for the socket to be served (no timing is asserted)
        if not thread.is_alive():
            pytest.fail("the live server did not start (its error is logged above)")
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://{host}:{port}", db_url, settings, app)
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
        get_settings.cache_clear()
