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
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
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
