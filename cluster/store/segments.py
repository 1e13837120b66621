"""Segment files: the search index of an index folder as immutable FAISS files under ``segments/``.

Each write operation that adds headlines writes their vectors to a new file (``segments/000042.faiss``)
and never touches the older ones, so an add costs what it adds, not the size of the index. Every
segment covers a range of headline rows ``(low, high]``: the ranges of the manifest partition the rows
from 0 up to the highest one written, so a row is in exactly one segment, and the rows the database
holds above the last ``high`` are the ones the files lack (an interrupted run), nothing else.

The **manifest** (the list of segments with each one's range, vector count, kind and checksum) is a
row of the database's ``meta`` table, committed after the file is fsynced: SQLite makes it atomic, a
reader's snapshot sees one consistent list, and a file not in the manifest is an orphan (a run killed
between the file and the commit) that the next writer deletes. A file is never rewritten: a segment that
is repaired or compacted gets a new file and a new name, so a reader that is reading the old one reads
it whole or finds it gone and reads the manifest again.

Rows are never reused (``meta`` ``next_row``), so a vector whose headline was removed can stay in its
segment as a tombstone: searches join hits with the headlines table, which drops it, and compaction
leaves it out when it writes the segment again. Nothing has to delete from a file in place.
"""

from __future__ import annotations

import contextlib
import heapq
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .ann import Neighbor, VectorIndex

SEGMENTS_DIR = "segments"
MAX_FLAT_SEGMENTS = 24
"""More flat segments than this after an add and the add merges the newest run of them into one flat
file. Each search visits every segment; a service that adds one headline per request would otherwise
leave thousands of one-vector files between two nightly runs. Merging flat files builds no graph: it
costs reading and writing the run's vectors, at most a day's adds."""
TOMBSTONE_SHARE = 0.3
"""A segment whose removed vectors exceed this share is written again without them at compaction."""
GRAPH_MERGE_RATIO = 4
"""Two neighbouring approximate segments merge at compaction when the newer holds at least 1/4 of the
older's vectors. Merging adds the newer's vectors to the older's index (each goes to its cell), so its
cost is the newer's size plus writing the result; the ratio keeps segment sizes geometric: a few
segments at any size, each vector written again a few times."""


@dataclass(frozen=True)
class Segment:
    """One manifest entry: the file ``name`` holds the vectors of headline rows in ``(low, high]``."""

    name: str
    low: int
    high: int
    vectors: int
    kind: str
    checksum: str
    bytes: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Segment:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def segment_name(number: int) -> str:
    return f"{number:06d}.faiss"


def parse_manifest(value: Any) -> list[Segment] | None:
    """The manifest stored in ``meta``; None when there is none (an index written before segments)."""
    if value is None:
        return None
    return [Segment.from_dict(entry) for entry in value]


def manifest_value(segments: Sequence[Segment]) -> list[dict[str, Any]]:
    return [segment.to_dict() for segment in segments]


def covered_high(segments: Sequence[Segment]) -> int:
    """The highest row the segments cover: rows above it are in no file yet."""
    return max((s.high for s in segments), default=0)


LEGACY = "../vectors.faiss"
"""The name, relative to ``segments/``, of the one file of an index written before segments."""


def label(segment: Segment) -> str:
    """How messages name a segment's file, relative to the index folder."""
    return "vectors.faiss" if segment.name == LEGACY else f"{SEGMENTS_DIR}/{segment.name}"


def quick_problem(path: Path, segment: Segment) -> str | None:
    """What a ``stat`` shows wrong with a segment file (missing, or not the recorded size); None if nothing.

    A writer checks this much before each operation, at no cost that grows with the index; checksums
    (garbled bytes of the right length) are checked when a segment is read: by queries, ``index check``,
    ``nightly`` and ``repair``.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"{label(segment)} is missing"
    if size != segment.bytes:
        return f"{label(segment)} does not match the checksum in the database (truncated, corrupt or stale)"
    return None


def segment_path(folder: Path, segment: Segment) -> Path:
    """Where a segment's file is, ``folder`` being the index folder."""
    return folder / "vectors.faiss" if segment.name == LEGACY else folder / SEGMENTS_DIR / segment.name


def orphans(folder: Path, segments: Iterable[Segment]) -> list[Path]:
    """Files under ``segments/`` that the manifest does not name: left by a killed run, or superseded."""
    if not folder.is_dir():
        return []
    named = {s.name for s in segments}
    return [p for p in folder.iterdir() if p.is_file() and p.name not in named]


