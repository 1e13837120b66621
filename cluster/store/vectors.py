"""The vector file: ``vectors.faiss``, derived from the database and kept in step with it.

The FAISS file is only ever replaced whole (:func:`cluster.fsutil.atomic_file`), and after each write its
row count, highest row and checksum go into ``meta``. Opening compares them with the file and the
headlines table: a missing, truncated or corrupt file is rebuilt from SQLite, a file that lags behind
(killed between a commit and the file write) is brought up to date, and the user is told.
"""

from __future__ import annotations

import contextlib
import os
import time
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import ann
from .ann import VectorIndex
from .schema import DB_FILE, FAISS_FILE, Database, as_vectors

TryLock = Callable[[], contextlib.AbstractContextManager[bool]]


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
    """The search index of one index folder: loaded from (or last written to) the file, plus rows since."""

    def __init__(self, folder: Path, db: Database, *, notify: Callable[[str], None], try_lock: TryLock):
        self.path = folder / FAISS_FILE
        self.db = db
        self._notify = notify
        self._try_lock = try_lock
        self._vi: VectorIndex | None = None
        self._max_row = 0
        self._checksum: str | None = None
        self._unsaved = False  # rows added in memory by this writer that the file lacks

    # -- database side ---------------------------------------------------------------------------------

    def _dimension(self) -> int | None:
        return self.db.meta("dimension")

    def _count(self) -> int:
        return self.db.execute("SELECT count(*) FROM headlines").fetchone()[0]

    def all_rows(self) -> np.ndarray:
        return np.array([r for (r,) in self.db.execute("SELECT row FROM headlines ORDER BY row")], dtype=np.int64)

    def _rows_after(self, max_row: int) -> tuple[np.ndarray, np.ndarray]:
        found = self.db.execute(
            "SELECT h.row, e.vector FROM headlines h JOIN embeddings e ON e.text_key = h.text_key "
            "WHERE h.row > ? ORDER BY h.row",
            (max_row,),
        ).fetchall()
        rows = np.array([r for r, _ in found], dtype=np.int64)
        return rows, as_vectors([v for _, v in found], self._dimension() or 0)

    # -- the index -----------------------------------------------------------------------------------

    def keep_up(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Add just-committed rows to the in-memory index (saved at the end of the operation), so that it
        need not read every vector back from SQLite."""
        if self._vi is None and self.db.meta("faiss_checksum") is None:
            self._vi, self._max_row, self._checksum = VectorIndex(vectors.shape[1]), 0, None
        if self._vi is not None and int(rows[0]) > self._max_row:
            self._vi.add(rows, vectors)
            self._max_row = int(rows[-1])
            self._unsaved = True

    def current(self, *, announce_lag: bool = False, convert: bool = False, write: bool = True) -> VectorIndex | None:
        """The FAISS index, in step with the database; None while nothing has been embedded.

        Writers (``write=True``, lock held) save any correction to the file. ``announce_lag`` reports rows
        the file lacks or still holds, which at the start of an operation means an earlier run was
        interrupted. ``convert`` switches a large exact index to HNSW (nightly and repair). A reader that
        finds the file damaged repairs it if no writer is busy, else searches a copy.
        """
        vi, problem, max_row = self._loaded(retry=not write)
        notes: list[str] = []
        changed = vi is not None and vi is self._vi and self._unsaved
        if vi is None:
            if self._dimension() is None:
                return None
            vi, max_row = self.build(convert or self.db.meta("faiss_kind") == "hnsw")
            changed = True
        else:
            rows, vectors = self._rows_after(max_row)
            if len(rows):
                vi.add(rows, vectors)
                max_row = int(rows[-1])
                changed = True
                notes.append(f"{FAISS_FILE} lacked {len(rows):,} headline(s) that {DB_FILE} holds")
            # Removed rows only matter to writers: a reader's hits are joined with the headlines table,
            # and count(*) reads the whole table, which a query should not pay for.
            live = self._count() if write else len(vi)
            if len(vi) != live:
                extra = np.setdiff1d(vi.ids(), self.all_rows())
                notes.append(f"{FAISS_FILE} still held {len(extra):,} removed headline(s)")
                if vi.kind == "flat" and len(vi) - len(extra) == live:
                    vi.remove(extra)
                else:  # HNSW cannot delete; and a count that does not add up calls for a rebuild anyway
                    vi, max_row = self.build(vi.kind == "hnsw")
                changed = True
            if convert and vi.kind == "flat" and len(vi) >= ann.ANN_MIN_SIZE:
                vi, max_row = self.build(True)
                changed = True
        saved = False
        if changed and (write or problem):
            with self._try_lock() as locked:
                if locked:
                    self.save(vi, max_row)
                    saved = True
            if problem:
                done = (
                    "rebuilt it"
                    if locked
                    else "searching a copy rebuilt in memory (a writer is busy; it rewrites the file)"
                )
                self._notify(f"{problem}: {done} from {DB_FILE}")
            elif announce_lag:
                self._notify(f"{'; '.join(notes)} (an interrupted run?): updated it from {DB_FILE}")
        self._vi, self._max_row = vi, max_row
        # A reader's catch-up stays in memory; the next write operation of this object saves it.
        self._unsaved = changed and not saved
        return vi

    def _loaded(self, *, retry: bool) -> tuple[VectorIndex | None, str | None, int]:
        """(index, None, highest row in it) from memory or the file, or (None, why not, 0)."""
        problem: str | None = None
        for attempt in range(3 if retry else 1):
            if attempt:
                time.sleep(0.05 * attempt)  # a writer may have replaced the file between our two reads
            checksum = self.db.meta("faiss_checksum")
            if self._vi is not None and checksum == self._checksum:
                return self._vi, None, self._max_row
            vi, problem = self._read(checksum)
            if vi is not None:
                self._checksum = checksum
                return vi, None, self.db.meta("faiss_max_row")
        return None, problem, 0

    def _read(self, checksum: str | None) -> tuple[VectorIndex | None, str | None]:
        if not self.path.exists():
            dimension = self._dimension()
            if checksum is None and dimension is not None:
                # Never written (the first run was interrupted before its end): empty, and rows catch up.
                return VectorIndex(dimension), None
            return None, (f"{FAISS_FILE} is missing" if checksum is not None else None)
        before = os.stat(self.path)
        if checksum is None or file_checksum(self.path) != checksum:
            return None, f"{FAISS_FILE} does not match the checksum in {DB_FILE} (truncated, corrupt or stale)"
        try:
            vi = VectorIndex.load(self.path)
        except Exception:  # faiss raises RuntimeError with C++ text; any failure means the same here
            return None, f"{FAISS_FILE} cannot be read"
        if os.stat(self.path).st_ino != before.st_ino:
            return None, f"{FAISS_FILE} was replaced while it was read"
        return vi, None

    def build(self, allow_hnsw: bool) -> tuple[VectorIndex, int]:
        """A new index of every stored headline's vector, and the highest row in it."""
        rows, vectors = self._rows_after(0)
        kind = "hnsw" if allow_hnsw and len(rows) >= ann.ANN_MIN_SIZE else "flat"
        if len(rows) == 0:
            return VectorIndex(self._dimension() or 0, kind="flat"), 0
        return VectorIndex.build(rows, vectors, kind=kind), int(rows[-1])

    def save(self, vi: VectorIndex, max_row: int) -> None:
        """Replace the file with ``vi`` and record it in ``meta`` (the caller holds the writer lock)."""
        vi.save(self.path)
        checksum = file_checksum(self.path)
        with self.db.transaction():
            self.db.set_meta(
                {"faiss_rows": len(vi), "faiss_max_row": max_row, "faiss_checksum": checksum, "faiss_kind": vi.kind}
            )
        self._vi, self._max_row, self._checksum = vi, max_row, checksum
        self._unsaved = False

    def rewrite(self) -> None:
        """Rebuild the file from the database (``index repair``)."""
        if self._dimension() is not None:
            vi, max_row = self.build(True)
            self.save(vi, max_row)

    def describe(self, rows: np.ndarray, headlines: int) -> dict[str, Any]:
        """The file's state against the database's ``rows`` (read-only: repairs nothing)."""
        info: dict[str, Any] = {"exists": self.path.exists(), "recorded_vectors": self.db.meta("faiss_rows")}
        checksum = self.db.meta("faiss_checksum")
        if self.path.exists():
            info["bytes"] = self.path.stat().st_size
            info["checksum_ok"] = checksum is not None and file_checksum(self.path) == checksum
            try:
                vi = VectorIndex.load(self.path)
            except Exception:  # unreadable: reported, not raised, so stats still works on a damaged index
                vi = None
            if vi is not None:
                ids = np.sort(vi.ids())
                info.update(
                    kind=vi.kind,
                    vectors=len(vi),
                    missing=int(len(np.setdiff1d(rows, ids))),
                    extra=int(len(np.setdiff1d(ids, rows))),
                )
        info["in_step"] = bool(
            (headlines == 0 and not self.path.exists())
            or (info.get("checksum_ok") and info.get("missing") == 0 and info.get("extra") == 0)
        )
        return info


def describe_problem(info: Mapping[str, Any]) -> str:
    """What is wrong with the file, from :meth:`VectorFile.describe`."""
    if not info["exists"]:
        return f"{FAISS_FILE} was missing"
    if not info.get("checksum_ok"):
        return f"{FAISS_FILE} did not match its recorded checksum (truncated, corrupt or stale)"
    if "vectors" not in info:
        return f"{FAISS_FILE} could not be read"
    return f"{FAISS_FILE} lacked {info['missing']:,} headline(s) and held {info['extra']:,} removed one(s)"
