"""Evaluation: metrics for scored pairs and for story clusterings, and readers for labelled files.

Everything here is plain numpy/scipy, so the harness adds no dependency to the product. The metrics:

- pairs: Spearman and Pearson correlation between the product's similarity and the gold score; ROC-AUC
  and best F1 (with the threshold that reaches it) for "same" (gold beyond ``same_cut``) against
  "different" (gold beyond ``diff_cut``) pairs, leaving the middle out, as annotators disagree there.
- clusters: pairwise precision/recall/F1 (over all pairs of items), B-cubed precision/recall/F1 (per
  item, then averaged: large stories do not dominate as they do pairwise), and the adjusted Rand index.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from .errors import InputError

PAIR_COLUMNS = ("score", "text_a", "text_b")
PAIR_KEYS = ("n", "spearman", "pearson", "auc", "best_f1", "best_threshold")
CLUSTER_KEYS = (
    "n",
    "true_stories",
    "pred_stories",
    "pairwise_precision",
    "pairwise_recall",
    "pairwise_f1",
    "bcubed_precision",
    "bcubed_recall",
    "bcubed_f1",
    "ari",
)


@dataclass(frozen=True)
class Cuts:
    """Which gold scores count as "same story" and "different" for AUC and F1."""

    same: float
    diff: float
    lower_is_similar: bool = False

    @classmethod
    def default(cls, lower_is_similar: bool, same: float | None = None, diff: float | None = None) -> Cuts:
        # 0-5 similarity (STS): >= 4 is "mostly the same"; <= 2 shares at most some details.
        # 1-4 "Overall" distance (SemEval-2022): <= 1.5 very similar, >= 3.5 very dissimilar.
        if lower_is_similar:
            return cls(1.5 if same is None else same, 3.5 if diff is None else diff, True)
        return cls(4.0 if same is None else same, 2.0 if diff is None else diff, False)

    def classes(self, gold: np.ndarray) -> np.ndarray:
        """1 for same, 0 for different, -1 for the excluded middle."""
        if self.lower_is_similar:
            same, diff = gold <= self.same, gold >= self.diff
        else:
            same, diff = gold >= self.same, gold <= self.diff
        return np.where(same, 1, np.where(diff, 0, -1))

    def describe(self) -> str:
        if self.lower_is_similar:
            return f"same = score <= {self.same:g}, different = score >= {self.diff:g}"
        return f"same = score >= {self.same:g}, different = score <= {self.diff:g}"


@dataclass(frozen=True)
class PairData:
    gold: np.ndarray
    texts_a: list[str]
    texts_b: list[str]
    lines: list[int]


def read_pairs(path: str | Path) -> PairData:
    """Read a TSV with a header naming ``score``, ``text_a`` and ``text_b`` (any order, more allowed).

    Fields are tab-separated and unquoted (headlines contain quote marks of their own); every problem is
    an InputError naming the file and line.
    """
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", path=name) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", path=name) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError("not valid UTF-8", path=name, line=line, hint="re-save the file as UTF-8") from None
    lines = text.split("\n")
    header_hint = "the first line must be the tab-separated header: score, text_a, text_b"
    if not lines or not lines[0].strip():
        raise InputError("empty file or blank header", path=name, line=1, hint=header_hint)
    header = [h.strip() for h in lines[0].rstrip("\r").split("\t")]
    missing = [c for c in PAIR_COLUMNS if c not in header]
    if missing:
        raise InputError(
            f"header lacks {', '.join(missing)} (found: {', '.join(header)})", path=name, line=1, hint=header_hint
        )
    at = {c: header.index(c) for c in PAIR_COLUMNS}
    gold: list[float] = []
    texts_a: list[str] = []
    texts_b: list[str] = []
    numbers: list[int] = []
    for number, raw in enumerate(lines[1:], start=2):
        raw = raw.rstrip("\r")
        if not raw.strip():
            continue
        fields = raw.split("\t")
        if len(fields) != len(header):
            raise InputError(
                f"row has {len(fields)} tab-separated fields but the header has {len(header)}",
                path=name,
                line=number,
            )
        try:
            score = float(fields[at["score"]])
        except ValueError:
            raise InputError(f"score {fields[at['score']]!r} is not a number", path=name, line=number) from None
        if not math.isfinite(score):
            raise InputError(f"score {fields[at['score']]!r} is not a finite number", path=name, line=number)
        a, b = fields[at["text_a"]].strip(), fields[at["text_b"]].strip()
        if not a or not b:
            raise InputError("empty text_a or text_b", path=name, line=number)
        gold.append(score)
        texts_a.append(a)
        texts_b.append(b)
        numbers.append(number)
    if len(gold) < 2:
        raise InputError(f"{len(gold)} pair(s): need at least 2 to correlate", path=name)
    return PairData(np.asarray(gold, dtype=np.float64), texts_a, texts_b, numbers)


# --- pair metrics ---------------------------------------------------------------------------------------


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs at least one positive and one negative")
    ranks = stats.rankdata(scores)  # average ranks: the Mann-Whitney statistic with ties halved
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def best_f1(scores: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """The best F1 of the rule "score >= t", and that t.

    t is the midpoint between the lowest score called positive and the next lower score, so that a
    threshold fitted here does not sit exactly on one training pair.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    if n_pos == 0:
        raise ValueError("F1 needs at least one positive")
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order]
    tp = np.cumsum(p)
    called = np.arange(1, len(s) + 1)
    # Only cut between distinct scores: a threshold cannot split tied pairs.
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    f1 = np.where(last_of_tie, 2 * tp / (called + n_pos), -1.0)
    k = int(np.argmax(f1))
    threshold = s[k] if k + 1 == len(s) else (s[k] + s[k + 1]) / 2
    return float(f1[k]), float(threshold)


