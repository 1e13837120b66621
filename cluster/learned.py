"""The learned judgement: the probability that two headlines report the same news event.

A logistic model over signals that do not depend on the language or the source of a headline:

- ``cos``: the cosine of the two unit embedding vectors, with its slope and offset free per script
  pair (both Arabic, both another script, different scripts), because e5 puts unrelated Arabic
  headlines higher on the cosine scale than English ones and cross-lingual pairs lower;
- lexical overlap on the normalized text: the share of the shorter headline's word stems found in the
  other, and their number (up to five: two headlines naming the same people and places) — Arabic
  clitics و ف ب ل ك and the article ال taken off, words cut to their first five letters so that
  inflections and most spelling variants still meet — and the cosine of character 3-gram counts
  (ترامب / ترمب share most of theirs);
- numbers: both state numbers and share one (agreement), or share none (a clash: other scores, tolls,
  dates);
- time: the gap between the two publication times on a log scale, its square, and its product with the
  cosine (a day apart weighs more than linearly, and weighs less for a near-identical pair); when either
  time is unknown, a fixed gap (``unknown_gap``, chosen by cross-validation on a list without times) —
  an "is known" signal would only tell the data sets with times (OG2021, UCI) from those without, not
  same events from different ones;
- length: the shorter headline's word count and the ratio of the two (slugs and fragments say less).

**A pair's score is a function of the two headlines alone**: every per-headline signal (stems, n-grams,
numbers, script, time) is computed from that headline only, with no IDF, no neighbourhood and no other
statistic taken over the collection being scored. So the index, which scores a new headline against a
story's few members, gets exactly the score ``collapse`` gets for the same pair in a whole file. (A
"cosine relative to each headline's neighbourhood" would need a fixed reference set shipped with the
package; it is not used, see docs/quality.md.)

Pairs whose cosine is below the model's ``gate`` are scaled down to a hundredth of their probability:
below it the training data hold almost no same-event pairs, and the gate bounds the candidate search
(``cosine_floor``), which keeps grouping at scale close to the cost of plain cosine. The diagonal is 1 and
every score is below 1, as linkage (which reads 1 - score as a distance) needs.

The weights live in a small JSON file (``cluster/data/judgement.json``, rebuilt from the shared data by
``scripts/fit_judgement.py``; ``headline-cluster calibrate`` refits a level on a user's pairs).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import sparse

from . import candidates as _candidates
from .candidates import cosine_candidates, exact_pairs

__all__ = [
    "FEATURES",
    "LearnedParams",
    "LearnedSimilarity",
    "headline_signals",
    "load_params",
    "pair_features",
]

PARAMS_FILE = Path(__file__).resolve().parent / "data" / "judgement.json"
FEATURES = (
    "bias",
    "cos",
    "ar",
    "cos_ar",
    "cross",
    "cos_cross",
    "stem_overlap",
    "shared_stems",
    "gram_cos",
    "num_agree",
    "num_clash",
    "time_gap",
    "len_min",
    "len_ratio",
    "time_gap_sq",
    "cos_time_gap",
)
# Features derived from the time gap: filled in with it when a time is unknown (``impute``).
TIME_FEATURES = ("time_gap", "time_gap_sq", "cos_time_gap")
BELOW_GATE = 0.01  # a pair under the cosine gate keeps its order but can no longer reach a threshold
PAIR_CHUNK = 65_536
_TIME_CAP_HOURS = 168.0  # a week: beyond it every gap says the same
_WORD = re.compile(r"[^\W_]+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_LETTER = re.compile(r"[^\W\d_]")
_ARABIC = re.compile(r"[\u0600-\u06FF\u0750-\u077F\u08A0-\u08FF\uFB50-\uFDFF\uFE70-\uFEFF]")
_LATIN = re.compile(r"[A-Za-z\u00C0-\u024F]")
# Arabic proclitics, longest first: conjunction/preposition + article, then the article, then one letter.
_AR_PREFIXES = ("وبال", "وال", "بال", "كال", "فال", "لل", "ال", "و", "ف", "ب", "ل", "ك")
STEM_LENGTH = 5
SHARED_CAP = 5.0  # shared stems counted up to this many: names and places shared add up, to a point


@dataclass(frozen=True)
class LearnedParams:
    """One level's logistic weights (by feature name) and its cosine gates."""

    weights: tuple[float, ...]
    gate: float
    # The time-gap signal of a pair whose times are not both known. 0 (no gap, so no time penalty) keeps
    # "time separates, never joins": a pair scored without times scores at least as high as with them.
    unknown_gap: float = 0.0
    # The gate of a pair of two Arabic headlines (default: ``gate``). e5 puts unrelated Arabic headlines
    # higher on the cosine scale than other scripts, so fewer of their pairs are worth scoring.
    gate_ar: float | None = None

    def __post_init__(self) -> None:
        if len(self.weights) != len(FEATURES):
            raise ValueError(f"{len(self.weights)} weights for {len(FEATURES)} features")

    @classmethod
    def from_dict(cls, data: dict) -> LearnedParams:
        weights = data["weights"]
        gate_ar = data.get("gate_ar")
        return cls(
            # A feature the file does not name weighs 0 (weights saved before it existed).
            tuple(float(weights.get(name, 0.0)) for name in FEATURES),
            float(data["gate"]),
            float(data.get("unknown_gap", 0.0)),
            None if gate_ar is None else float(gate_ar),
        )

    def to_dict(self) -> dict:
        out = {
            "weights": {n: round(w, 6) for n, w in zip(FEATURES, self.weights, strict=True)},
            "gate": self.gate,
            "unknown_gap": round(self.unknown_gap, 6),
        }
        if self.gate_ar is not None:
            out["gate_ar"] = self.gate_ar
        return out

    @property
    def arabic_gate(self) -> float:
        return self.gate if self.gate_ar is None else self.gate_ar

    @property
    def uses_time(self) -> bool:
        w = dict(zip(FEATURES, self.weights, strict=True))
        return any(w[name] for name in TIME_FEATURES)

    def cosine_floors(self, threshold: float) -> dict[str, float]:
        """The lowest cosine at which a pair can still score ``threshold``, per script pair ("arabic": both
        Arabic, "same": both of one other script, "cross": different scripts): the pair's gate, or higher
        when even the most favourable other signals cannot lift a pair at the gate to the threshold."""
        gates = {"arabic": self.arabic_gate, "same": self.gate, "cross": self.gate}
        if threshold <= BELOW_GATE:
            return {k: -1.0 for k in gates}
        if threshold >= 1.0:
            return {k: 1.0 for k in gates}
        w = dict(zip(FEATURES, self.weights, strict=True))
        target = math.log(threshold / (1.0 - threshold))
        # Largest contribution of everything but the cosine terms, over each signal's range.
        best = w["bias"]
        best += max(0.0, w["stem_overlap"]) + max(0.0, w["shared_stems"]) + max(0.0, w["gram_cos"])
        best += max(0.0, w["num_agree"], w["num_clash"])
        best += max(0.0, w["len_min"]) + max(0.0, w["len_ratio"])
        # The time gap g in [0, 1] enters as g, g^2 and cos * g, so the cosine's slope depends on it: the
        # floor is the lowest over a fine grid of gaps, less a margin for the points between (a lower
        # floor only adds candidates that the score then refuses).
        gaps = np.linspace(0.0, 1.0, 201)
        time_part = w["time_gap"] * gaps + w["time_gap_sq"] * gaps * gaps
        floors = {}
        for kind, offset, slope in (
            ("same", 0.0, w["cos"]),
            ("arabic", w["ar"], w["cos"] + w["cos_ar"]),
            ("cross", w["cross"], w["cos"] + w["cos_cross"]),
        ):
            slopes = slope + w["cos_time_gap"] * gaps
            if (slopes <= 0).any():
                floors[kind] = max(-1.0, gates[kind])
                continue
            floor = float(np.min((target - best - offset - time_part) / slopes)) - 1e-3
            floors[kind] = float(min(1.0, max(gates[kind], floor)))
        return floors

    def cosine_floor(self, threshold: float) -> float:
        """The lowest cosine at which any pair can still score ``threshold`` (:meth:`cosine_floors`)."""
        return min(self.cosine_floors(threshold).values())


