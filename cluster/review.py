"""Reviewing a grouping by eye: N random multi-headline groups, each member's score, the weakest member.

A person judges a grouping fastest by reading a random sample of its groups (a single headline cannot be
wrongly grouped, so only groups of two or more are drawn) with, for each member, its score to the
representative, and the least similar member marked: the one with the lowest mean score to the rest of
its group, where a wrong merge shows first. The same input and seed always draw the same groups.

Pure functions over a :class:`cluster.stories.CollapseResult` (a file) or over an index's stored
events of a time window (through :class:`cluster.store.HeadlineIndex`'s public reading API).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import numpy as np

from .breakdown import Breakdown, breakdown
from .normalize import normalize
from .pipeline import score

if TYPE_CHECKING:  # only for the annotations: the index is handed in by the caller
    from .store import Headline, HeadlineIndex
    from .stories import CollapseResult

DEFAULT_GROUPS = 30


@dataclass(frozen=True)
class ReviewMember:
    """One member of a reviewed group. ``index``: its position in the input file (None for an index);
    ``score``: its score to the representative; ``to_rest``: its mean score to the group's other members."""

    index: int | None
    id: str | int | None
    text: str
    score: float
    to_rest: float
    representative: bool = False
    least_similar: bool = False

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "id": self.id,
            "text": self.text,
            "score": round(self.score, 4),
            "to_rest": round(self.to_rest, 4),
            "representative": self.representative,
            "least_similar": self.least_similar,
        }


@dataclass(frozen=True)
class ReviewGroup:
    id: str | int
    members: tuple[ReviewMember, ...]

    @property
    def least_similar(self) -> ReviewMember:
        return next(m for m in self.members if m.least_similar)

    def to_dict(self) -> dict:
        return {"id": self.id, "size": len(self.members), "members": [m.to_dict() for m in self.members]}


@dataclass(frozen=True)
class Review:
    """The drawn groups (in the order of the grouping) out of ``groups_total`` multi-headline groups."""

    groups: tuple[ReviewGroup, ...]
    groups_total: int
    threshold: float
    level: str
    model: str
    seed: int

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "level": self.level,
            "threshold": self.threshold,
            "seed": self.seed,
            "groups_total": self.groups_total,
            "groups": [g.to_dict() for g in self.groups],
        }


def draw(total: int, n: int, seed: int) -> list[int]:
    """``n`` distinct positions out of ``total`` (all when fewer), in order, the same for the same seed.

    A private ``random.Random`` so that neither the caller's global random state nor NumPy's affects it.
    """
    if n < 0:
        raise ValueError(f"cannot draw {n} groups")
    return sorted(random.Random(seed).sample(range(total), min(n, total)))


def least_similar(scores: np.ndarray, representative: int) -> tuple[int, np.ndarray]:
    """The position of the member with the lowest mean score to the rest of its group (``scores``: the
    judgement's square matrix among the members), and every member's mean score to the rest."""
    size = len(scores)
    off_diagonal = ~np.eye(size, dtype=bool)
    to_rest = np.where(off_diagonal, scores, 0.0).sum(axis=1) / max(size - 1, 1)
    # Ties (always the case in a pair) go to a member other than the representative, then to input order.
    weakest = min(range(size), key=lambda k: (float(to_rest[k]), k == representative, k))
    return weakest, to_rest


def review_group(
    group_id: str | int,
    scores: np.ndarray,
    representative: int,
    texts: Sequence[str],
    ids: Sequence[str | int | None],
    indices: Sequence[int | None],
) -> ReviewGroup:
    """One group of two or more members from the judgement's ``scores`` among them (square), the
    position of its ``representative`` and each member's text, id and input position."""
    size = len(texts)
    weakest, to_rest = least_similar(scores, representative)
    return ReviewGroup(
        group_id,
        tuple(
            ReviewMember(
                indices[k],
                ids[k],
                texts[k],
                float(scores[representative, k]),
                float(to_rest[k]),
                k == representative,
                k == weakest,
            )
            for k in range(size)
        ),
    )


