"""The segment files of an index (cluster/store/segments.py, vectors.py): adds write new files only,
compaction keeps every vector, damage is found and rebuilt, removals work across segments, an index
with the single vectors.faiss of before migrates, and results equal exact search."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import faiss
import numpy as np
import pytest
from test_store import FakeEmbedder, headlines, open_index, story_ids

from cluster.store import FAISS_FILE, HeadlineIndex
from cluster.store.schema import as_vectors
from cluster.store.vectors import file_checksum


def segment_files(folder: Path) -> list[Path]:
    return sorted((folder / "segments").glob("*.faiss"))


def fingerprints(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Each segment file's inode, modification time and content hash: what 'not rewritten' means."""
    found = {}
    for path in segment_files(folder):
        status = os.stat(path)
        found[path.name] = (status.st_ino, status.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def manifest_names(index: HeadlineIndex) -> list[str]:
    return [entry["name"] for entry in index.db.meta("segments")]


def exact_hits(index: HeadlineIndex, text: str, k: int) -> list[tuple[str, float]]:
    """The k nearest stored headlines by brute force over the database's float32 vectors."""
    found = index.db.execute(
        "SELECT h.id, e.vector FROM headlines h JOIN embeddings e ON e.text_key = h.text_key ORDER BY h.row"
    ).fetchall()
    vectors = as_vectors([v for _, v in found], index.dimension)
    query = FakeEmbedder().encode([text.lower()])[0]
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return [(found[i][0], float(scores[i])) for i in order]


def batches(sizes: list[int], topics: int = 5) -> list[list[dict]]:
    everything = headlines(sum(sizes), topics=topics)
    out, start = [], 0
    for size in sizes:
        out.append(everything[start : start + size])
        start += size
    return out


def test_an_add_writes_one_new_segment_file_and_leaves_the_others_untouched(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    with open_index(folder) as index:
        for number, batch in enumerate(batches([20, 15, 1, 30]), start=1):
            before = fingerprints(folder)
            index.add(batch)
            after = fingerprints(folder)
            assert {k: after[k] for k in before} == before  # same inode, time and bytes
            assert len(after) == number and len(set(after) - set(before)) == 1
            assert manifest_names(index) == sorted(after)
        index.add(batches([20])[0])  # all present: nothing to write
        assert len(segment_files(folder)) == 4
        info = index.stats()["faiss"]
        assert info["in_step"] and info["vectors"] == 66 and len(info["segments"]) == 4


def test_compaction_merges_segments_and_keeps_every_vector(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("cluster.store.ann.ANN_MIN_SIZE", 20)
    folder = tmp_path / "idx"
    first, second, third = batches([40, 12, 13])
    with open_index(folder) as index:
        for part in (first[:10], first[10:25], first[25:]):
            index.add(part)
        assert len(segment_files(folder)) == 3
        queries = ["topic1 report", "topic3 report number 7", "topic4 anything"]
        expected = {q: [h.headline.id for h in index.query(q, k=8)] for q in queries}
        index.maintain()  # three flat segments of 40 vectors in all: one approximate (ivf) segment
        info = index.stats()["faiss"]
        assert [s["kind"] for s in info["segments"]] == ["ivf"] and info["vectors"] == 40 and info["in_step"]
        assert {q: [h.headline.id for h in index.query(q, k=8)] for q in queries} == expected
        index.add(second)
        index.maintain()  # 12 flat after the ivf segment of 40: too few for an approximate index, left as is
        assert [s["kind"] for s in index.stats()["faiss"]["segments"]] == ["ivf", "flat"]
        approximate = fingerprints(folder)[manifest_names(index)[0]]
        index.add(third)
        index.maintain()  # 12 + 13 flat, and 25 >= 40 / 4: taken straight into the ivf segment
        info = index.stats()["faiss"]
        assert [s["kind"] for s in info["segments"]] == ["ivf"] and info["vectors"] == 65 and info["in_step"]
        assert approximate not in fingerprints(folder).values()  # a new file: the old one was never rewritten
        assert index.check().ok
        for text in queries:
            assert [h.headline.id for h in index.query(text, k=6)] == [i for i, _ in exact_hits(index, text, 6)]


def test_many_small_adds_merge_their_flat_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("cluster.store.vectors.MAX_FLAT_SEGMENTS", 3)
    folder = tmp_path / "idx"
    with open_index(folder) as index:
        for batch in batches([2] * 8):
            index.add(batch)
            assert len(segment_files(folder)) <= 4
        info = index.stats()["faiss"]
        assert info["in_step"] and info["vectors"] == 16


@pytest.mark.parametrize("damage", ["truncate", "delete", "garble"])
def test_a_damaged_segment_is_found_by_check_and_rebuilt_by_repair(tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "idx"
    with open_index(folder) as index:
        for batch in batches([10, 10, 10]):
            index.add(batch)
        expected = [(h.headline.id, round(h.score, 6)) for h in index.query("topic2 report", k=12)]
        stories = story_ids(index)
    victim = segment_files(folder)[1]
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:200])
    elif damage == "delete":
        victim.unlink()
    else:
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    with open_index(folder) as index:
        report = index.check()
        assert not report.ok and not report.faiss["in_step"]
        fixed = index.repair()
        assert any(f"segments/{victim.name}" in line for line in fixed), fixed
        assert index.check().ok and index.repair() == []
        assert [(h.headline.id, round(h.score, 6)) for h in index.query("topic2 report", k=12)] == expected
        assert story_ids(index) == stories


def test_a_query_finds_a_damaged_segment_and_rebuilds_it(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    with open_index(folder) as index:
        for batch in batches([10, 10, 10]):
            index.add(batch)
    victim = segment_files(folder)[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the right size: only the checksum can tell
    victim.write_bytes(bytes(data))
    messages: list[str] = []
    with open_index(folder, messages=messages) as index:
        index.add(batches([30, 3])[1])  # a writer only stats the older files: it leaves this one alone
        assert not index.check().ok
        expected = [i for i, _ in exact_hits(index, "topic2 report", 12)]
        assert [h.headline.id for h in index.query("topic2 report", k=12)] == expected
        assert index.check().ok  # no writer was busy: the reader wrote the segment again
    assert any(f"segments/{victim.name} does not match the checksum" in m and "rebuilt" in m for m in messages)


def test_removal_works_across_segments(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    with open_index(folder) as index:
        for batch in batches([10, 10, 10]):
            index.add(batch)
        before = fingerprints(folder)
        gone = ["h1", "h12", "h13", "h14", "h15", "h25"]
        assert index.remove(gone).removed == gone
        assert fingerprints(folder) == before  # removal writes no file: the vectors stay as tombstones
        hits = index.query("topic2 report", k=30)
        assert len(hits) == 24 and not {h.headline.id for h in hits} & set(gone)
        info = index.stats()["faiss"]
        assert info["in_step"] and info["vectors"] == 24 and info["tombstones"] == 6
        index.maintain()  # flat files are merged from SQLite: the removed vectors are left out
        info = index.stats()["faiss"]
        assert info["in_step"] and info["vectors"] == 24 and info["tombstones"] == 0  # the flat files merged
        index.repair()
        assert [h.headline.id for h in index.query("topic0 report", k=24)] == [
            i for i, _ in exact_hits(index, "topic0 report", 24)
        ]


def make_legacy(folder: Path, kind: str) -> None:
    """Turn an index into the layout of before segments: one vectors.faiss, recorded in meta."""
    with HeadlineIndex.open(folder, embedder=FakeEmbedder()) as index:
        found = index.db.execute(
            "SELECT h.row, e.vector FROM headlines h JOIN embeddings e ON e.text_key = h.text_key ORDER BY h.row"
        ).fetchall()
        rows = np.array([r for r, _ in found], dtype=np.int64)
        vectors = as_vectors([v for _, v in found], index.dimension)
        if kind == "flat":
            base = faiss.IndexFlatIP(index.dimension)
        else:
            base = faiss.IndexHNSWFlat(index.dimension, 32, faiss.METRIC_INNER_PRODUCT)
        mapped = faiss.IndexIDMap2(base)
        mapped.add_with_ids(vectors, rows)
        faiss.write_index(mapped, str(folder / FAISS_FILE))
        with index.db.transaction():
            index.db.execute("DELETE FROM meta WHERE key IN ('segments', 'next_segment')")
            index.db.set_meta(
                {
                    "faiss_rows": len(rows),
                    "faiss_max_row": int(rows[-1]),
                    "faiss_checksum": file_checksum(folder / FAISS_FILE),
                    "faiss_kind": kind,
                }
            )
    for path in segment_files(folder):
        path.unlink()
    (folder / "segments").rmdir()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_an_index_with_the_single_file_of_before_is_read_and_migrated(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "idx"
    first, second = batches([25, 10])
    with open_index(folder) as index:
        index.add(first)
        expected = [h.headline.id for h in index.query("topic3 report", k=10)]
    make_legacy(folder, kind)
    inode = os.stat(folder / FAISS_FILE).st_ino
    messages: list[str] = []
    with open_index(folder, messages=messages) as index:
        assert index.stats()["faiss"]["in_step"] and index.stats()["faiss"]["kind"] == kind
        assert [h.headline.id for h in index.query("topic3 report", k=10)] == expected
        assert (folder / FAISS_FILE).exists()  # a reader changes nothing
        index.add(second)  # the first writer moves the file into segments/, then adds a new one
        assert not (folder / FAISS_FILE).exists()
        files = segment_files(folder)
        assert len(files) == 2 and os.stat(files[0]).st_ino == inode  # linked, not rewritten
        assert index.check().ok and index.stats()["faiss"]["vectors"] == 35
        text = "topic3 report"
        assert [h.headline.id for h in index.query(text, k=10)] == [i for i, _ in exact_hits(index, text, 10)]
    assert messages == []


def test_a_damaged_single_file_of_before_is_rebuilt(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    with open_index(folder) as index:
        index.add(headlines(20))
    make_legacy(folder, "flat")
    (folder / FAISS_FILE).write_bytes((folder / FAISS_FILE).read_bytes()[:300])
    messages: list[str] = []
    with open_index(folder, messages=messages) as index:
        assert not index.check().ok
        index.add(headlines(22))
        assert index.check().ok and index.stats()["faiss"]["vectors"] == 22
    assert any("vectors.faiss" in m and "rebuilt" in m for m in messages), messages


def test_query_hits_equal_exact_search_over_every_kind_of_segment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("cluster.store.ann.ANN_MIN_SIZE", 25)
    with open_index(tmp_path / "idx") as index:
        for batch in batches([30, 8, 7], topics=9):
            index.add(batch)
            if len(index.stats()["faiss"]["segments"]) == 1:
                index.maintain()  # the first 30 as an ivf segment of 8-bit codes, then two flat files
        assert [s["kind"] for s in index.stats()["faiss"]["segments"]] == ["ivf", "flat", "flat"]
        for text in ["topic1 report", "topic5 report number 3", "something else entirely", "topic8"]:
            hits = index.query(text, k=7)
            exact = exact_hits(index, text, 7)
            assert [h.headline.id for h in hits] == [i for i, _ in exact]
            assert [h.score for h in hits] == pytest.approx([s for _, s in exact], abs=1e-6)


def test_story_assignment_does_not_depend_on_the_segments(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("cluster.store.ann.ANN_MIN_SIZE", 10)
    items = headlines(40, topics=6)
    with open_index(tmp_path / "one") as index:
        index.add(items)
        expected = story_ids(index)
        explained = [(h.headline.id, h.story_similarity) for h in index.query("topic2 report", k=5, explain=True)]
    with open_index(tmp_path / "many") as index:
        for batch in batches([7, 9, 11, 13], topics=6):
            index.add(batch)
            index.maintain()
        assert story_ids(index) == expected
        hits = index.query("topic2 report", k=5, explain=True)
        assert [(h.headline.id, h.story_similarity) for h in hits] == explained


def test_a_file_left_by_a_killed_run_is_removed_by_the_next_writer(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    with open_index(folder) as index:
        index.add(headlines(5))
        stray = folder / "segments" / "000099.faiss"
        stray.write_bytes(b"written, never recorded")
        assert index.check().ok  # not named by the manifest: not part of the index
        index.add(headlines(8))
        assert not stray.exists() and index.check().ok


def test_an_approximate_segment_with_many_removed_vectors_is_rebuilt_without_them(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("cluster.store.ann.ANN_MIN_SIZE", 10)
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(30))
        index.maintain()
        before = fingerprints(tmp_path / "idx")
        index.remove([f"h{i}" for i in range(0, 24, 2)])  # 12 of 30: over the 30% share
        assert fingerprints(tmp_path / "idx") == before
        index.maintain()
        info = index.stats()["faiss"]
        assert [s["kind"] for s in info["segments"]] == ["ivf"] and info["tombstones"] == 0
        assert info["vectors"] == 18 and info["in_step"] and set(fingerprints(tmp_path / "idx")) != set(before)
        text = "topic1 report"
        assert [h.headline.id for h in index.query(text, k=8)] == [i for i, _ in exact_hits(index, text, 8)]
