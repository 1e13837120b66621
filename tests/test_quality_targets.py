"""The quality targets that are tests, never training data: the seed list and the README's English example,
collapsed at the event level (the level ``collapse`` defaults to) with the real default model."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cluster import collapse

REPO = Path(__file__).resolve().parents[1]


def _story_of(result) -> dict[int, int]:
    return {member.index: story.id for story in result.stories for member in story.members}


@pytest.mark.xfail(
    strict=True,
    reason="target not met: row B (same topic, different event) scores 0.94 with the A rows under the learned "
    "event judgement (docs/quality.md); strict, so the day it passes the marker must go",
)
def test_seed_list_is_four_or_five_events_with_the_a_rows_together_and_b_apart(embedder, seed_rows) -> None:
    result = collapse([r["text"] for r in seed_rows], level="event", embedder=embedder)
    story_of = _story_of(result)
    a_rows = [i for i, r in enumerate(seed_rows) if r["story"] == "A" and not r["also_ok"]]
    (b_row,) = [i for i, r in enumerate(seed_rows) if r["story"] == "B"]
    assert len(a_rows) == 6
    assert len({story_of[i] for i in a_rows}) == 1, [(i, story_of[i]) for i in range(len(seed_rows))]
    assert story_of[b_row] != story_of[a_rows[0]]
    # C and D are one story each; the ambiguous last row is with the A rows or alone (story E).
    for letter in "CD":
        (row,) = [i for i, r in enumerate(seed_rows) if r["story"] == letter]
        assert list(story_of.values()).count(story_of[row]) == 1
    for i, row in enumerate(seed_rows):
        if row["also_ok"]:
            alone = list(story_of.values()).count(story_of[i]) == 1
            assert story_of[i] == story_of[a_rows[0]] or alone
    assert len(result.stories) == (
        5
        if any(list(story_of.values()).count(story_of[i]) == 1 and r["also_ok"] for i, r in enumerate(seed_rows))
        else 4
    )


def test_related_en_example_is_three_events(embedder) -> None:
    with open(REPO / "examples" / "related_en.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    result = collapse([r["text"] for r in rows], level="event", embedder=embedder)
    assert len(result.stories) == 3
    story_of = _story_of(result)
    # Central bank (rows 0, 1), the storm (2, 3, 5), the tech firm alone (4).
    assert story_of[0] == story_of[1] != story_of[4]
    assert story_of[2] == story_of[3] == story_of[5] != story_of[4]
