"""Input a hostile user tries (issue 22): lone surrogates, invisible-only queries, control characters in
what is printed, giant CSV fields, many skipped rows. Each is a clear message or a skipped, named row;
never a traceback. Runs the CLI in-process with the fake embedder of test_store.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from test_cli_index import add, jsonl

from cluster.records import read_records


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
