"""The service's own defences: a bounded embedding cache, a deadline for request bodies, bad bodies."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_store import FakeEmbedder

from cluster.service import create_app
from cluster.service.cache import BoundedEmbeddingCache
from cluster.service.guard import Guarded
from cluster.service.metrics import Measured, Metrics


def test_the_cache_keeps_at_most_its_bound_and_drops_the_least_recently_used() -> None:
    cache = BoundedEmbeddingCache(max_items=3)
    vector = np.ones(4, dtype=np.float32)
    cache.put_many("m", {b"a": vector, b"b": vector, b"c": vector})
    assert set(cache.get_many("m", [b"a"])) == {b"a"}  # a is now the most recent
    cache.put_many("m", {b"d": vector})
    assert len(cache) == 3 and cache.evictions == 1
    assert set(cache.get_many("m", [b"a", b"b", b"c", b"d"])) == {b"a", b"c", b"d"}
    assert (cache.hits, cache.misses) == (4, 1)
    assert cache.get_many("other-model", [b"a"]) == {}  # vectors of different models never mix


def run_app(receive_messages, seconds: float):
    """Run the guard over an app that echoes the body it got; (status, body, app_was_called)."""
    called: list[bytes] = []
    sent: list[dict] = []

    async def app(scope, receive, send):
        message = await receive()
        called.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": message["body"]})

    async def send(message):
        sent.append(message)

    async def main():
        guard = Guarded(app, api_key=None, max_body_bytes=1 << 20, body_seconds=seconds)
        await guard({"type": "http", "path": "/v1/collapse", "headers": []}, receive_messages, send)

    asyncio.run(main())
    status = next(m["status"] for m in sent if m["type"] == "http.response.start") if sent else None
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, called


def test_a_body_that_never_arrives_gets_408_in_time() -> None:
    parts = [{"type": "http.request", "body": b'{"headlines": [', "more_body": True}]

    async def receive():
        if parts:
            return parts.pop(0)
        await asyncio.sleep(30)  # the rest never comes
        raise AssertionError("unreachable")

    status, body, called = run_app(receive, seconds=0.2)
    assert status == 408 and json.loads(body)["error"] == "timeout" and called == []


def test_a_body_in_pieces_reaches_the_app_whole() -> None:
    parts = [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.request", "body": b"def", "more_body": False},
    ]

    async def receive():
        return parts.pop(0)

    status, body, called = run_app(receive, seconds=5)
    assert status == 200 and body == b"abcdef" and called == [b"abcdef"]


# --- bad requests, answered in the documented error format ------------------------------------------------


ERROR_KEYS = {"error", "message", "field"}


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> TestClient:
    app = create_app(tmp_path_factory.mktemp("svc") / "idx", create=True, embedder=FakeEmbedder())
    with TestClient(app) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"headlines": [""]}, "headlines[0]", "at least 1 character"),
        ({"headlines": ["\u200f\u200b\u0640", "fine"]}, "headlines[0]", "no visible characters"),
        ({"headlines": [{"text": "\u200b"}]}, "headlines[0].text", "no visible characters"),
        ({"headlines": [7]}, "headlines[0]", "a string or an object"),
    ],
)
def test_empty_and_invisible_headlines_are_named(client: TestClient, body: dict, field: str, says: str) -> None:
    response = client.post("/v1/collapse", json=body)
    assert response.status_code == 422 and response.json()["field"] == field and says in response.json()["message"]


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-05:00"])
def test_a_time_utc_cannot_hold_is_a_bad_field_not_a_server_error(client: TestClient, stamp: str) -> None:
    response = client.post(
        "/v1/headlines", json={"headlines": [{"id": "a", "text": "topic1 x", "published_at": stamp}]}
    )
    assert response.status_code == 422
    assert response.json()["field"] == "headlines[0].published_at" and "out of range" in response.json()["message"]


@pytest.mark.parametrize("raw", [b"\xff\xfe{", ("[" * 5000 + "]" * 5000).encode(), b'{"headlines": ["a"'])
def test_unreadable_bodies_get_the_documented_error_format(client: TestClient, raw: bytes) -> None:
    response = client.post("/v1/collapse", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422 and set(response.json()) == ERROR_KEYS
    assert response.json()["error"] == "invalid_json"


def test_the_schema_says_what_the_service_refuses(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["schemas"]["CollapseItem"]["properties"]["text"]["minLength"] == 1
    for path in ("/v1/headlines/{headline_id}", "/v1/stories/{story_id}"):
        assert "404" in spec["paths"][path]["get"]["responses"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
BODIES = JSON | st.fixed_dictionaries({"headlines": st.lists(JSON | st.text(max_size=30), max_size=4)})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES, path=st.sampled_from(["/v1/collapse", "/v1/headlines"]))
def test_no_request_body_gets_a_server_error(client: TestClient, body: object, path: str) -> None:
    response = client.post(path, json=body)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert set(response.json()) == ERROR_KEYS


def test_a_client_that_leaves_before_an_answer_is_counted_as_499() -> None:
    metrics = Metrics()

    async def app(scope, receive, send):
        await receive()  # the disconnect; the app gives up without answering

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        raise AssertionError("nothing is sent to a client that left")

    measured = Measured(app, metrics=metrics, routes=lambda: [])
    asyncio.run(measured({"type": "http", "method": "POST", "path": "/v1/headlines", "headers": []}, receive, send))
    assert 'status="499"' in metrics.render({}) and 'status="500"' not in metrics.render({})


def test_the_service_embeds_with_the_bounded_cache_and_writes_no_cache_file(tmp_path, monkeypatch) -> None:
    from cluster.service.app import _bounded_embedder

    monkeypatch.setenv("HEADLINE_CLUSTER_CACHE", str(tmp_path))
    embedder = _bounded_embedder("multilingual-e5-small")
    assert isinstance(embedder.cache, BoundedEmbeddingCache)
    assert not list(tmp_path.glob("embeddings.sqlite*"))
