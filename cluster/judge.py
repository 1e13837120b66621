"""The judgement: how similar two headlines are, and from what score on they belong together.

This module owns the pairwise scores and nothing else decides similarity. A score is a
:class:`PairwiseSimilarity` over one collection of headlines (``len``, ``block``, ``pair``, ``pairs``,
``candidates``), which :func:`cluster.group.group` cuts. :class:`Judgement` ties a level's score to its
threshold and linkage; every entry point (``collapse``, ``explain``, ``eval``, the index's online
assignment and query, ``nightly``, the HTTP service) gets its judgement from
:func:`cluster.settings.judgement_for` and scores through :meth:`Judgement.similarity`, so one
threshold means the same everywhere.

Three scores exist. ``learned`` (the default model's): the probability that two headlines report the
same event, a logistic model over cosine, lexical, number, time, length and script signals of the pair
(:mod:`cluster.learned`, weights in ``cluster/data/judgement.json``). ``cosine``: the cosine of the unit
embedding vectors. ``hybrid`` (the earlier hand-set correction, kept for comparison):

    score = min(1, 1 - script_scale * (1 - cosine) + lexical_weight * (lexical - lexical_center)
                   - number_penalty * [both mention numbers and share none]
                   - time_penalty * min(1, |t_i - t_j| / time_scale))       (when both times are known)

- ``lexical``: cosine of character n-gram vectors of the normalized headlines (n-grams taken inside
  words, with word-boundary marks). Arabic attaches clitics (و ب ل ف ك, the article ال) to the next
  word, so whole-word overlap misses "بجائزة"/"الجائزة"; their n-grams still share the stem. Each
  n-gram is weighted by its inverse document frequency within the list being scored (smoothed): words
  that every headline of the list shares (its topic) count less than the words that set an event apart.
  No word list is involved, so it works the same for any language and any news.
- numbers: two headlines that both state numbers but no number in common usually report different
  events (scores, tolls, dates), which embeddings blur.
- time: for the story level, headlines published far apart are less likely to be the same event.
- script: thresholds are calibrated for Arabic; for headlines in other scripts the distance 1 - cosine
  is scaled by a per-level factor fitted on dev data, because the model's cosine scale differs by
  language.

The corrections are bounded, and the score never exceeds 1. ``candidates`` therefore takes plain-cosine
candidates from the lowest cosine that could still reach the threshold (``HybridParams.cosine_floor``)
with the search of :mod:`cluster.candidates` and re-scores only those pairs, so the hybrid costs one sparse product
over the candidate pairs more than cosine.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import lru_cache
from typing import Protocol

import numpy as np
from scipy import sparse

from . import candidates
from .candidates import cosine_candidates, exact_pairs
from .learned import LearnedParams, LearnedSimilarity

__all__ = [
    "SIMILARITIES",
    "CosineSimilarity",
    "HybridParams",
    "HybridSimilarity",
    "Judgement",
    "PairwiseSimilarity",
    "char_ngrams",
    "is_arabic_script",
    "number_set",
]

SIMILARITIES = ("cosine", "hybrid", "learned")
PAIR_CHUNK = 65_536  # aligned pairs scored at once: gathering millions of vector pairs would take gigabytes


class PairwiseSimilarity(Protocol):
    """What grouping and explanations need of a pairwise score over one collection."""

    def __len__(self) -> int: ...
    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray: ...
    def pair(self, i: int, j: int) -> float: ...
    def pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray: ...
    def candidates(self, threshold: float) -> sparse.csr_matrix: ...


class CosineSimilarity:
    """Cosine similarity of unit vectors."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.vectors)

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self.vectors[rows] @ self.vectors[cols].T

    def pair(self, i: int, j: int) -> float:
        return float(self.vectors[i] @ self.vectors[j])

    def pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Scores of the aligned pairs (rows[k], cols[k])."""
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        out = np.empty(len(rows), dtype=np.float32)
        for start in range(0, len(rows), PAIR_CHUNK):
            r, c = rows[start : start + PAIR_CHUNK], cols[start : start + PAIR_CHUNK]
            out[start : start + PAIR_CHUNK] = np.einsum("ij,ij->i", self.vectors[r], self.vectors[c])
        return out

    def candidates(self, threshold: float) -> sparse.csr_matrix:
        """Symmetric sparse matrix of all pairs i != j with similarity >= threshold."""
        return cosine_candidates(self.vectors, threshold)


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
    # Per-language calibration: the same model puts unrelated Arabic headlines higher on the cosine scale
    # than unrelated English ones, so one threshold cannot serve both. Thresholds are stated for Arabic
    # (the product's first language); for a headline written mostly in another script the distance
    # 1 - cosine is multiplied by this factor (a mixed pair by the mean of 1 and the factor). Scaling the
    # distance, rather than adding an offset, keeps every score at most 1, which linkage relies on, and
    # makes average linkage over such headlines exactly cosine linkage at 1 - (1 - threshold) / factor.
    other_script_scale: float = 1.0

    def cosine_floor(self, threshold: float, scripts_present: int = 2) -> float:
        """The lowest cosine whose pair can still score ``threshold`` (the candidate search bound).

        ``scripts_present``: 1 when every headline is Arabic (no script scaling applies), else 2.
        """
        bonus = max(0.0, self.lexical_weight * (1.0 - self.lexical_center))
        scale = min(1.0, self.other_script_scale) if scripts_present > 1 else 1.0
        return 1.0 - (1.0 - threshold + bonus) / scale


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


_LETTER = re.compile(r"[^\W\d_]")
_ARABIC_LETTER = re.compile(r"[\u0600-\u06FF\u0750-\u077F\u08A0-\u08FF\uFB50-\uFDFF\uFE70-\uFEFF]")


@lru_cache(maxsize=1 << 16)  # the index re-scores a story's members for each headline that may join it
def is_arabic_script(text: str) -> bool:
    """Whether at least half of the letters of ``text`` are Arabic-script letters."""
    letters = len(_LETTER.findall(text))
    return letters > 0 and 2 * len(_ARABIC_LETTER.findall(text)) >= letters


@lru_cache(maxsize=1 << 16)
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


def _hours(times: Sequence[object] | np.ndarray | None, n: int) -> np.ndarray | None:
    """Publication times as hours since the epoch (NaN where unknown), or None when none is known.

    ``times``: datetimes, Unix seconds or None each, or an array of Unix seconds with NaN for unknown.
    """
    if times is None:
        return None
    if len(times) != n:
        raise ValueError(f"{len(times)} times for {n} headlines")
    if isinstance(times, np.ndarray):  # the index's own times: no per-item work
        hours = times.astype(np.float64) / 3600.0
        return None if np.isnan(hours).all() else hours
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
        times: Sequence[object] | np.ndarray | None = None,
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
        # Per headline, the factor on its pairs' distance (see HybridParams.other_script_scale).
        self._scale: np.ndarray | None = None
        if p.other_script_scale != 1.0:
            other = np.array([not is_arabic_script(t) for t in normalized_texts])
            if other.any():
                self._scale = np.where(other, p.other_script_scale, 1.0).astype(np.float32)

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
        if self._scale is not None:
            score = 1.0 - 0.5 * (self._scale[rows] + self._scale[cols]) * (1.0 - score)
        if self.lexical is not None:
            score += p.lexical_weight * (lexical - p.lexical_center)
        if self._numbers is not None:
            score -= p.number_penalty * self._number_clash(rows, cols)
        if self.hours is not None:
            score -= p.time_penalty * self._time_gap(rows, cols)
        # Linkage reads 1 - score as a distance, which must not go negative.
        return np.minimum(score, 1.0)

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

    def contributions(self, i: int, j: int) -> dict[str, float]:
        """The pair's score term by term, as ``_correct`` builds it (they add up to the score before its
        cap at 1): the cosine and each correction that applies, for ``explain``."""
        r, c = np.array([i]), np.array([j])
        cos = float(self.cosine.pair(i, j))
        p = self.params
        parts = {"cosine": cos}
        if self._scale is not None:
            parts["script"] = float(1.0 - 0.5 * (self._scale[i] + self._scale[j]) * (1.0 - cos)) - cos
        if self.lexical is not None:
            lexical = float(self.lexical[i].multiply(self.lexical[j]).sum())
            parts["shared words"] = p.lexical_weight * (lexical - p.lexical_center)
        if self._numbers is not None:
            parts["numbers"] = -p.number_penalty * float(self._number_clash(r, c)[0])
        if self.hours is not None:
            parts["time gap"] = -p.time_penalty * float(self._time_gap(r, c)[0])
        return parts

    def pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Scores of the aligned pairs (rows[k], cols[k])."""
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        v = self.cosine.vectors
        out = np.empty(len(rows), dtype=np.float32)
        # In chunks: gathering both vectors of millions of pairs at once would take gigabytes.
        for start in range(0, len(rows), PAIR_CHUNK):
            r, c = rows[start : start + PAIR_CHUNK], cols[start : start + PAIR_CHUNK]
            cos = np.einsum("ij,ij->i", v[r], v[c])
            lexical = None
            if self.lexical is not None:
                lexical = np.asarray(self.lexical[r].multiply(self.lexical[c]).sum(axis=1)).ravel()
            out[start : start + PAIR_CHUNK] = self._correct(cos, r, c, lexical)
        return out

    def candidates(self, threshold: float) -> sparse.csr_matrix:
        """Symmetric sparse matrix of all pairs i != j whose hybrid score reaches ``threshold``."""
        n = len(self)
        rows, cols = self._loose_pairs(threshold)
        # Second pass: the full score only for pairs that could reach the threshold.
        scores = self.pairs(rows, cols) if len(rows) else np.zeros(0, dtype=np.float32)
        keep = scores >= threshold
        kept = sparse.coo_matrix((scores[keep], (rows[keep], cols[keep])), shape=(n, n))
        return (kept + kept.T).tocsr()

    def _loose_pairs(self, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Pairs i < j that could reach ``threshold``: script-scaled cosine plus the largest lexical bonus.

        Up to EXACT_PAIRS_LIMIT items this is exact per pair, blockwise like CosineSimilarity, so an
        Arabic list with a few English headlines does not widen the search for its Arabic pairs. Beyond
        it, the cell search of :mod:`cluster.candidates` at the loosest cosine bound is used.
        """
        n = len(self)
        p = self.params
        if n > candidates.EXACT_PAIRS_LIMIT:
            scripts = 1 if self._scale is None else 2
            upper = sparse.triu(self.cosine.candidates(p.cosine_floor(threshold, scripts) - 1e-6), k=1).tocoo()
            return upper.row.astype(np.int64), upper.col.astype(np.int64)
        bound = threshold - max(0.0, p.lexical_weight * (1.0 - p.lexical_center)) - 1e-6
        rows, cols, _ = exact_pairs(self.cosine.vectors, bound, self._scale)
        return rows, cols


@dataclass(frozen=True)
class Judgement:
    """A level's judgement for one model: which score, the threshold on it, and the linkage.

    ``source`` says where the threshold came from (shown to users next to it). Get one from
    :func:`cluster.settings.judgement_for`; :meth:`similarity` scores a collection of headlines.
    """

    model: str
    level: str
    threshold: float
    source: str
    kind: str = "cosine"  # one of SIMILARITIES
    # The weights of its kind: HybridParams for "hybrid" (ignored by "cosine"), LearnedParams for "learned"
    # (cluster.learned; its threshold is then a probability). One field, so that a judgement rebuilt from
    # its positional fields (as an index does with its own linkage) keeps its weights.
    params: HybridParams | LearnedParams = field(default_factory=HybridParams)
    linkage: str = "average"

    def __post_init__(self) -> None:
        if self.kind not in SIMILARITIES:
            raise ValueError(f"unknown similarity {self.kind!r}: use one of {', '.join(SIMILARITIES)}")
        if self.kind == "learned" and not isinstance(self.params, LearnedParams):
            raise ValueError("a learned judgement needs its weights (params=LearnedParams(...))")
        if self.kind == "hybrid" and not isinstance(self.params, HybridParams):
            raise ValueError("a hybrid judgement needs HybridParams")

    @property
    def scale(self) -> str:
        """What its scores are, named in output: a learned score is a probability, not a similarity."""
        return {"learned": f"probability of the same {self.level}", "hybrid": "hybrid similarity"}.get(
            self.kind, "cosine"
        )

    @property
    def learned(self) -> LearnedParams | None:
        """The learned weights, when this judgement has them."""
        return self.params if isinstance(self.params, LearnedParams) else None

    @property
    def uses_time(self) -> bool:
        if isinstance(self.params, LearnedParams):
            return self.kind == "learned" and self.params.uses_time
        return self.kind == "hybrid" and self.params.time_penalty > 0

    def similarity(
        self, vectors: np.ndarray, normalized: Sequence[str], times: Sequence[object] | np.ndarray | None = None
    ) -> CosineSimilarity | HybridSimilarity | LearnedSimilarity:
        """The score over one collection: unit ``vectors``, their ``normalized`` texts and publication
        ``times`` (datetimes, Unix seconds or None; used only by a score that weighs time)."""
        if self.kind == "cosine":
            return CosineSimilarity(vectors)
        if isinstance(self.params, LearnedParams):
            return LearnedSimilarity(vectors, normalized, times=times, params=self.params)
        return HybridSimilarity(vectors, normalized, times=times, params=self.params)

    def cosine_floor(self, threshold: float | None = None) -> float:
        """The lowest cosine whose pair can still reach ``threshold`` (default: this one's)."""
        threshold = self.threshold if threshold is None else threshold
        if self.kind == "cosine":
            return threshold
        return self.params.cosine_floor(threshold)

    def with_threshold(self, threshold: float, source: str) -> Judgement:
        return replace(self, threshold=float(threshold), source=source)

    def with_kind(self, kind: str) -> Judgement:
        """The same level scored with another similarity (weights kept; the threshold then means less)."""
        if kind == "learned" and self.learned is None:
            raise ValueError(f"no learned weights for {self.model} at the {self.level} level")
        if kind == "hybrid" and not isinstance(self.params, HybridParams):
            return replace(self, kind=kind, params=HybridParams())
        return replace(self, kind=kind)
