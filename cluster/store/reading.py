"""Queries: the stored headlines nearest to a text, and whether the text would join their stories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..embed import text_key
from ..errors import InputError
from ..normalize import normalize
from .ann import one_search_thread
from .assign import story_means
from .schema import HEADLINE_COLUMNS, Database, chunks, marks
from .types import Headline, QueryHit
from .vectors import VectorFile
from .writing import stored_vectors

if TYPE_CHECKING:
    from .headline_index import HeadlineIndex


def query_index(index: HeadlineIndex, vectors: VectorFile, text: str, k: int, explain: bool) -> list[QueryHit]:
    """See :meth:`HeadlineIndex.query`."""
    if not text.strip():
        raise InputError("the query is empty")
    normalized = normalize(text)
    vector = _vector_of(index, normalized)
    vi = vectors.current(write=False)
    if vi is None or k <= 0:
        return []
    wanted = k
    while True:
        with one_search_thread():
            neighbors = vi.search(vector, wanted)[0]
        with index.db.snapshot():
            hits = _hits(index, neighbors, vector, normalized, explain)
        if len(hits) >= k or len(neighbors) < wanted:
            return hits[:k]
        wanted *= 2  # some neighbours were removed after the file was written: look further


def _vector_of(index: HeadlineIndex, normalized: str) -> np.ndarray:
    key = text_key(normalized)
    stored = stored_vectors(index.db, [key])
    if key in stored:  # a stored headline's vector: no need to load the model
        return stored[key]
    return np.asarray(index.embedder_in_use().encode([normalized]), dtype=np.float32)[0]


def _hits(
    index: HeadlineIndex, neighbors: Sequence, vector: np.ndarray, normalized: str, explain: bool
) -> list[QueryHit]:
    headlines = {h.row: h for h in headlines_by_row(index.db, [n.id for n in neighbors])}
    stories: dict[str, tuple[int, float]] = {}
    if explain:
        wanted = {h.story_id for h in headlines.values()}
        # A query has no publication time: the judgement compares it without one.
        stories = story_means(index.db, index.judgement, vector, normalized, np.nan, wanted, index.dimension or 0)
    hits = []
    for neighbor in neighbors:
        headline = headlines.get(neighbor.id)
        if headline is None:
            continue
        size, mean = stories.get(headline.story_id, (None, None))
        hits.append(QueryHit(headline, neighbor.score, size, mean, index.threshold if explain else None))
    return hits


def headlines_by_row(db: Database, rows: Sequence[int]) -> list[Headline]:
    found = []
    for chunk in chunks(list(rows)):
        found.extend(
            Headline(*r)
            for r in db.execute(
                f"SELECT {HEADLINE_COLUMNS} FROM headlines h WHERE h.row IN ({marks(len(chunk))})", chunk
            )
        )
    return found
