"""Stories: collapse a list of headlines into distinct stories, one representative each.

``collapse`` runs the pipeline (:mod:`cluster.pipeline`: normalize, embed, the level's judgement), groups
and returns a :class:`CollapseResult`
that explains itself: each story's members with their similarity to the representative and the
strongest link that brought them in, the duplicate ratio, and ``explain(i, j)`` for any pair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .breakdown import Breakdown, breakdown
from .embed import get_embedder, resolve_model_name
from .errors import InputError
from .group import Grouping, group, group_nested, pick_representative
from .judge import PairwiseSimilarity
from .pipeline import EmbedderLike, Prepared, headline_items, judgement_of, prepare, score
from .settings import DEFAULT_LEVEL

REPRESENTATIVES = ("central", "first", "earliest")


@dataclass(frozen=True)
class Member:
    """One headline of a story. ``score``: similarity to the story's representative.

    ``linked_to``/``link_score``: the member it is most similar to, the strongest edge that brought it
    into the story (None for a story of one). ``id``: the input's own id (a mapping's ``id`` field, a
    CSV/JSONL id column through the CLI), as given, or None: callers need their ids back, not positions.
    """

    index: int
    text: str
    score: float
    linked_to: int | None = None
    link_score: float | None = None
    id: str | int | None = None


@dataclass(frozen=True)
class Story:
    id: int
    representative: Member
    members: list[Member]

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def duplicates(self) -> list[Member]:
        """The members other than the representative."""
        return [m for m in self.members if m.index != self.representative.index]


@dataclass(frozen=True)
class NestedStory:
    """A story of whole events (each a :class:`Story` of the event level), in input order of their
    representatives; the story's representative is that of its largest event (ties: the first)."""

    id: int
    events: list[Story]

    @property
    def representative(self) -> Member:
        return max(self.events, key=lambda e: (e.size, -e.representative.index)).representative

    @property
    def members(self) -> list[Member]:
        return sorted((m for e in self.events for m in e.members), key=lambda m: m.index)

    @property
    def size(self) -> int:
        return sum(e.size for e in self.events)


@dataclass(frozen=True)
class Explanation:
    """Why two headlines are, or are not, one story. ``breakdown``: the pair's score signal by signal
    (each one's value and signed contribution; None for a headline with itself)."""

    i: int
    j: int
    similarity: float
    threshold: float
    same_story: bool
    reason: str
    breakdown: Breakdown | None = None
    texts: tuple[str, str] = ("", "")

    def to_dict(self) -> dict:
        """The JSON of ``headline-cluster explain --format json``."""
        return {
            "i": self.i,
            "j": self.j,
            "texts": list(self.texts),
            "similarity": round(self.similarity, 4),
            "threshold": self.threshold,
            "same_story": self.same_story,
            "reason": self.reason,
            "breakdown": None if self.breakdown is None else self.breakdown.to_dict(),
        }

    def lines(self) -> list[str]:
        """The text form: the two headlines, each signal's contribution, the score against the threshold,
        the reason."""
        out = [f"[{self.i}] {self.texts[0]}", f"[{self.j}] {self.texts[1]}"]
        if self.breakdown is not None:
            out.extend(self.breakdown.lines(self.threshold))
        out.append(self.reason)
        return out


