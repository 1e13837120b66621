"""Property-based tests (hypothesis) of the readers and of normalize (issue 13).

Readers: whatever the bytes, reading raises nothing but InputError; every skipped row and every warning
names the file and a line that exists; what the reader returns is what downstream code relies on. normalize:
never raises, idempotent, and its output has no invisible or control characters.

Bounded so the whole file runs in seconds: few examples, short texts, no example database written, and
derandomized so a failure in CI reproduces on any machine. For a deeper hunt, scale the number of examples
with HEADLINE_CLUSTER_FUZZ_SCALE (e.g. 50) and HEADLINE_CLUSTER_FUZZ_RANDOM=1 for fresh random draws.
"""

from __future__ import annotations

import csv
import io
import json
import os
import unicodedata
from datetime import timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.errors import InputError
from cluster.normalize import DEFAULT_PREFIXES, is_blank, normalize
from cluster.records import INPUT_FORMATS, ReadResult, read_records

UTC = timezone.utc
NAME = "fuzz.in"

SCALE = int(os.environ.get("HEADLINE_CLUSTER_FUZZ_SCALE", "1"))
BOUNDED = settings(
    max_examples=40 * SCALE,
    deadline=None,
    database=None,
    derandomize=os.environ.get("HEADLINE_CLUSTER_FUZZ_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Characters and pieces that the readers and normalize treat specially, mixed into arbitrary text so the
# interesting cases are not left to chance.
SPECIAL = [
    *'",\t\n\r{}[]:\\ ',
    "\u200f", "\u200b", "\u200d", "\ufeff", "\u0640", "\u064e", "\u00ad", "\u2066", "\U000e0041", "\ufe0f",
    "\x00", "\x07", "\x85", "\u2028", "\u3164", "\u0301",
    "أ", "ى", "ی", "ک", "٣", "۴", "٫", "…", "«", "–",
    '""', '"a,b"', "text", "title", "id", "published_at", "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-05:00", "[" * 120, "]" * 120, '{"text": "x"}', "عاجل: ", "(CNN)-- ", "Breaking: ",
]  # fmt: skip
piece = st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from(SPECIAL))
texts = st.lists(piece, max_size=40).map("".join)
documents = st.lists(texts, min_size=1, max_size=8).map("\n".join)


# --- readers: any text --------------------------------------------------------------------------------------


def _read(data: bytes, fmt: str | None, skip_invalid: bool, max_chars: int) -> ReadResult | InputError:
    try:
        return read_records(
            io.BytesIO(data), input_format=fmt, skip_invalid=skip_invalid, max_chars=max_chars, name=NAME
        )
    except InputError as error:  # anything else fails the test with its traceback
        return error


def _check_result(result: ReadResult, data: bytes, max_chars: int) -> None:
    lines = data.count(b"\n") + 1
    for record in result.records:
        assert record.text == record.text.strip() and not is_blank(record.text)
        assert len(record.text) <= max_chars
        assert 1 <= record.line <= lines
        if record.published_at is not None:
            moment = record.published_at
            assert moment.utcoffset() == timedelta(0)
            assert moment.astimezone(UTC) == moment
            moment.timestamp()
    for row in result.invalid:
        assert row.path == NAME and 1 <= row.line <= lines and row.reason
        assert str(row).startswith(f"{NAME}:{row.line}: {row.reason}")
    for warning in result.warnings:
        assert warning.path == NAME and warning.line is not None and 1 <= warning.line <= lines
        assert str(warning).startswith(f"{NAME}:{warning.line}: ")
    # One row is either kept or skipped, and rows come in file order.
    kept = [r.line for r in result.records]
    skipped = [i.line for i in result.invalid]
    assert kept == sorted(kept) and not set(kept) & set(skipped)


def _check_pair(data: bytes, fmt: str | None, max_chars: int) -> None:
    strict = _read(data, fmt, False, max_chars)
    lenient = _read(data, fmt, True, max_chars)
    if isinstance(lenient, ReadResult):
        _check_result(lenient, data, max_chars)
    if isinstance(strict, ReadResult):
        _check_result(strict, data, max_chars)
        # Where nothing is wrong, skip_invalid changes nothing.
        assert isinstance(lenient, ReadResult) and lenient.invalid == []
        assert lenient.records == strict.records
    elif isinstance(lenient, ReadResult):
        # The row that stops a strict read is one a lenient read skips. (Not always the first: bad UTF-8
        # is found before any row is read.)
        assert strict.path == NAME and strict.line is not None
        assert strict.line in {row.line for row in lenient.invalid}
    else:
        # A problem with the input as a whole stops a lenient read too.
        assert lenient.path == strict.path == NAME


@BOUNDED
@given(document=documents, fmt=st.sampled_from([*INPUT_FORMATS, None]), max_chars=st.sampled_from([5, 2000]))
def test_any_text_reads_or_raises_input_error(document: str, fmt: str | None, max_chars: int) -> None:
    _check_pair(document.encode("utf-8"), fmt, max_chars)


@BOUNDED
@given(
    body=documents,
    fmt=st.sampled_from(["csv", "tsv", None]),
    header=st.sampled_from(["text", "id,text", "id,text,published_at", "id\ttext\tpublished_at", "title\tx"]),
)
def test_any_table_body_reads_or_raises_input_error(body: str, fmt: str | None, header: str) -> None:
    _check_pair(f"{header}\n{body}".encode(), fmt, 2000)


@BOUNDED
@given(data=st.binary(max_size=200), fmt=st.sampled_from([*INPUT_FORMATS, None]))
def test_any_bytes_read_or_raise_input_error(data: bytes, fmt: str | None) -> None:
    _check_pair(data, fmt, 2000)


# --- readers: well-formed input of awkward values ------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=10,
)
offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
moments = st.one_of(
    st.datetimes(timezones=st.none() | offsets).map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-05:00", "1714573800", "2024-05-01"]),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    json_values,
)
json_rows = st.fixed_dictionaries(
    {},
    optional={
        "text": json_values | texts,
        "title": texts,
        "id": json_values,
        "published_at": moments,
        "source": json_values,
        "extra": json_values,
    },
)


