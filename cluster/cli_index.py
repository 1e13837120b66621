"""``headline-cluster index ...`` and ``headline-cluster nightly``: a thin layer over HeadlineIndex."""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import click

from .cli_common import (
    FullHelpGroup,
    index_option,
    injected_embedder,
    input_format_option,
    invalid_row_hint,
    model_option,
    output_format_option,
    progress_bar,
    report_read,
    reports_errors,
    text_field_option,
)
from .embed import get_embedder
from .errors import InputError
from .fsutil import atomic_write_text
from .nightly import DEFAULT_LAST, run_nightly
from .settings import LEVELS
from .store import COMMIT_EVERY, DB_FILE, Headline, HeadlineIndex, QueryHit, StoryInfo, parse_duration, read_input
from .wording import plural, rate

_UTC = timezone.utc
EXIT_EMPTY_WINDOW = 3
"""``nightly --fail-if-empty``: the window held no headlines (a dead feed); 2 stays "an error"."""


def record_field_options(command: Callable) -> Callable:
    """The columns or keys an indexed record is read from (index add, index build)."""
    for option in reversed(
        [
            click.option(
                "--id-field", default="id", show_default=True, metavar="NAME", help="Column or key of the id."
            ),
            text_field_option,
            click.option(
                "--time-field",
                default="published_at",
                show_default=True,
                metavar="NAME",
                help="Column or key of the time.",
            ),
            click.option("--source-field", default="source", show_default=True, metavar="NAME", help="Column or key."),
            click.option("--url-field", default="url", show_default=True, metavar="NAME", help="Column or key."),
        ]
    ):
        command = option(command)
    return command


# The settings a new index is created with (index add, index build).
threshold_option = click.option(
    "--threshold",
    "-t",
    type=click.FloatRange(-1.0, 1.0),
    help="Similarity needed to join a story; fixed when the index is created (default: the model's value).",
)
level_option = click.option(
    "--level", type=click.Choice(LEVELS), help="Grouping level; fixed when the index is created."
)
quiet_option = click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="No progress bar, summary or notices (for cron); errors, repairs and skipped rows still print.",
)


def _open(index_path: Path, *, quiet: bool = False, **settings) -> HeadlineIndex:
    on_wait = (lambda message: None) if quiet else None
    injected = injected_embedder()
    if injected is not None:  # a caller's embedder (tests, programs that run the CLI in-process)
        settings["embedder_factory"] = lambda model, **_: injected
    elif quiet:  # --quiet silences the first run's step lines too
        settings["embedder_factory"] = lambda model, quantize=None: get_embedder(model, quantize, quiet=True)
    return HeadlineIndex.open(index_path, on_wait=on_wait, **settings)


@click.group(name="index", cls=FullHelpGroup, short_help="A persistent index: a stable story id per headline.")
def index_group() -> None:
    """A persistent headline index: every headline gets a story id that stays stable."""


