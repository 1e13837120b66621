"""The index's checks, repairs and nightly bookkeeping: stats, repair, windows, runs and regrouping.

Functions over the database of an open index (:class:`~cluster.store.HeadlineIndex` calls them with its
own); the nightly job reaches them through the index's public methods, never through SQL of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..embed import variant_of_model_id
from ..errors import InputError
from .integrity import CheckReport, damaged_vector_rows, database_findings, is_unit, salvage, wrong_story_ids
from .schema import Database, as_vectors, chunks, iso, marks, utc_now
from .types import Run, WindowHeadlines
from .vectors import VectorFile

if TYPE_CHECKING:
    from .headline_index import HeadlineIndex


def index_stats(index: HeadlineIndex, vectors: VectorFile) -> dict[str, Any]:
    """Counts, settings, and whether the segment files match the database (read-only: repairs nothing)."""
    db = index.db
    with db.snapshot():
        headlines = index.count()
        earliest, latest = db.execute("SELECT min(t), max(t) FROM headlines").fetchone()
        rows = vectors.all_rows()
        last_run = db.execute(
            "SELECT since, until, state, finished_at, summary FROM runs WHERE kind = 'nightly' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        history = dict(db.execute("SELECT kind, count(*) FROM story_history GROUP BY kind").fetchall())
        info: dict[str, Any] = {
            "path": str(index.path),
            "model": index.model,
            # The embedding variant its vectors came from (q4, int8 or none = float32): an index keeps it.
            "variant": None if index.model_id is None else variant_of_model_id(index.model_id),
            "dimension": index.dimension,
            "level": index.level,
            "threshold": index.threshold,
            "similarity": index.judgement.kind,
            "linkage": index.linkage,
            "window_hours": index.window.total_seconds() / 3600,
            "headlines": headlines,
            "stories": db.execute("SELECT count(*) FROM stories WHERE active = 1").fetchone()[0],
            "events": db.execute("SELECT count(DISTINCT event_id) FROM headlines").fetchone()[0],
            "embeddings": db.execute("SELECT count(*) FROM embeddings").fetchone()[0],
            "earliest": None if earliest is None else iso(earliest),
            "latest": None if latest is None else iso(latest),
            "merges": history.get("merge", 0),
            "splits": history.get("split", 0),
        }
    # The check describes the segment files too: reading and checksumming them once is enough.
    check = check_index(index, vectors, quick=True, rows=rows, headlines=headlines)
    info["faiss"] = check.faiss
    info["check"] = check.to_dict()
    if last_run is not None:
        since, until, state, finished, summary = last_run
        info["last_nightly"] = {
            "since": iso(since),
            "until": iso(until),
            "state": state,
            "finished_at": finished,
            # Its figures; the changes' headlines (kept for the report) stay out of the stats.
            **{k: v for k, v in (json.loads(summary) if summary else {}).items() if k not in ("moved", "reported")},
        }
    return info


def check_index(
    index: HeadlineIndex,
    vectors: VectorFile,
    *,
    quick: bool = False,
    rows: np.ndarray | None = None,
    headlines: int | None = None,
) -> CheckReport:
    """Look for every kind of damage :mod:`.integrity` knows; repairs nothing. ``rows``/``headlines``:
    the headline rows and their count when the caller has read them already."""
    db = index.db
    report = CheckReport(database=database_findings(db, quick=quick))
    dimension = index.dimension
    if dimension is not None:
        report.damaged_vectors, report.missing_vectors = damaged_vector_rows(db, dimension)
    report.wrong_stories = len(wrong_story_ids(db))
    try:
        if rows is None or headlines is None:
            rows, headlines = vectors.all_rows(), index.count()
        report.faiss = vectors.describe(rows, headlines)
    except InputError:  # the headlines table cannot be read: the database findings say why
        report.faiss = {"in_step": False}
    return report


def repair_index(index: HeadlineIndex, vectors: VectorFile) -> list[str]:
    """Repair what :func:`check_index` finds (the caller holds the writer lock); what was wrong.

    A damaged database is rebuilt from the rows that can still be read; vectors that are damaged or
    lost are embedded again from their headlines' normalized text; story records are recomputed from
    their headlines. Story ids of headlines never change here.
    """
    fixed: list[str] = []
    findings = database_findings(index.db)
    if findings:
        index.db.close()
        rebuilt = salvage(index.path)
        index.reconnect()
        fixed.append(f"the database was damaged ({findings[0]}): {rebuilt.describe()}")
    dimension = index.dimension
    if dimension is not None:
        damaged, missing = damaged_vector_rows(index.db, dimension)
        if damaged or missing:
            count, rows = reembed(index, dimension)
            vectors.mark_stale(rows)  # their segments hold the old vectors: written again by the rewrite
            fixed.append(
                f"embedded {count:,} headline text(s) again: {len(damaged):,} stored vector(s) were damaged, "
                f"{missing:,} missing"
            )
    wrong = wrong_story_ids(index.db)
    if wrong:
        with index.db.transaction():
            index.refresh_stories(wrong)
        fixed.append(f"recomputed {len(wrong):,} story record(s) from their headlines")
    return fixed


def reembed(index: HeadlineIndex, dimension: int) -> tuple[int, list[int]]:
    """Embed again every headline text whose stored vector is damaged or missing; how many texts, and
    the rows of the headlines that have them."""
    db = index.db
    todo: dict[bytes, str] = {}
    rows: list[int] = []
    for row, key, normalized, blob in db.execute(
        "SELECT h.row, h.text_key, h.normalized, e.vector FROM headlines h LEFT JOIN embeddings e "
        "ON e.text_key = h.text_key ORDER BY h.row"
    ):
        if blob is None or not is_unit(blob, dimension):
            todo.setdefault(key, normalized)
            rows.append(int(row))
    if not todo:
        return 0, []
    fresh = np.asarray(index.embedder_in_use().encode(list(todo.values())), dtype=np.float32)
    with db.transaction():
        db.executemany(
            "INSERT OR REPLACE INTO embeddings (text_key, vector) VALUES (?, ?)",
            [(key, vector.tobytes()) for key, vector in zip(todo, fresh, strict=True)],
        )
    return len(todo), rows


def window_headlines(index: HeadlineIndex, low: float, high: float) -> WindowHeadlines:
    """The stored headlines with time in [low, high), in row order."""
    found = index.db.execute(
        "SELECT h.row, h.story_id, h.event_id, h.normalized, h.t, h.published_at IS NOT NULL, e.vector, h.id, "
        "h.text FROM headlines h JOIN embeddings e ON e.text_key = h.text_key WHERE h.t >= ? AND h.t < ? "
        "ORDER BY h.row",
        (low, high),
    ).fetchall()
    return WindowHeadlines(
        [r[0] for r in found],
        [r[1] for r in found],
        [r[2] for r in found],
        [r[3] for r in found],
        as_vectors([r[6] for r in found], index.dimension or 0),
        [r[4] if r[5] else None for r in found],
        [r[7] for r in found],
        [r[8] for r in found],
    )


def outside_stories(db: Database, event_ids: Iterable[str], low: float, high: float) -> dict[str, set[str]]:
    """Story ids of each event's headlines with time outside [low, high)."""
    found: dict[str, set[str]] = {}
    for chunk in chunks(sorted(set(event_ids))):
        for event, story in db.execute(
            f"SELECT DISTINCT event_id, story_id FROM headlines WHERE event_id IN ({marks(len(chunk))}) "
            "AND (t < ? OR t >= ?)",
            (*chunk, low, high),
        ):
            found.setdefault(event, set()).add(story)
    return found


