"""The service's own defences: a bounded embedding cache, a deadline for request bodies."""

from __future__ import annotations

import asyncio
import json

import numpy as np

from cluster.service.cache import BoundedEmbeddingCache
from cluster.service.deadline import BodyDeadline


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
    """Run BodyDeadline over an app that echoes the body it got; (status, body, app_was_called)."""
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
        await BodyDeadline(app, seconds)({"type": "http"}, receive_messages, send)

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
