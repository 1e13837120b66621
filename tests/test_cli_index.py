"""The index and nightly commands through click's CliRunner: every bad-input case, formats, outputs.

The fake embedder stands in for the model except in the one end-to-end test at the bottom.
"""

from __future__ import annotations

import csv
import io
import json
import re
from functools import partial
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_store import FakeEmbedder

from cluster.cli import main
from cluster.settings import judgement_for
from cluster.store import HeadlineIndex


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def run(
    runner: CliRunner,
    *args: str,
    input: str | bytes | None = None,
    embedder: object = "fake",
    terminal: bool | None = None,
):
    """Run the CLI in-process with the fake embedder injected (``embedder=None``: the real model);
    ``terminal``: whether the CLI is to take standard error for a terminal (default: ask it)."""
    obj = {"embedder": FakeEmbedder() if embedder == "fake" else embedder, "terminal": terminal}
    return runner.invoke(main, [str(a) for a in args], input=input, catch_exceptions=False, obj=obj)


def add(runner: CliRunner, index: Path, *args: str, input: str | bytes | None = None, terminal: bool | None = None):
    return run(
        runner,
        "index",
        "add",
        "--index",
        index,
        "--model",
        "fake-64",
        "--threshold",
        "0.8",
        *args,
        input=input,
        terminal=terminal,
    )


def count(index: Path) -> int:
    with HeadlineIndex.open(index) as opened:
        return opened.count()


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


GOOD = jsonl(
    {"id": "g1", "text": "topic1 Central bank raises rates", "published_at": "2024-05-01T08:00:00Z"},
    {"id": "g2", "text": "topic1 Rates go up at the central bank", "published_at": "2024-05-01T09:00:00Z"},
    {"id": "g3", "text": "topic2 Storm hits the coast", "published_at": "2024-05-01T10:00:00Z"},
)


@pytest.fixture
def index(tmp_path: Path, runner: CliRunner) -> Path:
    path = tmp_path / "idx"
    source = tmp_path / "good.jsonl"
    source.write_text(GOOD, encoding="utf-8")
    assert add(runner, path, source).exit_code == 0
    return path


# --- bad input: each stops the run with file:line, exit 2, and nothing added ---------------------------

BAD_INPUTS = [
    ("malformed.jsonl", jsonl({"text": "topic1 fine"}) + '{"text": "broken\n', 2, "malformed JSON"),
    ("missing.csv", "id,text,source\n1,topic1 fine,wire\n2,wire\n", 3, "row has 2 fields but the header has 3"),
    ("empty.jsonl", jsonl({"text": "topic1 fine"}, {"text": "   "}), 2, "empty headline"),
    ("bytes.txt", b"topic1 fine\ntopic2 caf\xe9 latte\n", 2, "not valid UTF-8"),
    ("huge.txt", "topic1 fine\n" + "word " * 3000 + "\n", 2, "characters long, over the limit of 2,000"),
    ("dupes.jsonl", jsonl({"id": "a", "text": "topic1 x"}, {"id": "a", "text": "topic2 y"}), 2, "duplicate id 'a'"),
    ("time.jsonl", jsonl({"text": "topic1 x", "published_at": "last Tuesday"}), 1, "cannot read timestamp"),
]


