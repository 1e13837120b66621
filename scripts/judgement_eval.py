"""Scoring a judgement on held-out data: grouping figures (B-cubed F1, the mixed stream's contamination) and
pair figures (AUC, Spearman), for the learned score and for plain cosine side by side (scripts/fit_judgement.py).
"""

from __future__ import annotations

import numpy as np
from judgement_data import Collection, subset_table  # noqa: I001
from scipy import sparse

from cluster.candidates import exact_pairs
from cluster.evaluate import cluster_metrics, roc_auc
from cluster.group import group
from cluster.learned import FEATURES, TIME_FEATURES, LearnedParams, LearnedSimilarity


class Thresholded:
    """A similarity whose candidate pairs at the lowest threshold of a grid are scored once: grouping at
    each higher threshold filters them, and every other question goes to the real score."""

    def __init__(self, similarity, lowest: float):
        self.similarity = similarity
        self.edges = similarity.candidates(lowest).tocoo()

    def __len__(self) -> int:
        return len(self.similarity)

    def block(self, rows, cols):
        return self.similarity.block(rows, cols)

    def pair(self, i, j):
        return self.similarity.pair(i, j)

    def pairs(self, rows, cols):
        return self.similarity.pairs(rows, cols)

    def candidates(self, threshold: float) -> sparse.csr_matrix:
        e = self.edges
        keep = e.data >= threshold
        return sparse.csr_matrix((e.data[keep], (e.row[keep], e.col[keep])), shape=e.shape)


class ScoredPairs:
    """The candidate pairs of one held-out collection with their features, scored and grouped many times: a
    pair outside them (cosine under the gate) counts as 0 in the linkage, as the gate makes it almost."""

    def __init__(self, labels: np.ndarray, rows: np.ndarray, cols: np.ndarray, features: np.ndarray):
        self.labels = np.asarray(labels, dtype=object)
        self.rows, self.cols, self.features = rows, cols, features
        self.cosines = features[:, 1].astype(np.float32)

    def features_at(self, times: bool) -> np.ndarray:
        if times:
            return self.features
        out = self.features.copy()
        out[:, [FEATURES.index(name) for name in TIME_FEATURES]] = np.nan
        return out

    def group_figures(self, scores: np.ndarray, threshold: float) -> dict:
        """B-cubed F1 of the labelled members and the share of them grouped with an unlabelled one."""
        # Pairs far under the threshold change no average that could reach it: left out for speed.
        keep = scores >= (threshold / 4 if threshold < 0.8 else threshold - 0.04)
        n = len(self.labels)
        upper = sparse.coo_matrix((scores[keep], (self.rows[keep], self.cols[keep])), shape=(n, n))
        pred = group(_Sparse((upper + upper.T).tocsr()), float(threshold)).labels
        labelled = self.labels != ""
        out = {"f1": cluster_metrics(self.labels[labelled].tolist(), pred[labelled].tolist())["bcubed_f1"]}
        polluted = np.zeros(int(pred.max()) + 1, dtype=bool)
        polluted[pred[~labelled]] = True
        out["contaminated"] = float(polluted[pred[labelled]].mean()) if labelled.any() else 0.0
        return out


class _Sparse:
    def __init__(self, matrix: sparse.csr_matrix):
        self.matrix = matrix

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def block(self, rows, cols):
        return self.matrix[rows][:, cols].toarray()

    def candidates(self, threshold: float) -> sparse.csr_matrix:
        m = self.matrix.copy()
        m.data[m.data < threshold] = 0
        m.eliminate_zeros()
        return m


class Cosine:
    """Plain cosine over unit vectors (the baseline), in the same interface."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = vectors

    def __len__(self) -> int:
        return len(self.vectors)

    def block(self, rows, cols):
        return self.vectors[rows] @ self.vectors[cols].T

    def pair(self, i, j):
        return float(self.vectors[i] @ self.vectors[j])

    def pairs(self, rows, cols):
        return np.einsum("ij,ij->i", self.vectors[rows], self.vectors[cols])

    def candidates(self, threshold: float) -> sparse.csr_matrix:
        n = len(self.vectors)
        r, c, s = exact_pairs(self.vectors, threshold)
        upper = sparse.coo_matrix((s, (r, c)), shape=(n, n))
        return (upper + upper.T).tocsr()


def learned_similarity(collection: Collection, members: np.ndarray, params: LearnedParams) -> LearnedSimilarity:
    sim = LearnedSimilarity.__new__(LearnedSimilarity)
    sim.table = subset_table(collection.table, members)
    sim.params = params
    return sim


def grouping_figures(collection: Collection, members: np.ndarray, similarity, thresholds) -> list[dict]:
    """Per threshold: B-cubed F1 of the labelled members against their clusters (groups restricted to them)
    and, where unlabelled members are present, the share of labelled members grouped with one of them."""
    scored = Thresholded(similarity, float(min(thresholds)))
    labels = collection.labels[members]
    labelled = labels != ""
    out = []
    for t in thresholds:
        pred = group(scored, float(t)).labels
        figures = {"threshold": float(t)}
        figures["f1"] = cluster_metrics(labels[labelled].tolist(), pred[labelled].tolist())["bcubed_f1"]
        if (~labelled).any():
            polluted = np.zeros(int(pred.max()) + 1, dtype=bool)
            polluted[pred[~labelled]] = True
            figures["contaminated"] = float(polluted[pred[labelled]].mean())
        out.append(figures)
    return out


def pair_figures(score: np.ndarray, label: np.ndarray, gold: np.ndarray, level: str, arabic=None) -> dict:
    from scipy import stats

    if level == "duplicate":
        return {"rho": float(stats.spearmanr(score, gold).statistic)}
    out = {"auc": roc_auc(score, label > 0.5)}
    if arabic is not None and arabic.any():
        out["auc_ar"] = roc_auc(score[arabic], label[arabic] > 0.5)
    return out
