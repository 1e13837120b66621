"""``headline-cluster serve``: run the HTTP service (cluster.service) with uvicorn."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import click

from .cli_common import index_option, injected_embedder, model_option, reports_errors
from .errors import InputError
from .limits import MAX_HEADLINE_CHARS
from .store import DB_FILE

_DEFAULTS = {"max_headlines": 1000, "max_text_chars": MAX_HEADLINE_CHARS, "max_body_bytes": 4 * 1024 * 1024}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, before the model loads: a taken port fails at once, with a message."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise InputError(
            f"cannot listen on {host}:{port}: {exc.strerror}", hint="choose another --port, or stop what uses it"
        ) from None
    return sock


@click.command(name="serve", short_help="Serve the index over HTTP (API docs at /docs).")
@index_option
@click.option("--create", is_flag=True, help="Create the index when the folder holds none (default: refuse).")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on; keep loopback behind a proxy."
)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0 picks a free port.")
@click.option(
    "--api-key-env",
    metavar="VAR",
    help="Name of the environment variable holding the API key; every /v1 call must then send it.",
)
@model_option
@click.option(
    "--max-headlines",
    type=click.IntRange(min=1),
    default=_DEFAULTS["max_headlines"],
    show_default=True,
    help="Headlines per request.",
)
@click.option(
    "--max-text-chars",
    type=click.IntRange(1, MAX_HEADLINE_CHARS),
    default=_DEFAULTS["max_text_chars"],
    show_default=True,
    help="Characters per headline (or similar text).",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1),
    default=_DEFAULTS["max_body_bytes"],
    show_default=True,
    help="Request body size; larger bodies get 413.",
)
@click.option(
    "--write-wait",
    type=click.FloatRange(min=0, min_open=True),
    default=20.0,
    show_default=True,
    metavar="SECONDS",
    help="How long a write waits for the index (another write, an index add) before it gets 503 'busy' with "
    "Retry-After; keep it below your clients' timeout.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=lambda: os.cpu_count() or 1,
    show_default="all cores",
    help="CPU threads the model may use (ONNX Runtime's for the default model, torch's for others). On a "
    "machine shared with other busy processes, 1 avoids thrashing; see docs/service.md for measurements.",
)
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="Log one line per request.")
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
@reports_errors
def serve_command(
    index_path: Path,
    create: bool,
    host: str,
    port: int,
    api_key_env: str | None,
    model: str | None,
    max_headlines: int,
    max_text_chars: int,
    max_body_bytes: int,
    write_wait: float,
    threads: int,
    access_log: bool,
    log_level: str,
) -> None:
    """Serve the index over HTTP: /v1/collapse, /v1/headlines, /v1/stories, /v1/similar, /healthz, /metrics.

    The model loads once at start-up. OpenAPI docs at /docs. Stop with Ctrl-C (or SIGTERM).
    """
    # Imported here: the other commands should not pay for loading FastAPI and uvicorn.
    import uvicorn

    from .service import Limits, create_app
    from .service.protocol import service_protocol

    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env, "")
        if not api_key.strip():
            raise InputError(
                f"the environment variable {api_key_env} (named by --api-key-env) is not set or empty",
                hint=f"export {api_key_env}=... with the key clients must send",
            )
    if not _is_loopback(host) and api_key is None:
        click.echo(
            f"Warning: listening on {host} without an API key: anyone who reaches it can add headlines "
            "(pass --api-key-env VAR)",
            err=True,
        )
    if not create and not (index_path / DB_FILE).is_file():
        raise InputError(
            "no headline index here",
            path=str(index_path),
            hint="pass --create to start an empty one, or fill it first with: headline-cluster index add FILE --index "
            + str(index_path),
        )
    from .embed import set_threads

    set_threads(threads)
    sock = _listen(host, port)
    try:
        limits = Limits(
            max_headlines=max_headlines,
            max_text_chars=max_text_chars,
            max_body_bytes=max_body_bytes,
            write_seconds=write_wait,
        )
        # injected_embedder: a program (the fault tests) may serve with an embedder of its own.
        app = create_app(
            index_path, api_key=api_key, model=model, limits=limits, create=create, embedder=injected_embedder()
        )
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        click.echo(
            f"serving {index_path} on http://{shown}:{bound} (docs: /docs; API key {'required' if api_key else 'off'})",
            err=True,
        )
        # A bounded graceful shutdown: queued requests get 10 s to finish, then the server stops anyway
        # (every write is one SQLite transaction, so an interrupted one is rolled back, never half done).
        # The h11 protocol with a JSON 400 for requests it cannot parse (a URL with raw non-ASCII text),
        # and the body's deadline for the headers: uvicorn alone waits for them as long as a client trickles them.
        config = uvicorn.Config(
            app,
            http=service_protocol(limits.body_seconds, app.state.metrics),
            log_level=log_level,
            access_log=access_log,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
