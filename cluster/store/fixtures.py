"""Storing headlines whose stories are already decided, in large transactions: for benchmark fixtures.

``HeadlineIndex.add`` assigns each headline a story online and commits every thousand; building a
million-headline index that way takes many minutes on two cores. :func:`insert_grouped` writes the
same tables (headlines, embeddings, stories, ``meta`` counters) directly, with the story of each
headline given by the caller, so that ``scripts/bench_index.py`` can build a 1M-headline fixture in a
few minutes and measure what happens after it (adds, queries, memory) on a realistic folder. The
segment files are not written here: the next write operation or ``maintain`` catches them up from the
database like the rows of any interrupted run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..embed import text_key
from ..normalize import normalize
from .ids import mint_event_id, mint_story_id
from .schema import Database, iso, utc_now

CHUNK = 50_000  # headlines per transaction


def insert_grouped(
    db: Database,
    model_id: str,
    texts: Sequence[str],
    times: np.ndarray,
    vectors: np.ndarray,
    groups: np.ndarray,
) -> int:
    """Store ``texts`` with their unit ``vectors`` and times (Unix seconds); ``groups[i]`` numbers the
    story of headline i (0, 1, ... in order of first appearance). Ids are ``g`` and the row number.
    Returns how many were stored. For an index that holds no headlines yet (caller holds the lock)."""
    if db.execute("SELECT count(*) FROM headlines").fetchone()[0]:
        raise ValueError("insert_grouped fills an empty index only")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    first_story = int(db.meta("next_story"))
    added_at = utc_now()
    with db.transaction():
        db.set_meta({"model_id": model_id, "dimension": int(vectors.shape[1])})
    for start in range(0, len(texts), CHUNK):
        stop = min(start + CHUNK, len(texts))
        rows = range(start + 1, stop + 1)
        normalized = [normalize(t) for t in texts[start:stop]]
        keys = [text_key(n) for n in normalized]
        with db.transaction():
            db.executemany(
                "INSERT OR IGNORE INTO embeddings (text_key, vector) VALUES (?, ?)",
                [(k, vectors[start + i].tobytes()) for i, k in enumerate(keys)],
            )
            db.executemany(
                "INSERT INTO headlines (row, id, text, normalized, text_key, source, url, published_at, t, "
                "added_at, story_id, event_id) VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, ?, ?, ?, ?)",
                [
                    (
                        row,
                        f"g{row}",
                        texts[row - 1],
                        normalized[row - 1 - start],
                        keys[row - 1 - start],
                        iso(float(times[row - 1])),
                        float(times[row - 1]),
                        added_at,
                        mint_story_id(first_story + int(groups[row - 1])),
                        mint_event_id(first_story + int(groups[row - 1])),  # each story one event
                    )
                    for row in rows
                ],
            )
    stories = int(groups.max()) + 1 if len(groups) else 0
    with db.transaction():
        # Story records from their members: the first member stands for the story until nightly picks
        # the most central one.
        db.execute(
            "INSERT INTO stories (id, created_at, representative, first_seen, last_seen, size, vector_sum, active) "
            "SELECT story_id, ?, min(row), min(t), max(t), count(*), NULL, 1 FROM headlines GROUP BY story_id",
            (added_at,),
        )
        db.set_meta(
            {"next_row": len(texts) + 1, "next_story": first_story + stories, "next_event": first_story + stories}
        )
    return len(texts)
