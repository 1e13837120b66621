"""The ``ray`` engine of ``index build``: the build of :mod:`cluster.build`, spread over a Ray cluster.

What runs where:

* **tasks, one per input file**: read and validate it with the product's reader (the same messages as
  ``index add``); the records go to the object store, only ids and line numbers to the driver;
* **the driver**: finds repeats across files (:func:`cluster.build.accept`), replays the days for the
  story and event ids (:func:`cluster.build.replay_ids`, as the local engine) and stores the result in
  the index (one SQLite transaction);
* **actors, one model each** (Ray Data ``map_batches``): normalize and embed batches of records and write
  them as Parquet, one folder per UTC day (``day=N/part-<first seq>.parquet``; a retried batch rewrites
  its own file), under ``WORK/vectors``.

The Parquet folder is written under a temporary name and renamed into place with a manifest once every
batch is in, so a killed build either finds it whole (and reuses it: the embedding is the expensive
part) or starts the embedding again; nothing reaches the index before the final transaction. On a cluster
the input files and WORK must be on storage every node can read (a shared file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import socket
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .build import (
    Accepted,
    BuildResult,
    Embedded,
    EmbedderSpec,
    EngineUnavailable,
    Progress,
    ReadOptions,
    accept,
    build_summary,
    check_target,
    embed_records,
    file_meta,
    fingerprint,
    read_part,
    replay_ids,
    store_build,
)
from .errors import InputError
from .fsutil import atomic_write_text, fsync_dir
from .records import InvalidRow, ReadWarning, Record
from .store import HeadlineIndex, iso

INSTALL_HINT = "pip install 'headline-cluster[ray]'"
VECTORS = "vectors"
MANIFEST = "manifest.json"
BATCH = 512  # records per actor call: a few seconds of embedding, small next to the per-call overhead


def require_ray() -> None:
    """Raise :class:`EngineUnavailable` (a message, no traceback) when Ray Data or pyarrow is missing."""
    try:
        import pyarrow  # noqa: F401
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise EngineUnavailable(
            f"--engine ray needs Ray Data and pyarrow, which are not installed ({exc.name or exc}): {INSTALL_HINT}"
        ) from None


# -- Parquet ---------------------------------------------------------------------------------------------


def to_arrow(part: Embedded):  # -> pyarrow.Table
    import pyarrow as pa

    dimension = part.vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(part.vectors, dtype=np.float32).ravel(), type=pa.float32())
    return pa.table(
        {
            "seq": pa.array(part.seq, type=pa.int64()),
            "id": pa.array(part.ids, type=pa.string()),
            "text": pa.array(part.texts, type=pa.string()),
            "normalized": pa.array(part.normalized, type=pa.string()),
            "key": pa.array(part.keys, type=pa.binary(16)),
            "published_at": pa.array(part.published_at, type=pa.string()),
            "t": pa.array(part.t, type=pa.float64()),
            "when": pa.array(part.when, type=pa.float64()),
            "source": pa.array(part.sources, type=pa.string()),
            "url": pa.array(part.urls, type=pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, dimension),
        }
    )


def from_arrow(table, dimension: int) -> Embedded:  # table: pyarrow.Table
    vectors = table.column("vector").combine_chunks()
    flat = vectors.values.to_numpy(zero_copy_only=False) if len(vectors) else np.zeros(0, dtype=np.float32)
    column = table.column
    return Embedded(
        column("seq").to_numpy().astype(np.int64),
        column("id").to_pylist(),
        column("text").to_pylist(),
        column("normalized").to_pylist(),
        column("key").to_pylist(),
        column("published_at").to_pylist(),
        column("t").to_numpy().astype(np.float64),
        column("when").to_numpy(zero_copy_only=False).astype(np.float64),
        column("source").to_pylist(),
        column("url").to_pylist(),
        np.asarray(flat, dtype=np.float32).reshape(len(table), dimension),
    )


def day_folder(root: Path, day: int) -> Path:
    return root / f"day={day}"


def stored_days(root: Path) -> list[int]:
    return sorted(int(p.name[4:]) for p in root.glob("day=*") if p.is_dir())


def read_days(root: Path, first_day: int, end_day: int, dimension: int) -> Embedded:
    """The headlines stored for days [first_day, end_day), in row order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [
        pq.read_table(path)
        for day in range(first_day, end_day)
        for path in sorted(day_folder(root, day).glob("part-*.parquet"))
    ]
    if not tables:
        return Embedded.empty(dimension)
    return from_arrow(pa.concat_tables(tables), dimension).in_row_order()