def remove_files(paths: Iterable[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):  # another process removed it first
            os.unlink(path)


class SegmentedIndex:
    """The searchable union of loaded segments (and of rows caught up in memory): what queries search."""

    def __init__(self, dimension: int, parts: Sequence[tuple[Segment | None, VectorIndex]]):
        self.dimension = dimension
        self.parts = list(parts)

    def __len__(self) -> int:
        return sum(len(vi) for _, vi in self.parts)

    @property
    def kind(self) -> str:
        """The approximate kind (``ivf``, ``hnsw``) when one holds part of the vectors, else ``flat``."""
        return next((vi.kind for _, vi in self.parts if vi.kind != "flat"), "flat")

    @property
    def exact(self) -> bool:
        return all(vi.exact for _, vi in self.parts)

    def ids(self) -> np.ndarray:
        if not self.parts:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([vi.ids() for _, vi in self.parts])

    def search(self, queries: np.ndarray, k: int) -> list[list[Neighbor]]:
        """The ``k`` best of every segment's ``k`` best, best first (segments hold disjoint rows)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        found = [vi.search(queries, k) for _, vi in self.parts if len(vi)]
        if not found:
            return [[] for _ in range(len(queries))]
        if len(found) == 1:
            return found[0]
        return [
            heapq.nlargest(k, (n for part in found for n in part[q]), key=lambda n: n.score)
            for q in range(len(queries))
        ]


def compaction_plan(
    segments: Sequence[Segment], live: Mapping[str, int], ann_min_size: int, ann_kind: str
) -> list[tuple[list[Segment], str, str]]:
    """Which neighbouring segments to write again as one, and how: ``(run, kind, how)`` each.

    ``live``: the live (not removed) vectors of each segment. ``how`` is ``rebuild`` (a new index of the
    run's live rows, read from the database) or ``extend`` (the first segment's approximate index with
    the others' vectors added: extended, not built again). ``ann_kind`` is the approximate kind large
    segments get. The plan, in order:

    1. a segment with more than :data:`TOMBSTONE_SHARE` removed vectors is rebuilt without them;
    2. every run of neighbouring flat segments becomes one segment, approximate once it reaches
       ``ann_min_size`` (that is when nightly turns a growing index approximate), and taken straight
       into the approximate segment before it when it holds 1/:data:`GRAPH_MERGE_RATIO` of that one's;
    3. an approximate segment followed by one holding at least 1/:data:`GRAPH_MERGE_RATIO` of its
       vectors takes them in.
    """
    plan: list[tuple[list[Segment], str, str]] = []
    taken: set[str] = set()
    heavy = {s.name for s in segments if s.vectors and s.vectors - live.get(s.name, 0) > TOMBSTONE_SHARE * s.vectors}
    for segment in segments:
        # A flat one is read back from SQLite by step 2 anyway, which leaves its tombstones out.
        if segment.name in heavy and segment.kind != "flat":
            kind = ann_kind if live.get(segment.name, 0) >= ann_min_size else "flat"
            plan.append(([segment], kind, "rebuild"))
            taken.add(segment.name)
    run: list[Segment] = []
    for position, segment in enumerate([*segments, None]):
        if segment is not None and segment.kind == "flat" and segment.name not in taken:
            run.append(segment)
            continue
        total = sum(live.get(s.name, 0) for s in run)
        before = segments[position - len(run) - 1] if position > len(run) else None
        if (
            total >= ann_min_size
            and before is not None
            and before.kind == ann_kind
            and before.name not in taken
            and GRAPH_MERGE_RATIO * total >= live.get(before.name, 0)
        ):
            # Straight into the graph before the run: building a graph of the run first and then
            # adding it to that one would insert every vector twice.
            plan.append(([before, *run], ann_kind, "extend"))
            taken.update(s.name for s in [before, *run])
        elif len(run) > 1 or (run and total >= ann_min_size) or any(s.name in heavy for s in run):
            plan.append((run, ann_kind if total >= ann_min_size else "flat", "rebuild"))
            taken.update(s.name for s in run)
        run = []
    graphs = [s for s in segments if s.kind == ann_kind and s.name not in taken]
    index = 0
    while index + 1 < len(graphs):
        older, newer = graphs[index], graphs[index + 1]
        neighbours = segments.index(newer) == segments.index(older) + 1
        if neighbours and GRAPH_MERGE_RATIO * live.get(newer.name, 0) >= live.get(older.name, 0):
            plan.append(([older, newer], ann_kind, "extend"))
            index += 2
        else:
            index += 1
    return plan
