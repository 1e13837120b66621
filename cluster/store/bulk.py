"""Bulk insert for ``index build``: pre-embedded headlines with their story ids, stored in one transaction.

A build fills a new or empty index: it is never mixed with online assignment, so the headlines arrive
with their final story ids (:mod:`cluster.build` decides them) and the whole build commits at once.
A build killed before the commit leaves the index as it was; one killed after it is complete in
SQLite, and the vector file (derived data) is caught up on the next use, as after an interrupted
``add``. The build is recorded in the ``runs`` table (kind ``build``) with its input fingerprint, so
running the same build again is recognised and changes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..judge import Judgement
from .schema import Database, utc_now
from .story_table import refresh_stories


@dataclass
class BuiltHeadlines:
    """A batch of built headlines, in the row order they are stored in."""

    ids: list[str]
    texts: list[str]
    normalized: list[str]
    keys: list[bytes]
    published_at: list[str | None]
    t: np.ndarray  # what windows use: the publication time, else the build's start
    sources: list[str | None]
    urls: list[str | None]
    vectors: np.ndarray
    story_ids: list[str]
    event_ids: list[str]


def last_build(db: Database) -> dict[str, Any] | None:
    """The summary of the last finished build of this index, or None."""
    found = db.execute(
        "SELECT summary FROM runs WHERE kind = 'build' AND state = 'done' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return None if found is None else json.loads(found[0] or "{}")


def insert_built(
    db: Database,
    judgement: Judgement,
    batches: Iterable[BuiltHeadlines],
    *,
    model_id: str,
    dimension: int,
    next_story: int,
    next_event: int,
    summary: Mapping[str, Any],
) -> int:
    """Store every batch, the story records and the build's run record in one transaction; how many
    headlines were stored. The index must hold no headlines (checked inside the transaction, so a
    concurrent ``add`` that got in first makes this fail instead of mixing the two)."""
    stored_model = db.meta("model_id")
    if stored_model is not None and stored_model != model_id:
        raise InputError(
            f"this index embeds with {stored_model!r}, the build with {model_id!r}",
            hint="build into a new index folder",
        )
    clock = time.monotonic()
    at = utc_now()
    stories: set[str] = set()
    added = 0
    with db.transaction():
        held = db.execute("SELECT count(*) FROM headlines").fetchone()[0]
        if held:
            raise InputError(
                f"index build fills a new or empty index; this one holds {held:,} headline(s)",
                hint="use index add to add headlines to it, or build into a new folder",
            )
        row = int(db.meta("next_row"))
        for batch in batches:
            if batch.vectors.shape[1] != dimension:
                raise InputError(f"the build gives vectors of dimension {batch.vectors.shape[1]}, expected {dimension}")
            db.executemany(
                "INSERT OR IGNORE INTO embeddings (text_key, vector) VALUES (?, ?)",
                [
                    (key, np.ascontiguousarray(vector, dtype=np.float32).tobytes())
                    for key, vector in zip(batch.keys, batch.vectors, strict=True)
                ],
            )
            db.executemany(
                "INSERT INTO headlines (row, id, text, normalized, text_key, source, url, published_at, t, "
                "added_at, story_id, event_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (row + k, *values, at, story, event)
                    for k, (*values, story, event) in enumerate(
                        zip(
                            batch.ids,
                            batch.texts,
                            batch.normalized,
                            batch.keys,
                            batch.sources,
                            batch.urls,
                            batch.published_at,
                            batch.t.tolist(),
                            batch.story_ids,
                            batch.event_ids,
                            strict=True,
                        )
                    )
                ],
            )
            row += len(batch.ids)
            added += len(batch.ids)
            stories.update(batch.story_ids)
        db.set_meta(
            {
                "model_id": model_id,
                "dimension": dimension,
                "next_row": row,
                "next_story": next_story,
                "next_event": next_event,
            }
        )
        refresh_stories(db, judgement, dimension, stories, created_at=at)
        recorded = {**summary, "store_seconds": round(time.monotonic() - clock, 2)}  # up to the commit
        db.execute(
            "INSERT INTO runs (kind, started_at, finished_at, state, summary) VALUES ('build', ?, ?, 'done', ?)",
            (summary.get("started_at", at), utc_now(), json.dumps(recorded)),
        )
    return added