def write_part(root: Path, part: Embedded) -> None:
    """One day's share of a batch, written atomically; named by its first seq, so a retry replaces it."""
    import pyarrow.parquet as pq

    folder = day_folder(root, int(part.days()[0]))
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"part-{int(part.seq.min()):020d}.parquet"
    temporary = folder / f".{final.name}.{uuid.uuid4().hex}.tmp"
    pq.write_table(to_arrow(part), temporary)
    os.replace(temporary, final)


# -- the remote steps --------------------------------------------------------------------------------------


def _rows(records: Sequence[Record], seqs: Sequence[int]):  # -> pyarrow.Table
    import pyarrow as pa

    return pa.table(
        {
            "seq": pa.array(seqs, type=pa.int64()),
            "text": pa.array([r.text for r in records], type=pa.string()),
            "id": pa.array([r.id for r in records], type=pa.string()),
            # ISO text, not seconds: the stored published_at must be the one ``index add`` would store.
            "published_at": pa.array(
                [None if r.published_at is None else r.published_at.isoformat() for r in records], type=pa.string()
            ),
            "source": pa.array([r.source for r in records], type=pa.string()),
            "url": pa.array([r.url for r in records], type=pa.string()),
            "line": pa.array([r.line for r in records], type=pa.int64()),
        }
    )


def read_file(path: str, number: int, options: ReadOptions, base: str) -> Iterator[Any]:
    """A read task (a Ray generator): what the driver needs of the file, or its input error as a tuple;
    then the records in tables of :data:`BATCH` rows, the blocks the actors take."""
    try:
        part = read_part(path, number, options, base)
    except InputError as exc:  # carried as data: the driver raises it as the local engine would
        yield ("error", exc.reason, exc.path, exc.line, exc.hint)
        return
    yield file_meta(part)
    seqs = part.seqs()
    for start in range(0, len(seqs), BATCH):
        yield _rows(part.records[start : start + BATCH], seqs[start : start + BATCH])


class EmbedWriter:
    """A Ray Data actor: one model; embeds batches of records and writes them as Parquet by day."""

    def __init__(self, spec: EmbedderSpec, now: float, out: str, drop: np.ndarray, threads: int):
        from .embed import set_threads

        set_threads(threads)  # one actor per CPU: threads of its own would only fight the others
        self.embedder = spec.make()
        self.now = now
        self.out = Path(out)
        self.drop = set(drop.tolist())
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch):  # pyarrow.Table -> pyarrow.Table
        import pyarrow as pa

        started = time.perf_counter()
        rows = [r for r in batch.to_pylist() if r["seq"] not in self.drop]
        records = [
            Record(
                r["text"],
                r["id"],
                None if r["published_at"] is None else datetime.fromisoformat(r["published_at"]),
                r["source"],
                r["url"],
                r["line"],
            )
            for r in rows
        ]
        part = embed_records(records, [r["seq"] for r in rows], self.embedder, self.now)
        days = part.days()
        for day in np.unique(days):
            write_part(self.out, part.take(np.flatnonzero(days == day)))
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux: MB
        return pa.table({"worker": [self.name], "headlines": [len(rows)], "seconds": [seconds], "peak_mb": [peak]})


# -- the build -------------------------------------------------------------------------------------------


