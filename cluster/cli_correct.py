"""``headline-cluster correct``: an editor's keep-apart and keep-together, stored in an index.

The logic (checks, contradictions) is the library's (:mod:`cluster.store.corrections`); this module
only parses options and prints.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from .cli_common import FullHelpGroup, index_option, output_format_option, reports_errors
from .cli_index import _open
from .errors import InputError
from .store.corrections import CORRECTION_LEVELS, KINDS, Correction


@click.group(name="correct", cls=FullHelpGroup, short_help="Keep headlines apart or together, for good.")
def correct_group() -> None:
    """Editorial corrections stored in an index: nightly runs (and index build) honour them."""


def _line(c: Correction) -> str:
    reason = f" ({c.reason})" if c.reason else ""
    return f"#{c.id}\t{c.kind}\t{c.level}\t{c.a}\t{c.b}\t{c.author}\t{c.created_at}{reason}"


@correct_group.command(name="add", short_help="Store a correction: KIND is apart or together.")
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("first", metavar="ID")
@click.argument("second", metavar="ID")
@index_option
@click.option(
    "--level",
    type=click.Choice(CORRECTION_LEVELS),
    default="event",
    show_default=True,
    help="The groups it binds: events, or the stories they nest in.",
)
@click.option("--author", required=True, help="Who made it (free text: a name, a desk).")
@click.option("--reason", help="Why, for whoever reads the list later.")
@output_format_option
@reports_errors
def add_command(
    kind: str,
    first: str,
    second: str,
    index_path: Path,
    level: str,
    author: str,
    reason: str | None,
    output_format: str,
) -> None:
    """Keep the headlines with ids ID and ID apart, or together, at --level. Refused (exit 2) when an id
    is not in the index or when it contradicts a stored correction (the message names it)."""
    with _open(index_path) as index:
        made = index.add_correction(kind, first, second, level=level, author=author, reason=reason)
    if output_format == "json":
        click.echo(json.dumps(made.as_dict(), ensure_ascii=False))
    else:
        click.echo(f"stored {made.describe()}; the next nightly run applies it")


@correct_group.command(name="list", short_help="The stored corrections, oldest first.")
@index_option
@click.option("--level", type=click.Choice(CORRECTION_LEVELS), help="Only this level's corrections.")
@output_format_option
@reports_errors
def list_command(index_path: Path, level: str | None, output_format: str) -> None:
    """The stored corrections: number, kind, level, the two ids, author, time and reason."""
    with _open(index_path) as index:
        found = index.corrections(level)
    if output_format == "json":
        click.echo(json.dumps({"corrections": [c.as_dict() for c in found]}, ensure_ascii=False, indent=2))
        return
    if not found:
        click.echo("no corrections", err=True)
    for c in found:
        click.echo(_line(c))


@correct_group.command(name="remove", short_help="Remove a correction by its number.")
@click.argument("number", metavar="ID")
@index_option
@reports_errors
def remove_command(number: str, index_path: Path) -> None:
    """Remove correction ID (the number ``correct list`` shows, with or without its #); groups it held
    stay as they are until a nightly run regroups them."""
    try:
        correction_id = int(number.removeprefix("#"))
    except ValueError:
        raise InputError(f"not a correction number: {number!r}", hint="see: headline-cluster correct list") from None
    with _open(index_path) as index:
        if not index.remove_correction(correction_id):
            raise InputError(f"no correction #{correction_id} in the index", hint="see: headline-cluster correct list")
    click.echo(f"removed correction #{correction_id}")


@correct_group.command(name="import", short_help="Add the corrections of a file (index export --corrections).")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@index_option
@reports_errors
def import_command(file: Path, index_path: Path) -> None:
    """Add the corrections of FILE (JSON lines, as ``index export --corrections`` writes them) to an index
    that holds their headlines, keeping who made them and when. All or nothing: one refused line (an
    unknown id, a contradiction) stops the import and adds none."""
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the corrections file: {exc}", path=str(file)) from None
    added = 0
    with _open(index_path) as index, index.lock(), index.transaction():
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                index.add_correction(
                    item["kind"],
                    item["a"],
                    item["b"],
                    level=item.get("level", "event"),
                    author=item["author"],
                    reason=item.get("reason"),
                    created_at=item.get("created_at"),
                )
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise InputError(
                    f"not a correction ({type(exc).__name__}: {exc})", path=str(file), line=number
                ) from None
            except InputError as exc:
                raise InputError(exc.reason, path=str(file), line=number, hint=exc.hint) from None
            added += 1
    click.echo(f"imported {added} correction(s)", err=True)
