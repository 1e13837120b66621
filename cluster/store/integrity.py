"""Checking an index for damage, and rebuilding it from what survives.

What is checked (``index check``, and inside ``stats`` and ``repair``):

* the database: SQLite's ``integrity_check`` (``quick_check`` inside ``stats``);
* every stored vector: finite and of unit length. A vector is stored as float32 bytes; bytes that were
  garbled on disk are, with overwhelming probability, no longer a unit vector (a stray bit in an
  exponent changes the length), so this catches damage without a separate checksum;
* every headline has a vector, and every story record agrees with its headlines;
* the vector files (``segments/``) against the database (:mod:`.vectors`).

``salvage`` copies every row that can still be read into a new database (damaged pages are skipped
row by row), then the caller re-embeds headlines whose vectors were lost and recomputes stories.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .schema import DB_FILE, SCHEMA, Database

UNIT_TOLERANCE = 1e-3
_TABLES = ("meta", "headlines", "embeddings", "stories", "story_history", "runs", "corrections")
_CHUNK = 512


@dataclass
class CheckReport:
    """What ``index check`` found. ``ok`` when nothing is wrong; ``problems`` says what, one line each."""

    database: list[str] = field(default_factory=list)  # SQLite's own findings
    damaged_vectors: list[int] = field(default_factory=list)  # headline rows whose vector is not a unit vector
    missing_vectors: int = 0  # headlines with no stored vector
    wrong_stories: int = 0  # story records that disagree with their headlines
    faiss: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.database or self.damaged_vectors or self.missing_vectors or self.wrong_stories) and bool(
            self.faiss.get("in_step", True) or self.faiss.get("behind")
        )

    @property
    def notes(self) -> list[str]:
        """What is not damage but worth saying: vector files behind the database after an interrupted add."""
        behind = int(self.faiss.get("behind", 0) or 0) if self.faiss else 0
        if not behind:
            return []
        return [
            f"the vector files lack the newest {behind:,} headline(s), as an interrupted add leaves them: the next "
            "index add or query writes them from the stored vectors (not damage)"
        ]

    @property
    def problems(self) -> list[str]:
        lines = [f"database: {line}" for line in self.database[:10]]
        if len(self.database) > 10:
            lines.append(f"database: ... and {len(self.database) - 10:,} more")
        if self.damaged_vectors:
            lines.append(f"{len(self.damaged_vectors):,} stored vector(s) are damaged (not finite unit vectors)")
        if self.missing_vectors:
            lines.append(f"{self.missing_vectors:,} headline(s) have no stored vector")
        if self.wrong_stories:
            lines.append(f"{self.wrong_stories:,} story record(s) disagree with their headlines")
        if self.faiss and not self.faiss.get("in_step", True) and not self.faiss.get("behind"):
            lines.append("the vector files are not in step with the database")
        lines.extend(self.faiss.get("lost", []) if self.faiss else [])
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": self.problems,
            "database": self.database,
            "damaged_vectors": len(self.damaged_vectors),
            "missing_vectors": self.missing_vectors,
            "wrong_stories": self.wrong_stories,
            "faiss": self.faiss,
        }


def database_findings(db: Database, *, quick: bool = False) -> list[str]:
    """SQLite's integrity findings ([] when the database is sound)."""
    pragma = "quick_check" if quick else "integrity_check"
    try:
        found = [row[0] for row in db.connection.execute(f"PRAGMA {pragma}")]
    except sqlite3.DatabaseError as exc:  # so damaged that the check itself cannot run
        return [str(exc)]
    return [] if found == ["ok"] else found


def damaged_vector_rows(db: Database, dimension: int) -> tuple[list[int], int]:
    """(headline rows whose stored vector is damaged, headlines with no vector); reads what it can."""
    damaged: list[int] = []
    missing = 0
    query = (
        "SELECT h.row, e.vector FROM headlines h LEFT JOIN embeddings e ON e.text_key = h.text_key "
        "WHERE h.row > ? ORDER BY h.row LIMIT ?"
    )
    last = 0
    while True:
        try:
            batch = db.connection.execute(query, (last, _CHUNK)).fetchall()
        except sqlite3.DatabaseError:
            break  # a damaged table: the database findings already say so
        if not batch:
            break
        for row, blob in batch:
            if blob is None:
                missing += 1
            elif not is_unit(blob, dimension):
                damaged.append(int(row))
        last = batch[-1][0]
    return damaged, missing


