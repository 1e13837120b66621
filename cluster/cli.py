"""The ``headline-cluster`` command: a thin click layer over the library."""

from __future__ import annotations

import json

import click

from . import __version__, cli_build, cli_check  # noqa: F401 (they add `index build` and `index check`)
from .cli_common import (
    FullHelpGroup,
    ReportingEmbedder,
    embedder_from,
    given_fields,
    input_format_option,
    invalid_row_hint,
    model_option,
    output_format_option,
    progress_bar,
    report_read,
    reports_errors,
    shown,
    skip_invalid_option,
    stdin_is_terminal,
    text_field_option,
    time_field_option,
)
from .cli_correct import correct_group
from .cli_eval import calibrate_command, eval_group
from .cli_index import index_group, nightly_command
from .cli_review import review_command
from .cli_serve import serve_command
from .errors import InputError
from .group import LINKAGES
from .records import read_records
from .settings import DEFAULT_LEVEL, LEVELS
from .stories import REPRESENTATIVES, Member, NestedStory, collapse
from .wording import plural


@click.group(cls=FullHelpGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="headline-cluster")
def main() -> None:
    """Group near-duplicate news headlines into stories (Arabic first, any language)."""


@main.command(name="collapse", short_help="Collapse a list to its distinct stories, one headline each.")
@click.argument("file", default="-", metavar="[FILE|-]")
@input_format_option
@text_field_option
@click.option(
    "--id-field",
    default="id",
    show_default=True,
    metavar="NAME",
    help="Column or key of each headline's own id, returned with it (json: id; null where none).",
)
@time_field_option
@click.option(
    "--threshold",
    "-t",
    type=click.FloatRange(-1.0, 1.0),
    help="Similarity needed to group (default: the model's calibrated value for --level).",
)
@click.option(
    "--level",
    type=click.Choice(LEVELS),
    help="Group at one level only, flat: event: one news event (learned); story: an aggregator's coarser "
    "topic; duplicate: the same headline reworded. Default: events nested in stories.",
)
@click.option(
    "--linkage",
    type=click.Choice(LINKAGES),
    help="How groups are compared; average (the level's default) and complete prevent chaining.",
)
@click.option(
    "--representative",
    type=click.Choice(REPRESENTATIVES),
    default="central",
    show_default=True,
    help="Which member represents a story: most central, first in input, or earliest published_at.",
)
@model_option
@output_format_option
@click.option(
    "--explain",
    is_flag=True,
    help="Show for each member the member it is most similar to (json: linked_to, link_score).",
)
@skip_invalid_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary line on stderr.")
@reports_errors
def collapse_command(
    file: str,
    input_format: str | None,
    text_field: str | None,
    id_field: str,
    time_field: str,
    threshold: float | None,
    level: str | None,
    linkage: str | None,
    representative: str,
    model: str | None,
    output_format: str,
    explain: bool,
    skip_invalid: bool,
    quiet: bool,
) -> None:
    """Collapse a related-articles list to its distinct stories, one representative each.

    FILE is txt (one headline per line), csv/tsv with a header, or jsonl; '-' or no FILE reads standard
    input, whose format is detected from its content. An id column or key (``id``) comes back with each
    headline, in the json output and in the text output as [position id=ID].
    """
    headlines = _headlines(
        file, input_format, text_field, id_field, time_field, skip_invalid=skip_invalid, quiet=quiet
    )
    embedder = embedder_from(model, quiet=quiet)
    with progress_bar("embedding", quiet=quiet) as bar:
        if bar is not None:
            embedder = ReportingEmbedder(embedder, bar)
        result = collapse(
            headlines,
            threshold=threshold,
            level=level or DEFAULT_LEVEL,
            linkage=linkage,
            representative=representative,
            embedder=embedder,
            nested=level is None,
        )
    if output_format == "json":
        click.echo(json.dumps(result.to_dict(explain=explain), ensure_ascii=False, indent=2))
    else:
        for story in result.nested or [NestedStory(s.id, [s]) for s in result.stories]:
            # A story of one event reads as before; each further event is shown under its representative.
            for number, event in enumerate(story.events):
                rep = event.representative
                head, indent = ("", "") if number == 0 else ("  + event ", "    ")
                click.echo(shown(f"{head}{_label(rep)} {rep.text}"))
                for member in event.duplicates:
                    link = ""
                    if explain and member.linked_to is not None:
                        link = f"  (closest: [{member.linked_to}] {member.link_score:.3f})"
                    click.echo(shown(f"{indent}    {member.score:.3f}  {_label(member)} {member.text}{link}"))
    if not quiet:
        # The scale is named: a learned level's scores are probabilities, which read wrongly as cosines.
        events = "" if result.nested is None else f" in {plural(len(result.nested), 'story')}"
        grouped = plural(len(result.stories), "event" if result.nested is not None else "story")
        click.echo(
            f"{plural(len(result.texts), 'headline')} -> {grouped}{events} (duplicate ratio "
            f"{result.duplicate_ratio:.2f}; scores: {result.scale} to the representative, threshold "
            f"{result.threshold:.3f}; {result.model})",
            err=True,
        )


