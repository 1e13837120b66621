"""The HTTP protocol the service runs on: uvicorn's h11 protocol, with its one plain-text answer made JSON.

A request that is not valid HTTP (most often a URL with raw non-ASCII text, such as ``curl
"…/v1/similar?text=زلزال"``: URLs must percent-encode it) is refused by the HTTP parser before the app
sees it, so uvicorn answers ``Invalid HTTP request received.`` in plain text and nothing counts it. Here
the answer is the service's error JSON, and ``/metrics`` counts it under the route ``(invalid request)``.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import error_body
from .metrics import Metrics

__all__ = ["INVALID_REQUEST_ROUTE", "INVALID_REQUEST_MESSAGE", "json_error_protocol"]

INVALID_REQUEST_ROUTE = "(invalid request)"
INVALID_REQUEST_MESSAGE = (
    "the request is not valid HTTP; a URL must percent-encode non-ASCII text, for example "
    "curl -G http://HOST/v1/similar --data-urlencode 'text=...' --data-urlencode 'k=5'"
)


def json_error_protocol(metrics: Metrics) -> Any:
    """uvicorn's h11 protocol class whose 400 for an unparsable request is the error JSON, counted in
    ``metrics`` (pass it as ``uvicorn.Config(http=...)``)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class JsonErrorH11Protocol(H11Protocol):
        def send_400_response(self, msg: str) -> None:
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
            metrics.observe("", INVALID_REQUEST_ROUTE, 400, 0.0)

    return JsonErrorH11Protocol