@BOUNDED
@given(rows=st.lists(json_rows, min_size=1, max_size=6))
def test_json_lines_of_any_values_read_or_raise_input_error(rows: list[dict[str, object]]) -> None:
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    _check_pair(data, "jsonl", 2000)
    _check_pair(data, None, 2000)


@BOUNDED
@given(
    cells=st.lists(st.tuples(texts, st.one_of(st.just(""), moments.map(str))), min_size=1, max_size=6),
    delimiter=st.sampled_from([",", "\t"]),
)
def test_csv_written_by_the_csv_module_reads_back(cells: list[tuple[str, str]], delimiter: str) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter)
    writer.writerow(["id", "text", "published_at"])
    for number, (text, moment) in enumerate(cells):
        writer.writerow([str(number), text, moment])
    data = buffer.getvalue().encode()
    _check_pair(data, "csv" if delimiter == "," else "tsv", 10_000)
    result = _read(data, "csv" if delimiter == "," else "tsv", True, 10_000)
    assert isinstance(result, ReadResult)
    # Well-formed quoting is never taken for an open quote: every row is read, kept or skipped for its value.
    assert not any("quote" in row.reason for row in result.invalid)
    assert len(result.records) + len(result.invalid) == len(cells)
    assert all(
        row.reason.startswith(("empty headline", "headline has no visible", "timestamp", "cannot read timestamp"))
        for row in result.invalid
    )
    kept = {record.id: record.text for record in result.records}
    for number, (text, _) in enumerate(cells):
        if str(number) in kept:
            assert kept[str(number)] == text.strip()


# --- normalize -----------------------------------------------------------------------------------------------

INVISIBLE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}
FOLDED_AWAY = (
    set("\u0640\u0670أإآٱى")
    | {chr(cp) for cp in range(0x064B, 0x0660)}
    | {chr(cp) for cp in [*range(0x0660, 0x066A), *range(0x06F0, 0x06FA)]}
)
prefix_lists = st.none() | st.lists(st.sampled_from([*DEFAULT_PREFIXES, "x", "(", "..."]) | texts, max_size=4)


@settings(BOUNDED, max_examples=120 * SCALE)
@given(text=texts, prefixes=prefix_lists)
def test_normalize_is_idempotent_and_never_raises(text: str, prefixes: list[str] | None) -> None:
    once = normalize(text, prefixes=prefixes)
    assert normalize(once, prefixes=prefixes) == once
    folded = normalize(text, strip_prefixes=False)
    assert normalize(folded, strip_prefixes=False) == folded


@settings(BOUNDED, max_examples=120 * SCALE)
@given(text=texts, prefixes=prefix_lists)
def test_normalized_text_has_nothing_invisible(text: str, prefixes: list[str] | None) -> None:
    out = normalize(text, prefixes=prefixes)
    assert all(unicodedata.category(char) not in INVISIBLE_CATEGORIES for char in out)
    assert all(char == " " or not char.isspace() for char in out)
    assert out == out.strip() and "  " not in out
    assert not set(out) & FOLDED_AWAY
    assert unicodedata.is_normalized("NFC", out)


@settings(BOUNDED, max_examples=120 * SCALE)
@given(text=texts, prefixes=prefix_lists)
def test_blank_means_normalizes_to_nothing_whatever_the_prefixes(text: str, prefixes: list[str] | None) -> None:
    # Prefix stripping never empties a headline, so is_blank can ignore the prefix list.
    assert is_blank(text) is (normalize(text, prefixes=prefixes) == "")
    assert is_blank(text) is (normalize(text, strip_prefixes=False) == "")


@settings(BOUNDED, max_examples=80 * SCALE)
@given(text=texts, junk=st.lists(st.sampled_from(["\u200f", "\u200b", "\ufeff", "\u00ad", "\u2066", "\ufe0f"])))
def test_invisible_characters_change_nothing(text: str, junk: list[str]) -> None:
    # Sprinkled between the characters of any text, invisible characters normalize away entirely.
    mixed = "".join(char + (junk[i % len(junk)] if junk else "") for i, char in enumerate(text))
    assert normalize(mixed) == normalize(text)
