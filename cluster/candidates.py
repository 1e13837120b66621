"""Candidate search: every pair of unit vectors whose (optionally scaled) cosine reaches a bound.

This is the one place that finds pairs worth scoring; the judgements in :mod:`cluster.judge` build on
it. Up to :data:`EXACT_PAIRS_LIMIT` items every pair is compared, blockwise (one matrix product per
block of rows, so BLAS does the work). Beyond it, items are compared only with the items of their
nearest k-means cells (an inverted-file search), which finds almost every edge at a fraction of the
all-pairs cost; edge recall is measured by ``scripts/bench.py group``.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

EXACT_PAIRS_LIMIT = 20_000  # up to this many items, candidate pairs come from exact blockwise products
BLOCK_ROWS = 1024
# Cell-blocked candidate search (above EXACT_PAIRS_LIMIT items); values chosen by measured edge recall
# and time (scripts/bench.py group data; docs/performance.md). At 100k, k-means training was half the
# time with 8 iterations on 48 points per cell; 4 iterations on 32 points with 28 probes instead of 24
# measured 5.9 s against 10.3 s in one run, edge recall 0.99991 against 0.99997, and at 1M 0.9953
# against 0.9936. Earlier, at 1M: 6 probes 0.980, 12 probes 0.989.
PROBES = 28
_KMEANS_ITERATIONS = 4
_KMEANS_POINTS_PER_CELL = 32
_KMEANS_MAX_POINTS = 131_072  # caps the k-means cost at a million items
_ASSIGN_BATCH = 65536


def exact_pairs(
    vectors: np.ndarray, bound: float, scale: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs i < j whose score reaches ``bound``, compared exhaustively; (rows, cols, scores).

    The score is the cosine, or with ``scale`` (one factor per item) ``1 - (scale_i + scale_j) / 2 *
    (1 - cosine)``: the distance scaled by the mean of the two items' factors.
    """
    n = len(vectors)
    all_rows, all_cols, all_scores = [], [], []
    for start in range(0, n, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, n)
        scores = vectors[start:stop] @ vectors[start:].T  # upper triangle only
        if scale is not None:
            factor = 0.5 * (scale[start:stop, None] + scale[None, start:])
            scores = 1.0 - factor * (1.0 - scores)
        r, c = np.nonzero(scores >= bound)
        keep = c > r
        all_rows.append(r[keep] + start)
        all_cols.append(c[keep] + start)
        all_scores.append(scores[r[keep], c[keep]].astype(np.float32))
    if not all_rows:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    return (
        np.concatenate(all_rows).astype(np.int64),
        np.concatenate(all_cols).astype(np.int64),
        np.concatenate(all_scores),
    )


def cosine_candidates(vectors: np.ndarray, threshold: float, scale: np.ndarray | None = None) -> sparse.csr_matrix:
    """Symmetric sparse matrix of all pairs i != j with cosine >= ``threshold`` (with ``scale``: the scaled
    cosine of :func:`exact_pairs`, whose values the matrix then holds)."""
    if len(vectors) > EXACT_PAIRS_LIMIT:
        return _candidates_from_cells(vectors, threshold, scale)
    rows, cols, scores = exact_pairs(vectors, threshold, scale)
    return symmetric(len(vectors), [rows], [cols], [scores])


