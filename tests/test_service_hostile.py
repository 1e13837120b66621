"""The service against a hostile or unlucky client (issue 22): a write lock held by a CLI `index add`,
invisible-only texts, ids too long for a URL path, headers that trickle in. In-process with the fake
embedder, except the header test, which needs a real server socket (on 127.0.0.1)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_store import FakeEmbedder

from cluster.fsutil import file_lock
from cluster.service import Limits, create_app
from cluster.store import LOCK_FILE

WAIT_S = 0.5  # the server's write wait in these tests
HANG_GUARD = 30  # seconds: a request that takes this long waits without limit


@pytest.fixture
def index_and_client(tmp_path: Path):
    index = tmp_path / "idx"
    app = create_app(index, create=True, embedder=FakeEmbedder(), limits=Limits(write_seconds=WAIT_S))
    with TestClient(app) as client:
        yield index, client


def test_a_write_waits_a_bounded_time_for_a_busy_index(index_and_client) -> None:
    index, client = index_and_client
    body = {"headlines": [{"id": "w1", "text": "topic1 written while busy"}]}
    answers: list = []
    with file_lock(index / LOCK_FILE):  # what a running `headline-cluster index add` holds
        request = threading.Thread(target=lambda: answers.append(client.post("/v1/headlines", json=body)))
        request.start()
        request.join(HANG_GUARD)
        answered_while_busy = bool(answers)
    request.join(HANG_GUARD)
    assert answered_while_busy, "the write waited for the lock without limit"
    [answer] = answers
    assert answer.status_code == 503 and answer.json()["error"] == "busy", answer.text
    assert answer.headers["retry-after"] == "1"
    assert "nothing was written" in answer.json()["message"]
    assert client.get("/v1/headlines/w1").status_code == 404  # refused means not written
    assert client.post("/v1/headlines", json=body).status_code == 200  # once the lock is free


def test_the_schema_documents_the_busy_answer(index_and_client) -> None:
    _, client = index_and_client
    answer = client.get("/openapi.json").json()["paths"]["/v1/headlines"]["post"]["responses"]["503"]
    assert "Retry-After" in answer["headers"] and "busy" in answer["description"]


@pytest.mark.parametrize("text", ["\u200f", "\u200b", "\x00", "\u200f\u200e"])
def test_a_similar_query_of_only_invisible_characters_is_refused(index_and_client, text: str) -> None:
    _, client = index_and_client
    assert client.post("/v1/headlines", json={"headlines": [{"id": "a", "text": "topic1 a"}]}).status_code == 200
    answer = client.get("/v1/similar", params={"text": text})
    assert answer.status_code == 422 and "no visible characters" in answer.json()["message"], answer.text


# --- request headers that trickle in ----------------------------------------------------------------------


@pytest.fixture
def header_server(tmp_path: Path):
    """The app behind uvicorn with the header deadline of ``serve`` (1 s here), on 127.0.0.1: its port."""
    import asyncio
    import socket

    import uvicorn

    from cluster.service.protocol import service_protocol

    app = create_app(tmp_path / "idx", create=True, embedder=FakeEmbedder())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", http=service_protocol(1.0, app.state.metrics))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    for _ in range(HANG_GUARD * 10):
        if server.started:
            break
        threading.Event().wait(0.1)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(HANG_GUARD)


def trickle(port: int, lines: list[bytes], pause: float) -> bytes:
    """Send ``lines`` one by one with ``pause`` between them; all the server answered (until it closed)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD) as conn:
        for line in lines:
            try:
                conn.sendall(line)
            except OSError:  # the server closed the connection
                break
            threading.Event().wait(pause)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_headers_that_trickle_in_get_408(header_server: int) -> None:
    head = [b"GET /healthz HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n"] + [b"X-Slow: %d\r\n" % i for i in range(16)]
    answer = trickle(header_server, [*head, b"Connection: close\r\n\r\n"], pause=0.25)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"error": "timeout"' in answer and b"headers" in answer


def test_headers_sent_in_time_are_answered(header_server: int) -> None:
    lines = [b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"Connection: close\r\n\r\n"]
    assert trickle(header_server, lines, pause=0.1).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("route", ["/v1/headlines/", "/v1/stories/"])
def test_an_id_too_long_for_an_id_is_refused_before_any_lookup(index_and_client, route: str, monkeypatch) -> None:
    _, client = index_and_client
    service = client.app.state.service
    looked_up: list[str] = []
    for name in ("headline", "story"):
        original = getattr(service, name)
        monkeypatch.setattr(service, name, lambda key, original=original: looked_up.append(key) or original(key))
    answer = client.get(route + "x" * 257)
    assert answer.status_code == 422 and "256" in answer.json()["message"], answer.text
    assert looked_up == []
    assert client.get(route + "x" * 256).status_code == 404 and len(looked_up) == 1  # the limit itself is an id
