"""Queries: the stored headlines nearest to a text, and whether the text would join their stories."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

from ..embed import text_key
from ..errors import InputError
from ..normalize import is_blank, is_valid_unicode, normalize
from ..records import to_utc
from .ann import one_search_thread
from .assign import story_means
from .schema import HEADLINE_COLUMNS, Database, chunks, iso, marks
from .types import Headline, QueryHit
from .vectors import VectorFile
from .writing import stored_vectors

_RERANK_MARGIN = 10  # candidates beyond k that a graph search returns for exact reranking

if TYPE_CHECKING:
    from .headline_index import HeadlineIndex


def query_index(
    index: HeadlineIndex, vectors: VectorFile, text: str, k: int, explain: bool, when: datetime | None = None
) -> list[QueryHit]:
    """See :meth:`HeadlineIndex.query`."""
    # Unix seconds as stored headlines have them; NaN (no time) is what the judgement takes for unknown.
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    moment = np.nan if when is None else to_utc(when).timestamp()
    if not text.strip():
        raise InputError("the query is empty")
    if not is_valid_unicode(text):
        raise InputError("the query text is not valid Unicode (it holds a lone surrogate)")
    if is_blank(text):  # only invisible characters: it would match whatever normalizes to nothing
        raise InputError("the query has no visible characters", hint="give the text of a headline")
    normalized = normalize(text)
    vector = _vector_of(index, normalized)
    vi = vectors.current(write=False)
    if vi is None or k <= 0:
        return []
    # A graph segment scores with 8-bit codes: ask it for more candidates than shown, and rank them by
    # the exact score of their stored float32 vectors, so that the order and the cosine a user sees are
    # those of exact search over the candidates (and exactly so on a flat index).
    wanted = k if vi.exact else max(2 * k, k + _RERANK_MARGIN)
    while True:
        with one_search_thread():
            neighbors = vi.search(vector, wanted)[0]
        with index.db.snapshot():
            hits = _hits(index, neighbors, vector, normalized, explain, moment)
        if len(hits) >= k or len(neighbors) < wanted:
            return hits[:k]
        wanted *= 2  # some neighbours were removed (tombstones in their segments): look further


def _vector_of(index: HeadlineIndex, normalized: str) -> np.ndarray:
    key = text_key(normalized)
    stored = stored_vectors(index.db, [key])
    if key in stored:  # a stored headline's vector: no need to load the model
        return stored[key]
    return np.asarray(index.embedder_in_use().encode([normalized]), dtype=np.float32)[0]


def _hits(
    index: HeadlineIndex, neighbors: Sequence, vector: np.ndarray, normalized: str, explain: bool, moment: float
) -> list[QueryHit]:
    headlines, exact = _headlines_scored(index.db, [n.id for n in neighbors], vector)
    for n in neighbors:
        exact.setdefault(n.id, n.score)
    # Removed rows (no headline) drop out here; ties keep the search's order.
    neighbors = sorted((n for n in neighbors if n.id in headlines), key=lambda n: -exact[n.id])
    stories: dict[str, tuple[int, float]] = {}
    if explain:
        wanted = {h.event_id for h in headlines.values()}  # a new headline joins an event (and its story)
        # A query without a publication time (NaN) is compared without one.
        stories = story_means(index.db, index.judgement, vector, normalized, moment, wanted, index.dimension or 0)
    hits = []
    for neighbor in neighbors:
        headline = headlines.get(neighbor.id)
        if headline is None:
            continue
        size, mean = stories.get(headline.event_id, (None, None))
        hits.append(QueryHit(headline, exact[neighbor.id], size, mean, index.threshold if explain else None))
    return hits


def _headlines_scored(
    db: Database, rows: Sequence[int], vector: np.ndarray
) -> tuple[dict[int, Headline], dict[int, float]]:
    """The headlines of ``rows`` and their exact cosine to ``vector``, in one query (see exact_scores)."""
    headlines: dict[int, Headline] = {}
    scores: dict[int, float] = {}
    query = np.asarray(vector, dtype=np.float32)
    for chunk in chunks(list(rows)):
        for *columns, blob in db.execute(
            f"SELECT {HEADLINE_COLUMNS}, e.vector FROM headlines h LEFT JOIN embeddings e "
            f"ON e.text_key = h.text_key WHERE h.row IN ({marks(len(chunk))})",
            chunk,
        ):
            headline = Headline(*columns)
            headlines[headline.row] = headline
            if blob is not None:  # a lost vector (index check reports it) keeps the search's score
                scores[headline.row] = float(np.dot(np.frombuffer(blob, dtype=np.float32), query))
    return headlines, scores


def exact_scores(db: Database, rows: Sequence[int], vector: np.ndarray) -> dict[int, float]:
    """Each row's cosine to ``vector``, from its stored float32 vector (the database's, not a file's)."""
    found: dict[int, float] = {}
    query = np.asarray(vector, dtype=np.float32)
    for chunk in chunks(list(rows)):
        for row, blob in db.execute(
            "SELECT h.row, e.vector FROM headlines h JOIN embeddings e ON e.text_key = h.text_key "
            f"WHERE h.row IN ({marks(len(chunk))})",
            chunk,
        ):
            found[int(row)] = float(np.dot(np.frombuffer(blob, dtype=np.float32), query))
    return found


def indexed_span(index: HeadlineIndex) -> tuple[int, str | None, str | None]:
    """How many headlines the index holds and their earliest and latest times: what an empty nightly
    window's message names, so that a window given in the wrong place can be moved."""
    count, earliest, latest = index.db.execute("SELECT count(*), min(t), max(t) FROM headlines").fetchone()
    return int(count), None if earliest is None else iso(earliest), None if latest is None else iso(latest)
