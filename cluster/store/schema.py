"""The index database: its schema, the connection, transactions and the ``meta`` table.

SQLite in WAL mode is the source of truth of an index; everything else in the folder is derived from
it. Only the modules of this package run SQL.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

SCHEMA_VERSION = 1
DB_FILE = "headlines.sqlite"
FAISS_FILE = "vectors.faiss"
LOCK_FILE = "write.lock"
SQL_CHUNK = 900  # bound parameters per IN (...) list, below SQLite's limit

UTC = timezone.utc

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS headlines (
    row INTEGER PRIMARY KEY,            -- the FAISS id; never reused (meta next_row)
    id TEXT NOT NULL UNIQUE,            -- the user's id, or content_id(text)
    text TEXT NOT NULL,
    normalized TEXT NOT NULL,
    text_key BLOB NOT NULL,             -- embed.text_key(normalized): joins embeddings
    source TEXT,
    url TEXT,
    published_at TEXT,                  -- ISO 8601 UTC as given, NULL when the input had none
    t REAL NOT NULL,                    -- published_at, else added_at, in Unix seconds: what windows use
    added_at TEXT NOT NULL,
    story_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS headlines_t ON headlines (t);
CREATE INDEX IF NOT EXISTS headlines_story ON headlines (story_id);
-- A rowid table: with 1.5 KB vectors, WITHOUT ROWID was 3.6x slower to fill and 2.3x larger.
CREATE TABLE IF NOT EXISTS embeddings (text_key BLOB NOT NULL UNIQUE, vector BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS stories (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    representative INTEGER,             -- headline row
    first_seen REAL,
    last_seen REAL,
    size INTEGER NOT NULL,
    vector_sum BLOB,                    -- unused since stories are scored member by member; kept NULL
    active INTEGER NOT NULL             -- 0 once merged away or emptied; ids are never reused
);
CREATE TABLE IF NOT EXISTS story_history (
    seq INTEGER PRIMARY KEY,
    old_id TEXT NOT NULL,
    new_id TEXT NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,                 -- merge | split
    reason TEXT NOT NULL,
    run INTEGER
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    since REAL,
    until REAL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    state TEXT NOT NULL,                -- running | committed | done
    summary TEXT
);
"""

HEADLINE_COLUMNS = "h.row, h.id, h.text, h.published_at, h.source, h.url, h.story_id, h.added_at, h.t"


class Database:
    """One SQLite connection to an index, with explicit transactions and typed access to ``meta``."""

    def __init__(self, path: Path):
        self.path = path
        try:
            db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit that returned survives a power cut too, not only a killed process.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise InputError(
                f"cannot open the index database: {exc}", path=str(path), hint="restore it from a backup"
            ) from None
        self.connection = db

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.connection.execute(sql, parameters)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        return self.connection.executemany(sql, rows)

    def create_schema(self) -> None:
        self.connection.executescript(SCHEMA)  # CREATE ... IF NOT EXISTS: harmless when a racing creator won

    @property
    def in_transaction(self) -> bool:
        return self.connection.in_transaction

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction: everything inside commits together, or nothing does."""
        if self.connection.in_transaction:  # nested: part of the enclosing transaction
            yield
            return
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every query inside sees the same committed state."""
        if self.connection.in_transaction:
            yield
            return
        self.connection.execute("BEGIN")
        try:
            yield
        finally:
            self.connection.execute("COMMIT")

    def meta(self, key: str, default: Any = None) -> Any:
        row = self.connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, values: Mapping[str, Any], *, only_new: bool = False) -> None:
        verb = "INSERT OR IGNORE" if only_new else "INSERT OR REPLACE"
        self.connection.executemany(
            f"{verb} INTO meta (key, value) VALUES (?, ?)", [(key, json.dumps(value)) for key, value in values.items()]
        )

    def has_meta(self) -> bool:
        found = self.connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        return found is not None and self.meta("schema_version") is not None

    def close(self) -> None:
        self.connection.close()


def chunks(items: Sequence, size: int = SQL_CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def marks(count: int) -> str:
    """``?,?,...`` for an IN list of ``count`` values."""
    return ",".join("?" * count)


def as_vectors(blobs: Sequence[bytes], dimension: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dimension), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dimension)


def iso(t: float) -> str:
    """Unix seconds as ISO 8601 UTC with a Z, to the second."""
    return iso_moment(datetime.fromtimestamp(t, tz=UTC).replace(microsecond=0))


def iso_moment(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def utc_now() -> str:
    return iso_moment(datetime.now(tz=UTC))
