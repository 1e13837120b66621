"""The HTTP service: collapse and index endpoints over one headline index, for an aggregator's web tier.

``create_app(index_path)`` returns a FastAPI app; ``headline-cluster serve`` runs it with uvicorn. The
model loads once, in ``create_app``, and every request shares its embedder (and so its embedding cache).

Concurrency, on one event loop:

* CPU-bound work (embedding, FAISS search, SQLite) runs in the threadpool, never on the event loop.
* Writes go through one ``asyncio.Lock``: writers waiting for it hold no thread, and each write runs
  on the one writer ``HeadlineIndex`` (which also takes the index's ``write.lock``, so a concurrent
  ``headline-cluster index add`` process is serialized with the service too).
* Reads use a small pool of their own ``HeadlineIndex`` objects, each with its own SQLite connection:
  in WAL mode a reader sees the last committed state and never waits for a writer's transaction.

Errors are JSON ``{"error": CODE, "message": TEXT, "field": PATH | null}``; no traceback reaches a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match

from . import __version__
from .errors import InputError
from .normalize import normalize
from .store import MAX_HEADLINE_CHARS, EmbedderLike, HeadlineIndex
from .stories import collapse

__all__ = ["Limits", "create_app"]

log = logging.getLogger("headline_cluster.service")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    """Per-request limits. Anything over them is refused with a JSON error naming the limit."""

    max_headlines: int = 1000
    max_text_chars: int = MAX_HEADLINE_CHARS
    # 1,000 headlines of 2,000 Arabic characters (2 bytes each in UTF-8) plus JSON overhead fit in 4 MiB.
    max_body_bytes: int = 4 * 1024 * 1024
    max_k: int = 100

    def __post_init__(self) -> None:
        for name in ("max_headlines", "max_text_chars", "max_body_bytes", "max_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_text_chars > MAX_HEADLINE_CHARS:
            # The index refuses longer headlines (it returns what it stored, so it never cuts text).
            raise ValueError(f"max_text_chars cannot exceed {MAX_HEADLINE_CHARS}, the index's own limit")


# --- request and response bodies (pydantic, so /openapi.json documents them) --------------------------------


class _Strict(BaseModel):
    # Unknown fields are refused: a misspelt "headline" or "treshold" must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class CollapseItem(_Strict):
    text: str = Field(description="The headline as displayed.")
    id: str | None = Field(None, max_length=256, description="Your id; echoed back with the member.")


class CollapseRequest(_Strict):
    headlines: list[str | CollapseItem] = Field(min_length=1, description="Headlines, in display order.")
    threshold: float | None = Field(
        None, ge=-1.0, le=1.0, description="Similarity needed to group (default: the model's, as the CLI's)."
    )


class CollapseRepresentative(BaseModel):
    index: int
    text: str
    id: str | None = None


class CollapseMember(BaseModel):
    index: int = Field(description="0-based position of the headline in the request.")
    text: str
    score: float = Field(description="Similarity to the story's representative.")
    id: str | None = Field(None, description="The id sent with the headline, if any.")


class CollapseStory(BaseModel):
    id: int
    representative: CollapseRepresentative
    members: list[CollapseMember]


class CollapseResponse(BaseModel):
    """The JSON of ``headline-cluster collapse --format json``, plus ``id`` where the request gave one."""

    model: str
    threshold: float
    stories: list[CollapseStory]


class NewHeadline(_Strict):
    id: str = Field(min_length=1, max_length=256, description="Your id of the article; unique in the index.")
    text: str
    published_at: datetime | None = Field(None, description="ISO 8601; UTC when no offset is given.")
    source: str | None = Field(None, max_length=256)
    url: str | None = Field(None, max_length=4096)


class AddRequest(_Strict):
    headlines: list[NewHeadline] = Field(min_length=1)


class AddedHeadline(BaseModel):
    id: str
    story_id: str
    status: Literal["added", "present"] = Field(description="present: the id was already in the index (kept).")


class AddResponse(BaseModel):
    headlines: list[AddedHeadline]
    added: int
    present: int
    new_stories: int
    joined: int = Field(description="New headlines that joined an existing story.")
    index_headlines: int
    index_stories: int


class HeadlineOut(BaseModel):
    id: str
    text: str
    published_at: str | None
    source: str | None
    url: str | None
    story_id: str
    added_at: str


class StoryRepresentative(BaseModel):
    id: str
    text: str


class StoryMemberOut(BaseModel):
    id: str
    text: str
    published_at: str | None
    source: str | None
    score: float = Field(description="Similarity to the story's representative.")


class HistoryEntry(BaseModel):
    old_id: str
    new_id: str
    at: str
    kind: str = Field(description="merge or split, recorded by nightly runs.")
    reason: str
    run: int | None


class StoryOut(BaseModel):
    id: str = Field(description="The story's current id: an id merged away leads to the story it went into.")
    representative: StoryRepresentative
    size: int
    first_seen: str
    last_seen: str
    members: list[StoryMemberOut]
    history: list[HistoryEntry] = Field(description="Merges and splits involving this story, oldest first.")


class SimilarHit(HeadlineOut):
    score: float
    story_size: int | None = None
    story_similarity: float | None = Field(None, description="With explain: mean similarity to the story.")
    would_join: bool | None = Field(None, description="With explain: whether the text would join the story.")


class SimilarResponse(BaseModel):
    hits: list[SimilarHit]


class Health(BaseModel):
    status: str
    model: str
    version: str


class ErrorBody(BaseModel):
    error: str = Field(description="A stable code: unauthorized, not_found, invalid_request, too_large, ...")
    message: str
    field: str | None = Field(None, description="The offending field, such as headlines[3].text.")


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong API key (when one is configured)."},
    413: {"model": ErrorBody, "description": "Body over the size limit."},
    422: {"model": ErrorBody, "description": "Invalid JSON, fields or limits; names the field."},
}


# --- errors -------------------------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def _error(status: int, code: str, message: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = ErrorBody(error=code, message=message, field=field).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


def _field_path(loc: Sequence[Any]) -> tuple[str, bool]:
    """('body', 'headlines', 3, 'text') -> 'headlines[3].text', and whether it went through a union branch.

    Pydantic names the member of a ``str | CollapseItem`` union it tried ('str', 'CollapseItem'): such a
    tag is not a field, so it is dropped from the path.
    """
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    path = ""
    branch = False
    for position, part in enumerate(parts):
        if isinstance(part, int):
            path += f"[{part}]"
        elif position > 0 and isinstance(parts[position - 1], int) and part in _UNION_TAGS:
            branch = True
        else:
            path += f".{part}" if path else str(part)
    return path or "body", branch


_UNION_TAGS = {"str", "CollapseItem"}


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors()) or [{"loc": ("body",), "msg": "invalid request", "type": ""}]
    first = errors[0]
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "invalid JSON")
        where = first["loc"][1] if len(first["loc"]) > 1 else "?"
        return _error(422, "invalid_json", f"the body is not valid JSON: {reason} at character {where}", "body")
    # A headline that is neither a string nor a valid object fails both union branches: keep the errors of
    # the branch the client meant (an object -> its fields; anything else -> "not a string or object").
    described: list[tuple[str, str]] = []
    for error in errors:
        field, branch = _field_path(error["loc"])
        is_object = isinstance(error.get("input"), Mapping) or field.count(".") > 0
        if branch and error["loc"][-1] == "str":
            if isinstance(error.get("input"), Mapping):
                continue  # the client sent an object: its own field errors say what is wrong
            message = "must be a string or an object with a text field"
        elif branch and not is_object:
            continue  # the object branch's complaint about a non-object adds nothing to the line above
        elif error.get("type") == "extra_forbidden":
            message = "unknown field (check its spelling)"
        elif field == "body" and error.get("type") in ("model_attributes_type", "dict_type"):
            message = "send a JSON object with Content-Type: application/json"
        else:
            message = error["msg"]
        if (field, message) not in described:
            described.append((field, message))
    field, message = described[0] if described else ("body", "invalid request")
    others = len({f for f, _ in described} - {field})
    suffix = f" (and {others} other field{'s' if others > 1 else ''})" if others else ""
    return _error(422, "invalid_request", f"{field}: {message}{suffix}", field)


# --- metrics (Prometheus text format) ----------------------------------------------------------------------

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    """Request counts and a latency histogram, rendered in the Prometheus text format.

    Written here rather than with prometheus_client: the service needs one counter, one histogram and a
    few gauges computed at scrape time, and prometheus_client's process-wide default registry would be
    shared by every app a test process creates. The format is small and stable (text format 0.0.4).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = {}
        self._latency: dict[tuple[str, str], list[float]] = {}  # bucket counts, then sum, then count

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, route, str(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            series = self._latency.setdefault((method, route), [0.0] * (len(_BUCKETS) + 2))
            for position, bound in enumerate(_BUCKETS):
                if seconds <= bound:
                    series[position] += 1
            series[-2] += seconds
            series[-1] += 1

    def render(self, gauges: Mapping[str, tuple[str, str, float]]) -> str:
        """The exposition text; ``gauges``: name -> (type, help, value)."""
        prefix = "headline_cluster"
        lines = [
            f"# HELP {prefix}_requests_total HTTP requests answered, by method, route template and status.",
            f"# TYPE {prefix}_requests_total counter",
        ]
        with self._lock:
            requests = sorted(self._requests.items())
            latency = sorted((key, list(series)) for key, series in self._latency.items())
        for (method, route, status), count in requests:
            labels = f'method="{_label(method)}",route="{_label(route)}",status="{status}"'
            lines.append(f"{prefix}_requests_total{{{labels}}} {count}")
        name = f"{prefix}_request_duration_seconds"
        lines += [f"# HELP {name} Time from request to the end of the response.", f"# TYPE {name} histogram"]
        for (method, route), series in latency:
            labels = f'method="{_label(method)}",route="{_label(route)}"'
            for bound, count in zip(_BUCKETS, series, strict=False):
                lines.append(f'{name}_bucket{{{labels},le="{_number(bound)}"}} {_number(count)}')
            lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {_number(series[-1])}')
            lines.append(f"{name}_sum{{{labels}}} {_number(series[-2])}")
            lines.append(f"{name}_count{{{labels}}} {_number(series[-1])}")
        for gauge, (kind, text, value) in gauges.items():
            lines += [f"# HELP {prefix}_{gauge} {text}", f"# TYPE {prefix}_{gauge} {kind}"]
            lines.append(f"{prefix}_{gauge} {_number(value)}")
        return "\n".join(lines) + "\n"


# --- ASGI middleware ---------------------------------------------------------------------------------------


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class _Measured:
    """Outermost layer: counts every answer (401s and 413s included) under its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Callable[[], Sequence[Any]]):
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.observe(scope["method"], self._route(scope), status, time.perf_counter() - started)

    def _route(self, scope: Scope) -> str:
        # The template, not the raw path: ids in paths would make one time series per headline.
        route = scope.get("route")
        if route is None:  # answered before routing (401, 413): find the route it was meant for
            route = next((r for r in self.routes() if r.matches(scope)[0] == Match.FULL), None)
        return getattr(route, "path", None) or "unmatched"


class _Guarded:
    """API key check for /v1 (before any body is read), then the body size limit."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int):
        self.app = app
        self.key = api_key.encode("utf-8") if api_key else None
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])  # ASGI lower-cases header names
        if self.key is not None and scope["path"].startswith("/v1") and not self._authorized(headers):
            await _send_json(
                send,
                401,
                _error_body(
                    "unauthorized", "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
                ),
                [(b"www-authenticate", b"Bearer")],
            )
            return
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _send_json(send, 400, _error_body("bad_request", "Content-Length is not a number"))
                return
            if length > self.limit:
                await self._too_large(send)
                return
        # Read the whole body here (bounded by the limit) so a chunked body cannot slip past it.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _authorized(self, headers: Mapping[bytes, bytes]) -> bool:
        given = headers.get(b"x-api-key")
        authorization = headers.get(b"authorization", b"")
        scheme, _, token = authorization.partition(b" ")
        if given is None and scheme.lower() == b"bearer":
            given = token.strip()
        # compare_digest takes time independent of where the strings differ.
        return given is not None and self.key is not None and hmac.compare_digest(given, self.key)

    async def _too_large(self, send: Send) -> None:
        await _send_json(
            send,
            413,
            _error_body("too_large", f"the body is over the limit of {self.limit:,} bytes: send fewer headlines"),
        )