@lru_cache(maxsize=4)
def _read_params(path: str, mtime_ns: int) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def load_params(level: str, path: Path | None = None) -> tuple[LearnedParams, float]:
    """The shipped (or given) weights of ``level`` and its threshold on the probability."""
    path = path or PARAMS_FILE
    data = _read_params(str(path), path.stat().st_mtime_ns)
    entry = data["levels"][level]
    return LearnedParams.from_dict(entry), float(entry["threshold"])


_STEM_IDS: dict[str, int] = {}
_GRAM_IDS: dict[str, int] = {}
_NUMBER_IDS: dict[str, int] = {}


def _ids(tokens, table: dict[str, int]) -> list[int]:
    """Process-wide numbers for ``tokens``. Only equality of numbers within one kind matters (the
    features are overlaps), so the numbering may differ between processes while every score stays the
    same; unlike hashing, two tokens never share a number."""
    out = []
    for token in tokens:
        found = table.get(token)
        if found is None:
            found = table.setdefault(token, len(table))  # atomic under the GIL: threads agree on one number
        out.append(found)
    return out


def script_of(text: str) -> int:
    """0 Arabic script, 1 Latin, 2 anything else (Cyrillic, CJK, ...), by the majority of letters."""
    letters = len(_LETTER.findall(text))
    if not letters:
        return 1
    if 2 * len(_ARABIC.findall(text)) >= letters:
        return 0
    return 1 if 2 * len(_LATIN.findall(text)) >= letters else 2


