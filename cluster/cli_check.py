"""``headline-cluster index check``: look for damage in an index without changing it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .cli_common import index_option, output_format_option, reports_errors
from .cli_index import index_group
from .store import HeadlineIndex

EXIT_DAMAGED = 1
"""``index check`` found damage (``index repair`` fixes it); 0: nothing wrong; 2: could not check."""


@index_group.command(name="check", short_help="Look for damage in the index; repairs nothing.")
@index_option
@output_format_option
@reports_errors
def check_command(index_path: Path, output_format: str) -> None:
    """Check the index for damage: SQLite's integrity check, every stored vector, stories, the vector files.

    Exit code 0: nothing is wrong; 1: damage found (run `headline-cluster index repair`); 2: the index
    could not be checked (not an index, unreadable).
    """
    with HeadlineIndex.open(index_path, on_wait=lambda message: None) as index:
        report = index.check()
        count = index.count() if not report.database else None
    if output_format == "json":
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    elif report.ok:
        click.echo(f"ok: {index_path} ({count:,} headlines) has no damage that a check can find")
        for note in report.notes:
            click.echo(f"note: {note}")
    else:
        for line in report.problems:
            click.echo(f"damaged: {line}")
        click.echo(f"run: headline-cluster index repair --index {index_path}", err=True)
    if not report.ok:
        sys.exit(EXIT_DAMAGED)
