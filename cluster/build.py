"""Bulk build (backfill) of an index: read, embed, group window by window, reconcile story ids, store.

Two engines run the same steps: ``local`` in this process (:func:`build_local`) and ``ray`` on a Ray
cluster (:mod:`cluster.ray_engine`). Everything that decides the result lives here, so both give the
same stories and the same ids; the engines only decide where each step runs.

**Story and event ids: the cron path, replayed.** A build gives the ids that the README's cron path
would give the same headlines: ``index add`` of each UTC day's headlines in row order, then ``nightly``
over the 48 hours up to that day's end (:func:`replay_ids`). It runs those very functions (online
assignment, :func:`cluster.regroup.regroup_window`) in a scratch index beside the target, fed the
build's vectors, and stores what they leave: so ``index build`` and add + nightly day by day give the
same partition at both levels and the same ids, by construction. Rows follow time, then input order
(file by file, line by line); a headline without a time takes the build's start as its time (as
``index add`` takes the moment of adding) and is scored without one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .embed import Embedder, EmbeddingCache, variant_of_model_id
from .errors import HeadlineClusterError, InputError
from .limits import MAX_HEADLINE_CHARS
from .nightly import run_nightly
from .pipeline import EmbedderLike
from .records import InvalidRow, ReadWarning, Record, content_id, derived_id, read_records
from .store import HeadlineIndex, iso
from .store.bulk import BuiltHeadlines
from .store.pending import pending

DAY = 86400
SEQ_SHIFT = 32  # seq = file number << 32 | position in the file: input order as one integer
EMBED_STEP = 256  # headlines embedded between two progress reports
_DUPLICATE_HINT = "ids must be unique; remove the repeated row or give it its own id"

Progress = Callable[[int, int], None]


class EngineUnavailable(HeadlineClusterError):
    """The engine asked for cannot run here (its optional packages are missing)."""


@dataclass(frozen=True)
class ReadOptions:
    """How input files are read: as ``index add`` reads them."""

    input_format: str | None = None
    text_field: str | None = None
    id_field: str = "id"
    time_field: str = "published_at"
    source_field: str = "source"
    url_field: str = "url"
    skip_invalid: bool = False
    required_fields: tuple[str, ...] = ()  # the roles the user named (cluster.records.read_records)


class _NoCache(EmbeddingCache):
    """Keeps nothing: a backfill's texts are mostly new, and a cache would only grow with the input."""

    def get_many(self, model_id: str, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        return {}

    def put_many(self, model_id: str, items: dict[bytes, np.ndarray]) -> None:
        return None


@dataclass(frozen=True)
class EmbedderSpec:
    """What each worker embeds with: a model (and variant), or an embedder passed in (tests, programs).

    Pickled to Ray actors, which build their own model from it: one model per actor.
    """

    model: str
    quantize: str | None = None
    given: Any = None  # an EmbedderLike, used as it is

    @classmethod
    def for_index(cls, index: HeadlineIndex, given: EmbedderLike | None = None) -> EmbedderSpec:
        """The index's model, in the variant its vectors came from (the default one for an empty index)."""
        stored = index.model_id
        return cls(index.model, None if stored is None else variant_of_model_id(stored), given)

    def make(self, *, quiet: bool = True) -> EmbedderLike:
        if self.given is not None:
            return self.given
        return Embedder(self.model, cache=_NoCache(), quantize=self.quantize, quiet=quiet)


# -- reading -------------------------------------------------------------------------------------------


@dataclass
class FilePart:
    """One input file read and validated by the product's reader."""

    number: int
    name: str
    records: list[Record]
    invalid: list[InvalidRow]
    warnings: list[ReadWarning]

    def seqs(self) -> list[int]:
        return [(self.number << SEQ_SHIFT) | position for position in range(len(self.records))]


def read_part(path: str, number: int, options: ReadOptions, base: str | None = None) -> FilePart:
    """Read file ``number`` of the build as ``index add`` reads it (InputError on bad input unless
    ``options.skip_invalid``). A relative ``path`` is opened under ``base`` when given (a Ray worker does
    not run in the driver's folder); messages name it as given."""
    read = read_records(
        path if base is None or Path(path).is_absolute() else Path(base) / path,
        input_format=options.input_format,
        text_field=options.text_field,
        id_field=options.id_field,
        time_field=options.time_field,
        source_field=options.source_field,
        url_field=options.url_field,
        skip_invalid=options.skip_invalid,
        required_fields=options.required_fields,
        max_chars=MAX_HEADLINE_CHARS,
        reject_long=True,  # as cluster.store.read_input: an index stores text as given, never cut
        name=path,
    )
    return FilePart(number, read.name, read.records, read.invalid, read.warnings)


@dataclass
class FileMeta:
    """What the driver needs of a file's records to find repeats across files (no text, no vectors)."""

    number: int
    name: str
    ids: list[str | None]  # the input's own ids
    lines: list[int]
    contents: list[str]  # content_id of each text
    derived: list[str]  # the id each record gets when it has none (its URL, else content_id)
    invalid: list[InvalidRow]
    warnings: list[ReadWarning]


def file_meta(part: FilePart) -> FileMeta:
    return FileMeta(
        part.number,
        part.name,
        [r.id for r in part.records],
        [r.line for r in part.records],
        [content_id(r.text) for r in part.records],
        [derived_id(r.text, r.url) for r in part.records],
        part.invalid,
        part.warnings,
    )


@dataclass
class Accepted:
    """The build's input after repeats across files: which records to leave out, and why."""

    drop: set[int] = field(default_factory=set)  # seqs
    invalid: list[InvalidRow] = field(default_factory=list)
    warnings: list[ReadWarning] = field(default_factory=list)
    present: int = 0  # repeats of a headline already in the input (same id, same text)
    kept: int = 0


def accept(metas: Sequence[FileMeta], skip_invalid: bool) -> Accepted:
    """Repeats across files, as ``index add`` treats them: an id given twice is a duplicate row (an error, or
    skipped with ``skip_invalid``), the same text without an id or URL is the same headline (counted present)."""
    result = Accepted()
    first_seen: dict[str, str] = {}
    contents: dict[str, str] = {}
    for meta in sorted(metas, key=lambda m: m.number):
        result.invalid.extend(meta.invalid)
        result.warnings.extend(meta.warnings)
        rows = zip(meta.ids, meta.lines, meta.contents, meta.derived, strict=True)
        for position, (given, line, content, derived) in enumerate(rows):
            seq = (meta.number << SEQ_SHIFT) | position
            if given is not None:
                if given in first_seen:
                    reason = f"duplicate id {given!r} (first seen at {first_seen[given]})"
                    if not skip_invalid:
                        raise InputError(reason, path=meta.name, line=line, hint=_DUPLICATE_HINT)
                    result.invalid.append(InvalidRow(line, reason, meta.name, _DUPLICATE_HINT))
                    result.drop.add(seq)
                    continue
                first_seen[given] = f"{meta.name}:{line}"
            key = given if given is not None else derived
            if key in contents:
                if contents[key] != content:
                    raise InputError(
                        f"id {key!r} is also the id derived from another headline's text", path=meta.name, line=line
                    )
                result.present += 1
                result.drop.add(seq)
                continue
            contents[key] = content
            result.kept += 1
    return result


# -- embedding -----------------------------------------------------------------------------------------


@dataclass
class Embedded:
    """Headlines ready to group and store, column by column."""

    seq: np.ndarray  # int64
    ids: list[str]
    texts: list[str]
    normalized: list[str]
    keys: list[bytes]
    published_at: list[str | None]
    t: np.ndarray  # float64 Unix seconds: what windows and rows use
    when: np.ndarray  # float64 publication time, NaN where unknown: what scores use
    sources: list[str | None]
    urls: list[str | None]
    vectors: np.ndarray  # float32 (n, dimension)

    def __len__(self) -> int:
        return len(self.seq)

    def days(self) -> np.ndarray:
        return np.floor(self.t / DAY).astype(np.int64)

    def take(self, positions: np.ndarray) -> Embedded:
        picks = [int(p) for p in positions]
        return Embedded(
            self.seq[positions],
            [self.ids[p] for p in picks],
            [self.texts[p] for p in picks],
            [self.normalized[p] for p in picks],
            [self.keys[p] for p in picks],
            [self.published_at[p] for p in picks],
            self.t[positions],
            self.when[positions],
            [self.sources[p] for p in picks],
            [self.urls[p] for p in picks],
            self.vectors[positions],
        )

    def in_row_order(self) -> Embedded:
        return self.take(np.lexsort((self.seq, self.t)))

    @classmethod
    def concat(cls, parts: Sequence[Embedded], dimension: int) -> Embedded:
        if not parts:
            return cls.empty(dimension)
        return cls(
            np.concatenate([p.seq for p in parts]),
            *([x for p in parts for x in getattr(p, name)] for name in ("ids", "texts", "normalized", "keys")),
            [x for p in parts for x in p.published_at],
            np.concatenate([p.t for p in parts]),
            np.concatenate([p.when for p in parts]),
            [x for p in parts for x in p.sources],
            [x for p in parts for x in p.urls],
            np.concatenate([p.vectors for p in parts]),
        )

    @classmethod
    def empty(cls, dimension: int) -> Embedded:
        none = np.zeros(0)
        return cls(np.zeros(0, dtype=np.int64), [], [], [], [], [], none, none, [], [], np.zeros((0, dimension)))


def embed_records(
    records: Sequence[Record],
    seqs: Sequence[int],
    embedder: EmbedderLike,
    now: float,
    done: Callable[[int], None] | None = None,
) -> Embedded:
    """Normalize and embed ``records`` as ``index add`` does (:func:`cluster.store.pending`), in steps of
    :data:`EMBED_STEP`; ``done(n)`` is told as they finish. A text's vector does not depend on the texts
    embedded beside it (the default model), so any split of the input gives the same vectors."""
    entries = [pending(record, position) for position, record in enumerate(records)]
    parts = []
    for start in range(0, len(entries), EMBED_STEP):
        step = [e.normalized for e in entries[start : start + EMBED_STEP]]
        parts.append(np.asarray(embedder.encode(step), dtype=np.float32))
        if done is not None:
            done(len(step))
    vectors = np.concatenate(parts) if parts else np.zeros((0, embedder.dimension), dtype=np.float32)
    known = [e.t is not None for e in entries]
    return Embedded(
        np.asarray(seqs, dtype=np.int64),
        [e.id for e in entries],
        [e.record.text for e in entries],
        [e.normalized for e in entries],
        [e.key for e in entries],
        [e.published_at for e in entries],
        np.array([e.t if e.t is not None else now for e in entries], dtype=np.float64),
        np.array([e.t if k else np.nan for e, k in zip(entries, known, strict=True)], dtype=np.float64),
        [e.record.source for e in entries],
        [e.record.url for e in entries],
        vectors,
    )


# -- story and event ids: the cron path, replayed ----------------------------------------------------------


NIGHTLY_LAST = 48 * 3600  # the window of the nightly run after each day (the README's cron line: --last 48h)


class _Vectors:
    """An embedder that only hands back the build's vectors (by normalized text): the replay embeds nothing."""

    def __init__(self, name: str, model_id: str, table: Embedded):
        self.name = name
        self.model_id = model_id
        self.dimension = int(table.vectors.shape[1])
        self._by_text = dict(zip(table.normalized, table.vectors, strict=True))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._by_text[t] for t in texts]).astype(np.float32)


