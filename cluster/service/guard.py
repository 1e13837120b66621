"""The ASGI layer in front of the routes: the API key for /v1 (checked before any body is read), then the
body size limit, counted as the body arrives so a chunked body cannot slip past it."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_body

__all__ = ["Guarded"]


async def send_json(send: Send, status: int, body: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
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


class Guarded:
    """API key check for /v1 (before any body is read), then the body size limit."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int, body_seconds: float = 15.0):
        self.app = app
        self.key = api_key.encode("utf-8") if api_key else None
        self.limit = max_body_bytes
        # A client that starts a request and never finishes its body would otherwise hold its connection
        # for as long as it likes (uvicorn times out idle keep-alive connections only).
        self.body_seconds = body_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])  # ASGI lower-cases header names
        if self.key is not None and scope["path"].startswith("/v1") and not self._authorized(headers):
            await send_json(
                send,
                401,
                error_body(
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
                await send_json(send, 400, error_body("bad_request", "Content-Length is not a number"))
                return
            if length > self.limit:
                await self._too_large(send)
                return
        # Read the whole body here (bounded by the limit) so a chunked body cannot slip past it.
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.body_seconds
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                await self._timed_out(send)
                return
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

        async def replay() -> Message:
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

    async def _timed_out(self, send: Send) -> None:
        message = f"the request body did not arrive within {self.body_seconds:g} s: send it whole, then wait"
        await send_json(send, 408, error_body("timeout", message, "body"), [(b"connection", b"close")])

    async def _too_large(self, send: Send) -> None:
        await send_json(
            send,
            413,
            error_body("too_large", f"the body is over the limit of {self.limit:,} bytes: send fewer headlines"),
        )
