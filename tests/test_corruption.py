"""Damage a real index in each way it can be damaged; assert that it is detected and repaired.

Runs on the fake embedder of test_store (deterministic vectors; repair embeds again with it), through
the library and the CLI as a user runs them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import struct
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_store import T0, FakeEmbedder, headlines, open_index

from cluster.cli import main
from cluster.errors import IndexDamagedError, InputError
from cluster.store import DB_FILE, HeadlineIndex
from cluster.store.schema import sqlite_problem

N = 600


def run(*args: object, input: str | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, obj={"embedder": FakeEmbedder()})


@pytest.fixture
def built(tmp_path: Path) -> Path:
    path = tmp_path / "idx"
    with open_index(path) as index:
        index.add(headlines(N, topics=40))
    # Everything into the main file: damage to the database must hit the pages a reader reads.
    with contextlib.closing(sqlite3.connect(path / DB_FILE)) as db, db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def snapshot(path: Path) -> dict[str, str]:
    with HeadlineIndex.open(path, embedder=FakeEmbedder()) as index:
        return {h.id: h.story_id for h in index.headlines()}


def garble_page_holding(path: Path, needle: str) -> int:
    """Overwrite the b-tree header of the database page that stores ``needle``; the page number."""
    data = bytearray((path / DB_FILE).read_bytes())
    page_size = struct.unpack(">H", data[16:18])[0] or 65536
    at = data.find(needle.encode("utf-8"))
    assert at > 0, "the text is not in the main database file"
    page = at // page_size
    start = page * page_size
    data[start : start + 12] = b"\xff" * 12  # page type and cell pointers: the page no longer parses
    (path / DB_FILE).write_bytes(bytes(data))
    return page


def test_a_sound_index_checks_ok(built: Path) -> None:
    result = run("index", "check", "--index", built)
    assert result.exit_code == 0, result.output
    assert "ok:" in result.stdout and f"{N:,} headlines" in result.stdout
    with HeadlineIndex.open(built, embedder=FakeEmbedder()) as index:
        assert index.check().ok and index.stats()["check"]["ok"]


def test_a_garbled_database_page_is_detected_and_repaired_from_what_survives(built: Path) -> None:
    before = snapshot(built)
    garble_page_holding(built, headlines(N, topics=40)[300]["text"])
    result = run("index", "check", "--index", built)
    assert result.exit_code == 1 and "damaged: database" in result.stdout, result.output
    # Every command that reads the damaged page says so in one line, without a traceback.
    for command in (
        ["index", "stats"],
        ["index", "export"],
        ["nightly", "--since", "2024-05-01", "--out", built / "o"],
    ):
        result = run(*command, "--index", built)
        assert result.exception is None or isinstance(result.exception, SystemExit), command
        if result.exit_code:
            assert "damaged" in result.output and "index repair" in result.output, (command, result.output)
    repaired = run("index", "repair", "--index", built)
    assert repaired.exit_code == 0, repaired.output
    assert "rebuilt the database from what survives" in repaired.output
    assert list(built.glob(f"{DB_FILE}.damaged-*")), "the damaged file is kept for inspection"
    assert run("index", "check", "--index", built).exit_code == 0
    after = snapshot(built)
    # One page of a few dozen rows is lost at most; everything else kept its story id.
    assert len(after) >= N - 80
    assert all(before[i] == story for i, story in after.items())
    # And the index works again: adding and the nightly job run through.
    with HeadlineIndex.open(built, embedder=FakeEmbedder()) as index:
        index.add(headlines(N + 10, topics=40)[N:])
        assert index.count() == len(after) + 10


def test_a_garbled_vector_is_found_and_embedded_again(built: Path) -> None:
    with HeadlineIndex.open(built, embedder=FakeEmbedder()) as index:
        victim = index.get("h123")
    nan = np.full(FakeEmbedder.dimension, np.nan, dtype=np.float32).tobytes()
    flipped = bytearray(FakeEmbedder().encode([victim.text.lower()])[0].tobytes())
    flipped[3] ^= 0x40  # one bit of one exponent: the vector is no longer of unit length
    with contextlib.closing(sqlite3.connect(built / DB_FILE)) as db, db:
        keys = [k for (k,) in db.execute("SELECT text_key FROM headlines WHERE id IN ('h123', 'h124')")]
        db.execute("UPDATE embeddings SET vector = ? WHERE text_key = ?", (nan, keys[0]))
        db.execute("UPDATE embeddings SET vector = ? WHERE text_key = ?", (bytes(flipped), keys[1]))
    result = run("index", "check", "--index", built)
    assert result.exit_code == 1 and "2 stored vector(s) are damaged" in result.stdout, result.output
    repaired = run("index", "repair", "--index", built)
    assert repaired.exit_code == 0 and "2 stored vector(s) were damaged" in repaired.output, repaired.output
    with HeadlineIndex.open(built, embedder=FakeEmbedder()) as index:
        assert index.check().ok
        assert index.query(victim.text, k=1)[0].headline.id == "h123"  # it finds itself again


def test_a_missing_vector_row_is_embedded_again(built: Path) -> None:
    with contextlib.closing(sqlite3.connect(built / DB_FILE)) as db, db:
        db.execute("DELETE FROM embeddings WHERE text_key = (SELECT text_key FROM headlines WHERE id = 'h5')")
    with HeadlineIndex.open(built, embedder=FakeEmbedder()) as index:
        assert index.check().missing_vectors == 1
        assert "1 missing" in " ".join(index.repair())
        assert index.check().ok


def test_a_story_record_that_disagrees_is_recomputed(built: Path) -> None:
    with contextlib.closing(sqlite3.connect(built / DB_FILE)) as db, db:
        db.execute("UPDATE stories SET size = size + 5 WHERE id = 's000001'")
    result = run("index", "check", "--index", built)
    assert result.exit_code == 1 and "story record(s) disagree" in result.stdout
    assert "recomputed 1 story record(s)" in run("index", "repair", "--index", built).output


@pytest.mark.parametrize("damage", ["truncate", "delete", "garble"])
def test_a_damaged_vector_file_is_detected_and_rebuilt(built: Path, damage: str) -> None:
    (faiss_file,) = sorted((built / "segments").glob("*.faiss"))  # one add: one segment file
    if damage == "truncate":
        faiss_file.write_bytes(faiss_file.read_bytes()[:1000])
    elif damage == "delete":
        faiss_file.unlink()
    else:
        data = bytearray(faiss_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        faiss_file.write_bytes(bytes(data))
    assert run("index", "check", "--index", built).exit_code == 1
    assert run("index", "repair", "--index", built).exit_code == 0
    assert run("index", "check", "--index", built).exit_code == 0


def test_the_vector_file_has_the_database_files_mode(built: Path) -> None:
    mode = stat.S_IMODE(os.stat(built / DB_FILE).st_mode)
    files = sorted((built / "segments").glob("*.faiss"))
    assert files and all(stat.S_IMODE(os.stat(f).st_mode) == mode for f in files)


def test_sqlite_errors_become_advice() -> None:
    where = Path("/srv/idx") / DB_FILE
    damaged = sqlite_problem(sqlite3.DatabaseError("database disk image is malformed"), where)
    assert isinstance(damaged, IndexDamagedError) and "index repair --index /srv/idx" in str(damaged)
    read_only = sqlite_problem(sqlite3.OperationalError("attempt to write a readonly database"), where)
    assert isinstance(read_only, InputError) and "not writable" in str(read_only)
    assert "backup" not in str(read_only)
    assert sqlite_problem(sqlite3.OperationalError("no such column: x"), where) is None


@contextlib.contextmanager
def read_only_view(folder: Path, tmp_path: Path) -> Iterator[Path]:
    """``folder`` as this process cannot write it: a read-only bind mount for root (whom permissions do
    not stop), else the folder with its write bits taken away."""
    if os.geteuid() != 0:
        paths = [folder, *folder.iterdir()]
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield folder
        finally:
            for path in paths:
                path.chmod(0o755 if path.is_dir() else 0o644)
        return
    view = tmp_path / "read-only"
    view.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(folder), str(view)], capture_output=True).returncode == 0
    if not mounted or subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True).returncode:
        if mounted:
            subprocess.run(["umount", "-l", str(view)], capture_output=True)
        pytest.skip("cannot make a read-only view of a folder here (no bind mounts)")
    try:
        yield view
    finally:
        subprocess.run(["umount", "-l", str(view)], capture_output=True)


def test_a_read_only_index_is_read_and_refuses_writes_clearly(built: Path, tmp_path: Path) -> None:
    with HeadlineIndex.open(built, embedder=FakeEmbedder()) as index:
        expected = index.count()
    for leftover in built.glob(f"{DB_FILE}-*"):  # closed cleanly: no write-ahead log left
        assert leftover.stat().st_size == 0 or leftover.name.endswith("-shm")
    with read_only_view(built, tmp_path) as view:
        for command in (["index", "stats"], ["index", "export"], ["index", "check"]):
            result = run(*command, "--index", view)
            assert result.exit_code == 0, (command, result.output)
        assert f"{expected:,}" in run("index", "stats", "--index", view).output
        result = run("index", "add", "--index", view, "-", input="topic1 one more headline\n")
        assert result.exit_code == 2 and "not writable" in result.output, result.output
        assert "backup" not in result.output and "Traceback" not in result.output


def test_a_rerun_after_a_kill_following_the_commit_reports_the_committed_figures(tmp_path: Path, monkeypatch) -> None:
    import cluster.nightly as nightly

    span = timedelta(days=9)
    # A short online window leaves each topic in many stories, which the nightly regrouping merges.
    with open_index(tmp_path / "reference") as reference:
        reference.add(headlines(200, topics=12), window=timedelta(hours=2))
        expected = nightly.run_nightly(reference, T0, T0 + span)
    assert expected.merges > 0
    with open_index(tmp_path / "idx") as index:
        index.add(headlines(200, topics=12), window=timedelta(hours=2))
        real = nightly.write_outputs

        def killed(*args, **kwargs):
            raise KeyboardInterrupt  # stands in for a kill after the database commit

        monkeypatch.setattr(nightly, "write_outputs", killed)
        with pytest.raises(KeyboardInterrupt):
            nightly.run_nightly(index, T0, T0 + span, tmp_path / "out")
        monkeypatch.setattr(nightly, "write_outputs", real)
        (tmp_path / "out").mkdir(exist_ok=True)
        (tmp_path / "out" / ".stories.jsonl.x1.tmp").write_text("left by the killed run")
        again = nightly.run_nightly(index, T0, T0 + span, tmp_path / "out")
    assert again.resumed
    assert again.summary() == expected.summary()
    assert [(c.kind, c.old_id, c.new_id) for c in again.changes] == [
        (c.kind, c.old_id, c.new_id) for c in expected.changes
    ]
    assert not list((tmp_path / "out").glob(".*.tmp"))