@pytest.mark.parametrize(("name", "content", "line", "fragment"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_names_file_and_line_and_adds_nothing(
    tmp_path: Path, runner: CliRunner, index: Path, name: str, content: str | bytes, line: int, fragment: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    result = add(runner, index, path)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: {path}:{line}: ") and fragment in result.stderr, result.stderr
    assert "nothing was added" in result.stderr and "--skip-invalid" in result.stderr
    assert "Traceback" not in result.output
    assert count(index) == 3


@pytest.mark.parametrize(("name", "content", "line", "fragment"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_skip_invalid_skips_and_counts(
    tmp_path: Path, runner: CliRunner, index: Path, name: str, content: str | bytes, line: int, fragment: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    valid = 0 if name == "time.jsonl" else 1
    result = add(runner, index, path, "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert f"skipped {path}:{line}: " in result.stderr and fragment in result.stderr
    assert f"added {valid}, already present 0, invalid 1 in " in result.stderr
    assert count(index) == 3 + valid


def test_quiet_still_says_that_rows_were_skipped(tmp_path: Path, runner: CliRunner, index: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(jsonl({"text": "topic1 fine"}, {"text": ""}, {"text": "topic3 ok"}, {"nope": 1}), encoding="utf-8")
    result = add(runner, index, path, "--skip-invalid", "--quiet")
    assert result.exit_code == 0
    assert (
        result.stderr
        == f"skipped 2 invalid rows; the first: {path}:2: empty headline (remove the row or give it a headline)\n"
    )
    assert count(index) == 5


def test_a_bad_row_in_a_new_index_creates_nothing(tmp_path: Path, runner: CliRunner) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": ', encoding="utf-8")
    assert add(runner, tmp_path / "new", path).exit_code == 2
    assert not (tmp_path / "new").exists()


# --- adding -------------------------------------------------------------------------------------------


def test_adding_the_same_file_twice_leaves_the_count(tmp_path: Path, runner: CliRunner, index: Path) -> None:
    result = add(runner, index, tmp_path / "good.jsonl")
    assert result.exit_code == 0
    assert "added 0, already present 3, invalid 0 in " in result.stderr and "headlines/s" in result.stderr
    assert f"{index} holds 3 headlines in 2 stories" in result.stderr
    assert count(index) == 3


def test_summary_and_quiet(tmp_path: Path, runner: CliRunner) -> None:
    source = tmp_path / "good.jsonl"
    source.write_text(GOOD, encoding="utf-8")
    loud = add(runner, tmp_path / "a", source)
    assert "added 3, already present 0, invalid 0 in " in loud.stderr
    quiet = add(runner, tmp_path / "b", source, "--quiet")
    # --quiet keeps one line: a new index (a mistyped --index in a cron line) must not go unseen.
    assert quiet.exit_code == 0 and quiet.output == f"created a new index at {tmp_path / 'b'} (model fake-64)\n"
    assert count(tmp_path / "b") == 3
    assert add(runner, tmp_path / "b", source, "--quiet").output == ""


def test_progress_bar_only_on_a_terminal(tmp_path: Path, runner: CliRunner) -> None:
    source = tmp_path / "good.jsonl"
    source.write_text(GOOD, encoding="utf-8")
    assert "indexing" not in add(runner, tmp_path / "a", source).stderr  # CliRunner is not a terminal
    assert "indexing" in add(runner, tmp_path / "b", source, terminal=True).stderr
    assert "indexing" not in add(runner, tmp_path / "c", source, "--quiet", terminal=True).stderr


def test_a_new_index_is_announced_and_no_create_refuses_a_missing_one(tmp_path: Path, runner: CliRunner) -> None:
    source = tmp_path / "good.jsonl"
    source.write_text(GOOD, encoding="utf-8")
    first = add(runner, tmp_path / "news", source)
    assert first.exit_code == 0 and f"created a new index at {tmp_path / 'news'}" in first.stderr
    again = add(runner, tmp_path / "news", source, "--no-create")
    assert again.exit_code == 0 and "created" not in again.stderr
    typo = add(runner, tmp_path / "nwes", source, "--no-create")
    assert typo.exit_code == 2 and "no headline index here" in typo.stderr and "--no-create" in typo.stderr
    assert "Traceback" not in typo.output and not (tmp_path / "nwes").exists()


def test_counts_in_messages_are_singular_for_one(tmp_path: Path, runner: CliRunner) -> None:
    result = add(runner, tmp_path / "one", input=jsonl({"id": "x", "text": "topic1 Only one headline"}))
    assert "holds 1 headline in 1 story" in result.stderr, result.stderr
    assert "headline(s)" not in result.stderr and "1 stories" not in result.stderr
    repaired = run(runner, "index", "repair", "--index", tmp_path / "one")
    assert "(1 headline)" in repaired.stderr, repaired.stderr


def test_the_progress_bar_takes_reports_however_they_come(capsys) -> None:
    from cluster.cli_common import ProgressBar

    bar = ProgressBar("indexing")
    for done, total in [(0, 1995), (1000, 1995), (900, 1995), (1995, 1995), (2100, 2100)]:
        bar(done, total)  # a jump, one going back, a total that grows: none may break the bar
    assert bar.bar.pos == 2100 and bar.bar.length == 2100
    bar.close()
    assert "indexing" in capsys.readouterr().err


def test_csv_with_named_fields(tmp_path: Path, runner: CliRunner) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        "guid,headline,when,outlet,link\n"
        "x1,topic4 Bridge reopens,2024-05-02 10:00,Daily,https://d.test/1\n"
        "x2,topic4 The bridge is open again,1714644000,Weekly,\n",
        encoding="utf-8",
    )
    result = add(
        runner,
        tmp_path / "idx",
        path,
        "--id-field",
        "guid",
        "--text-field",
        "headline",
        "--time-field",
        "when",
        "--source-field",
        "outlet",
        "--url-field",
        "link",
    )
    assert result.exit_code == 0, result.output
    with HeadlineIndex.open(tmp_path / "idx") as index:
        first, second = index.get("x1"), index.get("x2")
        assert (first.published_at, first.source, first.url) == ("2024-05-02T10:00:00Z", "Daily", "https://d.test/1")
        assert second.published_at == "2024-05-02T10:00:00Z" and second.source == "Weekly"
        assert first.story_id == second.story_id


def test_tsv_txt_and_stdin(tmp_path: Path, runner: CliRunner) -> None:
    (tmp_path / "a.tsv").write_text("title\tsource\ntopic5 One\twire\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("topic5 Two\n\ntopic6 Three\n", encoding="utf-8")
    assert add(runner, tmp_path / "idx", tmp_path / "a.tsv", tmp_path / "b.txt").exit_code == 0
    result = add(runner, tmp_path / "idx", "-", "--input-format", "jsonl", input=jsonl({"text": "topic6 Four"}))
    assert result.exit_code == 0 and "added 1," in result.stderr
    assert count(tmp_path / "idx") == 4


def test_update_flag(tmp_path: Path, runner: CliRunner, index: Path) -> None:
    changed = tmp_path / "changed.jsonl"
    changed.write_text(jsonl({"id": "g3", "text": "topic2 Storm hits the coast", "source": "wire"}), encoding="utf-8")
    assert "already present 1" in add(runner, index, changed).stderr
    result = add(runner, index, changed, "--update")
    assert "added 0, already present 0, updated 1, invalid 0" in result.stderr
    with HeadlineIndex.open(index) as opened:
        assert opened.get("g3").source == "wire"


def test_another_model_is_refused(tmp_path: Path, runner: CliRunner, index: Path) -> None:
    result = run(runner, "index", "add", "--index", index, "--model", "another", tmp_path / "good.jsonl")
    assert result.exit_code == 2
    assert "built with the model 'fake-64'" in result.stderr and "Traceback" not in result.output


def test_a_missing_index_is_a_clean_error(tmp_path: Path, runner: CliRunner) -> None:
    result = run(runner, "index", "stats", "--index", tmp_path / "none")
    assert result.exit_code == 2 and "no headline index here" in result.stderr


# --- reading commands ---------------------------------------------------------------------------------


def test_stats(runner: CliRunner, index: Path) -> None:
    info = json.loads(run(runner, "index", "stats", "--index", index, "--format", "json").stdout)
    assert (info["headlines"], info["stories"], info["model"], info["threshold"]) == (3, 2, "fake-64", 0.8)
    assert info["faiss"]["in_step"] and info["faiss"]["vectors"] == 3
    text = run(runner, "index", "stats", "--index", index).stdout
    assert "in step with the database" in text and "threshold 0.800" in text
    assert re.search(r"vectors +1 file \(flat\), 3 vectors", text), text


def test_query_json_and_explain(runner: CliRunner, index: Path) -> None:
    hits = json.loads(
        run(runner, "index", "query", "topic1 bank lifts rates", "--index", index, "-k", "2", "--format", "json").stdout
    )
    assert [h["id"] for h in hits] == ["g1", "g2"] or [h["id"] for h in hits] == ["g2", "g1"]
    assert hits[0]["score"] >= hits[1]["score"] and hits[0]["story_id"] == hits[1]["story_id"]
    explained = run(runner, "index", "query", "topic1 bank lifts rates", "--index", index, "-k", "1", "--explain")
    assert "would join it" in explained.stdout and "threshold 0.800" in explained.stdout


def test_query_text_shows_the_judgement_next_to_the_cosine(runner: CliRunner, index: Path) -> None:
    lines = run(runner, "index", "query", "topic1 bank lifts rates", "--index", index, "-k", "3").stdout.splitlines()
    verdicts = [line.strip() for line in lines if line.strip().startswith("cosine ")]
    assert len(verdicts) == 3
    same = [v for v in verdicts if "judged the same" in v]
    different = [v for v in verdicts if "judged different" in v]
    assert len(same) == 2 and len(different) == 1  # the two topic1 headlines, then the storm
    # The judgement's scale is named (an uncalibrated model's judgement is a cosine).
    assert re.fullmatch(
        r"cosine -?\d\.\d{3} · its event: judged different \(cosine -?\d\.\d{3}, below 0\.800\)", different[0]
    )


def test_the_verdict_shows_a_probability_once_the_judgement_has_one() -> None:
    from types import SimpleNamespace

    from cluster.cli_index import judged

    hit = SimpleNamespace(score=0.861, story_similarity=0.843, threshold=0.9)
    plain = SimpleNamespace(threshold=0.9)
    assert judged(hit, plain) == "cosine 0.861 · its event: judged different (0.843, below 0.900)"
    calibrated = SimpleNamespace(threshold=0.9, probability=lambda score: 0.07 if score < 0.9 else 0.9)
    assert judged(hit, calibrated).endswith("· probability of the same story 7%")
    on_the_hit = SimpleNamespace(score=0.95, story_similarity=0.93, threshold=0.9, probability=0.88)
    assert judged(on_the_hit, plain) == (
        "cosine 0.950 · its event: judged the same (0.930, at or above 0.900) · probability of the same story 88%"
    )


def test_story_command(runner: CliRunner, index: Path) -> None:
    with HeadlineIndex.open(index) as opened:
        story_id = opened.get("g1").story_id
    data = json.loads(run(runner, "index", "story", story_id, "--index", index, "--format", "json").stdout)
    assert data["size"] == 2 and {m["id"] for m in data["members"]} == {"g1", "g2"}
    assert run(runner, "index", "story", "s999999", "--index", index).exit_code == 2


def test_remove(runner: CliRunner, index: Path) -> None:
    result = run(runner, "index", "remove", "--index", index, "--id", "g1", "--id", "zzz")
    assert result.exit_code == 0 and "removed 1; not in the index: zzz" in result.stderr
    assert count(index) == 2


def test_export_round_trips_into_a_new_index(tmp_path: Path, runner: CliRunner, index: Path) -> None:
    out = tmp_path / "export.jsonl"
    assert run(runner, "index", "export", "--index", index, "--output", out).exit_code == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["g1", "g2", "g3"] and rows[0]["published_at"] == "2024-05-01T08:00:00Z"
    assert add(runner, tmp_path / "copy", out).exit_code == 0
    with HeadlineIndex.open(index) as original, HeadlineIndex.open(tmp_path / "copy") as copy:
        assert [(h.id, h.text, h.story_id) for h in original.headlines()] == [
            (h.id, h.text, h.story_id) for h in copy.headlines()
        ]
    text = run(runner, "index", "export", "--index", index, "--format", "csv").stdout
    table = list(csv.DictReader(io.StringIO(text)))
    assert [r["id"] for r in table] == ["g1", "g2", "g3"] and table[2]["text"] == "topic2 Storm hits the coast"


def test_repair_after_truncation(runner: CliRunner, index: Path) -> None:
    (path,) = sorted((index / "segments").glob("*.faiss"))
    path.write_bytes(path.read_bytes()[:100])
    stats = json.loads(run(runner, "index", "stats", "--index", index, "--format", "json").stdout)
    assert stats["faiss"]["in_step"] is False
    result = run(runner, "index", "repair", "--index", index)
    assert result.exit_code == 0
    assert f"repaired: segments/{path.name} did not match its recorded checksum" in result.stderr
    stats = json.loads(run(runner, "index", "stats", "--index", index, "--format", "json").stdout)
    assert stats["faiss"]["in_step"] and stats["headlines"] == 3


# --- nightly ------------------------------------------------------------------------------------------


def test_nightly_command(tmp_path: Path, runner: CliRunner, index: Path) -> None:
    args = ["nightly", "--index", index, "--since", "2024-05-01", "--until", "2024-05-02T00:00:00Z"]
    first = run(runner, *args, "--out", tmp_path / "one")
    assert first.exit_code == 0, first.output
    assert first.stderr.startswith("nightly 2024-05-01T00:00:00Z .. 2024-05-02T00:00:00Z: 3 headlines in 2 stories")
    second = run(runner, *args, "--out", tmp_path / "two", "--quiet")
    assert second.output == ""
    for name in ("stories.jsonl", "headlines.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert (tmp_path / "one" / "report.html").stat().st_size > 1000


def test_nightly_fail_if_empty_exits_3_on_an_empty_window(tmp_path: Path, runner: CliRunner, index: Path) -> None:
    empty = ["nightly", "--index", index, "--since", "2020-01-01", "--until", "2020-01-02", "--out", tmp_path / "e"]
    plain = run(runner, *empty)
    assert plain.exit_code == 0 and "0 headlines in 0 stories" in plain.stderr
    failing = run(runner, *empty, "--fail-if-empty", "--quiet")
    assert failing.exit_code == 3
    assert "holds no headlines" in failing.stderr and "Traceback" not in failing.output
    assert (tmp_path / "e" / "report.html").is_file()  # the outputs are still written
    full = ["nightly", "--index", index, "--since", "2024-05-01", "--until", "2024-05-02", "--out", tmp_path / "f"]
    assert run(runner, *full, "--fail-if-empty").exit_code == 0


def test_nightly_last_is_a_window_ending_at_until(tmp_path: Path, runner: CliRunner, index: Path) -> None:
    result = run(
        runner, "nightly", "--index", index, "--until", "2024-05-01T09:30:00Z", "--last", "1h", "--out", tmp_path
    )
    assert "2024-05-01T08:30:00Z .. 2024-05-01T09:30:00Z: 1 headline in 1 story" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2024-05-01", "--last", "2h"], "give --since or --last, not both"),
        (["--since", "yesterday-ish"], "cannot read 'yesterday-ish'"),
        (["--last", "soon"], "cannot read the duration 'soon'"),
        (["--last", "99999999h"], "the duration '99999999h' is too long"),
        (["--last", "9999999999999w"], "the duration '9999999999999w' is too long"),
        (["--since", "2024-05-02", "--until", "2024-05-01"], "until must be after since"),
    ],
)
def test_nightly_bad_windows(tmp_path: Path, runner: CliRunner, index: Path, args: list[str], message: str) -> None:
    result = run(runner, "nightly", "--index", index, *args, "--out", tmp_path / "out")
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


# --- end to end with the real model -------------------------------------------------------------------

REAL = [
    ("e1", "Fed official says weak data caused by weather, should not slow taper", "2014-03-10T16:52:50Z"),
    ("e2", "Fed's Plosser: Nasty Weather Has Curbed Job Growth", "2014-03-10T16:52:52Z"),
    ("e3", "Fed official: weather to blame for weak economic data", "2014-03-10T17:10:00Z"),
    ("e4", "Apple unveils new iPhone with a larger screen", "2014-03-10T18:00:00Z"),
    ("e5", "زلزال بقوة 6.2 درجة يضرب جنوب تركيا ولا أنباء عن إصابات", "2014-03-10T19:00:00Z"),
    ("e6", "زلزال بقوة ٦٫٢ درجات يهز جنوب تركيا دون تسجيل إصابات", "2014-03-10T19:30:00Z"),
    ("e7", "البنك المركزي يرفع أسعار الفائدة ربع نقطة لكبح التضخم", "2014-03-10T20:00:00Z"),
]


@pytest.mark.slow
def test_end_to_end_with_the_real_model(tmp_path: Path, runner: CliRunner) -> None:
    real = partial(run, embedder=None)  # the default model, not the fake
    source = tmp_path / "real.jsonl"
    source.write_text(jsonl(*({"id": i, "text": t, "published_at": p} for i, t, p in REAL)), encoding="utf-8")
    index = tmp_path / "idx"
    first = real(runner, "index", "add", "--index", index, source)
    assert first.exit_code == 0 and "added 7," in first.stderr, first.output
    assert "already present 7" in real(runner, "index", "add", "--index", index, source).stderr
    with HeadlineIndex.open(index) as opened:
        stories = {h.id: h.story_id for h in opened.headlines()}
        assert opened.model == "multilingual-e5-small" and opened.level == "event"
        assert opened.threshold == pytest.approx(judgement_for("multilingual-e5-small", "event").threshold)
    assert stories["e5"] == stories["e6"]  # the same earthquake, reworded with Arabic-Indic digits
    assert len({stories["e4"], stories["e5"], stories["e7"], stories["e1"]}) == 4
    hits = json.loads(
        real(
            runner,
            "index",
            "query",
            "Weather blamed by Fed official for weak data",
            "--index",
            index,
            "--format",
            "json",
        ).stdout
    )
    assert hits[0]["id"] in {"e1", "e3"}
    out = tmp_path / "out"
    assert (
        real(
            runner, "nightly", "--index", index, "--since", "2014-03-10", "--until", "2014-03-11", "--out", out
        ).exit_code
        == 0
    )
    rows = list(csv.DictReader((out / "headlines.csv").open(encoding="utf-8")))
    assert len(rows) == 7
    nightly_stories = {r["id"]: r["story_id"] for r in rows}
    assert nightly_stories["e5"] == nightly_stories["e6"] and nightly_stories["e4"] != nightly_stories["e7"]
