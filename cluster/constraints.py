"""Editorial corrections as hard constraints on a regrouping: the one place they are applied.

:func:`apply_constraints` takes the event and story labels a window's regrouping produced and makes
every correction hold, changing as little as it can:

- **keep together** (must-link): the two headlines' groups merge (at the event level their stories
  merge too, so events stay nested in stories);
- **keep apart** (cannot-link): when the two share a group, the later-added headline leaves it, into a
  group of its own, taking with it the headlines kept together with it (at the story level its whole
  event and the events kept together with it move, since events never split between stories).

Together is applied before apart, so a merge that brings a kept-apart pair into one group is undone.
Stored corrections never contradict each other (:mod:`cluster.store.corrections` refuses those), so
every constraint can hold at once. The ids of the groups are then given by the usual rules
(:func:`cluster.regroup.reconcile`): a merge keeps an id, a headline that leaves gets a new one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .store.corrections import Correction, binding

Pair = tuple[int, int]  # positions in the window, first < second


@dataclass(frozen=True)
class Constraints:
    """The corrections that bind a window, as pairs of positions (row order: a larger position was added
    later), with the implications between levels already drawn (:func:`cluster.store.corrections.binding`)."""

    event_together: list[Pair] = field(default_factory=list)
    event_apart: list[Pair] = field(default_factory=list)
    story_together: list[Pair] = field(default_factory=list)
    story_apart: list[Pair] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.event_together or self.event_apart or self.story_together or self.story_apart)


def window_constraints(ids: Sequence[str], corrections: Iterable[Correction]) -> Constraints:
    """The constraints of ``corrections`` on a window whose headlines have ``ids`` (in row order). A
    correction binds when both its headlines are in the window: only the window's headlines are regrouped."""
    position = {headline_id: p for p, headline_id in enumerate(ids)}
    every = list(corrections)

    def pairs(found: Iterable[tuple[str, str]]) -> list[Pair]:
        inside = {(position[a], position[b]) for a, b in found if a in position and b in position}
        return sorted((min(p, q), max(p, q)) for p, q in inside)

    event_together, event_apart = binding(every, "event")
    story_together, story_apart = binding(every, "story")
    return Constraints(pairs(event_together), pairs(event_apart), pairs(story_together), pairs(story_apart))


@dataclass
class Constrained:
    events: np.ndarray  # labels numbered by first member, as :class:`cluster.group.NestedGrouping`'s
    stories: np.ndarray
    acted: int  # constraints that changed the labels (a merge made or a headline moved out)


def apply_constraints(events: np.ndarray, stories: np.ndarray, constraints: Constraints) -> Constrained:
    """Labels under which every constraint holds (module docstring); the input arrays are not changed."""
    events = np.array(events, dtype=np.int64, copy=True)
    stories = np.array(stories, dtype=np.int64, copy=True)
    acted = 0
    for p, q in constraints.event_together:
        if events[p] != events[q]:
            events[events == events[q]] = events[p]
            stories[stories == stories[q]] = stories[p]  # the merged event lies in one story
            acted += 1
    for p, q in constraints.story_together:
        if stories[p] != stories[q]:
            stories[stories == stories[q]] = stories[p]
            acted += 1
    for p, q in constraints.event_apart:
        if events[p] == events[q]:
            leaving = _kept_with(q, constraints.event_together, events == events[q])
            events[leaving] = _fresh_label(events)
            acted += 1
    for p, q in constraints.story_apart:
        if stories[p] == stories[q]:
            # Whole events move: q's event and the events kept in one story with it.
            leaving = _events_kept_with(q, constraints.story_together, events, stories == stories[q])
            stories[leaving] = _fresh_label(stories)
            acted += 1
    return Constrained(_renumbered(events), _renumbered(stories), acted)


def _kept_with(start: int, together: Sequence[Pair], candidates: np.ndarray) -> np.ndarray:
    """A mask of ``start`` and every position that ``together`` chains to it, among ``candidates``."""
    edges: dict[int, list[int]] = {}
    for p, q in together:
        edges.setdefault(p, []).append(q)
        edges.setdefault(q, []).append(p)
    seen = {start}
    stack = [start]
    while stack:
        for other in edges.get(stack.pop(), []):
            if other not in seen and candidates[other]:
                seen.add(other)
                stack.append(other)
    mask = np.zeros(len(candidates), dtype=bool)
    mask[sorted(seen)] = True
    return mask


def _events_kept_with(start: int, together: Sequence[Pair], events: np.ndarray, story: np.ndarray) -> np.ndarray:
    """A mask of the members of ``start``'s event and of every event of the same story (``story``, a mask)
    that ``together`` chains to it: a chain runs through every member of an event, as events never split."""
    moving = {int(events[start])}
    grown = True
    while grown:  # a handful of corrections per window: a fixed point by repeated passes is enough
        grown = False
        for x, y in together:
            for a, b in ((x, y), (y, x)):
                if int(events[a]) in moving and int(events[b]) not in moving and story[b]:
                    moving.add(int(events[b]))
                    grown = True
    return np.isin(events, sorted(moving)) & story


def _fresh_label(labels: np.ndarray) -> int:
    return int(labels.max()) + 1 if len(labels) else 0


def _renumbered(labels: np.ndarray) -> np.ndarray:
    """Labels 0, 1, ... in order of each group's first member (what :func:`cluster.regroup.clusters_of`
    and :func:`cluster.regroup.reconcile` expect: no empty label, groups ordered by first position)."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse]
