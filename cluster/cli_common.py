"""Pieces shared by the command modules: error reporting and the options several commands take."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from functools import wraps
from pathlib import Path

import click
import numpy as np
from click.core import ParameterSource

from .embed import get_embedder, resolve_model_name
from .errors import DiskFullError, HeadlineClusterError, InputError
from .pipeline import EmbedderLike
from .records import INPUT_FORMATS, ReadResult
from .wording import plural


def injected_embedder() -> EmbedderLike | None:
    """The embedder a caller passed with ``main(obj={"embedder": ...})`` (tests, programs), if any."""
    ctx = click.get_current_context(silent=True)
    return (ctx.find_root().obj or {}).get("embedder") if ctx is not None else None


def stderr_is_terminal() -> bool:
    """Whether standard error is a terminal; ``main(obj={"terminal": True})`` says so for a caller (tests)."""
    ctx = click.get_current_context(silent=True)
    said = (ctx.find_root().obj or {}).get("terminal") if ctx is not None else None
    return sys.stderr.isatty() if said is None else bool(said)


def stdin_is_terminal() -> bool:
    """Whether standard input is a terminal; ``main(obj={"stdin_terminal": True})`` says so for a caller."""
    ctx = click.get_current_context(silent=True)
    said = (ctx.find_root().obj or {}).get("stdin_terminal") if ctx is not None else None
    return sys.stdin.isatty() if said is None else bool(said)


class ProgressBar:
    """A progress bar on standard error, created on the first report (when the total is known).

    Takes ``progress(done, total)`` calls as they come: however far apart, a total that changes, or a
    report that goes backwards never breaks the bar.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=max(total, 1), label=self.label, file=sys.stderr, show_pos=True)
            self.bar.__enter__()
        if total != self.bar.length:
            self.bar.length = max(total, 1)
        self.bar.update(max(0, min(done, self.bar.length) - self.bar.pos))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@contextlib.contextmanager
def progress_bar(label: str, *, quiet: bool) -> Iterator[ProgressBar | None]:
    """A ProgressBar unless ``quiet`` or standard error is not a terminal (cron, pipes): then None."""
    bar = ProgressBar(label) if not quiet and stderr_is_terminal() else None
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()


class ReportingEmbedder:
    """An embedder that encodes in slices and reports ``progress(done, total)`` after each, so a long
    ``collapse`` moves a bar steadily; everything else is the wrapped embedder's."""

    SLICE = 64  # texts per report: about a second of the default model on two cores

    def __init__(self, embedder: EmbedderLike, progress: Callable[[int, int], None]) -> None:
        self._embedder = embedder
        self._progress = progress

    def __getattr__(self, name: str):
        return getattr(self._embedder, name)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if len(texts) <= self.SLICE:
            vectors = self._embedder.encode(texts)
            self._progress(len(texts), len(texts))
            return vectors
        parts = []
        for start in range(0, len(texts), self.SLICE):
            parts.append(np.asarray(self._embedder.encode(texts[start : start + self.SLICE]), dtype=np.float32))
            self._progress(min(start + self.SLICE, len(texts)), len(texts))
        return np.concatenate(parts)


class FullHelpGroup(click.Group):
    """A group whose command list shows each command's first sentence whole, wrapped, instead of
    click's default of cutting it at the column width with "...", and whose commands end quietly, with
    exit code 0, when the reader of their output goes away (``index export ... | head``)."""

    def invoke(self, ctx: click.Context):
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # here, not at exit: a closed pipe must surface where it is caught
            return result
        except BrokenPipeError:
            # Nobody reads the rest: point stdout at /dev/null so the interpreter's last flush is silent.
            devnull = os.open(os.devnull, os.O_WRONLY)
            with contextlib.suppress(OSError, ValueError):
                os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(0)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown(line: str) -> str:
    """``line`` for a terminal: control characters of stored text (NUL, ANSI escapes, a newline inside an id)
    written as escapes such as ``\\x1b`` and ``\\n``, so data can neither restyle the terminal nor fake a line
    of output. Text is stored as given; only what is printed is escaped (JSON output escapes them itself)."""
    return _CONTROL.sub(lambda found: found[0].encode("unicode_escape").decode("ascii"), line)


def embedder_from(model: str | None, *, quiet: bool = False) -> EmbedderLike:
    """The injected embedder, else the one for ``model`` (or the default); ``quiet`` silences the first
    run's step lines."""
    injected = injected_embedder()
    return injected if injected is not None else get_embedder(resolve_model_name(model), quiet=quiet)


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
    help="Input format; by default taken from the file extension (stdin: detected from its content, jsonl, "
    "csv/tsv with a header naming the text column, else one headline per line).",
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


