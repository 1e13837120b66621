"""Online story assignment: each new headline joins the story it matches best, or starts one.

A story's score for a headline is the mean of the judgement's pairwise score between the headline and
every member of the story: exactly the average-linkage value that the batch grouping
(:func:`cluster.group.group`) uses, under the same judgement and threshold as ``collapse`` and
``nightly``. Only a story with a member at or above the threshold can reach the threshold on average,
so the candidates are the stories of stored headlines within the window of the new headline's time
whose pair score reaches the threshold; they are found by cosine from the judgement's cosine floor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..judge import Judgement
from ..pipeline import score
from .ids import mint_event_id, mint_story_id, story_order
from .kept_apart import KeptApart
from .schema import Database, as_vectors, chunks, marks, utc_now
from .story_table import load_members
from .types import AddResult, Headline

_BLOCK = 256  # new headlines whose candidate cosines are computed in one matrix product


def scores_to(
    judgement: Judgement,
    vector: np.ndarray,
    text: str,
    when: float,
    vectors: np.ndarray,
    texts: Sequence[str],
    whens: np.ndarray,
) -> np.ndarray:
    """The judgement's pair score between one headline and each of the given ones.

    ``when``/``whens``: publication times in Unix seconds, NaN where unknown.
    """
    if not len(texts):
        return np.zeros(0, dtype=np.float32)
    collection = np.vstack([vector[None, :], vectors])
    times = np.concatenate([[when], whens]).astype(np.float64)
    similarity = score([text, *texts], collection, judgement, times)
    return np.asarray(similarity.block(np.array([0]), np.arange(1, len(collection)))[0], dtype=np.float32)


@dataclass
class _Story:
    id: str
    members: list[int]  # memory positions of its headlines
    representative: int  # headline row
    created_at: str


class Assigner:
    """Online story assignment for one ``add`` call.

    Keeps in memory the headlines whose time lies near the batch (loaded as the batch's time range needs
    them), every member of the stories those belong to, and the headlines this call adds. The same
    class assigns events (``column="event_id"``, no table of records) and stories (:class:`NestedAssigner`).
    """

    def __init__(
        self,
        db: Database,
        judgement: Judgement,
        window_s: float,
        next_story: int,
        dimension: int,
        *,
        column: str = "story_id",
        mint: Callable[[int], str] = mint_story_id,
        table: bool = True,
    ):
        self.db = db
        self.column = column  # the headlines column holding the group id (a name from this module only)
        self.mint = mint
        self.table = table  # whether the groups have records in the stories table
        self.judgement = judgement
        self.threshold = judgement.threshold
        self.window = window_s
        self.next_story = next_story
        self.dimension = dimension
        self.stories: dict[str, _Story] = {}
        self.dirty: set[str] = set()
        self.n = 0
        self.rows = np.zeros(0, dtype=np.int64)
        self.times = np.zeros(0, dtype=np.float64)  # t: what windows use
        self.whens = np.zeros(0, dtype=np.float64)  # publication time, NaN where unknown: what scores use
        self.alive = np.zeros(0, dtype=bool)
        self.vectors = np.zeros((0, dimension), dtype=np.float32)
        self.texts: list[str] = []
        self.story_of: list[str] = []
        self.position: dict[int, int] = {}
        self.covered: tuple[float, float] | None = None

    # -- memory --------------------------------------------------------------------------------------

    def _append(self, row: int, t: float, when: float, vector: np.ndarray, text: str, story: str) -> int:
        if self.n == len(self.rows):  # grow by doubling: appending batch after batch stays linear
            capacity = max(2 * len(self.rows), 1024)
            self.rows = np.resize(self.rows, capacity)
            self.times = np.resize(self.times, capacity)
            self.whens = np.resize(self.whens, capacity)
            self.alive = np.resize(self.alive, capacity)
            grown = np.zeros((capacity, self.dimension), dtype=np.float32)
            grown[: self.n] = self.vectors[: self.n]
            self.vectors = grown
        position = self.n
        self.rows[position], self.times[position], self.whens[position] = row, t, when
        self.alive[position] = True
        self.vectors[position] = vector
        self.texts.append(text)
        self.story_of.append(story)
        self.position[row] = position
        self.n += 1
        return position

    def _load_rows(self, where: str, parameters: Sequence) -> list[tuple[int, str]]:
        """Load the stored headlines that match ``where`` and are not in memory; (position, story) of all."""
        found = []
        for row, t, published, text, story, blob in self.db.execute(
            f"SELECT h.row, h.t, h.published_at IS NOT NULL, h.normalized, h.{self.column}, e.vector FROM headlines h "
            f"JOIN embeddings e ON e.text_key = h.text_key WHERE {where} ORDER BY h.row",
            parameters,
        ):
            position = self.position.get(row)
            if position is None:
                vector = as_vectors([blob], self.dimension)[0]
                position = self._append(row, t, t if published else np.nan, vector, text, story)
            found.append((position, story))
        return found

    def _cover(self, low: float, high: float) -> None:
        """Load the stored headlines with time in [low, high] that are not in memory yet."""
        if self.covered is not None:
            low_done, high_done = self.covered
            if low >= low_done and high <= high_done:
                return
            parts = [(low, low_done), (high_done, high)]
            self.covered = (min(low, low_done), max(high, high_done))
        else:
            parts = [(low, high)]
            self.covered = (low, high)
        for lo, hi in parts:
            if hi >= lo:
                self._load_rows("h.t >= ? AND h.t <= ?", (lo, hi))

    def _load_stories(self, ids: Iterable[str]) -> None:
        """Load the records of stories ``ids`` and every one of their members."""
        missing = sorted({s for s in ids if s not in self.stories}, key=story_order)
        for chunk in chunks(missing):
            records = (
                {
                    story_id: (rep, created)
                    for story_id, rep, created in self.db.execute(
                        f"SELECT id, representative, created_at FROM stories WHERE id IN ({marks(len(chunk))})", chunk
                    )
                }
                if self.table
                else {}
            )
            members: dict[str, list[int]] = {s: [] for s in chunk}
            for position, story in self._load_rows(f"h.{self.column} IN ({marks(len(chunk))})", chunk):
                members[story].append(position)
            for story_id in chunk:
                positions = members[story_id]
                rep, created = records.get(story_id, (None, None))
                if rep is None and positions:
                    rep = int(self.rows[positions[0]])
                self.stories[story_id] = _Story(story_id, positions, rep or 0, created or utc_now())

    # -- assignment ----------------------------------------------------------------------------------

    def retire(self, old: Headline) -> None:
        """``old`` is being replaced by an update with other text: it leaves its story."""
        group_id = getattr(old, self.column)
        self._load_stories([group_id])
        story = self.stories[group_id]
        position = self.position[old.row]
        story.members.remove(position)
        self.alive[position] = False
        if story.representative == old.row and story.members:
            story.representative = int(self.rows[story.members].min())
        self.dirty.add(story.id)

    def assign(
        self,
        rows: np.ndarray,
        times: np.ndarray,
        whens: np.ndarray,
        vectors: np.ndarray,
        texts: Sequence[str],
        result: AddResult,
        *,
        forced: Callable[[int], str | None] | None = None,
        decided: Callable[[int, str], None] | None = None,
        barred: Callable[[int, list[str]], Callable[[str], bool]] | None = None,
    ) -> list[str]:
        """Story ids for a batch of new headlines, in order; each one sees those before it.

        ``forced(i)``, when it gives an id, is the group headline i must join (the story of the event it
        joined: events nest in stories); ``decided(i, id)`` is told each headline's group as it is decided;
        ``barred(i, ids so far)`` says which groups headline i may not join (keep-apart corrections).
        """
        floor = self.judgement.cosine_floor() - 1e-6
        self._cover(float(times.min()) - self.window, float(times.max()) + self.window)
        assigned: list[str] = []
        for start in range(0, len(rows), _BLOCK):
            stop = min(start + _BLOCK, len(rows))
            block = vectors[start:stop]
            low, high = times[start:stop].min() - self.window, times[start:stop].max() + self.window
            known = self.n
            near = np.flatnonzero(self.alive[:known] & (self.times[:known] >= low) & (self.times[:known] <= high))
            # Threshold whole blocks at once; only the few pairs above the floor are scored exactly.
            near_hits = np.nonzero(block @ self.vectors[near].T >= floor)
            own_hits = np.nonzero(block @ block.T >= floor)
            self._load_stories({self.story_of[p] for p in near[near_hits[1]]})
            near_bounds = np.searchsorted(near_hits[0], np.arange(len(block) + 1))
            own_bounds = np.searchsorted(own_hits[0], np.arange(len(block) + 1))
            placed: list[int] = []  # memory position of each headline of this block
            for offset in range(len(block)):
                i = start + offset
                hits = near[near_hits[1][near_bounds[offset] : near_bounds[offset + 1]]]
                own = own_hits[1][own_bounds[offset] : own_bounds[offset + 1]]
                earlier = np.array([placed[j] for j in own if j < offset], dtype=np.int64)
                candidates = np.concatenate([hits, earlier])
                candidates = candidates[np.abs(self.times[candidates] - times[i]) <= self.window]
                story_id = forced(i) if forced is not None else None
                if story_id is None:
                    bar = barred(i, assigned) if barred is not None else None
                    story_id = self._place(
                        candidates, vectors[i], texts[i], float(whens[i]), float(times[i]), result, bar
                    )
                else:
                    self._load_stories([story_id])
                    result.joined += 1
                    self.dirty.add(story_id)
                if decided is not None:
                    decided(i, story_id)
                position = self._append(int(rows[i]), float(times[i]), float(whens[i]), vectors[i], texts[i], story_id)
                self.stories[story_id].members.append(position)
                placed.append(position)
                assigned.append(story_id)
        return assigned

    def _place(
        self,
        hits: np.ndarray,
        vector: np.ndarray,
        text: str,
        when: float,
        t: float,
        result: AddResult,
        bar: Callable[[str], bool] | None = None,
    ) -> str:
        """The story the headline joins (an existing one, or a new one that it starts), never one that
        ``bar`` names.

        A story is judged by its members within the window of the headline's time, as ``nightly`` judges
        a window's headlines: members days older than the window do not hold a continuing story back.
        """
        best: str | None = None
        if bar is not None:
            hits = np.array([p for p in hits.tolist() if not bar(self.story_of[p])], dtype=np.int64)
        if len(hits):
            stories = sorted({self.story_of[p] for p in hits}, key=story_order)
            near = {s: [p for p in self.stories[s].members if abs(self.times[p] - t) <= self.window] for s in stories}
            members = np.array([p for s in stories for p in near[s]], dtype=np.int64)
            scores = scores_to(
                self.judgement,
                vector,
                text,
                when,
                self.vectors[members],
                [self.texts[p] for p in members],
                self.whens[members],
            )
            by_position = dict(zip(members.tolist(), scores.tolist(), strict=True))
            # A story is a candidate when one of its headlines within the window reaches the threshold.
            reached = {self.story_of[p] for p in hits.tolist() if by_position.get(p, -np.inf) >= self.threshold}
            best_score = self.threshold
            # Oldest first with a strict '>' below: on a tie the older story wins, so the choice is repeatable.
            for story_id in (s for s in stories if s in reached):
                mean = float(np.mean([by_position[p] for p in near[story_id]]))
                if mean > best_score or (best is None and mean >= best_score):
                    best, best_score = story_id, mean
        if best is not None:
            result.joined += 1
            self.dirty.add(best)
            return best
        story_id = self.mint(self.next_story)
        self.next_story += 1
        self.stories[story_id] = _Story(story_id, [], -1, utc_now())
        result.new_stories += 1
        self.dirty.add(story_id)
        return story_id

    def write_stories(self) -> None:
        """Write the stories this call changed (inside the caller's transaction)."""
        if not self.table:
            self.dirty.clear()
            return
        records = []
        for story in (self.stories[i] for i in sorted(self.dirty, key=story_order)):
            members = story.members
            if story.representative < 0 and members:  # a new story: its first headline represents it
                story.representative = int(self.rows[members[0]])
            spans = self.times[members] if members else np.zeros(0)
            records.append(
                (
                    story.id,
                    story.created_at,
                    story.representative if members else None,
                    float(spans.min()) if members else None,
                    float(spans.max()) if members else None,
                    len(members),
                    int(bool(members)),
                )
            )
        self.db.executemany(
            "INSERT OR REPLACE INTO stories (id, created_at, representative, first_seen, last_seen, size, "
            "vector_sum, active) VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
            records,
        )
        self.dirty.clear()


class NestedAssigner:
    """Online assignment at both levels, events nested in stories.

    The event comes first (the index's own judgement, :class:`Assigner` over ``event_id``). A headline
    that joins an event joins that event's story, whatever the story judgement would say of it alone:
    a story is a union of whole events by construction. A headline that starts an event is placed at
    the story level as an event of one: the story whose members it matches best on average under the
    story judgement, at its threshold, else a new story.
    """

    def __init__(
        self,
        db: Database,
        event_judgement: Judgement,
        story_judgement: Judgement,
        window_s: float,
        next_event: int,
        next_story: int,
        dimension: int,
    ):
        self.db = db
        self.events = Assigner(
            db, event_judgement, window_s, next_event, dimension, column="event_id", mint=mint_event_id, table=False
        )
        self.stories = Assigner(db, story_judgement, window_s, next_story, dimension)
        self.story_of_event: dict[str, str] = {}

    @property
    def next_event(self) -> int:
        return self.events.next_story

    @property
    def next_story(self) -> int:
        return self.stories.next_story

    def retire(self, old: Headline) -> None:
        self.events.retire(old)
        self.stories.retire(old)

    def _stored_story(self, event_id: str) -> str | None:
        found = self.db.execute("SELECT story_id FROM headlines WHERE event_id = ? LIMIT 1", (event_id,)).fetchone()
        return None if found is None else str(found[0])

    def assign(
        self,
        rows: np.ndarray,
        times: np.ndarray,
        whens: np.ndarray,
        vectors: np.ndarray,
        texts: Sequence[str],
        result: AddResult,
        apart: KeptApart | None = None,
    ) -> tuple[list[str], list[str]]:
        """(event ids, story ids) of a batch of new headlines, in order; ``apart``: the keep-apart
        corrections naming them (a headline never joins a group holding one it is kept apart from)."""
        counts = AddResult()
        event_bar = story_bar = None
        if apart is not None:
            event_bar = apart.event_bar(self._stored_story)
        events = self.events.assign(rows, times, whens, vectors, texts, counts, barred=event_bar)
        result.new_events += counts.new_stories
        if apart is not None:
            story_bar = apart.story_bar()

        def forced(i: int) -> str | None:
            event = events[i]
            if event not in self.story_of_event:
                stored = self._stored_story(event)  # None for an event this headline starts
                if stored is not None:
                    self.story_of_event[event] = stored
            return self.story_of_event.get(event)

        def decided(i: int, story: str) -> None:
            self.story_of_event.setdefault(events[i], story)

        stories = self.stories.assign(
            rows, times, whens, vectors, texts, result, forced=forced, decided=decided, barred=story_bar
        )
        return events, stories

    def write_stories(self) -> None:
        self.stories.write_stories()


def story_means(
    db: Database,
    judgement: Judgement,
    vector: np.ndarray,
    text: str,
    when: float,
    story_ids: Iterable[str],
    dimension: int,
) -> dict[str, tuple[int, float]]:
    """(size, mean judgement score of the headline to its members) of each stored event ``story_ids``: the
    group online assignment would join (at the index's own level)."""
    means = {}
    for story, members in load_members(db, story_ids, dimension, events=True).items():
        scores = scores_to(judgement, vector, text, when, members.vectors, members.normalized, members.whens)
        means[story] = (len(members.headlines), float(scores.mean()))
    return means