def _label(member: Member) -> str:
    """``[3]``, or ``[3 id=a17]`` when the input gave the headline an id: positions are what ``explain I J``
    takes, ids are what the reader knows the headline by."""
    return f"[{member.index}]" if member.id is None else f"[{member.index} id={member.id}]"


@main.command(name="explain", short_help="Say why headlines I and J are, or are not, one story.")
@click.argument("file", default="-", metavar="[FILE|-]")
@click.argument("i", type=int)
@click.argument("j", type=int)
@input_format_option
@text_field_option
@time_field_option
@click.option("--threshold", "-t", type=click.FloatRange(-1.0, 1.0), help="Similarity needed to group.")
@click.option("--level", type=click.Choice(LEVELS), default=DEFAULT_LEVEL, show_default=True, help="Grouping level.")
@model_option
@output_format_option
@skip_invalid_option
@reports_errors
def explain_command(
    file: str,
    i: int,
    j: int,
    input_format: str | None,
    text_field: str | None,
    time_field: str,
    threshold: float | None,
    level: str,
    model: str | None,
    output_format: str,
    skip_invalid: bool,
) -> None:
    """Say why headlines I and J of FILE (0-based) are, or are not, one story.

    I and J count the headlines read, as `collapse` numbers them (skipped rows do not count). Each signal
    (cosine, script, shared words, numbers, length, time gap) is shown with its signed contribution to the
    pair's score (to its logit for the learned judgement), then the score against the threshold and the
    reason.
    """
    # The same headlines, times included, as `collapse` groups: the explanation matches its grouping.
    headlines = _headlines(file, input_format, text_field, time_field=time_field, skip_invalid=skip_invalid)
    result = collapse(headlines, threshold=threshold, level=level, embedder=embedder_from(model))
    try:
        explanation = result.explain(i, j)
    except IndexError as exc:
        raise click.BadParameter(str(exc)) from exc
    if output_format == "json":
        click.echo(json.dumps(explanation.to_dict(), ensure_ascii=False, indent=2))
    else:
        for line in explanation.lines():
            click.echo(shown(line))


def _headlines(
    file: str,
    input_format: str | None,
    text_field: str | None,
    id_field: str = "id",
    time_field: str = "published_at",
    *,
    skip_invalid: bool = False,
    quiet: bool = False,
) -> list[dict]:
    if file == "-" and stdin_is_terminal():
        # Otherwise the command waits without a word for input the user may not know it wants.
        click.echo("reading headlines from standard input (type them, then Ctrl-D; or name a FILE)", err=True)
    try:
        read = read_records(
            file,
            input_format=input_format,
            text_field=text_field,
            id_field=id_field,
            time_field=time_field,
            skip_invalid=skip_invalid,
            required_fields=given_fields(),
        )
    except InputError as exc:
        raise invalid_row_hint(exc, "nothing was collapsed", skip_invalid=skip_invalid) from None
    report_read(read, quiet=quiet)
    # The id column too: `collapse --format json` must hand the caller's own ids back.
    return [{"text": r.text, "published_at": r.published_at, "id": r.id} for r in read.records]


for command in (
    eval_group,
    calibrate_command,
    index_group,
    nightly_command,
    serve_command,
    review_command,
    correct_group,
):
    main.add_command(command)

if __name__ == "__main__":  # pragma: no cover
    main()
