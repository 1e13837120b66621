"""The index database: its schema, the connection, transactions and the ``meta`` table.

SQLite in WAL mode is the source of truth of an index; everything else in the folder is derived from
it. Only the modules of this package run SQL.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DiskFullError, IndexDamagedError, InputError, free_bytes, is_disk_full

SCHEMA_VERSION = 3  # 2: headlines.event_id (events nested in stories); 3: corrections; older ones migrate on open
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
    story_id TEXT NOT NULL,
    event_id TEXT                       -- the event (nested in story_id); last, as ALTER TABLE adds it
);
CREATE INDEX IF NOT EXISTS headlines_t ON headlines (t);
CREATE INDEX IF NOT EXISTS headlines_story ON headlines (story_id);
CREATE INDEX IF NOT EXISTS headlines_event ON headlines (event_id);
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
CREATE TABLE IF NOT EXISTS corrections (
    id INTEGER PRIMARY KEY,             -- never reused, so a removed correction's number stays unique
    kind TEXT NOT NULL,                 -- apart | together
    level TEXT NOT NULL,                -- event | story
    a TEXT NOT NULL,                    -- headline ids, a < b: a pair is stored one way only
    b TEXT NOT NULL,
    author TEXT NOT NULL,
    reason TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (level, a, b)
);
"""

CORRECTIONS_TABLE = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS corrections") :]

HEADLINE_COLUMNS = "h.row, h.id, h.text, h.published_at, h.source, h.url, h.story_id, h.added_at, h.t, h.event_id"


_DAMAGED = ("malformed", "corrupt")
_NEARLY_FULL = 1 << 20  # bytes: with less free, SQLite's I/O errors are taken for a full disk
_NO_ACCESS = ("readonly", "read-only", "unable to open", "permission denied", "disk i/o error")


def sqlite_problem(exc: sqlite3.Error, path: Path) -> InputError | None:
    """What a SQLite error means for the user of an index, with what to do; None for other errors."""
    text = str(exc)
    lowered = text.lower()
    folder = path.parent
    # SQLite says "disk I/O error" when the write-ahead log or its index cannot grow: a full disk too.
    if is_disk_full(exc) or ("disk i/o error" in lowered and free_bytes(folder) < _NEARLY_FULL):
        return DiskFullError(folder)
    if "disk i/o error" in lowered and replaced_files(path):  # a -shm removed under this process
        return FilesReplacedError(path, replaced_files(path))
    if any(word in lowered for word in _DAMAGED):
        return IndexDamagedError(
            f"the index database is damaged ({text})",
            path=str(path),
            hint=f"run: headline-cluster index repair --index {folder} (it rebuilds the index from what survives)",
        )
    if "not a database" in lowered:  # nothing of it can be read: there is nothing to rebuild from
        return InputError(f"cannot open the index database: {text}", path=str(path), hint="restore it from a backup")
    if any(word in lowered for word in _NO_ACCESS):
        return InputError(
            f"cannot use the index database ({text})",
            path=str(path),
            hint="the index folder or its files are not writable by this user (SQLite needs to write beside the "
            "database even to read it): make them writable, or copy the index folder somewhere writable",
        )
    return None


_FDS = Path("/proc/self/fd")


def replaced_files(path: Path) -> list[str]:
    """The files of the database ``path`` (itself, ``-wal``, ``-shm``) that this process has open but that
    are no longer the files on disk under their names: removed, or replaced by another file.

    SQLite finds the write-ahead log through the shared memory of ``-shm``; a process that keeps the one
    it opened after the file was removed (a clean-up script) no longer sees what other processes commit,
    and its next commit overwrites theirs, silently. Each open descriptor is compared (device and inode)
    with the path it was opened by. Linux only (``/proc/self/fd``); elsewhere nothing can be told: [].
    """
    real = os.path.realpath(path)
    names = {real: DB_FILE, f"{real}-wal": f"{DB_FILE}-wal", f"{real}-shm": f"{DB_FILE}-shm"}
    found: list[str] = []
    try:
        entries = list(os.scandir(_FDS))
    except OSError:
        return []
    for entry in entries:
        try:
            target = os.readlink(entry.path).removesuffix(" (deleted)")
            if target not in names:
                continue
            opened = os.fstat(int(entry.name))
        except (OSError, ValueError):  # closed since the listing
            continue
        try:
            on_disk = os.stat(target)
        except FileNotFoundError:
            found.append(names[target])
            continue
        if (opened.st_dev, opened.st_ino) != (on_disk.st_dev, on_disk.st_ino):
            found.append(names[target])
    return sorted(set(found))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


class FilesReplacedError(IndexDamagedError):
    """The database files this process has open were removed or replaced on disk: writing on could
    overwrite what other processes committed, so this process refuses to write."""

    def __init__(self, path: Path, names: Sequence[str]):
        super().__init__(
            f"{' and '.join(names)} of the index was removed or replaced while this process had it open: "
            "to keep what other processes wrote since, this process refuses to write (nothing was written)",
            path=str(path.parent),
            hint="stop this process and start it again (a running headline-cluster serve too), then run "
            f"headline-cluster index check --index {path.parent}; never remove the -shm or -wal files of an "
            "index in use",
        )


