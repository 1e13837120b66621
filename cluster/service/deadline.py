"""A deadline for request bodies: a client that opens a request and never finishes its body is answered.

Without it a connection whose body never arrives holds a worker's attention for as long as the client
likes (uvicorn only times out idle keep-alive connections). The middleware reads the whole body first,
within ``seconds`` of the request's start, and then hands it to the app; a body that is not complete by
then gets ``408 {"error": "timeout", ...}`` and the connection is closed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_BODY_SECONDS = 15.0


class BodyDeadline:
    """ASGI middleware: the body of every HTTP request must arrive within ``seconds``."""

    def __init__(self, app: ASGIApp, seconds: float = DEFAULT_BODY_SECONDS):
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.seconds
        chunks: list[bytes] = []
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                await _timed_out(send, self.seconds)
                return
            if message["type"] == "http.disconnect":
                return  # the client left before its body was complete: nobody to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: disconnect notices, as the app expects

        await self.app(scope, replay, send)


async def _timed_out(send: Send, seconds: float) -> None:
    payload = json.dumps(
        {
            "error": "timeout",
            "message": f"the request body did not arrive within {seconds:g} s: send it whole, then wait",
            "field": "body",
        }
    ).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": 408,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