SHOWN_WARNINGS = 10  # warnings listed one by one; the rest are counted (skipped rows are all named)

skip_invalid_option = click.option(
    "--skip-invalid",
    is_flag=True,
    help="Skip invalid rows and name each on stderr. Without it, one invalid row stops the run.",
)


def report_read(read: ReadResult, *, quiet: bool = False) -> None:
    """Name on stderr every row a reader skipped, and what it warned about (warnings capped; one line with --quiet)."""
    report_read_rows(read.invalid, read.warnings, quiet=quiet)


def report_read_rows(invalid: Sequence[object], warnings: Sequence[object], *, quiet: bool = False) -> None:
    """:func:`report_read` for rows skipped and warnings gathered from several reads (``index build``)."""
    if invalid and quiet:  # cron stays silent on clean runs, but dropped rows must not go unseen
        click.echo(f"skipped {plural(len(invalid), 'invalid row')}; the first: {invalid[0]}", err=True)
    elif invalid:
        # Every one: a row left out of the index must be findable from the message alone.
        for row in invalid:
            click.echo(f"skipped {row}", err=True)
    if warnings and not quiet:
        for warning in warnings[:SHOWN_WARNINGS]:
            click.echo(f"warning: {warning}", err=True)
        if len(warnings) > SHOWN_WARNINGS:
            click.echo(f"... and {plural(len(warnings) - SHOWN_WARNINGS, 'more warning')}", err=True)


FIELD_ROLES = ("id", "time", "source", "url")


def given_fields() -> tuple[str, ...]:
    """The roles whose ``--ROLE-field`` option the user gave (command line or environment), not defaulted.

    The reader checks those names against the header or first record: a typo is an error, while a
    default name that is absent only means the input has no such field.
    """
    ctx = click.get_current_context()
    given = []
    for role in FIELD_ROLES:
        name = f"{role}_field"
        if name in ctx.params and ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT):
            given.append(role)
    return tuple(given)


time_field_option = click.option(
    "--time-field",
    default="published_at",
    show_default=True,
    metavar="NAME",
    help="Column or key of each headline's publication time (weighed by the event level).",
)


def invalid_row_hint(exc: InputError, what: str, *, skip_invalid: bool = False) -> InputError:
    """``exc`` about one row, with what to do added: fix the row or skip such rows.

    No advice to pass --skip-invalid when it was passed, or when the problem is the whole file's (a header,
    a field option), which skipping rows cannot fix.
    """
    if exc.line is None:
        return exc
    hint = f"{exc.hint}; " if exc.hint else ""
    if exc.whole_file or skip_invalid:
        return InputError(exc.reason, path=exc.path, line=exc.line, hint=f"{hint}{what}", whole_file=exc.whole_file)
    return InputError(
        exc.reason,
        path=exc.path,
        line=exc.line,
        hint=f"{hint}{what}: fix the row, or pass --skip-invalid to skip invalid rows",
    )


ROW_BYTES = 6 * 1024
"""About what one headline takes while it is added: its row and 384-float vector in the database, their
copy in the write-ahead log, and the vector again in a segment file (for a message's estimate only)."""


@contextlib.contextmanager
def disk_full_names_the_index(index_path: Path, rows: Callable[[], int] | None = None) -> Iterator[None]:
    """A full disk under the index reported for the index folder, with the space the command needs:
    ``rows()`` headlines still to add at :data:`ROW_BYTES` each, else the size of the index (a nightly
    run, repair or compaction may write all of it anew)."""
    try:
        yield
    except DiskFullError as exc:
        if exc.folder != index_path and index_path not in exc.folder.parents:
            raise  # another folder (nightly's --out): its own message is the right one
        needed = None if rows is None else max(exc.needed, rows() * ROW_BYTES)
        raise DiskFullError(index_path, needed) from None


def input_lines(files: Sequence[str]) -> int:
    """Lines in the named input files (standard input counts 0): the headlines a command may add."""
    total = 0
    for name in files:
        if name == "-":
            continue
        with contextlib.suppress(OSError), open(name, "rb") as handle:
            for block in iter(lambda handle=handle: handle.read(1 << 20), b""):
                total += block.count(b"\n")
    return total


def parse_moment(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time given to ``option`` (``now`` for the present; no zone means UTC), or None."""
    if value is None:
        return None
    text = value.strip()
    if text.lower() == "now":
        return datetime.now(tz=timezone.utc)
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
    except ValueError:
        raise click.BadParameter(
            f"cannot read {value!r}: write an ISO 8601 time such as 2024-05-01 or 2024-05-01T06:00:00Z",
            param_hint=option,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