def review_collapse(result: CollapseResult, n: int = DEFAULT_GROUPS, seed: int = 0) -> Review:
    """``n`` random multi-headline stories of ``result``, each member scored as grouping scored it."""
    multi = [s for s in result.stories if s.size > 1]
    groups = []
    for position in draw(len(multi), n, seed):
        story = multi[position]
        indices = [m.index for m in story.members]
        groups.append(
            review_group(
                story.id,
                result.scores(indices),
                indices.index(story.representative.index),
                [m.text for m in story.members],
                [m.id for m in story.members],
                indices,
            )
        )
    return Review(tuple(groups), len(multi), result.threshold, result.level, result.model, seed)


def review_index(
    index: HeadlineIndex,
    since: datetime | None = None,
    until: datetime | None = None,
    n: int = DEFAULT_GROUPS,
    seed: int = 0,
) -> Review:
    """``n`` random events of two or more headlines (each nested in a story with a headline in
    [since, until)), scored with the index's own judgement over their stored vectors, texts and times.

    The groups are events: the index's judgement and threshold group headlines into events, and events
    into stories by the coarser story judgement, so an event is the group the scores are judged at. An
    event's representative is its story's when the story's is among its members, else its most central
    member (the highest mean score to the rest)."""
    multi = [
        (story, members)
        for story in index.stories(since, until)
        for members in story.events.values()
        if len(members) > 1
    ]
    groups = []
    for position in draw(len(multi), n, seed):
        story, members = multi[position]
        headlines = [m.headline for m in members]
        # The members' stored vectors and normalized texts: the stored headlines of their time span.
        low = min(h.t for h in headlines)
        high = max(h.t for h in headlines)
        window = index.window_headlines(_moment(low - 1.0), _moment(high + 1.0))
        where = {row: k for k, row in enumerate(window.rows)}
        picked = [where[h.row] for h in headlines]
        times = np.array([math.nan if window.times[k] is None else window.times[k] for k in picked], dtype=np.float64)
        similarity = score([window.normalized[k] for k in picked], window.vectors[picked], index.judgement, times)
        positions = np.arange(len(picked))
        scores = similarity.block(positions, positions)
        rep = next((k for k, h in enumerate(headlines) if h.row == story.representative.row), None)
        if rep is None:
            rep = int(np.argmax(np.where(~np.eye(len(picked), dtype=bool), scores, 0.0).sum(axis=1)))
        groups.append(
            review_group(
                headlines[0].event_id or story.id,
                scores,
                rep,
                [h.text for h in headlines],
                [h.id for h in headlines],
                [None] * len(headlines),
            )
        )
    return Review(tuple(groups), len(multi), index.threshold, index.level, index.model, seed)


def query_breakdown(index: HeadlineIndex, text: str, hit: Headline) -> Breakdown:
    """The index's judgement of the query ``text`` against one stored headline, signal by signal (the
    query has no publication time, as :meth:`HeadlineIndex.query` judges it)."""
    window = index.window_headlines(_moment(hit.t - 1.0), _moment(hit.t + 1.0))
    k = window.rows.index(hit.row)
    query = normalize(text)
    vectors = np.vstack([np.asarray(index.embedder_in_use().encode([query]), dtype=np.float32), window.vectors[k]])
    times = np.array([math.nan, math.nan if window.times[k] is None else window.times[k]], dtype=np.float64)
    normalized = [query, window.normalized[k]]
    return breakdown(score(normalized, vectors, index.judgement, times), normalized, times, 0, 1)


def _moment(seconds: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=seconds)


def review_lines(review: Review) -> list[str]:
    """The text form: each group's members with their score to the representative; the representative
    marked ``*`` and the least similar member ``<`` with its mean score to the rest."""
    out = []
    for group in review.groups:
        least = group.least_similar
        # An index's groups are events (ids e...), a file's the stories (events) of its collapse.
        kind = "event" if str(group.id).startswith("e") else "story"
        size = len(group.members)
        out.append(f"{kind} {group.id} ({size} headlines; least similar: {least.to_rest:.3f} to the rest)")
        for m in group.members:
            mark = "*" if m.representative else ("<" if m.least_similar else " ")
            where = "" if m.index is None else f"[{m.index}] "
            label = "" if m.index is not None or m.id is None else f"{m.id}: "
            rest = f"  (to the rest {m.to_rest:.3f})" if m.least_similar else ""
            out.append(f"  {mark} {m.score:.3f}  {where}{label}{m.text}{rest}")
    return out
