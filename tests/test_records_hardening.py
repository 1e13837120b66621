"""Rows that used to crash, mislead or vanish (issue 13): each is an invalid row or a warning that names
its file and line, with and without skip_invalid."""

from __future__ import annotations

import io
import json
from datetime import timezone
from pathlib import Path

import pytest

from cluster.errors import InputError
from cluster.records import ReadWarning, read_many, read_records, sniff_format

UTC = timezone.utc


def write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8"))
    return path


def jsonl(*objects: object) -> str:
    return "".join(json.dumps(obj, ensure_ascii=False) + "\n" for obj in objects)


def stdin(content: str) -> io.BytesIO:
    return io.BytesIO(content.encode("utf-8"))


# --- item 1: rows that crashed the reader even with skip_invalid -----------------------------------------


@pytest.mark.parametrize("depth", [150, 1_000, 100_000])
def test_deeply_nested_json_line_is_an_invalid_row(tmp_path: Path, depth: int) -> None:
    deep = '{"text": "deep", "x": ' + "[" * depth + "]" * depth + "}"
    path = write(tmp_path, "h.jsonl", jsonl({"text": "first"}) + deep + "\n" + jsonl({"text": "last"}))
    with pytest.raises(InputError) as info:
        read_records(path)
    assert str(info.value).startswith(f"{path}:2: JSON nested more than 100 levels deep (")
    result = read_records(path, skip_invalid=True)
    assert [r.text for r in result.records] == ["first", "last"]
    assert [(i.path, i.line) for i in result.invalid] == [(str(path), 2)]


def test_nesting_inside_strings_does_not_count(tmp_path: Path) -> None:
    text = "[" * 500 + "{" * 500
    path = write(tmp_path, "h.jsonl", jsonl({"text": text, "note": "]" * 300}))
    assert read_records(path, max_chars=5000).records[0].text == text


def test_moderate_nesting_is_kept_as_extra_text(tmp_path: Path) -> None:
    nested = [[[[{"a": 1}]]]]
    path = write(tmp_path, "h.jsonl", jsonl({"text": "ok", "meta": nested}))
    assert json.loads(read_records(path).records[0].extra["meta"]) == nested


@pytest.mark.parametrize(
    "stamp",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00.5+00:01"],
)
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_timestamp_outside_the_utc_range_is_an_invalid_row(tmp_path: Path, stamp: str, fmt: str) -> None:
    if fmt == "jsonl":
        content = jsonl({"text": "ok"}, {"text": "bad time", "published_at": stamp})
    else:
        content = f"text,published_at\nok,\nbad time,{stamp}\n"
    path = write(tmp_path, f"h.{fmt}", content)
    with pytest.raises(InputError) as info:
        read_records(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{2 if fmt == 'jsonl' else 3}: timestamp {stamp!r} in 'published_at' ")
    assert "year 1" in message and "9999" in message and "(" in message
    result = read_records(path, skip_invalid=True)
    assert [r.text for r in result.records] == ["ok"] and len(result.invalid) == 1


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01T10:00:00+09:59"])
def test_timestamps_at_the_edges_of_the_range_convert_downstream(tmp_path: Path, stamp: str) -> None:
    path = write(tmp_path, "h.jsonl", jsonl({"text": "edge", "published_at": stamp}))
    moment = read_records(path).records[0].published_at
    assert moment is not None and moment.tzinfo is UTC
    assert moment.astimezone(UTC) == moment
    assert isinstance(moment.timestamp(), float)


@pytest.mark.parametrize(
    "line",
    [
        '{"text": "a", "published_at": 1' + "0" * 5000 + "}",
        '{"text": "a", "id": 1' + "0" * 5000 + "}",
        '{"text": "a", "published_at": "1' + "0" * 5000 + '"}',
    ],
)
def test_integer_too_long_to_convert_is_an_invalid_row(tmp_path: Path, line: str) -> None:
    path = write(tmp_path, "h.jsonl", line + "\n" + jsonl({"text": "fine"}))
    with pytest.raises(InputError) as info:
        read_records(path)
    assert str(info.value).startswith(f"{path}:1: ")
    result = read_records(path, skip_invalid=True)
    assert [r.text for r in result.records] == ["fine"] and [i.line for i in result.invalid] == [1]


# --- item 5: headlines of invisible characters only -------------------------------------------------------

INVISIBLE = ["\u200f", "\u200b\u200b", "\u0640\u0640\u0640", "\u200e\u0640\ufeff", "\u2066\u2069", "\u00ad", "\x07"]


@pytest.mark.parametrize("blank", INVISIBLE)
@pytest.mark.parametrize("fmt", ["txt", "csv", "tsv", "jsonl"])
def test_invisible_only_headline_is_an_empty_headline(tmp_path: Path, blank: str, fmt: str) -> None:
    headlines = ["visible one", blank, "visible two"]
    if fmt == "jsonl":
        content = jsonl(*({"text": h} for h in headlines))
    elif fmt == "txt":
        content = "".join(f"{h}\n" for h in headlines)
    else:
        sep = "," if fmt == "csv" else "\t"
        content = f"id{sep}text\n" + "".join(f"{i}{sep}{h}\n" for i, h in enumerate(headlines))
    path = write(tmp_path, f"h.{fmt}", content)
    line = {"txt": 2, "jsonl": 2}.get(fmt, 3)
    with pytest.raises(InputError) as info:
        read_records(path)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert "no visible characters" in str(info.value) or "empty headline" in str(info.value)
    result = read_records(path, skip_invalid=True)
    assert [r.text for r in result.records] == ["visible one", "visible two"]
    assert [i.line for i in result.invalid] == [line]


def test_invisible_only_message_names_the_characters(tmp_path: Path) -> None:
    path = write(tmp_path, "h.txt", "ok\n\u200f\u200b\u200f\n")
    with pytest.raises(InputError, match=r"h\.txt:2: headline has no visible characters \(only U\+200F, U\+200B\)"):
        read_records(path)


def test_text_visible_only_beyond_max_chars_is_not_cut_to_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, "h.txt", "\u200b" * 20 + "late headline\nok\n")
    result = read_records(path, max_chars=10, skip_invalid=True)
    assert [r.text for r in result.records] == ["ok"]
    assert [i.line for i in result.invalid] == [1]


