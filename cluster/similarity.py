"""The hybrid pairwise score: embedding cosine, corrected by lexical evidence, numbers and time.

``HybridSimilarity`` has the interface of :class:`cluster.group.CosineSimilarity` (``len``, ``block``,
``pair``, ``candidates``), so ``group()`` and ``collapse`` can use either. Its score is

    score = cosine + lexical_weight * (lexical - lexical_center)
                   - number_penalty * [both mention numbers and share none]
                   - time_penalty * min(1, |t_i - t_j| / time_scale)        (when both times are known)

- ``lexical``: cosine of character n-gram vectors of the normalized headlines (n-grams taken inside
  words, with word-boundary marks). Arabic attaches clitics (و ب ل ف ك, the article ال) to the next
  word, so whole-word overlap misses "بجائزة"/"الجائزة"; their n-grams still share the stem. Each
  n-gram is weighted by its inverse document frequency within the list being scored (smoothed): words
  that every headline of the list shares (its topic) count less than the words that set an event apart.
  No word list is involved, so it works the same for any language and any news.
- numbers: two headlines that both state numbers but no number in common usually report different
  events (scores, tolls, dates), which embeddings blur.
- time: for the story level, headlines published far apart are less likely to be the same event.

The corrections are bounded: the score never exceeds ``cosine + max_bonus``. ``candidates`` therefore
takes plain-cosine candidates at ``threshold - max_bonus`` from the exact (or FAISS) search and re-scores
only those pairs, so the hybrid costs one sparse product over the candidate pairs more than cosine.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import numpy as np
from scipy import sparse

from .group import CosineSimilarity

__all__ = ["HybridParams", "HybridSimilarity", "build_similarity", "char_ngrams", "number_set"]

SIMILARITIES = ("cosine", "hybrid")


@dataclass(frozen=True)
class HybridParams:
    """Weights of the hybrid score (see the module docstring); fitted on dev splits per model and level."""

    lexical_weight: float = 0.0
    lexical_center: float = 0.5
    ngram: tuple[int, ...] = (3,)
    idf: bool = True
    number_penalty: float = 0.0
    time_penalty: float = 0.0
    time_scale_hours: float = 24.0

    @property
    def max_bonus(self) -> float:
        """The most the corrections can add to the cosine (lexical similarity 1, no penalty)."""
        return max(0.0, self.lexical_weight * (1.0 - self.lexical_center))


_WORD = re.compile(r"[^\W_]+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def char_ngrams(text: str, sizes: Sequence[int] = (3,)) -> list[str]:
    """Character n-grams of each word of ``text`` (already normalized), with '<' '>' marking its ends.

    A word too short for one n-gram with its marks contributes itself whole ("<5>"), so short words
    (numbers, initials) still count.
    """
    grams: list[str] = []
    for word in _WORD.findall(text):
        marked = f"<{word}>"
        for n in sizes:
            if len(marked) <= n:
                grams.append(marked)
            else:
                grams.extend(marked[k : k + n] for k in range(len(marked) - n + 1))
    return grams


def number_set(text: str) -> frozenset[str]:
    """The numbers a normalized headline states (digits are ASCII after normalization)."""
    return frozenset(m.replace(",", "") for m in _NUMBER.findall(text))


def lexical_matrix(texts: Sequence[str], sizes: Sequence[int] = (3,), idf: bool = True) -> sparse.csr_matrix:
    """Rows of L2-normalized n-gram weights (sublinear counts, times IDF within ``texts`` when asked)."""
    vocabulary: dict[str, int] = {}
    indptr, indices, counts = [0], [], []
    for text in texts:
        row: dict[int, int] = {}
        for gram in char_ngrams(text, sizes):
            column = vocabulary.setdefault(gram, len(vocabulary))
            row[column] = row.get(column, 0) + 1
        indices.extend(row.keys())
        counts.extend(row.values())
        indptr.append(len(indices))
    matrix = sparse.csr_matrix(
        (np.asarray(counts, dtype=np.float32), np.asarray(indices, dtype=np.int64), np.asarray(indptr)),
        shape=(len(texts), len(vocabulary)),
    )
    # A repeated n-gram ("...ة" in several words) says less than a second distinct one.
    matrix.data = 1.0 + np.log(matrix.data)
    if idf and len(texts):
        df = np.bincount(matrix.indices, minlength=matrix.shape[1]).astype(np.float32)
        weights = np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0
        matrix = matrix @ sparse.diags(weights.astype(np.float32))
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sparse.csr_matrix(sparse.diags(1.0 / norms) @ matrix, dtype=np.float32)


def _hours(times: Sequence[object] | None, n: int) -> np.ndarray | None:
    """Publication times as hours since the epoch (NaN where unknown), or None when none is known."""
    if times is None:
        return None
    if len(times) != n:
        raise ValueError(f"{len(times)} times for {n} headlines")
    hours = np.full(n, np.nan)
    for k, stamp in enumerate(times):
        if isinstance(stamp, datetime):
            aware = stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)
            hours[k] = aware.timestamp() / 3600.0
        elif isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
            hours[k] = float(stamp) / 3600.0
    return None if np.isnan(hours).all() else hours


class HybridSimilarity:
    """Cosine of unit vectors corrected by lexical overlap, number mismatch and time distance."""

    def __init__(
        self,
        vectors: np.ndarray,
        normalized_texts: Sequence[str],
        *,
        times: Sequence[object] | None = None,
        params: HybridParams | None = None,
    ):
        self.cosine = CosineSimilarity(vectors)
        if len(normalized_texts) != len(self.cosine):
            raise ValueError(f"{len(normalized_texts)} texts for {len(self.cosine)} vectors")
        self.params = params or HybridParams()
        p = self.params
        self.lexical = lexical_matrix(normalized_texts, p.ngram, p.idf) if p.lexical_weight else None
        self._numbers: list[frozenset[str]] | None = None
        if p.number_penalty:
            self._numbers = [number_set(t) for t in normalized_texts]
        self.hours = _hours(times, len(self.cosine)) if p.time_penalty else None

    def __len__(self) -> int:
        return len(self.cosine)

    @property
    def vectors(self) -> np.ndarray:
        return self.cosine.vectors

    def _number_clash(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """1.0 where both headlines state numbers and share none (rows/cols: aligned index arrays)."""
        assert self._numbers is not None
        numbers = self._numbers
        return np.fromiter(
            (
                1.0 if numbers[i] and numbers[j] and not (numbers[i] & numbers[j]) else 0.0
                for i, j in zip(rows.tolist(), cols.tolist(), strict=True)
            ),
            dtype=np.float32,
            count=len(rows),
        )

    def _time_gap(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        assert self.hours is not None
        gap = np.abs(self.hours[rows] - self.hours[cols]) / self.params.time_scale_hours
        return np.nan_to_num(np.minimum(gap, 1.0), nan=0.0).astype(np.float32)  # unknown time: no penalty

    def _correct(self, cos: np.ndarray, rows: np.ndarray, cols: np.ndarray, lexical: np.ndarray) -> np.ndarray:
        """Apply the corrections to cosines of the aligned pairs (rows[k], cols[k])."""
        p = self.params
        score = cos.astype(np.float32, copy=True)
        if self.lexical is not None:
            score += p.lexical_weight * (lexical - p.lexical_center)
        if self._numbers is not None:
            score -= p.number_penalty * self._number_clash(rows, cols)
        if self.hours is not None:
            score -= p.time_penalty * self._time_gap(rows, cols)
        return score

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        rows, cols = np.asarray(rows), np.asarray(cols)
        cos = self.cosine.block(rows, cols)
        r = np.repeat(rows, len(cols))
        c = np.tile(cols, len(rows))
        lexical = None
        if self.lexical is not None:
            lexical = (self.lexical[rows] @ self.lexical[cols].T).toarray().ravel()
        score = self._correct(cos.ravel(), r, c, lexical)
        score = score.reshape(len(rows), len(cols))
        # A headline compared with itself keeps its plain cosine (1): corrections are for pairs, and a
        # lexical bonus on the diagonal would skew centrality-based representatives.
        same = rows[:, None] == cols[None, :]
        score[same] = cos[same]
        return score

    def pair(self, i: int, j: int) -> float:
        return float(self.block(np.array([i]), np.array([j]))[0, 0])

    def pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Scores of the aligned pairs (rows[k], cols[k])."""
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        v = self.cosine.vectors
        cos = np.einsum("ij,ij->i", v[rows], v[cols])
        lexical = None
        if self.lexical is not None:
            lexical = np.asarray(self.lexical[rows].multiply(self.lexical[cols]).sum(axis=1)).ravel()
        return self._correct(cos, rows, cols, lexical)

    def candidates(self, threshold: float) -> sparse.csr_matrix:
        """Symmetric sparse matrix of all pairs i != j whose hybrid score reaches ``threshold``."""
        n = len(self)
        # Second pass: only pairs whose cosine could reach the threshold with the largest possible bonus.
        loose = self.cosine.candidates(threshold - self.params.max_bonus - 1e-6)
        upper = sparse.triu(loose, k=1).tocoo()
        rows, cols = upper.row.astype(np.int64), upper.col.astype(np.int64)
        scores = self.pairs(rows, cols) if len(rows) else np.zeros(0, dtype=np.float32)
        keep = scores >= threshold
        kept = sparse.coo_matrix((scores[keep], (rows[keep], cols[keep])), shape=(n, n))
        return (kept + kept.T).tocsr()


def build_similarity(
    vectors: np.ndarray,
    normalized_texts: Sequence[str],
    *,
    times: Sequence[object] | None = None,
    params: HybridParams | None = None,
    kind: str = "hybrid",
) -> CosineSimilarity | HybridSimilarity:
    """The pairwise score named by ``kind``: ``cosine`` (plain) or ``hybrid`` (with ``params``)."""
    if kind == "cosine":
        return CosineSimilarity(vectors)
    if kind != "hybrid":
        raise ValueError(f"unknown similarity {kind!r}: use one of {', '.join(SIMILARITIES)}")
    return HybridSimilarity(vectors, normalized_texts, times=times, params=params)


def without_time(params: HybridParams) -> HybridParams:
    return replace(params, time_penalty=0.0)
