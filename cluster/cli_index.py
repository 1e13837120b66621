"""``headline-cluster index ...`` and ``headline-cluster nightly``: a thin layer over HeadlineIndex."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import click

from .cli_common import (
    FullHelpGroup,
    disk_full_names_the_index,
    given_fields,
    index_option,
    injected_embedder,
    input_format_option,
    invalid_row_hint,
    model_option,
    output_format_option,
    parse_moment,
    progress_bar,
    report_read,
    reports_errors,
    shown,
    stderr_is_terminal,
    text_field_option,
    time_field_option,
)
from .cli_index_output import export_lines, print_story
from .embed import get_embedder
from .errors import InputError
from .fsutil import atomic_write_text
from .nightly import DEFAULT_LAST, run_nightly
from .review import query_breakdown
from .settings import LEVELS
from .store import (
    COMMIT_EVERY,
    DB_FILE,
    HeadlineIndex,
    QueryHit,
    indexed_span,
    parse_duration,
    read_input,
)
from .store.corrections import corrections_jsonl
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
            time_field_option,
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

    Ids already in the index are skipped; headlines without an id get their URL as id, else one derived
    from their text (rows repeating such a text are stored once, and the summary says how many).
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
            required_fields=given_fields(),
        )
    except InputError as exc:
        raise invalid_row_hint(exc, "nothing was added", skip_invalid=skip_invalid) from None
    report_read(read, quiet=quiet)
    if not read.records and not existed:
        # Every row was skipped: an empty new index would only hide the mistaken input.
        raise InputError(
            f"no valid headlines to add ({plural(len(read.invalid), 'invalid row')} skipped)",
            path=str(index_path),
            hint="no index was created; fix the rows named above",
        )
    settings = {"model": model, "threshold": threshold, "level": level, "window": window_length}
    with (
        disk_full_names_the_index(index_path, lambda: len(read.records)),
        _open(index_path, quiet=quiet, create=True, **settings) as index,
    ):
        if not existed:
            # Even with --quiet: a mistyped --index would otherwise start a new index without a word.
            click.echo(f"created a new index at {index_path} (model {index.model})", err=True)
        before = index.count()
        try:
            with progress_bar("indexing", quiet=quiet) as progress:
                result = index.add(
                    read.records, update=update, window=window_length, commit_every=commit_every, progress=progress
                )
        except KeyboardInterrupt:
            _interrupted(index, before, len(read.records))
    if not quiet:
        elapsed = time.monotonic() - started
        speed = rate(result.processed, elapsed, "headlines")
        updated = f", updated {result.updated:,}" if update else ""
        if result.repeated:
            updated += (
                f", merged {plural(result.repeated, 'row')} repeating an earlier row's text (rows without an id or "
                "url get their id from the text)"
            )
        click.echo(
            f"added {result.added:,}, already present {result.present:,}{updated}, invalid {len(read.invalid):,} "
            f"in {elapsed:.1f} s{f' ({speed})' if speed else ''}; {index_path} holds "
            f"{plural(result.headlines, 'headline')} in {plural(result.stories, 'story')}",
            err=True,
        )


def _interrupted(index: HeadlineIndex, before: int, read: int) -> None:
    """Ctrl-C during an add: what was committed, and that the same command completes it (exit 130)."""
    try:
        committed = f"{index.count() - before:,} new headline(s) of the {read:,} read were committed"
    except Exception:  # the database is mid-transaction or gone: say what is certain
        committed = "what was committed before the interruption is kept"
    click.echo(
        f"interrupted: {committed}; run the same index add again to add the rest (ids already present are "
        "skipped). The vector files catch up on the next add or query: index stats and check may say so, "
        "and it is not damage.",
        err=True,
    )
    sys.exit(130)


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
    elif faiss_info.get("behind"):
        # An interrupted add: not damage, and no repair needed.
        state = (
            f"behind the database by {plural(faiss_info['behind'], 'headline')} (an interrupted add; the next "
            "index add or query catches up)"
        )
    else:
        state = "NOT in step with the database: run headline-cluster index repair"
    vectors = faiss_info.get("vectors", 0)
    kind = faiss_info.get("kind", "none")
    size = faiss_info.get("bytes", 0) / 1e6
    files = len(faiss_info.get("segments", [])) or int(faiss_info.get("exists", False))
    span = f" from {info['earliest']} to {info['latest']}" if info["earliest"] else ""
    lines = [
        ("index", info["path"]),
        ("model", f"{info['model']} ({_variant(info.get('variant'))}, dimension {info['dimension']})"),
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
@click.option(
    "--time",
    "when",
    metavar="WHEN",
    help="The query's publication time (ISO 8601, such as 2024-05-01T08:00Z), weighed by the event level as "
    "an added headline's is; without it the query is judged without a time.",
)
@output_format_option
@reports_errors
def query_command(index_path: Path, text: str, k: int, explain: bool, when: str | None, output_format: str) -> None:
    """The headlines most similar to TEXT, best first, with their story ids.

    Each hit shows its cosine (the search's ranking, high even for unrelated headlines of one language)
    next to the index's judgement: whether the text would be judged the same story as the hit's. The
    index embeds with the model it was built with (no --model here).
    """
    moment = parse_moment(when, "--time")
    with _open(index_path) as index:
        # The text output always carries the judgement: a bare cosine of 0.86 reads as "similar".
        hits = index.query(text, k, explain=explain or output_format == "text", when=moment)
        judgement = index.judgement
        # The best hit taken apart signal by signal, as `explain` shows a pair of a file.
        best = query_breakdown(index, text, hits[0].headline) if explain and hits else None
    if output_format == "json":
        found = [hit.to_dict() for hit in hits]
        if best is not None:
            found[0]["breakdown"] = best.to_dict()
        click.echo(json.dumps(found, ensure_ascii=False, indent=2))
        return
    if not hits:
        click.echo("no headlines in the index", err=True)
    explained: set[str] = set()
    for rank, hit in enumerate(hits, start=1):
        headline = hit.headline
        where = " · ".join(x for x in (headline.id, headline.published_at, headline.source) if x)
        click.echo(shown(f"{rank:>3}. {headline.story_id}  {headline.text}  [{where}]"))
        click.echo(f"     {judged(hit, judgement)}")
        if explain and hit.story_similarity is not None and headline.event_id not in explained:
            # Once per event (the group a new headline joins): every hit of one event has the same verdict.
            explained.add(headline.event_id)
            verdict = "would join it" if hit.would_join else "would not join it"
            relation = ">=" if hit.would_join else "<"
            click.echo(
                f"     event {headline.event_id} of story {headline.story_id}: "
                f"{plural(hit.story_size or 0, 'headline')}; the query's mean "
                f"{_scale(judgement) or 'similarity'} to them is {hit.story_similarity:.3f} {relation} threshold "
                f"{judgement.threshold:.3f}, so it {verdict}"
            )
        if best is not None and rank == 1:
            click.echo("     the query against this headline, signal by signal:")
            for line in best.lines(judgement.threshold):
                click.echo(f"     {line}")


def _variant(variant: str | None) -> str:
    if variant is None:
        return "no vectors yet"
    return f"{'float32' if variant == 'none' else variant} variant"


def _scale(judgement: object) -> str:
    """The judgement's score scale (cluster.judge.Judgement.scale); "" for a judgement that names none."""
    return str(getattr(judgement, "scale", ""))


def judged(hit: QueryHit, judgement: object) -> str:
    """``cosine 0.861 · its event: judged different (0.843, below 0.900)``: the search's cosine next to the
    judgement's verdict on the hit's event (the group a new headline joins), and its probability where one
    is known.

    The probability is read from the hit (``probability``) or the judgement (``probability(score)``),
    whichever provides it, so it shows as soon as the judgement is calibrated.
    """
    parts = [f"cosine {hit.score:.3f}"]
    score, threshold = hit.story_similarity, getattr(judgement, "threshold", hit.threshold)
    if score is not None and threshold is not None:
        # Named: a learned judgement's score is a probability, and beside a cosine it would read as one.
        scale = f"{_scale(judgement)} " if _scale(judgement) else ""
        if score >= threshold:
            parts.append(f"its event: judged the same ({scale}{score:.3f}, at or above {threshold:.3f})")
        else:
            parts.append(f"its event: judged different ({scale}{score:.3f}, below {threshold:.3f})")
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
    print_story(story, story_id)


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
@click.option(
    "--corrections",
    "corrections_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the index's corrections to this file, as JSON lines (read back by: correct import).",
)
@reports_errors
def export_command(index_path: Path, output_format: str, output: Path | None, corrections_file: Path | None) -> None:
    """Every headline with its story id, in the order added; the jsonl output can be added to a new index."""
    with _open(index_path) as index:
        if corrections_file is not None:
            atomic_write_text(corrections_file, corrections_jsonl(index.corrections()))
        headlines = index.headlines()
        lines = export_lines(headlines, output_format)
        try:
            if output is None:
                for line in lines:
                    click.echo(line, nl=False)
            else:
                atomic_write_text(output, "".join(lines))
        finally:
            # Closed while the database is open: a reader that left early (| head) must not leave a
            # cursor to be finalized after the database closed, which prints a traceback.
            lines.close()
            getattr(headlines, "close", lambda: None)()


@index_group.command(name="repair", short_help="Repair what index check finds; says what it repaired.")
@index_option
@reports_errors
def repair_command(index_path: Path) -> None:
    """Repair what `index check` finds, and rewrite the vector files from the database.

    A damaged database is rebuilt from every row that can still be read (the damaged file is kept
    beside it), damaged or missing vectors are embedded again from their headlines, story records are
    recomputed. Exit code 0 when the index is sound afterwards, 1 when damage remains.
    """
    with disk_full_names_the_index(index_path), _open(index_path) as index:
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
    end = parse_moment(until, "--until") or datetime.now(tz=_UTC)
    try:
        start = parse_moment(since, "--since") or end - (parse_duration(last) if last else DEFAULT_LAST)
    except OverflowError:  # a window that starts before the year 1 cannot be a date
        raise InputError(
            f"the duration {last!r} is too long: the window would start before the year 1",
            hint="write it like 90m, 72h, 3d or 1w; a bare number is hours",
        ) from None
    # Step lines on a terminal only: cron's mail and pipes stay as they were.
    steps = (lambda step: click.echo(f"nightly: {step} ...", err=True)) if not quiet and stderr_is_terminal() else None
    with disk_full_names_the_index(index_path), _open(index_path, quiet=quiet) as index:
        result = run_nightly(index, start, end, out, progress=steps)
        span = indexed_span(index) if result.headlines == 0 else None
    if span is not None and (not quiet or fail_if_empty):
        # An empty window is most often a window in the wrong place: say where the headlines are.
        count, earliest, latest = span
        where = f"the index holds {plural(count, 'headline')}" + (f", from {earliest} to {latest}" if count else "")
        click.echo(
            f"the window {result.since} .. {result.until} holds no headlines; {where}"
            + ("; give --until (and --last or --since) inside that range" if count else ""),
            err=True,
        )
    if not quiet:
        resumed = " (resumed an interrupted run)" if result.resumed else ""
        click.echo(
            f"nightly {result.since} .. {result.until}{resumed}: {plural(result.headlines, 'headline')} in "
            f"{plural(result.stories, 'story')} ({plural(result.events, 'event')}); this run: "
            f"{plural(result.merges, 'merge')}, {plural(result.splits, 'split')}, "
            f"{plural(result.new_stories, 'new id')}, {plural(result.changed, 'headline')} changed story; events: "
            f"{plural(result.event_merges, 'merge')}, {plural(result.event_splits, 'split')}, "
            f"{plural(result.changed_events, 'headline')} changed event; wrote "
            + ", ".join(str(p) for p in result.outputs.values())
            + (
                f" (the report shows the changes recorded for this window by run {result.reported_run})"
                if result.reported_run is not None
                else ""
            ),
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