def judged_rows(db: Database, run: int, low: float, high: float) -> set[int]:
    """Rows with time in [low, high) that an earlier nightly run judged: inside its window and added
    before it started."""
    return {
        int(row)
        for (row,) in db.execute(
            # Only runs whose window overlaps this one can have judged its headlines.
            "SELECT DISTINCT h.row FROM headlines h JOIN runs r ON r.kind = 'nightly' AND r.id < ? "
            "AND r.state != 'running' AND r.until > ? AND r.since < ? AND h.t >= r.since AND h.t < r.until "
            "AND h.added_at <= r.started_at WHERE h.t >= ? AND h.t < ?",
            (run, low, high, low, high),
        )
    }


def start_run(db: Database, low: float, high: float) -> Run:
    """The run record: an unfinished one for the same window is resumed, else a new one starts."""
    with db.transaction():
        unfinished = db.execute(
            "SELECT id, state, summary FROM runs WHERE kind = 'nightly' AND since = ? AND until = ? "
            "AND state != 'done' ORDER BY id DESC LIMIT 1",
            (low, high),
        ).fetchone()
        done = db.execute(
            "SELECT id, summary FROM runs WHERE kind = 'nightly' AND since = ? AND until = ? AND state = 'done' "
            "ORDER BY id DESC LIMIT 1",
            (low, high),
        ).fetchone()
        previous = None if done is None else (int(done[0]), json.loads(done[1]) if done[1] else {})
        if unfinished is not None:
            run, state, summary = unfinished
            return Run(int(run), True, state, json.loads(summary) if summary else {}, previous)
        cursor = db.execute(
            "INSERT INTO runs (kind, since, until, started_at, state) VALUES ('nightly', ?, ?, ?, 'running')",
            (low, high, utc_now()),
        )
        return Run(int(cursor.lastrowid), False, "running", previous=previous)


