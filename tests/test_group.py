"""Grouping on hand-built vectors: thresholds, linkages and the chaining guard."""

from __future__ import annotations

import numpy as np
import pytest

from cluster import group as group_module
from cluster.group import LINKAGES, group
from cluster.judge import CosineSimilarity


def unit_vectors_at(degrees: list[float]) -> np.ndarray:
    """2-D unit vectors at the given angles: cos(angle difference) is their similarity."""
    radians = np.radians(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


# A at 0°, B at 25°, C at 50°: A~B and B~C are 0.906, A~C only 0.643.
CHAIN = unit_vectors_at([0, 25, 50])


def test_average_linkage_does_not_chain() -> None:
    result = group(CosineSimilarity(CHAIN), 0.85, linkage="average")
    labels = result.labels
    assert labels[0] == labels[1]  # A and B merge first (tie broken by input order)
    assert labels[2] != labels[0]  # C does not join through B
    assert result.n_stories == 2


def test_complete_linkage_does_not_chain() -> None:
    labels = group(CosineSimilarity(CHAIN), 0.85, linkage="complete").labels
    assert labels[0] != labels[2]


def test_single_linkage_chains() -> None:
    labels = group(CosineSimilarity(CHAIN), 0.85, linkage="single").labels
    assert labels.tolist() == [0, 0, 0]


def test_average_linkage_keeps_a_tight_group_together() -> None:
    # Four headlines within 10° of each other: every pair >= 0.98.
    vectors = unit_vectors_at([0, 3, 6, 10, 90])
    labels = group(CosineSimilarity(vectors), 0.95).labels
    assert labels.tolist() == [0, 0, 0, 0, 1]


def test_threshold_is_inclusive() -> None:
    vectors = unit_vectors_at([0, 60])  # similarity exactly 0.5
    assert group(CosineSimilarity(vectors), 0.5).n_stories == 1
    assert group(CosineSimilarity(vectors), 0.5001).n_stories == 2


def test_labels_follow_first_appearance() -> None:
    vectors = unit_vectors_at([90, 0, 1, 91, 180])
    labels = group(CosineSimilarity(vectors), 0.99).labels
    assert labels.tolist() == [0, 1, 1, 0, 2]


def test_groups_lists_members_in_input_order() -> None:
    vectors = unit_vectors_at([90, 0, 1, 91])
    groups = group(CosineSimilarity(vectors), 0.99).groups()
    assert [g.tolist() for g in groups] == [[0, 3], [1, 2]]


def test_empty_and_single_inputs() -> None:
    assert group(CosineSimilarity(np.zeros((0, 2), np.float32)), 0.9).n_stories == 0
    assert group(CosineSimilarity(unit_vectors_at([0])), 0.9).labels.tolist() == [0]


def test_unknown_linkage_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown linkage"):
        group(CosineSimilarity(CHAIN), 0.9, linkage="ward")


def test_candidate_graph_is_symmetric_and_thresholded() -> None:
    edges = CosineSimilarity(CHAIN).candidates(0.85).toarray()
    assert np.allclose(edges, edges.T)
    assert edges[0, 1] == pytest.approx(0.906, abs=1e-3)
    assert edges[0, 2] == 0  # below the threshold: no edge
    assert np.all(np.diag(edges) == 0)


@pytest.mark.parametrize("linkage", ["average", "complete"])
def test_sparse_linkage_for_large_components_prevents_chaining(monkeypatch, linkage: str) -> None:
    # Force the sparse path: it must keep the chaining guard too.
    monkeypatch.setattr(group_module, "DENSE_COMPONENT_LIMIT", 2)
    labels = group(CosineSimilarity(CHAIN), 0.85, linkage=linkage).labels
    assert labels[0] == labels[1] and labels[2] != labels[0]


def test_sparse_and_dense_paths_agree_on_separated_clusters(monkeypatch) -> None:
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(6, 32))
    vectors = np.repeat(centers, 5, axis=0) + rng.normal(scale=0.05, size=(30, 32))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    dense = group(CosineSimilarity(vectors), 0.9).labels
    monkeypatch.setattr(group_module, "DENSE_COMPONENT_LIMIT", 1)
    sparse = group(CosineSimilarity(vectors), 0.9).labels
    assert dense.tolist() == sparse.tolist()
    assert len(set(dense.tolist())) == 6