def _error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return ErrorBody(error=code, message=message, field=field).model_dump()


# --- the service -------------------------------------------------------------------------------------------


class _Service:
    """The writer, the reader pool and the embedder behind one app."""

    def __init__(
        self, index_path: Path, *, model: str | None, embedder: EmbedderLike | None, create: bool, readers: int
    ):
        self.path = index_path
        self.writer = HeadlineIndex.open(index_path, create=create, model=model, embedder=embedder, **_quiet())
        try:
            # Loaded here, once: the first request must not pay for the model load.
            self.embedder = embedder if embedder is not None else self.writer.embedder_in_use()
            # The default model loads lazily (on the first text not in the cache); max_tokens loads it now.
            getattr(self.embedder, "max_tokens", None)
            self.embedder.encode([normalize("warm up")])  # and the first inference initializes torch's kernels
            self.write_lock = asyncio.Lock()
            self._readers: queue.Queue[HeadlineIndex] = queue.Queue()
            self._all = [self.writer]
            for _ in range(readers):
                reader = HeadlineIndex.open(index_path, embedder=self.embedder, **_quiet())
                self._all.append(reader)
                self._readers.put(reader)
        except BaseException:
            self.close()
            raise

    @contextlib.contextmanager
    def reader(self) -> Iterator[HeadlineIndex]:
        index = self._readers.get()  # blocks (in a worker thread) only while every reader is busy
        try:
            yield index
        finally:
            self._readers.put(index)

    def close(self) -> None:
        for index in self._all:
            with contextlib.suppress(Exception):
                index.close()
        self._all = []

    # Each method below runs in a worker thread.

    def collapse(self, body: CollapseRequest) -> dict[str, Any]:
        items = [{"text": h} if isinstance(h, str) else {"text": h.text} for h in body.headlines]
        ids = [None if isinstance(h, str) else h.id for h in body.headlines]
        # threshold None: the engine's default for the model, exactly as `headline-cluster collapse` uses.
        result = collapse(items, threshold=body.threshold, embedder=self.embedder).to_dict()
        for story in result["stories"]:
            for member in [story["representative"], *story["members"]]:
                member["id"] = ids[member["index"]]
        return result

    def embed_ahead(self, body: AddRequest) -> None:
        """Embed a write's texts before it queues for the write lock (into the shared embedding cache).

        The index then finds the vectors in the cache, so the lock is held only for the index's own work,
        and one write's embedding overlaps the previous write's index update (two cores, two stages).
        The index normalizes ``text.strip()`` the same way; were that to change, it would embed again
        itself, which costs time but never correctness.
        """
        self.embedder.encode([normalize(h.text.strip()) for h in body.headlines])

    def add(self, body: AddRequest) -> AddResponse:
        index = self.writer
        seen: set[str] = set()
        present: set[str] = set()
        for headline in body.headlines:
            if headline.id not in seen and index.get(headline.id) is not None:
                present.add(headline.id)
            seen.add(headline.id)
        result = index.add(
            [
                {
                    "id": h.id,
                    "text": h.text,
                    "published_at": h.published_at,
                    "source": h.source,
                    "url": h.url,
                }
                for h in body.headlines
            ]
        )
        out: list[AddedHeadline] = []
        reported: set[str] = set()
        for headline in body.headlines:
            stored = index.get(headline.id)
            if stored is None:  # add() either stores every headline or raises: this is a bug, say so
                raise RuntimeError(f"headline {headline.id!r} was not stored")
            status = "present" if headline.id in present or headline.id in reported else "added"
            reported.add(headline.id)
            out.append(AddedHeadline(id=headline.id, story_id=stored.story_id, status=status))
        return AddResponse(
            headlines=out,
            added=result.added,
            present=result.present,
            new_stories=result.new_stories,
            joined=result.joined,
            index_headlines=result.headlines,
            index_stories=result.stories,
        )

    def headline(self, headline_id: str) -> dict[str, Any] | None:
        with self.reader() as index:
            found = index.get(headline_id)
        return None if found is None else found.to_dict()

    def story(self, story_id: str) -> dict[str, Any] | None:
        with self.reader() as index:
            info = index.story(story_id)
            if info is None:
                return None
            ids = {story_id, info.id}
            # history() returns the whole table; it stays small (nightly merges and splits only).
            history = [h for h in index.history() if h["old_id"] in ids or h["new_id"] in ids]
        return {**info.to_dict(), "history": history}

    def similar(self, text: str, k: int, explain: bool) -> list[dict[str, Any]]:
        with self.reader() as index:
            return [hit.to_dict() for hit in index.query(text, k, explain=explain)]

    def gauges(self) -> dict[str, tuple[str, str, float]]:
        with self.reader() as index:
            headlines = index.count()
        gauges = {"index_headlines": ("gauge", "Headlines in the index.", float(headlines))}
        cache = getattr(self.embedder, "cache", None)
        if cache is not None:
            hits, misses = cache.hits, cache.misses
            total = hits + misses
            gauges["embedding_cache_hits_total"] = ("counter", "Embedding cache lookups that found a vector.", hits)
            gauges["embedding_cache_misses_total"] = ("counter", "Embedding cache lookups that missed.", misses)
            gauges["embedding_cache_hit_ratio"] = (
                "gauge",
                "Hits over lookups since start (prefer rate() of the two counters).",
                hits / total if total else 0.0,
            )
        return gauges


