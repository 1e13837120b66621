"""`index build`: the windows and ids it promises, both engines giving the same index, its errors, re-runs.

The fake embedder stands in for the model except in the slow test at the bottom, which builds 2,000
real headlines with the default model through both engines. The Ray tests share one local Ray of two
CPUs; they are skipped only where Ray is not installed and HEADLINE_CLUSTER_REQUIRE_RAY is unset (.ci/run
sets it, so CI never skips them).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import test_store
from click.testing import CliRunner
from test_store import FakeEmbedder

from cluster import ray_engine
from cluster.build import DAY
from cluster.cli import main
from cluster.nightly import run_nightly
from cluster.store import DB_FILE, HeadlineIndex

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)


def _has_ray() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


HAS_RAY = _has_ray()
if not HAS_RAY and os.environ.get("HEADLINE_CLUSTER_REQUIRE_RAY"):
    raise RuntimeError("HEADLINE_CLUSTER_REQUIRE_RAY is set but ray is not installed: pip install -e '.[test,ray]'")
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install -e '.[test,ray]')")


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the module; the engine uses a Ray that is already started as it is."""
    import ray
    import ray.cloudpickle

    # The fake embedder travels to the actors by value: the workers cannot import the tests folder.
    ray.cloudpickle.register_pickle_by_value(test_store)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def cli(*args: object, embedder: object = None) -> object:
    obj = {} if embedder is None else {"embedder": embedder}
    return CliRunner().invoke(main, [str(a) for a in args], obj=obj)


def build(index: Path, *files: Path, engine: str = "local", extra: tuple = (), embedder: object = "fake"):
    engine_args = ("--engine", "ray", "--workers", 2) if engine == "ray" else ()
    chosen = FakeEmbedder() if embedder == "fake" else embedder
    return cli("index", "build", *files, "--index", index, *engine_args, *extra, embedder=chosen)


def write_jsonl(path: Path, count: int = 600, topics: int = 60, minutes: int = 31, start: int = 0) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for i in range(start, start + count):
            moment = T0 + timedelta(minutes=minutes * i)
            handle.write(
                json.dumps({"id": f"k{i}", "text": f"topic{i % topics} item {i}", "published_at": moment.isoformat()})
                + "\n"
            )
    return path


def error_line(result) -> str:
    """The one ``Error:`` line (a new index is announced before it)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def table(index: Path, sql: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(index / DB_FILE)) as db, db:
        return db.execute(sql).fetchall()


def snapshot(index: Path) -> dict[str, list[tuple]]:
    """What must be the same whichever engine built the index."""
    return {
        "headlines": table(
            index,
            "SELECT row, id, text, normalized, published_at, t, source, url, story_id, event_id FROM headlines "
            "ORDER BY row",
        ),
        "vectors": table(index, "SELECT text_key, vector FROM embeddings ORDER BY text_key"),
        "stories": table(
            index, "SELECT id, representative, first_seen, last_seen, size, active FROM stories ORDER BY id"
        ),
        "meta": table(
            index,
            "SELECT key, value FROM meta "
            "WHERE key IN ('next_row', 'next_story', 'next_event', 'model_id', 'dimension')",
        ),
    }


# -- the plan -----------------------------------------------------------------------------------------


def cron_path(index: Path, source: Path, embedder: FakeEmbedder) -> dict[str, tuple[str, str]]:
    """The README's cron path through the CLI: index add of each UTC day's headlines (in time order), then
    nightly over the 48 hours up to that day's end."""
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    rows.sort(key=lambda r: datetime.fromisoformat(r["published_at"]))
    days = sorted({datetime.fromisoformat(r["published_at"]).astimezone(timezone.utc).date() for r in rows})
    for day in days:
        part = source.parent / f"day-{day}.jsonl"
        part.write_text(
            "".join(
                json.dumps(r) + "\n"
                for r in rows
                if datetime.fromisoformat(r["published_at"]).astimezone(timezone.utc).date() == day
            ),
            encoding="utf-8",
        )
        assert cli("index", "add", part, "--index", index, "--quiet", embedder=embedder).exit_code == 0
        until = (day + timedelta(days=1)).isoformat()
        out = index.parent / f"out-{day}"
        ran = cli(
            "nightly", "--index", index, "--until", until, "--last", "48h", "--out", out, "--quiet", embedder=embedder
        )
        assert ran.exit_code == 0, ran.output
    with HeadlineIndex.open(index, embedder_factory=lambda model, **_: embedder) as opened:
        return {h.id: (h.story_id, h.event_id) for h in opened.headlines()}


