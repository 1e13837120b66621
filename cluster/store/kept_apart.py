"""Keep-apart corrections during online assignment: a headline being added never joins a group that
holds a headline it is kept apart from.

A correction names stored headlines, so this matters for a headline added again (``add --update``, or
after ``remove``): its corrections stay in the index and bind it at once, not only at the next nightly.
Keep-together is left to nightly: online assignment only ever joins one group, it never merges two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .corrections import binding, list_corrections
from .schema import Database, chunks, marks

Bar = Callable[[int, list[str]], Callable[[str], bool]]


class KeptApart:
    """The keep-apart partners of each headline of one batch, and the groups they are in."""

    def __init__(self, db: Database, ids: Sequence[str], event_pairs: list, story_pairs: list):
        self.position = {headline_id: i for i, headline_id in enumerate(ids)}
        self.event_partners = _partners(ids, event_pairs)
        self.story_partners = _partners(ids, story_pairs)
        wanted = sorted({p for found in (*self.event_partners, *self.story_partners) for p in found})
        self.stored: dict[str, tuple[str, str]] = {}
        for chunk in chunks(wanted):
            for headline_id, event, story in db.execute(
                f"SELECT id, event_id, story_id FROM headlines WHERE id IN ({marks(len(chunk))})", chunk
            ):
                self.stored[headline_id] = (event, story)

    @classmethod
    def of(cls, db: Database, ids: Sequence[str]) -> KeptApart | None:
        """None when no keep-apart correction names a headline of the batch (almost always: one query)."""
        if db.execute("SELECT 1 FROM corrections WHERE kind = 'apart' LIMIT 1").fetchone() is None:
            return None
        corrections = list_corrections(db)
        event_pairs, story_pairs = binding(corrections, "event")[1], binding(corrections, "story")[1]
        batch = set(ids)
        if not any(a in batch or b in batch for a, b in event_pairs):  # story pairs imply event pairs
            return None
        return cls(db, ids, event_pairs, story_pairs)

    def _group(self, partner: str, assigned: list[str], level: int) -> str | None:
        """The group of ``partner`` at ``level`` (0 event, 1 story): as assigned earlier in this batch when
        it is in it (None until it is placed: it then checks this headline), else as stored."""
        j = self.position.get(partner)
        if j is not None:
            return assigned[j] if j < len(assigned) else None
        stored = self.stored.get(partner)
        return None if stored is None else stored[level]

    def event_bar(self, story_of_event: Callable[[str], str | None]) -> Bar:
        """For the event pass: events holding an event-level partner, and events of a stored story that
        holds a story-level partner (joining one would join that story too)."""

        def barred(i: int, assigned: list[str]) -> Callable[[str], bool]:
            events = {g for p in self.event_partners[i] if (g := self._group(p, assigned, 0)) is not None}
            stories = {self.stored[p][1] for p in self.story_partners[i] if p in self.stored}
            return lambda event: event in events or (bool(stories) and story_of_event(event) in stories)

        return barred

    def story_bar(self) -> Bar:
        def barred(i: int, assigned: list[str]) -> Callable[[str], bool]:
            stories = {g for p in self.story_partners[i] if (g := self._group(p, assigned, 1)) is not None}
            return lambda story: story in stories

        return barred


def _partners(ids: Sequence[str], pairs: list[tuple[str, str]]) -> list[set[str]]:
    index = {headline_id: i for i, headline_id in enumerate(ids)}
    found: list[set[str]] = [set() for _ in ids]
    for a, b in pairs:
        if a in index:
            found[index[a]].add(b)
        if b in index:
            found[index[b]].add(a)
    return found