def run_changes(db: Database, run: int) -> list[tuple[str, str, str, str]]:
    """(kind, old id, new id, reason) of every merge and split a run recorded, in order."""
    return [
        tuple(r)
        for r in db.execute("SELECT kind, old_id, new_id, reason FROM story_history WHERE run = ? ORDER BY seq", (run,))
    ]


def apply_regrouping(
    index: HeadlineIndex,
    window: WindowHeadlines,
    events: Sequence[str],
    stories: Sequence[str],
    changes: Sequence[tuple[str, str, str, str]],
    next_numbers: tuple[int, int],
    run: int,
    summary: Mapping[str, Any],
) -> dict[str, int]:
    """Give the window's headlines their new event and story ids and record history: one transaction.

    Only the window's own headlines change: a merge or split never reaches a headline outside it (one
    that was not judged with the rest). ``changes``: (kind, old id, new id, reason) to record;
    ``next_numbers``: the event and story counters after the ids this run minted. The run is marked
    committed with ``summary`` plus ``changed`` and ``changed_events`` (headlines whose story / event id
    changed), which are returned.
    """
    db = index.db
    moved = [
        (story, event, row)
        for row, old_story, old_event, story, event in zip(
            window.rows, window.story_ids, window.event_ids, stories, events, strict=True
        )
        if story != old_story or event != old_event
    ]
    counts = {
        "changed": sum(a != b for a, b in zip(window.story_ids, stories, strict=True)),
        "changed_events": sum(a != b for a, b in zip(window.event_ids, events, strict=True)),
    }
    at = utc_now()
    with db.transaction():
        db.executemany("UPDATE headlines SET story_id = ?, event_id = ? WHERE row = ?", moved)
        index.refresh_stories(set(window.story_ids) | set(stories), created_at=at)
        db.executemany(
            "INSERT INTO story_history (old_id, new_id, at, kind, reason, run) VALUES (?, ?, ?, ?, ?, ?)",
            [(old, new, at, kind, reason, run) for kind, old, new, reason in changes],
        )
        db.set_meta({"next_event": next_numbers[0], "next_story": next_numbers[1]})
        index.set_run(run, "committed", {**summary, **counts})
    return counts
