"""What the nightly job needs of an index (:mod:`cluster.nightly`), as methods of :class:`HeadlineIndex`.

Kept apart from the facade so that each stays readable; every method runs through :mod:`.maintenance`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .maintenance import apply_regrouping, judged_rows, outside_stories, run_changes, start_run, window_headlines
from .schema import Database, utc_now
from .types import Run, WindowHeadlines

if TYPE_CHECKING:
    from .headline_index import HeadlineIndex


class NightlyMixin:
    """The nightly job's public methods of :class:`~cluster.store.HeadlineIndex`."""

    db: Database

    def window_headlines(self, since: datetime, until: datetime) -> WindowHeadlines:
        """The stored headlines with time in [since, until), with what the judgement needs of them."""
        return window_headlines(self._index(), since.timestamp(), until.timestamp())

    def _index(self) -> HeadlineIndex:
        return self  # type: ignore[return-value]  # only HeadlineIndex mixes this in

    def next_story_number(self) -> int:
        return int(self.db.meta("next_story"))

    def next_event_number(self) -> int:
        return int(self.db.meta("next_event"))

    def start_run(self, since: datetime, until: datetime) -> Run:
        """The nightly run record of this window: an unfinished one is resumed, else a new one starts."""
        return start_run(self.db, since.timestamp(), until.timestamp())

    def run_changes(self, run: int) -> list[tuple[str, str, str, str]]:
        """(kind, old id, new id, reason) of every merge and split the run recorded."""
        return run_changes(self.db, run)

    def outside_stories(self, event_ids: Iterable[str], since: datetime, until: datetime) -> dict[str, set[str]]:
        """The story ids of each event's headlines outside [since, until) (events with none are left out)."""
        return outside_stories(self.db, event_ids, since.timestamp(), until.timestamp())

    def judged_rows(self, run: int, since: datetime, until: datetime) -> set[int]:
        """Rows of [since, until) that an earlier nightly run judged (the others are new since)."""
        return judged_rows(self.db, run, since.timestamp(), until.timestamp())

    def apply_regrouping(
        self,
        window: WindowHeadlines,
        events: Sequence[str],
        stories: Sequence[str],
        changes: Sequence[tuple[str, str, str, str]],
        next_numbers: tuple[int, int],
        run: int,
        summary: Mapping[str, Any],
    ) -> dict[str, int]:
        """Store a regrouping of ``window`` (event and story id of each of its headlines) and mark the run
        committed, in one transaction (:func:`cluster.store.maintenance.apply_regrouping`); how many
        headlines changed story and event id."""
        return apply_regrouping(self._index(), window, events, stories, changes, next_numbers, run, summary)

    def set_run(self, run: int, state: str, summary: Mapping[str, Any]) -> None:
        """Record a nightly run's state and summary (in the current transaction, if one is open)."""
        finished = utc_now() if state == "done" else None
        with self.db.transaction():
            self.db.execute(
                "UPDATE runs SET state = ?, summary = ?, finished_at = ? WHERE id = ?",
                (state, json.dumps(dict(summary)), finished, run),
            )
