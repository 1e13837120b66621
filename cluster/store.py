"""A persistent headline index: SQLite is the source of truth, the FAISS file is derived from it.

An index is a folder::

    headlines.sqlite   WAL-mode SQLite: meta, headlines, embeddings, stories, story_history, runs
    vectors.faiss      every headline's vector, keyed by the headline's row number (derived data)
    write.lock         flock()ed by the one process that may write; readers never take it

Crash safety rests on three rules:

1. Every change is one SQLite transaction. ``add`` commits every ``commit_every`` headlines, so a killed
   run keeps what it committed; running it again skips the ids already present and does the rest.
2. The FAISS file is only ever replaced whole (temp file, fsync, rename), and after each write its row
   count, highest row and checksum go into ``meta``. Opening compares them with the file and the
   headlines table: a missing, truncated or corrupt file is rebuilt from SQLite, a file that lags
   behind (killed between a commit and the file write) is brought up to date, and the user is told.
3. Writers hold ``write.lock`` for the whole operation, so two ``index add`` processes run one after
   the other; a reader sees committed transactions only and never a partly written file.

Every headline gets a story id when it is added (online assignment, below). ``nightly`` re-groups a
time window with the batch algorithm and reconciles ids; see :mod:`cluster.nightly`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sqlite3
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import faiss
import numpy as np

from .embed import get_embedder, is_default_model, resolve_model_name, text_key, variant_of_model_id
from .errors import InputError
from .group import pick_representative
from .index import ANN_MIN_SIZE, VectorIndex
from .normalize import normalize
from .records import ReadResult, Record, content_id, read_many
from .settings import LEVELS, level_settings

if TYPE_CHECKING:
    from .nightly import NightlyResult

__all__ = [
    "AddResult",
    "COMMIT_EVERY",
    "DEFAULT_WINDOW",
    "Headline",
    "HeadlineIndex",
    "QueryHit",
    "RemoveResult",
    "StoryInfo",
    "StoryMember",
    "parse_duration",
    "read_input",
]

SCHEMA_VERSION = 1
DB_FILE = "headlines.sqlite"
FAISS_FILE = "vectors.faiss"
LOCK_FILE = "write.lock"
DEFAULT_WINDOW = timedelta(hours=72)
COMMIT_EVERY = 1000
MAX_HEADLINE_CHARS = 2000
HNSW_FROM = ANN_MIN_SIZE
"""From this many vectors ``nightly`` and ``index repair`` switch the search index to HNSW. ``add`` keeps
appending to the exact index: building a graph of 50,000+ vectors takes a minute or more on two cores,
which belongs in the nightly maintenance window, not in an indexing run."""

_UTC = timezone.utc
_SQL_CHUNK = 900  # bound parameters per IN (...) list, below SQLite's limit
_BLOCK = 256  # headlines whose similarities are computed in one matrix product during assignment

_SCHEMA = """
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
    vector_sum BLOB,                    -- float64 sum of member vectors: mean similarity = x . sum / size
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


class EmbedderLike(Protocol):
    """What the index needs from an embedder: :class:`cluster.embed.Embedder` or a test double."""

    name: str
    model_id: str
    dimension: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def default_embedder(model: str, *, quantize: str | None = None) -> EmbedderLike:
    """The embedder an index uses when none is passed, with the user cache."""
    return get_embedder(model, quantize=quantize)


# --- small helpers --------------------------------------------------------------------------------------

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """'90m', '72h', '3d', '1w' (a bare number is hours) as a timedelta."""
    match = _DURATION.fullmatch(text.lower())
    if not match or float(match[1]) <= 0:
        raise InputError(
            f"cannot read the duration {text!r}", hint="write it like 90m, 72h, 3d or 1w; a bare number is hours"
        )
    return timedelta(seconds=float(match[1]) * _UNITS[match[2] or "h"])


def iso(t: float) -> str:
    """Unix seconds as ISO 8601 UTC with a Z, to the second."""
    return _iso(datetime.fromtimestamp(t, tz=_UTC).replace(microsecond=0))


def _iso(moment: datetime) -> str:
    return moment.astimezone(_UTC).isoformat().replace("+00:00", "Z")


def _utc_now() -> str:
    return _iso(datetime.now(tz=_UTC))


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _story_order(story_id: str) -> tuple[int, str]:
    """Sort key of story ids: by number (ids are 's' plus a zero-padded counter that may outgrow its pad)."""
    return (len(story_id), story_id)


def _as_vectors(blobs: Sequence[bytes], dimension: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dimension), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dimension)


def _file_checksum(path: Path) -> str:
    # CRC32 reads a gigabyte in about a second; it guards against truncation and torn writes, not attacks.
    crc = 0
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return f"{size}-{crc:08x}"


@contextlib.contextmanager
def one_search_thread() -> Iterator[None]:
    """Run FAISS on one thread inside the block: for searches of a single query.

    One query holds too little work to share, and handing it between OpenMP threads costs more than the
    search when the cores are busy: on a loaded 2-core machine a 20k-vector exact search took 39 ms with
    two threads and 1.2 ms with one (scripts/bench_index.py measures the index's query latency this way).
    """
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 less the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut only once the folder is synced
    finally:
        os.close(directory)


# --- reading input --------------------------------------------------------------------------------------


def read_input(
    paths: Sequence[str],
    *,
    input_format: str | None = None,
    text_field: str | None = None,
    id_field: str = "id",
    time_field: str = "published_at",
    source_field: str = "source",
    url_field: str = "url",
    skip_invalid: bool = False,
    max_chars: int = MAX_HEADLINE_CHARS,
) -> ReadResult:
    """Read and validate headline files for indexing; '-' is standard input.

    :func:`cluster.records.read_many`, except that a headline longer than ``max_chars`` is an invalid row
    (an index returns what it stored, so it must not silently cut text), reported with its file and line.
    """
    return read_many(
        paths,
        input_format=input_format,
        text_field=text_field,
        id_field=id_field,
        time_field=time_field,
        source_field=source_field,
        url_field=url_field,
        skip_invalid=skip_invalid,
        max_chars=max_chars,
        reject_long=True,
    )


# --- results --------------------------------------------------------------------------------------------


@dataclass
class AddResult:
    added: int = 0
    present: int = 0  # ids already in the index (or repeated in this batch with the same text)
    updated: int = 0
    embedded: int = 0  # distinct texts sent to the embedding model
    reused: int = 0  # new headlines whose normalized text already had a vector
    new_stories: int = 0
    joined: int = 0  # new headlines that joined an existing story
    elapsed: float = 0.0
    headlines: int = 0  # in the index afterwards
    stories: int = 0  # active stories afterwards

    @property
    def processed(self) -> int:
        return self.added + self.present + self.updated

    @property
    def rate(self) -> float:
        return self.processed / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True)
