"""``HeadlineIndex``: the facade over an index folder (schema, vector file, online assignment, stories).

Crash safety rests on three rules:

1. Every change is one SQLite transaction. ``add`` commits every ``commit_every`` headlines, so a killed
   run keeps what it committed; running it again skips the ids already present and does the rest.
2. The FAISS segment files are derived data, each written once under a new name and checked against
   the manifest in ``meta`` (:mod:`.vectors`, :mod:`.segments`).
3. Writers hold ``write.lock`` for the whole operation, so two ``index add`` processes run one after
   the other; a reader sees committed transactions only and never a partly written file.

Every headline gets a story id when it is added (:mod:`.assign`); ``nightly`` (:mod:`cluster.nightly`)
re-groups a time window with the batch algorithm through the public methods at the end of this class.
All of them score with one judgement: the index's level, threshold and model (:attr:`judgement`).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from ..embed import get_embedder, resolve_model_name, variant_of_model_id
from ..errors import InputError
from ..fsutil import file_lock
from ..judge import Judgement
from ..pipeline import EmbedderLike
from ..records import Record
from ..settings import LEVELS, judgement_for
from .assign import NestedAssigner
from .bulk import BuiltHeadlines, insert_built, last_build
from .corrections import Correction, add_correction, list_corrections, remove_correction
from .ids import story_order
from .integrity import CheckReport
from .maintenance import check_index, index_stats, repair_index
from .nightly_api import NightlyMixin
from .pending import Pending, pending, stored_by_text, unchanged
from .reading import query_index
from .schema import (
    DB_FILE,
    HEADLINE_COLUMNS,
    LOCK_FILE,
    Database,
    chunks,
    marks,
)
from .segments import SegmentedIndex
from .settings_meta import create_settings, settings_changes
from .story_table import current_story_id, history, refresh_stories, story_infos
from .types import (
    COMMIT_EVERY,
    AddResult,
    Headline,
    QueryHit,
    RemoveResult,
    StoryInfo,
)
from .vectors import VectorFile, describe_problem
from .writing import commit_chunk, stored_vectors, update_in_place

EmbedderFactory = Callable[..., EmbedderLike]
_EMBED_STEP = 128  # headlines embedded between two progress reports


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class HeadlineIndex(NightlyMixin):
    """A folder of headlines with vectors and story ids. Open it with :meth:`open`.

    One object may be used for many operations; each write operation takes the writer lock for its
    duration, so several processes can hold the same index open.
    """

    def __init__(
        self,
        path: Path,
        db: Database,
        *,
        embedder: EmbedderLike | None,
        embedder_factory: EmbedderFactory,
        notify: Callable[[str], None],
        on_wait: Callable[[str], None],
    ):
        self.path = path
        self.db = db
        self._embedder = embedder
        self._embedder_factory = embedder_factory
        self._notify = notify
        self._on_wait = on_wait
        self._lock_depth = 0
        self._settings: dict[str, Any] | None = None
        self._judgement: Judgement | None = None
        self._vectors = VectorFile(path, db, notify=notify, try_lock=lambda: self._writer_lock(wait=False))

    # -- opening -------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        create: bool = False,
        model: str | None = None,
        embedder: EmbedderLike | None = None,
        embedder_factory: EmbedderFactory | None = None,
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
        default story window of a new index (each ``add`` may pass its own). ``embedder_factory(model,
        quantize=...)`` makes the embedder when none is passed (default: the per-user cached one).
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
            Database(path / DB_FILE),
            embedder=embedder,
            embedder_factory=embedder_factory or get_embedder,
            notify=notify or _to_stderr,
            on_wait=on_wait or _to_stderr,
        )
        try:
            if not exists or not index.db.has_meta():
                with index.lock():
                    name = embedder.name if embedder is not None else resolve_model_name(model)
                    create_settings(index.db, name, level, threshold, window)
            index._check_settings(model, embedder, threshold, level)
        except BaseException:
            index.close()
            raise
        return index

    def _check_settings(
        self,
        model: str | None,
        embedder: EmbedderLike | None,
        threshold: float | None,
        level: str | None,
    ) -> None:
        changes = settings_changes(self, embedder.name if embedder is not None else model, threshold, level)
        if changes:
            with self.lock(), self.db.transaction():
                self.db.set_meta(changes)
            self._settings = self._judgement = None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> HeadlineIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- settings --------------------------------------------------------------------------------------

    _CACHED = ("model", "model_id", "dimension", "level", "threshold", "threshold_source", "linkage", "window_seconds")

    def _setting(self, key: str) -> Any:
        # Read once per object: a setting changes only while the index is empty, and then only through
        # this object's own _check_settings or the first embedding (model_id, dimension), reread below.
        if self._settings is None or self._settings.get("dimension") is None:
            self._settings = {name: self.db.meta(name) for name in self._CACHED}
        return self._settings[key]

    @property
    def model(self) -> str:
        return self._setting("model")

    @property
    def threshold(self) -> float:
        return float(self._setting("threshold"))

    @property
    def level(self) -> str:
        return self._setting("level")

    @property
    def linkage(self) -> str:
        return self._setting("linkage")

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self._setting("window_seconds"))

    @property
    def model_id(self) -> str | None:
        """The id of the model files (and variant) the stored vectors came from; None until one is stored."""
        return self._setting("model_id")

    @property
    def dimension(self) -> int | None:
        return self._setting("dimension")

    @property
    def judgement(self) -> Judgement:
        """How this index scores pairs: its model's judgement at its level, at its own threshold."""
        if self._judgement is None:
            base = judgement_for(self.model, self.level, self.threshold, str(self._setting("threshold_source") or ""))
            self._judgement = replace(base, linkage=self.linkage)
        return self._judgement

    @property
    def story_judgement(self) -> Judgement:
        """How this index groups events into stories: the model's story judgement, or the index's own when
        the index groups at the story level (then every story is one event)."""
        return self.judgement if self.level == "story" else judgement_for(self.model, "story")

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM headlines").fetchone()[0]

    # -- locking and transactions -----------------------------------------------------------------------

    def lock(self) -> contextlib.AbstractContextManager[bool]:
        """Hold the writer lock (re-entrant). Also useful around a backup copy of the folder."""
        return self._writer_lock(wait=True)

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """One write transaction on the database (take :meth:`lock` around it)."""
        return self.db.transaction()

    @contextlib.contextmanager
    def _writer_lock(self, *, wait: bool) -> Iterator[bool]:
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield True
            finally:
                self._lock_depth -= 1
            return
        with contextlib.ExitStack() as stack:
            try:
                lock = file_lock(
                    self.path / LOCK_FILE, wait=wait, on_wait=self._on_wait, what=f"another writer on {self.path}"
                )
                held = stack.enter_context(lock)
            except OSError as exc:
                raise InputError(
                    f"cannot take the writer lock: {exc.strerror or exc}",
                    path=str(self.path / LOCK_FILE),
                    hint="the index folder is not writable by this user: make it writable, or write to a copy",
                ) from None
            if not held:
                yield False
                return
            self._lock_depth = 1
            try:
                yield True
            finally:
                self._lock_depth = 0

    # -- embeddings ------------------------------------------------------------------------------------

    def embedder_in_use(self) -> EmbedderLike:
        """The embedder this index encodes with: the one passed in, else the model and variant it was built with."""
        stored_id = self._setting("model_id")
        if self._embedder is None:
            # An index keeps the embedding variant it was built with, whatever today's default is.
            variant = None if stored_id is None else variant_of_model_id(stored_id)
            self._embedder = self._embedder_factory(self.model, quantize=variant)
        embedder = self._embedder
        if stored_id is not None and embedder.model_id != stored_id:
            raise InputError(
                f"the model files changed since this index was built (model id {embedder.model_id!r}, "
                f"the index has {stored_id!r}): new vectors would not be comparable with the stored ones",
                path=str(self.path),
                hint="export the index and add the export into a new index",
            )
        return embedder

    def _embed(
        self, batch: Sequence[Pending], embedded: Callable[[int], None] | None = None
    ) -> tuple[np.ndarray, dict[bytes, np.ndarray], int]:
        """Vectors of ``batch``; new (key -> vector) pairs to store; how many reused a stored vector.

        ``embedded(n)`` is told how many of the batch's headlines are done as embedding goes on.
        """
        known = stored_vectors(self.db, list(dict.fromkeys(p.key for p in batch)))
        reused = sum(p.key in known for p in batch)
        todo = {p.key: p.normalized for p in batch if p.key not in known}
        fresh: dict[bytes, np.ndarray] = {}
        if todo:
            embedder = self.embedder_in_use()
            texts = list(todo.values())
            parts = []
            # In steps, so that a progress bar moves while a large chunk embeds; a text's vector does
            # not depend on the texts embedded with it.
            for start in range(0, len(texts), _EMBED_STEP):
                parts.append(np.asarray(embedder.encode(texts[start : start + _EMBED_STEP]), dtype=np.float32))
                if embedded is not None:
                    embedded(reused + min(start + _EMBED_STEP, len(texts)))
            vectors = np.concatenate(parts)
            dimension = self.dimension
            if dimension is not None and vectors.shape[1] != dimension:
                raise InputError(
                    f"the model gives vectors of dimension {vectors.shape[1]}, the index holds {dimension}",
                    path=str(self.path),
                )
            fresh = dict(zip(todo, vectors, strict=True))
            known.update(fresh)
            if self._setting("model_id") is None:
                with self.db.transaction():
                    self.db.set_meta({"model_id": embedder.model_id, "dimension": int(vectors.shape[1])})
                self._settings = None
        return np.stack([known[p.key] for p in batch]), fresh, reused

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

        ``items`` are Records (from :func:`cluster.store.read_input`), mappings with ``text`` (or ``title``)
        and optional ``id``, ``published_at`` (an aware datetime), ``source``, ``url``, or plain strings.
        An id already in the index is skipped, or replaced with ``update=True``; without an id, the id is
        the URL, else derived from the text. A headline joins the best story with a member within ``window``
        (default: the index's) of its time and whose members it matches on average at the threshold,
        under the index's judgement (the average-linkage rule of the batch grouping); otherwise it starts
        a new story. Commits every ``commit_every`` headlines: a killed run keeps those, and running it
        again adds the rest. ``progress(done, total)`` is called as headlines are embedded and after each
        commit."""
        started = time.monotonic()
        result = AddResult()
        batch: list[Pending] = []
        seen: dict[str, tuple[int, Pending]] = {}
        for position, item in enumerate(items):
            entry = pending(item, position)
            if entry.id in seen:
                first, earlier = seen[entry.id]
                if earlier.normalized != entry.normalized:
                    raise InputError(
                        f"id {entry.id!r} appears twice in this batch with different text "
                        f"(headlines {first} and {position})",
                        hint="ids must be unique",
                    )
                result.repeated += 1
                continue
            seen[entry.id] = (position, entry)
            batch.append(entry)
        window_s = (window or self.window).total_seconds()
        with self.lock():
            self._vectors.current(announce_lag=True)
            existing = self._existing([p.id for p in batch])
            existing.update(stored_by_text(batch, self._existing))  # added before ids came from URLs
            fresh: list[tuple[Pending, Headline | None]] = []
            in_place: list[tuple[Pending, Headline]] = []
            for entry in batch:
                old = existing.get(entry.id)
                if old is None:
                    fresh.append((entry, None))
                elif not update or unchanged(old, entry):
                    result.present += 1
                elif self._normalized_of(old.row) == entry.normalized:
                    in_place.append((entry, old))
                else:
                    fresh.append((entry, old))
            if in_place:
                update_in_place(self.db, in_place)
                result.updated += len(in_place)
            assigner: NestedAssigner | None = None
            done = 0
            for chunk in chunks(fresh, max(1, commit_every)):
                step = None if progress is None else (lambda n, base=done: progress(base + n, len(fresh)))
                vectors, new_vectors, reused = self._embed([p for p, _ in chunk], step)
                result.embedded += len(new_vectors)
                result.reused += reused
                if assigner is None:
                    assigner = NestedAssigner(
                        self.db,
                        self.judgement,
                        self.story_judgement,
                        window_s,
                        self.db.meta("next_event"),
                        self.db.meta("next_story"),
                        vectors.shape[1],
                    )
                rows = self._commit_chunk(chunk, vectors, new_vectors, assigner, result)
                self._vectors.keep_up(rows, vectors)
                done += len(chunk)
                if progress is not None:
                    progress(done, len(fresh))
            self._vectors.current()
        result.headlines = self.count()
        result.stories = self._active_stories()
        result.elapsed = time.monotonic() - started
        return result

    def _existing(self, ids: Sequence[str]) -> dict[str, Headline]:
        found: dict[str, Headline] = {}
        for chunk in chunks(list(ids)):
            for row in self.db.execute(
                f"SELECT {HEADLINE_COLUMNS} FROM headlines h WHERE h.id IN ({marks(len(chunk))})", chunk
            ):
                headline = Headline(*row)
                found[headline.id] = headline
        return found

    def _commit_chunk(
        self,
        chunk: Sequence[tuple[Pending, Headline | None]],
        vectors: np.ndarray,
        new_vectors: Mapping[bytes, np.ndarray],
        assigner: NestedAssigner,
        result: AddResult,
    ) -> np.ndarray:
        return commit_chunk(self.db, chunk, vectors, new_vectors, assigner, result)

    def _normalized_of(self, row: int) -> str:
        return self.db.execute("SELECT normalized FROM headlines WHERE row = ?", (row,)).fetchone()[0]

    def bulk_insert(self, batches: Iterable[BuiltHeadlines], **totals: Any) -> int:
        """Store pre-embedded headlines with their story ids in one transaction (``index build``) and write the
        segment files compacted as nightly leaves them; how many were stored. ``totals``: ``insert_built``'s."""
        with self.lock():
            added = insert_built(self.db, self.judgement, batches, **totals)
            self._settings = None
            self._vectors.current(convert=True)
        return added

    def last_build(self) -> dict[str, Any] | None:
        """The summary of this index's last finished ``index build``, or None."""
        return last_build(self.db)

    # -- reading ---------------------------------------------------------------------------------------

    def query(self, text: str, k: int = 10, *, explain: bool = False, when: datetime | None = None) -> list[QueryHit]:
        """The ``k`` stored headlines most similar to ``text`` (by cosine), best first.

        With ``explain``, each hit also carries its story's size and the query's mean judgement score to
        the story's members (the query published at ``when``, if given), which decides if it would join.
        """
        return query_index(self, self._vectors, text, k, explain, when)

    def get(self, headline_id: str) -> Headline | None:
        """The stored headline with this id."""
        return self._existing([headline_id]).get(headline_id)

    def headlines(self, since: datetime | None = None, until: datetime | None = None) -> Iterator[Headline]:
        """Stored headlines in row (insertion) order, optionally those with time in [since, until)."""
        low = -float("inf") if since is None else since.timestamp()
        high = float("inf") if until is None else until.timestamp()
        cursor = self.db.execute(
            f"SELECT {HEADLINE_COLUMNS} FROM headlines h WHERE h.t >= ? AND h.t < ? ORDER BY h.row", (low, high)
        )
        for row in cursor:
            yield Headline(*row)

    def story(self, story_id: str) -> StoryInfo | None:
        """The story ``story_id``; an id that was merged away leads to the story it was merged into."""
        with self.db.snapshot():
            infos = story_infos(self.db, self.judgement, self.dimension or 0, [current_story_id(self.db, story_id)])
        return infos[0] if infos else None

    def stories(self, since: datetime | None = None, until: datetime | None = None) -> list[StoryInfo]:
        """Stories with at least one headline whose time is in [since, until), with all their members."""
        low = -float("inf") if since is None else since.timestamp()
        high = float("inf") if until is None else until.timestamp()
        with self.db.snapshot():
            ids = [
                s
                for (s,) in self.db.execute(
                    "SELECT DISTINCT story_id FROM headlines WHERE t >= ? AND t < ?", (low, high)
                )
            ]
            return story_infos(self.db, self.judgement, self.dimension or 0, sorted(ids, key=story_order))

    def history(self) -> list[dict[str, Any]]:
        """The story-history table: merges and splits recorded by nightly runs, oldest first."""
        return history(self.db)

    def _active_stories(self) -> int:
        return self.db.execute("SELECT count(*) FROM stories WHERE active = 1").fetchone()[0]

    def stats(self) -> dict[str, Any]:
        """Counts, settings, and whether the segment files match the database (read-only: repairs nothing)."""
        return index_stats(self, self._vectors)

    # -- removing and repairing -------------------------------------------------------------------------

    def remove(self, ids: Iterable[str]) -> RemoveResult:
        """Remove headlines by id; their stories shrink (and retire when empty)."""
        wanted = list(dict.fromkeys(ids))
        with self.lock():
            self._vectors.current(announce_lag=True)
            found = self._existing(wanted)
            if found:
                with self.db.transaction():
                    for chunk in chunks([h.row for h in found.values()]):
                        self.db.execute(f"DELETE FROM headlines WHERE row IN ({marks(len(chunk))})", chunk)
                    self.refresh_stories({h.story_id for h in found.values()})
                self._vectors.current()
        return RemoveResult([i for i in wanted if i in found], [i for i in wanted if i not in found])

    # -- corrections (logic in .corrections) ------------------------------------------------------------

    def add_correction(
        self,
        kind: str,
        a: str,
        b: str,
        *,
        level: str = "event",
        author: str,
        reason: str | None = None,
        created_at: str | None = None,
    ) -> Correction:
        """Keep headlines ``a`` and ``b`` apart (``kind`` "apart") or together ("together") at ``level``;
        refused for unknown ids and for a contradiction of stored corrections. Nightly runs honour it."""
        with self.lock():
            return add_correction(
                self.db, kind, a, b, level=level, author=author, reason=reason, created_at=created_at
            )

    def corrections(self, level: str | None = None) -> list[Correction]:
        """The stored corrections, oldest first (only ``level``'s when given)."""
        return list_corrections(self.db, level)

    def remove_correction(self, correction_id: int) -> bool:
        """Remove a stored correction by number; whether there was one."""
        with self.lock():
            return remove_correction(self.db, correction_id)

    def refresh_stories(self, story_ids: Iterable[str], created_at: str | None = None) -> None:
        """Recompute the records of stories from their members (inside :meth:`transaction`)."""
        refresh_stories(self.db, self.judgement, self.dimension or 0, story_ids, created_at)

    def check(self, *, quick: bool = False) -> CheckReport:
        """Every kind of damage the index can detect (:mod:`.integrity`); repairs nothing."""
        return check_index(self, self._vectors, quick=quick)

    def repair(self) -> list[str]:
        """Repair what :meth:`check` finds and bring the segment files in step (damaged ones rebuilt, small
        ones compacted); what was wrong ([] when nothing was).

        A damaged database is rebuilt from what survives, damaged vectors are embedded again from their
        text, story records are recomputed. Story ids of headlines never change here.
        """
        with self.lock():
            fixed = repair_index(self, self._vectors)
            before = self._vectors.describe(self._vectors.all_rows(), self.count())
            if not before["in_step"]:
                fixed.append(describe_problem(before))
            self._vectors.rewrite()
        return fixed

    def reconnect(self) -> None:
        """Open the database file again (after ``repair`` replaced it)."""
        self.db = Database(self.path / DB_FILE)
        self._vectors.db = self.db
        self._settings = self._judgement = None

    def maintain(self) -> SegmentedIndex | None:
        """Check every segment file, bring them in step and compact them (the nightly maintenance)."""
        with self.lock():
            return self._vectors.current(announce_lag=True, convert=True)
