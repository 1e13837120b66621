"""Faults from outside the product (issue 22), part of the corruption suite: a disk that fills up, and a
SQLite ``-shm`` file removed under a running ``serve``. Neither may lose an acknowledged headline
silently: a full disk is a one-line error that says nothing was lost (exit 2), a removed ``-shm`` stops
the writer that could lose data.

The full disk is a real 20 MB tmpfs when the tests may mount one (root), else a fault-injecting layer
(writes that raise ENOSPC), which checks the messages and the rollback but not the file system itself.
"""

from __future__ import annotations

import errno
import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from test_kill import BOOT, REPO
from test_store import FakeEmbedder

from cluster.cli import main
from cluster.store import HeadlineIndex

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
PAD = " padding words to give the row some weight" * 3


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], obj={"embedder": FakeEmbedder()})


def write_rows(path: Path, ids: range) -> list[str]:
    with path.open("w", encoding="utf-8") as handle:
        for i in ids:
            when = (T0 + timedelta(minutes=i)).isoformat()
            handle.write(json.dumps({"id": f"k{i}", "text": f"topic{i % 300} item {i}{PAD}", "published_at": when}))
            handle.write("\n")
    return [f"k{i}" for i in ids]


def stored_ids(index: Path) -> list[str]:
    with HeadlineIndex.open(index, embedder=FakeEmbedder()) as opened:
        return [h.id for h in opened.headlines()]


def add(index: Path, source: Path):
    return cli("index", "add", source, "--index", index, "--model", "fake-64", "--threshold", "0.8")


def assert_disk_full_message(result, folder: Path) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[-1].startswith(f"Error: no space left on the disk of {folder}: "), result.stderr
    assert "MiB needed" in lines[-1] and "nothing was lost" in lines[-1]
    assert "Traceback" not in result.output


# --- a real full disk -------------------------------------------------------------------------------------


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=20m", "tmpfs", str(disk)):
        pytest.skip("cannot mount a tmpfs here (not root): test_a_full_disk_by_fault_injection covers the messages")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path) -> Path:
    """Fill the disk to the last byte with one file; remove it to free the space."""
    filler = disk / "filler"
    with filler.open("ab") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_disk_is_one_line_and_loses_nothing(small_disk: Path, tmp_path: Path) -> None:
    index = small_disk / "idx"
    given: list[str] = []
    acknowledged: list[str] = []
    start = 0
    failed: Path | None = None
    for number, size in enumerate([1000, 3000, 5000, 5000, 5000, 5000]):
        source = tmp_path / f"part{number}.jsonl"
        ids = write_rows(source, range(start, start + size))
        start += size
        given += ids
        result = add(index, source)
        if result.exit_code != 0:
            assert_disk_full_message(result, index)
            failed = source
            break
        acknowledged += ids
    assert failed is not None, "the disk never filled up"
    # What the failed run committed before the disk filled is kept whole; everything acknowledged is there.
    kept = stored_ids(index)
    assert set(acknowledged) <= set(kept) <= set(given)
    assert len(kept) == len(set(kept))

    # A full disk under nightly and repair: the same message, and the index as it was.
    filler = fill(small_disk)
    nightly = cli("nightly", "--index", index, "--since", "2024-04-01", "--until", "2024-06-01", "-o", tmp_path / "o")
    assert_disk_full_message(nightly, index)
    assert_disk_full_message(cli("index", "repair", "--index", index), index)
    assert stored_ids(index) == kept
    filler.unlink()

    # Given the space, the same commands finish and the index is sound and complete.
    assert _mount("-o", "remount,size=120m", str(small_disk))
    assert add(index, failed).exit_code == 0
    for source in sorted(tmp_path.glob("part*.jsonl")):
        assert add(index, source).exit_code == 0  # the parts the loop did not reach
    assert sorted(stored_ids(index)) == sorted(given)
    nightly = cli("nightly", "--index", index, "--since", "2024-04-01", "--until", "2024-06-01", "-o", tmp_path / "o")
    assert nightly.exit_code == 0, nightly.output
    check = cli("index", "check", "--index", index)
    assert check.exit_code == 0, check.output


def test_a_full_disk_under_a_new_build_is_one_line(small_disk: Path, tmp_path: Path) -> None:
    source = tmp_path / "rows.jsonl"
    write_rows(source, range(3000))
    fill(small_disk)
    index = small_disk / "built"
    result = cli("index", "build", source, "--index", index, "--model", "fake-64", "--threshold", "0.8")
    assert_disk_full_message(result, index)


# --- the same messages without a tmpfs: writes that raise ENOSPC ----------------------------------------------


def test_a_full_disk_by_fault_injection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cluster.store.ann as ann

    index = tmp_path / "idx"
    first = write_rows(tmp_path / "a.jsonl", range(500))
    assert add(index, tmp_path / "a.jsonl").exit_code == 0
    write_rows(tmp_path / "b.jsonl", range(500, 1000))

    def no_space(*args: object) -> None:
        raise RuntimeError("Error in faiss::write_index: write error in x.tmp: 0 != 4096 (No space left on device)")

    monkeypatch.setattr(ann.faiss, "write_index", no_space)
    assert_disk_full_message(add(index, tmp_path / "b.jsonl"), index)
    assert_disk_full_message(cli("index", "repair", "--index", index), index)
    monkeypatch.undo()
    assert set(first) <= set(stored_ids(index))
    assert add(index, tmp_path / "b.jsonl").exit_code == 0
    assert cli("index", "check", "--index", index).exit_code == 0
    assert len(stored_ids(index)) == 1000


