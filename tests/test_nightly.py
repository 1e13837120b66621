"""The nightly job (cluster.nightly): reconciliation rules, stable ids, idempotent outputs, resuming."""

from __future__ import annotations

import csv
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from test_store import T0, FakeEmbedder, event_ids, headlines, open_index, story_ids

import cluster.nightly as nightly
from cluster.nightly import reconcile

DAY = timedelta(days=1)

# --- the reconciliation rules, on their own -----------------------------------------------------------


def test_unchanged_grouping_keeps_every_id() -> None:
    plan = reconcile(["s000001", "s000002", "s000001"], [[0, 2], [1]], next_story=3)
    assert plan.labels == ["s000001", "s000002", "s000001"]
    assert plan.changes == [] and plan.new_ids == [] and plan.next_story == 3


def test_a_merge_keeps_the_id_with_most_headlines_and_records_the_other() -> None:
    plan = reconcile(["s000005", "s000002", "s000005", "s000005"], [[0, 1, 2, 3]], next_story=9)
    assert plan.labels == ["s000005"] * 4
    assert plan.merged == {"s000002": "s000005"}
    assert [(c.old_id, c.new_id, c.kind) for c in plan.changes] == [("s000002", "s000005", "merge")]
    assert "1 of its 1 headline(s)" in plan.changes[0].reason


def test_a_merge_of_equals_keeps_the_older_id() -> None:
    plan = reconcile(["s000010", "s000003"], [[0, 1]], next_story=11)
    assert plan.labels == ["s000003", "s000003"] and plan.merged == {"s000010": "s000003"}


def test_a_split_keeps_the_id_on_the_majority_and_gives_the_rest_a_new_one() -> None:
    plan = reconcile(["s000001"] * 5, [[0, 1, 2], [3, 4]], next_story=7)
    assert plan.labels == ["s000001"] * 3 + ["s000007"] * 2
    assert plan.new_ids == ["s000007"] and plan.next_story == 8
    assert [(c.old_id, c.new_id, c.kind) for c in plan.changes] == [("s000001", "s000007", "split")]


def test_an_even_split_keeps_the_id_on_the_part_with_the_earliest_headline() -> None:
    plan = reconcile(["s000004"] * 4, [[0, 2], [1, 3]], next_story=5)
    assert plan.labels == ["s000004", "s000005", "s000004", "s000005"]


def test_a_story_scattered_without_majority_gives_up_its_id() -> None:
    plan = reconcile(["s000001", "s000001", "s000001"], [[0], [1], [2]], next_story=2)
    assert plan.labels == ["s000002", "s000003", "s000004"]
    assert [(c.new_id, c.kind) for c in plan.changes] == [(i, "split") for i in plan.labels]


def test_reconcile_is_a_function_of_its_inputs() -> None:
    rng = np.random.default_rng(3)
    old = [f"s{n:06d}" for n in rng.integers(1, 30, 200)]
    clusters_of = rng.integers(0, 40, 200)
    clusters = [list(np.flatnonzero(clusters_of == k)) for k in np.unique(clusters_of)]
    clusters.sort(key=lambda c: c[0])
    first, second = reconcile(old, clusters, 100), reconcile(old, clusters, 100)
    assert first == second
    # Each cluster has one id; ids of old stories that persisted are reused, never duplicated.
    for members in clusters:
        assert len({first.labels[p] for p in members}) == 1
    assert len({first.labels[c[0]] for c in clusters}) == len(clusters)


# --- nightly on an index ------------------------------------------------------------------------------


def read(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in nightly.OUTPUT_FILES}