@dataclass
class Ids:
    """The replay's outcome: story and event id by seq, and the counters after them."""

    stories: dict[int, str]
    events: dict[int, str]
    next_story: int
    next_event: int
    days: int


def replay_ids(index: HeadlineIndex, table: Embedded, model_id: str) -> Ids:
    """The ids ``index add`` of each UTC day's headlines (in row order) followed by ``nightly`` over the
    48 hours up to that day's end would give, the README's cron path, run in a scratch index beside
    ``index`` with its settings: the same functions (:class:`cluster.store.NestedAssigner`,
    :func:`cluster.nightly.run_nightly`) in the same order over the same windows, so a build and a feed
    indexed day by day hold the same events, stories and ids, the index's corrections honoured as nightly
    honours them. ``table`` is in row order."""
    scratch = index.path / "build" / "replay"
    shutil.rmtree(scratch, ignore_errors=True)  # a killed build's leftovers
    scratch.parent.mkdir(parents=True, exist_ok=True)
    embedder = _Vectors(index.model, model_id, table)
    days = table.days()
    corrections = index.corrections()  # the target's: the scratch index holds no corrections of its own
    try:
        with HeadlineIndex.open(
            scratch,
            create=True,
            embedder=embedder,
            threshold=index.threshold,
            level=index.level,
            window=index.window,
            notify=lambda _: None,
        ) as replay:
            present = np.unique(days)
            for day in present.tolist():
                part = np.flatnonzero(days == day)
                replay.add([_as_mapping(table, int(p)) for p in part], commit_every=max(1, len(part)))
                end = (day + 1) * DAY
                run_nightly(
                    replay,
                    datetime.fromtimestamp(end - NIGHTLY_LAST, tz=timezone.utc),
                    datetime.fromtimestamp(end, tz=timezone.utc),
                    corrections=corrections,
                )
            stored = {h.id: (h.story_id, h.event_id) for h in replay.headlines()}
            next_story, next_event = replay.next_story_number(), replay.next_event_number()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    seqs = table.seq.tolist()
    return Ids(
        {s: stored[i][0] for s, i in zip(seqs, table.ids, strict=True)},
        {s: stored[i][1] for s, i in zip(seqs, table.ids, strict=True)},
        next_story,
        next_event,
        len(np.unique(days)),
    )