def pair_metrics(similarity: np.ndarray, gold: np.ndarray, cuts: Cuts) -> dict:
    """The ``eval pairs`` figures (keys :data:`PAIR_KEYS`)."""
    similarity = np.asarray(similarity, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    if len(similarity) != len(gold) or len(gold) < 2:
        raise ValueError("need at least 2 pairs, as many similarities as gold scores")
    if np.ptp(gold) == 0:
        raise InputError(f"all {len(gold)} gold scores are equal: nothing to correlate")
    # With --lower-is-similar a good similarity correlates negatively; report it so that higher is better.
    sign = -1.0 if cuts.lower_is_similar else 1.0
    spearman = sign * float(stats.spearmanr(similarity, gold).statistic)
    pearson = sign * float(np.corrcoef(similarity, gold)[0, 1]) if np.ptp(similarity) > 0 else 0.0
    classes = cuts.classes(gold)
    kept = classes >= 0
    n_same, n_diff = int((classes == 1).sum()), int((classes == 0).sum())
    if n_same == 0 or n_diff == 0:
        raise InputError(
            f"{n_same} 'same' and {n_diff} 'different' pairs ({cuts.describe()}): AUC and F1 need both",
            hint="set --same-cut/--diff-cut (or --lower-is-similar) to match the file's score scale",
        )
    auc = roc_auc(similarity[kept], classes[kept] == 1)
    f1, threshold = best_f1(similarity[kept], classes[kept] == 1)
    return {
        "n": len(gold),
        "spearman": _finite(spearman),
        "pearson": _finite(pearson),
        "auc": auc,
        "best_f1": f1,
        "best_threshold": threshold,
    }


def _finite(value: float) -> float:
    # A constant similarity has no correlation; 0.0 keeps the JSON valid (NaN is not JSON).
    return value if math.isfinite(value) else 0.0


# --- cluster metrics ------------------------------------------------------------------------------------


def _codes(labels: Sequence) -> np.ndarray:
    # Labels may be ints or strings (story ids): compare them as strings so 1 and "1" agree.
    _, codes = np.unique(np.asarray([str(x) for x in labels], dtype=object).astype(str), return_inverse=True)
    return codes.astype(np.int64)


def _pairs(sizes: np.ndarray) -> float:
    sizes = sizes.astype(np.float64)
    return float((sizes * (sizes - 1) / 2).sum())


def cluster_metrics(true: Sequence, pred: Sequence) -> dict:
    """The ``eval clusters`` figures (keys :data:`CLUSTER_KEYS`) for two labelings of the same items."""
    if len(true) != len(pred):
        raise ValueError("true and predicted labels differ in length")
    n = len(true)
    if n == 0:
        raise ValueError("no items")
    t, p = _codes(true), _codes(pred)
    true_sizes, pred_sizes = np.bincount(t), np.bincount(p)
    _, cell, cell_sizes = np.unique(t * len(pred_sizes) + p, return_inverse=True, return_counts=True)
    # B-cubed: per item, the share of its predicted cluster that shares its true story, and conversely.
    overlap = cell_sizes[cell]
    bp = float(np.mean(overlap / pred_sizes[p]))
    br = float(np.mean(overlap / true_sizes[t]))
    same_both, same_true, same_pred = _pairs(cell_sizes), _pairs(true_sizes), _pairs(pred_sizes)
    precision = same_both / same_pred if same_pred else 1.0
    recall = same_both / same_true if same_true else 1.0
    total = n * (n - 1) / 2
    expected = same_true * same_pred / total if total else 0.0
    maximum = (same_true + same_pred) / 2
    # Both labelings trivial (all singletons or one cluster each): identical, so agreement is perfect.
    ari = (same_both - expected) / (maximum - expected) if maximum != expected else 1.0
    return {
        "n": n,
        "true_stories": len(true_sizes),
        "pred_stories": len(pred_sizes),
        "pairwise_precision": precision,
        "pairwise_recall": recall,
        "pairwise_f1": _f1(precision, recall),
        "bcubed_precision": bp,
        "bcubed_recall": br,
        "bcubed_f1": _f1(bp, br),
        "ari": float(ari),
    }


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0