def is_unit(blob: bytes, dimension: int) -> bool:
    """Whether ``blob`` holds a finite float32 unit vector of ``dimension`` values."""
    if len(blob) != 4 * dimension:
        return False
    vector = np.frombuffer(blob, dtype=np.float32)
    if not np.isfinite(vector).all():
        return False
    return abs(float(np.dot(vector.astype(np.float64), vector)) - 1.0) <= 2 * UNIT_TOLERANCE


def wrong_story_ids(db: Database) -> list[str]:
    """Story records whose size disagrees with their headlines, and story ids with no record."""
    try:
        return [
            s
            for (s,) in db.connection.execute(
                "SELECT s.id FROM stories s LEFT JOIN (SELECT story_id, count(*) AS n FROM headlines "
                "GROUP BY story_id) c ON c.story_id = s.id WHERE s.size != coalesce(c.n, 0) "
                "UNION SELECT story_id FROM headlines WHERE story_id NOT IN (SELECT id FROM stories)"
            )
        ]
    except sqlite3.DatabaseError:
        return []


@dataclass
class Salvage:
    """What a rebuild of the database kept and lost, per table."""

    kept: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        kept = ", ".join(f"{n:,} {t}" for t, n in self.kept.items() if n)
        lost = ", ".join(f"{n:,} {t}" for t, n in self.lost.items() if n)
        return f"rebuilt the database from what survives (kept {kept or 'nothing'}; unreadable: {lost or 'nothing'})"


def _rowid_bounds(db: sqlite3.Connection, table: str) -> tuple[int, int] | None:
    try:
        low, high = db.execute(f"SELECT min(rowid), max(rowid) FROM {table}").fetchone()
    except sqlite3.DatabaseError:
        return None
    return None if low is None else (int(low), int(high))


def _readable_rows(db: sqlite3.Connection, table: str, low: int, high: int) -> Iterator[tuple | None]:
    """Every row of ``table`` with rowid in [low, high]; None for each rowid range that cannot be read."""
    try:
        rows = db.execute(f"SELECT rowid, * FROM {table} WHERE rowid BETWEEN ? AND ?", (low, high)).fetchall()
    except sqlite3.DatabaseError:
        if low == high:
            yield None
            return
        middle = (low + high) // 2
        yield from _readable_rows(db, table, low, middle)
        yield from _readable_rows(db, table, middle + 1, high)
        return
    yield from rows


def salvage(folder: Path) -> Salvage:
    """Copy every readable row of ``folder``'s database into a new one and swap it in (caller holds the lock).

    The damaged file is kept beside it as ``headlines.sqlite.damaged-<time>``. Rowids are kept, so
    headline rows (the FAISS ids) and story-history order survive.
    """
    source_path = folder / DB_FILE
    target_path = folder / f".{DB_FILE}.salvage.tmp"
    for leftover in (target_path, Path(f"{target_path}-wal"), Path(f"{target_path}-shm")):
        leftover.unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
    target = sqlite3.connect(target_path, isolation_level=None)
    report = Salvage()
    try:
        target.executescript(SCHEMA)
        target.execute("BEGIN")
        for table in _TABLES:
            kept = lost = 0
            bounds = _rowid_bounds(source, table)
            if bounds is not None:
                columns = [c[1] for c in target.execute(f"PRAGMA table_info({table})")]
                insert = (
                    f"INSERT OR IGNORE INTO {table} (rowid, {', '.join(columns)}) "
                    f"VALUES ({', '.join('?' * (len(columns) + 1))})"
                )
                for start in range(bounds[0], bounds[1] + 1, _CHUNK):
                    for row in _readable_rows(source, table, start, min(start + _CHUNK - 1, bounds[1])):
                        if row is None or len(row) != len(columns) + 1:
                            lost += 1
                            continue
                        try:
                            target.execute(insert, row)
                            kept += 1
                        except sqlite3.DatabaseError:  # a row that decodes but breaks a constraint
                            lost += 1
            report.kept[table], report.lost[table] = kept, lost
        target.execute("COMMIT")
        target.execute("PRAGMA journal_mode=WAL")
    finally:
        source.close()
        target.close()
    damaged = folder / f"{DB_FILE}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
    os.replace(source_path, damaged)
    for suffix in ("-wal", "-shm"):
        Path(f"{source_path}{suffix}").unlink(missing_ok=True)
    os.replace(target_path, source_path)
    for suffix in ("-wal", "-shm"):
        Path(f"{target_path}{suffix}").unlink(missing_ok=True)
    return report