class Cursor:
    """A SQLite cursor whose errors while fetching rows say what they mean (:func:`sqlite_problem`)."""

    def __init__(self, cursor: sqlite3.Cursor, path: Path):
        self._cursor = cursor
        self._path = path

    def _translate(self, exc: sqlite3.DatabaseError) -> Exception:
        return sqlite_problem(exc, self._path) or exc

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self._cursor
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from None

    def fetchone(self) -> Any:
        try:
            return self._cursor.fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from None

    def fetchall(self) -> list[Any]:
        try:
            return self._cursor.fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from None

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid


class Database:
    """One SQLite connection to an index, with explicit transactions and typed access to ``meta``."""

    def __init__(self, path: Path):
        self.path = path
        self.read_only = False
        try:
            db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit that returned survives a power cut too, not only a killed process.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            problem = sqlite_problem(exc, path)
            db = self._read_only() if problem is not None and not isinstance(problem, IndexDamagedError) else None
            if db is None:
                raise problem or InputError(
                    f"cannot open the index database: {exc}", path=str(path), hint="restore it from a backup"
                ) from None
        self.connection = db
        self._opened = _identity(path)  # the file this connection is on, whatever its name becomes later

    def _read_only(self) -> sqlite3.Connection | None:
        """A read-only connection to an index on a folder this process cannot write (a mounted backup),
        or None. SQLite must write beside a WAL database even to read it, unless the file is opened as
        immutable, which is only right when no write-ahead log holds changes the file lacks."""
        wal = Path(f"{self.path}-wal")
        if not self.path.is_file() or (os.access(self.path.parent, os.W_OK) and os.access(self.path, os.W_OK)):
            return None
        if wal.exists() and wal.stat().st_size > 0:
            return None
        try:
            db = sqlite3.connect(
                f"file:{self.path}?mode=ro&immutable=1", uri=True, isolation_level=None, check_same_thread=False
            )
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError:
            return None
        self.read_only = True
        return db

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Cursor:
        try:
            return Cursor(self.connection.execute(sql, parameters), self.path)
        except sqlite3.DatabaseError as exc:
            raise sqlite_problem(exc, self.path) or exc from None

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Cursor:
        try:
            return Cursor(self.connection.executemany(sql, rows), self.path)
        except sqlite3.DatabaseError as exc:
            raise sqlite_problem(exc, self.path) or exc from None

    def create_schema(self) -> None:
        try:
            self.connection.executescript(SCHEMA)  # CREATE ... IF NOT EXISTS: harmless when a racing creator won
        except sqlite3.DatabaseError as exc:
            raise sqlite_problem(exc, self.path) or exc from None

    @property
    def in_transaction(self) -> bool:
        return self.connection.in_transaction

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction: everything inside commits together, or nothing does."""
        if self.connection.in_transaction:  # nested: part of the enclosing transaction
            yield
            return
        self.check_files()
        self.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.check_files()  # again at the end: a removal while the transaction ran rolls it back
        except BaseException:
            if self.connection.in_transaction:
                self.connection.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    def check_files(self) -> None:
        """Refuse to write when the files SQLite has open are no longer those on disk (:func:`replaced_files`)."""
        if not self.read_only:
            names = replaced_files(self.path)
            if self._opened is not None and _identity(self.path) != self._opened and DB_FILE not in names:
                names.append(DB_FILE)  # renamed away (mv), so no descriptor still names the path
            if names:
                raise FilesReplacedError(self.path, names)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every query inside sees the same committed state."""
        if self.connection.in_transaction:
            yield
            return
        self.execute("BEGIN")
        try:
            yield
        finally:
            # Ending a read transaction on a damaged file can fail too; the error that matters was raised.
            with contextlib.suppress(sqlite3.DatabaseError):
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


def migrate(db: Database) -> bool:
    """Bring an index of an older format up to :data:`SCHEMA_VERSION` (caller holds the writer lock);
    whether anything changed.

    Format 1 had one id per headline (``story_id``, the index's only level). Each of its stories becomes
    one event of that story (``e`` + the story's number), so every event lies inside one story and the
    ids a user already saw keep their meaning; event numbers continue from the story counter. Format 2
    had no corrections: the empty table is added.
    """
    version = db.meta("schema_version")
    if version not in (1, 2):
        return False
    with db.transaction():
        if version == 1:
            columns = [row[1] for row in db.execute("PRAGMA table_info(headlines)")]
            if "event_id" not in columns:
                db.execute("ALTER TABLE headlines ADD COLUMN event_id TEXT")
            db.execute("UPDATE headlines SET event_id = 'e' || substr(story_id, 2) WHERE event_id IS NULL")
            db.execute("CREATE INDEX IF NOT EXISTS headlines_event ON headlines (event_id)")
            db.set_meta({"next_event": db.meta("next_story")})
        db.execute(CORRECTIONS_TABLE)
        db.set_meta({"schema_version": SCHEMA_VERSION})
    return True


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
