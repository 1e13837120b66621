"""The per-format row parsers behind :func:`cluster.records.read_records` (txt, csv, tsv, jsonl).

Internal to the reader: each parser turns decoded text into calls on a :class:`RowSink` (the collector in
``cluster.records``), and raises :class:`RowError` for a problem confined to one row so the sink can
either stop with an InputError or record the row as skipped.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import chain, islice
from typing import Any, Protocol

from cluster.errors import InputError

_UTC = timezone.utc
RESAVE_HINT = "re-save the file as UTF-8"
_TIME_FORMS = (
    "accepted: ISO 8601 such as 2024-05-01T14:30:00Z or 2024-05-01T14:30:00+03:00, "
    "a date 2024-05-01, 2024-05-01 14:30[:00] (taken as UTC), or Unix epoch seconds such as 1714573800"
)
EXPECTED = {
    "txt": "expected one headline per line",
    "csv": "expected a header row with a 'text' or 'title' column, then one headline per row",
    "tsv": "expected a tab-separated header row with a 'text' or 'title' column, then one headline per row",
    "jsonl": 'expected one JSON object per line, such as {"text": "..."}',
}
_EPOCH = re.compile(r"[+-]?\d+(\.\d*)?")
_TIME_RANGE = "give a time from 0001-01-01 to 9999-12-31 in UTC"
# A headline record is a flat object; nesting this deep is damage or an attack, and deeper still json
# raises RecursionError at a depth that depends on the caller's stack.
MAX_JSON_DEPTH = 100
_JSON_DEPTH_HINT = 'write each line as a flat object such as {"text": "..."}'
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_QUOTE_HINT = 'close the quote, or double a quote that is part of the text ("")'


class RowError(Exception):
    """A problem confined to one row: raised, or recorded when skip_invalid is set."""

    def __init__(self, reason: str, hint: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


class EmptyInput(InputError):
    """A file without a single row: with skip_invalid, one of several files may be empty (a feed's quiet
    spell) without stopping the others (cluster.records.read_many)."""


@dataclass(frozen=True)
class Fields:
    text: str | None
    id: str
    time: str
    source: str
    url: str
    # Roles ("id", "time", "source", "url") the user named: a name missing from the header or the first
    # record is then an error, where a default name that is absent only means the input has no such field.
    required: frozenset[str] = frozenset()

    def missing(self, names: Sequence[str]) -> list[tuple[str, str]]:
        """(option, name) of each required field that ``names`` lacks, such as ("--time-field", "published")."""
        return [
            (f"--{role}-field", getattr(self, role))
            for role in ("id", "time", "source", "url")
            if role in self.required and _find(names, getattr(self, role)) is None
        ]


def missing_field_error(missing: list[tuple[str, str]], found: Sequence[str], where: str, **at: Any) -> InputError:
    """A field option naming a column or key the input does not have: an error, never silently ignored."""
    named = ", ".join(f"{option} {name!r}" for option, name in missing)
    shown = ", ".join(repr(name) for name in found) or "none"
    return InputError(
        f"no such field in {where}: {named} ({'columns' if 'header' in where else 'keys'} found: {shown})",
        hint="check the name, or leave the option out to use the default",
        whole_file=True,
        **at,
    )


class RowSink(Protocol):
    """Where parsers send rows: ``cluster.records._Collector``."""

    name: str

    def check_decoded(self, first: int, last: int) -> None: ...

    def reject(self, line: int, error: RowError) -> None: ...

    def warn(self, line: int, reason: str, hint: str = "") -> None: ...

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
    ) -> None: ...


# --- formats --------------------------------------------------------------------------------------------


def parse_txt(text: str, collector: RowSink) -> None:
    for number, raw in enumerate(text.split("\n"), start=1):
        # Checked before blankness: an undecodable line is not blank, it only looks like replacement text.
        try:
            collector.check_decoded(number, number)
            if not raw.strip():
                continue
            collector.add(number, raw)
        except RowError as error:
            collector.reject(number, error)


def parse_jsonl(text: str, fields: Fields, collector: RowSink) -> None:
    first = [True]  # the first JSON object still to check the named fields against
    for number, raw in enumerate(text.split("\n"), start=1):
        try:
            collector.check_decoded(number, number)
            if not raw.strip():
                continue
            _add_json_line(raw, number, fields, collector, first)
        except RowError as error:
            collector.reject(number, error)


def _add_json_line(raw: str, number: int, fields: Fields, collector: RowSink, first: list[bool]) -> None:
    too_deep = RowError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep", _JSON_DEPTH_HINT)
    if json_too_deep(raw):
        raise too_deep
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        hint = "each line must be one complete JSON object"
        if number == 1 and raw.strip() == "[":
            hint = "this looks like a JSON array; JSON Lines needs one object per line, without [ ]"
        # Some of json's messages end in "at" ("Invalid control character at"): one "at" is enough.
        raise RowError(f"malformed JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}", hint) from None
    except RecursionError:
        raise too_deep from None
    except ValueError as exc:
        # json turns number literals into ints; Python refuses ints of more than 4,300 digits.
        if "integer string conversion" in str(exc):
            raise RowError(
                f"a number has more than {getattr(sys, 'get_int_max_str_digits', lambda: 4300)():,} digits",
                "write long ids as strings; timestamps as ISO 8601 or epoch seconds",
            ) from None
        raise RowError(f"cannot read the JSON: {exc}", "each line must be one complete JSON object") from None
    if not isinstance(obj, dict):
        raise RowError(f"expected a JSON object, got {_json_type(obj)}", 'write each line as {"text": "..."}')
    keys = list(obj)
    if first[0]:
        first[0] = False
        missing = fields.missing(keys)
        if missing:  # the whole file is read with these names: one message, not one skipped row per line
            raise missing_field_error(missing, keys, "the first record", path=collector.name, line=number)
    text_index = _resolve_text(keys, fields.text)
    if text_index is None:
        wanted = repr(fields.text) if fields.text else "'text' or 'title'"
        found = ", ".join(repr(key) for key in keys) or "none"
        raise RowError(f"no {wanted} field (keys found: {found})", "pass --text-field NAME to choose the field")
    text_key = keys[text_index]
    value = obj[text_key]
    if value is None:
        raise RowError(f"{text_key!r} is null", "give every object a headline string")
    if not isinstance(value, str):
        raise RowError(f"{text_key!r} must be a string, got {_json_type(value)}")
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


def json_too_deep(raw: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text opens more than ``limit`` arrays/objects inside each other.

    Brackets inside strings do not count. The scan runs only when the line has more brackets than the
    limit, so ordinary lines cost two ``str.count`` calls.
    """
    if raw.count("[") + raw.count("{") <= limit:
        return False
    depth = 0
    for match in _JSON_TOKEN.finditer(raw):
        char = match.group()[0]
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def parse_delimited(text: str, delimiter: str, fields: Fields, collector: RowSink) -> None:
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
            whole_file=True,
        )
    missing = fields.missing(header)
    if missing:
        raise missing_field_error(missing, header, "the header", path=collector.name, line=header_line)
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
            if isinstance(row, RowError):
                raise row
            if len(row) != len(header):
                raise RowError(
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
        except RowError as error:
            collector.reject(first, error)
            continue
        if last > first and any("\n" in value for value in row):
            # Legitimate (a quoted field may hold line breaks), but it is also what two stray quotes
            # look like: the rows between them become one field, and the field count still matches.
            collector.warn(
                first,
                f"row spans lines {first}-{last}: a quoted field contains line breaks",
                f"if a quote on line {first} was meant to close on that line, the rows after it were read "
                "into this one",
            )


def _cell(row: list[str], roles: Mapping[str, int], role: str) -> str | None:
    """A known column's value, or None when the column is absent or the cell is blank."""
    index = roles.get(role)
    return None if index is None else (row[index].strip() or None)


_CsvRow = tuple[int, int, list[str] | RowError]


def _csv_rows(text: str, delimiter: str) -> Iterator[_CsvRow]:
    """(first line, last line, fields or a parse error) for each non-blank row.

    A quote that never closes would make the rest of the file one field. A sentinel line after the input
    shows it: read into a field, it was inside an open quote. That row is reported where its quote
    opened, and reading resumes on the next line, so the rows after it are not lost.
    """
    parts = text.split("\n")
    # Feed the reader '\n'-terminated physical lines so its line_num counts lines as the other formats do;
    # the last line gets one too, so that the sentinel starts a record of its own unless a quote is open.
    lines = [part + "\n" for part in parts[:-1]] + ([parts[-1] + "\n"] if parts[-1] else [])
    sentinel = "\ufdd0end of input\ufdd1"
    while sentinel in text:
        sentinel += "\ufdd1"
    # Each restart begins after the line where an open quote started. The lines re-read were inside that
    # quote, where every quote comes in pairs, so they cannot open one that swallows them again: the work
    # stays linear in the file size.
    start: int | None = 0
    while start is not None:
        start = yield from _rows_from(lines, start, delimiter, sentinel)


def _rows_from(lines: list[str], start: int, delimiter: str, sentinel: str) -> Generator[_CsvRow, None, int | None]:
    """Rows from ``lines[start:]``; returns where to resume after an open quote, or None at the end."""
    reader = csv.reader(chain(islice(lines, start, None), (sentinel,)), delimiter=delimiter)
    last = start
    while True:
        first = last + 1
        try:
            row = next(reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            last = start + reader.line_num
            if "field larger than field limit" in str(exc) and last > first:
                # An open quote in a large file hits the field size limit before the end of the file.
                yield (
                    first,
                    last,
                    RowError(
                        f"cannot parse row: {exc}; the field runs from line {first} to {last}, so a quote on "
                        f"line {first} probably never closes",
                        _QUOTE_HINT,
                    ),
                )
                return first
            if "field larger than field limit" in str(exc) and last == first:
                # One long line, not an open quote: read it whole, so that its text gets the message
                # (or the cut) a long headline gets in every other format.
                long_row = _long_line(lines[first - 1], delimiter)
                if long_row is not None:
                    yield first, last, long_row
                    continue
            # The reader recovers on the next line, so one unparseable row does not end the file.
            yield first, last, RowError(f"cannot parse row: {exc}")
            continue
        last = start + reader.line_num
        if row and row[-1].endswith(sentinel):
            if len(row) == 1 and row[0] == sentinel:
                return None
            # The open field holds one '\n' per line it ran over, up to the sentinel's line.
            opened = last - row[-1].count("\n")
            yield (
                opened,
                last - 1,
                RowError(
                    f"unterminated quote: the field that opens on line {opened} never closes, so it runs to "
                    f"the end of the file (line {last - 1}) and would swallow every row after it",
                    _QUOTE_HINT,
                ),
            )
            return opened
        if len(row) <= 1 and not "".join(row).strip():
            continue
        yield first, last, row


def _long_line(line: str, delimiter: str) -> list[str] | None:
    """The fields of one line over csv's field size limit, or None when it does not parse on its own."""
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(line) + 1))
    try:
        return next(csv.reader([line], delimiter=delimiter), None)
    except csv.Error:
        return None
    finally:
        csv.field_size_limit(limit)


