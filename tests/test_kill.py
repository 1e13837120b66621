"""Crash safety with real processes: SIGKILLed `index add` and `nightly` runs, and two concurrent writers.

Each subprocess runs the real CLI with FakeEmbedder in place of the model, so a run takes about a second
of work after start-up. Kill moments are random (seeded) and measured from the moment the run starts
writing; nothing here asserts on time: the sleeps only place the kills, and the waits have generous
limits that guard against a hang.
"""

from __future__ import annotations

import json
import queue
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_store import FakeEmbedder

from cluster.cli import main
from cluster.store import DB_FILE, HeadlineIndex

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
BOOT = (
    "import sys\n"
    f"sys.path[:0] = [{str(TESTS)!r}, {str(REPO)!r}]\n"
    "import cluster.cli, test_store\n"
    "cluster.cli.main(sys.argv[1:], prog_name='headline-cluster', obj={'embedder': test_store.FakeEmbedder()})\n"
)
T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
N = 3000
HANG_GUARD = 120  # seconds; a run that takes this long is stuck


def cli(*args: object) -> list[str]:
    return [sys.executable, "-c", BOOT, *(str(a) for a in args)]


def write_headlines(path: Path, ids: range, topics: int = 150) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for i in ids:
            item = {
                "id": f"k{i}",
                "text": f"topic{i % topics} item {i}",
                "published_at": (T0 + timedelta(minutes=i)).isoformat(),
            }
            handle.write(json.dumps(item) + "\n")


def add_command(index: Path, source: Path) -> list[str]:
    return cli(
        "index", "add", source, "--index", index, "--model", "fake-64", "--threshold", "0.8", "--commit-every", 200
    )