@index_group.command(name="add", short_help="Add headlines from files; each gets a story id at once.")
@click.argument("files", nargs=-1, metavar="[FILE|-]...")
@index_option
@input_format_option
@record_field_options
@click.option("--update", is_flag=True, help="Replace headlines whose id is present (default: keep them).")
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Skip and count invalid rows. Without it, one invalid row stops the run and nothing is added.",
)
@click.option(
    "--window",
    metavar="DURATION",
    help="Stories a headline may join: those with a headline this close in time (default: the index's, 72h).",
)
@model_option
@threshold_option
@level_option
@click.option(
    "--commit-every",
    type=click.IntRange(min=1),
    default=COMMIT_EVERY,
    show_default=True,
    help="Commit after this many headlines; a killed run keeps what it committed.",
)
@click.option(
    "--create/--no-create",
    default=True,
    show_default=True,
    help="Create the index when the folder holds none (and say so on stderr); --no-create makes a missing "
    "index an error, so a mistyped --index cannot start a new one.",
)
@quiet_option
@reports_errors
def add_command(
    files: tuple[str, ...],
    index_path: Path,
    input_format: str | None,
    id_field: str,
    text_field: str | None,
    time_field: str,
    source_field: str,
    url_field: str,
    update: bool,
    skip_invalid: bool,
    window: str | None,
    model: str | None,
    threshold: float | None,
    level: str | None,
    commit_every: int,
    create: bool,
    quiet: bool,
) -> None:
    """Add headlines from FILEs (txt, csv, tsv or jsonl; '-' or nothing: standard input).

    Ids already in the index are skipped; headlines without an id get one derived from their text.
    Each new headline joins a story at once, or starts one. Run it again after an interruption: it adds
    what is missing.
    """
    started = time.monotonic()
    existed = (index_path / DB_FILE).is_file()
    if not existed and not create:
        raise InputError(
            "no headline index here",
            path=str(index_path),
            hint="check the --index path, or leave out --no-create to start a new index there",
        )
    if not files:
        if sys.stdin.isatty():
            raise InputError("no input", hint="name one or more files, or pipe headlines into standard input")
        files = ("-",)
    window_length = parse_duration(window) if window else None
    try:
        read = read_input(
            files,
            input_format=input_format,
            text_field=text_field,
            id_field=id_field,
            time_field=time_field,
            source_field=source_field,
            url_field=url_field,
            skip_invalid=skip_invalid,
        )
    except InputError as exc:
        raise invalid_row_hint(exc, "nothing was added") from None
    report_read(read, quiet=quiet)
    settings = {"model": model, "threshold": threshold, "level": level, "window": window_length}
    with _open(index_path, quiet=quiet, create=True, **settings) as index:
        if not existed:
            # Even with --quiet: a mistyped --index would otherwise start a new index without a word.
            click.echo(f"created a new index at {index_path} (model {index.model})", err=True)
        with progress_bar("indexing", quiet=quiet) as progress:
            result = index.add(
                read.records, update=update, window=window_length, commit_every=commit_every, progress=progress
            )
    if not quiet:
        elapsed = time.monotonic() - started
        speed = rate(result.processed, elapsed, "headlines")
        updated = f", updated {result.updated:,}" if update else ""
        click.echo(
            f"added {result.added:,}, already present {result.present:,}{updated}, invalid {len(read.invalid):,} "
            f"in {elapsed:.1f} s{f' ({speed})' if speed else ''}; {index_path} holds "
            f"{plural(result.headlines, 'headline')} in {plural(result.stories, 'story')}",
            err=True,
        )


@index_group.command(name="stats", short_help="Counts, settings and the state of the vector files.")
@index_option
@output_format_option
@reports_errors
def stats_command(index_path: Path, output_format: str) -> None:
    """Counts, settings, and whether the vector files (segments/) are in step with the database."""
    with _open(index_path) as index:
        info = index.stats()
    if output_format == "json":
        click.echo(json.dumps(info, ensure_ascii=False, indent=2))
        return
    faiss_info = info["faiss"]
    if faiss_info["in_step"]:
        state = "in step with the database"
    else:
        state = "NOT in step with the database: run headline-cluster index repair"
    vectors = faiss_info.get("vectors", 0)
    kind = faiss_info.get("kind", "none")
    size = faiss_info.get("bytes", 0) / 1e6
    files = len(faiss_info.get("segments", [])) or int(faiss_info.get("exists", False))
    span = f" from {info['earliest']} to {info['latest']}" if info["earliest"] else ""
    lines = [
        ("index", info["path"]),
        ("model", f"{info['model']} (dimension {info['dimension']})"),
        (
            "grouping",
            f"level {info['level']}, threshold {info['threshold']:.3f}, {info['linkage']} linkage, "
            f"online window {info['window_hours']:g}h",
        ),
        ("headlines", f"{info['headlines']:,}{span} ({plural(info['embeddings'], 'distinct text')} embedded)"),
        (
            "stories",
            f"{info['stories']:,} ({plural(info['merges'], 'merge')} and {plural(info['splits'], 'split')} recorded)",
        ),
        ("events", f"{info['events']:,} (nested in the stories)"),
        ("vectors", f"{plural(files, 'file')} ({kind}), {plural(vectors, 'vector')}, {size:.1f} MB: {state}"),
    ]
    nightly = info.get("last_nightly")
    if nightly:
        lines.append(
            (
                "last nightly",
                f"{nightly['since']} .. {nightly['until']}: {nightly['state']}"
                + (f", {plural(nightly['stories'], 'story')}" if "stories" in nightly else ""),
            )
        )
    check = info.get("check", {})
    lines.append(
        ("damage", "none found" if check.get("ok", True) else "; ".join(check["problems"]) + ": run index repair")
    )
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        click.echo(f"{name:<{width}}  {value}")


