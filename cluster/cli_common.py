"""Pieces shared by the command modules: error reporting and the options several commands take."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path

import click

from .embed import get_embedder, resolve_model_name
from .errors import HeadlineClusterError
from .pipeline import EmbedderLike
from .records import INPUT_FORMATS


def injected_embedder() -> EmbedderLike | None:
    """The embedder a caller passed with ``main(obj={"embedder": ...})`` (tests, programs), if any."""
    ctx = click.get_current_context(silent=True)
    return (ctx.find_root().obj or {}).get("embedder") if ctx is not None else None


def embedder_from(model: str | None) -> EmbedderLike:
    """The injected embedder, else the one for ``model`` (or the default)."""
    injected = injected_embedder()
    return injected if injected is not None else get_embedder(resolve_model_name(model))


def reports_errors(command: Callable) -> Callable:
    """Turn the library's user-facing errors into a one-line message and exit code 2."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except HeadlineClusterError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)

    return wrapper


model_option = click.option(
    "--model",
    "-m",
    metavar="NAME_OR_PATH",
    envvar="HEADLINE_CLUSTER_MODEL",
    show_envvar=True,
    help="sentence-transformers model name or local folder. Default: multilingual-e5-small, offline.",
)
input_format_option = click.option(
    "--input-format",
    type=click.Choice(INPUT_FORMATS),
    help="Input format; by default taken from the file extension (stdin: txt).",
)
text_field_option = click.option(
    "--text-field", metavar="NAME", help="Column or key holding the headline (default: text, then title)."
)
index_option = click.option(
    "--index",
    "-i",
    "index_path",
    required=True,
    metavar="DIR",
    envvar="HEADLINE_CLUSTER_INDEX",
    show_envvar=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The index folder, such as indexes/news.",
)
output_format_option = click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Output format.",
)
