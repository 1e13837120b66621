"""The search index of an index folder: segment files derived from the database and kept in step with it.

The vectors live in the database (``embeddings``); the files under ``segments/`` (:mod:`.segments`) are
derived from it and only ever written whole, each under a new name, with its checksum, row range and
count recorded in the manifest in ``meta`` afterwards. Three costs decide the design:

* a **write operation** (``add``, ``remove``) never reads the older segments: it ``stat``s them (missing
  or truncated files are rebuilt from SQLite), writes the rows it committed as one new file, and
  leaves removed rows in their segments as tombstones; the rows a killed run committed without writing
  them are caught up from SQLite at the next operation;
* a **reader** (``query``) reads each segment once, checks its checksum, and keeps it while the
  manifest names it: a long-running service reads only the files that are new since its last query.
  A damaged segment is rebuilt from SQLite, on disk when no writer is busy, else in memory;
* **maintenance** (``nightly``, ``repair``) checks every checksum and compacts (:func:`compaction_plan`):
  small files merge, a large flat run becomes an approximate (``ivf``) segment, which takes in the
  segments after it, and tombstones go.

An index written before segments has one ``vectors.faiss``: it is read as a one-segment manifest, and
the first writer links it into ``segments/`` (no copy, no rebuild) and records the manifest.
"""

from __future__ import annotations

import contextlib
import os
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IndexDamagedError
from ..fsutil import fsync_dir
from . import ann
from .ann import VectorIndex
from .schema import DB_FILE, FAISS_FILE, Database, iso
from .segments import (
    LEGACY,
    MAX_FLAT_SEGMENTS,
    SEGMENTS_DIR,
    Segment,
    SegmentedIndex,
    compaction_plan,
    covered_high,
    label,
    manifest_value,
    orphans,
    parse_manifest,
    quick_problem,
    remove_files,
    segment_name,
    segment_path,
)

TryLock = Callable[[], contextlib.AbstractContextManager[bool]]
_FETCH = 50_000  # rows per fetch when reading vectors back: bounds the Python objects alive at once


def file_checksum(path: Path) -> str:
    # CRC32 reads a gigabyte in about a second; it guards against truncation and torn writes, not attacks.
    crc = 0
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return f"{size}-{crc:08x}"