def _reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once when nothing listens at a ``host:port`` address: Ray itself retries for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit() or address == "auto":
        return  # "auto" or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise InputError(
            f"nothing answers at the Ray address {address} ({exc.strerror or exc})",
            hint="start the head with `ray start --head --port PORT` and give --ray-address HOST:PORT",
        ) from None


@contextlib.contextmanager
def ray_session(address: str | None, workers: int | None, quiet: bool) -> Iterator[int]:
    """Join the cluster at ``address``, else start Ray on this machine (``workers`` CPUs, default all);
    a Ray already started in this process is used as it is. Yields the CPUs the build may use."""
    import logging

    import ray

    started = False
    # Ray Data warns when a small input gives an actor nothing to do, and Ray's C++ layer logs that the
    # actors' constructor arguments live in the object store: both expected here, and noise to a user.
    warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", category=UserWarning)
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    if address:
        _reachable(address)
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR}
        if quiet:
            options["log_to_driver"] = False
        if address:
            try:
                ray.init(address=address, **options)
            except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
                # Ray names the address its head registered, which may differ from the one given.
                raise InputError(
                    f"cannot join the Ray cluster at {address}: {exc}",
                    hint="give the address `ray start --head` printed (ray start --address='HOST:PORT'), or "
                    "auto on a node of the cluster: Ray replaces a loopback address with the node's own",
                ) from None
        else:
            ray.init(num_cpus=workers or os.cpu_count() or 1, **options)
        started = True
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI draws its own bar (on a terminal only)
    with contextlib.suppress(AttributeError):
        context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        yield max(1, int(workers or ray.cluster_resources().get("CPU", 1)))
    finally:
        if started:
            ray.shutdown()


def _invalid(row: InvalidRow | list) -> InvalidRow:
    return row if isinstance(row, InvalidRow) else InvalidRow(*row)


def _warning(row: ReadWarning | list) -> ReadWarning:
    return row if isinstance(row, ReadWarning) else ReadWarning(*row)


def build_ray(
    index: HeadlineIndex,
    files: Sequence[str],
    options: ReadOptions,
    spec: EmbedderSpec,
    *,
    workers: int | None = None,
    address: str | None = None,
    work_dir: Path | None = None,
    progress: Progress | None = None,
    quiet: bool = False,
) -> BuildResult:
    """The build with Ray: ``workers`` embedding actors (default: every CPU of the cluster)."""
    require_ray()
    result = BuildResult("ray")
    probe = spec.make(quiet=quiet)  # builds the default model's files once, before the actors need them
    model_id, dimension = probe.model_id, int(probe.dimension)
    key = fingerprint(files, options, model_id, index)
    done = check_target(index, key)
    if done is not None:
        return done
    # Absolute: actors and tasks do not run in this folder.
    work = (Path(work_dir) if work_dir is not None else index.path / "build").resolve()
    vectors = work / VECTORS
    result.work_dir = vectors
    manifest = _manifest(vectors)
    for stale in work.glob(f".{VECTORS}.*.tmp"):  # a killed run's half-written folder
        shutil.rmtree(stale, ignore_errors=True)
    with ray_session(address, workers, quiet) as cpus:
        if manifest is not None and manifest.get("fingerprint") == key:
            result.resumed = True
        else:
            manifest = _embed_all(work, vectors, files, options, spec, key, cpus, progress)
        result.invalid = [_invalid(r) for r in manifest["invalid"]]
        result.warnings = [_warning(r) for r in manifest["warnings"]]
        result.present = int(manifest["present"])
        result.workers = manifest["workers"]
        if not result.resumed:
            result.seconds.update(manifest["seconds"])
        clock = time.monotonic()
    days = stored_days(vectors)
    table = Embedded.concat([read_days(vectors, day, day + 1, dimension) for day in days], dimension)
    ids = replay_ids(index, table, model_id)
    result.seconds["group"] = time.monotonic() - clock
    clock = time.monotonic()
    result.windows = ids.days
    result.stories = len(set(ids.stories.values()))
    result.events = len(set(ids.events.values()))
    summary = build_summary(result, key, manifest["started_at"], int(manifest["kept"]))
    result.headlines = store_build(index, [table], ids, model_id=model_id, dimension=dimension, summary=summary)
    result.seconds["store"] = time.monotonic() - clock
    return result


