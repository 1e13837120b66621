"""The HTTP protocol the service runs on: uvicorn's HTTP/1.1 protocol (h11), with two changes.

**Invalid requests answer in JSON.** A request that is not valid HTTP (most often a URL with raw non-ASCII
text, such as ``curl "…/v1/similar?text=زلزال"``: URLs must percent-encode it) is refused by the HTTP parser
before the app sees it, so uvicorn answers ``Invalid HTTP request received.`` in plain text and nothing
counts it. Here the answer is the service's error JSON, and ``/metrics`` counts it under the route
``(invalid request)``.

**Request headers have a deadline.** The body deadline of :mod:`.guard` starts once the headers are in, and
uvicorn itself times out only idle keep-alive connections: a client that opens a connection and sends its
headers a byte at a time would hold the connection for as long as it likes. Here every request's head
(request line and headers) must arrive within the deadline of the body, counted from the connection or the
end of the previous response; past it the server answers 408 and closes the connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .errors import error_body
from .metrics import Metrics

__all__ = ["INVALID_REQUEST_ROUTE", "INVALID_REQUEST_MESSAGE", "service_protocol"]

INVALID_REQUEST_ROUTE = "(invalid request)"
INVALID_REQUEST_MESSAGE = (
    "the request is not valid HTTP; a URL must percent-encode non-ASCII text, for example "
    "curl -G http://HOST/v1/similar --data-urlencode 'text=...' --data-urlencode 'k=5'"
)


class _ServiceH11Protocol(H11Protocol):
    header_seconds: float = 15.0  # set by service_protocol
    metrics: Metrics | None = None  # set by service_protocol; where the invalid requests are counted

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    # --- the JSON 400 ---------------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        body = json.dumps(error_body("bad_request", INVALID_REQUEST_MESSAGE), ensure_ascii=False).encode("utf-8")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()
        # No method or route could be read: one series for all of them, so a client that sends such
        # requests shows up in the request counts.
        if self.metrics is not None:
            self.metrics.observe("", INVALID_REQUEST_ROUTE, 400, 0.0)

    # --- the header deadline --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that sends nothing at all is held no longer than a slow one

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # the next request's head is on its way
            self._arm()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in (or refused): the body deadline takes over
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        message = f"the request headers did not arrive within {self.header_seconds:g} s: send them whole"
        payload = json.dumps(error_body("timeout", message, "headers")).encode("utf-8")
        # Written directly: h11 has no request to answer yet, so it would refuse to send a response.
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            + f"content-length: {len(payload)}\r\n\r\n".encode("ascii")
            + payload
        )
        self.transport.close()


def service_protocol(header_seconds: float, metrics: Metrics | None = None) -> type[H11Protocol]:
    """uvicorn's h11 protocol for the service (pass it as ``uvicorn.Config(http=...)``): a deadline of
    ``header_seconds`` for each request's head (408), and the error JSON for a request the HTTP parser
    refuses (400), counted in ``metrics``."""
    if header_seconds <= 0:
        raise ValueError("header_seconds must be positive")
    attributes = {"header_seconds": float(header_seconds), "metrics": metrics}
    return type("ServiceH11Protocol", (_ServiceH11Protocol,), attributes)