def _candidates_from_cells(
    vectors: np.ndarray, threshold: float, scale: np.ndarray | None = None
) -> sparse.csr_matrix:
    """Pairs >= ``threshold``, comparing each item only with items of its nearest cells.

    The vectors are split into cells by spherical k-means. Each item is compared (one matrix product per
    cell, so BLAS does the work) with every item whose nearest cell is among the item's
    ``PROBES`` nearest cells (an inverted-file search, done cell by cell). Near-duplicates nearly always
    fall in nearby cells, so this finds almost every edge at about ``2 * sqrt(PROBES * n) / n`` of the
    all-pairs cost (edge recall is measured by ``scripts/bench.py group``). No second copy of the
    vectors is made: each cell's rows are gathered as it is processed, and every returned score is a
    float32 product of the vectors.
    """
    import faiss

    n, dimension = vectors.shape
    # Balances the assignment (n x cells products) against the per-cell products (n x probes x n / cells).
    n_cells = int(min(max(1, np.sqrt(PROBES * n)), n))
    probes = min(PROBES, n_cells)
    rng = np.random.default_rng(0)  # a fixed sample: the same input always gives the same graph
    # Cells are cut from centered directions: sentence embeddings share a large common component
    # (unrelated headlines score ~0.7), and uncentered cells pile most items into a few central cells
    # (11x the balanced work on the benchmark's data; centered: 1.02x).
    mean = np.zeros(dimension, dtype=np.float64)
    for start in range(0, n, _ASSIGN_BATCH):
        mean += vectors[start : start + _ASSIGN_BATCH].sum(axis=0, dtype=np.float64)
    mean = (mean / n).astype(np.float32)
    size = min(n, _KMEANS_POINTS_PER_CELL * n_cells, _KMEANS_MAX_POINTS)
    sample = _centered(vectors[np.sort(rng.choice(n, size=size, replace=False))], mean)
    kmeans = faiss.Kmeans(
        dimension,
        n_cells,
        niter=_KMEANS_ITERATIONS,
        spherical=True,
        seed=1,
        min_points_per_centroid=1,
        max_points_per_centroid=_KMEANS_POINTS_PER_CELL,
    )
    kmeans.train(sample)
    del sample
    cells = faiss.IndexFlatIP(dimension)
    cells.add(kmeans.centroids)
    nearest = np.empty((n, probes), dtype=np.int64)
    for start in range(0, n, _ASSIGN_BATCH):
        nearest[start : start + _ASSIGN_BATCH] = cells.search(
            _centered(vectors[start : start + _ASSIGN_BATCH], mean), probes
        )[1]
    del cells, kmeans
    # Targets: the items whose nearest cell is this one. Queries: the items that list it among their
    # ``probes`` nearest cells, as in an inverted-file search probing that many cells per query.
    own = nearest[:, 0]
    target_order = np.argsort(own, kind="stable")
    target_bounds = np.searchsorted(own[target_order], np.arange(n_cells + 1))
    listed = nearest.ravel()
    query_order = np.argsort(listed, kind="stable")
    query_bounds = np.searchsorted(listed[query_order], np.arange(n_cells + 1))
    query_order //= probes
    del nearest, own, listed
    rows, cols, vals = [], [], []
    for cell in range(n_cells):
        targets = target_order[target_bounds[cell] : target_bounds[cell + 1]]
        if not len(targets):
            continue
        queries = query_order[query_bounds[cell] : query_bounds[cell + 1]]
        target_vectors = vectors[targets].T.copy()
        for start in range(0, len(queries), BLOCK_ROWS):
            block = queries[start : start + BLOCK_ROWS]
            scores = vectors[block] @ target_vectors
            if scale is not None:
                scores = 1.0 - 0.5 * (scale[block, None] + scale[None, targets]) * (1.0 - scores)
            r, c = np.nonzero(scores >= threshold)
            i, j = block[r], targets[c]
            keep = i < j  # each pair once; the pair's other orientation is found from j's cell, if at all
            rows.append(i[keep])
            cols.append(j[keep])
            vals.append(scores[r[keep], c[keep]])
            keep = i > j
            rows.append(j[keep])
            cols.append(i[keep])
            vals.append(scores[r[keep], c[keep]])
    del query_order, target_order
    if not rows:
        return symmetric(n, [], [], [])
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    del rows, cols, vals
    # A pair found from both of its items' cells appears twice: keep one copy.
    _, first = np.unique(r * n + c, return_index=True)
    return symmetric(n, [r[first]], [c[first]], [v[first]])


def _centered(vectors: np.ndarray, mean: np.ndarray) -> np.ndarray:
    centered = vectors - mean
    centered /= np.maximum(np.linalg.norm(centered, axis=1, keepdims=True), 1e-12)
    return centered


def symmetric(n: int, rows: list, cols: list, vals: list) -> sparse.csr_matrix:
    if rows:
        r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals).astype(np.float32)
    else:
        r = c = np.zeros(0, dtype=np.int64)
        v = np.zeros(0, dtype=np.float32)
    upper = sparse.coo_matrix((v, (r, c)), shape=(n, n))
    return (upper + upper.T).tocsr()