def _quiet() -> dict[str, Callable[[str], None]]:
    # The index reports repairs and lock waits on stderr by default; a service sends them to its log.
    return {"notify": log.warning, "on_wait": log.info}


def _check_texts(texts: Sequence[tuple[str, str]], limits: Limits) -> None:
    """(field, text) pairs: each non-empty and within the length limit, else a 422 naming the field."""
    for field, text in texts:
        if not text.strip():
            raise ApiError(422, "invalid_request", f"{field}: the headline is empty", field)
        if len(text) > limits.max_text_chars:
            raise ApiError(
                422,
                "invalid_request",
                f"{field}: {len(text):,} characters, over the limit of {limits.max_text_chars:,}",
                field,
            )


def _client_gone() -> JSONResponse:
    return _error(499, "client_closed", "the client closed the connection before the write started")


def _check_count(count: int, limits: Limits) -> None:
    if count > limits.max_headlines:
        raise ApiError(
            422,
            "invalid_request",
            f"headlines: {count:,} headlines, over the limit of {limits.max_headlines:,} per request: split them",
            "headlines",
        )


def create_app(
    index_path: str | Path,
    *,
    api_key: str | None = None,
    model: str | None = None,
    limits: Limits | None = None,
    embedder: EmbedderLike | None = None,
    create: bool = False,
    readers: int = 4,
) -> FastAPI:
    """The service over the index folder ``index_path``; loads the model before returning.

    ``api_key``: when given, every /v1 call needs it. ``model``: the model of a new index (an existing
    index keeps its own). ``embedder``: use this instead of loading a model (tests). ``create``: create
    the index when the folder has none. ``readers``: SQLite connections for concurrent reads.
    """
    limits = limits or Limits()
    service = _Service(Path(index_path), model=model, embedder=embedder, create=create, readers=readers)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(
        title="headline-cluster",
        version=__version__,
        description="Duplicate-headline clustering: collapse related-article lists and keep stories per headline.",
        lifespan=lifespan,
    )
    app.state.service = service
    metrics = Metrics()

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    @app.exception_handler(InputError)
    async def invalid_input(request: Request, exc: InputError) -> JSONResponse:
        return _error(422, "invalid_input", str(exc))

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return _error(404, "not_found", f"no route {request.url.path}: see /docs")

    @app.exception_handler(405)
    async def wrong_method(request: Request, exc: Exception) -> JSONResponse:
        return _error(405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}: see /docs")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal", "unexpected server error; it was logged")

    # Declared only for the OpenAPI schema (the "Authorize" button in /docs): _Guarded enforces the key.
    security = (
        [Depends(HTTPBearer(auto_error=False)), Depends(APIKeyHeader(name="X-API-Key", auto_error=False))]
        if api_key
        else []
    )
    v1 = APIRouter(prefix="/v1", dependencies=security, responses=_ERRORS)

    @v1.post("/collapse", response_model=CollapseResponse, summary="Collapse a related-articles list")
    async def collapse_endpoint(body: CollapseRequest) -> dict[str, Any]:
        """Group the headlines into stories, one representative each (same JSON as ``collapse --format json``)."""
        _check_count(len(body.headlines), limits)
        _check_texts(
            [
                (f"headlines[{i}]" + ("" if isinstance(h, str) else ".text"), h if isinstance(h, str) else h.text)
                for i, h in enumerate(body.headlines)
            ],
            limits,
        )
        return await run_in_threadpool(service.collapse, body)

    @v1.post("/headlines", response_model=AddResponse, summary="Add headlines to the index")
    async def add_endpoint(body: AddRequest, request: Request) -> AddResponse | JSONResponse:
        """Store headlines; each joins a story at once or starts one. Ids already stored are kept as they are."""
        _check_count(len(body.headlines), limits)
        _check_texts([(f"headlines[{i}].text", h.text) for i, h in enumerate(body.headlines)], limits)
        # A client that gave up while queued is skipped (before embedding, before writing): ids make its
        # retry safe, and under overload work for clients that left only grows the queue for the others.
        if await request.is_disconnected():
            return _client_gone()
        await run_in_threadpool(service.embed_ahead, body)
        async with service.write_lock:  # one writer; waiting writers hold no worker thread
            if await request.is_disconnected():
                return _client_gone()
            return await run_in_threadpool(service.add, body)

    @v1.get("/headlines/{headline_id}", response_model=HeadlineOut, summary="One stored headline")
    async def headline_endpoint(headline_id: str) -> dict[str, Any]:
        found = await run_in_threadpool(service.headline, headline_id)
        if found is None:
            raise ApiError(404, "not_found", f"no headline with id {headline_id!r}", "headline_id")
        return found

    @v1.get("/stories/{story_id}", response_model=StoryOut, summary="One story: members, representative, history")
    async def story_endpoint(story_id: str) -> dict[str, Any]:
        found = await run_in_threadpool(service.story, story_id)
        if found is None:
            raise ApiError(404, "not_found", f"no story with id {story_id!r}", "story_id")
        return found

    @v1.get("/similar", response_model=SimilarResponse, summary="Stored headlines most similar to a text")
    async def similar_endpoint(
        text: str = Query(min_length=1, description="The text to look up."),
        k: int = Query(10, ge=1, le=limits.max_k, description="How many hits."),
        explain: bool = Query(False, description="Also say whether the text would join each hit's story."),
    ) -> dict[str, Any]:
        _check_texts([("text", text)], limits)
        return {"hits": await run_in_threadpool(service.similar, text, k, explain)}

    app.include_router(v1)

    @app.get("/healthz", response_model=Health, summary="Liveness (no API key needed)")
    async def healthz() -> Health:
        return Health(status="ok", model=getattr(service.embedder, "name", "?"), version=__version__)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics (no API key needed)")
    async def metrics_endpoint() -> PlainTextResponse:
        gauges = await run_in_threadpool(service.gauges)
        return PlainTextResponse(metrics.render(gauges), media_type="text/plain; version=0.0.4; charset=utf-8")

    # Outermost first: metrics see every answer, then the key check, then the body limit.
    app.add_middleware(_Guarded, api_key=api_key, max_body_bytes=limits.max_body_bytes)
    app.add_middleware(_Measured, metrics=metrics, routes=lambda: app.router.routes)
    return app