def test_nightly_twice_gives_byte_identical_outputs(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(60, topics=8))
        first = nightly.run_nightly(index, T0, T0 + 3 * DAY, tmp_path / "one")
        history = index.history()
        second = nightly.run_nightly(index, T0, T0 + 3 * DAY, tmp_path / "two")
        assert second.changes == [] and second.changed == 0 and index.history() == history
        assert (first.headlines, first.stories) == (60, 8)
    one, two = read(tmp_path / "one"), read(tmp_path / "two")
    assert one["stories.jsonl"] == two["stories.jsonl"]
    assert one["headlines.csv"] == two["headlines.csv"]


def test_nightly_is_byte_identical_above_the_exact_pairs_limit(tmp_path: Path) -> None:
    # Past 20,000 headlines the batch grouping finds candidate pairs another way (cluster/group.py).
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(21_000, topics=3000, step=timedelta(seconds=10)))
        first = nightly.run_nightly(index, T0, T0 + 3 * DAY, tmp_path / "one")
        second = nightly.run_nightly(index, T0, T0 + 3 * DAY, tmp_path / "two")
    assert (first.headlines, first.stories) == (21_000, 3000) and second.changes == []
    one, two = read(tmp_path / "one"), read(tmp_path / "two")
    assert one["stories.jsonl"] == two["stories.jsonl"] and one["headlines.csv"] == two["headlines.csv"]


def test_outputs_describe_the_window(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(40, topics=5))
        result = nightly.run_nightly(index, T0, T0 + timedelta(hours=20), tmp_path / "out")
        ids = story_ids(index)
    assert result.outputs == {name: tmp_path / "out" / name for name in nightly.OUTPUT_FILES}
    rows = list(csv.DictReader((tmp_path / "out" / "headlines.csv").open(encoding="utf-8")))
    assert [r["id"] for r in rows] == [f"h{i}" for i in range(20)]  # the window only, in order added
    assert all(r["story_id"] == ids[r["id"]] for r in rows)
    stories = [json.loads(line) for line in (tmp_path / "out" / "stories.jsonl").read_text().splitlines()]
    assert [s["id"] for s in stories] == sorted({r["story_id"] for r in rows})
    first = stories[0]
    assert set(first) == {"id", "representative", "members", "first_seen", "last_seen", "size", "events"}
    # The story's events partition its members, and each member names its event.
    assert sorted(m for e in first["events"] for m in e["members"]) == sorted(m["id"] for m in first["members"])
    assert {m["id"]: m["event_id"] for m in first["members"]} == {
        m: e["id"] for e in first["events"] for m in e["members"]
    }
    assert all(r["event_id"].startswith("e") for r in rows)
    assert first["size"] == len(first["members"]) == 8  # all members, also those after the window
    assert [m["published_at"] for m in first["members"]] == sorted(m["published_at"] for m in first["members"])
    assert first["representative"]["id"] in {m["id"] for m in first["members"]}
    assert all(0.0 < m["score"] <= 1.0 for m in first["members"])
    report = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert report.count("<svg") >= 2 and "threshold 0.800" in report and first["id"] in report
    assert "http" not in report and "<script" not in report and "src=" not in report


def constructed(gram: list[list[float]]) -> dict[str, np.ndarray]:
    """Vectors named a, b, c, ... whose pairwise similarities are exactly ``gram``."""
    factor = np.linalg.cholesky(np.array(gram))
    vectors = np.zeros((len(gram), FakeEmbedder.dimension))
    vectors[:, : len(gram)] = factor
    return {chr(ord("a") + i): v for i, v in enumerate(vectors)}


def add_in_order(index, names: str) -> None:
    for i, name in enumerate(names):
        index.add([{"id": name, "text": name, "published_at": T0 + timedelta(hours=i)}])


