"""Grouping on hand-built vectors: thresholds, linkages and the chaining guard."""

from __future__ import annotations

import numpy as np
import pytest

from cluster import group as group_module
from cluster.group import LINKAGES, Attach, CosineSimilarity, group


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
    monkeypatch.setattr(group_module, "_EXACT_PAIRS_LIMIT", 10)
    monkeypatch.setattr(group_module, "_PROBES", 10_000)
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
    monkeypatch.setattr(group_module, "_EXACT_PAIRS_LIMIT", 100)
    approximate = group(CosineSimilarity(vectors), 0.9)
    assert approximate.labels.tolist() == exact.tolist()


# The attaching pass. A tight group of 20 within ±12° (every pair >= cos 24° = 0.914) and one item at
# 25°: its mean similarity to the group is cos 25° x |centroid| = 0.8997, so average linkage at 0.9
# leaves it apart, while its similarity to the group's representative (the centroid, at 0°) is
# cos 25° = 0.906, and 11 of its 20 pairs reach 0.9 (those within 25.8°).
FRAGMENT = unit_vectors_at([*np.linspace(-12, 12, 20), 25])


def test_linkage_alone_leaves_the_fragment_apart() -> None:
    result = group(CosineSimilarity(FRAGMENT), 0.9, attach=None)
    assert result.n_stories == 2 and result.labels[-1] != result.labels[0]
    assert result.attached == 0


def test_fragment_joins_the_group_whose_representative_reaches_the_bar() -> None:
    result = group(CosineSimilarity(FRAGMENT), 0.9, attach=Attach(margin=0.0))
    assert result.labels.tolist() == [0] * 21
    assert result.attached == 1
    # The bar is relative to the threshold: 0.9 + 0.1 * margin; 0.906 passes 0.905 but not 0.91.
    assert group(CosineSimilarity(FRAGMENT), 0.9, attach=Attach(margin=0.05)).n_stories == 1
    assert group(CosineSimilarity(FRAGMENT), 0.9, attach=Attach(margin=0.1)).n_stories == 2


def test_attaching_needs_a_much_larger_group_and_enough_linked_pairs() -> None:
    assert group(CosineSimilarity(FRAGMENT), 0.9, attach=Attach(0.0, ratio=0.01)).n_stories == 2  # 20 < 100
    assert group(CosineSimilarity(FRAGMENT), 0.9, attach=Attach(0.0, links=0.5)).n_stories == 1  # 11/20 linked
    assert group(CosineSimilarity(FRAGMENT), 0.9, attach=Attach(0.0, links=0.6)).n_stories == 2


def test_attaching_needs_a_candidate_edge() -> None:
    # At 35° the item's best pair is cos 23° = 0.92 < 0.95: no edge to the group, so it stays alone even
    # though a negative margin would let its representative score (cos 35° = 0.82) pass.
    vectors = unit_vectors_at([*np.linspace(-12, 12, 20), 35])
    assert group(CosineSimilarity(vectors), 0.95, attach=Attach(margin=-1.0)).n_stories == 2


def test_attach_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="ratio"):
        Attach(0.1, ratio=0.0)
    with pytest.raises(ValueError, match="links"):
        Attach(0.1, links=1.5)
    with pytest.raises(ValueError, match="margin"):
        Attach(2.0)
    assert Attach(0.4).bar(0.9) == pytest.approx(0.94)
    with pytest.raises(ValueError, match="attach"):
        group(CosineSimilarity(FRAGMENT), 0.9, attach="yes")


def test_auto_takes_the_similaritys_setting_and_cosine_has_none() -> None:
    assert group(CosineSimilarity(FRAGMENT), 0.9).n_stories == 2  # default "auto": plain cosine has no pass

    class WithAttach(CosineSimilarity):
        attach = Attach(margin=0.0)

    assert group(WithAttach(FRAGMENT), 0.9).n_stories == 1
    assert group(WithAttach(FRAGMENT), 0.9, attach=None).n_stories == 2


