"""HeadlineIndex (cluster.store): adding, online story assignment, queries, updates, removal, crash safety.

Most tests run on FakeEmbedder, a deterministic stand-in with the Embedder interface, so they take
milliseconds; test_cli_index.py has the end-to-end test with the real model.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import zlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

import cluster.store as store
from cluster.errors import InputError
from cluster.records import Record, content_id
from cluster.settings import judgement_for
from cluster.store import HeadlineIndex, parse_duration, read_input

UTC = timezone.utc
T0 = datetime(2024, 5, 1, tzinfo=UTC)
THRESHOLD = 0.8


class FakeEmbedder:
    """Deterministic vectors: texts starting 'topicN' lie close to topic N's direction (similarity about
    0.9 to each other), every other text gets a direction of its own. ``vectors`` pins the vector of
    given normalized texts, to build exact similarity cases. ``encoded`` records every text embedded."""

    name = "fake-64"
    model_id = "fake-64/1"
    dimension = 64

    def __init__(self, vectors: Mapping[str, np.ndarray] | None = None, noise: float = 0.3):
        self.vectors = dict(vectors or {})
        self.noise = noise
        self.encoded: list[str] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.encoded.extend(texts)
        return np.array([self._vector(t) for t in texts], dtype=np.float32).reshape(len(texts), self.dimension)

    def _vector(self, text: str) -> np.ndarray:
        if text in self.vectors:
            vector = np.asarray(self.vectors[text], dtype=np.float64)
            return vector / np.linalg.norm(vector)
        topic = re.match(r"topic(\d+)\b", text)
        seed = int(topic[1]) if topic else 10**6 + zlib.crc32(text.encode("utf-8"))
        base = np.random.default_rng(seed).standard_normal(self.dimension)
        noise = np.random.default_rng(zlib.crc32(text.encode("utf-8"))).standard_normal(self.dimension)
        vector = base / np.linalg.norm(base) + self.noise * noise / np.linalg.norm(noise)
        return vector / np.linalg.norm(vector)


def unit(*coordinates: float) -> np.ndarray:
    vector = np.zeros(FakeEmbedder.dimension)
    vector[: len(coordinates)] = coordinates
    return vector / np.linalg.norm(vector)


def headlines(n: int, topics: int = 5, start: datetime = T0, step: timedelta = timedelta(hours=1)) -> list[dict]:
    return [
        {"id": f"h{i}", "text": f"topic{i % topics} report number {i}", "published_at": start + i * step}
        for i in range(n)
    ]


def open_index(path: Path, embedder: FakeEmbedder | None = None, **kwargs) -> HeadlineIndex:
    messages: list[str] = kwargs.pop("messages", [])
    return HeadlineIndex.open(
        path,
        create=True,
        embedder=embedder or FakeEmbedder(),
        threshold=THRESHOLD,
        notify=messages.append,
        **kwargs,
    )


def story_ids(index: HeadlineIndex) -> dict[str, str]:
    return {h.id: h.story_id for h in index.headlines()}


def event_ids(index: HeadlineIndex) -> dict[str, str]:
    return {h.id: h.event_id for h in index.headlines()}


# --- adding and online assignment ---------------------------------------------------------------------


def test_add_gives_each_topic_one_story(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        result = index.add(headlines(30, topics=5), commit_every=7)
        ids = story_ids(index)
        assert (result.added, result.present, result.new_stories, result.joined) == (30, 0, 5, 25)
        assert result.headlines == 30 and result.stories == 5
        for topic in range(5):
            assert len({ids[f"h{i}"] for i in range(topic, 30, 5)}) == 1
        assert len(set(ids.values())) == 5
        assert sorted(set(ids.values())) == ["s000001", "s000002", "s000003", "s000004", "s000005"]


def test_adding_again_is_a_no_op(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(20))
        before = story_ids(index)
        again = index.add(headlines(20))
        assert (again.added, again.present, again.headlines) == (0, 20, 20)
        assert story_ids(index) == before


def test_ids_are_derived_from_text_when_absent(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        first = index.add(["topic1 one headline", "topic1 one headline", "topic2 another"])
        assert (first.added, first.present, first.repeated) == (2, 0, 1)
        assert index.add(["topic1 one headline"]).present == 1
        assert index.get(content_id("topic1 one headline")) is not None


def test_duplicate_normalized_text_reuses_the_stored_vector(tmp_path: Path) -> None:
    embedder = FakeEmbedder()
    with open_index(tmp_path / "idx", embedder) as index:
        index.add([{"id": "a", "text": "topic3 Markets fall sharply"}])
        result = index.add([{"id": "b", "text": "TOPIC3   markets FALL sharply"}])
        assert (result.added, result.reused, result.embedded) == (1, 1, 0)
        assert embedder.encoded == ["topic3 markets fall sharply"]
        assert index.get("a").story_id == index.get("b").story_id


def test_window_limits_which_stories_a_headline_may_join(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add([{"id": "a", "text": "topic7 first", "published_at": T0}])
        index.add([{"id": "b", "text": "topic7 two days later", "published_at": T0 + timedelta(hours=48)}])
        index.add([{"id": "c", "text": "topic7 ten days later", "published_at": T0 + timedelta(days=10)}])
        index.add(
            [{"id": "d", "text": "topic7 narrow window", "published_at": T0 + timedelta(hours=60)}],
            window=timedelta(hours=6),
        )
        assert index.get("a").story_id == index.get("b").story_id
        assert index.get("c").story_id != index.get("a").story_id
        # Within 6 hours of d there is nothing of its topic, even though a and b are within 72 hours.
        assert index.get("d").story_id not in {index.get("a").story_id, index.get("c").story_id}


def test_online_assignment_uses_the_average_not_the_best_member(tmp_path: Path) -> None:
    # Story {a, b} with a.b = 0.82. x is 0.93 to a but 0.60 to b: mean 0.765 < 0.8, so x must not join,
    # although its best single match passes. y is 0.93 to a and 0.75 to b: mean 0.84, so y joins.
    a = unit(1.0)
    b = unit(0.82, np.sqrt(1 - 0.82**2))
    y2 = (0.60 - 0.82 * 0.93) / np.sqrt(1 - 0.82**2)
    x = unit(0.93, y2, np.sqrt(1 - 0.93**2 - y2**2))
    z2 = (0.75 - 0.82 * 0.93) / np.sqrt(1 - 0.82**2)
    y = unit(0.93, z2, np.sqrt(1 - 0.93**2 - z2**2))
    assert abs(float(x @ a) - 0.93) < 1e-9 and abs(float(x @ b) - 0.60) < 1e-9
    embedder = FakeEmbedder({"a": a, "b": b, "x": x, "y": y})
    # Events: the index's own level (the story level of this uncalibrated model is cosine 0.75).
    for newcomer, joins in (("x", False), ("y", True)):  # apart: x and y are close to each other
        with open_index(tmp_path / newcomer, embedder) as index:
            index.add([{"id": t, "text": t, "published_at": T0} for t in ("a", "b")])
            assert index.get("a").event_id == index.get("b").event_id
            index.add([{"id": newcomer, "text": newcomer, "published_at": T0}])
            assert (index.get(newcomer).event_id == index.get("a").event_id) is joins


def test_story_ids_do_not_depend_on_commit_size(tmp_path: Path) -> None:
    batch = headlines(60, topics=7)
    with open_index(tmp_path / "one") as whole, open_index(tmp_path / "many") as pieces:
        whole.add(batch, commit_every=1000)
        pieces.add(batch, commit_every=4)
        assert story_ids(whole) == story_ids(pieces)


def test_interrupted_add_resumes_to_the_same_state(tmp_path: Path, monkeypatch) -> None:
    batch = headlines(50, topics=6)
    with open_index(tmp_path / "ref") as reference:
        reference.add(batch, commit_every=10)
        expected = story_ids(reference)
    original = HeadlineIndex._commit_chunk
    calls = {"n": 0}

    def dies_on_the_third_commit(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(HeadlineIndex, "_commit_chunk", dies_on_the_third_commit)
    with open_index(tmp_path / "idx") as index, pytest.raises(KeyboardInterrupt):
        index.add(batch, commit_every=10)
    monkeypatch.setattr(HeadlineIndex, "_commit_chunk", original)
    messages: list[str] = []
    with open_index(tmp_path / "idx", messages=messages) as index:
        assert index.count() == 20  # two committed chunks survived
        result = index.add(batch, commit_every=10)
        assert (result.added, result.present) == (30, 20)
        assert story_ids(index) == expected
        assert index.stats()["faiss"]["in_step"]
    assert any("lacked 20 headline(s)" in m for m in messages), messages


def test_library_input_is_validated(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        with pytest.raises(InputError, match="headline 1 is empty"):
            index.add(["topic1 fine", "   "])
        with pytest.raises(InputError, match="characters long"):
            index.add(["x" * 5000])
        with pytest.raises(InputError, match="appears twice in this batch with different text"):
            index.add([{"id": "same", "text": "topic1 a"}, {"id": "same", "text": "topic2 b"}])
        with pytest.raises(InputError, match="published_at"):
            index.add([{"text": "topic1 a", "published_at": "yesterday"}])
        assert index.count() == 0


# --- reading ------------------------------------------------------------------------------------------


def test_query_finds_the_topic_and_explains_the_story(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(25, topics=5))
        hits = index.query("topic2 something new", k=3, explain=True)
        assert len(hits) == 3
        assert all(h.headline.text.startswith("topic2") for h in hits)
        assert hits[0].score >= hits[1].score >= hits[2].score
        assert hits[0].story_size == 5 and hits[0].would_join is True
        assert hits[0].story_similarity >= THRESHOLD
        far = index.query("unrelated words entirely", k=1, explain=True)[0]
        assert far.would_join is False and far.story_similarity < THRESHOLD


def test_story_and_stories(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(20, topics=4))
        story_id = index.get("h1").story_id
        story = index.story(story_id)
        assert story.size == 5
        assert [m.headline.id for m in story.members] == ["h1", "h5", "h9", "h13", "h17"]
        assert story.first_seen == "2024-05-01T01:00:00Z" and story.last_seen == "2024-05-01T17:00:00Z"
        assert all(0.5 < m.score <= 1.0 + 1e-6 for m in story.members)
        assert index.story("s999999") is None
        early = index.stories(T0, T0 + timedelta(hours=2))  # h0 and h1 only: two stories, all members
        assert [s.size for s in early] == [5, 5]
        assert len(index.stories()) == 4


# --- updating and removing ----------------------------------------------------------------------------


def test_update_in_place_keeps_row_and_story(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(10, topics=2))
        before = index.get("h3")
        changed = {
            "id": "h3",
            "text": "topic1   Report number 3",
            "source": "wire",
            "published_at": before_time(before),
        }
        assert index.add([changed]).present == 1  # without update: kept as is
        result = index.add([changed], update=True)
        after = index.get("h3")
        assert result.updated == 1 and after.row == before.row and after.story_id == before.story_id
        assert after.source == "wire" and after.text == "topic1   Report number 3"


def before_time(headline: store.Headline) -> datetime:
    return datetime.fromisoformat(headline.published_at.replace("Z", "+00:00"))


def test_update_with_new_text_moves_the_headline(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(10, topics=2))
        old = index.get("h3")
        result = index.add([{"id": "h3", "text": "topic0 now about the other topic", "published_at": T0}], update=True)
        new = index.get("h3")
        assert result.updated == 1 and index.count() == 10
        assert new.row != old.row and new.story_id == index.get("h0").story_id
        assert index.story(old.story_id).size == 4
        assert index.stats()["faiss"]["in_step"]
        assert index.query("topic0 now about the other topic", k=1)[0].headline.id == "h3"


def test_remove_shrinks_the_story_and_the_search_index(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(10, topics=2))
        story_id = index.get("h2").story_id
        result = index.remove(["h2", "h4", "nope"])
        assert result.removed == ["h2", "h4"] and result.missing == ["nope"]
        assert index.count() == 8 and index.story(story_id).size == 3
        assert all(h.headline.id not in {"h2", "h4"} for h in index.query("topic0 report", k=10))
        faiss_info = index.stats()["faiss"]
        assert faiss_info["in_step"] and faiss_info["vectors"] == 8


def test_a_story_emptied_by_removal_retires_for_good(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add([{"id": "only", "text": "topic9 alone", "published_at": T0}])
        index.remove(["only"])
        assert index.stats()["stories"] == 0
        index.add([{"id": "again", "text": "topic9 alone again", "published_at": T0}])
        assert index.get("again").story_id == "s000002"  # ids are never reused


# --- settings -----------------------------------------------------------------------------------------


def test_opening_with_another_model_or_threshold_is_an_error(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add(["topic1 a"])
    with pytest.raises(InputError, match="built with the model 'fake-64'"):
        HeadlineIndex.open(tmp_path / "idx", model="other-model")
    with pytest.raises(InputError, match="threshold 0.800"):
        HeadlineIndex.open(tmp_path / "idx", threshold=0.9)
    with HeadlineIndex.open(tmp_path / "idx") as index:  # no settings named: the index's own
        assert (index.model, index.threshold) == ("fake-64", THRESHOLD)


def test_an_index_keeps_the_embedding_variant_it_was_built_with(tmp_path: Path, monkeypatch) -> None:
    # Built with float32 vectors, reopened after the default variant became int8: it must go on
    # embedding in float32, or new vectors would not be comparable with the stored ones.
    asked: list[str | None] = []

    def embedder_for(model: str, *, quantize: str | None = None) -> FakeEmbedder:
        asked.append(quantize)
        fake = FakeEmbedder()
        fake.model_id = "fake-64/1" + ("+int8-onnx" if (quantize or "int8") == "int8" else "")
        return fake

    opened = {"notify": [].append, "embedder_factory": embedder_for}
    with HeadlineIndex.open(tmp_path / "idx", create=True, model="fake-64", **opened) as index:
        index.add(["topic1 first"])
    assert asked == [None]  # a new index takes today's default variant
    with HeadlineIndex.open(tmp_path / "idx", **opened) as index:
        index.add(["topic1 second"])
        assert index.embedder_in_use().model_id == "fake-64/1+int8-onnx"
    assert asked == [None, "int8"]
    index_db = tmp_path / "idx" / "headlines.sqlite"
    with contextlib.closing(sqlite3.connect(index_db)) as db, db:  # as if built with float32 vectors
        db.execute("UPDATE meta SET value = ? WHERE key = 'model_id'", ('"fake-64/1"',))
    with HeadlineIndex.open(tmp_path / "idx", **opened) as index:
        index.add(["topic1 third"])
        assert index.embedder_in_use().model_id == "fake-64/1"
    assert asked[-1] == "none"


def test_an_empty_index_may_change_settings(tmp_path: Path) -> None:
    open_index(tmp_path / "idx").close()
    with HeadlineIndex.open(tmp_path / "idx", threshold=0.7) as index:
        assert index.threshold == 0.7


def test_an_empty_index_that_changes_model_takes_that_models_threshold(tmp_path: Path) -> None:
    default = judgement_for("multilingual-e5-small", "event").threshold
    with HeadlineIndex.open(tmp_path / "idx", create=True, model="multilingual-e5-small") as index:
        assert index.level == "event"  # the default level
        assert index.threshold == default  # nothing loads the model until something is embedded
    with HeadlineIndex.open(tmp_path / "idx", embedder=FakeEmbedder()) as index:
        assert index.model == "fake-64"
        assert index.threshold == judgement_for("fake-64", "event").threshold != default


def test_opening_a_missing_index_without_create_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no headline index here.*index add"):
        HeadlineIndex.open(tmp_path / "nothing")


def test_a_damaged_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "headlines.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(InputError, match="cannot open the index database"):
        HeadlineIndex.open(tmp_path / "idx")


# --- the segment files ---------------------------------------------------------------------------------


def segment_files(folder: Path) -> list[Path]:
    return sorted((folder / "segments").glob("*.faiss"))


def test_truncated_faiss_file_is_detected_and_rebuilt(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(40))
        expected = story_ids(index)
        expected_hits = [h.headline.id for h in index.query("topic1 report", k=5)]
    (path,) = segment_files(tmp_path / "idx")  # one add: one segment file
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    messages: list[str] = []
    with open_index(tmp_path / "idx", messages=messages) as index:
        stats = index.stats()
        assert stats["faiss"]["checksum_ok"] is False and stats["faiss"]["in_step"] is False
        assert [h.headline.id for h in index.query("topic1 report", k=5)] == expected_hits
        assert index.stats()["faiss"]["in_step"]  # no writer was busy: the reader rewrote the file
        assert story_ids(index) == expected and index.count() == 40
    assert any("does not match the checksum" in m and "rebuilt" in m for m in messages), messages


def test_repair_rebuilds_a_missing_file_and_reports_it(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(12))
        expected = story_ids(index)
    (path,) = segment_files(tmp_path / "idx")
    path.unlink()
    with open_index(tmp_path / "idx") as index:
        fixed = index.repair()
        assert any("missing" in f for f in fixed)
        assert index.stats()["faiss"]["in_step"] and story_ids(index) == expected
        assert index.repair() == []


def test_repair_recomputes_story_records_that_disagree(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(12, topics=3))
        story_id = index.get("h0").story_id
        index.db.execute("UPDATE stories SET size = 99 WHERE id = ?", (story_id,))
        assert any("recomputed 1 story" in f for f in index.repair())
        assert index.db.execute("SELECT size FROM stories WHERE id = ?", (story_id,)).fetchone()[0] == 4


def test_a_large_index_turns_approximate_at_repair_and_stays_consistent(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("cluster.store.ann.ANN_MIN_SIZE", 30)
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(40))
        assert index.stats()["faiss"]["kind"] == "flat"  # adding never pays for training an index
        index.repair()
        assert index.stats()["faiss"]["kind"] == "ivf"
        index.remove(["h1"])  # a tombstone: searches skip it, compaction drops it
        index.add(headlines(45)[40:])
        info = index.stats()["faiss"]
        assert info["kind"] == "ivf" and info["in_step"] and info["vectors"] == 44
        assert index.query("topic2 report", k=1)[0].headline.text.startswith("topic2")


def test_readers_see_rows_committed_after_the_file_was_written(tmp_path: Path) -> None:
    with (
        open_index(tmp_path / "idx") as writer,
        HeadlineIndex.open(tmp_path / "idx", embedder=FakeEmbedder()) as reader,
    ):
        writer.add(headlines(10))
        assert len(reader.query("topic1 report", k=50)) == 10
        stale = writer.db.meta("segments")
        writer.add(headlines(20))
        # Put back the manifest of before and drop the newer segment file, as if the writer were killed
        # between its commit and the segment write.
        newer = set(segment_files(tmp_path / "idx")) - {tmp_path / "idx" / "segments" / stale[0]["name"]}
        for path in newer:
            path.unlink()
        with writer.db.transaction():
            writer.db.set_meta({"segments": stale})
        fresh = HeadlineIndex.open(tmp_path / "idx", embedder=FakeEmbedder(), notify=lambda m: None)
        assert len(fresh.query("topic1 report", k=50)) == 20
        assert fresh.stats()["faiss"]["missing"] == 10  # a reader catches up in memory only
        assert fresh.add(headlines(20)).present == 20
        assert fresh.stats()["faiss"]["in_step"]  # ... and its next write saves what it caught up
        fresh.close()


# --- reading input files ------------------------------------------------------------------------------


def test_read_input_rejects_a_huge_line_with_its_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("fine headline\n" + "y" * 10_000 + "\nanother\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        read_input([str(path)])
    assert f"{path}:2:" in str(caught.value) and "10,000 characters" in str(caught.value)
    skipped = read_input([str(path)], skip_invalid=True)
    assert [r.text for r in skipped.records] == ["fine headline", "another"]
    assert [(i.line, i.path) for i in skipped.invalid] == [(2, str(path))]


def test_read_input_rejects_an_id_repeated_across_files(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text('{"id": "x", "text": "one"}\n', encoding="utf-8")
    second.write_text('{"id": "y", "text": "two"}\n{"id": "x", "text": "three"}\n', encoding="utf-8")
    with pytest.raises(
        InputError, match=rf"{re.escape(str(second))}:2: duplicate id 'x' \(first seen at .*a.jsonl:1\)"
    ):
        read_input([str(first), str(second)])
    result = read_input([str(first), str(second)], skip_invalid=True)
    assert [r.id for r in result.records] == ["x", "y"] and len(result.invalid) == 1


def test_records_from_read_input_are_accepted(tmp_path: Path) -> None:
    with open_index(tmp_path / "idx") as index:
        result = index.add([Record("topic1 from a file", "f1", T0, "wire", "https://x.test/1", 3)])
        assert result.added == 1
        assert index.get("f1").to_dict()["url"] == "https://x.test/1"


@pytest.mark.parametrize(
    ("text", "seconds"), [("72h", 72 * 3600), ("90m", 5400), ("3d", 3 * 86400), ("1w", 604800), ("12", 43200)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "soon", "-3h", "0h", "3y"])
def test_parse_duration_rejects_nonsense(text: str) -> None:
    with pytest.raises(InputError, match="cannot read the duration"):
        parse_duration(text)


def test_progress_moves_while_a_chunk_embeds(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    with open_index(tmp_path / "idx") as index:
        index.add(
            headlines(600, topics=40), commit_every=1000, progress=lambda done, total: calls.append((done, total))
        )
    assert len(calls) >= 5  # 128 at a time, then the commit
    assert all(total == 600 for _, total in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls) and calls[-1] == (600, 600)
