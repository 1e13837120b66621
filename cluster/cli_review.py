"""``headline-cluster review``: N random multi-headline groups of a file or of an index window, to read."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import click

from .cli_common import (
    embedder_from,
    input_format_option,
    invalid_row_hint,
    model_option,
    output_format_option,
    parse_moment,
    report_read,
    reports_errors,
    shown,
    skip_invalid_option,
    text_field_option,
)
from .cli_index import _open
from .errors import InputError
from .nightly import DEFAULT_LAST
from .records import read_records
from .review import DEFAULT_GROUPS, Review, review_collapse, review_index, review_lines
from .settings import DEFAULT_LEVEL, LEVELS
from .store import parse_duration
from .stories import collapse
from .wording import plural


@click.command(name="review", short_help="Print N random multi-headline groups to judge by eye.")
@click.argument("file", required=False, metavar="[FILE|-]")
@click.option(
    "--index",
    "-i",
    "index_path",
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Review the stored events of an index window instead of a file.",
)
@click.option("--n", "n", type=click.IntRange(min=1), default=DEFAULT_GROUPS, show_default=True, help="Groups to draw.")
@click.option("--seed", type=int, default=0, show_default=True, help="The same seed draws the same groups.")
@click.option("--since", metavar="TIME", help="With --index: start of the window (ISO 8601, UTC unless it says).")
@click.option("--until", metavar="TIME", help="With --index: end of the window, excluded (default: now).")
@click.option("--last", metavar="DURATION", help="With --index: the window is this long, ending at --until (48h).")
@click.option("--level", type=click.Choice(LEVELS), default=DEFAULT_LEVEL, show_default=True, help="Grouping level.")
@click.option("--threshold", "-t", type=click.FloatRange(-1.0, 1.0), help="Similarity needed to group.")
@input_format_option
@text_field_option
@model_option
@output_format_option
@skip_invalid_option
@reports_errors
def review_command(
    file: str | None,
    index_path: Path | None,
    n: int,
    seed: int,
    since: str | None,
    until: str | None,
    last: str | None,
    level: str,
    threshold: float | None,
    input_format: str | None,
    text_field: str | None,
    model: str | None,
    output_format: str,
    skip_invalid: bool,
) -> None:
    """Print N random groups of two or more headlines, to judge quickly whether each is right.

    Of FILE grouped as `collapse --level` groups it, or with --index the events of the stories that have
    a headline in the window. Each member shows its score to the representative (marked *); the least similar member of
    each group (the lowest mean score to the rest) is marked <. The same input and --seed draw the same
    groups.
    """
    if (file is None) == (index_path is None):
        raise click.UsageError("give a FILE or --index DIR (one of them)")
    if index_path is None and (since or until or last):
        raise click.UsageError("--since, --until and --last choose an index window: use them with --index")
    if index_path is not None:
        start, end = _window(since, until, last)
        with _open(index_path, quiet=True) as index:
            review = review_index(index, start, end, n, seed)
    else:
        headlines = _headlines(file, input_format, text_field, skip_invalid)
        result = collapse(headlines, threshold=threshold, level=level, embedder=embedder_from(model, quiet=True))
        review = review_collapse(result, n, seed)
    _print(review, output_format)


def _headlines(file: str, input_format: str | None, text_field: str | None, skip_invalid: bool) -> list[dict]:
    """The file's headlines with their times and ids, as `collapse` reads them (so it groups the same)."""
    try:
        read = read_records(file, input_format=input_format, text_field=text_field, skip_invalid=skip_invalid)
    except InputError as exc:
        raise invalid_row_hint(exc, "nothing was reviewed") from None
    report_read(read)
    return [{"text": r.text, "published_at": r.published_at, "id": r.id} for r in read.records]


def _window(since: str | None, until: str | None, last: str | None) -> tuple[datetime, datetime]:
    if since is not None and last is not None:
        raise click.UsageError("give --since or --last, not both")
    end = parse_moment(until, "--until") or datetime.now(tz=timezone.utc)
    try:
        start = parse_moment(since, "--since") or end - (parse_duration(last) if last else DEFAULT_LAST)
    except OverflowError:  # a window that starts before the year 1 cannot be a date
        raise InputError(f"the duration {last!r} is too long: the window would start before the year 1") from None
    return start, end


def _print(review: Review, output_format: str) -> None:
    if output_format == "json":
        click.echo(json.dumps(review.to_dict(), ensure_ascii=False, indent=2))
        return
    for line in review_lines(review):
        click.echo(shown(line))
    click.echo(
        f"{plural(len(review.groups), 'group')} of {plural(review.groups_total, 'multi-headline group')} "
        f"(seed {review.seed}, {review.level} level, threshold {review.threshold:.3f}, {review.model}); "
        "* representative, < least similar",
        err=True,
    )