# --- the -shm file removed under a running serve ------------------------------------------------------------

STARTUP_S = 60  # a bound for a start with the fake embedder on a busy machine, not a measurement


def process(*args: object) -> list[str]:
    return [sys.executable, "-c", BOOT, *(str(a) for a in args)]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """An index of 200 headlines and ``serve`` on it in a process of its own: (index, base URL)."""
    index = tmp_path / "idx"
    write_rows(tmp_path / "first.jsonl", range(200))
    assert add(index, tmp_path / "first.jsonl").exit_code == 0
    log = tmp_path / "serve.log"
    with log.open("wb") as handle:
        server = subprocess.Popen(
            process("serve", "--index", index, "--port", "0", "--no-access-log"),
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + STARTUP_S
        url = None
        while url is None:
            found = re.search(r"on (http://127\.0\.0\.1:\d+) ", log.read_text(encoding="utf-8", errors="replace"))
            if found:
                try:
                    if httpx.get(f"{found[1]}/healthz", timeout=2).status_code == 200:
                        url = found[1]
                except httpx.TransportError:
                    pass  # bound, not accepting yet
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield index, url
    finally:
        server.terminate()
        server.wait(timeout=30)


def post(url: str, headline_id: str) -> httpx.Response:
    body = {"headlines": [{"id": headline_id, "text": f"topic7 served {headline_id}", "published_at": T0.isoformat()}]}
    return httpx.post(f"{url}/v1/headlines", json=body, timeout=30)


def add_in_a_process(index: Path, source: Path) -> None:
    done = subprocess.run(
        process("index", "add", source, "--index", index), cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_a_removed_shm_under_serve_loses_no_headline(served: tuple[Path, str], tmp_path: Path) -> None:
    index, url = served
    assert post(url, "s1").status_code == 200
    (index / "headlines.sqlite-shm").unlink()  # a clean-up script, an operator
    added = write_rows(tmp_path / "a.jsonl", range(1000, 1300))
    add_in_a_process(index, tmp_path / "a.jsonl")
    refused = post(url, "s2")
    # The service's shared memory is not the file on disk any more: it refuses to write, and says why.
    assert refused.status_code == 503, refused.text
    message = refused.json()["message"]
    assert "headlines.sqlite-shm" in message and "refuses to write" in message and "start it again" in message
    added += write_rows(tmp_path / "b.jsonl", range(2000, 2300))
    add_in_a_process(index, tmp_path / "b.jsonl")
    assert post(url, "s3").status_code == 503
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 503  # a supervisor restarts it
    kept = stored_ids(index)
    assert len(kept) == 200 + 1 + 600 and set(added) <= set(kept) and "s1" in kept
    check = cli("index", "check", "--index", index)
    assert check.exit_code == 0, check.output


def test_segment_files_of_rows_the_database_lost_are_evidence(tmp_path: Path) -> None:
    # The database as it was before two adds, as after a -shm removal lost their commits: the segment
    # files the adds wrote hold rows the database never had.
    index = tmp_path / "idx"
    write_rows(tmp_path / "first.jsonl", range(200))
    assert add(index, tmp_path / "first.jsonl").exit_code == 0
    db = sqlite3.connect(index / "headlines.sqlite")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    before = (index / "headlines.sqlite").read_bytes()
    lost = write_rows(tmp_path / "more.jsonl", range(1000, 1300))
    assert add(index, tmp_path / "more.jsonl").exit_code == 0
    for suffix in ("-wal", "-shm"):
        Path(f"{index / 'headlines.sqlite'}{suffix}").unlink(missing_ok=True)
    (index / "headlines.sqlite").write_bytes(before)

    check = cli("index", "check", "--index", index)
    assert check.exit_code == 1 and "never had: it lost committed headlines" in check.output, check.output
    refused = add(index, tmp_path / "first.jsonl")
    assert refused.exit_code == 2 and "lost headlines it had committed" in refused.stderr, refused.output
    assert "index repair" in refused.stderr
    repaired = cli("index", "repair", "--index", index)
    assert repaired.exit_code == 0 and "set aside as lost-" in repaired.output, repaired.output
    assert list(index.glob("lost-*.faiss"))
    assert add(index, tmp_path / "more.jsonl").exit_code == 0  # the recovery the message gives
    assert set(lost) <= set(stored_ids(index))
    assert cli("index", "check", "--index", index).exit_code == 0


@pytest.mark.parametrize("how", ["shm removed", "database moved and copied back"])
def test_a_writer_whose_files_were_replaced_refuses_to_write(tmp_path: Path, how: str) -> None:
    from cluster.store.schema import FilesReplacedError

    index = tmp_path / "idx"
    write_rows(tmp_path / "first.jsonl", range(50))
    assert add(index, tmp_path / "first.jsonl").exit_code == 0
    database = index / "headlines.sqlite"
    with HeadlineIndex.open(index, embedder=FakeEmbedder()) as writer:
        writer.add([{"id": "before", "text": "topic1 before"}])
        if how == "shm removed":
            Path(f"{database}-shm").unlink()
        else:
            database.rename(tmp_path / "moved.sqlite")
            database.write_bytes((tmp_path / "moved.sqlite").read_bytes())
        with pytest.raises(FilesReplacedError, match="refuses to write"):
            writer.add([{"id": "after", "text": "topic1 after"}])