# --- item 6: an unterminated CSV quote --------------------------------------------------------------------


@pytest.mark.parametrize("sep", [",", "\t"])
def test_unterminated_quote_is_reported_where_it_opened(tmp_path: Path, sep: str) -> None:
    content = f"id{sep}text\n1{sep}first\n2{sep}\"opens and never closes\n3{sep}third\n4{sep}fourth\n"
    path = write(tmp_path, "h.csv" if sep == "," else "h.tsv", content)
    with pytest.raises(InputError) as info:
        read_records(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: unterminated quote")
    assert "line 3" in message and "to the end of the file" in message
    result = read_records(path, skip_invalid=True)
    # The rows after the bad one are real rows: reading resumes on the next line.
    assert [r.text for r in result.records] == ["first", "third", "fourth"]
    assert [(i.line, i.reason.split(":")[0]) for i in result.invalid] == [(3, "unterminated quote")]


def test_unterminated_quote_on_a_later_line_of_a_multiline_row(tmp_path: Path) -> None:
    content = 'id,text,note\n1,"two\nlines",fine\n2,ok,"open\n3,more,x\n'
    path = write(tmp_path, "h.csv", content)
    with pytest.raises(InputError, match=r"h\.csv:4: unterminated quote: the field that opens on line 4"):
        read_records(path)
    result = read_records(path, skip_invalid=True)
    assert [r.text for r in result.records] == ["two\nlines", "more"]


def test_closed_multiline_field_at_the_end_of_the_file_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, "h.csv", 'id,text\n1,"a headline\nover two lines"\n')
    result = read_records(path)
    assert [r.text for r in result.records] == ["a headline\nover two lines"]
    assert result.invalid == []


def test_quotes_inside_an_unquoted_field_are_not_an_open_quote(tmp_path: Path) -> None:
    path = write(tmp_path, "h.csv", 'id,text\n1,He said "no\n2,"Quoted ""inner"" text"\n')
    result = read_records(path)
    assert [r.text for r in result.records] == ['He said "no', 'Quoted "inner" text']


def test_row_spanning_lines_warns(tmp_path: Path) -> None:
    # Two stray quotes swallow the rows between them; the field counts still match, so only a warning
    # can tell the user.
    content = 'id,text\n1,"first\n2,second\n3,third"\n4,fourth\n'
    path = write(tmp_path, "h.csv", content)
    result = read_records(path)
    assert [r.line for r in result.records] == [2, 5]
    assert [(w.path, w.line) for w in result.warnings] == [(str(path), 2)]
    assert "lines 2-4" in result.warnings[0].reason


def test_open_quote_in_a_large_file_is_named_and_the_rows_after_it_are_read(tmp_path: Path) -> None:
    # Past csv's field size limit (131,072 characters) the open quote shows as a parse error, not at EOF.
    rows = "".join(f"{i},headline number {i} with enough words to make the line long\n" for i in range(4_000))
    path = write(tmp_path, "h.csv", 'id,text\n1,"opens here\n' + rows)
    with pytest.raises(InputError) as info:
        read_records(path)
    assert str(info.value).startswith(f"{path}:2: cannot parse row: field larger than field limit")
    assert "a quote on line 2 probably never closes" in str(info.value)
    result = read_records(path, skip_invalid=True)
    assert [i.line for i in result.invalid] == [2]
    assert len(result.records) == 4_000 and result.records[0].line == 3


# --- item 7: sniffing standard input ----------------------------------------------------------------------


def test_jsonl_on_stdin_is_read_as_jsonl() -> None:
    result = read_records(stdin(jsonl({"text": "from a pipe", "id": 7}, {"title": "second"})))
    assert result.input_format == "jsonl"
    assert [(r.text, r.id) for r in result.records] == [("from a pipe", "7"), ("second", None)]


