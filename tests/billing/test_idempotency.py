"""``Idempotency-Key`` on every POST, on SQLite and PostgreSQL: a retry gets the first answer (across a restart of a
real uvicorn process too), another request with the key is a 409, two requests with one key at once run once, a
request refused before it ran keeps nothing; and the key store's life cycle (running, lease, replay, a day)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from billing.api import create_app
from billing.api.idempotency import Idempotency, credential_scope, request_fingerprint
from billing.apikeys import create_api_key, revoke_api_key
from billing.config import Settings
from billing.db import idempotency, make_engine, session_scope
from billing.db.engines import dispose_engines
from dbkit.dialect import is_postgresql
from tests.billing.test_api import CATALOG, MONTH, add_customer, live_api, subscribe

__all__ = ["live_api"]

ROOT = Path(__file__).resolve().parents[2]

ACME = {"external_id": "acme", "name": "Acme", "currency": "USD", "webhook_url": "https://hooks.acme.example/b"}


def post(client: httpx.Client, path: str, body: object, key: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"} | ({"Idempotency-Key": key} if key is not None else {})
    return client.post(path, content=json.dumps(body).encode(), headers=headers)


def customers(client: httpx.Client) -> list[str]:
    return [c["external_id"] for c in client.get("/v1/customers").json()["data"]]


def test_a_retry_with_the_same_key_gets_the_first_answer_and_another_request_a_409(live_api):
    with live_api.client() as client:
        first = post(client, "/v1/customers", ACME, "key-1")
        retry = post(client, "/v1/customers", ACME, "key-1")
        other_body = post(client, "/v1/customers", ACME | {"name": "Acme Corp"}, "key-1")
        other_path = post(client, "/v1/subscriptions", ACME, "key-1")
        without = post(client, "/v1/customers", ACME, None)
        assert customers(client) == ["acme"]
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    # the webhook secret is random: the same one again shows the answer is replayed, not made again
    assert (retry.status_code, retry.json(), retry.headers["location"]) == (201, first.json(), "/v1/customers/acme")
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.headers["content-type"] == "application/json"
    for refused in (other_body, other_path):
        assert refused.status_code == 409 and refused.json()["code"] == "idempotency_key_reused"
        assert refused.json()["errors"][0]["field"] == "Idempotency-Key"
    assert without.status_code == 409 and without.json()["code"] == "already_exists"  # no key: it runs again


def test_the_same_json_written_otherwise_is_the_same_request(live_api):
    """A client that writes the object again on a retry (its keys in another order, other spacing, ``\u00e9``
    for ``é``) was refused 409 ``idempotency_key_reused``; it gets the first answer. A number written otherwise
    (``19`` against ``19.0``) is another request, as a repeated key is (which one counts is the parser's)."""
    first_body = b'{"external_id": "acme", "name": "Acm\xc3\xa9", "currency": "USD", "tax_rate": 19}'
    same = b'{"tax_rate":19,"currency":"USD","name":"Acm\\u00e9","external_id":"acme"}'
    headers = {"Content-Type": "application/json", "Idempotency-Key": "k"}
    with live_api.client() as client:
        first = client.post("/v1/customers", content=first_body, headers=headers)
        retry = client.post("/v1/customers", content=same, headers=headers)
        other_number = client.post("/v1/customers", content=same.replace(b"19", b"19.0"), headers=headers)
        repeated = client.post("/v1/customers", content=first_body[:-1] + b', "name": "X"}', headers=headers)
    assert first.status_code == 201 and first.json()["name"] == "Acmé"
    assert (retry.status_code, retry.json(), retry.headers["idempotent-replayed"]) == (201, first.json(), "true")
    for other in (other_number, repeated):
        assert (other.status_code, other.json()["code"]) == (409, "idempotency_key_reused")


def test_a_key_first_sent_before_the_fingerprint_was_of_canonical_json_still_replays(live_api):
    """A key stored by the earlier version carries the hash of the body's bytes: its retry, the same bytes, still
    gets the stored answer (a 409 would tell the client to use a new key, and the request would run twice)."""
    import hashlib

    body = b'{"external_id": "acme", "name": "Acme", "currency": "USD"}'
    legacy = hashlib.sha256(b"\n".join([b"POST", b"/v1/customers", b"", body])).hexdigest()
    assert legacy != request_fingerprint("POST", "/v1/customers", b"", body)
    owner = credential_scope(f"Bearer {live_api.key}".encode())
    stored = idempotency.StoredAnswer(201, {"content-type": "application/json"}, b'{"stored": true}')
    assert idempotency.claim(live_api.engine, owner, "old-key", legacy).outcome == "run"
    idempotency.complete(live_api.engine, owner, "old-key", stored)
    headers = {"Content-Type": "application/json", "Idempotency-Key": "old-key"}
    with live_api.client() as client:
        retry = client.post("/v1/customers", content=body, headers=headers)
        other = client.post("/v1/customers", content=body.replace(b"Acme", b"Acne"), headers=headers)
        assert customers(client) == []  # never run
    assert (retry.status_code, retry.json(), retry.headers["idempotent-replayed"]) == (201, {"stored": True}, "true")
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_key_reused")


def test_keys_belong_to_the_api_key_that_sent_them(live_api):
    _, other = create_api_key(live_api.engine, "another client")
    with live_api.client() as client, live_api.client(other) as other_client:
        first = post(client, "/v1/customers", ACME, "shared")
        theirs = post(other_client, "/v1/customers", ACME | {"external_id": "globex"}, "shared")
        mine_again = post(client, "/v1/customers", ACME, "shared")
    assert (first.status_code, theirs.status_code, mine_again.status_code) == (201, 201, 201)
    assert theirs.json()["external_id"] == "globex" and mine_again.json() == first.json()


def test_an_action_is_done_once_however_often_it_is_sent(live_api):
    add_customer(live_api)
    sid = subscribe(live_api)["id"]
    with live_api.client() as client:
        end = {"date": MONTH.end.isoformat()}  # the day after the month it started in
        answers = [post(client, f"/v1/subscriptions/{sid}/cancel", end, "cancel-7") for _ in "abc"]
        unkeyed = post(client, f"/v1/subscriptions/{sid}/cancel", end, None)
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[1].json() == answers[2].json() == answers[0].json()
    assert unkeyed.status_code == 409 and unkeyed.json()["code"] == "conflict"  # already cancelled


def test_a_revoked_key_gets_no_stored_answer_back(live_api):
    api_key, secret = create_api_key(live_api.engine, "revoked soon")
    owner = credential_scope(f"Bearer {secret}".encode())
    with live_api.client(secret) as client:
        first = post(client, "/v1/customers", ACME, "create-acme")
        revoke_api_key(live_api.engine, api_key.id)
        retry = post(client, "/v1/customers", ACME, "create-acme")
        other = post(client, "/v1/customers", ACME | {"external_id": "globex"}, "create-acme")
        busy = post(client, "/v1/customers", ACME | {"external_id": "initech"}, "another-key")
    assert first.status_code == 201 and "webhook_secret" in first.json()
    for refused in (retry, other, busy):  # the routes' 401, not the stored answer, a 409 or a claim
        assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
        assert "idempotent-replayed" not in refused.headers and "webhook_secret" not in refused.text
    with session_scope(live_api.engine) as session:  # the key store was not touched by the revoked key
        rows = session.execute(select(idempotency.IdempotencyKeyRow).where(
            idempotency.IdempotencyKeyRow.scope == owner)).scalars().all()
        assert [(row.key, row.status) for row in rows] == [("create-acme", 201)]


def test_a_request_refused_before_it_ran_keeps_nothing_but_a_refusal_of_the_engine_is_kept(live_api):
    with httpx.Client(base_url=live_api.url, timeout=60) as anonymous:
        unauthenticated = post(anonymous, "/v1/customers", ACME, "k")
    with live_api.client() as client:
        malformed = post(client, "/v1/customers", {"external_id": "acme"}, "k")  # 422 invalid_request
        corrected = post(client, "/v1/customers", ACME, "k")
        refused = post(client, "/v1/customers", ACME | {"external_id": "x", "currency": "EUX"}, "k2")
        refused_again = post(client, "/v1/customers", ACME | {"external_id": "x", "currency": "EUX"}, "k2")
        fixed_with_that_key = post(client, "/v1/customers", ACME | {"external_id": "x"}, "k2")
    assert unauthenticated.status_code == 401
    assert malformed.status_code == 422 and malformed.json()["code"] == "invalid_request"
    assert corrected.status_code == 201 and "idempotent-replayed" not in corrected.headers
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_input"
    assert refused_again.json() == refused.json() and refused_again.headers["idempotent-replayed"] == "true"
    assert fixed_with_that_key.status_code == 409 and fixed_with_that_key.json()["code"] == "idempotency_key_reused"


def test_a_key_must_be_1_to_255_printable_ascii_characters(live_api):
    with live_api.client() as client:
        too_long = post(client, "/v1/customers", ACME, "k" * 256)
        empty = post(client, "/v1/customers", ACME, "")
        longest = post(client, "/v1/customers", ACME, "k" * 255)
    for refused in (too_long, empty):
        assert refused.status_code == 400 and refused.json()["code"] == "invalid_idempotency_key"
        assert refused.headers["content-type"] == "application/problem+json"
    assert longest.status_code == 201


def test_while_a_request_with_the_key_runs_another_is_told_to_come_back(live_api):
    body = json.dumps(ACME).encode()
    owner = credential_scope(f"Bearer {live_api.key}".encode())
    fingerprint = request_fingerprint("POST", "/v1/customers", b"", body)
    assert idempotency.claim(live_api.engine, owner, "busy", fingerprint).outcome == "run"  # "running" elsewhere
    headers = {"Content-Type": "application/json", "Idempotency-Key": "busy"}
    with live_api.client() as client:
        running = client.post("/v1/customers", content=body, headers=headers)
        assert customers(client) == []
        idempotency.release(live_api.engine, owner, "busy")  # the other request's answer was not kept
        after = client.post("/v1/customers", content=body, headers=headers)
    assert running.status_code == 409 and running.json()["code"] == "idempotency_key_in_progress"
    assert 1 <= int(running.headers["retry-after"]) <= 5
    assert after.status_code == 201


def test_many_requests_with_one_key_at_once_create_one_customer(live_api):
    answers: list[httpx.Response] = []
    start = threading.Barrier(6)

    def send() -> None:
        with live_api.client() as client:
            start.wait()
            answers.append(post(client, "/v1/customers", ACME, "together"))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ran = [a for a in answers if a.status_code == 201 and "idempotent-replayed" not in a.headers]
    replayed = [a for a in answers if a.headers.get("idempotent-replayed") == "true"]
    busy = [a for a in answers if a.status_code == 409]
    assert len(ran) == 1 and len(ran) + len(replayed) + len(busy) == 6
    assert all(a.json() == ran[0].json() for a in replayed)
    assert all(a.json()["code"] == "idempotency_key_in_progress" for a in busy)
    with live_api.client() as client:
        assert customers(client) == ["acme"]


def test_the_life_of_a_key(engine):
    t0 = dt.datetime(2026, 10, 1, 12, tzinfo=dt.UTC)
    answer = idempotency.StoredAnswer(201, {"content-type": "application/json", "location": "/v1/x"}, b'{"id":1}')

    def claim(at: dt.timedelta, fingerprint: str = "f1", scope: str = "s1") -> idempotency.Claim:
        return idempotency.claim(engine, scope, "key", fingerprint, now=t0 + at)

    assert claim(dt.timedelta(0)).outcome == "run"
    assert claim(dt.timedelta(minutes=9, seconds=59)) == idempotency.Claim("running", started_at=t0)
    assert claim(dt.timedelta(minutes=1), "f2").outcome == "reused"
    assert claim(dt.timedelta(0), scope="s2").outcome == "run"  # another credential's key of that name
    # its server died: after the lease, a retry runs it again (and holds it from then on)
    assert claim(dt.timedelta(minutes=10, seconds=1)).outcome == "run"
    assert claim(dt.timedelta(minutes=11)).outcome == "running"
    idempotency.complete(engine, "s1", "key", answer)
    assert claim(dt.timedelta(hours=23, minutes=59)) == idempotency.Claim("replay", answer)
    assert claim(dt.timedelta(hours=23), "f2").outcome == "reused"
    # a day on, the key is forgotten (and its row deleted): it runs anew, with any request
    assert claim(dt.timedelta(hours=24, seconds=1), "f3").outcome == "run"
    assert claim(dt.timedelta(hours=24, seconds=2), "f3").outcome == "running"
    idempotency.release(engine, "s1", "key")
    assert claim(dt.timedelta(hours=24, seconds=3), "f4").outcome == "run"


def test_a_claim_whose_row_is_released_before_it_is_read_runs(engine):
    """On PostgreSQL, the row the insert collided with can be deleted (a release() of its running request,
    committed) before the claim reads it: the key is free, and the claim takes it."""
    assert idempotency.claim(engine, "s1", "key", "f1").outcome == "run"
    released: list[bool] = []

    def release_first(conn, cursor, statement, parameters, context, executemany):
        if released or not statement.lstrip().upper().startswith("SELECT") or "idempotency_keys" not in statement:
            return
        released.append(True)
        if is_postgresql(engine):  # another transaction, committed between the insert and the select
            idempotency.release(engine, "s1", "key")
        else:  # SQLite runs one writer at a time: the same effect, in the claim's transaction
            conn.connection.cursor().execute("DELETE FROM idempotency_keys WHERE scope = 's1' AND key = 'key'")

    event.listen(engine, "before_cursor_execute", release_first)
    try:
        claimed = idempotency.claim(engine, "s1", "key", "f2")
    finally:
        event.remove(engine, "before_cursor_execute", release_first)
    assert released == [True] and claimed.outcome == "run"
    assert idempotency.claim(engine, "s1", "key", "f2").outcome == "running"  # held by the new request
    assert idempotency.claim(engine, "s1", "key", "f1").outcome == "reused"


def test_a_long_request_keeps_renewing_its_lease_until_it_is_answered(engine, monkeypatch):
    """A request running longer than the lease (a billing run) is not run a second time by a retry: while it runs,
    its key's lease is renewed (every third of it); here a lease of 0.3 s and a request that waits until the lease
    was renewed past twice its length."""
    lease = dt.timedelta(seconds=0.3)
    monkeypatch.setattr(idempotency, "LEASE", lease)
    _, secret = create_api_key(engine, "slow")
    owner = credential_scope(f"Bearer {secret}".encode())
    fingerprint = request_fingerprint("POST", "/slow", b"", b"{}")
    row = select(idempotency.IdempotencyKeyRow.started_at).where(idempotency.IdempotencyKeyRow.scope == owner)

    def started_at() -> dt.datetime:
        with session_scope(engine) as session:
            return session.execute(row).scalar_one()

    seen: list[object] = []

    async def slow(scope, receive, send) -> None:
        await receive()
        claimed = await asyncio.to_thread(started_at)
        renewed = claimed
        for _ in range(1200):  # 60 s at most: without renewals it never ends, and the test fails below
            if renewed > claimed + 2 * lease:
                break
            await asyncio.sleep(0.05)
            renewed = await asyncio.to_thread(started_at)
        seen.extend([claimed, renewed])
        # a retry now (within the lease of the last renewal) is told the request is running
        seen.append(await asyncio.to_thread(idempotency.claim, engine, owner, "long", fingerprint, now=renewed))
        await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"done"})

    headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": "long"}
    client = TestClient(Idempotency(slow, engine=lambda: engine), headers=headers)  # (no lifespan: not a `with`)
    first = client.post("/slow", content=b"{}")
    retry = client.post("/slow", content=b"{}")
    claimed, renewed, during = seen
    assert renewed > claimed + 2 * lease, "the lease was never renewed while the request ran"
    assert during == idempotency.Claim("running", started_at=renewed)
    assert (first.status_code, first.text) == (201, "done") and "idempotent-replayed" not in first.headers
    assert (retry.status_code, retry.text, retry.headers["idempotent-replayed"]) == (201, "done", "true")


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
uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
"""


class Server:
    """The API in a uvicorn process of its own, started and stopped by the test."""

    def __init__(self, db_url: str, catalog: Path):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, db_url, str(catalog)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    def stop(self) -> None:
        self.process.terminate()
        assert self.process.wait(timeout=60) is not None


@pytest.mark.slow
def test_a_retry_after_the_server_restarted_gets_the_first_answer(db_url, tmp_path):
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG, encoding="utf-8")
    engine = make_engine(db_url)
    try:
        _, key = create_api_key(engine, "restarts")
    finally:
        engine.dispose()
    headers = {"Authorization": f"Bearer {key}"}
    server = Server(db_url, catalog)
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            first = post(client, "/v1/customers", ACME, "survives-restarts")
            subscribed = post(client, "/v1/subscriptions", {"customer": "acme", "plan": "starter",
                                                            "start": "2026-10-01"}, "sub-1")
    finally:
        server.stop()
    assert first.status_code == 201 and subscribed.status_code == 201

    server = Server(db_url, catalog)  # a new process: nothing of the first one's memory
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            retry = post(client, "/v1/customers", ACME, "survives-restarts")
            retry_subscription = post(client, "/v1/subscriptions", {"customer": "acme", "plan": "starter",
                                                                    "start": "2026-10-01"}, "sub-1")
            changed = post(client, "/v1/customers", ACME | {"name": "Other"}, "survives-restarts")
            subscriptions = client.get("/v1/subscriptions").json()["data"]
    finally:
        server.stop()
    assert (retry.status_code, retry.json(), retry.headers["location"]) == (201, first.json(), "/v1/customers/acme")
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry_subscription.json() == subscribed.json() and len(subscriptions) == 1
    assert changed.status_code == 409 and changed.json()["code"] == "idempotency_key_reused"



def test_a_body_too_large_keeps_nothing(db_url):
    engine = make_engine(db_url)
    try:
        _, key = create_api_key(engine, "uploads")
    finally:
        engine.dispose()
    app = create_app(Settings(database_url=db_url, catalog=str(ROOT / "catalog.toml")))
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "big", "Content-Type": "application/json"}
    chunked = iter([b" " * (512 * 1024)] * 3)  # no Content-Length: refused once 1 MiB has been read
    try:
        with TestClient(app, headers=headers) as client:
            streamed = client.post("/v1/customers", content=chunked)
            declared = client.post("/v1/customers", content=b" " * (1024 * 1024 + 1))
            fine = client.post("/v1/customers", content=json.dumps(ACME).encode())
    finally:
        dispose_engines()
    for refused in (streamed, declared):
        assert refused.status_code == 413 and refused.json()["code"] == "body_too_large"
        assert refused.headers["content-type"] == "application/problem+json"
    assert fine.status_code == 201