def test_representatives_are_renormalized_means() -> None:
    vectors = unit_vectors_at([0, 20, 40, 90])
    labels = np.array([0, 0, 1, 2])
    scores = CosineSimilarity(vectors).representative_scores(labels, np.array([0, 1]), np.array([1, 2]))
    # group 0's centroid is at 10°: cos 30° to group 1 (40°); a one-item group is its own vector.
    assert scores.tolist() == pytest.approx([np.cos(np.radians(30)), np.cos(np.radians(50))], abs=1e-6)


class TableScores(CosineSimilarity):
    """Representative scores from a table of (source group, target group) -> score."""

    def __init__(self, vectors: np.ndarray, table: dict[tuple[int, int], float]):
        super().__init__(vectors)
        self.table = table

    def representative_scores(self, labels, left, right):
        return np.array(
            [self.table.get((int(a), int(b)), 0.0) for a, b in zip(left, right, strict=True)], dtype=np.float32
        )


def test_targets_never_move_so_the_pass_cannot_chain() -> None:
    # Groups: 0 = one item, 1 = five items, 2 = sixty items; edges 0-1 and 1-2 only. Group 1 may move
    # into group 2 (5 <= 0.1 x 60), group 0 only into group 1 (1 <= 0.1 x 5? no: ratio 0.2 allows it).
    # Group 0 must not follow group 1 into group 2: a group that moves receives nothing.
    from scipy import sparse

    labels = np.array([0] + [1] * 5 + [2] * 60)
    n = len(labels)
    edges = sparse.coo_matrix(([0.95, 0.95], ([0, 1], [1, 6])), shape=(n, n))
    edges = (edges + edges.T).tocsr()
    table = {(0, 1): 0.99, (1, 2): 0.99}
    similarity = TableScores(np.ones((n, 2), np.float32) / np.sqrt(2), table)
    moved, count = group_module._attach_fragments(similarity, labels, edges, 0.9, Attach(0.0, ratio=0.2))
    assert count == 1
    assert moved[1] == moved[6] == 2  # group 1 joined group 2
    assert moved[0] == 0  # group 0 stayed apart: its only target moved

    # With a second, staying target, the fragment takes that one.
    edges = sparse.coo_matrix(([0.95, 0.95, 0.95], ([0, 1, 0], [1, 6, 7])), shape=(n, n))
    edges = (edges + edges.T).tocsr()
    similarity.table = {(0, 1): 0.99, (1, 2): 0.99, (0, 2): 0.95}
    moved, count = group_module._attach_fragments(similarity, labels, edges, 0.9, Attach(0.0, ratio=0.2))
    assert count == 2 and moved[0] == 2


def test_attaching_on_the_large_n_paths_matches_the_small_n_one(monkeypatch) -> None:
    # Stories of heavy-tailed sizes at a threshold where linkage leaves fragments: with the cell-blocked
    # candidate search (probing every cell), the pass must give the same stories as on the exact graph.
    vectors, _ = clustered_vectors(150, seed=5)
    attach = Attach(margin=0.0, ratio=0.2)
    small = group(CosineSimilarity(vectors), 0.85, attach=attach)
    baseline = group(CosineSimilarity(vectors), 0.85, attach=None)
    assert small.attached == baseline.n_stories - small.n_stories > 0
    monkeypatch.setattr(group_module, "_EXACT_PAIRS_LIMIT", 10)
    monkeypatch.setattr(group_module, "_PROBES", 10_000)
    assert group(CosineSimilarity(vectors), 0.85, attach=attach).labels.tolist() == small.labels.tolist()


def test_attaching_after_sparse_linkage(monkeypatch) -> None:
    monkeypatch.setattr(group_module, "DENSE_COMPONENT_LIMIT", 2)
    assert group(CosineSimilarity(FRAGMENT), 0.9, attach=None).n_stories == 2
    assert group(CosineSimilarity(FRAGMENT), 0.9, attach=Attach(margin=0.0)).labels.tolist() == [0] * 21