def _header(rows: Iterator[_CsvRow], fmt: str, collector: RowSink) -> tuple[int, list[str]]:
    for first, last, row in rows:
        # The header decides how every row is read, so a problem with it is a problem with the file.
        try:
            collector.check_decoded(first, last)
        except RowError as error:
            raise InputError(
                f"header {error.reason}", path=collector.name, line=first, hint=error.hint, whole_file=True
            ) from None
        if isinstance(row, RowError):
            raise InputError(f"cannot read the header: {row.reason}", path=collector.name, line=first, whole_file=True)
        return first, row
    raise EmptyInput(f"no headlines in {collector.name}", path=collector.name, hint=EXPECTED[fmt])


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
    raise RowError(f"{key!r} must be a string or a number, got {_json_type(value)}")


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
        raise RowError(f"cannot read timestamp {shown!r} in {field_name!r}", _TIME_FORMS) from None
    try:
        return to_utc(parsed)
    except ValueError:
        raise RowError(
            f"timestamp {value.strip()[:60]!r} in {field_name!r} is out of range: in UTC it falls before "
            "year 1 or after year 9999",
            _TIME_RANGE,
        ) from None


def to_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime (naive is taken as UTC); ValueError when UTC cannot hold it.

    A local time near the ends of the calendar, such as 0001-01-01T00:00:00+14:00, has no UTC datetime;
    rejecting it here means every Record's ``published_at`` survives ``.astimezone(timezone.utc)`` and
    ``.timestamp()`` downstream.
    """
    if moment.tzinfo is None:
        return moment.replace(tzinfo=_UTC)
    try:
        return moment.astimezone(_UTC)
    except OverflowError:
        reason = f"{moment.isoformat()} is out of range: in UTC it falls before year 1 or after year 9999"
        raise ValueError(reason) from None