class Headline:
    row: int
    id: str
    text: str
    published_at: str | None
    source: str | None
    url: str | None
    story_id: str
    added_at: str
    t: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "published_at": self.published_at,
            "source": self.source,
            "url": self.url,
            "story_id": self.story_id,
            "added_at": self.added_at,
        }


_HEADLINE_COLUMNS = "h.row, h.id, h.text, h.published_at, h.source, h.url, h.story_id, h.added_at, h.t"


@dataclass(frozen=True)
class QueryHit:
    headline: Headline
    score: float
    story_size: int | None = None
    story_similarity: float | None = None  # mean similarity of the query to the story's members
    threshold: float | None = None

    @property
    def would_join(self) -> bool | None:
        if self.story_similarity is None or self.threshold is None:
            return None
        return self.story_similarity >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        item = {"score": round(self.score, 4), **self.headline.to_dict()}
        if self.story_similarity is not None:
            item["story_size"] = self.story_size
            item["story_similarity"] = round(self.story_similarity, 4)
            item["would_join"] = self.would_join
        return item


@dataclass(frozen=True)
class StoryMember:
    headline: Headline
    score: float  # similarity to the representative


@dataclass(frozen=True)
class StoryInfo:
    id: str
    representative: Headline
    members: list[StoryMember]  # in time order
    first_seen: str
    last_seen: str

    @property
    def size(self) -> int:
        return len(self.members)

    def to_dict(self) -> dict[str, Any]:
        rep = self.representative
        return {
            "id": self.id,
            "representative": {"id": rep.id, "text": rep.text},
            "size": self.size,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "members": [
                {
                    "id": m.headline.id,
                    "text": m.headline.text,
                    "published_at": m.headline.published_at,
                    "source": m.headline.source,
                    "score": round(m.score, 4),
                }
                for m in self.members
            ],
        }


@dataclass
class RemoveResult:
    removed: list[str]
    missing: list[str]


@dataclass(frozen=True)
class _Pending:
    """A headline about to be added, validated and normalized."""

    id: str
    record: Record
    normalized: str
    key: bytes
    published_at: str | None
    t: float | None


def _pending(item: Record | Mapping | str, position: int) -> _Pending:
    if isinstance(item, str):
        record = Record(item.strip())
    elif isinstance(item, Record):
        record = item
    elif isinstance(item, Mapping):
        text = item.get("text", item.get("title"))
        if not isinstance(text, str):
            raise InputError(f"headline {position} has no text (a 'text' or 'title' string)")
        published = item.get("published_at")
        if published is not None and not isinstance(published, datetime):
            raise InputError(f"headline {position}: published_at must be a datetime, not {type(published).__name__}")
        record = Record(
            text.strip(),
            None if item.get("id") is None else str(item["id"]),
            published,
            item.get("source"),
            item.get("url"),
        )
    else:
        raise InputError(f"headline {position} is a {type(item).__name__}: pass Records, mappings or strings")
    if not record.text.strip():
        raise InputError(f"headline {position} is empty")
    if len(record.text) > MAX_HEADLINE_CHARS:
        raise InputError(f"headline {position} is {len(record.text):,} characters long, over {MAX_HEADLINE_CHARS:,}")
    normalized = normalize(record.text)
    when = record.published_at
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=_UTC)
    return _Pending(
        record.id or content_id(record.text),
        record,
        normalized,
        text_key(normalized),
        None if when is None else _iso(when),
        None if when is None else when.timestamp(),
    )


# --- the index ------------------------------------------------------------------------------------------


