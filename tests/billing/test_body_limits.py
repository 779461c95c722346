"""Request bodies are bounded while they are read: a stranger's 64 MiB upload is answered 413 and the server's
memory barely moves.

The API runs in a real uvicorn in a process of its own (so that its memory can be read from
``/proc/<pid>/status``) on the test database; the uploads go over raw sockets, to send a body with an honest
``Content-Length``, a chunked one without any, and chunked ones whose ``Content-Length`` lies, and to read the
answer while the upload is still going.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from billing.api import create_app
from billing.api.limits import DEFAULT_MAX_BODY
from billing.api.routes_events import MAX_BODY as EVENTS_MAX_BODY
from billing.api.routes_stripe import MAX_BODY as WEBHOOK_MAX_BODY
from billing.apikeys import create_api_key
from billing.config import Settings
from billing.db import make_engine
from billing.db.engines import dispose_engines

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "catalog.toml"
MiB = 1024 * 1024
UPLOAD = 64 * MiB
PIECE = 256 * 1024
WEBHOOK = "/v1/stripe/webhooks"
EVENTS = "/v1/events"
WEBHOOK_SECRET = "whsec_local_test_secret"
FORGED = "t=1700000000,v1=" + "0" * 64

SERVER = """
import socket, sys
import uvicorn
from billing.api import create_app
from billing.config import Settings

sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(128)  # connections wait in the backlog until uvicorn takes them
print(sock.getsockname()[1], flush=True)
app = create_app(Settings(database_url=sys.argv[1], catalog=sys.argv[2]))
uvicorn.Server(uvicorn.Config(app, log_level="warning", http=sys.argv[3])).run(sockets=[sock])
"""


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int
    key: str
    http: str  # uvicorn's HTTP parser: h11 or httptools

    def rss(self) -> int:
        """The server process's resident memory, in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


@pytest.fixture(params=["h11", "httptools"])
def server(request: pytest.FixtureRequest, db_url: str) -> Iterator[Server]:
    """The API in uvicorn, on each of its HTTP parsers (``billing serve`` takes httptools when installed)."""
    if request.param == "httptools":
        pytest.importorskip("httptools")
    engine = make_engine(db_url)
    try:
        _, key = create_api_key(engine, "uploads")
    finally:
        engine.dispose()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, db_url, str(CATALOG), request.param], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield Server(process, port, key, request.param)
    finally:
        process.terminate()
        process.wait(timeout=30)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # bytes of the body the server let in before it answered and closed

    @property
    def error(self) -> dict[str, object]:
        """The problem (RFC 9457) answered, as ``code``, ``message`` (its detail) and ``field`` (the first)."""
        problem = json.loads(self.body)
        errors = problem["errors"]
        return {"code": problem["code"], "message": problem["detail"], "field": errors[0]["field"] if errors else None}


def upload(
    port: int,
    path: str,
    *,
    headers: dict[str, str],
    content_length: int | None = None,
    chunked: bool = False,
    size: int = UPLOAD,
) -> Answer:
    """POST ``size`` bytes of JSON-ish filler to ``path``: with ``Content-Length: content_length`` (honest or not)
    and/or chunked, reading the answer while the body is still being sent."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    conn = socket.create_connection(("127.0.0.1", port), timeout=120)
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    sent = 0
    stop = threading.Event()

    def send_body() -> None:
        nonlocal sent
        try:
            while sent < size and not stop.is_set():
                length = min(PIECE, size - sent)
                piece = b"[" + b" " * (length - 2) + b"]" if length >= 2 else b" " * length
                conn.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
                sent += len(piece)
            if chunked and not stop.is_set():
                conn.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered and closed the connection: the rest is not wanted
            pass

    sender = threading.Thread(target=send_body, daemon=True)
    sender.start()
    try:
        answer = _read_answer(conn)
    finally:
        stop.set()
        with contextlib.suppress(OSError):  # already closed by the server
            conn.shutdown(socket.SHUT_RDWR)
        sender.join(timeout=120)
        conn.close()
    return Answer(answer[0], answer[1], answer[2], sent)


class NoAnswer(AssertionError):
    """The connection ended before an answer's head arrived."""


