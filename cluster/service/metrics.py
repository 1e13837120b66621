"""``/metrics``: request counts, a latency histogram and scrape-time gauges in the Prometheus text format.

Written here rather than with prometheus_client: the service needs one counter, one histogram and a few
gauges computed at scrape time, and prometheus_client's process-wide default registry would be shared by
every app a test process creates. The format is small and stable (text format 0.0.4).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE", "Measured", "Metrics", "gauges"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "headline_cluster"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)

Gauges = Mapping[str, tuple[str, str, float]]  # name -> (type, help, value)


class CacheCounts(Protocol):
    """What the gauges read of an embedding cache (cluster.embed.EmbeddingCache has both)."""

    hits: int
    misses: int


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    """Request counts and a latency histogram, rendered with the gauges of the moment."""

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

    def render(self, gauges: Gauges) -> str:
        """The exposition text; ``gauges``: name -> (type, help, value)."""
        lines = [
            f"# HELP {PREFIX}_requests_total HTTP requests answered, by method, route template and status.",
            f"# TYPE {PREFIX}_requests_total counter",
        ]
        with self._lock:
            requests = sorted(self._requests.items())
            latency = sorted((key, list(series)) for key, series in self._latency.items())
        for (method, route, status), count in requests:
            labels = f'method="{_label(method)}",route="{_label(route)}",status="{status}"'
            lines.append(f"{PREFIX}_requests_total{{{labels}}} {count}")
        name = f"{PREFIX}_request_duration_seconds"
        lines += [f"# HELP {name} Time from request to the end of the response.", f"# TYPE {name} histogram"]
        for (method, route), series in latency:
            labels = f'method="{_label(method)}",route="{_label(route)}"'
            for bound, count in zip(_BUCKETS, series, strict=False):
                lines.append(f'{name}_bucket{{{labels},le="{_number(bound)}"}} {_number(count)}')
            lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {_number(series[-1])}')
            lines.append(f"{name}_sum{{{labels}}} {_number(series[-2])}")
            lines.append(f"{name}_count{{{labels}}} {_number(series[-1])}")
        for gauge, (kind, text, value) in gauges.items():
            lines += [f"# HELP {PREFIX}_{gauge} {text}", f"# TYPE {PREFIX}_{gauge} {kind}"]
            lines.append(f"{PREFIX}_{gauge} {_number(value)}")
        return "\n".join(lines) + "\n"


def gauges(index_headlines: int, cache: CacheCounts | None) -> dict[str, tuple[str, str, float]]:
    """The values read at scrape time: the index size and, when the embedder has a cache, its counters."""
    out = {"index_headlines": ("gauge", "Headlines in the index.", float(index_headlines))}
    if cache is not None:
        hits, misses = cache.hits, cache.misses
        total = hits + misses
        out["embedding_cache_hits_total"] = ("counter", "Embedding cache lookups that found a vector.", hits)
        out["embedding_cache_misses_total"] = ("counter", "Embedding cache lookups that missed.", misses)
        out["embedding_cache_hit_ratio"] = (
            "gauge",
            "Hits over lookups since start (prefer rate() of the two counters).",
            hits / total if total else 0.0,
        )
    return out


class Measured:
    """Outermost ASGI layer: counts every answer (401s and 413s included) under its route template.

    ``routes`` returns the routes to match a request against when it was answered before routing. They
    must be the routes themselves, not an included router: FastAPI (0.165) wraps an included router in one
    route object without a path template, under which every /v1 answer would count as "unmatched".
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Callable[[], Sequence[BaseRoute]]):
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None
        gone = False

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        async def receiving() -> Message:
            nonlocal gone
            message = await receive()
            gone = gone or message["type"] == "http.disconnect"
            return message

        try:
            await self.app(scope, receiving, sending)
        finally:
            # No answer at all: the client left first (499, as nginx counts it), or the app failed (500).
            answered = status if status is not None else (499 if gone else 500)
            self.metrics.observe(scope["method"], self._route(scope), answered, time.perf_counter() - started)

    def _route(self, scope: Scope) -> str:
        # The template, not the raw path: ids in paths would make one time series per headline.
        route: Any = scope.get("route")
        if route is None:  # answered before routing (401, 413): find the route it was meant for
            route = next(
                (r for r in self.routes() if getattr(r, "path", None) and r.matches(scope)[0] == Match.FULL), None
            )
        return getattr(route, "path", None) or "unmatched"
