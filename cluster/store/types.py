"""What the index returns: typed results that explain themselves, and the index's limits."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from ..errors import InputError

DEFAULT_WINDOW = timedelta(hours=72)
"""How close in time a stored headline must be for a new one to join its story (an index's default)."""
COMMIT_EVERY = 1000

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_HINT = "write it like 90m, 72h, 3d or 1w; a bare number is hours"


def parse_duration(text: str) -> timedelta:
    """'90m', '72h', '3d', '1w' (a bare number is hours) as a timedelta."""
    match = _DURATION.fullmatch(text.lower())
    if not match or float(match[1]) <= 0:
        raise InputError(f"cannot read the duration {text!r}", hint=_DURATION_HINT)
    try:
        return timedelta(seconds=float(match[1]) * _UNITS[match[2] or "h"])
    except OverflowError:  # past timedelta's ~2.7 million years: a typo, not a window
        raise InputError(f"the duration {text!r} is too long", hint=_DURATION_HINT) from None


@dataclass
class AddResult:
    added: int = 0
    present: int = 0  # ids already in the index
    # Rows repeating an earlier row of this batch (same id and text; without an id or URL, the same text):
    # stored once, and said so, since on a new index "already present" would not explain them.
    repeated: int = 0
    updated: int = 0
    embedded: int = 0  # distinct texts sent to the embedding model
    reused: int = 0  # new headlines whose normalized text already had a vector
    new_stories: int = 0
    joined: int = 0  # new headlines that joined an existing story
    new_events: int = 0
    elapsed: float = 0.0
    headlines: int = 0  # in the index afterwards
    stories: int = 0  # active stories afterwards

    @property
    def processed(self) -> int:
        return self.added + self.present + self.updated + self.repeated

    @property
    def rate(self) -> float:
        return self.processed / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True)
class Headline:
    row: int
    id: str
    text: str
    published_at: str | None
    source: str | None
    url: str | None
    story_id: str
    added_at: str
    t: float
    event_id: str = ""  # the event, nested in story_id (every headline of an event has its story id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "published_at": self.published_at,
            "source": self.source,
            "url": self.url,
            "story_id": self.story_id,
            "added_at": self.added_at,
            "event_id": self.event_id,
        }


@dataclass(frozen=True)
class QueryHit:
    headline: Headline
    score: float
    story_size: int | None = None
    story_similarity: float | None = None  # mean similarity of the query to the story's members
    threshold: float | None = None

    @property
    def would_join(self) -> bool | None:
        if self.story_similarity is None or self.threshold is None:
            return None
        return self.story_similarity >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        item = {"score": round(self.score, 4), **self.headline.to_dict()}
        if self.story_similarity is not None:
            item["story_size"] = self.story_size
            item["story_similarity"] = round(self.story_similarity, 4)
            item["would_join"] = self.would_join
        return item


@dataclass(frozen=True)
class StoryMember:
    headline: Headline
    score: float  # similarity to the representative


@dataclass(frozen=True)
class StoryInfo:
    id: str
    representative: Headline
    members: list[StoryMember]  # in time order
    first_seen: str
    last_seen: str

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def events(self) -> dict[str, list[StoryMember]]:
        """The story's events (each a list of members in time order), in order of their first headline."""
        found: dict[str, list[StoryMember]] = {}
        for member in self.members:
            found.setdefault(member.headline.event_id, []).append(member)
        return found

    def to_dict(self) -> dict[str, Any]:
        rep = self.representative
        return {
            "id": self.id,
            "representative": {"id": rep.id, "text": rep.text},
            "size": self.size,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "members": [
                {
                    "id": m.headline.id,
                    "text": m.headline.text,
                    "published_at": m.headline.published_at,
                    "source": m.headline.source,
                    "score": round(m.score, 4),
                    "event_id": m.headline.event_id,
                }
                for m in self.members
            ],
            "events": [
                {"id": event, "size": len(members), "members": [m.headline.id for m in members]}
                for event, members in self.events.items()
            ],
        }


@dataclass
class RemoveResult:
    removed: list[str]
    missing: list[str]


@dataclass
class WindowHeadlines:
    """The stored headlines of a time window, in row order, as nightly regroups them."""

    rows: list[int]
    story_ids: list[str]
    event_ids: list[str]
    normalized: list[str]
    vectors: np.ndarray
    times: list[float | None]  # publication time in Unix seconds, None where the input had none
    ids: list[str] = field(default_factory=list)  # the headlines' own ids and text: what reports show
    texts: list[str] = field(default_factory=list)


@dataclass
class Run:
    """A nightly run's record. ``resumed``: an unfinished run of the same window taken up again;
    ``summary``: what its committed step recorded, so a resumed run reports the same figures;
    ``previous``: (id, summary) of the last finished run of the same window, whose recorded changes a
    run that changes nothing reports again."""

    id: int
    resumed: bool
    state: str
    summary: dict[str, Any] = field(default_factory=dict)
    previous: tuple[int, dict[str, Any]] | None = None
