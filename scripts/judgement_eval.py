"""Scoring a judgement on held-out data: grouping figures (B-cubed F1, the mixed stream's contamination) and
pair figures (AUC, Spearman), for the learned score and for plain cosine side by side (scripts/fit_judgement.py).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from cluster.evaluate import cluster_metrics, roc_auc
from cluster.group import group
from cluster.learned import FEATURES, TIME_FEATURES


class ScoredPairs:
    """The candidate pairs of one held-out collection with their features, scored and grouped many times: a
    pair outside them (cosine under the gate) counts as 0 in the linkage, as the gate makes it almost."""

    def __init__(self, labels: np.ndarray, rows: np.ndarray, cols: np.ndarray, features: np.ndarray):
        self.labels = np.asarray(labels, dtype=object)
        self.rows, self.cols, self.features = rows, cols, features

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


def pair_figures(score: np.ndarray, label: np.ndarray, gold: np.ndarray, level: str, arabic=None) -> dict:
    from scipy import stats

    if level == "duplicate":
        return {"rho": float(stats.spearmanr(score, gold).statistic)}
    out = {"auc": roc_auc(score, label > 0.5)}
    if arabic is not None and arabic.any():
        out["auc_ar"] = roc_auc(score[arabic], label[arabic] > 0.5)
    return out