def stem(word: str) -> str:
    """A light stem: Arabic proclitics off (when three letters remain), then the first five letters."""
    if _ARABIC.match(word):
        for prefix in _AR_PREFIXES:
            if word.startswith(prefix) and len(word) - len(prefix) >= 3:
                word = word[len(prefix) :]
                break
    return word[:STEM_LENGTH]


@lru_cache(maxsize=1 << 16)  # the index re-scores a story's members for each headline that may join it
def headline_signals(text: str) -> tuple[tuple[int, ...], tuple[tuple[int, float], ...], tuple[int, ...], int, int]:
    """Per-headline signals of a normalized headline: numbered stems (words of 3+ letters), numbered
    character 3-grams with unit-norm sublinear weights, numbered numbers, word count and script."""
    words = _WORD.findall(text)
    stems = sorted(_ids({stem(w) for w in words if len(w) >= 3 and not w.isdigit()}, _STEM_IDS))
    grams: list[str] = []
    for word in words:
        marked = f"<{word}>"
        if len(marked) <= 3:
            grams.append(marked)
        else:
            grams.extend([marked[k : k + 3] for k in range(len(marked) - 2)])
    counts = Counter(grams)
    weights = [1.0 + math.log(c) for c in counts.values()]
    norm = math.sqrt(sum(v * v for v in weights)) or 1.0
    grams_out = tuple(sorted(zip(_ids(counts, _GRAM_IDS), [v / norm for v in weights], strict=True)))
    numbers = sorted(_ids({m.replace(",", "") for m in _NUMBER.findall(text)}, _NUMBER_IDS))
    return tuple(stems), grams_out, tuple(numbers), len(words), script_of(text)


