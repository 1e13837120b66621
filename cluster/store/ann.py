"""Nearest-neighbour search: FAISS inner-product search over unit vectors, with 64-bit ids.

Exact search (``Flat``, float32) below :data:`ANN_MIN_SIZE` vectors; above it an HNSW graph, which
answers in about a millisecond at a million vectors where exact search needs tens of milliseconds per
query on two cores (measure with ``scripts/bench_index.py``). The graph stores its vectors as 8-bit
scalar codes (``IndexHNSWSQ``): a quarter of float32's memory (a 1M-vector index holds about 0.65 GB
instead of 1.8 GB) for scores within about 0.01 of the exact ones, which is why callers that show scores
recompute them from the stored float32 vectors (:mod:`.reading`). Files written before used float32
(``IndexHNSWFlat``); they load as ``hnsw`` too. Files are written atomically: to a temporary file,
fsynced, then renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from ..fsutil import atomic_file

ANN_MIN_SIZE = 50_000
"""Collections at least this large get an HNSW index instead of exact search. An index's ``add`` keeps
appending to the exact index: building a graph of 50,000+ vectors takes a minute or more on two cores,
which belongs in the nightly maintenance window (``nightly``, ``index repair``), not in an indexing run."""

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
_TRAIN_SAMPLE = 100_000


@dataclass(frozen=True)
class Neighbor:
    id: int
    score: float


class VectorIndex:
    """A FAISS index of unit vectors keyed by int64 ids; inner product = cosine similarity."""

    def __init__(self, dimension: int, *, kind: str = "flat"):
        if kind not in {"flat", "hnsw"}:
            raise ValueError(f"unknown index kind {kind!r}: use 'flat' or 'hnsw'")
        self.dimension = dimension
        self.kind = kind
        self._index = faiss.IndexIDMap2(_make_base(dimension, kind))

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, *, kind: str | None = None) -> VectorIndex:
        """An index over ``vectors``; ``kind`` defaults to flat or HNSW by size."""
        vectors = _as_matrix(vectors)
        if kind is None:
            kind = "hnsw" if len(vectors) >= ANN_MIN_SIZE else "flat"
        index = cls(vectors.shape[1], kind=kind)
        index.add(ids, vectors)
        return index

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = _as_matrix(vectors)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if vectors.shape[1] != self.dimension:
            raise ValueError(f"vectors have dimension {vectors.shape[1]}, the index {self.dimension}")
        if len(ids):
            if not self._index.is_trained:
                # The 8-bit codes need each dimension's range: learnt from the first vectors added, which
                # for a segment built at once are all of them (a sample bounds the time at large sizes).
                step = max(1, len(vectors) // _TRAIN_SAMPLE)
                self._index.train(np.ascontiguousarray(vectors[::step]))
            self._index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids``; returns how many were present. HNSW cannot delete: callers rebuild it."""
        if self.kind != "flat":
            raise NotImplementedError("an HNSW index cannot delete vectors; rebuild it without them")
        return int(self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))

    @property
    def exact(self) -> bool:
        """Whether scores are exact float32 inner products (flat, or a float32 graph of an older file)."""
        base = faiss.downcast_index(self._index.index)
        return not isinstance(base, faiss.IndexHNSWSQ)

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def search(self, queries: np.ndarray, k: int) -> list[list[Neighbor]]:
        """The ``k`` most similar vectors of each query, best first."""
        queries = _as_matrix(queries)
        k = min(k, len(self))
        if k <= 0:
            return [[] for _ in range(len(queries))]
        scores, ids = self._index.search(queries, k)
        return [
            [Neighbor(int(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True) if i >= 0]
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]

    def range_search(self, queries: np.ndarray, threshold: float) -> list[list[Neighbor]]:
        """Every vector with similarity >= ``threshold`` to each query, best first."""
        queries = _as_matrix(queries)
        if len(self) == 0:
            return [[] for _ in range(len(queries))]
        # FAISS keeps results strictly above the radius for inner product, in float32: step one float32
        # below the threshold so that a score equal to it is kept.
        radius = np.nextafter(np.float32(threshold), np.float32(-np.inf))
        limits, scores, ids = self._index.range_search(queries, float(radius))
        results = []
        for q in range(len(queries)):
            lo, hi = int(limits[q]), int(limits[q + 1])
            order = np.argsort(-scores[lo:hi], kind="stable")
            results.append([Neighbor(int(ids[lo + o]), float(scores[lo + o])) for o in order])
        return results

    def save(self, path: str | Path) -> None:
        """Write the index to ``path`` atomically (temp file, fsync, rename)."""
        with atomic_file(path) as temporary:
            faiss.write_index(self._index, str(temporary))

    @classmethod
    def load(cls, path: str | Path) -> VectorIndex:
        raw = faiss.read_index(str(path))
        if not isinstance(raw, faiss.IndexIDMap2):
            raw = faiss.downcast_index(raw)
        if not isinstance(raw, faiss.IndexIDMap2):
            raise ValueError(f"{path}: not an id-mapped FAISS index")
        base = faiss.downcast_index(raw.index)
        index = cls.__new__(cls)
        index.dimension = raw.d
        index.kind = "hnsw" if isinstance(base, faiss.IndexHNSW) else "flat"
        if index.kind == "hnsw":
            base.hnsw.efSearch = HNSW_EF_SEARCH
        index._index = raw
        return index


def _make_base(dimension: int, kind: str) -> faiss.Index:
    if kind == "flat":
        return faiss.IndexFlatIP(dimension)
    base = faiss.IndexHNSWSQ(dimension, faiss.ScalarQuantizer.QT_8bit, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    base.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    base.hnsw.efSearch = HNSW_EF_SEARCH
    return base


def _as_matrix(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    return vectors


@contextlib.contextmanager
def one_search_thread() -> Iterator[None]:
    """Run FAISS on one thread inside the block: for searches of a single query.

    One query holds too little work to share, and handing it between OpenMP threads costs more than the
    search when the cores are busy: on a loaded 2-core machine a 20k-vector exact search took 39 ms with
    two threads and 1.2 ms with one (scripts/bench_index.py measures the index's query latency this way).
    """
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)
