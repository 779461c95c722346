"""A small local webhook receiver, for the demo and the tests: it checks signatures as a customer's endpoint
should, and can answer the first requests with errors to show retries."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from billing.notify.signing import WEBHOOK_ID_HEADER, verify_webhook

__all__ = ["ReceivedWebhook", "run_receiver"]


@dataclass(frozen=True, slots=True)
class ReceivedWebhook:
    """One request a :func:`run_receiver` server got.

    Attributes:
      idempotency_key: the ``webhook-id`` header (the notification's id, the same on every attempt).
      verified: whether the Standard Webhooks signature verified with the receiver's secret.
      duplicate: whether a request with this key was already accepted (a retry the receiver ignores).
      status: the HTTP status answered.
      body: the parsed JSON body (None if it was not JSON).
      raw: the body as received; headers: the request's headers.
    """

    idempotency_key: str | None
    verified: bool
    duplicate: bool
    status: int
    body: dict[str, Any] | None
    raw: bytes
    headers: Mapping[str, str]


class _Inbox:
    """What a receiver got, and how it decides its answers (shared by its request threads)."""

    def __init__(self, secret: str, fail_first: int) -> None:
        self.secret = secret
        self.received: list[ReceivedWebhook] = []
        self.accepted: set[str] = set()
        self.failures_left = fail_first
        self.lock = threading.Lock()

    def answer(self, key: str | None, verified: bool) -> tuple[int, bool]:
        """The status for a request, and whether it repeats an accepted key; call with ``lock`` held."""
        duplicate = key is not None and key in self.accepted
        if not verified:
            return 400, duplicate
        if self.failures_left > 0 and not duplicate:
            self.failures_left -= 1
            return 503, duplicate
        if key is not None:
            self.accepted.add(key)
        return 200, duplicate


def _handler(inbox: _Inbox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            key = self.headers.get(WEBHOOK_ID_HEADER)
            verified = verify_webhook(inbox.secret, dict(self.headers), raw)
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            with inbox.lock:
                status, duplicate = inbox.answer(key, verified)
                inbox.received.append(
                    ReceivedWebhook(key, verified, duplicate, status, body, raw, dict(self.headers))
                )
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


def run_receiver(
    host: str, port: int, secret: str, *, fail_first: int = 0
) -> tuple[ThreadingHTTPServer, list[ReceivedWebhook]]:
    """Start a webhook receiver on ``host:port`` (0: any free port) in a background thread; returns the server
    (``server.server_address[1]`` is its port; ``server.shutdown()`` stops it) and the list it appends every
    request to. It answers 400 to a bad signature, 503 to the first ``fail_first`` good ones, then 200 — a repeat
    of an accepted webhook-id is answered 200 and marked ``duplicate``: one logical notification per id."""
    inbox = _Inbox(secret, fail_first)
    server = ThreadingHTTPServer((host, port), _handler(inbox))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True).start()
    return server, inbox.received