def _rows(entries: Sequence[Sequence], valued: bool, width: int) -> sparse.csr_matrix:
    indptr, indices, data = [0], [], []
    for entry in entries:
        if valued:
            indices.extend(k for k, _ in entry)
            data.extend(v for _, v in entry)
        else:
            indices.extend(entry)
            data.extend([1.0] * len(entry))
        indptr.append(len(indices))
    return sparse.csr_matrix(
        (np.asarray(data, dtype=np.float32), np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
        shape=(len(entries), width),
    )


def hours_of(times: Sequence[object] | np.ndarray | None, n: int) -> np.ndarray:
    """Publication times as hours since the epoch, NaN where unknown (``times`` may be an array of Unix
    seconds with NaN for unknown, as the index passes its own)."""
    hours = np.full(n, np.nan)
    if times is None:
        return hours
    if len(times) != n:
        raise ValueError(f"{len(times)} times for {n} headlines")
    if isinstance(times, np.ndarray):
        return times.astype(np.float64) / 3600.0
    for k, stamp in enumerate(times):
        if isinstance(stamp, datetime):
            aware = stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)
            hours[k] = aware.timestamp() / 3600.0
        elif isinstance(stamp, (int, float)) and not isinstance(stamp, bool) and math.isfinite(stamp):
            hours[k] = float(stamp) / 3600.0
    return hours


class HeadlineTable:
    """The per-headline signals of a collection, stacked for vectorized pair features."""

    def __init__(
        self, vectors: np.ndarray, normalized: Sequence[str], times: Sequence[object] | np.ndarray | None = None
    ):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(normalized) != len(self.vectors):
            raise ValueError(f"{len(normalized)} texts for {len(self.vectors)} vectors")
        signals = [headline_signals(t) for t in normalized]
        self.stems = _rows([s[0] for s in signals], False, len(_STEM_IDS) + 1)
        self.grams = _rows([s[1] for s in signals], True, len(_GRAM_IDS) + 1)
        self.numbers = _rows([s[2] for s in signals], False, len(_NUMBER_IDS) + 1)
        self.n_stems = np.asarray([len(s[0]) for s in signals], dtype=np.float32)
        self.n_numbers = np.asarray([len(s[2]) for s in signals], dtype=np.float32)
        self.n_words = np.asarray([s[3] for s in signals], dtype=np.float32)
        self.script = np.asarray([s[4] for s in signals], dtype=np.int8)
        self.hours = hours_of(times, len(self.vectors))

    def __len__(self) -> int:
        return len(self.vectors)


