"""The HTTP service against a real uvicorn server (``headline-cluster serve``) on 127.0.0.1, with httpx.

One server per module with the real default model (the CLI cannot take a fake embedder); data stays
small. The server restarts only when a test needs other settings (the restart-and-auth test, last).
A few in-process checks of the pieces (metrics format, error paths) use a fake embedder and no server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from conftest import REPO
from test_store import FakeEmbedder

from cluster.embed import EmbeddingCache, text_key
from cluster.service import Limits, create_app
from cluster.service.errors import field_path
from cluster.service.metrics import Metrics, gauges

KEY_ENV = "HC_SERVICE_TEST_KEY"
KEY = "test-key-5f0c2d9e"
LIMITS = ["--max-headlines", "20", "--max-text-chars", "300", "--max-body-bytes", "20000"]
STARTUP_S = 120  # model load on a busy two-core machine; a bound, not a measurement


class Server:
    """``headline-cluster serve`` in a subprocess on a free port (--port 0); stderr goes to a file."""

    def __init__(self, index: Path, log_dir: Path):
        self.index = index
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None
        self.api_key: str | None = None
        self.url = ""
        self.starts = 0

    def ensure(self, api_key: str | None = None) -> Server:
        """Running, with this API key setting (restarts only when it differs)."""
        if self.process is None or self.process.poll() is not None or api_key != self.api_key:
            self.stop()
            self.start(api_key)
        return self

    def start(self, api_key: str | None = None) -> None:
        self.starts += 1
        log = self.log_dir / f"server-{self.starts}.log"
        env = dict(os.environ)
        args = [sys.executable, "-m", "cluster", "serve", "--index", str(self.index), "--port", "0", *LIMITS]
        args += ["--no-access-log", "--create"]
        if api_key is not None:
            env[KEY_ENV] = api_key
            args += ["--api-key-env", KEY_ENV]
        with open(log, "wb") as handle:
            self.process = subprocess.Popen(args, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
        self.api_key = api_key
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            text = log.read_text(encoding="utf-8", errors="replace")
            found = re.search(r"on (http://127\.0\.0\.1:\d+) ", text)
            if found:
                self.url = found[1]
                try:
                    if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # bound but not accepting yet
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}:\n{text}")
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"the server did not answer /healthz within {STARTUP_S} s:\n{log.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # graceful: uvicorn runs the shutdown (closes the index)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, headers=headers)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("service")
    running = Server(root / "index", root)
    try:
        yield running
    finally:
        running.stop()


def post(client: httpx.Client, path: str, body: object) -> httpx.Response:
    return client.post(path, content=json.dumps(body, ensure_ascii=False), headers={"content-type": "application/json"})


def assert_error(response: httpx.Response, status: int, error: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    assert body["message"]
    if field is not None:
        assert body["field"] == field, body
    return body


RATES = [
    {
        "id": "r1",
        "text": "Central bank raises interest rates by a quarter point",
        "published_at": "2024-05-01T08:00:00Z",
    },
    {"id": "r2", "text": "The central bank raises rates 0.25 points", "published_at": "2024-05-01T09:00:00Z"},
    {"id": "q1", "text": "Earthquake of magnitude 6.2 strikes southern Turkey", "published_at": "2024-05-01T10:00:00Z"},
]


# --- against the real server ------------------------------------------------------------------------------


@pytest.mark.slow
def test_health_openapi_and_docs(server: Server) -> None:
    with server.ensure().client() as client:
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        schema = client.get("/openapi.json").json()
        for path in ("/v1/collapse", "/v1/headlines", "/v1/headlines/{headline_id}", "/v1/stories/{story_id}"):
            assert path in schema["paths"]
        assert {"CollapseRequest", "AddRequest", "ErrorBody"} <= set(schema["components"]["schemas"])
        assert "swagger" in client.get("/docs").text.lower()


@pytest.mark.slow
def test_collapse_matches_the_library(server: Server, embedder) -> None:
    from cluster import collapse

    texts = (REPO / "examples" / "related_ar.txt").read_text(encoding="utf-8").splitlines()
    request = [texts[0], {"text": texts[1], "id": "a-1"}, *texts[2:]]
    with server.ensure().client() as client:
        response = post(client, "/v1/collapse", {"headlines": request})
    assert response.status_code == 200, response.text
    got = response.json()
    expected = collapse(texts, threshold=got["threshold"], embedder=embedder).to_dict()
    assert got["model"] == expected["model"]
    assert len(got["stories"]) == len(expected["stories"])
    for mine, theirs in zip(got["stories"], expected["stories"], strict=True):
        assert mine["representative"]["index"] == theirs["representative"]["index"]
        assert [m["index"] for m in mine["members"]] == [m["index"] for m in theirs["members"]]
        for a, b in zip(mine["members"], theirs["members"], strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=2e-3)
            assert a["id"] == ("a-1" if a["index"] == 1 else None)  # ids come back with their headline


@pytest.mark.slow
@pytest.mark.parametrize("second_time", ["2024-05-01T09:00:00Z", "2024-06-15T09:00:00Z", None])
def test_collapse_weighs_times_and_levels_as_the_library_does(server: Server, embedder, second_time) -> None:
    from cluster import collapse

    first = {"id": "r1", "text": RATES[0]["text"], "published_at": "2024-05-01T08:00:00Z"}
    second = {"id": "r2", "text": RATES[1]["text"], **({"published_at": second_time} if second_time else {})}
    with server.ensure().client() as client:
        for level in ("event", "story", "duplicate"):
            response = post(client, "/v1/collapse", {"headlines": [first, second], "level": level})
            assert response.status_code == 200, response.text
            got = response.json()
            expected = collapse([first, second], level=level, embedder=embedder).to_dict()
            assert got["threshold"] == pytest.approx(expected["threshold"])
            assert [[m["id"] for m in s["members"]] for s in got["stories"]] == [
                [m["id"] for m in s["members"]] for s in expected["stories"]
            ]
        default = post(client, "/v1/collapse", {"headlines": [first, second]}).json()
    # The default level is the event level, grouped as the library groups it; time only separates: the same
    # reworded report a month and a half later scores below the one an hour later.
    expected = collapse([first, second], level="event", embedder=embedder).to_dict()
    assert default["threshold"] == pytest.approx(expected["threshold"])
    assert [[m["id"] for m in s["members"]] for s in default["stories"]] == [
        [m["id"] for m in s["members"]] for s in expected["stories"]
    ]
    near = collapse([first, {**second, "published_at": "2024-05-01T09:00:00Z"}], embedder=embedder)
    if second_time == "2024-06-15T09:00:00Z":
        far = collapse([first, second], embedder=embedder)
        assert far.explain(0, 1).similarity < near.explain(0, 1).similarity


@pytest.mark.slow
def test_add_then_read_every_endpoint(server: Server) -> None:
    with server.ensure().client() as client:
        added = post(client, "/v1/headlines", {"headlines": RATES})
        assert added.status_code == 200, added.text
        body = added.json()
        assert [h["status"] for h in body["headlines"]] == ["added"] * 3
        story = {h["id"]: h["story_id"] for h in body["headlines"]}
        event = {h["id"]: h["event_id"] for h in body["headlines"]}
        assert story["r1"] == story["r2"] != story["q1"]  # paraphrases join one story; the quake is apart
        assert event["r1"] == event["r2"] != event["q1"]

        again = post(client, "/v1/headlines", {"headlines": RATES[:1]}).json()
        assert again["headlines"] == [
            {"id": "r1", "story_id": story["r1"], "event_id": event["r1"], "status": "present"}
        ]
        assert again["added"] == 0

        headline = client.get("/v1/headlines/r2").json()
        assert headline["text"] == RATES[1]["text"]
        assert headline["story_id"] == story["r2"] and headline["event_id"] == event["r2"]
        assert headline["published_at"] == "2024-05-01T09:00:00Z"

        info = client.get(f"/v1/stories/{story['r1']}").json()
        assert info["size"] == 2
        assert {m["id"] for m in info["members"]} == {"r1", "r2"}
        assert info["representative"]["id"] in {"r1", "r2"}
        assert info["history"] == []
        assert info["events"] == [{"id": event["r1"], "size": 2, "members": [m["id"] for m in info["members"]]}]
        assert {m["event_id"] for m in info["members"]} == {event["r1"]}

        hits = client.get("/v1/similar", params={"text": "Interest rates raised by the central bank", "k": 2}).json()
        assert [h["id"] for h in hits["hits"]][:2] and {h["id"] for h in hits["hits"]} == {"r1", "r2"}
        explained = client.get("/v1/similar", params={"text": RATES[2]["text"], "k": 1, "explain": "true"}).json()
        assert explained["hits"][0]["id"] == "q1"
        assert explained["hits"][0]["would_join"] is True

        assert_error(client.get("/v1/headlines/nope"), 404, "not_found", "headline_id")
        assert_error(client.get("/v1/stories/s999999"), 404, "not_found", "story_id")
        assert_error(client.get("/v1/nothing-here"), 404, "not_found")


@pytest.mark.slow
def test_a_misspelt_required_field_is_named_not_the_one_it_hides(server: Server) -> None:
    with server.ensure().client() as client:
        answer = post(client, "/v1/collapse", {"headline": ["a", "b"]})
        body = assert_error(answer, 422, "invalid_request", "headline")
        assert "unknown field; did you mean 'headlines'?" in body["message"]


def test_a_url_with_raw_non_ascii_gets_the_json_error_and_is_counted(server: Server) -> None:
    """What the documented curl with a raw Arabic query sent: refused by the HTTP parser, before the app."""
    import socket

    host, port = server.ensure().url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall("GET /v1/similar?text=زلزال%20تركيا&k=5 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower()
    answer = json.loads(body)
    assert answer["error"] == "bad_request" and "--data-urlencode" in answer["message"]
    with server.client() as client:
        metrics = client.get("/metrics").text
        assert 'route="(invalid request)",status="400"' in metrics
        # The documented form: curl -G --data-urlencode encodes the text, as httpx's params do.
        assert client.get("/v1/similar", params={"text": "زلزال تركيا", "k": 5}).status_code == 200


def test_limits_and_bad_input(server: Server) -> None:
    with server.ensure().client() as client:
        many = {"headlines": [f"headline number {i}" for i in range(21)]}
        assert_error(post(client, "/v1/collapse", many), 422, "invalid_request", "headlines")
        long = {"headlines": [{"id": "x", "text": "word " * 61}]}
        assert_error(post(client, "/v1/headlines", long), 422, "invalid_request", "headlines[0].text")
        assert_error(post(client, "/v1/collapse", {"headlines": ["ok", " "]}), 422, "invalid_request", "headlines[1]")
        assert_error(post(client, "/v1/collapse", {"headlines": ["a" * 20_001]}), 413, "too_large")
        # A chunked body has no Content-Length: it is counted as it arrives.
        chunks = iter([b'{"headlines": ["', b"b" * 25_000, b'"]}'])
        chunked = client.post("/v1/collapse", content=chunks, headers={"content-type": "application/json"})
        assert_error(chunked, 413, "too_large")

        bad_json = client.post("/v1/collapse", content=b'{"headlines": [', headers={"content-type": "application/json"})
        assert_error(bad_json, 422, "invalid_json", "body")
        assert_error(post(client, "/v1/collapse", {}), 422, "invalid_request", "headlines")
        assert_error(post(client, "/v1/collapse", {"headlines": [3]}), 422, "invalid_request", "headlines[0]")
        missing = post(client, "/v1/collapse", {"headlines": [{"id": "no-text"}]})
        assert_error(missing, 422, "invalid_request", "headlines[0].text")
        typo = post(client, "/v1/collapse", {"headlines": ["a"], "treshold": 0.9})
        assert "unknown field" in assert_error(typo, 422, "invalid_request", "treshold")["message"]
        high = post(client, "/v1/collapse", {"headlines": ["a"], "threshold": 2})
        assert_error(high, 422, "invalid_request", "threshold")
        no_id = post(client, "/v1/headlines", {"headlines": [{"text": "no id"}]})
        assert_error(no_id, 422, "invalid_request", "headlines[0].id")
        when = post(client, "/v1/headlines", {"headlines": [{"id": "t", "text": "x", "published_at": "yesterday"}]})
        assert_error(when, 422, "invalid_request", "headlines[0].published_at")
        clash = post(client, "/v1/headlines", {"headlines": [{"id": "d", "text": "one"}, {"id": "d", "text": "two"}]})
        assert "appears twice" in assert_error(clash, 422, "invalid_input")["message"]
        assert_error(client.get("/v1/similar", params={"text": "x", "k": 101}), 422, "invalid_request", "k")
        assert_error(client.get("/v1/similar"), 422, "invalid_request", "text")


@pytest.mark.slow
def test_concurrent_writers_store_each_headline_once(server: Server) -> None:
    threads, requests, per_request = 4, 3, 4
    responses: list[dict] = []
    failures: list[str] = []
    lock = threading.Lock()

    def writer(t: int) -> None:
        with server.client() as client:
            for r in range(requests):
                own = [{"id": f"c{t}-{r}-{j}", "text": f"Council {t} votes on budget item {r}.{j}"} for j in range(3)]
                # Every thread also sends the same shared headline: it must be stored once, added once.
                shared = {"id": f"shared-{r}", "text": f"Shared wire story number {r} about the harbour"}
                response = post(client, "/v1/headlines", {"headlines": [*own, shared][:per_request]})
                with lock:
                    if response.status_code == 200:
                        responses.append(response.json())
                    else:
                        failures.append(response.text)

    with server.ensure().client() as client:
        before = _gauge(client.get("/metrics").text, "index_headlines")
        workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert not failures
        assert len(responses) == threads * requests
        statuses: dict[str, list[str]] = {}
        for body in responses:
            for item in body["headlines"]:
                statuses.setdefault(item["id"], []).append(item["status"])
        expected = {f"c{t}-{r}-{j}" for t in range(threads) for r in range(requests) for j in range(3)}
        expected |= {f"shared-{r}" for r in range(requests)}
        assert set(statuses) == expected
        for headline_id, seen in statuses.items():
            assert seen.count("added") == 1, (headline_id, seen)
            assert client.get(f"/v1/headlines/{headline_id}").status_code == 200
        after = _gauge(client.get("/metrics").text, "index_headlines")
        assert after - before == len(expected)


def _gauge(text: str, name: str) -> float:
    found = re.search(rf"^headline_cluster_{name} (\S+)$", text, re.MULTILINE)
    assert found, text
    return float(found[1])


@pytest.mark.slow
def test_metrics_exposition(server: Server) -> None:
    with server.ensure().client() as client:
        post(client, "/v1/collapse", {"headlines": ["one headline", "another one"]})
        client.get("/v1/headlines/absent-id")
        text = client.get("/metrics").text
    sample = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"\\\n]*",?)+\})? [0-9.e+-]+$')
    for line in text.splitlines():
        assert line.startswith("# ") or sample.match(line), line
    assert 'headline_cluster_requests_total{method="POST",route="/v1/collapse",status="200"}' in text
    # Ids never become labels: the template is.
    assert 'route="/v1/headlines/{headline_id}",status="404"' in text
    assert "absent-id" not in text
    count = re.search(r'request_duration_seconds_count\{method="POST",route="/v1/collapse"\} (\d+)', text)
    infinite = re.search(
        r'request_duration_seconds_bucket\{method="POST",route="/v1/collapse",le="\+Inf"\} (\d+)', text
    )
    assert count and infinite and count[1] == infinite[1]
    assert _gauge(text, "index_headlines") >= 0


@pytest.mark.slow
def test_cache_counters_follow_hits_and_misses(server: Server) -> None:
    # Texts no earlier request (or run: the index keeps its cache on disk) can have embedded.
    fresh = [f"Harbour authority {uuid.uuid4().hex} announces new ferry timetable", f"Ferry {uuid.uuid4().hex}"]
    with server.ensure().client() as client:

        def counters() -> tuple[float, float]:
            text = client.get("/metrics").text
            return _gauge(text, "embedding_cache_hits_total"), _gauge(text, "embedding_cache_misses_total")

        hits, misses = counters()
        assert post(client, "/v1/collapse", {"headlines": fresh}).status_code == 200
        after_miss = counters()
        assert after_miss[1] >= misses + len(fresh)  # each new text missed the cache
        assert post(client, "/v1/collapse", {"headlines": fresh}).status_code == 200
        after_hit = counters()
        assert after_hit[1] == after_miss[1]  # embedded once: the same texts now come from the cache
        assert after_hit[0] >= after_miss[0] + len(fresh)
        ratio = _gauge(client.get("/metrics").text, "embedding_cache_hit_ratio")
        assert ratio == pytest.approx(after_hit[0] / (after_hit[0] + after_hit[1]))


@pytest.mark.slow
def test_restart_keeps_data_and_api_key_guards_v1(server: Server) -> None:
    with server.ensure().client() as client:
        assert post(
            client, "/v1/headlines", {"headlines": [{"id": "keep", "text": "Kept across a restart"}]}
        ).is_success
    server.ensure(api_key=KEY)  # stops the server and starts it again on the same index, now with a key
    with server.client() as anonymous:
        body = assert_error(anonymous.get("/v1/headlines/keep"), 401, "unauthorized")
        assert "Bearer" in body["message"]
        # Checked before the body is read: an unauthenticated client cannot make the server buffer a body.
        assert_error(post(anonymous, "/v1/collapse", {"headlines": ["a" * 30_000]}), 401, "unauthorized")
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/metrics").status_code == 200
        assert_error(anonymous.get("/v1/headlines/keep", headers={"X-API-Key": KEY + "x"}), 401, "unauthorized")
        assert_error(
            anonymous.get("/v1/headlines/keep", headers={"Authorization": "Basic " + KEY}), 401, "unauthorized"
        )
    with server.client(authorization=f"Bearer {KEY}") as bearer:
        assert bearer.get("/v1/headlines/keep").json()["text"] == "Kept across a restart"
        assert "securitySchemes" in bearer.get("/openapi.json").json()["components"]
    with server.client(**{"x-api-key": KEY}) as keyed:
        assert keyed.get("/v1/headlines/keep").status_code == 200


# --- in process, no server, fake embedder -------------------------------------------------------------------


def test_field_paths() -> None:
    assert field_path(("body", "headlines", 3, "text")) == ("headlines[3].text", False)
    assert field_path(("body", "headlines", 0, "CollapseItem", "id")) == ("headlines[0].id", True)
    assert field_path(("query", "k")) == ("k", False)
    assert field_path(("body",)) == ("body", False)


def test_metrics_render_escapes_and_accumulates() -> None:
    metrics = Metrics()
    metrics.observe("GET", '/odd"route\\', 200, 0.004)
    metrics.observe("GET", '/odd"route\\', 500, 0.3)
    text = metrics.render({"index_headlines": ("gauge", "Headlines.", 12.0)})
    assert 'route="/odd\\"route\\\\"' in text
    assert '_bucket{method="GET",route="/odd\\"route\\\\",le="0.005"} 1' in text
    assert '_bucket{method="GET",route="/odd\\"route\\\\",le="0.5"} 2' in text
    assert "headline_cluster_index_headlines 12" in text
    assert text.endswith("\n")


def test_cache_gauges_are_the_cache_counters() -> None:
    assert set(gauges(7, None)) == {"index_headlines"}  # an embedder without a cache: no cache series
    values = {name: value for name, (_, _, value) in gauges(7, SimpleNamespace(hits=3, misses=1)).items()}
    assert values == {
        "index_headlines": 7,
        "embedding_cache_hits_total": 3,
        "embedding_cache_misses_total": 1,
        "embedding_cache_hit_ratio": 0.75,
    }


class CachingEmbedder(FakeEmbedder):
    """FakeEmbedder behind a real EmbeddingCache, used the way cluster.embed.Embedder uses it."""

    def __init__(self) -> None:
        super().__init__()
        self.cache = EmbeddingCache()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        keys = [text_key(t) for t in texts]
        known = self.cache.get_many(self.model_id, list(dict.fromkeys(keys)))
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in known}
        if todo:
            fresh = dict(zip(todo, super().encode(list(todo.values())), strict=True))
            self.cache.put_many(self.model_id, fresh)
            known.update(fresh)
        return np.array([known[k] for k in keys], dtype=np.float32).reshape(len(texts), self.dimension)


def test_cache_counters_move_with_requests_in_process(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    app = create_app(tmp_path / "idx", create=True, embedder=CachingEmbedder(), readers=1)
    with TestClient(app) as client:

        def counters() -> tuple[float, float]:
            text = client.get("/metrics").text
            return _gauge(text, "embedding_cache_hits_total"), _gauge(text, "embedding_cache_misses_total")

        start = counters()
        assert client.post("/v1/collapse", json={"headlines": ["topic1 new a", "topic1 new b"]}).status_code == 200
        missed = counters()
        assert missed == (start[0], start[1] + 2)
        assert client.post("/v1/collapse", json={"headlines": ["topic1 new b", "topic1 new a"]}).status_code == 200
        assert counters() == (missed[0] + 2, missed[1])
        # A write embeds its text ahead of the lock: that is its one miss, the index then finds the vector.
        added = client.post("/v1/headlines", json={"headlines": [{"id": "w1", "text": "topic4 written"}]})
        assert added.status_code == 200
        written = counters()
        assert written[1] == missed[1] + 1 and written[0] >= missed[0] + 2


def test_answers_before_routing_count_under_their_route(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    limits = Limits(max_body_bytes=100)
    app = create_app(tmp_path / "idx", create=True, embedder=FakeEmbedder(), api_key="k", limits=limits, readers=1)
    with TestClient(app) as client:
        assert client.get("/v1/headlines/some-id").status_code == 401
        big = client.post("/v1/collapse", json={"headlines": ["x" * 200]}, headers={"x-api-key": "k"})
        assert big.status_code == 413
        text = client.get("/metrics").text
    # 401 and 413 are answered by the guard, before routing: they still count under the route template.
    assert 'route="/v1/headlines/{headline_id}",status="401"} 1' in text
    assert 'route="/v1/collapse",status="413"} 1' in text
    assert "unmatched" not in text


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_text_chars"):
        Limits(max_text_chars=5000)
    with pytest.raises(ValueError, match="max_headlines"):
        Limits(max_headlines=0)


def test_in_process_app_with_a_fake_embedder(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    app = create_app(tmp_path / "idx", create=True, embedder=FakeEmbedder(), api_key="k", readers=1)
    with TestClient(app) as client:
        headers = {"x-api-key": "k"}
        rows = [{"id": f"i{n}", "text": f"topic1 rates story {n}"} for n in range(3)]
        added = client.post("/v1/headlines", json={"headlines": rows}, headers=headers).json()
        assert len({h["story_id"] for h in added["headlines"]}) == 1
        assert client.post("/v1/collapse", json={"headlines": ["topic2 a"]}).status_code == 401
        collapsed = client.post("/v1/collapse", json={"headlines": ["topic2 a", "topic2 b"]}, headers=headers)
        assert collapsed.status_code == 200 and len(collapsed.json()["stories"]) == 1


def test_serve_command_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from cluster.cli import main

    runner = CliRunner()
    missing = runner.invoke(main, ["serve", "--index", str(tmp_path / "none"), "--port", "0"])
    assert missing.exit_code == 2
    assert "no headline index here" in missing.output and "--create" in missing.output
    monkeypatch.delenv(KEY_ENV, raising=False)
    no_key = runner.invoke(main, ["serve", "--index", str(tmp_path), "--create", "--api-key-env", KEY_ENV])
    assert no_key.exit_code == 2
    assert f"{KEY_ENV} (named by --api-key-env) is not set" in no_key.output
    assert "Traceback" not in missing.output + no_key.output


def test_docs_page_loads_swagger_from_this_server_only(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    app = create_app(tmp_path / "idx", create=True, embedder=FakeEmbedder(), readers=1)
    with TestClient(app) as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page)
            assert html.status_code == 200
            assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text)
            assets += re.findall(r"""url: ?["']([^"']+)["']""", html.text)  # swagger's openapi_url
            assert any(a.endswith(".js") for a in assets), html.text
            for asset in assets:
                # Anything not on this server is a blank page offline.
                assert asset.startswith("/"), f"{page} loads {asset}"
                assert client.get(asset).status_code == 200, asset