def test_nightly_merges_what_online_assignment_split(tmp_path: Path) -> None:
    # a.b = 0.75 < 0.8: online, b starts an event of its own (in a's story: the story level of this
    # uncalibrated model is cosine 0.75); c (0.91 to a, 0.89 to b) joins a's event. Average linkage
    # merges {a, c} with b (mean 0.82), so b's event merges into a's.
    embedder = FakeEmbedder(constructed([[1, 0.75, 0.91], [0.75, 1, 0.89], [0.91, 0.89, 1]]))
    with open_index(tmp_path / "idx", embedder) as index:
        add_in_order(index, "abc")
        assert event_ids(index) == {"a": "e000001", "b": "e000002", "c": "e000001"}
        assert set(story_ids(index).values()) == {"s000001"}
        result = nightly.run_nightly(index, T0, T0 + DAY)
        assert event_ids(index) == {"a": "e000001", "b": "e000001", "c": "e000001"}
        assert set(story_ids(index).values()) == {"s000001"}
        assert (result.event_merges, result.event_splits, result.changed_events) == (1, 0, 1)
        assert (result.merges, result.splits, result.changed) == (0, 0, 0)
        [entry] = index.history()
        assert (entry["old_id"], entry["new_id"], entry["kind"]) == ("e000002", "e000001", "merge")
        assert entry["reason"].startswith("nightly 2024-05-01T00:00:00Z/2024-05-02T00:00:00Z:")
        assert index.stats()["stories"] == 1


def test_nightly_splits_what_online_assignment_chained(tmp_path: Path) -> None:
    # Online: b joins a (0.85); c joins {a, b} (mean 0.825); d, 0.95 to b, averages 0.733: a new event,
    # and a new story (0.733 < 0.75). Nightly: b's mean to the rest of its event is 0.775 < 0.8, so b
    # leaves it and joins d (0.95); {a, c} and {b, d} link at 0.70 at the story level too, so b's
    # story follows its event.
    gram = [[1, 0.85, 0.95, 0.70], [0.85, 1, 0.70, 0.95], [0.95, 0.70, 1, 0.55], [0.70, 0.95, 0.55, 1]]
    with open_index(tmp_path / "idx", FakeEmbedder(constructed(gram))) as index:
        add_in_order(index, "abcd")
        assert story_ids(index) == {"a": "s000001", "b": "s000001", "c": "s000001", "d": "s000002"}
        assert event_ids(index) == {"a": "e000001", "b": "e000001", "c": "e000001", "d": "e000002"}
        result = nightly.run_nightly(index, T0, T0 + DAY)
        assert story_ids(index) == {"a": "s000001", "b": "s000002", "c": "s000001", "d": "s000002"}
        assert event_ids(index) == {"a": "e000001", "b": "e000002", "c": "e000001", "d": "e000002"}
        assert (result.merges, result.splits, result.new_stories, result.changed) == (0, 1, 0, 1)
        assert (result.event_splits, result.changed_events) == (1, 1)
        assert [(h["old_id"], h["new_id"], h["kind"]) for h in index.history()] == [
            ("e000001", "e000002", "split"),
            ("s000001", "s000002", "split"),
        ]


def test_a_new_day_keeps_the_ids_of_unchanged_stories(tmp_path: Path) -> None:
    day1 = [
        {"id": f"d1-{i}", "text": f"topic{i % 6} day one {i}", "published_at": T0 + i * timedelta(minutes=30)}
        for i in range(36)
    ]
    day2 = [
        {"id": f"d2-{i}", "text": f"topic{3 + i % 6} day two {i}", "published_at": T0 + DAY + i * timedelta(minutes=30)}
        for i in range(36)
    ]
    with open_index(tmp_path / "idx") as index:
        index.add(day1)
        nightly.run_nightly(index, T0, T0 + DAY, tmp_path / "first")
        first = {s.id: [m.headline.id for m in s.members] for s in index.stories(T0, T0 + DAY)}
        index.add(day2)
        result = nightly.run_nightly(index, T0, T0 + 2 * DAY, tmp_path / "second")
        second = {s.id: [m.headline.id for m in s.members] for s in index.stories(T0, T0 + 2 * DAY)}
    assert result.changes == [] and result.new_stories == 0  # online already placed day two well
    topic_of = {sid: int(members[0].split("-")[1]) % 6 for sid, members in first.items()}
    for story_id, members in first.items():
        if topic_of[story_id] < 3:  # topics 0-2 got nothing new: same id, same members
            assert second[story_id] == members
        else:  # topics 3-5 continued on day two under the same id
            assert second[story_id][: len(members)] == members and len(second[story_id]) > len(members)
    assert len(second) == 9
    unchanged = [json.loads(line) for line in (tmp_path / "first" / "stories.jsonl").read_text().splitlines()]
    again = {s["id"]: s for s in map(json.loads, (tmp_path / "second" / "stories.jsonl").read_text().splitlines())}
    for story in unchanged:
        if topic_of[story["id"]] < 3:
            assert again[story["id"]] == story