def _rowwise(matrix: sparse.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return np.asarray(matrix[rows].multiply(matrix[cols]).sum(axis=1), dtype=np.float32).ravel()


def pair_features(
    table: HeadlineTable, rows: np.ndarray, cols: np.ndarray, cos: np.ndarray | None = None
) -> np.ndarray:
    """The feature matrix (len(rows) x len(FEATURES)) of the aligned pairs (rows[k], cols[k])."""
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    if cos is None:
        cos = np.einsum("ij,ij->i", table.vectors[rows], table.vectors[cols])
    cos = np.asarray(cos, dtype=np.float32)
    a, b = table.script[rows], table.script[cols]
    ar = ((a == 0) & (b == 0)).astype(np.float32)
    cross = (a != b).astype(np.float32)
    shared = _rowwise(table.stems, rows, cols)
    shorter = np.minimum(table.n_stems[rows], table.n_stems[cols])
    stem_overlap = np.where(shorter > 0, shared / np.maximum(shorter, 1.0), 0.0)
    gram_cos = _rowwise(table.grams, rows, cols)
    both_numbers = (table.n_numbers[rows] > 0) & (table.n_numbers[cols] > 0)
    shared_numbers = _rowwise(table.numbers, rows, cols) if both_numbers.any() else np.zeros(len(rows), np.float32)
    num_agree = (both_numbers & (shared_numbers > 0)).astype(np.float32)
    num_clash = (both_numbers & (shared_numbers == 0)).astype(np.float32)
    gap = np.abs(table.hours[rows] - table.hours[cols])
    known = np.isfinite(gap)
    # NaN where a time is unknown: the model fills in its own value (LearnedParams.unknown_gap).
    time_gap = np.where(known, np.minimum(np.log1p(np.nan_to_num(gap)) / math.log1p(_TIME_CAP_HOURS), 1.0), np.nan)
    wa, wb = table.n_words[rows], table.n_words[cols]
    len_min = np.minimum(np.minimum(wa, wb), 20.0) / 20.0
    len_ratio = np.minimum(wa, wb) / np.maximum(np.maximum(wa, wb), 1.0)
    return np.column_stack(
        [
            np.ones(len(rows), np.float32),
            cos,
            ar,
            cos * ar,
            cross,
            cos * cross,
            stem_overlap,
            np.minimum(shared, SHARED_CAP) / SHARED_CAP,
            gram_cos,
            num_agree,
            num_clash,
            time_gap,
            len_min,
            len_ratio,
            time_gap * time_gap,
            cos * time_gap,
        ]
    ).astype(np.float32)


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | None = None,
    *,
    l2: float = 1e-2,
    prior: np.ndarray | None = None,
    iterations: int = 50,
) -> np.ndarray:
    """Weighted L2-regularized logistic regression by Newton's method (labels may be soft, in [0, 1]).

    The penalty pulls the weights toward ``prior`` (default 0; the bias is never pulled), so that a refit
    on a user's few hundred pairs moves the shipped weights only as far as their data ask. No sampling
    and no random start: the same data always give the same weights.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones(len(y)) if w is None else np.asarray(w, dtype=np.float64)
    center = np.zeros(x.shape[1]) if prior is None else np.asarray(prior, dtype=np.float64)
    beta = center.copy()
    penalty = np.full(x.shape[1], l2 * w.sum())
    penalty[0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ beta, -40.0, 40.0)))
        grad = x.T @ (w * (p - y)) + penalty * (beta - center)
        hess = (x * (w * p * (1.0 - p))[:, None]).T @ x + np.diag(penalty) + 1e-9 * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return beta


TIME_GAP = FEATURES.index("time_gap")
_AR_PAIR = FEATURES.index("ar")
TIME_COLUMNS = [FEATURES.index(name) for name in TIME_FEATURES]


def impute(features: np.ndarray, unknown_gap: float) -> np.ndarray:
    """The features with an unknown time gap (NaN) replaced by ``unknown_gap``, and the features derived
    from the gap computed from that value."""
    gap = features[:, TIME_GAP]
    unknown = np.isnan(gap)
    if not unknown.any():
        return features
    out = features.copy()
    out[unknown, TIME_GAP] = unknown_gap
    out[unknown, FEATURES.index("time_gap_sq")] = unknown_gap * unknown_gap
    out[unknown, FEATURES.index("cos_time_gap")] = out[unknown, 1] * unknown_gap
    return out


def probability(features: np.ndarray, params: LearnedParams) -> np.ndarray:
    """The model's score of each feature row: the same-event probability, gated by cosine."""
    features = impute(features, params.unknown_gap)
    logit = features.astype(np.float64) @ np.asarray(params.weights, dtype=np.float64)
    p = 1.0 / (1.0 + np.exp(-np.clip(logit, -40.0, 40.0)))
    gate = np.where(features[:, _AR_PAIR] > 0, params.arabic_gate, params.gate)
    p = np.where(features[:, 1] >= gate, p, BELOW_GATE * p)
    # Strictly below 1 off the diagonal: linkage reads 1 - score as a distance.
    return np.minimum(p, 1.0 - 1e-6).astype(np.float32)


# The signals a person reads in an explanation, and the features each one sums (their logit contributions).
SIGNALS = (
    ("base", ("bias",)),
    ("cosine", ("cos",)),
    ("script", ("ar", "cos_ar", "cross", "cos_cross")),
    ("shared words", ("stem_overlap", "shared_stems", "gram_cos")),
    ("numbers", ("num_agree", "num_clash")),
    ("length", ("len_min", "len_ratio")),
    ("time gap", TIME_FEATURES),
)


