"""The collapse CLI through click's CliRunner: output formats and every bad-input case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cluster.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def run(runner: CliRunner, *args: str, input: str | bytes | None = None):
    return runner.invoke(main, list(args), input=input, catch_exceptions=False)


def assert_clean_failure(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_seed_json_puts_the_a_rows_together(runner, shared_data, seed_rows) -> None:
    result = run(runner, "collapse", str(shared_data / "seed_related.tsv"), "--format", "json", "--quiet")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"model", "threshold", "story_threshold", "stories"}  # events nested in stories
    assert all(
        sorted(m["index"] for e in s["events"] for m in e["members"]) == [m["index"] for m in s["members"]]
        for s in data["stories"]
    )
    a_rows = {i for i, r in enumerate(seed_rows) if r["story"] == "A" and not r["also_ok"]}
    story_of = {m["index"]: s["id"] for s in data["stories"] for m in s["members"]}
    assert len({story_of[i] for i in a_rows}) == 1
    a_story = story_of[min(a_rows)]
    for i, row in enumerate(seed_rows):
        if row["story"] in {"C", "D"}:
            assert story_of[i] != a_story
    assert sorted(story_of) == list(range(len(seed_rows)))


def test_text_output_lists_representatives_and_members(runner) -> None:
    result = run(runner, "collapse", str(REPO / "examples" / "related_en.csv"))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    representatives = [line for line in lines if line.startswith("[")]
    events = [line for line in lines if line.startswith("  + event [")]  # a story's further events
    members = [line for line in lines if line.startswith("    ")]
    assert len(representatives) + len(events) + len(members) == 6
    assert "Storm Ada" in "".join(representatives)
    assert "headlines ->" in result.stderr and " events in " in result.stderr
    flat = run(runner, "collapse", str(REPO / "examples" / "related_en.csv"), "--level", "event").stdout.splitlines()
    assert not any(line.startswith("  + event") for line in flat)  # one level asked for: flat
    assert len([line for line in flat if line.startswith("[")]) == len(representatives) + len(events)


def test_stdin_and_quiet(runner) -> None:
    text = "Storm Ada forces evacuations along the coast\nThousands evacuated as Storm Ada batters the coast\n"
    result = run(runner, "collapse", "-", "--quiet", input=text)
    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout.count("\n") == 2  # one story: representative plus one member


def test_threshold_option_changes_grouping(runner) -> None:
    path = str(REPO / "examples" / "related_en.csv")
    # The story level's score is a probability: every pair of the file's news headlines scores above 0.0001.
    loose = json.loads(
        run(runner, "collapse", path, "--level", "story", "--format", "json", "-q", "-t", "0.0001").stdout
    )
    strict = json.loads(
        run(runner, "collapse", path, "--level", "event", "--format", "json", "-q", "-t", "0.999").stdout
    )
    assert loose["threshold"] == 0.0001 and len(loose["stories"]) == 1
    assert strict["threshold"] == 0.999 and len(strict["stories"]) == 6


def test_explain_command(runner) -> None:
    path = str(REPO / "examples" / "related_en.csv")
    result = run(runner, "explain", path, "2", "3")
    assert result.exit_code == 0 and "same story" in result.output
    result = run(runner, "explain", path, "0", "2")
    assert "different stories" in result.output


def test_python_dash_m_entry_point() -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "cluster", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "collapse" in result.stdout


def test_empty_input(runner, tmp_path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert_clean_failure(run(runner, "collapse", str(empty)), "empty.txt", "no headlines")


def test_undecodable_bytes(runner, tmp_path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"first headline\n" + b"second \xff\xfe headline\n")
    assert_clean_failure(run(runner, "collapse", str(path)), "bad.txt:2", "UTF-8")


def test_csv_without_text_column(runner, tmp_path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("id,headline\n1,foo\n")
    assert_clean_failure(run(runner, "collapse", str(path)), "list.csv:1", "--text-field")


def test_jsonl_line_without_text(runner, tmp_path) -> None:
    path = tmp_path / "list.jsonl"
    path.write_text('{"text": "one"}\n{"title": null}\n')
    assert_clean_failure(run(runner, "collapse", str(path)), "list.jsonl:2")


def test_csv_row_with_empty_headline(runner, tmp_path) -> None:
    path = tmp_path / "list.csv"
    path.write_text('id,text\n1,"a headline"\n2,"  "\n')
    assert_clean_failure(run(runner, "collapse", str(path)), "list.csv:3", "empty")


def test_text_field_option(runner, tmp_path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("id,headline\n1,Storm Ada forces evacuations\n2,Storm Ada forces evacuations\n")
    result = run(runner, "collapse", str(path), "--text-field", "headline", "-q", "--format", "json")
    assert result.exit_code == 0
    assert len(json.loads(result.stdout)["stories"]) == 1


def test_very_long_line_is_truncated_not_rejected(runner, tmp_path) -> None:
    path = tmp_path / "long.txt"
    path.write_text("short headline about rates\n" + "word " * 5000 + "\n")
    result = run(runner, "collapse", str(path), "-q", "--format", "json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["stories"]) == 2


def test_unknown_extension_asks_for_input_format(runner, tmp_path) -> None:
    path = tmp_path / "list.xml"
    path.write_text("<x/>")
    assert_clean_failure(run(runner, "collapse", str(path)), "--input-format")


def test_missing_model_folder(runner, tmp_path) -> None:
    path = REPO / "examples" / "related_en.csv"
    result = run(runner, "collapse", str(path), "--model", str(tmp_path / "nope"))
    assert_clean_failure(result, "multilingual-e5-small", "does not exist")


# --- with the fake embedder: ids, progress, wording, help --------------------------------------------------


def run_fake(runner: CliRunner, *args: str, input: str | None = None, terminal: bool | None = None):
    from test_store import FakeEmbedder

    obj = {"embedder": FakeEmbedder(), "terminal": terminal}
    return runner.invoke(main, [str(a) for a in args], input=input, catch_exceptions=False, obj=obj)


def test_collapse_json_returns_the_inputs_ids(runner, tmp_path: Path) -> None:
    source = tmp_path / "related.csv"
    source.write_text(
        "guid,text\nA-17,topic1 Central bank raises rates\n,topic1 Rates go up at the central bank\n"
        "C-3,topic2 Storm hits the coast\n",
        encoding="utf-8",
    )
    result = run_fake(runner, "collapse", source, "--id-field", "guid", "--threshold", "0.8", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    ids = {m["index"]: m["id"] for s in data["stories"] for m in s["members"]}
    assert ids == {0: "A-17", 1: None, 2: "C-3"}  # an empty id cell is no id
    assert all(s["representative"]["id"] == ids[s["representative"]["index"]] for s in data["stories"])
    lines = "".join(json.dumps({"id": f"j{n}", "text": t}) + "\n" for n, t in enumerate(["topic5 a", "topic5 b"]))
    from_jsonl = run_fake(runner, "collapse", "--input-format", "jsonl", "--format", "json", input=lines)
    assert [m["id"] for s in json.loads(from_jsonl.stdout)["stories"] for m in s["members"]] == ["j0", "j1"]


def test_collapse_shows_progress_only_on_a_terminal_and_not_when_quiet(runner) -> None:
    many = "".join(f"topic{n % 40} headline number {n}\n" for n in range(300))
    shown = run_fake(runner, "collapse", "-", input=many, terminal=True)
    # (click draws the moving bar only on a real terminal; here it prints the label once.)
    assert shown.exit_code == 0 and "embedding" in shown.stderr
    assert "embedding" not in run_fake(runner, "collapse", "-", input=many).stderr  # CliRunner: not a terminal
    quiet = run_fake(runner, "collapse", "-", "--quiet", input=many, terminal=True)
    assert quiet.stderr == ""


def test_the_progress_embedder_gives_the_same_vectors_in_slices() -> None:
    import numpy as np
    from test_store import FakeEmbedder

    from cluster.cli_common import ReportingEmbedder

    texts = [f"topic{n % 7} headline {n}" for n in range(150)]
    reports: list[tuple[int, int]] = []
    sliced = ReportingEmbedder(FakeEmbedder(), lambda done, total: reports.append((done, total)))
    assert np.array_equal(sliced.encode(texts), FakeEmbedder().encode(texts))
    assert reports == [(64, 150), (128, 150), (150, 150)]
    assert sliced.name == "fake-64" and sliced.dimension == 64  # the rest is the wrapped embedder's


def test_one_headline_is_one_story_in_words(runner) -> None:
    result = run_fake(runner, "collapse", "-", input="topic1 A single headline\n")
    assert result.stderr.startswith("1 headline -> 1 event in 1 story (duplicate ratio 0.00"), result.stderr
    flat = run_fake(runner, "collapse", "-", "--level", "event", input="topic1 A single headline\n")
    assert flat.stderr.startswith("1 headline -> 1 story (duplicate ratio 0.00"), flat.stderr


@pytest.mark.parametrize("group", [[], ["index"]])
def test_help_lists_every_command_without_cutting_it_off(runner, group: list[str]) -> None:
    import click

    result = runner.invoke(main, [*group, "--help"], terminal_width=80)
    assert result.exit_code == 0
    listing = " ".join(result.stdout.split("Commands:\n", 1)[1].split())
    assert "..." not in listing and "…" not in listing
    parent = main.get_command(click.Context(main), group[0]) if group else main
    for name in parent.list_commands(click.Context(parent)):
        command = parent.get_command(click.Context(parent), name)
        # Each command's short help, or else the whole first sentence of its help, appears uncut.
        expected = command.short_help or command.help.split(". ")[0].split("\n\n")[0]
        assert " ".join(expected.split()) in listing, name


def test_collapse_skips_invalid_rows_when_asked_and_names_them(runner: CliRunner, tmp_path: Path) -> None:
    feed = tmp_path / "feed.csv"
    feed.write_text("text\ntopic1 a headline\n\u200f\u200b\ntopic1 another headline\n\n", encoding="utf-8")
    refused = run_fake(runner, "collapse", str(feed))
    assert refused.exit_code == 2 and f"{feed}:3:" in refused.output and "--skip-invalid" in refused.output
    skipped = run_fake(runner, "collapse", str(feed), "--skip-invalid", "--format", "json")
    assert skipped.exit_code == 0, skipped.output
    assert f"skipped {feed}:3: headline has no visible characters" in skipped.stderr
    assert sum(len(s["members"]) for s in json.loads(skipped.stdout)["stories"]) == 2


def test_collapse_warns_when_it_cuts_a_headline(runner: CliRunner, tmp_path: Path) -> None:
    feed = tmp_path / "long.txt"
    feed.write_text("topic1 short\n" + "topic2 " + "word " * 500 + "\n", encoding="utf-8")
    result = run_fake(runner, "collapse", str(feed), "--format", "json")
    assert result.exit_code == 0, result.output
    assert f"warning: {feed}:2:" in result.stderr and "2,000" in result.stderr
