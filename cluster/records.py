"""Reading headline input files (txt, csv, tsv, jsonl) into Records for the CLI and the library.

Every problem is reported as an InputError that names the file and, for row problems, the line, so a
user can fix the input without reading a traceback. With ``skip_invalid`` row problems are collected
instead, while problems with the file as a whole still raise.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from cluster.errors import InputError

__all__ = [
    "INPUT_FORMATS",
    "InvalidRow",
    "ReadResult",
    "Record",
    "content_id",
    "detect_format",
    "read_many",
    "read_records",
]

INPUT_FORMATS = ("txt", "csv", "tsv", "jsonl")

_EXTENSIONS = {
    ".txt": "txt",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json-lines": "jsonl",
}
# Names people commonly type for --input-format; accepting them costs nothing and avoids a round trip.
_FORMAT_ALIASES = {"text": "txt", "tab": "tsv", "ndjson": "jsonl", "json-lines": "jsonl"}

_UTC = timezone.utc
_UTF8_BOM = b"\xef\xbb\xbf"
_RESAVE_HINT = "re-save the file as UTF-8"
_FORMAT_HINT = "pass --input-format txt, csv, tsv or jsonl"
_TIME_FORMS = (
    "accepted: ISO 8601 such as 2024-05-01T14:30:00Z or 2024-05-01T14:30:00+03:00, "
    "a date 2024-05-01, 2024-05-01 14:30[:00] (taken as UTC), or Unix epoch seconds such as 1714573800"
)
_EXPECTED = {
    "txt": "expected one headline per line",
    "csv": "expected a header row with a 'text' or 'title' column, then one headline per row",
    "tsv": "expected a tab-separated header row with a 'text' or 'title' column, then one headline per row",
    "jsonl": 'expected one JSON object per line, such as {"text": "..."}',
}
_EPOCH = re.compile(r"[+-]?\d+(\.\d*)?")


@dataclass(frozen=True)
class Record:
    """One headline. ``line`` is 1-based; for CSV/TSV it is the physical line where the row starts."""

    text: str
    id: str | None = None
    published_at: datetime | None = None
    source: str | None = None
    url: str | None = None
    line: int = 0
    # Left out of the hash so Records stay hashable even though the mapping is a dict.
    extra: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class InvalidRow:
    """A row skipped because of ``skip_invalid``; ``path`` is the display name of its file."""

    line: int
    reason: str
    path: str | None = None


@dataclass
class ReadResult:
    records: list[Record]
    invalid: list[InvalidRow]
    truncated: int
    name: str
    input_format: str


def content_id(text: str) -> str:
    """A stable id derived from the headline, for inputs that carry no ids of their own."""
    digest = hashlib.sha256(text.strip().encode("utf-8")).hexdigest()
    return "h" + digest[:16]


def detect_format(path: str, explicit: str | None) -> str:
    """The input format: ``explicit`` when given, else from the file extension ('-' is stdin: txt)."""
    if explicit is not None:
        wanted = explicit.strip().lower()
        wanted = _FORMAT_ALIASES.get(wanted, wanted)
        if wanted not in INPUT_FORMATS:
            raise InputError(
                f"unknown input format {explicit!r}", hint=f"choose one of: {', '.join(INPUT_FORMATS)}"
            )
        return wanted
    if path == "-":
        return "txt"
    suffix = Path(path).suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    what = f"extension {suffix!r}" if suffix else "a file without an extension"
    hint = _FORMAT_HINT
    if suffix == ".json":
        hint += " (a file with one JSON object per line is jsonl)"
    raise InputError(f"cannot tell the input format from {what}", path=path, hint=hint)


def read_records(
    source: str | Path | TextIO | BinaryIO,
    *,
    input_format: str | None = None,
    text_field: str | None = None,
    id_field: str = "id",
    time_field: str = "published_at",
    source_field: str = "source",
    url_field: str = "url",
    skip_invalid: bool = False,
    max_chars: int = 2000,
    reject_long: bool = False,
    name: str | None = None,
) -> ReadResult:
    """Read headlines from a path, '-' (standard input) or an open stream.

    Raises InputError for any problem; with ``skip_invalid`` per-row problems are returned in
    ``ReadResult.invalid`` instead. Text longer than ``max_chars`` is cut, and counted in ``truncated``;
    with ``reject_long`` such a row is invalid instead (for callers that must store text as given).
    """
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    data, display, detect_path = _load(source, name)
    fmt = detect_format(detect_path, input_format)
    text, bad_lines = _decode(data, display, skip_invalid)
    fields = _Fields(text_field, id_field, time_field, source_field, url_field)
    collector = _Collector(display, skip_invalid, max_chars, bad_lines, reject_long)
    if fmt == "txt":
        _parse_txt(text, collector)
    elif fmt == "jsonl":
        _parse_jsonl(text, fields, collector)
    else:
        _parse_delimited(text, "," if fmt == "csv" else "\t", fields, collector)
    # Rows that were there but all invalid are not "empty": the caller gets them in `invalid` to report.
    if not collector.records and not collector.invalid:
        raise InputError(f"no headlines in {display}", path=display, hint=_EXPECTED[fmt])
    return ReadResult(collector.records, collector.invalid, collector.truncated, display, fmt)


def read_many(paths: Sequence[str], **kwargs: Any) -> ReadResult:
    """Read several inputs as one; ids must be unique across all of them.

    Takes the keyword options of ``read_records`` except ``name``. Record lines stay relative to their own
    file; ``input_format`` of the result is 'mixed' when the files differ.
    """
    if not paths:
        raise InputError("no input files given", hint="name at least one file, or - for standard input")
    if "name" in kwargs:
        raise TypeError("read_many() does not take name; each file is named by its path")
    skip_invalid = bool(kwargs.get("skip_invalid", False))
    records: list[Record] = []
    invalid: list[InvalidRow] = []
    truncated = 0
    names: list[str] = []
    formats: list[str] = []
    first_seen: dict[str, str] = {}
    for path in paths:
        part = read_records(path, **kwargs)
        names.append(part.name)
        formats.append(part.input_format)
        invalid.extend(part.invalid)
        truncated += part.truncated
        for record in part.records:
            if record.id is not None:
                where = f"{part.name}:{record.line}"
                if record.id in first_seen:
                    reason = f"duplicate id {record.id!r} (first seen at {first_seen[record.id]})"
                    if not skip_invalid:
                        raise InputError(reason, path=part.name, line=record.line, hint=_DUPLICATE_HINT)
                    invalid.append(InvalidRow(record.line, reason, part.name))
                    continue
                first_seen[record.id] = where
            records.append(record)
    fmt = formats[0] if len(set(formats)) == 1 else "mixed"
    return ReadResult(records, invalid, truncated, ", ".join(names), fmt)


# --- loading and decoding -------------------------------------------------------------------------------


def _load(source: str | Path | TextIO | BinaryIO, name: str | None) -> tuple[bytes, str, str]:
    """Returns (bytes, display name, path used for format detection)."""
    if isinstance(source, str) and source == "-":
        return _read_stream(sys.stdin.buffer), name or "<stdin>", "-"
    if isinstance(source, (str, Path)):
        display = name or str(source)
        try:
            return Path(source).read_bytes(), display, str(source)
        except FileNotFoundError:
            raise InputError(
                "file not found", path=display, hint="check the path, or use - for stdin"
            ) from None
        except IsADirectoryError:
            raise InputError("is a directory, not a file", path=display) from None
        except PermissionError:
            raise InputError("permission denied", path=display, hint="check the file's permissions") from None
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror or exc}", path=display) from None
    # An open file still carries its path, the best guide to its format; other streams are stdin-like.
    stream_name = getattr(source, "name", None)
    has_path = isinstance(stream_name, str) and not stream_name.startswith("<")
    display = name or (stream_name if has_path else "<stdin>")
    return _read_stream(source), display, stream_name if has_path else "-"


def _read_stream(stream: TextIO | BinaryIO) -> bytes:
    data = stream.read()
    if isinstance(data, str):
        # Lone surrogates (e.g. from a surrogateescape text stream) survive as bytes the strict decoder
        # rejects, so bad input in a text stream is reported the same way as in a file.
        return data.encode("utf-8", "surrogatepass")
    return data


def _decode(data: bytes, name: str, skip_invalid: bool) -> tuple[str, set[int]]:
    """Strict UTF-8 text, plus the line numbers that could not be decoded (only with skip_invalid)."""
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        # Every line would fail to decode; one file-level message is clearer than an error per line.
        raise InputError("file is UTF-16 encoded, not UTF-8", path=name, hint=_RESAVE_HINT)
    try:
        return data.decode("utf-8"), set()
    except UnicodeDecodeError as exc:
        if not skip_invalid:
            line = data.count(b"\n", 0, exc.start) + 1
            column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            raise InputError(
                f"not valid UTF-8: byte 0x{data[exc.start]:02x} at byte {column} of the line",
                path=name,
                line=line,
                hint=_RESAVE_HINT,
            ) from None
    # Decode line by line so one bad line costs one row, not the file. '\n' never occurs inside a
    # multi-byte UTF-8 sequence, so splitting the bytes there is safe.
    pieces: list[str] = []
    bad_lines: set[int] = set()
    for number, chunk in enumerate(data.split(b"\n"), start=1):
        try:
            pieces.append(chunk.decode("utf-8"))
        except UnicodeDecodeError:
            bad_lines.add(number)
            pieces.append(chunk.decode("utf-8", "replace"))
    return "\n".join(pieces), bad_lines


# --- collecting rows ------------------------------------------------------------------------------------

_DUPLICATE_HINT = "ids must be unique; remove the repeated row or give it its own id"


class _RowError(Exception):
    """A problem confined to one row: raised, or recorded when skip_invalid is set."""

    def __init__(self, reason: str, hint: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


@dataclass(frozen=True)
class _Fields:
    text: str | None
    id: str
    time: str
    source: str
    url: str


class _Collector:
    def __init__(self, name: str, skip_invalid: bool, max_chars: int, bad_lines: set[int], reject_long: bool):
        self.name = name
        self.skip_invalid = skip_invalid
        self.max_chars = max_chars
        self.reject_long = reject_long
        self.bad_lines = bad_lines
        self.records: list[Record] = []
        self.invalid: list[InvalidRow] = []
        self.truncated = 0
        self._id_lines: dict[str, int] = {}

    def check_decoded(self, first: int, last: int) -> None:
        if any(number in self.bad_lines for number in range(first, last + 1)):
            raise _RowError("not valid UTF-8", _RESAVE_HINT)

    def reject(self, line: int, error: _RowError) -> None:
        if not self.skip_invalid:
            raise InputError(error.reason, path=self.name, line=line, hint=error.hint)
        self.invalid.append(InvalidRow(line, error.reason, self.name))

    def add(
        self,
        line: int,
        text: str,
        *,
        id: str | None = None,
        published_at: datetime | None = None,
        source: str | None = None,
        url: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        text = text.strip()
        if not text:
            raise _RowError("empty headline", "remove the row or give it a headline")
        if self.reject_long and len(text) > self.max_chars:
            raise _RowError(
                f"headline is {len(text):,} characters long, over the limit of {self.max_chars:,}",
                "this is usually an article body or several lines run together; fix or remove the line",
            )
        if id is not None:
            if id in self._id_lines:
                raise _RowError(
                    f"duplicate id {id!r} (first seen on line {self._id_lines[id]})", _DUPLICATE_HINT
                )
            self._id_lines[id] = line
        if len(text) > self.max_chars:
            text = text[: self.max_chars]
            self.truncated += 1
        self.records.append(Record(text, id, published_at, source, url, line, dict(extra or {})))


# --- formats --------------------------------------------------------------------------------------------


def _parse_txt(text: str, collector: _Collector) -> None:
    for number, raw in enumerate(text.split("\n"), start=1):
        # Checked before blankness: an undecodable line is not blank, it only looks like replacement text.
        try:
            collector.check_decoded(number, number)
            if not raw.strip():
                continue
            collector.add(number, raw)
        except _RowError as error:
            collector.reject(number, error)


def _parse_jsonl(text: str, fields: _Fields, collector: _Collector) -> None:
    for number, raw in enumerate(text.split("\n"), start=1):
        try:
            collector.check_decoded(number, number)
            if not raw.strip():
                continue
            _add_json_line(raw, number, fields, collector)
        except _RowError as error:
            collector.reject(number, error)


def _add_json_line(raw: str, number: int, fields: _Fields, collector: _Collector) -> None:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        hint = "each line must be one complete JSON object"
        if number == 1 and raw.strip() == "[":
            hint = "this looks like a JSON array; JSON Lines needs one object per line, without [ ]"
        raise _RowError(f"malformed JSON: {exc.msg} at column {exc.colno}", hint) from None
    if not isinstance(obj, dict):
        raise _RowError(
            f"expected a JSON object, got {_json_type(obj)}", 'write each line as {"text": "..."}'
        )
    keys = list(obj)
    text_index = _resolve_text(keys, fields.text)
    if text_index is None:
        wanted = repr(fields.text) if fields.text else "'text' or 'title'"
        found = ", ".join(repr(key) for key in keys) or "none"
        raise _RowError(
            f"no {wanted} field (keys found: {found})", "pass --text-field NAME to choose the field"
        )
    text_key = keys[text_index]
    value = obj[text_key]
    if value is None:
        raise _RowError(f"{text_key!r} is null", "give every object a headline string")
    if not isinstance(value, str):
        raise _RowError(f"{text_key!r} must be a string, got {_json_type(value)}")
    used = {text_key}
    found_keys: dict[str, str] = {}
    for role, wanted_key in (
        ("id", fields.id),
        ("time", fields.time),
        ("source", fields.source),
        ("url", fields.url),
    ):
        index = _find(keys, wanted_key)
        if index is not None and keys[index] not in used:
            used.add(keys[index])
            found_keys[role] = keys[index]
    time_key = found_keys.get("time")
    collector.add(
        number,
        value,
        id=_optional_str(obj, found_keys.get("id")),
        published_at=_parse_time(obj[time_key], time_key) if time_key else None,
        source=_optional_str(obj, found_keys.get("source")),
        url=_optional_str(obj, found_keys.get("url")),
        extra={key: _extra_str(obj[key]) for key in keys if key not in used and obj[key] is not None},
    )


def _parse_delimited(text: str, delimiter: str, fields: _Fields, collector: _Collector) -> None:
    rows = _csv_rows(text, delimiter)
    header_line, header_row = _header(rows, "csv" if delimiter == "," else "tsv", collector)
    header = [column.strip() for column in header_row]
    text_index = _resolve_text(header, fields.text)
    if text_index is None:
        wanted = f"column {fields.text!r}" if fields.text else "'text' or 'title' column"
        found = ", ".join(repr(column) for column in header)
        raise InputError(
            f"no {wanted} in the header (columns found: {found})",
            path=collector.name,
            line=header_line,
            hint="the first row must name the columns; pass --text-field COLUMN to pick the headline column",
        )
    used = {text_index}
    roles: dict[str, int] = {}
    for role, wanted_column in (
        ("id", fields.id),
        ("time", fields.time),
        ("source", fields.source),
        ("url", fields.url),
    ):
        index = _find(header, wanted_column)
        if index is not None and index not in used:
            used.add(index)
            roles[role] = index
    for first, last, row in rows:
        try:
            collector.check_decoded(first, last)
            if isinstance(row, _RowError):
                raise row
            if len(row) != len(header):
                raise _RowError(
                    f"row has {len(row)} fields but the header has {len(header)}",
                    _field_count_hint(delimiter, first, last),
                )
            raw_time = _cell(row, roles, "time")
            collector.add(
                first,
                row[text_index],
                id=_cell(row, roles, "id"),
                published_at=_parse_time(raw_time, header[roles["time"]]) if raw_time else None,
                source=_cell(row, roles, "source"),
                url=_cell(row, roles, "url"),
                extra={header[i]: value for i, value in enumerate(row) if i not in used},
            )
        except _RowError as error:
            collector.reject(first, error)


def _cell(row: list[str], roles: Mapping[str, int], role: str) -> str | None:
    """A known column's value, or None when the column is absent or the cell is blank."""
    index = roles.get(role)
    return None if index is None else (row[index].strip() or None)