def test_a_build_gives_the_ids_of_adding_each_day_then_nightly(tmp_path: Path) -> None:
    # Five days, topics that run across days, and a story level (cosine 0.75 for this uncalibrated model)
    # coarser than the event level (0.80): the build must give every headline the very ids of the cron path.
    source = write_jsonl(tmp_path / "in.jsonl", count=500, topics=70, minutes=13)
    assert build(tmp_path / "built", source).exit_code == 0
    with HeadlineIndex.open(tmp_path / "built", embedder_factory=lambda model, **_: FakeEmbedder()) as opened:
        built = {h.id: (h.story_id, h.event_id) for h in opened.headlines()}
    expected = cron_path(tmp_path / "cron", source, FakeEmbedder())
    assert built == expected
    assert len({e for _, e in built.values()}) > 20
    story_of_event: dict[str, set[str]] = {}
    for story, event in built.values():
        story_of_event.setdefault(event, set()).add(story)
    assert all(len(stories) == 1 for stories in story_of_event.values())  # every event inside one story
    assert not (tmp_path / "built" / "build" / "replay").exists()  # the scratch index is gone


def test_a_build_is_what_nightly_leaves_on_its_last_window(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", count=900, minutes=23)
    index = tmp_path / "idx"
    result = build(index, source)
    assert result.exit_code == 0, result.output
    assert "built 900 headlines in " in result.stderr and "with --engine local" in result.stderr
    with HeadlineIndex.open(index, embedder_factory=lambda model, **_: FakeEmbedder()) as opened:
        last_day = max(int(h.t // DAY) for h in opened.headlines())
        before = snapshot(index)["headlines"]
        until = datetime.fromtimestamp((last_day + 1) * DAY, tz=timezone.utc)
        run = run_nightly(opened, until - timedelta(hours=48), until)
    assert run.headlines > 0 and (run.changed, run.merges, run.splits, run.new_stories) == (0, 0, 0, 0)
    assert (run.changed_events, run.event_merges, run.event_splits) == (0, 0, 0)
    assert snapshot(index)["headlines"] == before


def test_building_the_same_files_again_changes_nothing(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", count=200)
    index = tmp_path / "idx"
    assert build(index, source).exit_code == 0
    before = snapshot(index)
    again = build(index, source)
    assert again.exit_code == 0 and "already holds this build" in again.stderr
    assert snapshot(index) == before


def test_a_progress_bar_on_a_terminal_and_nothing_with_quiet(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", count=300)
    shown = CliRunner().invoke(
        main,
        ["index", "build", str(source), "--index", str(tmp_path / "a")],
        obj={"embedder": FakeEmbedder(), "terminal": True},
    )
    assert shown.exit_code == 0 and "building" in shown.stderr, shown.stderr  # the bar (click draws it on a tty)
    quiet = CliRunner().invoke(
        main,
        ["index", "build", str(source), "--index", str(tmp_path / "b"), "--quiet"],
        obj={"embedder": FakeEmbedder(), "terminal": True},
    )
    assert quiet.exit_code == 0 and "building" not in quiet.stderr and "built" not in quiet.stderr, quiet.stderr


# -- errors -----------------------------------------------------------------------------------------------


def test_without_ray_the_ray_engine_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as where it is not installed
    source = write_jsonl(tmp_path / "in.jsonl", count=10)
    result = build(tmp_path / "idx", source, engine="ray")
    assert result.exit_code == 2, result.output
    assert (
        result.stderr.startswith("Error: --engine ray needs Ray")
        and "pip install 'headline-cluster[ray]'" in result.stderr
    )
    assert "Traceback" not in result.output and not (tmp_path / "idx").exists()


def test_ray_options_need_the_ray_engine(tmp_path: Path) -> None:
    result = build(tmp_path / "idx", write_jsonl(tmp_path / "in.jsonl", count=5), extra=("--workers", "2"))
    assert result.exit_code == 2 and "go with --engine ray" in result.output


def test_an_index_that_holds_headlines_is_refused(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    assert (
        cli(
            "index", "add", write_jsonl(tmp_path / "a.jsonl", count=5), "--index", index, embedder=FakeEmbedder()
        ).exit_code
        == 0
    )
    result = build(index, write_jsonl(tmp_path / "b.jsonl", count=5, start=100))
    assert result.exit_code == 2 and "fills a new or empty index; this one holds 5 headline(s)" in result.stderr
    assert len(table(index, "SELECT id FROM headlines")) == 5


ENGINES = ["local", pytest.param("ray", marks=needs_ray)]


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    return request.param


@pytest.mark.parametrize("engine", ENGINES, indirect=True)
def test_bad_rows_stop_the_build_or_are_skipped(tmp_path: Path, engine: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"id": "a", "text": "topic1 fine"}\n{"text": "broken\n{"id": "b", "text": "   "}\n', encoding="utf-8"
    )
    index = tmp_path / "idx"
    stopped = build(index, source, engine=engine)
    assert stopped.exit_code == 2, stopped.output
    assert error_line(stopped).startswith(f"Error: {source}:2: malformed JSON")
    assert "nothing was stored" in stopped.stderr
    assert "--skip-invalid" in stopped.stderr and "Traceback" not in stopped.output
    assert f"removed the new index at {index}" in stopped.stderr and not index.exists()  # as it was
    skipped = build(index, source, engine=engine, extra=("--skip-invalid",))
    assert skipped.exit_code == 0, skipped.output
    assert (
        f"skipped {source}:2: malformed JSON" in skipped.stderr
        and f"skipped {source}:3: empty headline" in skipped.stderr
    )
    assert "built 1 headline in 1 story" in skipped.stderr and "invalid 2" in skipped.stderr
    assert table(index, "SELECT id FROM headlines") == [("a",)]


@pytest.mark.parametrize("engine", ENGINES, indirect=True)
def test_repeats_across_files_as_index_add_treats_them(tmp_path: Path, engine: str) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text('{"id": "x", "text": "topic1 one"}\n{"text": "topic2 same text"}\n', encoding="utf-8")
    second.write_text('{"text": "topic2 same text"}\n{"id": "x", "text": "topic3 other"}\n', encoding="utf-8")
    index = tmp_path / "idx"
    stopped = build(index, first, second, engine=engine)
    assert stopped.exit_code == 2
    duplicate = f"Error: {second}:2: duplicate id 'x' (first seen at {first}:1)"
    assert error_line(stopped).startswith(duplicate), stopped.stderr
    skipped = build(index, first, second, engine=engine, extra=("--skip-invalid",))
    assert skipped.exit_code == 0, skipped.output
    assert "built 2 headlines" in skipped.stderr and "already present 1, invalid 1" in skipped.stderr


@pytest.mark.parametrize("engine", ENGINES, indirect=True)
def test_a_build_killed_before_it_stores_leaves_the_index_empty_and_runs_again(
    tmp_path: Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", count=700)
    index = tmp_path / "idx"
    module = ray_engine if engine == "ray" else sys.modules["cluster.build"]

    def killed(*args: object, **kwargs: object) -> int:
        raise KeyboardInterrupt  # what a ^C or a kill does at this point: the store never starts

    monkeypatch.setattr(module, "store_build", killed)
    assert build(index, source, engine=engine).exit_code != 0
    monkeypatch.undo()
    assert not (index / DB_FILE).exists()  # the new index it created is gone; a Ray build's vectors stay
    assert index.exists() == (engine == "ray")
    if engine == "ray":  # a half-written folder of a run killed while embedding is cleared away
        (index / "build" / ".vectors.dead.tmp" / "day=1").mkdir(parents=True)
    again = build(index, source, engine=engine)
    assert again.exit_code == 0, again.output
    if engine == "ray":
        assert "reused the vectors of an interrupted run" in again.stderr
        assert not list((index / "build").glob(".vectors.*"))
    reference = tmp_path / "reference"
    assert build(reference, source).exit_code == 0
    assert snapshot(index) == snapshot(reference)


# -- the ray engine ----------------------------------------------------------------------------------------


@needs_ray
def test_ray_and_local_build_the_same_index_and_ray_writes_parquet_by_day(tmp_path: Path, ray_cluster: None) -> None:
    import pyarrow.parquet as pq

    first = write_jsonl(tmp_path / "a.jsonl", count=800, minutes=17)
    second = write_jsonl(tmp_path / "b.jsonl", count=500, minutes=17, start=800)
    local, distributed, work = tmp_path / "local", tmp_path / "ray", tmp_path / "work"
    assert build(local, first, second).exit_code == 0
    result = build(distributed, first, second, engine="ray", extra=("--work-dir", work))
    assert result.exit_code == 0, result.output
    assert "with --engine ray" in result.stderr and f"vectors in {work / 'vectors'}" in result.stderr
    assert snapshot(distributed) == snapshot(local)
    stored = table(distributed, "SELECT id, t, normalized FROM headlines")
    folders = sorted((work / "vectors").glob("day=*"))
    assert [int(f.name[4:]) for f in folders] == sorted({int(t // DAY) for _, t, _ in stored})
    assert (work / "vectors" / "manifest.json").is_file()
    rows = 0
    for folder in folders:
        for path in sorted(folder.iterdir()):
            assert path.name.startswith("part-") and path.suffix == ".parquet", path
            part = pq.read_table(path)
            assert part.schema.field("vector").type.list_size == FakeEmbedder.dimension
            assert {int(t // DAY) for t in part.column("t").to_pylist()} == {int(folder.name[4:])}
            vectors = np.array(part.column("vector").to_pylist(), dtype=np.float32)
            assert np.array_equal(vectors, FakeEmbedder().encode(part.column("normalized").to_pylist()))
            rows += len(part)
    assert rows == len(stored) == 1300


@needs_ray
def test_ray_reads_relative_paths_from_the_folder_it_was_started_in(
    tmp_path: Path, ray_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_jsonl(tmp_path / "in.jsonl", count=200)
    assert build(tmp_path / "reference", tmp_path / "in.jsonl").exit_code == 0
    monkeypatch.chdir(tmp_path)  # the Ray workers were started elsewhere
    result = build(Path("idx"), Path("in.jsonl"), engine="ray", extra=("--work-dir", "work"))
    assert result.exit_code == 0, result.output
    assert snapshot(tmp_path / "idx") == snapshot(tmp_path / "reference")
    assert (tmp_path / "work" / "vectors" / "manifest.json").is_file()


@needs_ray
def test_parquet_input_builds_what_the_same_jsonl_builds(tmp_path: Path, ray_cluster: None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = write_jsonl(tmp_path / "in.jsonl", count=300)
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    times = [datetime.fromisoformat(r["published_at"]) for r in rows]
    frame = pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows], "published_at": times})
    pq.write_table(frame, tmp_path / "in.parquet")
    assert build(tmp_path / "a", source).exit_code == 0
    result = build(tmp_path / "b", tmp_path / "in.parquet", engine="ray")
    assert result.exit_code == 0, result.output
    assert snapshot(tmp_path / "b")["headlines"] == snapshot(tmp_path / "a")["headlines"]


# -- the real model ----------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_ray
def test_both_engines_give_the_same_stories_and_ids_on_real_headlines(
    tmp_path: Path, shared_data: Path, ray_cluster: None
) -> None:
    with (shared_data / "clusters" / "og2021_events_dev.tsv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows.sort(key=lambda r: (r["published_at"], r["id"]))
    source = tmp_path / "og2000.jsonl"
    with source.open("w", encoding="utf-8") as handle:
        for row in rows[:2000]:  # the first 2,000: 25 days, so several windows of the 72h index window
            handle.write(json.dumps({k: row[k] for k in ("id", "text", "published_at")}, ensure_ascii=False) + "\n")
    local, distributed = tmp_path / "local", tmp_path / "ray"
    built = build(local, source, embedder=None, extra=("--quiet",))
    assert built.exit_code == 0, built.output
    built = build(distributed, source, engine="ray", embedder=None, extra=("--quiet",))
    assert built.exit_code == 0, built.output
    one, other = snapshot(local), snapshot(distributed)
    assert len(one["headlines"]) == 2000 and len(one["stories"]) > 100
    assert one["vectors"] == other["vectors"]  # byte for byte: the default model is batch-independent
    assert one == other  # the same stories, the same ids, the same representatives
    windows = table(local, "SELECT summary FROM runs WHERE kind = 'build'")
    assert json.loads(windows[0][0])["windows"] >= 5


@needs_ray
def test_an_address_where_no_ray_head_listens_is_a_one_line_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = write_jsonl(tmp_path / "in.jsonl", count=3)
    result = build(tmp_path / "idx", source, engine="ray", extra=("--ray-address", f"127.0.0.1:{port}"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert error_line(result).startswith(f"Error: nothing answers at the Ray address 127.0.0.1:{port}")
    assert "ray start --head" in result.stderr and not (tmp_path / "idx").exists()
