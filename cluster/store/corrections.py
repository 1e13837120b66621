"""Editorial corrections stored in the index: keep two headlines apart, or together, at a level.

A correction is a hard constraint on the groups of its level (cannot-link / must-link). Events nest in
stories, so a keep-together at the event level also holds for their story, and a keep-apart at the story
level also holds for their events; contradictions are checked with those implications, so that every
set of stored corrections can be satisfied at once.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import InputError
from .schema import Database, chunks, marks, utc_now

KINDS = ("apart", "together")
CORRECTION_LEVELS = ("event", "story")  # the levels that have ids in an index (no duplicate ids are stored)


@dataclass(frozen=True)
class Correction:
    """One stored correction; ``a`` < ``b`` whatever order they were given in."""

    id: int
    kind: str
    level: str
    a: str
    b: str
    author: str
    reason: str | None
    created_at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        verb = "keep apart" if self.kind == "apart" else "keep together"
        return f"correction #{self.id} ({verb} {self.a} and {self.b} at the {self.level} level)"


def corrections_jsonl(corrections: Iterable[Correction]) -> str:
    """One JSON object per line, as ``index export --corrections`` writes and ``correct import`` reads."""
    return "".join(json.dumps(c.as_dict(), ensure_ascii=False) + "\n" for c in corrections)


def _order(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def list_corrections(db: Database, level: str | None = None) -> list[Correction]:
    """Stored corrections, oldest first; only those of ``level`` when given."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'corrections'").fetchone() is None:
        return []  # an index of format 2 opened read-only (:func:`.settings_meta.settings_changes`)
    if level is None:
        rows = db.execute("SELECT id, kind, level, a, b, author, reason, created_at FROM corrections ORDER BY id")
    else:
        rows = db.execute(
            "SELECT id, kind, level, a, b, author, reason, created_at FROM corrections WHERE level = ? ORDER BY id",
            (level,),
        )
    return [Correction(*row) for row in rows]


def binding(corrections: Iterable[Correction], level: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (together, apart) pairs that hold at ``level``, implications between levels included: an event
    kept together is in one story; a story kept apart keeps its events apart."""
    together: list[tuple[str, str]] = []
    apart: list[tuple[str, str]] = []
    for c in corrections:
        if c.kind == "together" and (c.level == level or (c.level == "event" and level == "story")):
            together.append((c.a, c.b))
        elif c.kind == "apart" and (c.level == level or (c.level == "story" and level == "event")):
            apart.append((c.a, c.b))
    return together, apart


def _together_path(corrections: Sequence[Correction], level: str, start: str, goal: str) -> list[Correction]:
    """The together corrections binding at ``level`` that chain ``start`` to ``goal`` ([] when none do)."""
    edges: dict[str, list[tuple[str, Correction]]] = {}
    for c in corrections:
        if c.kind == "together" and (c.level == level or (c.level == "event" and level == "story")):
            edges.setdefault(c.a, []).append((c.b, c))
            edges.setdefault(c.b, []).append((c.a, c))
    came: dict[str, tuple[str, Correction] | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path: list[Correction] = []
            while came[node] is not None:
                node, step = came[node]  # type: ignore[misc]
                path.append(step)
            return path[::-1]
        for other, c in edges.get(node, []):
            if other not in came:
                came[other] = (node, c)
                queue.append(other)
    return []


def contradiction(corrections: Sequence[Correction], new: Correction) -> list[Correction] | None:
    """The stored corrections that ``new`` contradicts (None when it contradicts none): an apart pair that
    together-chains would join, at either level."""
    every = [*corrections, new]
    for level in CORRECTION_LEVELS:
        for c in every:
            if c.kind != "apart" or not (c.level == level or (c.level == "story" and level == "event")):
                continue
            chain = _together_path(every, level, c.a, c.b)
            if chain and (new in chain or new == c):
                return [x for x in [c, *chain] if x != new]
    return None


def add_correction(
    db: Database,
    kind: str,
    a: str,
    b: str,
    *,
    level: str,
    author: str,
    reason: str | None = None,
    created_at: str | None = None,
) -> Correction:
    """Store a correction (the caller holds the writer lock); the stored one when the same correction is
    already there. Refused (InputError) for an unknown kind, level or headline id, a pair of one
    headline, or a correction that contradicts stored ones (all of which the message names).
    ``created_at``: when it was made, for one imported from an export (default: now)."""
    if kind not in KINDS:
        raise InputError(f"unknown correction kind {kind!r}", hint=f"use one of {', '.join(KINDS)}")
    if level not in CORRECTION_LEVELS:
        raise InputError(f"corrections apply at the event or story level, not {level!r}")
    if not isinstance(author, str) or not author.strip():
        raise InputError("a correction needs an author", hint="say who made it (free text, e.g. a name or a desk)")
    if a == b:
        raise InputError(f"a correction needs two different headlines; both ids are {a!r}")
    a, b = _order(a, b)
    with db.transaction():
        known = {row[0] for row in db.execute(f"SELECT id FROM headlines WHERE id IN ({marks(2)})", (a, b))}
        unknown = [i for i in (a, b) if i not in known]
        if unknown:
            raise InputError(
                f"no headline with id {' or '.join(repr(i) for i in unknown)} in the index",
                hint="corrections name headlines by the ids the index holds (see: headline-cluster index export)",
            )
        stored = list_corrections(db)
        for c in stored:
            if (c.level, c.a, c.b) == (level, a, b):
                if c.kind == kind:
                    return c  # asked twice: one correction, the first one's author and time
                raise InputError(f"contradicts {c.describe()}", hint="remove that one first if it was wrong")
        new = Correction(0, kind, level, a, b, author, reason, created_at or utc_now())
        against = contradiction(stored, new)
        if against is not None:
            named = "; ".join(c.describe() for c in against)
            raise InputError(
                f"{new.describe().replace('#0 ', '')} contradicts {named}",
                hint="remove the wrong correction first (headline-cluster correct remove ID --index DIR)",
            )
        cursor = db.execute(
            "INSERT INTO corrections (kind, level, a, b, author, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (kind, level, a, b, author, reason, new.created_at),
        )
        return Correction(int(cursor.lastrowid or 0), kind, level, a, b, author, reason, new.created_at)


def remove_correction(db: Database, correction_id: int) -> bool:
    """Remove a correction by its number; whether there was one."""
    with db.transaction():
        return db.execute("DELETE FROM corrections WHERE id = ?", (correction_id,)).rowcount > 0


def headline_ids(db: Database, corrections: Iterable[Correction]) -> set[str]:
    """The ids named by ``corrections`` that the index still holds (a removed headline's corrections stay,
    and bind again if it is added back)."""
    wanted = sorted({i for c in corrections for i in (c.a, c.b)})
    found: set[str] = set()
    for chunk in chunks(wanted):
        found.update(row[0] for row in db.execute(f"SELECT id FROM headlines WHERE id IN ({marks(len(chunk))})", chunk))
    return found
