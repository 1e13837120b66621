"""The app: routes, error handlers, and the writer and readers behind them.

Concurrency, on one event loop:

* CPU-bound work (embedding, FAISS search, SQLite) runs in the threadpool, never on the event loop.
* Writes go through one ``asyncio.Lock``: writers waiting for it hold no thread, and each write runs
  on the one writer ``HeadlineIndex`` (which also takes the index's ``write.lock``, so a concurrent
  ``headline-cluster index add`` process is serialized with the service too).
* Reads use a small pool of their own ``HeadlineIndex`` objects, each with its own SQLite connection:
  in WAL mode a reader sees the last committed state and never waits for a writer's transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as UrlPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPBearer
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..embed import Embedder
from ..errors import DiskFullError, IndexDamagedError, InputError
from ..fsutil import LockWaitExpired, lock_deadline
from ..limits import MAX_ID_CHARS
from ..normalize import normalize
from ..store import DB_FILE, EmbedderLike, HeadlineIndex
from ..store.schema import replaced_files
from ..stories import collapse
from . import metrics as metrics_text
from .cache import BoundedEmbeddingCache
from .derive import values
from .errors import ApiError, error, validation_response
from .guard import Guarded
from .limits import Limits, check_count, check_texts
from .metrics import Measured, Metrics
from .models import (
    ADD,
    ADDED_HEADLINE,
    ERROR_RESPONSES,
    AddedHeadline,
    AddRequest,
    AddResponse,
    CollapseRequest,
    CollapseResponse,
    ErrorBody,
    HeadlineOut,
    Health,
    SimilarResponse,
    StoryOut,
)

__all__ = ["create_app"]

log = logging.getLogger("headline_cluster.service")


class _Service:
    """The writer, the reader pool and the embedder behind one app."""

    def __init__(
        self, index_path: Path, *, model: str | None, embedder: EmbedderLike | None, create: bool, readers: int
    ):
        self.path = index_path
        self.writer = HeadlineIndex.open(
            index_path, create=create, model=model, embedder=embedder, embedder_factory=_bounded_embedder, **_quiet()
        )
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
        items = [
            {"text": h} if isinstance(h, str) else {"text": h.text, "id": h.id, "published_at": h.published_at}
            for h in body.headlines
        ]
        # threshold None: the level's default for the model, exactly as `headline-cluster collapse` uses.
        return collapse(items, threshold=body.threshold, level=body.level, embedder=self.embedder).to_dict()

    def embed_ahead(self, body: AddRequest) -> None:
        """Embed a write's texts before it queues for the write lock (into the shared embedding cache).

        The index then finds the vectors in the cache, so the lock is held only for the index's own work,
        and one write's embedding overlaps the previous write's index update (two cores, two stages).
        The index normalizes ``text.strip()`` the same way; were that to change, it would embed again
        itself, which costs time but never correctness.
        """
        self.embedder.encode([normalize(h.text.strip()) for h in body.headlines])

    def add(self, body: AddRequest, seconds: float) -> AddResponse:  # type: ignore[valid-type]
        """Store ``body``, waiting at most ``seconds`` for the index's write lock (:class:`LockWaitExpired`)."""
        with lock_deadline(seconds):
            return self._add(body)

    def _add(self, body: AddRequest) -> AddResponse:  # type: ignore[valid-type]
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
        out: list[Any] = []
        reported: set[str] = set()
        for headline in body.headlines:
            stored = index.get(headline.id)
            if stored is None:  # add() either stores every headline or raises: this is a bug, say so
                raise RuntimeError(f"headline {headline.id!r} was not stored")
            status = "present" if headline.id in present or headline.id in reported else "added"
            reported.add(headline.id)
            out.append(AddedHeadline(**values(ADDED_HEADLINE, stored), status=status))
        # The API's "present" has always counted an id repeated in the request; the library counts it apart.
        result = replace(result, present=result.present + result.repeated, repeated=0)
        return AddResponse(**values(ADD, result), headlines=out)

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
        return metrics_text.gauges(headlines, getattr(self.embedder, "cache", None))


def _bounded_embedder(model: str, quantize: str | None = None) -> EmbedderLike:
    """The model with a bounded cache in memory: a service that runs for months must not grow one without
    end, on disk or in memory (headlines it adds keep their vectors in the index itself)."""
    return Embedder(model, cache=BoundedEmbeddingCache(), quantize=quantize)


def _quiet() -> dict[str, Callable[[str], None]]:
    # The index reports repairs and lock waits on stderr by default; a service sends them to its log.
    return {"notify": log.warning, "on_wait": log.info}


def _busy(seconds: float) -> JSONResponse:
    return error(
        503,
        "busy",
        f"another writer (such as headline-cluster index add) held the index for over {seconds:g} s: nothing was "
        "written; send the request again later (ids make a retry safe)",
        headers={"Retry-After": str(math.ceil(seconds))},
    )