def _read_answer(conn: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            if data:
                raise AssertionError(f"the server closed the connection in the middle of an answer: {data!r}")
            raise NoAnswer("the server closed the connection without an answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body[:length]


def test_the_limits_are_small_for_strangers_and_32_mib_for_event_batches():
    assert (WEBHOOK_MAX_BODY, DEFAULT_MAX_BODY, EVENTS_MAX_BODY) == (1_048_576, 1_048_576, 33_554_432)


@pytest.mark.slow
def test_64_mib_uploads_are_refused_413_while_the_server_memory_stays_flat(server):
    bearer = {"Authorization": f"Bearer {server.key}"}
    # Warm up every path taken below (imports, the first database connection), then take the baseline.
    assert upload(server.port, WEBHOOK, headers={"Stripe-Signature": FORGED}, size=2).status == 400
    assert upload(server.port, EVENTS, headers={}, content_length=2, size=2).status == 401
    assert upload(server.port, EVENTS, headers=bearer, content_length=2, size=2).status == 422
    before = server.rss()

    # Strangers: no key, a forged signature. The webhook finds a forgery out only after reading the body, so its
    # limit is what stops them; a declared length is refused before the key is even looked at.
    strangers = {
        "webhook, honest length": (WEBHOOK, {"Stripe-Signature": FORGED}, UPLOAD, False),
        "webhook, chunked": (WEBHOOK, {"Stripe-Signature": FORGED}, None, True),
        "webhook, chunked with a lying length": (WEBHOOK, {"Stripe-Signature": FORGED}, 100, True),
        "events, honest length": (EVENTS, {}, UPLOAD, False),
    }
    _assert_refused(server, strangers)
    # Without a key, a chunked upload to the events is answered 401 without being read, the connection closed.
    no_key = upload(server.port, EVENTS, headers={}, chunked=True)
    assert (no_key.status, no_key.error["code"], no_key.headers["connection"]) == (401, "unauthorized", "close")
    assert no_key.sent < UPLOAD
    # A length that says less than is sent, without chunking: the body is the first 100 bytes (a forgery), the
    # rest is no HTTP request and the server drops the connection. h11 reads the next request only once the
    # first is answered (the forgery's 400); httptools reads what has arrived at once, finds no request in the
    # rest, and answers that 400 instead.
    short = upload(server.port, WEBHOOK, headers={"Stripe-Signature": FORGED}, content_length=100)
    assert short.status == 400 and short.sent < UPLOAD
    if server.http == "h11":
        assert short.error["code"] == "invalid_signature"
    else:
        assert short.body == b"Invalid HTTP request received."
    grown = server.rss() - before
    assert grown < 50 * MiB, f"the server's memory grew by {grown / MiB:.1f} MiB for strangers' uploads"

    # With a key, the events' body is read up to its 32 MiB limit and no further.
    before = server.rss()
    _assert_refused(
        server,
        {
            "events, chunked": (EVENTS, bearer, None, True),
            "events, chunked with a lying length": (EVENTS, bearer, 100, True),
        },
    )
    grown = server.rss() - before
    assert grown < 50 * MiB, f"the server's memory grew by {grown / MiB:.1f} MiB for two 64 MiB batches"
    # and it still serves
    assert upload(server.port, EVENTS, headers=bearer, content_length=2, size=2).status == 422


def _assert_refused(server: Server, cases: dict[str, tuple[str, dict[str, str], int | None, bool]]) -> None:
    for name, (path, headers, length, chunked) in cases.items():
        for attempt in range(3):
            try:
                answer = upload(server.port, path, headers=headers, content_length=length, chunked=chunked)
                break
            except (ConnectionResetError, NoAnswer):
                # The server answered and closed while the upload was still arriving: the kernel resets a
                # connection closed with unread data, and the reset can overtake the answer on its way to this
                # client (read as a reset, or as an end without the answer). The server did refuse; send again
                # to read its answer (a server that never answers fails all three).
                if attempt == 2:
                    raise
        assert answer.headers["connection"] == "close", name
        assert answer.sent < UPLOAD, name  # the server stopped taking the body
        if length is not None and chunked and server.http == "httptools":
            # Both framings at once: httptools refuses the request as malformed before any of it reaches the
            # application (RFC 9112 §6.1 lets a server reject such a request; h11 reads it by its chunks alone).
            assert (answer.status, answer.body) == (400, b"Invalid HTTP request received."), name
            continue
        limit = WEBHOOK_MAX_BODY if path == WEBHOOK else EVENTS_MAX_BODY
        assert answer.status == 413, (name, answer)
        assert answer.error == {
            "code": "body_too_large",
            "message": f"body: at most {limit // MiB} MiB ({limit:,} bytes) on POST {path}",
            "field": "body",
        }, name


# -- the limit of every route, through the application ------------------------------------------------------


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    engine = make_engine(db_url)
    _, key = create_api_key(engine, "limits")
    engine.dispose()
    app = create_app(Settings(database_url=db_url, catalog=str(CATALOG), stripe_webhook_secret=WEBHOOK_SECRET))
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as test_client:
        yield test_client
    dispose_engines()


def _streamed(size: int) -> Iterator[bytes]:
    """``size`` bytes of body sent chunked (no Content-Length)."""
    piece = b" " * 65536
    for start in range(0, size, len(piece)):
        yield piece[: size - start]


def test_every_json_route_takes_at_most_1_mib(client):
    body = json.dumps({"external_id": "acme", "name": "A" * MiB}).encode()
    for response in (
        client.post("/v1/customers", content=body, headers={"Content-Type": "application/json"}),
        client.post("/v1/customers", content=_streamed(MiB + 1), headers={"Content-Type": "application/json"}),
    ):
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json() == {
            "type": "/problems/body_too_large",
            "title": "Body too large",
            "status": 413,
            "detail": "body: at most 1 MiB (1,048,576 bytes) on POST /v1/customers",
            "code": "body_too_large",
            "errors": [{"field": "body", "message": "at most 1 MiB (1,048,576 bytes) on POST /v1/customers"}],
        }
    # exactly at the limit the body is read and judged on its content
    at_limit = client.post("/v1/customers", content=_streamed(MiB), headers={"Content-Type": "application/json"})
    assert at_limit.status_code == 422 and at_limit.json()["code"] == "invalid_request"


def test_an_event_batch_may_be_32_mib_and_not_a_byte_more(client):
    too_big = client.post(EVENTS, content=_streamed(32 * MiB + 1), headers={"Content-Type": "application/json"})
    assert too_big.status_code == 413
    assert too_big.json()["detail"] == "body: at most 32 MiB (33,554,432 bytes) on POST /v1/events"
    at_limit = client.post(EVENTS, content=_streamed(32 * MiB), headers={"Content-Type": "application/json"})
    assert at_limit.status_code == 422 and at_limit.json()["errors"][0]["field"] == "body"  # read, then parsed


def test_the_webhook_checks_the_size_before_reading_the_body(client):
    headers = {"Stripe-Signature": FORGED, "Content-Type": "application/json"}
    declared = client.post(WEBHOOK, content=b" " * (MiB + 1), headers=headers)
    streamed = client.post(WEBHOOK, content=_streamed(MiB + 1), headers=headers)
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["code"] == "body_too_large"
    at_limit = client.post(WEBHOOK, content=_streamed(MiB), headers=headers)
    assert (at_limit.status_code, at_limit.json()["code"]) == (400, "invalid_signature")
