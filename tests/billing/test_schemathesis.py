"""Schemathesis against the live API's ``/openapi.json``: generated requests (valid and invalid) never get a server
error (500), and every answer is what the document says — its status, content type (``application/problem+json``
for every error), headers and body schema. Bounded: a few examples per operation, a fixed seed, a time budget.

Runs the ``schemathesis`` command of this environment against the real uvicorn of ``test_api``; a customer, a
subscription, usage and an issued invoice exist beforehand, so the generated requests also meet real data.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.billing.test_api import add_customer, bill_month, live_api, month_usage, subscribe

__all__ = ["live_api"]

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.mark.slow
def test_generated_requests_never_get_a_server_error(live_api, tmp_path):
    add_customer(live_api)
    subscribe(live_api)
    month_usage(live_api)
    bill_month(live_api)
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{live_api.url}/openapi.json",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
        "response_schema_conformance",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", "15",
        "--max-time", "30",
        "--seed", "20261125",
        "--workers", "1",
        "--generation-database", "none",
        "--exclude-path", "/v1/stripe/webhooks",  # signed by Stripe; covered by the Stripe tests
        "--no-color",
        "--header", f"Authorization: Bearer {live_api.key}",
        "--report", "junit",
        "--report-dir", str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
