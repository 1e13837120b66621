"""FAISS vector index: search, range queries, removal and the atomic save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest

from cluster.store.ann import VectorIndex


def random_unit(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_search_returns_best_first_with_ids(kind: str) -> None:
    vectors = random_unit(200)
    ids = np.arange(200, dtype=np.int64) * 10 + (1 << 40)  # 64-bit ids survive
    index = VectorIndex.build(ids, vectors, kind=kind)
    hits = index.search(vectors[5], k=3)[0]
    assert hits[0].id == ids[5]
    # ivf and hnsw keep 8-bit codes of the vectors (a quarter of the memory): their scores are close, not
    # exact; HeadlineIndex.query recomputes the scores it shows from the stored float32 vectors.
    assert hits[0].score == pytest.approx(1.0, abs=1e-5 if kind == "flat" else 2e-2)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_range_search_returns_everything_above_the_threshold() -> None:
    vectors = random_unit(300)
    index = VectorIndex.build(np.arange(300), vectors)
    best = np.sort(vectors @ vectors[0])[::-1]
    threshold = float((best[4] + best[5]) / 2)  # between the 5th and 6th best scores
    hits = index.range_search(vectors[0], threshold)[0]
    assert len(hits) == 5
    assert all(h.score >= threshold for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_range_search_keeps_a_score_equal_to_the_threshold() -> None:
    vectors = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    index = VectorIndex.build(np.arange(3), vectors)
    assert [h.id for h in index.range_search(vectors[0], 0.6)[0]] == [0, 1]


def test_save_load_round_trip(tmp_path) -> None:
    vectors = random_unit(50)
    index = VectorIndex.build(np.arange(50) + 7, vectors)
    path = tmp_path / "sub" / "vectors.faiss"
    index.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["vectors.faiss"]  # no temp file left
    loaded = VectorIndex.load(path)
    assert len(loaded) == 50 and loaded.kind == "flat"
    assert sorted(loaded.ids().tolist()) == list(range(7, 57))
    assert loaded.search(vectors[3], 1)[0][0].id == 10


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_round_trip_keeps_kind(tmp_path, kind: str) -> None:
    vectors = random_unit(100)
    index = VectorIndex.build(np.arange(100), vectors, kind=kind)
    index.save(tmp_path / "h.faiss")
    loaded = VectorIndex.load(tmp_path / "h.faiss")
    assert loaded.kind == kind and not loaded.exact
    assert loaded.search(vectors[7], 1)[0][0].id == 7


def test_remove_from_flat_index() -> None:
    vectors = random_unit(10)
    index = VectorIndex.build(np.arange(10), vectors)
    assert index.remove(np.array([3, 4, 99])) == 2
    assert len(index) == 8
    assert index.search(vectors[3], 1)[0][0].id != 3


def test_dimension_mismatch_is_an_error() -> None:
    index = VectorIndex(16)
    with pytest.raises(ValueError, match="dimension"):
        index.add(np.arange(2), random_unit(2, dim=8))


def test_empty_index_answers_empty() -> None:
    index = VectorIndex(4)
    assert index.search(np.ones(4, np.float32), 5) == [[]]
    assert index.range_search(np.ones(4, np.float32), 0.5) == [[]]
