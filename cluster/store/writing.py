"""The write path of ``add``: stored vectors looked up, a chunk of new headlines committed, updates in place."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .assign import NestedAssigner
from .kept_apart import KeptApart
from .pending import Pending
from .schema import Database, chunks, marks, utc_now
from .types import AddResult, Headline


def stored_vectors(db: Database, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
    found: dict[bytes, np.ndarray] = {}
    for chunk in chunks(list(keys)):
        for key, blob in db.execute(
            f"SELECT text_key, vector FROM embeddings WHERE text_key IN ({marks(len(chunk))})", list(chunk)
        ):
            found[key] = np.frombuffer(blob, dtype=np.float32)
    return found


def update_in_place(db: Database, pairs: Sequence[tuple[Pending, Headline]]) -> None:
    """Updates that keep the normalized text: same vector, so the headline keeps its row and story."""
    now = utc_now()
    with db.transaction():
        for entry, old in pairs:
            record = entry.record
            t = entry.t if entry.t is not None else old.t
            db.execute(
                "UPDATE headlines SET text = ?, source = ?, url = ?, published_at = ?, t = ?, added_at = ? "
                "WHERE row = ?",
                (record.text, record.source, record.url, entry.published_at, t, now, old.row),
            )
        refresh_spans(db, {old.story_id for _, old in pairs})


def refresh_spans(db: Database, story_ids: Iterable[str]) -> None:
    for story_id in story_ids:
        db.execute(
            "UPDATE stories SET (first_seen, last_seen) = "
            "(SELECT min(t), max(t) FROM headlines WHERE story_id = ?) WHERE id = ?",
            (story_id, story_id),
        )


def commit_chunk(
    db: Database,
    chunk: Sequence[tuple[Pending, Headline | None]],
    vectors: np.ndarray,
    new_vectors: Mapping[bytes, np.ndarray],
    assigner: NestedAssigner,
    result: AddResult,
) -> np.ndarray:
    now = time.time()
    added_at = utc_now()
    next_row = db.meta("next_row")
    rows = np.arange(next_row, next_row + len(chunk), dtype=np.int64)
    times = np.array([p.t if p.t is not None else now for p, _ in chunk], dtype=np.float64)
    # The judgement weighs publication times only: a headline without one has no time to compare.
    whens = np.array([p.t if p.t is not None else np.nan for p, _ in chunk], dtype=np.float64)
    with db.transaction():
        replaced = [old for _, old in chunk if old is not None]
        for old in replaced:
            assigner.retire(old)
            db.execute("DELETE FROM headlines WHERE row = ?", (old.row,))
        # Partners in this chunk (a replaced one too) are placed by their position in it, others as stored.
        apart = KeptApart.of(db, [p.id for p, _ in chunk])
        events, stories = assigner.assign(
            rows, times, whens, vectors, [p.normalized for p, _ in chunk], result, apart=apart
        )
        db.executemany(
            "INSERT OR IGNORE INTO embeddings (text_key, vector) VALUES (?, ?)",
            [(key, np.asarray(vector, dtype=np.float32).tobytes()) for key, vector in new_vectors.items()],
        )
        db.executemany(
            "INSERT INTO headlines (row, id, text, normalized, text_key, source, url, published_at, t, "
            "added_at, story_id, event_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    event,
                )
                for (p, _), row, t, story, event in zip(chunk, rows, times, stories, events, strict=True)
            ],
        )
        if replaced:
            refresh_spans(db, {old.story_id for old in replaced})
        assigner.write_stories()
        db.set_meta(
            {"next_row": next_row + len(chunk), "next_story": assigner.next_story, "next_event": assigner.next_event}
        )
    result.added += sum(old is None for _, old in chunk)
    result.updated += len(replaced)
    return rows
