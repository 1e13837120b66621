"""Labelled pairs for fitting the judgement, and the constrained logistic fit (scripts/fit_judgement.py).

Pair sets:
- the human-labelled pair files (SemEval-2022 titles and slugs, STS headlines, STS17 ar-ar);
- cluster pairs of OG2021 events / UCI stories: same cluster or not, negatives above the cosine gate;
- **realistic negatives**: every OG2021 headline against the SaudiNewsNet titles published in the same weeks
  (the training stream, none of them in the dev stream), above the gate, with their real time gaps, sampled
  and weighted up to how often a stream shows them; and Arabic titles of the pair files against SaudiNewsNet
  titles without times (another year's news: never the same event).

The fit keeps time a penalty: a pair's logit moves by ``-(a + b (1 - cos)) g - c g^2`` at a log time gap
``g`` in [0, 1], with a, b, c >= 0, so a known gap never raises a score and a larger gap never scores higher;
a pair without both times is scored at gap 0 (no penalty). Everything else is an ordinary weighted
L2-regularized logistic regression, solved by L-BFGS-B from zero: the same data give the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from judgement_data import DATA, FOLDS, Collection, embed_all, fold_of, read_tsv  # noqa: I001
from scipy import optimize

from cluster.learned import FEATURES, TIME_GAP, HeadlineTable, LearnedParams, pair_features

COS = FEATURES.index("cos")
TIME_SQ = FEATURES.index("time_gap_sq")
COS_TIME = FEATURES.index("cos_time_gap")
CONTENT = [k for k in range(len(FEATURES)) if k not in (TIME_GAP, TIME_SQ, COS_TIME)]
POS_PER_CLUSTER = 300
NEG_PER_SET = 60_000
REAL_SAMPLE = 120_000


@dataclass
class PairSet:
    """Labelled pairs over one table: indices, label (0..1), fold, gold score, and a weight per pair
    (relative within the set; the set's total weight is set when fitting)."""

    name: str
    level: str
    table: HeadlineTable
    rows: np.ndarray
    cols: np.ndarray
    label: np.ndarray
    fold: np.ndarray
    gold: np.ndarray
    lower_is_similar: bool = False
    arabic: np.ndarray | None = None
    weight: np.ndarray | None = None
    features: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.features = pair_features(self.table, self.rows, self.cols)
        if self.weight is None:
            self.weight = np.ones(len(self.rows))


def load_pairs(file: str, name: str, level: str, lower: bool, cuts: tuple[float, float] | None) -> PairSet:
    rows = read_tsv(DATA / "pairs" / file)
    texts = [r["text_a"].strip() for r in rows] + [r["text_b"].strip() for r in rows]
    normalized, vectors = embed_all(texts)
    n = len(rows)
    gold = np.array([float(r["score"]) for r in rows])
    if cuts is None:  # soft labels on the 0-5 scale
        label, keep = gold / 5.0, np.ones(n, bool)
    else:
        same, diff = cuts
        pos = gold <= same if lower else gold >= same
        neg = gold >= diff if lower else gold <= diff
        label, keep = pos.astype(float), pos | neg
    table = HeadlineTable(vectors, normalized)
    folds = np.array([fold_of(r["text_a"].strip() + "\x1f" + r["text_b"].strip()) for r in rows])
    arabic = np.array([r.get("lang", "ar-ar").startswith("ar") for r in rows]) if "lang" in rows[0] else None
    idx = np.flatnonzero(keep)
    return PairSet(
        name, level, table, idx, idx + n, label[idx], folds[idx], gold[idx], lower,
        None if arabic is None else arabic[idx],
    )


def cluster_pairs(cs: Collection, level: str, gate: float, seed: int = 0) -> PairSet:
    """Within-cluster pairs (sampled per cluster) and different-cluster pairs above the cosine gate
    (sampled), never across folds, so that a held-out fold's pairs are all its own."""
    rng = np.random.default_rng(seed)
    v = cs.table.vectors
    rows, cols, label = [], [], []
    for f in range(FOLDS):
        members = np.flatnonzero((cs.fold == f) & cs.labelled)
        sims = v[members] @ v[members].T
        same = cs.labels[members][:, None] == cs.labels[members][None, :]
        iu = np.triu_indices(len(members), k=1)
        s, q = same[iu], sims[iu]
        pos = np.flatnonzero(s)
        pos_rows = members[iu[0][pos]]
        keep_pos = []
        for story in np.unique(cs.labels[pos_rows]):
            idx = pos[cs.labels[pos_rows] == story]
            keep_pos.append(idx if len(idx) <= POS_PER_CLUSTER else rng.choice(idx, POS_PER_CLUSTER, replace=False))
        pos = np.sort(np.concatenate(keep_pos)) if keep_pos else pos
        neg = np.flatnonzero(~s & (q >= gate))
        cap = NEG_PER_SET // FOLDS
        if len(neg) > cap:
            neg = np.sort(rng.choice(neg, cap, replace=False))
        for idx, y in ((pos, 1.0), (neg, 0.0)):
            rows.append(members[iu[0][idx]])
            cols.append(members[iu[1][idx]])
            label.append(np.full(len(idx), y))
    r, c, y = np.concatenate(rows), np.concatenate(cols), np.concatenate(label)
    return PairSet(cs.name, level, cs.table, r, c, y, cs.fold[r], y)


def stream_negatives(stream: Collection, level: str, gate: float, seed: int = 1) -> tuple[PairSet, int]:
    """Labelled (OG2021) against unlabelled (SaudiNewsNet) headlines of one stream above the cosine gate:
    never the same news. Sampled; each kept pair weighs for the ones it stands for. Fold: the labelled
    headline's, so a held-out OG2021 event takes its pairs with it. Returns the set and the pair count."""
    rng = np.random.default_rng(seed)
    labelled = np.flatnonzero(stream.labelled)
    others = np.flatnonzero(~stream.labelled)
    v = stream.table.vectors
    rows, cols = [], []
    for start in range(0, len(labelled), 512):
        block = labelled[start : start + 512]
        r, c = np.nonzero(v[block] @ v[others].T >= gate)
        rows.append(block[r])
        cols.append(others[c])
    r, c = np.concatenate(rows), np.concatenate(cols)
    total = len(r)
    if total > REAL_SAMPLE:
        keep = np.sort(rng.choice(total, REAL_SAMPLE, replace=False))
        r, c = r[keep], c[keep]
    y = np.zeros(len(r))
    return PairSet(f"{stream.name}_negatives", level, stream.table, r, c, y, stream.fold[r], y), total


def cross_corpus_negatives(
    name: str, texts_a: list[str], texts_b: list[str], level: str, gate: float, seed: int = 2
) -> PairSet:
    """Every pair of ``texts_a`` x ``texts_b`` above the gate, without times: two corpora of different
    years, never the same event. Sampled to NEG_PER_SET; folds by the first text."""
    rng = np.random.default_rng(seed)
    texts = list(dict.fromkeys(texts_a)) + list(dict.fromkeys(texts_b))
    n_a = len(dict.fromkeys(texts_a))
    normalized, vectors = embed_all(texts)
    table = HeadlineTable(vectors, normalized)
    r, c = np.nonzero(vectors[:n_a] @ vectors[n_a:].T >= gate)
    c = c + n_a
    if len(r) > NEG_PER_SET:
        keep = np.sort(rng.choice(len(r), NEG_PER_SET, replace=False))
        r, c = r[keep], c[keep]
    folds = np.array([fold_of(texts[k]) for k in r], dtype=np.int64)
    y = np.zeros(len(r))
    return PairSet(name, level, table, r.astype(np.int64), c.astype(np.int64), y, folds, y)


# --- the constrained fit --------------------------------------------------------------------------------


def design(features: np.ndarray) -> np.ndarray:
    """Columns of the fit: the content features, then -g, -(1 - cos) g and -g^2 (g = 0 when unknown),
    whose weights are bounded below by 0."""
    gap = np.nan_to_num(features[:, TIME_GAP].astype(np.float64), nan=0.0)
    cos = features[:, COS].astype(np.float64)
    return np.column_stack([features[:, CONTENT].astype(np.float64), -gap, -(1.0 - cos) * gap, -gap * gap])


def weights_from(theta: np.ndarray) -> tuple[float, ...]:
    """The FEATURES weights of a fitted ``theta`` (content weights, then a, b, c)."""
    a, b, c = theta[-3:]
    weights = np.zeros(len(FEATURES))
    weights[CONTENT] = theta[: len(CONTENT)]
    weights[TIME_GAP] = -(a + b)
    weights[COS_TIME] = b
    weights[TIME_SQ] = -c
    return tuple(float(w) for w in weights)


def fit_constrained(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, *, l2: float, use_time: bool = True
) -> np.ndarray:
    """Weighted logistic regression on ``design(x)`` with the time weights >= 0 (or fixed at 0)."""
    z = design(x)
    w = w / w.sum()
    n_content = len(CONTENT)
    penalty = np.full(z.shape[1], l2)
    penalty[0] = 0.0  # the bias

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        logit = z @ theta
        # log(1 + e^t) - y t, stably
        value = float(np.sum(w * (np.logaddexp(0.0, logit) - y * logit))) + 0.5 * float(np.sum(penalty * theta**2))
        p = 0.5 * (1.0 + np.tanh(0.5 * logit))
        grad = z.T @ (w * (p - y)) + penalty * theta
        return value, grad

    bounds = [(None, None)] * n_content + [(0.0, None if use_time else 0.0)] * 3
    result = optimize.minimize(
        loss, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B", bounds=bounds,
        options={"maxiter": 5000, "ftol": 1e-14, "gtol": 1e-10},
    )
    return result.x


def params_of(theta: np.ndarray, gate: float) -> LearnedParams:
    return LearnedParams(weights_from(theta), gate, 0.0)