def _client_gone() -> JSONResponse:
    return error(499, "client_closed", "the client closed the connection before the write started")


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

    # FastAPI's /docs and /redoc load Swagger UI and ReDoc from a CDN, a blank page offline; fastapi-offline
    # serves the same assets from its package under /static-offline-docs.
    app = FastAPIOffline(
        title="headline-cluster",
        version=__version__,
        description="Duplicate-headline clustering: collapse related-article lists and keep stories per headline.",
        lifespan=lifespan,
    )
    app.state.service = service
    metrics = Metrics()
    app.state.metrics = metrics  # for the HTTP protocol's own 400s (cluster.service.protocol)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.code, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(exc)

    @app.exception_handler(InputError)
    async def invalid_input(request: Request, exc: InputError) -> JSONResponse:
        if isinstance(exc, (IndexDamagedError, DiskFullError)) or "not writable" in exc.hint:
            log.error("the index cannot be used: %s", exc)
            return error(503, "unavailable", str(exc))
        return error(422, "invalid_input", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Raised by the framework itself, e.g. a body that is not UTF-8 or JSON nested too deep to parse:
        # answered in the documented error format like every other error.
        # (404 and 405 have handlers of their own, which Starlette looks up first.)
        if exc.status_code == 400:
            return error(422, "invalid_json", f"the body could not be read as JSON: {exc.detail}", "body")
        return error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return error(404, "not_found", f"no route {request.url.path}: see /docs")

    @app.exception_handler(405)
    async def wrong_method(request: Request, exc: Exception) -> JSONResponse:
        return error(405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}: see /docs")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error(500, "internal", "unexpected server error; it was logged")

    # Declared only for the OpenAPI schema (the "Authorize" button in /docs): Guarded enforces the key.
    security = (
        [Depends(HTTPBearer(auto_error=False)), Depends(APIKeyHeader(name="X-API-Key", auto_error=False))]
        if api_key
        else []
    )
    v1 = APIRouter(prefix="/v1", dependencies=security, responses=ERROR_RESPONSES)

    @v1.post("/collapse", response_model=CollapseResponse, summary="Collapse a related-articles list")
    async def collapse_endpoint(body: CollapseRequest) -> dict[str, Any]:
        """Group the headlines into stories, one representative each (same JSON as ``collapse --format json``)."""
        check_count(len(body.headlines), limits)
        check_texts(
            [
                (f"headlines[{i}]" + ("" if isinstance(h, str) else ".text"), h if isinstance(h, str) else h.text)
                for i, h in enumerate(body.headlines)
            ],
            limits,
        )
        return await run_in_threadpool(service.collapse, body)

    @v1.post("/headlines", response_model=AddResponse, summary="Add headlines to the index")
    async def add_endpoint(body: AddRequest, request: Request) -> Any:
        """Store headlines; each joins a story at once or starts one. Ids already stored are kept as they are."""
        check_count(len(body.headlines), limits)
        check_texts([(f"headlines[{i}].text", h.text) for i, h in enumerate(body.headlines)], limits)
        # A client that gave up while queued is skipped (before embedding, before writing): ids make its
        # retry safe, and under overload work for clients that left only grows the queue for the others.
        if await request.is_disconnected():
            return _client_gone()
        await run_in_threadpool(service.embed_ahead, body)
        # One writer; waiting writers hold no worker thread. The wait is bounded (limits.write_seconds) for
        # this lock and the index's write.lock together, so the server gives up before a client does.
        deadline = time.monotonic() + limits.write_seconds
        try:
            async with asyncio.timeout(limits.write_seconds):
                await service.write_lock.acquire()
        except TimeoutError:
            return _busy(limits.write_seconds)
        try:
            if await request.is_disconnected():
                return _client_gone()
            return await run_in_threadpool(service.add, body, max(0.0, deadline - time.monotonic()))
        except LockWaitExpired:
            return _busy(limits.write_seconds)
        finally:
            service.write_lock.release()

    @v1.get("/headlines/{headline_id}", response_model=HeadlineOut, summary="One stored headline")
    async def headline_endpoint(headline_id: str = UrlPath(max_length=MAX_ID_CHARS)) -> dict[str, Any]:
        found = await run_in_threadpool(service.headline, headline_id)
        if found is None:
            raise ApiError(404, "not_found", f"no headline with id {headline_id!r}", "headline_id")
        return found

    @v1.get("/stories/{story_id}", response_model=StoryOut, summary="One story: members, representative, history")
    async def story_endpoint(story_id: str = UrlPath(max_length=MAX_ID_CHARS)) -> dict[str, Any]:
        found = await run_in_threadpool(service.story, story_id)
        if found is None:
            raise ApiError(404, "not_found", f"no story with id {story_id!r}", "story_id")
        return found

    @v1.get("/similar", response_model=SimilarResponse, summary="Stored headlines most similar to a text")
    async def similar_endpoint(
        text: str = Query(min_length=1, description="The text to look up."),
        k: int = Query(10, ge=1, le=limits.max_k, description="How many hits."),
        explain: bool = Query(False, description="Also say whether the text would join each hit's event."),
    ) -> dict[str, Any]:
        check_texts([("text", text)], limits)
        return {"hits": await run_in_threadpool(service.similar, text, k, explain)}

    app.include_router(v1)

    @app.get(
        "/healthz",
        response_model=Health,
        summary="Liveness (no API key needed)",
        responses={503: {"model": ErrorBody, "description": "The index files were replaced: restart the service"}},
    )
    async def healthz() -> Any:
        # A -shm or database file removed under the service makes it refuse writes until restarted: a
        # supervisor that polls this restarts it.
        replaced = replaced_files(service.path / DB_FILE)
        if replaced:
            return error(503, "unavailable", f"{' and '.join(replaced)} of the index was replaced: restart the service")
        return Health(status="ok", model=getattr(service.embedder, "name", "?"), version=__version__)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics (no API key needed)")
    async def metrics_endpoint() -> PlainTextResponse:
        gauges = await run_in_threadpool(service.gauges)
        return PlainTextResponse(metrics.render(gauges), media_type=metrics_text.CONTENT_TYPE)

    # Outermost first: metrics see every answer, then the key check, then the body limit.
    app.add_middleware(Guarded, api_key=api_key, max_body_bytes=limits.max_body_bytes, body_seconds=limits.body_seconds)
    # v1's own routes first: the app holds them behind one wrapper route without a template (see Measured).
    app.add_middleware(Measured, metrics=metrics, routes=lambda: [*v1.routes, *app.router.routes])
    return app