@index_group.command(name="query", short_help="The stored headlines most similar to TEXT, judged.")
@click.argument("text")
@index_option
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="How many hits.")
@click.option(
    "--explain", is_flag=True, help="For each hit, whether the query would join its event (so its story), and why."
)
@output_format_option
@model_option
@reports_errors
def query_command(index_path: Path, text: str, k: int, explain: bool, output_format: str, model: str | None) -> None:
    """The headlines most similar to TEXT, best first, with their story ids.

    Each hit shows its cosine (the search's ranking, high even for unrelated headlines of one language)
    next to the index's judgement: whether the text would be judged the same story as the hit's.
    """
    with _open(index_path, model=model) as index:
        # The text output always carries the judgement: a bare cosine of 0.86 reads as "similar".
        hits = index.query(text, k, explain=explain or output_format == "text")
        judgement = index.judgement
    if output_format == "json":
        click.echo(json.dumps([hit.to_dict() for hit in hits], ensure_ascii=False, indent=2))
        return
    if not hits:
        click.echo("no headlines in the index", err=True)
    for rank, hit in enumerate(hits, start=1):
        headline = hit.headline
        where = " · ".join(x for x in (headline.id, headline.published_at, headline.source) if x)
        click.echo(f"{rank:>3}. {headline.story_id}  {headline.text}  [{where}]")
        click.echo(f"     {judged(hit, judgement)}")
        if explain and hit.story_similarity is not None:
            verdict = "would join it" if hit.would_join else "would not join it"
            relation = ">=" if hit.would_join else "<"
            click.echo(
                f"     story {headline.story_id}: {plural(hit.story_size or 0, 'headline')}; the query's mean "
                f"similarity to them is {hit.story_similarity:.3f} {relation} threshold "
                f"{judgement.threshold:.3f}, so it {verdict}"
            )


def judged(hit: QueryHit, judgement: object) -> str:
    """``cosine 0.861 · its story: judged different (0.843, below 0.900)``: the search's cosine next to the
    judgement's verdict on the hit's story, and its probability of the same story where one is known.

    The probability is read from the hit (``probability``) or the judgement (``probability(score)``),
    whichever provides it, so it shows as soon as the judgement is calibrated.
    """
    parts = [f"cosine {hit.score:.3f}"]
    score, threshold = hit.story_similarity, getattr(judgement, "threshold", hit.threshold)
    if score is not None and threshold is not None:
        if score >= threshold:
            parts.append(f"its story: judged the same ({score:.3f}, at or above {threshold:.3f})")
        else:
            parts.append(f"its story: judged different ({score:.3f}, below {threshold:.3f})")
        probability = getattr(hit, "probability", None)
        to_probability = getattr(judgement, "probability", None)
        if probability is None and callable(to_probability):
            probability = to_probability(score)
        if probability is not None:
            parts.append(f"probability of the same story {float(probability):.0%}")
    return " · ".join(parts)


@index_group.command(name="story", short_help="One story with its members.")
@click.argument("story_id")
@index_option
@output_format_option
@reports_errors
def story_command(index_path: Path, story_id: str, output_format: str) -> None:
    """One story with its members (an id merged away shows the story it went into)."""
    with _open(index_path) as index:
        story = index.story(story_id)
    if story is None:
        raise InputError(f"no story {story_id!r} in this index", path=str(index_path))
    if output_format == "json":
        click.echo(json.dumps(story.to_dict(), ensure_ascii=False, indent=2))
        return
    _print_story(story, story_id)


def _print_story(story: StoryInfo, asked: str) -> None:
    if story.id != asked:
        click.echo(f"{asked} was merged into {story.id}")
    events = story.events
    click.echo(
        f"{story.id}: {plural(story.size, 'headline')} in {plural(len(events), 'event')}, "
        f"{story.first_seen} .. {story.last_seen}"
    )
    for event, members in events.items():
        click.echo(f"  event {event}: {plural(len(members), 'headline')}")
        for member in members:
            mark = "*" if member.headline.row == story.representative.row else " "
            click.echo(f"   {mark} {member.score:.3f}  {member.headline.text}  [{member.headline.id}]")


@index_group.command(name="remove")
@index_option
@click.option("--id", "ids", multiple=True, required=True, metavar="ID", help="A headline id; repeat for more.")
@quiet_option
@reports_errors
def remove_command(index_path: Path, ids: tuple[str, ...], quiet: bool) -> None:
    """Remove headlines by id; their stories shrink."""
    with _open(index_path, quiet=quiet) as index:
        result = index.remove(ids)
    if not quiet:
        missing = f"; not in the index: {', '.join(result.missing)}" if result.missing else ""
        click.echo(f"removed {len(result.removed):,}{missing}", err=True)


@index_group.command(name="export", short_help="Every headline with its story and event id (jsonl or csv).")
@index_option
@click.option("--format", "output_format", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file (default: stdout)."
)
@reports_errors
def export_command(index_path: Path, output_format: str, output: Path | None) -> None:
    """Every headline with its story id, in the order added; the jsonl output can be added to a new index."""
    with _open(index_path) as index:
        lines = _export_lines(index.headlines(), output_format)
        if output is None:
            for line in lines:
                click.echo(line, nl=False)
        else:
            atomic_write_text(output, "".join(lines))