def _manifest(vectors: Path) -> dict[str, Any] | None:
    try:
        return json.loads((vectors / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _embed_all(
    work: Path,
    vectors: Path,
    files: Sequence[str],
    options: ReadOptions,
    spec: EmbedderSpec,
    key: str,
    cpus: int,
    progress: Progress | None,
) -> dict[str, Any]:
    """Read, check and embed every file into a fresh Parquet folder; its manifest."""
    import ray

    clock = time.monotonic()
    started_at, now = iso(time.time()), time.time()
    work.mkdir(parents=True, exist_ok=True)
    staging = work / f".{VECTORS}.{uuid.uuid4().hex}.tmp"
    staging.mkdir()
    reader = ray.remote(num_returns="streaming", num_cpus=1)(read_file)
    # Blocks of BATCH rows straight from the readers: a Ray Data repartition would need CPUs that the
    # actors already hold, and on a small cluster it waits for them forever.
    metas: list[Any] = []
    blocks: list[Any] = []
    base = str(Path.cwd())
    for generator in [reader.remote(path, number, options, base) for number, path in enumerate(files)]:
        refs = list(generator)
        metas.append(ray.get(refs[0]))
        blocks.extend(refs[1:])
    for meta in metas:
        if isinstance(meta, tuple):
            _, reason, path, line, hint = meta
            shutil.rmtree(staging, ignore_errors=True)
            raise InputError(reason, path=path, line=line, hint=hint)
    accepted = accept(metas, options.skip_invalid)
    seconds = {"read": time.monotonic() - clock}
    clock = time.monotonic()
    workers: dict[str, dict[str, float]] = {}
    done = 0
    if not blocks:  # every row was invalid
        return _finish(work, vectors, staging, key, started_at, now, accepted, workers, seconds)
    dataset = ray.data.from_arrow_refs(blocks).map_batches(
        EmbedWriter,
        batch_size=BATCH,
        batch_format="pyarrow",
        concurrency=cpus,
        num_cpus=1,
        fn_constructor_kwargs={
            "spec": spec,
            "now": now,
            "out": str(staging),
            "drop": np.array(sorted(accepted.drop), dtype=np.int64),
            "threads": 1,
        },
    )
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        columns = (batch.column(c).to_pylist() for c in ("worker", "headlines", "seconds", "peak_mb"))
        for worker, headlines, spent, peak in zip(*columns, strict=True):
            figures = workers.setdefault(worker, {"headlines": 0, "seconds": 0.0, "peak_mb": 0.0})
            figures["headlines"] += headlines
            figures["seconds"] += spent
            figures["peak_mb"] = max(figures["peak_mb"], peak)
            done += headlines
        if progress is not None:
            progress(done, accepted.kept)
    seconds["embed"] = time.monotonic() - clock
    return _finish(work, vectors, staging, key, started_at, now, accepted, workers, seconds)


def _finish(
    work: Path,
    vectors: Path,
    staging: Path,
    key: str,
    started_at: str,
    now: float,
    accepted: Accepted,
    workers: dict[str, dict[str, float]],
    seconds: dict[str, float],
) -> dict[str, Any]:
    """Write the manifest last, then put the whole folder in place: a folder with a manifest is complete."""
    manifest = {
        "fingerprint": key,
        "started_at": started_at,
        "now": now,
        "kept": accepted.kept,
        "present": accepted.present,
        "invalid": [[r.line, r.reason, r.path, r.hint] for r in accepted.invalid],
        "warnings": [[w.line, w.reason, w.path, w.hint] for w in accepted.warnings],
        "workers": workers,
        "seconds": seconds,
    }
    atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    if vectors.exists():
        shutil.rmtree(vectors)
    os.replace(staging, vectors)
    fsync_dir(work)
    return manifest
