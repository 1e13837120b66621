"""Grouping: from pairwise similarities to stories, without chaining.

The algorithm, in three steps:

1. **Candidate graph.** Every pair whose similarity reaches the threshold is an edge. Pairs below it
   can never be merged directly, so the connected components of this graph bound every story.
2. **Linkage inside each component.** Agglomerative clustering merges the two closest groups while
   their linkage similarity reaches the threshold. ``average`` (the default) uses the mean similarity
   over all cross pairs, ``complete`` the minimum, ``single`` the maximum (plain connected components,
   which chain). With average linkage, A~B and B~C do not pull A and C together when A and C are far
   apart: the mean of the three pairs falls below the threshold.
3. Stories are numbered by the position of their first member.

Inside a component of up to :data:`DENSE_COMPONENT_LIMIT` items the linkage uses every pair's real
similarity. Larger components (which only appear at very low thresholds) use the sparse form of the
same rule, in which pairs below the threshold count as similarity 0; it is never more permissive.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from .judge import PairwiseSimilarity

LINKAGES = ("average", "complete", "single")
DENSE_COMPONENT_LIMIT = 4000


@dataclass
class Grouping:
    """The outcome of grouping: a story label per item, and the graph it was cut from."""

    labels: np.ndarray
    threshold: float
    linkage: str
    edges: sparse.csr_matrix

    @property
    def n_stories(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def groups(self) -> list[np.ndarray]:
        """Member positions of each story, in story order; members in input order."""
        order = np.argsort(self.labels, kind="stable")
        bounds = np.searchsorted(self.labels[order], np.arange(self.n_stories + 1))
        return [order[bounds[s] : bounds[s + 1]] for s in range(self.n_stories)]


def group(similarity: PairwiseSimilarity, threshold: float, *, linkage: str = "average") -> Grouping:
    """Group the items of ``similarity`` (a score of :mod:`cluster.judge`) at ``threshold``."""
    if linkage not in LINKAGES:
        raise ValueError(f"unknown linkage {linkage!r}: use one of {', '.join(LINKAGES)}")
    n = len(similarity)
    edges = similarity.candidates(threshold)
    labels = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return Grouping(labels, threshold, linkage, edges)
    n_components, component = csgraph.connected_components(edges, directed=False)
    sizes = np.bincount(component, minlength=n_components)
    # Edges inside each component (every edge joins two members of the same component).
    upper = sparse.triu(edges, k=1, format="coo")
    inner = np.bincount(component[upper.row], minlength=n_components)
    del upper
    # A component whose pairs all reach the threshold is one story under every linkage (each merge's
    # average, minimum or maximum is >= the threshold), and so is every component of one or two items.
    # Only the rest, rare at story thresholds, need the agglomerative step; at a million items that
    # keeps the Python loop to a few thousand iterations.
    needs_linkage = (sizes > 2) & (inner < sizes * (sizes - 1) // 2) if linkage != "single" else sizes < 0
    labels = component.astype(np.int64)
    next_label = n_components
    hard = np.flatnonzero(needs_linkage)
    if len(hard):
        order = np.argsort(component, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        for c in hard:
            members = order[bounds[c] : bounds[c + 1]]
            if len(members) <= DENSE_COMPONENT_LIMIT:
                sub = _dense_linkage(similarity.block(members, members), threshold, linkage)
            else:
                sub = _sparse_linkage(edges[members][:, members].tocoo(), threshold, linkage)
            # Sub-story 0 keeps the component's label; the others get fresh ones.
            labels[members] = np.where(sub == 0, c, sub - 1 + next_label)
            next_label += int(sub.max())
    return Grouping(_renumber_by_first_member(labels), threshold, linkage, edges)


def _dense_linkage(scores: np.ndarray, threshold: float, linkage: str) -> np.ndarray:
    from scipy.cluster import hierarchy  # most of the package's import time; only some lists need it

    distance = 1.0 - np.asarray(scores, dtype=np.float64)
    np.fill_diagonal(distance, 0.0)
    distance = np.clip((distance + distance.T) / 2.0, 0.0, None)
    tree = hierarchy.linkage(_condensed(distance), method=linkage)
    # fcluster cuts at merge heights <= t: merge while 1 - linkage similarity <= 1 - threshold.
    cut = 1.0 - threshold + 1e-9
    return hierarchy.fcluster(tree, t=cut, criterion="distance").astype(np.int64) - 1


def _condensed(square: np.ndarray) -> np.ndarray:
    upper = np.triu_indices(len(square), k=1)
    return square[upper]


def _sparse_linkage(edges: sparse.coo_matrix, threshold: float, linkage: str) -> np.ndarray:
    """Agglomerative clustering over a sparse graph; absent pairs count as similarity 0."""
    n = edges.shape[0]
    size = [1] * n
    alive = [True] * n
    parent = list(range(n))
    # links[a][b] = [sum of similarities, number of pairs, minimum] between groups a and b
    links: list[dict[int, list[float]]] = [{} for _ in range(n)]
    for i, j, v in zip(edges.row, edges.col, edges.data, strict=True):
        if i != j:
            links[i][j] = [float(v), 1.0, float(v)]

    def value(a: int, b: int) -> float:
        total, count, smallest = links[a][b]
        if linkage == "average":
            return total / (size[a] * size[b])
        return smallest if count == size[a] * size[b] else 0.0  # complete: a missing pair is below

    heap = [(-value(i, j), i, j) for i in range(n) for j in links[i] if i < j]
    heapq.heapify(heap)
    while heap:
        negative, a, b = heapq.heappop(heap)
        if -negative < threshold:
            break
        if not (alive[a] and alive[b]) or b not in links[a] or value(a, b) != -negative:
            continue  # stale: one side was merged since this entry was pushed
        alive[b] = False
        parent[b] = a
        del links[a][b]
        for other, (total, count, smallest) in list(links[b].items()):
            if other == a:
                continue
            del links[other][b]
            if other in links[a]:
                old = links[a][other]
                merged = [old[0] + total, old[1] + count, min(old[2], smallest)]
            else:
                merged = [total, count, smallest]
            links[a][other] = merged
            links[other][a] = merged
        links[b] = {}
        size[a] += size[b]
        for other in links[a]:
            heapq.heappush(heap, (-value(a, other), min(a, other), max(a, other)))
    roots = [_find(parent, i) for i in range(n)]
    _, labels = np.unique(np.array(roots), return_inverse=True)
    return labels.astype(np.int64)


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _renumber_by_first_member(labels: np.ndarray) -> np.ndarray:
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first, kind="stable")
    mapping = np.empty(len(order), dtype=np.int64)
    mapping[order] = np.arange(len(order))
    _, inverse = np.unique(labels, return_inverse=True)
    return mapping[inverse]


def pick_representative(members: np.ndarray, scores: np.ndarray, rule: str, times: list | None) -> int:
    """Position (within ``members``) of the story's representative."""
    if len(members) == 1 or rule == "first":
        return 0
    if rule == "earliest" and times:
        stamps = [times[i] for i in members]
        dated = [(stamp, position) for position, stamp in enumerate(stamps) if stamp is not None]
        if dated:
            return min(dated, key=lambda item: (str(item[0]) if isinstance(item[0], str) else item[0], item[1]))[1]
        return 0
    # central: highest mean similarity to the other members; argmax keeps the earliest on ties
    centrality = (scores.sum(axis=1) - np.diag(scores)) / (len(members) - 1)
    return int(np.argmax(np.round(centrality, 6)))