def test_index_backed_candidates_match_exact_ones(monkeypatch) -> None:
    # Probing every cell makes the cell-blocked search exhaustive: it must then find exactly the
    # exact pairs, with the same float32 scores up to rounding.
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(600, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    exact = CosineSimilarity(vectors).candidates(0.6)
    monkeypatch.setattr("cluster.candidates.EXACT_PAIRS_LIMIT", 10)
    monkeypatch.setattr("cluster.candidates.PROBES", 10_000)
    via_index = CosineSimilarity(vectors).candidates(0.6)
    assert exact.nnz > 0
    assert sorted(zip(*exact.nonzero(), strict=True)) == sorted(zip(*via_index.nonzero(), strict=True))
    assert np.allclose(exact.toarray(), via_index.toarray(), atol=1e-6)  # float32 rounding only


def clustered_vectors(n_stories: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in stories of heavy-tailed sizes, with pair similarities around 0.9."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(1 + rng.pareto(1.5, n_stories).astype(int), 40)
    story = np.repeat(np.arange(n_stories), sizes)
    common = rng.normal(size=48)
    centers = common + 0.9 * rng.normal(size=(n_stories, 48))
    spread = rng.uniform(0.15, 0.5, n_stories)[story, None]
    vectors = centers[story] + spread * np.linalg.norm(centers[story], axis=1, keepdims=True) / 7 * rng.normal(
        size=(len(story), 48)
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    order = rng.permutation(len(story))
    return vectors[order].astype(np.float32), story[order]


@pytest.mark.parametrize("linkage", LINKAGES)
def test_component_shortcuts_match_the_plain_agglomerative_step(monkeypatch, linkage: str) -> None:
    # Cliques and components of one or two items skip the linkage step: the labels must be those of
    # running the linkage on every component (the reference below is the engine before the shortcut).
    vectors, _ = clustered_vectors(120, seed=5)
    similarity = CosineSimilarity(vectors)
    fast = group(similarity, 0.9, linkage=linkage)
    reference = reference_group(similarity, 0.9, linkage)
    assert fast.labels.tolist() == reference.tolist()
    assert 1 < fast.n_stories < len(vectors)


def reference_group(similarity: CosineSimilarity, threshold: float, linkage: str) -> np.ndarray:
    from scipy.sparse import csgraph

    edges = similarity.candidates(threshold)
    _, component = csgraph.connected_components(edges, directed=False)
    labels = np.zeros(len(similarity), dtype=np.int64)
    next_label = 0
    for c in np.unique(component):
        members = np.flatnonzero(component == c)
        if linkage == "single" or len(members) == 1:
            sub = np.zeros(len(members), dtype=np.int64)
        else:
            sub = group_module._dense_linkage(similarity.block(members, members), threshold, linkage)
        labels[members] = sub + next_label
        next_label += int(sub.max()) + 1
    return group_module._renumber_by_first_member(labels)


def test_index_backed_grouping_matches_exact_grouping(monkeypatch) -> None:
    # Above the exact-pairs limit the candidate graph comes from the inverted-file index with its
    # default probes; on well-separated stories it must give the same stories as the exact path.
    vectors, _ = clustered_vectors(400, seed=11)
    exact = group(CosineSimilarity(vectors), 0.9).labels
    monkeypatch.setattr("cluster.candidates.EXACT_PAIRS_LIMIT", 100)
    approximate = group(CosineSimilarity(vectors), 0.9)
    assert approximate.labels.tolist() == exact.tolist()
