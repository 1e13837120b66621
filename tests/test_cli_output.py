"""What the CLI prints, from issue 21: a closed pipe, the score's scale, ids in collapse's text, stdin on a
terminal, index query's --time and --explain, the embedding variant in index stats."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_store import FakeEmbedder

from cluster.cli import main

REPO = Path(__file__).resolve().parents[1]


def run(*args: object, input: str | None = None, embedder: object = "fake", **obj: object):
    obj = {"embedder": FakeEmbedder() if embedder == "fake" else embedder, **obj}
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False, obj=obj)


def closed_pipe(args: list[str], cache: str) -> subprocess.CompletedProcess:
    """The CLI writing into a pipe whose reader has already gone (what `| head` does sooner or later)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HEADLINE_CLUSTER_CACHE": cache}
    reader, writer = os.pipe()
    os.close(reader)  # nobody will read: the first write that reaches the pipe fails with EPIPE
    try:
        return subprocess.run(
            [sys.executable, "-m", "cluster", *args],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
    finally:
        os.close(writer)


@pytest.fixture
def big_index(tmp_path: Path) -> Path:
    lines = "".join(f'{{"id": "x{i}", "text": "topic{i % 7} headline number {i}"}}\n' for i in range(3000))
    path = tmp_path / "many.jsonl"
    path.write_text(lines, encoding="utf-8")
    assert run("index", "add", path, "--index", tmp_path / "ix", "--model", "fake-64", "-q").exit_code == 0
    return tmp_path / "ix"


@pytest.mark.parametrize("output_format", ["jsonl", "csv"])
def test_export_into_a_closed_pipe_ends_quietly(big_index: Path, output_format: str) -> None:
    result = closed_pipe(
        ["index", "export", "--index", str(big_index), "--format", output_format], os.environ["HEADLINE_CLUSTER_CACHE"]
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.slow
def test_collapse_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    path = tmp_path / "many.txt"
    path.write_text("".join(f"headline number {i} about topic {i % 97}\n" for i in range(400)), encoding="utf-8")
    result = closed_pipe(["collapse", str(path), "--quiet"], os.environ["HEADLINE_CLUSTER_CACHE"])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_collapse_names_the_score_scale_and_shows_ids() -> None:
    result = run("collapse", REPO / "examples" / "related_en.csv", embedder=None)
    assert result.exit_code == 0, result.output
    # Learned scores are probabilities: the summary says so instead of calling them similarities.
    assert "scores: probability of the same event" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("[0 id=1] ")
    assert any(line.strip().split("  ")[1].startswith("[1 id=2] ") for line in lines if line.startswith("    "))


def test_collapse_text_without_ids_shows_positions_only() -> None:
    result = run("collapse", REPO / "examples" / "related_ar.txt", "--quiet", embedder=None)
    assert result.stdout.startswith("[0] ")


def test_collapse_says_it_reads_stdin_on_a_terminal() -> None:
    result = run("collapse", input="Storm Ada hits the coast\n", embedder=None, stdin_terminal=True)
    assert result.exit_code == 0, result.output
    assert "reading headlines from standard input" in result.stderr
    quiet_pipe = run("collapse", "-q", input="Storm Ada hits the coast\n", embedder=None, stdin_terminal=False)
    assert "reading headlines" not in quiet_pipe.stderr


def test_collapse_help_says_stdin_format_is_detected() -> None:
    text = run("collapse", "--help").stdout
    assert "(stdin: txt)" not in text
    assert "detected from its content" in " ".join(text.split())


@pytest.fixture
def index(tmp_path: Path) -> Path:
    rows = [
        {"id": "g1", "text": "topic1 Central bank raises rates", "published_at": "2024-05-01T08:00:00Z"},
        {"id": "g2", "text": "topic1 Rates go up at the central bank", "published_at": "2024-05-01T09:00:00Z"},
        {"id": "g3", "text": "topic2 Storm hits the coast", "published_at": "2024-05-01T10:00:00Z"},
    ]
    path = tmp_path / "good.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    args = ["index", "add", path, "--index", tmp_path / "idx", "--model", "fake-64", "-t", "0.8"]
    assert run(*args).exit_code == 0
    return tmp_path / "idx"


def test_query_explain_names_each_event_once(index: Path) -> None:
    out = run("index", "query", "topic1 bank lifts rates", "--index", index, "-k", "3", "--explain").stdout
    # The verdict is on the hit's event (the group a new headline joins), named with its story.
    story_lines = [line for line in out.splitlines() if line.strip().startswith("event ")]
    assert all(" of story s" in line for line in story_lines)
    # Two hits share the topic1 event: its verdict is printed once.
    assert len(story_lines) == 2
    assert len({line.split(":")[0] for line in story_lines}) == 2


def test_query_takes_a_time_and_no_model(index: Path) -> None:
    args = ["index", "query", "topic1 bank lifts rates", "--index", index, "--format", "json", "--explain"]
    assert run(*args, "--time", "2024-05-01T08:30Z").exit_code == 0
    assert run(*args, "--time", "yesterday-ish").exit_code == 2
    # The index embeds with its own model: a --model here would be ignored, so it is no option.
    assert run(*args, "--model", "other").exit_code == 2


def test_query_time_reaches_the_judgement(monkeypatch, index: Path) -> None:
    from cluster.store import reading

    seen = []
    real = reading.story_means

    def spy(db, judgement, vector, normalized, moment, *rest):
        seen.append(moment)
        return real(db, judgement, vector, normalized, moment, *rest)

    monkeypatch.setattr(reading, "story_means", spy)
    run("index", "query", "topic1 bank lifts rates", "--index", index, "--explain", "--time", "2024-05-01T08:30:00Z")
    assert seen and seen[-1] == pytest.approx(1714552200.0)


def test_stats_shows_the_embedding_variant(index: Path) -> None:
    text = run("index", "stats", "--index", index).stdout
    assert "model      fake-64 (float32 variant, dimension 64)" in text
    data = json.loads(run("index", "stats", "--index", index, "--format", "json").stdout)
    assert data["variant"] == "none"


def test_an_empty_nightly_window_names_the_index_range(tmp_path: Path, index: Path) -> None:
    result = run("nightly", "--index", index, "--until", "2030-01-01", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "holds no headlines; the index holds 3 headlines, from 2024-05-01T08:00:00" in result.stderr
    assert "to 2024-05-01T10:00:00" in result.stderr
    # With --quiet it says so only when cron is to hear about it (--fail-if-empty).
    quiet = run("nightly", "--index", index, "--until", "2030-01-01", "--out", tmp_path / "o2", "-q")
    assert quiet.stderr == ""
    failing = run(
        "nightly", "--index", index, "--until", "2030-01-01", "--out", tmp_path / "o3", "-q", "--fail-if-empty"
    )
    assert failing.exit_code == 3 and "the index holds 3 headlines" in failing.stderr


def test_nightly_shows_its_steps_on_a_terminal(tmp_path: Path, index: Path) -> None:
    args = ["nightly", "--index", index, "--until", "2024-05-02", "--out", tmp_path / "out"]
    shown = run(*args, terminal=True)
    assert shown.exit_code == 0, shown.output
    assert "nightly: reading the window" in shown.stderr and "nightly: writing the outputs" in shown.stderr
    assert "nightly: reading" not in run(*args, terminal=False).stderr


class InterruptingEmbedder(FakeEmbedder):
    """Ctrl-C on the ``after``-th call to encode: an add interrupted after some commits."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.calls = 0
        self.after = after

    def encode(self, texts):
        self.calls += 1
        if self.calls == self.after:
            raise KeyboardInterrupt
        return super().encode(texts)


def test_ctrl_c_during_add_says_what_was_committed_and_is_not_damage(tmp_path: Path) -> None:
    path = tmp_path / "day.jsonl"
    path.write_text("".join(f'{{"id": "i{n}", "text": "topic{n} headline {n}"}}\n' for n in range(6)), encoding="utf-8")
    index = tmp_path / "ix"
    args = ["index", "add", path, "--index", index, "--model", "fake-64", "--commit-every", "2"]
    result = run(*args, embedder=InterruptingEmbedder(after=2))
    assert result.exit_code == 130, result.output
    assert "interrupted: 2 new headline(s) of the 6 read were committed" in result.stderr
    assert "run the same index add again" in result.stderr and "Aborted!" not in result.output
    stats = run("index", "stats", "--index", index).stdout
    assert "NOT in step" not in stats and "behind the database by 2 headlines" in stats
    assert "damage    none found" in stats or re.search(r"damage +none found", stats)
    check = run("index", "check", "--index", index)
    assert check.exit_code == 0, check.output
    assert "note: the vector files lack the newest 2 headline(s)" in check.stdout
    # Running the same add again completes it.
    again = run(*args)
    assert again.exit_code == 0 and "added 4, already present 2" in again.stderr
    assert "in step with the database" in run("index", "stats", "--index", index).stdout