class HeadlineIndex:
    """A folder of headlines with vectors and story ids. Open it with :meth:`open`.

    One object may be used for many operations; each write operation takes the writer lock for its
    duration, so several processes can hold the same index open.
    """

    def __init__(
        self,
        path: Path,
        db: sqlite3.Connection,
        *,
        embedder: EmbedderLike | None,
        notify: Callable[[str], None],
        on_wait: Callable[[str], None],
    ):
        self.path = path
        self.db = db
        self._embedder = embedder
        self._notify = notify
        self._on_wait = on_wait
        self._lock_depth = 0
        # The search index as loaded from (or last written to) vectors.faiss, plus rows added since.
        self._vi: VectorIndex | None = None
        self._vi_max_row = 0
        self._vi_checksum: str | None = None
        self._vi_unsaved = False  # rows added in memory by this writer that the file lacks

    # -- opening -------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        create: bool = False,
        model: str | None = None,
        embedder: EmbedderLike | None = None,
        threshold: float | None = None,
        level: str | None = None,
        window: timedelta | None = None,
        notify: Callable[[str], None] | None = None,
        on_wait: Callable[[str], None] | None = None,
    ) -> HeadlineIndex:
        """Open the index folder ``path``, creating it when ``create`` is true.

        ``model`` (or ``embedder``), ``threshold`` and ``level`` are fixed when the index is created;
        naming different ones for an index that holds headlines is an error, since stored vectors and
        story ids only mean something under the settings that produced them. ``window`` sets the
        default story window of a new index (each ``add`` may pass its own).
        ``notify`` receives messages about repairs (default: standard error); ``on_wait`` the message
        printed once when another writer holds the lock (default: standard error).
        """
        path = Path(path)
        if level is not None and level not in LEVELS:
            raise ValueError(f"unknown level {level!r}: use one of {', '.join(LEVELS)}")
        exists = (path / DB_FILE).is_file()
        if not exists and not create:
            raise InputError(
                "no headline index here",
                path=str(path),
                hint="create one with: headline-cluster index add FILE --index PATH",
            )
        if path.exists() and not path.is_dir():
            raise InputError("is a file; an index is a folder", path=str(path))
        path.mkdir(parents=True, exist_ok=True)
        index = cls(
            path,
            _connect(path / DB_FILE),
            embedder=embedder,
            notify=notify or _to_stderr,
            on_wait=on_wait or _to_stderr,
        )
        try:
            if not exists or not index._initialized():
                with index.lock():
                    index._create(model, embedder, threshold, level, window)
            index._check_settings(model, embedder, threshold, level)
        except BaseException:
            index.close()
            raise
        return index

    def _create(
        self,
        model: str | None,
        embedder: EmbedderLike | None,
        threshold: float | None,
        level: str | None,
        window: timedelta | None,
    ) -> None:
        name = embedder.name if embedder is not None else resolve_model_name(model)
        level = level or "story"
        setting = level_settings(name, level)
        self.db.executescript(_SCHEMA)  # CREATE ... IF NOT EXISTS: harmless when a racing creator won
        with self._transaction():
            defaults = {
                "schema_version": SCHEMA_VERSION,
                "model": name,
                "model_id": None,
                "dimension": None,
                "level": level,
                "threshold": threshold if threshold is not None else setting.threshold,
                "threshold_source": "given when the index was created" if threshold is not None else setting.source,
                "linkage": "average",
                "window_seconds": (window or DEFAULT_WINDOW).total_seconds(),
                "next_row": 1,
                "next_story": 1,
                "created_at": _utc_now(),
                "faiss_rows": 0,
                "faiss_max_row": 0,
                "faiss_checksum": None,
                "faiss_kind": None,
            }
            # OR IGNORE: a process that created the index while we waited for the lock wins.
            self.db.executemany(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                [(key, json.dumps(value)) for key, value in defaults.items()],
            )

    def _initialized(self) -> bool:
        # A creator killed before its first commit leaves a database without meta: create it again.
        has_meta = self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        return has_meta is not None and self._meta("schema_version") is not None

    def _check_settings(
        self,
        model: str | None,
        embedder: EmbedderLike | None,
        threshold: float | None,
        level: str | None,
    ) -> None:
        version = self._meta("schema_version")
        if version != SCHEMA_VERSION:
            raise InputError(
                f"index format {version} is not the one this version reads ({SCHEMA_VERSION})",
                path=str(self.path),
                hint="use the headline-cluster version that created it",
            )
        changes: dict[str, Any] = {}
        asked = embedder.name if embedder is not None else model
        if asked is not None and not _same_model(asked, self.model):
            changes["model"] = asked
            changes["model_id"] = changes["dimension"] = None
            what = f"the model {self.model!r}; you asked for {asked!r} (--model or $HEADLINE_CLUSTER_MODEL)"
        if level is not None and level != self.level:
            changes["level"] = level
            what = f"level {self.level!r}; you asked for {level!r}"
        if threshold is not None and abs(threshold - self.threshold) > 1e-9:
            changes["threshold"] = threshold
            what = f"threshold {self.threshold:.3f}; you asked for {threshold:.3f}"
        if not changes:
            return
        if self.count() > 0:
            raise InputError(
                f"this index was built with {what}; its vectors and story ids only hold under the settings "
                "that made them",
                path=str(self.path),
                hint="leave the option out to use the index's own settings, or add into a new index",
            )
        if "threshold" not in changes and ("level" in changes or "model" in changes):
            # The default threshold belongs to a model and a level: follow the new ones.
            setting = level_settings(changes.get("model", self.model), changes.get("level", self.level))
            changes["threshold"], changes["threshold_source"] = setting.threshold, setting.source
        with self.lock(), self._transaction():
            self._set_meta(changes)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> HeadlineIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- settings --------------------------------------------------------------------------------------

    @property
    def model(self) -> str:
        return self._meta("model")

    @property
    def threshold(self) -> float:
        return float(self._meta("threshold"))

    @property
    def level(self) -> str:
        return self._meta("level")

    @property
    def linkage(self) -> str:
        return self._meta("linkage")

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self._meta("window_seconds"))

    @property
    def dimension(self) -> int | None:
        return self._meta("dimension")

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM headlines").fetchone()[0]

    # -- locking and transactions -----------------------------------------------------------------------

    def lock(self) -> contextlib.AbstractContextManager[bool]:
        """Hold the writer lock (re-entrant). Also useful around a backup copy of the folder."""
        return self._writer_lock(wait=True)

    def _try_lock(self) -> contextlib.AbstractContextManager[bool]:
        """The writer lock if it is free right now (yields True), else nothing (yields False)."""
        return self._writer_lock(wait=False)

    @contextlib.contextmanager
    def _writer_lock(self, *, wait: bool) -> Iterator[bool]:
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield True
            finally:
                self._lock_depth -= 1
            return
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                self._on_wait(f"waiting for another writer on {self.path} ...")
                fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                yield True
            finally:
                self._lock_depth = 0
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A read transaction: every query inside sees the same committed state."""
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def _meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def _set_meta(self, values: Mapping[str, Any]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [(key, json.dumps(value)) for key, value in values.items()],
        )

    # -- embeddings ------------------------------------------------------------------------------------

    def embedder_in_use(self) -> EmbedderLike:
        """The embedder this index encodes with: the one passed in, else the model and variant it was built with."""
        stored_id = self._meta("model_id")
        if self._embedder is None:
            # An index keeps the embedding variant it was built with, whatever today's default is.
            self._embedder = default_embedder(
                self.model, quantize=None if stored_id is None else variant_of_model_id(stored_id)
            )
        embedder = self._embedder
        if stored_id is not None and embedder.model_id != stored_id:
            raise InputError(
                f"the model files changed since this index was built (model id {embedder.model_id!r}, "
                f"the index has {stored_id!r}): new vectors would not be comparable with the stored ones",
                path=str(self.path),
                hint="export the index and add the export into a new index",
            )
        return embedder

    def _stored_vectors(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        for chunk in _chunks(list(keys), _SQL_CHUNK):
            marks = ",".join("?" * len(chunk))
            for key, blob in self.db.execute(
                f"SELECT text_key, vector FROM embeddings WHERE text_key IN ({marks})", list(chunk)
            ):
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def _embed(self, batch: Sequence[_Pending]) -> tuple[np.ndarray, dict[bytes, np.ndarray], int]:
        """Vectors of ``batch``; new (key -> vector) pairs to store; how many reused a stored vector."""
        known = self._stored_vectors(list(dict.fromkeys(p.key for p in batch)))
        reused = sum(p.key in known for p in batch)
        todo = {p.key: p.normalized for p in batch if p.key not in known}
        fresh: dict[bytes, np.ndarray] = {}
        if todo:
            embedder = self.embedder_in_use()
            vectors = np.asarray(embedder.encode(list(todo.values())), dtype=np.float32)
            dimension = self.dimension
            if dimension is not None and vectors.shape[1] != dimension:
                raise InputError(
                    f"the model gives vectors of dimension {vectors.shape[1]}, the index holds {dimension}",
                    path=str(self.path),
                )
            fresh = dict(zip(todo, vectors, strict=True))
            known.update(fresh)
            if self._meta("model_id") is None:
                with self._transaction():
                    self._set_meta({"model_id": embedder.model_id, "dimension": int(vectors.shape[1])})
        return np.stack([known[p.key] for p in batch]), fresh, reused

    def _vectors_of_rows(self, rows: Sequence[int]) -> np.ndarray:
        """Vectors of the headlines ``rows``, in that order."""
        by_row: dict[int, bytes] = {}
        for chunk in _chunks(list(rows), _SQL_CHUNK):
            marks = ",".join("?" * len(chunk))
            by_row.update(
                self.db.execute(
                    f"SELECT h.row, e.vector FROM headlines h JOIN embeddings e ON e.text_key = h.text_key "
                    f"WHERE h.row IN ({marks})",
                    list(chunk),
                )
            )
        return _as_vectors([by_row[r] for r in rows], self.dimension or 0)

    # -- adding ----------------------------------------------------------------------------------------

    def add(
        self,
        items: Iterable[Record | Mapping | str],
        *,
        update: bool = False,
        window: timedelta | None = None,
        commit_every: int = COMMIT_EVERY,
        progress: Callable[[int, int], None] | None = None,
    ) -> AddResult:
        """Add headlines and give each a story id at once.

        ``items`` are Records (from :func:`read_input`), mappings with ``text`` (or ``title``) and
        optional ``id``, ``published_at`` (an aware datetime), ``source``, ``url``, or plain strings.
        An id already in the index is skipped, or replaced with ``update=True``; without an id, the id
        is derived from the text. A headline joins the best story that has a member within ``window``
        (default: the index's) of its time and whose members it matches on average at the threshold
        (the same average-linkage rule as the batch grouping); otherwise it starts a new story.
        Commits every ``commit_every`` headlines: a killed run keeps those, and running it again adds
        the rest. ``progress(done, total)`` is called after each commit.
        """
        started = time.monotonic()
        result = AddResult()
        batch: list[_Pending] = []
        seen: dict[str, tuple[int, _Pending]] = {}
        for position, item in enumerate(items):
            pending = _pending(item, position)
            if pending.id in seen:
                first, earlier = seen[pending.id]
                if earlier.normalized != pending.normalized:
                    raise InputError(
                        f"id {pending.id!r} appears twice in this batch with different text "
                        f"(headlines {first} and {position})",
                        hint="ids must be unique",
                    )
                result.present += 1
                continue
            seen[pending.id] = (position, pending)
            batch.append(pending)
        window_s = (window or self.window).total_seconds()
        with self.lock():
            self._search_index(announce_lag=True)
            existing = self._existing([p.id for p in batch])
            fresh: list[tuple[_Pending, Headline | None]] = []
            in_place: list[tuple[_Pending, Headline]] = []
            for pending in batch:
                old = existing.get(pending.id)
                if old is None:
                    fresh.append((pending, None))
                elif not update or _unchanged(old, pending):
                    result.present += 1
                elif self._normalized_of(old.row) == pending.normalized:
                    in_place.append((pending, old))
                else:
                    fresh.append((pending, old))
            if in_place:
                self._update_in_place(in_place)
                result.updated += len(in_place)
            assigner = _Assigner(self, window_s)
            done = 0
            for chunk in _chunks(fresh, max(1, commit_every)):
                vectors, new_vectors, reused = self._embed([p for p, _ in chunk])
                result.embedded += len(new_vectors)
                result.reused += reused
                rows = self._commit_chunk(chunk, vectors, new_vectors, assigner, result)
                self._keep_up(rows, vectors)
                done += len(chunk)
                if progress is not None:
                    progress(done, len(fresh))
            self._search_index()
        result.headlines = self.count()
        result.stories = self._active_stories()
        result.elapsed = time.monotonic() - started
        return result

    def _existing(self, ids: Sequence[str]) -> dict[str, Headline]:
        found: dict[str, Headline] = {}
        for chunk in _chunks(list(ids), _SQL_CHUNK):
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(f"SELECT {_HEADLINE_COLUMNS} FROM headlines h WHERE h.id IN ({marks})", chunk):
                headline = Headline(*row)
                found[headline.id] = headline
        return found

    def _normalized_of(self, row: int) -> str:
        return self.db.execute("SELECT normalized FROM headlines WHERE row = ?", (row,)).fetchone()[0]

    def _update_in_place(self, pairs: Sequence[tuple[_Pending, Headline]]) -> None:
        """Updates that keep the normalized text: same vector, so the headline keeps its row and story."""
        now = _utc_now()
        with self._transaction():
            for pending, old in pairs:
                record = pending.record
                t = pending.t if pending.t is not None else old.t
                self.db.execute(
                    "UPDATE headlines SET text = ?, source = ?, url = ?, published_at = ?, t = ?, added_at = ? "
                    "WHERE row = ?",
                    (record.text, record.source, record.url, pending.published_at, t, now, old.row),
                )
            self._refresh_spans({old.story_id for _, old in pairs})

    def _refresh_spans(self, story_ids: Iterable[str]) -> None:
        for story_id in story_ids:
            self.db.execute(
                "UPDATE stories SET (first_seen, last_seen) = "
                "(SELECT min(t), max(t) FROM headlines WHERE story_id = ?) WHERE id = ?",
                (story_id, story_id),
            )

    def _commit_chunk(
        self,
        chunk: Sequence[tuple[_Pending, Headline | None]],
        vectors: np.ndarray,
        new_vectors: Mapping[bytes, np.ndarray],
        assigner: _Assigner,
        result: AddResult,
    ) -> np.ndarray:
        now = time.time()
        added_at = _utc_now()
        next_row = self._meta("next_row")
        rows = np.arange(next_row, next_row + len(chunk), dtype=np.int64)
        times = np.array([p.t if p.t is not None else now for p, _ in chunk], dtype=np.float64)
        with self._transaction():
            replaced = [old for _, old in chunk if old is not None]
            for old in replaced:
                assigner.retire(old)
                self.db.execute("DELETE FROM headlines WHERE row = ?", (old.row,))
            stories = assigner.assign(rows, times, vectors, result)
            self.db.executemany(
                "INSERT OR IGNORE INTO embeddings (text_key, vector) VALUES (?, ?)",
                [(key, np.asarray(vector, dtype=np.float32).tobytes()) for key, vector in new_vectors.items()],
            )
            self.db.executemany(
                "INSERT INTO headlines (row, id, text, normalized, text_key, source, url, published_at, t, "
                "added_at, story_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        int(row),
                        p.id,
                        p.record.text,
                        p.normalized,
                        p.key,
                        p.record.source,
                        p.record.url,
                        p.published_at,
                        float(t),
                        added_at,
                        story,
                    )
                    for (p, _), row, t, story in zip(chunk, rows, times, stories, strict=True)
                ],
            )
            if replaced:
                self._refresh_spans({old.story_id for old in replaced})
            assigner.write_stories()
            self._set_meta({"next_row": next_row + len(chunk), "next_story": assigner.next_story})
        result.added += sum(old is None for _, old in chunk)
        result.updated += len(replaced)
        return rows

    def _keep_up(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Add just-committed rows to the in-memory search index (saved at the end of the operation),
        so that it need not read every vector back from SQLite."""
        if self._vi is None and self._meta("faiss_checksum") is None:
            self._vi, self._vi_max_row, self._vi_checksum = VectorIndex(vectors.shape[1]), 0, None
        if self._vi is not None and int(rows[0]) > self._vi_max_row:
            self._vi.add(rows, vectors)
            self._vi_max_row = int(rows[-1])
            self._vi_unsaved = True

    # -- the search index (vectors.faiss) --------------------------------------------------------------

    def _search_index(
        self, *, announce_lag: bool = False, convert: bool = False, write: bool = True
    ) -> VectorIndex | None:
        """The FAISS index, in step with the database; None while nothing has been embedded.

        Writers (``write=True``, lock held) save any correction to vectors.faiss. ``announce_lag``
        reports rows the file lacks or still holds, which at the start of an operation means an earlier
        run was interrupted. ``convert`` switches a large exact index to HNSW (nightly and repair). A
        reader that finds the file damaged repairs it if no writer is busy, else searches a copy.
        """
        vi, problem, max_row = self._loaded_search_index(retry=not write)
        notes: list[str] = []
        changed = vi is not None and vi is self._vi and self._vi_unsaved
        if vi is None:
            if self.dimension is None:
                return None
            vi, max_row = self._build_search_index(convert or self._meta("faiss_kind") == "hnsw")
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
            live = self.count() if write else len(vi)
            if len(vi) != live:
                extra = np.setdiff1d(vi.ids(), self._all_rows())
                notes.append(f"{FAISS_FILE} still held {len(extra):,} removed headline(s)")
                if vi.kind == "flat" and len(vi) - len(extra) == live:
                    vi.remove(extra)
                else:  # HNSW cannot delete; and a count that does not add up calls for a rebuild anyway
                    vi, max_row = self._build_search_index(vi.kind == "hnsw")
                changed = True
            if convert and vi.kind == "flat" and len(vi) >= HNSW_FROM:
                vi, max_row = self._build_search_index(True)
                changed = True
        saved = False
        if changed and (write or problem):
            with self._try_lock() as locked:
                if locked:
                    self._save_search_index(vi, max_row)
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
        self._vi, self._vi_max_row = vi, max_row
        # A reader's catch-up stays in memory; the next write operation of this object saves it.
        self._vi_unsaved = changed and not saved
        return vi

    def _loaded_search_index(self, *, retry: bool) -> tuple[VectorIndex | None, str | None, int]:
        """(index, None, highest row in it) from memory or vectors.faiss, or (None, why not, 0)."""
        problem: str | None = None
        for attempt in range(3 if retry else 1):
            if attempt:
                time.sleep(0.05 * attempt)  # a writer may have replaced the file between our two reads
            checksum = self._meta("faiss_checksum")
            if self._vi is not None and checksum == self._vi_checksum:
                return self._vi, None, self._vi_max_row
            vi, problem = self._read_search_index(checksum)
            if vi is not None:
                self._vi_checksum = checksum
                return vi, None, self._meta("faiss_max_row")
        return None, problem, 0

    def _read_search_index(self, checksum: str | None) -> tuple[VectorIndex | None, str | None]:
        path = self.path / FAISS_FILE
        if not path.exists():
            if checksum is None and self.dimension is not None:
                # Never written (the first run was interrupted before its end): empty, and rows catch up.
                return VectorIndex(self.dimension), None
            return None, (f"{FAISS_FILE} is missing" if checksum is not None else None)
        before = os.stat(path)
        if checksum is None or _file_checksum(path) != checksum:
            return None, f"{FAISS_FILE} does not match the checksum in {DB_FILE} (truncated, corrupt or stale)"
        try:
            vi = VectorIndex.load(path)
        except Exception:  # faiss raises RuntimeError with C++ text; any failure means the same here
            return None, f"{FAISS_FILE} cannot be read"
        if os.stat(path).st_ino != before.st_ino:
            return None, f"{FAISS_FILE} was replaced while it was read"
        return vi, None

    def _rows_after(self, max_row: int) -> tuple[np.ndarray, np.ndarray]:
        found = self.db.execute(
            "SELECT h.row, e.vector FROM headlines h JOIN embeddings e ON e.text_key = h.text_key "
            "WHERE h.row > ? ORDER BY h.row",
            (max_row,),
        ).fetchall()
        rows = np.array([r for r, _ in found], dtype=np.int64)
        return rows, _as_vectors([v for _, v in found], self.dimension or 0)

    def _all_rows(self) -> np.ndarray:
        return np.array([r for (r,) in self.db.execute("SELECT row FROM headlines ORDER BY row")], dtype=np.int64)

    def _build_search_index(self, allow_hnsw: bool) -> tuple[VectorIndex, int]:
        rows, vectors = self._rows_after(0)
        kind = "hnsw" if allow_hnsw and len(rows) >= HNSW_FROM else "flat"
        if len(rows) == 0:
            return VectorIndex(self.dimension or 0, kind="flat"), 0
        return VectorIndex.build(rows, vectors, kind=kind), int(rows[-1])

    def _save_search_index(self, vi: VectorIndex, max_row: int) -> None:
        path = self.path / FAISS_FILE
        vi.save(path)
        checksum = _file_checksum(path)
        with self._transaction():
            self._set_meta(
                {"faiss_rows": len(vi), "faiss_max_row": max_row, "faiss_checksum": checksum, "faiss_kind": vi.kind}
            )
        self._vi, self._vi_max_row, self._vi_checksum = vi, max_row, checksum
        self._vi_unsaved = False

    # -- reading ---------------------------------------------------------------------------------------

    def query(self, text: str, k: int = 10, *, explain: bool = False) -> list[QueryHit]:
        """The ``k`` stored headlines most similar to ``text``, best first.

        With ``explain``, each hit also carries its story's size and the query's mean similarity to the
        story's members, which decides whether the query would join that story.
        """
        if not text.strip():
            raise InputError("the query is empty")
        normalized = normalize(text)
        key = text_key(normalized)
        stored = self._stored_vectors([key])
        if key in stored:  # a stored headline's vector: no need to load the model
            vector = stored[key]
        else:
            vector = np.asarray(self.embedder_in_use().encode([normalized]), dtype=np.float32)[0]
        vi = self._search_index(write=False)
        if vi is None or k <= 0:
            return []
        wanted = k
        while True:
            with one_search_thread():
                neighbors = vi.search(vector, wanted)[0]
            with self._snapshot():
                hits = self._hits(neighbors, vector, explain)
            if len(hits) >= k or len(neighbors) < wanted:
                return hits[:k]
            wanted *= 2  # some neighbours were removed after the file was written: look further

    def _hits(self, neighbors: Sequence, vector: np.ndarray, explain: bool) -> list[QueryHit]:
        headlines = {h.row: h for h in self._headlines_by_row([n.id for n in neighbors])}
        stories: dict[str, tuple[int, float]] = {}
        if explain:
            wanted = list({h.story_id for h in headlines.values()})
            for chunk in _chunks(wanted, _SQL_CHUNK):
                marks = ",".join("?" * len(chunk))
                for story_id, size, blob in self.db.execute(
                    f"SELECT id, size, vector_sum FROM stories WHERE id IN ({marks})", chunk
                ):
                    total = np.frombuffer(blob, dtype=np.float64)
                    stories[story_id] = (size, float(total @ vector.astype(np.float64)) / size)
        hits = []
        for neighbor in neighbors:
            headline = headlines.get(neighbor.id)
            if headline is None:
                continue
            size, mean = stories.get(headline.story_id, (None, None))
            hits.append(QueryHit(headline, neighbor.score, size, mean, self.threshold if explain else None))
        return hits

    def _headlines_by_row(self, rows: Sequence[int]) -> list[Headline]:
        found = []
        for chunk in _chunks(list(rows), _SQL_CHUNK):
            marks = ",".join("?" * len(chunk))
            found.extend(
                Headline(*r)
                for r in self.db.execute(f"SELECT {_HEADLINE_COLUMNS} FROM headlines h WHERE h.row IN ({marks})", chunk)
            )
        return found

    def get(self, headline_id: str) -> Headline | None:
        """The stored headline with this id."""
        return self._existing([headline_id]).get(headline_id)

    def headlines(self, since: datetime | None = None, until: datetime | None = None) -> Iterator[Headline]:
        """Stored headlines in row (insertion) order, optionally those with time in [since, until)."""
        low = -float("inf") if since is None else since.timestamp()
        high = float("inf") if until is None else until.timestamp()
        cursor = self.db.execute(
            f"SELECT {_HEADLINE_COLUMNS} FROM headlines h WHERE h.t >= ? AND h.t < ? ORDER BY h.row", (low, high)
        )
        for row in cursor:
            yield Headline(*row)

    def story(self, story_id: str) -> StoryInfo | None:
        """The story ``story_id``; an id that was merged away leads to the story it was merged into."""
        seen = set()
        while story_id not in seen:
            seen.add(story_id)
            info = self._story_infos([story_id])
            if info:
                return info[0]
            merged = self.db.execute(
                "SELECT new_id FROM story_history WHERE old_id = ? AND kind = 'merge' ORDER BY seq DESC LIMIT 1",
                (story_id,),
            ).fetchone()
            if merged is None:
                return None
            story_id = merged[0]
        return None

    def stories(self, since: datetime | None = None, until: datetime | None = None) -> list[StoryInfo]:
        """Stories with at least one headline whose time is in [since, until), with all their members."""
        low = -float("inf") if since is None else since.timestamp()
        high = float("inf") if until is None else until.timestamp()
        with self._snapshot():
            ids = [
                s
                for (s,) in self.db.execute(
                    "SELECT DISTINCT story_id FROM headlines WHERE t >= ? AND t < ?", (low, high)
                )
            ]
            return self._story_infos(sorted(ids, key=_story_order))

    def _story_infos(self, story_ids: Sequence[str]) -> list[StoryInfo]:
        members: dict[str, list[Headline]] = {s: [] for s in story_ids}
        for chunk in _chunks(list(story_ids), _SQL_CHUNK):
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(
                f"SELECT {_HEADLINE_COLUMNS} FROM headlines h WHERE h.story_id IN ({marks}) ORDER BY h.t, h.row", chunk
            ):
                headline = Headline(*row)
                members[headline.story_id].append(headline)
        representatives = dict(
            row
            for chunk in _chunks(list(story_ids), _SQL_CHUNK)
            for row in self.db.execute(
                f"SELECT id, representative FROM stories WHERE id IN ({','.join('?' * len(chunk))})", chunk
            )
        )
        infos = []
        for story_id in story_ids:
            group = members[story_id]
            if not group:
                continue
            vectors = self._vectors_of_rows([h.row for h in group])
            rep_row = representatives.get(story_id)
            rep = next((i for i, h in enumerate(group) if h.row == rep_row), 0)
            scores = vectors.astype(np.float64) @ vectors[rep].astype(np.float64)
            infos.append(
                StoryInfo(
                    story_id,
                    group[rep],
                    [StoryMember(h, float(s)) for h, s in zip(group, scores, strict=True)],
                    iso(group[0].t),
                    iso(group[-1].t),
                )
            )
        return infos

    def nightly(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        last: timedelta | None = None,
        out: str | Path | None = None,
    ) -> NightlyResult:
        """Re-group the window [since, until) with the batch algorithm and reconcile story ids.

        ``until`` defaults to now and ``since`` to ``until - last`` (``last`` defaults to 48 hours).
        With ``out``, writes stories.jsonl, headlines.csv and report.html there. See :mod:`cluster.nightly`.
        """
        from .nightly import run_nightly  # nightly builds on this module

        until = until or datetime.now(tz=_UTC)
        since = since or until - (last or timedelta(hours=48))
        return run_nightly(self, since, until, None if out is None else Path(out))

    def history(self) -> list[dict[str, Any]]:
        """The story-history table: merges and splits recorded by nightly runs, oldest first."""
        return [
            {"old_id": o, "new_id": n, "at": at, "kind": kind, "reason": reason, "run": run}
            for o, n, at, kind, reason, run in self.db.execute(
                "SELECT old_id, new_id, at, kind, reason, run FROM story_history ORDER BY seq"
            )
        ]

    def _active_stories(self) -> int:
        return self.db.execute("SELECT count(*) FROM stories WHERE active = 1").fetchone()[0]

    def stats(self) -> dict[str, Any]:
        """Counts, settings, and whether vectors.faiss matches the database (read-only: repairs nothing)."""
        with self._snapshot():
            headlines = self.count()
            earliest, latest = self.db.execute("SELECT min(t), max(t) FROM headlines").fetchone()
            rows = self._all_rows()
            faiss_rows = self._meta("faiss_rows")
            checksum = self._meta("faiss_checksum")
            last_run = self.db.execute(
                "SELECT since, until, state, finished_at, summary FROM runs WHERE kind = 'nightly' "
                "ORDER BY id DESC LIMIT 1"
            ).fetchone()
            history = dict(self.db.execute("SELECT kind, count(*) FROM story_history GROUP BY kind").fetchall())
            info: dict[str, Any] = {
                "path": str(self.path),
                "model": self.model,
                "dimension": self.dimension,
                "level": self.level,
                "threshold": self.threshold,
                "linkage": self.linkage,
                "window_hours": self.window.total_seconds() / 3600,
                "headlines": headlines,
                "stories": self._active_stories(),
                "embeddings": self.db.execute("SELECT count(*) FROM embeddings").fetchone()[0],
                "earliest": None if earliest is None else iso(earliest),
                "latest": None if latest is None else iso(latest),
                "merges": history.get("merge", 0),
                "splits": history.get("split", 0),
            }
        path = self.path / FAISS_FILE
        file_info: dict[str, Any] = {"exists": path.exists(), "recorded_vectors": faiss_rows}
        if path.exists():
            file_info["bytes"] = path.stat().st_size
            file_info["checksum_ok"] = checksum is not None and _file_checksum(path) == checksum
            try:
                vi = VectorIndex.load(path)
            except Exception:  # unreadable: reported, not raised, so stats still works on a damaged index
                vi = None
            if vi is not None:
                ids = np.sort(vi.ids())
                file_info.update(
                    kind=vi.kind,
                    vectors=len(vi),
                    missing=int(len(np.setdiff1d(rows, ids))),
                    extra=int(len(np.setdiff1d(ids, rows))),
                )
        file_info["in_step"] = bool(
            (headlines == 0 and not path.exists())
            or (file_info.get("checksum_ok") and file_info.get("missing") == 0 and file_info.get("extra") == 0)
        )
        info["faiss"] = file_info
        if last_run is not None:
            since, until, state, finished, summary = last_run
            info["last_nightly"] = {
                "since": iso(since),
                "until": iso(until),
                "state": state,
                "finished_at": finished,
                **(json.loads(summary) if summary else {}),
            }
        return info

    # -- removing and repairing -------------------------------------------------------------------------

    def remove(self, ids: Iterable[str]) -> RemoveResult:
        """Remove headlines by id; their stories shrink (and retire when empty)."""
        wanted = list(dict.fromkeys(ids))
        with self.lock():
            self._search_index(announce_lag=True)
            found = self._existing(wanted)
            if found:
                with self._transaction():
                    for chunk in _chunks([h.row for h in found.values()], _SQL_CHUNK):
                        self.db.execute(f"DELETE FROM headlines WHERE row IN ({','.join('?' * len(chunk))})", chunk)
                    self._refresh_stories({h.story_id for h in found.values()})
                self._search_index()
        return RemoveResult([i for i in wanted if i in found], [i for i in wanted if i not in found])

    def _refresh_stories(self, story_ids: Iterable[str], created_at: str | None = None) -> None:
        """Recompute size, span, vector sum and (most central) representative of stories from their members.

        Call inside a transaction. Stories left without members retire; ids not yet in the stories table
        are created.
        """
        wanted = sorted(set(story_ids), key=_story_order)
        members: dict[str, list[tuple[int, float, bytes]]] = {s: [] for s in wanted}
        for chunk in _chunks(wanted, _SQL_CHUNK):
            marks = ",".join("?" * len(chunk))
            for story_id, row, t, blob in self.db.execute(
                f"SELECT h.story_id, h.row, h.t, e.vector FROM headlines h JOIN embeddings e "
                f"ON e.text_key = h.text_key WHERE h.story_id IN ({marks}) ORDER BY h.row",
                chunk,
            ):
                members[story_id].append((row, t, blob))
        created_at = created_at or _utc_now()
        for story_id in wanted:
            group = members[story_id]
            self.db.execute(
                "INSERT OR IGNORE INTO stories (id, created_at, size, active) VALUES (?, ?, 0, 0)",
                (story_id, created_at),
            )
            if not group:
                self.db.execute(
                    "UPDATE stories SET size = 0, active = 0, representative = NULL, vector_sum = NULL WHERE id = ?",
                    (story_id,),
                )
                continue
            vectors = _as_vectors([blob for _, _, blob in group], self.dimension or 0)
            positions = np.arange(len(group))
            rep = pick_representative(positions, vectors @ vectors.T, "central", None)
            total = vectors.astype(np.float64).sum(axis=0)
            times = [t for _, t, _ in group]
            self.db.execute(
                "UPDATE stories SET representative = ?, first_seen = ?, last_seen = ?, size = ?, vector_sum = ?, "
                "active = 1 WHERE id = ?",
                (group[rep][0], min(times), max(times), len(group), total.tobytes(), story_id),
            )

    def repair(self) -> list[str]:
        """Check the database, recompute stories that disagree with their headlines, rewrite vectors.faiss.

        Returns what was wrong (empty when nothing was). Story ids of headlines never change here.
        """
        fixed: list[str] = []
        with self.lock():
            verdict = self.db.execute("PRAGMA quick_check").fetchone()[0]
            orphans = self.db.execute(
                "SELECT count(*) FROM headlines h LEFT JOIN embeddings e ON e.text_key = h.text_key "
                "WHERE e.text_key IS NULL"
            ).fetchone()[0]
            if verdict != "ok" or orphans:
                damage = verdict if verdict != "ok" else f"{orphans} headline(s) have no stored vector"
                raise InputError(
                    f"the database is damaged ({damage})",
                    path=str(self.path / DB_FILE),
                    hint="restore it from a backup",
                )
            wrong = [
                s
                for (s,) in self.db.execute(
                    "SELECT s.id FROM stories s LEFT JOIN (SELECT story_id, count(*) AS n FROM headlines "
                    "GROUP BY story_id) c ON c.story_id = s.id WHERE s.size != coalesce(c.n, 0) "
                    "UNION SELECT story_id FROM headlines WHERE story_id NOT IN (SELECT id FROM stories)"
                )
            ]
            if wrong:
                with self._transaction():
                    self._refresh_stories(wrong)
                fixed.append(f"recomputed {len(wrong):,} story record(s) from their headlines")
            before = self.stats()["faiss"]
            if not before["in_step"]:
                fixed.append(_describe_faiss(before))
            if self.dimension is not None:
                vi, max_row = self._build_search_index(True)
                self._save_search_index(vi, max_row)
        return fixed


def _describe_faiss(info: Mapping[str, Any]) -> str:
    """What is wrong with vectors.faiss, from the ``faiss`` part of :meth:`HeadlineIndex.stats`."""
    if not info["exists"]:
        return f"{FAISS_FILE} was missing"
    if not info.get("checksum_ok"):
        return f"{FAISS_FILE} did not match its recorded checksum (truncated, corrupt or stale)"
    if "vectors" not in info:
        return f"{FAISS_FILE} could not be read"
    return f"{FAISS_FILE} lacked {info['missing']:,} headline(s) and held {info['extra']:,} removed one(s)"


def _same_model(a: str, b: str) -> bool:
    return a == b or (is_default_model(a) and is_default_model(b))


def _unchanged(old: Headline, new: _Pending) -> bool:
    record = new.record
    return (
        old.text == record.text
        and old.source == record.source
        and old.url == record.url
        and (new.published_at is None or old.published_at == new.published_at)
    )


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _connect(path: Path) -> sqlite3.Connection:
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
    return db


# --- online story assignment ----------------------------------------------------------------------------


@dataclass
class _Story:
    id: str
    total: np.ndarray | None  # float64 sum of member vectors; None once the story is empty
    size: int
    first_seen: float
    last_seen: float
    representative: int
    created_at: str


class _Assigner:
    """Online story assignment for one ``add`` call.

    Keeps in memory the headlines whose time lies near the batch (loaded from SQLite as the batch's
    time range needs them, plus those this call adds) and the stories they belong to. For each new
    headline: candidates are headlines within the window of its time with similarity >= threshold;
    each candidate's story scores the mean similarity to all its members (x . sum / size, exactly the
    average-linkage value between the headline and the story); the best story at or above the
    threshold is joined (ties: the older story), else a new story starts. Only a story with a member at
    or above the threshold can reach the threshold on average, so the candidates miss none.
    """

    def __init__(self, index: HeadlineIndex, window_s: float):
        self.index = index
        self.db = index.db
        self.threshold = index.threshold
        self.window = window_s
        self.next_story: int = index._meta("next_story")
        self.stories: dict[str, _Story] = {}
        self.dirty: set[str] = set()
        self.n = 0
        self.rows = np.zeros(0, dtype=np.int64)
        self.times = np.zeros(0, dtype=np.float64)
        self.alive = np.zeros(0, dtype=bool)
        self.vectors: np.ndarray | None = None
        self.story_of: list[str] = []
        self.position: dict[int, int] = {}
        self.covered: tuple[float, float] | None = None

    def _append(self, rows: np.ndarray, times: np.ndarray, vectors: np.ndarray, stories: Sequence[str]) -> None:
        need = self.n + len(rows)
        if self.vectors is None:
            self.vectors = np.zeros((0, vectors.shape[1]), dtype=np.float32)
        if need > len(self.rows):  # grow by doubling: appending batch after batch stays linear
            capacity = max(need, 2 * len(self.rows), 1024)
            self.rows = np.resize(self.rows, capacity)
            self.times = np.resize(self.times, capacity)
            self.alive = np.resize(self.alive, capacity)
            grown = np.zeros((capacity, vectors.shape[1]), dtype=np.float32)
            grown[: self.n] = self.vectors[: self.n]
            self.vectors = grown
        span = slice(self.n, need)
        self.rows[span] = rows
        self.times[span] = times
        self.alive[span] = True
        self.vectors[span] = vectors
        for offset, row in enumerate(rows):
            self.position[int(row)] = self.n + offset
        self.story_of.extend(stories)
        self.n = need

    def _cover(self, low: float, high: float) -> None:
        """Load the stored headlines with time in [low, high] that are not in memory yet."""
        if self.covered is not None:
            low_done, high_done = self.covered
            if low >= low_done and high <= high_done:
                return
            parts = [(low, low_done), (high_done, high)]
            self.covered = (min(low, low_done), max(high, high_done))
        else:
            parts = [(low, high)]
            self.covered = (low, high)
        dimension = self.index.dimension or 0
        for lo, hi in parts:
            if hi < lo:
                continue
            found = [
                r
                for r in self.db.execute(
                    "SELECT h.row, h.t, h.story_id, e.vector FROM headlines h JOIN embeddings e "
                    "ON e.text_key = h.text_key WHERE h.t >= ? AND h.t <= ? ORDER BY h.row",
                    (lo, hi),
                )
                if r[0] not in self.position
            ]
            if found:
                self._append(
                    np.array([r[0] for r in found], dtype=np.int64),
                    np.array([r[1] for r in found], dtype=np.float64),
                    _as_vectors([r[3] for r in found], dimension),
                    [r[2] for r in found],
                )

    def _load_stories(self, ids: Iterable[str]) -> None:
        missing = [s for s in set(ids) if s not in self.stories]
        for chunk in _chunks(missing, _SQL_CHUNK):
            marks = ",".join("?" * len(chunk))
            for story_id, total, size, first, last, rep, created in self.db.execute(
                "SELECT id, vector_sum, size, first_seen, last_seen, representative, created_at "
                f"FROM stories WHERE id IN ({marks})",
                chunk,
            ):
                vector = np.frombuffer(total, dtype=np.float64).copy() if total is not None else None
                self.stories[story_id] = _Story(story_id, vector, size, first, last, rep, created)

    def retire(self, old: Headline) -> None:
        """``old`` is being replaced by an update with other text: it leaves its story."""
        self._load_stories([old.story_id])
        story = self.stories[old.story_id]
        vector = self.index._vectors_of_rows([old.row])[0]
        story.size -= 1
        story.total = story.total - vector.astype(np.float64) if story.size else None
        if story.representative == old.row and story.size:
            story.representative = self.db.execute(
                "SELECT min(row) FROM headlines WHERE story_id = ? AND row != ?", (story.id, old.row)
            ).fetchone()[0]
        self.dirty.add(story.id)
        position = self.position.get(old.row)
        if position is not None:
            self.alive[position] = False

    def assign(self, rows: np.ndarray, times: np.ndarray, vectors: np.ndarray, result: AddResult) -> list[str]:
        """Story ids for a batch of new headlines, in order; each one sees those before it."""
        self._cover(float(times.min()) - self.window, float(times.max()) + self.window)
        near = np.flatnonzero(
            self.alive[: self.n]
            & (self.times[: self.n] >= times.min() - self.window)
            & (self.times[: self.n] <= times.max() + self.window)
        )
        near_vectors = self.vectors[near] if self.vectors is not None else np.zeros((0, vectors.shape[1]))
        near_times = self.times[near]
        near_stories = [self.story_of[p] for p in near]
        self._load_stories(near_stories)
        assigned: list[str] = []
        for start in range(0, len(rows), _BLOCK):
            block = vectors[start : start + _BLOCK]
            # Threshold whole blocks at once; only the few pairs above it are checked for time.
            near_hits = np.nonzero(block @ near_vectors.T >= self.threshold)
            batch_hits = np.nonzero(block @ vectors[: start + len(block)].T >= self.threshold)
            near_bounds = np.searchsorted(near_hits[0], np.arange(len(block) + 1))
            batch_bounds = np.searchsorted(batch_hits[0], np.arange(len(block) + 1))
            for offset, vector in enumerate(block):
                i = start + offset
                t = times[i]
                hits = near_hits[1][near_bounds[offset] : near_bounds[offset + 1]]
                candidates = {near_stories[h] for h in hits if abs(near_times[h] - t) <= self.window}
                own = batch_hits[1][batch_bounds[offset] : batch_bounds[offset + 1]]
                candidates.update(assigned[h] for h in own if h < i and abs(times[h] - t) <= self.window)
                assigned.append(self._place(int(rows[i]), float(t), vector, candidates, result))
        self._append(rows, times, vectors, assigned)
        return assigned

    def _place(self, row: int, t: float, vector: np.ndarray, candidates: set[str], result: AddResult) -> str:
        x = vector.astype(np.float64)
        best: str | None = None
        best_score = self.threshold
        # Oldest first with a strict '>' below: on a tie the older story wins, so the choice is repeatable.
        for story_id in sorted(candidates, key=_story_order):
            story = self.stories[story_id]
            if not story.size:
                continue
            score = float(story.total @ x) / story.size
            if score > best_score or (best is None and score >= best_score):
                best, best_score = story_id, score
        if best is not None:
            story = self.stories[best]
            story.total = story.total + x
            story.size += 1
            story.first_seen = min(story.first_seen, t)
            story.last_seen = max(story.last_seen, t)
            result.joined += 1
        else:
            story_id = f"s{self.next_story:06d}"
            self.next_story += 1
            story = _Story(story_id, x.copy(), 1, t, t, row, _utc_now())
            self.stories[story_id] = story
            result.new_stories += 1
        self.dirty.add(story.id)
        return story.id

    def write_stories(self) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO stories (id, created_at, representative, first_seen, last_seen, size, "
            "vector_sum, active) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    s.id,
                    s.created_at,
                    s.representative if s.size else None,
                    s.first_seen,
                    s.last_seen,
                    s.size,
                    None if s.total is None or not s.size else s.total.tobytes(),
                    int(s.size > 0),
                )
                for s in (self.stories[i] for i in sorted(self.dirty, key=_story_order))
            ],
        )
        self.dirty.clear()