def test_an_interrupted_nightly_resumes_and_finishes(tmp_path: Path, monkeypatch) -> None:
    with open_index(tmp_path / "ref") as reference:
        reference.add(headlines(30, topics=4))
        nightly.run_nightly(reference, T0, T0 + 2 * DAY, tmp_path / "expected")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with open_index(tmp_path / "idx") as index:
        index.add(headlines(30, topics=4))
        monkeypatch.setattr(nightly, "write_outputs", killed)  # dies after its database commit
        with pytest.raises(KeyboardInterrupt):
            nightly.run_nightly(index, T0, T0 + 2 * DAY, tmp_path / "out")
        monkeypatch.undo()
        result = nightly.run_nightly(index, T0, T0 + 2 * DAY, tmp_path / "out")
        assert result.resumed
        assert index.stats()["last_nightly"]["state"] == "done"
    expected, got = read(tmp_path / "expected"), read(tmp_path / "out")
    assert got["stories.jsonl"] == expected["stories.jsonl"] and got["headlines.csv"] == expected["headlines.csv"]


def test_an_empty_window_writes_empty_outputs(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(5))
        result = nightly.run_nightly(index, T0 + 30 * DAY, T0 + 31 * DAY, tmp_path / "out")
    assert (result.headlines, result.stories) == (0, 0)
    assert (tmp_path / "out" / "stories.jsonl").read_text() == ""
    assert (tmp_path / "out" / "headlines.csv").read_text() == "id,story_id,event_id,published_at\n"


def test_nightly_switches_a_large_index_to_an_approximate_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("cluster.store.ann.ANN_MIN_SIZE", 30)
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(40))
        nightly.run_nightly(index, T0, T0 + 2 * DAY)
        info = index.stats()["faiss"]
        assert info["kind"] == "ivf" and info["in_step"]


def test_the_same_window_again_reports_the_changes_recorded_for_it(tmp_path: Path) -> None:
    # The merge of test_nightly_merges_what_online_assignment_split, then the same window twice more.
    embedder = FakeEmbedder(constructed([[1, 0.75, 0.91], [0.75, 1, 0.89], [0.91, 0.89, 1]]))
    with open_index(tmp_path / "idx", embedder) as index:
        add_in_order(index, "abc")
        first = nightly.run_nightly(index, T0, T0 + DAY, tmp_path / "one")
        second = nightly.run_nightly(index, T0, T0 + DAY, tmp_path / "two")
        third = nightly.run_nightly(index, T0, T0 + DAY, tmp_path / "three")
    # With two ids the merge is of b's event into a's (the story stays one).
    assert (first.event_merges, first.changed_events) == (1, 1) and first.reported_run is None
    assert second.changes == [] and second.changed_events == 0  # this run changed nothing ...
    assert second.reported_run == first.run and third.reported_run == first.run  # ... and says whose it shows
    one, two, three = read(tmp_path / "one"), read(tmp_path / "two"), read(tmp_path / "three")
    assert one == two == three  # report.html too: it still shows the window's merge, with its headlines
    html = two["report.html"].decode("utf-8")
    assert "e000002" in html and "recorded for this window" in html
