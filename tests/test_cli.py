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
    assert set(data) == {"model", "threshold", "stories"}
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
    members = [line for line in lines if line.startswith("    ")]
    assert len(representatives) + len(members) == 6
    assert "Storm Ada" in "".join(representatives)
    assert "headlines ->" in result.stderr


def test_stdin_and_quiet(runner) -> None:
    text = "Storm Ada forces evacuations along the coast\nThousands evacuated as Storm Ada batters the coast\n"
    result = run(runner, "collapse", "-", "--quiet", input=text)
    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout.count("\n") == 2  # one story: representative plus one member


def test_threshold_option_changes_grouping(runner) -> None:
    path = str(REPO / "examples" / "related_en.csv")
    loose = json.loads(run(runner, "collapse", path, "--format", "json", "-q", "-t", "0.5").stdout)
    strict = json.loads(run(runner, "collapse", path, "--format", "json", "-q", "-t", "0.999").stdout)
    assert loose["threshold"] == 0.5 and len(loose["stories"]) == 1
    assert len(strict["stories"]) == 6


def test_explain_command(runner) -> None:
    path = str(REPO / "examples" / "related_en.csv")
    result = run(runner, "explain", path, "2", "3")
    assert result.exit_code == 0 and "same story" in result.output
    result = run(runner, "explain", path, "0", "2")
    assert "different stories" in result.output


def test_python_dash_m_entry_point() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "cluster", "--help"], capture_output=True, text=True, check=False
    )
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