def contributions(features: np.ndarray, params: LearnedParams) -> dict[str, float]:
    """Each signal's share of one pair's logit (they add up to it): how far it moved the pair toward or
    away from "the same event". ``features``: one row of :func:`pair_features`."""
    row = impute(np.asarray(features, dtype=np.float32)[None, :], params.unknown_gap)[0].astype(np.float64)
    weight = dict(zip(FEATURES, params.weights, strict=True))
    value = dict(zip(FEATURES, row, strict=True))
    return {signal: float(sum(weight[n] * value[n] for n in names)) for signal, names in SIGNALS}


class LearnedSimilarity:
    """The learned same-event probability over one collection (the PairwiseSimilarity interface)."""

    def __init__(
        self,
        vectors: np.ndarray,
        normalized_texts: Sequence[str],
        *,
        times: Sequence[object] | np.ndarray | None = None,
        params: LearnedParams,
    ):
        self.table = HeadlineTable(vectors, normalized_texts, times)
        self.params = params

    def __len__(self) -> int:
        return len(self.table)

    @property
    def vectors(self) -> np.ndarray:
        return self.table.vectors

    def pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Scores of the aligned pairs (rows[k], cols[k]); a headline with itself scores 1."""
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        out = np.empty(len(rows), dtype=np.float32)
        for start in range(0, len(rows), PAIR_CHUNK):
            r, c = rows[start : start + PAIR_CHUNK], cols[start : start + PAIR_CHUNK]
            out[start : start + PAIR_CHUNK] = probability(pair_features(self.table, r, c), self.params)
        out[rows == cols] = 1.0
        return out

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        r = np.repeat(rows, len(cols))
        c = np.tile(cols, len(rows))
        return self.pairs(r, c).reshape(len(rows), len(cols))

    def pair(self, i: int, j: int) -> float:
        return float(self.pairs(np.array([i]), np.array([j]))[0])

    def _search_bound(self, threshold: float) -> tuple[float, np.ndarray | None]:
        """The cosine bound of the candidate search and a factor per headline (None: all 1) such that the
        scaled cosine ``1 - (s_i + s_j) / 2 * (1 - cos)`` of every pair that can reach ``threshold`` reaches
        the bound: a pair of Arabic headlines needs its own, higher floor, a cross-script pair its own."""
        floors = self.params.cosine_floors(threshold)
        arabic = self.table.script == 0
        if arabic.all():
            return floors["arabic"] - 1e-6, None
        other = min(floors["same"], floors["cross"]) if arabic.any() else floors["same"]
        if not arabic.any() or floors["arabic"] <= other or other >= 1.0:
            return min(other, floors["arabic"]) - 1e-6, None
        factor = (1.0 - other) / max(1.0 - floors["arabic"], 1e-9)
        # Arabic x other: the mean factor; never stricter than the cross-script floor.
        factor = min(factor, 2.0 * (1.0 - other) / max(1.0 - floors["cross"], 1e-9) - 1.0)
        scale = np.where(arabic, np.float32(max(1.0, factor) * (1.0 - 1e-6)), np.float32(1.0)).astype(np.float32)
        return other - 1e-6, scale

    def candidates(self, threshold: float) -> sparse.csr_matrix:
        """Symmetric sparse matrix of all pairs i != j whose score reaches ``threshold``: cosine
        candidates from each script pair's floor (:meth:`LearnedParams.cosine_floors`), re-scored."""
        n = len(self)
        floor, scale = self._search_bound(threshold)
        if n > _candidates.EXACT_PAIRS_LIMIT:
            upper = sparse.triu(cosine_candidates(self.vectors, floor, scale), k=1).tocoo()
            rows, cols = upper.row.astype(np.int64), upper.col.astype(np.int64)
        else:
            rows, cols, _ = exact_pairs(self.vectors, floor, scale)
        scores = self.pairs(rows, cols) if len(rows) else np.zeros(0, dtype=np.float32)
        keep = scores >= threshold
        kept = sparse.coo_matrix((scores[keep], (rows[keep], cols[keep])), shape=(n, n))
        return (kept + kept.T).tocsr()
