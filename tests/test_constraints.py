"""Editorial corrections as hard constraints (issue 23): the pure function over labels on small cases, and
through an index: correct, run nightly, the pair is apart / together, and stays so at the next nightly."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
from test_store import T0, FakeEmbedder, event_ids, headlines, open_index, story_ids

from cluster.constraints import Constraints, apply_constraints, window_constraints
from cluster.nightly import run_nightly
from cluster.store import HeadlineIndex
from cluster.store.corrections import Correction

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def nested(events: np.ndarray, stories: np.ndarray) -> bool:
    return all(len(set(stories[events == e])) == 1 for e in set(events.tolist()))


def correction(kind: str, level: str, a: str, b: str) -> Correction:
    return Correction(1, kind, level, a, b, "desk", None, "2026-01-01T00:00:00Z")


def test_keep_apart_moves_the_later_headline_out_with_what_is_kept_with_it() -> None:
    events = np.array([0, 0, 0, 0, 1])
    stories = np.array([0, 0, 0, 0, 0])
    held = apply_constraints(events, stories, Constraints(event_together=[(2, 3)], event_apart=[(0, 2)]))
    assert held.events.tolist() == [0, 0, 1, 1, 2]  # 2 leaves with 3 (kept together); renumbered by first member
    assert held.stories.tolist() == [0, 0, 0, 0, 0]  # an event-level correction: still one story
    assert held.acted == 1 and events.tolist() == [0, 0, 0, 0, 1]  # the input is left as it was


def test_keep_together_merges_events_and_their_stories() -> None:
    events = np.array([0, 0, 1, 2])
    stories = np.array([0, 0, 1, 2])
    held = apply_constraints(events, stories, Constraints(event_together=[(1, 3)]))
    assert held.events.tolist() == [0, 0, 1, 0]
    assert held.stories.tolist() == [0, 0, 1, 0] and nested(held.events, held.stories)
    story_level = apply_constraints(events, stories, Constraints(story_together=[(0, 2)]))
    assert story_level.events.tolist() == [0, 0, 1, 2] and story_level.stories.tolist() == [0, 0, 0, 1]


def test_story_apart_moves_whole_events_and_keeps_them_nested() -> None:
    # One story of events {0, 1} and {2, 3}, and {4} kept in one story with 3: apart(0, 3) at the story level
    # moves the whole event of 3 (so 2 too) and event {4}.
    events = np.array([0, 0, 1, 1, 2])
    stories = np.array([0, 0, 0, 0, 0])
    rules = Constraints(story_together=[(3, 4)], story_apart=[(0, 3)], event_apart=[(0, 3)])
    held = apply_constraints(events, stories, rules)
    assert held.stories.tolist() == [0, 0, 1, 1, 1] and nested(held.events, held.stories)
    assert held.events.tolist() == [0, 0, 1, 1, 2]


def test_a_merge_that_joins_a_kept_apart_pair_is_undone() -> None:
    events = np.array([0, 1, 2])
    stories = np.array([0, 1, 2])
    held = apply_constraints(events, stories, Constraints(event_together=[(0, 1)], event_apart=[(1, 2)]))
    assert held.events.tolist() == [0, 0, 1]
    # and the same pairs with 2 grouped with 1 by the similarity: 2 (the later one) leaves
    held = apply_constraints(np.array([0, 0, 0]), np.array([0, 0, 0]), Constraints(event_apart=[(1, 2)]))
    assert held.events.tolist() == [0, 0, 1] and held.stories.tolist() == [0, 0, 0]


def test_window_constraints_keep_only_pairs_inside_the_window_with_the_level_implications() -> None:
    found = window_constraints(
        ["x", "y", "z"],
        [
            correction("apart", "story", "x", "z"),
            correction("together", "event", "y", "z"),
            correction("apart", "event", "x", "gone"),  # one headline outside the window: it does not bind
        ],
    )
    assert found.event_apart == [(0, 2)] and found.story_apart == [(0, 2)]  # apart as stories: apart as events
    assert found.event_together == [(1, 2)] and found.story_together == [(1, 2)]
    assert not window_constraints(["x"], [correction("apart", "event", "x", "y")])


def test_nightly_honours_corrections_and_a_second_nightly_keeps_them(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(12, topics=3))  # topic0: h0 h3 h6 h9, topic1: h1 h4 h7 h10, topic2: ...
        run_nightly(index, T0, T0 + DAY)
        events, stories = event_ids(index), story_ids(index)
        assert events["h0"] == events["h6"] and stories["h1"] != stories["h2"]  # what the similarity says
        index.add_correction("apart", "h0", "h6", author="desk", reason="two different strikes")
        index.add_correction("together", "h1", "h2", level="story", author="desk")
        for run in range(2):
            result = run_nightly(index, T0, T0 + DAY)
            # The first run needs both to change its groups; the second starts from the stored groups
            # (settled, so the split may hold alone) and must end the same.
            assert result.corrected == 2 if run == 0 else result.corrected <= 2
            events, stories = event_ids(index), story_ids(index)
            assert events["h0"] != events["h6"] and events["h0"] == events["h3"] == events["h9"]
            assert stories["h1"] == stories["h2"] and events["h1"] != events["h2"]
            for headline, event in events.items():  # events stay nested in stories
                assert all(stories[h] == stories[headline] for h, e in events.items() if e == event)
        index.remove_correction(index.corrections()[0].id)  # removed: the next nightly may group them again
        run_nightly(index, T0, T0 + DAY)
        assert story_ids(index)["h1"] == story_ids(index)["h2"]


def test_index_build_replays_nightly_with_the_index_corrections(tmp_path: Path) -> None:
    from test_build import build, write_jsonl

    source = write_jsonl(tmp_path / "in.jsonl", count=40, topics=4, minutes=31)  # k0 k4 k8 ... one topic
    assert build(tmp_path / "plain", source).exit_code == 0
    with plain_index(tmp_path / "plain") as plain:
        assert event_ids(plain)["k0"] == event_ids(plain)["k4"] == event_ids(plain)["k8"]
        assert story_ids(plain)["k1"] != story_ids(plain)["k2"]
    # An index that holds corrections but (its headlines removed) no headlines may take a build.
    with plain_index(tmp_path / "idx") as index:
        index.add([{"id": f"k{i}", "text": f"topic{i % 4} item {i}", "published_at": T0} for i in (0, 4, 1, 2)])
        index.add_correction("apart", "k0", "k4", author="desk")
        index.add_correction("together", "k1", "k2", level="story", author="desk")
        index.remove([h.id for h in index.headlines()])
    assert build(tmp_path / "idx", source).exit_code == 0
    with plain_index(tmp_path / "idx") as index:
        events, stories = event_ids(index), story_ids(index)
        assert len(index.corrections()) == 2 and len(events) == 40
    assert events["k0"] != events["k4"] and stories["k1"] == stories["k2"]
    assert stories["k1"] != stories["k3"]  # the correction joined those two, nothing more


def plain_index(path: Path) -> HeadlineIndex:
    """An index with the settings ``index build`` gives the fake model (its default threshold)."""
    return HeadlineIndex.open(
        path, create=True, embedder_factory=lambda model, **_: FakeEmbedder(), notify=lambda _: None
    )


def test_online_assignment_never_joins_a_group_holding_a_kept_apart_headline(tmp_path: Path) -> None:
    def again(i: int) -> dict:  # headline i once more, its text reworded (an unchanged row is not re-added)
        return {"id": f"h{i}", "text": f"topic{i % 3} report number {i} updated", "published_at": T0 + i * HOUR}

    with open_index(tmp_path / "plain") as plain:  # without corrections: every update rejoins its topic
        plain.add(headlines(12, topics=3))
        plain.add([again(3), again(4)], update=True)
        assert event_ids(plain)["h3"] == event_ids(plain)["h0"] and story_ids(plain)["h4"] == story_ids(plain)["h1"]
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(12, topics=3))
        index.add_correction("apart", "h0", "h3", author="desk")
        index.add_correction("apart", "h1", "h4", level="story", author="desk")
        index.add_correction("apart", "h2", "h5", author="desk")
        index.remove(["h5"])  # its correction stays, and binds it when it comes back
        index.add([again(3), again(4)], update=True)
        index.add([again(5)])
        events, stories = event_ids(index), story_ids(index)
        assert events["h3"] != events["h0"] and stories["h3"] == stories["h0"]  # an event-level correction
        assert stories["h4"] != stories["h1"] and events["h4"] != events["h1"]
        assert events["h5"] != events["h2"]
        assert events["h6"] == events["h0"]  # the others are as they were