def finish(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=HANG_GUARD, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done


def kill_during_work(command: list[str], index: Path, delay: float) -> bool:
    """Start ``command``, SIGKILL it ``delay`` seconds after its database appears; True if it was killed."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    limit = time.monotonic() + HANG_GUARD
    while not (index / DB_FILE).exists() and process.poll() is None and time.monotonic() < limit:
        time.sleep(0.005)
    time.sleep(delay)
    killed = process.poll() is None
    if killed:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=HANG_GUARD)
    return killed


def snapshot(index: Path) -> dict[str, str]:
    with HeadlineIndex.open(index) as opened:
        return {h.id: h.story_id for h in opened.headlines()}


def stats(index: Path) -> dict:
    result = CliRunner().invoke(main, ["index", "stats", "--index", str(index), "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, str], float]:
    """The input file, the story ids of an uninterrupted run, and how long its work took."""
    folder = tmp_path_factory.mktemp("reference")
    source = folder / "headlines.jsonl"
    write_headlines(source, range(N))
    index = folder / "idx"
    process = subprocess.Popen(add_command(index, source), stderr=subprocess.PIPE, text=True, cwd=REPO)
    while not (index / DB_FILE).exists() and process.poll() is None:
        time.sleep(0.005)
    started = time.monotonic()
    assert process.wait(timeout=HANG_GUARD) == 0, process.stderr.read()
    work = time.monotonic() - started
    return source, snapshot(index), work


def test_killed_add_runs_complete_when_run_again(tmp_path: Path, reference) -> None:
    source, expected, work = reference
    rng = random.Random(20240501)
    kills = attempts = 0
    while kills < 10 and attempts < 40:
        attempts += 1
        index = tmp_path / f"idx{attempts}"
        # Every third round is killed twice before it may finish, so a resumed run is killed too.
        for _ in range(2 if attempts % 3 == 0 else 1):
            kills += kill_during_work(add_command(index, source), index, rng.uniform(0.0, work * 1.1))
        if not (index / DB_FILE).exists():
            continue
        rerun = finish(add_command(index, source))
        assert "Traceback" not in rerun.stderr
        assert snapshot(index) == expected  # every headline exactly once, with the same story id
        info = stats(index)
        assert info["headlines"] == N and info["stories"] == 150
        assert info["faiss"]["in_step"] and info["faiss"]["vectors"] == N, info["faiss"]
    assert kills >= 10, f"only {kills} runs were still working when killed"


def read_lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)  # end of output


def test_two_writers_are_serialized(tmp_path: Path) -> None:
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    write_headlines(first, range(0, 1500))
    write_headlines(second, range(1000, 2500))  # 500 ids in both files
    index = tmp_path / "idx"
    holder = HeadlineIndex.open(index, create=True, embedder=FakeEmbedder(), threshold=0.8)
    processes, outputs = [], []
    with holder.lock():  # both writers must queue behind this one
        for source in (first, second):
            process = subprocess.Popen(
                add_command(index, source), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO
            )
            lines: queue.Queue = queue.Queue()
            threading.Thread(target=read_lines, args=(process.stderr, lines), daemon=True).start()
            processes.append(process)
            outputs.append(lines)
        for lines in outputs:
            assert "waiting for another writer on" in lines.get(timeout=HANG_GUARD)
        assert holder.count() == 0
    holder.close()
    for process in processes:
        assert process.wait(timeout=HANG_GUARD) == 0
    summaries = [next(line for line in iter(lines.get, None) if line.startswith("added")) for lines in outputs]
    added = [int(s.split()[1].rstrip(",").replace(",", "")) for s in summaries]
    assert sorted(added) == [1000, 1500]  # whoever went second found 500 of its ids present
    assert sorted(snapshot(index)) == sorted(f"k{i}" for i in range(2500))
    info = stats(index)
    assert info["headlines"] == 2500 and info["faiss"]["in_step"] and info["faiss"]["vectors"] == 2500


def test_two_writers_adding_the_same_file_add_it_once(tmp_path: Path) -> None:
    source = tmp_path / "same.jsonl"
    write_headlines(source, range(2000))
    index = tmp_path / "idx"
    processes = [
        subprocess.Popen(add_command(index, source), stderr=subprocess.PIPE, text=True, cwd=REPO) for _ in range(2)
    ]
    errors = [p.communicate(timeout=HANG_GUARD)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], errors
    assert sum("added 2,000, already present 0" in e for e in errors) == 1
    assert sum("added 0, already present 2,000" in e for e in errors) == 1
    info = stats(index)
    assert info["headlines"] == 2000 and info["faiss"]["in_step"]


def nightly_started(index: Path) -> bool:
    """Whether a nightly run has recorded its start in the runs table."""
    connection = sqlite3.connect(f"file:{index / DB_FILE}?mode=ro", uri=True, timeout=HANG_GUARD)
    try:
        return connection.execute("SELECT count(*) FROM runs").fetchone()[0] > 0
    finally:
        connection.close()


def start_nightly(command: list[str], index: Path) -> tuple[subprocess.Popen, float]:
    """Start a nightly run; return it once it has begun its work, with the moment it did."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    limit = time.monotonic() + HANG_GUARD
    while not nightly_started(index) and process.poll() is None and time.monotonic() < limit:
        time.sleep(0.005)
    return process, time.monotonic()


def test_killed_nightly_runs_complete_with_identical_outputs(tmp_path: Path, reference) -> None:
    source = reference[0]
    pristine = tmp_path / "pristine"
    finish(add_command(pristine, source))
    window = ["--since", "2024-05-01", "--until", "2024-05-04"]
    expected_index = tmp_path / "expected"
    shutil.copytree(pristine, expected_index)
    process, started = start_nightly(
        cli("nightly", "--index", expected_index, *window, "--out", tmp_path / "ref"), expected_index
    )
    assert process.wait(timeout=HANG_GUARD) == 0
    work = time.monotonic() - started
    expected = {n: (tmp_path / "ref" / n).read_bytes() for n in ("stories.jsonl", "headlines.csv")}
    rng = random.Random(7)
    kills = attempts = 0
    while kills < 4 and attempts < 15:
        attempts += 1
        index = tmp_path / f"idx{attempts}"
        shutil.copytree(pristine, index)
        out = tmp_path / f"out{attempts}"
        process, _ = start_nightly(cli("nightly", "--index", index, *window, "--out", out), index)
        time.sleep(rng.uniform(0.0, work))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=HANG_GUARD)
        finish(cli("nightly", "--index", index, *window, "--out", out))
        assert {n: (out / n).read_bytes() for n in expected} == expected
        assert snapshot(index) == snapshot(expected_index)
        assert stats(index)["last_nightly"]["state"] == "done"
    assert kills >= 4, f"only {kills} nightly runs were still working when killed"


def test_readers_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    with HeadlineIndex.open(tmp_path / "idx", create=True, embedder=FakeEmbedder(), threshold=0.8) as writer:
        writer.add([{"id": "a", "text": "topic1 a", "published_at": T0}])
        with writer.lock():
            result = CliRunner().invoke(main, ["index", "stats", "--index", str(tmp_path / "idx"), "--format", "json"])
            assert result.exit_code == 0 and json.loads(result.stdout)["headlines"] == 1
