"""A deadline for request headers, in uvicorn's HTTP/1.1 protocol (h11).

The body deadline of :mod:`.guard` starts once the headers are in, and uvicorn itself times out only
idle keep-alive connections: a client that opens a connection and sends its headers a byte at a time
would hold the connection for as long as it likes. Here every request's head (request line and headers)
must arrive within the deadline of the body, counted from the connection or the end of the previous
response; past it the server answers 408 and closes the connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .errors import error_body

__all__ = ["header_deadline_protocol"]


class _HeaderDeadline(H11Protocol):
    header_seconds: float = 15.0  # set by header_deadline_protocol

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that sends nothing at all is held no longer than a slow one

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # the next request's head is on its way
            self._arm()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in: the body deadline takes over
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


def header_deadline_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline of ``seconds`` for each request's head (``Config(http=...)``)."""
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    return type("HeaderDeadlineProtocol", (_HeaderDeadline,), {"header_seconds": float(seconds)})