def _as_mapping(table: Embedded, p: int) -> dict[str, Any]:
    published = table.published_at[p]
    return {
        "id": table.ids[p],
        "text": table.texts[p],
        "published_at": None if published is None else datetime.fromisoformat(published.replace("Z", "+00:00")),
        "source": table.sources[p],
        "url": table.urls[p],
    }


# -- the build -------------------------------------------------------------------------------------------


def fingerprint(files: Sequence[str], options: ReadOptions, model_id: str, index: HeadlineIndex) -> str:
    """What makes two builds the same build: the input files as they are now, how they are read, the model
    and the index's judgement and window."""
    described = []
    for name in files:
        path = Path(name)
        try:
            stat = path.stat()
            described.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
        except OSError:
            described.append([name, None, None])  # reading reports it
    settings = [model_id, index.level, index.threshold, index.linkage, index.window.total_seconds()]
    # Which fields were named explicitly changes no headline read (only whether a missing one is an error).
    reading = {k: v for k, v in asdict(options).items() if k != "required_fields"}
    text = json.dumps([described, reading, settings], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass
class BuildResult:
    engine: str
    headlines: int = 0  # stored
    present: int = 0  # repeated in the input
    invalid: list[InvalidRow] = field(default_factory=list)
    warnings: list[ReadWarning] = field(default_factory=list)
    stories: int = 0
    events: int = 0
    windows: int = 0  # days replayed (each: add, then nightly)
    already_built: bool = False
    resumed: bool = False  # the embedded vectors of an interrupted run were reused
    seconds: dict[str, float] = field(default_factory=dict)  # per stage
    workers: dict[str, dict[str, float]] = field(default_factory=dict)  # per actor: headlines, seconds
    work_dir: Path | None = None

    @property
    def elapsed(self) -> float:
        return sum(self.seconds.values())


def check_target(index: HeadlineIndex, key: str) -> BuildResult | None:
    """None when the index can take this build; a result saying so when it already holds this very build.
    An index that holds other headlines is an error: a build does not mix with online assignment."""
    held = index.count()
    if not held:
        return None
    done = index.last_build()
    if done is not None and done.get("fingerprint") == key:
        return BuildResult("none", headlines=held, stories=int(done.get("stories", 0)), already_built=True)
    raise InputError(
        f"index build fills a new or empty index; this one holds {held:,} headline(s)",
        path=str(index.path),
        hint="use index add to add headlines to it, or build into a new folder",
    )


def store_build(
    index: HeadlineIndex,
    batches: Iterable[Embedded],
    ids: Ids,
    *,
    model_id: str,
    dimension: int,
    summary: dict[str, Any],
) -> int:
    """Insert the batches (already in row order) with their story and event ids: one transaction."""

    def built() -> Iterator[BuiltHeadlines]:
        for batch in batches:
            yield BuiltHeadlines(
                batch.ids,
                batch.texts,
                batch.normalized,
                batch.keys,
                batch.published_at,
                batch.t,
                batch.sources,
                batch.urls,
                batch.vectors,
                [ids.stories[int(s)] for s in batch.seq],
                [ids.events[int(s)] for s in batch.seq],
            )

    return index.bulk_insert(
        built(),
        model_id=model_id,
        dimension=dimension,
        next_story=ids.next_story,
        next_event=ids.next_event,
        summary=summary,
    )


def build_local(
    index: HeadlineIndex,
    files: Sequence[str],
    options: ReadOptions,
    spec: EmbedderSpec,
    *,
    progress: Progress | None = None,
    quiet: bool = False,
) -> BuildResult:
    """The whole build in this process. Nothing is written until the end, so a killed build leaves the
    index as it was and simply runs again."""
    result = BuildResult("local")
    clock = time.monotonic()
    embedder = spec.make(quiet=quiet)
    key = fingerprint(files, options, embedder.model_id, index)
    done = check_target(index, key)
    if done is not None:
        return done
    started_at, now = _now()
    parts = [read_part(path, number, options) for number, path in enumerate(files)]
    accepted = accept([file_meta(p) for p in parts], options.skip_invalid)
    result.invalid, result.warnings, result.present = accepted.invalid, accepted.warnings, accepted.present
    result.seconds["read"] = time.monotonic() - clock
    clock = time.monotonic()
    total = accepted.kept
    count = [0]

    def embedded(n: int) -> None:
        count[0] += n
        if progress is not None:
            progress(count[0], total)

    chunks = []
    for part in parts:
        keep = [(r, s) for r, s in zip(part.records, part.seqs(), strict=True) if s not in accepted.drop]
        if keep:
            chunks.append(embed_records([r for r, _ in keep], [s for _, s in keep], embedder, now, embedded))
    table = Embedded.concat(chunks, embedder.dimension).in_row_order()
    result.seconds["embed"] = time.monotonic() - clock
    clock = time.monotonic()
    ids = replay_ids(index, table, embedder.model_id)
    result.seconds["group"] = time.monotonic() - clock
    clock = time.monotonic()
    result.windows = ids.days
    result.stories = len(set(ids.stories.values()))
    result.events = len(set(ids.events.values()))
    summary = build_summary(result, key, started_at, total)
    result.headlines = store_build(
        index, [table], ids, model_id=embedder.model_id, dimension=embedder.dimension, summary=summary
    )
    result.seconds["store"] = time.monotonic() - clock
    return result


def build_summary(result: BuildResult, key: str, started_at: str, total: int) -> dict[str, Any]:
    return {
        "fingerprint": key,
        "engine": result.engine,
        "started_at": started_at,
        "headlines": total,
        "stories": result.stories,
        "events": result.events,
        "windows": result.windows,
        "present": result.present,
        "invalid": len(result.invalid),
        # Per stage, up to grouping: the store's own time is not known until its transaction is done.
        "seconds": {stage: round(spent, 2) for stage, spent in result.seconds.items()},
    }


def _now() -> tuple[str, float]:
    """The build's start: as text for the run record, and the time of headlines that have none."""
    moment = time.time()
    return iso(moment), moment