class VectorFile:
    """The segments of one index folder: the manifest, the files, and the segments this object has read."""

    def __init__(self, folder: Path, db: Database, *, notify: Callable[[str], None], try_lock: TryLock):
        self.folder = folder
        self.dir = folder / SEGMENTS_DIR
        self.db = db
        self._notify = notify
        self._try_lock = try_lock
        self._loaded: dict[str, tuple[str, VectorIndex]] = {}  # name -> (checksum it was read with, index)
        self._rebuilt: dict[str, VectorIndex] = {}  # damaged segments a reader rebuilt in memory, unsaved
        self._memory: tuple[int, VectorIndex] | None = None  # a reader's catch-up: (covered from, rows above)
        self._buffer: list[tuple[np.ndarray, np.ndarray]] = []  # rows this writer committed, not yet in a file
        self._stale: set[int] = set()  # rows whose stored vector changed (repair): their segments are redone

    def _path(self, segment: Segment) -> Path:
        return segment_path(self.folder, segment)

    # -- database side ---------------------------------------------------------------------------------

    def _dimension(self) -> int | None:
        return self.db.meta("dimension")

    def all_rows(self) -> np.ndarray:
        return np.array([r for (r,) in self.db.execute("SELECT row FROM headlines ORDER BY row")], dtype=np.int64)

    def _top_row(self) -> int:
        return int(self.db.execute("SELECT coalesce(max(row), 0) FROM headlines").fetchone()[0])

    def _live(self, segment: Segment) -> int:
        return int(
            self.db.execute(
                "SELECT count(*) FROM headlines WHERE row > ? AND row <= ?", (segment.low, segment.high)
            ).fetchone()[0]
        )

    def _rows_between(self, low: int, high: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows in ``(low, high]`` and their vectors, filled into one array (no second copy of them all)."""
        top = self._top_row() if high is None else high
        dimension = self._dimension() or 0
        count = self._count_between(low, top)
        rows = np.empty(count, dtype=np.int64)
        vectors = np.empty((count, dimension), dtype=np.float32)
        cursor = self.db.execute(
            "SELECT h.row, e.vector FROM headlines h JOIN embeddings e ON e.text_key = h.text_key "
            "WHERE h.row > ? AND h.row <= ? ORDER BY h.row",
            (low, top),
        )
        filled = 0
        for row, blob in cursor:
            if filled == count:  # a row committed since the count: the next operation catches it up
                break
            rows[filled] = row
            vectors[filled] = np.frombuffer(blob, dtype=np.float32)
            filled += 1
        return rows[:filled], vectors[:filled]

    def _count_between(self, low: int, high: int) -> int:
        return int(
            self.db.execute(
                "SELECT count(*) FROM headlines h JOIN embeddings e ON e.text_key = h.text_key "
                "WHERE h.row > ? AND h.row <= ?",
                (low, high),
            ).fetchone()[0]
        )

    # -- the manifest ----------------------------------------------------------------------------------

    def _manifest(self) -> tuple[list[Segment], bool]:
        """(the segments the database names, whether that is an index's ``vectors.faiss`` of before)."""
        parsed = parse_manifest(self.db.meta("segments"))
        if parsed is not None:
            return parsed, False
        checksum = self.db.meta("faiss_checksum")
        if checksum is None and not (self.folder / FAISS_FILE).exists():
            return [], False
        legacy = Segment(
            name=LEGACY,
            low=0,
            high=int(self.db.meta("faiss_max_row") or 0),
            vectors=int(self.db.meta("faiss_rows") or 0),
            kind=self.db.meta("faiss_kind") or "flat",
            checksum=checksum or "",
            bytes=int(checksum.split("-")[0]) if checksum else -1,
        )
        return [legacy], True

    def _record(self, segments: Sequence[Segment]) -> None:
        """Commit the manifest (files already fsynced), then delete the files it no longer names."""
        with self.db.transaction():
            self.db.set_meta({"segments": manifest_value(segments), "faiss_checksum": None})
        remove_files(orphans(self.dir, segments))
        legacy = self.folder / FAISS_FILE
        if legacy.exists() and all(s.name != LEGACY for s in segments):
            legacy.unlink()
            fsync_dir(self.folder)

    def _next_name(self) -> str:
        # Names are never reused while a manifest may name them: past every file there and every number
        # handed out before (a name of a file that was superseded and deleted could still be in a
        # reader's older manifest).
        used = [int(p.stem) for p in self.dir.glob("*.faiss") if p.stem.isdigit()] if self.dir.is_dir() else []
        number = max([int(self.db.meta("next_segment") or 1), *(u + 1 for u in used)])
        with self.db.transaction():
            self.db.set_meta({"next_segment": number + 1})
        return segment_name(number)

    def _write(self, vi: VectorIndex, low: int, high: int) -> Segment:
        """Write ``vi`` as a new segment file covering rows ``(low, high]`` (not yet in the manifest)."""
        name = self._next_name()
        path = self.dir / name
        vi.save(path)
        checksum = file_checksum(path)
        segment = Segment(name, low, high, len(vi), vi.kind, checksum, path.stat().st_size)
        self._loaded[name] = (checksum, vi)
        return segment

    def _migrate(self, legacy: Segment) -> list[Segment]:
        """Move an index's ``vectors.faiss`` of before into ``segments/``: a hard link, no copy."""
        source = self.folder / FAISS_FILE
        if quick_problem(self._path(legacy), legacy) is not None:
            return [legacy]  # missing or truncated: rebuilt like any damaged segment
        name = self._next_name()
        self.dir.mkdir(exist_ok=True)
        target = self.dir / name
        target.unlink(missing_ok=True)
        os.link(source, target)
        fsync_dir(self.dir)
        moved = Segment(name, legacy.low, legacy.high, legacy.vectors, legacy.kind, legacy.checksum, legacy.bytes)
        self._record([moved])  # ... and only then is the old name removed
        if LEGACY in self._loaded:
            self._loaded[name] = self._loaded.pop(LEGACY)
        return [moved]

    # -- reading segments --------------------------------------------------------------------------------

    def _segment(self, segment: Segment) -> tuple[VectorIndex | None, str | None]:
        """A segment's index, read (and checked against its checksum) once per object."""
        held = self._loaded.get(segment.name)
        if held is not None and held[0] == segment.checksum:
            return held[1], None
        path = self._path(segment)
        problem = quick_problem(self._path(segment), segment)
        if problem is not None:
            return None, problem
        before = os.stat(path)
        if file_checksum(path) != segment.checksum:
            return None, f"{label(segment)} does not match the checksum in {DB_FILE} (truncated, corrupt or stale)"
        try:
            vi = VectorIndex.load(path)
        except Exception:  # faiss raises RuntimeError with C++ text; any failure means the same here
            return None, f"{label(segment)} cannot be read"
        if os.stat(path).st_ino != before.st_ino:
            return None, f"{label(segment)} was replaced while it was read"
        self._loaded[segment.name] = (segment.checksum, vi)
        return vi, None

    def _rebuild(self, segment: Segment, kind: str | None = None) -> VectorIndex:
        """A segment's index made again from the database: its range's live rows."""
        rows, vectors = self._rows_between(segment.low, segment.high)
        kind = kind or segment.kind
        if kind != "flat" and len(rows) < ann.ANN_MIN_SIZE:
            kind = "flat"
        elif kind != "flat":
            kind = ann.ANN_KIND  # a graph of an older file comes back as today's kind
        vi = VectorIndex(self._dimension() or 0, kind=kind, size=len(rows))
        vi.add(rows, vectors)
        return vi

    # -- keeping in step -----------------------------------------------------------------------------------

    def keep_up(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Hold just-committed rows for the new segment written at the end of the operation, so that it
        need not read them back from SQLite."""
        if len(rows):
            self._buffer.append((np.array(rows, dtype=np.int64), np.array(vectors, dtype=np.float32)))

    def mark_stale(self, rows: Sequence[int]) -> None:
        """Rows whose stored vector was replaced (``repair`` embeds damaged ones again): the segments
        holding them are written again by the next :meth:`rewrite`."""
        self._stale.update(int(r) for r in rows)

    def current(
        self, *, announce_lag: bool = False, convert: bool = False, write: bool = True
    ) -> SegmentedIndex | None:
        """Bring the segments in step with the database; the searchable index, or None.

        Writers (``write=True``, lock held) check the files with ``stat`` only, rebuild missing or
        truncated ones, write the rows committed since the last file as a new segment, and return None:
        an add never reads the older segments. ``convert`` (nightly) also reads and checksums every
        segment, compacts them and returns the index. ``announce_lag`` reports rows the files lacked,
        which at the start of an operation means an earlier run was interrupted. Readers
        (``write=False``) get the index of every segment plus the rows no file holds yet (in memory).
        """
        if self._dimension() is None:
            return None
        if not write:
            return self._for_reader()
        self._sync(announce_lag=announce_lag, verify=convert, compact=convert)
        return self._for_reader() if convert else None

    def rewrite(self) -> None:
        """``index repair``: check every segment, rebuild damaged and stale ones, catch up, compact; files
        holding rows the database lost are set aside (renamed ``lost-*``) with a notice."""
        if self._dimension() is not None:
            self._sync(announce_lag=False, verify=True, compact=True, set_aside_lost=True)

    def lost_writes(self, segments: Sequence[Segment]) -> list[tuple[Path, int, int]]:
        """(file, lowest row, highest row) of each file the manifest does not name that holds rows the
        database never handed out (``next_row`` and above): written by commits the database has lost, as
        when its ``-shm`` was removed under a running process. A killed run's leftover file holds rows the
        database has, and a half-written one cannot be read: neither is counted."""
        next_row = int(self.db.meta("next_row") or 1)
        found: list[tuple[Path, int, int]] = []
        for path in orphans(self.dir, segments):
            if path.suffix != ".faiss":
                continue
            try:
                ids = VectorIndex.load(path).ids()
            except Exception:  # half-written by a killed run: no evidence of anything
                continue
            if len(ids) and int(ids.max()) >= next_row:
                found.append((path, int(ids.min()), int(ids.max())))
        return found

    def _sync(self, *, announce_lag: bool, verify: bool, compact: bool, set_aside_lost: bool = False) -> None:
        """The writer's side of :meth:`current` (the caller holds the writer lock)."""
        # Before anything is written or deleted: a process whose database files were replaced under it
        # would take the other processes' segment files for leftovers and delete them.
        self.db.check_files()
        segments, legacy = self._manifest()
        for path, low, high in self.lost_writes(segments):
            if not set_aside_lost:
                raise LostWritesError(self.folder, path, low, high)
            aside = self.folder / f"lost-{path.name}"
            os.replace(path, aside)
            self._notify(
                f"{path.name} held the vectors of rows {low:,}..{high:,}, which {DB_FILE} had lost: set aside as "
                f"{aside.name}; add again the input of the runs since {_mtime(aside)} (present ids are skipped)"
            )
        changed = False
        if legacy:
            segments = self._migrate(segments[0])
            changed = segments[0].name == LEGACY
        problems: list[str] = []
        stale = self._stale
        kept: list[Segment] = []
        for segment in segments:
            problem = quick_problem(self._path(segment), segment)
            if problem is None and verify:
                problem = self._segment(segment)[1]
            covers_stale = bool(stale) and any(segment.low < r <= segment.high for r in stale)
            if problem is None and not covers_stale and segment.name not in self._rebuilt:
                kept.append(segment)
                continue
            if problem is not None:
                problems.append(problem)
            vi = self._rebuilt.pop(segment.name, None)
            if vi is None or covers_stale:
                vi = self._rebuild(segment)
            kept.append(self._write(vi, segment.low, segment.high))
            changed = True
        self._stale = set()
        segments = kept
        high = covered_high(segments)
        added = self._catch_up(high, graph=compact)
        if added is not None:
            # Rows this object did not commit itself: an earlier run was killed after its commit.
            lacked = added.vectors - sum(len(r) for r, _ in self._buffer if len(r) and r[0] > high)
            if lacked > 0 and (announce_lag or self._buffer):
                self._notify(
                    f"the segment files lacked {lacked:,} headline(s) that {DB_FILE} holds (an interrupted "
                    f"run?): updated them from {DB_FILE}"
                )
            segments.append(added)
            changed = True
        self._buffer = []
        self._memory = None
        if compact:
            merged = self._compact(segments)
            changed = changed or merged != segments
            segments = merged
        elif sum(s.kind == "flat" for s in segments) > MAX_FLAT_SEGMENTS:
            segments = self._merge_flat_tail(segments)
            changed = True
        if changed:
            self._record(segments)
        elif orphans(self.dir, segments):
            remove_files(orphans(self.dir, segments))
        for problem in problems:
            self._notify(f"{problem}: rebuilt it from {DB_FILE}")

    def _catch_up(self, high: int, *, graph: bool = False) -> Segment | None:
        """A new segment of the rows above ``high``: from this writer's buffer when it holds exactly them,
        else read from SQLite (the buffer is then incomplete: rows of a killed run, say). Flat, since an
        add never trains an index; with ``graph`` (maintenance) an approximate one when that many rows call
        for one, rather than a flat file that compaction would read back at once."""
        top = self._top_row()
        if top <= high:
            return None
        pending = [(r, v) for r, v in self._buffer if len(r) and r[0] > high]
        count = self._count_between(high, top)
        if pending and sum(len(r) for r, _ in pending) == count and int(pending[-1][0][-1]) == top:
            rows = np.concatenate([r for r, _ in pending])
            vectors = np.concatenate([v for _, v in pending])
        else:
            rows, vectors = self._rows_between(high, top)
        kind = ann.ANN_KIND if graph and len(rows) >= ann.ANN_MIN_SIZE else "flat"
        vi = VectorIndex(self._dimension() or 0, kind=kind, size=len(rows))
        vi.add(rows, vectors)
        del vectors  # the rows' float32 copy: not needed beside the index while it is written
        return self._write(vi, high, top)

    def _merge_flat_tail(self, segments: list[Segment]) -> list[Segment]:
        """The newest run of flat segments as one flat segment (see :data:`MAX_FLAT_SEGMENTS`)."""
        start = len(segments)
        while start > 0 and segments[start - 1].kind == "flat":
            start -= 1
        run = segments[start:]
        if len(run) < 2:
            return segments
        whole = Segment("", run[0].low, run[-1].high, 0, "flat", "", 0)
        return [*segments[:start], self._write(self._rebuild(whole, "flat"), whole.low, whole.high)]

    def _compact(self, segments: list[Segment]) -> list[Segment]:
        live = {s.name: self._live(s) for s in segments}
        plan = compaction_plan(segments, live, ann.ANN_MIN_SIZE, ann.ANN_KIND)
        replaced: dict[str, Segment] = {}
        dropped: set[str] = set()
        for run, kind, how in plan:
            whole = Segment("", run[0].low, run[-1].high, 0, kind, "", 0)
            if how == "extend":
                vi, problem = self._segment(run[0])
                if vi is None:
                    raise RuntimeError(problem)  # verified moments ago: a file replaced under the lock
                self._loaded.pop(run[0].name, None)  # the graph grows in place: no longer that file's
                for later in run[1:]:
                    vi.add(*self._rows_between(later.low, later.high))
            else:
                vi = self._rebuild(whole, kind)
            replaced[run[0].name] = self._write(vi, whole.low, whole.high)
            dropped.update(s.name for s in run[1:])
        return [replaced.get(s.name, s) for s in segments if s.name not in dropped]

    # -- the reader's side ----------------------------------------------------------------------------------

    def _for_reader(self) -> SegmentedIndex:
        """Every segment (read once, checked) and the rows no file holds yet."""
        dimension = self._dimension() or 0
        problems: dict[str, str] = {}
        for attempt in range(3):
            if attempt:
                time.sleep(0.05 * attempt)  # a writer may have replaced a file between our two reads
            segments, _ = self._manifest()
            parts: list[tuple[Segment | None, VectorIndex]] = []
            problems = {}
            for segment in segments:
                # A copy rebuilt in memory first: the file is still damaged, and reading it costs.
                vi, problem = self._rebuilt.get(segment.name), None
                if vi is None:
                    vi, problem = self._segment(segment)
                if vi is None:
                    problems[segment.name] = problem or "unreadable"
                else:
                    parts.append((segment, vi))
            if not problems:
                break
        for segment in segments:
            if segment.name in problems:
                parts.append((segment, self._repair_for_reader(segment, problems[segment.name])))
        parts.sort(key=lambda part: part[0].low if part[0] is not None else 0)
        high = covered_high(segments)
        if self._memory is None or self._memory[0] != high:
            self._memory = (high, VectorIndex(dimension))
        memory = self._memory[1]
        done = max(high, int(memory.ids().max()) if len(memory) else high)
        if self._top_row() > done:  # one indexed lookup per query when nothing is new
            memory.add(*self._rows_between(done))  # a reader's catch-up stays in memory; a writer writes it
        if len(memory):
            parts.append((None, memory))
        live = [name for name in self._loaded if any(s.name == name for s in segments)]
        self._loaded = {name: self._loaded[name] for name in live}  # let superseded segments go
        return SegmentedIndex(dimension, parts)

    def _repair_for_reader(self, segment: Segment, problem: str) -> VectorIndex:
        vi = self._rebuild(segment)
        with self._try_lock() as locked:
            if locked:  # no writer is busy: write the segment again (_sync says so)
                self._rebuilt[segment.name] = vi
                self._sync(announce_lag=False, verify=True, compact=False)
        if not locked:
            self._rebuilt[segment.name] = vi
            self._notify(
                f"{problem}: searching a copy rebuilt in memory from {DB_FILE} (a writer is busy; "
                "the next write rewrites the file)"
            )
        return vi

    # -- describing ----------------------------------------------------------------------------------------

    def describe(self, rows: np.ndarray, headlines: int) -> dict[str, Any]:
        """The segments' state against the database's ``rows`` (read-only: repairs nothing)."""
        segments, legacy = self._manifest()
        info: dict[str, Any] = {
            "layout": "single file (before segments)" if legacy else "segments",
            "exists": all(self._path(s).exists() for s in segments),
            "recorded_vectors": sum(s.vectors for s in segments),
            "bytes": 0,
            "segments": [],
        }
        found: list[np.ndarray] = []
        outside = 0
        readable = True
        for segment in segments:
            path = self._path(segment)
            entry: dict[str, Any] = {"file": label(segment), "rows": [segment.low, segment.high], "kind": segment.kind}
            if path.exists():
                entry["bytes"] = path.stat().st_size
                info["bytes"] += entry["bytes"]
                entry["checksum_ok"] = file_checksum(path) == segment.checksum
                try:
                    ids = VectorIndex.load(path).ids()
                except Exception:  # unreadable: reported, not raised, so stats still works on a damaged index
                    readable = False
                    entry["readable"] = False
                else:
                    entry["vectors"] = len(ids)
                    outside += int(np.count_nonzero((ids <= segment.low) | (ids > segment.high)))
                    found.append(ids)
            else:
                entry["checksum_ok"] = False
            info["segments"].append(entry)
        held = np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)
        duplicates = sum(len(f) for f in found) - len(held)
        info["checksum_ok"] = all(e["checksum_ok"] for e in info["segments"])
        info["kind"] = next((e["kind"] for e in info["segments"] if e["kind"] != "flat"), "flat")
        info["vectors"] = int(len(np.intersect1d(held, rows, assume_unique=True)))
        info["missing"] = int(len(np.setdiff1d(rows, held)))
        info["tombstones"] = int(len(held) - info["vectors"])  # removed headlines, dropped at compaction
        info["extra"] = int(outside + duplicates)  # vectors where no segment should hold them
        info["lost"] = [
            f"{path.name} holds rows {low:,}..{high:,} that {DB_FILE} never had: it lost committed headlines"
            for path, low, high in self.lost_writes(segments)
        ]
        # Rows only past the last segment, with every file sound: what an interrupted add leaves. The next
        # write or query writes them from the stored vectors, so this is a lag, not damage.
        lacking = np.setdiff1d(rows, held)
        sound = info["exists"] and info["checksum_ok"] and readable and info["extra"] == 0 and not info["lost"]
        tail = len(lacking) > 0 and int(lacking.min()) > covered_high(segments)
        info["behind"] = int(len(lacking)) if sound and tail else 0
        info["in_step"] = not info["lost"] and bool(
            (headlines == 0 and not segments)
            or (info["exists"] and info["checksum_ok"] and readable and info["missing"] == 0 and info["extra"] == 0)
        )
        return info


class LostWritesError(IndexDamagedError):
    """Segment files hold rows the database never had: it lost committed headlines. Writing on would hide
    the evidence (the next writer deletes files the manifest does not name), so writers refuse."""

    def __init__(self, folder: Path, path: Path, low: int, high: int):
        super().__init__(
            f"{DB_FILE} lost headlines it had committed: {path.name} holds the vectors of rows {low:,}..{high:,}, "
            f"written {_mtime(path)}, which the database never had (was its -shm or -wal file removed while a "
            "process had the index open?); nothing was changed",
            path=str(folder),
            hint=f"run headline-cluster index repair --index {folder} (it sets the file aside), then add again the "
            "input of the runs since that time: ids already present are skipped",
        )


def _mtime(path: Path) -> str:
    try:
        return iso(path.stat().st_mtime)
    except OSError:
        return "at an unknown time"


def describe_problem(info: Mapping[str, Any]) -> str:
    """What is wrong with the segments, from :meth:`VectorFile.describe`."""
    for entry in info.get("segments", []):
        if "bytes" not in entry:
            return f"{entry['file']} was missing"
        if not entry["checksum_ok"]:
            return f"{entry['file']} did not match its recorded checksum (truncated, corrupt or stale)"
        if entry.get("readable") is False:
            return f"{entry['file']} could not be read"
    return (
        f"the segment files lacked {info.get('missing', 0):,} headline(s) and held {info.get('extra', 0):,} "
        "vector(s) outside their segments"
    )
