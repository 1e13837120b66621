"""Pieces shared by the command modules: error reporting and the options several commands take."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path

import click

from .errors import HeadlineClusterError
from .records import INPUT_FORMATS


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
