"""Input a hostile user tries (issue 22): lone surrogates, invisible-only queries, control characters in
what is printed, giant CSV fields, many skipped rows. Each is a clear message or a skipped, named row;
never a traceback. Runs the CLI in-process with the fake embedder of test_store.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from test_cli_index import GOOD, add, count, jsonl, run

from cluster.records import read_records
from cluster.store import HeadlineIndex


def test_every_skipped_row_is_named(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "many.jsonl"
    rows = [{"text": f"topic{i} fine"} if i % 2 else {"text": ""} for i in range(50)]
    path.write_text(jsonl(*rows), encoding="utf-8")
    result = add(runner, tmp_path / "idx", path, "--skip-invalid")
    assert result.exit_code == 0, result.output
    named = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert [line.split(":")[1] for line in named] == [str(n) for n in range(1, 51, 2)]
    assert "more invalid row" not in result.stderr


def test_a_json_control_character_is_named_once(tmp_path: Path) -> None:
    path = tmp_path / "tab.jsonl"
    path.write_text('{"text": "a\tb"}\n', encoding="utf-8")
    result = read_records(path, skip_invalid=True)
    assert "Invalid control character at column" in result.invalid[0].reason
    assert "at at" not in result.invalid[0].reason


def test_a_giant_csv_field_gets_the_message_a_giant_jsonl_text_gets(tmp_path: Path) -> None:
    big = "word " * 40_000
    csv_path = tmp_path / "big.csv"
    csv_path.write_text(f"id,text\n0,fine\n1,{big}\n2,also fine\n", encoding="utf-8")
    jsonl_path = tmp_path / "big.jsonl"
    jsonl_path.write_text(jsonl({"id": "0", "text": "fine"}, {"id": "1", "text": big}), encoding="utf-8")
    from_csv = read_records(csv_path, reject_long=True, skip_invalid=True)
    from_jsonl = read_records(jsonl_path, reject_long=True, skip_invalid=True)
    assert [(i.line, i.reason) for i in from_csv.invalid] == [(3, from_jsonl.invalid[0].reason)]
    assert "over the limit of 2,000" in from_csv.invalid[0].reason
    assert [r.id for r in from_csv.records] == ["0", "2"]
    cut = read_records(csv_path)  # without reject_long: cut and warned about, as jsonl is
    assert len(cut.records[1].text) <= 2000 and "cut to the first 2,000" in str(cut.warnings[0])


# --- lone surrogates (item 3) and invisible-only queries (item 4) -----------------------------------------

SURROGATE = (
    '{"id": "a", "text": "topic1 hello"}\n{"id": "b", "text": "abc \\ud800 def"}\n{"id": "c", "text": "topic2 x"}\n'
)
SURROGATE_ONLY = '{"id": "b", "text": "abc \\ud800 def"}\n'


def fake_run(*args: object):
    return run(CliRunner(), *args)


@pytest.mark.parametrize(
    "command",
    [["index", "add", "--model", "fake-64"], ["index", "build", "--model", "fake-64"], ["collapse"], ["explain"]],
    ids=["add", "build", "collapse", "explain"],
)
def test_a_lone_surrogate_names_its_row_and_is_skipped_under_skip_invalid(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(SURROGATE, encoding="utf-8")
    tail = ["--index", tmp_path / "idx"] if command[0] == "index" else (["0", "1"] if command[0] == "explain" else [])
    refused = fake_run(*command[:2], path, *tail, *command[2:])
    assert refused.exit_code == 2
    assert f"Error: {path}:2: text is not valid Unicode" in refused.stderr, refused.stderr
    skipped = fake_run(*command[:2], path, *tail, *command[2:], "--skip-invalid")
    assert skipped.exit_code == 0, skipped.output
    assert f"skipped {path}:2: text is not valid Unicode" in skipped.stderr
    if command[0] == "index":
        assert count(tmp_path / "idx") == 2


def test_input_with_no_valid_row_creates_no_index(tmp_path: Path) -> None:
    path = tmp_path / "only.jsonl"
    path.write_text(SURROGATE_ONLY, encoding="utf-8")
    result = add(CliRunner(), tmp_path / "idx", path, "--skip-invalid")
    assert result.exit_code == 2 and "no valid headlines to add" in result.stderr
    assert f"skipped {path}:1: text is not valid Unicode" in result.stderr
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("abc \udcff", "the query text is not valid Unicode"),  # a non-UTF-8 byte of an argument
        ("\u200f\u200e", "the query has no visible characters"),
        ("\u200b", "the query has no visible characters"),
        ("\x00", "the query has no visible characters"),
    ],
)
def test_an_unusable_query_is_refused(tmp_path: Path, text: str, says: str) -> None:
    source = tmp_path / "good.jsonl"
    source.write_text(GOOD, encoding="utf-8")
    assert add(CliRunner(), tmp_path / "idx", source).exit_code == 0
    result = fake_run("index", "query", text, "--index", tmp_path / "idx")
    assert result.exit_code == 2 and says in result.stderr and "judged" not in result.output


def test_the_library_refuses_lone_surrogates_too(tmp_path: Path) -> None:
    from test_store import FakeEmbedder, open_index

    from cluster.errors import InputError
    from cluster.stories import collapse

    with pytest.raises(InputError, match="text is not valid Unicode"):
        collapse(["fine", "abc \ud800"], embedder=FakeEmbedder())
    with open_index(tmp_path / "idx") as index:
        with pytest.raises(InputError, match="headline 0: text is not valid Unicode"):
            index.add([{"id": "x", "text": "abc \ud800"}])
        with pytest.raises(InputError, match="headline 0: id is not valid Unicode"):
            index.add([{"id": "x\udcff", "text": "fine"}])
        assert index.count() == 0


# --- control characters are escaped on the terminal (item 9) ----------------------------------------------

RAW = {"id": "evil\nid\x1b[2J", "text": "topic1 \x1b[31mred\x00 alert", "published_at": "2024-05-01T08:00:00Z"}


def assert_escaped(output: str) -> None:
    assert "\x1b" not in output and "\x00" not in output and "evil\nid" not in output, repr(output)
    assert "\\x1b[31mred\\x00" in output


def test_control_characters_of_stored_text_are_escaped_on_output(tmp_path: Path) -> None:
    source = tmp_path / "raw.jsonl"
    source.write_text(jsonl(RAW, {"id": "g1", "text": "topic1 Central bank raises rates"}), encoding="utf-8")
    assert add(CliRunner(), tmp_path / "idx", source).exit_code == 0
    with HeadlineIndex.open(tmp_path / "idx") as index:
        stored = index.get(RAW["id"])
        assert stored is not None and stored.text == RAW["text"].strip()  # stored as given
        story = stored.story_id
    query = fake_run("index", "query", "topic1 red alert", "--index", tmp_path / "idx")
    assert_escaped(query.stdout)
    assert "evil\\nid\\x1b[2J" in query.stdout
    assert_escaped(fake_run("index", "story", story, "--index", tmp_path / "idx").stdout)
    assert_escaped(fake_run("collapse", source).stdout)
