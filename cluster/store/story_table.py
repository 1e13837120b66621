"""The stories table: members as stored, story records recomputed from them, and reading stories back.

A story's representative is its most central member and each member's score is its similarity to the
representative, both under the index's judgement (as ``collapse`` computes them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..group import pick_representative
from ..judge import Judgement
from ..pipeline import score
from .ids import story_order
from .schema import HEADLINE_COLUMNS, Database, as_vectors, chunks, iso, marks, utc_now
from .types import Headline, StoryInfo, StoryMember


@dataclass
class Members:
    """The stored members of one story, in row order."""

    headlines: list[Headline]
    normalized: list[str]
    vectors: np.ndarray

    @property
    def whens(self) -> np.ndarray:
        """Publication times in Unix seconds, NaN where the input had none (what scores use)."""
        return np.array([h.t if h.published_at is not None else np.nan for h in self.headlines], dtype=np.float64)

    def similarity(self, judgement: Judgement):  # -> PairwiseSimilarity
        return score(self.normalized, self.vectors, judgement, self.whens)


def load_members(db: Database, story_ids: Iterable[str], dimension: int, *, events: bool = False) -> dict[str, Members]:
    """Members of each story in ``story_ids`` (stories without members are left out); with ``events``,
    the ids are event ids and the members those of each event."""
    column = "event_id" if events else "story_id"
    wanted = sorted(set(story_ids), key=story_order)
    found: dict[str, tuple[list[Headline], list[str], list[bytes]]] = {}
    for chunk in chunks(wanted):
        for *columns, normalized, blob in db.execute(
            f"SELECT {HEADLINE_COLUMNS}, h.normalized, e.vector FROM headlines h JOIN embeddings e "
            f"ON e.text_key = h.text_key WHERE h.{column} IN ({marks(len(chunk))}) ORDER BY h.row",
            chunk,
        ):
            headline = Headline(*columns)
            key = headline.event_id if events else headline.story_id
            headlines, texts, blobs = found.setdefault(key, ([], [], []))
            headlines.append(headline)
            texts.append(normalized)
            blobs.append(blob)
    return {
        story: Members(headlines, texts, as_vectors(blobs, dimension))
        for story, (headlines, texts, blobs) in found.items()
    }


def refresh_stories(
    db: Database, judgement: Judgement, dimension: int, story_ids: Iterable[str], created_at: str | None = None
) -> None:
    """Recompute size, span and (most central) representative of stories from their members.

    Call inside a transaction. Stories left without members retire; ids not yet in the stories table
    are created.
    """
    wanted = sorted(set(story_ids), key=story_order)
    members = load_members(db, wanted, dimension)
    created_at = created_at or utc_now()
    for story_id in wanted:
        db.execute(
            "INSERT OR IGNORE INTO stories (id, created_at, size, active) VALUES (?, ?, 0, 0)", (story_id, created_at)
        )
        group = members.get(story_id)
        if group is None:
            db.execute(
                "UPDATE stories SET size = 0, active = 0, representative = NULL, vector_sum = NULL WHERE id = ?",
                (story_id,),
            )
            continue
        positions = np.arange(len(group.headlines))
        scores = group.similarity(judgement).block(positions, positions)
        rep = pick_representative(positions, scores, "central", None)
        times = [h.t for h in group.headlines]
        db.execute(
            "UPDATE stories SET representative = ?, first_seen = ?, last_seen = ?, size = ?, vector_sum = NULL, "
            "active = 1 WHERE id = ?",
            (group.headlines[rep].row, min(times), max(times), len(group.headlines), story_id),
        )


def story_infos(db: Database, judgement: Judgement, dimension: int, story_ids: Sequence[str]) -> list[StoryInfo]:
    """Each story with its members in time order (stories without members are left out)."""
    members = load_members(db, story_ids, dimension)
    representatives: dict[str, int] = {}
    for chunk in chunks(list(story_ids)):
        representatives.update(
            db.execute(f"SELECT id, representative FROM stories WHERE id IN ({marks(len(chunk))})", chunk).fetchall()
        )
    infos = []
    for story_id in story_ids:
        group = members.get(story_id)
        if group is None:
            continue
        rep_row = representatives.get(story_id)
        rep = next((i for i, h in enumerate(group.headlines) if h.row == rep_row), 0)
        scores = group.similarity(judgement).block(np.array([rep]), np.arange(len(group.headlines)))[0]
        order = sorted(range(len(group.headlines)), key=lambda i: (group.headlines[i].t, group.headlines[i].row))
        infos.append(
            StoryInfo(
                story_id,
                group.headlines[rep],
                [StoryMember(group.headlines[i], float(scores[i])) for i in order],
                iso(group.headlines[order[0]].t),
                iso(group.headlines[order[-1]].t),
            )
        )
    return infos


def current_story_id(db: Database, story_id: str) -> str:
    """``story_id``, or the story it was last merged into (following a chain of merges)."""
    seen = set()
    while story_id not in seen:
        seen.add(story_id)
        live = db.execute("SELECT 1 FROM headlines WHERE story_id = ? LIMIT 1", (story_id,)).fetchone()
        if live is not None:
            return story_id
        merged = db.execute(
            "SELECT new_id FROM story_history WHERE old_id = ? AND kind = 'merge' ORDER BY seq DESC LIMIT 1",
            (story_id,),
        ).fetchone()
        if merged is None:
            return story_id
        story_id = merged[0]
    return story_id


def history(db: Database) -> list[dict[str, Any]]:
    """The story-history table: merges and splits recorded by nightly runs, oldest first."""
    return [
        {"old_id": o, "new_id": n, "at": at, "kind": kind, "reason": reason, "run": run}
        for o, n, at, kind, reason, run in db.execute(
            "SELECT old_id, new_id, at, kind, reason, run FROM story_history ORDER BY seq"
        )
    ]