# -- nested levels and stable regrouping -------------------------------------------------------------------


@dataclass
class NestedGrouping:
    """Events nested in stories: an event label and a story label per item, both numbered by first member.

    Every item of an event has the same story label: stories are grouped over whole events.
    """

    events: np.ndarray
    stories: np.ndarray


def group_nested(
    event_similarity: PairwiseSimilarity,
    story_similarity: PairwiseSimilarity,
    event_threshold: float,
    story_threshold: float,
    *,
    linkage: str = "average",
    events: np.ndarray | None = None,
    stories: np.ndarray | None = None,
    fresh: np.ndarray | None = None,
) -> NestedGrouping:
    """The one definition of the two-level partition (collapse, nightly and index build all call it).

    Events: average linkage over the items at the event judgement (:func:`group`), or, given the
    items' current ``events``, that partition settled (:func:`settle`). Stories: average linkage over
    whole events at the story judgement, the mean story score between two groups of events taken over
    all their items' pairs; given current ``stories``, each event starts in the story holding most of
    its items (ties: the lowest label) and that partition is settled over whole events. So an event
    can never be split between stories, whatever the two judgements are. ``fresh``: see :func:`settle`.
    """
    n = len(event_similarity)
    if events is None:
        event_labels = group(event_similarity, event_threshold, linkage=linkage).labels
    else:
        event_labels = settle(event_similarity, event_threshold, np.arange(n), np.asarray(events), fresh)
    start = event_labels if stories is None else _majority_per_unit(event_labels, np.asarray(stories))
    story_labels = settle(story_similarity, story_threshold, event_labels, start, fresh)
    return NestedGrouping(event_labels, story_labels)