_EXPORT_FIELDS = ("id", "text", "published_at", "source", "url", "story_id", "event_id", "added_at")


def _export_lines(headlines: Iterator[Headline], output_format: str) -> Iterator[str]:
    if output_format == "jsonl":
        for headline in headlines:
            yield json.dumps(headline.to_dict(), ensure_ascii=False) + "\n"
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_EXPORT_FIELDS)
    for headline in headlines:
        item = headline.to_dict()
        writer.writerow(["" if item[f] is None else item[f] for f in _EXPORT_FIELDS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


@index_group.command(name="repair", short_help="Repair what index check finds; says what it repaired.")
@index_option
@reports_errors
def repair_command(index_path: Path) -> None:
    """Repair what `index check` finds, and rewrite the vector files from the database.

    A damaged database is rebuilt from every row that can still be read (the damaged file is kept
    beside it), damaged or missing vectors are embedded again from their headlines, story records are
    recomputed. Exit code 0 when the index is sound afterwards, 1 when damage remains.
    """
    with _open(index_path) as index:
        fixed = index.repair()
        count = index.count()
        remaining = index.check()
    for item in fixed:
        click.echo(f"repaired: {item}", err=True)
    if not fixed:
        click.echo(f"nothing was wrong; vector files rewritten ({plural(count, 'headline')})", err=True)
    if not remaining.ok:
        for line in remaining.problems:
            click.echo(f"still damaged: {line}", err=True)
        sys.exit(1)


def _moment(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    text = value.strip()
    if text.lower() == "now":
        return datetime.now(tz=_UTC)
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
    except ValueError:
        raise click.BadParameter(
            f"cannot read {value!r}: write an ISO 8601 time such as 2024-05-01 or 2024-05-01T06:00:00Z",
            param_hint=option,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=_UTC)


@click.command(name="nightly", short_help="Re-group a time window and keep story ids stable.")
@index_option
@click.option("--since", metavar="TIME", help="Start of the window (ISO 8601, UTC unless it says otherwise).")
@click.option("--until", metavar="TIME", help="End of the window, excluded (default: now).")
@click.option("--last", metavar="DURATION", help="The window is this long, ending at --until (default: 48h).")
@click.option(
    "--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the outputs."
)
@click.option(
    "--fail-if-empty",
    is_flag=True,
    help=f"Exit with code {EXIT_EMPTY_WINDOW} when the window holds no headlines (a dead feed), after writing "
    "the outputs; without it an empty window is a success.",
)
@quiet_option
@reports_errors
def nightly_command(
    index_path: Path,
    since: str | None,
    until: str | None,
    last: str | None,
    out: Path,
    fail_if_empty: bool,
    quiet: bool,
) -> None:
    """Re-group a time window with the batch algorithm and keep story ids stable.

    Writes OUT/stories.jsonl, OUT/headlines.csv and OUT/report.html. The same window twice gives
    byte-identical stories.jsonl and headlines.csv; a killed run, run again, completes. Exit codes: 0
    done, 2 an error, 3 an empty window with --fail-if-empty.
    """
    if since is not None and last is not None:
        raise click.UsageError("give --since or --last, not both")
    end = _moment(until, "--until") or datetime.now(tz=_UTC)
    start = _moment(since, "--since") or end - (parse_duration(last) if last else DEFAULT_LAST)
    with _open(index_path, quiet=quiet) as index:
        result = run_nightly(index, start, end, out)
    if not quiet:
        resumed = " (resumed an interrupted run)" if result.resumed else ""
        click.echo(
            f"nightly {result.since} .. {result.until}{resumed}: {plural(result.headlines, 'headline')} in "
            f"{plural(result.stories, 'story')} ({plural(result.events, 'event')}); this run: "
            f"{plural(result.merges, 'merge')}, {plural(result.splits, 'split')}, "
            f"{plural(result.new_stories, 'new id')}, {plural(result.changed, 'headline')} changed story; events: "
            f"{plural(result.event_merges, 'merge')}, {plural(result.event_splits, 'split')}, "
            f"{plural(result.changed_events, 'headline')} changed event; wrote "
            + ", ".join(str(p) for p in result.outputs.values()),
            err=True,
        )
    if fail_if_empty and result.headlines == 0:
        # Even with --quiet: this is what cron is to mail about.
        click.echo(
            f"Error: the window {result.since} .. {result.until} holds no headlines (--fail-if-empty): is the "
            "feed still being indexed?",
            err=True,
        )
        sys.exit(EXIT_EMPTY_WINDOW)