@dataclass
class CollapseResult:
    """Distinct stories of a headline list, in the input order of their representatives."""

    model: str
    threshold: float
    level: str
    linkage: str
    texts: list[str]
    normalized: list[str]
    stories: list[Story]
    _prepared: Prepared = field(repr=False)
    _grouping: Grouping = field(repr=False)
    _representative: str = field(repr=False, default="central")
    _times: list | None = field(repr=False, default=None)
    _ids: list | None = field(repr=False, default=None)
    # Events nested in stories (collapse(nested=True)): ``stories`` are then the events, and these the
    # stories made of them, grouped at the story judgement's threshold.
    nested: list[NestedStory] | None = None
    story_threshold: float | None = None
    # At the story level: the event score and threshold its stories are grouped over (they nest).
    _events: tuple[PairwiseSimilarity, float] | None = field(repr=False, default=None)

    @property
    def scale(self) -> str:
        """What the scores are: a probability for the learned levels (cluster.judge.Judgement.scale)."""
        return self._prepared.judgement.scale

    @property
    def selected(self) -> list[str]:
        """The collapsed list: one headline per story, in input order."""
        return [s.representative.text for s in self.stories]

    @property
    def filtered(self) -> list[Member]:
        """Headlines dropped because another one represents their story."""
        return sorted((m for s in self.stories for m in s.duplicates), key=lambda m: m.index)

    @property
    def duplicate_ratio(self) -> float:
        return 1.0 - len(self.stories) / len(self.texts) if self.texts else 0.0

    def story_of(self, index: int) -> Story:
        label = int(self._grouping.labels[index])
        return next(s for s in self.stories if self._label_of(s) == label)

    def _label_of(self, story: Story) -> int:
        return int(self._grouping.labels[story.representative.index])

    def explain(self, i: int, j: int) -> Explanation:
        """Why headlines ``i`` and ``j`` are, or are not, one story."""
        n = len(self.texts)
        for position in (i, j):
            if not 0 <= position < n:
                raise IndexError(f"headline {position} does not exist: the input has {n} (0-based)")
        sim = self._similarity.pair(i, j)
        labels = self._grouping.labels
        same = bool(labels[i] == labels[j])
        t = self.threshold
        if i == j:
            reason = "the same headline"
        elif same and sim >= t:
            reason = f"same story: similarity {sim:.3f} reaches the threshold {t:.3f}"
        elif same:
            story = np.flatnonzero(labels == labels[i])
            mean_i = self._mean_to(i, story)
            mean_j = self._mean_to(j, story)
            reason = (
                f"same story: their own similarity {sim:.3f} is below the threshold {t:.3f}, but each is "
                f"close to the story as a whole (mean similarity to its members {mean_i:.3f} and {mean_j:.3f})"
            )
        elif sim < t:
            reason = f"different stories: similarity {sim:.3f} is below the threshold {t:.3f}"
        else:
            a = np.flatnonzero(labels == labels[i])
            b = np.flatnonzero(labels == labels[j])
            between = float(self._similarity.block(a, b).mean())
            reason = (
                f"different stories although similarity {sim:.3f} reaches the threshold {t:.3f}: their stories "
                f"are apart as wholes ({self.linkage} linkage similarity {between:.3f} between their "
                f"{len(a)} and {len(b)} members is below the threshold), which keeps stories from chaining"
            )
        parts = None if i == j else breakdown(self._similarity, self.normalized, self._prepared.times, i, j)
        return Explanation(i, j, sim, t, same, reason, parts, (self.texts[i], self.texts[j]))

    def _mean_to(self, i: int, members: np.ndarray) -> float:
        others = members[members != i]
        return float(self._similarity.block(np.array([i]), others).mean()) if len(others) else 1.0

    @property
    def _similarity(self) -> PairwiseSimilarity:
        return self._prepared.similarity

    def scores(self, indices: Sequence[int]) -> np.ndarray:
        """The judgement's scores among the headlines ``indices`` (a square matrix), as grouping saw them."""
        positions = np.asarray(indices, dtype=np.int64)
        return self._similarity.block(positions, positions)

    def rethreshold(self, threshold: float) -> CollapseResult:
        """The same input grouped at another threshold, without embedding again."""
        return _assemble(
            self._prepared, self.linkage, self._representative, threshold, self._times, self._ids, self._events
        )

    def to_dict(self, *, explain: bool = False) -> dict:
        """The stable JSON shape of ``headline-cluster collapse --format json``. Nested (events in
        stories), each story also lists its ``events``, each with its ``id``, representative and members;
        a member's ``score`` is then its similarity to its event's representative."""

        def member(m: Member) -> dict:
            item = {"index": m.index, "id": m.id, "text": m.text, "score": round(m.score, 4)}
            if explain:
                item["linked_to"] = m.linked_to
                item["link_score"] = None if m.link_score is None else round(m.link_score, 4)
            return item

        def rep(m: Member) -> dict:
            return {"index": m.index, "id": m.id, "text": m.text}

        if self.nested is not None:
            return {
                "model": self.model,
                "threshold": self.threshold,
                "story_threshold": self.story_threshold,
                "stories": [
                    {
                        "id": s.id,
                        "representative": rep(s.representative),
                        "members": [member(m) for m in s.members],
                        "events": [
                            {
                                "id": e.id,
                                "representative": rep(e.representative),
                                "members": [member(m) for m in e.members],
                            }
                            for e in s.events
                        ],
                    }
                    for s in self.nested
                ],
            }
        return {
            "model": self.model,
            "threshold": self.threshold,
            "stories": [
                {
                    "id": s.id,
                    "representative": {
                        "index": s.representative.index,
                        "id": s.representative.id,
                        "text": s.representative.text,
                    },
                    "members": [member(m) for m in s.members],
                }
                for s in self.stories
            ],
        }


