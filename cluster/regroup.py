"""Stable regrouping of a window at both levels: what ``nightly`` and ``index build`` run.

One function decides what a window's headlines become (:func:`regroup_window`):

1. **The partition** is :func:`cluster.group.group_nested` started from the stored one
   (:func:`cluster.group.settle`): each stored event, restricted to the window, is regrouped on its own
   by average linkage and stays whole when average linkage forms it again (so a merge that a headline
   now outside the window was holding together is undone once the others are judged without it);
   then groups merge by average linkage at the threshold, two groups only when one of them holds a
   headline that no earlier nightly run judged (groups already judged apart stay apart until new
   headlines link them). Stories are settled the same way over whole events at the story judgement.
   A group whose pairs still hold is left as it is, so a headline's ids change only when the judgement
   of its own pairs (or the set of headlines it is judged with) changed.
   The result is settled again as the next nightly over the same window would settle it (nothing new,
   so groups only leave) until nothing moves: a nightly leaves a fixed point, and running the same
   window twice changes nothing.
   Editorial corrections binding the window are then made to hold on that partition
   (:mod:`cluster.constraints`), so their groups get ids by the rules below like any other.
2. **The ids** (:func:`reconcile`, at each level): an old id *persists into* the group holding the most
   of its settled window headlines (judged by an earlier nightly; when it has none, of all its window
   headlines), when that is at least half of them (ties: more headlines, then the group whose first
   headline is oldest); a group several old ids persist into keeps the one with the most settled
   headlines in it (ties: the most headlines, then the older id) and the others are recorded as
   **merged** into it; a group no old id persists into gets a new id, minted once and never reused.
   Headlines that leave their old id for a group with another id are recorded as a **split**. So ids
   stay with the headlines that already had their first nightly.
3. **Only the window's headlines change.** Headlines outside the window were not judged with the rest,
   so they keep their ids: a merge moves the window's headlines only, and an event whose window part
   went to another story than its headlines outside the window gets a new event id for that part
   (events stay nested in stories).

Every tie is broken by position or id, so the result is a function of the inputs alone.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .constraints import Constraints, apply_constraints
from .group import group_nested
from .judge import Judgement, PairwiseSimilarity
from .store import WindowHeadlines, mint_event_id, mint_story_id, story_order


@dataclass(frozen=True)
class Change:
    old_id: str
    new_id: str
    kind: str  # merge | split
    reason: str


@dataclass
class Reconciliation:
    labels: list[str]  # the story id of each headline of the window, in input order
    merged: dict[str, str]  # old id -> the id it was merged into
    changes: list[Change]
    new_ids: list[str]
    next_story: int


def reconcile(
    old: Sequence[str | None],
    clusters: Sequence[Sequence[int]],
    next_story: int,
    mint: Callable[[int], str] = mint_story_id,
    settled: Sequence[bool] | None = None,
) -> Reconciliation:
    """Story ids for the batch ``clusters`` (positions into ``old``, ordered by first position).

    ``old[p]`` is the stored story id of position p, or None for a headline that has no story yet (a
    bulk build's headlines the first time a window holds them: :mod:`cluster.build`); such a headline
    takes its cluster's id and weighs in no old story's rules. New ids are ``mint(number)`` from
    ``next_story`` (events: :func:`cluster.store.mint_event_id`). The rules are in the module docstring;
    every tie is broken by position or id, so the result is a function of the inputs alone.
    ``settled[p]``: position p was judged by an earlier nightly run; an id then follows its settled
    headlines first (where they go, and which id a merge keeps), so headlines that already had their
    first nightly keep their ids when headlines new since then join or leave their group.
    """
    cluster_of = np.empty(len(old), dtype=np.int64)
    for k, members in enumerate(clusters):
        cluster_of[list(members)] = k
    in_window = Counter(story for story in old if story is not None)
    counts: dict[str, Counter] = defaultdict(Counter)
    anchored: dict[str, Counter] = defaultdict(Counter)  # settled headlines only
    for position, story in enumerate(old):
        if story is not None:
            counts[story][int(cluster_of[position])] += 1
            if settled is not None and settled[position]:
                anchored[story][int(cluster_of[position])] += 1
    persisting: dict[int, list[str]] = defaultdict(list)
    for story, per_cluster in counts.items():
        # Where its settled headlines went, if it has any in the window; else where most of them went.
        basis = anchored[story] if anchored.get(story) else per_cluster
        home, held = min(basis.items(), key=lambda item: (-item[1], -per_cluster[item[0]], item[0]))
        if 2 * held >= sum(basis.values()):
            persisting[home].append(story)
    cluster_id: list[str] = []
    merged: dict[str, str] = {}
    changes: list[Change] = []
    new_ids: list[str] = []
    for k in range(len(clusters)):
        claimants = persisting.get(k)
        if not claimants:
            new_id = mint(next_story)
            next_story += 1
            new_ids.append(new_id)
            cluster_id.append(new_id)
            continue
        winner = min(claimants, key=lambda s: (-anchored[s][k], -counts[s][k], story_order(s)))
        cluster_id.append(winner)
        for story in sorted(claimants, key=story_order):
            if story != winner:
                merged[story] = winner
                changes.append(
                    Change(
                        story,
                        winner,
                        "merge",
                        f"{counts[story][k]} of its {in_window[story]} headline(s) in the window were grouped "
                        f"with {counts[winner][k]} of {winner}",
                    )
                )
    for story in sorted(counts, key=story_order):
        final = merged.get(story, story if story in cluster_id else None)
        moved: Counter = Counter()
        for k, held in counts[story].items():
            if cluster_id[k] != final:
                moved[cluster_id[k]] += held
        for target in sorted(moved, key=story_order):
            changes.append(
                Change(
                    story,
                    target,
                    "split",
                    f"{moved[target]} of its {in_window[story]} headline(s) in the window were grouped apart, "
                    f"into {target}",
                )
            )
    labels = [cluster_id[int(k)] for k in cluster_of]
    return Reconciliation(labels, merged, changes, new_ids, next_story)


@dataclass
class Regrouping:
    """A window regrouped: the event and story id of each of its headlines, and what changed."""

    events: list[str]
    stories: list[str]
    changes: list[Change]  # event changes (ids ``e...``) then story changes (``s...``)
    new_events: list[str]
    new_stories: list[str]
    next_event: int
    next_story: int
    corrected: int = 0  # corrections that changed the grouping (:func:`cluster.constraints.apply_constraints`)


def clusters_of(labels: np.ndarray) -> list[np.ndarray]:
    """Positions of each label (labels numbered by first member), in label order."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(int(labels.max()) + 2 if len(labels) else 1))
    return [order[bounds[k] : bounds[k + 1]] for k in range(len(bounds) - 1)]


_SETTLE_PASSES = 8  # each pass only splits, so this bounds the work; a real window settled in 1 or 2


def regroup_window(
    old_events: Sequence[str],
    old_stories: Sequence[str],
    event_similarity: PairwiseSimilarity,
    story_similarity: PairwiseSimilarity,
    event_judgement: Judgement,
    story_judgement: Judgement,
    next_numbers: tuple[int, int],
    outside: Mapping[str, set[str]],
    fresh: Sequence[bool] | None = None,
    constraints: Constraints | None = None,
) -> Regrouping:
    """The window's new ids (module docstring). ``old_*``: the stored ids of its headlines in row order;
    ``next_numbers``: the event and story counters; ``outside``: the story ids of each stored event's
    headlines outside the window (:meth:`cluster.store.HeadlineIndex.outside_stories`); ``constraints``:
    the editorial corrections binding the window, made to hold on the partition before ids are given
    (:mod:`cluster.constraints`), so their groups get ids by the usual rules."""
    next_event, next_story = next_numbers
    if not len(old_events):
        return Regrouping([], [], [], [], [], next_event, next_story)
    nested = group_nested(
        event_similarity,
        story_similarity,
        event_judgement.threshold,
        story_judgement.threshold,
        linkage=event_judgement.linkage,
        events=np.unique(np.array(old_events), return_inverse=True)[1],
        stories=np.unique(np.array(old_stories), return_inverse=True)[1],
        fresh=None if fresh is None else np.asarray(fresh, dtype=bool),
    )
    # The partition must be one the next nightly over the same window keeps: settle it again as that run
    # would (nothing is new then, so groups only leave) until nothing moves. One pass is not always enough:
    # a merge of this run can leave a group that average linkage no longer forms on its own.
    for _ in range(_SETTLE_PASSES):
        again = group_nested(
            event_similarity,
            story_similarity,
            event_judgement.threshold,
            story_judgement.threshold,
            linkage=event_judgement.linkage,
            events=nested.events,
            stories=nested.stories,
            fresh=np.zeros(len(old_events), dtype=bool),
        )
        if np.array_equal(again.events, nested.events) and np.array_equal(again.stories, nested.stories):
            break
        nested = again
    event_labels, story_labels, corrected = nested.events, nested.stories, 0
    if constraints:
        held = apply_constraints(event_labels, story_labels, constraints)
        event_labels, story_labels, corrected = held.events, held.stories, held.acted
    settled = None if fresh is None else [not f for f in fresh]
    at_events = reconcile(old_events, clusters_of(event_labels), next_event, mint=mint_event_id, settled=settled)
    at_stories = reconcile(old_stories, clusters_of(story_labels), next_story, settled=settled)
    events = list(at_events.labels)
    next_event = at_events.next_story
    new_events = list(at_events.new_ids)
    changes = list(at_events.changes)
    story_of: dict[str, str] = {}
    for event, story in zip(events, at_stories.labels, strict=True):
        story_of.setdefault(event, story)
    for event in sorted(story_of, key=story_order):
        held = outside.get(event)
        if not held or held == {story_of[event]}:
            continue
        fresh = mint_event_id(next_event)
        next_event += 1
        new_events.append(fresh)
        events = [fresh if e == event else e for e in events]
        changes.append(
            Change(
                event,
                fresh,
                "split",
                f"its headlines in the window went to story {story_of[event]}; those outside the window stay "
                f"in {', '.join(sorted(held, key=story_order))}",
            )
        )
    return Regrouping(
        events,
        list(at_stories.labels),
        changes + list(at_stories.changes),
        new_events,
        list(at_stories.new_ids),
        next_event,
        at_stories.next_story,
        corrected,
    )


@dataclass(frozen=True)
class WindowChange:
    """A merge or split with the headlines it concerns, as (headline id, text): what a report shows."""

    kind: str
    old_id: str
    new_id: str
    reason: str
    moved: list[tuple[str, str]]  # window headlines that went from old_id to new_id
    joined: list[tuple[str, str]]  # window headlines that were under new_id already (what they joined)


def describe_changes(
    changes: Sequence[Change],
    window: WindowHeadlines,
    after: tuple[Sequence[str], Sequence[str]] | None,
    limit: int = 5,
) -> list[WindowChange]:
    """Each change with up to ``limit`` headlines of each side. ``after``: the window's new (event, story)
    ids, when the window still carries the old ones; None for a resumed run whose window carries the new
    ones already (the moved headlines are then those now under the new id)."""
    # Positions by (old id, new id) at each level, built once: a window may hold many changes.
    by_pair: list[dict[tuple[str, str], list[int]]] = [defaultdict(list), defaultdict(list)]
    for level, before in enumerate((window.event_ids, window.story_ids)):
        now = before if after is None else after[level]
        for position, (a, b) in enumerate(zip(before, now, strict=True)):
            if after is None:
                by_pair[level][(b, b)].append(position)
            else:
                by_pair[level][(a, b)].append(position)
    described = []
    for change in changes:
        pairs = by_pair[0 if change.old_id.startswith("e") else 1]
        if after is None:  # the window carries the new ids: the headlines now under the new id
            moved, joined = pairs.get((change.new_id, change.new_id), []), []
        else:
            moved = pairs.get((change.old_id, change.new_id), [])
            joined = pairs.get((change.new_id, change.new_id), [])
        described.append(
            WindowChange(
                change.kind,
                change.old_id,
                change.new_id,
                change.reason,
                [(window.ids[p], window.texts[p]) for p in moved[:limit]],
                [(window.ids[p], window.texts[p]) for p in joined[:limit]],
            )
        )
    return described
