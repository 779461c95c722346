"""The browser harness itself: the live server answers in Chromium, axe-core finds what it should, and
screenshots are written."""

from __future__ import annotations

import httpx
import pytest

from tests.web.conftest import BLOCKING_IMPACTS, axe_violations

pytestmark = pytest.mark.browser

ACCESSIBLE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Harness</title></head>
<body><main><h1>Harness</h1><p>Hello.</p></main></body></html>"""
# An image without a text alternative: axe-core's rule image-alt, "critical".
INACCESSIBLE = ACCESSIBLE.replace("<p>Hello.</p>", '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">')


def test_the_live_server_serves_the_application_in_the_browser(live_server, page):
    assert httpx.get(live_server("/healthz"), timeout=60).json() == {"status": "ok"}
    page.goto(live_server("/static/base.css"))
    assert "box-sizing" in page.content()


def test_axe_passes_an_accessible_page_and_catches_an_image_without_alt(page, axe_check):
    page.set_content(ACCESSIBLE)
    assert axe_check(page) == []
    page.set_content(INACCESSIBLE)
    found = {(v["id"], v["impact"]) for v in axe_violations(page)}
    assert ("image-alt", "critical") in found
    assert "critical" in BLOCKING_IMPACTS
    with pytest.raises(AssertionError, match="image-alt"):
        axe_check(page)


def test_a_screenshot_is_written_as_a_png(page, screenshot):
    page.set_content(ACCESSIBLE)
    path = screenshot(page, "harness")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