def collapse(
    headlines: Sequence[str | Mapping],
    *,
    threshold: float | None = None,
    model: str | None = None,
    level: str = DEFAULT_LEVEL,
    linkage: str | None = None,
    representative: str = "central",
    text_field: str | None = None,
    embedder: EmbedderLike | None = None,
    prefixes: Sequence[str] | None = None,
    nested: bool = False,
) -> CollapseResult:
    """Group ``headlines`` into stories and pick one representative each.

    ``level``: ``event`` (one news event, the default), ``story`` or ``duplicate``. ``threshold``
    defaults to the model's calibrated value for ``level``, ``linkage`` to the level's (average).
    ``representative``: ``central`` (most similar to the rest of its story), ``first`` (input order) or
    ``earliest`` (by ``published_at`` in mapping input, a datetime or ISO 8601 text; ties and missing
    times by input order). Mapping input with ``published_at`` is scored with its times, as the index
    scores the same headlines. A mapping's ``id`` (text or a number) comes back with its member and
    representative. ``nested``: group ``level`` (the events) and then whole events into stories at the
    story judgement (:func:`cluster.group.group_nested`, as the index does): ``result.nested``.
    """
    if representative not in REPRESENTATIVES:
        raise ValueError(f"unknown representative rule {representative!r}: use one of {REPRESENTATIVES}")
    texts, times, ids = headline_items(headlines, text_field)
    if not texts:
        raise InputError("no headlines to collapse")
    if embedder is None:
        embedder = get_embedder(resolve_model_name(model))
    judgement = judgement_of(embedder, level, threshold)
    prepared = prepare(texts, embedder=embedder, judgement=judgement, times=times, prefixes=prefixes)
    events = None
    if level == "story":
        # Stories are grouped over whole events (as the index groups them), so an event never spans two.
        event = judgement_of(embedder, "event")
        events = (score(prepared.normalized, prepared.vectors, event, prepared.times), event.threshold)
    result = _assemble(
        prepared, linkage or judgement.linkage, representative, judgement.threshold, times, ids, events
    )
    if nested:
        story = judgement if level == "story" else judgement_of(embedder, "story")
        story_similarity = score(prepared.normalized, prepared.vectors, story, prepared.times)
        labels = group_nested(
            prepared.similarity, story_similarity, result.threshold, story.threshold, linkage=result.linkage
        ).stories
        by_label: dict[int, list[Story]] = {}
        for event in result.stories:  # in order of their representatives: stories come out in that order
            by_label.setdefault(int(labels[event.representative.index]), []).append(event)
        result.nested = [NestedStory(n, events) for n, events in enumerate(by_label.values())]
        result.story_threshold = story.threshold
    return result


def _assemble(
    prepared: Prepared,
    linkage: str,
    representative: str,
    threshold: float,
    times: list | None,
    ids: list | None = None,
    events: tuple[PairwiseSimilarity, float] | None = None,
) -> CollapseResult:
    similarity = prepared.similarity
    texts = prepared.texts
    if events is None:
        grouping = group(similarity, threshold, linkage=linkage)
    else:
        event_similarity, event_threshold = events
        nested = group_nested(event_similarity, similarity, event_threshold, threshold, linkage=linkage)
        grouping = Grouping(nested.stories, threshold, linkage, similarity.candidates(threshold))
    stories = []
    for members in grouping.groups():
        scores = similarity.block(members, members)
        rep = members[pick_representative(members, scores, representative, times)]
        rep_row = scores[list(members).index(rep)]
        story_members = []
        for position, index in enumerate(members):
            linked_to = link_score = None
            if len(members) > 1:
                row = scores[position].copy()
                row[position] = -np.inf
                best = int(np.argmax(row))
                linked_to, link_score = int(members[best]), float(row[best])
            story_members.append(
                Member(
                    int(index),
                    texts[index],
                    float(rep_row[position]),
                    linked_to,
                    link_score,
                    None if ids is None else ids[index],
                )
            )
        rep_member = next(m for m in story_members if m.index == rep)
        stories.append((int(rep), rep_member, story_members))
    stories.sort(key=lambda s: s[0])
    result_stories = [Story(n, rep_member, members) for n, (_, rep_member, members) in enumerate(stories)]
    return CollapseResult(
        prepared.judgement.model,
        threshold,
        prepared.judgement.level,
        linkage,
        texts,
        prepared.normalized,
        result_stories,
        prepared,
        grouping,
        representative,
        times,
        ids,
        _events=events,
    )
