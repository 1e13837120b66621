"""Nearest-neighbour search: FAISS inner-product search over unit vectors, with 64-bit ids.

Three kinds of index:

* ``flat``: exact float32 search. Below :data:`ANN_MIN_SIZE` vectors, and every file an add writes.
* ``ivf`` (:data:`ANN_KIND`, what large segments get): an inverted file of about 4 sqrt(n) k-means cells
  holding 8-bit scalar codes of the vectors (``IndexIVFScalarQuantizer``); a query scans the cells
  nearest to it. Built from a million vectors in minutes where an HNSW graph takes over twenty on one
  core (the k-means runs on a sample; adding a vector is one comparison with each cell centre), and
  extended as cheaply: a vector added later just goes to its cell. The codes take a quarter of
  float32's memory (about 0.4 GB at a million vectors against 1.8 GB for a float32 graph) for scores
  within about 0.01 of the exact ones, which is why the scores a user sees are recomputed from the
  stored float32 vectors (:mod:`.reading`).
* ``hnsw``: an HNSW graph; files written before segments hold float32 graphs and still load as this.

Files are written atomically: to a temporary file, fsynced, then renamed, so a reader never sees half a file.
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
"""Segments at least this large get an approximate index (:data:`ANN_KIND`) instead of exact search, when
``nightly`` or ``index repair`` compacts them: training one costs a minute or more at this size on two
cores, which belongs in the maintenance window, not in an indexing run (an add writes exact files)."""
ANN_KIND = "ivf"
KINDS = ("flat", "ivf", "hnsw")

IVF_CELLS_PER_SQRT = 4  # cells = 4 sqrt(n): about 4,000 at a million vectors, 250 vectors a cell
IVF_MIN_TRAIN_PER_CELL = 39  # FAISS's own minimum of training points per k-means centre
IVF_TRAIN_PER_CELL = 40  # the k-means sample: 160,000 vectors at a million (its cost grows with cells x sample)
IVF_PROBE_SHARE = 64  # a query scans 1/64 of the cells, at least 16 and at most 64 of them
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

    def __init__(self, dimension: int, *, kind: str = "flat", size: int = 0):
        """An empty index; ``size``: about how many vectors it will hold (sets an ``ivf`` index's cells,
        which are learnt from the first vectors added)."""
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}: use one of {', '.join(KINDS)}")
        self.dimension = dimension
        self.kind = kind
        self._base = _make_base(dimension, kind, size)  # referenced here: the id map does not own it
        self._index = faiss.IndexIDMap2(self._base)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, *, kind: str | None = None) -> VectorIndex:
        """An index over ``vectors``; ``kind`` defaults to flat or :data:`ANN_KIND` by size."""
        vectors = _as_matrix(vectors)
        if kind is None:
            kind = ANN_KIND if len(vectors) >= ANN_MIN_SIZE else "flat"
        index = cls(vectors.shape[1], kind=kind, size=len(vectors))
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
                # The 8-bit codes need each dimension's range, and the cells their centres: learnt from
                # the first vectors added, which for a segment built at once are all of them (a sample
                # bounds the time at large sizes).
                self._index.train(_training_sample(vectors, self.kind, self._index))
            self._index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids``; returns how many were present. HNSW cannot delete: callers rebuild it."""
        if self.kind != "flat":
            raise NotImplementedError("an HNSW index cannot delete vectors; rebuild it without them")
        return int(self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))

    @property
    def exact(self) -> bool:
        """Whether scores are exact float32 inner products (flat, or a float32 graph of an older file)."""
        return not isinstance(self._base, (faiss.IndexHNSWSQ, faiss.IndexIVF))

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
        if isinstance(base, faiss.IndexIVF):
            index.kind = "ivf"
            base.nprobe = _probes(base.nlist)
        elif isinstance(base, faiss.IndexHNSW):
            index.kind = "hnsw"
            base.hnsw.efSearch = HNSW_EF_SEARCH
        else:
            index.kind = "flat"
        index._base = base
        index._index = raw
        return index


def cells_for(size: int) -> int:
    """The number of k-means cells of an ``ivf`` index of about ``size`` vectors."""
    return max(1, min(int(IVF_CELLS_PER_SQRT * np.sqrt(max(size, 1))), size // IVF_MIN_TRAIN_PER_CELL, 65_536))


def _probes(cells: int) -> int:
    return min(cells, max(16, min(64, cells // IVF_PROBE_SHARE)))


def _training_sample(vectors: np.ndarray, kind: str, index: faiss.Index) -> np.ndarray:
    if kind == "ivf":
        base = faiss.downcast_index(index.index)
        wanted = base.nlist * IVF_TRAIN_PER_CELL
    else:
        wanted = _TRAIN_SAMPLE
    if len(vectors) <= wanted:
        return vectors
    # Evenly spaced rather than random: deterministic, and rows arrive in time order, so every period
    # of the feed is represented.
    return np.ascontiguousarray(vectors[np.linspace(0, len(vectors) - 1, wanted).astype(np.int64)])


def _make_base(dimension: int, kind: str, size: int = 0) -> faiss.Index:
    if kind == "flat":
        return faiss.IndexFlatIP(dimension)
    if kind == "ivf":
        cells = cells_for(size)
        quantizer = faiss.IndexFlatIP(dimension)
        base = faiss.IndexIVFScalarQuantizer(
            quantizer, dimension, cells, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        base.own_fields = True  # the cell centres live as long as the index, not the Python object
        quantizer.this.disown()
        base.cp.min_points_per_centroid = 1  # small segments (tests) train on few points without a warning
        base.nprobe = _probes(cells)
        return base
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