def test_jsonl_on_stdin_with_a_broken_line_names_it() -> None:
    data = jsonl({"text": "one"}) + '{"text": "two"\n' + jsonl({"text": "three"})
    with pytest.raises(InputError, match=r"^<stdin>:2: malformed JSON"):
        read_records(stdin(data))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("id,title,published_at\n1,Rates rise,2024-05-01\n", "csv"),
        ('"id","Text"\n1,"Rates rise, markets fall"\n', "csv"),
        ("id\ttext\n1\tRates rise, markets fall\n", "tsv"),
        (jsonl({"text": "a"}, {"text": "b"}), "jsonl"),
        ("Rates rise, markets fall\nText messages leak\n", "txt"),
        ("title\nA one-column file\n", "txt"),
        ("Title, text and more\nsecond\n", "txt"),
        ("{Exclusive} interview\n{Live} coverage\n", "txt"),
        ('{"text": "a"}\nplain headline\n', "txt"),
        ("[1, 2]\n", "txt"),
        ("", "txt"),
    ],
)
def test_sniff_format(content: str, expected: str) -> None:
    assert sniff_format(content) == expected


def test_sniff_format_uses_the_text_field() -> None:
    assert sniff_format("id,headline\n1,x\n") == "txt"
    assert sniff_format("id,headline\n1,x\n", text_field="headline") == "csv"


def test_csv_on_stdin_is_read_as_csv() -> None:
    result = read_records(stdin("id,text\n1,Rates rise\n2,Markets fall\n"))
    assert result.input_format == "csv" and [r.id for r in result.records] == ["1", "2"]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"text": "a"}\nplain headline\n', "line 1 is a JSON object but line 2 is not"),
        ("title\nA one-column file\n", "looks like a one-column header"),
        ("[\n", "looks like JSON"),
    ],
)
def test_stdin_that_half_looks_like_another_format_warns(content: str, needle: str) -> None:
    result = read_records(stdin(content))
    assert result.input_format == "txt"
    assert len(result.warnings) == 1 and needle in str(result.warnings[0])
    assert str(result.warnings[0]).startswith("<stdin>:")
    assert "--input-format" in str(result.warnings[0])


def test_plain_headlines_on_stdin_stay_txt_without_warnings() -> None:
    result = read_records(stdin("زلزال يضرب جنوب تركيا\nRates rise, markets fall\n{Live} coverage\n"))
    assert result.input_format == "txt" and result.warnings == []


def test_a_named_file_is_never_sniffed(tmp_path: Path) -> None:
    path = write(tmp_path, "h.txt", jsonl({"text": "a"}))
    result = read_records(path)
    assert result.input_format == "txt" and result.records[0].text == '{"text": "a"}'


# --- item 9: cutting over-long text warns -----------------------------------------------------------------


def test_cut_text_warns_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "h.txt", "short\n" + "x" * 30 + "\n")
    result = read_records(path, max_chars=10)
    assert result.truncated == 1 and result.records[1].text == "x" * 10
    assert result.warnings == [ReadWarning(2, result.warnings[0].reason, str(path), result.warnings[0].hint)]
    assert str(result.warnings[0]).startswith(f"{path}:2: headline is 30 characters long; cut to the first 10 (")


def test_reject_long_still_refuses_instead_of_warning(tmp_path: Path) -> None:
    path = write(tmp_path, "h.txt", "short\n" + "x" * 30 + "\n")
    result = read_records(path, max_chars=10, reject_long=True, skip_invalid=True)
    assert result.warnings == [] and [i.line for i in result.invalid] == [2]


def test_read_many_collects_warnings_of_every_file(tmp_path: Path) -> None:
    first = write(tmp_path, "a.txt", "x" * 20 + "\n")
    second = write(tmp_path, "b.txt", "ok\n" + "y" * 20 + "\n")
    result = read_many([str(first), str(second)], max_chars=5)
    assert [(w.path, w.line) for w in result.warnings] == [(str(first), 1), (str(second), 2)]


def test_skipped_rows_keep_their_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "h.jsonl", jsonl({"title": 5}, {"text": "ok"}))
    row = read_records(path, skip_invalid=True).invalid[0]
    assert str(row) == f"{path}:1: {row.reason}" + (f" ({row.hint})" if row.hint else "")
    path = write(tmp_path, "e.txt", "ok\n\u200b\n")
    row = read_records(path, skip_invalid=True).invalid[0]
    assert row.hint and str(row).endswith(f"({row.hint})")


def test_cut_text_does_not_end_in_whitespace(tmp_path: Path) -> None:
    # Found by tests/test_fuzz_inputs.py: U+0085 (NEL) is whitespace that str.strip() removes.
    path = write(tmp_path, "h.txt", "00id\x850 and more\n")
    assert read_records(path, max_chars=5).records[0].text == "00id"
