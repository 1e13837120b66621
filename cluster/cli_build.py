"""``headline-cluster index build``: a bulk build (backfill) of an index, in-process or on Ray."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .build import BuildResult, EmbedderSpec, ReadOptions, build_local
from .cli_common import (
    disk_full_names_the_index,
    given_fields,
    index_option,
    injected_embedder,
    input_format_option,
    input_lines,
    invalid_row_hint,
    model_option,
    progress_bar,
    report_read_rows,
    reports_errors,
)
from .cli_index import _open as open_index
from .cli_index import index_group, level_option, quiet_option, record_field_options, threshold_option
from .errors import InputError
from .store import DB_FILE, LOCK_FILE, HeadlineIndex, parse_duration
from .wording import plural, rate


@index_group.command(name="build", short_help="Build a new index from files in bulk (a backfill), here or on Ray.")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@index_option
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: in this process. ray: Ray Data actors and tasks (pip install 'headline-cluster[ray]').",
)
@click.option("--ray-address", metavar="ADDR", help="Join this Ray cluster (default: start Ray on this machine).")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Embedding actors with --engine ray (default: every CPU of the machine or cluster).",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where --engine ray writes the vectors as Parquet by day (default: INDEX/build). On a cluster: "
    "a folder every node can read.",
)
@input_format_option
@record_field_options
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Skip and count invalid rows. Without it, one invalid row stops the build and nothing is stored.",
)
@click.option(
    "--window",
    metavar="DURATION",
    help="The new index's story window (default 72h), as index add's --window.",
)
@model_option
@threshold_option
@level_option
@quiet_option
@reports_errors
def build_command(
    files: tuple[str, ...],
    index_path: Path,
    engine: str,
    ray_address: str | None,
    workers: int | None,
    work_dir: Path | None,
    input_format: str | None,
    id_field: str,
    text_field: str | None,
    time_field: str,
    source_field: str,
    url_field: str,
    skip_invalid: bool,
    window: str | None,
    model: str | None,
    threshold: float | None,
    level: str | None,
    quiet: bool,
) -> None:
    """Build a new (or empty) index from FILEs (txt, csv, tsv, jsonl or parquet) in one go.

    Headlines are embedded, then given the event and story ids that index add of each day followed by
    nightly over its last 48h would give them (the cron path, replayed), and stored in one transaction;
    the same files give the same events, stories and ids with either engine. A killed build leaves the
    index untouched: run it again (with --engine ray it reuses the vectors it finished). Building the
    same files again into the built index changes nothing.
    """
    if engine != "ray" and (ray_address or workers or work_dir):
        raise click.UsageError("--ray-address, --workers and --work-dir go with --engine ray")
    if engine == "ray":
        from .ray_engine import require_ray

        require_ray()  # before anything is created: a missing extra is a one-line error
    started = time.monotonic()
    existed = (index_path / DB_FILE).is_file()
    options = ReadOptions(
        input_format, text_field, id_field, time_field, source_field, url_field, skip_invalid, given_fields()
    )
    settings = {"model": model, "threshold": threshold, "level": level}
    settings["window"] = parse_duration(window) if window else None
    folder_existed = index_path.exists()
    forget = False
    try:
        with (
            disk_full_names_the_index(index_path, lambda: input_lines(files)),
            open_index(index_path, quiet=quiet, create=True, **settings) as index,
        ):
            if not existed:
                click.echo(f"created a new index at {index_path} (model {index.model})", err=True)
            try:
                result = _run(index, engine, files, options, ray_address, workers, work_dir, quiet)
            except BaseException:
                # A build that stored nothing leaves no new index behind: the folder is as it was.
                forget = not existed and index.count() == 0
                raise
    except BaseException:
        if forget:
            _forget_new_index(index_path, folder_existed)
            click.echo(f"nothing was stored: removed the new index at {index_path}", err=True)
        raise
    report_read_rows(result.invalid, result.warnings, quiet=quiet)
    if not quiet:
        click.echo(_summary(result, index_path, time.monotonic() - started), err=True)


def _forget_new_index(index_path: Path, folder_existed: bool) -> None:
    """Remove the files of an index that was just created and holds nothing."""
    for name in (DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm", LOCK_FILE):
        (index_path / name).unlink(missing_ok=True)
    for folder in [p for p in index_path.iterdir() if p.is_dir()] if index_path.is_dir() else []:
        if not any(folder.iterdir()):  # segments/, or a Ray build folder that got no vectors yet
            folder.rmdir()
    if not folder_existed and index_path.is_dir() and not any(index_path.iterdir()):
        index_path.rmdir()  # anything else in it (a --work-dir inside, say) stays, and so does the folder


def _run(
    index: HeadlineIndex,
    engine: str,
    files: tuple[Path, ...],
    options: ReadOptions,
    ray_address: str | None,
    workers: int | None,
    work_dir: Path | None,
    quiet: bool,
) -> BuildResult:
    spec = EmbedderSpec.for_index(index, injected_embedder())
    try:
        with progress_bar("building", quiet=quiet) as progress:
            if engine == "ray":
                from .ray_engine import build_ray

                return build_ray(
                    index,
                    files,
                    options,
                    spec,
                    workers=workers,
                    address=ray_address,
                    work_dir=work_dir,
                    progress=progress,
                    quiet=quiet,
                )
            return build_local(index, files, options, spec, progress=progress, quiet=quiet)
    except InputError as exc:
        raise invalid_row_hint(exc, "nothing was stored", skip_invalid=options.skip_invalid) from None


def _summary(result: BuildResult, index_path: Path, elapsed: float) -> str:
    if result.already_built:
        return (
            f"{index_path} already holds this build ({plural(result.headlines, 'headline')} in "
            f"{plural(result.stories, 'story')}): nothing to do"
        )
    speed = rate(result.headlines, elapsed, "headlines")
    resumed = "; reused the vectors of an interrupted run" if result.resumed else ""
    where = f"; vectors in {result.work_dir}" if result.work_dir is not None else ""
    return (
        f"built {plural(result.headlines, 'headline')} in {plural(result.stories, 'story')} "
        f"and {plural(result.events, 'event')} ({plural(result.windows, 'day')} replayed; "
        f"already present {result.present:,}, invalid {len(result.invalid):,}) "
        f"in {elapsed:.1f} s{f' ({speed})' if speed else ''} with --engine {result.engine}{resumed}{where}"
    )