def _majority_per_unit(units: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For each item, the label most items of its unit carry (ties: the lowest label)."""
    out = np.empty(len(units), dtype=np.int64)
    order = np.argsort(units, kind="stable")
    bounds = np.flatnonzero(np.diff(units[order])) + 1
    for members in np.split(order, bounds) if len(order) else []:
        values, counts = np.unique(labels[members], return_counts=True)
        out[members] = values[np.argmax(counts)]  # np.unique sorts: argmax keeps the lowest on ties
    return out


def settle(
    similarity: PairwiseSimilarity,
    threshold: float,
    units: np.ndarray,
    start: np.ndarray,
    fresh: np.ndarray | None = None,
) -> np.ndarray:
    """Group labels per item: the partition ``start`` (constant over each unit) changed only where the
    judgement of the items' own pairs says so. Units (items with one label in ``units``) move whole.

    1. **Leave**: each group is regrouped on its own by average linkage from its units; a group that
       average linkage forms again stays whole, one that it no longer forms parts into what it does form
       (a unit held only by a headline that left the window leaves).
    2. **Merge**: average linkage from the resulting groups: the two groups with the highest mean score
       over all their cross pairs merge while that mean reaches ``threshold``. With ``fresh`` (per item:
       new since the partition was last settled), two groups merge only when one of them holds a fresh
       item: groups already judged apart stay apart until new items link them.

    From singletons this is plain average linkage, and a partition average linkage produced is left as
    it is: labels carried from one run to the next only change where the scores changed. Ties are broken
    by position, so the result is a function of the inputs. Labels are numbered by first member.
    """
    n = len(units)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    _, unit = np.unique(units, return_inverse=True)
    _, grp = np.unique(start, return_inverse=True)
    edges = similarity.candidates(threshold)
    # Items are linked by candidate pairs, and to the first item of their unit and of their start group:
    # nothing outside such a component can ever join it (a mean reaching the threshold needs a pair that does).
    first_of_unit = np.unique(unit, return_index=True)[1][unit]
    first_of_group = np.unique(grp, return_index=True)[1][grp]
    items = np.arange(n)
    links = sparse.coo_matrix(
        (np.ones(2 * n), (np.concatenate([items, items]), np.concatenate([first_of_unit, first_of_group]))),
        shape=(n, n),
    )
    _, component = csgraph.connected_components(edges + links.tocsr(), directed=False)
    labels = np.full(n, -1, dtype=np.int64)
    next_label = 0
    order = np.argsort(component, kind="stable")
    bounds = np.flatnonzero(np.diff(component[order])) + 1
    for members in np.split(order, bounds):
        if len(members) == 1:
            labels[members] = next_label
            next_label += 1
            continue
        if len(members) <= DENSE_COMPONENT_LIMIT:
            scores = np.asarray(similarity.block(members, members), dtype=np.float64)
        else:  # as group(): beyond the limit pairs below the threshold count as 0, never more permissive
            scores = edges[members][:, members].toarray().astype(np.float64)
        local = _settle_component(
            scores, threshold, unit[members], grp[members], None if fresh is None else fresh[members]
        )
        labels[members] = local + next_label
        next_label += int(local.max()) + 1
    return _renumber_by_first_member(labels)


def _settle_component(
    scores: np.ndarray, threshold: float, unit: np.ndarray, grp: np.ndarray, fresh: np.ndarray | None
) -> np.ndarray:
    """:func:`settle` inside one component: ``scores`` over its items; returns a group per item."""
    unit_ids, unit = np.unique(unit, return_inverse=True)
    k = len(unit_ids)
    indicator = np.zeros((len(unit), k))
    indicator[np.arange(len(unit)), unit] = 1.0
    sums = indicator.T @ scores @ indicator  # score sums between units (the diagonal is never read)
    size = indicator.sum(axis=0)
    unit_group = grp[np.unique(unit, return_index=True)[1]]
    # 1. leave: each group regrouped on its own, its units as singletons; a group average linkage forms
    # again stays whole (so a partition average linkage produced is left as it is).
    settled: list[list[int]] = []
    for g in np.unique(unit_group):
        members = np.flatnonzero(unit_group == g)
        if len(members) == 1:
            settled.append([int(members[0])])
            continue
        roots = _average_linkage(sums[np.ix_(members, members)], size[members], threshold)
        for root in dict.fromkeys(roots.tolist()):
            settled.append([int(u) for u in members[roots == root]])
    settled.sort(key=min)
    unit_fresh = None
    if fresh is not None:
        unit_fresh = np.zeros(k, dtype=bool)
        unit_fresh[unit[fresh]] = True
    # 2. merge: average linkage from the settled groups
    link = np.zeros((len(settled), len(settled)))
    for a, left in enumerate(settled):
        for b in range(a + 1, len(settled)):
            link[a, b] = link[b, a] = sums[np.ix_(left, settled[b])].sum()
    active = None if unit_fresh is None else np.array([bool(unit_fresh[m].any()) for m in settled])
    roots = _average_linkage(link, np.array([size[m].sum() for m in settled]), threshold, active)
    group_of_unit = np.empty(k, dtype=np.int64)
    for a, members in enumerate(settled):
        group_of_unit[members] = roots[a]
    return np.unique(group_of_unit, return_inverse=True)[1][unit]


def _average_linkage(
    link: np.ndarray, size: np.ndarray, threshold: float, active: np.ndarray | None = None
) -> np.ndarray:
    """Average linkage over groups given the score sums between them (``link``, the diagonal unused) and
    their sizes: the two groups with the highest mean merge while it reaches ``threshold`` (with ``active``,
    only pairs of which one is active; a merged group is active when either was). The root group of each
    (the lowest position of its merged groups)."""
    link = np.array(link, dtype=np.float64)
    size = np.array(size, dtype=np.float64)
    g = len(size)
    alive = np.ones(g, dtype=bool)
    version = np.zeros(g, dtype=np.int64)
    parent = list(range(g))
    heap: list[tuple[float, int, int, int, int]] = []

    active = np.ones(g, dtype=bool) if active is None else np.array(active, dtype=bool)

    def push(a: int) -> None:
        means = link[a] / (size[a] * size)
        allowed = alive if active[a] else alive & active
        for b in np.flatnonzero(allowed & (means >= threshold)).tolist():
            if b != a:
                lo, hi = min(a, b), max(a, b)
                heapq.heappush(heap, (-round(float(means[b]), 9), lo, hi, int(version[lo]), int(version[hi])))

    for a in range(g):
        push(a)
    while heap:
        _, a, b, va, vb = heapq.heappop(heap)
        if not (alive[a] and alive[b]) or version[a] != va or version[b] != vb:
            continue  # stale: one side changed since this entry was pushed
        alive[b] = False
        parent[b] = a  # a < b: the root is the lowest position
        link[a] += link[b]
        link[:, a] += link[:, b]
        size[a] += size[b]
        active[a] = active[a] or active[b]
        version[a] += 1
        push(a)
    return np.array([_find(parent, a) for a in range(g)], dtype=np.int64)