def _csv_rows(text: str, delimiter: str) -> Iterator[tuple[int, int, list[str] | _RowError]]:
    """(first line, last line, fields or a parse error) for each non-blank row."""
    parts = text.split("\n")
    # Feed the reader '\n'-terminated physical lines so its line_num counts lines as the other formats do.
    lines = [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    reader = csv.reader(lines, delimiter=delimiter)
    last = 0
    while True:
        first = last + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # The reader recovers on the next line, so one unparseable row does not end the file.
            last = reader.line_num
            yield first, last, _RowError(f"cannot parse row: {exc}")
            continue
        last = reader.line_num
        if len(row) <= 1 and not "".join(row).strip():
            continue
        yield first, last, row


def _header(
    rows: Iterator[tuple[int, int, list[str] | _RowError]], fmt: str, collector: _Collector
) -> tuple[int, list[str]]:
    for first, last, row in rows:
        # The header decides how every row is read, so a problem with it is a problem with the file.
        try:
            collector.check_decoded(first, last)
        except _RowError as error:
            raise InputError(
                f"header {error.reason}", path=collector.name, line=first, hint=error.hint
            ) from None
        if isinstance(row, _RowError):
            raise InputError(f"cannot read the header: {row.reason}", path=collector.name, line=first)
        return first, row
    raise InputError(f"no headlines in {collector.name}", path=collector.name, hint=_EXPECTED[fmt])


def _field_count_hint(delimiter: str, first: int, last: int) -> str:
    if last > first:
        return f"the row runs from line {first} to {last}; a quote may be unbalanced"
    if delimiter == "\t":
        return "a field may contain a stray tab"
    return 'quote fields that contain commas, like "Rates rise, markets fall"'


# --- field values ---------------------------------------------------------------------------------------


def _find(names: Sequence[str], wanted: str) -> int | None:
    """Index of the exact name if present, else of the first case-insensitive match."""
    if wanted in names:
        return list(names).index(wanted)
    folded = wanted.casefold()
    for index, candidate in enumerate(names):
        if candidate.casefold() == folded:
            return index
    return None


def _resolve_text(names: Sequence[str], text_field: str | None) -> int | None:
    if text_field is not None:
        return _find(names, text_field)
    for default in ("text", "title"):
        index = _find(names, default)
        if index is not None:
            return index
    return None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _optional_str(obj: Mapping[str, Any], key: str | None) -> str | None:
    """A JSON id/source/url value as text; numbers are accepted because ids are often numeric."""
    if key is None:
        return None
    value = obj[key]
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _RowError(f"{key!r} must be a string or a number, got {_json_type(value)}")


def _extra_str(value: Any) -> str:
    # Extra columns are typed Mapping[str, str]; JSON text keeps nested values readable and reversible.
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _parse_time(value: Any, field_name: str | None) -> datetime | None:
    """An aware UTC datetime from ISO 8601, a date, 'YYYY-MM-DD HH:MM[:SS]' or epoch seconds."""
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, tz=_UTC)
        if not isinstance(value, str):
            raise ValueError
        stripped = value.strip()
        if not stripped:
            return None
        if _EPOCH.fullmatch(stripped):
            # int() where possible: float() would lose sub-second precision on large values.
            seconds = float(stripped) if "." in stripped else int(stripped)
            return datetime.fromtimestamp(seconds, tz=_UTC)
        # datetime.fromisoformat before Python 3.11 does not accept the 'Z' suffix.
        if stripped[-1] in "Zz":
            stripped = stripped[:-1] + "+00:00"
        parsed = datetime.fromisoformat(stripped)
    except (ValueError, OverflowError, OSError):
        shown = value if isinstance(value, str) else json.dumps(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise _RowError(f"cannot read timestamp {shown!r} in {field_name!r}", _TIME_FORMS) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=_UTC)
    return parsed.astimezone(_UTC)
